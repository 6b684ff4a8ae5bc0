//! Restore's storage: the checkpoint's store (by the `--path` location's scheme) serves a
//! local checkpoint in place; a remote one is first fetched, as streams, into a private
//! temp dir (`fetch`). An archive is unpacked into a private hidden directory beside it
//! (`.NAME.restore-XXXXXX`, 0700; the temp dir only when that directory is not
//! writable), bounded by its manifest or the free space, and every file is verified
//! against metadata.json before CRIU sees it. CRIU works in a private temp dir that is
//! always removed; when the restore fails, CRIU's `restore.log` is first copied to
//! `cedana-restore-logs/` beside the checkpoint (the newest [`KEEP_LOGS`] are kept) and
//! the error names that copy.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use tempfile::TempDir;

use super::staging;
use crate::chain::Adapter;
use crate::engine::lazy::PagesInFlight;
use crate::engine::{bulk, RestoreCtx, RestoreResponse};
use crate::error::EngineError;
use crate::image::compression::Compression;
use crate::image::{archive, atomic, integrity, layout};
use crate::store::transfer;
use crate::streamer::{self, StreamIndex};

/// Directory, beside the checkpoint, where the logs of failed restores are kept.
pub const RESTORE_LOGS_DIR: &str = "cedana-restore-logs";
/// How many kept restore logs a [`RESTORE_LOGS_DIR`] holds at most.
pub const KEEP_LOGS: usize = 10;
/// CRIU's log file name in its work dir (runc and containerd's shim use the same).
const RESTORE_LOG: &str = "restore.log";
/// Longest part of the archive's name used in the unpack directory's name.
const MAX_NAME_PART: usize = 100;
/// Owner-only: unpacked images hold process memory.
const PRIVATE: u32 = 0o700;

/// Unpacks (if needed) and verifies the checkpoint, then cleans up after CRIU.
pub fn prepare_restore_storage() -> Adapter<RestoreCtx, RestoreResponse> {
    Adapter::from_fn("prepare_restore_storage", |mut ctx: RestoreCtx, next| {
        Box::pin(async move {
            let (at, store) = ctx
                .env
                .stores
                .resolve_path(&ctx.req.path)
                .map_err(|e| e.into_engine("path"))?;
            // A remote checkpoint is fetched first; dropped at the end, the copy goes.
            let fetched = match store.local_path(&at) {
                Some(_) => None,
                None => Some(bulk(move || Ok(transfer::fetch(store.as_ref(), &at)?)).await?),
            };
            let path = match &fetched {
                Some(f) => f.path.clone(),
                None => ctx.req.path.clone(),
            };
            let unpacked = if path.is_dir() {
                None
            } else {
                let p = path.clone();
                let staging = ctx.env.config.checkpoint.staging_dir.clone();
                // On failure the TempDir is dropped here, taking whatever was written.
                Some(bulk(move || unpack(&p, &staging)).await?)
            };
            ctx.images_dir = unpacked
                .as_ref()
                .map(|(d, _)| d.path().to_path_buf())
                .unwrap_or_else(|| path.clone());
            // Digests taken while unpacking: the files need not be read again.
            let found = unpacked
                .as_ref()
                .map(|(_, u)| (u.digests.clone(), u.manifest.clone()));
            let images = ctx.images_dir.clone();
            // A runc image directory may have been written by runc itself (no
            // metadata.json: restored as is) and collects runc's logs beside the images.
            let runc_dir = ctx
                .req
                .target
                .as_ref()
                .is_some_and(|t| t.images_may_lack_metadata())
                && unpacked.is_none();
            let archive_path = path.clone();
            // Shards read chunk by chunk, each chunk checked as it is decoded: remote
            // ones, and a lazy restore's (served as lazy-pages asks; hashing every
            // shard first would cost what the lazy restore saves).
            let chunkwise = ctx.req.remote_shards.is_some()
                || (ctx.req.lazy && images.join(streamer::INDEX_FILE).is_file());
            ctx.metadata = bulk(move || {
                if runc_dir && !layout::is_checkpoint_dir(&images) {
                    return Ok(crate::image::metadata::Metadata::default());
                }
                let md = integrity::read_metadata(&images)?;
                match found {
                    Some((digests, manifest)) => {
                        if let Some(m) = manifest {
                            m.check_metadata(&archive_path, &md)?;
                        }
                        integrity::verify_digests(&md, &digests)?
                    }
                    None if runc_dir => integrity::verify_listed(&images, &md)?,
                    // The shards are checked chunk by chunk as they are read (xxh64, and
                    // zstd's frame checksums); every other file here by its sha256.
                    None if chunkwise => {
                        let index = StreamIndex::load(&images)
                            .map_err(|e| EngineError::io("read the stream index", e))?;
                        integrity::verify_dir_chunked(&images, &md, &index.shards)?
                    }
                    None => integrity::verify_dir(&images, &md)?,
                }
                Ok(md)
            })
            .await?;
            // Named so that a crash's leftover is removed at the next daemon start.
            let work = tempfile::Builder::new()
                .prefix(&atomic::scratch_prefix("cedana-restore-work"))
                .suffix(atomic::PARTIAL_SUFFIX)
                .tempdir_in(std::env::temp_dir())
                .map_err(|e| EngineError::io("create restore work dir", e))?;
            ctx.work_dir = work.path().to_path_buf();
            // A lazy restore's pages are served from these files after the chain ends.
            let in_flight = PagesInFlight::default();
            ctx.ext.insert(in_flight.clone());
            let env = ctx.env.clone();
            let result = next.run(ctx).await;
            // A fetched checkpoint's logs are kept under the temp dir, as it has no
            // local directory of its own.
            let logs_beside = match &fetched {
                Some(f) => std::env::temp_dir().join(name_part(&f.path)),
                None => path.clone(),
            };
            let (result, work) = match result {
                Err(e) => (Err(keep_restore_log(e, work, &logs_beside)), None),
                ok => (ok, Some(work)),
            };
            in_flight.release_after(&env, Box::new((unpacked, fetched, work)));
            result
        })
    })
}

