//! CRIU's statistics files (`stats-dump`, `stats-restore`) read into `CriuStats`.
//!
//! CRIU writes them into its work dir as it finishes (after the post-dump notification),
//! as an image: a 4-byte common or service magic, the 4-byte stats magic, then one
//! protobuf message prefixed with its u32 length (`pb_write_one`). The messages are
//! hand-written for the fields we use, as in `rpc.rs` (field numbers of CRIU 4.1.1's
//! `images/stats.proto`; the others are skipped when decoding).

use std::path::Path;

use prost::Message;

use crate::image::metadata::{CriuStats, DumpStats, Metadata, RestoreStats};

/// File name of the dump's statistics in CRIU's work dir.
pub const DUMP_STATS_FILE: &str = "stats-dump";
/// File name of the restore's statistics in CRIU's work dir.
pub const RESTORE_STATS_FILE: &str = "stats-restore";

/// `IMG_COMMON_MAGIC`.
const COMMON_MAGIC: u32 = 0x5456_4319;
/// `IMG_SERVICE_MAGIC`.
const SERVICE_MAGIC: u32 = 0x5510_5940;
/// `STATS_MAGIC`.
const STATS_MAGIC: u32 = 0x5709_3306;

/// `dump_stats_entry` (times in microseconds).
#[derive(Clone, PartialEq, Message)]
pub struct DumpStatsEntry {
    #[prost(uint32, optional, tag = "1")]
    pub freezing_time: Option<u32>,
    #[prost(uint32, optional, tag = "2")]
    pub frozen_time: Option<u32>,
    #[prost(uint32, optional, tag = "3")]
    pub memdump_time: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub memwrite_time: Option<u32>,
    #[prost(uint64, optional, tag = "5")]
    pub pages_scanned: Option<u64>,
    #[prost(uint64, optional, tag = "6")]
    pub pages_skipped_parent: Option<u64>,
    #[prost(uint64, optional, tag = "7")]
    pub pages_written: Option<u64>,
    #[prost(uint64, optional, tag = "9")]
    pub pages_lazy: Option<u64>,
}

/// `restore_stats_entry` (times in microseconds).
#[derive(Clone, PartialEq, Message)]
pub struct RestoreStatsEntry {
    #[prost(uint64, optional, tag = "1")]
    pub pages_compared: Option<u64>,
    #[prost(uint64, optional, tag = "2")]
    pub pages_skipped_cow: Option<u64>,
    #[prost(uint32, optional, tag = "3")]
    pub forking_time: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub restore_time: Option<u32>,
    #[prost(uint64, optional, tag = "5")]
    pub pages_restored: Option<u64>,
}

/// `stats_entry`.
#[derive(Clone, PartialEq, Message)]
pub struct StatsEntry {
    #[prost(message, optional, tag = "1")]
    pub dump: Option<DumpStatsEntry>,
    #[prost(message, optional, tag = "2")]
    pub restore: Option<RestoreStatsEntry>,
}

/// Why a statistics file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// Shorter than its header, or its message is cut off.
    #[error("truncated ({0} bytes)")]
    Truncated(usize),
    /// Not a CRIU stats image.
    #[error("bad magic {0:#010x} {1:#010x}")]
    BadMagic(u32, u32),
    /// The message does not decode.
    #[error("cannot decode: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Decodes the bytes of a stats image.
