//! Support for the runc end-to-end tests: a busybox bundle builder (runwasi's
//! `WasiTestBuilder` shape), a runtime handle (runc or cedana-runc with a private
//! `--root`), and a guard that deletes the container when the test ends.

#![allow(dead_code)] // each test file uses a different part

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

// The runc tests' counters are read with the same helper as the process tests'.
#[allow(unused_imports)] // not every test file counts
pub use cedana_e2e::next_after;
use cedana_e2e::{bin, busybox_rootfs, e2e_enabled, skip, wait_for, which, Env, Run};

/// Whether runc and busybox are installed; otherwise [`skip`]s (a failure under
/// `CEDANA_TEST_E2E=1`).
#[track_caller]
pub fn runc_available() -> bool {
    if !e2e_enabled() {
        return false;
    }
    for tool in ["/usr/sbin/runc", "/bin/busybox"] {
        if !Path::new(tool).exists() && which(tool.rsplit('/').next().unwrap_or(tool)).is_none() {
            return skip(&format!("{tool} not installed"), "run `make deps`");
        }
    }
    true
}

/// The real runc.
pub fn runc_bin() -> PathBuf {
    which("runc").unwrap_or_else(|| PathBuf::from("/usr/sbin/runc"))
}

/// Network setup of a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// runc spec's default: its own, empty network namespace.
    Own,
}

/// Builds `dir/rootfs` (busybox-static, every applet a symlink) and `dir/config.json`
/// from `runc spec`, with no terminal, a writable root, no rlimits (they must not exceed
/// this host's hard limits), a cgroup of its own and `args` as the process.
pub fn build_bundle(dir: &Path, args: &[&str], _net: Net) {
    let rootfs = dir.join("rootfs");
    busybox_rootfs(&rootfs, &["data"]);
    let out = Command::new(runc_bin())
        .args(["spec", "--bundle"])
        .arg(dir)
        .output()
        .expect("runc spec");
    assert!(out.status.success(), "runc spec: {out:?}");
    let path = dir.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("read spec")).expect("spec json");
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
    spec["root"]["readonly"] = false.into();
    // A cgroup of this bundle's own: runc's default path is the container id, and tests
    // running an `orig` at once would share it (one's freeze or delete reaching the
    // other's container).
    let own = dir.display().to_string().replace('/', "_");
    spec["linux"]["cgroupsPath"] = format!("/cedana-e2e/{own}").into();
    if let Some(p) = spec["process"].as_object_mut() {
        p.remove("rlimits");
    }
    fs::write(&path, serde_json::to_vec_pretty(&spec).expect("json")).expect("write spec");
}

/// A bundle whose container talks TCP to itself over loopback: an echo server and a
/// client sending 1, 2, 3, ... whose echoes go to /tmp/echo. The container brings its own
/// `lo` up (CAP_NET_ADMIN); the bundle has no hook (restores must set `lo` up themselves).
pub fn build_tcp_bundle(dir: &Path) {
    let script = "ip link set lo up; nc -l -p 5000 -e cat & sleep 0.5; \
                  i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done \
                  | nc 127.0.0.1 5000 > /tmp/echo";
    build_bundle(dir, &["sh", "-c", script], Net::Own);
    let config = dir.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&fs::read(&config).expect("spec")).expect("json");
    for set in ["bounding", "effective", "permitted"] {
        if let Some(caps) = spec["process"]["capabilities"][set].as_array_mut() {
            caps.push("CAP_NET_ADMIN".into());
        }
    }
    fs::write(&config, serde_json::to_vec_pretty(&spec).expect("json")).expect("spec");
}

/// `cp -a src dst`: a fresh copy of a rootfs.
pub fn copy_tree(src: &Path, dst: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .expect("cp");
    assert!(st.success(), "cp -a {} {}", src.display(), dst.display());
}

/// A runtime binary (runc or cedana-runc) with a private state root.
#[derive(Debug, Clone)]
pub struct Rt {
    /// Binary.
    pub bin: PathBuf,
    /// `--root`.
    pub root: PathBuf,
}

