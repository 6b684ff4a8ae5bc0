//! What a container's rootfs changes are measured against.
//!
//! runc's `created` time (its state.json) is stamped after the container's init is set
//! up, and for `run` after the program may already have written files, so it cannot be
//! the baseline: a file written as the container's first command was lost. In order:
//! 1. An overlay rootfs (containerd's snapshots): its upper dir is the exact diff, with
//!    whiteouts for deletions. Found from the init's own mountinfo (the mount at `/`),
//!    so it does not matter where the host mounted it.
//! 2. A marker we left in the runtime's state dir (`<root>/<id>/`, deleted with the
//!    container) when we put the rootfs in place: at restore its time is taken before
//!    `rootfs-diff.tar` was applied (those changes still count against the pristine
//!    rootfs the next restore starts from) and it lists every path then, and the
//!    checkpoint's deletions, so deletions are found again.
//! 3. The start time of the container's init (/proc/PID/stat), less a margin: runc
//!    forks the init at `create`, before the container's program runs, so no write of
//!    the container can precede it, whoever started the container. Without a list of the
//!    rootfs at that time, deletions cannot be told (the limit for containers we did not
//!    start or restore: a removed file comes back on restore).
//! 4. runc's `created`, only when the init's start time cannot be read.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::RuncError;
use crate::oci;

/// The marker's name in the runtime's state dir.
pub const MARKER: &str = "cedana-rootfs-baseline.json";
/// runc's default state root.
const RUNC_ROOT: &str = "/run/runc";
/// Taken off the init's start time: clock ticks are 10 ms, and a wall clock stepped back
/// a little since must not hide a change. Earlier entries only make the tar larger.
const MARGIN_NS: i128 = 2_000_000_000;

/// A rootfs as we put it in place: since when changes count, and what it held then.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Baseline {
    /// Changes at or after this time (ns since the epoch) count.
    pub since_ns: i64,
    /// Every path below the rootfs then (relative).
    pub files: Vec<String>,
    /// Paths already deleted then, relative to the pristine rootfs.
    pub deleted: Vec<String>,
}

impl Baseline {
    /// The paths deleted relative to the pristine rootfs, given every path `seen` now;
    /// the children of a deleted directory are left out.
    pub fn deleted_now(&self, seen: &[String]) -> Vec<String> {
        let now: HashSet<&str> = seen.iter().map(String::as_str).collect();
        let gone: BTreeSet<&str> = self
            .files
            .iter()
            .chain(&self.deleted)
            .map(String::as_str)
            .filter(|p| !now.contains(p))
            .collect();
        gone.iter()
            .filter(|p| {
                !Path::new(p)
                    .ancestors()
                    .skip(1)
                    .any(|a| gone.contains(a.to_str().unwrap_or("")))
            })
            .map(|p| p.to_string())
            .collect()
    }
}

/// Where the changes of a container's rootfs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An overlay upper dir.
    Upper(PathBuf),
    /// Entries changed since a time; `known` is our marker when there is one.
    Since {
        /// ns since the epoch.
        since_ns: i128,
        /// `baseline`, `init-start` or `created`.
        from: &'static str,
        /// Our marker, for deletions.
        known: Option<Baseline>,
    },
}

/// Picks the source for the container whose init is `pid` (see the module's order).
pub fn choose(pid: i32, state_dir: &Path, created: &str) -> Source {
    if let Some(upper) = overlay_upper(pid) {
        return Source::Upper(upper);
    }
    if let Some(b) = read_marker(state_dir) {
        return Source::Since {
            since_ns: b.since_ns as i128,
            from: "baseline",
            known: Some(b),
        };
    }
    if let Some(t) = init_start_ns(pid) {
        return Source::Since {
            since_ns: t - MARGIN_NS,
            from: "init-start",
            known: None,
        };
    }
    let since_ns = chrono::DateTime::parse_from_rfc3339(created)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .map(i128::from)
        .unwrap_or(0);
    Source::Since {
        since_ns,
        from: "created",
        known: None,
    }
}

/// The runtime's state dir of container `id`.
pub fn state_dir(root: Option<&Path>, id: &str) -> PathBuf {
    root.unwrap_or(Path::new(RUNC_ROOT)).join(id)
}

