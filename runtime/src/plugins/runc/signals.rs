//! A foreground runtime's signal proxy: while `runtime restore` (without `--detach`)
//! runs in the foreground, the signals a user or supervisor sends us are forwarded to
//! it, and runc's own proxy passes them on to the container, as `runc run` does.
//!
//! Handlers stay installed once registered (tokio never removes them), so only callers
//! that wait in the foreground and then exit use this: `cedana-runc restore` and
//! `cedana restore runc --no-server`.

use std::process::ExitStatus;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::error::EngineError;

/// What runc's signal proxy forwards that a terminal or supervisor sends.
pub const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Starts `cmd` and waits for it, forwarding [`FORWARDED`] signals to it meanwhile.
pub async fn run_forwarding(cmd: std::process::Command) -> Result<ExitStatus, EngineError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut listeners = Vec::new();
    // Listen before spawning, so no signal between the two takes the default action.
    for sig in FORWARDED {
        let mut stream = signal(SignalKind::from_raw(sig as i32))
            .map_err(|e| EngineError::io(format!("listen for {sig}"), e))?;
        let tx = tx.clone();
        listeners.push(tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let mut child = tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|e| EngineError::io("start the runtime's restore", e))?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(sig) = rx.recv() => {
                // `id()` is None once the child is reaped, so a reused PID is never hit.
                if let Some(pid) = child.id() {
                    tracing::debug!(%sig, pid, "forwarding signal to the runtime");
                    let _ = kill(Pid::from_raw(pid as i32), sig);
                }
            }
        }
    };
    for l in listeners {
        l.abort();
    }
    status.map_err(|e| EngineError::io("wait for the runtime's restore", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_reaches_the_child() {
        // The child exits 42 on SIGUSR1 once its trap is set (it then creates `ready`).
        let dir = tempfile::tempdir().expect("tempdir");
        let ready = dir.path().join("ready");
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg("trap 'exit 42' USR1; touch \"$1\"; while true; do sleep 0.05; done")
            .arg("sh")
            .arg(&ready);
        let waiter = tokio::spawn(run_forwarding(cmd));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !ready.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "child never got ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Sent to ourselves: the proxy forwards it to the child.
        kill(Pid::this(), Signal::SIGUSR1).expect("kill");
        let status = tokio::time::timeout(std::time::Duration::from_secs(20), waiter)
            .await
            .expect("child exited")
            .expect("join")
            .expect("run");
        assert_eq!(status.code(), Some(42));
    }
}
