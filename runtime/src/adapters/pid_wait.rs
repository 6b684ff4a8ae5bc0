//! CRIU restores processes with their original PIDs. Right after a dump those PIDs may
//! still be held by zombies that init has not reaped yet (init reaps late on some hosts),
//! so wait, bounded, for them to be free, and name the holder if one stays taken. A PID
//! is also taken while some process still uses it as its process group or session id
//! (CRIU then fails with "Can't fork for N: File exists").

use std::time::{Duration, Instant};

use crate::chain::Adapter;
use crate::engine::claims::tree_pids;
use crate::engine::{RestoreCtx, RestoreResponse};
use crate::error::EngineError;
use crate::process::inspect;

const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Waits until none of `pids` exists, or returns the first one still taken.
pub async fn wait_until_free(pids: &[i32], timeout: Duration) -> Result<(), EngineError> {
    let start = Instant::now();
    loop {
        // A scan of every process in /proc: off the async workers, which twenty restores
        // at once would otherwise keep busy (the daemon then answered nothing else).
        let owned = pids.to_vec();
        let taken = tokio::task::spawn_blocking(move || first_taken(&owned))
            .await
            .map_err(|e| EngineError::Internal(format!("PID scan failed: {e}")))?;
        match taken {
            None => return Ok(()),
            Some((pid, holder)) if start.elapsed() >= timeout => {
                let holder = if holder == pid {
                    inspect::describe(pid)
                } else {
                    format!(
                        "PID {holder} {} as its session or group id",
                        inspect::describe(holder)
                    )
                };
                return Err(EngineError::PidTaken {
                    pid,
                    holder,
                    waited_ms: start.elapsed().as_millis() as u64,
                });
            }
            Some(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// The first needed PID still in use, and the process using it.
fn first_taken(pids: &[i32]) -> Option<(i32, i32)> {
    if let Some(p) = pids.iter().copied().find(|p| inspect::exists(*p)) {
        return Some((p, p));
    }
    inspect::all_pids().into_iter().find_map(|other| {
        let (pgid, sid) = inspect::group_and_session(other)?;
        pids.iter()
            .copied()
            .find(|p| *p == sid || *p == pgid)
            .map(|p| (p, other))
    })
}

/// Claims the checkpoint's PIDs for this restore (a concurrent restore of the same
/// processes is refused clearly), then waits for them to be free before CRIU runs. The
/// claim is held until CRIU is done, when the restored tree holds the PIDs itself.
pub fn wait_for_free_pids() -> Adapter<RestoreCtx, RestoreResponse> {
    Adapter::from_fn("wait_for_free_pids", |ctx: RestoreCtx, next| {
        Box::pin(async move {
            let timeout = Duration::from_millis(ctx.env.config.criu.pid_wait_timeout_ms);
            let pids = tree_pids(&ctx.metadata.process);
            let _claim = ctx.env.claim_for_restore(pids.clone())?;
            wait_until_free(&pids, timeout).await?;
            next.run(ctx).await
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_pid_is_named_after_the_timeout() {
        let me = std::process::id() as i32;
        let err = wait_until_free(&[me], Duration::from_millis(60))
            .await
            .expect_err("taken");
        let msg = err.to_string();
        assert!(msg.contains(&format!("PID {me}")), "{msg}");
        assert!(msg.contains("still in use"), "{msg}");
    }

    #[tokio::test]
    async fn free_pids_pass_at_once() {
        // PIDs above pid_max cannot exist.
        wait_until_free(&[i32::MAX - 1], Duration::from_millis(10))
            .await
            .expect("free");
    }
}
