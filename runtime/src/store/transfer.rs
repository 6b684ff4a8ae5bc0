//! Moving a checkpoint's files between a local directory and a store, as streams: a
//! dump's images into an [`Upload`] (metadata.json last, so an object store's listing
//! shows the checkpoint only once complete), and a remote checkpoint back into a private
//! local directory for a restore.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use tempfile::TempDir;

use super::{CheckpointStore, Location, Shape, StoreError, Upload};
use crate::image::atomic;
use crate::image::error::ImageError;
use crate::image::metadata::METADATA_FILE;
use crate::image::walk::{walk, Kind};

/// Copy buffer.
const BUF: usize = 1 << 20;
/// Owner-only: a fetched checkpoint holds process memory.
const PRIVATE: u32 = 0o700;

/// A remote checkpoint fetched into a private temp dir, removed on drop.
#[derive(Debug)]
pub struct Fetched {
    /// The local copy: the checkpoint directory, or the archive.
    pub path: PathBuf,
    _dir: TempDir,
}

/// Copies the checkpoint at `at` into a new private temp dir (named so that a crash's
/// leftover is removed at the next daemon start).
pub fn fetch(store: &dyn CheckpointStore, at: &Location) -> Result<Fetched, StoreError> {
    let stat = store.stat(at)?.ok_or_else(|| StoreError::NotFound {
        location: at.to_string(),
    })?;
    let tmp = std::env::temp_dir();
    let dir = tempfile::Builder::new()
        .prefix(&atomic::scratch_prefix("cedana-fetch"))
        .suffix(atomic::PARTIAL_SUFFIX)
        .tempdir_in(&tmp)
        .map_err(|e| ImageError::io(&tmp, e))?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(PRIVATE))
        .map_err(|e| ImageError::io(dir.path(), e))?;
    let name = at.name().unwrap_or_else(|| "checkpoint".into());
    let path = dir.path().join(&name);
    let t = Instant::now();
    match stat.shape {
        Shape::Dir => {
            fs::DirBuilder::new()
                .mode(PRIVATE)
                .create(&path)
                .map_err(|e| ImageError::io(&path, e))?;
            fetch_dir(store, at, &path)?;
        }
        Shape::Packed => fetch_packed(store, at, &path)?,
    }
    tracing::debug!(
        from = %at,
        to = %path.display(),
        ms = t.elapsed().as_millis() as u64,
        "fetched checkpoint"
    );
    Ok(Fetched { path, _dir: dir })
}

/// Writes every file of `dir` into `upload`, [`PARALLEL`] at a time (a streamed dump's
/// shards go up side by side), metadata.json last and alone; returns the bytes.
pub fn upload_dir(dir: &Path, upload: &mut dyn Upload) -> Result<u64, StoreError> {
    let mut entries: Vec<_> = walk(dir)?
        .into_iter()
        .filter(|e| e.kind == Kind::File)
        .collect();
    // Stable sort: everything else keeps its order, metadata.json goes to the end.
    entries.sort_by_key(|e| e.rel == METADATA_FILE);
    let last = match entries.last() {
        Some(e) if e.rel == METADATA_FILE => entries.pop(),
        _ => None,
    };
    let at = upload.location().clone();
    let mut jobs = Vec::with_capacity(entries.len());
    for e in &entries {
        jobs.push((e.abs.clone(), upload.create(&e.rel)?));
    }
    let mut total = in_parallel(jobs, |(abs, mut w)| {
        let mut src = fs::File::open(&abs).map_err(|err| ImageError::io(&abs, err))?;
        copy(&mut src, &mut w, &abs, &at)?;
        w.finish()
    })?
    .into_iter()
    .sum();
    if let Some(e) = last {
        let mut src = fs::File::open(&e.abs).map_err(|err| ImageError::io(&e.abs, err))?;
        let mut w = upload.create(&e.rel)?;
        copy(&mut src, &mut w, &e.abs, &at)?;
        total += w.finish()?;
    }
    Ok(total)
}

/// Files moved at once between a local directory and a store.
pub const PARALLEL: usize = 4;

