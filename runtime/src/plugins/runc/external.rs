//! Files a container holds open that live outside its mount namespace: a host file its
//! stdout was redirected to (`runc run -d ID > /var/log/x`), or the host's /dev/null that
//! a restore handed it as stdin (runc maps checkpointed stdio onto its own). CRIU dumps
//! a file by its mount, which it finds only among the container's mounts, so these fail
//! with `Can't lookup mount=N for fd=F`.
//!
//! CRIU's answer is an external file: `--external file[MNT_ID:INODE]` at dump records
//! only the key, and `--inherit-fd fd[N]:file[MNT_ID:INODE]` at restore reopens the file
//! from CRIU's descriptor N (with the flags and offset the dump recorded). runc 1.1 has no
//! flags for either, so both go into a CRIU configuration file named by
//! `CRIU_CONFIG_FILE` in the runtime's environment: CRIU reads it before the RPC request
//! (`criu swrk` parses the global, user and environment configs), and runc passes its
//! environment to CRIU. At restore the files are reopened by their recorded host path
//! and handed to the runtime at fixed high descriptors, which runc (Go does not mark
//! inherited descriptors close-on-exec) passes on to CRIU.
//!
//! The list is written as `cedana-external-files.json` beside the CRIU images (the
//! images dir is all that `runc restore --image-path` callers, such as containerd's
//! shim through cedana-runc, hand over) and into metadata.json.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::RuncError;
use super::meta::ExternalFile;

/// The record beside the CRIU images.
pub const RECORD: &str = "cedana-external-files.json";
/// The environment variable CRIU reads a configuration file from.
const CRIU_CONFIG_ENV: &str = "CRIU_CONFIG_FILE";
/// Descriptor of the first reopened file in the runtime (and so in CRIU): high, so that
/// neither the runtime's stdio nor the descriptors it hands CRIU itself (3, 4, ...) meet it.
const FIRST_FD: i32 = 200;
/// At most this many external files (descriptors FIRST_FD..FIRST_FD+MAX stay below the
/// usual soft limit of 1024 open files).
const MAX: usize = 256;
/// Character devices of the `mem` major (null, zero, full, random, urandom): CRIU dumps
/// them like regular files. Terminals are left to `--shell-job`.
const MEM_MAJOR: u64 = 1;

/// Every file a process of `pids` holds that CRIU cannot find among that process's own
/// mounts, one entry per CRIU key (several descriptors may share a file).
pub fn detect(pids: &[i32]) -> Vec<ExternalFile> {
    let mut found: BTreeMap<String, ExternalFile> = BTreeMap::new();
    for &pid in pids {
        let mounts = mount_ids(pid);
        if mounts.is_empty() {
            continue; // gone meanwhile; CRIU will say so
        }
        let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for entry in rd.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some((key, path)) = external_of(pid, fd, &mounts) {
                found
                    .entry(key.clone())
                    .or_insert_with(|| ExternalFile {
                        key,
                        path,
                        fds: Vec::new(),
                    })
                    .fds
                    .push(format!("{pid}:{fd}"));
            }
        }
    }
    found.into_values().collect()
}

/// The CRIU key and host path of `pid`'s descriptor `fd` when it is a file CRIU dumps by
/// path (regular file, directory, mem device) on a mount outside `mounts`.
fn external_of(pid: i32, fd: i32, mounts: &HashSet<u64>) -> Option<(String, String)> {
    let link = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
    let target = fs::read_link(&link).ok()?;
    let path = target.to_str()?.to_string();
    if !path.starts_with('/') || path.ends_with(" (deleted)") {
        return None; // pipes, sockets, anon inodes; unlinked files are CRIU's to refuse
    }
    let meta = fs::metadata(&link).ok()?;
    let ft = meta.file_type();
    let by_path = ft.is_file()
        || ft.is_dir()
        || (ft.is_char_device() && libc::major(meta.rdev()) as u64 == MEM_MAJOR);
    if !by_path {
        return None;
    }
    let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let mnt_id = fdinfo_field(&info, "mnt_id:")?;
    if mounts.contains(&mnt_id) {
        return None;
    }
    Some((format!("file[{:x}:{:x}]", mnt_id, meta.ino()), path))
}

/// A numeric field of /proc/PID/fdinfo/FD.
fn fdinfo_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

