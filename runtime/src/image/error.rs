//! Errors of checkpoint image handling; every message says what happened and what to do.

use std::path::PathBuf;

use crate::error::ErrorKind;

/// An error while laying out, packing, unpacking or verifying a checkpoint.
#[derive(thiserror::Error, Debug)]
pub enum ImageError {
    /// An I/O operation on `path` failed.
    #[error("I/O error on {}: {source}; check that the path exists, its permissions and the free disk space", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An archive could not be decoded.
    #[error("{}: the archive is truncated or corrupt ({detail}); re-copy it or dump again", path.display())]
    Corrupt {
        /// The archive.
        path: PathBuf,
        /// What the decoder reported.
        detail: String,
    },
    /// An archive or checkpoint entry that could escape or alter the destination was refused.
    #[error("refusing unsafe checkpoint entry {entry:?}: {reason}; cedana never creates such entries, so the checkpoint was tampered with or not made by cedana; dump again")]
    UnsafeEntry {
        /// The entry path as found.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// A file's content does not match the digest recorded in metadata.json.
    #[error("checkpoint file {file} is corrupt: its sha256 is {actual} but metadata.json records {expected}; re-copy the checkpoint or dump again")]
    ChecksumMismatch {
        /// Relative path of the file.
        file: String,
        /// Recorded sha256 (hex).
        expected: String,
        /// Computed sha256 (hex).
        actual: String,
    },
    /// A file listed in metadata.json is absent.
    #[error("checkpoint file {file} listed in metadata.json is missing; re-copy the checkpoint or dump again")]
    Missing {
        /// Relative path of the file.
        file: String,
    },
    /// A file is present but not listed in metadata.json.
    #[error("file {file} is in the checkpoint but not listed in metadata.json; remove it, or re-copy the checkpoint or dump again")]
    Unexpected {
        /// Relative path of the file.
        file: String,
    },
    /// The file is not a recognised checkpoint archive.
    #[error("{} is not a checkpoint archive or directory ({detail}); expected a directory or a tar, tar.gz, tar.lz4 or tar.zst file (detected by content, not name); check the path", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        detail: String,
    },
    /// An unknown compression name was given.
    #[error("unknown compression {value:?}; valid values: none, tar, gzip, lz4, zstd")]
    InvalidCompression {
        /// The value given.
        value: String,
    },
    /// A checkpoint name is not usable as a file name.
    #[error(
        "invalid checkpoint name {}: {reason}; use a plain name of at most {} bytes without \
         '/', NUL or a leading '.'",
        crate::image::layout::shown_name(name),
        crate::image::layout::MAX_NAME_LEN
    )]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The final name of a checkpoint is already taken (another dump won the race).
    #[error("{} already exists; a checkpoint is never replaced: choose another --name or delete the old one (`cedana checkpoint delete`)", path.display())]
    Exists {
        /// The path that is taken.
        path: PathBuf,
    },
    /// The directory has no metadata.json.
    #[error("not a cedana checkpoint: no metadata.json in {}; check the path", dir.display())]
    NotACheckpoint {
        /// The directory.
        dir: PathBuf,
    },
    /// metadata.json could not be parsed or written.
    #[error("{}: invalid checkpoint metadata ({detail}); the checkpoint is damaged, re-copy it or dump again", path.display())]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// The checkpoint was made by a newer cedana.
    #[error("{} has checkpoint format version {found}, but this cedana supports up to {supported}; upgrade cedana to restore it", path.display())]
    NewerFormat {
        /// The metadata file.
        path: PathBuf,
        /// Version found in the checkpoint.
        found: u32,
        /// Newest version this build understands.
        supported: u32,
    },
    /// The unpack destination already has content.
    #[error("unpack destination {} is not empty; unpack into a new, empty directory", path.display())]
    DestNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// The output of pack would be inside the directory being packed.
    #[error("cannot pack {} into {}: the output would be inside the directory being packed; choose an output path outside it", src.display(), out.display())]
    OutputInsideSource {
        /// Directory being packed.
        src: PathBuf,
        /// Requested output.
        out: PathBuf,
    },
    /// The destination lacks the free space to unpack the checkpoint.
    #[error("not enough free space in {} to unpack the checkpoint: it needs {needed} bytes, {available} are free; free some space there, or move the archive to a filesystem with more room (restore unpacks it next to the archive)", dest.display())]
    NoSpace {
        /// Where it was to be unpacked.
        dest: PathBuf,
        /// Bytes needed (with a reserve).
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// The archive's manifest cannot be read.
    #[error("{}: unreadable archive manifest ({detail}); the archive is damaged or was not made by cedana; re-copy it or dump again", archive.display())]
    BadManifest {
        /// The archive.
        archive: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// An entry of the archive disagrees with the archive's manifest.
    #[error("{} does not match its manifest at {entry:?}: {reason}; the archive was altered or damaged after it was written, nothing of it is used; re-copy it or dump again", archive.display())]
    ManifestMismatch {
        /// The archive.
        archive: PathBuf,
        /// The entry path.
        entry: String,
        /// How it disagrees.
        reason: String,
    },
    /// The archive holds no metadata.json.
    #[error("not a cedana checkpoint: the archive {} holds no metadata.json (or ends before it); check the path, or re-copy the archive if it was cut short", archive.display())]
    ArchiveWithoutMetadata {
        /// The archive.
        archive: PathBuf,
    },
}

impl ImageError {
    /// Broad class of this error, for status and exit codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ImageError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
                _ => ErrorKind::Internal,
            },
            ImageError::Corrupt { .. }
            | ImageError::UnsafeEntry { .. }
            | ImageError::ChecksumMismatch { .. }
            | ImageError::Missing { .. }
            | ImageError::Unexpected { .. }
            | ImageError::Metadata { .. }
            | ImageError::BadManifest { .. }
            | ImageError::ManifestMismatch { .. } => ErrorKind::DataLoss,
            ImageError::UnknownFormat { .. }
            | ImageError::InvalidCompression { .. }
            | ImageError::InvalidName { .. }
            | ImageError::OutputInsideSource { .. } => ErrorKind::InvalidArgument,
            ImageError::NotACheckpoint { .. } | ImageError::ArchiveWithoutMetadata { .. } => {
                ErrorKind::NotFound
            }
            ImageError::Exists { .. } => ErrorKind::AlreadyExists,
            ImageError::NewerFormat { .. }
            | ImageError::DestNotEmpty { .. }
            | ImageError::NoSpace { .. } => ErrorKind::FailedPrecondition,
        }
    }

    /// Builds an [`ImageError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds an [`ImageError::Corrupt`] for the archive `path`.
    pub fn corrupt(path: impl Into<PathBuf>, detail: impl std::fmt::Display) -> Self {
        ImageError::Corrupt {
            path: path.into(),
            detail: detail.to_string(),
        }
    }

    /// Builds an [`ImageError::UnsafeEntry`].
    pub fn unsafe_entry(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        ImageError::UnsafeEntry {
            entry: entry.into(),
            reason: reason.into(),
        }
    }
}
