//! `cedana features` / `cedana plugin features|list`: what this build provides.

use anyhow::bail;
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

/// `plugin install`: plugins are compiled into this build, so there is nothing to fetch;
/// succeeds when every name is one of them, else names the ones this build lacks.
pub fn install(ctx: &Ctx, names: &[String]) -> anyhow::Result<i32> {
    let engine = Engine::new(ctx.config.clone());
    let have = engine.plugins().names();
    let missing: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !have.contains(n))
        .collect();
    if !missing.is_empty() {
        bail!(
            "this build has no plugin {}: plugins are compiled into cedana (this one has {}); \
             a build with it is needed",
            missing.join(", "),
            have.join(", ")
        );
    }
    for name in names {
        crate::outln!("{name}: built into this cedana, ready");
    }
    Ok(0)
}

/// `plugin remove`: refused, with why and what to do instead.
pub fn remove(names: &[String]) -> anyhow::Result<i32> {
    bail!(
        "cannot remove {}: plugins are compiled into cedana; a plugin acts only on its own \
         kind of target (`cedana dump runc` needs the runc plugin, a process dump does not), \
         so an unused one costs nothing",
        names.join(", ")
    )
}
