use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::image::integrity::{digest_dir, read_metadata, verify_dir, write_metadata};
use crate::image::metadata::{Metadata, FORMAT_VERSION};

const ARCHIVES: [Compression; 4] = [
    Compression::Tar,
    Compression::Gzip,
    Compression::Lz4,
    Compression::Zstd,
];

/// Deterministic pseudo-random bytes (xorshift), poorly compressible.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// A checkpoint-like directory with metadata.json.
fn sample(dir: &Path) -> Metadata {
    fs::create_dir_all(dir.join("sub/deeper")).expect("mkdir");
    fs::create_dir_all(dir.join("empty")).expect("mkdir");
    // Incompressible, so the middle of any archive falls in stored data, then a run.
    let mut pages = noise(2 << 20, 42);
    pages.extend(std::iter::repeat_n(0x5A, 512 << 10));
    fs::write(dir.join("pages-1.img"), &pages).expect("write");
    fs::write(
        dir.join("core-1.img"),
        b"MARKER-core-file-content-0123456789",
    )
    .expect("write");
    fs::write(dir.join("sub/deeper/empty.img"), b"").expect("write");
    let long = format!("sub/{}", "n".repeat(150));
    fs::write(dir.join(long), b"long name").expect("write");
    let md = Metadata {
        format_version: FORMAT_VERSION,
        name: "ck".into(),
        files: digest_dir(dir).expect("digest"),
        ..Default::default()
    };
    write_metadata(dir, &md).expect("metadata");
    // Fixed mtimes make the archives byte-for-byte reproducible across runs.
    for e in walk(dir).expect("walk") {
        File::open(&e.abs)
            .and_then(|f| f.set_modified(UNIX_EPOCH + Duration::from_secs(1_700_000_000)))
            .expect("set mtime");
    }
    md
}

/// Relative paths of every entry below `dir`, with `/` after directories.
fn listing(dir: &Path) -> Vec<String> {
    walk(dir)
        .expect("walk")
        .into_iter()
        .map(|e| match e.kind {
            Kind::Dir => format!("{}/", e.rel),
            Kind::File => e.rel,
        })
        .collect()
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).expect("ls").next().is_none()
}

#[test]
fn round_trip_every_format() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    let md = sample(&src);
    for c in Compression::ALL {
        let out = tmp.path().join(format!("ck{}", c.extension()));
        let out = if c == Compression::None {
            tmp.path().join("ck-copy")
        } else {
            out
        };
        let bytes = pack(&src, &out, c).expect("pack");
        assert!(no_partials(&out), "{c}: partial left behind");
        if c.is_archive() {
            assert_eq!(bytes, fs::metadata(&out).expect("stat").len(), "{c}");
        }
        assert_eq!(detect(&out).expect("detect"), c);
        let dest = tmp.path().join(format!("dest-{c}"));
        fs::create_dir(&dest).expect("mkdir");
        assert_eq!(unpack(&out, &dest).expect("unpack"), c);
        assert_eq!(listing(&dest), listing(&src), "{c}");
        assert_eq!(digest_dir(&dest).expect("digest"), md.files, "{c}");
        assert_eq!(
            fs::read(dest.join("metadata.json")).expect("read"),
            fs::read(src.join("metadata.json")).expect("read")
        );
        let back = read_metadata(&dest).expect("md");
        verify_dir(&dest, &back).expect("verify");
    }
}

#[test]
fn pack_is_deterministic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    sample(&src);
    for c in ARCHIVES {
        let a = tmp.path().join(format!("a{}", c.extension()));
        let b = tmp.path().join(format!("b{}", c.extension()));
        pack(&src, &a, c).expect("pack");
        pack(&src, &b, c).expect("pack");
        assert_eq!(fs::read(&a).expect("a"), fs::read(&b).expect("b"), "{c}");
    }
}

#[test]
fn detect_by_content_not_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    sample(&src);
    let misleading = [
        (Compression::Zstd, "ck.tar.gz"),
        (Compression::Gzip, "ck.tar.zst"),
        (Compression::Lz4, "ck.tar"),
        (Compression::Tar, "ck.tar.lz4"),
    ];
    for (c, name) in misleading {
        let out = tmp.path().join(name);
        pack(&src, &out, c).expect("pack");
        assert_eq!(detect(&out).expect("detect"), c, "{name}");
        let dest = tmp.path().join(format!("d-{name}"));
        fs::create_dir(&dest).expect("mkdir");
        assert_eq!(unpack(&out, &dest).expect("unpack"), c);
        assert_eq!(listing(&dest), listing(&src));
    }
}

