//! Tests of the checkpoint integrity records (digests and metadata.json).

use super::*;

fn sample(dir: &Path) {
    fs::create_dir_all(dir.join("sub/deeper")).expect("mkdir");
    fs::write(dir.join("pages-1.img"), vec![0xAB; 300_000]).expect("write");
    fs::write(dir.join("core-1.img"), b"core").expect("write");
    fs::write(dir.join("sub/deeper/x.img"), b"").expect("write");
    fs::write(dir.join("sub/y"), b"y").expect("write");
}

fn metadata_for(dir: &Path) -> Metadata {
    Metadata {
        format_version: FORMAT_VERSION,
        name: "ck".into(),
        files: digest_dir(dir).expect("digest"),
        ..Default::default()
    }
}

#[test]
fn known_digests_are_taken_when_the_size_still_matches() {
    let d = tempfile::tempdir().expect("tempdir");
    sample(d.path());
    let real = digest_dir(d.path()).expect("digest");
    let marked = |size| FileDigest {
        size,
        sha256: "from-the-writer".into(),
    };
    let known = BTreeMap::from([
        ("pages-1.img".to_string(), marked(300_000)),
        ("sub/y".to_string(), marked(99)), // size differs: read again
        ("gone.img".to_string(), marked(1)), // not on disk: ignored
    ]);
    let m = digest_dir_known(d.path(), &known).expect("digest");
    assert_eq!(m["pages-1.img"].sha256, "from-the-writer", "not read again");
    assert_eq!(m["sub/y"], real["sub/y"]);
    assert_eq!(m["core-1.img"], real["core-1.img"]);
    let keys: Vec<&String> = m.keys().collect();
    assert_eq!(
        keys,
        real.keys().collect::<Vec<_>>(),
        "exactly the files present"
    );
}

#[test]
fn digest_lists_files_with_relative_paths() {
    let d = tempfile::tempdir().expect("tempdir");
    sample(d.path());
    fs::write(d.path().join(METADATA_FILE), b"{}").expect("write");
    let m = digest_dir(d.path()).expect("digest");
    let keys: Vec<&str> = m.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["core-1.img", "pages-1.img", "sub/deeper/x.img", "sub/y"]
    );
    assert_eq!(m["core-1.img"].size, 4);
    assert_eq!(
        m["sub/deeper/x.img"].sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn verify_ok_and_mismatch_missing_unexpected() {
    let d = tempfile::tempdir().expect("tempdir");
    sample(d.path());
    let md = metadata_for(d.path());
    write_metadata(d.path(), &md).expect("write md");
    verify_dir(d.path(), &md).expect("verifies");

    // Same size, one byte changed.
    let mut data = fs::read(d.path().join("pages-1.img")).expect("read");
    data[150_000] ^= 1;
    fs::write(d.path().join("pages-1.img"), &data).expect("write");
    match verify_dir(d.path(), &md) {
        Err(ImageError::ChecksumMismatch { file, expected, .. }) => {
            assert_eq!(file, "pages-1.img");
            assert_eq!(expected, md.files["pages-1.img"].sha256);
        }
        other => panic!("expected mismatch, got {other:?}"),
    }
    data[150_000] ^= 1;
    fs::write(d.path().join("pages-1.img"), &data).expect("write");
    verify_dir(d.path(), &md).expect("restored");

    fs::write(d.path().join("extra"), b"?").expect("write");
    assert!(
        matches!(verify_dir(d.path(), &md), Err(ImageError::Unexpected { file }) if file == "extra")
    );
    fs::remove_file(d.path().join("extra")).expect("rm");

    fs::remove_file(d.path().join("sub/y")).expect("rm");
    assert!(
        matches!(verify_dir(d.path(), &md), Err(ImageError::Missing { file }) if file == "sub/y")
    );
}

#[test]
fn verify_refuses_symlinks() {
    let d = tempfile::tempdir().expect("tempdir");
    sample(d.path());
    let md = metadata_for(d.path());
    std::os::unix::fs::symlink("/etc/passwd", d.path().join("sub/link")).expect("symlink");
    assert!(matches!(
        verify_dir(d.path(), &md),
        Err(ImageError::UnsafeEntry { .. })
    ));
}

#[test]
fn metadata_round_trip_and_errors() {
    let d = tempfile::tempdir().expect("tempdir");
    let msg = read_metadata(d.path()).expect_err("none").to_string();
    assert!(msg.contains("not a cedana checkpoint"), "{msg}");
    assert!(msg.contains(&d.path().display().to_string()), "{msg}");

    sample(d.path());
    let mut md = metadata_for(d.path());
    md.timings_ms.insert("criu_dump".into(), 12);
    md.sizes.images_bytes = 300_005;
    md.host.hostname = "h".into();
    write_metadata(d.path(), &md).expect("write");
    let back = read_metadata(d.path()).expect("read");
    assert_eq!(back, md);
    // The metadata file is not part of the digests.
    assert_eq!(digest_dir(d.path()).expect("digest"), md.files);
    // No temp files left behind.
    assert!(fs::read_dir(d.path())
        .expect("ls")
        .filter_map(Result::ok)
        .all(|e| !e.file_name().to_string_lossy().starts_with(".metadata")));

    md.format_version = FORMAT_VERSION + 1;
    write_metadata(d.path(), &md).expect("write");
    let msg = read_metadata(d.path()).expect_err("newer").to_string();
    assert!(msg.contains("upgrade cedana"), "{msg}");

    fs::write(d.path().join(METADATA_FILE), b"{not json").expect("write");
    assert!(matches!(
        read_metadata(d.path()),
        Err(ImageError::Metadata { .. })
    ));
}
