//! The OCI runtime's command line (runc 1.1 flags; crun accepts the same): flag names as
//! constants, one function per command producing its arguments, golden-tested below.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::RuncError;
pub use super::state::{ContainerState, ContainerStatus};
use super::target::{RuncDump, RuncRestore, RuncTarget};
use crate::criu::options::CriuOpts;
use crate::host;

const ROOT: &str = "--root";
/// How often `pause` asks runc to freeze before giving up.
const PAUSE_TRIES: u64 = 3;
const LOG: &str = "--log";
const LOG_FORMAT: &str = "--log-format";
const SYSTEMD_CGROUP: &str = "--systemd-cgroup";
const DEBUG: &str = "--debug";
const CRIU: &str = "--criu";
pub(super) const IMAGE_PATH: &str = "--image-path";
pub(super) const WORK_PATH: &str = "--work-path";
const LEAVE_RUNNING: &str = "--leave-running";
const TCP_ESTABLISHED: &str = "--tcp-established";
const EXT_UNIX_SK: &str = "--ext-unix-sk";
const SHELL_JOB: &str = "--shell-job";
const FILE_LOCKS: &str = "--file-locks";
pub(super) const BUNDLE: &str = "--bundle";
pub(super) const DETACH: &str = "--detach";
pub(super) const PID_FILE: &str = "--pid-file";
pub(super) const CONSOLE_SOCKET: &str = "--console-socket";
pub(super) const NO_PIVOT: &str = "--no-pivot";
const NO_SUBREAPER: &str = "--no-subreaper";
const FORCE: &str = "--force";
pub(super) const ALL: &str = "--all";

/// An OCI runtime binary plus the global flags of one target.
#[derive(Debug, Clone)]
pub struct Runtime {
    binary: PathBuf,
    target: RuncTarget,
}

/// Resolves the runtime binary and refuses cedana-runc itself (it would exec itself forever).
pub fn resolve_binary(configured: &Path) -> Result<PathBuf, RuncError> {
    let found = host::find_executable(configured).ok_or_else(|| RuncError::BinaryNotFound {
        binary: configured.to_path_buf(),
    })?;
    let canon = std::fs::canonicalize(&found).unwrap_or_else(|_| found.clone());
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| std::fs::canonicalize(p).ok());
    let is_wrapper = canon.file_name().is_some_and(|n| n == "cedana-runc");
    if is_wrapper || me.as_deref() == Some(canon.as_path()) {
        return Err(RuncError::Recursion { binary: found });
    }
    Ok(found)
}

impl Runtime {
    /// The runtime for `target`: its own binary, else `configured`.
    pub fn new(target: &RuncTarget, configured: &Path) -> Result<Self, RuncError> {
        let binary = resolve_binary(target.binary.as_deref().unwrap_or(configured))?;
        Ok(Self {
            binary,
            target: target.clone(),
        })
    }

    /// The binary in use.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The state root in use, for messages.
    pub fn root_display(&self) -> String {
        self.target
            .root
            .as_ref()
            .map(|r| r.display().to_string())
            .unwrap_or_else(|| "(runtime default)".into())
    }

    /// Global flags, before the subcommand.
    pub fn global_args(&self) -> Vec<OsString> {
        global_args(&self.target)
    }

