//! `cedana-runc`: a drop-in wrapper of an OCI runtime. Every subcommand but `checkpoint`
//! and `restore` `exec()`s the real runtime with the identical arguments (exit code,
//! stdio, inherited fds, console socket, pid file and signals stay the runtime's);
//! `checkpoint`/`restore` go through the engine, which detects the CRIU options from the
//! container and records them in metadata.json beside the images for the restore.

pub mod args;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use cedana_config::Config;

use crate::engine::{CriuFlags, DumpRequest, Engine, RestoreRequest};
use crate::plugins::runc::loopback;
use crate::plugins::runc::runtime::resolve_binary;
use crate::plugins::runc::{RuncDump, RuncRestore};
use args::{Call, Invocation};

/// Overrides `runc.binary_path` for the wrapper only.
pub const RUNTIME_ENV: &str = "CEDANA_RUNTIME_BINARY";

/// Runs the wrapper on `args` (without argv\[0\]); returns the exit code (pass-through
/// does not return on success).
pub fn main(args: Vec<OsString>) -> i32 {
    if args.first().and_then(|a| a.to_str()) == Some(loopback::HOOK_ARG) {
        return loopback::hook_main();
    }
    let env_binary = std::env::var_os(RUNTIME_ENV).filter(|v| !v.is_empty());
    let invocation = args::parse(&args);
    // Pass-through needs no config when the runtime comes from the environment.
    let config = if env_binary.is_some() && invocation == Invocation::PassThrough {
        Config::default()
    } else {
        match Config::load_default(None, &[]) {
            Ok(c) => c,
            Err(e) => return fail(None, &format!("invalid cedana configuration: {e}")),
        }
    };
    let configured = env_binary
        .map(PathBuf::from)
        .unwrap_or_else(|| config.runc.binary_path.clone());
    let binary = match resolve_binary(&configured) {
        Ok(b) => b,
        Err(e) => return fail(None, &e.to_string()),
    };
    match invocation {
        Invocation::PassThrough => {
            let err = std::process::Command::new(&binary).args(&args).exec();
            fail(None, &format!("cannot exec {}: {err}", binary.display()))
        }
        Invocation::Checkpoint(call) => engine_call(config, binary, call, false),
        Invocation::Restore(call) => engine_call(config, binary, call, true),
    }
}

fn engine_call(mut config: Config, binary: PathBuf, call: Call, restore: bool) -> i32 {
    config.runc.binary_path = binary;
    let log = call.target.log.clone();
    let json_log = call.target.log_format.as_deref() == Some("json");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(None, &format!("cannot start the async runtime: {e}")),
    };
    let engine = Engine::new(config);
    let op = if restore { "restore" } else { "checkpoint" };
    let result = rt.block_on(async {
        if restore {
            engine
                .restore(restore_request(&call))
                .await
                .map(|r| r.exit_code.unwrap_or(0))
        } else {
            engine.dump(dump_request(&call)).await.map(|_| 0)
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => fail(
            log.as_deref().filter(|_| json_log),
            &format!("{op} failed: {e}"),
        ),
    }
}

fn flags(call: &Call) -> CriuFlags {
    let on = |name: &str| call.has(name).then_some(true);
    CriuFlags {
        tcp_established: on("tcp-established"),
        file_locks: on("file-locks"),
        shell_job: on("shell-job"),
        ..Default::default()
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn image_path(call: &Call) -> PathBuf {
    absolute(
        call.image_path
            .as_deref()
            .unwrap_or(Path::new("checkpoint")),
    )
}

/// The engine request of `cedana-runc checkpoint`.
pub fn dump_request(call: &Call) -> DumpRequest {
    let mut extra = call.extra.clone();
    if call.has("ext-unix-sk") {
        extra.push("--ext-unix-sk".into());
    }
    DumpRequest {
        leave_running: Some(call.has("leave-running")),
        flags: flags(call),
        image_path: Some(image_path(call)),
        target: Some(Box::new(RuncDump {
            target: call.target.clone(),
            work_path: call.work_path.as_deref().map(absolute),
            extra_args: extra,
        })),
        ..Default::default()
    }
}

/// The engine request of `cedana-runc restore`.
pub fn restore_request(call: &Call) -> RestoreRequest {
    let mut extra = call.extra.clone();
    if call.has("ext-unix-sk") {
        extra.push("--ext-unix-sk".into());
    }
    RestoreRequest {
        path: image_path(call),
        flags: flags(call),
        pid_file: None,
        // runc's own --lazy-pages needs a lazy-pages the caller started: passed through.
        lazy: false,
        target: Some(Box::new(RuncRestore {
            target: call.target.clone(),
            bundle: absolute(call.bundle.as_deref().unwrap_or(Path::new("."))),
            detach: call.has("detach"),
            pid_file: call.pid_file.as_deref().map(absolute),
            console_socket: call.console_socket.clone(),
            no_pivot: call.has("no-pivot"),
            no_subreaper: call.has("no-subreaper"),
            work_path: call.work_path.as_deref().map(absolute),
            extra_args: extra,
            stdio: None,
        })),
        remote_shards: None,
        gpu_map: Vec::new(),
    }
}

/// Prints the error as runc would (and into a JSON `--log`, where containerd's shim
/// looks for the runtime's last error); returns exit code 1.
fn fail(json_log: Option<&Path>, msg: &str) -> i32 {
    eprintln!("cedana-runc: {msg}");
    if let Some(path) = json_log {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let line = serde_json::json!({
                "level": "error",
                "msg": msg,
                "time": chrono::Utc::now().to_rfc3339(),
            });
            let _ = writeln!(f, "{line}");
        }
    }
    1
}
