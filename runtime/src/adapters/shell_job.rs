//! Shell-job detection: a tree whose session or process group leader lives outside it
//! (typically started from a shell or a test harness) can only be dumped by CRIU with
//! `--shell-job`.

use crate::adapters::choose;
use crate::chain::Adapter;
use crate::engine::{DumpCtx, DumpResponse};
use crate::process::state::ProcessState;

/// Whether the tree's session or group leader is outside the tree.
pub fn needs_shell_job(state: &ProcessState) -> bool {
    let Some(root) = state.tree.first() else {
        return false;
    };
    let inside = |id: i32| state.tree.iter().any(|p| p.pid == id);
    !inside(root.sid) || !inside(root.pgid)
}

/// Turns on `shell_job` when needed (unless the caller forced it off).
pub fn detect_shell_job() -> Adapter<DumpCtx, DumpResponse> {
    Adapter::from_fn("detect_shell_job", |mut ctx: DumpCtx, next| {
        Box::pin(async move {
            ctx.opts.shell_job = choose(ctx.req.flags.shell_job, needs_shell_job(&ctx.state));
            next.run(ctx).await
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::state::ProcessInfo;

    fn proc(pid: i32, pgid: i32, sid: i32) -> ProcessInfo {
        ProcessInfo {
            pid,
            pgid,
            sid,
            ..Default::default()
        }
    }

    #[test]
    fn session_leader_tree_is_not_a_shell_job() {
        let s = ProcessState {
            tree: vec![proc(10, 10, 10), proc(11, 10, 10)],
            ..Default::default()
        };
        assert!(!needs_shell_job(&s));
    }

    #[test]
    fn process_in_a_foreign_session_is_a_shell_job() {
        let s = ProcessState {
            tree: vec![proc(10, 5, 5)],
            ..Default::default()
        };
        assert!(needs_shell_job(&s));
    }
}