pub fn parse(bytes: &[u8]) -> Result<CriuStats, StatsError> {
    let word = |i: usize| -> Result<u32, StatsError> {
        let b = bytes
            .get(i..i + 4)
            .ok_or(StatsError::Truncated(bytes.len()))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (head, magic) = (word(0)?, word(4)?);
    if !matches!(head, COMMON_MAGIC | SERVICE_MAGIC) || magic != STATS_MAGIC {
        return Err(StatsError::BadMagic(head, magic));
    }
    let len = word(8)? as usize;
    let body = bytes
        .get(12..12 + len)
        .ok_or(StatsError::Truncated(bytes.len()))?;
    Ok(convert(StatsEntry::decode(body)?))
}

fn convert(e: StatsEntry) -> CriuStats {
    let us = |t: Option<u32>| u64::from(t.unwrap_or(0));
    CriuStats {
        dump: e.dump.map(|d| DumpStats {
            freezing_time_us: us(d.freezing_time),
            frozen_time_us: us(d.frozen_time),
            memdump_time_us: us(d.memdump_time),
            memwrite_time_us: us(d.memwrite_time),
            pages_scanned: d.pages_scanned.unwrap_or(0),
            pages_skipped_parent: d.pages_skipped_parent.unwrap_or(0),
            pages_written: d.pages_written.unwrap_or(0),
            pages_lazy: d.pages_lazy.unwrap_or(0),
        }),
        restore: e.restore.map(|r| RestoreStats {
            pages_compared: r.pages_compared.unwrap_or(0),
            pages_skipped_cow: r.pages_skipped_cow.unwrap_or(0),
            forking_time_us: us(r.forking_time),
            restore_time_us: us(r.restore_time),
            pages_restored: r.pages_restored.unwrap_or(0),
        }),
    }
}

/// Reads `file` (`stats-dump` or `stats-restore`) from CRIU's work dir. Statistics are
/// a report, never a reason to fail: a missing file is `None`, a bad one is logged.
pub fn read(work_dir: &Path, file: &str) -> Option<CriuStats> {
    let path = work_dir.join(file);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read CRIU's statistics: {e}");
            return None;
        }
    };
    match parse(&bytes) {
        Ok(stats) => Some(stats),
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot parse CRIU's statistics: {e}");
            None
        }
    }
}

/// The dump's statistics from CRIU's work dir, if it wrote them.
pub fn read_dump_stats(work_dir: &Path) -> Option<CriuStats> {
    read(work_dir, DUMP_STATS_FILE)
}

/// Adds the restore's statistics from CRIU's work dir, if it wrote them, beside the
/// dump's that the checkpoint recorded.
pub fn add_restore_stats(metadata: &mut Metadata, work_dir: &Path) {
    if let Some(restore) = read(work_dir, RESTORE_STATS_FILE).and_then(|s| s.restore) {
        metadata
            .criu_stats
            .get_or_insert_with(Default::default)
            .restore = Some(restore);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(head: u32, entry: &StatsEntry) -> Vec<u8> {
        let body = entry.encode_to_vec();
        let mut out = Vec::new();
        out.extend_from_slice(&head.to_le_bytes());
        out.extend_from_slice(&STATS_MAGIC.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn dump_stats_decode() {
        let entry = StatsEntry {
            dump: Some(DumpStatsEntry {
                freezing_time: Some(1_500),
                frozen_time: Some(42_000),
                memdump_time: Some(7),
                memwrite_time: Some(8),
                pages_scanned: Some(1000),
                pages_skipped_parent: Some(0),
                pages_written: Some(600),
                pages_lazy: Some(0),
            }),
            restore: None,
        };
        let stats = parse(&image(SERVICE_MAGIC, &entry)).expect("parse");
        let d = stats.dump.expect("dump");
        assert_eq!(d.frozen_time_us, 42_000);
        assert_eq!(d.pages_written, 600);
        assert!(stats.restore.is_none());
        assert!(parse(&image(COMMON_MAGIC, &entry)).is_ok());
    }

    #[test]
    fn bad_images_are_errors() {
        assert!(matches!(parse(&[1, 2]), Err(StatsError::Truncated(2))));
        let mut bad = image(SERVICE_MAGIC, &StatsEntry::default());
        bad[4] ^= 0xff;
        assert!(matches!(parse(&bad), Err(StatsError::BadMagic(..))));
        let mut cut = image(SERVICE_MAGIC, &StatsEntry::default());
        cut[8] = 200;
        assert!(matches!(parse(&cut), Err(StatsError::Truncated(_))));
    }

    #[test]
    fn a_missing_file_is_none() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(read_dump_stats(dir.path()).is_none());
    }
}