/// Unpacks the archive at `path` into a new private directory, in memory (`staging`) when
/// its manifest declares a size that fits there (the extraction holds it to that), else
/// beside it; returns it and what was found.
fn unpack(path: &Path, staging: &Path) -> Result<(TempDir, archive::Unpacked), EngineError> {
    let dir = match staging::for_restore(staging, path) {
        Ok(in_memory) => in_memory,
        Err(why) => {
            tracing::debug!(%why, "unpacking beside the archive, not in memory");
            unpack_dir(path)?
        }
    };
    let t = Instant::now();
    let unpacked = archive::unpack_checkpoint(path, dir.path())?;
    tracing::debug!(
        format = ?unpacked.compression,
        manifest = unpacked.manifest.is_some(),
        dir = %dir.path().display(),
        ms = t.elapsed().as_millis() as u64,
        "unpacked and hashed checkpoint"
    );
    Ok((dir, unpacked))
}

/// A new private directory for unpacking `archive`: hidden, beside it, or in the temp dir
/// when the archive's directory is not writable.
pub fn unpack_dir(archive: &Path) -> Result<TempDir, EngineError> {
    let parent = match archive.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let prefix = atomic::scratch_prefix(&format!("{}.restore", name_part(archive)));
    let dir = match tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(atomic::PARTIAL_SUFFIX)
        .tempdir_in(parent)
    {
        Ok(d) => d,
        Err(e) if not_writable(&e) => {
            let tmp = std::env::temp_dir();
            tracing::debug!(
                dir = %parent.display(),
                error = %e,
                fallback = %tmp.display(),
                "the checkpoint's directory is not writable; unpacking into the temp dir"
            );
            tempfile::Builder::new()
                .prefix(&atomic::scratch_prefix("cedana-restore"))
                .suffix(atomic::PARTIAL_SUFFIX)
                .tempdir_in(&tmp)
                .map_err(|e| {
                    EngineError::io(format!("create an unpack dir in {}", tmp.display()), e)
                })?
        }
        Err(e) => {
            return Err(EngineError::io(
                format!("create an unpack dir in {}", parent.display()),
                e,
            ))
        }
    };
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(PRIVATE))
        .map_err(|e| EngineError::io(format!("chmod {}", dir.path().display()), e))?;
    Ok(dir)
}

/// The archive's file name without its archive extension, cut to [`MAX_NAME_PART`] bytes.
fn name_part(archive: &Path) -> String {
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let mut exts: Vec<&str> = Compression::ALL
        .iter()
        .map(|c| c.extension())
        .filter(|e| !e.is_empty())
        .collect();
    exts.sort_by_key(|e| std::cmp::Reverse(e.len()));
    let stem = exts
        .iter()
        .find_map(|e| name.strip_suffix(e))
        .unwrap_or(&name);
    let mut end = stem.len().min(MAX_NAME_PART);
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    stem[..end].to_string()
}

/// Whether creating something failed because the directory is not writable to us.
fn not_writable(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
        || matches!(
            e.raw_os_error(),
            Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
        )
}

/// After a failed restore: copies CRIU's log out of the work dir (then removed) into the
/// checkpoint's [`RESTORE_LOGS_DIR`] and makes the error name the copy. When it cannot be
/// copied, the work dir is kept instead, as the error names it.
fn keep_restore_log(err: EngineError, work: TempDir, checkpoint: &Path) -> EngineError {
    let log = work.path().join(RESTORE_LOG);
    if !log.is_file() {
        // Refused before CRIU ran: nothing to keep, and the work dir goes.
        return err;
    }
    match copy_log(&log, checkpoint) {
        Ok(kept) => {
            let mut err = err;
            if err.relocate_log(&log, &kept) {
                err
            } else {
                EngineError::WithRestoreLog {
                    source: Box::new(err),
                    log: kept,
                }
            }
        }
        Err(e) => {
            let dir = work.keep();
            tracing::warn!(
                error = %e,
                dir = %dir.display(),
                "cannot keep CRIU's restore log beside the checkpoint; its work dir is kept instead"
            );
            err
        }
    }
}

