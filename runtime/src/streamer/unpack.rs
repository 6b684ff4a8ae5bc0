//! Images of a streamed checkpoint decoded into plain files, for what needs files rather
//! than CRIU's stream: a lazy restore (`lazy_pages.rs`) writes the small images this way.
//! Zero chunks become holes, so a copy takes only the disk its non-zero bytes need.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use super::index::{StreamIndex, StreamedFile};
use super::serve::serve_file;
use super::source::ShardSource;

/// Creates the image file `f` in `out`, owner-only, refusing a name that would lead
/// elsewhere (names come from the checkpoint).
pub(super) fn create_image(out: &Path, f: &StreamedFile) -> io::Result<File> {
    if f.name.is_empty() || f.name.contains('/') || f.name.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("image name {:?} in the stream index", f.name),
        ));
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out.join(&f.name))
}

/// Decodes the files of `index` that `wanted` picks into new files in `out` (owner-only:
/// they hold process memory), on `decoders` threads per file.
pub(super) fn unpack_files(
    index: &StreamIndex,
    shards: &Arc<dyn ShardSource>,
    out: &Path,
    decoders: usize,
    wanted: impl Fn(&StreamedFile) -> bool,
) -> io::Result<()> {
    for f in index.files.iter().filter(|f| wanted(f)) {
        let file = create_image(out, f)?;
        let sized = file.try_clone()?;
        serve_file(f, OwnedFd::from(file), shards, index.codec, decoders.max(1))?;
        // A trailing zero chunk is a hole the writes never reached.
        sized.set_len(f.size)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streamer::source::ShardFiles;

    #[test]
    fn a_name_with_a_slash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("shard-0.zst"), b"").unwrap();
        let text = r#"{"version":2,"codec":"zstd","chunk_bytes":4194304,"shards":["shard-0.zst"],
               "files":[{"name":"../x","size":0,"chunks":[]}]}"#;
        // Loading the index refuses it already; the decoder does not rely on that.
        assert!(StreamIndex::parse(text).is_err());
        let index: StreamIndex = serde_json::from_str(text).unwrap();
        let shards: Arc<dyn ShardSource> = Arc::new(ShardFiles::open(dir.path(), &index).unwrap());
        let e = unpack_files(&index, &shards, out.path(), 1, |_| true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    }
}
