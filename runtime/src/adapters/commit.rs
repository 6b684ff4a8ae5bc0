//! The commit protocol (DESIGN.md): a dumped tree is killed only after its checkpoint is
//! complete and durable.
//!
//! The storage adapter hands the handler a [`Committer`]. A handler that is to kill the
//! tree calls [`Committer::commit`] while the tree is still held (inside CRIU's
//! `post-dump` notification, or while its cgroup is frozen) and lets it die only when
//! that returned `Ok`; on an error it lets the tree run on. Commit = every file hashed,
//! metadata.json written, everything synced, and the staging path renamed into place
//! without replacing anything. A dump that keeps the tree running commits after CRIU.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::DumpResponse;
use crate::error::EngineError;
use crate::host;
use crate::image::compression::Compression;
use crate::image::error::ImageError;
use crate::image::metadata::METADATA_FILE;
use crate::image::metadata::{CheckpointKind, FileDigest, Metadata, Sizes, FORMAT_VERSION};
use crate::image::{archive, atomic, integrity};
use crate::store::local::sync_tree;
use crate::store::{transfer, CheckpointStore, Location, StoreError, Upload};
use crate::streamer::ShardSink;

/// Where a commit puts the images.
#[derive(Debug)]
pub enum CommitTarget {
    /// Images in a private dir, published into a checkpoint store under the checkpoint's
    /// location (renamed into place, or packed, by the local store).
    Store {
        /// The store the checkpoint goes into.
        store: Arc<dyn CheckpointStore>,
        /// The checkpoint being written; taken by the commit.
        upload: Mutex<Option<Box<dyn Upload>>>,
        /// The directory CRIU wrote into (the upload's own local dir, or a scratch dir).
        images: PathBuf,
        /// How it is packed.
        compression: Compression,
    },
    /// runc's `--image-path`: metadata.json is added beside the images in place.
    ImagePath {
        /// The directory CRIU wrote into.
        images: PathBuf,
        /// Whether the tree dies after the commit: then CRIU's images (which runc never
        /// syncs) and metadata.json reach the disk first. A tree that runs on loses
        /// nothing to a crash, so that commit waits for no disk (containerd copies the
        /// directory into its content store, which syncs its copy).
        durable: bool,
    },
}

impl CommitTarget {
    /// A target publishing `upload` into `store`, from the images in `images`.
    pub fn store(
        store: Arc<dyn CheckpointStore>,
        upload: Box<dyn Upload>,
        images: PathBuf,
        compression: Compression,
    ) -> Self {
        Self::Store {
            store,
            upload: Mutex::new(Some(upload)),
            images,
            compression,
        }
    }
}

/// Commits one dump's checkpoint, once; shared by the storage adapter and the handler.
#[derive(Debug)]
pub struct Committer {
    target: CommitTarget,
    name: String,
    kind: CheckpointKind,
    started: Instant,
    committed: Mutex<Option<DumpResponse>>,
}

impl Committer {
    /// A committer for one operation.
    pub fn new(target: CommitTarget, name: String, kind: CheckpointKind, started: Instant) -> Self {
        Self {
            target,
            name,
            kind,
            started,
            committed: Mutex::new(None),
        }
    }

