//! Where the page images of an `--image-path` directory land in the tar containerd makes of
//! it (`ctr task checkpoint`: the directory's files in name order, a 512-byte header
//! each, data padded to 512 bytes), and how much trailing whitespace metadata.json needs
//! so that the largest page image starts on a 64 KiB boundary there.
//!
//! Why: metadata.json sorts before the page images, so it shifts them. Measured on this
//! host's kernel, containerd copied a checkpoint of 270 MiB whose page image sat off a
//! 32 KiB boundary about 0.1 s slower than the same checkpoint aligned (the page cache
//! takes large folios only for aligned writes). runc's own layout is aligned or not by
//! chance; this makes ours aligned always. A layout this does not model (a subdirectory,
//! a name too long for one header) gets no padding, and only loses the speed-up.

use std::fs;
use std::path::Path;

use super::metadata::METADATA_FILE;

/// A tar block.
const BLOCK: u64 = 512;
/// Where the largest page image's bytes should start.
const ALIGN: u64 = 64 << 10;
/// Longest name a plain tar header holds (longer ones take extra headers).
const MAX_NAME: usize = 100;

/// Bytes to append to a metadata.json of `json_len` bytes written into `dir`.
pub fn metadata_padding(dir: &Path, json_len: u64) -> u64 {
    let Some(files) = top_level_files(dir) else {
        return 0;
    };
    let target = files
        .iter()
        .filter(|(name, _)| name.starts_with("pages-") && name.ends_with(".img"))
        .max_by_key(|(_, size)| *size);
    let Some((target, _)) = target else { return 0 };
    let entry = |size: u64| BLOCK + size.div_ceil(BLOCK) * BLOCK;
    // The target's data: after every entry sorted before it, and its own header.
    let before: u64 = files
        .iter()
        .filter(|(name, _)| name < target)
        .map(|(_, size)| entry(*size))
        .sum();
    let unpadded = before + entry(json_len) + BLOCK;
    match unpadded % ALIGN {
        0 => 0,
        off => (json_len.div_ceil(BLOCK) * BLOCK - json_len) + (ALIGN - off),
    }
}

/// The directory's files but metadata.json, with their sizes, if it holds only short-named
/// regular files (the layout modelled here).
fn top_level_files(dir: &Path) -> Option<Vec<(String, u64)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name().into_string().ok()?;
        let meta = entry.metadata().ok()?;
        // The temp file metadata.json is written through is renamed over it.
        if name == METADATA_FILE || name.starts_with(".metadata.json.") {
            continue;
        }
        if !meta.is_file() || name.len() > MAX_NAME {
            return None;
        }
        files.push((name, meta.len()));
    }
    files.sort();
    Some(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data offset of `name` in a tar of `dir`'s files in name order (as containerd
    /// writes a checkpoint directory).
    fn offset_in_tar(dir: &Path, name: &str) -> u64 {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut b = tar::Builder::new(Vec::new());
        for n in &names {
            b.append_path_with_name(dir.join(n), n).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let mut ar = tar::Archive::new(bytes.as_slice());
        let found = ar.entries().unwrap().map(|e| e.unwrap()).find_map(|e| {
            (e.path().unwrap().to_str() == Some(name)).then(|| e.raw_file_position())
        });
        found.expect("in the tar")
    }

    #[test]
    fn the_largest_page_image_starts_on_a_64k_boundary() {
        let d = tempfile::tempdir().unwrap();
        for (n, size) in [
            ("core-1.img", 1234),
            ("mm-1.img", 777),
            ("pagemap-1.img", 4100),
            ("pages-1.img", 3 << 20),
            ("pages-2.img", 8192),
            ("pstree.img", 40),
        ] {
            fs::write(d.path().join(n), vec![1u8; size]).unwrap();
        }
        for json_len in [1u64, 511, 512, 7000, 70_000] {
            let pad = metadata_padding(d.path(), json_len);
            assert!(pad < ALIGN + BLOCK, "{pad}");
            let mut json = vec![b'{'; 1];
            json.resize((json_len + pad) as usize, b' ');
            fs::write(d.path().join(METADATA_FILE), &json).unwrap();
            assert_eq!(
                offset_in_tar(d.path(), "pages-1.img") % ALIGN,
                0,
                "json {json_len}"
            );
        }
    }

    #[test]
    fn a_layout_it_does_not_model_gets_no_padding() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("pages-1.img"), [0u8; 4096]).unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        assert_eq!(metadata_padding(d.path(), 100), 0);
        let e = tempfile::tempdir().unwrap();
        fs::write(e.path().join("core-1.img"), [0u8; 10]).unwrap();
        assert_eq!(metadata_padding(e.path(), 100), 0, "no page image");
    }
}
