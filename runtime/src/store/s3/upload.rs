//! Writing one checkpoint into S3: files below [`PART_BYTES`] are one PUT, bigger ones a
//! multipart upload with up to [`PARTS_IN_FLIGHT`] parts in flight. A directory
//! checkpoint's files are complete objects at once (the checkpoint is not listed until
//! its metadata.json exists); a packed checkpoint's multipart upload is completed only
//! at commit. Anything not committed is aborted or deleted when the upload is dropped.

use std::io::{self, Write};
use std::mem;
use std::sync::{Arc, Mutex};

use object_store::aws::AmazonS3;
use object_store::path::Path as ObjPath;
use object_store::{MultipartUpload, ObjectStore, PutMode, PutOptions, PutPayload};
use tokio::task::JoinHandle;

use super::client::{block_on, explain, spawn};
use super::{Key, PARTS_IN_FLIGHT, PART_BYTES};
use crate::image::metadata::METADATA_FILE;
use crate::store::{Location, ObjectWriter, Shape, StoreError, Upload};

/// A file's bytes not yet completed as an object (a packed checkpoint's, until commit).
enum Pending {
    /// Small enough for one PUT: the bytes.
    Whole(PutPayload),
    /// A multipart upload whose parts are all uploaded.
    Parts(Box<dyn MultipartUpload>),
}

/// What an upload wrote, for its commit or its cleanup.
#[derive(Default)]
struct Written {
    /// Objects complete in the bucket (a directory checkpoint's files).
    objects: Vec<ObjPath>,
    /// Multipart uploads started and not completed: aborted unless committed.
    open: Vec<Arc<tokio::sync::Mutex<Box<dyn MultipartUpload>>>>,
    /// The packed object, waiting for the commit.
    pending: Option<(ObjPath, Pending)>,
}

/// Context of a failed request: what to tell the user.
#[derive(Clone)]
struct Ctx {
    at: Location,
    bucket: String,
    endpoint: String,
}

impl Ctx {
    fn fail(&self, context: String, e: &object_store::Error) -> StoreError {
        StoreError::Remote {
            location: self.at.to_string(),
            context,
            problem: explain(e, &self.bucket, &self.endpoint),
        }
    }

    /// The failure as the writer's I/O error: the caller names the location already.
    fn io(&self, context: String, e: &object_store::Error) -> io::Error {
        let problem = explain(e, &self.bucket, &self.endpoint);
        io::Error::other(format!("{context}: {problem}"))
    }
}