    /// Makes the checkpoint complete and durable under its final name. Blocking: call it
    /// from a blocking thread. A second call is refused (one checkpoint per operation).
    pub fn commit(&self, metadata: Metadata) -> Result<(), EngineError> {
        let mut slot = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Err(EngineError::Internal("checkpoint committed twice".into()));
        }
        *slot = Some(self.write(metadata)?);
        Ok(())
    }

    /// Whether [`commit`](Self::commit) succeeded (and the checkpoint was not taken).
    pub fn is_committed(&self) -> bool {
        self.committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The committed checkpoint, if [`commit`](Self::commit) succeeded.
    pub fn take_committed(&self) -> Option<DumpResponse> {
        self.committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Amends the metadata of the response of a commit already made, for what CRIU
    /// writes only after the commit (its statistics); the sealed checkpoint is unchanged.
    pub fn amend_response(&self, amend: impl FnOnce(&mut Metadata)) {
        let mut committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(resp) = committed.as_mut() {
            amend(&mut resp.metadata);
        }
    }

    /// Removes a committed checkpoint again: CRIU failed after the commit, so the tree runs
    /// on and the operation reports a failure; no checkpoint of a failed dump is kept.
    pub fn undo(&self) {
        let Some(resp) = self.take_committed() else {
            return;
        };
        match &self.target {
            CommitTarget::Store { store, .. } => {
                if let Ok(at) = Location::from_path(&resp.path) {
                    if let Err(e) = store.delete(&at) {
                        tracing::warn!(error = %e, "cannot remove the checkpoint of a failed dump");
                    }
                }
            }
            CommitTarget::ImagePath { images, .. } => {
                let _ = fs::remove_file(images.join(METADATA_FILE));
            }
        }
    }

    /// Where a streamed dump's shards go when the checkpoint is a directory in a store
    /// with no local directory of its own (an object store): straight into the upload, as
    /// `PREFIX` + shard name, while CRIU writes. `None`: shards are files in the images
    /// dir (a local store writes them in place anyway).
    pub fn shard_sink(self: &Arc<Self>, prefix: &str) -> Option<ShardSink> {
        let CommitTarget::Store {
            upload,
            compression: Compression::None,
            ..
        } = &self.target
        else {
            return None;
        };
        let remote = upload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|u| u.local_dir().is_none());
        if !remote {
            return None;
        }
        let (this, prefix) = (Arc::clone(self), prefix.to_string());
        Some(ShardSink(Arc::new(move |name: &str| {
            let CommitTarget::Store { upload, .. } = &this.target else {
                return Err(StoreError::NotFound {
                    location: "the checkpoint's upload".into(),
                });
            };
            let mut upload = upload.lock().unwrap_or_else(|p| p.into_inner());
            let upload = upload.as_mut().ok_or_else(|| StoreError::NotFound {
                location: "the checkpoint's upload (already committed)".into(),
            })?;
            Ok(super::shard_fault::wrap(
                upload.create(&format!("{prefix}{name}"))?,
            ))
        })))
    }

    /// Drops a checkpoint that was never committed (the dump failed first): the store
    /// removes what was written.
    pub fn abandon(&self) {
        if let CommitTarget::Store { upload, .. } = &self.target {
            drop(upload.lock().unwrap_or_else(|p| p.into_inner()).take());
        }
    }

    fn write(&self, mut md: Metadata) -> Result<DumpResponse, EngineError> {
        md.format_version = FORMAT_VERSION;
        md.kind = self.kind.clone();
        md.name = self.name.clone();
        md.created_at = chrono::Utc::now().to_rfc3339();
        md.host = host::host_info();
        let t = Instant::now();
        let (path, compression, size_bytes, mut md) = match &self.target {
            CommitTarget::ImagePath { images, durable } => {
                injected_fault("digest")?;
                // Digests the handler took while CRIU wrote (streamed shards, followed
                // page images) are reused where the file's size still matches.
                let mut files = integrity::digest_dir_known(images, &md.files)?;
                // Logs are not part of the checkpoint: runc and CRIU append to them on restore.
                files.retain(|rel, _| !rel.ends_with(".log"));
                record_digests(&mut md, files, t.elapsed());
                injected_fault("metadata")?;
                if *durable {
                    sync_tree(images)?;
                }
                integrity::write_metadata_in_place(images, &md, *durable)?;
                if *durable {
                    atomic::sync_parent(&images.join(METADATA_FILE));
                }
                let size = md.sizes.images_bytes;
                (images.clone(), Compression::None, size, md)
            }
            CommitTarget::Store {
                upload,
                images,
                compression,
                ..
            } => {
                let mut upload = upload
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .ok_or_else(|| EngineError::Internal("checkpoint committed twice".into()))?;
                let (size, md) = match compression {
                    Compression::None => publish_dir(images, upload.as_mut(), md, t)?,
                    c => {
                        injected_fault("digest")?;
                        pack_while_digesting(images, upload.as_mut(), *c, md)?
                    }
                };
                let at = upload.commit()?;
                (at.to_path_buf(), *compression, size, md)
            }
        };
        md.timings_ms
            .insert("pack".into(), t.elapsed().as_millis() as u64);
        md.sizes.archive_bytes = compression.is_archive().then_some(size_bytes);
        Ok(DumpResponse {
            path,
            name: self.name.clone(),
            compression,
            size_bytes,
            duration_ms: self.started.elapsed().as_millis() as u64,
            metadata: md,
            profile: Vec::new(),
        })
    }
}

/// Fault injection for the commit protocol's tests (as CRIU's `CRIU_FAULT`):
/// `CEDANA_TEST_FAULT=commit-STAGE[,...]` makes the commit fail at `STAGE` (`digest`,
/// `metadata`, `rename`) with ENOSPC, as a full disk would there; `commit-stall` makes it
/// hang (a minute) before it starts, so a test can kill the caller mid-commit;
/// `commit-shard` fails streamed shards mid-upload (`shard_fault.rs`).
pub const FAULT_ENV: &str = "CEDANA_TEST_FAULT";

