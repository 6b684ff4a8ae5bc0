//! Run a new container through containerd (`cedana run containerd IMAGE -- CMD`): its
//! spec from the image's defaults (as `ctr run` makes one), created on a new snapshot,
//! its task's output to a log file and started. A failure removes the container again.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use oci_spec::runtime::{RootBuilder, Spec};

use super::client::Client;
use super::error::ContainerdError;
use super::image::RunDefaults;
use super::restore::stdin_fifo;
use super::target::ContainerdTarget;
use crate::engine::Engine;
use crate::error::EngineError;

/// The runtime new containers get unless told otherwise.
pub const DEFAULT_RUNTIME: &str = "io.containerd.runc.v2";
/// PATH when the image sets none (containerd's default).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A container to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdRun {
    /// The new container (its id must be free).
    pub target: ContainerdTarget,
    /// Image reference; the namespace must have it.
    pub image: String,
    /// The command; empty: the image's entrypoint and cmd.
    pub args: Vec<String>,
    /// containerd runtime, e.g. `io.containerd.runc.v2` or `io.containerd.cedana.v2`.
    pub runtime: String,
    /// File for its stdout and stderr.
    pub log_path: PathBuf,
}

// An operation of this plugin's own, on the engine the transports hold: defined here so
// that the engine's module does not name containerd.
impl Engine {
    /// Creates and starts the container; the PID of its init.
    pub async fn run_containerd(&self, req: ContainerdRun) -> Result<i32, EngineError> {
        run(req).await
    }
}

/// Creates and starts the container; the PID of its init.
pub async fn run(req: ContainerdRun) -> Result<i32, EngineError> {
    if req.target.id.is_empty() {
        return Err(EngineError::InvalidRequest {
            field: "id",
            reason: "give the container's id with --id".into(),
        });
    }
    let client = Client::connect(&req.target).await?;
    if client.container_exists().await? {
        return Err(ContainerdError::Exists {
            id: req.target.id.clone(),
            namespace: req.target.namespace.clone(),
        }
        .into());
    }
    let image = client.resolve_image(&req.image).await?;
    let spec = spec_for(&image.defaults, &req.args, &req.target)?;
    let spec = serde_json::to_value(&spec).map_err(|e| ContainerdError::Call {
        call: "encode the container's OCI spec".into(),
        detail: e.to_string(),
    })?;
    client
        .create_from_image(&image, &req.runtime, "", HashMap::new(), spec)
        .await?;
    match start_task(&client, &req).await {
        Ok(pid) => Ok(pid),
        Err(e) => {
            client.remove_container().await;
            Err(e)
        }
    }
}

/// The task on the container's snapshot, stdin an empty FIFO, output to the log.
async fn start_task(client: &Client, req: &ContainerdRun) -> Result<i32, EngineError> {
    let mounts = client.snapshot_mounts("", &req.target.id).await?;
    if let Some(dir) = req.log_path.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| EngineError::io(format!("create {}", dir.display()), e))?;
    }
    let stdin = stdin_fifo(&req.log_path)?;
    client
        .create_task(
            mounts,
            (
                &stdin.display().to_string(),
                &format!("file://{}", req.log_path.display()),
            ),
            None,
        )
        .await?;
    Ok(client.start_task().await?)
}

/// The default spec of a container (namespaces, mounts, capabilities) running `args`,
/// or the image's entrypoint and cmd, with the image's env and working dir; writable
/// rootfs, hostname the id, cgroup `/NAMESPACE/ID` as `ctr run` makes it.
pub fn spec_for(
    image: &RunDefaults,
    args: &[String],
    target: &ContainerdTarget,
) -> Result<Spec, ContainerdError> {
    let args = if args.is_empty() {
        let mut a = image.entrypoint.clone().unwrap_or_default();
        a.extend(image.cmd.clone().unwrap_or_default());
        a
    } else {
        args.to_vec()
    };
    if args.is_empty() {
        return Err(ContainerdError::Call {
            call: format!("run container {}", target.id),
            detail: "the image has no entrypoint or cmd: give a command after --".into(),
        });
    }
    let mut env = image.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.into());
    }
    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_terminal(Some(false));
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(
        image
            .working_dir
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/".into())
            .into(),
    );
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(false)
            .build()
            .map_err(|e| ContainerdError::Call {
                call: "build the container's OCI spec".into(),
                detail: e.to_string(),
            })?,
    ));
    spec.set_hostname(Some(target.id.clone()));
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(PathBuf::from(format!(
        "/{}/{}",
        target.namespace, target.id
    ))));
    spec.set_linux(Some(linux));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> ContainerdTarget {
        ContainerdTarget::new("c1", None, Some("ns".into()))
    }

    #[test]
    fn the_command_given_wins_over_the_images() {
        let image = RunDefaults {
            env: Some(vec!["A=1".into()]),
            entrypoint: Some(vec!["/bin/ep".into()]),
            cmd: Some(vec!["x".into()]),
            working_dir: Some("/srv".into()),
        };
        let spec = spec_for(
            &image,
            &["sh".into(), "-c".into(), "true".into()],
            &target(),
        )
        .expect("spec");
        let p = spec.process().as_ref().expect("process");
        assert_eq!(
            p.args().as_deref(),
            Some(&["sh".into(), "-c".into(), "true".into()][..])
        );
        assert_eq!(p.cwd().to_str(), Some("/srv"));
        let env = p.env().clone().unwrap_or_default();
        assert!(env.contains(&"A=1".to_string()), "{env:?}");
        assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
        assert!(!p.terminal().unwrap_or(true));
        assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(false));
        assert_eq!(spec.hostname().as_deref(), Some("c1"));
        let linux = spec.linux().as_ref().expect("linux");
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(std::path::Path::new("/ns/c1"))
        );
        assert!(linux.namespaces().as_ref().is_some_and(|n| !n.is_empty()));
    }

    #[test]
    fn without_a_command_the_image_runs_its_own() {
        let image = RunDefaults {
            entrypoint: Some(vec!["/bin/ep".into()]),
            cmd: Some(vec!["--flag".into()]),
            ..Default::default()
        };
        let spec = spec_for(&image, &[], &target()).expect("spec");
        let p = spec.process().as_ref().expect("process");
        assert_eq!(
            p.args().as_deref(),
            Some(&["/bin/ep".into(), "--flag".into()][..])
        );
        assert_eq!(p.cwd().to_str(), Some("/"));
        let e = spec_for(&RunDefaults::default(), &[], &target()).expect_err("nothing to run");
        assert!(e.to_string().contains("give a command after --"), "{e}");
    }
}
