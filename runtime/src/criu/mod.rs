//! The CRIU driver: RPC over `criu swrk` for dump/restore/version/feature checks.
//!
//! Every request starts a fresh `criu swrk <fd>` child connected through one end of a
//! `socketpair(AF_UNIX, SOCK_SEQPACKET)`. Each message is exactly one datagram carrying a
//! protobuf-encoded `criu_req` / `criu_resp` (no length prefix). File descriptor numbers in
//! a request (`images_dir_fd`, `work_dir_fd`, `inherit_fd`) name descriptors of *this*
//! process: CRIU finds us through `SO_PEERCRED` and opens `/proc/<our pid>/fd/<n>`, so the
//! descriptors are kept open until the response has arrived.
//!
//! All calls are blocking; async callers wrap them in `spawn_blocking`.
//!
//! `swrk.rs` is the transport (`packet.rs` its framing), `check.rs` runs `criu check`,
//! `cli.rs` drives CRIU's command line for what RPC refuses (`--stream`), `relay/` serves
//! swrk to a runtime (runc `--criu`) and runs CRIU's command line with `--stream`,
//! `rpc.rs` holds the messages.

mod check;
pub mod cli;
pub mod error;
pub mod lazy;
pub mod options;
mod packet;
pub mod page_server;
pub mod pagemap;
pub mod relay;
pub mod rpc;
pub mod stats;
mod swrk;

use std::ffi::OsString;
use std::fmt;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub use cli::StreamArgs;
pub use error::{log_tail, CriuError, LOG_TAIL_LINES, NOT_FOUND_HINT};
pub use lazy::LazyPages;
pub use options::CriuOpts;

#[cfg(test)]
use check::check_warnings;
use rpc::CriuReqType;
use swrk::RequestDirs;

/// The oldest CRIU the engine works with.
pub const MIN_VERSION: (u32, u32, u32) = (3, 16, 0);

/// The descriptor number the swrk socket gets in the CRIU child.
const SWRK_FD: i32 = 3;

/// Makes `fd` of ours descriptor `target` in `cmd`'s child, without CLOEXEC; the rest of
/// our descriptors stay closed on exec.
fn pass_fd(cmd: &mut std::process::Command, fd: std::os::fd::RawFd, target: i32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == target {
                // dup2 onto itself keeps CLOEXEC; clear it by hand.
                if libc::fcntl(target, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Receive buffer for one response datagram.
const RECV_BUF: usize = 64 * 1024;

/// Log verbosity for dump/restore (4 = debug, what CRIU bug reports ask for).
const LOG_LEVEL: i32 = 4;

/// A CRIU installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criu {
    binary: PathBuf,
    /// `--network-lock`, when not CRIU's default (iptables).
    network_lock: Option<NetworkLock>,
}

/// How CRIU keeps packets off a tree's TCP connections between freezing and killing it
/// (dump) and until they are repaired (restore): CRIU's `--network-lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkLock {
    /// iptables rules (`iptables-restore` on PATH); CRIU's default.
    Iptables = 1,
    /// An nftables table through CRIU's own libnftables: no tools needed.
    Nftables = 2,
    /// No lock: sound only where nothing else can reach the tree's connections.
    Skip = 3,
}

impl NetworkLock {
    /// The method named `name` (a `criu.network_lock` value); `None` for another.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "iptables" => Some(Self::Iptables),
            "nftables" => Some(Self::Nftables),
            "skip" => Some(Self::Skip),
            _ => None,
        }
    }

    /// Its name on CRIU's command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Iptables => "iptables",
            Self::Nftables => "nftables",
            Self::Skip => "skip",
        }
    }
}

/// CRIU's version, as reported over RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriuVersion {
    pub major: u32,
    pub minor: u32,
    pub sublevel: u32,
    /// The git commit CRIU was built from, for development builds.
    pub gitid: Option<String>,
}

impl CriuVersion {
    /// `major * 10000 + minor * 100 + sublevel` (4.1.1 -> 40101), CRIU's own convention.
    pub fn as_number(&self) -> u32 {
        version_number((self.major, self.minor, self.sublevel))
    }
}

impl CriuVersion {
    /// Fails with [`CriuError::TooOld`] if this version is older than `min`.
    pub fn require(&self, min: (u32, u32, u32)) -> Result<(), CriuError> {
        if self.as_number() < version_number(min) {
            return Err(CriuError::TooOld {
                found: self.to_string(),
                need: format!("{}.{}.{}", min.0, min.1, min.2),
            });
        }
        Ok(())
    }
}

