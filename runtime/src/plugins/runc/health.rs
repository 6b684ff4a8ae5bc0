//! Health of the runc plugin: the runtime binary, its version, the CRIU it will use, and
//! the stream relay (`--streams` for containers).

use std::path::Path;

use super::runtime::{resolve_binary, Runtime};
use super::target::RuncTarget;
use crate::criu::{relay, Criu, MIN_VERSION};
use crate::engine::Env;
use crate::plugins::{Health, HealthCheck};

fn check(name: &str, health: Health, detail: impl Into<String>, fix: Option<&str>) -> HealthCheck {
    HealthCheck {
        plugin: "runc".into(),
        name: name.into(),
        health,
        detail: detail.into(),
        fix: fix.map(str::to_string),
    }
}

/// Checks the configured runtime and the CRIU it runs.
pub fn health(env: &Env) -> Vec<HealthCheck> {
    let mut out = Vec::new();
    let configured = &env.config.runc.binary_path;
    match resolve_binary(configured) {
        Ok(bin) => {
            let rt = Runtime::new(&RuncTarget::default(), &bin);
            let version = rt
                .as_ref()
                .ok()
                .and_then(|r| r.version().ok())
                .unwrap_or_default();
            if version.is_empty() {
                out.push(check(
                    "runtime binary",
                    Health::Fail,
                    format!("{} does not answer --version", bin.display()),
                    Some("check the runtime runs: `runc --version`"),
                ));
            } else {
                out.push(check(
                    "runtime binary",
                    Health::Ok,
                    format!("{} ({version})", bin.display()),
                    None,
                ));
            }
        }
        Err(e) => out.push(check(
            "runtime binary",
            Health::Fail,
            e.to_string(),
            Some("apt-get install runc, or set runc.binary_path"),
        )),
    }
    // runc runs `criu` from PATH unless told otherwise; we pass --criu when
    // criu.binary_path is not the default.
    let criu_path = if env.config.criu.binary_path == Path::new("criu") {
        Path::new("criu")
    } else {
        env.config.criu.binary_path.as_path()
    };
    match Criu::locate(criu_path).and_then(|c| c.require(MIN_VERSION).map(|v| (c, v))) {
        Ok((c, v)) => out.push(check(
            "criu for the runtime",
            Health::Ok,
            format!("{} {v}", c.binary().display()),
            None,
        )),
        Err(e) => out.push(check(
            "criu for the runtime",
            Health::Fail,
            e.to_string(),
            Some("install CRIU 4.1.1 on PATH (`make deps`) or set criu.binary_path"),
        )),
    }
    out.push(match relay::locate() {
        Some(p) => check(
            "stream relay",
            Health::Ok,
            format!("{} (--streams for containers)", p.display()),
            None,
        ),
        None => check(
            "stream relay",
            Health::Warn,
            format!(
                "{} not found beside this binary or on PATH: containers cannot be dumped \
                    with --streams",
                relay::BINARY_NAME
            ),
            Some("install it with the other binaries (`make install`)"),
        ),
    });
    out
}
