//! The runc plugin: checkpoint/restore of containers of an OCI runtime (runc, crun)
//! driven through its command line. It replaces the CRIU handlers for `kind = runc` by
//! the runtime's own `checkpoint`/`restore` (the runtime knows the container's mounts,
//! namespaces and cgroups), fed with the CRIU options the chain chose from the
//! container's real state and recorded in metadata.json for the restore.
//!
//! One concern per file: `target` (what callers give), `runtime` (the runtime's command
//! line), `inspect` (dump middleware), `checkpoint` / `restore` (handlers), `meta` (its
//! section of metadata.json), `layout` and
//! `rootfs_diff` (portable checkpoints), `run` (a container as a daemon job, output to a
//! log relay), `signals` (foreground signal proxy), `health`, `error`.

pub mod checkpoint;
pub mod error;
pub mod external;
pub mod health;
pub mod hold;
pub mod inspect;
pub mod layout;
pub mod loopback;
pub mod meta;
pub mod restore;
pub mod rootfs_baseline;
pub mod rootfs_diff;
pub mod run;
pub mod runtime;
pub mod signals;
pub mod state;
pub mod stream;
pub mod target;
pub mod task_args;

pub use run::{RuncRun, RuncRunResponse};
pub use target::{RuncDump, RuncRestore, RuncStdio, RuncTarget};

use crate::chain::{Chain, Handler};
use crate::engine::{dump, restore as engine_restore};
use crate::engine::{DumpCtx, DumpResponse, Env, RestoreCtx, RestoreResponse};
use crate::image::metadata::CheckpointKind;
use crate::plugins::{Feature, HealthCheck, Plugin};

/// The kind of runc checkpoints.
pub const KIND: CheckpointKind = CheckpointKind::named("runc");

/// The runc dump route around `handler`, after `resolve` (the adapters that find the
/// container): a runc container's tree is a host process tree, so the process stages
/// apply, and the container's own options are chosen before the CRIU check. The
/// containerd plugin reuses it.
pub fn dump_route(
    resolve: impl IntoIterator<Item = crate::chain::Adapter<DumpCtx, DumpResponse>>,
    handler: Handler<DumpCtx, DumpResponse>,
) -> Chain<DumpCtx, DumpResponse> {
    Chain::new(handler)
        .with(resolve)
        .with(dump::prepare())
        .with(dump::inspect_host_tree())
        .with([inspect::detect_container_options(), dump::check_criu()])
}

/// The runtime's own `checkpoint` as the dump handler.
pub fn checkpoint_handler() -> Handler<DumpCtx, DumpResponse> {
    Handler::from_fn("runc_checkpoint", |ctx| {
        Box::pin(checkpoint::runc_checkpoint(ctx))
    })
}

/// runc (and runc-compatible) containers.
pub struct RuncPlugin;

impl Plugin for RuncPlugin {
    fn name(&self) -> &'static str {
        "runc"
    }

    fn kind(&self) -> Option<CheckpointKind> {
        Some(KIND)
    }

    fn features(&self) -> Vec<Feature> {
        let f = |feature: &str, detail: &str| Feature {
            plugin: "runc".into(),
            feature: feature.into(),
            detail: detail.into(),
        };
        vec![
            f(
                "dump middleware",
                "resolve_runc_container (runc state -> init PID), detect_container_options (ext_unix_sk, terminal)",
            ),
            f(
                "dump handler",
                "runc checkpoint with the detected options; portable layout: checkpoint/, config.dump, spec.dump, rootfs-diff.tar",
            ),
            f(
                "restore middleware",
                "validate_runc_restore (id free, bundle present), ensure_loopback (inet sockets in a new netns: a prestart hook sets lo up before CRIU restores them)",
            ),
            f(
                "restore handler",
                "runc restore with the recorded options; spec.dump -> bundle config.json, rootfs-diff.tar applied safely",
            ),
            f(
                "cedana-runc",
                "drop-in runc wrapper: every command passed through by exec, checkpoint/restore through the engine",
            ),
            f("health checks", "runtime binary and version, CRIU for the runtime"),
        ]
    }

    fn dump_route(&self) -> Option<Chain<DumpCtx, DumpResponse>> {
        Some(dump_route(
            [inspect::resolve_runc_container()],
            checkpoint_handler(),
        ))
    }

    fn restore_route(&self) -> Option<Chain<RestoreCtx, RestoreResponse>> {
        let handler = Handler::from_fn("runc_restore", |ctx| Box::pin(restore::runc_restore(ctx)));
        // No host PID stage: the container gets its own PID namespace, so the
        // checkpoint's host PIDs need not be free.
        Some(
            Chain::new(handler)
                .with(engine_restore::prepare())
                .with(engine_restore::finish())
                .insert_before(
                    "prepare_restore_storage",
                    [restore::validate_runc_restore()],
                )
                .insert_before("check_criu_opts_for_restore", [loopback::ensure_loopback()]),
        )
    }

    fn health(&self, env: &Env) -> Vec<HealthCheck> {
        health::health(env)
    }

    fn recover_after_crash(&self) -> Vec<String> {
        hold::release_abandoned()
    }
}

#[cfg(test)]
mod tests {
    use crate::image::metadata::CheckpointKind;
    use crate::plugins::PluginRegistry;

    #[test]
    fn runc_chains_replace_the_handlers() {
        let reg = PluginRegistry::builtin();
        let d = reg.dump_route(&super::KIND).expect("runc dump route");
        let names = d.names();
        assert_eq!(names.first(), Some(&"resolve_runc_container"));
        assert_eq!(names.last(), Some(&"runc_checkpoint"));
        assert!(names.contains(&"detect_container_options"));
        let r = reg.restore_route(&super::KIND).expect("runc restore route");
        let names = r.names();
        assert_eq!(names.last(), Some(&"runc_restore"));
        assert!(!names.contains(&"wait_for_free_pids"));
        let at = |n: &str| names.iter().position(|x| *x == n).expect(n);
        assert!(at("apply_recorded_options") < at("ensure_loopback"));
        assert!(at("ensure_loopback") < at("runc_restore"));
        // The process chains are untouched.
        let p = reg
            .dump_route(&CheckpointKind::PROCESS)
            .expect("process route");
        assert_eq!(p.names().last(), Some(&"criu_dump"));
        assert!(!p.names().contains(&"resolve_runc_container"));
    }
}
