//! Where an archive dump's images wait before they are packed: in memory
//! (`checkpoint.staging_dir`) when they fit, sparing the disk a write of every page; on
//! disk beside the checkpoint when they do not, which the dump records and says once.
//! Either way the staging dir is left empty and the archive restores.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cedana_e2e::*;

/// A CRIU stand-in that records the directories its caller holds open (CRIU opens the
/// images dir of a request through the caller's `/proc/PID/fd`) and execs the real CRIU.
struct DirRecorder {
    setting: String,
    record: PathBuf,
}

impl DirRecorder {
    fn new(dir: &Path) -> DirRecorder {
        let real = which("criu").expect("criu not installed: run `make deps`");
        fs::create_dir_all(dir).expect("recorder dir");
        let wrapper = dir.join("criu-dirs");
        let record = dir.join("criu-dirs.log");
        let script = format!(
            "#!/bin/sh\nfor f in /proc/$PPID/fd/*; do d=$(readlink \"$f\"); [ -d \"$d\" ] && echo \"$d\"; done >> '{}'\nexec '{}' \"$@\"\n",
            record.display(),
            real.display()
        );
        fs::write(&wrapper, script).expect("write criu wrapper");
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).expect("chmod");
        DirRecorder {
            setting: format!("criu.binary_path={}", wrapper.display()),
            record,
        }
    }

    /// Whether CRIU was handed a directory under `root`.
    fn saw_dir_under(&self, root: &Path) -> bool {
        fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .any(|l| Path::new(l).starts_with(root))
    }
}

/// Dumps a counter as a zstd archive with `staging` as the staging dir; checks where
/// CRIU wrote (`in_memory`: under `staging`, else beside the checkpoint), that nothing is
/// left in `staging`, and that the archive restores and counts on. Returns the dump's
/// stderr and `packing`.
fn dump_archive_and_restore(
    env: &Env,
    staging: &Path,
    in_memory: bool,
) -> (String, serde_json::Value) {
    let criu = DirRecorder::new(&env.path("criu"));
    let log = env.path(&format!("counter-{in_memory}.log"));
    let mut w = Workload::start(&log, &["counter", "50"]);
    wait_count_above(&log, 3);
    let pid = w.pid.to_string();
    let staging_setting = format!("checkpoint.staging_dir={}", staging.display());
    let out = env
        .cedana(&[
            "--set",
            &staging_setting,
            "--set",
            &criu.setting,
            "--json",
            "dump",
            "process",
            &pid,
            "--no-server",
            "--compression",
            "zstd",
        ])
        .ok();
    w.reap();
    let v = out.json();
    let path = PathBuf::from(v["path"].as_str().expect("path"));
    assert!(
        path.is_file() && path.to_string_lossy().ends_with(".tar.zst"),
        "{}",
        path.display()
    );
    assert_eq!(
        criu.saw_dir_under(staging),
        in_memory,
        "CRIU's dirs: {}",
        fs::read_to_string(&criu.record).unwrap_or_default()
    );
    assert_eq!(criu.saw_dir_under(&env.checkpoints()), !in_memory);
    assert!(
        dir_names(staging).is_empty(),
        "left in the staging dir: {:?}",
        dir_names(staging)
    );
    let last = last_count(&log).expect("counted");
    let restored = restore_process_and_check(env, &path, &log, last);
    kill(restored);
    (out.stderr, v["metadata"]["packing"].clone())
}

#[test]
fn an_archive_dump_stages_its_images_in_memory_and_leaves_nothing_there() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let staging = tempfile::Builder::new()
        .prefix("cedana-e2e-staging-")
        .tempdir_in("/dev/shm")
        .expect("a dir in /dev/shm");
    let (stderr, packing) = dump_archive_and_restore(&env, staging.path(), true);
    assert!(packing.get("staged_on_disk").is_none(), "{packing}");
    assert!(
        !stderr.contains("staged on disk"),
        "nothing to say: {stderr}"
    );
}

/// A tmpfs of `size` mounted on a new dir under `env`, unmounted on drop.
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    fn mount(env: &Env, size: &str) -> SmallTmpfs {
        let dir = env.path("small-tmpfs");
        fs::create_dir_all(&dir).expect("mkdir");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(ok.success(), "mount a tmpfs on {}", dir.display());
        SmallTmpfs(dir)
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn images_that_do_not_fit_in_memory_wait_on_disk_and_the_dump_says_why() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    // Smaller than any tree plus the reserve kept free.
    let small = SmallTmpfs::mount(&env, "8m");
    let (stderr, packing) = dump_archive_and_restore(&env, &small.0, false);
    let why = packing["staged_on_disk"].as_str().expect("why recorded");
    assert!(why.contains("would not fit in the 8 MiB free"), "{why}");
    assert!(
        why.contains(&small.0.display().to_string()),
        "names the dir: {why}"
    );
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("staged on disk"))
        .collect();
    assert_eq!(said.len(), 1, "said once: {stderr}");
    assert!(said[0].contains(why), "{}", said[0]);
}
