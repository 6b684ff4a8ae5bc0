//! File options chosen from what the tree has open: open-but-deleted files need link
//! remapping, held locks need `file_locks`.

use crate::adapters::choose;
use crate::chain::Adapter;
use crate::engine::{DumpCtx, DumpResponse};
use crate::process::inspect;
use crate::process::state::ProcessState;

/// Whether any open file has been unlinked.
pub fn has_deleted_files(state: &ProcessState) -> bool {
    state
        .open_files
        .iter()
        .any(|f| f.target.starts_with('/') && f.target.ends_with(" (deleted)"))
}

/// Sets `link_remap` and `file_locks` from the tree's open files and /proc/locks.
pub fn detect_file_options() -> Adapter<DumpCtx, DumpResponse> {
    Adapter::from_fn("detect_file_options", |mut ctx: DumpCtx, next| {
        Box::pin(async move {
            let pids: Vec<i32> = ctx.state.tree.iter().map(|p| p.pid).collect();
            let locked = !inspect::pids_holding_locks(&pids).is_empty();
            ctx.opts.file_locks = choose(ctx.req.flags.file_locks, locked);
            ctx.opts.link_remap = choose(ctx.req.flags.link_remap, has_deleted_files(&ctx.state));
            next.run(ctx).await
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::state::OpenFile;

    #[test]
    fn deleted_file_is_detected() {
        let mut s = ProcessState::default();
        s.open_files.push(OpenFile {
            pid: 1,
            fd: 3,
            target: "/tmp/x (deleted)".into(),
        });
        assert!(has_deleted_files(&s));
        s.open_files[0].target = "/tmp/x".into();
        assert!(!has_deleted_files(&s));
    }
}
