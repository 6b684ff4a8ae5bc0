//! `metadata.json`: what a checkpoint holds and how it was made.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::criu::options::CriuOpts;
use crate::image::error::ImageError;
use crate::process::state::ProcessState;

/// Current checkpoint format version; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the metadata inside a checkpoint directory.
pub const METADATA_FILE: &str = "metadata.json";

/// What was checkpointed: `process`, or the kind a plugin owns (`runc`, ...). A name,
/// not an enum, so that a plugin adds its kind without touching the core; metadata.json
/// stores it as that string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CheckpointKind(Cow<'static, str>);

impl CheckpointKind {
    /// A plain process tree, the engine's own kind.
    pub const PROCESS: CheckpointKind = CheckpointKind::named("process");

    /// The kind called `name` (plugins declare theirs as constants).
    pub const fn named(name: &'static str) -> Self {
        Self(Cow::Borrowed(name))
    }

    /// Its name, as metadata.json and `cedana features` show it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CheckpointKind {
    fn default() -> Self {
        Self::PROCESS
    }
}

impl fmt::Debug for CheckpointKind {
    // Capitalised (`Runc`), as the enum this type replaced printed it, so messages and
    // logs that show a kind with `{:?}` read as before.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        if let Some(first) = chars.next() {
            write!(f, "{}", first.to_uppercase())?;
        }
        f.write_str(chars.as_str())
    }
}

impl fmt::Display for CheckpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Host a checkpoint was taken on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostInfo {
    /// Host name.
    pub hostname: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Machine architecture (`uname -m`).
    pub arch: String,
}

/// Size and digest of one file of a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256.
    pub sha256: String,
}

/// Sizes of a checkpoint, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sizes {
    /// Sum of the CRIU image files.
    pub images_bytes: u64,
    /// Size of the packed archive, when packed.
    pub archive_bytes: Option<u64>,
}

/// CRIU's statistics of one dump or restore (its `stats-dump` / `stats-restore`).
/// Times are microseconds, as CRIU counts them; pages are 4 KiB pages on x86.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CriuStats {
    /// The dump's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dump: Option<DumpStats>,
    /// The restore's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStats>,
}

/// CRIU's `dump_stats_entry`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DumpStats {
    /// Time spent freezing the tree.
    pub freezing_time_us: u64,
    /// Time the tree stayed frozen (what the application felt).
    pub frozen_time_us: u64,
    /// Time spent collecting memory.
    pub memdump_time_us: u64,
    /// Time spent writing memory out.
    pub memwrite_time_us: u64,
    /// Pages looked at.
    pub pages_scanned: u64,
    /// Pages left out because a parent image had them.
    pub pages_skipped_parent: u64,
    /// Pages written.
    pub pages_written: u64,
    /// Pages left for lazy restore.
    pub pages_lazy: u64,
}

/// CRIU's `restore_stats_entry`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestoreStats {
    /// Pages compared with the parent's.
    pub pages_compared: u64,
    /// Pages skipped as copy-on-write shared.
    pub pages_skipped_cow: u64,
    /// Time spent forking the tree.
    pub forking_time_us: u64,
    /// Time the whole restore took.
    pub restore_time_us: u64,
    /// Pages restored.
    pub pages_restored: u64,
}

/// How a checkpoint's images were stored (dumps since streaming became the default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Packing {
    /// Shards the images were streamed into; 0: not streamed (an archive or a directory
    /// of image files).
    pub streams: u32,
    /// Why the dump did not stream, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_streamed: Option<String>,
    /// Why CRIU's images waited on disk, not in memory, before they were packed into
    /// the archive (`checkpoint.staging_dir`), when they did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staged_on_disk: Option<String>,
}

/// Contents of `metadata.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// Format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// What was checkpointed.
    pub kind: CheckpointKind,
    /// Checkpoint name.
    pub name: String,
    /// When the dump finished (RFC 3339).
    pub created_at: String,
    /// Host the dump ran on.
    pub host: HostInfo,
    /// CRIU version that made the images.
    pub criu_version: String,
    /// CRIU options the dump used; restore applies the matching ones.
    pub criu_options: CriuOpts,
    /// The process tree as seen before the dump.
    pub process: ProcessState,
    /// Milliseconds spent per phase (e.g. `criu_dump`, `pack`).
    pub timings_ms: BTreeMap<String, u64>,
    /// Sizes.
    pub sizes: Sizes,
    /// Every file of the checkpoint except metadata.json, by relative path.
    pub files: BTreeMap<String, FileDigest>,
    /// How the images were stored; absent in checkpoints older than the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packing: Option<Packing>,
    /// CRIU's own figures of the dump (`stats-dump`), when CRIU wrote them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criu_stats: Option<CriuStats>,
    /// What plugins record (`container`, `containerd`, ...), each under its own key at
    /// the top level of metadata.json; read and written through [`MetadataSection`] by
    /// the plugin that owns it, kept as is by everyone else.
    #[serde(flatten)]
    pub sections: BTreeMap<String, serde_json::Value>,
}

/// A plugin's part of metadata.json, stored under [`MetadataSection::KEY`].
pub trait MetadataSection: Serialize + DeserializeOwned {
    /// Its key in metadata.json.
    const KEY: &'static str;
}

impl Metadata {
    /// The section `T`, if the checkpoint has one; a section that does not parse is a
    /// damaged checkpoint.
    pub fn section<T: MetadataSection>(&self) -> Result<Option<T>, ImageError> {
        // `null` is what an absent optional section looked like to older readers.
        self.sections
            .get(T::KEY)
            .filter(|v| !v.is_null())
            .map(|v| {
                T::deserialize(v).map_err(|e| ImageError::Metadata {
                    path: PathBuf::from(METADATA_FILE),
                    detail: format!("{}: {e}", T::KEY),
                })
            })
            .transpose()
    }

    /// Sets the section `T`, replacing any earlier one.
    pub fn set_section<T: MetadataSection>(&mut self, section: &T) -> Result<(), ImageError> {
        let value = serde_json::to_value(section).map_err(|e| ImageError::Metadata {
            path: PathBuf::from(METADATA_FILE),
            detail: format!("{}: {e}", T::KEY),
        })?;
        self.sections.insert(T::KEY.to_string(), value);
        Ok(())
    }
}
