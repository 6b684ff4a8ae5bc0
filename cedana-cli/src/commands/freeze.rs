//! `cedana freeze|unfreeze process PID|job JID`.

use super::Ctx;
use crate::cli::FreezeCmd;
use crate::client::status_error;
use crate::output::print_json;
use crate::proto::target::Target;

/// Runs freeze (`freeze` true) or unfreeze.
pub async fn run(ctx: &Ctx, cmd: FreezeCmd, freeze: bool) -> anyhow::Result<i32> {
    let (target, what) = match cmd {
        FreezeCmd::Process { pid } => (Target::Pid(pid), format!("PID {pid}")),
        FreezeCmd::Job { jid } => (Target::Jid(jid.clone()), format!("job {jid}")),
    };
    let req = crate::proto::Target {
        target: Some(target),
    };
    let mut client = ctx.client().await?;
    if freeze {
        client.freeze(req).await.map_err(status_error)?;
    } else {
        client.unfreeze(req).await.map_err(status_error)?;
    }
    let done = if freeze { "frozen" } else { "unfrozen" };
    if ctx.json {
        print_json(&serde_json::json!({ "target": what, "state": done }));
    } else {
        crate::outln!("{what} {done}");
    }
    Ok(0)
}
