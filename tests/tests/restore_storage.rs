//! Restore's storage: archive bombs are refused before they fill the disk (with no
//! manifest, and with a manifest that lies), nothing is left behind, and a failed CRIU
//! restore leaves its log in one bounded place that the error names.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use cedana_e2e::*;

/// A small tmpfs mounted on a temp dir, unmounted (lazily) on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("cedana-e2e-tmpfs-")
            .tempdir()
            .expect("temp dir");
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0700").as_str()),
        )
        .expect("mount tmpfs");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes in use on the tmpfs.
    fn used(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(self.path()).expect("statvfs");
        (s.blocks() - s.blocks_free()) * s.fragment_size()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Samples the tmpfs' usage until stopped; returns the peak.
struct Peak {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl Peak {
    fn watch(root: PathBuf) -> Peak {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Ok(s) = nix::sys::statvfs::statvfs(&root) {
                    peak = peak.max((s.blocks() - s.blocks_free()) * s.fragment_size());
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            peak
        });
        Peak { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("watcher")
    }
}

const GIB2: u64 = 2 << 30;

fn header(path: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).expect("path");
    h.set_size(size);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

/// Writes `ARCHIVE` as zstd: the `before` entries, then `pages-1.img` whose header says
/// `declared` bytes followed by 2 GiB of zeros streamed through the encoder (never held
/// in memory), then the end-of-archive marker.
fn write_bomb(archive: &Path, before: &[(&str, Vec<u8>)], declared: u64) {
    let file = fs::File::create(archive).expect("create");
    let mut enc = zstd::Encoder::new(file, 1).expect("zstd");
    for (name, data) in before {
        enc.write_all(header(name, data.len() as u64).as_bytes())
            .expect("write");
        enc.write_all(data).expect("write");
        let pad = (512 - data.len() % 512) % 512;
        enc.write_all(&vec![0; pad]).expect("write");
    }
    enc.write_all(header("pages-1.img", declared).as_bytes())
        .expect("write");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(GIB2 >> 20) {
        enc.write_all(&zeros).expect("write");
    }
    enc.write_all(&[0u8; 1024]).expect("write");
    enc.finish().expect("finish");
}

/// Restores `archive` with TMPDIR at `tmpdir`; returns the run and the peak bytes in use
/// on `fs` above what was used before.
fn restore_measured(env: &Env, fs: &Tmpfs, archive: &Path, tmpdir: &Path) -> (Run, u64) {
    let before = fs.used();
    let peak = Peak::watch(fs.path().to_path_buf());
    let out = env
        .cmd()
        .env("TMPDIR", tmpdir)
        .args(["restore", "process", "--path"])
        .arg(archive)
        .arg("--no-server")
        .output()
        .expect("run cedana");
    let peak = peak.stop().saturating_sub(before);
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (run, peak)
}

/// Every entry below `dir`, as names relative to it.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).expect("ls").flatten() {
            let p = e.path();
            if e.file_type().expect("type").is_dir() {
                todo.push(p.clone());
            }
            out.push(p.strip_prefix(dir).expect("below").display().to_string());
        }
    }
    out.sort();
    out
}

/// The layout both bomb tests use: the archive in `ck/`, TMPDIR `tmp/`, on one tmpfs.
fn bomb_layout(fs: &Tmpfs) -> (PathBuf, PathBuf) {
    let (ck, tmp) = (fs.path().join("ck"), fs.path().join("tmp"));
    fs::create_dir(&ck).expect("mkdir");
    fs::create_dir(&tmp).expect("mkdir");
    (ck.join("bomb.tar.zst"), tmp)
}

const FEW_MIB: u64 = 4 << 20;

#[test]
fn archive_bomb_without_manifest_is_refused_before_filling_the_disk() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let fs = Tmpfs::new("64m");
    let (archive, tmpdir) = bomb_layout(&fs);
    // What an older cedana wrote, minus metadata.json: no manifest.
    write_bomb(&archive, &[], GIB2);
    let size = fs::metadata(&archive).expect("stat").len();
    assert!(size < 1 << 20, "the bomb is small: {size}");
    let (run, peak) = restore_measured(&env, &fs, &archive, &tmpdir);
    let run = run.fails_with("not enough free space");
    assert!(peak < FEW_MIB, "restore wrote {peak} bytes: {}", run.stderr);
    assert_eq!(listing(fs.path()), ["ck", "ck/bomb.tar.zst", "tmp"]);
}

