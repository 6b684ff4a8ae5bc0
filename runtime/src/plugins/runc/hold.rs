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
    };
    let path = dir.join(format!("{}.json", atomic::unique_suffix()));
    let json = serde_json::to_vec(&marker).ok()?;
    fs::write(&path, json).ok()?;
    Some(path)
}

fn remove(marker: &Option<PathBuf>) {
    if let Some(p) = marker {
        let _ = fs::remove_file(p);
    }
}

/// Resumes the containers whose holder died (its marker is left and its PID is gone or is
/// this process); returns the ids resumed. Called at daemon start.
pub fn release_abandoned() -> Vec<String> {
    release_abandoned_in(&markers_dir())
}

fn release_abandoned_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut resumed = Vec::new();
    for entry in rd.flatten() {
        let path = entry.path();
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
        if let Some((bin, args)) = marker.argv.split_first() {
            let ok = std::process::Command::new(bin)
                .args(args)
                .args(["resume", &marker.id])
                .stdin(std::process::Stdio::null())
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                resumed.push(marker.id.clone());
            }
        }
        let _ = fs::remove_file(&path);
    }
    resumed
}
