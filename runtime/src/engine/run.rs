//! The run operation: start a program in its own session, output to a log file, so it
//! can later be checkpointed without a terminal or pipes tying it to its caller.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::adapters::validation;
use crate::chain::{Chain, Handler, OpResult};
use crate::engine::{Env, RunAs, RunRequest, RunResponse};
use crate::error::EngineError;

/// A run request on its way through the chain.
#[derive(Debug)]
pub struct RunCtx {
    /// Config and host clients.
    pub env: Arc<Env>,
    /// The request.
    pub req: RunRequest,
}

/// The run chain.
pub fn chain() -> Chain<RunCtx, RunResponse> {
    Chain::new(Handler::from_fn("spawn_process", |ctx| {
        Box::pin(async move { spawn(ctx) })
    }))
    .with([validation::validate_run_request()])
}

fn spawn(ctx: RunCtx) -> OpResult<RunResponse> {
    let req = ctx.req;
    let log: File = match &req.log_file {
        Some(fd) => fd
            .try_clone()
            .map_err(|e| EngineError::io("cannot duplicate log descriptor", e))?
            .into(),
        None => OpenOptions::new()
            .create(true)
            .append(true)
            .open(&req.log_path)
            .map_err(|e| {
                EngineError::io(format!("cannot open log {}", req.log_path.display()), e)
            })?,
    };
    let log_err = log
        .try_clone()
        .map_err(|e| EngineError::io("cannot duplicate log descriptor", e))?;
    let cwd = req.cwd.clone().unwrap_or_else(|| PathBuf::from("/"));
    let mut cmd = Command::new(&req.program);
    cmd.args(&req.args)
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    match req.user.clone() {
        None => {
            cmd.current_dir(&cwd);
            // SAFETY: setsid is async-signal-safe; a new session detaches the job from
            // our terminal and process group so it can be dumped without --shell-job.
            unsafe {
                cmd.pre_exec(|| {
                    nix::unistd::setsid().map_err(std::io::Error::from)?;
                    Ok(())
                });
            }
        }
        Some(user) => {
            let cwd = CString::new(cwd.into_os_string().into_vec()).map_err(|_| {
                EngineError::InvalidRequest {
                    field: "cwd",
                    reason: "contains a NUL byte".into(),
                }
            })?;
            // SAFETY: only raw syscalls (async-signal-safe) on data prepared before the
            // fork. std's `uid`/`gid` cannot set supplementary groups and would chdir
            // before the switch, as root; here the chdir happens as the user, so a
            // directory the user cannot enter is refused.
            unsafe {
                cmd.pre_exec(move || become_user(&user, &cwd));
            }
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| EngineError::io(format!("cannot start {}", req.program), e))?;
    // The caller reaps by PID (waitpid); the Child handle is not needed for that.
    Ok(RunResponse {
        pid: child.id() as i32,
    })
}

/// In the child: new session, then the user's groups, gid and uid (raw syscalls: glibc's
/// wrappers would signal threads that do not exist after fork), then its cwd.
fn become_user(user: &RunAs, cwd: &CString) -> std::io::Result<()> {
    let check = |r: libc::c_long| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: plain syscalls with valid pointers and lengths.
    unsafe {
        check(libc::setsid() as libc::c_long)?;
        check(libc::syscall(
            libc::SYS_setgroups,
            user.groups.len(),
            user.groups.as_ptr(),
        ))?;
        check(libc::syscall(
            libc::SYS_setresgid,
            user.gid,
            user.gid,
            user.gid,
        ))?;
        check(libc::syscall(
            libc::SYS_setresuid,
            user.uid,
            user.uid,
            user.uid,
        ))?;
        check(libc::chdir(cwd.as_ptr()) as libc::c_long)?;
    }
    Ok(())
}
