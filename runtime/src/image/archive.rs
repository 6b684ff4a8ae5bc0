//! Packing a checkpoint directory into a (compressed) tar archive, and safe unpacking.
//!
//! Archives are written to `OUT.partial`, synced and renamed, so the final name never holds a
//! half-written archive. Unpacking detects the format from the bytes, accepts only regular files
//! and directories with relative, `..`-free paths, and never follows a link.

use std::cell::Cell;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::compression::{detect, Compression};
use super::error::ImageError;
use super::walk::{walk, Entry, Kind};

/// Buffer size for archive and file I/O.
const BUF: usize = 1 << 20;
/// zstd compression level.
const ZSTD_LEVEL: i32 = 3;
/// Permissions of a new archive file or copied checkpoint directory's files.
const ARCHIVE_MODE: u32 = 0o600;
/// Permissions of a new checkpoint directory made by [`pack`] with [`Compression::None`].
const DIR_MODE: u32 = 0o700;
/// Size of a tar block.
const BLOCK: u64 = 512;

/// Packs the contents of `src_dir` into `out` in format `c` (a directory copy for [`Compression::None`]); returns the bytes written.
pub fn pack(src_dir: &Path, out: &Path, c: Compression) -> Result<u64, ImageError> {
    check_out_not_inside(src_dir, out)?;
    let entries = walk(src_dir)?;
    let partial = partial_path(out);
    remove_stale(&partial)?;
    let result = if c == Compression::None {
        fs::DirBuilder::new()
            .mode(DIR_MODE)
            .create(&partial)
            .map_err(|e| ImageError::io(&partial, e))
            .and_then(|()| copy_tree(&entries, &partial, true))
    } else {
        write_archive(&entries, &partial, c)
    };
    let finish = result.and_then(|bytes| {
        fs::rename(&partial, out).map_err(|e| ImageError::io(out, e))?;
        sync_parent(out);
        Ok(bytes)
    });
    if finish.is_err() {
        // Best effort: the original error matters more than a failed cleanup.
        let _ = remove_stale(&partial);
    }
    finish
}

/// Unpacks the checkpoint `archive` (any format, detected from its bytes; a directory is copied) into the existing, empty `dest`; returns the detected format.
pub fn unpack(archive: &Path, dest: &Path) -> Result<Compression, ImageError> {
    let c = detect(archive)?;
    let meta = fs::metadata(dest).map_err(|e| ImageError::io(dest, e))?;
    if !meta.is_dir() {
        return Err(ImageError::io(
            dest,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    if fs::read_dir(dest)
        .map_err(|e| ImageError::io(dest, e))?
        .next()
        .is_some()
    {
        return Err(ImageError::DestNotEmpty {
            path: dest.to_path_buf(),
        });
    }
    let result = if c == Compression::None {
        walk(archive).and_then(|entries| copy_tree(&entries, dest, false).map(|_| ()))
    } else {
        extract(archive, c, dest)
    };
    if result.is_err() {
        // Leave `dest` as empty as it was given; best effort.
        clear_dir(dest);
    }
    result.map(|()| c)
}

/// `out` with ".partial" appended.
fn partial_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Refuses an output path whose directory is `src_dir` or below it.
fn check_out_not_inside(src_dir: &Path, out: &Path) -> Result<(), ImageError> {
    let src = fs::canonicalize(src_dir).map_err(|e| ImageError::io(src_dir, e))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = fs::canonicalize(parent).map_err(|e| ImageError::io(parent, e))?;
    if parent.starts_with(&src) {
        return Err(ImageError::OutputInsideSource {
            src: src_dir.to_path_buf(),
            out: out.to_path_buf(),
        });
    }
    Ok(())
}

/// Removes a leftover file or directory at `path` (without following a link), if any.
fn remove_stale(path: &Path) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(|e| ImageError::io(path, e)),
        Ok(_) => fs::remove_file(path).map_err(|e| ImageError::io(path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io(path, e)),
    }
}

/// Syncs the directory holding `path` so a rename is durable; best effort.
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(parent) {
        let _ = d.sync_all();
    }
}

/// Removes everything inside `dir`; best effort, used to undo a failed unpack.
fn clear_dir(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for ent in rd.flatten() {
            let p = ent.path();
            let _ = match ent.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&p),
                _ => fs::remove_file(&p),
            };
        }
    }
}

