//! CRIU in CLI mode, for what its RPC mode refuses: image streaming (`--stream`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
        let out = cmd
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| CriuError::Spawn {
                binary: self.binary().to_path_buf(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
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
