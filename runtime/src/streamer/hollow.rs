//! Zero pages left out of a full streamed restore. Where a task's page image has an
//! all-zero chunk (recorded at dump time, never stored) over anonymous private memory,
//! CRIU is served a pagemap without those pages and a page image without their bytes, so
//! it never writes them: the restored mapping reads zeros there, as untouched anonymous
//! memory does (a child's inherited pages without an entry of its own are dropped by
//! CRIU, `restore_priv_vma_content`). File-backed, shared and special mappings keep every
//! page: a page missing there would show the file's bytes.

use std::io;
use std::sync::Arc;

use super::decode::Decoder;
use super::index::{ChunkRef, Codec, StreamIndex, StreamedFile};
use super::source::ShardSource;
use crate::criu::pagemap::{self, Pagemap, Range, PAGE_SIZE};

/// Magic of `mm-PID.img` (after the common one).
const MM_MAGIC: u32 = 0x5749_2820;
/// CRIU's VMA status bits (`criu/include/image.h`) that a mapping may have for its zero
/// pages to be left out: a regular mapping, possibly stack or heap, anonymous and private.
const VMA_AREA_REGULAR: u32 = 1 << 0;
const VMA_AREA_STACK: u32 = 1 << 1;
const VMA_AREA_HEAP: u32 = 1 << 5;
const VMA_ANON_PRIVATE: u32 = 1 << 9;

/// The subset of CRIU's `mm_entry` read here.
#[derive(Clone, PartialEq, prost::Message)]
struct MmEntry {
    #[prost(message, repeated, tag = "14")]
    vmas: Vec<VmaEntry>,
}

/// The subset of CRIU's `vma_entry` read here.
#[derive(Clone, PartialEq, prost::Message)]
struct VmaEntry {
    #[prost(uint64, required, tag = "1")]
    start: u64,
    #[prost(uint64, required, tag = "2")]
    end: u64,
    #[prost(uint32, required, tag = "7")]
    status: u32,
}

impl VmaEntry {
    fn anonymous_private(&self) -> bool {
        let allowed = VMA_AREA_REGULAR | VMA_AREA_STACK | VMA_AREA_HEAP | VMA_ANON_PRIVATE;
        self.status & VMA_AREA_REGULAR != 0
            && self.status & VMA_ANON_PRIVATE != 0
            && self.status & !allowed == 0
    }
}

/// A task's pagemap and page image with its zero pages over anonymous memory left out.
#[derive(Debug)]
pub(super) struct Hollowed {
    /// The pagemap image CRIU is served instead.
    pub pagemap: Vec<u8>,
    /// The page image to serve instead (its zero chunks shortened or gone).
    pub pages: StreamedFile,
    /// Bytes left out.
    pub left_out: u64,
}

/// The task a `pagemap-PID.img` belongs to (shmem pagemaps are not tasks').
pub(super) fn task_of(name: &str) -> Option<u32> {
    name.strip_prefix("pagemap-")?
        .strip_suffix(".img")?
        .parse()
        .ok()
}

/// What to serve for task pagemap `name` instead, if any of its pages can be left out.
pub(super) fn hollow(
    index: &StreamIndex,
    shards: &Arc<dyn ShardSource>,
    name: &str,
) -> io::Result<Option<Hollowed>> {
    let Some(pid) = task_of(name) else {
        return Ok(None);
    };
    let (Some(map_file), Some(mm_file)) = (index.file(name), index.file(&format!("mm-{pid}.img")))
    else {
        return Ok(None);
    };
    let map = Pagemap::parse(&read_whole(map_file, index.codec, shards)?)?;
    if map.has_parent_pages() {
        return Ok(None);
    }
    let Some(pages) = index.file(&format!("pages-{}.img", map.pages_id)) else {
        return Ok(None);
    };
    let vmas = parse_mm(&read_whole(mm_file, index.codec, shards)?)?;
    let (ranges, gaps) = leave_out(&map.ranges, &zero_spans(pages), &vmas);
    let left_out: u64 = gaps.iter().map(|(a, b)| b - a).sum();
    if left_out == 0 {
        return Ok(None);
    }
    Ok(Some(Hollowed {
        pagemap: pagemap::encode(map.pages_id, &ranges),
        pages: shorten(pages, &gaps)?,
        left_out,
    }))
}

