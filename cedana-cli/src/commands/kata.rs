//! `cedana dump|restore|query kata`: checkpoint/restore inside a VM through its
//! cedana-guest-agent. The CLI talks to the agent itself (blocking I/O on a worker
//! thread); the checkpoint lands in (or comes from) a file on this host.

use std::path::PathBuf;

use anyhow::Context;
use cedana_runtime::guest::client;
use cedana_runtime::guest::transport::Endpoint;
use cedana_runtime::guest::wire::{DumpSpec, Target};
use cedana_runtime::plugins::Health;

use super::dump::criu_flags;
use super::{absolute, Ctx};
use crate::cli::{CriuFlagArgs, DumpArgs, RestoreArgs, VmArgs};
use crate::output::{human_bytes, print_json, Table};
use crate::progress::with_spinner;

/// The agent's address from the flags: exactly one of --vm-socket, --cid, --tcp.
pub fn endpoint(vm: &VmArgs) -> anyhow::Result<Endpoint> {
    match (&vm.vm_socket, vm.cid, &vm.tcp) {
        (Some(s), None, None) => Ok(Endpoint::Hybrid {
            socket: absolute(s),
            port: vm.port,
        }),
        (None, Some(cid), None) => Ok(Endpoint::Vsock { cid, port: vm.port }),
        (None, None, Some(t)) => Ok(Endpoint::Tcp(t.clone())),
        _ => anyhow::bail!(
            "say where the guest agent is: --vm-socket PATH (hybrid vsock), --cid N (vsock) \
             or --tcp HOST:PORT, with --port N for vsock (default {})",
            cedana_runtime::guest::DEFAULT_PORT
        ),
    }
}

/// Engine CRIU flags from the CLI's.
fn flags(f: &CriuFlagArgs) -> cedana_runtime::engine::CriuFlags {
    let p = criu_flags(f);
    cedana_runtime::engine::CriuFlags {
        tcp_established: p.tcp_established,
        tcp_close: p.tcp_close,
        file_locks: p.file_locks,
        shell_job: p.shell_job,
        link_remap: p.link_remap,
        external: p.external,
    }
}

/// Runs the blocking client call `f` off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, cedana_runtime::guest::GuestError> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

/// `cedana dump kata`.
pub async fn dump(
    ctx: &Ctx,
    id: Option<String>,
    pid: Option<i32>,
    vm: &VmArgs,
    args: &DumpArgs,
) -> anyhow::Result<i32> {
    if args.streams.is_some() {
        anyhow::bail!("--streams is not supported for kata yet: the guest sends one archive");
    }
    let ep = endpoint(vm)?;
    let target = match (id, pid) {
        (_, Some(p)) => Target::Pid(p),
        (Some(id), None) => Target::Container(id),
        (None, None) => anyhow::bail!("name a container id or --pid"),
    };
    let spec = DumpSpec {
        target,
        name: args.name.clone(),
        compression: args.compression.clone(),
        leave_running: args.leave_running.then_some(true),
        flags: flags(&args.flags),
    };
    let dir: PathBuf = local_only(args.dir.as_deref().unwrap_or(&ctx.config.checkpoint.dir))?;
    let started = std::time::Instant::now();
    let got = with_spinner(
        "checkpointing in the guest",
        blocking(move || client::dump(&ep, spec, &dir)),
    )
    .await?;
    let ms = started.elapsed().as_millis() as u64;
    if ctx.json {
        print_json(&serde_json::json!({
            "path": got.path,
            "name": got.ready.name,
            "size_bytes": got.ready.size,
            "guest_pid": got.ready.pid,
            "guest_duration_ms": got.ready.duration_ms,
            "duration_ms": ms,
            "metadata": got.ready.metadata,
        }));
    } else {
        crate::outln!("{}", got.path.display());
        crate::outln!(
            "{} from guest PID {}, {} ms ({} ms in the guest), verified",
            human_bytes(got.ready.size),
            got.ready.pid,
            ms,
            got.ready.duration_ms
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
) -> anyhow::Result<i32> {
    if args.attach || args.pid_file.is_some() {
        anyhow::bail!(
            "--attach and --pid-file are not supported for kata: the tree runs in the guest"
        );
    }
    if args.lazy {
        anyhow::bail!("--lazy is not supported for kata (the guest restores in full): drop --lazy");
    }
    let ep = endpoint(vm)?;
    let path = local_only(path)?;
    let f = flags(&args.flags);
    let shown = path.clone();
    let r = with_spinner(
        "restoring in the guest",
        blocking(move || client::restore(&ep, &path, id, f)),
    )
    .await
    .with_context(|| format!("cannot restore {} in the guest", shown.display()))?;
    if ctx.json {
        print_json(&serde_json::json!({ "guest_pid": r.pid, "duration_ms": r.duration_ms }));
    } else {
        crate::outln!(
            "restored in the guest as PID {} ({} ms)",
            r.pid,
            r.duration_ms
        );
    }
    Ok(0)
}

/// `cedana query kata`.
pub async fn query(ctx: &Ctx, vm: &VmArgs, check: bool) -> anyhow::Result<i32> {
    let ep = endpoint(vm)?;
    if check {
        let info = blocking(move || client::info(&ep)).await?;
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
    let l = blocking(move || client::list(&ep)).await?;
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

/// A kata checkpoint's local path: its bytes stream over the guest connection into a
/// file of this host, so an object store URL is refused by name, not made a directory.
fn local_only(p: &std::path::Path) -> anyhow::Result<PathBuf> {
    let at = cedana_runtime::store::Location::from_path(p)?;
    match at.as_local() {
        Some(local) => Ok(absolute(local)),
        None => anyhow::bail!(
            "{at}: kata checkpoints go to a local directory only; dump to a local --dir and \
             copy it (or dump a process, job or container to {}:// directly)",
            at.scheme()
        ),
    }
}
