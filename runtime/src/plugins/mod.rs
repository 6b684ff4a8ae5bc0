//! Plugins: Rust modules (no dlopen; Rust has no stable ABI) that contribute middleware
//! to the chains and health checks that say exactly what is missing on this host.
//! `cedana features` prints what each provides.

pub mod containerd;
pub mod process;
pub mod runc;

use serde::{Deserialize, Serialize};

use crate::chain::{Adapter, Chain, Handler};
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

/// What a plugin contributes.
pub trait Plugin: Send + Sync {
    /// Short name (`process`, `runc`, ...).
    fn name(&self) -> &'static str;
    /// Features it provides.
    fn features(&self) -> Vec<Feature>;
    /// The kind of checkpoint this plugin owns (`runc`, ...). Its middleware goes only
    /// into that kind's chains and its handlers replace the default ones there; `None`:
    /// middleware for every kind, no handlers.
    fn kind(&self) -> Option<CheckpointKind> {
        None
    }
    /// Middleware inserted into the dump chain just before `check_criu_opts_for_dump`.
    fn dump_middleware(&self) -> Vec<Adapter<DumpCtx, DumpResponse>> {
        Vec::new()
    }
    /// Middleware inserted into the restore chain just before `check_criu_opts_for_restore`.
    fn restore_middleware(&self) -> Vec<Adapter<RestoreCtx, RestoreResponse>> {
        Vec::new()
    }
    /// Changes to the dump chain beyond inserting middleware (early adapters, adapters
    /// that do not apply to this kind). Called for the plugin's own kind only.
    fn shape_dump(&self, chain: Chain<DumpCtx, DumpResponse>) -> Chain<DumpCtx, DumpResponse> {
        chain
    }
    /// Changes to the restore chain beyond inserting middleware.
    fn shape_restore(
        &self,
        chain: Chain<RestoreCtx, RestoreResponse>,
    ) -> Chain<RestoreCtx, RestoreResponse> {
        chain
    }
    /// Handler replacing the CRIU dump for this plugin's kind.
    fn dump_handler(&self) -> Option<Handler<DumpCtx, DumpResponse>> {
        None
    }
    /// Handler replacing the CRIU restore for this plugin's kind.
    fn restore_handler(&self) -> Option<Handler<RestoreCtx, RestoreResponse>> {
        None
    }
    /// Health checks on this host.
    fn health(&self, env: &Env) -> Vec<HealthCheck>;
}

/// The plugins compiled into this build.
pub struct PluginRegistry {
    plugins: Vec<Box<dyn Plugin>>,
}

impl PluginRegistry {
    /// The built-in plugins.
    pub fn builtin() -> Self {
        Self {
            plugins: vec![
                Box::new(process::ProcessPlugin),
                Box::new(runc::RuncPlugin),
                Box::new(containerd::ContainerdPlugin),
            ],
        }
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

    /// Kinds some plugin owns (besides plain processes).
    pub fn kinds(&self) -> Vec<CheckpointKind> {
        self.plugins.iter().filter_map(|p| p.kind()).collect()
    }

    /// The dump chain for `kind`: the base chain with every kind-less plugin's middleware,
    /// and, for a plugin's own kind, its shape, middleware and handler.
    pub fn extend_dump_for(
        &self,
        kind: CheckpointKind,
        chain: Chain<DumpCtx, DumpResponse>,
    ) -> Chain<DumpCtx, DumpResponse> {
        self.plugins
            .iter()
            .filter(|p| p.kind().is_none() || p.kind() == Some(kind))
            .fold(chain, |c, p| {
                let mut c = c.insert_before("check_criu_opts_for_dump", p.dump_middleware());
                if p.kind() == Some(kind) {
                    c = p.shape_dump(c);
                    if let Some(h) = p.dump_handler() {
                        c = c.with_handler(h);
                    }
                }
                c
            })
    }

    /// The restore chain for `kind` (see [`PluginRegistry::extend_dump_for`]).
    pub fn extend_restore_for(
        &self,
        kind: CheckpointKind,
        chain: Chain<RestoreCtx, RestoreResponse>,
    ) -> Chain<RestoreCtx, RestoreResponse> {
        self.plugins
            .iter()
            .filter(|p| p.kind().is_none() || p.kind() == Some(kind))
            .fold(chain, |c, p| {
                let mut c = c.insert_before("check_criu_opts_for_restore", p.restore_middleware());
                if p.kind() == Some(kind) {
                    c = p.shape_restore(c);
                    if let Some(h) = p.restore_handler() {
                        c = c.with_handler(h);
                    }
                }
                c
            })
    }

    /// Adds the kind-less plugins' dump middleware to a chain (plain processes).
    pub fn extend_dump(&self, chain: Chain<DumpCtx, DumpResponse>) -> Chain<DumpCtx, DumpResponse> {
        self.extend_dump_for(CheckpointKind::Process, chain)
    }

    /// Adds the kind-less plugins' restore middleware to a chain (plain processes).
    pub fn extend_restore(
        &self,
        chain: Chain<RestoreCtx, RestoreResponse>,
    ) -> Chain<RestoreCtx, RestoreResponse> {
        self.extend_restore_for(CheckpointKind::Process, chain)
    }
}
