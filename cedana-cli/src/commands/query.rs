//! `cedana query runc [ID] [--root R]`: the runtime's containers with status and PID,
//! read from the runtime itself (`runc list` / `runc state`), by the daemon or, with
//! `--no-server`, in-process. `cedana query k8s [NAME...]`: pods and their containers,
//! read through containerd's CRI from this process (see `k8s.rs`).

use cedana_runtime::plugins::runc::runtime::Runtime;
use cedana_runtime::plugins::runc::RuncTarget;

use super::{absolute, Ctx};
use crate::cli::QueryCmd;
use crate::client::status_error;
use crate::daemon::convert;
use crate::output::{print_json, Table};
use crate::proto;

/// Runs `query`.
pub async fn run(ctx: &Ctx, cmd: QueryCmd) -> anyhow::Result<i32> {
    let (id, root, no_server) = match cmd {
        QueryCmd::Runc {
            id,
            root,
            no_server,
        } => (id, root, no_server),
        QueryCmd::Kata {
            vm,
            check,
            no_server,
        } => return super::kata::query(ctx, &vm, check, no_server).await,
        QueryCmd::K8s {
            names,
            namespace,
            cri,
        } => return query_k8s(ctx, &names, namespace.as_deref(), &cri.address).await,
    };
    let root = root.map(|r| absolute(&r));
    let containers = if no_server {
        let target = RuncTarget::new(id.clone().unwrap_or_default(), root);
        let binary = ctx.config.runc.binary_path.clone();
        tokio::task::spawn_blocking(move || {
            let rt = Runtime::new(&target, &binary)?;
            match id {
                Some(id) => rt.state(&id).map(|s| vec![s]),
                None => rt.list(),
            }
        })
        .await??
        .iter()
        .map(convert::container_state)
        .collect()
    } else {
        let mut client = ctx.client().await?;
        client
            .query_runc(proto::RuncContainer {
                id: id.unwrap_or_default(),
                root: root.map(|r| r.display().to_string()),
            })
            .await
            .map_err(status_error)?
            .into_inner()
            .containers
    };
    if ctx.json {
        let rows: Vec<_> = containers
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id, "pid": c.pid, "status": c.status,
                    "bundle": c.bundle, "created": c.created,
                })
            })
            .collect();
        print_json(&serde_json::json!(rows));
        return Ok(0);
    }
    let mut t = Table::new(&["ID", "PID", "STATUS", "BUNDLE", "CREATED"]);
    for c in &containers {
        t.row(vec![
            c.id.clone(),
            c.pid.to_string(),
            c.status.clone(),
            c.bundle.clone(),
            c.created.clone(),
        ]);
    }
    t.print();
    Ok(0)
}

/// `query k8s`: one row per container (a pod without containers gets one row).
async fn query_k8s(
    ctx: &Ctx,
    names: &[String],
    namespace: Option<&str>,
    address: &std::path::Path,
) -> anyhow::Result<i32> {
    let pods = crate::k8s::cri::pods(&absolute(address), names, namespace).await?;
    if ctx.json {
        print_json(&serde_json::json!(pods
            .iter()
            .map(crate::k8s::cri::Pod::to_json)
            .collect::<Vec<_>>()));
        return Ok(0);
    }
    let mut t = Table::new(&[
        "NAMESPACE",
        "POD",
        "HANDLER",
        "CONTAINER",
        "STATE",
        "CONTAINER ID",
        "IMAGE",
    ]);
    for p in &pods {
        let handler = if p.handler.is_empty() {
            "(default)".to_string()
        } else {
            p.handler.clone()
        };
        let rows: Vec<[String; 4]> = if p.containers.is_empty() {
            vec![["-".into(), p.state.clone(), "-".into(), "-".into()]]
        } else {
            p.containers
                .iter()
                .map(|c| {
                    [
                        c.name.clone(),
                        c.state.clone(),
                        c.id.clone(),
                        c.image.clone(),
                    ]
                })
                .collect()
        };
        for [name, state, id, image] in rows {
            t.row(vec![
                p.namespace.clone(),
                p.name.clone(),
                handler.clone(),
                name,
                state,
                id,
                image,
            ]);
        }
    }
    t.print();
    Ok(0)
}
