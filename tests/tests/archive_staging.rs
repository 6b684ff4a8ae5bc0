//! Where an archive dump's images wait before they are packed: in memory
//! (`checkpoint.staging_dir`) when they fit, sparing the disk a write of every page; on
//! disk beside the checkpoint when they do not, which the dump records and says once.
//! Either way the staging dir is left empty and the archive restores.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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

/// Dumps a counter as a zstd archive with `staging` as the staging dir, and restores it;
/// checks where CRIU found the images each time (`in_memory`: under `staging`, else
/// beside the checkpoint), that nothing is left in `staging`, and that the restored
/// counter counts on. Returns the dump's stderr and `packing`.
fn dump_archive_and_restore(
    env: Env,
    staging: &Path,
    in_memory: bool,
) -> (String, serde_json::Value) {
    let criu = DirRecorder::new(&env.path("criu"));
    let env = env.with_settings(vec![
        format!("checkpoint.staging_dir={}", staging.display()),
        criu.setting.clone(),
    ]);
    let log = env.path("counter.log");
    let mut w = Workload::start(&log, &["counter", "50"]);
    wait_count_above(&log, 3);
    let pid = w.pid.to_string();
    let out = env
        .cedana(&[
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
    let where_ = |step: &str| {
        let seen = fs::read_to_string(&criu.record).unwrap_or_default();
        assert_eq!(
            criu.saw_dir_under(staging),
            in_memory,
            "{step}: CRIU's dirs: {seen}"
        );
        assert_eq!(
            criu.saw_dir_under(&env.checkpoints()),
            !in_memory,
            "{step}: {seen}"
        );
        assert!(
            dir_names(staging).is_empty(),
            "{step}: left in the staging dir: {:?}",
            dir_names(staging)
        );
        let _ = fs::remove_file(&criu.record);
    };
    where_("dump");
    let last = last_count(&log).expect("counted");
    let restored = restore_process_and_check(&env, &path, &log, last);
    kill(restored);
    where_("restore");
    (out.stderr, v["metadata"]["packing"].clone())
}

#[test]
fn an_archive_waits_in_memory_when_dumped_and_restored_and_leaves_nothing_there() {
    if !e2e_enabled() {
        return;
    }
    let staging = memory_dir();
    let (stderr, packing) = dump_archive_and_restore(Env::new(), staging.path(), true);
    assert!(packing.get("staged_on_disk").is_none(), "{packing}");
    assert!(
        !stderr.contains("staged on disk"),
        "nothing to say: {stderr}"
    );
}

#[test]
fn images_that_do_not_fit_in_memory_wait_on_disk_and_the_dump_says_why() {
    if !e2e_enabled() {
        return;
    }
    // Smaller than any tree plus the reserve kept free; outside the env's dir, which goes
    // first.
    let mount_point = tempfile::tempdir().expect("tempdir");
    let small = Tmpfs::mount(mount_point.path(), 8);
    let (stderr, packing) = dump_archive_and_restore(Env::new(), &small.path, false);
    let why = packing["staged_on_disk"].as_str().expect("why recorded");
    assert!(
        why.contains("of images would not fit in the 8 MiB free"),
        "{why}"
    );
    assert!(
        why.contains(&small.path.display().to_string()),
        "names the dir: {why}"
    );
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("staged on disk"))
        .collect();
    assert_eq!(said.len(), 1, "said once: {stderr}");
    assert!(said[0].contains(why), "{}", said[0]);
}
