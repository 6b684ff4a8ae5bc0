//! A private containerd for the end-to-end tests: started in a temp dir with its own
//! sockets, root and state, with the workspace's target dir first on its PATH (so it finds
//! `containerd-shim-cedana-v2`), and torn down in `Drop` with every task, shim and mount it
//! made. Also a small builder for a busybox OCI image (no registry here).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::{bin_dir, wait_for, Run};

/// Our runtime name.
pub const CEDANA: &str = "io.containerd.cedana.v2";
/// The reference runtime.
pub const RUNC: &str = "io.containerd.runc.v2";
/// The test image's name.
pub const IMAGE: &str = "docker.io/library/cedana-busybox:test";

/// Whether containerd, ctr, runc and busybox are installed; otherwise [`crate::skip`]s
/// (a failure under `CEDANA_TEST_E2E=1`).
#[track_caller]
pub fn containerd_available() -> bool {
    for tool in ["containerd", "ctr", "runc", "busybox"] {
        if crate::which(tool).is_none() {
            return crate::skip(&format!("{tool} not installed"), "run `make deps`");
        }
    }
    true
}

/// A running private containerd.
pub struct Containerd {
    /// Temp dir holding config, sockets, root and state.
    pub dir: TempDir,
    /// The containerd namespace every `ctr` call uses: unique, so runtimes' state dirs
    /// (`/run/containerd/runc/<namespace>`) never meet another test's.
    pub namespace: String,
    child: Option<Child>,
    /// Exec ids handed out by [`counts`](Self::counts): containerd refuses a reused one.
    execs: AtomicU32,
}

/// A container command that appends 1, 2, 3, ... to /count every 0.1 s: a restored
/// file shows where the checkpoint stopped and what came next.
pub const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i >> /count; sleep 0.1; done";