#[test]
fn archives_readable_by_standard_tools() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    sample(&src);
    for (c, tool) in [
        (Compression::Gzip, "gzip"),
        (Compression::Lz4, "lz4"),
        (Compression::Zstd, "zstd"),
    ] {
        let out = tmp.path().join(format!("ck{}", c.extension()));
        pack(&src, &out, c).expect("pack");
        match std::process::Command::new(tool)
            .arg("-t")
            .arg(&out)
            .output()
        {
            Ok(o) => assert!(o.status.success(), "{tool} -t: {o:?}"),
            Err(_) => {
                crate::test_util::skip(
                    &format!("{tool} not installed, its -t check not run"),
                    "run `make deps`",
                );
            }
        }
    }
}

#[test]
fn truncated_archive_is_corrupt() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    sample(&src);
    for c in ARCHIVES {
        let out = tmp.path().join(format!("ck{}", c.extension()));
        pack(&src, &out, c).expect("pack");
        let full = fs::read(&out).expect("read");
        for cut in [full.len() / 3, full.len() / 2, full.len() - 1] {
            let bad = tmp.path().join(format!("cut-{cut}{}", c.extension()));
            fs::write(&bad, &full[..cut]).expect("write");
            let dest = tmp.path().join(format!("dest-{c}-{cut}"));
            fs::create_dir(&dest).expect("mkdir");
            match unpack(&bad, &dest) {
                Err(e @ ImageError::Corrupt { .. }) => {
                    assert!(e.to_string().contains("truncated or corrupt"), "{e}");
                    assert!(e.to_string().contains("re-copy it or dump again"), "{e}");
                }
                other => panic!("{c} cut at {cut}/{}: {other:?}", full.len()),
            }
            assert!(is_empty_dir(&dest), "{c}: failed unpack left files");
        }
    }
}

#[test]
fn flipped_byte_in_compressed_archive_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    sample(&src);
    for c in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
        let out = tmp.path().join(format!("ck{}", c.extension()));
        pack(&src, &out, c).expect("pack");
        let good = fs::read(&out).expect("read");
        for at in [good.len() / 3, good.len() / 2, good.len() * 2 / 3] {
            let mut data = good.clone();
            data[at] ^= 0x01;
            let bad = tmp.path().join(format!("flip-{at}{}", c.extension()));
            fs::write(&bad, &data).expect("write");
            let dest = tmp.path().join(format!("dest-{c}-{at}"));
            fs::create_dir(&dest).expect("mkdir");
            match unpack(&bad, &dest) {
                Err(ImageError::Corrupt { .. }) => {}
                other => panic!("{c}, byte {at}/{} flipped: {other:?}", good.len()),
            }
            assert!(is_empty_dir(&dest));
        }
    }
}

#[test]
fn flipped_byte_in_plain_tar_data_is_caught_by_verify() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    sample(&src);
    let out = tmp.path().join("ck.tar");
    pack(&src, &out, Compression::Tar).expect("pack");
    let mut data = fs::read(&out).expect("read");
    let marker = b"MARKER-core-file-content";
    let at = data
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("file data in tar");
    data[at + 10] ^= 0x20;
    fs::write(&out, &data).expect("write");
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).expect("mkdir");
    unpack(&out, &dest).expect("plain tar has no checksum over data");
    let md = read_metadata(&dest).expect("md");
    match verify_dir(&dest, &md) {
        Err(ImageError::ChecksumMismatch { file, .. }) => assert_eq!(file, "core-1.img"),
        other => panic!("expected checksum mismatch, got {other:?}"),
    }
}

