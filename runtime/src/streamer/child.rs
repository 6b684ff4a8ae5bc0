//! The streamer in a process of its own (`cedana-criu-relay stream-capture|stream-serve`).
//!
//! A capture or a serve runs a thread per image file, chunk buffers of megabytes and a
//! codec context per shard. Inside the daemon, twenty of them at once made its request
//! handlers wait (`ps` up to ~0.9 s): every thread of a process shares one memory map,
//! so each buffer mapped, unmapped or first touched, and each thread started, queues on
//! the same lock, whatever the threads' priorities. In a child the streamer's memory
//! traffic is its own; the daemon only waits for its answer.
//!
//! The parent speaks to the child over its stdin and stdout, a line each way: the child
//! says [`READY`] once CRIU's socket is bound, then waits for a command (`seal`,
//! `finish`, `abort`; end of input is `abort` for a capture, so a dead parent stops it),
//! and answers with one JSON [`Outcome`] line before it exits.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::capture::{Capture, CaptureConfig};
use super::index::{Codec, StreamIndex};
use super::serve::Serve;
use crate::criu::relay;

/// The relay's argument that runs a capture in it.
pub const CAPTURE_ROLE: &str = "stream-capture";
/// The relay's argument that runs a serve in it.
pub const SERVE_ROLE: &str = "stream-serve";
/// The child's first line: CRIU's socket is bound, CRIU may start.
const READY: &str = "ready";
/// Ends a capture while CRIU still holds its connection ([`Capture::seal`]).
pub(super) const SEAL: &str = "seal";
/// Waits for CRIU to finish ([`Capture::finish`], [`Serve::finish`]).
pub(super) const FINISH: &str = "finish";
/// Discards a capture ([`Capture::abort`]).
const ABORT: &str = "abort";

/// How a child's work ended.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome<T> {
    /// It succeeded, with this result.
    Done(T),
    /// It failed; `errno` keeps the cause a caller tells apart (a full disk).
    Failed {
        /// The error's text.
        message: String,
        /// Its OS error number, if it had one.
        errno: Option<i32>,
    },
    /// It was cancelled before CRIU connected, or aborted without a failure of its own.
    Cancelled,
}

impl<T> Outcome<T> {
    fn of(r: io::Result<T>) -> Self {
        match r {
            Ok(v) => Outcome::Done(v),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Outcome::Cancelled,
            Err(e) => Outcome::Failed {
                message: e.to_string(),
                errno: e.raw_os_error(),
            },
        }
    }
}

fn failed(message: String, errno: Option<i32>) -> io::Error {
    match errno {
        Some(n) => io::Error::from_raw_os_error(n),
        None => io::Error::other(message),
    }
}

/// The streamer binary to run, when it is installed beside this one (or on PATH).
pub(super) fn locate() -> Option<PathBuf> {
    relay::locate()
}

/// A streamer child, seen from its parent. Dropped unanswered, it is killed and reaped.
#[derive(Debug)]
pub(super) struct Child {
    proc: std::process::Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    answered: bool,
}

impl Child {
    /// Starts `bin ROLE ARGS...` and waits until its socket is bound.
    fn spawn(bin: &Path, role: &str, args: Vec<OsString>) -> io::Result<Child> {
        let mut proc = Command::new(bin)
            .arg(role)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot start {}: {e}", bin.display()))
            })?;
        let (stdin, stdout) = (proc.stdin.take(), proc.stdout.take());
        let stdout = stdout.ok_or_else(|| io::Error::other("streamer child without stdout"))?;
        let mut child = Child {
            proc,
            stdin,
            stdout: BufReader::new(stdout),
            answered: false,
        };
        let line = child.line()?;
        if line.trim_end() == READY {
            return Ok(child);
        }
        child.answered = true;
        let _ = child.proc.wait();
        Err(match serde_json::from_str::<Outcome<()>>(&line) {
            Ok(Outcome::Failed { message, errno }) => failed(message, errno),
            _ => io::Error::other(format!("the image streamer did not start: {line:?}")),
        })
    }

    /// Starts a capture in a child.
    pub(super) fn capture(bin: &Path, cfg: &CaptureConfig) -> io::Result<Child> {
        let codec = match cfg.codec {
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
        };
        let args = vec![
            cfg.dir.clone().into_os_string(),
            cfg.shards.to_string().into(),
            codec.into(),
            cfg.level.to_string().into(),
            cfg.chunk_bytes.to_string().into(),
        ];
        Child::spawn(bin, CAPTURE_ROLE, args)
    }

    /// Starts serving the checkpoint in `images` on a socket in `socket_dir`, in a child.
    pub(super) fn serve(
        bin: &Path,
        socket_dir: &Path,
        images: &Path,
        decoders: usize,
    ) -> io::Result<Child> {
        let args = vec![
            socket_dir.as_os_str().to_owned(),
            images.as_os_str().to_owned(),
            decoders.to_string().into(),
        ];
        Child::spawn(bin, SERVE_ROLE, args)
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            self.answered = true;
            let status = self.proc.wait()?;
            return Err(io::Error::other(format!(
                "the image streamer process ended without an answer ({status})"
            )));
        }
        Ok(line)
    }

    fn outcome<T: DeserializeOwned>(&mut self, command: &str) -> io::Result<Outcome<T>> {
        if let Some(mut stdin) = self.stdin.take() {
            // A child that already ended answers (or not) on stdout: read that.
            let _ = writeln!(stdin, "{command}");
        }
        let line = self.line()?;
        self.answered = true;
        self.proc.wait()?;
        serde_json::from_str(&line).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the image streamer answered {line:?}: {e}"),
            )
        })
    }

    /// Sends `command` and returns the child's result.
    pub(super) fn ask<T: DeserializeOwned>(mut self, command: &str) -> io::Result<T> {
        match self.outcome(command)? {
            Outcome::Done(v) => Ok(v),
            Outcome::Failed { message, errno } => Err(failed(message, errno)),
            Outcome::Cancelled => Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the image streamer was cancelled",
            )),
        }
    }

    /// Discards the child's work; returns its own failure, if it had one.
    pub(super) fn abort(mut self) -> Option<io::Error> {
        match self.outcome::<()>(ABORT) {
            Ok(Outcome::Failed { message, errno }) => Some(failed(message, errno)),
            Ok(_) => None,
            Err(e) => Some(e),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.proc.kill();
            let _ = self.proc.wait();
        }
    }
}

