//! The S3 backend: checkpoints in S3-compatible object storage, at
//! `s3://BUCKET/PREFIX/NAME` (a directory checkpoint: one object per file under
//! `PREFIX/NAME/`) or `s3://BUCKET/PREFIX/NAME.tar.zst` (packed: one object).
//!
//! Commit protocol on a store without renames: a directory checkpoint exists once its
//! `metadata.json` does, and that object is written last, with "only if absent", so a
//! listing never shows half a checkpoint and a commit never replaces one. A packed
//! checkpoint is one multipart upload completed at commit. Big files go up in parts of
//! [`PART_BYTES`], several at once; an upload dropped before its commit aborts its
//! multipart uploads and deletes what it wrote, so nothing is orphaned.

mod client;
mod journal;
mod profile;
mod upload;
mod uploads;
mod writer;

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::sync::{mpsc, Arc};

use futures::StreamExt;
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjPath;
use object_store::ObjectStore;

pub use client::S3Settings;
use client::{block_on, explain, Clients};
use journal::{Journal, Orphan};
use upload::S3Upload;

use super::{CheckpointStore, FileInfo, Listed, Location, Shape, Stat, StoreError, Upload};
use crate::image::compression::Compression;
use crate::image::metadata::METADATA_FILE;

/// The scheme this backend serves.
pub const S3_SCHEME: &str = "s3";
/// Part size of multipart uploads (S3's smallest), and the size below which a file is
/// one PUT: the smaller the parts, the less an upload holds in memory.
pub const PART_BYTES: usize = 5 << 20;
/// Parts of one file in flight at once. With `transfer::PARALLEL` (4) files going up
/// together, an upload holds at most 4 x (2 + 1 filling) x [`PART_BYTES`] = 60 MiB, and
/// keeps 8 requests in flight.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Chunks of a download queued between the network and its reader.
const DOWNLOAD_QUEUE: usize = 4;

/// Checkpoints in S3-compatible object storage.
#[derive(Debug)]
pub struct S3Store {
    clients: Clients,
    journal: Journal,
}

/// The journal of open multipart uploads when no directory is configured.
const DEFAULT_JOURNAL: &str = "cedana-s3-uploads";

/// A location's bucket and key (no leading or trailing `/`).
#[derive(Debug, Clone)]
pub(crate) struct Key {
    bucket: String,
    key: String,
}

