//! How much an extraction may write, decided before each entry's first byte: what the
//! archive's manifest declares (checked against the free space once, up front), or, for
//! older archives without a manifest, what the destination's free space allows, entry by
//! entry from the tar header, keeping a reserve.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::manifest::{round_up, EntryType, Manifest, ManifestEntry, MAX_METADATA_BYTES};
use crate::image::error::ImageError;
use crate::image::metadata::METADATA_FILE;

/// Free space always left on the destination, on top of what a manifest declares.
const FIXED_RESERVE: u64 = 1 << 20;
/// Largest reserve kept for an archive without a manifest.
const MAX_RESERVE: u64 = 256 << 20;
/// Bytes charged per entry for its inode and directory slot.
const PER_ENTRY: u64 = 4096;

/// Free and total bytes of the filesystem holding `dir` (for an unprivileged user).
pub(super) fn space(dir: &Path) -> Result<(u64, u64), ImageError> {
    let s = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| ImageError::io(dir, std::io::Error::from(e)))?;
    let frag = s.fragment_size() as u64;
    Ok((
        (s.blocks_available() as u64).saturating_mul(frag),
        (s.blocks() as u64).saturating_mul(frag),
    ))
}

/// What an extraction may still write.
pub(super) struct Budget {
    archive: PathBuf,
    dest: PathBuf,
    mode: Mode,
    metadata_seen: bool,
}

enum Mode {
    /// The manifest's declarations, by path, and the paths extracted so far.
    Declared {
        manifest: Manifest,
        by_path: BTreeMap<String, ManifestEntry>,
        seen: BTreeSet<String>,
    },
    /// No manifest: bounded by the free space found at the start, less a reserve.
    Free { limit: u64, used: u64, reserve: u64 },
}

impl Budget {
    /// A budget from the archive's manifest; refuses it at once when the destination
    /// lacks the space for everything declared, or (with `require_metadata`) when it
    /// declares no metadata.json.
    pub(super) fn declared(
        archive: &Path,
        dest: &Path,
        manifest: Manifest,
        require_metadata: bool,
    ) -> Result<Budget, ImageError> {
        let has_metadata = manifest
            .entries
            .iter()
            .any(|e| e.path == METADATA_FILE && e.kind == EntryType::File);
        if require_metadata && !has_metadata {
            return Err(ImageError::ArchiveWithoutMetadata {
                archive: archive.to_path_buf(),
            });
        }
        let needed = manifest.disk_bytes().saturating_add(FIXED_RESERVE);
        let (available, _) = space(dest)?;
        if needed > available {
            return Err(ImageError::NoSpace {
                dest: dest.to_path_buf(),
                needed,
                available,
            });
        }
        let by_path = manifest
            .entries
            .iter()
            .map(|e| (e.path.clone(), e.clone()))
            .collect();
        Ok(Budget {
            archive: archive.to_path_buf(),
            dest: dest.to_path_buf(),
            mode: Mode::Declared {
                manifest,
                by_path,
                seen: BTreeSet::new(),
            },
            metadata_seen: false,
        })
    }

    /// A budget for an archive without a manifest: the destination's free space now,
    /// less a reserve of 2% of the filesystem (at least 1 MiB, at most 256 MiB).
    pub(super) fn free(archive: &Path, dest: &Path) -> Result<Budget, ImageError> {
        let (available, total) = space(dest)?;
        let reserve = (total / 50).clamp(FIXED_RESERVE, MAX_RESERVE);
        Ok(Budget {
            archive: archive.to_path_buf(),
            dest: dest.to_path_buf(),
            mode: Mode::Free {
                limit: available.saturating_sub(reserve),
                used: 0,
                reserve,
            },
            metadata_seen: false,
        })
    }

    /// Admits the entry `key` of `size` bytes (from its tar header) before anything of it
    /// is written; returns how many bytes it may write.
    pub(super) fn admit(&mut self, key: &str, is_dir: bool, size: u64) -> Result<u64, ImageError> {
        let mismatch = |reason: String| ImageError::ManifestMismatch {
            archive: self.archive.clone(),
            entry: key.to_string(),
            reason,
        };
        if key == METADATA_FILE && !is_dir {
            if size > MAX_METADATA_BYTES {
                return Err(ImageError::corrupt(
                    &self.archive,
                    format!("metadata.json is {size} bytes, more than the {MAX_METADATA_BYTES} accepted"),
                ));
            }
            self.metadata_seen = true;
        }
        match &mut self.mode {
            Mode::Declared { by_path, seen, .. } => {
                let Some(d) = by_path.get(key) else {
                    return Err(mismatch("the manifest does not list it".into()));
                };
                if (d.kind == EntryType::Dir) != is_dir {
                    return Err(mismatch(format!(
                        "the manifest declares a {:?}, the archive holds a {}",
                        d.kind,
                        if is_dir { "directory" } else { "file" }
                    )));
                }
                if !seen.insert(key.to_string()) {
                    return Err(mismatch("it appears twice in the archive".into()));
                }
                let fits = if d.size_is_limit {
                    size <= d.size
                } else {
                    size == d.size
                };
                if !fits {
                    return Err(mismatch(format!(
                        "its tar header says {size} bytes, the manifest {}{}",
                        if d.size_is_limit { "at most " } else { "" },
                        d.size
                    )));
                }
                Ok(size)
            }
            Mode::Free {
                limit,
                used,
                reserve,
            } => {
                let cost = round_up(size).saturating_add(PER_ENTRY);
                let total = used.saturating_add(cost);
                let (available, _) = space(&self.dest)?;
                let needed = cost.saturating_add(*reserve);
                if total > *limit || needed > available {
                    return Err(ImageError::NoSpace {
                        dest: self.dest.clone(),
                        needed: total.max(needed),
                        available,
                    });
                }
                *used = total;
                Ok(size)
            }
        }
    }

    /// Ends the extraction: every declared entry must have been seen, and (with
    /// `require_metadata`) metadata.json; returns the manifest, if the archive had one.
    pub(super) fn finish(self, require_metadata: bool) -> Result<Option<Manifest>, ImageError> {
        if require_metadata && !self.metadata_seen {
            return Err(ImageError::ArchiveWithoutMetadata {
                archive: self.archive,
            });
        }
        match self.mode {
            Mode::Declared { manifest, seen, .. } => {
                if let Some(e) = manifest.entries.iter().find(|e| !seen.contains(&e.path)) {
                    return Err(ImageError::ManifestMismatch {
                        archive: self.archive,
                        entry: e.path.clone(),
                        reason: "the manifest declares it but the archive ends without it; the archive is truncated".into(),
                    });
                }
                Ok(Some(manifest))
            }
            Mode::Free { .. } => Ok(None),
        }
    }
}
