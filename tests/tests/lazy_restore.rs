//! Lazy restore (`cedana restore --lazy`): real CRIU restores the tree without its
//! memory and `criu lazy-pages` serves the pages over userfaultfd. A workload holding a
//! buffer whose checksum it gave before the dump must count on from where it was and
//! compute the same checksum after; a page server that dies must fail the restore with
//! its own story, leave the checkpoint restorable, and no lazy-pages may outlive its work;
//! a corrupt chunk met while serving kills the tree, whose memory would be wrong. A full
//! streamed restore of the same workload must give back the same checksum too.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cedana_e2e::*;

/// A workload buffer big enough that its pages are really served lazily, small enough
/// for a debug build's checksum.
const MIB: &str = "64";

/// A free TCP address on the loopback.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// Sends `what` to the workload at `addr` and returns its one-line answer.
fn ask(addr: &str, what: &str) -> String {
    let mut conn = wait_for(
        &format!("{addr} to accept"),
        Duration::from_secs(10),
        || TcpStream::connect(addr).ok(),
    );
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    writeln!(conn, "{what}").expect("send");
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).expect("answer");
    line.trim().to_string()
}

/// Waits until the workload has filled its memory and listens.
fn wait_ready(log: &Path) {
    wait_for("the workload to be ready", Duration::from_secs(20), || {
        std::fs::read_to_string(log)
            .ok()?
            .lines()
            .any(|l| l == "ready")
            .then_some(())
    })
}

/// PIDs of `criu lazy-pages` processes serving images of `env` (tests run side by side).
fn lazy_pages_processes(env: &Env) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let ours = env.path("");
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            let serves_ours = args
                .iter()
                .any(|a| std::str::from_utf8(a).is_ok_and(|a| Path::new(a).starts_with(&ours)));
            args.get(1) == Some(&&b"lazy-pages"[..]) && serves_ours && pid_alive(*pid)
        })
        .collect()
}

/// Starts a memserve workload, waits until it counts, dumps it with `dump_args` and
/// returns (workload, its address, the checkpoint, its checksum answer, its last count).
fn dumped_memserve(env: &Env, dump_args: &[&str]) -> (Workload, String, PathBuf, String, u64) {
    dumped_memserve_with(env, &[], dump_args)
}

/// [`dumped_memserve`] with `extra` arguments for the workload.
fn dumped_memserve_with(
    env: &Env,
    extra: &[&str],
    dump_args: &[&str],
) -> (Workload, String, PathBuf, String, u64) {
    let log = env.path("memserve.log");
    let addr = free_addr();
    let mut args = vec!["memserve", MIB, &addr];
    args.extend_from_slice(extra);
    let mut w = Workload::start(&log, &args);
    wait_ready(&log);
    wait_count_above(&log, 2);
    let sum = ask(&addr, "sum");
    assert!(sum.starts_with("sum "), "the workload answers: {sum}");
    let pid = w.pid.to_string();
    let mut args = vec!["--json", "dump", "process", &pid];
    args.extend_from_slice(dump_args);
    let out = env.cedana(&args).ok();
    w.reap();
    let path = PathBuf::from(out.json()["path"].as_str().expect("path"));
    let last = last_count(&log).expect("counted");
    (w, addr, path, sum, last)
}

/// Restores the checkpoint at `path` lazily without the daemon (returning once every
/// page is in); the restored root's PID.
fn restore_lazily(env: &Env, path: &str) -> i32 {
    let out = env
        .cedana(&[
            "--json",
            "restore",
            "process",
            "--path",
            path,
            "--lazy",
            "--no-server",
        ])
        .ok();
    out.json()["pid"].as_i64().expect("pid") as i32
}

/// The restored workload counts on from `last` and its memory checks out.
fn assert_continues(env: &Env, addr: &str, sum: &str, last: u64) {
    let log = env.path("memserve.log");
    assert_eq!(next_after(&log, last), last + 1, "the counter restarted");
    assert_eq!(ask(addr, "sum"), sum, "the restored buffer differs");
}

