//! Where images live. Dump: CRIU writes into a hidden staging directory beside the
//! target; on success it becomes the checkpoint directory or is packed into the archive,
//! on failure it is removed, so no partial checkpoint is ever left under the final name.
//! Restore: see [`restore_storage`](super::restore_storage).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::chain::Adapter;
use crate::engine::{blocking, DumpCtx, DumpResponse};
use crate::error::EngineError;
use crate::host;
use crate::image::compression::Compression;
use crate::image::error::ImageError;
use crate::image::metadata::{FileDigest, Sizes, FORMAT_VERSION, METADATA_FILE};
use crate::image::{archive, integrity, layout};

pub use super::restore_storage::prepare_restore_storage;

/// Checkpoints hold process memory (secrets included): owner-only access.
const CHECKPOINT_DIR_MODE: u32 = 0o700;

fn staging_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.partial"))
}

fn create_private_dir(path: &Path) -> Result<(), EngineError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(CHECKPOINT_DIR_MODE)
        .create(path)
        .map_err(|e| EngineError::io(format!("cannot create {}", path.display()), e))
}

/// Prepares the staging directory and turns CRIU's images into the final checkpoint.
pub fn prepare_dump_storage() -> Adapter<DumpCtx, DumpResponse> {
    Adapter::from_fn("prepare_dump_storage", |mut ctx: DumpCtx, next| {
        Box::pin(async move {
            if let Some(images) = ctx.req.image_path.clone() {
                return dump_into_image_path(ctx, images, next).await;
            }
            if !ctx.dir.exists() {
                create_private_dir(&ctx.dir)?;
            }
            let staging = staging_path(&ctx.dir, &ctx.name);
            if staging.exists() {
                // Left by a crashed earlier dump of the same name: never ours to keep.
                fs::remove_dir_all(&staging).map_err(|e| {
                    EngineError::io(format!("remove stale {}", staging.display()), e)
                })?;
            }
            create_private_dir(&staging)?;
            ctx.images_dir = staging.clone();
            let (dir, name, compression, kind) = (
                ctx.dir.clone(),
                ctx.name.clone(),
                ctx.compression,
                ctx.req.kind,
            );
            let started = ctx.started;
            let result = match next.run(ctx).await {
                Ok(resp) => finish_dump(resp, &dir, &name, compression, kind, started).await,
                Err(e) => Err(e),
            };
            if staging.exists() {
                let _ = fs::remove_dir_all(&staging);
            }
            result
        })
    })
}

/// runc's `--image-path` semantics: CRIU writes straight into the caller's directory and
/// metadata.json is added beside the images. A failed dump leaves the directory (with
/// CRIU's log, as runc does) but never a metadata.json.
async fn dump_into_image_path(
    mut ctx: DumpCtx,
    images: PathBuf,
    next: crate::chain::Next<'_, DumpCtx, DumpResponse>,
) -> Result<DumpResponse, EngineError> {
    if !images.exists() {
        create_private_dir(&images)?;
    }
    ctx.images_dir = images.clone();
    let (name, kind, started) = (ctx.name.clone(), ctx.req.kind, ctx.started);
    let mut resp = next.run(ctx).await?;
    let md = &mut resp.metadata;
    md.format_version = FORMAT_VERSION;
    md.kind = kind;
    md.name = name.clone();
    md.created_at = chrono::Utc::now().to_rfc3339();
    md.host = host::host_info();
    let t = Instant::now();
    let mut files = blocking({
        let images = images.clone();
        move || Ok(integrity::digest_dir(&images)?)
    })
    .await?;
    // Logs are not part of the checkpoint: runc and CRIU append to them on restore.
    files.retain(|rel, _| !rel.ends_with(".log"));
    md.timings_ms
        .insert("digest".into(), t.elapsed().as_millis() as u64);
    md.sizes = Sizes {
        images_bytes: files.values().map(|f| f.size).sum(),
        archive_bytes: None,
    };
    md.files = files;
    integrity::write_metadata(&images, md)?;
    resp.size_bytes = resp.metadata.sizes.images_bytes;
    resp.path = images;
    resp.name = name;
    resp.compression = Compression::None;
    resp.duration_ms = started.elapsed().as_millis() as u64;
    Ok(resp)
}