/// A tar header for `path` written straight into the name field (bypassing the
/// builder's own path checks).
#[test]
fn the_manifest_declares_what_an_archive_unpacks_to_before_unpacking() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    sample(&src);
    let on_disk: u64 = walk(&src)
        .expect("walk")
        .iter()
        .filter_map(|e| fs::symlink_metadata(&e.abs).ok())
        .map(|m| m.len())
        .sum();
    for c in ARCHIVES {
        let out = tmp.path().join(format!("ck{}", c.extension()));
        pack(&src, &out, c).expect("pack");
        let declared = declared_disk_bytes(&out)
            .expect("read")
            .expect("a manifest");
        assert!(declared >= on_disk, "{c}: {declared} < {on_disk}");
    }
    // A directory, and an archive from before manifests, declare nothing.
    assert_eq!(declared_disk_bytes(&src).expect("a dir"), None);
    let old = tmp.path().join("old.tar.zst");
    let tar = malicious(&[(
        raw_header(b"core-1.img", tar::EntryType::Regular, 4),
        b"core",
    )]);
    fs::write(&old, zstd_of(&tar)).expect("write");
    assert_eq!(declared_disk_bytes(&old).expect("old"), None);
    // A damaged head is an error, not a size.
    fs::write(&old, b"\x28\xb5\x2f\xfd garbage").expect("write");
    assert!(declared_disk_bytes(&old).is_err());
}

fn raw_header(path: &[u8], kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    let name = &mut h.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path);
    h.set_cksum();
    h
}

fn malicious(entries: &[(tar::Header, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (h, data) in entries {
        b.append(h, *data).expect("append");
    }
    b.into_inner().expect("finish")
}

fn zstd_of(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

fn expect_unsafe(tar_bytes: Vec<u8>, name: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    // dest is two levels down so `..` targets are still inside the temp dir.
    let dest = tmp.path().join("a/dest");
    fs::create_dir_all(&dest).expect("mkdir");
    for (label, bytes) in [("tar", tar_bytes.clone()), ("zst", zstd_of(&tar_bytes))] {
        let archive = tmp.path().join(format!("evil.{label}"));
        fs::write(&archive, &bytes).expect("write");
        match unpack(&archive, &dest) {
            Err(ImageError::UnsafeEntry { entry, reason }) => {
                assert!(!entry.is_empty() && !reason.is_empty());
            }
            other => panic!("{name} ({label}): expected UnsafeEntry, got {other:?}"),
        }
        assert!(is_empty_dir(&dest), "{name}: files left in dest");
        for outside in ["a/evil", "evil", "a/passwd", "abs_evil"] {
            assert!(
                !tmp.path().join(outside).exists(),
                "{name}: wrote {outside} outside dest"
            );
        }
    }
}

#[test]
fn refuses_parent_dir_entries() {
    expect_unsafe(
        malicious(&[(raw_header(b"../evil", tar::EntryType::Regular, 4), b"evil")]),
        "../evil",
    );
    expect_unsafe(
        malicious(&[
            (raw_header(b"ok", tar::EntryType::Directory, 0), b""),
            (
                raw_header(b"ok/../../../evil", tar::EntryType::Regular, 4),
                b"evil",
            ),
        ]),
        "ok/../../../evil",
    );
    expect_unsafe(
        malicious(&[(raw_header(b"..", tar::EntryType::Directory, 0), b"")]),
        "..",
    );
}

#[test]
fn refuses_absolute_entries() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let target = tmp.path().join("abs_evil");
    let path = target
        .to_str()
        .expect("utf-8 temp path")
        .as_bytes()
        .to_vec();
    assert!(path.len() < 100);
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).expect("mkdir");
    let archive = tmp.path().join("abs.tar");
    fs::write(
        &archive,
        malicious(&[(raw_header(&path, tar::EntryType::Regular, 4), b"evil")]),
    )
    .expect("write");
    assert!(matches!(
        unpack(&archive, &dest),
        Err(ImageError::UnsafeEntry { .. })
    ));
    assert!(!target.exists());
    assert!(is_empty_dir(&dest));
    expect_unsafe(
        malicious(&[(
            raw_header(b"/etc/cedana-evil", tar::EntryType::Regular, 4),
            b"evil",
        )]),
        "/etc/cedana-evil",
    );
}

#[test]
fn refuses_links_and_special_files() {
    let mut link = raw_header(b"link", tar::EntryType::Symlink, 0);
    link.set_link_name("..").expect("link name");
    link.set_cksum();
    expect_unsafe(
        malicious(&[
            (link, b""),
            (
                raw_header(b"link/evil", tar::EntryType::Regular, 4),
                b"evil",
            ),
        ]),
        "symlink",
    );
    let mut hard = raw_header(b"hard", tar::EntryType::Link, 0);
    hard.set_link_name("../passwd").expect("link name");
    hard.set_cksum();
    expect_unsafe(malicious(&[(hard, b"")]), "hard link");
    expect_unsafe(
        malicious(&[(raw_header(b"fifo", tar::EntryType::Fifo, 0), b"")]),
        "fifo",
    );
    expect_unsafe(
        malicious(&[(raw_header(b"dev", tar::EntryType::Char, 0), b"")]),
        "char device",
    );
    expect_unsafe(
        malicious(&[
            (raw_header(b"dup", tar::EntryType::Regular, 1), b"a"),
            (raw_header(b"dup", tar::EntryType::Regular, 1), b"b"),
        ]),
        "duplicate",
    );
}

#[test]
fn accepts_dot_slash_entries() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("gnu.tar");
    fs::write(
        &archive,
        malicious(&[
            (raw_header(b"./", tar::EntryType::Directory, 0), b""),
            (raw_header(b"./d/", tar::EntryType::Directory, 0), b""),
            (raw_header(b"./d/f", tar::EntryType::Regular, 3), b"abc"),
        ]),
    )
    .expect("write");
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).expect("mkdir");
    unpack(&archive, &dest).expect("unpack");
    assert_eq!(fs::read(dest.join("d/f")).expect("read"), b"abc");
}

