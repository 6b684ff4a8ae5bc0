//! PIDs claimed by the dumps and restores running now. A second operation on a PID that
//! one holds is refused with a clear message before CRIU runs, instead of failing inside
//! CRIU with its raw one (two tracers cannot seize one task; two restores cannot both
//! create PID N: "Can't fork for N: File exists").
//!
//! Claims live in two places. The engine's own table says exactly which operation holds
//! a PID (the daemon's concurrent requests). Other processes (`--no-server` CLIs, the
//! runc wrapper, a second daemon) are seen through open-file-description locks on one
//! shared file: byte `2*PID` is held by whoever claims the PID, byte `2*PID+1` also by a
//! restore, so a refusal can still say what holds it. The kernel drops these locks when
//! the holder closes the file or dies, so a crash never leaves a PID claimed.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::chain::OpResult;
use crate::engine::Env;
use crate::error::EngineError;
use crate::process::state::ProcessState;

/// The file whose byte locks carry claims between processes. Under /run: PIDs do not
/// survive a reboot, and neither should their claims.
pub const CLAIMS_FILE: &str = "/run/cedana/pid-claims";

/// What an operation holds a PID for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidUse {
    /// A dump is seizing the tree.
    Dump,
    /// A restore is recreating the PID.
    Restore,
}

impl PidUse {
    /// The refusal for a request that meets a PID held for `self`.
    fn refusal(self, pid: i32) -> EngineError {
        match self {
            PidUse::Dump => EngineError::DumpInProgress { pid },
            PidUse::Restore => EngineError::RestoreInProgress { pid },
        }
    }
}

/// The engine's table of claimed PIDs.
#[derive(Debug)]
pub(crate) struct Claims {
    held: Mutex<BTreeMap<i32, PidUse>>,
    file: PathBuf,
}

impl Claims {
    /// An empty table over the shared claims file.
    pub(crate) fn new() -> Self {
        Self {
            held: Mutex::new(BTreeMap::new()),
            file: PathBuf::from(CLAIMS_FILE),
        }
    }
}

/// The PIDs of one operation, released when it is dropped.
#[derive(Debug)]
pub struct PidClaim {
    env: Arc<Env>,
    pids: Vec<i32>,
    /// Holds the cross-process locks; closing it releases them.
    _locks: Option<File>,
}

impl Drop for PidClaim {
    fn drop(&mut self) {
        let mut held = self
            .env
            .claims
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for pid in &self.pids {
            held.remove(pid);
        }
    }
}

/// Every PID and TID of a process tree (what a dump seizes, what a restore recreates).
pub fn tree_pids(state: &ProcessState) -> Vec<i32> {
    let mut pids: Vec<i32> = state
        .tree
        .iter()
        .flat_map(|p| std::iter::once(p.pid).chain(p.tids.iter().copied()))
        .filter(|p| *p > 0)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Claims `pids` for `what`, or refuses with the error of the use that holds one.
pub(crate) fn claim(env: &Arc<Env>, pids: Vec<i32>, what: PidUse) -> OpResult<PidClaim> {
    let mut held = env.claims.held.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((pid, by)) = pids.iter().find_map(|p| held.get(p).map(|by| (*p, *by))) {
        return Err(by.refusal(pid));
    }
    let locks = lock_across_processes(&env.claims.file, &pids, what)?;
    for pid in &pids {
        held.insert(*pid, what);
    }
    Ok(PidClaim {
        env: Arc::clone(env),
        pids,
        _locks: locks,
    })
}

/// Takes the byte locks of `pids` in the claims file. Where the file cannot be opened
/// (no /run/cedana, not root) only this engine's table protects the PIDs: an operation
/// that could not even open it could not have run CRIU as root either.
fn lock_across_processes(file: &Path, pids: &[i32], what: PidUse) -> OpResult<Option<File>> {
    let Some(f) = open_claims_file(file) else {
        return Ok(None);
    };
    for pid in pids {
        let (any, restore) = (2 * i64::from(*pid), 2 * i64::from(*pid) + 1);
        if !try_lock(&f, any) {
            // Whoever holds it may not have marked a restore yet: then it reads as a dump,
            // which is still a clear refusal naming the PID.
            let by = if is_locked(&f, restore) {
                PidUse::Restore
            } else {
                PidUse::Dump
            };
            return Err(by.refusal(*pid));
        }
        if what == PidUse::Restore {
            // Nobody else can hold this byte: it is only taken under the one above.
            let _ = try_lock(&f, restore);
        }
    }
    Ok(Some(f))
}

fn open_claims_file(file: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent() {
        if std::fs::create_dir_all(dir).is_err() {
            return None;
        }
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(file)
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::debug!(file = %file.display(), error = %e, "no cross-process PID claims");
            None
        }
    }
}

