//! What a non-root caller may restore: CRIU runs as root and restores whatever the
//! images say (credentials, files to open), so such a caller gets only a checkpoint the
//! daemon made for it, of processes that ran as it, that it can read, and that nobody
//! but root could have changed since.

use std::path::Path;

use cedana_runtime::image::metadata::Metadata;

use super::error::DaemonError;
use super::identity::{self, Caller, TrustedCheckpoint};
use super::jobs::{JobManager, Result};

impl JobManager {
    /// For a non-root caller, the checkpoint at `path` opened as the caller once every
    /// rule holds (the engine then reads it through that descriptor); `None` for root,
    /// who may restore anything.
    pub(super) fn guard_restore(
        &self,
        caller: &Caller,
        path: &Path,
    ) -> Result<Option<TrustedCheckpoint>> {
        if caller.is_root() {
            return Ok(None);
        }
        let remote =
            cedana_runtime::store::Location::from_path(path).is_ok_and(|l| l.as_local().is_none());
        if remote {
            // Fetched with the daemon's credentials: not something to do for anyone.
            return Err(DaemonError::Forbidden(format!(
                "uid {} may not restore {}: object storage is reached with the daemon's \
                 credentials, so only root may",
                caller.uid,
                path.display()
            )));
        }
        let ck = identity::open_trusted_checkpoint(caller, path)?;
        let record = self
            .store
            .checkpoint_at(&ck.path.display().to_string())?
            .ok_or_else(|| {
                DaemonError::Forbidden(format!(
                    "uid {} may not restore {}: the daemon has no record of making it, and a \
                     non-root caller may restore only checkpoints the daemon made for it",
                    caller.uid,
                    path.display()
                ))
            })?;
        caller.require_owner(
            record.owner_uid,
            "restore",
            &format!("checkpoint {}", path.display()),
        )?;
        // The store's copy of the metadata: the one on disk is not what is trusted.
        let md: Metadata =
            serde_json::from_str(&record.metadata_json).map_err(|e| DaemonError::Io {
                context: format!("cannot read the recorded metadata of {}", path.display()),
                source: std::io::Error::other(e),
            })?;
        let other = md
            .process
            .tree
            .iter()
            .map(|p| p.uid)
            .find(|u| *u != caller.uid);
        if md.process.tree.is_empty() || other.is_some() {
            return Err(DaemonError::Forbidden(format!(
                "uid {} may not restore {}: its processes ran as uid {}",
                caller.uid,
                path.display(),
                other.map_or("unknown".to_string(), |u| u.to_string())
            )));
        }
        Ok(Some(ck))
    }
}
