//! The runc-compatible binary the shim drives: `runc` by default, `cedana-runc` when it
//! is on PATH (so `checkpoint` / `restore` go through the cedana engine, which detects and
//! records CRIU options), or whatever `containerd.runc.v1.Options.BinaryName` names.
//!
//! Argument lists are built by pure functions ([`Runtime::args`] and the `*_args`
//! helpers) with golden tests; [`Runtime::run`] executes them. The global flags and
//! `checkpoint` come from the engine's runc command line
//! (`cedana_runtime::plugins::runc::runtime`), and `create`, `exec`, `kill` and
//! `restore --detach` from its `task_args`: one definition of every runc flag. Every runtime invocation
//! is a child of the shim, which reaps all children itself, so exits come from the
//! [`Reaper`] rather than from `wait()`.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cedana_runtime::criu::options::CriuOpts;
use cedana_runtime::plugins::containerd::dump::DEFAULT_RUNC_ROOT;
use cedana_runtime::plugins::runc::runtime as runc;
use cedana_runtime::plugins::runc::task_args;
use cedana_runtime::plugins::runc::{RuncDump, RuncTarget};

use crate::error::{Result, ShimError};
use crate::reaper::Reaper;

/// The default runc root of containerd's runc shims (`/run/containerd/runc/<namespace>`).
pub const DEFAULT_ROOT: &str = DEFAULT_RUNC_ROOT;
/// The wrapper preferred when no binary is configured.
pub const CEDANA_RUNC: &str = "cedana-runc";
/// The fallback.
pub const RUNC: &str = "runc";

/// Picks the runtime binary: the configured name, else `cedana-runc` if on PATH, else runc.
pub fn resolve_binary(configured: &str) -> PathBuf {
    if !configured.is_empty() {
        return which(configured).unwrap_or_else(|| PathBuf::from(configured));
    }
    which(CEDANA_RUNC)
        .or_else(|| which(RUNC))
        .unwrap_or_else(|| PathBuf::from(RUNC))
}

fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Where the container's stdio goes when the runtime starts it.
#[derive(Default)]
pub struct ChildStdio {
    /// stdin of the runtime invocation (inherited by the container), /dev/null when None.
    pub stdin: Option<OwnedFd>,
    /// stdout, /dev/null when None.
    pub stdout: Option<OwnedFd>,
    /// stderr, /dev/null when None.
    pub stderr: Option<OwnedFd>,
}

/// Options of `checkpoint` (containerd.runc.v1.CheckpointOptions, resolved).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CheckpointArgs {
    /// Where the images go.
    pub image_path: String,
    /// CRIU work dir (logs).
    pub work_path: String,
    /// Keep the container running (not `exit`).
    pub leave_running: bool,
    /// --tcp-established.
    pub open_tcp: bool,
    /// --ext-unix-sk.
    pub external_unix_sockets: bool,
    /// --shell-job.
    pub terminal: bool,
    /// --file-locks.
    pub file_locks: bool,
    /// --empty-ns, one per namespace.
    pub empty_namespaces: Vec<String>,
    /// --manage-cgroups-mode.
    pub cgroups_mode: String,
}

/// A runc-compatible runtime.
#[derive(Clone, Debug)]
pub struct Runtime {
    /// The binary.
    pub binary: PathBuf,
    /// `--root`: the runtime's state dir.
    pub root: PathBuf,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// `--log` (JSON): where the runtime's own errors go.
    pub log: PathBuf,
}

impl Runtime {
    /// Global flags followed by `cmd`.
    pub fn args(&self, cmd: &[String]) -> Vec<String> {
        let target = RuncTarget {
            root: Some(self.root.clone()),
            log: Some(self.log.clone()),
            log_format: Some("json".into()),
            systemd_cgroup: self.systemd_cgroup,
            ..Default::default()
        };
        let mut a = strings(runc::global_args(&target));
        a.extend(cmd.iter().cloned());
        a
    }