impl Containerd {
    /// Starts containerd (CRI off) and waits until it answers.
    pub fn start() -> Containerd {
        Containerd::start_with(|d| {
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = d.join("c.sock").display(),
            )
        })
    }

    /// Starts containerd with the config `config(dir)` gives for its temp dir (which
    /// must put root, state and the gRPC socket `dir/c.sock` there) and waits until it
    /// answers.
    pub fn start_with(config: impl FnOnce(&Path) -> String) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("cedana-ctrd-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let d = dir.path();
        fs::write(d.join("config.toml"), config(d)).expect("write containerd config");
        let child = spawn_containerd(d);
        let namespace = format!(
            "cedana-e2e-{}",
            d.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.rsplit('-').next())
                .unwrap_or("x")
        );
        let c = Containerd {
            dir,
            namespace,
            child: Some(child),
            execs: AtomicU32::new(0),
        };
        wait_for("containerd to answer", Duration::from_secs(20), || {
            (c.ctr(&["version"]).code == 0).then_some(())
        });
        c
    }

    /// Every number in container `id`'s /count (see [`COUNTER`]), read with a fresh exec.
    pub fn counts(&self, id: &str) -> Vec<u64> {
        let n = self.execs.fetch_add(1, Ordering::Relaxed);
        let exec_id = format!("cat-{n}");
        self.ctr(&[
            "task",
            "exec",
            "--exec-id",
            &exec_id,
            id,
            "/bin/cat",
            "/count",
        ])
        .stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
    }

    /// The last number in container `id`'s /count, if it has one yet.
    pub fn last_count(&self, id: &str) -> Option<u64> {
        self.counts(id).last().copied()
    }

    /// Waits until `id`'s counter passes `above`; returns it.
    pub fn wait_count_above(&self, id: &str, above: u64) -> u64 {
        wait_for(
            &format!("{id}'s counter to pass {above}"),
            Duration::from_secs(30),
            || self.last_count(id).filter(|v| *v > above),
        )
    }

    /// Kills containerd (SIGKILL, as a crash would) and starts it again on the same
    /// root, state and socket; its shims live on. Waits until it answers.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.child = Some(spawn_containerd(self.dir.path()));
        wait_for(
            "containerd to answer again",
            Duration::from_secs(20),
            || (self.ctr(&["version"]).code == 0).then_some(()),
        );
    }

    /// Imports the busybox image under `name` (as a README's examples name it).
    pub fn import_busybox_as(&self, name: &str) {
        let tar = self.dir.path().join("busybox-named.tar");
        build_busybox_image(&self.dir.path().join("image-build-named"), &tar, name);
        let tar = tar.display().to_string();
        let r = self.ctr(&["image", "import", &tar]);
        assert_eq!(r.code, 0, "image import failed: {r:?}");
    }

    /// The containerd socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    /// A `ctr` command against this containerd.
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.socket())
            .args(["--namespace", &self.namespace])
            .args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `ctr ARGS` (with a 120 s limit).
    pub fn ctr(&self, args: &[&str]) -> Run {
        let mut c = Command::new("timeout");
        c.arg("120")
            .arg("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(Stdio::null());
        let out = c.output().expect("run ctr");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// containerd's log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The last 30 lines of containerd's log.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A private containerd with the busybox image imported, or None (with the reason
    /// printed) when the end-to-end tests cannot run here.
    #[track_caller]
    pub fn setup() -> Option<Containerd> {
        if !crate::e2e_enabled() || !containerd_available() {
            return None;
        }
        let c = Containerd::start();
        c.import_busybox();
        Some(c)
    }

    /// Runs `ctr ARGS`, panicking with containerd's log unless it succeeded; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.ctr(args);
        assert_eq!(
            r.code,
            0,
            "ctr {args:?} failed: {}{}\ncontainerd log tail:\n{}",
            r.stdout,
            r.stderr,
            self.log_tail()
        );
        r.stdout
    }

    /// `ctr run -d --runtime RUNTIME [FLAGS..] IMAGE ID CMD..`: container `id` of the test
    /// image, detached; `runtime` is the runtime name then any `ctr run` flags.
    pub fn run_detached(&self, runtime: &[&str], id: &str, cmd: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--runtime"];
        args.extend_from_slice(runtime);
        args.extend([IMAGE, id]);
        args.extend_from_slice(cmd);
        self.ok(&args)
    }

    /// The STATUS column of `ctr task ls` for `id`, if it has a task.
    pub fn task_status(&self, id: &str) -> Option<String> {
        self.ok(&["task", "ls"]).lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.get(2).unwrap_or(&"").to_string())
        })
    }

    /// The PID column of `ctr task ls` for `id` (its init, as a host PID), if it has a task.
    pub fn task_pid(&self, id: &str) -> Option<i32> {
        self.ok(&["task", "ls"]).lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.get(1)?.parse().ok())?
        })
    }

    /// Kills `id`'s task, waits until it is stopped, and deletes task and container.
    pub fn kill_and_remove(&self, id: &str) {
        self.ok(&["task", "kill", "-s", "KILL", id]);
        crate::wait_for(&format!("{id} to stop"), Duration::from_secs(10), || {
            (self.task_status(id).as_deref() == Some("STOPPED")).then_some(())
        });
        self.ok(&["task", "delete", id]);
        self.ok(&["containers", "delete", id]);
    }

    /// Builds the busybox image (once per containerd) and imports it.
    pub fn import_busybox(&self) {
        let tar = self.dir.path().join("busybox-oci.tar");
        build_busybox_image(&self.dir.path().join("image-build"), &tar, IMAGE);
        let tar = tar.display().to_string();
        let r = self.ctr(&["image", "import", &tar]);
        assert_eq!(r.code, 0, "image import failed: {r:?}");
    }

    /// Every container id known to containerd.
    pub fn containers(&self) -> Vec<String> {
        self.ctr(&["containers", "list", "-q"])
            .stdout
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Kills and removes every task and container.
    pub fn remove_all(&self) {
        for id in self.containers() {
            let _ = self.ctr(&["task", "kill", "-s", "KILL", &id]);
            let _ = wait_until(Duration::from_secs(5), || {
                !self
                    .ctr(&["task", "ls"])
                    .stdout
                    .lines()
                    .any(|l| l.starts_with(&format!("{id} ")) && !l.contains("STOPPED"))
            });
            let _ = self.ctr(&["task", "delete", "--force", &id]);
            let _ = self.ctr(&["containers", "delete", &id]);
        }
    }

    /// PIDs of live (not zombie) shims started by this containerd.
    pub fn live_shims(&self) -> Vec<i32> {
        let needle = self.socket().display().to_string();
        let mut pids = Vec::new();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("containerd-shim")
                && cmdline.contains(&needle)
                && crate::pid_alive(pid)
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Asserts that every shim of this containerd exits within 10 s.
    pub fn assert_no_shims_left(&self) {
        assert!(
            wait_until(Duration::from_secs(10), || self.live_shims().is_empty()),
            "shims left: {:?}",
            self.live_shims()
        );
    }

    /// Mount points under this containerd's dirs.
    pub fn mounts(&self) -> Vec<String> {
        let d = self.dir.path().display().to_string();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&d))
            .collect()
    }
}

