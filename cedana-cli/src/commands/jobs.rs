//! `cedana ps` / `jobs` / `job list|inspect|kill|delete|attach`.

use anyhow::bail;
use nix::sys::signal::Signal;

use super::{checkpoints, Ctx};
use crate::cli::KillArgs;
use crate::client::{quick, status_error, Client};
use crate::output::{or_dash, print_json, Table};
use crate::proto::{self, Empty};

/// A job as JSON.
pub fn job_json(j: &proto::Job) -> serde_json::Value {
    serde_json::json!({
        "jid": j.jid, "pid": j.pid, "kind": j.kind, "state": j.state,
        "exit_code": j.exit_code, "command": j.command, "log_path": j.log_path,
        "checkpoints": j.checkpoints, "created_at": j.created_at, "updated_at": j.updated_at,
        "container_id": j.container_id, "runc_root": j.runc_root, "bundle": j.bundle,
    })
}

/// The `ps` table.
pub fn jobs_table(jobs: &[proto::Job]) -> Table {
    let mut t = Table::new(&[
        "JID",
        "PID",
        "STATE",
        "EXIT",
        "CHECKPOINTS",
        "COMMAND",
        "LOG",
    ]);
    for j in jobs {
        t.row(vec![
            j.jid.clone(),
            j.pid.to_string(),
            j.state.clone(),
            or_dash(j.exit_code),
            j.checkpoints.to_string(),
            j.command.clone(),
            if j.log_path.is_empty() {
                "-".into()
            } else {
                j.log_path.clone()
            },
        ]);
    }
    t
}

/// `cedana ps`.
pub async fn list(ctx: &Ctx) -> anyhow::Result<i32> {
    let mut client = ctx.client().await?;
    let jobs = quick(&ctx.config.address, client.list_jobs(Empty {}))
        .await?
        .jobs;
    if ctx.json {
        print_json(&serde_json::Value::Array(
            jobs.iter().map(job_json).collect(),
        ));
    } else {
        jobs_table(&jobs).print();
    }
    Ok(0)
}

/// `cedana job inspect JID`.
pub async fn inspect(ctx: &Ctx, jid: &str) -> anyhow::Result<i32> {
    let mut client = ctx.client().await?;
    let job = client
        .get_job(proto::JobRef { jid: jid.into() })
        .await
        .map_err(status_error)?
        .into_inner();
    let cks = client
        .list_checkpoints(proto::ListCheckpointsRequest {
            jid: Some(jid.into()),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .checkpoints;
    if ctx.json {
        let mut v = job_json(&job);
        v["checkpoint_list"] = cks.iter().map(checkpoints::checkpoint_json).collect();
        print_json(&v);
        return Ok(0);
    }
    let fields = [
        ("JID", job.jid.clone()),
        ("PID", job.pid.to_string()),
        ("KIND", job.kind.clone()),
        ("STATE", job.state.clone()),
        ("EXIT", or_dash(job.exit_code)),
        ("COMMAND", job.command.clone()),
        (
            "LOG",
            or_dash(Some(&job.log_path).filter(|l| !l.is_empty())),
        ),
        ("CREATED", job.created_at.clone()),
        ("UPDATED", job.updated_at.clone()),
    ];
    for (k, v) in fields {
        crate::outln!("{k:<9} {v}");
    }
    crate::outln!("\nCheckpoints:");
    checkpoints::table(&cks).print();
    Ok(0)
}

/// Parses `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> anyhow::Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n)
            .map(|sig| sig as i32)
            .map_err(|_| anyhow::anyhow!("unknown signal number {n}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    match name.parse::<Signal>() {
        Ok(sig) => Ok(sig as i32),
        Err(_) => bail!("unknown signal {s:?}: use a name like TERM, KILL, INT or a number"),
    }
}

/// `cedana job kill JID [--signal S] [--timeout SECONDS]`.
pub async fn kill(ctx: &Ctx, args: &KillArgs) -> anyhow::Result<i32> {
    let signal = parse_signal(&args.signal)?;
    let mut client = ctx.client().await?;
    let answer = client
        .kill_job(proto::KillRequest {
            jid: args.jid.clone(),
            signal,
            timeout_s: Some(args.timeout),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if ctx.json {
        print_json(&serde_json::json!({
            "jid": args.jid, "signal": signal, "halted": answer.halted,
            "escalated": answer.escalated,
        }));
    } else {
        crate::outln!("{}", kill_summary(&args.jid, signal, args.timeout, &answer));
    }
    Ok(if answer.halted { 0 } else { 1 })
}

/// What `job kill` did, in one line.
pub fn kill_summary(jid: &str, signal: i32, timeout: u32, answer: &proto::KillResponse) -> String {
    match (answer.halted, answer.escalated) {
        (true, false) => format!("job {jid} halted after signal {signal}"),
        (true, true) => format!("job {jid} ignored signal {signal} for {timeout} s; halted by SIGKILL"),
        (false, true) => format!("sent signal {signal}, then SIGKILL after {timeout} s, but job {jid} has not halted yet"),
        (false, false) => format!("sent signal {signal} to job {jid}, but it has not halted yet"),
    }
}

/// `cedana job delete JID [--force]`.
pub async fn delete(ctx: &Ctx, jid: &str, force: bool) -> anyhow::Result<i32> {
    let mut client = ctx.client().await?;
    client
        .delete_job(proto::DeleteJobRequest {
            jid: jid.into(),
            force,
        })
        .await
        .map_err(status_error)?;
    if !ctx.json {
        crate::outln!("deleted job {jid}");
    }
    Ok(0)
}

/// `cedana job attach JID`.
pub async fn attach(ctx: &Ctx, jid: &str) -> anyhow::Result<i32> {
    let mut client = ctx.client().await?;
    follow(&mut client, jid).await
}

/// Copies a job's log to stdout until it halts; returns its exit code (0 if unknown).
pub async fn follow(client: &mut Client, jid: &str) -> anyhow::Result<i32> {
    let mut stream = client
        .attach(proto::JobRef { jid: jid.into() })
        .await
        .map_err(status_error)?
        .into_inner();
    while let Some(chunk) = stream.message().await.map_err(status_error)? {
        crate::output::write_stdout(&chunk.data);
        if chunk.done {
            return Ok(chunk.exit_code.unwrap_or(0));
        }
    }
    bail!("the daemon closed the attach stream before job {jid} halted")
}
