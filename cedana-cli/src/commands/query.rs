//! `cedana query runc [ID] [--root R]`: the runtime's containers with status and PID,
//! read from the runtime itself (`runc list` / `runc state`), in-process.

use cedana_runtime::plugins::runc::runtime::Runtime;
use cedana_runtime::plugins::runc::RuncTarget;

use super::{absolute, Ctx};
use crate::cli::QueryCmd;
use crate::output::{print_json, Table};

/// Runs `query`.
pub async fn run(ctx: &Ctx, cmd: QueryCmd) -> anyhow::Result<i32> {
    let QueryCmd::Runc { id, root } = cmd;
    let target = RuncTarget::new(id.clone().unwrap_or_default(), root.map(|r| absolute(&r)));
    let binary = ctx.config.runc.binary_path.clone();
    let containers = tokio::task::spawn_blocking(move || {
        let rt = Runtime::new(&target, &binary)?;
        match id {
            Some(id) => rt.state(&id).map(|s| vec![s]),
            None => rt.list(),
        }
    })
    .await??;
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
