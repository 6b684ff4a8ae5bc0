//! CRIU's pagemap images (`pagemap-PID.img`): which virtual ranges of a task have pages,
//! whether they are lazy, and where their bytes sit in `pages-ID.img`. A page server of
//! our own needs this to answer lazy-pages' requests, and to know which pages the
//! restorer reads itself (the non-lazy ones).
//!
//! Format: two little-endian u32 magics, then entries, each a u32 length and a protobuf
//! message: one `pagemap_head` (the pages image's id), then `pagemap_entry`s in address
//! order. Present entries' pages follow each other in the pages image.

use std::io;
use std::path::Path;

/// Magic every (non-service) CRIU image starts with.
const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// Magic of pagemap images (task and shmem alike).
const PAGEMAP_MAGIC: u32 = 0x5608_4025;
/// The pages are in the parent checkpoint.
pub const PE_PARENT: u32 = 1 << 0;
/// The pages may be restored lazily.
pub const PE_LAZY: u32 = 1 << 1;
/// The pages are in this checkpoint's pages image.
pub const PE_PRESENT: u32 = 1 << 2;
/// CRIU's page size on every architecture we restore on.
pub const PAGE_SIZE: u64 = 4096;

#[derive(Clone, PartialEq, prost::Message)]
struct PagemapHead {
    #[prost(uint32, required, tag = "1")]
    pages_id: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PagemapEntry {
    #[prost(uint64, required, tag = "1")]
    vaddr: u64,
    #[prost(uint32, required, tag = "2")]
    nr_pages: u32,
    #[prost(bool, optional, tag = "3")]
    in_parent: Option<bool>,
    #[prost(uint32, optional, tag = "4")]
    flags: Option<u32>,
}

/// One range of a task's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First address.
    pub vaddr: u64,
    /// Its length in pages.
    pub nr_pages: u32,
    /// `PE_*` flags (old images' `in_parent` folded in, as CRIU does).
    pub flags: u32,
    /// Where its bytes start in the pages image (meaningful when present).
    pub offset: u64,
}

impl Range {
    /// Its length in bytes.
    pub fn bytes(&self) -> u64 {
        u64::from(self.nr_pages) * PAGE_SIZE
    }

    /// Whether lazy-pages serves it (else the restorer reads it from the pages image).
    pub fn lazy(&self) -> bool {
        self.flags & PE_LAZY != 0
    }

    /// Whether its bytes are in this checkpoint's pages image.
    pub fn present(&self) -> bool {
        self.flags & PE_PRESENT != 0
    }
}

/// A parsed pagemap image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pagemap {
    /// The pages image holding the bytes: `pages-{pages_id}.img`.
    pub pages_id: u32,
    /// Ranges in address order.
    pub ranges: Vec<Range>,
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The messages of a CRIU image of kind `what` after its two magics, the second `magic`.
pub(crate) fn image_body<'a>(bytes: &'a [u8], magic: u32, what: &str) -> io::Result<&'a [u8]> {
    let (magics, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| bad(format!("{what}: shorter than its magic")))?;
    let common = u32::from_le_bytes([magics[0], magics[1], magics[2], magics[3]]);
    let found = u32::from_le_bytes([magics[4], magics[5], magics[6], magics[7]]);
    if common != IMG_COMMON_MAGIC || found != magic {
        return Err(bad(format!(
            "not a {what} image (magic {common:#x} {found:#x})"
        )));
    }
    Ok(rest)
}

/// Splits off the next length-prefixed message of a CRIU image of kind `what`.
pub(crate) fn next_message<'a>(rest: &mut &'a [u8], what: &str) -> io::Result<Option<&'a [u8]>> {
    if rest.is_empty() {
        return Ok(None);
    }
    let (len, tail) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| bad(format!("{what}: truncated entry length")))?;
    let len = u32::from_le_bytes(*len) as usize;
    if tail.len() < len {
        return Err(bad(format!("{what}: truncated entry")));
    }
    let (msg, tail) = tail.split_at(len);
    *rest = tail;
    Ok(Some(msg))
}