#[test]
fn archive_bomb_with_a_lying_manifest_is_refused_before_writing_it() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let fs = Tmpfs::new("64m");
    let (archive, tmpdir) = bomb_layout(&fs);
    let manifest = serde_json::json!({
        "manifest_version": 1,
        "entries": [
            {"path": "pages-1.img", "type": "file", "size": 1024},
            {"path": "metadata.json", "type": "file", "size": 65536, "size_is_limit": true},
        ],
    });
    let manifest = serde_json::to_vec(&manifest).expect("json");
    // The tar header owns up to 2 GiB: refused on the header.
    write_bomb(&archive, &[("manifest.json", manifest.clone())], GIB2);
    let (run, peak) = restore_measured(&env, &fs, &archive, &tmpdir);
    run.fails_with("does not match its manifest");
    assert!(peak < FEW_MIB, "restore wrote {peak} bytes");
    assert_eq!(listing(fs.path()), ["ck", "ck/bomb.tar.zst", "tmp"]);
    // The header says 1 KiB too, and 2 GiB of zeros follow it: at most 1 KiB is written,
    // and the endless "padding" after the end marker is refused.
    write_bomb(&archive, &[("manifest.json", manifest)], 1024);
    let (run, peak) = restore_measured(&env, &fs, &archive, &tmpdir);
    run.fails_with("corrupt");
    assert!(peak < FEW_MIB, "restore wrote {peak} bytes");
    assert_eq!(listing(fs.path()), ["ck", "ck/bomb.tar.zst", "tmp"]);
}

fn dump_counter(env: &Env, name: &str, log: &Path) -> (PathBuf, Workload) {
    let w = Workload::start(log, &["counter", "50"]);
    wait_count_above(log, 2);
    let pid = w.pid.to_string();
    let out = env
        .cedana(&[
            "--json",
            "dump",
            "process",
            &pid,
            "--no-server",
            "--leave-running",
            "--name",
            name,
        ])
        .ok();
    (out.json()["path"].as_str().expect("path").into(), w)
}

#[test]
fn failed_restore_keeps_its_log_beside_the_checkpoint_and_nothing_else() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let tmpdir = env.path("tmp");
    fs::create_dir(&tmpdir).expect("mkdir");
    let restore = |path: &Path, extra: &[&str]| {
        let out = env
            .cmd()
            .env("TMPDIR", &tmpdir)
            .args(extra)
            .args(["restore", "process", "--path"])
            .arg(path)
            .arg("--no-server")
            .output()
            .expect("run cedana");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let log = env.path("c.log");
    let (path, w) = dump_counter(&env, "gone", &log);
    // Refused before CRIU runs (the PID is still taken): no work dir, no log.
    restore(&path, &["--set", "criu.pid_wait_timeout_ms=200"]).fails_with("still in use");
    assert_eq!(listing(&tmpdir), Vec::<String>::new());
    drop(w);
    // CRIU fails: the file its stdout went to is gone.
    fs::remove_file(&log).expect("rm log");
    let run = restore(&path, &[]);
    assert_ne!(run.code, 0, "restore should fail: {}", run.stdout);
    let logs = env.checkpoints().join("cedana-restore-logs");
    let kept: Vec<PathBuf> = fs::read_dir(&logs)
        .expect("logs dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept_path = kept[0].display().to_string();
    assert!(
        run.stderr.contains(&kept_path),
        "the error names the kept log {kept_path}: {}",
        run.stderr
    );
    assert!(fs::read_to_string(&kept[0])
        .expect("read")
        .contains("Error"));
    assert_eq!(listing(&tmpdir), Vec::<String>::new(), "work dir left");
    let hidden: Vec<String> = listing(&env.checkpoints())
        .into_iter()
        .filter(|n| n.contains(".restore-"))
        .collect();
    assert!(hidden.is_empty(), "unpack dir left: {hidden:?}");
    // Bounded: more failures keep only the newest few.
    for _ in 0..11 {
        restore(&path, &[]);
    }
    let n = fs::read_dir(&logs).expect("logs").count();
    assert!(n <= 10, "{n} logs kept");
}
