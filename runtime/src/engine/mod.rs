//! The engine: one object the transports hold, exposing each operation as a chain of
//! adapters around a handler. Build it once from the config; it is cheap to share.

pub mod claims;
pub mod dump;
pub mod freeze;
pub mod lazy;
pub mod manage;
pub mod restore;
pub mod run;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use cedana_config::Config;

use crate::chain::{Chain, OpResult};
use crate::criu::{Criu, CriuVersion, NetworkLock};
use crate::error::EngineError;
use crate::image::metadata::CheckpointKind;
use crate::plugins::PluginRegistry;
pub use crate::request::*;
use crate::store::s3::S3Settings;
use crate::store::{CheckpointStore, Location, StoreRegistry};
pub use claims::{PidClaim, PidUse};

/// What every operation can reach: configuration and host clients.
#[derive(Debug)]
pub struct Env {
    /// The loaded configuration.
    pub config: Config,
    /// CRIU's version, asked once (it costs a CRIU start) and kept for this engine;
    /// callers that come while it is asked wait for that answer.
    criu_version: tokio::sync::OnceCell<CriuVersion>,
    /// PIDs that dumps and restores of this engine hold now (see `claims.rs`).
    pub(crate) claims: claims::Claims,
    /// Checkpoint stores by location scheme (`file`, ...).
    pub stores: StoreRegistry,
    /// Lazy restores whose pages are still being served (`lazy.rs`).
    pub(crate) lazy_watchers: lazy::LazyWatchers,
}

impl Env {
    /// An environment for `config`.
    pub fn new(config: Config) -> Self {
        let s3 = S3Settings {
            endpoint: config.s3.endpoint.clone(),
            region: config.s3.region.clone(),
            // Beside the database: the daemon and `--no-server` runs of one setup share it.
            journal_dir: config
                .db_path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| p.join("s3-uploads")),
        };
        Self {
            config,
            criu_version: tokio::sync::OnceCell::new(),
            claims: claims::Claims::new(),
            stores: StoreRegistry::builtin(s3),
            lazy_watchers: lazy::LazyWatchers::default(),
        }
    }

    /// Blocks until the pages of every lazy restore this engine did are all served and
    /// their temp files removed (a CLI without a daemon waits for this before exiting);
    /// says why, for each restored tree killed because its pages could not all be served.
    pub fn wait_for_lazy_pages(&self) -> Vec<String> {
        self.lazy_watchers.wait_all()
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
        let asked = self.criu_version.get_or_try_init(|| async {
            let criu = self.criu()?;
            blocking(move || Ok(criu.version()?)).await
        });
        asked.await.cloned()
    }

    /// Starts asking CRIU's version in the background, so a route that checks it later
    /// finds the answer ready instead of waiting for a CRIU start.
    pub fn prefetch_criu_version(self: &Arc<Self>) {
        let env = Arc::clone(self);
        tokio::spawn(async move {
            // A failure is reported by the stage that needs the version.
            let _ = env.criu_version().await;
        });
    }

    /// The CRIU driver for the configured binary, or a clear error if it is missing.
    pub fn criu(&self) -> OpResult<Criu> {
        let criu = Criu::locate(&self.config.criu.binary_path)?;
        // The config's validation admits only known methods.
        Ok(match NetworkLock::parse(&self.config.criu.network_lock) {
            Some(lock) => criu.with_network_lock(lock),
            None => criu,
        })
    }
}

/// The checkpoint/restore engine.
#[derive(Clone)]
pub struct Engine {
    env: Arc<Env>,
    /// Each kind's dump route (`process` and the kinds plugins own), by the request's kind.
    dump: BTreeMap<CheckpointKind, Chain<DumpCtx, DumpResponse>>,
    restore: BTreeMap<CheckpointKind, Chain<RestoreCtx, RestoreResponse>>,
    run: Chain<run::RunCtx, RunResponse>,
    manage: Chain<ManageRequest, ManageResponse>,
    plugins: Arc<PluginRegistry>,
}

impl Engine {
    /// Builds the engine and its chains from a configuration and the built-in plugins.
    pub fn new(config: Config) -> Self {
        Self::with_plugins(config, PluginRegistry::builtin())
    }