impl fmt::Display for CriuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.sublevel)
    }
}

fn version_number((major, minor, sublevel): (u32, u32, u32)) -> u32 {
    major * 10000 + minor * 100 + sublevel
}

/// The result of `criu check` (plus `criu check --all`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// `criu check` passed: the basic dump/restore features are there.
    pub ok: bool,
    /// What `criu check` printed (stdout, then stderr).
    pub output: String,
    /// Missing optional features reported by `criu check --all`
    /// (e.g. "Dirty tracking is OFF. Memory snapshot will not work.").
    pub warnings: Vec<String>,
}

/// Optional features as answered by CRIU's FEATURE_CHECK.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CriuFeatures {
    /// Memory change tracking (soft-dirty bits) for incremental dumps.
    pub mem_track: bool,
    /// Lazy (post-copy) page restore via userfaultfd.
    pub lazy_pages: bool,
    /// Storing pidfds across pre-dumps (pid reuse detection).
    pub pidfd_store: bool,
}

/// What to dump.
#[derive(Debug, Clone, Copy)]
pub struct DumpArgs<'a> {
    /// Root of the process tree.
    pub pid: i32,
    /// Where the images are written (must exist).
    pub images_dir: &'a Path,
    /// Where CRIU writes its log (and other non-image files); defaults to `images_dir`.
    pub work_dir: Option<&'a Path>,
    pub opts: &'a CriuOpts,
    /// Run at CRIU's `post-dump` notification, while the dumped tree is still held: its
    /// verdict decides whether CRIU finishes (and kills the tree unless `leave_running`)
    /// or lets the tree run on and fails the dump.
    pub post_dump: Option<PostDump<'a>>,
}

/// The commit step of a dump, run inside CRIU's `post-dump` notification; `false` fails
/// the dump and CRIU resumes the tree.
#[derive(Clone, Copy)]
pub struct PostDump<'a>(pub &'a (dyn Fn() -> bool + Sync));

impl fmt::Debug for PostDump<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PostDump(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpOutcome {
    /// CRIU's dump log.
    pub log_path: PathBuf,
}

/// What to restore.
#[derive(Debug, Clone, Copy)]
pub struct RestoreArgs<'a> {
    pub images_dir: &'a Path,
    /// Where CRIU writes its log; defaults to `images_dir`.
    pub work_dir: Option<&'a Path>,
    pub opts: &'a CriuOpts,
    /// Restore the root task as a sibling of CRIU, i.e. as a *child of the calling process*
    /// (which must then reap it). Without it the tree is reparented to init/a subreaper when
    /// `criu swrk` exits.
    pub rst_sibling: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// Pid of the restored root task (the pid it had when dumped).
    pub pid: i32,
    /// CRIU's restore log.
    pub log_path: PathBuf,
}

