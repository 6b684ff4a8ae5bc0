//! The rootfs changes of a runc container travel with its portable checkpoint: a file
//! written as the container's very first command (before runc stamps `created`), and
//! deletions: recorded from an overlay rootfs's upper dir (whiteouts), and, for a
//! container we restored, against the rootfs as the restore left it. Each restore goes
//! into a fresh copy of the pristine rootfs.

mod runc_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cedana_e2e::Env;
use runc_support::*;

/// Writes a file first thing, then counts into /tmp/count.
const WRITE_FIRST: &str = "echo first > /tmp/written; rm -f /data/gone0; i=0; \
     while true; do i=$((i+1)); echo $i >> /tmp/count; sleep 0.05; done";

/// Restores `path` as container [`unique_id`] `name` into a fresh copy of `pristine`
/// in the bundle dir `name`.
fn restore_fresh(env: &Env, root: &Path, path: &str, pristine: &Path, name: &str) -> PathBuf {
    let fresh = env.path(name);
    let id = unique_id(env, name);
    fs::create_dir_all(&fresh).expect("mkdir");
    copy_tree(pristine, &fresh.join("rootfs"));
    restore_runc_detached(env, root, path, &fresh, &id);
    Rt::runc(root).wait_status(&id, "running");
    fresh.join("rootfs")
}

/// A bundle whose pristine rootfs holds /data/gone0 and /data/gone1.
fn bundle_with_victims(env: &Env) -> (PathBuf, PathBuf) {
    let bundle = env.path("bundle");
    build_bundle(&bundle, &["sh", "-c", WRITE_FIRST], Net::Own);
    for f in ["gone0", "gone1", "kept"] {
        fs::write(bundle.join("rootfs/data").join(f), f).expect("write");
    }
    let pristine = env.path("pristine");
    copy_tree(&bundle.join("rootfs"), &pristine);
    (bundle, pristine)
}

#[test]
fn first_writes_and_deletions_after_a_restore_travel() {
    if !runc_available() {
        return;
    }
    let env = Env::new();
    let root = env.path("runc-root");
    let (bundle, pristine) = bundle_with_victims(&env);
    let rt = Rt::runc(&root);
    let [orig, c1_id, _] = ["orig", "c1", "c2"].map(|n| unique_id(&env, n));
    let _g = ["orig", "c1", "c2"].map(|n| Ctr::new(&root, &unique_id(&env, n)));
    rt.run_detached(&bundle, &orig);
    wait_above(&bundle.join("rootfs/tmp/count"), 5);
    let (path, md) = dump_runc(&env, &root, &orig);
    let last = *numbers(&bundle.join("rootfs/tmp/count"))
        .last()
        .expect("counted");
    let c1 = restore_fresh(&env, &root, &path, &pristine, "c1");
    assert_eq!(
        fs::read_to_string(c1.join("tmp/written")).ok().as_deref(),
        Some("first\n"),
        "the container's first write travels: {}",
        md["container"]
    );
    assert_eq!(next_after(&c1.join("tmp/count"), last), last + 1);
    // The restored container deletes a pristine file and writes another.
    let w = rt.out(&[
        "exec",
        &c1_id,
        "sh",
        "-c",
        "rm /data/gone1; echo second > /tmp/second",
    ]);
    assert_eq!(w.code, 0, "{w:?}");
    let (path, md) = dump_runc(&env, &root, &c1_id);
    assert_eq!(
        md["container"]["rootfs_deleted_entries"], 1,
        "{}",
        md["container"]
    );
    let last = *numbers(&c1.join("tmp/count")).last().expect("counted");
    let c2 = restore_fresh(&env, &root, &path, &pristine, "c2");
    assert!(c2.join("tmp/written").is_file(), "the first move's change");
    assert!(c2.join("tmp/second").is_file(), "the second move's change");
    assert!(
        !c2.join("data/gone1").exists(),
        "deleted in c1: deleted in c2"
    );
    assert!(c2.join("data/kept").is_file());
    assert_eq!(next_after(&c2.join("tmp/count"), last), last + 1);
}

/// An overlay mount, unmounted on drop.
struct Overlay(PathBuf);

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn overlay_rootfs_deletions_come_from_its_whiteouts() {
    if !runc_available() {
        return;
    }
    let env = Env::new();
    let root = env.path("runc-root");
    let (bundle, pristine) = bundle_with_victims(&env);
    // The bundle's rootfs becomes an overlay: the pristine copy below, changes above.
    let (upper, work) = (env.path("upper"), env.path("work"));
    for d in [&upper, &work] {
        fs::create_dir_all(d).expect("mkdir");
    }
    let merged = bundle.join("rootfs");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        pristine.display(),
        upper.display(),
        work.display()
    );
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .status()
        .expect("mount");
    assert!(st.success(), "mount overlay");
    let _m = Overlay(merged.clone());
    let rt = Rt::runc(&root);
    let orig = unique_id(&env, "orig");
    let _g = ["orig", "c1"].map(|n| Ctr::new(&root, &unique_id(&env, n)));
    rt.run_detached(&bundle, &orig);
    wait_above(&merged.join("tmp/count"), 5);
    let (path, md) = dump_runc(&env, &root, &orig);
    let last = *numbers(&merged.join("tmp/count")).last().expect("counted");
    let c1 = restore_fresh(&env, &root, &path, &pristine, "c1");
    assert_eq!(
        fs::read_to_string(c1.join("tmp/written")).ok().as_deref(),
        Some("first\n"),
        "{}",
        md["container"]
    );
    assert!(
        !c1.join("data/gone0").exists(),
        "the whiteout became a deletion"
    );
    assert!(c1.join("data/gone1").is_file());
    assert_eq!(next_after(&c1.join("tmp/count"), last), last + 1);
    assert!(
        md["container"]["rootfs_diff_since"]
            .as_str()
            .is_some_and(|s| s.starts_with("upperdir")),
        "{}",
        md["container"]
    );
}
