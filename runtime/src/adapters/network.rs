//! Network options: chosen from the tree's real sockets on dump, and re-applied from the
//! checkpoint's metadata on restore (so callers need not repeat `--tcp-established`).

use crate::adapters::choose;
use crate::chain::Adapter;
use crate::criu::options::CriuOpts;
use crate::engine::{CriuFlags, DumpCtx, DumpResponse, RestoreCtx, RestoreResponse};
use crate::process::state::{ProcessState, SocketKind};

/// Whether the tree holds a connected TCP socket.
pub fn has_tcp_connections(state: &ProcessState) -> bool {
    state
        .sockets
        .iter()
        .any(|s| s.kind == SocketKind::TcpConnected)
}

/// Turns on `tcp_established` when the tree holds connected TCP sockets.
pub fn detect_network_options() -> Adapter<DumpCtx, DumpResponse> {
    Adapter::from_fn("detect_network_options", |mut ctx: DumpCtx, next| {
        Box::pin(async move {
            let detected = has_tcp_connections(&ctx.state);
            ctx.opts.tcp_established = choose(ctx.req.flags.tcp_established, detected);
            if detected {
                tracing::info!(
                    pid = ctx.req.pid,
                    "connected TCP sockets found: tcp_established on"
                );
            }
            next.run(ctx).await
        })
    })
}

/// The restore options: those recorded at dump time, overridden by the caller's.
pub fn restore_options(recorded: &CriuOpts, flags: &CriuFlags) -> CriuOpts {
    let mut o = recorded.clone();
    o.leave_running = false;
    o.tcp_established = choose(flags.tcp_established, o.tcp_established);
    o.tcp_close = choose(flags.tcp_close, o.tcp_close);
    o.file_locks = choose(flags.file_locks, o.file_locks);
    o.shell_job = choose(flags.shell_job, o.shell_job);
    o.link_remap = choose(flags.link_remap, o.link_remap);
    if !flags.external.is_empty() {
        o.external = flags.external.clone();
    }
    o
}

/// Applies the options recorded in the checkpoint.
pub fn apply_recorded_options() -> Adapter<RestoreCtx, RestoreResponse> {
    Adapter::from_fn("apply_recorded_options", |mut ctx: RestoreCtx, next| {
        Box::pin(async move {
            ctx.opts = restore_options(&ctx.metadata.criu_options, &ctx.req.flags);
            next.run(ctx).await
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::state::SocketInfo;

    #[test]
    fn connected_tcp_turns_the_option_on() {
        let mut s = ProcessState::default();
        s.sockets.push(SocketInfo {
            kind: SocketKind::TcpListen,
            ..Default::default()
        });
        assert!(!has_tcp_connections(&s));
        s.sockets.push(SocketInfo {
            kind: SocketKind::TcpConnected,
            ..Default::default()
        });
        assert!(has_tcp_connections(&s));
    }

    #[test]
    fn recorded_options_apply_and_caller_overrides_win() {
        let recorded = CriuOpts {
            tcp_established: true,
            leave_running: true,
            shell_job: true,
            ..Default::default()
        };
        let o = restore_options(&recorded, &CriuFlags::default());
        assert!(o.tcp_established && o.shell_job && !o.leave_running);
        let flags = CriuFlags {
            tcp_established: Some(false),
            ..Default::default()
        };
        assert!(!restore_options(&recorded, &flags).tcp_established);
    }
}