impl Key {
    fn of(at: &Location) -> Result<Self, StoreError> {
        if at.scheme() != S3_SCHEME {
            return Err(StoreError::InvalidLocation {
                value: at.to_string(),
                reason: "the S3 store serves s3:// locations only".into(),
            });
        }
        let rest = at.rest();
        let (bucket, key) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
        Ok(Self {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// The object of `rel` inside this key (`""`: the key itself).
    fn child(&self, rel: &str) -> ObjPath {
        match (self.key.as_str(), rel) {
            (k, "") => ObjPath::from(k),
            ("", r) => ObjPath::from(r),
            (k, r) => ObjPath::from(format!("{k}/{r}")),
        }
    }

    fn prefix(&self) -> Option<ObjPath> {
        (!self.key.is_empty()).then(|| ObjPath::from(self.key.as_str()))
    }
}

impl S3Store {
    /// A store reaching its server as `settings` and the `AWS_*` environment say.
    pub fn new(settings: S3Settings) -> Self {
        let dir = settings
            .journal_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(DEFAULT_JOURNAL));
        Self {
            clients: Clients::new(settings),
            journal: Journal::new(dir),
        }
    }

    /// Aborts the multipart uploads that processes of this host left open when they
    /// died (journal.rs); returns what it did. Uploads of live processes are left alone.
    fn abort_orphans(&self) -> Vec<String> {
        let mut done = Vec::new();
        for o in self.journal.orphans() {
            let at = format!("s3://{}/{}", o.upload.bucket, o.upload.key);
            match self.abort_orphan(o) {
                Ok(0) => {}
                Ok(_) => done.push(format!(
                    "aborted the unfinished multipart upload of {at}, left by an operation cut \
                     short"
                )),
                Err(e) => done.push(format!("cannot abort the upload of {at}: {e}")),
            }
        }
        done
    }

    /// Aborts the upload `o` recorded (found by its key when the process died before it
    /// had the id), and settles the record once nothing of it is open; how many it aborted.
    fn abort_orphan(&self, o: Orphan) -> Result<usize, String> {
        let Orphan { upload, entry } = o;
        let client = self
            .clients
            .get(&upload.bucket)
            .map_err(|e| e.to_string())?;
        let ids = match upload.id {
            Some(id) => vec![id],
            None => {
                let at = self
                    .clients
                    .addressing(&upload.bucket)
                    .map_err(|e| e.to_string())?;
                let (c, key) = (Arc::clone(&client), upload.key.clone());
                block_on(async move { uploads::open_on(&c, &at, &key).await })
                    .map_err(|e| e.to_string())??
            }
        };
        let path = ObjPath::from(upload.key.as_str());
        let n = ids.len();
        block_on(async move {
            for id in ids {
                match client.abort_multipart(&path, &id).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(())
        })
        .map_err(|e| e.to_string())??;
        entry.settle();
        Ok(n)
    }

    fn client(&self, k: &Key) -> Result<Arc<object_store::aws::AmazonS3>, StoreError> {
        self.clients.get(&k.bucket)
    }

    /// The store error of a failed request about `at`, saying what to do.
    fn fail(&self, at: &Location, k: &Key, context: &str, e: &object_store::Error) -> StoreError {
        StoreError::Remote {
            location: at.to_string(),
            context: context.to_string(),
            problem: explain(e, &k.bucket, &self.clients.endpoint()),
        }
    }

    /// Every object under `k/` (recursive), as (relative name, size).
    fn list_under(&self, at: &Location, k: &Key) -> Result<Vec<(String, u64)>, StoreError> {
        let client = self.client(k)?;
        let prefix = k.prefix();
        let strip = prefix.as_ref().map(|p| format!("{p}/")).unwrap_or_default();
        let res = block_on(async move {
            let mut out = Vec::new();
            let mut s = client.list(prefix.as_ref());
            while let Some(meta) = s.next().await {
                let meta = meta?;
                out.push((meta.location.to_string(), meta.size));
            }
            Ok::<_, object_store::Error>(out)
        })?;
        let objects = res.map_err(|e| self.fail(at, k, "list objects", &e))?;
        Ok(objects
            .into_iter()
            .filter_map(|(key, size)| Some((key.strip_prefix(&strip)?.to_string(), size)))
            .collect())
    }

    /// The size of object `rel` of `at`, if it exists.
    fn head(&self, at: &Location, k: &Key, rel: &str) -> Result<Option<u64>, StoreError> {
        let client = self.client(k)?;
        let path = k.child(rel);
        match block_on(async move { client.head(&path).await })? {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail(at, k, "look up the checkpoint", &e)),
        }
    }
}

/// Whether `name` is a packed checkpoint's (an archive extension).
fn is_packed_name(name: &str) -> bool {
    Compression::ALL
        .iter()
        .map(|c| c.extension())
        .any(|ext| !ext.is_empty() && name.ends_with(ext) && name.len() > ext.len())
}

impl CheckpointStore for S3Store {
    fn begin(&self, at: &Location, shape: Shape) -> Result<Box<dyn Upload>, StoreError> {
        let k = Key::of(at)?;
        // A `--no-server` dump killed mid-upload has no daemon start to clean up after it.
        for line in self.abort_orphans() {
            tracing::info!("{line}");
        }
        if k.key.is_empty() {
            return Err(StoreError::InvalidLocation {
                value: at.to_string(),
                reason: "give a bucket and a prefix: s3://BUCKET/PREFIX".into(),
            });
        }
        // Refused early, before CRIU runs: the commit would refuse it anyway.
        if self.exists(at)? {
            return Err(StoreError::Exists {
                location: at.to_string(),
            });
        }
        // A missing bucket answers HEAD with a plain 404; a listing names it, so a dump
        // to a bucket that is not there fails before CRIU freezes anything.
        let client = self.client(&k)?;
        let (c, prefix) = (Arc::clone(&client), k.child(""));
        block_on(async move { c.list_with_delimiter(Some(&prefix)).await.map(|_| ()) })?
            .map_err(|e| self.fail(at, &k, "check the bucket", &e))?;
        Ok(Box::new(S3Upload::new(
            at.clone(),
            k,
            client,
            shape,
            self.clients.endpoint(),
            self.journal.clone(),
        )))
    }

    fn stat(&self, at: &Location) -> Result<Option<Stat>, StoreError> {
        let k = Key::of(at)?;
        if let Some(size_bytes) = self.head(at, &k, "")? {
            return Ok(Some(Stat {
                shape: Shape::Packed,
                size_bytes,
            }));
        }
        if self.head(at, &k, METADATA_FILE)?.is_none() {
            return Ok(None);
        }
        let size_bytes = self.list_under(at, &k)?.iter().map(|(_, s)| s).sum();
        Ok(Some(Stat {
            shape: Shape::Dir,
            size_bytes,
        }))
    }

    fn open(&self, at: &Location, rel: &str) -> Result<Box<dyn Read + Send>, StoreError> {
        let k = Key::of(at)?;
        let client = self.client(&k)?;
        let path = k.child(rel);
        let got = block_on(async move { client.get(&path).await })?.map_err(|e| match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                location: format!("{at}/{rel}"),
            },
            e => self.fail(at, &k, &format!("download {rel}"), &e),
        })?;
        // The body streams through a small queue: a download never sits whole in memory.
        let (tx, rx) = mpsc::sync_channel::<io::Result<bytes::Bytes>>(DOWNLOAD_QUEUE);
        let endpoint = self.clients.endpoint();
        client::spawn(async move {
            let mut body = got.into_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    io::Error::other(format!("download interrupted from {endpoint}: {e}"))
                });
                let stop = chunk.is_err();
                // The reader went away: stop downloading.
                if tx.send(chunk).is_err() || stop {
                    break;
                }
            }
        })?;
        Ok(Box::new(ChannelReader {
            rx,
            cur: bytes::Bytes::new(),
        }))
    }

    fn files(&self, at: &Location) -> Result<Vec<FileInfo>, StoreError> {
        let k = Key::of(at)?;
        Ok(self
            .list_under(at, &k)?
            .into_iter()
            .map(|(rel, size)| FileInfo { rel, size })
            .collect())
    }

    fn list(&self, dir: &Location) -> Result<Vec<Listed>, StoreError> {
        let k = Key::of(dir)?;
        let mut names: BTreeSet<(String, bool)> = BTreeSet::new();
        for (rel, _) in self.list_under(dir, &k)? {
            match rel.split_once('/') {
                // A packed checkpoint right under the prefix.
                None if is_packed_name(&rel) => {
                    names.insert((rel, true));
                }
                // A directory checkpoint: complete once its metadata.json exists.
                Some((name, METADATA_FILE)) => {
                    names.insert((name.to_string(), false));
                }
                _ => {}
            }
        }
        Ok(names
            .into_iter()
            .map(|(name, packed)| Listed {
                location: dir.join(&name),
                name,
                shape: if packed { Shape::Packed } else { Shape::Dir },
            })
            .collect())
    }

    fn recover_unfinished(&self) -> Vec<String> {
        self.abort_orphans()
    }

    fn delete(&self, at: &Location) -> Result<(), StoreError> {
        let k = Key::of(at)?;
        if k.key.is_empty() {
            return Err(StoreError::InvalidLocation {
                value: at.to_string(),
                reason: "refusing to delete a whole bucket; name a checkpoint".into(),
            });
        }
        let client = self.client(&k)?;
        // metadata.json first: the checkpoint stops being listed before its files go.
        let mut paths = vec![k.child(""), k.child(METADATA_FILE)];
        paths.extend(
            self.list_under(at, &k)?
                .into_iter()
                .filter(|(rel, _)| rel != METADATA_FILE)
                .map(|(rel, _)| k.child(&rel)),
        );
        let res = block_on(async move {
            for p in paths {
                match client.delete(&p).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
        res.map_err(|e| self.fail(at, &k, "delete the checkpoint", &e))
    }
}

/// A download's body as a blocking reader.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<bytes::Bytes>>,
    cur: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(chunk) => self.cur = chunk?,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_locations() {
        let at = Location::parse("s3://b/p/q/ck").expect("url");
        let k = Key::of(&at).expect("key");
        assert_eq!((k.bucket.as_str(), k.key.as_str()), ("b", "p/q/ck"));
        assert_eq!(k.child("").to_string(), "p/q/ck");
        assert_eq!(k.child("metadata.json").to_string(), "p/q/ck/metadata.json");
        let root = Key::of(&Location::parse("s3://b").expect("url")).expect("key");
        assert_eq!(root.child("x").to_string(), "x");
        assert!(root.prefix().is_none());
        assert!(Key::of(&Location::local("/x")).is_err());
        assert!(is_packed_name("ck.tar.zst") && !is_packed_name("ck"));
    }
}