#[test]
fn unpack_requires_empty_dest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    sample(&src);
    let out = tmp.path().join("ck.tar.zst");
    pack(&src, &out, Compression::Zstd).expect("pack");
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).expect("mkdir");
    fs::write(dest.join("keep"), b"mine").expect("write");
    assert!(matches!(
        unpack(&out, &dest),
        Err(ImageError::DestNotEmpty { .. })
    ));
    assert_eq!(fs::read(dest.join("keep")).expect("kept"), b"mine");
}

#[test]
fn pack_refuses_unsafe_sources_and_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    sample(&src);
    // Output inside the source.
    let inside = src.join("ck.tar.zst");
    assert!(matches!(
        pack(&src, &inside, Compression::Zstd),
        Err(ImageError::OutputInsideSource { .. })
    ));
    assert!(!inside.exists() && no_partials(&inside));
    // A symlink in the source.
    std::os::unix::fs::symlink("/etc/passwd", src.join("sub/link")).expect("symlink");
    for c in Compression::ALL {
        let out = tmp.path().join(format!("ck-{c}{}", c.extension()));
        assert!(matches!(
            pack(&src, &out, c),
            Err(ImageError::UnsafeEntry { .. })
        ));
        assert!(!out.exists() && no_partials(&out), "{c}");
    }
}

/// No staging path of any operation is left beside `out`.
fn no_partials(out: &Path) -> bool {
    let dir = out.parent().expect("parent");
    fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .all(|e| !crate::image::atomic::is_staging_name(&e.file_name().to_string_lossy()))
}

#[test]
fn pack_never_replaces_a_checkpoint_nor_touches_another_operations_staging() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    sample(&src);
    let out = tmp.path().join("ck.tar.gz");
    // Another operation's staging file for the same name: not ours to remove.
    let theirs = tmp.path().join(".ck.tar.gz.1-0-0.partial");
    fs::write(&theirs, b"half an archive").expect("write");
    pack(&src, &out, Compression::Gzip).expect("pack");
    assert_eq!(fs::read(&theirs).expect("theirs kept"), b"half an archive");
    assert_eq!(detect(&out).expect("detect"), Compression::Gzip);
    let first = fs::read(&out).expect("read");
    for c in [Compression::Gzip, Compression::None] {
        let err = pack(&src, &out, c).expect_err("the name is taken");
        assert!(matches!(err, ImageError::Exists { .. }), "{c}: {err}");
    }
    assert_eq!(
        fs::read(&out).expect("read"),
        first,
        "the first checkpoint is intact"
    );
    fs::remove_file(&theirs).expect("rm");
    assert!(no_partials(&out));
}

