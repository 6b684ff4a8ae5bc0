//! runc's command line as `cedana-runc` needs it: the global flags, the subcommand, and
//! for `checkpoint`/`restore` the flags runc 1.1 defines. Anything else (another
//! subcommand, `--help`, arguments we cannot place) is passed through untouched.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::plugins::runc::RuncTarget;

/// Global flags taking a value.
const GLOBAL_VALUE: &[&str] = &["root", "log", "log-format", "criu", "rootless"];
/// Global boolean flags.
const GLOBAL_BOOL: &[&str] = &["debug", "systemd-cgroup"];
/// `checkpoint` flags taking a value.
const CHECKPOINT_VALUE: &[&str] = &[
    "image-path",
    "work-path",
    "parent-path",
    "manage-cgroups-mode",
    "empty-ns",
    "status-fd",
    "page-server",
];
/// `restore` flags taking a value.
const RESTORE_VALUE: &[&str] = &[
    "console-socket",
    "image-path",
    "work-path",
    "manage-cgroups-mode",
    "bundle",
    "b",
    "pid-file",
    "empty-ns",
    "lsm-profile",
    "lsm-mount-context",
];

/// A parsed `checkpoint` or `restore` call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Call {
    /// The container and runc's global flags.
    pub target: RuncTarget,
    /// `--image-path` (runc's default: `./checkpoint`).
    pub image_path: Option<PathBuf>,
    /// `--work-path`.
    pub work_path: Option<PathBuf>,
    /// Boolean flags we interpret, by name (`leave-running`, `tcp-established`, ...).
    pub bools: Vec<String>,
    /// `--bundle`/`-b` (restore).
    pub bundle: Option<PathBuf>,
    /// `--pid-file` (restore).
    pub pid_file: Option<PathBuf>,
    /// `--console-socket` (restore).
    pub console_socket: Option<PathBuf>,
    /// Flags passed through to the runtime untouched, in their original form.
    pub extra: Vec<String>,
}

impl Call {
    /// Whether boolean flag `name` was given.
    pub fn has(&self, name: &str) -> bool {
        self.bools.iter().any(|b| b == name)
    }
}

/// What to do with a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// exec the real runtime with the identical arguments.
    PassThrough,
    /// `checkpoint` through the engine.
    Checkpoint(Call),
    /// `restore` through the engine.
    Restore(Call),
}

/// Booleans we interpret; other boolean flags are passed through.
const INTERPRETED_BOOLS: &[&str] = &[
    "leave-running",
    "tcp-established",
    "ext-unix-sk",
    "shell-job",
    "file-locks",
    "detach",
    "d",
    "no-pivot",
    "no-subreaper",
];

/// `--name=value`, `-name value`: (name, inline value).
fn split_flag(arg: &str) -> Option<(&str, Option<&str>)> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    if body.is_empty() {
        return None;
    }
    Some(match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    })
}

