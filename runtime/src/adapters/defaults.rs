//! Fills what the caller left out from the configuration, and writes the pid file.

use std::path::PathBuf;
use std::str::FromStr;

use cedana_config::Config;

use crate::chain::Adapter;
use crate::criu::relay;
use crate::engine::{DumpCtx, DumpRequest, DumpResponse, RestoreCtx, RestoreResponse};
use crate::error::EngineError;
use crate::image::compression::Compression;
use crate::image::layout;
use crate::image::metadata::Packing;
use crate::process::inspect;
use crate::store::Location;
use crate::streamer::Codec;

/// Resolves dir, name, compression and leave_running from the request or the config.
pub fn fill_missing_dump_defaults() -> Adapter<DumpCtx, DumpResponse> {
    Adapter::from_fn("fill_missing_dump_defaults", |mut ctx: DumpCtx, next| {
        Box::pin(async move {
            let cfg = &ctx.env.config.checkpoint;
            ctx.dir = absolute(
                ctx.req.dir.clone().unwrap_or_else(|| cfg.dir.clone()),
                "dir",
            )?;
            ctx.compression = match ctx.req.compression {
                Some(c) => c,
                // The config is validated when loaded; a bad value still gets a clear error.
                None => Compression::from_str(&cfg.compression).map_err(|e| {
                    EngineError::InvalidRequest {
                        field: "compression",
                        reason: e.to_string(),
                    }
                })?,
            };
            let (plan, not_streamed) = choose_packing(&ctx, ctx.compression)?;
            if plan.is_some() {
                // The shards are compressed already: the checkpoint is their directory.
                ctx.compression = Compression::None;
            }
            ctx.stream = plan;
            ctx.metadata.packing = Some(Packing {
                streams: plan.map_or(0, |(n, _)| n as u32),
                not_streamed,
                staged_on_disk: None,
            });
            ctx.name = match &ctx.req.name {
                Some(n) => n.clone(),
                None => default_name(ctx.req.pid),
            };
            ctx.opts.leave_running = leave_running(&ctx.req, &ctx.env.config);
            ctx.opts.external = ctx.req.flags.external.clone();
            ctx.opts.tcp_close = ctx.req.flags.tcp_close.unwrap_or(false);
            next.run(ctx).await
        })
    })
}

/// Whether a dump leaves the tree running: the request's choice, else
/// `checkpoint.leave_running`. Callers that act on the outcome (the daemon waits for a
/// stopped job to be recorded halted) ask here rather than working it out again.
pub fn leave_running(req: &DumpRequest, config: &Config) -> bool {
    req.leave_running.unwrap_or(config.checkpoint.leave_running)
}

/// Most shards a streamed dump may ask for.
pub const MAX_STREAMS: u32 = 64;
/// Most shards a dump streams into by default: one per core up to this many. Past a few
/// shards the dump is bound by CRIU's one writer, not by compression.
pub const DEFAULT_STREAMS_CAP: usize = 8;

/// Shards and codec of a streamed dump.
pub type StreamPlan = (usize, Codec);

/// Shard count and codec of a dump that does not say `--streams`: one shard per core
/// (capped), zstd.
pub fn default_streams() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, DEFAULT_STREAMS_CAP)
}

/// How a dump stores its images: the stream plan (shards, codec), or None with the reason
/// it is not streamed. Without `--streams`, a dump that streams by default
/// (`streams_by_default`) streams unless the route said it cannot (`DumpCtx::no_stream`),
/// the caller asked for image files (`image_path`) or an archive (`--compression`), the
/// relay is missing, or the configured compression cannot be streamed.
fn choose_packing(
    ctx: &DumpCtx,
    compression: Compression,
) -> Result<(Option<StreamPlan>, Option<String>), EngineError> {
    let req = &ctx.req;
    if let Some(n) = req.streams {
        let plan = stream_plan(req)?;
        let why = (n == 0).then(|| "--streams 0 asked for the archive".to_string());
        return Ok((plan, why));
    }
    if !req.streams_by_default {
        // A library caller that did not opt in: the archive, as it always was.
        return Ok((None, None));
    }
    let why = if req.image_path.is_some() {
        Some("the caller asked for CRIU image files (--image-path)".to_string())
    } else if let Some(reason) = &ctx.no_stream {
        Some(reason.clone())
    } else if let Some(c) = req.compression {
        Some(format!(
            "--compression {c} asks for an archive (stream with --streams N)"
        ))
    } else if relay::locate().is_none() {
        // Streamed dumps need it (CRIU's action script, runc's CRIU).
        Some(format!(
            "{} is neither beside this binary nor on PATH (make install)",
            relay::BINARY_NAME
        ))
    } else {
        None
    };
    if why.is_some() {
        return Ok((None, why));
    }
    Ok(match codec_of(compression) {
        Some(codec) => (Some((default_streams(), codec)), None),
        None => (
            None,
            Some(format!(
                "checkpoint.compression is {compression}, which cannot be streamed (zstd or lz4 can)"
            )),
        ),
    })
}