#[test]
fn pack_with_metadata_writes_the_trailer_last_and_round_trips() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    let md = sample(&src);
    for c in ARCHIVES {
        let out = tmp.path().join(format!("trailer{}", c.extension()));
        let json = fs::read(src.join("metadata.json")).expect("read");
        let base = json.len() as u64;
        let bytes =
            pack_with_metadata(&src, &out, c, base, Box::new(|| Ok(json.clone()))).expect("pack");
        assert_eq!(bytes, fs::metadata(&out).expect("stat").len(), "{c}");
        let dest = tmp.path().join(format!("trailer-dest-{c}"));
        fs::create_dir(&dest).expect("mkdir");
        unpack(&out, &dest).expect("unpack");
        let back = read_metadata(&dest).expect("md");
        assert_eq!(back.files, md.files, "{c}");
        verify_dir(&dest, &back).expect("verify");
        if c == Compression::Tar {
            let mut names = Vec::new();
            let mut ar = tar::Archive::new(File::open(&out).expect("open"));
            for e in ar.entries().expect("entries") {
                names.push(
                    e.expect("entry")
                        .path()
                        .expect("path")
                        .display()
                        .to_string(),
                );
            }
            assert_eq!(names.first().map(String::as_str), Some(MANIFEST_FILE));
            assert_eq!(names.last().map(String::as_str), Some("metadata.json"));
            assert_eq!(names.iter().filter(|n| *n == "metadata.json").count(), 1);
        }
    }
    // A failing trailer fails the pack and leaves nothing under either name.
    let out = tmp.path().join("failing.tar.zst");
    let err = pack_with_metadata(
        &src,
        &out,
        Compression::Zstd,
        0,
        Box::new(|| {
            Err(ImageError::io(
                Path::new("x"),
                io::Error::other("digest failed"),
            ))
        }),
    )
    .expect_err("trailer error");
    assert!(err.to_string().contains("digest failed"), "{err}");
    assert!(!out.exists() && no_partials(&out));
}

#[test]
fn unpack_checkpoint_hashes_what_it_writes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    let md = sample(&src);
    for c in ARCHIVES {
        let out = tmp.path().join(format!("dg{}", c.extension()));
        pack(&src, &out, c).expect("pack");
        let dest = tmp.path().join(format!("dg-dest-{c}"));
        fs::create_dir(&dest).expect("mkdir");
        let u = unpack_checkpoint(&out, &dest).expect("unpack");
        let (got, digests) = (u.compression, u.digests);
        assert_eq!(got, c);
        let manifest = u.manifest.expect("new archives carry a manifest");
        manifest.check_metadata(&out, &md).expect("manifest agrees");
        assert_eq!(digests, md.files, "{c}: digests of the extracted files");
        assert_eq!(digests, digest_dir(&dest).expect("digest"), "{c}");
        crate::image::integrity::verify_digests(&md, &digests).expect("verify");
    }
    // A changed byte shows up as a mismatch naming the file.
    let mut tampered = md.clone();
    if let Some(d) = tampered.files.get_mut("core-1.img") {
        d.sha256 = "0".repeat(64);
    }
    let out = tmp.path().join("dg-t.tar");
    pack(&src, &out, Compression::Tar).expect("pack");
    let dest = tmp.path().join("dg-t");
    fs::create_dir(&dest).expect("mkdir");
    let digests = unpack_checkpoint(&out, &dest).expect("unpack").digests;
    assert!(matches!(
        crate::image::integrity::verify_digests(&tampered, &digests),
        Err(ImageError::ChecksumMismatch { file, .. }) if file == "core-1.img"
    ));
}

/// Fills `dir` with `files` files of `each` bytes of checkpoint-like data: 4 KiB pages that
/// are random, zero, low-entropy (16 symbols) or an 8-byte pattern varied every 64 bytes.
fn mixed_pages(dir: &Path, files: usize, each: usize) {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..files {
        let mut data = Vec::with_capacity(each);
        while data.len() < each {
            let kind = next() % 10;
            let mut page = [0u8; 4096];
            match kind {
                0..=3 => page
                    .chunks_mut(8)
                    .for_each(|c| c.copy_from_slice(&next().to_le_bytes())),
                4..=5 => {}
                6..=7 => page.chunks_mut(16).for_each(|c| {
                    let r = next();
                    c.iter_mut().enumerate().for_each(|(j, b)| {
                        *b = b"abcdefghijklmnop"[((r >> (j * 4)) & 15) as usize]
                    });
                }),
                _ => {
                    let pat = next().to_le_bytes();
                    page.iter_mut()
                        .enumerate()
                        .for_each(|(j, b)| *b = pat[j % 8] ^ (j / 64) as u8);
                }
            }
            data.extend_from_slice(&page);
        }
        fs::write(dir.join(format!("pages-{i}.img")), &data).expect("write");
    }
}

