//! Dump middleware: find the container's init through the runtime's state, and turn on
//! the CRIU options a container needs from its real state (the process adapters already
//! chose TCP, locks and shell job from the tree; here: external unix sockets, terminals).

use std::path::{Path, PathBuf};

use super::meta::{ContainerLayout, ContainerMeta};
use super::runtime::Runtime;
use super::state::ContainerStatus;
use super::stream;
use super::target::dump_target;
use crate::adapters::choose;
use crate::chain::Adapter;
use crate::engine::{blocking, DumpCtx, DumpResponse};
use crate::error::EngineError;
use crate::image::layout;
use crate::process::state::{ProcessState, SocketKind};

use super::error::RuncError;

/// Resolves the container to its init PID; refuses unknown and not-running containers.
/// Runs first, so the process adapters after it see a PID like for any process tree.
pub fn resolve_runc_container() -> Adapter<DumpCtx, DumpResponse> {
    Adapter::from_fn("resolve_runc_container", |mut ctx: DumpCtx, next| {
        Box::pin(async move {
            let Some(d) = dump_target(&ctx).cloned() else {
                return Err(EngineError::InvalidRequest {
                    field: "runc",
                    reason: "a runc dump needs the container (id, root)".into(),
                });
            };
            if d.target.id.is_empty() {
                return Err(EngineError::InvalidRequest {
                    field: "id",
                    reason: "give the container id".into(),
                });
            }
            // CRIU's version (one CRIU start) is asked while the runtime answers.
            ctx.env.prefetch_criu_version();
            let configured = ctx.env.config.runc.binary_path.clone();
            let (state, binary, version) = blocking(move || {
                let rt = Runtime::new(&d.target, &configured)?;
                // Two runtime processes side by side: both are on every dump's path.
                let (state, version) = std::thread::scope(|s| {
                    let version = s.spawn(|| rt.version().unwrap_or_default());
                    let state = rt.state(&d.target.id);
                    (state, version.join().unwrap_or_default())
                });
                Ok((state?, rt.binary().to_path_buf(), version))
            })
            .await?;
            let live = matches!(
                state.status,
                ContainerStatus::Running | ContainerStatus::Paused
            );
            if !live || state.pid <= 0 {
                return Err(RuncError::NotRunning {
                    id: state.id,
                    status: state.status.to_string(),
                }
                .into());
            }
            ctx.req.pid = state.pid;
            if ctx.req.name.is_none() {
                ctx.req.name = Some(format!(
                    "{}-{}",
                    sanitize(&state.id),
                    chrono::Utc::now().format("%Y%m%dT%H%M%S%3f")
                ));
            }
            let target = dump_target(&ctx).map(|d| d.target.clone());
            let container = ContainerMeta {
                id: state.id.clone(),
                runtime: binary.display().to_string(),
                runtime_version: version,
                root: target
                    .as_ref()
                    .and_then(|t| t.root.as_ref())
                    .map(|r| r.display().to_string())
                    .unwrap_or_default(),
                bundle: state.bundle.clone(),
                rootfs: rootfs_of(&state.bundle, &state.rootfs)
                    .display()
                    .to_string(),
                created: state.created.clone(),
                layout: if ctx.req.image_path.is_some() {
                    ContainerLayout::Images
                } else {
                    ContainerLayout::Portable
                },
                ..Default::default()
            };
            ctx.metadata.set_section(&container)?;
            if ctx.no_stream.is_none() {
                ctx.no_stream = stream::fallback_reason(Path::new(&state.bundle));
            }
            next.run(ctx).await
        })
    })
}

/// The rootfs runc reports, else the bundle's `rootfs`.
fn rootfs_of(bundle: &str, rootfs: &str) -> PathBuf {
    if rootfs.is_empty() {
        PathBuf::from(bundle).join("rootfs")
    } else {
        PathBuf::from(rootfs)
    }
}

fn sanitize(id: &str) -> String {
    layout::name_part(id, "container")
}

/// Whether the tree holds unix sockets other than listeners, whose peers may be outside
/// the container (e.g. a log socket of the host). `/proc/net/unix` does not name peers,
/// so any such socket turns the option on; it is harmless when every peer is inside.
pub fn has_unix_connections(state: &ProcessState) -> bool {
    state
        .sockets
        .iter()
        .any(|s| s.kind == SocketKind::Unix && s.local.is_empty())
}

/// Sets `ext_unix_sk` and, for containers on a terminal, `shell_job`.
pub fn detect_container_options() -> Adapter<DumpCtx, DumpResponse> {
    Adapter::from_fn("detect_container_options", |mut ctx: DumpCtx, next| {
        Box::pin(async move {
            ctx.opts.ext_unix_sk = has_unix_connections(&ctx.state);
            ctx.opts.shell_job = choose(
                ctx.req.flags.shell_job,
                ctx.opts.shell_job || ctx.state.has_tty,
            );
            tracing::info!(opts = ?ctx.opts, pid = ctx.req.pid, "container CRIU options");
            next.run(ctx).await
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::state::SocketInfo;

    #[test]
    fn unnamed_unix_socket_turns_ext_unix_sk_on() {
        let mut s = ProcessState::default();
        s.sockets.push(SocketInfo {
            kind: SocketKind::Unix,
            local: "/run/x.sock".into(),
            ..Default::default()
        });
        assert!(!has_unix_connections(&s));
        s.sockets.push(SocketInfo {
            kind: SocketKind::Unix,
            ..Default::default()
        });
        assert!(has_unix_connections(&s));
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize("a/b.c"), "a_b_c");
        assert_eq!(sanitize("..x"), "x");
        assert_eq!(sanitize("/"), "container");
    }
}
