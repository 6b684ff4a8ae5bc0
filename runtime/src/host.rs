//! Facts about this host: executables on PATH, host name, kernel.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::image::metadata::HostInfo;

/// Finds an executable: a path containing `/` is checked as is, a bare name is looked up
/// in PATH.
pub fn find_executable(name: &Path) -> Option<PathBuf> {
    find_executable_in(name, std::env::var_os("PATH").as_deref())
}

/// Like [`find_executable`], searching the given PATH value instead of ours.
pub fn find_executable_in(name: &Path, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if name.as_os_str().is_empty() {
        return None;
    }
    let is_exec = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.components().count() > 1 || name.is_absolute() {
        return is_exec(name).then(|| name.to_path_buf());
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(name))
        .find(|p| is_exec(p))
}

/// Host name, kernel release and architecture.
pub fn host_info() -> HostInfo {
    let uts = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    HostInfo {
        hostname: field(|u| u.nodename()),
        kernel: field(|u| u.release()),
        arch: field(|u| u.machine()),
    }
}

/// Whether we run with root privileges (needed for CRIU).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_on_path_and_rejects_missing() {
        assert!(find_executable(Path::new("sh")).is_some());
        assert!(find_executable(Path::new("no-such-binary-cedana")).is_none());
        assert!(find_executable(Path::new("/nonexistent/criu")).is_none());
    }

    #[test]
    fn host_info_has_a_kernel() {
        assert!(!host_info().kernel.is_empty());
    }
}