/// A small image decoded whole.
fn read_whole(
    f: &StreamedFile,
    codec: Codec,
    shards: &Arc<dyn ShardSource>,
) -> io::Result<Vec<u8>> {
    let mut decoder = Decoder::new(codec)?;
    let mut out = Vec::with_capacity(f.size as usize);
    let mut buf = Vec::new();
    for c in &f.chunks {
        decoder.decode(c, shards.as_ref(), &mut buf)?;
        out.extend_from_slice(&buf);
    }
    Ok(out)
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The VMAs of an `mm-PID.img`, in address order.
fn parse_mm(bytes: &[u8]) -> io::Result<Vec<VmaEntry>> {
    use prost::Message;
    let mut rest = pagemap::image_body(bytes, MM_MAGIC, "mm")?;
    let body = pagemap::next_message(&mut rest, "mm")?.ok_or_else(|| bad("mm image: no entry"))?;
    let mut vmas = MmEntry::decode(body)
        .map_err(|e| bad(format!("mm image: {e}")))?
        .vmas;
    vmas.sort_by_key(|v| v.start);
    Ok(vmas)
}

/// The page image's all-zero chunks as byte spans (neighbours joined), trimmed to whole
/// pages.
fn zero_spans(pages: &StreamedFile) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut at = 0u64;
    for c in &pages.chunks {
        let end = at + c.len();
        if matches!(c, ChunkRef::Zero { .. }) {
            let (a, b) = (at.next_multiple_of(PAGE_SIZE), end / PAGE_SIZE * PAGE_SIZE);
            match out.last_mut() {
                Some(last) if last.1 == a => last.1 = b,
                _ if a < b => out.push((a, b)),
                _ => {}
            }
        }
        at = end;
    }
    out
}

/// The pagemap's ranges without the pages that are zero (`zeros`: spans of the page
/// image) and in anonymous private `vmas`, and the page image's spans so left out.
fn leave_out(
    ranges: &[Range],
    zeros: &[(u64, u64)],
    vmas: &[VmaEntry],
) -> (Vec<Range>, Vec<(u64, u64)>) {
    let mut kept = Vec::new();
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    for r in ranges {
        if !r.present() {
            kept.push(*r);
            continue;
        }
        let (start, end) = (r.offset, r.offset + r.bytes());
        // Address spans of this range to leave out, in order.
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &(za, zb) in zeros.iter().filter(|(za, zb)| *za < end && *zb > start) {
            let a = r.vaddr + (za.max(start) - start);
            let b = r.vaddr + (zb.min(end) - start);
            for v in vmas.iter().filter(|v| v.start < b && v.end > a) {
                let (va, vb) = (a.max(v.start), b.min(v.end));
                if v.anonymous_private() && va < vb {
                    out.push((va, vb));
                }
            }
        }
        let mut at = r.vaddr;
        for (a, b) in out {
            if a > at {
                kept.push(piece(r, at, a));
            }
            let gap = (r.offset + (a - r.vaddr), r.offset + (b - r.vaddr));
            match gaps.last_mut() {
                Some(last) if last.1 == gap.0 => last.1 = gap.1,
                _ => gaps.push(gap),
            }
            at = b;
        }
        if at < r.vaddr + r.bytes() {
            kept.push(piece(r, at, r.vaddr + r.bytes()));
        }
    }
    (kept, gaps)
}

/// The part [a, b) of present range `r`.
fn piece(r: &Range, a: u64, b: u64) -> Range {
    Range {
        vaddr: a,
        nr_pages: ((b - a) / PAGE_SIZE) as u32,
        flags: r.flags,
        offset: r.offset + (a - r.vaddr),
    }
}

