//! The agent's operations, one connection each: info, list, dump (the tree stopped,
//! checkpointed in the guest, the archive streamed out; the tree killed once the host
//! says it committed the checkpoint, resumed on any failure), restore (receive the
//! archive, verified as it arrives, restore from it, resume the tree).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::container;
use super::error::GuestError;
use super::health;
use super::transport::Stream;
use super::wire::{
    self, Ack, AgentInfo, DumpReady, DumpSpec, Listing, Request, RestoreSpec, Restored, Target,
};
use crate::engine::{DumpRequest, Engine, RestoreRequest};
use crate::image::compression::Compression;

/// The built-in plugin whose checks (CRIU) matter in a guest.
const PROCESS_PLUGIN: &str = "process";

/// What every connection of one agent shares.
pub(super) struct Served {
    /// The engine, as the host daemon has it.
    pub engine: Arc<Engine>,
    /// Runs the engine's async operations for the connection threads.
    pub rt: tokio::runtime::Handle,
    /// Guest scratch space: `out/` for dumps waiting for the host, `in/` for restores.
    pub work: PathBuf,
    /// Where kata-agent lays out containers.
    pub kata_root: PathBuf,
}

/// Serves one request on `s`; a failure is sent back as the reply.
pub(super) fn handle(sv: &Served, s: &mut dyn Stream) {
    let req: Request = match wire::recv_msg(s) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "bad request");
            let _ = wire::send_error(s, &e);
            return;
        }
    };
    tracing::info!(?req, "request");
    let result = match req {
        Request::Info => wire::send_msg(s, &info(sv)),
        Request::List => wire::send_msg(s, &list(sv)),
        Request::Dump(spec) => dump(sv, s, spec),
        Request::Restore(spec) => restore(sv, s, spec),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "request failed");
        // The host may have gone already; the log keeps the error.
        let _ = wire::send_error(s, &e);
    }
}

fn info(sv: &Served) -> AgentInfo {
    let mut checks = health::checks();
    // Only the engine's own checks (CRIU): runc and containerd have no place in a guest.
    checks.extend(
        sv.engine
            .check()
            .into_iter()
            .filter(|c| c.plugin == PROCESS_PLUGIN),
    );
    AgentInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        kernel: crate::host::host_info().kernel,
        checks,
    }
}

fn list(sv: &Served) -> Listing {
    let processes = container::processes();
    Listing {
        containers: container::list(&sv.kata_root, &processes),
        processes,
    }
}

fn dump(sv: &Served, s: &mut dyn Stream, spec: DumpSpec) -> Result<(), GuestError> {
    let pid = match &spec.target {
        Target::Pid(p) => *p,
        Target::Container(id) => {
            let c = container::find(&sv.kata_root, id)?;
            container::tree_root(&c, &container::processes())?
        }
    };
    let compression = match spec.compression.as_deref() {
        None => Compression::Zstd,
        Some(name) => name
            .parse::<Compression>()
            .map_err(|e| GuestError::Invalid(e.to_string()))?,
    };
    if compression == Compression::None {
        return Err(GuestError::Invalid(
            "a kata checkpoint leaves the guest as one archive: use --compression tar, gzip, lz4 or zstd".into(),
        ));
    }
    let out = sv.work.join("out");
    fs::create_dir_all(&out).map_err(|e| GuestError::io(&out, e))?;
    let leave_running = spec.leave_running.unwrap_or(false);
    // The tree stays stopped from before CRIU until the host has committed the
    // checkpoint: killed then (it never runs after its capture), resumed on any failure
    // (a failed dump leaves it running, as on the host).
    let mut hold = Hold::stop(&sv.engine, pid)?;
    let resp = sv.rt.block_on(sv.engine.dump(DumpRequest {
        pid,
        dir: Some(out),
        name: spec.name,
        compression: Some(compression),
        leave_running: Some(true),
        flags: spec.flags,
        ..Default::default()
    }))?;
    let path = resp.path;
    // Only this copy is left once the host has one or the tree runs on: removed either way.
    let _remove = RemoveOnDrop(path.clone());
    let mut file = File::open(&path).map_err(|e| GuestError::io(&path, e))?;
    let size = file.metadata().map_err(|e| GuestError::io(&path, e))?.len();
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    wire::send_msg(
        s,
        &DumpReady {
            name: resp.name,
            file_name,
            size,
            pid,
            duration_ms: resp.duration_ms,
            metadata: resp.metadata,
        },
    )?;
    wire::send_stream(s, &mut file)?;
    match wire::recv_msg::<Ack, _>(s)? {
        Ack {
            committed: true, ..
        } => {
            hold.finish(leave_running);
            Ok(())
        }
        Ack { detail, .. } => {
            tracing::warn!(%detail, "the host refused the checkpoint; the tree runs on");
            Ok(())
        }
    }
}

/// A tree stopped with SIGSTOP for a dump: resumed on drop unless finished.
struct Hold<'a> {
    engine: &'a Engine,
    pid: i32,
    done: bool,
}

impl<'a> Hold<'a> {
    fn stop(engine: &'a Engine, pid: i32) -> Result<Self, GuestError> {
        engine.freeze(pid)?;
        Ok(Self {
            engine,
            pid,
            done: false,
        })
    }

    /// The checkpoint is committed on the host: the tree dies, or runs on if asked to.
    fn finish(&mut self, leave_running: bool) {
        self.done = true;
        let ended = if leave_running {
            self.engine.unfreeze(self.pid)
        } else {
            crate::engine::freeze::signal_tree(self.pid, nix::sys::signal::Signal::SIGKILL)
        };
        if let Err(e) = ended {
            tracing::error!(pid = self.pid, error = %e, "cannot end the held tree");
        }
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.engine.unfreeze(self.pid) {
                tracing::error!(pid = self.pid, error = %e, "cannot resume the tree after a failed dump");
            }
        }
    }
}

/// Removes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn restore(sv: &Served, s: &mut dyn Stream, spec: RestoreSpec) -> Result<(), GuestError> {
    let name = &spec.file_name;
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(GuestError::Invalid(format!(
            "bad checkpoint file name {name:?}"
        )));
    }
    if let Some(id) = &spec.container {
        // Its processes come back rooted in its rootfs: that must be there already.
        container::find(&sv.kata_root, id)?;
    }
    let incoming = sv.work.join("in");
    fs::create_dir_all(&incoming).map_err(|e| GuestError::io(&incoming, e))?;
    // Removed with everything in it when this restore ends, however it ends.
    let dir = tempfile::Builder::new()
        .prefix("restore-")
        .tempdir_in(&incoming)
        .map_err(|e| GuestError::io(&incoming, e))?;
    let path = dir.path().join(name);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| GuestError::io(&path, e))?;
    let mut w = BufWriter::new(file);
    wire::recv_stream(s, &mut w, spec.size)?;
    w.flush().map_err(|e| GuestError::io(&path, e))?;
    drop(w);
    let resp = sv.rt.block_on(sv.engine.restore(RestoreRequest {
        path,
        flags: spec.flags,
        ..Default::default()
    }))?;
    let pid = resp.pid;
    // Dumped while stopped (see Hold), so CRIU brings the tree back stopped: resume it.
    sv.engine.unfreeze(pid)?;
    // The restored root is our child (CRIU's rst_sibling): reap it when it exits.
    std::thread::spawn(move || {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    });
    wire::send_msg(
        s,
        &Restored {
            pid,
            duration_ms: resp.duration_ms,
        },
    )
}
