//! Checkpoint images: layout, metadata, archives and integrity.

pub mod metadata;
