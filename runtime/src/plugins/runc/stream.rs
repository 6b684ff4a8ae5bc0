//! `--streams` for containers: the runtime runs `cedana-criu-relay` as its CRIU, which
//! runs CRIU's command line with `--stream` against our streamer (see `criu::relay`).
//! Here: pointing the runtime at the relay, and what a container must not have.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::error::RuncError;
use super::target::RuncTarget;
use crate::chain::OpResult;
use crate::criu::relay;
use crate::engine::Env;
use crate::error::EngineError;
use crate::oci;

/// runc's name for the descriptor list it keeps beside the images (read on restore).
const DESCRIPTORS: &str = "descriptors.json";

/// The target as the runtime runs it: with `--criu` set to the configured CRIU (when
/// not the default), and, when `streamed`, to the relay in front of it. Returns the
/// environment the runtime needs (empty unless streamed).
pub fn runtime_target(
    target: &RuncTarget,
    env: &Env,
    streamed: bool,
) -> Result<(RuncTarget, Vec<(OsString, OsString)>), EngineError> {
    let mut target = target.clone();
    if target.criu.is_none() && env.config.criu.binary_path != Path::new("criu") {
        target.criu = Some(env.criu()?.binary().to_path_buf());
    }
    let vars = if streamed {
        use_relay(&mut target, env.criu()?.binary().to_path_buf())?
    } else {
        Vec::new()
    };
    Ok((target, vars))
}

/// Makes `target` use the relay as its CRIU, with `real_criu` behind it (the target's own
/// `--criu` if it had one). Returns the environment the runtime must run with.
pub fn use_relay(
    target: &mut RuncTarget,
    real_criu: PathBuf,
) -> Result<Vec<(OsString, OsString)>, RuncError> {
    let relay = relay::locate().ok_or_else(|| RuncError::CannotStream {
        id: target.id.clone(),
        reason: format!(
            "{} is neither beside this binary nor on PATH; install it with the other \
             binaries (make install)",
            relay::BINARY_NAME
        ),
    })?;
    let real = target.criu.take().unwrap_or(real_criu);
    target.criu = Some(relay);
    Ok(relay::runtime_env(&real))
}

/// Why a container on a terminal cannot stream: CRIU hands the new pty master to the
/// runtime only over RPC, which a streamed (command line) CRIU cannot do.
const TERMINAL: &str = "it runs on a terminal (process.terminal)";

/// Whether the container of `bundle` runs on a terminal.
fn on_terminal(bundle: &Path) -> Result<bool, RuncError> {
    // runc checkpoints from its own state, not the bundle: a bundle whose spec is gone
    // says nothing about a terminal, while one that cannot be read is reported.
    match oci::read_bundle_spec(bundle) {
        Ok(spec) => Ok(oci::uses_terminal(&spec)),
        Err(e) if e.is_missing() => Ok(false),
        Err(e) => Err(RuncError::Bundle {
            path: bundle.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Refuses `--streams` for a container on a terminal.
pub fn refuse_terminal(id: &str, bundle: &Path) -> Result<(), RuncError> {
    if on_terminal(bundle)? {
        return Err(RuncError::CannotStream {
            id: id.into(),
            reason: format!("{TERMINAL}; checkpoint it without --streams"),
        });
    }
    Ok(())
}

/// Why a dump of the container of `bundle` without `--streams` falls back to the
/// archive, if it must.
pub fn fallback_reason(bundle: &Path) -> Option<String> {
    match on_terminal(bundle) {
        Ok(false) => None,
        Ok(true) => Some(TERMINAL.into()),
        Err(e) => Some(format!("whether it runs on a terminal is unknown: {e}")),
    }
}

/// The directory the runtime restores from: our serve socket and a copy of runc's
/// descriptor list, so the checkpoint itself stays untouched.
pub fn serve_dir(images: &Path, work: &Path) -> OpResult<PathBuf> {
    let dir = work.join("stream-images");
    fs::create_dir_all(&dir)
        .map_err(|e| EngineError::io(format!("create {}", dir.display()), e))?;
    let from = images.join(DESCRIPTORS);
    if from.is_file() {
        fs::copy(&from, dir.join(DESCRIPTORS))
            .map_err(|e| EngineError::io(format!("copy {}", from.display()), e))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_containers_are_refused_others_pass() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |terminal: bool| {
            let spec = crate::oci::tests::spec_json(terminal, "rootfs");
            fs::write(dir.path().join("config.json"), spec).expect("write");
        };
        write(true);
        let err = refuse_terminal("c1", dir.path()).expect_err("terminal");
        assert!(err.to_string().contains("without --streams"), "{err}");
        let why = fallback_reason(dir.path()).expect("falls back");
        assert!(why.contains("terminal"), "{why}");
        write(false);
        refuse_terminal("c1", dir.path()).expect("no terminal");
        assert_eq!(fallback_reason(dir.path()), None);
    }

    #[test]
    fn serve_dir_copies_runcs_descriptor_list_only() {
        let images = tempfile::tempdir().expect("images");
        let work = tempfile::tempdir().expect("work");
        fs::write(images.path().join(DESCRIPTORS), "[\"/dev/null\"]").expect("write");
        fs::write(images.path().join("shard-0.zst"), "x").expect("write");
        let dir = serve_dir(images.path(), work.path()).expect("serve dir");
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, [DESCRIPTORS]);
    }
}
