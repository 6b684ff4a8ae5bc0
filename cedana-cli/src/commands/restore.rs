//! `cedana restore process --path P|job JID`: restore through the daemon (which becomes
//! the parent and tracks the result as a job), or in-process with `--no-server`.

use std::path::{Path, PathBuf};

use cedana_runtime::engine::Engine;
use cedana_runtime::image::metadata::CriuStats;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::dump::criu_flags;
use super::{absolute, jobs, location_arg, Ctx};
use crate::cli::{RestoreArgs, RestoreCmd};
use crate::client::status_error;
use crate::daemon::{convert, watch};
use crate::output::{criu_stats_text, print_json, print_profile, profile_json};
use crate::progress::with_spinner;
use crate::proto;

/// The proto restore request.
pub fn restore_request(
    jid: Option<String>,
    path: Option<&Path>,
    args: &RestoreArgs,
) -> anyhow::Result<proto::RestoreRequest> {
    Ok(proto::RestoreRequest {
        jid,
        path: path.map(location_arg).transpose()?,
        flags: Some(criu_flags(&args.flags)),
        pid_file: args
            .pid_file
            .as_deref()
            .map(|p| absolute(p).display().to_string()),
        runc: None,
        containerd: None,
        lazy: args.lazy,
        gpu_map: args
            .gpu_map
            .iter()
            .flat_map(|m| &m.0)
            .map(|(from, to)| proto::GpuPair {
                from: from.clone(),
                to: to.clone(),
            })
            .collect(),
    })
}

/// Runs `restore`.
pub async fn run(ctx: &Ctx, cmd: RestoreCmd) -> anyhow::Result<i32> {
    if let RestoreCmd::Kata {
        id,
        path,
        vm,
        args,
        no_server,
    } = &cmd
    {
        return super::kata::restore(ctx, id.clone(), path, vm, args, *no_server).await;
    }
    let (req, args, no_server) = match &cmd {
        RestoreCmd::Process {
            path,
            args,
            no_server,
        } => (restore_request(None, Some(path), args)?, args, *no_server),
        RestoreCmd::Job { jid, path, args } => (
            restore_request(Some(jid.clone()), path.as_deref(), args)?,
            args,
            false,
        ),
        RestoreCmd::Runc {
            path,
            bundle,
            id,
            detach,
            root,
            args,
            no_server,
        } => {
            let mut req = restore_request(None, Some(path), args)?;
            req.runc = Some(proto::RuncRestore {
                container: Some(proto::RuncContainer {
                    id: id.clone(),
                    root: root.as_deref().map(|r| absolute(r).display().to_string()),
                }),
                bundle: absolute(bundle).display().to_string(),
                detach: *detach,
            });
            (req, args, *no_server)
        }
        RestoreCmd::Containerd {
            path,
            id,
            image,
            containerd,
            args,
            no_server,
        } => {
            let mut req = restore_request(None, Some(path), args)?;
            req.containerd = Some(proto::ContainerdRestore {
                container: Some(proto::ContainerdContainer {
                    id: id.clone(),
                    address: Some(containerd.address.clone()),
                    namespace: Some(containerd.namespace.clone()),
                }),
                image: image.clone(),
            });
            (req, args, *no_server)
        }
        RestoreCmd::Kata { .. } => unreachable!("handled above"),
    };
    if no_server {
        if args.attach && (req.runc.is_some() || req.containerd.is_some()) {
            // Only the daemon keeps a restored container's log as a job's.
            anyhow::bail!(
                "--attach follows a job's log, and a container restored with --no-server is \
                 no job: drop --no-server (the daemon makes it a job), or for runc drop \
                 --detach to wait for the container in the foreground"
            );
        }
        return restore_here(ctx, &req, args).await;
    }
    let mut client = ctx.client().await?;
    let resp = with_spinner("restoring", client.restore(req))
        .await
        .map_err(status_error)?
        .into_inner();
    print_restored(ctx, &resp, args);
    if args.attach {
        return jobs::follow(&mut client, &resp.jid).await;
    }
    Ok(0)
}

/// `--no-server`: the engine runs here and this process is the restored tree's parent;
/// without --attach it is left to init when we exit.
async fn restore_here(
    ctx: &Ctx,
    req: &proto::RestoreRequest,
    args: &RestoreArgs,
) -> anyhow::Result<i32> {
    let path = PathBuf::from(req.path.clone().unwrap_or_default());
    let engine = Engine::new(ctx.config.clone());
    let resp = with_spinner(
        "restoring",
        engine.restore(convert::restore_request(req, path.clone())),
    )
    .await?;
    if let Some(code) = resp.exit_code {
        // A container restored in the foreground has exited: its status is ours.
        return Ok(code);
    }
    // No job: the restored tree is this process's child, not the daemon's.
    print_restored(
        ctx,
        &convert::restore_reply(&resp, String::new(), &path),
        args,
    );
    if req.lazy {
        // The pages are served by our child from files we remove: stay until it is done.
        let env = engine.env().clone();
        let failed = tokio::task::spawn_blocking(move || env.wait_for_lazy_pages()).await?;
        if !failed.is_empty() {
            anyhow::bail!("{}", failed.join("\n"));
        }
    }
    if !args.attach || req.runc.is_some() || req.containerd.is_some() {
        return Ok(0);
    }
    let pid = resp.pid;
    let status = tokio::task::spawn_blocking(move || waitpid(Pid::from_raw(pid), None)).await??;
    Ok(watch::exit_code(status).unwrap_or(0))
}

/// Prints a restore's reply; one without a job (`--no-server`) names none.
fn print_restored(ctx: &Ctx, resp: &proto::RestoreResponse, args: &RestoreArgs) {
    let stats: Option<CriuStats> = resp
        .criu_stats_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok());
    let jid = Some(&resp.jid).filter(|j| !j.is_empty());
    if ctx.json {
        let mut out = serde_json::json!({
            "pid": resp.pid, "duration_ms": resp.duration_ms, "criu_stats": stats,
            "profile": args.profile.then(|| profile_json(&resp.profile)),
        });
        if let Some(jid) = jid {
            out["jid"] = jid.as_str().into();
            out["path"] = resp.path.as_str().into();
        }
        print_json(&out);
        return;
    }
    match jid {
        Some(jid) => crate::outln!("{} (job {jid}, {} ms)", resp.pid, resp.duration_ms),
        None => crate::outln!("{} ({} ms)", resp.pid, resp.duration_ms),
    }
    print_stats_if(args.print_stats, stats.as_ref());
    if args.profile {
        print_profile(&resp.profile);
    }
}

/// `--print-stats`: CRIU's figures, or why there are none.
fn print_stats_if(wanted: bool, stats: Option<&CriuStats>) {
    if !wanted {
        return;
    }
    match stats {
        Some(s) => crate::out!("{}", criu_stats_text(s)),
        None => crate::outln!("CRIU wrote no statistics for this restore"),
    }
}