/// One checkpoint being written into S3.
pub(super) struct S3Upload {
    ctx: Ctx,
    key: Key,
    client: Arc<AmazonS3>,
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

impl S3Upload {
    pub(super) fn new(
        at: Location,
        key: Key,
        client: Arc<AmazonS3>,
        shape: Shape,
        endpoint: String,
    ) -> Self {
        Self {
            ctx: Ctx {
                at,
                bucket: key.bucket.clone(),
                endpoint,
            },
            key,
            client,
            shape,
            written: Arc::default(),
            committed: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Written> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Upload for S3Upload {
    fn location(&self) -> &Location {
        &self.ctx.at
    }

    fn create(&mut self, rel: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
        let ok = match self.shape {
            Shape::Packed => rel.is_empty() && self.lock().pending.is_none(),
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
        Ok(Box::new(S3Writer {
            ctx: self.ctx.clone(),
            rel: match rel {
                "" => "the archive".to_string(),
                rel => rel.to_string(),
            },
            path: self.key.child(rel),
            client: Arc::clone(&self.client),
            defer: self.shape == Shape::Packed,
            written: Arc::clone(&self.written),
            buf: Vec::new(),
            multipart: None,
            parts: Vec::new(),
            size: 0,
        }))
    }

    fn commit(mut self: Box<Self>) -> Result<Location, StoreError> {
        let client = Arc::clone(&self.client);
        let ctx = self.ctx.clone();
        let (pending, meta) = {
            let mut w = self.lock();
            (w.pending.take(), self.key.child(METADATA_FILE))
        };
        let shape = self.shape;
        let had_metadata = self.lock().objects.contains(&meta);
        let res = block_on(async move {
            match (shape, pending) {
                (Shape::Packed, Some((path, Pending::Whole(payload)))) => {
                    let opts = PutOptions::from(PutMode::Create);
                    client.put_opts(&path, payload, opts).await.map(|_| ())
                }
                (Shape::Packed, Some((_, Pending::Parts(mut up)))) => {
                    up.complete().await.map(|_| ())
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
        {
            let mut w = self.lock();
            w.open.clear();
            w.objects.clear();
        }
        self.committed = true;
        Ok(ctx.at)
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let (objects, open) = {
            let mut w = self.lock();
            w.pending = None;
            (mem::take(&mut w.objects), mem::take(&mut w.open))
        };
        if objects.is_empty() && open.is_empty() {
            return;
        }
        let client = Arc::clone(&self.client);
        // metadata.json goes first (it is last in `objects` when present), so a half
        // deleted checkpoint is never listed.
        let res = block_on(async move {
            for up in open {
                let _ = up.lock().await.abort().await;
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

/// A file of a checkpoint being written into S3.
struct S3Writer {
    ctx: Ctx,
    rel: String,
    path: ObjPath,
    client: Arc<AmazonS3>,
    /// Complete only at commit (a packed checkpoint's object).
    defer: bool,
    written: Arc<Mutex<Written>>,
    buf: Vec<u8>,
    multipart: Option<Arc<tokio::sync::Mutex<Box<dyn MultipartUpload>>>>,
    parts: Vec<JoinHandle<object_store::Result<()>>>,
    size: u64,
}

impl S3Writer {
    /// Sends the buffer as the next part, waiting while [`PARTS_IN_FLIGHT`] are in flight.
    fn send_part(&mut self) -> io::Result<()> {
        let up = match &self.multipart {
            Some(up) => Arc::clone(up),
            None => {
                let (client, path) = (Arc::clone(&self.client), self.path.clone());
                let started = block_on(async move { client.put_multipart(&path).await })
                    .map_err(|e| io::Error::other(e.to_string()))?
                    .map_err(|e| self.ctx.io(format!("start uploading {}", self.rel), &e))?;
                let up = Arc::new(tokio::sync::Mutex::new(started));
                self.written
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .open
                    .push(Arc::clone(&up));
                self.multipart = Some(Arc::clone(&up));
                up
            }
        };
        self.wait_parts(PARTS_IN_FLIGHT - 1)?;
        let payload = PutPayload::from(mem::replace(&mut self.buf, Vec::with_capacity(PART_BYTES)));
        // Parts are numbered when put_part is called: call it here, in order, and let
        // the returned future (the request) run concurrently with the next parts.
        let request = futures::executor::block_on(up.lock()).put_part(payload);
        let part = spawn(request).map_err(|e| io::Error::other(e.to_string()))?;
        self.parts.push(part);
        Ok(())
    }

    /// Waits until at most `max` parts are in flight; the first failure is returned.
    fn wait_parts(&mut self, max: usize) -> io::Result<()> {
        while self.parts.len() > max {
            let first = self.parts.remove(0);
            let res =
                futures::executor::block_on(first).map_err(|e| io::Error::other(e.to_string()))?;
            res.map_err(|e| self.ctx.io(format!("upload a part of {}", self.rel), &e))?;
        }
        Ok(())
    }
}

impl Write for S3Writer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(PART_BYTES - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.size += n as u64;
        if self.buf.len() == PART_BYTES {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn finish(mut self: Box<Self>) -> Result<u64, StoreError> {
        let (location, context) = (self.ctx.at.to_string(), format!("upload {}", self.rel));
        let to_store = move |e: io::Error| StoreError::Io {
            location,
            context,
            source: e,
        };
        let Some(up) = self.multipart.clone() else {
            let payload = PutPayload::from(mem::take(&mut self.buf));
            let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
            if self.defer {
                w.pending = Some((self.path.clone(), Pending::Whole(payload)));
                return Ok(self.size);
            }
            drop(w);
            let (client, path) = (Arc::clone(&self.client), self.path.clone());
            // metadata.json commits a directory checkpoint: never over an existing one.
            let mode = match self.rel == METADATA_FILE {
                true => PutMode::Create,
                false => PutMode::Overwrite,
            };
            let res = block_on(async move {
                client
                    .put_opts(&path, payload, PutOptions::from(mode))
                    .await
            })?;
            match res {
                Ok(_) => {}
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => {
                    return Err(StoreError::Exists {
                        location: self.ctx.at.to_string(),
                    })
                }
                Err(e) => return Err(self.ctx.fail(format!("upload {}", self.rel), &e)),
            }
            self.record_object();
            return Ok(self.size);
        };
        if !self.buf.is_empty() {
            self.send_part().map_err(to_store.clone())?;
        }
        self.wait_parts(0).map_err(to_store)?;
        self.multipart = None;
        let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let pos = w.open.iter().position(|o| Arc::ptr_eq(o, &up));
        if let Some(pos) = pos {
            w.open.remove(pos);
        }
        drop(w);
        let Ok(up) = Arc::try_unwrap(up).map(tokio::sync::Mutex::into_inner) else {
            return Err(StoreError::Io {
                location: self.ctx.at.to_string(),
                context: format!("upload {}", self.rel),
                source: io::Error::other("a part upload is still running"),
            });
        };
        if self.defer {
            let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
            w.pending = Some((self.path.clone(), Pending::Parts(up)));
            return Ok(self.size);
        }
        let mut up = up;
        let res = block_on(async move {
            match up.complete().await {
                Ok(_) => Ok(()),
                Err(e) => {
                    let _ = up.abort().await;
                    Err(e)
                }
            }
        })?;
        res.map_err(|e| self.ctx.fail(format!("complete {}", self.rel), &e))?;
        self.record_object();
        Ok(self.size)
    }
}

impl S3Writer {
    fn record_object(&self) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .objects
            .push(self.path.clone());
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Unfinished: abort the multipart upload (the Upload would too; this is sooner).
        let Some(up) = self.multipart.take() else {
            return;
        };
        let parts = mem::take(&mut self.parts);
        let _ = block_on(async move {
            for p in parts {
                p.abort();
            }
            let _ = up.lock().await.abort().await;
        });
        let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
        w.open.retain(|o| Arc::strong_count(o) > 1);
    }
}