/// Polls `f` until true or `timeout`; returns whether it became true.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_all();
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Shims outlive containerd by design: stop the ones this test made.
        for pid in self.live_shims() {
            crate::kill(pid);
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        // The runtimes' state dir for our namespace (empty once every task is gone).
        let _ = fs::remove_dir(Path::new("/run/containerd/runc").join(&self.namespace));
    }
}

/// Starts containerd on `dir/config.toml`, logging to `dir/containerd.log` (appended, so
/// a restart keeps the first run's lines).
fn spawn_containerd(d: &Path) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join("containerd.log"))
        .expect("containerd log");
    // DIR/bin first: where a test puts stand-in shims (see `cri::STANDIN_HANDLER`).
    let path = format!(
        "{}:{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        d.join("bin").display(),
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Its temp files (checkpoints on their way into the content store) go with the dir:
    // a containerd killed by a test leaves them behind.
    let tmp = d.join("tmp");
    fs::create_dir_all(&tmp).expect("containerd's temp dir");
    Command::new("containerd")
        .arg("--config")
        .arg(d.join("config.toml"))
        .env("PATH", path)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .spawn()
        .expect("start containerd")
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Writes an OCI image archive `out` holding one layer: a busybox-static rootfs.
pub fn build_busybox_image(work: &Path, out: &Path, name: &str) {
    build_busybox_image_with(work, out, name, &["/bin/sh"]);
}

/// [`build_busybox_image`] whose image config runs `cmd` by default (a CRI sandbox runs
/// its image's command, so the offline pause image is busybox that sleeps).
pub fn build_busybox_image_with(work: &Path, out: &Path, name: &str, cmd: &[&str]) {
    let rootfs = work.join("rootfs");
    crate::busybox_rootfs(&rootfs, &["etc", "root"]);
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    fs::write(rootfs.join("etc/group"), "root:x:0:\n").expect("group");

    let mut layer = tar::Builder::new(Vec::new());
    layer.follow_symlinks(false);
    layer.append_dir_all(".", &rootfs).expect("layer tar");
    let layer = layer.into_inner().expect("layer tar");
    let layer_digest = sha256_hex(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    })
    .to_string()
    .into_bytes();
    let config_digest = sha256_hex(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer.len(),
        }],
    })
    .to_string()
    .into_bytes();
    let manifest_digest = sha256_hex(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": "test",
            },
        }],
    })
    .to_string()
    .into_bytes();

    let mut oci = tar::Builder::new(fs::File::create(out).expect("create image tar"));
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        oci.append_data(&mut h, path, data)
            .expect("image tar entry");
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    add(&format!("blobs/sha256/{manifest_digest}"), &manifest);
    add(&format!("blobs/sha256/{config_digest}"), &config);
    add(&format!("blobs/sha256/{layer_digest}"), &layer);
    oci.finish().expect("image tar");
}