/// Copies `log` to `DIR/cedana-restore-logs/NAME-TIMESTAMP.log` (DIR: the checkpoint's
/// directory), then trims that directory to the newest [`KEEP_LOGS`] logs.
pub fn copy_log(log: &Path, checkpoint: &Path) -> io::Result<PathBuf> {
    let parent = match checkpoint.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = parent.join(RESTORE_LOGS_DIR);
    match fs::DirBuilder::new().mode(PRIVATE).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // Never write through a link or into someone else's directory.
    let meta = fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(io::Error::other(format!(
            "{} is not a directory of ours",
            dir.display()
        )));
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let name = name_part(checkpoint);
    let mut src = fs::File::open(log)?;
    for n in 0..100 {
        let file = if n == 0 {
            format!("{name}-{stamp}.log")
        } else {
            format!("{name}-{stamp}-{n}.log")
        };
        let target = dir.join(file);
        let mut out = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&target)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        io::copy(&mut src, &mut out)?;
        prune_logs(&dir, KEEP_LOGS - 1, &target);
        return Ok(target);
    }
    Err(io::Error::other("no free log file name"))
}

/// Removes all but the newest `keep` `.log` files of `dir` besides `new`; best effort.
fn prune_logs(dir: &Path, keep: usize, new: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut logs: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log") && e.path() != new)
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            if !m.is_file() {
                return None;
            }
            Some((m.modified().ok()?, e.path()))
        })
        .collect();
    logs.sort();
    let excess = logs.len().saturating_sub(keep);
    for (_, p) in logs.into_iter().take(excess) {
        let _ = fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::criu::error::CriuError;

    #[test]
    fn unpack_dir_is_hidden_private_and_beside_the_archive() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let archive = tmp.path().join("ck1.tar.zst");
        let dir = unpack_dir(&archive).expect("dir");
        assert_eq!(dir.path().parent(), Some(tmp.path()));
        let name = dir.path().file_name().expect("name").to_string_lossy();
        assert!(
            name.starts_with(".ck1.restore.") && name.ends_with(".partial"),
            "{name}"
        );
        let mode = fs::metadata(dir.path()).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, PRIVATE);
        assert_eq!(name_part(Path::new("/x/a.tar")), "a");
        assert_eq!(name_part(Path::new("/x/a.tar.lz4")), "a");
        assert_eq!(name_part(Path::new("/x/a.bin")), "a.bin");
        assert_eq!(name_part(&PathBuf::from("é".repeat(80))).len(), 100);
    }

    #[test]
    fn kept_logs_are_bounded_and_errors_point_at_them() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = tmp.path().join(RESTORE_LOG);
        fs::write(&log, "Error (criu/files.c): boom\n").expect("write");
        let ck = tmp.path().join("ck.tar.zst");
        let mut kept = Vec::new();
        for _ in 0..KEEP_LOGS + 3 {
            kept.push(copy_log(&log, &ck).expect("copy"));
        }
        let dir = tmp.path().join(RESTORE_LOGS_DIR);
        assert_eq!(fs::read_dir(&dir).expect("ls").count(), KEEP_LOGS);
        let newest = kept.last().expect("one");
        assert!(newest.exists());
        assert_eq!(
            fs::read_to_string(newest).expect("read"),
            "Error (criu/files.c): boom\n"
        );

        let mut e = EngineError::Criu(CriuError::Failed {
            op: "restore",
            cr_errno: None,
            errmsg: None,
            log_path: log.clone(),
            log_tail: vec![],
        });
        assert!(e.relocate_log(&log, newest));
        assert!(e.to_string().contains(&newest.display().to_string()), "{e}");
        let mut other = EngineError::Internal("x".into());
        assert!(!other.relocate_log(&log, newest));

        // The work dir goes; the error names the copy.
        let work = tempfile::tempdir_in(tmp.path()).expect("work");
        let work_path = work.path().to_path_buf();
        fs::write(work.path().join(RESTORE_LOG), "Error: x\n").expect("write");
        let e = keep_restore_log(EngineError::Internal("runc failed".into()), work, &ck);
        assert!(!work_path.exists());
        assert!(
            matches!(&e, EngineError::WithRestoreLog { log, .. } if log.exists()),
            "{e}"
        );
        // Refused before CRIU: no log to keep, the work dir still goes.
        let work = tempfile::tempdir_in(tmp.path()).expect("work");
        let work_path = work.path().to_path_buf();
        let e = keep_restore_log(EngineError::Internal("refused".into()), work, &ck);
        assert!(!work_path.exists());
        assert!(matches!(e, EngineError::Internal(_)));
    }
}
