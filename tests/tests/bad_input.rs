//! Bad input: each case fails with its own clear message and a non-zero exit, and
//! leaves the workload and the filesystem as they were.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cedana_e2e::*;

fn checkpoint_of_counter(env: &Env, name: &str) -> (PathBuf, Workload) {
    // The zstd archive (a dump streams by default): these tests damage one file.
    checkpoint_of_counter_with(env, name, &[], &["--compression", "zstd"])
}

/// A `--leave-running` checkpoint of a counter, with `global` flags before the command
/// (`--set` must go there: one after the command replaces the env's) and `extra` dump
/// flags.
fn checkpoint_of_counter_with(
    env: &Env,
    name: &str,
    global: &[&str],
    extra: &[&str],
) -> (PathBuf, Workload) {
    let log = env.path(&format!("{name}.log"));
    let w = Workload::start(&log, &["counter", "50"]);
    wait_count_above(&log, 2);
    let pid = w.pid.to_string();
    let mut args = global.to_vec();
    args.extend([
        "--json",
        "dump",
        "process",
        &pid,
        "--no-server",
        "--leave-running",
        "--name",
        name,
    ]);
    args.extend_from_slice(extra);
    let out = env.cedana(&args).ok();
    let path = out.json()["path"].as_str().expect("path").into();
    (path, w)
}

fn restore_fails(env: &Env, path: &Path, needle: &str) {
    let p = path.to_string_lossy().to_string();
    env.cedana(&["restore", "process", "--path", &p, "--no-server"])
        .fails_with(needle);
}

#[test]
fn no_such_pid() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    env.cedana(&["dump", "process", "999999", "--no-server"])
        .fails_with("no such process");
}

#[test]
fn dump_into_a_non_empty_target_leaves_it_and_the_process_alone() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let target = env.checkpoints().join("taken");
    std::fs::create_dir_all(&target).expect("mkdir");
    std::fs::write(target.join("precious"), b"keep me").expect("write");
    let log = env.path("c.log");
    let w = Workload::start(&log, &["counter", "50"]);
    wait_count_above(&log, 1);
    let pid = w.pid.to_string();
    env.cedana(&[
        "dump",
        "process",
        &pid,
        "--no-server",
        "--name",
        "taken",
        "--compression",
        "none",
    ])
    .fails_with("already exists");
    assert_eq!(
        std::fs::read(target.join("precious")).expect("read"),
        b"keep me"
    );
    assert!(w.alive());
}

#[test]
fn unknown_compression_lists_the_valid_ones() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let log = env.path("c.log");
    let w = Workload::start(&log, &["counter", "50"]);
    let pid = w.pid.to_string();
    env.cedana(&[
        "dump",
        "process",
        &pid,
        "--no-server",
        "--compression",
        "rar",
    ])
    .fails_with("zstd");
    assert!(w.alive());
}

#[test]
fn truncated_archive_is_refused_before_restore() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let (path, w) = checkpoint_of_counter(&env, "trunc");
    drop(w);
    let len = std::fs::metadata(&path).expect("stat").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_len(len / 2).expect("truncate");
    restore_fails(&env, &path, "truncated or corrupt");
}

#[test]
fn archive_with_one_flipped_byte_is_refused() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let (path, w) = checkpoint_of_counter(&env, "flip");
    drop(w);
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .expect("open")
        .read_to_end(&mut bytes)
        .expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&path, &bytes).expect("write");
    let p = path.to_string_lossy().to_string();
    let out = env.cedana(&["restore", "process", "--path", &p, "--no-server"]);
    assert_ne!(
        out.code, 0,
        "a corrupted archive must not restore: {}",
        out.stdout
    );
    let msg = out.stderr.to_lowercase();
    assert!(
        msg.contains("corrupt") || msg.contains("checksum"),
        "should say the archive is corrupt: {}",
        out.stderr
    );
}

#[test]
fn archive_with_a_parent_dir_entry_is_refused() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let evil = env.path("evil.tar.zst");
    // A tar whose entry climbs out of the extraction dir; the name is written into the
    // header by hand because tar::Builder refuses such paths.
    let mut tar = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar);
        let data = b"pwned";
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().expect("gnu").name[..12].copy_from_slice(b"../escaped.x");
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &data[..]).expect("append");
        b.finish().expect("finish");
    }
    let mut enc =
        zstd::Encoder::new(std::fs::File::create(&evil).expect("create"), 3).expect("zstd");
    enc.write_all(&tar).expect("write");
    enc.finish().expect("finish");
    restore_fails(&env, &evil, "..");
    assert!(!std::env::temp_dir().join("escaped.x").exists());
    assert!(!env.path("escaped.x").exists());
}