/// Creates `path` for writing; fails if anything (a link included) is already there.
fn create_new_file(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Opens a regular file for reading without following a symlink.
fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Copies walked `entries` into the existing directory `dest`; returns the bytes of file data copied.
fn copy_tree(entries: &[Entry], dest: &Path, sync: bool) -> Result<u64, ImageError> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    for e in entries {
        let target = dest.join(&e.rel);
        match e.kind {
            Kind::Dir => fs::create_dir(&target).map_err(|err| ImageError::io(&target, err))?,
            Kind::File => {
                let mut src = open_nofollow(&e.abs).map_err(|err| ImageError::io(&e.abs, err))?;
                let file =
                    create_new_file(&target, e.mode).map_err(|err| ImageError::io(&target, err))?;
                let mut w = BufWriter::with_capacity(BUF, file);
                loop {
                    let n = match src.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        Err(err) => return Err(ImageError::io(&e.abs, err)),
                    };
                    w.write_all(&buf[..n])
                        .map_err(|err| ImageError::io(&target, err))?;
                    total += n as u64;
                }
                let file = w
                    .into_inner()
                    .map_err(|err| ImageError::io(&target, err.into_error()))?;
                if sync {
                    file.sync_all()
                        .map_err(|err| ImageError::io(&target, err))?;
                }
            }
        }
    }
    Ok(total)
}

/// Writes the tar (compressed per `c`) of `entries` to the new file `path`; returns its size.
fn write_archive(entries: &[Entry], path: &Path, c: Compression) -> Result<u64, ImageError> {
    let io_err = |e: io::Error| ImageError::io(path, e);
    // Archives hold process memory: owner-only, like checkpoint directories.
    let file = create_new_file(path, ARCHIVE_MODE).map_err(io_err)?;
    let w = BufWriter::with_capacity(BUF, file);
    let w = match c {
        Compression::None | Compression::Tar => tar_into(entries, w, path)?,
        Compression::Gzip => {
            let enc = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
            tar_into(entries, enc, path)?.finish().map_err(io_err)?
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new().content_checksum(true);
            let enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, w);
            tar_into(entries, enc, path)?
                .finish()
                .map_err(|e| io_err(io::Error::other(e)))?
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL).map_err(io_err)?;
            enc.include_checksum(true).map_err(io_err)?;
            let workers = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            enc.multithread(u32::try_from(workers).unwrap_or(1))
                .map_err(io_err)?;
            tar_into(entries, enc, path)?.finish().map_err(io_err)?
        }
    };
    let file = w.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    Ok(len)
}

/// A reader that counts bytes and remembers whether reading failed.
struct Counting<'a, R> {
    inner: R,
    count: &'a Cell<u64>,
    failed: &'a Cell<bool>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count.set(self.count.get() + n as u64);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed.set(true);
                }
                Err(e)
            }
        }
    }
}

/// Writes a tar of `entries` to `w` (the archive being written is `out`, for errors) and returns `w`.
fn tar_into<W: Write>(entries: &[Entry], w: W, out: &Path) -> Result<W, ImageError> {
    let mut builder = tar::Builder::new(w);
    for e in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(e.mode);
        header.set_mtime(e.mtime);
        header.set_uid(0);
        header.set_gid(0);
        match e.kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder
                    .append_data(&mut header, &e.rel, io::empty())
                    .map_err(|err| ImageError::io(out, err))?;
            }
            Kind::File => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(e.size);
                let file = open_nofollow(&e.abs).map_err(|err| ImageError::io(&e.abs, err))?;
                let count = Cell::new(0);
                let failed = Cell::new(false);
                let reader = BufReader::with_capacity(
                    BUF,
                    Counting {
                        inner: file.take(e.size),
                        count: &count,
                        failed: &failed,
                    },
                );
                builder
                    .append_data(&mut header, &e.rel, reader)
                    .map_err(|err| {
                        ImageError::io(if failed.get() { e.abs.as_path() } else { out }, err)
                    })?;
                if count.get() != e.size {
                    return Err(ImageError::io(
                        &e.abs,
                        io::Error::other(format!(
                            "the file shrank from {} to {} bytes while being packed; make sure nothing writes to the checkpoint directory during pack",
                            e.size,
                            count.get()
                        )),
                    ));
                }
            }
        }
    }
    builder.into_inner().map_err(|err| ImageError::io(out, err))
}

/// Decompresses and extracts the archive `path` (format `c`) into `dest`.
fn extract(path: &Path, c: Compression, dest: &Path) -> Result<(), ImageError> {
    let file = File::open(path).map_err(|e| ImageError::io(path, e))?;
    let raw = BufReader::with_capacity(BUF, file);
    let corrupt = |e: io::Error| ImageError::corrupt(path, e);
    let decoder: Box<dyn Read> = match c {
        Compression::None | Compression::Tar => Box::new(raw),
        Compression::Gzip => Box::new(flate2::bufread::GzDecoder::new(raw)),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(raw)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(raw).map_err(corrupt)?)
        }
    };
    let mut archive = tar::Archive::new(BufReader::with_capacity(BUF, decoder));
    let mut buf = vec![0u8; BUF];
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        extract_entry(&mut entry, path, dest, &mut buf)?;
    }
    // The tar parser stops at the first zero block; the second one must follow, and reading
    // the stream to its end makes the decompressor check its trailer and content checksum.
    let mut rest = archive.into_inner();
    let mut trailer = 0u64;
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(e)),
        };
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(ImageError::corrupt(
                path,
                "unexpected data after the end of the tar archive",
            ));
        }
        trailer += n as u64;
    }
    if trailer < BLOCK {
        return Err(ImageError::corrupt(
            path,
            "the tar end-of-archive marker is missing",
        ));
    }
    Ok(())
}