/// Where each gzip member or LZ4 frame of `data` ends, read one at a time with the
/// single-member decoders.
fn member_ends(c: Compression, data: &[u8]) -> Vec<usize> {
    let mut rest = data;
    let mut ends = Vec::new();
    while !rest.is_empty() {
        rest = match c {
            Compression::Gzip => {
                let mut d = flate2::bufread::GzDecoder::new(rest);
                io::copy(&mut d, &mut io::sink()).expect("gzip member");
                d.into_inner()
            }
            Compression::Lz4 => {
                let mut d = lz4_flex::frame::FrameDecoder::new(rest);
                io::copy(&mut d, &mut io::sink()).expect("lz4 frame");
                d.into_inner()
            }
            other => panic!("{other} has no members"),
        };
        ends.push(data.len() - rest.len());
    }
    ends
}

/// A directory of several compression blocks: the sample plus 6 MiB of mixed pages (not
/// listed in its metadata.json; the tests compare digests of the whole tree instead).
fn multi_block_sample(dir: &Path) {
    sample(dir);
    mixed_pages(dir, 2, 3 << 20);
}

#[test]
fn multi_block_archives_round_trip_and_match_the_plain_tar() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    multi_block_sample(&src);
    let files = digest_dir(&src).expect("digest");
    let plain = tmp.path().join("ck.tar");
    pack(&src, &plain, Compression::Tar).expect("pack tar");
    let tar_bytes = fs::read(&plain).expect("read tar");
    for (c, tool) in [(Compression::Gzip, "gzip"), (Compression::Lz4, "lz4")] {
        let out = tmp.path().join(format!("multi{}", c.extension()));
        pack(&src, &out, c).expect("pack");
        let packed = fs::read(&out).expect("read");
        let ends = member_ends(c, &packed);
        assert!(ends.len() >= 4, "{c}: only {} members", ends.len());
        // Our reader: every member, in order.
        let dest = tmp.path().join(format!("multi-dest-{c}"));
        fs::create_dir(&dest).expect("mkdir");
        assert_eq!(unpack(&out, &dest).expect("unpack"), c);
        assert_eq!(listing(&dest), listing(&src), "{c}");
        assert_eq!(digest_dir(&dest).expect("digest"), files, "{c}");
        // The stock tool: its output is the very tar `pack` writes uncompressed.
        match std::process::Command::new(tool)
            .arg("-dc")
            .arg(&out)
            .output()
        {
            Ok(o) => {
                assert!(
                    o.status.success(),
                    "{tool} -dc: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                assert!(
                    o.stdout == tar_bytes,
                    "{tool} -dc: not the tar that was packed"
                );
            }
            Err(e) => {
                crate::test_util::skip(
                    &format!("{tool} not runnable ({e}), its -dc check not run"),
                    "run `make deps`",
                );
            }
        }
    }
}

#[test]
fn truncated_multi_member_archive_is_corrupt() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    multi_block_sample(&src);
    for c in [Compression::Gzip, Compression::Lz4] {
        let out = tmp.path().join(format!("ck{}", c.extension()));
        pack(&src, &out, c).expect("pack");
        let full = fs::read(&out).expect("read");
        let ends = member_ends(c, &full);
        assert!(ends.len() >= 4, "{c}: only {} members", ends.len());
        let mut cuts = Vec::new();
        // Whole members dropped (the cut falls exactly between two), a next member's header
        // cut short, and cuts inside a member.
        let n = ends.len();
        for end in [ends[0], ends[n / 2], ends[n - 2]] {
            cuts.extend([end, end + 4, end + 11, end + 1000]);
        }
        cuts.extend([(ends[n - 2] + full.len()) / 2, full.len() - 1]);
        cuts.retain(|&cut| cut < full.len());
        for cut in cuts {
            let bad = tmp.path().join(format!("cut-{cut}{}", c.extension()));
            fs::write(&bad, &full[..cut]).expect("write");
            let dest = tmp.path().join(format!("dest-{c}-{cut}"));
            fs::create_dir(&dest).expect("mkdir");
            match unpack(&bad, &dest) {
                Err(ImageError::Corrupt { .. }) => {}
                other => panic!(
                    "{c} cut at {cut}/{} (members end at {ends:?}): {other:?}",
                    full.len()
                ),
            }
            assert!(is_empty_dir(&dest), "{c}: failed unpack left files");
            fs::remove_file(&bad).expect("rm");
        }
    }
}

