//! Plugins: Rust modules (no dlopen; Rust has no stable ABI) that own a kind of
//! checkpoint (its target type, its dump and restore routes, its errors) or add
//! middleware to every route, with health checks that say exactly what is missing on
//! this host. `cedana features` prints what each provides. The core (engine, adapters,
//! errors, metadata) names none of them: each is registered once, in
//! [`PluginRegistry::builtin`].

pub mod containerd;
pub mod gpu;
pub mod process;
pub mod runc;

use serde::{Deserialize, Serialize};

use crate::chain::{Adapter, Chain};
use crate::engine::{dump, restore};
use crate::engine::{DumpCtx, DumpResponse, Env, RestoreCtx, RestoreResponse};
use crate::image::metadata::CheckpointKind;

/// Result of one health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Works.
    Ok,
    /// Works with limitations.
    Warn,
    /// Does not work.
    Fail,
}

/// One line of `cedana check`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Plugin that ran the check.
    pub plugin: String,
    /// What was checked.
    pub name: String,
    /// Outcome.
    pub health: Health,
    /// What was found.
    pub detail: String,
    /// How to fix it, when not Ok.
    pub fix: Option<String>,
}

/// A feature a plugin provides, for `cedana features`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Feature {
    /// Plugin name.
    pub plugin: String,
    /// Feature, e.g. `dump middleware` or `restore handler`.
    pub feature: String,
    /// What it does.
    pub detail: String,
}

/// What a plugin contributes. Adding one: its module (a type implementing this trait,
/// its [`Target`](crate::request::Target) types, adapters, handlers and a
/// [`PluginError`](crate::error::PluginError)), and one line in
/// [`PluginRegistry::builtin`] (or [`PluginRegistry::register`] where an engine is built).
pub trait Plugin: Send + Sync {
    /// Short name (`process`, `runc`, ...).
    fn name(&self) -> &'static str;
    /// Features it provides.
    fn features(&self) -> Vec<Feature>;
    /// The kind of checkpoint this plugin owns (`runc`, ...): requests whose target is of
    /// this kind go through its routes. `None`: it only adds middleware to every route.
    fn kind(&self) -> Option<CheckpointKind> {
        None
    }
    /// The dump route of its kind, built from the engine's stages
    /// (`engine::dump::{prepare, inspect_host_tree, check_criu}`) and its own adapters
    /// and handler.
    fn dump_route(&self) -> Option<Chain<DumpCtx, DumpResponse>> {
        None
    }
    /// The restore route of its kind (stages in `engine::restore`).
    fn restore_route(&self) -> Option<Chain<RestoreCtx, RestoreResponse>> {
        None
    }
    /// Middleware for every dump route, inserted just before
    /// [`dump::MIDDLEWARE_ANCHOR`] (e.g. a GPU's state).
    fn dump_middleware(&self) -> Vec<Adapter<DumpCtx, DumpResponse>> {
        Vec::new()
    }
    /// Middleware for every restore route, inserted just before
    /// [`restore::MIDDLEWARE_ANCHOR`].
    fn restore_middleware(&self) -> Vec<Adapter<RestoreCtx, RestoreResponse>> {
        Vec::new()
    }
    /// Health checks on this host.
    fn health(&self, env: &Env) -> Vec<HealthCheck>;
    /// Undoes what an operation of this plugin cut short by a crash left behind; returns
    /// what it did, for the log. Run once at daemon start.
    fn recover_after_crash(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The plugins of an engine: one place where each is registered.
pub struct PluginRegistry {
    plugins: Vec<Box<dyn Plugin>>,
}

impl PluginRegistry {
    /// The plugins compiled into this build.
    pub fn builtin() -> Self {
        Self::empty()
            .register(process::ProcessPlugin)
            .register(runc::RuncPlugin)
            .register(containerd::ContainerdPlugin)
            .register(gpu::GpuPlugin)
    }

    /// No plugins at all (not even plain processes).
    pub fn empty() -> Self {
        Self {
            plugins: Vec::new(),
        }
    }

    /// Adds a plugin.
    ///
    /// # Panics
    /// When a plugin of the same name or owning the same kind is registered already: a
    /// bug in the code assembling the engine.
    #[track_caller]
    pub fn register(mut self, plugin: impl Plugin + 'static) -> Self {
        let (name, kind) = (plugin.name(), plugin.kind());
        for p in &self.plugins {
            assert!(p.name() != name, "plugin {name:?} is registered twice");
            if let (Some(k), Some(mine)) = (p.kind(), &kind) {
                assert!(
                    &k != mine,
                    "plugins {:?} and {name:?} both own kind {k}",
                    p.name()
                );
            }
        }
        self.plugins.push(Box::new(plugin));
        self
    }

    /// Plugin names.
    pub fn names(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|p| p.name()).collect()
    }

    /// Every plugin's features.
    pub fn features(&self) -> Vec<Feature> {
        self.plugins.iter().flat_map(|p| p.features()).collect()
    }

    /// Every plugin's health checks.
    pub fn health(&self, env: &Env) -> Vec<HealthCheck> {
        self.plugins.iter().flat_map(|p| p.health(env)).collect()
    }

    /// Kinds some plugin owns.
    pub fn kinds(&self) -> Vec<CheckpointKind> {
        self.plugins.iter().filter_map(|p| p.kind()).collect()
    }

    /// Every plugin's recovery after a crash.
    pub fn recover_after_crash(&self) -> Vec<String> {
        self.plugins
            .iter()
            .flat_map(|p| p.recover_after_crash())
            .collect()
    }

    /// The dump route of `kind`, with every plugin's middleware.
    pub fn dump_route(&self, kind: &CheckpointKind) -> Option<Chain<DumpCtx, DumpResponse>> {
        let route = self.owner(kind)?.dump_route()?;
        Some(self.plugins.iter().fold(route, |c, p| {
            with_middleware(c, dump::MIDDLEWARE_ANCHOR, p.dump_middleware())
        }))
    }

    /// The restore route of `kind`, with every plugin's middleware.
    pub fn restore_route(
        &self,
        kind: &CheckpointKind,
    ) -> Option<Chain<RestoreCtx, RestoreResponse>> {
        let route = self.owner(kind)?.restore_route()?;
        Some(self.plugins.iter().fold(route, |c, p| {
            with_middleware(c, restore::MIDDLEWARE_ANCHOR, p.restore_middleware())
        }))
    }

    fn owner(&self, kind: &CheckpointKind) -> Option<&dyn Plugin> {
        self.plugins
            .iter()
            .find(|p| p.kind().as_ref() == Some(kind))
            .map(|p| p.as_ref())
    }
}

/// `chain` with `adapters` just before `anchor`. A route without the anchor (one that
/// runs no CRIU, such as a plugin's own handler) gets no middleware: what every-route
/// middleware wraps (a GPU's state around CRIU) is not there. The engine's route tests
/// show where middleware landed on each built-in route.
fn with_middleware<Req: Send, Resp>(
    chain: Chain<Req, Resp>,
    anchor: &str,
    adapters: Vec<Adapter<Req, Resp>>,
) -> Chain<Req, Resp> {
    if adapters.is_empty() || !chain.contains(anchor) {
        chain
    } else {
        chain.insert_before(anchor, adapters)
    }
}
