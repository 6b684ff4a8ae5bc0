//! Bad input: each case fails with its own clear message and a non-zero exit, and
//! leaves the workload and the filesystem as they were.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cedana_e2e::*;

fn checkpoint_of_counter(env: &Env, name: &str) -> (PathBuf, Workload) {
    let log = env.path(&format!("{name}.log"));
    let w = Workload::start(&log, &["counter", "50"]);
    wait_count_above(&log, 2);
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
