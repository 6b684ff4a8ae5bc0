//! Who is calling, and acting as them. The interceptor puts the connection's SO_PEERCRED
//! on every request as a [`Caller`]. Root keeps full power; any other caller (a
//! `socket_group` member) may act only on its own processes, jobs and checkpoints.
//!
//! Paths such a caller gives are opened with its rights, not checked and then opened as
//! root: a check made as root (even `faccessat(AT_EACCESS)`) and a later open race, and
//! do not see what the user can reach. So each open or create runs in a short-lived
//! thread that switched its fsuid, fsgid and groups to the caller's ([`as_caller`]);
//! the kernel then drops the thread's file capabilities and checks every path
//! component as it would for the user. What the engine later writes as root goes
//! through the descriptor so opened (`/proc/<daemon>/fd/N`), so a path swapped after
//! the check changes nothing.

use std::ffi::{CString, OsStr};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cedana_runtime::engine::RunAs;
use cedana_runtime::error::EngineError;
use cedana_runtime::process::inspect;
use nix::unistd::{Gid, User};
use tonic::Request;

use super::error::DaemonError;
use super::jobs::Result;

/// A request's caller, from the peer credentials of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its PID, when the kernel gave one.
    pub pid: Option<i32>,
}

impl Caller {
    /// Root: full power.
    pub const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: None,
    };

    /// The caller the interceptor recorded on a request.
    pub fn of<T>(req: &Request<T>) -> Result<Caller> {
        // The interceptor refuses requests without credentials, so a missing one means
        // the service runs without it: refuse rather than assume root.
        req.extensions()
            .get::<Caller>()
            .copied()
            .ok_or_else(|| DaemonError::Forbidden("cannot identify the caller".into()))
    }

    /// Whether the caller is root.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Refuses a non-root caller `what`, saying `why`.
    pub fn require_root(&self, what: &str, why: &str) -> Result<()> {
        if self.is_root() {
            return Ok(());
        }
        Err(DaemonError::Forbidden(format!(
            "uid {} may not {what}: {why}; only root may",
            self.uid
        )))
    }

    /// Refuses unless the caller is root or `owner`; `what` names the object.
    pub fn require_owner(&self, owner: u32, verb: &str, what: &str) -> Result<()> {
        if self.is_root() || self.uid == owner {
            return Ok(());
        }
        Err(DaemonError::Forbidden(format!(
            "uid {} may not {verb} {what}: it belongs to uid {owner}",
            self.uid
        )))
    }

    /// Whether the caller may see an object of `owner`.
    pub fn sees(&self, owner: u32) -> bool {
        self.is_root() || self.uid == owner
    }

    /// The user a program started for the caller runs as: its uid and gid, and the
    /// supplementary groups of its user entry (just the gid when it has none).
    pub fn run_as(&self) -> RunAs {
        let groups = User::from_uid(self.uid.into())
            .ok()
            .flatten()
            .and_then(|u| {
                let name = std::ffi::CString::new(u.name).ok()?;
                nix::unistd::getgrouplist(&name, Gid::from_raw(self.gid)).ok()
            })
            .map(|g| g.into_iter().map(Gid::as_raw).collect())
            .unwrap_or_else(|| vec![self.gid]);
        RunAs {
            uid: self.uid,
            gid: self.gid,
            groups,
        }
    }

    /// Refuses unless every task of the tree rooted at `pid` has real and effective uid
    /// equal to the caller's (root may act on any).
    pub fn require_process(&self, pid: i32, verb: &str) -> Result<()> {
        if self.is_root() {
            return Ok(());
        }
        let tree = inspect::tree(pid).map_err(|_| EngineError::NoSuchProcess { pid })?;
        for p in &tree {
            for tid in &p.tids {
                let Some((real, effective)) = task_uids(p.pid, *tid) else {
                    continue; // the thread exited meanwhile
                };
                let other = [real, effective].into_iter().find(|u| *u != self.uid);
                if let Some(owner) = other {
                    let whose = if p.pid == pid && *tid == pid {
                        String::new()
                    } else {
                        format!(" (its task {tid})")
                    };
                    return Err(DaemonError::Forbidden(format!(
                        "uid {} may not {verb} PID {pid}: it belongs to uid {owner}{whose}",
                        self.uid
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Real and effective uid of a task, from the `Uid:` line of its status.
fn task_uids(pid: i32, tid: i32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    parse_uids(&status)
}

/// Real and effective uid from the text of /proc/PID/status.
pub fn parse_uids(status: &str) -> Option<(u32, u32)> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut ids = line.split_whitespace().map(|n| n.parse().ok());
    Some((ids.next()??, ids.next()??))
}

/// Runs `f` with the caller's file-system identity (fsuid, fsgid, groups) in a thread of
/// its own, which ends with `f`, so no other work ever runs with those credentials.
/// For root, `f` runs here.
pub fn as_caller<T: Send + 'static>(
    caller: &Caller,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    if caller.is_root() {
        return f();
    }
    let RunAs { uid, gid, groups } = caller.run_as();
    std::thread::spawn(move || {
        // SAFETY: raw syscalls with valid pointers. They change this thread only; glibc's
        // setgroups wrapper would change every thread of the daemon.
        unsafe {
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::syscall(libc::SYS_setfsgid, gid);
            libc::syscall(libc::SYS_setfsuid, uid);
            // setfsuid reports no error; an invalid id (-1) returns the current one.
            let (now_uid, now_gid) = (
                libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32,
                libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32,
            );
            if now_uid != uid || now_gid != gid {
                return Err(io::Error::other(
                    "cannot switch to the caller's fsuid/fsgid",
                ));
            }
        }
        f()
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("the file task panicked")))
}

/// Maps a failure of the caller's own access onto a refusal naming it, others onto I/O.
fn denied(caller: &Caller, what: String, e: io::Error) -> DaemonError {
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
            DaemonError::Forbidden(format!("uid {} may not {what}: {e}", caller.uid))
        }
        _ => DaemonError::Io {
            context: format!("cannot {what}"),
            source: e,
        },
    }
}

/// `/proc/<daemon>/fd/N`: a path that names what `fd` holds open, for tools (the
/// engine, CRIU) that take paths; unlike the original path it cannot be swapped.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        fd.as_raw_fd()
    ))
}

