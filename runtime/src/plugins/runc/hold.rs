//! The commit protocol for containers: the container is paused (frozen in its cgroup)
//! before CRIU, checkpointed with `--leave-running` (CRIU leaves a frozen cgroup frozen),
//! and stays frozen until its checkpoint is committed; only then is it killed and
//! deleted, as runc's own `checkpoint` would have. On any failure it is resumed.
//!
//! While a container is held, a marker under the temp dir names it; a daemon (or CLI)
//! that dies there leaves the marker, and [`release_abandoned`] resumes the container at
//! the next daemon start, so a crash never leaves a workload frozen for good.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::RuncError;
use super::runtime::Runtime;
use crate::image::atomic;

/// Directory (under the temp dir) of the markers of held containers.
const MARKERS_DIR: &str = "cedana-held-containers";

/// What a marker records: enough to resume the container without the caller.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    /// The process holding the container.
    owner: u32,
    /// The runtime binary and its global flags.
    argv: Vec<String>,
    /// The container.
    id: String,
    /// The runtime's `checkpoint` process, once started: it (and its CRIU) outlives a
    /// holder killed mid-dump and leaves the container frozen when it ends, so recovery
    /// waits for it before resuming.
    #[serde(default)]
    worker: Option<Worker>,
}

/// A process named by PID and start time, so a reused PID is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Worker {
    pid: u32,
    start_time: u64,
}

impl Worker {
    fn of(pid: u32) -> Option<Worker> {
        start_time(pid).map(|start_time| Worker { pid, start_time })
    }

    fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }
}

/// The process's start time (field 22 of `/proc/PID/stat`), `None` once it is gone.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields 3.. follow the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A container frozen for its checkpoint; end it with [`kill`](Self::kill) or
/// [`release`](Self::release).
#[derive(Debug)]
pub struct Held {
    rt: Runtime,
    id: String,
    /// Whether we paused it: a container the user had paused stays paused on release.
    paused_by_us: bool,
    marker: Option<PathBuf>,
}

impl Held {
    /// Pauses `id` unless it is paused already, and records the marker.
    pub fn pause(rt: &Runtime, id: &str, already_paused: bool) -> Result<Held, RuncError> {
        let marker = write_marker(rt, id);
        if !already_paused {
            if let Err(e) = rt.pause(id) {
                remove(&marker);
                return Err(e);
            }
        }
        Ok(Held {
            rt: rt.clone(),
            id: id.to_string(),
            paused_by_us: !already_paused,
            marker,
        })
    }

    /// Records the process that runs the checkpoint (by PID), for crash recovery.
    pub fn worker_recorder(&self) -> impl Fn(u32) + Send + 'static {
        let marker = self.marker.clone();
        move |pid| {
            if let Some(path) = &marker {
                record_worker(path, pid);
            }
        }
    }

    /// The checkpoint is committed: kill every process and delete the container.
    pub fn kill(mut self) -> Result<(), RuncError> {
        let killed = self.rt.kill_all(&self.id);
        // runc thaws after signalling; a paused state left over would block delete.
        self.rt.resume_if_paused(&self.id);
        let deleted = killed.and_then(|()| self.rt.delete(&self.id, true));
        remove(&self.marker.take());
        deleted
    }

    /// The checkpoint failed: let the container run on as it was.
    pub fn release(mut self) -> Result<(), RuncError> {
        let resumed = if self.paused_by_us {
            self.rt.resume(&self.id)
        } else {
            Ok(())
        };
        remove(&self.marker.take());
        resumed
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Neither kill nor release ran (a panic, an early return): never leave it frozen.
        if self.marker.is_some() {
            if self.paused_by_us {
                let _ = self.rt.resume(&self.id);
            }
            remove(&self.marker.take());
        }
    }
}

fn markers_dir() -> PathBuf {
    std::env::temp_dir().join(MARKERS_DIR)
}

/// Best effort: without a marker the hold still works, only crash recovery is lost.
fn write_marker(rt: &Runtime, id: &str) -> Option<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = markers_dir();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .ok()?;
    let mut argv = vec![rt.binary().display().to_string()];
    argv.extend(
        rt.global_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned()),
    );
    let marker = Marker {
        owner: std::process::id(),
        argv,
        id: id.to_string(),
        worker: None,
    };
    let path = dir.join(format!("{}.json", atomic::unique_suffix()));
    let json = serde_json::to_vec(&marker).ok()?;
    fs::write(&path, json).ok()?;
    Some(path)
}

/// Best effort, as the marker itself.
fn record_worker(path: &Path, pid: u32) {
    let Some(worker) = Worker::of(pid) else {
        return;
    };
    let Some(mut marker) = fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Marker>(&b).ok())
    else {
        return;
    };
    marker.worker = Some(worker);
    if let Ok(json) = serde_json::to_vec(&marker) {
        // Whole or not at all: a torn marker would lose the container's recovery.
        let tmp = path.with_extension("tmp");
        if fs::write(&tmp, json).is_ok() {
            let _ = fs::rename(&tmp, path);
        }
    }
}

