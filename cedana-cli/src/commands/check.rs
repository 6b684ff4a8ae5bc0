//! `cedana check`: the host's health checks, run in-process (no daemon needed).

use cedana_runtime::engine::Engine;

use super::Ctx;
use crate::daemon::convert;
use crate::output::{or_dash, print_json, Table};
use crate::proto::HealthCheck;

/// Runs the checks here and prints them; exit 1 if any failed.
pub async fn run(ctx: &Ctx) -> anyhow::Result<i32> {
    let engine = Engine::new(ctx.config.clone());
    let checks = tokio::task::spawn_blocking(move || engine.check()).await?;
    let checks: Vec<_> = checks.iter().map(convert::health_check).collect();
    Ok(print_checks(&checks, ctx.json))
}

/// Prints health checks as a table (or JSON); returns 1 if any failed, else 0.
pub fn print_checks(checks: &[HealthCheck], json: bool) -> i32 {
    if json {
        let list: Vec<_> = checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "plugin": c.plugin, "check": c.name, "status": c.health,
                    "detail": c.detail, "fix": c.fix,
                })
            })
            .collect();
        print_json(&serde_json::Value::Array(list));
    } else {
        let mut t = Table::new(&["PLUGIN", "CHECK", "STATUS", "DETAIL", "FIX"]);
        for c in checks {
            t.row(vec![
                c.plugin.clone(),
                c.name.clone(),
                c.health.to_uppercase(),
                c.detail.clone(),
                or_dash(c.fix.clone()),
            ]);
        }
        t.print();
    }
    i32::from(checks.iter().any(|c| c.health == "fail"))
}
