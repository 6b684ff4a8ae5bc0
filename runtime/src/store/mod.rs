//! Checkpoint stores: where finished checkpoints are kept, behind one small trait.
//!
//! CRIU always writes into a local directory; a store takes those files and publishes
//! them as one checkpoint under its name, atomically and never replacing one (the commit
//! protocol, docs/ARCHITECTURE.md), and hands them back as streams for a restore. A
//! checkpoint is either a directory of files (`DIR/NAME/...`) or one packed object
//! (`DIR/NAME.tar.zst`). Backends are chosen by the [`Location`]'s scheme through the
//! engine's [`StoreRegistry`]: `file` (plain paths) is [`local::LocalStore`], `s3` is
//! [`s3::S3Store`]; an object store publishes with its last object, so a reader never
//! sees half a checkpoint.

pub mod error;
pub mod local;
pub mod location;
mod registry;
pub mod s3;
pub mod transfer;

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub use error::StoreError;
pub use location::{Location, LOCAL_SCHEME};
pub use registry::StoreRegistry;

use crate::image::atomic;

/// What a checkpoint is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A directory of files (CRIU images, metadata.json, shards).
    Dir,
    /// One packed object (a tar archive, compressed or not).
    Packed,
}

/// What is stored at a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Directory or packed checkpoint.
    pub shape: Shape,
    /// Bytes: the packed object's size, or the sum of the directory's files.
    pub size_bytes: u64,
}

/// A committed checkpoint found by [`CheckpointStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its entry name in the listed location (`NAME` or `NAME.tar.zst`).
    pub name: String,
    /// Where it is.
    pub location: Location,
    /// What it is.
    pub shape: Shape,
}

/// One file of a directory checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Path inside the checkpoint, `/`-separated.
    pub rel: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A storage backend for checkpoints. Blocking: call it from a blocking thread.
/// Paths inside a checkpoint (`rel`) are relative and `/`-separated; `""` names a
/// packed checkpoint's one object.
pub trait CheckpointStore: Send + Sync + fmt::Debug {
    /// Starts writing the checkpoint `at` (its directory's location joined with its entry
    /// name); nothing is visible under that name before [`Upload::commit`].
    fn begin(&self, at: &Location, shape: Shape) -> Result<Box<dyn Upload>, StoreError>;

    /// What is stored at `at`, if anything.
    fn stat(&self, at: &Location) -> Result<Option<Stat>, StoreError>;

    /// Whether anything is stored at `at`.
    fn exists(&self, at: &Location) -> Result<bool, StoreError> {
        Ok(self.stat(at)?.is_some())
    }

    /// Streams file `rel` of the checkpoint at `at` (`""`: the packed object itself).
    fn open(&self, at: &Location, rel: &str) -> Result<Box<dyn Read + Send>, StoreError>;

    /// The files of the directory checkpoint at `at`, for fetching it.
    fn files(&self, at: &Location) -> Result<Vec<FileInfo>, StoreError>;

    /// The committed checkpoints in `dir`; never a staging or partial one.
    fn list(&self, dir: &Location) -> Result<Vec<Listed>, StoreError>;

    /// Removes the checkpoint at `at`; nothing there is not an error.
    fn delete(&self, at: &Location) -> Result<(), StoreError>;

    /// The local path of `at`, when the store is this host's filesystem: readers use it
    /// in place instead of fetching a copy. `None` for remote stores.
    fn local_path(&self, _at: &Location) -> Option<PathBuf> {
        None
    }

    /// A new private local directory for the images of a dump going to `dir`, when the
    /// upload has no [`Upload::local_dir`]; removed by the caller. By default in the
    /// temp dir, named so that a crash's leftover is removed at the next daemon start.
    fn scratch_dir(&self, dir: &Location) -> Result<PathBuf, StoreError> {
        let _ = dir;
        tempfile::Builder::new()
            .prefix(&atomic::scratch_prefix("cedana-dump"))
            .suffix(atomic::PARTIAL_SUFFIX)
            .tempdir_in(std::env::temp_dir())
            .map(tempfile::TempDir::keep)
            .map_err(|source| StoreError::Io {
                location: std::env::temp_dir().display().to_string(),
                context: "create a scratch dir for CRIU's images".into(),
                source,
            })
    }

    /// Undoes what operations cut short by a crash left in `dir` (staging paths,
    /// unfinished uploads); returns what it did, for the log. Run at daemon start.
    fn recover(&self, _dir: &Location) -> Vec<String> {
        Vec::new()
    }

    /// Undoes what operations of this host cut short by a crash left in this store,
    /// wherever they were writing (an object store's open multipart uploads); returns
    /// what it did. Run at daemon start.
    fn recover_unfinished(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One checkpoint being written. Dropped without [`commit`](Upload::commit), it leaves
/// nothing behind.
pub trait Upload: Send + fmt::Debug {
    /// Where the checkpoint will be.
    fn location(&self) -> &Location;

    /// A local directory that becomes the checkpoint at commit without a copy (the local
    /// store's staging directory for a directory checkpoint): files written there need
    /// no [`create`](Upload::create).
    fn local_dir(&self) -> Option<&Path> {
        None
    }

    /// Opens file `rel` of the checkpoint for writing (`""`: the packed object).
    fn create(&mut self, rel: &str) -> Result<Box<dyn ObjectWriter>, StoreError>;

    /// Makes the checkpoint durable and visible under its name, refusing to replace one
    /// ([`StoreError::Exists`]); returns where it is. Nothing written before is visible
    /// (an object store commits by its last object, e.g. metadata.json written with
    /// "only if absent").
    fn commit(self: Box<Self>) -> Result<Location, StoreError>;
}

/// A file of a checkpoint being written.
pub trait ObjectWriter: Write + Send {
    /// Completes the file's bytes (local: synced to disk; an object store: every part
    /// uploaded); returns its size. Dropped unfinished, it is not part of the checkpoint.
    fn finish(self: Box<Self>) -> Result<u64, StoreError>;
}