/// Extracts one tar entry into `dest` after checking it is safe.
fn extract_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    archive: &Path,
    dest: &Path,
    buf: &mut [u8],
) -> Result<(), ImageError> {
    let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    let etype = entry.header().entry_type();
    let is_dir = match etype {
        tar::EntryType::Regular => false,
        tar::EntryType::Directory => true,
        tar::EntryType::Symlink => {
            return Err(ImageError::unsafe_entry(
                name,
                "symbolic links are not allowed in a checkpoint",
            ))
        }
        tar::EntryType::Link => {
            return Err(ImageError::unsafe_entry(
                name,
                "hard links are not allowed in a checkpoint",
            ))
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            return Err(ImageError::unsafe_entry(
                name,
                "device and fifo entries are not allowed in a checkpoint",
            ))
        }
        other => {
            return Err(ImageError::unsafe_entry(
                name,
                format!(
                    "unsupported tar entry type {:?}; checkpoints hold only regular files and directories",
                    other.as_byte() as char
                ),
            ))
        }
    };
    let rel = entry
        .path()
        .map_err(|e| ImageError::unsafe_entry(&name, format!("unreadable path: {e}")))?
        .into_owned();
    let comps = safe_components(&rel, &name)?;
    let Some((last, parents)) = comps.split_last() else {
        if is_dir {
            // "./": the destination itself.
            return Ok(());
        }
        return Err(ImageError::unsafe_entry(name, "the path is empty"));
    };
    let mut target = dest.to_path_buf();
    for comp in parents {
        target.push(comp);
        ensure_dir(&target, &name)?;
    }
    target.push(last);
    if is_dir {
        return ensure_dir(&target, &name);
    }

    let mode = entry
        .header()
        .mode()
        .map_err(|e| ImageError::corrupt(archive, e))?
        & 0o777;
    let mtime = entry.header().mtime().ok();
    let size = entry.size();
    let file = create_new_file(&target, mode).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            ImageError::unsafe_entry(
                &name,
                "the path appears twice in the archive or clashes with an existing entry",
            )
        } else {
            ImageError::io(&target, e)
        }
    })?;
    let mut w = BufWriter::with_capacity(BUF, file);
    let mut written = 0u64;
    loop {
        let n = match entry.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ImageError::corrupt(archive, e)),
        };
        w.write_all(&buf[..n])
            .map_err(|e| ImageError::io(&target, e))?;
        written += n as u64;
    }
    if written != size {
        return Err(ImageError::corrupt(
            archive,
            format!("entry {name:?} ends after {written} of its {size} bytes"),
        ));
    }
    let file = w
        .into_inner()
        .map_err(|e| ImageError::io(&target, e.into_error()))?;
    if let Some(secs) = mtime {
        // Cosmetic; a filesystem without mtime support is not an error.
        let _ = file.set_modified(UNIX_EPOCH + Duration::from_secs(secs));
    }
    Ok(())
}

/// The normal components of an archive path; refuses absolute paths and `..`.
fn safe_components<'p>(rel: &'p Path, name: &str) -> Result<Vec<&'p OsStr>, ImageError> {
    let mut out = Vec::new();
    for comp in rel.components() {
        match comp {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(ImageError::unsafe_entry(
                    name,
                    "the path contains a '..' component",
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ImageError::unsafe_entry(name, "the path is absolute"))
            }
        }
    }
    Ok(out)
}

/// Makes sure `path` is a real directory (not a link), creating it if absent.
fn ensure_dir(path: &Path, name: &str) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ImageError::unsafe_entry(
            name,
            format!("{} already exists and is not a directory", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(path).map_err(|e| ImageError::io(path, e))
        }
        Err(e) => Err(ImageError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
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
            assert!(!partial_path(&out).exists(), "{c}: partial left behind");
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
                Err(_) => eprintln!("{tool} not installed; skipping its check"),
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
        assert!(!inside.exists() && !partial_path(&inside).exists());
        // A symlink in the source.
        std::os::unix::fs::symlink("/etc/passwd", src.join("sub/link")).expect("symlink");
        for c in Compression::ALL {
            let out = tmp.path().join(format!("ck-{c}{}", c.extension()));
            assert!(matches!(
                pack(&src, &out, c),
                Err(ImageError::UnsafeEntry { .. })
            ));
            assert!(!out.exists() && !partial_path(&out).exists(), "{c}");
        }
    }

    #[test]
    fn pack_replaces_stale_partial() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        fs::create_dir(&src).expect("mkdir");
        sample(&src);
        let out = tmp.path().join("ck.tar.gz");
        fs::write(partial_path(&out), b"half an archive").expect("write");
        pack(&src, &out, Compression::Gzip).expect("pack");
        assert!(!partial_path(&out).exists());
        assert_eq!(detect(&out).expect("detect"), Compression::Gzip);
    }
}