/// Mount ids of `pid`'s mount namespace (first field of each mountinfo line).
fn mount_ids(pid: i32) -> HashSet<u64> {
    fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Writes the record beside the images.
pub fn write_record(images: &Path, files: &[ExternalFile]) -> Result<(), RuncError> {
    let path = images.join(RECORD);
    let json = serde_json::to_vec_pretty(files).map_err(|e| RuncError::ExternalFile {
        path: path.clone(),
        reason: format!("encode: {e}"),
    })?;
    fs::write(&path, json).map_err(|e| RuncError::ExternalFile {
        path,
        reason: format!("write: {e}"),
    })
}

/// The record beside the images; none for checkpoints without external files.
pub fn read_record(images: &Path) -> Result<Vec<ExternalFile>, RuncError> {
    let path = images.join(RECORD);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RuncError::ExternalFile {
            path,
            reason: format!("unreadable record: {e}; the checkpoint is damaged"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(RuncError::ExternalFile {
            path,
            reason: e.to_string(),
        }),
    }
}

/// The CRIU configuration for a dump: every file external.
pub fn dump_config(files: &[ExternalFile]) -> String {
    files
        .iter()
        .map(|f| format!("external {}\n", f.key))
        .collect()
}

/// Files reopened for a restore, handed to the runtime at fixed descriptors.
#[derive(Debug, Default)]
pub struct Reopened {
    fds: Vec<OwnedFd>,
    config: String,
}

impl Reopened {
    /// Reopens every recorded file by its host path. A missing file is refused before
    /// the runtime runs: CRIU would fail to find it, and the checkpoint names it.
    pub fn open(files: &[ExternalFile]) -> Result<Reopened, RuncError> {
        if files.len() > MAX {
            return Err(RuncError::ExternalFile {
                path: PathBuf::from(&files[MAX].path),
                reason: format!(
                    "the checkpoint has {} external files; at most {MAX} are handed back",
                    files.len()
                ),
            });
        }
        let mut out = Reopened::default();
        for (i, f) in files.iter().enumerate() {
            // Read-only is enough: CRIU reopens /proc/self/fd/N with the recorded flags.
            let file = fs::File::open(&f.path).map_err(|e| RuncError::ExternalFile {
                path: PathBuf::from(&f.path),
                reason: format!(
                    "the container had it open ({}) outside its mount namespace and the \
                     restore hands it back by path: {e}; create it (same type and mode, \
                     and for a file opened without O_APPEND the same size) or restore on \
                     the host that has it",
                    f.fds.join(", ")
                ),
            })?;
            out.config.push_str(&format!(
                "inherit-fd fd[{}]:{}\n",
                FIRST_FD + i as i32,
                f.key
            ));
            out.fds.push(file.into());
        }
        Ok(out)
    }

    /// Whether there is nothing to hand over.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// The CRIU configuration lines naming the descriptors.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Makes the runtime start with the files at FIRST_FD, FIRST_FD+1, ...
    pub fn install(self, cmd: &mut Command) {
        let raw: Vec<i32> = self.fds.iter().map(|f| f.as_raw_fd()).collect();
        // Kept open in the parent until the command is dropped with its closure.
        let keep = self.fds;
        // SAFETY: only dup2, which is async-signal-safe, runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let _ = &keep;
                for (i, fd) in raw.iter().enumerate() {
                    // dup2 clears close-on-exec on the new descriptor.
                    if libc::dup2(*fd, FIRST_FD + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}

/// Writes `config` (plus the caller's own CRIU_CONFIG_FILE, kept first so ours adds to
/// it) into `dir` and points the runtime's CRIU at it.
pub fn set_criu_config(cmd: &mut Command, dir: &Path, config: &str) -> Result<(), RuncError> {
    let path = dir.join("cedana-criu.conf");
    let mut text = std::env::var_os(CRIU_CONFIG_ENV)
        .and_then(|p| fs::read_to_string(p).ok())
        .unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(config);
    fs::write(&path, text).map_err(|e| RuncError::ExternalFile {
        path: path.clone(),
        reason: format!("write the CRIU configuration: {e}"),
    })?;
    cmd.env(CRIU_CONFIG_ENV, &path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_file_outside_our_mounts_is_external() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("out.log");
        let f = fs::File::create(&path).expect("create");
        let me = std::process::id() as i32;
        let fd = f.as_raw_fd();
        // Our own mounts hold it: not external.
        assert!(external_of(me, fd, &mount_ids(me)).is_none());
        // With none of our mounts known, it is, keyed by mount id and inode.
        let (key, p) = external_of(me, fd, &HashSet::new()).expect("external");
        let ino = fs::metadata(&path).expect("meta").ino();
        assert!(
            key.starts_with("file[") && key.ends_with(&format!(":{ino:x}]")),
            "{key}"
        );
        assert_eq!(Path::new(&p), path);
        assert_eq!(
            dump_config(&[ExternalFile {
                key: key.clone(),
                ..Default::default()
            }]),
            format!("external {key}\n")
        );
    }

    #[test]
    fn record_round_trips_and_a_missing_file_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(read_record(dir.path()).expect("none").is_empty());
        let files = vec![ExternalFile {
            key: "file[1b:2]".into(),
            path: dir.path().join("gone").display().to_string(),
            fds: vec!["7:1".into()],
        }];
        write_record(dir.path(), &files).expect("write");
        assert_eq!(read_record(dir.path()).expect("read"), files);
        let err = Reopened::open(&files).expect_err("missing");
        assert!(err.to_string().contains("gone"), "{err}");
        let ok = vec![ExternalFile {
            key: "file[1b:3]".into(),
            path: "/dev/null".into(),
            fds: vec!["7:0".into()],
        }];
        let r = Reopened::open(&ok).expect("open");
        assert_eq!(r.config(), "inherit-fd fd[200]:file[1b:3]\n");
    }
}
