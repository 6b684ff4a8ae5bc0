//! containerd's own runc shim (`io.containerd.runc.v2`) with `BinaryName = cedana-runc`
//! (`ctr run --runc-binary`): every runc call of the shim goes through our wrapper;
//! `ctr task checkpoint --image-path` and `ctr container checkpoint --task` +
//! `ctr container restore --live` work, and the restored counter carries on.

mod runc_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cedana_e2e::{bin, bin_dir, wait_for, Run};
use runc_support::runc_available;

const IMAGE: &str = "docker.io/library/cedana-runc-busybox:test";

/// A private containerd in a temp dir, torn down with its shims and mounts.
struct Ctrd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Ctrd {
    fn start() -> Ctrd {
        let dir = tempfile::Builder::new()
            .prefix("cedana-runc-ctrd-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{0}/c.sock\"\n[ttrpc]\n  address = \"{0}/c.sock.ttrpc\"\n",
            d.display()
        );
        fs::write(d.join("config.toml"), config).expect("config");
        let log = fs::File::create(d.join("containerd.log")).expect("log");
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Ctrd { dir, child };
        wait_for("containerd", Duration::from_secs(20), || {
            (c.ctr(&["version"]).code == 0).then_some(())
        });
        c
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    fn ctr(&self, args: &[&str]) -> Run {
        let out = Command::new("timeout")
            .arg("120")
            .arg("ctr")
            .arg("--address")
            .arg(self.sock())
            .arg("--namespace")
            .arg(self.namespace())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ctr");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A namespace of our own: containerd's runc shim keeps its state in the global
    /// `/run/containerd/runc/<namespace>`, shared with any other containerd.
    fn namespace(&self) -> String {
        let name = self.dir.path().file_name().expect("name").to_string_lossy();
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Last number of /tmp/count inside container `id` (`head` for the first).
    fn count(&self, id: &str, which: &str, exec_id: &str) -> Option<u64> {
        let r = self.ctr(&[
            "task",
            "exec",
            "--exec-id",
            exec_id,
            id,
            which,
            "-n1",
            "/tmp/count",
        ]);
        r.stdout.trim().parse().ok()
    }
}

impl Drop for Ctrd {
    fn drop(&mut self) {
        let _ = self.ctr(&["task", "kill", "-s", "KILL", "c1"]);
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.ctr(&["task", "rm", "-f", "c1"]);
        let _ = self.ctr(&["container", "rm", "c1"]);
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let _ = self.child.wait();
        // Shims started for this containerd (their command line names our socket).
        let sock = self.sock().display().to_string();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&sock) {
                cedana_e2e::kill(pid);
            }
        }
        let _ = fs::remove_dir(Path::new("/run/containerd/runc").join(self.namespace()));
        let d = self.dir.path().display().to_string();
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&d))
            .collect();
        ours.reverse();
        for m in ours {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

/// An OCI image archive holding one layer: a busybox-static rootfs.
fn build_image(work: &Path) -> PathBuf {
    let rootfs = work.join("rootfs");
    runc_support::build_bundle(work, &["sh"], runc_support::Net::Own);
    fs::create_dir_all(rootfs.join("etc")).expect("etc");
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    let blobs = work.join("blobs");
    fs::create_dir_all(&blobs).expect("blobs");
    let layer = blobs.join("layer.tar");
    let mut t = tar::Builder::new(fs::File::create(&layer).expect("layer"));
    t.follow_symlinks(false);
    t.append_dir_all(".", &rootfs).expect("layer tar");
    t.finish().expect("layer");
    drop(t);
    let put = |name: &str, data: &[u8]| -> (String, usize) {
        let p = blobs.join(name);
        fs::write(&p, data).expect("blob");
        (sha256_hex(&p), data.len())
    };
    let layer_digest = sha256_hex(&layer);
    let layer_len = fs::metadata(&layer).expect("layer").len();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    })
    .to_string();
    let (config_digest, config_len) = put("config", config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_digest}"), "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_digest}"), "size": layer_len}],
    })
    .to_string();
    let (manifest_digest, manifest_len) = put("manifest", manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{manifest_digest}"), "size": manifest_len,
                       "annotations": {"io.containerd.image.name": IMAGE,
                                       "org.opencontainers.image.ref.name": "test"}}],
    })
    .to_string();
    let out = work.join("image.tar");
    let mut oci = tar::Builder::new(fs::File::create(&out).expect("image"));
    let mut add = |name: &str, src: &Path| {
        oci.append_path_with_name(src, name).expect("entry");
    };
    fs::write(work.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
    fs::write(work.join("index.json"), index).expect("index");
    add("oci-layout", &work.join("oci-layout"));
    add("index.json", &work.join("index.json"));
    for (digest, name) in [
        (&manifest_digest, "manifest"),
        (&config_digest, "config"),
        (&layer_digest, "layer.tar"),
    ] {
        add(&format!("blobs/sha256/{digest}"), &blobs.join(name));
    }
    oci.finish().expect("image tar");
    out
}