fn remove(marker: &Option<PathBuf>) {
    if let Some(p) = marker {
        let _ = fs::remove_file(p);
    }
}

/// Resumes the containers whose holder died (its marker is left and its PID is gone or is
/// this process); returns what it did, for the log. A container whose `checkpoint`
/// process outlived its holder is resumed by a thread once that process ends: resumed
/// earlier, CRIU would freeze it again as it finishes. Called at daemon start.
pub fn release_abandoned() -> Vec<String> {
    release_abandoned_in(&markers_dir())
}

/// How long a leftover `checkpoint` process may run before the container is resumed
/// anyway.
const WORKER_WAIT: Duration = Duration::from_secs(3600);

fn release_abandoned_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut done = Vec::new();
    for entry in rd.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            // A rewrite cut short; its marker is whole beside it.
            let _ = fs::remove_file(&path);
            continue;
        }
        let Some(marker) = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Marker>(&b).ok())
        else {
            let _ = fs::remove_file(&path);
            continue;
        };
        if marker.owner != me && Path::new(&format!("/proc/{}", marker.owner)).exists() {
            continue;
        }
        match marker.worker.filter(Worker::alive) {
            Some(worker) => {
                done.push(format!(
                    "container {} left frozen by a dump cut short: resuming it once its \
                     checkpoint process {} ends",
                    marker.id, worker.pid
                ));
                std::thread::spawn(move || {
                    let start = Instant::now();
                    while worker.alive() && start.elapsed() < WORKER_WAIT {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    // Outside the macro: tracing skips its arguments when the level is off.
                    let said = resume_abandoned(&marker, &path);
                    tracing::info!("{said}");
                });
            }
            None => done.push(resume_abandoned(&marker, &path)),
        }
    }
    done
}

/// Resumes the marker's container and drops the marker; says what happened.
fn resume_abandoned(marker: &Marker, path: &Path) -> String {
    let resumed = marker.argv.split_first().map(|(bin, args)| {
        std::process::Command::new(bin)
            .args(args)
            .args(["resume", &marker.id])
            .stdin(std::process::Stdio::null())
            .output()
    });
    let _ = fs::remove_file(path);
    let what = match resumed {
        Some(Ok(o)) if o.status.success() => "resumed".to_string(),
        Some(Ok(o)) => format!(
            "could not resume ({})",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Some(Err(e)) => format!("could not resume ({e})"),
        None => "could not resume (no runtime recorded)".to_string(),
    };
    format!(
        "{what} container {}, left frozen by a dump cut short",
        marker.id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_known_by_pid_and_start_time() {
        let me = Worker::of(std::process::id()).expect("this process has a start time");
        assert!(me.alive());
        let reused = Worker {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(
            !reused.alive(),
            "same PID, other start time: another process"
        );
    }

    #[test]
    fn a_recorded_worker_survives_in_the_marker_and_old_markers_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.json");
        fs::write(&path, r#"{"owner":1,"argv":["runc"],"id":"c"}"#).expect("write");
        record_worker(&path, std::process::id());
        let m: Marker = serde_json::from_slice(&fs::read(&path).expect("read")).expect("parse");
        assert_eq!(m.id, "c");
        assert_eq!(m.worker.map(|w| w.pid), Some(std::process::id()));
        assert_eq!(dir_len(dir.path()), 1, "no rewrite temp file left");
    }

    #[test]
    fn a_marker_whose_worker_runs_is_resumed_only_after_it_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut worker = std::process::Command::new("sleep")
            .arg("0.5")
            .spawn()
            .expect("sleep");
        let done = dir.path().join("resumed");
        // The "runtime" records its resume by creating a file: `sh -c 'touch "$1"' resume ID`.
        let marker = Marker {
            owner: u32::MAX,
            argv: vec!["sh".into(), "-c".into(), r#"touch "$1""#.into()],
            id: done.display().to_string(),
            worker: Worker::of(worker.id()),
        };
        let path = dir.path().join("m.json");
        fs::write(&path, serde_json::to_vec(&marker).expect("json")).expect("write");
        let said = release_abandoned_in(dir.path());
        assert!(said[0].contains("once its checkpoint process"), "{said:?}");
        std::thread::sleep(Duration::from_millis(200));
        assert!(!done.exists(), "resumed while the worker still ran");
        let _ = worker.wait();
        // The resume runs, then the marker goes: wait for both.
        let start = Instant::now();
        while (!done.exists() || path.exists()) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(done.exists(), "resumed once the worker ended");
        assert!(!path.exists(), "marker removed");
    }

    fn dir_len(dir: &Path) -> usize {
        fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }
}
