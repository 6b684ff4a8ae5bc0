//! The local store: the commit protocol's guarantees through the trait.

use std::io::{Read, Write};

use super::*;
use crate::image::error::ImageError;
use crate::test_util::sorted_names;

fn put(upload: &mut dyn Upload, rel: &str, bytes: &[u8]) {
    let mut w = upload.create(rel).expect("create");
    w.write_all(bytes).expect("write");
    assert_eq!(w.finish().expect("finish"), bytes.len() as u64);
}

#[test]
fn a_directory_checkpoint_is_published_by_rename_and_never_replaced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = Location::local(tmp.path().join("cks"));
    let at = dir.join("ck1");
    let mut up = LocalStore.begin(&at, Shape::Dir).expect("begin");
    let staging = up.local_dir().expect("written in place").to_path_buf();
    let staged = staging
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(atomic::is_staging_name(&staged), "{staged}");
    fs::write(staging.join("pages-1.img"), b"pages").expect("CRIU's image");
    put(up.as_mut(), "checkpoint/x.img", b"x");
    put(up.as_mut(), "metadata.json", b"{}");
    // Not visible before the commit.
    assert!(!LocalStore.exists(&at).expect("exists"));
    assert_eq!(LocalStore.list(&dir).expect("list"), vec![]);
    assert_eq!(up.commit().expect("commit"), at);
    let mode = fs::metadata(tmp.path().join("cks/ck1"))
        .expect("stat")
        .permissions();
    assert_eq!(mode.mode() & 0o777, CHECKPOINT_DIR_MODE);
    let stat = LocalStore.stat(&at).expect("stat").expect("there");
    assert_eq!((stat.shape, stat.size_bytes), (Shape::Dir, 8));
    let mut files: Vec<String> = LocalStore
        .files(&at)
        .expect("files")
        .into_iter()
        .map(|f| f.rel)
        .collect();
    files.sort();
    assert_eq!(files, ["checkpoint/x.img", "metadata.json", "pages-1.img"]);
    let mut text = String::new();
    let mut r = LocalStore.open(&at, "checkpoint/x.img").expect("open");
    r.read_to_string(&mut text).expect("read");
    assert_eq!(text, "x");
    assert!(LocalStore.open(&at, "../ck1/pages-1.img").is_err());

    // A second checkpoint of the same name is refused, and leaves nothing behind.
    let mut again = LocalStore.begin(&at, Shape::Dir).expect("begin");
    put(again.as_mut(), "metadata.json", b"{\"other\":1}");
    let err = again.commit().expect_err("never replaced");
    assert!(
        matches!(err, StoreError::Image(ImageError::Exists { .. })),
        "{err}"
    );
    assert_eq!(sorted_names(&tmp.path().join("cks")), ["ck1"]);
    assert_eq!(
        fs::read(tmp.path().join("cks/ck1/metadata.json")).expect("kept"),
        b"{}"
    );
}

#[test]
fn a_packed_checkpoint_is_one_object_renamed_into_place() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = Location::local(tmp.path());
    let at = dir.join("ck.tar.zst");
    let mut up = LocalStore.begin(&at, Shape::Packed).expect("begin");
    assert!(up.local_dir().is_none());
    let mut w = up.create("").expect("the object");
    w.write_all(b"archive bytes").expect("write");
    // Written under a staging name, hidden from listings.
    let listed = sorted_names(tmp.path());
    assert!(
        listed.len() == 1 && atomic::is_staging_name(&listed[0]),
        "{listed:?}"
    );
    assert_eq!(LocalStore.list(&dir).expect("list"), vec![]);
    w.finish().expect("finish");
    assert!(up.create("").is_err(), "one object, written once");
    up.commit().expect("commit");
    assert_eq!(sorted_names(tmp.path()), ["ck.tar.zst"]);
    let stat = LocalStore.stat(&at).expect("stat").expect("there");
    assert_eq!((stat.shape, stat.size_bytes), (Shape::Packed, 13));

    // Replacing is refused; the staging file goes.
    let mut again = LocalStore.begin(&at, Shape::Packed).expect("begin");
    put(again.as_mut(), "", b"new");
    assert!(again.commit().is_err());
    assert_eq!(sorted_names(tmp.path()), ["ck.tar.zst"]);
    assert_eq!(
        fs::read(tmp.path().join("ck.tar.zst")).expect("read"),
        b"archive bytes"
    );
}

#[test]
fn an_upload_dropped_uncommitted_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = Location::local(tmp.path());
    let mut up = LocalStore.begin(&dir.join("a"), Shape::Dir).expect("begin");
    put(up.as_mut(), "pages-1.img", b"x");
    drop(up);
    let mut up = LocalStore
        .begin(&dir.join("b.tar"), Shape::Packed)
        .expect("begin");
    put(up.as_mut(), "", b"x");
    drop(up);
    let scratch = LocalStore.scratch_dir(&dir).expect("scratch");
    assert!(atomic::is_staging_name(
        &scratch.file_name().expect("n").to_string_lossy()
    ));
    fs::remove_dir(&scratch).expect("empty");
    assert!(
        sorted_names(tmp.path()).is_empty(),
        "{:?}",
        sorted_names(tmp.path())
    );
}

#[test]
fn list_shows_committed_checkpoints_only_and_delete_removes_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let dir = Location::local(root);
    fs::create_dir(root.join("ck-dir")).expect("mkdir");
    fs::write(root.join("ck-dir/metadata.json"), b"{}").expect("md");
    fs::write(root.join("ck-packed.tar.lz4"), b"x").expect("archive");
    // Not checkpoints: staging and scratch names, a dir without metadata, other files,
    // the kept restore logs.
    fs::create_dir(root.join(".ck.1-0.partial")).expect("staging");
    fs::write(root.join(".ck-packed.tar.zst.1-1.partial"), b"x").expect("partial");
    fs::create_dir(root.join("half")).expect("no metadata");
    fs::write(root.join("notes.txt"), b"x").expect("other");
    fs::create_dir(root.join("cedana-restore-logs")).expect("logs");
    let listed = LocalStore.list(&dir).expect("list");
    let got: Vec<(&str, Shape)> = listed.iter().map(|l| (l.name.as_str(), l.shape)).collect();
    assert_eq!(
        got,
        [("ck-dir", Shape::Dir), ("ck-packed.tar.lz4", Shape::Packed)]
    );
    assert_eq!(listed[0].location, dir.join("ck-dir"));

    for l in &listed {
        LocalStore.delete(&l.location).expect("delete");
        assert!(!LocalStore.exists(&l.location).expect("exists"));
    }
    // Deleting what is not there is not an error.
    LocalStore.delete(&dir.join("ck-dir")).expect("idempotent");
    assert!(LocalStore.list(&dir).expect("list").is_empty());
    assert!(LocalStore
        .list(&dir.join("missing"))
        .expect("none")
        .is_empty());
    assert!(root.join("notes.txt").exists());
}

#[test]
fn remote_locations_are_not_served() {
    let s3 = Location::parse("s3://b/ck").expect("url");
    assert!(matches!(
        LocalStore.stat(&s3),
        Err(StoreError::InvalidLocation { .. })
    ));
    assert!(LocalStore.local_path(&s3).is_none());
}