fn available() -> bool {
    if !runc_available() {
        return false;
    }
    for tool in ["containerd", "ctr", "sha256sum"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            eprintln!("skipping containerd test: {tool} not installed (`make deps`)");
            return false;
        }
    }
    true
}

#[test]
fn containerd_runc_shim_with_cedana_runc_checkpoints_and_restores() {
    if !available() {
        return;
    }
    let ctrd = Ctrd::start();
    let image = build_image(&ctrd.dir.path().join("image"));
    let r = ctrd.ctr(&["image", "import", image.to_str().expect("utf8")]);
    assert_eq!(r.code, 0, "import: {r:?}");
    let wrapper = bin("cedana-runc");
    let r = ctrd.ctr(&[
        "run",
        "-d",
        "--null-io",
        "--runc-binary",
        wrapper.to_str().expect("utf8"),
        IMAGE,
        "c1",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i >> /tmp/count; sleep 0.05; done",
    ]);
    assert_eq!(r.code, 0, "run: {r:?}\n{}", ctrd.log());
    wait_for("counting", Duration::from_secs(10), || {
        ctrd.count("c1", "tail", "e0").filter(|v| *v > 5)
    });

    // The shim's `runc checkpoint --image-path P --work-path W` goes through the engine:
    // our metadata.json sits beside runc's images; the task keeps running.
    let ck = ctrd.dir.path().join("ck");
    let wk = ctrd.dir.path().join("wk");
    let r = ctrd.ctr(&[
        "task",
        "checkpoint",
        "--image-path",
        ck.to_str().expect("utf8"),
        "--work-path",
        wk.to_str().expect("utf8"),
        "c1",
    ]);
    assert_eq!(r.code, 0, "task checkpoint: {r:?}\n{}", ctrd.log());
    let md: serde_json::Value =
        serde_json::from_slice(&fs::read(ck.join("metadata.json")).expect("metadata.json"))
            .expect("json");
    assert_eq!(md["kind"], "runc");
    assert_eq!(md["container"]["id"], "c1");
    assert!(ck.join("inventory.img").is_file());
    let r = ctrd.ctr(&["task", "ls"]);
    assert!(r.stdout.contains("RUNNING"), "{r:?}");

    // Checkpoint into containerd's content store, remove everything, restore live.
    let r = ctrd.ctr(&[
        "container",
        "checkpoint",
        "--task",
        "--image",
        "c1",
        "docker.io/library/c1-checkpoint:1",
    ]);
    assert_eq!(r.code, 0, "container checkpoint: {r:?}\n{}", ctrd.log());
    let before = ctrd.count("c1", "tail", "e1").expect("count before");
    let _ = ctrd.ctr(&["task", "kill", "-s", "KILL", "c1"]);
    wait_for("task to stop", Duration::from_secs(10), || {
        (ctrd.ctr(&["task", "rm", "c1"]).code == 0).then_some(())
    });
    let r = ctrd.ctr(&["container", "rm", "c1"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = ctrd.ctr(&[
        "container",
        "restore",
        "--live",
        "c1",
        "docker.io/library/c1-checkpoint:1",
    ]);
    assert_eq!(r.code, 0, "container restore: {r:?}\n{}", ctrd.log());
    // The rw layer was not restored (no --rw): the restored shell writes a fresh file,
    // whose first number carries on from the checkpoint, not from 1.
    let first = wait_for("restored counter", Duration::from_secs(10), || {
        ctrd.count("c1", "head", "e2")
    });
    assert!(
        first > 5 && first <= before + 1,
        "first {first}, before {before}"
    );
    wait_for("still counting", Duration::from_secs(10), || {
        ctrd.count("c1", "tail", "e3").filter(|v| *v > first + 5)
    });
}