    /// A command with the global flags set.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.args(self.global_args());
        c
    }

    /// `runtime --version`, first line.
    pub fn version(&self) -> Result<String, RuncError> {
        let out = Command::new(&self.binary)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error("--version", e))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string())
    }

    /// A command for a question (state, list) with the global flags but runc's `--log`
    /// and `--log-format`: a probe's expected failure ("container does not exist") would
    /// otherwise land in the caller's log as an error line, where containerd's shim
    /// reads the runtime's last error from; it goes to our stderr pipe instead.
    pub fn probe_command(&self) -> Command {
        let mut quiet = self.target.clone();
        quiet.log = None;
        quiet.log_format = None;
        let mut c = Command::new(&self.binary);
        c.args(global_args(&quiet));
        c
    }

    /// `runtime state ID`.
    pub fn state(&self, id: &str) -> Result<ContainerState, RuncError> {
        let out = self
            .probe_command()
            .args(["state", id])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error("state", e))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("does not exist") || err.contains("not exist") {
                return Err(RuncError::NoSuchContainer {
                    id: id.into(),
                    root: self.root_display(),
                });
            }
            return Err(RuncError::Command {
                command: format!("{} state {id}", self.binary.display()),
                status: out.status.to_string(),
                detail: err.trim().to_string(),
            });
        }
        serde_json::from_slice(&out.stdout).map_err(|e| RuncError::Command {
            command: format!("{} state {id}", self.binary.display()),
            status: "ok".into(),
            detail: format!("unreadable state JSON: {e}"),
        })
    }

    /// Whether a container with this id exists.
    pub fn exists(&self, id: &str) -> Result<bool, RuncError> {
        match self.state(id) {
            Ok(_) => Ok(true),
            Err(RuncError::NoSuchContainer { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `runtime list --format json`.
    pub fn list(&self) -> Result<Vec<ContainerState>, RuncError> {
        let out = self
            .probe_command()
            .args(["list", "--format", "json"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error("list", e))?;
        if !out.status.success() {
            return Err(RuncError::Command {
                command: format!("{} list", self.binary.display()),
                status: out.status.to_string(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() || text.trim() == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_str(&text).map_err(|e| RuncError::Command {
            command: format!("{} list", self.binary.display()),
            status: "ok".into(),
            detail: format!("unreadable list JSON: {e}"),
        })
    }

    /// `runtime delete [--force] ID`.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), RuncError> {
        let mut args = vec!["delete"];
        if force {
            args.push(FORCE);
        }
        self.run_subcommand("delete", &args, id)
    }

    /// `runtime pause ID`: freezes every process of the container in its cgroup.
    /// runc gives up ("unable to freeze", leaving the container thawed) when a task does
    /// not reach the freezer in time, which a busy host makes likely: tried again then.
    pub fn pause(&self, id: &str) -> Result<(), RuncError> {
        let mut tries = 1;
        loop {
            match self.run_subcommand("pause", &["pause"], id) {
                Err(RuncError::Command { detail, .. })
                    if tries < PAUSE_TRIES && detail.contains("unable to freeze") =>
                {
                    tracing::warn!(
                        id,
                        tries,
                        "runc could not freeze the container; trying again"
                    );
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100 * tries));
                }
                r => return r,
            }
        }
    }

    /// `runtime resume ID`: thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<(), RuncError> {
        self.run_subcommand("resume", &["resume"], id)
    }

    /// `runtime resume ID` where it may well fail ("container not paused") and that is
    /// fine: without `--log`, so the expected failure is no error line in the caller's log.
    pub fn resume_if_paused(&self, id: &str) {
        let mut c = self.probe_command();
        c.args(["resume", id]);
        let _ = self.check(c, "resume", id);
    }

    /// `runtime kill --all ID KILL`: SIGKILL to every process of the container (runc
    /// freezes the cgroup around the signals, so none runs on in between).
    pub fn kill_all(&self, id: &str) -> Result<(), RuncError> {
        let mut c = self.command();
        c.args(["kill", ALL, id, "KILL"]);
        self.check(c, "kill", id)
    }

    /// Runs `runtime ARGS ID`; a failure carries the runtime's stderr.
    fn run_subcommand(&self, what: &str, args: &[&str], id: &str) -> Result<(), RuncError> {
        let mut c = self.command();
        c.args(args).arg(id);
        self.check(c, what, id)
    }

    fn check(&self, mut c: Command, what: &str, id: &str) -> Result<(), RuncError> {
        let out = c
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(what, e))?;
        if !out.status.success() {
            return Err(RuncError::Command {
                command: format!("{} {what} {id}", self.binary.display()),
                status: out.status.to_string(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    fn spawn_error(&self, what: &str, e: std::io::Error) -> RuncError {
        RuncError::Command {
            command: format!("{} {what}", self.binary.display()),
            status: "not started".into(),
            detail: e.to_string(),
        }
    }
}

/// Global flags of a target, in runc's order.
pub fn global_args(t: &RuncTarget) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    if let Some(r) = &t.root {
        a.extend([ROOT.into(), r.into()]);
    }
    if let Some(l) = &t.log {
        a.extend([LOG.into(), l.into()]);
    }
    if let Some(f) = &t.log_format {
        a.extend([LOG_FORMAT.into(), f.into()]);
    }
    if t.systemd_cgroup {
        a.push(SYSTEMD_CGROUP.into());
    }
    if t.debug {
        a.push(DEBUG.into());
    }
    if let Some(c) = &t.criu {
        a.extend([CRIU.into(), c.into()]);
    }
    a.extend(t.extra_global_args.iter().map(OsString::from));
    a
}

/// Turns the CRIU options the engine chose into runc flags. runc has no flags for
/// `tcp_close`, `link_remap` or `external`: those are not available through runc.
fn criu_flags(opts: &CriuOpts) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    for (on, flag) in [
        (opts.tcp_established, TCP_ESTABLISHED),
        (opts.ext_unix_sk, EXT_UNIX_SK),
        (opts.shell_job, SHELL_JOB),
        (opts.file_locks, FILE_LOCKS),
    ] {
        if on {
            a.push(flag.into());
        }
    }
    a
}

/// `checkpoint` arguments (after the global flags).
pub fn checkpoint_args(
    d: &RuncDump,
    images: &Path,
    work: Option<&Path>,
    opts: &CriuOpts,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["checkpoint".into(), IMAGE_PATH.into(), images.into()];
    if let Some(w) = work {
        a.extend([WORK_PATH.into(), w.into()]);
    }
    if opts.leave_running {
        a.push(LEAVE_RUNNING.into());
    }
    a.extend(criu_flags(opts));
    a.extend(d.extra_args.iter().map(OsString::from));
    a.push(d.target.id.clone().into());
    a
}

/// `run --detach` arguments (after the global flags).
pub fn run_args(bundle: &Path, pid_file: Option<&Path>, id: &str) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["run".into(), DETACH.into(), BUNDLE.into(), bundle.into()];
    if let Some(p) = pid_file {
        a.extend([PID_FILE.into(), p.into()]);
    }
    a.push(id.into());
    a
}

/// `restore` arguments (after the global flags).
pub fn restore_args(
    r: &RuncRestore,
    images: &Path,
    work: Option<&Path>,
    pid_file: Option<&Path>,
    opts: &CriuOpts,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "restore".into(),
        IMAGE_PATH.into(),
        images.into(),
        BUNDLE.into(),
        r.bundle.clone().into(),
    ];
    if let Some(w) = work {
        a.extend([WORK_PATH.into(), w.into()]);
    }
    if r.detach {
        a.push(DETACH.into());
    }
    if let Some(p) = pid_file {
        a.extend([PID_FILE.into(), p.into()]);
    }
    if let Some(c) = &r.console_socket {
        a.extend([CONSOLE_SOCKET.into(), c.into()]);
    }
    if r.no_pivot {
        a.push(NO_PIVOT.into());
    }
    if r.no_subreaper {
        a.push(NO_SUBREAPER.into());
    }
    a.extend(criu_flags(opts));
    a.extend(r.extra_args.iter().map(OsString::from));
    a.push(r.target.id.clone().into());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::strs;

    #[test]
    fn global_flags_golden() {
        let t = RuncTarget {
            root: Some("/run/r".into()),
            log: Some("/l.json".into()),
            log_format: Some("json".into()),
            systemd_cgroup: true,
            id: "c1".into(),
            ..Default::default()
        };
        assert_eq!(
            strs(global_args(&t)),
            [
                "--root",
                "/run/r",
                "--log",
                "/l.json",
                "--log-format",
                "json",
                "--systemd-cgroup"
            ]
        );
    }

    #[test]
    fn checkpoint_golden() {
        let d = RuncDump {
            target: RuncTarget::new("c1", None),
            extra_args: vec!["--manage-cgroups-mode".into(), "soft".into()],
            ..Default::default()
        };
        let opts = CriuOpts {
            tcp_established: true,
            leave_running: true,
            link_remap: true, // no runc flag: dropped
            ..Default::default()
        };
        assert_eq!(
            strs(checkpoint_args(
                &d,
                Path::new("/ck"),
                Some(Path::new("/w")),
                &opts
            )),
            [
                "checkpoint",
                "--image-path",
                "/ck",
                "--work-path",
                "/w",
                "--leave-running",
                "--tcp-established",
                "--manage-cgroups-mode",
                "soft",
                "c1"
            ]
        );
    }

    #[test]
    fn run_golden() {
        assert_eq!(
            strs(run_args(Path::new("/b"), Some(Path::new("/p")), "c1")),
            [
                "run",
                "--detach",
                "--bundle",
                "/b",
                "--pid-file",
                "/p",
                "c1"
            ]
        );
    }

    #[test]
    fn restore_golden() {
        let r = RuncRestore {
            target: RuncTarget::new("c2", None),
            bundle: "/b".into(),
            detach: true,
            no_pivot: true,
            ..Default::default()
        };
        let opts = CriuOpts {
            shell_job: true,
            file_locks: true,
            ..Default::default()
        };
        assert_eq!(
            strs(restore_args(
                &r,
                Path::new("/ck"),
                None,
                Some(Path::new("/p")),
                &opts
            )),
            [
                "restore",
                "--image-path",
                "/ck",
                "--bundle",
                "/b",
                "--detach",
                "--pid-file",
                "/p",
                "--no-pivot",
                "--shell-job",
                "--file-locks",
                "c2"
            ]
        );
    }

    #[test]
    fn cedana_runc_is_refused_as_the_runtime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("cedana-runc");
        std::fs::write(&fake, "#!/bin/sh\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(matches!(
            resolve_binary(&fake),
            Err(RuncError::Recursion { .. })
        ));
        assert!(matches!(
            resolve_binary(Path::new("/nonexistent/runc")),
            Err(RuncError::BinaryNotFound { .. })
        ));
    }
}
