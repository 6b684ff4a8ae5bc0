//! Loopback in a restored container's own network namespace.
//!
//! runc does not manage network devices, so it checkpoints a container's own network
//! namespace as empty and CRIU restores it as a fresh one whose `lo` is down: a socket
//! on 127.0.0.1 (an established TCP connection inside the container) then fails with
//! "Can't connect inet socket back: Network is unreachable". runc runs the spec's
//! prestart hooks on restore when CRIU reports `setup-namespaces` (the namespace exists,
//! no socket is restored yet), so for the duration of the restore the bundle's
//! `config.json` gets one more prestart hook: `cedana-runc` itself in a hidden mode
//! ([`HOOK_ARG`]) that reads the OCI state from stdin, enters `/proc/PID/ns/net` and
//! sets `lo` up. The original `config.json` is put back once the runtime returns.

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::layout;
use super::target::RuncRestore;
use crate::chain::{Adapter, OpResult};
use crate::engine::{blocking, RestoreCtx, RestoreResponse};
use crate::error::EngineError;
use crate::process::state::SocketKind;

/// `cedana-runc HOOK_ARG`: the hidden prestart-hook mode (never a runc command).
pub const HOOK_ARG: &str = "__cedana-loopback-hook";

/// The binary whose hook mode is used.
const HOOK_BINARY: &str = "cedana-runc";

/// Restore middleware: when the checkpoint holds inet sockets and the spec gives the
/// container a new network namespace, adds the loopback hook to the bundle's
/// `config.json` around the rest of the chain (the runtime's `restore`).
pub fn ensure_loopback() -> Adapter<RestoreCtx, RestoreResponse> {
    Adapter::from_fn("ensure_loopback", |ctx: RestoreCtx, next| {
        Box::pin(async move {
            let Some(r) = ctx.req.target::<RuncRestore>().cloned() else {
                return next.run(ctx).await;
            };
            if !needs_loopback(&ctx) {
                return next.run(ctx).await;
            }
            let Some(hook) = hook_binary() else {
                tracing::warn!(
                    "{HOOK_BINARY} not found beside this binary or on PATH: the restored \
                     container's loopback stays down"
                );
                return next.run(ctx).await;
            };
            let (bundle, images) = (r.bundle.clone(), ctx.images_dir.clone());
            let guard = blocking(move || add_hook(&bundle, &images, &hook)).await?;
            let result = next.run(ctx).await;
            if let Some(g) = guard {
                blocking(move || g.restore()).await?;
            }
            result
        })
    })
}

/// Whether the checkpoint holds inet sockets (only possible with `lo` up when they are
/// on loopback, and harmless otherwise).
fn needs_loopback(ctx: &RestoreCtx) -> bool {
    ctx.opts.tcp_established
        || ctx.metadata.process.sockets.iter().any(|s| {
            matches!(
                s.kind,
                SocketKind::TcpConnected
                    | SocketKind::TcpListen
                    | SocketKind::TcpOther
                    | SocketKind::Udp
            )
        })
}

/// `cedana-runc`: this binary if it is it, else the one beside it, else PATH's.
fn hook_binary() -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    if me.file_name().and_then(|n| n.to_str()) == Some(HOOK_BINARY) {
        return Some(me);
    }
    let beside = me.with_file_name(HOOK_BINARY);
    if beside.is_file() {
        return Some(beside);
    }
    crate::host::find_executable(Path::new(HOOK_BINARY))
}

/// The bundle's `config.json` as it was before the hook was added.
struct SpecGuard {
    path: PathBuf,
    original: Vec<u8>,
}

impl SpecGuard {
    fn restore(self) -> OpResult<()> {
        fs::write(&self.path, &self.original)
            .map_err(|e| EngineError::io(format!("restore {}", self.path.display()), e))
    }
}

/// Adds the hook when the spec creates a network namespace of its own; returns what to
/// put back. A portable checkpoint's bundle may have no `config.json` yet: it is written
/// from `spec.dump` first, as the restore handler would.
fn add_hook(bundle: &Path, images_dir: &Path, hook: &Path) -> OpResult<Option<SpecGuard>> {
    let path = bundle.join("config.json");
    if !path.exists() && layout::is_portable(images_dir) {
        fs::copy(images_dir.join(layout::SPEC_DUMP), &path).map_err(|e| {
            EngineError::io(
                format!("write {} from the checkpoint's spec.dump", path.display()),
                e,
            )
        })?;
    }
    let Ok(original) = fs::read(&path) else {
        return Ok(None); // the handler reports the missing config
    };
    let Ok(mut spec) = serde_json::from_slice::<serde_json::Value>(&original) else {
        return Ok(None);
    };
    if !with_hook(&mut spec, hook) {
        return Ok(None);
    }
    let bytes = serde_json::to_vec_pretty(&spec)
        .map_err(|e| EngineError::io("encode config.json", std::io::Error::other(e)))?;
    fs::write(&path, bytes)
        .map_err(|e| EngineError::io(format!("add the loopback hook to {}", path.display()), e))?;
    tracing::info!(config = %path.display(), "loopback hook added for the restore");
    Ok(Some(SpecGuard { path, original }))
}

