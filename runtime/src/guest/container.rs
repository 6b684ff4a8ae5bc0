//! Containers as kata-agent lays them out in the guest: `<root>/<id>/config.json` and
//! `<root>/<id>/rootfs/`; a container's processes are those whose root (`/proc/PID/root`)
//! is that rootfs, and the one among them whose parent is not is its tree's root.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::error::GuestError;
use super::wire::{GuestContainer, GuestProcess};

/// Where kata-agent puts containers in the guest.
pub const KATA_ROOT: &str = "/run/kata-containers";

/// A container found in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KataContainer {
    /// Its id.
    pub id: String,
    /// Its root filesystem (canonical).
    pub rootfs: PathBuf,
}

/// The container `id` under `root`, if laid out as kata-agent does.
pub fn find(root: &Path, id: &str) -> Result<KataContainer, GuestError> {
    let unknown = || GuestError::UnknownContainer {
        id: id.to_string(),
        root: root.to_path_buf(),
    };
    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
        return Err(unknown());
    }
    let dir = root.join(id);
    if !dir.join("config.json").is_file() {
        return Err(unknown());
    }
    let rootfs = fs::canonicalize(dir.join("rootfs")).map_err(|_| unknown())?;
    if !rootfs.is_dir() {
        return Err(unknown());
    }
    Ok(KataContainer {
        id: id.to_string(),
        rootfs,
    })
}

/// Every container under `root`, with its tree's root PID when one runs.
pub fn list(root: &Path, procs: &[GuestProcess]) -> Vec<GuestContainer> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<GuestContainer> = entries
        .flatten()
        .filter_map(|e| find(root, &e.file_name().to_string_lossy()).ok())
        .map(|c| GuestContainer {
            pid: tree_root(&c, procs).ok(),
            rootfs: c.rootfs.display().to_string(),
            id: c.id,
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The root PID of the container's process tree.
pub fn tree_root(c: &KataContainer, procs: &[GuestProcess]) -> Result<i32, GuestError> {
    let inside: BTreeMap<i32, i32> = procs
        .iter()
        .filter(|p| root_of(p.pid).as_deref() == Some(c.rootfs.as_path()))
        .map(|p| (p.pid, p.ppid))
        .collect();
    let roots: Vec<i32> = inside
        .iter()
        .filter(|(_, ppid)| !inside.contains_key(ppid))
        .map(|(pid, _)| *pid)
        .collect();
    match roots.as_slice() {
        [] => Err(GuestError::ContainerNotRunning {
            id: c.id.clone(),
            rootfs: c.rootfs.clone(),
        }),
        [one] => Ok(*one),
        many => Err(GuestError::SeveralTrees {
            id: c.id.clone(),
            roots: many.len(),
            pids: many
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn root_of(pid: i32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/root")).ok()
}

/// Every user process in this (guest) system: PID, parent, command line.
pub fn processes() -> Vec<GuestProcess> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<GuestProcess> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The name may hold spaces and parentheses: the fields follow the last ')'.
            let (name, rest) = stat.rsplit_once(')')?;
            let name = name.split_once('(').map_or("", |(_, n)| n);
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            // Kernel threads have no command line.
            if cmdline.is_empty() {
                return None;
            }
            let command = String::from_utf8_lossy(&cmdline)
                .trim_end_matches('\0')
                .replace('\0', " ");
            let command = if command.is_empty() {
                name.to_string()
            } else {
                command
            };
            Some(GuestProcess { pid, ppid, command })
        })
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_leave_the_root_are_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        for id in ["", "..", ".", "a/b", "missing"] {
            let err = find(dir.path(), id).unwrap_err();
            assert!(
                matches!(err, GuestError::UnknownContainer { .. }),
                "{id}: {err}"
            );
        }
    }

    #[test]
    fn a_laid_out_container_is_found_and_listed_without_a_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = dir.path().join("c1");
        fs::create_dir_all(c.join("rootfs")).expect("mkdir");
        fs::write(c.join("config.json"), "{}").expect("write");
        let found = find(dir.path(), "c1").expect("found");
        assert_eq!(
            found.rootfs,
            fs::canonicalize(c.join("rootfs")).expect("canon")
        );
        let listed = list(dir.path(), &processes());
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, "c1");
        assert_eq!(listed[0].pid, None);
    }

    #[test]
    fn our_own_process_is_listed_with_its_parent() {
        let me = std::process::id() as i32;
        let procs = processes();
        let p = procs.iter().find(|p| p.pid == me).expect("listed");
        assert_eq!(p.ppid, nix::unistd::getppid().as_raw());
    }
}