impl Rt {
    /// The real runc.
    pub fn runc(root: &Path) -> Rt {
        Rt {
            bin: runc_bin(),
            root: root.to_path_buf(),
        }
    }

    /// Our wrapper, wrapping the real runc.
    pub fn cedana(root: &Path) -> Rt {
        Rt {
            bin: bin("cedana-runc"),
            root: root.to_path_buf(),
        }
    }

    /// A command with `--root`.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("CEDANA_RUNTIME_BINARY", runc_bin());
        c.arg("--root").arg(&self.root);
        c.stdin(Stdio::null());
        c
    }

    /// Runs and collects output (never for `run -d`/`restore -d`: the container would
    /// hold our pipes; see [`Rt::detached`]).
    pub fn out(&self, args: &[&str]) -> Run {
        let o = self.cmd().args(args).output().expect("run runtime");
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Runs a command that leaves a container behind, with stdio on /dev/null (the
    /// container inherits the runtime's stdio, and CRIU can only checkpoint host files
    /// it can reach, like /dev/null). For `restore`, whose container gets its stdio
    /// from the images, stderr goes to a file read back. Returns (exit code, stderr).
    pub fn detached(&self, args: &[&str], cwd: &Path) -> (i32, String) {
        let err = tempfile::NamedTempFile::new().expect("tmp");
        let stderr = if matches!(args.first(), Some(&"run") | Some(&"create")) {
            Stdio::null()
        } else {
            Stdio::from(err.reopen().expect("reopen"))
        };
        let st = self
            .cmd()
            .args(args)
            .current_dir(cwd)
            .stdout(Stdio::null())
            .stderr(stderr)
            .status()
            .expect("run runtime");
        (
            st.code().unwrap_or(-1),
            fs::read_to_string(err.path()).unwrap_or_default(),
        )
    }

    /// `run -d --bundle B ID` through [`Rt::detached`]; panics with the runtime's error
    /// if it fails.
    pub fn run_detached(&self, bundle: &Path, id: &str) {
        let b = bundle.to_str().expect("utf8 bundle path");
        let (code, err) = self.detached(&["run", "-d", "--bundle", b, id], bundle);
        assert_eq!(code, 0, "run {id}: {err}");
    }

    /// `state ID` as JSON, if the container exists.
    pub fn state(&self, id: &str) -> Option<serde_json::Value> {
        let r = self.out(&["state", id]);
        (r.code == 0).then(|| serde_json::from_str(&r.stdout).expect("state json"))
    }

    /// Waits for the container's status.
    pub fn wait_status(&self, id: &str, status: &str) {
        wait_for(
            &format!("container {id} to be {status}"),
            Duration::from_secs(10),
            || {
                let s = self.state(id)?;
                (s["status"] == status).then_some(())
            },
        );
    }
}

/// Container id `name` made unique to `env`: runc's default cgroup path is the id, so
/// two tests (of any checkout on the host) running an `orig` at once share a cgroup
/// and one's delete kills the other's container.
pub fn unique_id(env: &Env, name: &str) -> String {
    let dir = env
        .dir
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let tag: String = dir.chars().rev().take(6).collect();
    format!("{name}-{tag}")
}

/// Deletes a container (force) when dropped.
pub struct Ctr {
    /// Runtime (the real runc is used for cleanup).
    pub root: PathBuf,
    /// Container id.
    pub id: String,
}

impl Ctr {
    /// Guards container `id` in state root `root`.
    pub fn new(root: &Path, id: &str) -> Ctr {
        Ctr {
            root: root.to_path_buf(),
            id: id.to_string(),
        }
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = Rt::runc(&self.root).out(&["delete", "--force", &self.id]);
    }
}

/// Numbers in a file, one per line.
pub fn numbers(path: &Path) -> Vec<u64> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Waits until the last number in `path` exceeds `above`; returns it.
pub fn wait_above(path: &Path, above: u64) -> u64 {
    wait_for(
        &format!("{} to pass {above}", path.display()),
        Duration::from_secs(15),
        || numbers(path).last().copied().filter(|v| *v > above),
    )
}

/// The counter workload: appends 1, 2, 3, ... to /tmp/count every 50 ms.
pub const COUNTER: &[&str] = &[
    "sh",
    "-c",
    "i=0; while true; do i=$((i+1)); echo $i >> /tmp/count; sleep 0.05; done",
];

/// A running counter container `orig` under a private state root, and a pristine copy of
/// its rootfs in `fresh/rootfs` to restore into; `orig` and `copy` are deleted on drop.
pub struct CounterPair {
    /// `--root` of the runtime.
    pub root: PathBuf,
    /// `orig`'s bundle.
    pub bundle: PathBuf,
    /// A bundle dir holding the pristine rootfs copy.
    pub fresh: PathBuf,
    /// The real runc on `root`.
    pub rt: Rt,
    _guards: [Ctr; 2],
}

impl CounterPair {
    /// Builds the bundle, copies its rootfs, runs `orig` and waits until it counts.
    pub fn start(env: &Env) -> CounterPair {
        let root = env.path("runc-root");
        let bundle = env.path("bundle");
        build_bundle(&bundle, COUNTER, Net::Own);
        // The pristine rootfs, copied before the container changes anything.
        let fresh = env.path("fresh");
        fs::create_dir_all(&fresh).expect("mkdir");
        copy_tree(&bundle.join("rootfs"), &fresh.join("rootfs"));
        let rt = Rt::runc(&root);
        let guards = [Ctr::new(&root, "orig"), Ctr::new(&root, "copy")];
        rt.run_detached(&bundle, "orig");
        wait_above(&bundle.join("rootfs/tmp/count"), 5);
        CounterPair {
            root,
            bundle,
            fresh,
            rt,
            _guards: guards,
        }
    }

    /// `restore runc --path P --bundle fresh --id copy --root R --detach`, with
    /// `--no-server` unless through the daemon.
    pub fn restore_args<'a>(&'a self, path: &'a str, daemon: bool) -> Vec<&'a str> {
        let mut args = vec![
            "restore",
            "runc",
            "--path",
            path,
            "--bundle",
            self.fresh.to_str().expect("utf8"),
            "--id",
            "copy",
            "--root",
            self.root.to_str().expect("utf8"),
            "--detach",
        ];
        if !daemon {
            args.push("--no-server");
        }
        args
    }

    /// Runs `cedana --json` with [`CounterPair::restore_args`], output captured (the
    /// restored container takes its stdio from the checkpoint, not from these pipes).
    pub fn restore(&self, env: &Env, path: &str, daemon: bool) -> std::process::Output {
        env.cmd()
            .arg("--json")
            .args(self.restore_args(path, daemon))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("restore")
    }
}

/// `cedana --json dump runc ID --root R --dir <checkpoints> --no-server`; the
/// checkpoint's path and metadata.
pub fn dump_runc(env: &Env, root: &Path, id: &str) -> (String, serde_json::Value) {
    let dir = env.checkpoints();
    let v = env
        .cedana(&[
            "--json",
            "dump",
            "runc",
            id,
            "--root",
            root.to_str().expect("utf8"),
            "--dir",
            dir.to_str().expect("utf8"),
            "--no-server",
        ])
        .ok()
        .json();
    let path = v["path"].as_str().expect("path").to_string();
    (path, v["metadata"].clone())
}

/// `cedana restore runc --path P --bundle B --id ID --root R --detach --no-server`,
/// which must succeed.
pub fn restore_runc_detached(env: &Env, root: &Path, path: &str, bundle: &Path, id: &str) {
    let out = env
        .cmd()
        .args([
            "--json",
            "restore",
            "runc",
            "--path",
            path,
            "--bundle",
            bundle.to_str().expect("utf8"),
            "--id",
            id,
            "--root",
            root.to_str().expect("utf8"),
            "--detach",
            "--no-server",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("restore");
    assert!(
        out.status.success(),
        "restore {id}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
