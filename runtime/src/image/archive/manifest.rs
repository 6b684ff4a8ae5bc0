//! `manifest.json`: the first entry of every archive cedana writes. It names every other
//! entry with its type and size, so extraction can refuse anything undeclared or larger
//! than declared, and check the free space for the whole checkpoint before writing a byte.
//! metadata.json is written last (its digests are computed while packing), so the
//! manifest gives it an upper bound instead of an exact size.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::image::error::ImageError;
use crate::image::metadata::{Metadata, METADATA_FILE};
use crate::image::walk::{Entry, Kind};

/// File name of the manifest, the first entry of an archive.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Manifest version written (and the newest read).
pub const MANIFEST_VERSION: u32 = 1;
/// Largest manifest read into memory.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Largest metadata.json accepted from any archive, manifest or not.
pub const MAX_METADATA_BYTES: u64 = 64 << 20;
/// Slack added to the metadata.json bound for what is recorded after the estimate.
const METADATA_SLACK: u64 = 64 << 10;
/// Bytes per file entry of metadata.json's `files` map, besides twice the name.
const METADATA_PER_FILE: u64 = 256;

/// Type of a manifest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// One entry of the archive, as declared by the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// '/'-joined path relative to the checkpoint root.
    pub path: String,
    /// File or directory.
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// Size in bytes (0 for directories); an upper bound when `size_is_limit`.
    #[serde(default)]
    pub size: u64,
    /// `size` bounds the entry rather than giving it exactly (metadata.json, written last).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub size_is_limit: bool,
}

/// The manifest of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`] of the writer.
    pub manifest_version: u32,
    /// Every entry after the manifest, in archive order.
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// The manifest of walked `entries`, plus a trailing metadata.json of at most
    /// `metadata_limit` bytes when given.
    pub(crate) fn of(entries: &[Entry], metadata_limit: Option<u64>) -> Manifest {
        let mut out: Vec<ManifestEntry> = entries
            .iter()
            .map(|e| ManifestEntry {
                path: e.rel.clone(),
                kind: match e.kind {
                    Kind::Dir => EntryType::Dir,
                    Kind::File => EntryType::File,
                },
                size: e.size,
                size_is_limit: false,
            })
            .collect();
        if let Some(limit) = metadata_limit {
            out.push(ManifestEntry {
                path: METADATA_FILE.into(),
                kind: EntryType::File,
                size: limit,
                size_is_limit: true,
            });
        }
        Manifest {
            manifest_version: MANIFEST_VERSION,
            entries: out,
        }
    }

    /// The manifest as written into the archive; `out` names the archive in errors.
    pub fn to_bytes(&self, out: &Path) -> Result<Vec<u8>, ImageError> {
        serde_json::to_vec(self).map_err(|e| ImageError::io(out, std::io::Error::other(e)))
    }

    /// Parses and checks a manifest read from `archive`: version first, then that every
    /// path is relative, `..`-free and listed once, and that the sizes add up.
    pub fn parse(archive: &Path, bytes: &[u8]) -> Result<Manifest, ImageError> {
        let bad = |detail: String| ImageError::BadManifest {
            archive: archive.to_path_buf(),
            detail,
        };
        #[derive(Deserialize)]
        struct Version {
            manifest_version: u32,
        }
        let v: Version = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("no readable manifest_version: {e}")))?;
        if v.manifest_version > MANIFEST_VERSION || v.manifest_version == 0 {
            return Err(ImageError::NewerFormat {
                path: archive.join(MANIFEST_FILE),
                found: v.manifest_version,
                supported: MANIFEST_VERSION,
            });
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let mut seen = BTreeSet::new();
        for e in &m.entries {
            if !is_clean_path(&e.path) {
                return Err(ImageError::unsafe_entry(
                    &e.path,
                    "the manifest lists a path that is empty, absolute or has '.' or '..' components",
                ));
            }
            if !seen.insert(e.path.as_str()) {
                return Err(bad(format!("{:?} is listed twice", e.path)));
            }
            if e.kind == EntryType::Dir && e.size != 0 {
                return Err(bad(format!("directory {:?} has a size", e.path)));
            }
            if e.path == METADATA_FILE && e.size > MAX_METADATA_BYTES {
                return Err(bad(format!(
                    "metadata.json is declared as {} bytes, more than the {MAX_METADATA_BYTES} accepted",
                    e.size
                )));
            }
        }
        m.declared_bytes()
            .ok_or_else(|| bad("the declared sizes overflow".into()))?;
        Ok(m)
    }

    /// Sum of the declared sizes (bounds included); `None` on overflow.
    pub fn declared_bytes(&self) -> Option<u64> {
        self.entries
            .iter()
            .try_fold(0u64, |acc, e| acc.checked_add(e.size))
    }

    /// Bytes the entries take on disk: each file rounded up to 4 KiB, plus 4 KiB per entry.
    pub fn disk_bytes(&self) -> u64 {
        self.entries.iter().fold(0u64, |acc, e| {
            acc.saturating_add(round_up(e.size))
                .saturating_add(BLOCK_4K)
        })
    }

    /// Checks that metadata.json's file list agrees with the manifest: the same files
    /// (metadata.json aside) with the same sizes.
    pub fn check_metadata(&self, archive: &Path, md: &Metadata) -> Result<(), ImageError> {
        let mismatch = |entry: &str, reason: String| ImageError::ManifestMismatch {
            archive: archive.to_path_buf(),
            entry: entry.to_string(),
            reason,
        };
        let files: BTreeMap<&str, u64> = self
            .entries
            .iter()
            .filter(|e| e.kind == EntryType::File && e.path != METADATA_FILE)
            .map(|e| (e.path.as_str(), e.size))
            .collect();
        for (name, d) in &md.files {
            match files.get(name.as_str()) {
                None => {
                    return Err(mismatch(
                        name,
                        "metadata.json lists it but the manifest does not".into(),
                    ))
                }
                Some(size) if *size != d.size => {
                    return Err(mismatch(
                        name,
                        format!(
                            "metadata.json records {} bytes, the manifest {size}",
                            d.size
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(name) = files.keys().find(|n| !md.files.contains_key(**n)) {
            return Err(mismatch(
                name,
                "the manifest lists it but metadata.json does not".into(),
            ));
        }
        Ok(())
    }
}

/// Upper bound of metadata.json's size: `base` (its size without the file list) plus room
/// for each of `names`.
pub fn metadata_limit<'a>(base: u64, names: impl Iterator<Item = &'a str>) -> u64 {
    names
        .fold(base.saturating_add(METADATA_SLACK), |acc, n| {
            acc.saturating_add(METADATA_PER_FILE + 2 * n.len() as u64)
        })
        .min(MAX_METADATA_BYTES)
}

const BLOCK_4K: u64 = 4096;

/// `size` rounded up to whole 4 KiB blocks.
pub fn round_up(size: u64) -> u64 {
    size.div_ceil(BLOCK_4K).saturating_mul(BLOCK_4K)
}

/// Whether `p` is a non-empty, relative, '/'-joined path of plain components.
fn is_clean_path(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}