/// Our marker in `state_dir`, if we left one.
pub fn read_marker(state_dir: &Path) -> Option<Baseline> {
    let bytes = fs::read(state_dir.join(MARKER)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Leaves the marker in `state_dir` (the container exists, so the dir does).
pub fn write_marker(state_dir: &Path, b: &Baseline) -> Result<(), RuncError> {
    let json = serde_json::to_vec(b).map_err(|e| RuncError::RootfsDiff(e.to_string()))?;
    fs::write(state_dir.join(MARKER), json).map_err(|e| {
        RuncError::RootfsDiff(format!(
            "record the rootfs baseline in {}: {e}",
            state_dir.display()
        ))
    })
}

/// The rootfs a bundle's config.json names (`root.path`, relative to the bundle).
/// `None` when it cannot be told: the baseline then falls back on other sources.
pub fn rootfs_of_bundle(bundle: &Path) -> Option<PathBuf> {
    let spec = oci::read_bundle_spec(bundle)
        .map_err(|e| tracing::debug!("no rootfs from the bundle: {e}"))
        .ok()?;
    oci::rootfs(bundle, &spec)
}

/// Now, in ns since the epoch.
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// Every path below `rootfs` on its filesystem (relative), as the diff walk sees them.
pub fn list(rootfs: &Path) -> Vec<String> {
    let Ok(dev) = fs::symlink_metadata(rootfs).map(|m| m.dev()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut stack = vec![rootfs.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for entry in rd.flatten() {
            let path = entry.path();
            let Ok(m) = fs::symlink_metadata(&path) else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            if let Ok(rel) = path.strip_prefix(rootfs) {
                out.push(rel.to_string_lossy().into_owned());
            }
            if m.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

/// When `pid` started, in ns since the epoch: its start in clock ticks since boot
/// (/proc/PID/stat field 22) moved onto the wall clock.
pub fn init_start_ns(pid: i32) -> Option<i128> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), field 3 first.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: i128 = rest.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
    let boot = clock_ns(libc::CLOCK_BOOTTIME)?;
    let real = clock_ns(libc::CLOCK_REALTIME)?;
    Some(real - boot + ticks * 1_000_000_000 / hz as i128)
}

/// A clock's time in ns.
fn clock_ns(clock: libc::clockid_t) -> Option<i128> {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec owned by this frame.
    if unsafe { libc::clock_gettime(clock, &mut t) } != 0 {
        return None;
    }
    Some(t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128)
}

/// The upper dir of `pid`'s root when it is an overlay mount.
pub fn overlay_upper(pid: i32) -> Option<PathBuf> {
    let info = fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    // The last mount on `/` is the one in effect.
    let line = info
        .lines()
        .rfind(|l| l.split_whitespace().nth(4) == Some("/"))?;
    let (_, after) = line.split_once(" - ")?;
    let mut f = after.split_whitespace();
    if f.next()? != "overlay" {
        return None;
    }
    let options = f.nth(1)?;
    let upper = options
        .split(',')
        .find_map(|o| o.strip_prefix("upperdir="))?;
    let upper = PathBuf::from(unescape(upper));
    upper.is_dir().then_some(upper)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletions_are_what_the_list_had_and_is_gone() {
        let b = Baseline {
            since_ns: 0,
            files: ["etc", "etc/a", "etc/b", "d", "d/x", "d/x/y"]
                .map(String::from)
                .to_vec(),
            deleted: vec!["old".into()],
        };
        let seen = ["etc", "etc/a"].map(String::from).to_vec();
        assert_eq!(b.deleted_now(&seen), ["d", "etc/b", "old"]);
        // Made again: no longer deleted.
        let seen = ["etc", "etc/a", "etc/b", "d", "d/x", "d/x/y", "old"].map(String::from);
        assert!(b.deleted_now(&seen).is_empty());
    }

    #[test]
    fn our_own_start_is_before_now_and_recent() {
        let t = init_start_ns(std::process::id() as i32).expect("start");
        let now = now_ns() as i128;
        assert!(t <= now, "{t} > {now}");
        assert!(now - t < 3_600 * 1_000_000_000, "started over an hour ago?");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