fn injected_fault(stage: &str) -> Result<(), EngineError> {
    let Some(spec) = std::env::var_os(FAULT_ENV) else {
        return Ok(());
    };
    let spec = spec.to_string_lossy();
    if stage == "digest" && spec.split(',').any(|s| s.trim() == "commit-stall") {
        tracing::warn!("commit stalled for a minute ({FAULT_ENV}=commit-stall)");
        std::thread::sleep(Duration::from_secs(60));
    }
    let wanted = format!("commit-{stage}");
    if spec.split(',').any(|s| s.trim() == wanted) {
        return Err(EngineError::io(
            format!("{wanted} (fault injected by {FAULT_ENV})"),
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        ));
    }
    Ok(())
}

/// Records the digests, sizes and how long hashing took.
fn record_digests(md: &mut Metadata, files: BTreeMap<String, FileDigest>, took: Duration) {
    md.timings_ms
        .insert("digest".into(), took.as_millis() as u64);
    md.sizes = Sizes {
        images_bytes: files.values().map(|f| f.size).sum(),
        archive_bytes: None,
    };
    md.files = files;
}

/// A directory checkpoint: every file hashed (streamed shards were hashed as they were
/// written: handlers put those digests in `files`), metadata.json written, and the files
/// handed to the upload unless CRIU wrote them into its own directory. Returns the bytes.
fn publish_dir(
    images: &Path,
    upload: &mut dyn Upload,
    mut md: Metadata,
    t: Instant,
) -> Result<(u64, Metadata), EngineError> {
    let known = std::mem::take(&mut md.files);
    injected_fault("digest")?;
    let mut files = integrity::digest_dir_known(images, &known)?;
    // Shards streamed into the upload (Committer::shard_sink) or to the caller's sink
    // (DumpRequest::shard_sink) are not in `images`: their digests were taken as they
    // were written.
    for (rel, d) in known {
        files.entry(rel).or_insert(d);
    }
    record_digests(&mut md, files, t.elapsed());
    injected_fault("metadata")?;
    integrity::write_metadata(images, &md)?;
    if upload.local_dir() != Some(images) {
        transfer::upload_dir(images, upload)?;
    }
    injected_fault("rename")?;
    Ok((md.sizes.images_bytes, md))
}

/// Packs the staging dir into the archive while another thread hashes what was not hashed
/// as it was written (`md.files`): metadata.json, which carries the hashes, goes into the
/// archive last. One read pass less than hash-then-pack, and the hashing overlaps the
/// compression.
fn pack_while_digesting(
    staging: &Path,
    upload: &mut dyn Upload,
    compression: Compression,
    mut md: Metadata,
) -> Result<(u64, Metadata), EngineError> {
    let target = upload.location().to_path_buf();
    let w = upload.create("")?;
    // Digests taken while CRIU wrote (`image::follow`) are reused where the file is unchanged.
    let known = std::mem::take(&mut md.files);
    let (tx, rx) = std::sync::mpsc::channel();
    let (w, _) = std::thread::scope(|s| {
        s.spawn(move || {
            let t = Instant::now();
            let digests = integrity::digest_dir_known(staging, &known);
            let _ = tx.send(digests.map(|f| (f, t.elapsed())));
        });
        let md_path = target.join(METADATA_FILE);
        // metadata.json's size before the digests are recorded: the manifest bounds it.
        let base = integrity::metadata_bytes(&md_path, &md)?.len() as u64;
        let md_ref = &mut md;
        let trailer = Box::new(move || {
            let (files, took) = rx.recv().map_err(|_| {
                ImageError::io(
                    &md_path,
                    std::io::Error::other("the hashing thread stopped"),
                )
            })??;
            record_digests(md_ref, files, took);
            injected_fault("metadata")
                .map_err(|e| ImageError::io(&md_path, std::io::Error::other(e.to_string())))?;
            integrity::metadata_bytes(&md_path, md_ref)
        });
        let packed =
            archive::pack_with_metadata_to(staging, w, &target, compression, base, trailer)?;
        Ok::<_, EngineError>(packed)
    })?;
    // The archive's size as stored (the store syncs it, or finishes its upload).
    let bytes = w.finish()?;
    Ok((bytes, md))
}

#[cfg(test)]
#[path = "commit_tests.rs"]
mod tests;
