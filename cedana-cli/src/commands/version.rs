//! `cedana version`: this build's version and CRIU's, if CRIU is found.

use cedana_runtime::criu::Criu;

use super::Ctx;
use crate::output::print_json;

/// Prints the versions.
pub fn run(ctx: &Ctx) -> anyhow::Result<i32> {
    let criu = Criu::locate(&ctx.config.criu.binary_path).and_then(|c| c.version());
    let criu_text = match &criu {
        Ok(v) => v.to_string(),
        Err(e) => format!("not available ({e})"),
    };
    if ctx.json {
        print_json(&serde_json::json!({
            "cedana": env!("CARGO_PKG_VERSION"),
            "criu": criu.as_ref().ok().map(|v| v.to_string()),
        }));
    } else {
        println!("cedana {}", env!("CARGO_PKG_VERSION"));
        println!("criu {criu_text}");
    }
    Ok(0)
}
