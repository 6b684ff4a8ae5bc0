//! `cedana k8s-helper install|uninstall`: the node DaemonSet's entry point.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use super::Ctx;
use crate::cli::{K8sHelperArgs, K8sHelperCmd};
use crate::k8s::install::{self, Options};

/// Runs install or uninstall, then restarts containerd or says how.
pub fn run(ctx: &Ctx, cmd: K8sHelperCmd) -> anyhow::Result<i32> {
    let (args, report) = match cmd {
        K8sHelperCmd::Install(args) => {
            let report = install::install(&options(&args)?)?;
            (args, report)
        }
        K8sHelperCmd::Uninstall(args) => {
            let report = install::uninstall(&options(&args)?)?;
            (args, report)
        }
    };
    let restart = restart_command(&args.host_root);
    if ctx.json {
        crate::output::print_json(&serde_json::json!({ "done": report }));
    } else {
        for line in &report {
            crate::outln!("{line}");
        }
    }
    if args.restart {
        let status = Command::new(&restart[0])
            .args(&restart[1..])
            .status()
            .with_context(|| format!("cannot run `{}`", restart.join(" ")))?;
        if !status.success() {
            bail!(
                "`{}` failed ({status}); restart containerd by hand",
                restart.join(" ")
            );
        }
        eprintln!("restarted containerd");
    } else {
        eprintln!(
            "containerd reads its config at start: restart it (`{}`), or pass --restart",
            restart.join(" ")
        );
    }
    Ok(0)
}

/// The options, with our binaries taken from next to this one.
fn options(args: &K8sHelperArgs) -> anyhow::Result<Options> {
    let exe = std::env::current_exe().context("cannot find this binary's path")?;
    let source_dir = exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(Options {
        host_root: args.host_root.clone(),
        containerd_config: args.containerd_config.clone(),
        bin_dir: args.bin_dir.clone(),
        source_dir,
    })
}

/// `systemctl restart containerd`, entered into the host's mount namespace (PID 1's)
/// when the host's root is mounted elsewhere, as in the DaemonSet.
fn restart_command(host_root: &Path) -> Vec<String> {
    let mut cmd = Vec::new();
    if host_root != Path::new("/") {
        cmd.extend(["nsenter", "--target", "1", "--mount", "--"].map(String::from));
    }
    cmd.extend(["systemctl", "restart", "containerd"].map(String::from));
    cmd
}