impl Criu {
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Criu {
            binary: binary.into(),
            network_lock: None,
        }
    }

    /// This CRIU with `--network-lock` set to `lock` (iptables, CRIU's default, sends
    /// nothing, so CRIUs without the option keep working).
    pub fn with_network_lock(mut self, lock: NetworkLock) -> Self {
        self.network_lock = (lock != NetworkLock::Iptables).then_some(lock);
        self
    }

    /// The network lock method sent to CRIU, if not its default.
    pub fn network_lock(&self) -> Option<NetworkLock> {
        self.network_lock
    }

    /// Find the CRIU binary: a path with a `/` must be an executable file; a bare name is
    /// looked up in `PATH` (only there: "not on PATH" must mean what it says).
    pub fn locate(configured: &Path) -> Result<Criu, CriuError> {
        locate_in(configured, std::env::var_os("PATH"))
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// CRIU's version, via an RPC VERSION request.
    pub fn version(&self) -> Result<CriuVersion, CriuError> {
        let resp = self.simple_call("version", rpc::CriuReq::new(CriuReqType::Version))?;
        let v = resp
            .version
            .ok_or_else(|| CriuError::protocol("VERSION response without a version"))?;
        let num = |n: i32| u32::try_from(n).unwrap_or(0);
        Ok(CriuVersion {
            major: num(v.major_number),
            minor: num(v.minor_number),
            sublevel: num(v.sublevel.unwrap_or(0)),
            gitid: v.gitid.filter(|g| !g.is_empty()),
        })
    }

    /// Fail with [`CriuError::TooOld`] if CRIU is older than `min` (major, minor, sublevel).
    pub fn require(&self, min: (u32, u32, u32)) -> Result<CriuVersion, CriuError> {
        let v = self.version()?;
        v.require(min)?;
        Ok(v)
    }

    /// Which optional features CRIU and the kernel support, via RPC FEATURE_CHECK.
    pub fn feature_check(&self) -> Result<CriuFeatures, CriuError> {
        let req = rpc::CriuReq {
            features: Some(rpc::CriuFeatures {
                mem_track: Some(true),
                lazy_pages: Some(true),
                pidfd_store: Some(true),
            }),
            ..rpc::CriuReq::new(CriuReqType::FeatureCheck)
        };
        let resp = self.simple_call("feature check", req)?;
        let f = resp
            .features
            .ok_or_else(|| CriuError::protocol("FEATURE_CHECK response without features"))?;
        Ok(CriuFeatures {
            mem_track: f.mem_track.unwrap_or(false),
            lazy_pages: f.lazy_pages.unwrap_or(false),
            pidfd_store: f.pidfd_store.unwrap_or(false),
        })
    }

    /// Dump the tree rooted at `args.pid` into `args.images_dir`.
    pub fn dump(&self, args: &DumpArgs) -> Result<DumpOutcome, CriuError> {
        let dirs = RequestDirs::open(args.images_dir, args.work_dir, "dump.log")?;
        let mut opts = args.opts.to_rpc(dirs.images.as_raw_fd());
        opts.pid = Some(args.pid);
        opts.network_lock = self.network_lock.map(|l| l as i32);
        if args.post_dump.is_some() {
            opts.notify_scripts = Some(true);
        }
        dirs.fill(&mut opts);
        let req = rpc::CriuReq {
            opts: Some(opts),
            ..rpc::CriuReq::new(CriuReqType::Dump)
        };
        tracing::debug!(pid = args.pid, images = %args.images_dir.display(), "criu dump");
        let resp = self.logged_call("dump", req, &dirs.log_path, args.post_dump)?;
        drop(dirs.images);
        drop(dirs.work);
        if resp.r#type != CriuReqType::Dump as i32 {
            return Err(CriuError::protocol(format!(
                "expected a DUMP response, got type {}",
                resp.r#type
            )));
        }
        Ok(DumpOutcome {
            log_path: dirs.log_path,
        })
    }

    /// Restore the tree dumped in `args.images_dir`.
    pub fn restore(&self, args: &RestoreArgs) -> Result<RestoreOutcome, CriuError> {
        let dirs = RequestDirs::open(args.images_dir, args.work_dir, "restore.log")?;
        let mut opts = args.opts.to_rpc(dirs.images.as_raw_fd());
        opts.network_lock = self.network_lock.map(|l| l as i32);
        // Dump-only; meaningless on restore.
        opts.leave_running = None;
        if args.rst_sibling {
            opts.rst_sibling = Some(true);
        }
        dirs.fill(&mut opts);
        let req = rpc::CriuReq {
            opts: Some(opts),
            ..rpc::CriuReq::new(CriuReqType::Restore)
        };
        tracing::debug!(images = %args.images_dir.display(), rst_sibling = args.rst_sibling, "criu restore");
        let resp = self.logged_call("restore", req, &dirs.log_path, None)?;
        drop(dirs.images);
        drop(dirs.work);
        let pid = match (CriuReqType::try_from(resp.r#type), resp.restore) {
            (Ok(CriuReqType::Restore), Some(r)) => r.pid,
            (_, r) => {
                return Err(CriuError::protocol(format!(
                    "expected a RESTORE response with a pid, got type {} ({})",
                    resp.r#type,
                    if r.is_some() { "with pid" } else { "no pid" }
                )))
            }
        };
        Ok(RestoreOutcome {
            pid,
            log_path: dirs.log_path,
        })
    }
}
fn locate_in(configured: &Path, path_var: Option<OsString>) -> Result<Criu, CriuError> {
    crate::host::find_executable_in(configured, path_var.as_deref())
        .map(Criu::new)
        .ok_or_else(|| CriuError::NotFound {
            binary: configured.to_path_buf(),
            hint: NOT_FOUND_HINT.to_string(),
        })
}

#[cfg(test)]
mod tests;
