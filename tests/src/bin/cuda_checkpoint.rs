//! A STAND-IN for NVIDIA's `cuda-checkpoint`, for tests on machines without a GPU. It
//! takes the real tool's command line (`--action lock|checkpoint|restore|unlock --pid
//! PID [--timeout MS] [--device-map OLD=NEW,...]`, `--get-state --pid PID`,
//! `--get-restore-tid --pid PID`, `--help`/`-h`), keeps each process's state (`running`,
//! `locked`, `checkpointed`) in a file, refuses the transitions the driver refuses, and
//! moves no GPU state at all.
//!
//! A process is a CUDA process to the stand-in when it has a thread named `cuda-restore`
//! (the workload `gpu-counter` starts one): that thread stands in for the driver's restore
//! thread, whose TID `--get-restore-tid` gives (CRIU's cuda_plugin resumes it while it
//! checkpoints and restores). Other processes get the driver's "not a CUDA process" answer.
//!
//! The real state lives in the process, so it comes back with a restored process even
//! where the restore gives it another host PID (a container in its own PID namespace).
//! The stand-in keys its files by the process's PID in its innermost namespace (`NSpid`),
//! which CRIU restores, so it answers the same.
//!
//! - `CEDANA_TEST_CUDA_STATE_DIR`: directory of the state files (required), one per
//!   innermost PID.
//! - `CEDANA_TEST_CUDA_LOG`: file every call is appended to, as `cuda-checkpoint ACTION PID`
//!   (then ` --device-map MAP` where a restore was given one).
//! - `CEDANA_TEST_CUDA_FAIL`: an action (`lock`, `checkpoint`, `restore`, `unlock`) that
//!   fails, as the driver would on a job it cannot checkpoint.

use std::io::Write;
use std::path::PathBuf;

const USAGE: &str = "usage: cuda-checkpoint (stand-in) --action lock|checkpoint|restore|unlock --pid PID [--timeout MS] [--device-map OLD=NEW,...] | --get-state --pid PID | --get-restore-tid --pid PID";

/// The name of the thread that marks a CUDA process (see the module doc).
const RESTORE_THREAD: &str = "cuda-restore";

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).map(String::as_str)
}

fn run(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let pid: i32 = flag(args, "--pid")
        .and_then(|p| p.parse().ok())
        .ok_or(format!("no --pid; {USAGE}"))?;
    let dir = std::env::var_os("CEDANA_TEST_CUDA_STATE_DIR")
        .map(PathBuf::from)
        .ok_or("the stand-in needs CEDANA_TEST_CUDA_STATE_DIR")?;
    let file = dir.join(innermost_pid(thread_group(pid)).to_string());
    let state = std::fs::read_to_string(&file).unwrap_or_else(|_| "running".into());
    let action = match flag(args, "--action") {
        Some(a) => a.to_string(),
        None if args.iter().any(|a| a == "--get-state") => "get-state".into(),
        None if args.iter().any(|a| a == "--get-restore-tid") => "get-restore-tid".into(),
        None => return Err(USAGE.into()),
    };
    if let Some(log) = std::env::var_os("CEDANA_TEST_CUDA_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("log: {e}"))?;
        let map = flag(args, "--device-map").map(|m| format!(" --device-map {m}"));
        writeln!(
            f,
            "cuda-checkpoint {action} {pid}{}",
            map.unwrap_or_default()
        )
        .map_err(|e| format!("log: {e}"))?;
    }
    if action == "get-restore-tid" {
        let tid = restore_thread(pid).ok_or(format!(
            "Could not get restore thread ID for process {pid}: CUDA_ERROR_NOT_INITIALIZED (not a CUDA process)"
        ))?;
        println!("{tid}");
        return Ok(());
    }
    if action == "get-state" {
        println!("{}", state.trim());
        return Ok(());
    }
    if std::env::var("CEDANA_TEST_CUDA_FAIL").ok().as_deref() == Some(action.as_str()) {
        return Err(format!(
            "Could not {action} process {pid}: CUDA_ERROR_NOT_SUPPORTED (stand-in told to fail)"
        ));
    }
    let next = match (action.as_str(), state.trim()) {
        ("lock", "running") => "locked",
        ("checkpoint", "locked") => "checkpointed",
        ("restore", "checkpointed") => "locked",
        ("unlock", "locked") => "running",
        ("lock" | "checkpoint" | "restore" | "unlock", now) => {
            return Err(format!(
                "Could not {action} process {pid}: CUDA_ERROR_ILLEGAL_STATE (it is {now})"
            ))
        }
        _ => return Err(USAGE.into()),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("state dir: {e}"))?;
    std::fs::write(&file, next).map_err(|e| format!("state: {e}"))
}

/// The TID of `pid`'s thread named [`RESTORE_THREAD`], if it has one.
fn restore_thread(pid: i32) -> Option<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == RESTORE_THREAD)
        })?
        .file_name()
        .to_str()?
        .parse()
        .ok()
}

/// The process a thread `tid` belongs to (`Tgid`); `tid` itself when that cannot be read.
/// CRIU's cuda_plugin asks for the state of the restore thread, not of the process.
fn thread_group(tid: i32) -> i32 {
    status_number(tid, "Tgid:").unwrap_or(tid)
}

/// `pid`'s PID in its innermost PID namespace (`NSpid`'s last field); `pid` itself when
/// that cannot be read (a process that is gone).
fn innermost_pid(pid: i32) -> i32 {
    status_number(pid, "NSpid:").unwrap_or(pid)
}

/// The last number on the line `field` of `/proc/PID/status`.
fn status_number(pid: i32, field: &str) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().last()?.parse().ok()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        // The real tool reports on stdout; so does the stand-in.
        println!("{e}");
        std::process::exit(1);
    }
}
