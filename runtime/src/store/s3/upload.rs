//! Writing one checkpoint into S3: files below [`PART_BYTES`] are one PUT, bigger ones a
//! multipart upload (`writer.rs`), recorded in the host's journal while open. A directory
//! checkpoint's files are complete objects at once (the checkpoint is not listed until
//! its metadata.json exists); a packed checkpoint's multipart upload is completed only
//! at commit. Anything not committed is aborted or deleted when the upload is dropped.

use std::mem;
use std::sync::{Arc, Mutex};

use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{MultipartId, ObjectStore, PutMode, PutOptions, PutPayload};

use super::client::{block_on, explain};
use super::journal::{Entry, Journal};
use super::writer::S3Writer;
use super::Key;
use crate::image::metadata::METADATA_FILE;
use crate::store::{Location, ObjectWriter, Shape, StoreError, Upload};

/// A multipart upload started and not yet completed nor aborted, with its journal record.
pub(super) struct OpenUpload {
    pub path: ObjPath,
    pub id: MultipartId,
    pub entry: Option<Entry>,
}

impl OpenUpload {
    /// Completes it from its uploaded `parts`; the record is settled once the object
    /// exists. On failure the upload is aborted (the object never appears).
    pub(super) async fn complete(
        self,
        client: &AmazonS3,
        parts: Vec<PartId>,
    ) -> object_store::Result<()> {
        match client.complete_multipart(&self.path, &self.id, parts).await {
            Ok(_) => {
                if let Some(e) = self.entry {
                    e.settle();
                }
                Ok(())
            }
            Err(e) => {
                self.abort(client).await;
                Err(e)
            }
        }
    }

    /// Aborts it on the server; the record is settled once the server agreed (or the
    /// upload is already gone), else kept for recovery.
    pub(super) async fn abort(self, client: &AmazonS3) {
        match client.abort_multipart(&self.path, &self.id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                if let Some(e) = self.entry {
                    e.settle();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, key = %self.path, "cannot abort a multipart upload; the next daemon start retries");
            }
        }
    }
}

/// A file's bytes not yet completed as an object (a packed checkpoint's, until commit).
pub(super) enum Pending {
    /// Small enough for one PUT: the bytes.
    Whole(PutPayload),
    /// A multipart upload whose parts are all uploaded.
    Parts(OpenUpload, Vec<PartId>),
}

/// What an upload wrote, for its commit or its cleanup.
#[derive(Default)]
pub(super) struct Written {
    /// Objects complete in the bucket (a directory checkpoint's files).
    pub objects: Vec<ObjPath>,
    /// Multipart uploads started and not completed: aborted unless committed.
    pub open: Vec<OpenUpload>,
    /// The packed object, waiting for the commit.
    pub pending: Option<(ObjPath, Pending)>,
}

impl Written {
    /// Takes the open upload `id` out (its writer completes or aborts it).
    pub(super) fn take_open(&mut self, id: &str) -> Option<OpenUpload> {
        let pos = self.open.iter().position(|o| o.id == id)?;
        Some(self.open.remove(pos))
    }
}

/// Context of a failed request: what to tell the user.
#[derive(Clone)]
pub(super) struct Ctx {
    pub at: Location,
    pub bucket: String,
    pub endpoint: String,
}

impl Ctx {
    pub(super) fn fail(&self, context: String, e: &object_store::Error) -> StoreError {
        StoreError::Remote {
            location: self.at.to_string(),
            context,
            problem: explain(e, &self.bucket, &self.endpoint),
        }
    }
}

/// One checkpoint being written into S3.
pub(super) struct S3Upload {
    ctx: Ctx,
    key: Key,
    client: Arc<AmazonS3>,
    journal: Journal,
    shape: Shape,
    written: Arc<Mutex<Written>>,
    committed: bool,
}

impl std::fmt::Debug for S3Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Upload")
            .field("at", &self.ctx.at)
            .field("shape", &self.shape)
            .finish()
    }
}

/// Locks `written`, whatever a panicking holder left.
pub(super) fn lock(written: &Mutex<Written>) -> std::sync::MutexGuard<'_, Written> {
    written.lock().unwrap_or_else(|p| p.into_inner())
}

impl S3Upload {
    pub(super) fn new(
        at: Location,
        key: Key,
        client: Arc<AmazonS3>,
        shape: Shape,
        endpoint: String,
        journal: Journal,
    ) -> Self {
        Self {
            ctx: Ctx {
                at,
                bucket: key.bucket.clone(),
                endpoint,
            },
            key,
            client,
            journal,
            shape,
            written: Arc::default(),
            committed: false,
        }
    }
}

impl Upload for S3Upload {
    fn location(&self) -> &Location {
        &self.ctx.at
    }

    fn create(&mut self, rel: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        let ok = match self.shape {
            Shape::Packed => rel.is_empty() && lock(&self.written).pending.is_none(),
            Shape::Dir => !rel.is_empty() && rel.split('/').all(|p| !p.is_empty() && p != ".."),
        };
        if !ok {
            return Err(StoreError::Image(
                crate::image::error::ImageError::unsafe_entry(
                    rel,
                    "a checkpoint file must be a relative path without '..' (a packed \
                     checkpoint is one object, written once)",
                ),
            ));
        }
        Ok(Box::new(S3Writer::new(
            self.ctx.clone(),
            rel,
            self.key.child(rel),
            Arc::clone(&self.client),
            self.journal.clone(),
            self.shape == Shape::Packed,
            Arc::clone(&self.written),
        )))
    }

    fn commit(mut self: Box<Self>) -> Result<Location, StoreError> {
        let client = Arc::clone(&self.client);
        let ctx = self.ctx.clone();
        let meta = self.key.child(METADATA_FILE);
        let (pending, had_metadata) = {
            let mut w = lock(&self.written);
            (w.pending.take(), w.objects.contains(&meta))
        };
        let shape = self.shape;
        let res = block_on(async move {
            match (shape, pending) {
                (Shape::Packed, Some((path, Pending::Whole(payload)))) => {
                    let opts = PutOptions::from(PutMode::Create);
                    client.put_opts(&path, payload, opts).await.map(|_| ())
                }
                (Shape::Packed, Some((_, Pending::Parts(up, parts)))) => {
                    up.complete(&client, parts).await
                }
                _ => Ok(()),
            }
        })?;
        match res {
            Ok(()) => {}
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                return Err(StoreError::Exists {
                    location: ctx.at.to_string(),
                })
            }
            Err(e) => return Err(ctx.fail("commit the checkpoint".into(), &e)),
        }
        if shape == Shape::Dir && !had_metadata {
            return Err(StoreError::NotFound {
                location: format!("{} (no {METADATA_FILE} was written)", ctx.at),
            });
        }
        lock(&self.written).objects.clear();
        self.committed = true;
        Ok(ctx.at)
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let (objects, mut open) = {
            let mut w = lock(&self.written);
            let mut open = mem::take(&mut w.open);
            if let Some((_, Pending::Parts(up, _))) = w.pending.take() {
                open.push(up);
            }
            (mem::take(&mut w.objects), open)
        };
        if objects.is_empty() && open.is_empty() {
            return;
        }
        let client = Arc::clone(&self.client);
        // metadata.json goes first (it is last in `objects` when present), so a half
        // deleted checkpoint is never listed.
        let res = block_on(async move {
            for up in open.drain(..) {
                up.abort(&client).await;
            }
            for p in objects.iter().rev() {
                let _ = client.delete(p).await;
            }
        });
        if let Err(e) = res {
            tracing::warn!(error = %e, at = %self.ctx.at, "cannot clean up an unfinished upload");
        }
    }
}
