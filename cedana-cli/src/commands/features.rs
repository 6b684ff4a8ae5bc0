//! `cedana features` / `cedana plugin features|list`: what this build provides.

use cedana_runtime::engine::Engine;

use super::Ctx;
use crate::output::{print_json, Table};

/// Plugins, their features, and the chains in order.
pub fn features(ctx: &Ctx) -> anyhow::Result<i32> {
    let engine = Engine::new(ctx.config.clone());
    let features = engine.plugins().features();
    let chains = engine.chains();
    if ctx.json {
        let chains: serde_json::Map<_, _> = chains
            .iter()
            .map(|(op, chain)| (op.to_string(), serde_json::Value::String(chain.clone())))
            .collect();
        print_json(&serde_json::json!({ "features": features, "chains": chains }));
        return Ok(0);
    }
    let mut t = Table::new(&["PLUGIN", "FEATURE", "DETAIL"]);
    for f in &features {
        t.row(vec![f.plugin.clone(), f.feature.clone(), f.detail.clone()]);
    }
    t.print();
    crate::outln!();
    crate::outln!("Chains (the first adapter listed sees the request first):");
    for (op, chain) in &chains {
        crate::outln!("  {op}: {chain}");
    }
    Ok(0)
}

/// Plugin names.
pub fn list(ctx: &Ctx) -> anyhow::Result<i32> {
    let engine = Engine::new(ctx.config.clone());
    let names = engine.plugins().names();
    if ctx.json {
        print_json(&serde_json::json!(names));
    } else {
        let mut t = Table::new(&["PLUGIN"]);
        for n in names {
            t.row(vec![n.to_string()]);
        }
        t.print();
    }
    Ok(0)
}