/// Runs a streamer role in this process (`cedana-criu-relay ROLE ARGS...`); returns the
/// exit code. Usage errors go to stderr with code 2.
pub fn main(role: &str, args: &[String]) -> i32 {
    let started = match (role, args) {
        (CAPTURE_ROLE, [dir, shards, codec, level, chunk]) => {
            capture_config(dir, shards, codec, level, chunk).map(|cfg| {
                let running = Capture::in_process(cfg);
                run(running, |c, command| match command {
                    SEAL => Outcome::of(c.seal()).map_done(),
                    FINISH => Outcome::of(c.finish()).map_done(),
                    _ => match c.abort() {
                        Some(e) => Outcome::of(Err::<(), _>(e)).map_done(),
                        None => Outcome::Cancelled,
                    },
                })
            })
        }
        (SERVE_ROLE, [socket_dir, images, decoders]) => decoders
            .parse::<usize>()
            .map_err(|e| format!("decoders {decoders:?}: {e}"))
            .map(|decoders| {
                let images = Path::new(images);
                let running = StreamIndex::load(images).and_then(|index| {
                    Serve::in_process(Path::new(socket_dir), images, index, decoders)
                });
                // Whatever is asked (or a parent gone), a serve ends by finishing.
                run(running, |s, _| Outcome::of(s.finish()).map_done())
            }),
        _ => Err(format!(
            "unknown streamer role or arguments: {role} {args:?}"
        )),
    };
    match started {
        Ok(code) => code,
        Err(usage) => {
            eprintln!("cedana-criu-relay: {usage}");
            2
        }
    }
}

impl<T: Serialize> Outcome<T> {
    /// The same outcome as JSON, its result as a JSON value.
    fn map_done(self) -> Outcome<serde_json::Value> {
        match self {
            Outcome::Done(v) => Outcome::Done(serde_json::to_value(v).unwrap_or_default()),
            Outcome::Failed { message, errno } => Outcome::Failed { message, errno },
            Outcome::Cancelled => Outcome::Cancelled,
        }
    }
}

fn capture_config(
    dir: &str,
    shards: &str,
    codec: &str,
    level: &str,
    chunk: &str,
) -> Result<CaptureConfig, String> {
    let num = |what: &str, v: &str| v.parse::<usize>().map_err(|e| format!("{what} {v:?}: {e}"));
    Ok(CaptureConfig {
        dir: PathBuf::from(dir),
        shards: num("shards", shards)?,
        codec: match codec {
            "zstd" => Codec::Zstd,
            "lz4" => Codec::Lz4,
            other => return Err(format!("unknown codec {other:?}")),
        },
        level: level.parse().map_err(|e| format!("level {level:?}: {e}"))?,
        chunk_bytes: num("chunk size", chunk)?,
        sink: None,
    })
}

/// Says [`READY`] once `started` is running, waits for the parent's command (end of
/// input reads as [`ABORT`]), and answers with what `answer` makes of it.
fn run<S, T: Serialize>(started: io::Result<S>, answer: impl FnOnce(S, &str) -> Outcome<T>) -> i32 {
    let mut out = io::stdout().lock();
    let running = match started {
        Ok(s) => s,
        Err(e) => {
            let _ = say(&mut out, &Outcome::<()>::of(Err(e)));
            return 1;
        }
    };
    if writeln!(out, "{READY}").and_then(|()| out.flush()).is_err() {
        return 1;
    }
    let mut command = String::new();
    if io::stdin().lock().read_line(&mut command).unwrap_or(0) == 0 {
        command = ABORT.into();
    }
    let outcome = answer(running, command.trim());
    match say(&mut out, &outcome) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn say<T: Serialize>(out: &mut impl Write, outcome: &Outcome<T>) -> io::Result<()> {
    let line = serde_json::to_string(outcome).map_err(io::Error::other)?;
    writeln!(out, "{line}")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_its_errno_across_the_process_boundary() {
        let full = Outcome::<()>::of(Err(io::Error::from_raw_os_error(libc::ENOSPC)));
        let line = serde_json::to_string(&full).expect("json");
        match serde_json::from_str::<Outcome<()>>(&line).expect("parse") {
            Outcome::Failed { message, errno } => {
                assert_eq!(
                    failed(message, errno).raw_os_error(),
                    Some(libc::ENOSPC),
                    "{line}"
                );
            }
            other => panic!("not a failure: {other:?}"),
        }
        let cancelled = Outcome::<()>::of(Err(io::ErrorKind::Interrupted.into()));
        assert!(matches!(cancelled, Outcome::Cancelled));
    }

    #[test]
    fn bad_arguments_are_refused_with_a_usage_code() {
        assert_eq!(main("stream-capture", &["/x".into()]), 2);
        assert_eq!(main("no-such-role", &[]), 2);
        let args: Vec<String> = ["/x", "2", "brotli", "3", "4096"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(main("stream-capture", &args), 2);
    }
}
