//! `cedana dump|restore|query kata`: checkpoint/restore inside a VM through its
//! cedana-guest-agent, through the daemon (root only) or in this process with
//! `--no-server`. Both build the same proto request and run `daemon::kata`, so a flag
//! means the same either way; the checkpoint lands in (or comes from) a directory on this
//! host.

use anyhow::Context;
use cedana_runtime::guest::wire::{AgentInfo, DumpReady, Listing};
use cedana_runtime::plugins::Health;

use super::dump::criu_flags;
use super::{absolute, containerd_container, location_arg, Ctx};
use crate::cli::{DumpArgs, RestoreArgs, VmArgs};
use crate::client::status_error;
use crate::daemon::kata as run_kata;
use crate::output::{human_bytes, print_json, Table};
use crate::progress::with_spinner;
use crate::proto;

/// Where the agent is, as the daemon's API says it.
fn vm_proto(vm: &VmArgs) -> proto::KataVm {
    proto::KataVm {
        vm_socket: vm
            .vm_socket
            .as_deref()
            .map(|s| absolute(s).display().to_string()),
        cid: vm.cid,
        port: vm.port,
        tcp: vm.tcp.clone(),
        containerd: Some(containerd_container("", &vm.containerd)),
    }
}

/// `cedana dump kata`.
pub async fn dump(
    ctx: &Ctx,
    id: Option<String>,
    pid: Option<i32>,
    vm: &VmArgs,
    args: &DumpArgs,
    no_server: bool,
) -> anyhow::Result<i32> {
    if args.streams.is_some_and(|n| n != 1) {
        anyhow::bail!(
            "--streams: a kata dump streams one shard over the guest connection (leave --streams out)"
        );
    }
    let dir = args.dir.as_deref().unwrap_or(&ctx.config.checkpoint.dir);
    let req = proto::KataDumpRequest {
        vm: Some(vm_proto(vm)),
        id,
        pid,
        dir: Some(location_arg(dir)?),
        name: args.name.clone(),
        compression: args.compression.clone(),
        leave_running: args.leave_running.then_some(true),
        flags: Some(criu_flags(&args.flags)),
    };
    let resp = if no_server {
        with_spinner(
            "checkpointing in the guest",
            run_kata::dump(&ctx.config, req),
        )
        .await?
    } else {
        let mut client = ctx.client().await?;
        with_spinner("checkpointing in the guest", client.dump_kata(req))
            .await
            .map_err(status_error)?
            .into_inner()
    };
    let ready: DumpReady =
        serde_json::from_str(&resp.ready_json).context("the daemon's dump reply is not valid")?;
    if ctx.json {
        print_json(&serde_json::json!({
            "id": (!resp.id.is_empty()).then_some(&resp.id),
            "path": resp.path,
            "name": ready.name,
            "size_bytes": ready.size,
            "guest_pid": ready.pid,
            "guest_duration_ms": ready.duration_ms,
            "duration_ms": resp.duration_ms,
            "metadata": ready.metadata,
        }));
    } else {
        let id = if resp.id.is_empty() {
            String::new()
        } else {
            format!(" (checkpoint {})", resp.id)
        };
        crate::outln!("{}{id}", resp.path);
        crate::outln!(
            "{} from guest PID {}, {} ms ({} ms in the guest), verified",
            human_bytes(ready.size),
            ready.pid,
            resp.duration_ms,
            ready.duration_ms
        );
    }
    Ok(0)
}

/// `cedana restore kata`.
pub async fn restore(
    ctx: &Ctx,
    id: Option<String>,
    path: &std::path::Path,
    vm: &VmArgs,
    args: &RestoreArgs,
    no_server: bool,
) -> anyhow::Result<i32> {
    if args.attach || args.pid_file.is_some() {
        anyhow::bail!(
            "--attach and --pid-file are not supported for kata: the tree runs in the guest"
        );
    }
    if args.lazy {
        anyhow::bail!("--lazy is not supported for kata (the guest restores in full): drop --lazy");
    }
    if args.gpu_map.is_some() {
        anyhow::bail!("--gpu-map is not supported for kata (no GPU path in the guest): drop it");
    }
    let req = proto::KataRestoreRequest {
        vm: Some(vm_proto(vm)),
        id,
        path: location_arg(path)?,
        flags: Some(criu_flags(&args.flags)),
    };
    let r = if no_server {
        with_spinner(
            "restoring in the guest",
            run_kata::restore(&ctx.config, req),
        )
        .await
        .map_err(anyhow::Error::from)
    } else {
        let mut client = ctx.client().await?;
        with_spinner("restoring in the guest", client.restore_kata(req))
            .await
            .map(|r| r.into_inner())
            .map_err(status_error)
    }
    .with_context(|| format!("cannot restore {} in the guest", path.display()))?;
    if ctx.json {
        print_json(&serde_json::json!({ "guest_pid": r.guest_pid, "duration_ms": r.duration_ms }));
    } else {
        crate::outln!(
            "restored in the guest as PID {} ({} ms)",
            r.guest_pid,
            r.duration_ms
        );
    }
    Ok(0)
}

/// `cedana query kata`.
pub async fn query(ctx: &Ctx, vm: &VmArgs, check: bool, no_server: bool) -> anyhow::Result<i32> {
    let req = proto::KataQueryRequest {
        vm: Some(vm_proto(vm)),
        check,
    };
    let json = if no_server {
        run_kata::query(&ctx.config, req).await?.json
    } else {
        let mut client = ctx.client().await?;
        client
            .query_kata(req)
            .await
            .map_err(status_error)?
            .into_inner()
            .json
    };
    if check {
        let info: AgentInfo =
            serde_json::from_str(&json).context("the agent's info reply is not valid")?;
        let failed = info.checks.iter().any(|c| c.health == Health::Fail);
        if ctx.json {
            print_json(&serde_json::to_value(&info)?);
        } else {
            crate::outln!("agent {} on guest kernel {}", info.version, info.kernel);
            for c in &info.checks {
                let mark = match c.health {
                    Health::Ok => "ok  ",
                    Health::Warn => "warn",
                    Health::Fail => "FAIL",
                };
                crate::outln!("[{mark}] {}: {}", c.name, c.detail);
                if let Some(fix) = &c.fix {
                    crate::outln!("       fix: {fix}");
                }
            }
        }
        return Ok(if failed { 1 } else { 0 });
    }
    let l: Listing = serde_json::from_str(&json).context("the agent's listing is not valid")?;
    if ctx.json {
        print_json(&serde_json::to_value(&l)?);
        return Ok(0);
    }
    let mut t = Table::new(&["CONTAINER", "PID", "ROOTFS"]);
    for c in &l.containers {
        t.row(vec![
            c.id.clone(),
            c.pid.map_or("-".into(), |p| p.to_string()),
            c.rootfs.clone(),
        ]);
    }
    t.print();
    crate::outln!();
    let mut t = Table::new(&["PID", "PPID", "COMMAND"]);
    for p in &l.processes {
        t.row(vec![
            p.pid.to_string(),
            p.ppid.to_string(),
            p.command.clone(),
        ]);
    }
    t.print();
    Ok(0)
}