/// Adds the hook to `spec` when it asks for a new network namespace (a `network` entry
/// without `path`); returns whether it did.
pub fn with_hook(spec: &mut serde_json::Value, hook: &Path) -> bool {
    let own_netns = spec
        .pointer("/linux/namespaces")
        .and_then(|v| v.as_array())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n["type"] == "network" && n.get("path").is_none_or(|p| p == ""))
        });
    if !own_netns {
        return false;
    }
    let entry = serde_json::json!({
        "path": hook,
        "args": [HOOK_BINARY, HOOK_ARG],
    });
    let Some(obj) = spec.as_object_mut() else {
        return false;
    };
    let hooks = obj.entry("hooks").or_insert_with(|| serde_json::json!({}));
    if !hooks.is_object() {
        *hooks = serde_json::json!({});
    }
    let prestart = hooks
        .as_object_mut()
        .map(|h| h.entry("prestart").or_insert_with(|| serde_json::json!([])));
    match prestart {
        Some(serde_json::Value::Array(list)) => {
            // First, so hooks of the spec's own find loopback up.
            list.insert(0, entry);
            true
        }
        Some(other) => {
            *other = serde_json::json!([entry]);
            true
        }
        None => false,
    }
}

/// The hook mode: reads the OCI state (`{"pid": N, ...}`) from stdin and sets `lo` up
/// in that process's network namespace. Returns the exit code.
pub fn hook_main() -> i32 {
    match run_hook() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cedana-runc loopback hook: {e}");
            1
        }
    }
}

fn run_hook() -> Result<(), String> {
    let mut state = String::new();
    std::io::stdin()
        .read_to_string(&mut state)
        .map_err(|e| format!("read the container state from stdin: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&state).map_err(|e| format!("container state is not JSON: {e}"))?;
    let pid = v["pid"]
        .as_i64()
        .filter(|p| *p > 0)
        .ok_or("container state has no pid")?;
    let ns_path = format!("/proc/{pid}/ns/net");
    let ns: OwnedFd = fs::File::open(&ns_path)
        .map_err(|e| format!("open {ns_path}: {e}"))?
        .into();
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("enter {ns_path}: {e}"))?;
    set_up("lo").map_err(|e| format!("set lo up in {ns_path}: {e}"))
}

/// `ip link set NAME up` in the current network namespace (SIOCGIFFLAGS/SIOCSIFFLAGS).
fn set_up(name: &str) -> std::io::Result<()> {
    // SAFETY: a plain socket(2) call; the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming the interface; the kernel fills the flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; the kernel reads the flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_added_first_for_an_own_network_namespace() {
        let mut spec = serde_json::json!({
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]},
            "hooks": {"prestart": [{"path": "/bin/true"}]},
        });
        assert!(with_hook(&mut spec, Path::new("/usr/bin/cedana-runc")));
        let pre = spec["hooks"]["prestart"].as_array().expect("prestart");
        assert_eq!(pre.len(), 2);
        assert_eq!(pre[0]["path"], "/usr/bin/cedana-runc");
        assert_eq!(pre[0]["args"][1], HOOK_ARG);
        assert_eq!(pre[1]["path"], "/bin/true");
    }

    #[test]
    fn hook_added_when_the_spec_has_no_hooks() {
        let mut spec = serde_json::json!({"linux": {"namespaces": [{"type": "network"}]}});
        assert!(with_hook(&mut spec, Path::new("/x/cedana-runc")));
        assert_eq!(spec["hooks"]["prestart"][0]["path"], "/x/cedana-runc");
    }

    #[test]
    fn no_hook_for_a_joined_or_the_host_network_namespace() {
        let mut joined = serde_json::json!({
            "linux": {"namespaces": [{"type": "network", "path": "/var/run/netns/cni-1"}]}
        });
        assert!(!with_hook(&mut joined, Path::new("/x/cedana-runc")));
        assert!(joined.get("hooks").is_none());
        let mut host = serde_json::json!({"linux": {"namespaces": [{"type": "pid"}]}});
        assert!(!with_hook(&mut host, Path::new("/x/cedana-runc")));
    }
}