/// Parses runc's arguments (without argv\[0\]).
pub fn parse(args: &[OsString]) -> Invocation {
    let Some(args) = args
        .iter()
        .map(|a| a.to_str().map(str::to_string))
        .collect::<Option<Vec<String>>>()
    else {
        return Invocation::PassThrough;
    };
    let mut target = RuncTarget::default();
    let mut i = 0;
    // Global flags up to the subcommand.
    let sub = loop {
        let Some(arg) = args.get(i) else {
            return Invocation::PassThrough;
        };
        let Some((name, inline)) = split_flag(arg) else {
            break arg.as_str();
        };
        let value = if GLOBAL_VALUE.contains(&name) {
            match inline {
                Some(v) => v.to_string(),
                None => {
                    i += 1;
                    match args.get(i) {
                        Some(v) => v.clone(),
                        None => return Invocation::PassThrough,
                    }
                }
            }
        } else if GLOBAL_BOOL.contains(&name) && inline.is_none() {
            String::new()
        } else {
            return Invocation::PassThrough; // --help, --version, or unknown: runc decides
        };
        match name {
            "root" => target.root = Some(value.into()),
            "log" => target.log = Some(value.into()),
            "log-format" => target.log_format = Some(value),
            "criu" => target.criu = Some(value.into()),
            "debug" => target.debug = true,
            "systemd-cgroup" => target.systemd_cgroup = true,
            other => target.extra_global_args.push(format!("--{other}={value}")),
        }
        i += 1;
    };
    let restore = match sub {
        "checkpoint" => false,
        "restore" => true,
        _ => return Invocation::PassThrough,
    };
    let value_flags = if restore {
        RESTORE_VALUE
    } else {
        CHECKPOINT_VALUE
    };
    let mut call = Call {
        target,
        ..Default::default()
    };
    let mut positionals = Vec::new();
    i += 1;
    while let Some(arg) = args.get(i) {
        i += 1;
        let Some((name, inline)) = split_flag(arg) else {
            positionals.push(arg.clone());
            continue;
        };
        if name == "help" || name == "h" {
            return Invocation::PassThrough;
        }
        if value_flags.contains(&name) {
            let value = match inline {
                Some(v) => v.to_string(),
                None => match args.get(i) {
                    Some(v) => {
                        i += 1;
                        v.clone()
                    }
                    None => return Invocation::PassThrough,
                },
            };
            match name {
                "image-path" => call.image_path = Some(value.into()),
                "work-path" => call.work_path = Some(value.into()),
                "bundle" | "b" => call.bundle = Some(value.into()),
                "pid-file" => call.pid_file = Some(value.into()),
                "console-socket" => call.console_socket = Some(value.into()),
                _ => call.extra.push(format!("--{name}={value}")),
            }
        } else if INTERPRETED_BOOLS.contains(&name) && matches!(inline, None | Some("true")) {
            let name = if name == "d" { "detach" } else { name };
            call.bools.push(name.to_string());
        } else {
            call.extra.push(arg.clone());
        }
    }
    // runc takes exactly one container id; anything else is runc's to report.
    if positionals.len() != 1 {
        return Invocation::PassThrough;
    }
    call.target.id = positionals.remove(0);
    if restore {
        Invocation::Restore(call)
    } else {
        Invocation::Checkpoint(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Invocation {
        let v: Vec<OsString> = s.split_whitespace().map(OsString::from).collect();
        parse(&v)
    }

    #[test]
    fn other_commands_pass_through() {
        for s in [
            "state c1",
            "--root /r list",
            "run -d --bundle /b c1",
            "--version",
            "checkpoint --help",
            "",
            "--root /r --bogus checkpoint c1",
            "checkpoint",
            "checkpoint a b",
            "exec --preserve-fds 2 c1 ls",
        ] {
            assert_eq!(p(s), Invocation::PassThrough, "{s}");
        }
    }

    #[test]
    fn containerd_shim_checkpoint() {
        let Invocation::Checkpoint(c) = p(
            "--root /run/containerd/runc/k8s.io --log /s/log.json --log-format json checkpoint \
             --image-path /img --work-path /work --leave-running --manage-cgroups-mode soft c1",
        ) else {
            panic!("not a checkpoint");
        };
        assert_eq!(c.target.id, "c1");
        assert_eq!(
            c.target.root.as_deref(),
            Some(std::path::Path::new("/run/containerd/runc/k8s.io"))
        );
        assert_eq!(c.target.log_format.as_deref(), Some("json"));
        assert_eq!(c.image_path, Some("/img".into()));
        assert_eq!(c.work_path, Some("/work".into()));
        assert!(c.has("leave-running"));
        assert_eq!(c.extra, ["--manage-cgroups-mode=soft"]);
    }

    #[test]
    fn containerd_shim_restore() {
        let Invocation::Restore(c) = p(
            "--root /r --log /l --log-format=json restore -d --pid-file /p --no-pivot \
             --image-path=/img --work-path /w --bundle /b --auto-dedup c2",
        ) else {
            panic!("not a restore");
        };
        assert_eq!(c.target.id, "c2");
        assert!(c.has("detach") && c.has("no-pivot"));
        assert_eq!(c.pid_file, Some("/p".into()));
        assert_eq!(c.bundle, Some("/b".into()));
        assert_eq!(c.image_path, Some("/img".into()));
        assert_eq!(c.extra, ["--auto-dedup"]);
    }
}
