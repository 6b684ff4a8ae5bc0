//! `cedana __complete jobs|checkpoints` (hidden): the ids the completion scripts offer,
//! one a line, from the running daemon.

use super::Ctx;
use crate::cli::CompleteKind;
use crate::client::quick;
use crate::proto::{Empty, ListCheckpointsRequest};

/// Prints the ids; any failure (no daemon) goes to stderr, which the scripts discard.
pub async fn run(ctx: &Ctx, kind: CompleteKind) -> anyhow::Result<i32> {
    let mut client = ctx.client().await?;
    let socket = &ctx.config.address;
    let ids: Vec<String> = match kind {
        CompleteKind::Jobs => quick(socket, client.list_jobs(Empty {}))
            .await?
            .jobs
            .into_iter()
            .map(|j| j.jid)
            .collect(),
        CompleteKind::Checkpoints => quick(
            socket,
            client.list_checkpoints(ListCheckpointsRequest { jid: None }),
        )
        .await?
        .checkpoints
        .into_iter()
        .map(|c| c.id)
        .collect(),
    };
    for id in ids {
        crate::outln!("{id}");
    }
    Ok(0)
}
