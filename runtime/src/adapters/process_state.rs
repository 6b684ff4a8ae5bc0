//! Reads the process tree before the dump, refuses what CRIU cannot handle, and
//! records the state in the checkpoint.

use crate::chain::Adapter;
use crate::engine::{bulk, DumpCtx, DumpResponse};
use crate::error::EngineError;
use crate::process::inspect;

/// Inspects the tree rooted at the request's PID and claims it for this dump.
pub fn fill_process_state() -> Adapter<DumpCtx, DumpResponse> {
    Adapter::from_fn("fill_process_state", |mut ctx: DumpCtx, next| {
        Box::pin(async move {
            let pid = ctx.req.pid;
            ctx.state = bulk(move || {
                inspect::inspect(pid).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => EngineError::NoSuchProcess { pid },
                    std::io::ErrorKind::PermissionDenied => {
                        EngineError::PermissionDenied(format!("cannot read /proc/{pid}"))
                    }
                    _ => EngineError::Inspect { pid, source: e },
                })
            })
            .await?;
            // Held until the dump ends: a second dump of the same tree is refused.
            let pids = ctx.state.tree.iter().map(|p| p.pid).collect();
            let _claim = ctx.env.claim_for_dump(pids)?;
            next.run(ctx).await
        })
    })
}

/// Refuses trees holding io_uring before CRIU freezes anything.
pub fn detect_io_uring() -> Adapter<DumpCtx, DumpResponse> {
    Adapter::from_fn("detect_io_uring", |ctx: DumpCtx, next| {
        Box::pin(async move {
            if let Some(f) = ctx
                .state
                .open_files
                .iter()
                .find(|f| f.target == "anon_inode:[io_uring]")
            {
                return Err(EngineError::IoUringUnsupported { pid: f.pid });
            }
            next.run(ctx).await
        })
    })
}

/// Copies the inspected state into the checkpoint's metadata.
pub fn save_process_state() -> Adapter<DumpCtx, DumpResponse> {
    Adapter::from_fn("save_process_state", |mut ctx: DumpCtx, next| {
        Box::pin(async move {
            ctx.metadata.process = ctx.state.clone();
            next.run(ctx).await
        })
    })
}