/// The packing of gzip and lz4 before parallel.rs: the whole tar through one encoder.
fn pack_single_stream(src: &Path, out: &Path, c: Compression) -> u64 {
    let entries = walk(src).expect("walk");
    let frame = || Frame {
        manifest: Manifest::of(&entries, None)
            .to_bytes(out)
            .expect("manifest"),
        trailer: None,
    };
    let file = create_new_file(out, ARCHIVE_MODE).expect("create");
    let w = BufWriter::with_capacity(BUF, file);
    let w = match c {
        Compression::Gzip => {
            let enc = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
            let enc = tar_into(&entries, enc, out, frame()).expect("tar");
            enc.finish().expect("gzip")
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new().content_checksum(true);
            let enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, w);
            let enc = tar_into(&entries, enc, out, frame()).expect("tar");
            enc.finish().expect("lz4")
        }
        other => panic!("{other}: not a single-stream format here"),
    };
    let file = w.into_inner().expect("flush");
    file.sync_all().expect("sync");
    file.metadata().expect("stat").len()
}

/// Packing time of ~512 MiB of mixed data, one encoder (before) against parallel blocks
/// (after), alternated so both see the same machine load; run with
/// `cargo test --release -p cedana-runtime --lib -- --ignored --nocapture pack_timing`.
#[test]
#[ignore = "benchmark: writes ~1 GiB to the temp dir"]
fn pack_timing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    mixed_pages(&src, 8, 64 << 20);
    // CPU time of the whole process (every thread), to see the overhead beside the wall time.
    let cpu = || {
        // SAFETY: getrusage only writes the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(ru.ru_utime) + secs(ru.ru_stime)
    };
    let time = |f: &dyn Fn(&Path) -> u64, out: &Path| {
        let (t, c) = (std::time::Instant::now(), cpu());
        let size = f(out);
        let took = t.elapsed();
        let used = cpu() - c;
        fs::remove_file(out).expect("rm");
        (took, size, used)
    };
    for c in [Compression::Gzip, Compression::Lz4] {
        let out = tmp.path().join(format!("t{}", c.extension()));
        let (mut before, mut after) = (Vec::new(), Vec::new());
        let (mut size_before, mut size_after) = (0, 0);
        let (mut cpu_before, mut cpu_after) = (0.0, 0.0);
        for _ in 0..5 {
            let (t, n, used) = time(&|o: &Path| pack_single_stream(&src, o, c), &out);
            before.push(t.as_secs_f64());
            (size_before, cpu_before) = (n, cpu_before + used / 5.0);
            let (t, n, used) = time(&|o: &Path| pack(&src, o, c).expect("pack"), &out);
            after.push(t.as_secs_f64());
            (size_after, cpu_after) = (n, cpu_after + used / 5.0);
        }
        for v in [&mut before, &mut after] {
            v.sort_by(f64::total_cmp);
        }
        eprintln!(
            "pack_timing {c}: one stream min {:.2}s median {:.2}s cpu {cpu_before:.2}s ({:.1} MiB); parallel min {:.2}s median {:.2}s cpu {cpu_after:.2}s ({:.1} MiB)",
            before[0], before[2], size_before as f64 / 1048576.0,
            after[0], after[2], size_after as f64 / 1048576.0,
        );
    }
    for c in [Compression::Tar, Compression::Zstd] {
        let out = tmp.path().join(format!("t{}", c.extension()));
        let (t, n, _) = time(&|o: &Path| pack(&src, o, c).expect("pack"), &out);
        eprintln!(
            "pack_timing {c} (reference): {:.2}s ({:.1} MiB)",
            t.as_secs_f64(),
            n as f64 / 1048576.0
        );
    }
}