#[test]
fn lazy_restore_through_the_daemon_counts_on_and_its_memory_checks_out() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    env.start_daemon();
    // The default dump: streamed shards, decoded into image files for lazy-pages.
    let (_w, addr, path, sum, last) = dumped_memserve(&env, &[]);
    assert!(path.join("streams.json").is_file(), "{}", path.display());
    let p = path.display().to_string();
    let out = env
        .cedana(&["--json", "restore", "process", "--path", &p, "--lazy"])
        .ok();
    let pid = out.json()["pid"].as_i64().expect("pid") as i32;
    let _guard = KillOnDrop(pid);
    assert_continues(&env, &addr, &sum, last);
    // Every page served: lazy-pages exits and the decoded copy beside the checkpoint goes.
    let parent = path.parent().expect("parent").to_path_buf();
    wait_for(
        "lazy-pages to exit and its files to go",
        Duration::from_secs(30),
        || {
            let left: Vec<String> = dir_names(&parent)
                .into_iter()
                .filter(|n| n.contains(".restore"))
                .collect();
            (lazy_pages_processes(&env).is_empty() && left.is_empty()).then_some(())
        },
    );
    assert!(pid_alive(pid), "the restored workload runs on");
    assert_eq!(ask(&addr, "sum"), sum, "after the last page came in");
}

/// The full (not lazy) restore of the default streamed dump, for comparison: its pages
/// reach CRIU spliced from the decoders' buffers (`streamer/feed.rs`), which are reused
/// only once CRIU has read them; and its anonymous zero pages are left out
/// (`streamer/hollow.rs`), while those of a private file mapping, where a missing page
/// would read the file's bytes, are not. Any of these wrong shows in the checksum.
#[test]
fn a_full_streamed_restore_gives_back_the_same_memory() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let file = env.path("mapped").display().to_string();
    let (_w, addr, path, sum, last) = dumped_memserve_with(&env, &[&file], &["--no-server"]);
    assert!(path.join("streams.json").is_file(), "{}", path.display());
    let p = path.display().to_string();
    let out = env
        .cedana(&["--json", "restore", "process", "--path", &p, "--no-server"])
        .ok();
    let v = out.json();
    let _guard = KillOnDrop(v["pid"].as_i64().expect("pid") as i32);
    assert_continues(&env, &addr, &sum, last);
    // 64 MiB of heap (24 MiB of it zeros) and 16 MiB mapped: without zero pages left
    // out, CRIU would restore at least 20480 pages.
    let restored = v["criu_stats"]["restore"]["pages_restored"]
        .as_u64()
        .expect("pages_restored");
    assert!(
        restored < 20480 - 2048,
        "{restored} pages restored: the anonymous zero pages were not left out"
    );
}

