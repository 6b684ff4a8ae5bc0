//! Hashes CRIU's page images (`pages-*.img`, nearly all of a checkpoint's bytes) while
//! CRIU writes them, so the commit does not read them all again after CRIU: on the
//! containerd route that re-read was most of the time a checkpoint spent outside CRIU.
//! CRIU creates each page image and only appends to it. The commit takes a digest from
//! here only for the same file (device and inode) at the same size
//! ([`digest_dir_known`](super::integrity::digest_dir_known) checks the size again);
//! anything else (a file replaced, grown or shrunk after the follower's last read, a
//! read error) is left out and hashed by the commit as before.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::metadata::FileDigest;

/// How long the follower sleeps when CRIU wrote nothing new since its last pass.
const IDLE_POLL: Duration = Duration::from_millis(5);
/// Read buffer (bytes): large reads keep the syscalls per GiB few.
const READ_BUF: usize = 1 << 20;

/// A thread hashing the page images that appear in a directory, until [`finish`](Self::finish).
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<BTreeMap<String, FileDigest>>>,
}

/// One page image being hashed.
struct Followed {
    name: String,
    file: File,
    dev_ino: (u64, u64),
    hasher: Sha256,
    size: u64,
    failed: bool,
}

/// Whether CRIU's file `name` is a page image.
fn is_page_image(name: &str) -> bool {
    name.starts_with("pages-") && name.ends_with(".img")
}

impl Follower {
    /// Starts following `dir` (top level only). Files already there when it starts are
    /// not followed: they were not written by the CRIU run that follows.
    pub fn start(dir: &Path) -> Follower {
        let stop = Arc::new(AtomicBool::new(false));
        let existing = names(dir);
        let (dir, flag) = (dir.to_path_buf(), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("image-follower".into())
            .spawn(move || follow(&dir, &existing, &flag))
            .ok();
        Follower { stop, thread }
    }

    /// Call once the writer (CRIU) is done: reads what is left and returns the digests of
    /// the page images still the same file at the same size, by name.
    pub fn finish(mut self) -> BTreeMap<String, FileDigest> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .and_then(|t| {
                t.thread().unpark();
                t.join().ok()
            })
            .unwrap_or_default()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn names(dir: &Path) -> HashSet<OsString> {
    fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

fn follow(
    dir: &Path,
    existing: &HashSet<OsString>,
    stop: &AtomicBool,
) -> BTreeMap<String, FileDigest> {
    let mut files: Vec<Followed> = Vec::new();
    let mut buf = vec![0u8; READ_BUF];
    loop {
        // Read before the passes: the pass after `stop` sees everything CRIU wrote.
        let last = stop.load(Ordering::Acquire);
        discover(dir, existing, &mut files);
        let mut progressed = false;
        for f in files.iter_mut().filter(|f| !f.failed) {
            progressed |= read_available(f, &mut buf);
        }
        if last {
            break;
        }
        if !progressed {
            // Parked, not slept: `finish` unparks it, so the last pass starts at once.
            std::thread::park_timeout(IDLE_POLL);
        }
    }
    files
        .into_iter()
        .filter(|f| !f.failed && unchanged(&dir.join(&f.name), f.dev_ino, f.size))
        .map(|f| {
            let digest = FileDigest {
                size: f.size,
                sha256: hex::encode(f.hasher.finalize()),
            };
            (f.name, digest)
        })
        .collect()
}

/// Opens the page images that appeared since the last pass.
fn discover(dir: &Path, existing: &HashSet<OsString>, files: &mut Vec<Followed>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for entry in rd.filter_map(|e| e.ok()) {
        let os = entry.file_name();
        let Some(name) = os.to_str() else { continue };
        if !is_page_image(name) || existing.contains(&os) || files.iter().any(|f| f.name == name) {
            continue;
        }
        let path: PathBuf = entry.path();
        let Ok(file) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        else {
            continue;
        };
        let Ok(meta) = file.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        files.push(Followed {
            name: name.to_string(),
            file,
            dev_ino: (meta.dev(), meta.ino()),
            hasher: Sha256::new(),
            size: 0,
            failed: false,
        });
    }
}

/// Hashes what was appended to `f` since the last read; whether anything was.
fn read_available(f: &mut Followed, buf: &mut [u8]) -> bool {
    let mut progressed = false;
    loop {
        match f.file.read(buf) {
            Ok(0) => return progressed,
            Ok(n) => {
                f.hasher.update(&buf[..n]);
                f.size += n as u64;
                progressed = true;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                f.failed = true;
                return progressed;
            }
        }
    }
}

/// Whether `path` is still the followed file, at the size that was hashed.
fn unchanged(path: &Path, dev_ino: (u64, u64), size: u64) -> bool {
    fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_file() && (m.dev(), m.ino()) == dev_ino && m.len() == size)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::image::integrity::digest_dir;

    #[test]
    fn digests_files_written_while_following() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("pages-9.img"), b"old").unwrap();
        let follower = Follower::start(d.path());
        let mut f = File::create(d.path().join("pages-1.img")).unwrap();
        for i in 0..50u8 {
            f.write_all(&[i; 4096]).unwrap();
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(7));
            }
        }
        fs::write(d.path().join("core-1.img"), b"not a page image").unwrap();
        let got = follower.finish();
        let all = digest_dir(d.path()).unwrap();
        assert_eq!(got.len(), 1, "only the new page image: {got:?}");
        assert_eq!(got["pages-1.img"], all["pages-1.img"]);
    }

    #[test]
    fn a_replaced_file_is_left_to_the_commit() {
        let d = tempfile::tempdir().unwrap();
        let follower = Follower::start(d.path());
        let p = d.path().join("pages-1.img");
        fs::write(&p, [1u8; 8192]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // Same size, other inode: must not be taken from the follower.
        fs::remove_file(&p).unwrap();
        fs::write(&p, [2u8; 8192]).unwrap();
        assert!(follower.finish().is_empty());
    }
}
