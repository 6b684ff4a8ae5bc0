//! `cedana manage process PID|runc ID|containerd ID`: adopt a running process or
//! container as a job.

use super::{absolute, containerd_container, jobs, Ctx};
use crate::cli::ManageCmd;
use crate::client::status_error;
use crate::output::print_json;
use crate::proto;

/// Runs `manage process|runc|containerd`.
pub async fn run(ctx: &Ctx, cmd: ManageCmd) -> anyhow::Result<i32> {
    let req = match cmd {
        ManageCmd::Process { pid, jid } => proto::ManageRequest {
            pid,
            jid,
            ..Default::default()
        },
        ManageCmd::Runc { id, root, jid } => proto::ManageRequest {
            pid: 0,
            jid,
            runc: Some(proto::RuncContainer {
                id,
                root: root.map(|r| absolute(&r).display().to_string()),
            }),
            containerd: None,
        },
        ManageCmd::Containerd {
            id,
            containerd,
            jid,
        } => proto::ManageRequest {
            jid,
            containerd: Some(containerd_container(&id, &containerd)),
            ..Default::default()
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