/// Where an open descriptor points (its canonical path).
fn fd_target(fd: &OwnedFd) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Opens (creating it and its directory, 0600/0700) a file the caller names for
/// appending, as the caller.
pub fn open_append(caller: &Caller, path: &Path, what: &str) -> Result<File> {
    let p = path.to_path_buf();
    as_caller(caller, move || {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&p)
    })
    .map_err(|e| denied(caller, format!("write {what} {}", path.display()), e))
}

/// Creates (or truncates) a file the caller names, as the caller.
pub fn create_file(caller: &Caller, path: &Path, what: &str) -> Result<File> {
    let p = path.to_path_buf();
    as_caller(caller, move || {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&p)
    })
    .map_err(|e| denied(caller, format!("write {what} {}", path.display()), e))
}

/// Opens a file the caller names for reading, as the caller.
pub fn open_read(caller: &Caller, path: &Path, what: &str) -> Result<File> {
    let p = path.to_path_buf();
    as_caller(caller, move || File::open(&p))
        .map_err(|e| denied(caller, format!("read {what} {}", path.display()), e))
}

/// Checks the caller may enter a directory (a job's cwd): resolving `DIR/.` needs search
/// permission on every component, the last one included.
pub fn require_enterable(caller: &Caller, dir: &Path) -> Result<()> {
    let p = dir.join(".");
    as_caller(caller, move || {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&p)
            .map(drop)
    })
    .map_err(|e| {
        denied(
            caller,
            format!("use {} as working directory", dir.display()),
            e,
        )
    })
}

/// A directory opened as the caller, proven writable by it.
#[derive(Debug)]
pub struct WritableDir {
    /// The open directory.
    pub fd: OwnedFd,
    /// Its canonical path when opened.
    pub path: PathBuf,
}

/// Opens (creating it, 0700) a directory the caller wants written into, as the caller,
/// and proves it may create files there.
pub fn open_writable_dir(caller: &Caller, dir: &Path, what: &str) -> Result<WritableDir> {
    let p = dir.to_path_buf();
    as_caller(caller, move || {
        DirBuilder::new().recursive(true).mode(0o700).create(&p)?;
        let fd: OwnedFd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&p)?
            .into();
        let probe = fd_path(&fd).join(format!(".cedana-access-{}", super::jobs::new_id()));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&probe)?;
        std::fs::remove_file(&probe)?;
        let path = fd_target(&fd)?;
        Ok(WritableDir { fd, path })
    })
    .map_err(|e| denied(caller, format!("write {what} {}", dir.display()), e))
}

/// A checkpoint opened as the caller: readable by it and written by root.
#[derive(Debug)]
pub struct TrustedCheckpoint {
    /// The open checkpoint (directory or archive).
    pub fd: OwnedFd,
    /// Its canonical path when opened.
    pub path: PathBuf,
}

