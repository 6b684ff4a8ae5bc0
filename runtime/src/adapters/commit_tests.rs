//! Tests of the commit protocol's committer.

use super::*;
use crate::store::local::LocalStore;
use crate::store::Shape;
use crate::test_util::sorted_names;

/// CRIU's images in a scratch dir, committed into the local store.
fn commit_into(dir: &Path, name: &str, c: Compression) -> Result<DumpResponse, EngineError> {
    let store: Arc<dyn CheckpointStore> = Arc::new(LocalStore);
    let at = Location::local(dir.join(format!("{name}{}", c.extension())));
    let shape = match c {
        Compression::None => Shape::Dir,
        _ => Shape::Packed,
    };
    let upload = store.begin(&at, shape)?;
    let images = match upload.local_dir() {
        Some(d) => d.to_path_buf(),
        None => store.scratch_dir(&Location::local(dir))?,
    };
    fs::write(images.join("pages-1.img"), vec![7u8; 4096]).expect("image");
    fs::write(images.join("inventory.img"), b"inv").expect("image");
    let target = CommitTarget::store(Arc::clone(&store), upload, images.clone(), c);
    let committer = Committer::new(target, name.into(), CheckpointKind::PROCESS, Instant::now());
    let result = committer.commit(Metadata::default());
    committer.abandon();
    if c != Compression::None {
        let _ = fs::remove_dir_all(&images);
    }
    result?;
    committer
        .take_committed()
        .ok_or_else(|| EngineError::Internal("nothing committed".into()))
}

#[test]
fn commits_through_the_store_once_per_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for c in [Compression::None, Compression::Zstd] {
        let resp = commit_into(tmp.path(), "ck", c).expect("commit");
        assert_eq!(resp.path, tmp.path().join(format!("ck{}", c.extension())));
        assert_eq!(resp.metadata.files.len(), 2);
        let md = match c {
            Compression::None => integrity::read_metadata(&resp.path).expect("metadata"),
            _ => {
                let out = tempfile::tempdir().expect("out");
                let u = archive::unpack_checkpoint(&resp.path, out.path()).expect("unpack");
                let md = integrity::read_metadata(out.path()).expect("metadata");
                integrity::verify_digests(&md, &u.digests).expect("digests");
                md
            }
        };
        assert_eq!(md.files, resp.metadata.files);
        let err = commit_into(tmp.path(), "ck", c).expect_err("never replaced");
        assert!(err.to_string().contains("already exists"), "{err}");
    }
    // Only the two checkpoints: no staging path survived the refused commits.
    assert_eq!(sorted_names(tmp.path()), ["ck", "ck.tar.zst"]);
}

/// The pages of `path` that are dirty or under writeback (cachestat(2), Linux 6.5):
/// bytes that a crash now would lose.
fn unwritten_pages(path: &Path) -> Option<u64> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        cache: u64,
        dirty: u64,
        writeback: u64,
        evicted: u64,
        recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451;
    let file = fs::File::open(path).ok()?;
    let whole = Range { off: 0, len: 0 };
    let mut st = Stat::default();
    // SAFETY: an open fd, and both structs laid out as the kernel's.
    let r = unsafe { libc::syscall(SYS_CACHESTAT, file.as_raw_fd(), &whole, &mut st, 0u32) };
    (r == 0).then_some(st.dirty + st.writeback)
}

#[test]
fn an_image_path_commit_before_a_kill_leaves_no_image_bytes_only_in_memory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let images = tmp.path().join("images");
    fs::create_dir(&images).expect("images dir");
    let pages = images.join("pages-1.img");
    fs::write(&pages, vec![7u8; 8 << 20]).expect("image");
    fs::write(images.join("core-1.img"), b"core").expect("image");
    // What runc's CRIU leaves: images only in the page cache.
    match unwritten_pages(&pages) {
        Some(n) if n > 0 => {}
        other => {
            eprintln!(
                "skipped: {} keeps no dirty pages to observe ({other:?})",
                tmp.path().display()
            );
            return;
        }
    }
    let target = CommitTarget::ImagePath {
        images: images.clone(),
        durable: true,
    };
    let committer = Committer::new(target, "ck".into(), CheckpointKind::PROCESS, Instant::now());
    committer.commit(Metadata::default()).expect("commit");
    for f in [pages, images.join(METADATA_FILE)] {
        assert_eq!(
            unwritten_pages(&f),
            Some(0),
            "{} is not on disk yet",
            f.display()
        );
    }
    let md = integrity::read_metadata(&images).expect("metadata");
    integrity::verify_listed(&images, &md).expect("digests");
}