/// Runs `work` on every job, [`PARALLEL`] threads at a time; the first error wins.
fn in_parallel<J: Send, T: Send>(
    jobs: Vec<J>,
    work: impl Fn(J) -> Result<T, StoreError> + Sync,
) -> Result<Vec<T>, StoreError> {
    let queue = std::sync::Mutex::new(jobs.into_iter());
    let failed = std::sync::atomic::AtomicBool::new(false);
    let results: Vec<Result<Vec<T>, StoreError>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..PARALLEL)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        if failed.load(std::sync::atomic::Ordering::Relaxed) {
                            return Ok(out);
                        }
                        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                        let Some(job) = job else { return Ok(out) };
                        match work(job) {
                            Ok(t) => out.push(t),
                            Err(e) => {
                                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(StoreError::Io {
                        location: String::new(),
                        context: "a transfer thread panicked".into(),
                        source: io::Error::other("panic"),
                    })
                })
            })
            .collect()
    });
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

/// Copies the directory checkpoint at `at` into the existing, empty, private `dest`,
/// [`PARALLEL`] files at a time.
pub fn fetch_dir(
    store: &dyn CheckpointStore,
    at: &Location,
    dest: &Path,
) -> Result<(), StoreError> {
    let files = store.files(at)?;
    for f in &files {
        let rel = Path::new(&f.rel);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(ImageError::unsafe_entry(&f.rel, "not a plain relative path").into());
        }
        if let Some(parent) = dest.join(rel).parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(PRIVATE)
                .create(parent)
                .map_err(|e| ImageError::io(parent, e))?;
        }
    }
    in_parallel(files, |f| {
        let target = dest.join(&f.rel);
        let mut src = store.open(at, &f.rel)?;
        let mut out = new_file(&target)?;
        copy(&mut src, &mut out, &target, at)
    })?;
    Ok(())
}

/// Copies the packed checkpoint at `at` into the new file `dest`.
pub fn fetch_packed(
    store: &dyn CheckpointStore,
    at: &Location,
    dest: &Path,
) -> Result<(), StoreError> {
    let mut src = store.open(at, "")?;
    let mut out = new_file(dest)?;
    copy(&mut src, &mut out, dest, at)
}

fn new_file(path: &Path) -> Result<fs::File, StoreError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| ImageError::io(path, e).into())
}

/// Copies `src` into `dst`; a failure names the local file `file` and the store's `at`.
fn copy(
    src: &mut dyn Read,
    dst: &mut dyn Write,
    file: &Path,
    at: &Location,
) -> Result<(), StoreError> {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(StoreError::Io {
                    location: at.to_string(),
                    context: format!("read for {}", file.display()),
                    source,
                })
            }
        };
        dst.write_all(&buf[..n]).map_err(|source| StoreError::Io {
            location: at.to_string(),
            context: format!("write {}", file.display()),
            source,
        })?;
    }
    dst.flush().map_err(|source| StoreError::Io {
        location: at.to_string(),
        context: format!("write {}", file.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;
    use crate::store::ObjectWriter;

    /// Records the order files are created in.
    #[derive(Debug)]
    struct Recorder(Location, Vec<String>);

    struct Sink;

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl ObjectWriter for Sink {
        fn finish(self: Box<Self>) -> Result<u64, StoreError> {
            Ok(1)
        }
    }

    impl Upload for Recorder {
        fn location(&self) -> &Location {
            &self.0
        }
        fn create(&mut self, rel: &str) -> Result<Box<dyn ObjectWriter>, StoreError> {
            self.1.push(rel.to_string());
            Ok(Box::new(Sink))
        }
        fn commit(self: Box<Self>) -> Result<Location, StoreError> {
            Ok(self.0)
        }
    }

    #[test]
    fn metadata_json_is_uploaded_last_and_fetched_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("checkpoint")).expect("mkdir");
        for f in ["a.img", "metadata.json", "z.img", "checkpoint/pages.img"] {
            fs::write(src.join(f), f).expect("write");
        }
        let mut rec = Recorder(Location::parse("mem://b/ck").expect("url"), Vec::new());
        assert_eq!(upload_dir(&src, &mut rec).expect("upload"), 4);
        assert_eq!(rec.1.last().map(String::as_str), Some("metadata.json"));
        assert_eq!(rec.1.len(), 4);

        let fetched = fetch(&LocalStore, &Location::local(&src)).expect("fetch");
        assert_eq!(
            fs::read_to_string(fetched.path.join("checkpoint/pages.img")).expect("read"),
            "checkpoint/pages.img"
        );
        let copy = fetched.path.clone();
        drop(fetched);
        assert!(!copy.exists(), "the copy goes with it");
        assert!(fetch(&LocalStore, &Location::local(tmp.path().join("none"))).is_err());
    }
}