/// Shard count and codec of a dump that asked for `--streams N`, or None when it did not
/// or asked for 0 (the archive).
pub fn stream_plan(req: &DumpRequest) -> Result<Option<StreamPlan>, EngineError> {
    let Some(n) = req.streams.filter(|n| *n > 0) else {
        return Ok(None);
    };
    if !(1..=MAX_STREAMS).contains(&n) {
        return Err(EngineError::InvalidRequest {
            field: "streams",
            reason: format!(
                "{n} is out of range; use 1 to {MAX_STREAMS} (e.g. the number of cores)"
            ),
        });
    }
    let compression = req.compression.unwrap_or(Compression::Zstd);
    let codec = codec_of(compression).ok_or_else(|| EngineError::InvalidRequest {
        field: "compression",
        reason: format!(
            "{compression} cannot be streamed; with --streams use zstd (default) or lz4"
        ),
    })?;
    Ok(Some((n as usize, codec)))
}

/// The shard codec of a compression that can be streamed.
fn codec_of(c: Compression) -> Option<Codec> {
    match c {
        Compression::Zstd => Some(Codec::Zstd),
        Compression::Lz4 => Some(Codec::Lz4),
        _ => None,
    }
}

/// Makes the checkpoint path absolute so later steps do not depend on the cwd.
pub fn fill_missing_restore_defaults() -> Adapter<RestoreCtx, RestoreResponse> {
    Adapter::from_fn(
        "fill_missing_restore_defaults",
        |mut ctx: RestoreCtx, next| {
            Box::pin(async move {
                if ctx.req.path.as_os_str().is_empty() {
                    return Err(EngineError::InvalidRequest {
                        field: "path",
                        reason: "give the checkpoint to restore with --path".into(),
                    });
                }
                ctx.req.path = absolute(ctx.req.path.clone(), "path")?;
                next.run(ctx).await
            })
        },
    )
}

/// Writes the restored root's PID to `--pid-file` once the restore succeeded.
pub fn write_pid_file() -> Adapter<RestoreCtx, RestoreResponse> {
    Adapter::from_fn("write_pid_file", |ctx: RestoreCtx, next| {
        Box::pin(async move {
            let pid_file = ctx.req.pid_file.clone();
            let resp: RestoreResponse = next.run(ctx).await?;
            if let Some(path) = pid_file {
                std::fs::write(&path, format!("{}\n", resp.pid)).map_err(|e| {
                    EngineError::io(
                        format!(
                            "restored PID {} but cannot write {}",
                            resp.pid,
                            path.display()
                        ),
                        e,
                    )
                })?;
            }
            Ok(resp)
        })
    })
}

/// Makes a local path absolute; a store's URL (`s3://...`) stays as it is. `field` names
/// the request field in a refusal.
fn absolute(p: PathBuf, field: &'static str) -> Result<PathBuf, EngineError> {
    if p.is_absolute() {
        return Ok(p);
    }
    let at = Location::from_path(&p).map_err(|e| e.into_engine(field))?;
    match at.as_local() {
        Some(_) => std::path::absolute(&p)
            .map_err(|e| EngineError::io(format!("resolve {}", p.display()), e)),
        None => Ok(at.to_path_buf()),
    }
}

/// `comm-PID-YYYYmmddTHHMMSS`, with anything odd in the name replaced.
fn default_name(pid: i32) -> String {
    let comm = inspect::read_info(pid)
        .map(|i| i.comm)
        .unwrap_or_else(|_| "process".into());
    let comm = layout::name_part(&comm, "process");

    format!(
        "{comm}-{pid}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%3f")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_name_uses_comm_and_pid() {
        let me = std::process::id() as i32;
        let name = default_name(me);
        assert!(name.contains(&format!("-{me}-")), "{name}");
        assert!(!name.contains('/'));
        assert!(!name.starts_with('.'));
    }
}
