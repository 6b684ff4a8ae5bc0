//! `cedana manage process PID|runc ID`: adopt a running process or runc container as a
//! job.

use super::{absolute, jobs, Ctx};
use crate::cli::ManageCmd;
use crate::client::status_error;
use crate::output::print_json;
use crate::proto;

/// Runs `manage process|runc`.
pub async fn run(ctx: &Ctx, cmd: ManageCmd) -> anyhow::Result<i32> {
    let req = match cmd {
        ManageCmd::Process { pid, jid } => proto::ManageRequest {
            pid,
            jid,
            runc: None,
        },
        ManageCmd::Runc { id, root, jid } => proto::ManageRequest {
            pid: 0,
            jid,
            runc: Some(proto::RuncContainer {
                id,
                root: root.map(|r| absolute(&r).display().to_string()),
            }),
        },
    };
    let mut client = ctx.client().await?;
    let job = client.manage(req).await.map_err(status_error)?.into_inner();
    if ctx.json {
        print_json(&jobs::job_json(&job));
    } else {
        crate::outln!("{} (PID {})", job.jid, job.pid);
    }
    Ok(0)
}
