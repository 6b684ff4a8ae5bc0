//! Plugins: Rust modules (no dlopen; Rust has no stable ABI) that contribute middleware
//! to the chains and health checks that say exactly what is missing on this host.
//! `cedana features` prints what each provides.

pub mod process;

use serde::{Deserialize, Serialize};

use crate::chain::{Adapter, Chain};
use crate::engine::{DumpCtx, DumpResponse, Env, RestoreCtx, RestoreResponse};

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
    /// Middleware inserted into the dump chain just before `check_criu_opts_for_dump`.
    fn dump_middleware(&self) -> Vec<Adapter<DumpCtx, DumpResponse>> {
        Vec::new()
    }
    /// Middleware inserted into the restore chain just before `check_criu_opts_for_restore`.
    fn restore_middleware(&self) -> Vec<Adapter<RestoreCtx, RestoreResponse>> {
        Vec::new()
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
            plugins: vec![Box::new(process::ProcessPlugin)],
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

    /// Adds the plugins' dump middleware to a chain.
    pub fn extend_dump(&self, chain: Chain<DumpCtx, DumpResponse>) -> Chain<DumpCtx, DumpResponse> {
        self.plugins.iter().fold(chain, |c, p| {
            c.insert_before("check_criu_opts_for_dump", p.dump_middleware())
        })
    }

    /// Adds the plugins' restore middleware to a chain.
    pub fn extend_restore(
        &self,
        chain: Chain<RestoreCtx, RestoreResponse>,
    ) -> Chain<RestoreCtx, RestoreResponse> {
        self.plugins.iter().fold(chain, |c, p| {
            c.insert_before("check_criu_opts_for_restore", p.restore_middleware())
        })
    }
}
