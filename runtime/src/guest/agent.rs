//! `cedana-guest-agent`'s listeners: AF_VSOCK on a port (the production transport), and
//! optionally TCP for debugging; one thread per connection, the engine shared.

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use cedana_config::Config;
use nix::sys::socket::{
    accept4, bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
};

use super::container::KATA_ROOT;
use super::error::GuestError;
use super::serve::{handle, Served};
use super::transport::Stream;
use crate::engine::Engine;

/// Any CID: the guest accepts whatever address the host uses.
const VMADDR_CID_ANY: u32 = u32::MAX;
/// Pending connections per listener.
const BACKLOG: i32 = 16;

/// How the agent is set up.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// vsock port to listen on.
    pub port: u32,
    /// Also listen on this TCP address (debugging only: no authentication).
    pub tcp: Option<String>,
    /// Scratch space for checkpoints in transit.
    pub work_dir: PathBuf,
    /// Where kata-agent lays out containers.
    pub kata_root: PathBuf,
    /// CRIU's `--network-lock` in the guest: nftables by default, since CRIU does it
    /// through its own libnftables and guest images seldom carry iptables.
    pub network_lock: String,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            port: super::DEFAULT_PORT,
            tcp: None,
            work_dir: PathBuf::from("/run/cedana-guest"),
            kata_root: PathBuf::from(KATA_ROOT),
            network_lock: "nftables".into(),
        }
    }
}

/// Listens and serves until the process is killed; returns only when no listener could
/// be opened.
pub fn run(opts: AgentOptions, mut config: Config) -> Result<(), GuestError> {
    config.checkpoint.dir = opts.work_dir.join("out");
    if !cedana_config::NETWORK_LOCKS.contains(&opts.network_lock.as_str()) {
        return Err(GuestError::Invalid(format!(
            "--network-lock {:?}: use one of {}",
            opts.network_lock,
            cedana_config::NETWORK_LOCKS.join(", ")
        )));
    }
    config.criu.network_lock = opts.network_lock.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| GuestError::io("tokio runtime", e))?;
    let served = Arc::new(Served {
        engine: Arc::new(Engine::new(config)),
        rt: rt.handle().clone(),
        work: opts.work_dir.clone(),
        kata_root: opts.kata_root.clone(),
    });
    let mut threads = Vec::new();
    match vsock_listener(opts.port) {
        Ok(l) => {
            eprintln!("cedana-guest-agent: listening on vsock port {}", opts.port);
            let sv = Arc::clone(&served);
            threads.push(std::thread::spawn(move || serve_vsock(l, sv)));
        }
        Err(e) if opts.tcp.is_some() => {
            eprintln!("cedana-guest-agent: no vsock ({e}); TCP only");
        }
        Err(e) => {
            return Err(GuestError::io(
                format!("vsock port {}", opts.port),
                e.into(),
            ))
        }
    }
    if let Some(addr) = &opts.tcp {
        let l = TcpListener::bind(addr).map_err(|e| GuestError::io(addr, e))?;
        eprintln!("cedana-guest-agent: listening on tcp {addr}");
        let sv = Arc::clone(&served);
        threads.push(std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                spawn_conn(Box::new(conn), &sv);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn vsock_listener(port: u32) -> nix::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &VsockAddr::new(VMADDR_CID_ANY, port))?;
    listen(&fd, Backlog::new(BACKLOG)?)?;
    Ok(fd)
}

fn serve_vsock(l: OwnedFd, sv: Arc<Served>) {
    loop {
        match accept4(l.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(raw) => {
                // SAFETY: accept4() just returned this descriptor; nothing else owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                spawn_conn(Box::new(File::from(fd)), &sv);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::error!(error = %e, "vsock accept failed");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

fn spawn_conn(s: Box<dyn Stream>, sv: &Arc<Served>) {
    let sv = Arc::clone(sv);
    std::thread::spawn(move || handle(&sv, s));
}
