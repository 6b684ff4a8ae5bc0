//! A file of a checkpoint being written into S3: buffered up to [`PART_BYTES`], then one
//! PUT, or a multipart upload with up to [`PARTS_IN_FLIGHT`] parts in flight whose id is
//! recorded in the journal before its first part goes up. Dropped unfinished, it aborts
//! its multipart upload.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::mem;
use std::sync::{Arc, Mutex};

use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{MultipartId, ObjectStore, PutMode, PutOptions, PutPayload};
use tokio::task::JoinHandle;

use super::client::{block_on, explain, spawn};
use super::journal::{Journal, Recorded};
use super::upload::{lock, Ctx, OpenUpload, Pending, Written};
use super::{PARTS_IN_FLIGHT, PART_BYTES};
use crate::image::metadata::METADATA_FILE;
use crate::store::{ObjectWriter, StoreError};

/// A file of a checkpoint being written into S3.
pub(super) struct S3Writer {
    ctx: Ctx,
    rel: String,
    path: ObjPath,
    client: Arc<AmazonS3>,
    journal: Journal,
    /// Complete only at commit (a packed checkpoint's object).
    defer: bool,
    written: Arc<Mutex<Written>>,
    buf: Vec<u8>,
    /// The multipart upload's id, once one is started.
    upload: Option<MultipartId>,
    /// Parts in flight, in part order.
    parts: VecDeque<JoinHandle<object_store::Result<PartId>>>,
    /// Parts uploaded, in part order.
    done: Vec<PartId>,
    size: u64,
}

fn task_failed(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("an S3 request task failed: {e}"))
}

impl S3Writer {
    pub(super) fn new(
        ctx: Ctx,
        rel: &str,
        path: ObjPath,
        client: Arc<AmazonS3>,
        journal: Journal,
        defer: bool,
        written: Arc<Mutex<Written>>,
    ) -> Self {
        Self {
            ctx,
            rel: match rel {
                "" => "the archive".to_string(),
                rel => rel.to_string(),
            },
            path,
            client,
            journal,
            defer,
            written,
            buf: Vec::new(),
            upload: None,
            parts: VecDeque::new(),
            done: Vec::new(),
            size: 0,
        }
    }

    /// The failure as the writer's I/O error: the caller names the location already.
    fn io(&self, context: String, e: &object_store::Error) -> io::Error {
        let problem = explain(e, &self.ctx.bucket, &self.ctx.endpoint);
        io::Error::other(format!("{context}: {problem}"))
    }

    /// Starts the multipart upload, recorded in the journal before it is asked for (a
    /// crash while asking leaves the key to find it by) and with its id once given.
    fn start(&mut self) -> io::Result<MultipartId> {
        let mut recorded = Recorded {
            bucket: self.ctx.bucket.clone(),
            key: self.path.to_string(),
            id: None,
        };
        let mut entry = self.journal.record(&recorded).map_err(|e| {
            io::Error::other(format!(
                "record the upload of {} in {}: {e}; check that directory is writable",
                self.rel,
                self.journal.dir().display()
            ))
        })?;
        let (client, path) = (Arc::clone(&self.client), self.path.clone());
        let id = match block_on(async move { client.create_multipart(&path).await })
            .map_err(io::Error::other)?
        {
            Ok(id) => id,
            Err(e) => {
                // No upload exists (or the server will say so to recovery's listing).
                entry.settle();
                return Err(self.io(format!("start uploading {}", self.rel), &e));
            }
        };
        recorded.id = Some(id.clone());
        // Without the id the record still finds the upload by its key.
        if let Err(e) = entry.set_id(&recorded) {
            tracing::debug!(error = %e, key = %self.path, "the journal record keeps only the key");
        }
        lock(&self.written).open.push(OpenUpload {
            path: self.path.clone(),
            id: id.clone(),
            entry: Some(entry),
        });
        self.upload = Some(id.clone());
        Ok(id)
    }

    /// Sends the buffer as the next part, waiting while [`PARTS_IN_FLIGHT`] are in flight.
    fn send_part(&mut self) -> io::Result<()> {
        let id = match &self.upload {
            Some(id) => id.clone(),
            None => self.start()?,
        };
        self.wait_parts(PARTS_IN_FLIGHT - 1)?;
        let payload = PutPayload::from(mem::replace(&mut self.buf, Vec::with_capacity(PART_BYTES)));
        let idx = self.done.len() + self.parts.len();
        let (client, path) = (Arc::clone(&self.client), self.path.clone());
        // A failed part is retried whole by the client: a retry never corrupts it.
        let part = spawn(async move { client.put_part(&path, &id, idx, payload).await })
            .map_err(io::Error::other)?;
        self.parts.push_back(part);
        Ok(())
    }

    /// Waits until at most `max` parts are in flight; the first failure is returned.
    fn wait_parts(&mut self, max: usize) -> io::Result<()> {
        while self.parts.len() > max {
            let Some(first) = self.parts.pop_front() else {
                break;
            };
            let res = futures::executor::block_on(first).map_err(task_failed)?;
            let part = res.map_err(|e| self.io(format!("upload a part of {}", self.rel), &e))?;
            self.done.push(part);
        }
        Ok(())
    }

    fn record_object(&self) {
        lock(&self.written).objects.push(self.path.clone());
    }

    /// One PUT of the buffer (or its deferral to the commit); returns the size.
    fn put_whole(&mut self) -> Result<u64, StoreError> {
        let payload = PutPayload::from(mem::take(&mut self.buf));
        if self.defer {
            lock(&self.written).pending = Some((self.path.clone(), Pending::Whole(payload)));
            return Ok(self.size);
        }
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
        Ok(self.size)
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
        if self.upload.is_none() {
            return self.put_whole();
        }
        let (location, context) = (self.ctx.at.to_string(), format!("upload {}", self.rel));
        let to_store = move |e: io::Error| StoreError::Io {
            location,
            context,
            source: e,
        };
        if !self.buf.is_empty() {
            self.send_part().map_err(to_store.clone())?;
        }
        self.wait_parts(0).map_err(to_store)?;
        let Some(id) = self.upload.take() else {
            return Ok(self.size);
        };
        let Some(up) = lock(&self.written).take_open(&id) else {
            return Err(StoreError::NotFound {
                location: format!("{} (its upload was already aborted)", self.ctx.at),
            });
        };
        let parts = mem::take(&mut self.done);
        if self.defer {
            lock(&self.written).pending = Some((self.path.clone(), Pending::Parts(up, parts)));
            return Ok(self.size);
        }
        let client = Arc::clone(&self.client);
        let res = block_on(async move { up.complete(&client, parts).await })?;
        res.map_err(|e| self.ctx.fail(format!("complete {}", self.rel), &e))?;
        self.record_object();
        Ok(self.size)
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Unfinished: abort the multipart upload (the Upload would too; this is sooner).
        let Some(id) = self.upload.take() else {
            return;
        };
        let parts = mem::take(&mut self.parts);
        let open = lock(&self.written).take_open(&id);
        let client = Arc::clone(&self.client);
        let _ = block_on(async move {
            for p in parts {
                p.abort();
            }
            if let Some(up) = open {
                up.abort(&client).await;
            }
        });
    }
}