/// `pages` without the byte spans `gaps` (each inside zero chunks).
fn shorten(pages: &StreamedFile, gaps: &[(u64, u64)]) -> io::Result<StreamedFile> {
    let mut chunks = Vec::with_capacity(pages.chunks.len());
    let mut at = 0u64;
    let mut removed = 0u64;
    for c in &pages.chunks {
        let end = at + c.len();
        let inside: u64 = gaps
            .iter()
            .map(|&(a, b)| b.min(end).saturating_sub(a.max(at)))
            .sum();
        match c {
            ChunkRef::Zero { len } if inside < *len => {
                chunks.push(ChunkRef::Zero { len: len - inside })
            }
            ChunkRef::Zero { .. } => {}
            _ if inside > 0 => return Err(bad("a left-out page outside a zero chunk")),
            _ => chunks.push(c.clone()),
        }
        removed += inside;
        at = end;
    }
    Ok(StreamedFile {
        name: pages.name.clone(),
        size: pages.size - removed,
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn vma(start: u64, end: u64, status: u32) -> VmaEntry {
        VmaEntry { start, end, status }
    }

    fn range(vaddr: u64, bytes: u64, offset: u64) -> Range {
        Range {
            vaddr,
            nr_pages: (bytes / PAGE_SIZE) as u32,
            flags: pagemap::PE_PRESENT,
            offset,
        }
    }

    #[test]
    fn only_zero_pages_of_anonymous_private_memory_are_left_out() {
        // Two ranges: 8 MiB of anonymous memory, then 8 MiB of a private file mapping;
        // the page image's chunks (4 MiB): data, zero, zero, data.
        let anon = VMA_AREA_REGULAR | VMA_ANON_PRIVATE;
        let file = VMA_AREA_REGULAR | (1 << 6);
        let vmas = [
            vma(0x1000_0000, 0x1000_0000 + 8 * MIB, anon),
            vma(0x2000_0000, 0x2000_0000 + 8 * MIB, file),
        ];
        let ranges = [
            range(0x1000_0000, 8 * MIB, 0),
            range(0x2000_0000, 8 * MIB, 8 * MIB),
        ];
        let zeros = [(4 * MIB, 12 * MIB)];
        let (kept, gaps) = leave_out(&ranges, &zeros, &vmas);
        assert_eq!(gaps, vec![(4 * MIB, 8 * MIB)], "only the anonymous zeros");
        assert_eq!(
            kept,
            vec![
                range(0x1000_0000, 4 * MIB, 0),
                range(0x2000_0000, 8 * MIB, 8 * MIB)
            ]
        );
        let pages = StreamedFile {
            name: "pages-1.img".into(),
            size: 16 * MIB,
            chunks: vec![
                ChunkRef::Raw {
                    shard: 0,
                    offset: 0,
                    len: 4 * MIB,
                    xxh64: 1,
                },
                ChunkRef::Zero { len: 4 * MIB },
                ChunkRef::Zero { len: 4 * MIB },
                ChunkRef::Raw {
                    shard: 0,
                    offset: 4 * MIB,
                    len: 4 * MIB,
                    xxh64: 2,
                },
            ],
        };
        assert_eq!(zero_spans(&pages), zeros.to_vec());
        let short = shorten(&pages, &gaps).expect("shorten");
        assert_eq!(short.size, 12 * MIB);
        assert_eq!(short.chunks.len(), 3, "the anonymous zero chunk is gone");
        assert_eq!(short.chunks[1], ChunkRef::Zero { len: 4 * MIB });
    }

    #[test]
    fn a_zero_span_across_a_mapping_boundary_is_cut_at_it() {
        let anon = VMA_AREA_REGULAR | VMA_ANON_PRIVATE;
        // One present range over two anonymous VMAs with a special one between.
        let vmas = [
            vma(0x1000_0000, 0x1000_0000 + 2 * MIB, anon),
            vma(
                0x1000_0000 + 2 * MIB,
                0x1000_0000 + 3 * MIB,
                anon | (1 << 13),
            ),
            vma(
                0x1000_0000 + 3 * MIB,
                0x1000_0000 + 8 * MIB,
                anon | VMA_AREA_HEAP,
            ),
        ];
        let ranges = [range(0x1000_0000, 8 * MIB, 0)];
        let (kept, gaps) = leave_out(&ranges, &[(MIB, 5 * MIB)], &vmas);
        assert_eq!(gaps, vec![(MIB, 2 * MIB), (3 * MIB, 5 * MIB)]);
        assert_eq!(
            kept,
            vec![
                range(0x1000_0000, MIB, 0),
                range(0x1000_0000 + 2 * MIB, MIB, 2 * MIB),
                range(0x1000_0000 + 5 * MIB, 3 * MIB, 5 * MIB),
            ]
        );
    }

    #[test]
    fn the_rewritten_pagemap_reads_back() {
        let ranges = vec![range(0x1000_0000, MIB, 0), range(0x3000_0000, 2 * MIB, MIB)];
        let back = Pagemap::parse(&pagemap::encode(7, &ranges)).expect("parse");
        assert_eq!(back.pages_id, 7);
        assert_eq!(back.ranges, ranges);
    }

    #[test]
    fn an_mm_image_gives_its_vmas() {
        use prost::Message;
        let mm = MmEntry {
            vmas: vec![vma(0x2000, 0x3000, 3), vma(0x1000, 0x2000, 5)],
        };
        let body = mm.encode_to_vec();
        let mut bytes = 0x5456_4319u32.to_le_bytes().to_vec();
        bytes.extend(MM_MAGIC.to_le_bytes());
        bytes.extend((body.len() as u32).to_le_bytes());
        bytes.extend(body);
        let vmas = parse_mm(&bytes).expect("parse");
        assert_eq!(
            vmas.iter().map(|v| v.start).collect::<Vec<_>>(),
            [0x1000, 0x2000]
        );
        assert!(parse_mm(&bytes[..10]).is_err());
    }
}