    /// Runs the runtime with `cmd`; returns its stdout. With `stdio`, the invocation's
    /// stdio are the container's (and its output is not captured).
    pub async fn run(
        &self,
        reaper: &Reaper,
        cmd: Vec<String>,
        stdio: Option<ChildStdio>,
    ) -> Result<String> {
        let args = self.args(&cmd);
        let verb = cmd.first().cloned().unwrap_or_default();
        let mut c = Command::new(&self.binary);
        c.args(&args);
        let capture = stdio.is_none();
        match stdio {
            Some(s) => {
                c.stdin(s.stdin.map(Stdio::from).unwrap_or_else(Stdio::null));
                c.stdout(s.stdout.map(Stdio::from).unwrap_or_else(Stdio::null));
                c.stderr(s.stderr.map(Stdio::from).unwrap_or_else(Stdio::null));
            }
            None => {
                c.stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
            }
        }
        log::debug!("{} {}", self.binary.display(), args.join(" "));
        let mut child = c.spawn().map_err(|e| ShimError::Runtime {
            binary: self.binary.display().to_string(),
            command: verb.clone(),
            status: "not started".into(),
            stderr: e.to_string(),
        })?;
        // The reaper owns exits: claim this PID before anything can reap it unseen.
        let exit = reaper.claim(child.id() as i32);
        let (out, err) = if capture {
            let mut so = child.stdout.take().expect("piped stdout");
            let mut se = child.stderr.take().expect("piped stderr");
            tokio::task::spawn_blocking(move || {
                let t = std::thread::spawn(move || {
                    let mut e = String::new();
                    let _ = se.read_to_string(&mut e);
                    e
                });
                let mut o = String::new();
                let _ = so.read_to_string(&mut o);
                (o, t.join().unwrap_or_default())
            })
            .await
            .unwrap_or_default()
        } else {
            (String::new(), String::new())
        };
        drop(c);
        let status = exit
            .await
            .map_err(|_| ShimError::Other(format!("lost the exit of {verb}")))?
            .status;
        // Dropping a std Child does not wait on it: the reaper already did.
        drop(child);
        if status != 0 {
            let mut msg = err.trim().to_string();
            if let Some(l) = last_log_error(&self.log) {
                if !msg.contains(&l) {
                    if !msg.is_empty() {
                        msg.push_str("; ");
                    }
                    msg.push_str(&l);
                }
            }
            return Err(ShimError::Runtime {
                binary: self.binary.display().to_string(),
                command: verb,
                status: format!("exit status {status}"),
                stderr: msg,
            });
        }
        Ok(out)
    }
}

/// The last `error` message in the runtime's JSON log.
fn last_log_error(log: &Path) -> Option<String> {
    let mut text = String::new();
    File::open(log).ok()?.read_to_string(&mut text).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["level"] == "error" || v["level"] == "fatal")
            .then(|| v["msg"].as_str().map(str::to_string))
            .flatten()
    })
}

fn strings(v: Vec<OsString>) -> Vec<String> {
    v.iter().map(|a| a.to_string_lossy().into_owned()).collect()
}

/// `create`.
pub fn create_args(
    id: &str,
    bundle: &Path,
    pid_file: &Path,
    console_socket: Option<&Path>,
    no_pivot: bool,
) -> Vec<String> {
    strings(task_args::create_args(
        id,
        bundle,
        pid_file,
        console_socket,
        no_pivot,
    ))
}

/// `exec --detach` of a process spec.
pub fn exec_args(
    id: &str,
    process_json: &Path,
    pid_file: &Path,
    console_socket: Option<&Path>,
) -> Vec<String> {
    strings(task_args::exec_args(
        id,
        process_json,
        pid_file,
        console_socket,
    ))
}

/// `kill [--all] ID SIGNAL`.
pub fn kill_args(id: &str, signal: u32, all: bool) -> Vec<String> {
    strings(task_args::kill_args(id, signal, all))
}

/// `checkpoint`.
pub fn checkpoint_args(id: &str, o: &CheckpointArgs) -> Vec<String> {
    let mut extra = Vec::new();
    for ns in &o.empty_namespaces {
        extra.extend(["--empty-ns".to_string(), ns.clone()]);
    }
    if !o.cgroups_mode.is_empty() {
        extra.extend(["--manage-cgroups-mode".to_string(), o.cgroups_mode.clone()]);
    }
    let dump = RuncDump {
        target: RuncTarget::new(id, None),
        extra_args: extra,
        ..Default::default()
    };
    let work = (!o.work_path.is_empty()).then(|| Path::new(&o.work_path));
    let criu = CriuOpts {
        leave_running: o.leave_running,
        tcp_established: o.open_tcp,
        ext_unix_sk: o.external_unix_sockets,
        shell_job: o.terminal,
        file_locks: o.file_locks,
        ..Default::default()
    };
    strings(runc::checkpoint_args(
        &dump,
        Path::new(&o.image_path),
        work,
        &criu,
    ))
}