/// Opens a checkpoint as the caller (so it must be able to read it) and checks it is
/// root's and writable by nobody else: CRIU restores as root whatever the images say
/// (credentials, files to open), so images the caller could have changed are root power.
pub fn open_trusted_checkpoint(caller: &Caller, path: &Path) -> Result<TrustedCheckpoint> {
    let p = path.to_path_buf();
    let (fd, canonical) = as_caller(caller, move || {
        let fd: OwnedFd = File::open(&p)?.into();
        let target = fd_target(&fd)?;
        Ok((fd, target))
    })
    .map_err(|e| denied(caller, format!("read checkpoint {}", path.display()), e))?;
    let meta = File::from(fd.try_clone().map_err(|source| DaemonError::Io {
        context: "cannot duplicate a descriptor".into(),
        source,
    })?)
    .metadata()
    .map_err(|source| DaemonError::Io {
        context: format!("cannot stat {}", path.display()),
        source,
    })?;
    if !caller.is_root() && (meta.uid() != 0 || meta.mode() & 0o022 != 0) {
        return Err(DaemonError::Forbidden(format!(
            "uid {} may not restore {}: it is not a checkpoint the daemon wrote (owner uid {}, \
             mode {:o}); CRIU restores as root whatever a checkpoint says, so one its caller \
             could change is refused",
            caller.uid,
            path.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(TrustedCheckpoint {
        fd,
        path: canonical,
    })
}

/// Gives group `gid` (the caller's) read access to a checkpoint the engine wrote as
/// root into the caller's `dir`. Root keeps owning it, so the caller can read it but
/// never change it ([`open_trusted_checkpoint`]). Walked through descriptors without
/// following links; an entry that is not root's, or a file with other links, is
/// refused: `dir` is the caller's, who could have swapped the entry meanwhile.
pub fn share_with_group(dir: &WritableDir, name: &OsStr, gid: u32) -> Result<()> {
    grant(&dir.fd, Path::new(name), gid).map_err(|source| DaemonError::Io {
        context: format!(
            "cannot give group {gid} read access to {}",
            dir.path.join(name).display()
        ),
        source,
    })
}

fn grant(parent: &impl AsRawFd, name: &Path, gid: u32) -> io::Result<()> {
    let c = CString::new(name.as_os_str().as_bytes())?;
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: a valid directory descriptor and NUL-terminated name; the new descriptor
    // is owned by the File at once.
    let raw = unsafe { libc::openat(parent.as_raw_fd(), c.as_ptr(), flags) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let file = unsafe { File::from_raw_fd(raw) };
    let meta = file.metadata()?;
    if meta.uid() != 0 || (meta.is_file() && meta.nlink() != 1) {
        return Err(io::Error::other(format!(
            "{} is not what the daemon wrote (owner uid {}, {} links)",
            name.display(),
            meta.uid(),
            meta.nlink()
        )));
    }
    let mut mode = (meta.mode() & 0o777 | 0o040) & !0o022;
    if meta.is_dir() {
        mode |= 0o010;
        for entry in std::fs::read_dir(format!("/proc/self/fd/{raw}"))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            // Links and sockets (a capture socket) are neither read nor followed.
            if kind.is_file() || kind.is_dir() {
                grant(&file, Path::new(&entry.file_name()), gid)?;
            }
        }
    }
    std::os::unix::fs::fchown(&file, None, Some(gid))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_come_from_the_uid_line() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(parse_uids(status), Some((1000, 0)));
        assert_eq!(parse_uids("Name: x\n"), None);
    }

    #[test]
    fn root_may_do_anything_others_only_their_own() {
        let member = Caller {
            uid: 1000,
            gid: 1000,
            pid: None,
        };
        assert!(Caller::ROOT.require_owner(5, "dump", "job a").is_ok());
        assert!(member.require_owner(1000, "dump", "job a").is_ok());
        let e = member.require_owner(0, "dump", "job a").unwrap_err();
        assert_eq!(
            e.to_string(),
            "uid 1000 may not dump job a: it belongs to uid 0"
        );
        assert!(member.require_root("run a container", "x").is_err());
    }

    #[test]
    fn a_member_may_not_dump_init() {
        let member = Caller {
            uid: 65534,
            gid: 65534,
            pid: None,
        };
        let e = member.require_process(1, "dump").unwrap_err();
        assert_eq!(
            e.to_string(),
            "uid 65534 may not dump PID 1: it belongs to uid 0"
        );
    }

    #[test]
    fn root_keeps_its_file_rights_others_get_theirs() {
        if !nix::unistd::geteuid().is_root() {
            return; // switching fsuid needs root; the e2e tests cover it too
        }
        let dir = tempfile::tempdir().unwrap();
        let nobody = Caller {
            uid: 65534,
            gid: 65534,
            pid: None,
        };
        let target = dir.path().join("x/log");
        let e = open_append(&nobody, &target, "the log").unwrap_err();
        assert!(matches!(e, DaemonError::Forbidden(_)), "{e}");
        assert!(!target.exists());
        open_append(&Caller::ROOT, &target, "the log").unwrap();
        assert!(target.exists());
    }
}
