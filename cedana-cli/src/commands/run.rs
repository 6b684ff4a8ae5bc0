//! `cedana run process` (alias `cedana exec`): start a program as a daemon job;
//! `cedana run runc`: run a runc container as a daemon job; `cedana run containerd`: a
//! containerd container from an image.

use super::{absolute, containerd_container, jobs, Ctx};
use crate::cli::{ContainerJobArgs, RunArgs, RunCmd, RunContainerdArgs, RunRuncArgs};
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
        ..Default::default()
    }
}

/// The job log asked for, made absolute.
fn log_path(job: &ContainerJobArgs) -> Option<String> {
    job.out
        .as_deref()
        .map(|p| absolute(p).display().to_string())
}

/// The proto request for `run containerd` (the log path made absolute).
pub fn run_containerd_request(args: &RunContainerdArgs) -> proto::RunRequest {
    let (program, rest) = args
        .command
        .split_first()
        .map(|(p, r)| (p.clone(), r.to_vec()))
        .unwrap_or_default();
    proto::RunRequest {
        jid: args.job.jid.clone(),
        program,
        args: rest,
        log_path: log_path(&args.job),
        containerd: Some(proto::ContainerdRun {
            container: Some(containerd_container(&args.id, &args.containerd)),
            image: args.image.clone(),
            runtime: Some(args.runtime.clone()),
        }),
        ..Default::default()
    }
}

/// The proto request for `run runc` (paths made absolute).
pub fn run_runc_request(args: &RunRuncArgs) -> proto::RunRequest {
    proto::RunRequest {
        jid: args.job.jid.clone(),
        log_path: log_path(&args.job),
        runc: Some(proto::RuncRun {
            container: Some(proto::RuncContainer {
                id: args.id.clone(),
                root: args
                    .root
                    .as_deref()
                    .map(|r| absolute(r).display().to_string()),
            }),
            bundle: absolute(&args.bundle).display().to_string(),
        }),
        ..Default::default()
    }
}

/// Runs `run process|runc`.
pub async fn run(ctx: &Ctx, cmd: RunCmd) -> anyhow::Result<i32> {
    let (req, attach) = match &cmd {
        RunCmd::Process(args) => (run_request(args), args.attach),
        RunCmd::Runc(args) => (run_runc_request(args), args.job.attach),
        RunCmd::Containerd(args) => (run_containerd_request(args), args.job.attach),
    };
    let mut client = ctx.client().await?;
    let job = client.run(req).await.map_err(status_error)?.into_inner();
    if ctx.json {
        print_json(&jobs::job_json(&job));
    } else if attach {
        eprintln!(
            "job {} started (PID {}), log {}",
            job.jid, job.pid, job.log_path
        );
    } else {
        crate::outln!("{} (PID {})", job.jid, job.pid);
    }
    if attach {
        return jobs::follow(&mut client, &job.jid).await;
    }
    Ok(0)
}
