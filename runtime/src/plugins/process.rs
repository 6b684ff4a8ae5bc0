//! The built-in process plugin: checkpoint/restore of plain process trees, and the host
//! checks everything else relies on (CRIU present, recent, and passing `criu check`).

use crate::chain::Chain;
use crate::criu::{Criu, MIN_VERSION as MIN_CRIU_VERSION};
use crate::engine::{dump, restore, DumpCtx, DumpResponse, Env, RestoreCtx, RestoreResponse};
use crate::host;
use crate::image::metadata::CheckpointKind;
use crate::plugins::{Feature, Health, HealthCheck, Plugin};

/// Plain processes and managed jobs.
pub struct ProcessPlugin;

fn check(name: &str, health: Health, detail: impl Into<String>, fix: Option<&str>) -> HealthCheck {
    HealthCheck {
        plugin: "process".into(),
        name: name.into(),
        health,
        detail: detail.into(),
        fix: fix.map(str::to_string),
    }
}

/// Optional kernel features (`criu check --all`, FEATURE_CHECK): what works without them.
fn kernel_features(criu: &Criu) -> Vec<HealthCheck> {
    let mut out = Vec::new();
    match criu.feature_check() {
        Ok(f) => {
            let line = |name: &str, on: bool, off_means: &str| {
                if on {
                    check(name, Health::Ok, "available", None)
                } else {
                    check(
                        name,
                        Health::Warn,
                        format!("not available: {off_means}"),
                        None,
                    )
                }
            };
            // Memory tracking (soft-dirty bits) only serves incremental dumps, which
            // cedana does not offer: a warning about it would be noise.
            out.push(line(
                "kernel: lazy pages",
                f.lazy_pages,
                "no post-copy restore (userfaultfd)",
            ));
        }
        Err(e) => out.push(check("kernel features", Health::Warn, e.to_string(), None)),
    }
    out
}

/// What a failed `criu check` means: as non-root it always fails, for want of
/// privileges, whatever CRIU's version (the version check above covers old CRIUs).
fn criu_check_failure(root: bool, output: &str) -> (String, &'static str) {
    if !root {
        return (
            "needs root (CRIU checks kernel features that only root may use)".into(),
            "run `cedana check` as root",
        );
    }
    let last = output.lines().last().unwrap_or("failed").to_string();
    (
        last,
        "run `criu check` as root for details: a kernel feature CRIU needs is missing",
    )
}

impl Plugin for ProcessPlugin {
    fn name(&self) -> &'static str {
        "process"
    }

    fn kind(&self) -> Option<CheckpointKind> {
        Some(CheckpointKind::PROCESS)
    }

    fn dump_route(&self) -> Option<Chain<DumpCtx, DumpResponse>> {
        Some(dump::chain())
    }

    fn restore_route(&self) -> Option<Chain<RestoreCtx, RestoreResponse>> {
        Some(restore::chain())
    }

    fn features(&self) -> Vec<Feature> {
        let f = |feature: &str, detail: &str| Feature {
            plugin: "process".into(),
            feature: feature.into(),
            detail: detail.into(),
        };
        vec![
            f(
                "dump handler",
                "CRIU dump over RPC (swrk) of a process tree",
            ),
            f(
                "restore handler",
                "CRIU restore over RPC (swrk); the caller becomes the parent",
            ),
            f(
                "run handler",
                "start a process in its own session with output to a log",
            ),
            f("manage handler", "adopt an existing process as a job"),
            f(
                "health checks",
                "CRIU binary, version, `criu check`, iptables-restore",
            ),
        ]
    }

    fn health(&self, env: &Env) -> Vec<HealthCheck> {
        let mut out = Vec::new();
        if !host::is_root() {
            out.push(check(
                "privileges",
                Health::Fail,
                "not running as root",
                Some("run cedana as root: CRIU needs CAP_SYS_ADMIN and friends"),
            ));
        }
        let criu = match Criu::locate(&env.config.criu.binary_path) {
            Ok(c) => {
                out.push(check(
                    "criu binary",
                    Health::Ok,
                    c.binary().display().to_string(),
                    None,
                ));
                c
            }
            Err(e) => {
                out.push(check(
                    "criu binary",
                    Health::Fail,
                    e.to_string(),
                    Some("run `make deps` (builds CRIU 4.1.1) or set criu.binary_path"),
                ));
                return out;
            }
        };
        match criu.version() {
            Ok(v) if v.require(MIN_CRIU_VERSION).is_ok() => {
                out.push(check("criu version", Health::Ok, v.to_string(), None))
            }
            Ok(v) => out.push(check(
                "criu version",
                Health::Fail,
                format!(
                    "{v} is older than {}.{}.{}",
                    MIN_CRIU_VERSION.0, MIN_CRIU_VERSION.1, MIN_CRIU_VERSION.2
                ),
                Some("install CRIU 4.1.1 (`make deps`)"),
            )),
            Err(e) => out.push(check(
                "criu version",
                Health::Fail,
                e.to_string(),
                Some("check that the CRIU binary runs: `criu --version`"),
            )),
        }
        match criu.check() {
            Ok(r) if r.ok => out.push(check("criu check", Health::Ok, "looks good", None)),
            Ok(r) => {
                let (detail, fix) = criu_check_failure(host::is_root(), &r.output);
                out.push(check("criu check", Health::Fail, detail, Some(fix)));
            }
            Err(e) => out.push(check("criu check", Health::Fail, e.to_string(), None)),
        }
        out.extend(kernel_features(&criu));
        if host::find_executable("iptables-restore".as_ref()).is_some() {
            out.push(check(
                "iptables-restore",
                Health::Ok,
                "found (TCP connections can be locked)",
                None,
            ));
        } else {
            out.push(check(
                "iptables-restore",
                Health::Warn,
                "missing: processes with TCP connections cannot be checkpointed",
                Some("apt-get install iptables"),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_check_as_non_root_says_needs_root_not_an_old_criu() {
        let (detail, fix) = criu_check_failure(false, "Error (criu/cr-check.c): must be root");
        assert!(detail.contains("needs root"), "{detail}");
        assert!(!fix.contains("3.17") && !detail.contains("3.17"), "{fix}");
        let (detail, fix) = criu_check_failure(true, "line\nLooks bad: no soft-dirty");
        assert_eq!(detail, "Looks bad: no soft-dirty");
        assert!(!fix.contains("3.17"), "{fix}");
    }
}
