//! `cedana manage process PID`: adopt a running process as a job.

use super::{jobs, Ctx};
use crate::cli::ManageCmd;
use crate::client::status_error;
use crate::output::print_json;
use crate::proto;

/// Runs `manage process`.
pub async fn run(ctx: &Ctx, cmd: ManageCmd) -> anyhow::Result<i32> {
    let ManageCmd::Process { pid, jid } = cmd;
    let mut client = ctx.client().await?;
    let job = client
        .manage(proto::ManageRequest { pid, jid })
        .await
        .map_err(status_error)?
        .into_inner();
    if ctx.json {
        print_json(&jobs::job_json(&job));
    } else {
        println!("{} (PID {})", job.jid, job.pid);
    }
    Ok(0)
}
