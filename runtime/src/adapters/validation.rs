//! Clear errors before anything is touched: the process exists, we may dump it, the
//! target is free, CRIU is there.

use std::path::Path;

use crate::chain::Adapter;
use crate::engine::run::RunCtx;
use crate::engine::{
    DumpCtx, DumpResponse, ManageRequest, ManageResponse, RestoreCtx, RestoreResponse, RunResponse,
};
use crate::error::EngineError;
use crate::host;
use crate::image::layout;
use crate::image::metadata::CheckpointKind;
use crate::process::inspect;
use crate::store::Location;

fn require_root(what: &str) -> Result<(), EngineError> {
    if host::is_root() {
        Ok(())
    } else {
        Err(EngineError::PermissionDenied(format!("{what} needs root")))
    }
}

fn require_live_process(pid: i32) -> Result<(), EngineError> {
    if pid <= 0 {
        return Err(EngineError::InvalidRequest {
            field: "pid",
            reason: format!("{pid} is not a valid PID; give a positive PID"),
        });
    }
    if !inspect::is_alive(pid) {
        return Err(EngineError::NoSuchProcess { pid });
    }
    Ok(())
}

/// True if `p` exists and is a non-empty directory, or exists and is anything else.
fn occupied(p: &Path) -> bool {
    match std::fs::read_dir(p) {
        Ok(mut entries) => entries.next().is_some(),
        Err(_) => p.symlink_metadata().is_ok(),
    }
}

/// Checks the dump request.
pub fn validate_dump_request() -> Adapter<DumpCtx, DumpResponse> {
    Adapter::from_fn("validate_dump_request", |ctx: DumpCtx, next| {
        Box::pin(async move {
            require_root("checkpointing a process")?;
            require_live_process(ctx.req.pid)?;
            if ctx.req.pid == std::process::id() as i32 {
                return Err(EngineError::InvalidRequest {
                    field: "pid",
                    reason: "cedana cannot checkpoint itself".into(),
                });
            }
            if let Some(images) = &ctx.req.image_path {
                // runc's --image-path: the directory may exist, but not hold a checkpoint.
                if images.join("inventory.img").exists() || layout::is_checkpoint_dir(images) {
                    return Err(EngineError::TargetExists {
                        path: images.clone(),
                    });
                }
                ctx.env.criu()?;
                return next.run(ctx).await;
            }
            layout::validate_name(&ctx.name)?;
            let target = layout::checkpoint_path(&ctx.dir, &ctx.name, ctx.compression);
            // A location no store serves is refused here, before anything is frozen.
            let dir = Location::from_path(&ctx.dir).map_err(|e| e.into_engine("dir"))?;
            let store = ctx
                .env
                .stores
                .resolve(&dir)
                .map_err(|e| e.into_engine("dir"))?;
            if dir.as_local().is_none() {
                if store.exists(&Location::from_path(&target)?)? {
                    return Err(EngineError::TargetExists { path: target });
                }
                ctx.env.criu()?;
                return next.run(ctx).await;
            }
            if occupied(&target) {
                return Err(EngineError::TargetExists { path: target });
            }
            if ctx.dir.exists() && !ctx.dir.is_dir() {
                return Err(EngineError::InvalidRequest {
                    field: "dir",
                    reason: format!("{} exists and is not a directory", ctx.dir.display()),
                });
            }
            ctx.env.criu()?;
            next.run(ctx).await
        })
    })
}

/// Checks the restore request.
pub fn validate_restore_request() -> Adapter<RestoreCtx, RestoreResponse> {
    Adapter::from_fn("validate_restore_request", |ctx: RestoreCtx, next| {
        Box::pin(async move {
            require_root("restoring a process")?;
            if ctx.req.lazy && ctx.req.kind() != CheckpointKind::PROCESS {
                return Err(EngineError::InvalidRequest {
                    field: "lazy",
                    reason: format!(
                        "a lazy restore brings back a process tree or job; {} containers \
                         are restored in full: drop --lazy",
                        ctx.req.kind()
                    ),
                });
            }
            let (at, store) = ctx
                .env
                .stores
                .resolve_path(&ctx.req.path)
                .map_err(|e| e.into_engine("path"))?;
            if !store.exists(&at)? {
                return Err(EngineError::NoSuchCheckpoint {
                    path: ctx.req.path.clone(),
                });
            }
            ctx.env.criu()?;
            next.run(ctx).await
        })
    })
}

/// Checks that the program exists and the log can be written.
pub fn validate_run_request() -> Adapter<RunCtx, RunResponse> {
    Adapter::from_fn("validate_run_request", |ctx: RunCtx, next| {
        Box::pin(async move {
            if ctx.req.program.is_empty() {
                return Err(EngineError::InvalidRequest {
                    field: "program",
                    reason: "give the program to run".into(),
                });
            }
            if host::find_executable(Path::new(&ctx.req.program)).is_none() {
                return Err(EngineError::InvalidRequest {
                    field: "program",
                    reason: format!(
                        "{} is not an executable file nor found on PATH",
                        ctx.req.program
                    ),
                });
            }
            if let Some(parent) = ctx.req.log_path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    EngineError::io(
                        format!("cannot create log directory {}", parent.display()),
                        e,
                    )
                })?;
            }
            next.run(ctx).await
        })
    })
}

/// Checks that the process to adopt is alive.
pub fn validate_manage_request() -> Adapter<ManageRequest, ManageResponse> {
    Adapter::from_fn("validate_manage_request", |req: ManageRequest, next| {
        Box::pin(async move {
            require_live_process(req.pid)?;
            next.run(req).await
        })
    })
}
