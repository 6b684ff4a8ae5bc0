//! Checkpoint compression formats and detection of a checkpoint's format by content.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::ImageError;

/// How a checkpoint is stored: a plain directory or a (compressed) tar archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
// In the order of `cedana_config::COMPRESSIONS`, which `as_str` indexes.
#[repr(usize)]
pub enum Compression {
    /// A plain directory, not archived.
    None,
    /// An uncompressed tar archive.
    Tar,
    /// A gzip-compressed tar archive.
    Gzip,
    /// An LZ4-frame-compressed tar archive.
    Lz4,
    /// A zstd-compressed tar archive.
    Zstd,
}

/// zstd frame magic.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// gzip member magic.
const GZIP_MAGIC: [u8; 2] = [0x1F, 0x8B];
/// LZ4 frame magic.
const LZ4_MAGIC: [u8; 4] = [0x04, 0x22, 0x4D, 0x18];
/// Offset of the "ustar" magic in a tar header.
const TAR_MAGIC_OFFSET: usize = 257;
/// The tar magic (POSIX "ustar\0" and GNU "ustar " share it).
const TAR_MAGIC: &[u8; 5] = b"ustar";

impl Compression {
    /// Every format, in the order they are documented.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Tar,
        Compression::Gzip,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The lower-case name (`none`, `tar`, `gzip`, `lz4`, `zstd`): the config crate's
    /// list, which validates `checkpoint.compression` and `--compression`, is the one
    /// place names are spelt ([`Compression::ALL`] is in its order).
    pub fn as_str(self) -> &'static str {
        cedana_config::COMPRESSIONS[self as usize]
    }

    /// File name suffix of an archive in this format ("" for a directory).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Tar => ".tar",
            Compression::Gzip => ".tar.gz",
            Compression::Lz4 => ".tar.lz4",
            Compression::Zstd => ".tar.zst",
        }
    }

    /// Whether this format is a single archive file (everything but [`Compression::None`]).
    pub fn is_archive(self) -> bool {
        self != Compression::None
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Compression::ALL
            .into_iter()
            .find(|c| c.as_str() == lower)
            .ok_or_else(|| ImageError::InvalidCompression {
                value: s.to_string(),
            })
    }
}

/// Detects a checkpoint's format: a directory is [`Compression::None`], a file is identified by its magic bytes (never by its name).
pub fn detect(path: &Path) -> Result<Compression, ImageError> {
    let meta = fs::metadata(path).map_err(|e| ImageError::io(path, e))?;
    if meta.is_dir() {
        return Ok(Compression::None);
    }
    if !meta.is_file() {
        return Err(ImageError::UnknownFormat {
            path: path.to_path_buf(),
            detail: "not a regular file or directory".into(),
        });
    }
    let mut head = Vec::with_capacity(512);
    fs::File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(|e| ImageError::io(path, e))?;
    detect_bytes(&head).ok_or_else(|| ImageError::UnknownFormat {
        path: path.to_path_buf(),
        detail: if head.is_empty() {
            "the file is empty".into()
        } else {
            format!(
                "unrecognised leading bytes {}",
                hex::encode(&head[..head.len().min(8)])
            )
        },
    })
}

/// Identifies an archive format from its first bytes (at least 262 are needed for plain tar).
pub(crate) fn detect_bytes(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&ZSTD_MAGIC) {
        Some(Compression::Zstd)
    } else if head.starts_with(&GZIP_MAGIC) {
        Some(Compression::Gzip)
    } else if head.starts_with(&LZ4_MAGIC) {
        Some(Compression::Lz4)
    } else if head.get(TAR_MAGIC_OFFSET..TAR_MAGIC_OFFSET + TAR_MAGIC.len()) == Some(TAR_MAGIC) {
        Some(Compression::Tar)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_extension_serde() {
        // Every name the config accepts is a format, in the same order.
        assert_eq!(Compression::ALL.len(), cedana_config::COMPRESSIONS.len());
        for (i, c) in Compression::ALL.into_iter().enumerate() {
            assert_eq!(c as usize, i);
        }
        for c in Compression::ALL {
            assert_eq!(c.to_string().parse::<Compression>().ok(), Some(c));
            let json = serde_json::to_string(&c).expect("serialize");
            assert_eq!(json, format!("\"{c}\""));
            let back: Compression = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, c);
        }
        assert_eq!("ZSTD".parse::<Compression>().ok(), Some(Compression::Zstd));
        assert_eq!(Compression::None.extension(), "");
        assert_eq!(Compression::Tar.extension(), ".tar");
        assert_eq!(Compression::Gzip.extension(), ".tar.gz");
        assert_eq!(Compression::Lz4.extension(), ".tar.lz4");
        assert_eq!(Compression::Zstd.extension(), ".tar.zst");
        let err = "bz2".parse::<Compression>().expect_err("bz2 is unknown");
        let msg = err.to_string();
        for v in ["none", "tar", "gzip", "lz4", "zstd", "bz2"] {
            assert!(msg.contains(v), "{msg}");
        }
    }

    #[test]
    fn detect_unknown_and_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(detect(dir.path()).expect("dir"), Compression::None);
        let empty = dir.path().join("x.tar.zst");
        std::fs::write(&empty, b"").expect("write");
        let msg = detect(&empty).expect_err("empty").to_string();
        assert!(msg.contains("x.tar.zst") && msg.contains("empty"), "{msg}");
        let junk = dir.path().join("junk.tar.gz");
        std::fs::write(&junk, vec![7u8; 1000]).expect("write");
        let msg = detect(&junk).expect_err("junk").to_string();
        assert!(msg.contains("junk.tar.gz"), "{msg}");
        let missing = dir.path().join("missing");
        assert!(matches!(detect(&missing), Err(ImageError::Io { .. })));
    }
}
