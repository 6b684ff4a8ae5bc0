//! Dump middleware: turn a containerd container (namespace, id) into the runc container
//! under it (the runc root of its shim, the same id), so the runc plugin's portable dump
//! does the rest; record what restore needs to create the new container.

use std::path::PathBuf;

use super::client::Client;
use super::error::ContainerdError;
use super::meta::ContainerdMeta;
use super::options::{self, RUNC_OPTIONS_TYPE_URL};
use super::target::ContainerdTarget;
use crate::chain::Adapter;
use crate::engine::{DumpCtx, DumpResponse};
use crate::error::EngineError;
use crate::plugins::runc::{RuncDump, RuncTarget};

/// runc root of containerd's runc shims and of ours (`<root>/<namespace>`), unless the
/// runtime options give `Root`.
pub const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc";

/// Label of a container we restored: its task's runtime options (base64 protobuf, as
/// `metadata.json` records them), which containerd keeps with the task only.
pub const RUNTIME_OPTIONS_LABEL: &str = "io.cedana.runtime-options";

/// Whether `cedana restore containerd` can bring back a container of `runtime` created
/// with runtime options of type `options_type`; else why not and what to do instead.
/// The checkpoint reaches the shim as the runc options' `CriuImagePath`: containerd 1.7
/// turns it into the task's checkpoint for `io.containerd.runc.*`, and hands the options
/// unchanged to any other runtime, where our shim reads it (runtimeoptions.v1.Options,
/// what `ctr run --runtime-config-path` and CRI give non-runc runtimes, cannot carry it).
pub fn restorable(runtime: &str, options_type: &str) -> Result<(), String> {
    let runc_options = options_type.is_empty() || options_type.ends_with(RUNC_OPTIONS_TYPE_URL);
    if runtime.starts_with("io.containerd.runc.")
        || (runtime.starts_with("io.containerd.cedana.") && runc_options)
    {
        return Ok(());
    }
    if runtime.starts_with("io.containerd.cedana.") {
        return Err(format!(
            "its runtime options are {options_type}, which cannot carry a checkpoint path to \
             the shim; checkpoint it with `ctr container checkpoint --task --rw ID IMAGE` and \
             restore it with `ctr container restore --live --rw NEWID IMAGE`"
        ));
    }
    Err(
        "only runc-based runtimes (io.containerd.runc.*, io.containerd.cedana.*) can be \
         checkpointed"
            .into(),
    )
}

/// Resolves the container; runs first, before the runc plugin's resolver.
pub fn resolve_containerd_container() -> Adapter<DumpCtx, DumpResponse> {
    Adapter::from_fn("resolve_containerd_container", |mut ctx: DumpCtx, next| {
        Box::pin(async move {
            let Some(t) = ctx.req.target::<ContainerdTarget>().cloned() else {
                return Err(EngineError::InvalidRequest {
                    field: "containerd",
                    reason: "a containerd dump needs the container (address, namespace, id)".into(),
                });
            };
            if t.id.is_empty() {
                return Err(EngineError::InvalidRequest {
                    field: "id",
                    reason: "give the container id".into(),
                });
            }
            if ctx.req.streams.is_some_and(|n| n > 0) {
                // Restores go through containerd's runc shim, which reads image files.
                return Err(EngineError::InvalidRequest {
                    field: "streams",
                    reason: "a containerd checkpoint is restored by containerd's runc shim, \
                        which cannot read streamed shards; dump without --streams (or \
                        stream the container with `cedana dump runc --root \
                        /run/containerd/runc/NAMESPACE`)"
                        .into(),
                });
            }
            ctx.no_stream = Some(
                "a containerd checkpoint is restored by containerd's runc shim, which \
                 reads image files"
                    .into(),
            );
            let client = Client::connect(&t).await?;
            let info = client.container().await?;
            match client.task().await? {
                Some(task) if task.is_live() => {}
                other => {
                    return Err(ContainerdError::NotRunning {
                        id: t.id.clone(),
                        namespace: t.namespace.clone(),
                        status: other
                            .map(|task| task.status_name())
                            .unwrap_or_else(|| "no task".into()),
                    }
                    .into())
                }
            }
            // A container we restored keeps its runtime options in our label (containerd
            // keeps them with the task only). Recorded as (type URL, base64 protobuf).
            let (options_type, recorded_options) = match info
                .runtime_options
                .as_ref()
                .filter(|a| !a.value.is_empty())
            {
                Some(any) => (any.type_url.clone(), options::base64_encode(&any.value)),
                None => match info.labels.get(RUNTIME_OPTIONS_LABEL) {
                    Some(v) => (RUNC_OPTIONS_TYPE_URL.to_string(), v.clone()),
                    None => (String::new(), String::new()),
                },
            };
            // Refused before anything is frozen: a dump that stops the container must
            // leave something restorable.
            if let Err(reason) = restorable(&info.runtime, &options_type) {
                return Err(ContainerdError::NotRestorable {
                    id: t.id.clone(),
                    runtime: info.runtime.clone(),
                    reason,
                }
                .into());
            }
            let options = options::decode_recorded(&recorded_options).unwrap_or_default();
            let root = if options.root.is_empty() {
                PathBuf::from(DEFAULT_RUNC_ROOT)
            } else {
                PathBuf::from(&options.root)
            };
            // The runc plugin's adapters and handler take it from here.
            ctx.ext.insert(RuncDump {
                target: RuncTarget::new(t.id.clone(), Some(root.join(&t.namespace))),
                ..Default::default()
            });
            ctx.metadata.set_section(&ContainerdMeta {
                namespace: t.namespace.clone(),
                id: t.id.clone(),
                image: info.image,
                runtime: info.runtime,
                runtime_options_type: if options_type.is_empty() {
                    RUNC_OPTIONS_TYPE_URL.into()
                } else {
                    options_type
                },
                runtime_options: recorded_options,
                snapshotter: info.snapshotter,
            })?;
            next.run(ctx).await
        })
    })
}

#[cfg(test)]
mod tests {
    use super::restorable;

    #[test]
    fn what_can_be_restored() {
        assert!(restorable("io.containerd.runc.v2", "containerd.runc.v1.Options").is_ok());
        assert!(restorable("io.containerd.runc.v2", "").is_ok());
        assert!(restorable("io.containerd.cedana.v2", "").is_ok());
        let typed = "type.googleapis.com/containerd.runc.v1.Options";
        assert!(restorable("io.containerd.cedana.v2", typed).is_ok());
        let e = restorable("io.containerd.cedana.v2", "runtimeoptions.v1.Options")
            .expect_err("refused");
        assert!(e.contains("ctr container restore"), "{e}");
        assert!(restorable("io.containerd.kata.v2", "").is_err());
    }
}