fn range(kind: libc::c_short, offset: i64) -> libc::flock {
    libc::flock {
        l_type: kind,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: offset,
        l_len: 1,
        // Must be 0 for open-file-description locks.
        l_pid: 0,
    }
}

/// Takes a write lock on one byte without waiting; false if another holder has it.
fn try_lock(f: &File, offset: i64) -> bool {
    let lock = range(libc::F_WRLCK as libc::c_short, offset);
    nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_OFD_SETLK(&lock)).is_ok()
}

/// Whether another open file description holds a lock on the byte.
fn is_locked(f: &File, offset: i64) -> bool {
    let mut lock = range(libc::F_WRLCK as libc::c_short, offset);
    nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_OFD_GETLK(&mut lock)).is_ok()
        && lock.l_type != libc::F_UNLCK as libc::c_short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with_file(file: &Path) -> Arc<Env> {
        let mut env = Env::new(cedana_config::Config::default());
        env.claims.file = file.to_path_buf();
        Arc::new(env)
    }

    #[test]
    fn a_claimed_pid_is_refused_by_the_use_that_holds_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let env = env_with_file(&dir.path().join("claims"));
        let held = claim(&env, vec![10, 11], PidUse::Restore).expect("first");
        let err = claim(&env, vec![11], PidUse::Restore).expect_err("taken");
        assert!(
            err.to_string().contains("PID 11 is being restored"),
            "{err}"
        );
        let err = claim(&env, vec![12, 10], PidUse::Dump).expect_err("taken");
        assert!(
            err.to_string().contains("PID 10 is being restored"),
            "{err}"
        );
        drop(held);
        let _again = claim(&env, vec![10, 11], PidUse::Dump).expect("released");
        let err = claim(&env, vec![10], PidUse::Restore).expect_err("taken");
        assert!(err.to_string().contains("being checkpointed"), "{err}");
    }

    #[test]
    fn another_engine_sees_the_claim_through_the_file() {
        // Two engines stand for two processes: OFD locks conflict between descriptions.
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("claims");
        let (a, b) = (env_with_file(&file), env_with_file(&file));
        let held = claim(&a, vec![40], PidUse::Restore).expect("a");
        let err = claim(&b, vec![40], PidUse::Restore).expect_err("b refused");
        assert!(
            err.to_string().contains("PID 40 is being restored"),
            "{err}"
        );
        let err = claim(&b, vec![40], PidUse::Dump).expect_err("b refused");
        assert!(
            err.to_string().contains("PID 40 is being restored"),
            "{err}"
        );
        drop(held);
        let _b = claim(&b, vec![40], PidUse::Dump).expect("free again");
        let err = claim(&a, vec![40], PidUse::Restore).expect_err("a refused");
        assert!(err.to_string().contains("being checkpointed"), "{err}");
    }

    #[test]
    fn without_the_file_the_engine_still_refuses() {
        let env = env_with_file(Path::new("/proc/no-such-dir/claims"));
        let _held = claim(&env, vec![7], PidUse::Dump).expect("claimed");
        assert!(claim(&env, vec![7], PidUse::Restore).is_err());
    }
}