/// A stand-in for CRIU that runs the real one for everything, but whose `lazy-pages`
/// dies (SIGKILL) right after opening its socket, as a page server crashing would.
fn dying_lazy_pages(env: &Env) -> PathBuf {
    let real = which("criu").expect("criu on PATH (make deps)");
    let script = env.path("criu-dying-lazy-pages");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/bash
real={real}
[ "$1" = lazy-pages ] || exec "$real" "$@"
args=("$@"); own=$(mktemp -d)
for i in "${{!args[@]}}"; do
  [ "${{args[$i]}}" = -W ] && work=${{args[$((i+1))]}} && args[$((i+1))]=$own
done
"$real" "${{args[@]}}" & lp=$!
until [ -S "$own/lazy-pages.socket" ]; do sleep 0.01; done
kill -9 $lp; wait $lp
echo "stand-in: lazy-pages killed after opening its socket" >> "$own/lazy-pages.log"
mv "$own"/* "$work"/ && rmdir "$own"
kill -9 $$
"#,
            real = real.display()
        ),
    )
    .expect("write the stand-in");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

#[test]
fn a_dying_page_server_fails_clearly_and_the_checkpoint_restores_again() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    // A plain directory of images, served in place.
    let (_w, addr, path, sum, last) =
        dumped_memserve(&env, &["--no-server", "--compression", "none"]);
    assert!(!path.join("streams.json").exists(), "{}", path.display());
    let before = dir_names(&path);
    let p = path.display().to_string();
    let out = env
        .cmd()
        .env("CEDANA_CRIU_BINARY_PATH", dying_lazy_pages(&env))
        .args(["restore", "process", "--path", &p, "--lazy", "--no-server"])
        .output()
        .expect("run cedana");
    let failed = Run::from_output(out);
    assert_ne!(failed.code, 0, "{failed:?}");
    for needle in [
        "criu lazy-pages",
        "killed by signal 9",
        "stand-in: lazy-pages killed",
        "the checkpoint is unchanged",
    ] {
        assert!(
            failed.stderr.contains(needle),
            "{needle:?} in {}",
            failed.stderr
        );
    }
    assert!(
        lazy_pages_processes(&env).is_empty(),
        "a lazy-pages was left behind"
    );
    assert_eq!(dir_names(&path), before, "the checkpoint changed");
    // Restorable again, lazily, with the real CRIU; --no-server returns once every page
    // is in, so no lazy-pages remains when it does.
    let _guard = KillOnDrop(restore_lazily(&env, &p));
    assert!(
        lazy_pages_processes(&env).is_empty(),
        "lazy-pages outlived --no-server"
    );
    assert_continues(&env, &addr, &sum, last);
}

/// Kills a restored process group on drop (a tree whose root leads it, child and all).
struct KillGroupOnDrop(i32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::SIGKILL,
        );
    }
}

#[test]
fn a_lazily_restored_tree_gets_every_task_its_own_pages() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    // A shell whose child holds the buffer: two tasks, two pagemaps, both served lazily.
    let log = env.path("memserve.log");
    let addr = free_addr();
    let script = format!(
        "{} memserve {MIB} {addr} >> {} 2>&1 & wait",
        bin("cedana-workload").display(),
        log.display()
    );
    let mut sh = std::process::Command::new("setsid");
    sh.args(["sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut sh = sh.spawn().expect("start the shell");
    let root = sh.id() as i32;
    wait_ready(&log);
    wait_count_above(&log, 2);
    let sum = ask(&addr, "sum");
    let root_s = root.to_string();
    let out = env
        .cedana(&["--json", "dump", "process", &root_s, "--no-server"])
        .ok();
    let _ = sh.wait();
    let path = PathBuf::from(out.json()["path"].as_str().expect("path"));
    assert!(path.join("streams.json").is_file(), "{}", path.display());
    let last = last_count(&log).expect("counted");
    let pid = restore_lazily(&env, &path.display().to_string());
    let _guard = KillGroupOnDrop(pid);
    assert_eq!(pid, root, "the shell comes back as the root");
    assert_continues(&env, &addr, &sum, last);
}

/// Flips one byte in the middle of a stored chunk of the largest page image of the
/// streamed checkpoint at `path` (the workload's buffer: lazy pages); returns the shard
/// and the byte's offset, to flip it back.
fn corrupt_a_lazy_chunk(path: &Path) -> (PathBuf, u64) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path.join("streams.json")).expect("read the index"))
            .expect("parse the index");
    let pages = index["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter(|f| f["name"].as_str().is_some_and(|n| n.starts_with("pages-")))
        .max_by_key(|f| f["size"].as_u64())
        .expect("a page image");
    let stored: Vec<&serde_json::Value> = pages["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .filter(|c| c["kind"] != "zero")
        .collect();
    let chunk = stored[stored.len() / 2];
    let shard = index["shards"][chunk["shard"].as_u64().expect("shard") as usize]
        .as_str()
        .expect("shard name");
    let len = chunk["stored"]
        .as_u64()
        .or(chunk["len"].as_u64())
        .expect("len");
    let at = chunk["offset"].as_u64().expect("offset") + len / 2;
    let shard = path.join(shard);
    flip_byte(&shard, at);
    (shard, at)
}

fn flip_byte(file: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .expect("open the shard");
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).expect("read");
    f.write_all_at(&[b[0] ^ 0xff], at).expect("write");
}

#[test]
fn a_corrupt_chunk_met_while_serving_kills_the_tree_and_names_the_page_server() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    // The default dump: streamed; its lazy pages are served from the shards as asked.
    let (_w, addr, path, sum, last) = dumped_memserve(&env, &["--no-server"]);
    let (shard, at) = corrupt_a_lazy_chunk(&path);
    let p = path.display().to_string();
    let failed = env.cedana(&["restore", "process", "--path", &p, "--lazy", "--no-server"]);
    assert_ne!(failed.code, 0, "{failed:?}");
    for needle in [
        "our page server",
        "pages-",
        "failed their check",
        "was killed, as its memory would be incomplete",
    ] {
        assert!(
            failed.stderr.contains(needle),
            "{needle:?} in {}",
            failed.stderr
        );
    }
    assert!(
        TcpStream::connect(&addr).is_err(),
        "the tree restored on wrong memory still answers"
    );
    assert!(
        lazy_pages_processes(&env).is_empty(),
        "a lazy-pages was left behind"
    );
    let parent = path.parent().expect("parent");
    assert!(
        !dir_names(parent).iter().any(|n| n.contains(".restore")),
        "the private images were left behind: {:?}",
        dir_names(parent)
    );
    // Nothing else of the checkpoint was touched: mended, it restores lazily again.
    flip_byte(&shard, at);
    let _guard = KillOnDrop(restore_lazily(&env, &p));
    assert_continues(&env, &addr, &sum, last);
}

#[test]
fn lazy_restore_of_a_container_is_refused_with_what_to_do() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let out = env.cedana(&[
        "restore",
        "runc",
        "--path",
        "/nonexistent",
        "--bundle",
        "/nonexistent",
        "--id",
        "x",
        "--lazy",
        "--no-server",
    ]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("drop --lazy"), "{}", out.stderr);
}
