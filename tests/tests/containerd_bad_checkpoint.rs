//! A corrupt checkpoint restored through containerd and our shim: the checkpoint image
//! is rebuilt with one CRIU image damaged but every blob digest correct (so containerd
//! accepts it), and the restore must fail with a clear error and leave nothing stuck.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use cedana_e2e::containerd::{Containerd, CEDANA};
use sha2::{Digest, Sha256};

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// Reads every regular file of a tar into memory, by path.
fn read_tar(data: &[u8]) -> Vec<(String, Vec<u8>, tar::Header)> {
    let mut out = Vec::new();
    let mut a = tar::Archive::new(data);
    for e in a.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        let path = e.path().expect("path").display().to_string();
        let header = e.header().clone();
        let mut buf = Vec::new();
        e.read_to_end(&mut buf).expect("read entry");
        out.push((path, buf, header));
    }
    out
}

fn write_tar(entries: &[(String, Vec<u8>, tar::Header)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, header) in entries {
        let mut h = header.clone();
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, path, data.as_slice())
            .expect("tar append");
    }
    b.into_inner().expect("tar")
}

/// Rewrites the exported checkpoint image `src` into `dst` named `name`: in the CRIU
/// images tarball, `pages-1.img` gets flipped bytes; every digest up the tree is
/// recomputed. Returns the damaged file's name.
fn corrupt_checkpoint_export(src: &Path, dst: &Path, name: &str) -> String {
    let outer = read_tar(&fs::read(src).expect("read export"));
    let mut files: HashMap<String, Vec<u8>> = outer
        .iter()
        .map(|(p, d, _)| (p.trim_start_matches("./").to_string(), d.clone()))
        .collect();
    let mut index: serde_json::Value =
        serde_json::from_slice(&files["index.json"]).expect("index.json");
    let top = index["manifests"][0]["digest"]
        .as_str()
        .expect("top digest")
        .to_string();
    let mut ck: serde_json::Value =
        serde_json::from_slice(&files[&blob_path(&top)]).expect("checkpoint index");
    let entries = ck["manifests"].as_array_mut().expect("manifests");
    let criu = entries
        .iter_mut()
        .find(|d| d["mediaType"].as_str().unwrap_or("").contains("criu"))
        .expect("a CRIU checkpoint blob in the checkpoint image");
    let old = criu["digest"].as_str().expect("digest").to_string();
    let mut images = read_tar(&files[&blob_path(&old)]);
    let damaged = images
        .iter_mut()
        .find(|(p, d, _)| p.ends_with("pages-1.img") && d.len() > 64)
        .expect("pages-1.img in the CRIU images");
    for b in damaged.1.iter_mut().take(4096) {
        *b = !*b;
    }
    let damaged_name = damaged.0.clone();
    let new_blob = write_tar(&images);
    let new = digest(&new_blob);
    criu["digest"] = new.clone().into();
    criu["size"] = new_blob.len().into();
    files.insert(blob_path(&new), new_blob);
    let ck_bytes = serde_json::to_vec(&ck).expect("json");
    let ck_digest = digest(&ck_bytes);
    files.insert(blob_path(&ck_digest), ck_bytes.clone());
    index["manifests"][0]["digest"] = ck_digest.into();
    index["manifests"][0]["size"] = ck_bytes.len().into();
    index["manifests"][0]["annotations"] = serde_json::json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": "corrupt",
    });
    files.insert(
        "index.json".into(),
        serde_json::to_vec(&index).expect("json"),
    );
    files.remove("manifest.json");
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    let out: Vec<(String, Vec<u8>, tar::Header)> =
        files.into_iter().map(|(p, d)| (p, d, h.clone())).collect();
    fs::write(dst, write_tar(&out)).expect("write corrupt export");
    damaged_name
}

#[test]
fn containerd_restore_of_a_corrupt_checkpoint_fails_cleanly() {
    let Some(c) = Containerd::setup() else { return };
    c.run_detached(
        &[CEDANA],
        "bad-src",
        &[
            "/bin/sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /count; sleep 0.1; done",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    c.ok(&[
        "container",
        "checkpoint",
        "--task",
        "--rw",
        "bad-src",
        "cedana.test/bad:1",
    ]);
    c.kill_and_remove("bad-src");

    let export = c.dir.path().join("ck.tar");
    let corrupt = c.dir.path().join("ck-corrupt.tar");
    c.ok(&[
        "image",
        "export",
        "--skip-manifest-json",
        export.to_str().expect("utf8"),
        "cedana.test/bad:1",
    ]);
    let damaged = corrupt_checkpoint_export(&export, &corrupt, "cedana.test/bad:corrupt");
    c.ok(&[
        "image",
        "import",
        "--no-unpack",
        corrupt.to_str().expect("utf8"),
    ]);

    let r = c.ctr(&[
        "container",
        "restore",
        "--live",
        "--rw",
        "bad-dst",
        "cedana.test/bad:corrupt",
    ]);
    assert_ne!(r.code, 0, "a corrupt checkpoint restored: {r:?}");
    eprintln!("restore refused: {}", r.stderr.trim());
    let err = r.stderr.to_lowercase();
    assert!(
        err.contains("corrupt") && err.contains(&damaged.to_lowercase()),
        "no clear error naming {damaged}: {r:?}"
    );

    // Nothing stuck: no task runs, and what ctr left behind deletes cleanly.
    assert!(
        !c.ok(&["task", "ls"])
            .lines()
            .any(|l| l.starts_with("bad-dst ") && l.contains("RUNNING")),
        "a task runs after the failed restore"
    );
    let _ = c.ctr(&["task", "delete", "--force", "bad-dst"]);
    if c.containers().iter().any(|id| id == "bad-dst") {
        c.ok(&["containers", "delete", "bad-dst"]);
    }
    assert!(c.containers().is_empty(), "{:?}", c.containers());
    c.assert_no_shims_left();
    assert!(c.mounts().is_empty(), "mounts left: {:?}", c.mounts());
}
