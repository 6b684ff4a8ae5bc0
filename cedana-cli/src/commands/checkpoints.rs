//! `cedana checkpoints` / `checkpoint list|inspect|delete` / `job checkpoint ...`.

use super::Ctx;
use crate::cli::CheckpointCmd;
use crate::client::status_error;
use crate::output::{human_bytes, or_dash, print_json, Table};
use crate::proto;

/// A checkpoint as JSON (metadata parsed, not as a string).
pub fn checkpoint_json(c: &proto::Checkpoint) -> serde_json::Value {
    serde_json::json!({
        "id": c.id, "jid": c.jid, "name": c.name, "path": c.path,
        "compression": c.compression, "size_bytes": c.size_bytes, "created_at": c.created_at,
    })
}

/// The checkpoints table.
pub fn table(cks: &[proto::Checkpoint]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "JOB",
        "NAME",
        "PATH",
        "COMPRESSION",
        "SIZE",
        "CREATED",
    ]);
    for c in cks {
        t.row(vec![
            c.id.clone(),
            or_dash(c.jid.clone()),
            c.name.clone(),
            c.path.clone(),
            c.compression.clone(),
            human_bytes(c.size_bytes),
            c.created_at.clone(),
        ]);
    }
    t
}

/// Runs a checkpoint subcommand.
pub async fn run(ctx: &Ctx, cmd: CheckpointCmd) -> anyhow::Result<i32> {
    let mut client = ctx.client().await?;
    match cmd {
        CheckpointCmd::List { jid } => {
            let cks = client
                .list_checkpoints(proto::ListCheckpointsRequest { jid })
                .await
                .map_err(status_error)?
                .into_inner()
                .checkpoints;
            if ctx.json {
                print_json(&cks.iter().map(checkpoint_json).collect());
            } else {
                table(&cks).print();
            }
        }
        CheckpointCmd::Inspect { id } => {
            let ck = client
                .get_checkpoint(proto::CheckpointRef { id })
                .await
                .map_err(status_error)?
                .into_inner();
            let metadata: serde_json::Value =
                serde_json::from_str(&ck.metadata_json).unwrap_or(serde_json::Value::Null);
            if ctx.json {
                let mut v = checkpoint_json(&ck);
                v["metadata"] = metadata;
                print_json(&v);
            } else {
                crate::outln!(
                    "ID        {}\nJOB       {}\nPATH      {}",
                    ck.id,
                    or_dash(ck.jid),
                    ck.path
                );
                crate::outln!("{metadata:#}");
            }
        }
        CheckpointCmd::Delete { id } => {
            client
                .delete_checkpoint(proto::CheckpointRef { id: id.clone() })
                .await
                .map_err(status_error)?;
            if !ctx.json {
                crate::outln!("deleted checkpoint {id}");
            }
        }
    }
    Ok(0)
}
