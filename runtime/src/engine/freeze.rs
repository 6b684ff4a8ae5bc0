//! Freeze and unfreeze: stop or resume every process of a tree with signals.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::chain::OpResult;
use crate::error::EngineError;
use crate::process::inspect;

/// Sends `sig` to every process of the tree rooted at `pid`, root last on stop so
/// children cannot observe a stopped parent before they stop themselves.
pub fn signal_tree(pid: i32, sig: Signal) -> OpResult<()> {
    if !inspect::is_alive(pid) {
        return Err(EngineError::NoSuchProcess { pid });
    }
    let tree = inspect::tree(pid).map_err(|e| EngineError::Inspect { pid, source: e })?;
    for p in tree.iter().rev() {
        match kill(Pid::from_raw(p.pid), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(nix::errno::Errno::EPERM) => {
                return Err(EngineError::PermissionDenied(format!(
                    "cannot signal PID {}",
                    p.pid
                )))
            }
            Err(e) => return Err(EngineError::io(format!("signal PID {}", p.pid), e.into())),
        }
    }
    Ok(())
}
