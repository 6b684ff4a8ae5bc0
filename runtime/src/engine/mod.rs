//! The engine: one object the transports hold, exposing each operation as a chain of
//! adapters around a handler. Build it once from the config; it is cheap to share.

pub mod claims;
pub mod dump;
pub mod freeze;
pub mod manage;
pub mod restore;
pub mod run;
pub mod types;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use cedana_config::Config;

use crate::chain::{Chain, OpResult};
use crate::criu::{Criu, CriuVersion};
use crate::error::EngineError;
use crate::image::metadata::CheckpointKind;
use crate::plugins::PluginRegistry;
use crate::store::{CheckpointStore, Location, StoreRegistry};
pub use claims::{PidClaim, PidUse};
pub use dump::DumpCtx;
pub use restore::RestoreCtx;
pub use types::*;

/// What every operation can reach: configuration and host clients.
#[derive(Debug)]
pub struct Env {
    /// The loaded configuration.
    pub config: Config,
    /// CRIU's version, asked once (it costs a CRIU start) and kept for this engine.
    criu_version: OnceLock<CriuVersion>,
    /// PIDs that dumps and restores of this engine hold now (see `claims.rs`).
    pub(crate) claims: claims::Claims,
    /// Checkpoint stores by location scheme (`file`, ...).
    pub stores: StoreRegistry,
}

impl Env {
    /// An environment for `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            criu_version: OnceLock::new(),
            claims: claims::Claims::new(),
            stores: StoreRegistry::builtin(),
        }
    }

    /// Claims `pids` for one dump; refused with [`EngineError::DumpInProgress`] (or
    /// `RestoreInProgress`) while another operation, here or in another process, holds one.
    pub fn claim_for_dump(self: &Arc<Self>, pids: Vec<i32>) -> OpResult<PidClaim> {
        claims::claim(self, pids, PidUse::Dump)
    }

    /// Claims the PIDs a restore will recreate; refused like [`Env::claim_for_dump`], with
    /// [`EngineError::RestoreInProgress`] when another restore holds one.
    pub fn claim_for_restore(self: &Arc<Self>, pids: Vec<i32>) -> OpResult<PidClaim> {
        claims::claim(self, pids, PidUse::Restore)
    }

    /// The configured CRIU's version, asked over RPC the first time only.
    pub async fn criu_version(self: &Arc<Self>) -> OpResult<CriuVersion> {
        if let Some(v) = self.criu_version.get() {
            return Ok(v.clone());
        }
        let criu = self.criu()?;
        let v = blocking(move || Ok(criu.version()?)).await?;
        Ok(self.criu_version.get_or_init(|| v).clone())
    }

    /// The CRIU driver for the configured binary, or a clear error if it is missing.
    pub fn criu(&self) -> OpResult<Criu> {
        Ok(Criu::locate(&self.config.criu.binary_path)?)
    }
}

/// The checkpoint/restore engine.
#[derive(Clone)]
pub struct Engine {
    env: Arc<Env>,
    dump: Chain<DumpCtx, DumpResponse>,
    restore: Chain<RestoreCtx, RestoreResponse>,
    /// Chains of the kinds a plugin owns (runc, ...), chosen by the request's kind.
    kind_dump: BTreeMap<&'static str, Chain<DumpCtx, DumpResponse>>,
    kind_restore: BTreeMap<&'static str, Chain<RestoreCtx, RestoreResponse>>,
    run: Chain<run::RunCtx, RunResponse>,
    manage: Chain<ManageRequest, ManageResponse>,
    plugins: Arc<PluginRegistry>,
}

