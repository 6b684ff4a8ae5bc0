//! CRIU in CLI mode, for what its RPC mode refuses: image streaming (`--stream`).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::error::{failure_tail, LOG_TAIL_LINES};
use super::{Criu, CriuError, CriuOpts};

impl CriuOpts {
    /// The same options as command-line flags. `restore` drops dump-only ones.
    pub fn to_cli_args(&self, restore: bool) -> Vec<String> {
        let mut args = Vec::new();
        let mut flag = |on: bool, name: &str| {
            if on {
                args.push(name.to_string());
            }
        };
        flag(self.leave_running && !restore, "--leave-running");
        flag(self.tcp_established, "--tcp-established");
        flag(self.tcp_close && restore, "--tcp-close");
        flag(self.file_locks, "--file-locks");
        flag(self.shell_job, "--shell-job");
        flag(self.link_remap, "--link-remap");
        flag(self.ext_unix_sk, "--ext-unix-sk");
        for e in &self.external {
            args.push("--external".into());
            args.push(e.clone());
        }
        args
    }
}

/// A streamed dump or restore.
#[derive(Debug, Clone, Copy)]
pub struct StreamArgs<'a> {
    /// Root of the tree (dump only).
    pub pid: i32,
    /// Directory holding the streamer socket.
    pub images_dir: &'a Path,
    /// Directory for CRIU's log (and the pid file on restore).
    pub work_dir: &'a Path,
    /// CRIU options.
    pub opts: &'a CriuOpts,
    /// CRIU's `--action-script` and the socket it reports each action to (the relay's
    /// action-script mode, [`super::relay::NOTIFY_ENV`]); its verdict on `post-dump`
    /// decides whether CRIU lets the tree go.
    pub action_script: Option<(&'a Path, &'a Path)>,
}

impl Criu {
    fn run_streamed(
        &self,
        op: &'static str,
        args: Vec<String>,
        log: PathBuf,
        action_script: Option<(&Path, &Path)>,
    ) -> Result<(), CriuError> {
        let mut cmd = Command::new(self.binary());
        if let Some((script, socket)) = action_script {
            cmd.arg("--action-script")
                .arg(script)
                .env(super::relay::NOTIFY_ENV, socket);
        }
        if let Some(lock) = self.network_lock() {
            cmd.arg("--network-lock").arg(lock.name());
        }
        // stderr into a file, not a pipe: a child CRIU leaves behind when it dies (a
        // kerndat probe that stopped itself, say) would hold a pipe open forever.
        let stderr = tempfile::tempfile().map_err(|e| CriuError::io("criu stderr file", e))?;
        let for_child = stderr
            .try_clone()
            .map_err(|e| CriuError::io("criu stderr file", e))?;
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(for_child));
        // A dump's CRIU leads a process group of its own, so that what it leaves behind
        // when it fails can be ended with it. (Not a restore's: a shell job restored
        // takes CRIU's group.)
        let dump = op == "dump";
        if dump {
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().map_err(|source| CriuError::Spawn {
            binary: self.binary().to_path_buf(),
            source,
        })?;
        let pid = Pid::from_raw(child.id() as i32);
        // Seen exited but not reaped: its PID, the group's id, cannot be reused meanwhile.
        let exited = loop {
            match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r,
            }
        };
        let status = if let Ok(WaitStatus::Exited(_, 0)) = exited {
            child.wait()
        } else {
            if dump {
                let _ = killpg(pid, Signal::SIGKILL);
            }
            child.wait()
        }
        .map_err(|e| CriuError::io("wait for criu", e))?;
        if status.success() {
            return Ok(());
        }
        let mut text = String::new();
        let mut stderr = stderr;
        let _ = stderr.seek(SeekFrom::Start(0));
        let _ = stderr.read_to_string(&mut text);
        let stderr = text.trim().to_string();
        Err(CriuError::Failed {
            op,
            cr_errno: None,
            errmsg: (!stderr.is_empty()).then_some(stderr),
            log_tail: failure_tail(&log, LOG_TAIL_LINES),
            log_path: log,
        })
    }

    /// CRIU's work dir, log file (in it) and log level.
    pub(super) fn logging(work: &Path, log: &str) -> Vec<String> {
        vec![
            "-W".into(),
            work.display().to_string(),
            "-o".into(),
            log.into(),
            "-v4".into(),
        ]
    }

    fn common(images: &Path, work: &Path, log: &str) -> Vec<String> {
        let mut args = vec!["--stream".into(), "-D".into(), images.display().to_string()];
        args.extend(Self::logging(work, log));
        args
    }

    /// `criu dump --stream`: the images go to the streamer listening in `images_dir`.
    pub fn dump_streamed(&self, a: &StreamArgs) -> Result<PathBuf, CriuError> {
        let mut args = vec!["dump".to_string(), "-t".into(), a.pid.to_string()];
        args.extend(Self::common(a.images_dir, a.work_dir, "dump.log"));
        args.extend(a.opts.to_cli_args(false));
        let log = a.work_dir.join("dump.log");
        self.run_streamed("dump", args, log.clone(), a.action_script)?;
        Ok(log)
    }

    /// `criu restore --stream --restore-detached --restore-sibling`: returns the restored
    /// root's PID. As a sibling of CRIU the root is the caller's child (as `rst_sibling`
    /// makes it over RPC), so a daemon reaps it and learns its exit code.
    pub fn restore_streamed(&self, a: &StreamArgs) -> Result<i32, CriuError> {
        let args = Self::common(a.images_dir, a.work_dir, "restore.log");
        self.restore_detached_with(a.work_dir, args, a.opts, a.action_script)
    }

    /// `criu restore --restore-detached --restore-sibling` with `args` (images, logging,
    /// ...) and `opts`; its log is `work/restore.log`. Returns the restored root's PID.
    pub(super) fn restore_detached(
        &self,
        work: &Path,
        args: Vec<String>,
        opts: &CriuOpts,
    ) -> Result<i32, CriuError> {
        self.restore_detached_with(work, args, opts, None)
    }

    fn restore_detached_with(
        &self,
        work: &Path,
        extra: Vec<String>,
        opts: &CriuOpts,
        action_script: Option<(&Path, &Path)>,
    ) -> Result<i32, CriuError> {
        let pid_file = work.join("restore.pid");
        let mut args = vec![
            "restore".to_string(),
            "--restore-detached".into(),
            "--restore-sibling".into(),
        ];
        args.extend(["--pidfile".into(), pid_file.display().to_string()]);
        args.extend(extra);
        args.extend(opts.to_cli_args(true));
        self.run_streamed("restore", args, work.join("restore.log"), action_script)?;
        let text = std::fs::read_to_string(&pid_file)
            .map_err(|e| CriuError::io(format!("read {}", pid_file.display()), e))?;
        text.trim()
            .parse()
            .map_err(|_| CriuError::protocol(format!("bad pid file content {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_flags() {
        let o = CriuOpts {
            leave_running: true,
            tcp_established: true,
            tcp_close: true,
            shell_job: true,
            external: vec!["mnt[/a]:a".into()],
            ..Default::default()
        };
        assert_eq!(
            o.to_cli_args(false),
            [
                "--leave-running",
                "--tcp-established",
                "--shell-job",
                "--external",
                "mnt[/a]:a"
            ]
        );
        assert_eq!(
            o.to_cli_args(true),
            [
                "--tcp-established",
                "--tcp-close",
                "--shell-job",
                "--external",
                "mnt[/a]:a"
            ]
        );
    }
}
