//! The shim's bootstrap: what containerd runs before there is a task service.
//! `containerd-shim-cedana-v2 start` spawns (or joins) the shim of the container's group
//! and writes its socket address into the bundle; `delete` cleans up after a shim that
//! died (`runtime delete --force`, rootfs unmounted); in the daemon, `create_task_service`
//! builds the [`TaskService`] (service.rs) that answers the task API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::util::write_str_to_file;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::{Config, Flags, StartOpts};
use containerd_shim_protos::api;
use log::warn;

use crate::error::ShimError;
use crate::events::timestamp;
use crate::reaper::Reaper;
use crate::service::{Inner, TaskService};

/// Runtime name containerd knows this shim by.
pub const RUNTIME_NAME: &str = "io.containerd.cedana.v2";
/// Annotations that group containers into one shim (as containerd's runc shim does).
const GROUP_LABELS: &[&str] = &[
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// Bootstrap half of the shim.
pub struct CedanaShim {
    id: String,
    namespace: String,
    bundle: PathBuf,
    exit: Arc<ExitSignal>,
}

/// The group a new container's shim belongs to (its own id unless annotated).
fn grouping(bundle: &Path, id: &str) -> String {
    let spec: serde_json::Value = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    GROUP_LABELS
        .iter()
        .find_map(|k| spec["annotations"][*k].as_str().map(str::to_string))
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| id.to_string())
}

#[async_trait]
impl Shim for CedanaShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        CedanaShim {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            bundle,
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let group = grouping(&self.bundle, &opts.id);
        let address = spawn(opts, &group, Vec::new()).await?;
        write_str_to_file(self.bundle.join("address"), &address).await?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<api::DeleteResponse> {
        let reaper = Reaper::start().map_err(ShimError::io("reaper"))?;
        let rt = crate::bundle::runtime_for_bundle(&self.bundle, &self.namespace).await;
        if let Err(e) = rt
            .run(
                &reaper,
                vec!["delete".into(), "--force".into(), self.id.clone()],
                None,
            )
            .await
        {
            warn!("shim delete of {}: {e}", self.id);
        }
        crate::bundle::unmount_rootfs(&self.bundle);
        Ok(api::DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: Some(timestamp(SystemTime::now())).into(),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let reaper = Reaper::start().expect("SIGCHLD handler");
        TaskService {
            inner: Arc::new(Inner {
                containers: Mutex::new(HashMap::new()),
                reaper,
                publisher,
                namespace: self.namespace.clone(),
                exit: self.exit.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_from_annotations() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(grouping(d.path(), "c1"), "c1");
        std::fs::write(
            d.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"sb1"}}"#,
        )
        .unwrap();
        assert_eq!(grouping(d.path(), "c1"), "sb1");
    }
}
