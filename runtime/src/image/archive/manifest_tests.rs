//! The manifest and the extraction budget: lying, incomplete and missing manifests, old
//! archives, and the bounds on what the tar reader may buffer.

use super::*;
use crate::image::metadata::Metadata;

/// A tar header for `path` of `kind` declaring `size` bytes (the data may be shorter).
fn header(path: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o600);
    h.set_path(path).expect("path");
    h.set_cksum();
    h
}

fn manifest_json(entries: &[(&str, u64, bool)]) -> Vec<u8> {
    let m = Manifest {
        manifest_version: MANIFEST_VERSION,
        entries: entries
            .iter()
            .map(|(p, size, limit)| ManifestEntry {
                path: p.to_string(),
                kind: EntryType::File,
                size: *size,
                size_is_limit: *limit,
            })
            .collect(),
    };
    serde_json::to_vec(&m).expect("json")
}

/// A tar of `(header, data)` pairs, finished with the end-of-archive marker.
fn tar_of(entries: Vec<(tar::Header, Vec<u8>)>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (h, data) in entries {
        b.append(&h, data.as_slice()).expect("append");
    }
    b.into_inner().expect("finish")
}

fn file(path: &str, data: &[u8]) -> (tar::Header, Vec<u8>) {
    (
        header(path, tar::EntryType::Regular, data.len() as u64),
        data.to_vec(),
    )
}

fn manifest_entry(entries: &[(&str, u64, bool)]) -> (tar::Header, Vec<u8>) {
    file(MANIFEST_FILE, &manifest_json(entries))
}

/// Writes `tar` zstd-compressed and unpacks it as a checkpoint into a fresh dir; returns
/// the result and whether the dir is still empty.
fn try_checkpoint(tar: &[u8]) -> (Result<Unpacked, ImageError>, bool) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("ck.tar.zst");
    fs::write(&archive, zstd::encode_all(tar, 3).expect("zstd")).expect("write");
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).expect("mkdir");
    let r = unpack_checkpoint(&archive, &dest);
    let empty = fs::read_dir(&dest).expect("ls").next().is_none();
    (r, empty)
}

const MD: &[u8] = b"{\"format_version\":1}";

#[test]
fn manifest_that_understates_a_file_is_refused_before_writing_it() {
    // Declares 1 KiB; the header says 2 GiB (the data is cut short: never read).
    let tar = tar_of(vec![
        manifest_entry(&[("pages-1.img", 1024, false), (METADATA_FILE, 4096, true)]),
        (
            header("pages-1.img", tar::EntryType::Regular, 2 << 30),
            vec![0; 4096],
        ),
    ]);
    let (r, empty) = try_checkpoint(&tar);
    match r {
        Err(ImageError::ManifestMismatch { entry, reason, .. }) => {
            assert_eq!(entry, "pages-1.img");
            assert!(reason.contains("2147483648"), "{reason}");
        }
        other => panic!("expected ManifestMismatch, got {other:?}"),
    }
    assert!(empty);
}

#[test]
fn entries_the_manifest_does_not_list_are_refused() {
    let tar = tar_of(vec![
        manifest_entry(&[(METADATA_FILE, 4096, true)]),
        file("extra.img", b"x"),
        file(METADATA_FILE, MD),
    ]);
    let (r, empty) = try_checkpoint(&tar);
    assert!(
        matches!(&r, Err(ImageError::ManifestMismatch { entry, .. }) if entry == "extra.img"),
        "{r:?}"
    );
    assert!(empty);
}

#[test]
fn a_manifest_without_metadata_is_refused_up_front() {
    let tar = tar_of(vec![
        manifest_entry(&[("pages-1.img", 3, false)]),
        file("pages-1.img", b"abc"),
    ]);
    let (r, empty) = try_checkpoint(&tar);
    assert!(
        matches!(r, Err(ImageError::ArchiveWithoutMetadata { .. })),
        "{r:?}"
    );
    assert!(empty);
}

#[test]
fn a_declared_entry_missing_at_the_end_means_truncated() {
    let tar = tar_of(vec![
        manifest_entry(&[("pages-1.img", 3, false), (METADATA_FILE, 4096, true)]),
        file(METADATA_FILE, MD),
    ]);
    let (r, empty) = try_checkpoint(&tar);
    match r {
        Err(ImageError::ManifestMismatch { entry, reason, .. }) => {
            assert_eq!(entry, "pages-1.img");
            assert!(reason.contains("truncated"), "{reason}");
        }
        other => panic!("expected ManifestMismatch, got {other:?}"),
    }
    assert!(empty);
}

#[test]
fn metadata_over_its_bound_or_twice_is_refused() {
    let big = vec![b' '; 5000];
    let tar = tar_of(vec![
        manifest_entry(&[(METADATA_FILE, 4096, true)]),
        file(METADATA_FILE, &big),
    ]);
    assert!(matches!(
        try_checkpoint(&tar).0,
        Err(ImageError::ManifestMismatch { .. })
    ));
    let tar = tar_of(vec![
        manifest_entry(&[(METADATA_FILE, 4096, true)]),
        file(METADATA_FILE, MD),
        file(METADATA_FILE, MD),
    ]);
    assert!(matches!(
        try_checkpoint(&tar).0,
        Err(ImageError::ManifestMismatch { .. })
    ));
}

