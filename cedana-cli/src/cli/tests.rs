//! The CLI surface: subcommand names (a typo would ship), and flags reaching the engine.

use clap::{CommandFactory, Parser};

use super::*;
use crate::commands::{dump, jobs, restore};
use crate::daemon::convert;
use crate::proto::target::Target;

fn names(cmd: &clap::Command) -> Vec<String> {
    let mut v: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    v.sort();
    v
}

fn sub<'a>(cmd: &'a clap::Command, name: &str) -> &'a clap::Command {
    cmd.find_subcommand(name)
        .unwrap_or_else(|| panic!("no subcommand {name}"))
}

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_args(std::iter::once("cedana").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[test]
fn subcommand_names() {
    Cli::command().debug_assert();
    let cli = Cli::command();
    assert_eq!(
        names(&cli),
        [
            "__complete",
            "attach",
            "check",
            "checkpoint",
            "checkpoints",
            "completion",
            "daemon",
            "delete",
            "dump",
            "features",
            "freeze",
            "inspect",
            "job",
            "k8s-helper",
            "kill",
            "manage",
            "plugin",
            "ps",
            "query",
            "restore",
            "run",
            "unfreeze",
            "version"
        ]
    );
    assert_eq!(names(sub(&cli, "daemon")), ["check", "start", "stop"]);
    assert_eq!(
        names(sub(&cli, "dump")),
        ["containerd", "job", "k8s", "kata", "process", "runc"]
    );
    assert_eq!(
        names(sub(&cli, "restore")),
        ["containerd", "job", "kata", "process", "runc"]
    );
    assert_eq!(names(sub(&cli, "query")), ["k8s", "kata", "runc"]);
    assert_eq!(names(sub(&cli, "run")), ["containerd", "process", "runc"]);
    assert_eq!(
        names(sub(&cli, "manage")),
        ["containerd", "process", "runc"]
    );
    assert_eq!(names(sub(&cli, "freeze")), ["job", "process"]);
    assert_eq!(
        names(sub(&cli, "job")),
        ["attach", "checkpoint", "delete", "inspect", "kill", "list"]
    );
    assert_eq!(
        names(sub(&cli, "checkpoint")),
        ["delete", "inspect", "list"]
    );
    assert_eq!(
        names(sub(&cli, "plugin")),
        ["features", "install", "list", "remove"]
    );
}

#[test]
fn job_kill_has_a_grace_period() {
    let Command::Job(JobCmd::Kill(k)) = parse(&["job", "kill", "j1"]).command else {
        panic!("not job kill");
    };
    assert_eq!((k.signal.as_str(), k.timeout), ("TERM", 10));
    let Command::Job(JobCmd::Kill(k)) =
        parse(&["job", "kill", "j1", "--signal", "INT", "--timeout", "3"]).command
    else {
        panic!("not job kill");
    };
    assert_eq!((k.signal.as_str(), k.timeout), ("INT", 3));
}

#[test]
fn aliases_parse() {
    assert!(matches!(parse(&["jobs"]).command, Command::Ps));
    assert!(matches!(
        parse(&["exec", "process", "--", "true"]).command,
        Command::Run(_)
    ));
    assert!(matches!(
        parse(&["job", "checkpoint", "list", "j1"]).command,
        Command::Job(_)
    ));
}

#[test]
fn global_flags() {
    let cli = parse(&[
        "ps",
        "--set",
        "db_path=/tmp/db",
        "--address",
        "/tmp/c.sock",
        "--json",
        "--config-dir",
        "/tmp/cfg",
    ]);
    assert!(cli.global.json);
    assert_eq!(
        cli.global.config_dir.as_deref(),
        Some(std::path::Path::new("/tmp/cfg"))
    );
    assert_eq!(
        cli.global.overrides(),
        [
            ("db_path".to_string(), "/tmp/db".to_string()),
            ("address".into(), "/tmp/c.sock".into())
        ]
    );
    assert!(Cli::try_parse_args(["cedana", "ps", "--set", "novalue"]).is_err());
}

/// clap drops a global's earlier values when it is given again after the subcommand;
/// every `--set` must count, in the order given, so the last one of a key wins.
#[test]
fn repeated_set_accumulates_across_subcommands() {
    let cli = parse(&[
        "--set", "a=1", "--set", "b=2", "dump", "--set", "c=3", "process", "42", "--set", "d=4",
        "--set", "a=5",
    ]);
    let keys: Vec<_> = cli
        .global
        .overrides()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert_eq!(keys, ["a=1", "b=2", "c=3", "d=4", "a=5"]);
    Cli::command_with_set().debug_assert();
}

#[test]
fn run_flags_and_trailing_command() {
    let cli = parse(&[
        "run", "process", "--jid", "j1", "--out", "/tmp/l", "--env", "A=1", "--cwd", "/srv", "--",
        "sh", "-c", "echo --x",
    ]);
    let Command::Run(RunCmd::Process(args)) = cli.command else {
        panic!()
    };
    let req = crate::commands::run::run_request(&args);
    assert_eq!(req.jid.as_deref(), Some("j1"));
    assert_eq!(req.program, "sh");
    assert_eq!(req.args, ["-c", "echo --x"]);
    assert_eq!(req.cwd.as_deref(), Some("/srv"));
    assert_eq!(req.log_path.as_deref(), Some("/tmp/l"));
    assert_eq!(req.env[0].key, "A");
}

#[test]
fn run_runc_flags() {
    let cli = parse(&[
        "run", "runc", "--bundle", "/b", "--id", "c1", "--root", "/r", "--jid", "j", "--out", "/l",
    ]);
    let Command::Run(RunCmd::Runc(args)) = cli.command else {
        panic!()
    };
    let req = crate::commands::run::run_runc_request(&args);
    let r = req.runc.expect("runc");
    let c = r.container.expect("container");
    assert_eq!((c.id.as_str(), c.root.as_deref()), ("c1", Some("/r")));
    assert_eq!(r.bundle, "/b");
    assert_eq!(req.jid.as_deref(), Some("j"));
    assert_eq!(req.log_path.as_deref(), Some("/l"));
    assert!(Cli::try_parse_from(["cedana", "run", "runc", "--id", "c1"]).is_err());
}

#[test]
fn dump_flags_map_to_the_engine_request() {
    let cli = parse(&[
        "dump",
        "process",
        "42",
        "--dir",
        "/ck",
        "--name",
        "n1",
        "--compression",
        "lz4",
        "--leave-running",
        "--tcp-established",
        "--file-locks",
        "--external",
        "mnt[]:m",
        "--external",
        "tty[1:2]",
        "--shell-job",
        "--link-remap",
        "--no-server",
    ]);
    let Command::Dump(DumpCmd::Process {
        pid,
        args,
        no_server,
    }) = cli.command
    else {
        panic!()
    };
    assert!(no_server);
    let req = dump::dump_request(Target::Pid(pid), &args).expect("request");
    let engine = convert::dump_request(&req, pid).expect("a valid request");
    assert_eq!(engine.pid, 42);
    assert_eq!(engine.dir.as_deref(), Some(std::path::Path::new("/ck")));
    assert_eq!(engine.name.as_deref(), Some("n1"));
    assert_eq!(engine.compression.map(|c| c.as_str()), Some("lz4"));
    assert_eq!(engine.leave_running, Some(true));
    assert_eq!(engine.flags.tcp_established, Some(true));
    assert_eq!(engine.flags.tcp_close, None);
    assert_eq!(engine.flags.file_locks, Some(true));
    assert_eq!(engine.flags.shell_job, Some(true));
    assert_eq!(engine.flags.link_remap, Some(true));
    assert_eq!(engine.flags.external, ["mnt[]:m", "tty[1:2]"]);
}

#[test]
fn unset_dump_flags_let_the_engine_decide() {
    let Command::Dump(DumpCmd::Job { jid, args }) = parse(&["dump", "job", "j1"]).command else {
        panic!()
    };
    let req = dump::dump_request(Target::Jid(jid), &args).expect("request");
    let engine = convert::dump_request(&req, 7).expect("a valid request");
    assert_eq!(engine.leave_running, None);
    assert_eq!(engine.compression, None);
    assert_eq!(engine.flags, Default::default());
    assert!(Cli::try_parse_from(["cedana", "dump", "job", "j1", "--no-server"]).is_err());
    assert!(
        Cli::try_parse_from(["cedana", "dump", "process", "1", "--compression", "xz"]).is_err()
    );
}

#[test]
fn lazy_reaches_the_engine_request() {
    for (argv, lazy) in [
        (
            &["restore", "process", "--path", "/ck/a", "--lazy"][..],
            true,
        ),
        (&["restore", "job", "j1", "--lazy"][..], true),
        (&["restore", "process", "--path", "/ck/a"][..], false),
    ] {
        let (jid, path, args) = match parse(argv).command {
            Command::Restore(RestoreCmd::Process { path, args, .. }) => (None, Some(path), args),
            Command::Restore(RestoreCmd::Job { jid, path, args }) => (Some(jid), path, args),
            _ => panic!("{argv:?}"),
        };
        let req = restore::restore_request(jid, path.as_deref(), &args).expect("request");
        assert_eq!(req.lazy, lazy, "{argv:?}");
        assert_eq!(convert::restore_request(&req, "/ck/a".into()).lazy, lazy);
    }
}

#[test]
fn gpu_map_reaches_the_engine_request() {
    let (a, b) = (
        "GPU-aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa",
        "GPU-bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb",
    );
    let map = format!("{a}={b}");
    let argv = ["restore", "job", "j1", "--gpu-map", &map];
    let Command::Restore(RestoreCmd::Job { jid, path, args }) = parse(&argv).command else {
        panic!("{argv:?}");
    };
    let req = restore::restore_request(Some(jid), path.as_deref(), &args).expect("request");
    let engine = convert::restore_request(&req, "/ck/a".into());
    assert_eq!(engine.gpu_map, [(a.to_string(), b.to_string())]);
    let bad = ["cedana", "restore", "job", "j1", "--gpu-map", "GPU-1=GPU-2"];
    let e = Cli::try_parse_from(bad).expect_err("not UUIDs").to_string();
    assert!(e.contains("not a GPU UUID"), "{e}");
}

#[test]
fn restore_flags() {
    let cli = parse(&[
        "restore",
        "job",
        "j1",
        "--path",
        "/ck/a.tar.zst",
        "--tcp-close",
        "--pid-file",
        "/tmp/p",
        "--attach",
    ]);
    let Command::Restore(RestoreCmd::Job { jid, path, args }) = cli.command else {
        panic!()
    };
    assert!(args.attach);
    let req = restore::restore_request(Some(jid), path.as_deref(), &args).expect("request");
    assert_eq!(req.jid.as_deref(), Some("j1"));
    let engine = convert::restore_request(&req, "/ck/a.tar.zst".into());
    assert_eq!(engine.flags.tcp_close, Some(true));
    assert_eq!(engine.flags.tcp_established, None);
    assert_eq!(
        engine.pid_file.as_deref(),
        Some(std::path::Path::new("/tmp/p"))
    );
    assert!(Cli::try_parse_from(["cedana", "restore", "process"]).is_err());
}

#[test]
fn signals_by_name_or_number() {
    assert_eq!(jobs::parse_signal("TERM").unwrap(), 15);
    assert_eq!(jobs::parse_signal("sigkill").unwrap(), 9);
    assert_eq!(jobs::parse_signal("2").unwrap(), 2);
    assert!(jobs::parse_signal("NOPE").is_err());
    assert!(jobs::parse_signal("999").is_err());
}

#[test]
fn runc_flags_reach_the_engine() {
    let Cli {
        command:
            Command::Dump(DumpCmd::Runc {
                id,
                root,
                args,
                no_server,
            }),
        ..
    } = parse(&[
        "dump",
        "runc",
        "c1",
        "--root",
        "/r",
        "--compression",
        "none",
        "--no-server",
    ])
    else {
        panic!("not dump runc");
    };
    assert!(no_server);
    let req = dump::dump_request(
        Target::Runc(crate::proto::RuncContainer {
            id,
            root: root.map(|r| r.display().to_string()),
        }),
        &args,
    )
    .expect("request");
    let e = convert::dump_request(&req, 0).expect("a valid request");
    assert_eq!(e.kind(), cedana_runtime::plugins::runc::KIND);
    let t = e
        .target::<cedana_runtime::plugins::runc::RuncDump>()
        .expect("runc target")
        .target
        .clone();
    assert_eq!((t.id.as_str(), t.root), ("c1", Some("/r".into())));
    assert_eq!(e.compression.map(|c| c.as_str()), Some("none"));

    let Cli {
        command: Command::Restore(RestoreCmd::Runc {
            bundle, id, detach, ..
        }),
        ..
    } = parse(&[
        "restore", "runc", "--path", "/ck", "--bundle", "/b", "--id", "c2", "-d",
    ])
    else {
        panic!("not restore runc");
    };
    assert!(detach);
    assert_eq!((bundle, id.as_str()), ("/b".into(), "c2"));
}

#[test]
fn containerd_flags_reach_the_engine() {
    // The daemon's --address and containerd's --containerd-address side by side.
    let Cli {
        command: Command::Dump(DumpCmd::Containerd { id, containerd, .. }),
        global,
    } = parse(&[
        "dump",
        "containerd",
        "c1",
        "--address",
        "/d.sock",
        "--containerd-address",
        "/c.sock",
        "--namespace",
        "ns",
    ])
    else {
        panic!("not dump containerd");
    };
    assert_eq!(global.address, Some("/d.sock".into()));
    let req = dump::dump_request(
        Target::Containerd(crate::proto::ContainerdContainer {
            id,
            address: Some(containerd.address),
            namespace: Some(containerd.namespace),
        }),
        &DumpArgs::default(),
    )
    .expect("request");
    let e = convert::dump_request(&req, 0).expect("a valid request");
    assert_eq!(e.kind(), cedana_runtime::plugins::containerd::KIND);
    let t = e
        .target::<cedana_runtime::plugins::containerd::ContainerdTarget>()
        .expect("containerd target");
    assert_eq!(
        (t.id.as_str(), t.address.as_str(), t.namespace.as_str()),
        ("c1", "/c.sock", "ns")
    );

    let Cli {
        command:
            Command::Restore(RestoreCmd::Containerd {
                id,
                image,
                containerd,
                ..
            }),
        ..
    } = parse(&[
        "restore",
        "containerd",
        "--path",
        "/ck",
        "--id",
        "c2",
        "--image",
        "busybox:1",
    ])
    else {
        panic!("not restore containerd");
    };
    assert_eq!((id.as_str(), image.as_deref()), ("c2", Some("busybox:1")));
    if std::env::var_os("CONTAINERD_ADDRESS").is_none()
        && std::env::var_os("CONTAINERD_NAMESPACE").is_none()
    {
        assert_eq!(containerd.address, "/run/containerd/containerd.sock");
        assert_eq!(containerd.namespace, "default");
    }
}

#[test]
fn kata_takes_one_way_to_the_agent() {
    let Command::Dump(DumpCmd::Kata { id, pid, vm, .. }) =
        parse(&["dump", "kata", "c1", "--vm-socket", "/run/vm.sock"]).command
    else {
        panic!("not dump kata")
    };
    assert_eq!(id.as_deref(), Some("c1"));
    assert_eq!(pid, None);
    assert_eq!(vm.port, cedana_runtime::guest::DEFAULT_PORT);
    assert!(Cli::try_parse_from([
        "cedana", "dump", "kata", "--pid", "3", "--cid", "3", "--tcp", "h:1"
    ])
    .is_err());
    assert!(
        Cli::try_parse_from(["cedana", "dump", "kata", "--cid", "3"]).is_err(),
        "no target"
    );
    assert!(
        Cli::try_parse_from(["cedana", "restore", "kata", "--path", "x", "--cid", "4"]).is_ok()
    );
}

#[test]
fn top_level_job_shortcuts_are_the_job_commands() {
    let Command::Kill(args) = parse(&["kill", "j1", "--timeout", "0"]).command else {
        panic!("not kill")
    };
    assert_eq!((args.jid.as_str(), args.timeout), ("j1", 0));
    let Command::Delete(args) = parse(&["delete", "j1", "--force"]).command else {
        panic!("not delete")
    };
    assert!(args.force);
    assert!(matches!(parse(&["attach", "j1"]).command, Command::Attach(j) if j.jid == "j1"));
    assert!(matches!(parse(&["inspect", "j1"]).command, Command::Inspect(j) if j.jid == "j1"));
    // The same flags as under `job`.
    let job = Cli::command();
    for name in ["attach", "inspect", "kill", "delete"] {
        let args = |c: &clap::Command| -> Vec<String> {
            c.get_arguments().map(|a| a.get_id().to_string()).collect()
        };
        assert_eq!(
            args(sub(&job, name)),
            args(sub(sub(&job, "job"), name)),
            "{name}"
        );
    }
}

#[test]
fn urls_reach_the_daemon_as_urls_and_paths_become_absolute() {
    let Command::Dump(DumpCmd::Job { jid, args }) =
        parse(&["dump", "job", "j1", "--dir", "s3://ckpts/a/b"]).command
    else {
        panic!()
    };
    let req = dump::dump_request(Target::Jid(jid), &args).expect("request");
    assert_eq!(req.dir.as_deref(), Some("s3://ckpts/a/b"));
    // Any other scheme travels as a URL too, for the engine to refuse by name (never a
    // local directory named `gs:`).
    let Command::Restore(RestoreCmd::Job { jid, path, args }) =
        parse(&["restore", "job", "j1", "--path", "gs://b/ck"]).command
    else {
        panic!()
    };
    let req = restore::restore_request(Some(jid), path.as_deref(), &args).expect("request");
    assert_eq!(req.path.as_deref(), Some("gs://b/ck"));
    let Command::Dump(DumpCmd::Job { jid, args }) =
        parse(&["dump", "job", "j1", "--dir", "rel/dir"]).command
    else {
        panic!()
    };
    let req = dump::dump_request(Target::Jid(jid), &args).expect("request");
    assert!(req
        .dir
        .as_deref()
        .is_some_and(|d| d.starts_with('/') && d.ends_with("/rel/dir")));
    let Command::Dump(DumpCmd::Job { jid, args }) =
        parse(&["dump", "job", "j1", "--dir", "s3://"]).command
    else {
        panic!()
    };
    let err = dump::dump_request(Target::Jid(jid), &args).expect_err("no bucket");
    assert!(err.to_string().contains("BUCKET"), "{err}");
}