#[test]
fn criu_missing_from_path_is_explained() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let log = env.path("c.log");
    let w = Workload::start(&log, &["counter", "50"]);
    wait_count_above(&log, 1);
    let pid = w.pid.to_string();
    let out = env
        .cmd()
        .env("PATH", "/usr/bin:/bin")
        .args(["dump", "process", &pid, "--no-server"])
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("criu") && err.contains("make deps"), "{err}");
    assert!(w.alive());
    let v = last_count(&log).expect("count");
    wait_count_above(&log, v);
}

#[test]
fn cli_without_a_daemon_says_how_to_start_it() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    env.cedana(&["ps"]).fails_with("cedana daemon start");
}

#[test]
fn checkpoint_dir_is_private() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let (path, _w) = checkpoint_of_counter(&env, "private");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o077, 0, "checkpoints hold process memory: {mode:o}");
}

/// Flips one byte in the middle of the first `pages-*.img` of a checkpoint directory;
/// returns the file's name.
fn flip_page_byte_in_dir(dir: &Path) -> String {
    let name = std::fs::read_dir(dir)
        .expect("ls checkpoint")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("pages-") && n.ends_with(".img"))
        .expect("a pages-*.img in the checkpoint");
    let file = dir.join(&name);
    let mut bytes = std::fs::read(&file).expect("read pages");
    assert!(!bytes.is_empty(), "{name} is empty");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, bytes).expect("write pages");
    name
}

/// Flips one byte in the middle of the data of the first `pages-*.img` member of an
/// uncompressed tar, in place (headers and the tar's own checksums stay valid, so only
/// the sha256 in metadata.json can catch it); returns the member's name.
fn flip_page_byte_in_tar(archive: &Path) -> String {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).expect("open tar"));
    let (name, offset, size) = tar
        .entries()
        .expect("tar entries")
        .map(|e| e.expect("tar entry"))
        .find_map(|e| {
            let name = e.path().ok()?.file_name()?.to_string_lossy().into_owned();
            (name.starts_with("pages-") && name.ends_with(".img")).then(|| {
                let size = e.header().size().expect("member size");
                (name, e.raw_file_position(), size)
            })
        })
        .expect("a pages-*.img member in the archive");
    assert!(size > 0, "{name} is empty");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(archive)
        .expect("open tar for writing");
    use std::io::{Seek, SeekFrom};
    let at = offset + size / 2;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.read_exact(&mut b).expect("read byte");
    b[0] ^= 0x01;
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&b).expect("write byte");
    name
}

/// The promise: restore verifies every file's sha256 before CRIU starts. A byte flipped
/// inside the memory pages (which CRIU itself would restore without complaint) must be
/// refused naming the file, CRIU must never run (a recording wrapper is CRIU), and the
/// dumped PID must not come back.
fn flipped_page_byte_is_refused_before_criu(compression: &str) {
    let env = Env::new();
    let name = format!("pages-{compression}");
    let criu = CriuRecorder::new(&env.path("criu"));
    let setting = criu.setting();
    let (path, w) = checkpoint_of_counter_with(
        &env,
        &name,
        &["--set", &setting],
        &["--compression", compression],
    );
    // The control: the dump ran CRIU through the wrapper, so it is wired in.
    assert!(
        !criu.calls().is_empty(),
        "the CRIU wrapper saw no call from the dump"
    );
    criu.clear();
    assert!(path.starts_with(env.checkpoints()), "{}", path.display());
    let pid = w.pid;
    drop(w); // killed and reaped: its PID is free for a restore to reuse
    assert!(!pid_alive(pid));
    let member = if compression == "none" {
        flip_page_byte_in_dir(&path)
    } else {
        flip_page_byte_in_tar(&path)
    };
    let p = path.to_string_lossy().to_string();
    let out = env.cedana(&[
        "--set",
        &setting,
        "--json",
        "restore",
        "process",
        "--path",
        &p,
        "--no-server",
    ]);
    let _guard = out
        .json_opt()
        .and_then(|v| v["pid"].as_i64())
        .map(|p| KillOnDrop(p as i32));
    assert_ne!(
        out.code, 0,
        "{compression}: a checkpoint with a flipped byte in {member} restored: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains(&member),
        "{compression}: the error names {member}: {}",
        out.stderr
    );
    assert!(
        criu.calls().is_empty(),
        "{compression}: CRIU ran before the digests were checked: {:?}",
        criu.calls()
    );
    assert!(!pid_alive(pid), "{compression}: PID {pid} came back");
}

#[test]
fn flipped_page_byte_in_a_tar_is_refused_before_criu_runs() {
    if !e2e_enabled() {
        return;
    }
    flipped_page_byte_is_refused_before_criu("tar");
}

#[test]
fn flipped_page_byte_in_a_dir_is_refused_before_criu_runs() {
    if !e2e_enabled() {
        return;
    }
    flipped_page_byte_is_refused_before_criu("none");
}
