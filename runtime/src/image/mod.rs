//! Checkpoint images: layout, metadata, archives and integrity.

pub mod archive;
pub mod atomic;
pub mod compression;
pub mod digester;
pub mod error;
pub mod follow;
pub mod integrity;
pub mod layout;
pub mod metadata;
mod parallel;
mod tar_align;
pub(crate) mod walk;
pub mod writeback;

pub use archive::{pack, unpack};
pub use compression::{detect, Compression};
pub use error::ImageError;
pub use integrity::{digest_dir, read_metadata, verify_dir, write_metadata};
pub use layout::{checkpoint_path, is_checkpoint_dir, validate_name};
pub use metadata::{FileDigest, Metadata, FORMAT_VERSION, METADATA_FILE};