impl Engine {
    /// Builds the engine and its chains from a configuration and the built-in plugins.
    pub fn new(config: Config) -> Self {
        let plugins = PluginRegistry::builtin();
        let env = Arc::new(Env::new(config));
        let kinds = plugins.kinds();
        Self {
            dump: plugins.extend_dump(dump::chain()),
            restore: plugins.extend_restore(restore::chain()),
            kind_dump: kinds
                .iter()
                .map(|k| (kind_name(*k), plugins.extend_dump_for(*k, dump::chain())))
                .collect(),
            kind_restore: kinds
                .iter()
                .map(|k| {
                    (
                        kind_name(*k),
                        plugins.extend_restore_for(*k, restore::chain()),
                    )
                })
                .collect(),
            run: run::chain(),
            manage: manage::chain(),
            env,
            plugins: Arc::new(plugins),
        }
    }

    /// Undoes what an operation cut short by a crash left (staging paths, frozen
    /// containers); returns what it did, for the log. Run once at daemon start.
    pub fn recover_after_crash(&self) -> Vec<String> {
        // Staging paths live in the checkpoint dir's store; scratch dirs in the temp dir.
        let dirs = [
            Location::from_path(&self.env.config.checkpoint.dir),
            Ok(Location::local(std::env::temp_dir())),
        ];
        let mut done: Vec<String> = dirs
            .iter()
            .flatten()
            .flat_map(|d| match self.env.stores.resolve(d) {
                Ok(store) => store.recover(d),
                Err(e) => vec![format!("cannot recover {d}: {e}")],
            })
            .collect();
        done.extend(crate::plugins::runc::hold::release_abandoned());
        done
    }

    /// Serves `scheme://` locations with `store`: the one line that adds a storage
    /// backend to this engine (the built-in ones are in [`StoreRegistry::builtin`]).
    pub fn with_store(self, scheme: &str, store: Arc<dyn CheckpointStore>) -> Self {
        self.env.stores.register(scheme, store);
        self
    }

    /// The checkpoint stores this engine serves, by location scheme.
    pub fn stores(&self) -> &StoreRegistry {
        &self.env.stores
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.env.config
    }

    /// Shared environment (config and host clients).
    pub fn env(&self) -> &Arc<Env> {
        &self.env
    }

    /// Checkpoints a process tree, or a container (`req.kind` picks the chain; a runc
    /// container needs `req.runc`).
    pub async fn dump(&self, req: DumpRequest) -> OpResult<DumpResponse> {
        self.dump_chain(req.kind)?
            .run(DumpCtx::new(Arc::clone(&self.env), req))
            .await
    }

    /// Restores a process tree (the caller becomes its parent), or a container when
    /// `req.runc` is set.
    pub async fn restore(&self, req: RestoreRequest) -> OpResult<RestoreResponse> {
        self.restore_chain(req.kind())?
            .run(RestoreCtx::new(Arc::clone(&self.env), req))
            .await
    }

    fn dump_chain(&self, kind: CheckpointKind) -> OpResult<&Chain<DumpCtx, DumpResponse>> {
        match kind {
            CheckpointKind::Process => Ok(&self.dump),
            k => self.kind_dump.get(kind_name(k)).ok_or_else(|| no_plugin(k)),
        }
    }

    fn restore_chain(&self, kind: CheckpointKind) -> OpResult<&Chain<RestoreCtx, RestoreResponse>> {
        match kind {
            CheckpointKind::Process => Ok(&self.restore),
            k => self
                .kind_restore
                .get(kind_name(k))
                .ok_or_else(|| no_plugin(k)),
        }
    }

    /// Starts a process in its own session with output to a log file.
    pub async fn run(&self, req: RunRequest) -> OpResult<RunResponse> {
        self.run
            .run(run::RunCtx {
                env: Arc::clone(&self.env),
                req,
            })
            .await
    }

    /// Starts a runc container detached, its output to `req.log_path` (through a relay,
    /// so it can be checkpointed); its init is not our child.
    pub async fn run_runc(
        &self,
        req: crate::plugins::runc::RuncRun,
    ) -> OpResult<crate::plugins::runc::RuncRunResponse> {
        crate::plugins::runc::run::run_container(&self.env, req).await
    }

    /// Checks that a process can be adopted and describes it.
    pub async fn manage(&self, req: ManageRequest) -> OpResult<ManageResponse> {
        self.manage.run(req).await
    }

