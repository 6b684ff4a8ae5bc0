//! The containerd plugin: checkpoint a container that containerd runs (with a runc-based
//! runtime) into the runc plugin's portable checkpoint, and restore it into a NEW
//! containerd container that containerd then manages like any other.
//!
//! Dump: the container (address, namespace, id) is resolved through containerd's API to
//! the runc container under it (`<runc root>/<namespace>`, same id), and the runc
//! plugin's chain does the rest; the image, runtime, its options and the snapshotter are
//! recorded in `metadata.json` (`containerd`). Restore: the container is created from the
//! image (unpacked if needed) with the recorded spec, `rootfs-diff.tar` goes onto its new
//! snapshot, and its task is created from the checkpoint and started.
//!
//! containerd is reached only through its gRPC API (the typed `containerd-client`
//! crate), never through `ctr`. One concern per file: `target` (what callers give),
//! `client` (connection, namespace, lease, errors of a call), `containers`, `tasks`,
//! `image` (resolving an image through the content store), `snapshots` (unpacking,
//! preparing, mounts), `options` (the runc shim's options and how they are recorded),
//! `dump` (middleware), `restore` (handler), `run` (a new container from an image, for
//! `cedana run containerd`), `meta` (its section of metadata.json), `error`.

pub mod client;
pub mod containers;
pub mod dump;
pub mod error;
pub mod image;
pub mod meta;
pub mod options;
pub mod restore;
pub mod run;
pub mod snapshots;
pub mod target;
pub mod tasks;

pub use target::{ContainerdRestore, ContainerdTarget};

use std::os::unix::fs::FileTypeExt;

use crate::chain::{Chain, Handler};
use crate::engine::restore as engine_restore;
use crate::engine::{DumpCtx, DumpResponse, Env, RestoreCtx, RestoreResponse};
use crate::image::metadata::CheckpointKind;
use crate::plugins::runc;
use crate::plugins::{Feature, Health, HealthCheck, Plugin};

/// The kind of containerd checkpoints.
pub const KIND: CheckpointKind = CheckpointKind::named("containerd");

/// Containers run by containerd.
pub struct ContainerdPlugin;

impl Plugin for ContainerdPlugin {
    fn name(&self) -> &'static str {
        "containerd"
    }

    fn kind(&self) -> Option<CheckpointKind> {
        Some(KIND)
    }

    fn features(&self) -> Vec<Feature> {
        let f = |feature: &str, detail: &str| Feature {
            plugin: "containerd".into(),
            feature: feature.into(),
            detail: detail.into(),
        };
        vec![
            f(
                "dump middleware",
                "resolve_containerd_container (containerd API: runtime, runc root, image, snapshotter), then the runc plugin's",
            ),
            f(
                "dump handler",
                "runc checkpoint, portable layout (checkpoint/, spec.dump, rootfs-diff.tar) + the containerd record",
            ),
            f(
                "restore handler",
                "containerd_restore: the container created from the image (containerd API), recorded spec, rootfs diff on the new snapshot, task created from the checkpoint (io.containerd.runc.*, and io.containerd.cedana.* with runc options: the shim reads CriuImagePath)",
            ),
            f("health checks", "containerd socket"),
        ]
    }

    fn dump_route(&self) -> Option<Chain<DumpCtx, DumpResponse>> {
        // The container is resolved to the runc container under it, which the runc
        // plugin's route then checkpoints into its portable layout.
        Some(runc::dump_route(
            [
                dump::resolve_containerd_container(),
                runc::inspect::resolve_runc_container(),
            ],
            runc::checkpoint_handler(),
        ))
    }

    fn restore_route(&self) -> Option<Chain<RestoreCtx, RestoreResponse>> {
        let handler = Handler::from_fn("containerd_restore", |ctx| {
            Box::pin(restore::containerd_restore(ctx))
        });
        // No host PID stage: the container gets its own PID namespace.
        Some(
            Chain::new(handler)
                .with(engine_restore::prepare())
                .with(engine_restore::finish())
                .insert_before(
                    "prepare_restore_storage",
                    [restore::validate_containerd_restore()],
                ),
        )
    }

    fn health(&self, _env: &Env) -> Vec<HealthCheck> {
        // Only the default socket can be checked here: a dump or restore may name another
        // (--containerd-address), and a call finds out then.
        let address = target::DEFAULT_ADDRESS;
        let listening = std::fs::metadata(address)
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false);
        vec![HealthCheck {
            plugin: "containerd".into(),
            name: "containerd socket".into(),
            health: if listening { Health::Ok } else { Health::Warn },
            detail: if listening {
                address.into()
            } else {
                format!("no containerd socket at {address}")
            },
            fix: (!listening)
                .then(|| "start containerd, or give its socket with --containerd-address".into()),
        }]
    }
}

#[cfg(test)]
mod tests {
    use crate::plugins::PluginRegistry;

    #[test]
    fn containerd_chains_wrap_the_runc_ones() {
        let reg = PluginRegistry::builtin();
        let d = reg.dump_route(&super::KIND).expect("containerd dump route");
        let names = d.names();
        assert_eq!(
            &names[..2],
            ["resolve_containerd_container", "resolve_runc_container"]
        );
        assert!(names.contains(&"detect_container_options"));
        assert_eq!(names.last(), Some(&"runc_checkpoint"));
        let r = reg
            .restore_route(&super::KIND)
            .expect("containerd restore route");
        let names = r.names();
        assert_eq!(names.last(), Some(&"containerd_restore"));
        assert!(!names.contains(&"wait_for_free_pids"));
        let at = |n: &str| names.iter().position(|x| *x == n).expect(n);
        assert!(at("validate_containerd_restore") < at("prepare_restore_storage"));
    }
}