async fn finish_dump(
    mut resp: DumpResponse,
    dir: &Path,
    name: &str,
    compression: Compression,
    kind: crate::image::metadata::CheckpointKind,
    started: Instant,
) -> Result<DumpResponse, EngineError> {
    let staging = resp.path.clone();
    let target = layout::checkpoint_path(dir, name, compression);
    let md = &mut resp.metadata;
    md.format_version = FORMAT_VERSION;
    md.kind = kind;
    md.name = name.to_string();
    md.created_at = chrono::Utc::now().to_rfc3339();
    md.host = host::host_info();
    let t = Instant::now();
    resp.size_bytes = if compression == Compression::None {
        // Streamed shards were hashed as they were written (handlers put those digests
        // in `files`); everything else is read and hashed now.
        let files = blocking({
            let (staging, known) = (staging.clone(), std::mem::take(&mut md.files));
            move || Ok(integrity::digest_dir_known(&staging, &known)?)
        })
        .await?;
        record_digests(md, files, t.elapsed());
        integrity::write_metadata(&staging, md)?;
        if layout_occupied(&target) {
            return Err(EngineError::TargetExists { path: target });
        }
        fs::rename(&staging, &target).map_err(|e| {
            EngineError::io(
                format!("move checkpoint into place at {}", target.display()),
                e,
            )
        })?;
        fs::set_permissions(&target, fs::Permissions::from_mode(CHECKPOINT_DIR_MODE))
            .map_err(|e| EngineError::io(format!("chmod {}", target.display()), e))?;
        resp.metadata.sizes.images_bytes
    } else {
        let (bytes, md) = pack_while_digesting(&staging, &target, compression, md.clone()).await?;
        resp.metadata = md;
        bytes
    };
    resp.metadata
        .timings_ms
        .insert("pack".into(), t.elapsed().as_millis() as u64);
    resp.metadata.sizes.archive_bytes =
        (compression != Compression::None).then_some(resp.size_bytes);
    resp.path = target;
    resp.name = name.to_string();
    resp.compression = compression;
    resp.duration_ms = started.elapsed().as_millis() as u64;
    Ok(resp)
}

/// Records the digests, sizes and how long hashing took.
fn record_digests(
    md: &mut crate::image::metadata::Metadata,
    files: BTreeMap<String, FileDigest>,
    took: Duration,
) {
    md.timings_ms
        .insert("digest".into(), took.as_millis() as u64);
    md.sizes = Sizes {
        images_bytes: files.values().map(|f| f.size).sum(),
        archive_bytes: None,
    };
    md.files = files;
}

/// Packs the staging dir into the archive while another thread hashes it: metadata.json,
/// which carries the hashes, goes into the archive last. One read pass less than
/// hash-then-pack, and the hashing overlaps the compression.
async fn pack_while_digesting(
    staging: &Path,
    target: &Path,
    compression: Compression,
    mut md: crate::image::metadata::Metadata,
) -> Result<(u64, crate::image::metadata::Metadata), EngineError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let src = staging.to_path_buf();
    let digest = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let _ = tx.send(integrity::digest_dir(&src).map(|f| (f, t.elapsed())));
    });
    let (src, out) = (staging.to_path_buf(), target.to_path_buf());
    let packed = blocking(move || {
        let md_path = out.join(METADATA_FILE);
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
            integrity::metadata_bytes(&md_path, md_ref)
        });
        let bytes = archive::pack_with_metadata(&src, &out, compression, base, trailer)?;
        Ok((bytes, md))
    })
    .await;
    let _ = digest.await;
    packed
}

fn layout_occupied(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}