    /// Stops every process of the tree (SIGSTOP), leaving it resumable.
    pub fn freeze(&self, pid: i32) -> OpResult<()> {
        freeze::signal_tree(pid, nix::sys::signal::Signal::SIGSTOP)
    }

    /// Resumes a frozen tree (SIGCONT).
    pub fn unfreeze(&self, pid: i32) -> OpResult<()> {
        freeze::signal_tree(pid, nix::sys::signal::Signal::SIGCONT)
    }

    /// The registered plugins.
    pub fn plugins(&self) -> &PluginRegistry {
        &self.plugins
    }

    /// The chains, in order, for `cedana features` and logs.
    pub fn chains(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("dump".to_string(), format!("{:?}", self.dump)),
            ("restore".to_string(), format!("{:?}", self.restore)),
            ("run".to_string(), format!("{:?}", self.run)),
            ("manage".to_string(), format!("{:?}", self.manage)),
        ];
        for (k, c) in &self.kind_dump {
            out.push((format!("dump {k}"), format!("{c:?}")));
        }
        for (k, c) in &self.kind_restore {
            out.push((format!("restore {k}"), format!("{c:?}")));
        }
        out
    }

    /// Host health: CRIU and every plugin's checks.
    pub fn check(&self) -> Vec<crate::plugins::HealthCheck> {
        self.plugins.health(&self.env)
    }
}

fn kind_name(k: CheckpointKind) -> &'static str {
    match k {
        CheckpointKind::Process => "process",
        CheckpointKind::Runc => "runc",
        CheckpointKind::Containerd => "containerd",
        CheckpointKind::Kata => "kata",
    }
}

fn no_plugin(k: CheckpointKind) -> EngineError {
    EngineError::InvalidRequest {
        field: "kind",
        reason: format!(
            "no plugin in this build handles {} checkpoints (see `cedana features`)",
            kind_name(k)
        ),
    }
}

/// Runs blocking work (CRIU, archive packing) off the async runtime.
pub(crate) async fn blocking<T, F>(f: F) -> OpResult<T>
where
    F: FnOnce() -> OpResult<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Internal(format!("blocking task failed: {e}")))?
}

/// Nice value of the engine's bulk work (inspecting, packing, hashing, unpacking, CRIU
/// dumps). The daemon answers quick requests (`ps`) on its async workers; at the same
/// priority as twenty dumps' compression threads they got a sliver of the cores, and
/// `ps` took over a second under load.
const BULK_NICE: i32 = 10;

/// [`blocking`] at the bulk priority ([`BULK_NICE`]) for CPU-heavy work; the threads and
/// processes it starts (compressors, CRIU) inherit it. Not for starting workloads: a job
/// or container would inherit it too.
pub(crate) async fn bulk<T, F>(f: F) -> OpResult<T>
where
    F: FnOnce() -> OpResult<T> + Send + 'static,
    T: Send + 'static,
{
    blocking(move || {
        let _lowered = Lowered::now();
        f()
    })
    .await
}

/// This thread at [`BULK_NICE`] until dropped (Linux's nice is per thread).
struct Lowered(Option<libc::c_int>);

impl Lowered {
    fn now() -> Self {
        // SAFETY: getpriority/setpriority on the calling thread (who = 0); no memory.
        unsafe {
            *libc::__errno_location() = 0;
            let before = libc::getpriority(libc::PRIO_PROCESS, 0);
            if *libc::__errno_location() != 0 || before >= BULK_NICE {
                return Lowered(None);
            }
            match libc::setpriority(libc::PRIO_PROCESS, 0, BULK_NICE) {
                0 => Lowered(Some(before)),
                _ => Lowered(None),
            }
        }
    }
}

impl Drop for Lowered {
    fn drop(&mut self) {
        if let Some(before) = self.0 {
            // SAFETY: as above. Raising it back needs root (the daemon is); failing that,
            // the pool thread only stays at the bulk priority.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, before) };
        }
    }
}