/// `restore --detach` from a checkpoint.
pub fn restore_args(
    id: &str,
    bundle: &Path,
    image_path: &Path,
    work_path: &Path,
    pid_file: &Path,
    console_socket: Option<&Path>,
    no_pivot: bool,
) -> Vec<String> {
    strings(task_args::restore_detached_args(
        id,
        &task_args::DetachedRestore {
            bundle,
            image_path,
            work_path,
            pid_file,
            console_socket,
            no_pivot,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> String {
        v.to_string()
    }

    fn rt() -> Runtime {
        Runtime {
            binary: "runc".into(),
            root: "/run/containerd/runc/default".into(),
            systemd_cgroup: false,
            log: "/b/log.json".into(),
        }
    }

    #[test]
    fn global_flags() {
        assert_eq!(
            rt().args(&[s("start"), s("c1")]).join(" "),
            "--root /run/containerd/runc/default --log /b/log.json --log-format json start c1"
        );
    }

    #[test]
    fn global_flags_systemd_cgroup() {
        let r = Runtime {
            systemd_cgroup: true,
            ..rt()
        };
        assert_eq!(
            r.args(&[s("start"), s("c1")]).join(" "),
            "--root /run/containerd/runc/default --log /b/log.json --log-format json \
             --systemd-cgroup start c1"
        );
    }

    #[test]
    fn create() {
        assert_eq!(
            create_args("c1", Path::new("/b"), Path::new("/b/init.pid"), None, false).join(" "),
            "create --bundle /b --pid-file /b/init.pid c1"
        );
        assert_eq!(
            create_args(
                "c1",
                Path::new("/b"),
                Path::new("/p"),
                Some(Path::new("/s")),
                true
            )
            .join(" "),
            "create --bundle /b --pid-file /p --console-socket /s --no-pivot c1"
        );
    }

    #[test]
    fn exec_kill() {
        assert_eq!(
            exec_args("c1", Path::new("/x.json"), Path::new("/x.pid"), None).join(" "),
            "exec --detach --process /x.json --pid-file /x.pid c1"
        );
        assert_eq!(kill_args("c1", 9, true).join(" "), "kill --all c1 9");
        assert_eq!(kill_args("c1", 15, false).join(" "), "kill c1 15");
    }

    #[test]
    fn checkpoint() {
        let o = CheckpointArgs {
            image_path: "/img".into(),
            work_path: "/work".into(),
            leave_running: true,
            open_tcp: true,
            external_unix_sockets: true,
            terminal: true,
            file_locks: true,
            empty_namespaces: vec!["network".into()],
            cgroups_mode: "soft".into(),
        };
        assert_eq!(
            checkpoint_args("c1", &o).join(" "),
            "checkpoint --image-path /img --work-path /work --leave-running --tcp-established \
             --ext-unix-sk --shell-job --file-locks --empty-ns network --manage-cgroups-mode soft c1"
        );
        let plain = CheckpointArgs {
            image_path: "/img".into(),
            ..Default::default()
        };
        assert_eq!(
            checkpoint_args("c1", &plain).join(" "),
            "checkpoint --image-path /img c1"
        );
    }

    #[test]
    fn restore() {
        assert_eq!(
            restore_args(
                "c1",
                Path::new("/b"),
                Path::new("/ck"),
                Path::new("/w"),
                Path::new("/p"),
                None,
                false
            )
            .join(" "),
            "restore --detach --bundle /b --image-path /ck --work-path /w --pid-file /p c1"
        );
    }

    #[test]
    fn binary_choice() {
        assert_eq!(resolve_binary("/opt/x/runc"), PathBuf::from("/opt/x/runc"));
        let auto = resolve_binary("");
        let name = auto.file_name().unwrap().to_str().unwrap();
        assert!(name == CEDANA_RUNC || name == RUNC, "{auto:?}");
    }
}
