//! `cedana dump process PID|job JID|runc|containerd|k8s ...`: checkpoint through the
//! daemon, or in-process with `--no-server` (`dump k8s` finds the pod's container through
//! the CRI first, then is `dump containerd`). Both build the same proto request, so a flag means the same either way.

use cedana_runtime::engine::Engine;
use cedana_runtime::image::metadata::Metadata;

use super::{absolute, location_arg, Ctx};
use crate::cli::{CriuFlagArgs, DumpArgs, DumpCmd};
use crate::client::status_error;
use crate::daemon::convert::{self, Recorded};
use crate::output::{criu_stats_text, human_bytes, print_json, print_profile, profile_json};
use crate::progress::with_spinner;
use crate::proto::{self, target::Target};

/// CLI CRIU flags -> proto: a flag given forces the option on; absent lets the engine decide.
pub fn criu_flags(f: &CriuFlagArgs) -> proto::CriuFlags {
    let on = |b: bool| b.then_some(true);
    proto::CriuFlags {
        tcp_established: on(f.tcp_established),
        tcp_close: on(f.tcp_close),
        file_locks: on(f.file_locks),
        shell_job: on(f.shell_job),
        link_remap: on(f.link_remap),
        external: f.external.clone(),
    }
}

/// The proto dump request for a target.
pub fn dump_request(target: Target, args: &DumpArgs) -> anyhow::Result<proto::DumpRequest> {
    Ok(proto::DumpRequest {
        target: Some(proto::Target {
            target: Some(target),
        }),
        dir: args.dir.as_deref().map(location_arg).transpose()?,
        name: args.name.clone(),
        compression: args.compression.clone(),
        leave_running: args.leave_running.then_some(true),
        streams: args.streams,
        flags: Some(criu_flags(&args.flags)),
    })
}

/// The dump options of any dump subcommand.
fn dump_args(cmd: &DumpCmd) -> &DumpArgs {
    match cmd {
        DumpCmd::Process { args, .. }
        | DumpCmd::Job { args, .. }
        | DumpCmd::Runc { args, .. }
        | DumpCmd::Containerd { args, .. }
        | DumpCmd::K8s { args, .. }
        | DumpCmd::Kata { args, .. } => args,
    }
}

/// Runs `dump`.
pub async fn run(ctx: &Ctx, cmd: DumpCmd) -> anyhow::Result<i32> {
    if let DumpCmd::Kata {
        id,
        pid,
        vm,
        args,
        no_server,
    } = cmd
    {
        return super::kata::dump(ctx, id, pid, &vm, &args, no_server).await;
    }
    let (print_stats, show_profile) = (dump_args(&cmd).print_stats, dump_args(&cmd).profile);
    let (req, no_server) = match &cmd {
        DumpCmd::Process {
            pid,
            args,
            no_server,
        } => (dump_request(Target::Pid(*pid), args)?, *no_server),
        DumpCmd::Job { jid, args } => (dump_request(Target::Jid(jid.clone()), args)?, false),
        DumpCmd::Runc {
            id,
            root,
            args,
            no_server,
        } => (
            dump_request(
                Target::Runc(proto::RuncContainer {
                    id: id.clone(),
                    root: root.as_deref().map(|r| absolute(r).display().to_string()),
                }),
                args,
            )?,
            *no_server,
        ),
        DumpCmd::Containerd {
            id,
            containerd,
            args,
            no_server,
        } => (
            dump_request(
                Target::Containerd(proto::ContainerdContainer {
                    id: id.clone(),
                    address: Some(containerd.address.clone()),
                    namespace: Some(containerd.namespace.clone()),
                }),
                args,
            )?,
            *no_server,
        ),
        DumpCmd::K8s {
            pod,
            container,
            namespace,
            cri,
            args,
            no_server,
        } => {
            let address = absolute(&cri.address);
            let (_, c) = crate::k8s::cri::container_of(
                &address,
                pod,
                namespace.as_deref(),
                container.as_deref(),
            )
            .await?;
            (
                dump_request(
                    Target::Containerd(proto::ContainerdContainer {
                        id: c.id,
                        address: Some(address.display().to_string()),
                        namespace: Some(crate::k8s::cri::CONTAINERD_NAMESPACE.into()),
                    }),
                    args,
                )?,
                *no_server,
            )
        }
        DumpCmd::Kata { .. } => unreachable!("handled above"),
    };
    let resp = if no_server {
        let engine = Engine::new(ctx.config.clone());
        let r = with_spinner(
            "checkpointing",
            engine.dump(convert::dump_request(&req, 0)?),
        )
        .await?;
        convert::dump_reply(&convert::dumped_record(&r, Recorded::unrecorded(&r)), &r)
    } else {
        let mut client = ctx.client().await?;
        with_spinner("checkpointing", client.dump(req))
            .await
            .map_err(status_error)?
            .into_inner()
    };
    let ck = resp.checkpoint.unwrap_or_default();
    let metadata: Option<Metadata> = serde_json::from_str(&ck.metadata_json).ok();
    // The one line that says a dump did not stream, and why (the engine's fallback);
    // and one when its images had to wait on disk before they were packed.
    let packing = metadata.as_ref().and_then(|m| m.packing.as_ref());
    if let Some(why) = packing.and_then(|p| p.not_streamed.as_deref()) {
        eprintln!("cedana: not streamed: {why}; packed as {}", ck.compression);
    }
    if let Some(why) = packing.and_then(|p| p.staged_on_disk.as_deref()) {
        eprintln!("cedana: images staged on disk before packing (slower): {why}");
    }
    let stats = metadata.and_then(|m| m.criu_stats);
    if ctx.json {
        print_json(&serde_json::json!({
            "id": (!ck.id.is_empty()).then_some(&ck.id),
            "jid": ck.jid,
            "name": ck.name,
            "path": ck.path,
            "compression": ck.compression,
            "size_bytes": ck.size_bytes,
            "duration_ms": resp.duration_ms,
            "metadata": serde_json::from_str::<serde_json::Value>(&ck.metadata_json).ok(),
            "profile": show_profile.then(|| profile_json(&resp.profile)),
        }));
    } else {
        let id = if ck.id.is_empty() {
            String::new()
        } else {
            format!(" (checkpoint {})", ck.id)
        };
        crate::outln!("{}{id}", ck.path);
        crate::outln!(
            "{} {}, {} ms",
            human_bytes(ck.size_bytes),
            ck.compression,
            resp.duration_ms
        );
        if print_stats {
            match &stats {
                Some(s) => crate::out!("{}", criu_stats_text(s)),
                None => crate::outln!("CRIU wrote no statistics for this dump"),
            }
        }
        if show_profile {
            print_profile(&resp.profile);
        }
    }
    Ok(0)
}