#[test]
fn bad_manifests_are_typed_errors() {
    for (json, what) in [
        (b"not json".to_vec(), "garbage"),
        (br#"{"manifest_version":99,"entries":[]}"#.to_vec(), "newer"),
        (
            br#"{"manifest_version":1,"entries":[{"path":"../x","type":"file","size":1}]}"#
                .to_vec(),
            "parent",
        ),
        (
            br#"{"manifest_version":1,"entries":[{"path":"/x","type":"file","size":1}]}"#
                .to_vec(),
            "absolute",
        ),
        (
            br#"{"manifest_version":1,"entries":[{"path":"a","type":"file","size":18446744073709551615},{"path":"b","type":"file","size":2}]}"#
                .to_vec(),
            "overflow",
        ),
    ] {
        let tar = tar_of(vec![file(MANIFEST_FILE, &json), file(METADATA_FILE, MD)]);
        let (r, empty) = try_checkpoint(&tar);
        assert!(
            matches!(
                r,
                Err(ImageError::BadManifest { .. }
                    | ImageError::NewerFormat { .. }
                    | ImageError::UnsafeEntry { .. })
            ),
            "{what}: {r:?}"
        );
        assert!(empty, "{what}");
    }
}

#[test]
fn a_manifest_declaring_more_than_the_free_space_is_refused() {
    let tar = tar_of(vec![
        manifest_entry(&[("pages-1.img", 1 << 60, false), (METADATA_FILE, 4096, true)]),
        file(METADATA_FILE, MD),
    ]);
    let (r, empty) = try_checkpoint(&tar);
    assert!(matches!(r, Err(ImageError::NoSpace { .. })), "{r:?}");
    assert!(empty);
}

#[test]
fn old_archives_without_a_manifest_still_unpack_and_say_when_metadata_is_missing() {
    let tar = tar_of(vec![file("pages-1.img", b"abc"), file(METADATA_FILE, MD)]);
    let (r, _) = try_checkpoint(&tar);
    let u = r.expect("old archive");
    assert!(u.manifest.is_none());
    assert_eq!(u.digests.keys().collect::<Vec<_>>(), ["pages-1.img"]);

    let tar = tar_of(vec![file("pages-1.img", b"abc")]);
    let (r, empty) = try_checkpoint(&tar);
    let err = r.expect_err("no metadata");
    assert!(
        matches!(err, ImageError::ArchiveWithoutMetadata { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("metadata.json"), "{err}");
    assert!(empty);
    // Larger than any free space: refused from the header, before a byte is written.
    let tar = tar_of(vec![(
        header("pages-1.img", tar::EntryType::Regular, 1 << 60),
        vec![0; 512],
    )]);
    let (r, empty) = try_checkpoint(&tar);
    assert!(matches!(r, Err(ImageError::NoSpace { .. })), "{r:?}");
    assert!(empty);
}

#[test]
fn metadata_must_agree_with_the_manifest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    fs::write(src.join("pages-1.img"), b"abcd").expect("write");
    let out = tmp.path().join("ck.tar");
    pack(&src, &out, Compression::Tar).expect("pack");
    let dest = tmp.path().join("d");
    fs::create_dir(&dest).expect("mkdir");
    unpack(&out, &dest).expect("unpack");
    let m = Manifest::of(&walk(&src).expect("walk"), None);
    let mut md = Metadata::default();
    md.files.insert(
        "pages-1.img".into(),
        FileDigest {
            size: 4,
            sha256: String::new(),
        },
    );
    m.check_metadata(&out, &md).expect("agrees");
    md.files.get_mut("pages-1.img").expect("entry").size = 5;
    assert!(matches!(
        m.check_metadata(&out, &md),
        Err(ImageError::ManifestMismatch { .. })
    ));
    md.files.insert("other.img".into(), FileDigest::default());
    assert!(m.check_metadata(&out, &md).is_err());
    // A source holding a manifest.json of its own cannot be packed.
    fs::write(src.join(MANIFEST_FILE), b"{}").expect("write");
    assert!(matches!(
        pack(&src, &tmp.path().join("x.tar"), Compression::Tar),
        Err(ImageError::UnsafeEntry { .. })
    ));
}

#[test]
fn long_names_pax_headers_and_endless_trailers_are_bounded() {
    // A GNU long name of 1 MiB would be buffered whole by the tar reader: refused.
    let mut long = header("././@LongLink", tar::EntryType::GNULongName, 1 << 20);
    long.set_cksum();
    let tar = tar_of(vec![(long, vec![b'a'; 1 << 20]), file("x", b"x")]);
    let (r, empty) = try_checkpoint(&tar);
    assert!(matches!(r, Err(ImageError::Corrupt { .. })), "{r:?}");
    assert!(empty);
    // PAX headers are refused by type.
    let tar = tar_of(vec![
        (
            header("pax", tar::EntryType::XHeader, 12),
            b"12 size=999\n".to_vec(),
        ),
        file("x", b"x"),
    ]);
    let (r, _) = try_checkpoint(&tar);
    assert!(matches!(r, Err(ImageError::UnsafeEntry { .. })), "{r:?}");
    // 2 MiB of zeros after the end marker: not padding any more.
    let mut tar = tar_of(vec![file(METADATA_FILE, MD)]);
    tar.extend(std::iter::repeat_n(0u8, 2 << 20));
    let (r, _) = try_checkpoint(&tar);
    assert!(matches!(r, Err(ImageError::Corrupt { .. })), "{r:?}");
}

#[test]
fn metadata_limit_grows_with_the_file_list_and_is_capped() {
    let a = metadata_limit(1000, ["a.img"].into_iter());
    let b = metadata_limit(1000, ["a.img", "b.img"].into_iter());
    assert!(a > 1000 && b > a);
    assert_eq!(
        metadata_limit(u64::MAX, std::iter::empty()),
        MAX_METADATA_BYTES
    );
}
