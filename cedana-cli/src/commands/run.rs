//! `cedana run process` (alias `cedana exec`): start a program as a daemon job.

use super::{absolute, jobs, Ctx};
use crate::cli::{RunArgs, RunCmd};
use crate::client::status_error;
use crate::output::print_json;
use crate::proto;

/// The proto request for `run process` (paths made absolute; cwd defaults to ours).
pub fn run_request(args: &RunArgs) -> proto::RunRequest {
    let (program, rest) = args
        .command
        .split_first()
        .map(|(p, r)| (p.clone(), r.to_vec()))
        .unwrap_or_default();
    let cwd = match &args.cwd {
        Some(d) => absolute(d),
        None => std::env::current_dir().unwrap_or_else(|_| "/".into()),
    };
    proto::RunRequest {
        jid: args.jid.clone(),
        program,
        args: rest,
        cwd: Some(cwd.display().to_string()),
        env: args
            .env
            .iter()
            .map(|(key, value)| proto::EnvVar {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        log_path: args
            .out
            .as_deref()
            .map(|p| absolute(p).display().to_string()),
    }
}

/// Runs `run process`.
pub async fn run(ctx: &Ctx, cmd: RunCmd) -> anyhow::Result<i32> {
    let RunCmd::Process(args) = cmd;
    let mut client = ctx.client().await?;
    let job = client
        .run(run_request(&args))
        .await
        .map_err(status_error)?
        .into_inner();
    if ctx.json {
        print_json(&jobs::job_json(&job));
    } else if args.attach {
        eprintln!(
            "job {} started (PID {}), log {}",
            job.jid, job.pid, job.log_path
        );
    } else {
        println!("{} (PID {})", job.jid, job.pid);
    }
    if args.attach {
        return jobs::follow(&mut client, &job.jid).await;
    }
    Ok(0)
}
