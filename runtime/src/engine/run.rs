//! The run operation: start a program in its own session, output to a log file, so it
//! can later be checkpointed without a terminal or pipes tying it to its caller.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::adapters::validation;
use crate::chain::{Chain, Handler, OpResult};
use crate::engine::{Env, RunRequest, RunResponse};
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
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&req.log_path)
        .map_err(|e| EngineError::io(format!("cannot open log {}", req.log_path.display()), e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| EngineError::io("cannot duplicate log descriptor", e))?;
    let mut cmd = Command::new(&req.program);
    cmd.args(&req.args)
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .current_dir(req.cwd.as_deref().unwrap_or(std::path::Path::new("/")))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: setsid is async-signal-safe; a new session detaches the job from our
    // terminal and process group so it can be dumped without --shell-job.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| EngineError::io(format!("cannot start {}", req.program), e))?;
    // The caller reaps by PID (waitpid); the Child handle is not needed for that.
    Ok(RunResponse {
        pid: child.id() as i32,
    })
}