    /// Builds the engine with the given plugins (every route of every kind they own).
    pub fn with_plugins(config: Config, plugins: PluginRegistry) -> Self {
        let kinds = plugins.kinds();
        Self {
            dump: kinds
                .iter()
                .filter_map(|k| Some((k.clone(), plugins.dump_route(k)?)))
                .collect(),
            restore: kinds
                .iter()
                .filter_map(|k| Some((k.clone(), plugins.restore_route(k)?)))
                .collect(),
            run: run::chain(),
            manage: manage::chain(),
            env: Arc::new(Env::new(config)),
            plugins: Arc::new(plugins),
        }
    }

    /// Undoes what an operation cut short by a crash left (staging paths, frozen
    /// containers); returns what it did, for the log. Run once at daemon start.
    pub fn recover_after_crash(&self) -> Vec<String> {
        // Staging paths live in the checkpoint dir's store; scratch dirs in the temp dir
        // and the staging dir (images waiting to be packed).
        let dirs = [
            Location::from_path(&self.env.config.checkpoint.dir),
            Ok(Location::local(std::env::temp_dir())),
            Ok(Location::local(
                self.env.config.checkpoint.staging_dir.clone(),
            )),
        ];
        let mut done: Vec<String> = dirs
            .iter()
            .flatten()
            .flat_map(|d| match self.env.stores.resolve(d) {
                Ok(store) => store.recover(d),
                Err(e) => vec![format!("cannot recover {d}: {e}")],
            })
            .collect();
        done.extend(self.env.stores.recover_unfinished());
        done.extend(self.plugins.recover_after_crash());
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

    /// Checkpoints a process tree, or what `req.target` names (its kind picks the route).
    pub async fn dump(&self, req: DumpRequest) -> OpResult<DumpResponse> {
        let kind = req.kind();
        let chain = self.dump.get(&kind).ok_or_else(|| no_plugin(&kind))?;
        let (resp, profile) = chain
            .run_timed(DumpCtx::new(Arc::clone(&self.env), req))
            .await;
        resp.map(|r| DumpResponse { profile, ..r })
    }

    /// Restores a process tree (the caller becomes its parent), or into what
    /// `req.target` names.
    pub async fn restore(&self, req: RestoreRequest) -> OpResult<RestoreResponse> {
        let kind = req.kind();
        let chain = self.restore.get(&kind).ok_or_else(|| no_plugin(&kind))?;
        let (resp, profile) = chain
            .run_timed(RestoreCtx::new(Arc::clone(&self.env), req))
            .await;
        resp.map(|r| RestoreResponse { profile, ..r })
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

    /// The chains, in order, for `cedana features` and logs: the process routes, run and
    /// manage, then each plugin kind's routes.
    pub fn chains(&self) -> Vec<(String, String)> {
        let process = CheckpointKind::PROCESS;
        let mut out = Vec::new();
        if let Some(c) = self.dump.get(&process) {
            out.push(("dump".to_string(), format!("{c:?}")));
        }
        if let Some(c) = self.restore.get(&process) {
            out.push(("restore".to_string(), format!("{c:?}")));
        }
        out.push(("run".to_string(), format!("{:?}", self.run)));
        out.push(("manage".to_string(), format!("{:?}", self.manage)));
        let others = |k: &&CheckpointKind| **k != process;
        for (k, c) in self.dump.iter().filter(|(k, _)| others(k)) {
            out.push((format!("dump {k}"), format!("{c:?}")));
        }
        for (k, c) in self.restore.iter().filter(|(k, _)| others(k)) {
            out.push((format!("restore {k}"), format!("{c:?}")));
        }
        out
    }

    /// Host health: CRIU and every plugin's checks.
    pub fn check(&self) -> Vec<crate::plugins::HealthCheck> {
        self.plugins.health(&self.env)
    }
}

fn no_plugin(k: &CheckpointKind) -> EngineError {
    EngineError::InvalidRequest {
        field: "kind",
        reason: format!("no plugin in this build handles {k} checkpoints (see `cedana features`)"),
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