impl Pagemap {
    /// Reads `path`.
    pub fn read(path: &Path) -> io::Result<Pagemap> {
        let bytes = std::fs::read(path)?;
        Pagemap::parse(&bytes)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    /// Parses a pagemap image's bytes.
    pub fn parse(bytes: &[u8]) -> io::Result<Pagemap> {
        use prost::Message;
        let mut rest = image_body(bytes, PAGEMAP_MAGIC, "pagemap")?;
        let head = next_message(&mut rest, "pagemap")?.ok_or_else(|| bad("pagemap: no head"))?;
        let head = PagemapHead::decode(head).map_err(|e| bad(format!("pagemap head: {e}")))?;
        let mut ranges = Vec::new();
        let mut offset = 0u64;
        let mut end = 0u64;
        while let Some(msg) = next_message(&mut rest, "pagemap")? {
            let e = PagemapEntry::decode(msg).map_err(|e| bad(format!("pagemap entry: {e}")))?;
            // CRIU's own reading of images older than the flags field.
            let flags = match (e.in_parent, e.flags) {
                (Some(true), _) => PE_PARENT,
                (_, Some(f)) => f,
                (_, None) => PE_PRESENT,
            };
            let r = Range {
                vaddr: e.vaddr,
                nr_pages: e.nr_pages,
                flags,
                offset,
            };
            let last = r
                .vaddr
                .checked_add(r.bytes())
                .ok_or_else(|| bad("pagemap: a range past the end of memory"))?;
            if !r.vaddr.is_multiple_of(PAGE_SIZE) || r.vaddr < end {
                return Err(bad(format!(
                    "pagemap: range at {:#x} is unaligned or out of order",
                    r.vaddr
                )));
            }
            end = last;
            if r.present() {
                offset += r.bytes();
            }
            ranges.push(r);
        }
        Ok(Pagemap {
            pages_id: head.pages_id,
            ranges,
        })
    }

    /// The present range holding `vaddr`, if any.
    pub fn find(&self, vaddr: u64) -> Option<&Range> {
        let i = self
            .ranges
            .partition_point(|r| r.vaddr + r.bytes() <= vaddr);
        self.ranges
            .get(i)
            .filter(|r| r.vaddr <= vaddr && r.present())
    }

    /// Whether some range's pages are in a parent checkpoint.
    pub fn has_parent_pages(&self) -> bool {
        self.ranges.iter().any(|r| r.flags & PE_PARENT != 0)
    }

    /// Bytes of the pages image, as (offset, length), that the restorer reads itself
    /// under `--lazy-pages`: every present range that is not lazy.
    pub fn eager_extents(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for r in self.ranges.iter().filter(|r| r.present() && !r.lazy()) {
            match out.last_mut() {
                Some((off, len)) if *off + *len == r.offset => *len += r.bytes(),
                _ => out.push((r.offset, r.bytes())),
            }
        }
        out
    }
}

/// A pagemap image holding `ranges`, whose bytes are in `pages-{pages_id}.img`: what
/// CRIU reads, with each entry's flags written out.
pub fn encode(pages_id: u32, ranges: &[Range]) -> Vec<u8> {
    frame(
        pages_id,
        ranges.iter().map(|r| PagemapEntry {
            vaddr: r.vaddr,
            nr_pages: r.nr_pages,
            in_parent: None,
            flags: Some(r.flags),
        }),
    )
}

/// The image bytes: magics, head, then each entry, each length-prefixed.
fn frame(pages_id: u32, entries: impl IntoIterator<Item = PagemapEntry>) -> Vec<u8> {
    use prost::Message;
    let mut out = IMG_COMMON_MAGIC.to_le_bytes().to_vec();
    out.extend(PAGEMAP_MAGIC.to_le_bytes());
    let mut push = |msg: Vec<u8>| {
        out.extend((msg.len() as u32).to_le_bytes());
        out.extend(msg);
    };
    push(PagemapHead { pages_id }.encode_to_vec());
    for e in entries {
        push(e.encode_to_vec());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(pages_id: u32, entries: &[PagemapEntry]) -> Vec<u8> {
        frame(pages_id, entries.iter().cloned())
    }

    fn entry(vaddr: u64, nr_pages: u32, flags: Option<u32>) -> PagemapEntry {
        PagemapEntry {
            vaddr,
            nr_pages,
            in_parent: None,
            flags,
        }
    }

    #[test]
    fn offsets_follow_present_ranges_only() {
        let pm = Pagemap::parse(&image(
            7,
            &[
                entry(0x1000, 2, Some(PE_PRESENT)),
                entry(0x10000, 1, Some(PE_PARENT)),
                entry(0x20000, 3, Some(PE_PRESENT | PE_LAZY)),
                entry(0x30000, 1, None),
            ],
        ))
        .unwrap();
        assert_eq!(pm.pages_id, 7);
        let offs: Vec<u64> = pm.ranges.iter().map(|r| r.offset).collect();
        assert_eq!(offs, [0, 0x2000, 0x2000, 0x5000]);
        assert!(pm.has_parent_pages());
        assert_eq!(pm.find(0x21000).map(|r| r.vaddr), Some(0x20000));
        assert_eq!(pm.find(0x10000), None, "parent pages are not here");
        assert_eq!(pm.find(0x3000), None, "a gap");
        // An image without flags: present, as CRIU reads it.
        assert_eq!(pm.find(0x30000).map(|r| r.flags), Some(PE_PRESENT));
        assert_eq!(pm.eager_extents(), [(0, 0x2000), (0x5000, 0x1000)]);
    }

    #[test]
    fn hostile_images_are_refused() {
        assert!(Pagemap::parse(b"short").is_err());
        let mut truncated = image(1, &[entry(0x1000, 1, None)]);
        truncated.pop();
        assert!(Pagemap::parse(&truncated).is_err());
        let unordered = image(1, &[entry(0x5000, 1, None), entry(0x1000, 1, None)]);
        assert!(Pagemap::parse(&unordered).is_err());
        let wraps = image(1, &[entry(u64::MAX - 0xfff, 2, None)]);
        assert!(Pagemap::parse(&wraps).is_err());
        let mut wrong = image(1, &[]);
        wrong[4] ^= 1;
        assert!(Pagemap::parse(&wrong).is_err());
    }
}
