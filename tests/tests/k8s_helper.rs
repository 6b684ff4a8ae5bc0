//! `cedana k8s-helper install|uninstall` on a host root in a temp dir, with containerd
//! 1.7's own default config: install twice, real containerd reads the runtime, uninstall
//! gives back the original bytes and the binary it replaced.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cedana_e2e::*;
use serde::Deserialize;

const BINARIES: [&str; 5] = [
    "cedana",
    "containerd-shim-cedana-v2",
    "cedana-runc",
    "cedana-criu-relay",
    "cedana-gpu-helper",
];

/// A host root holding `containerd config default` (or `config`) as its config.
struct Host {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Host {
    fn new(config: Option<&str>) -> Host {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("host");
        fs::create_dir_all(root.join("etc/containerd")).expect("mkdir");
        let text = match config {
            Some(t) => t.to_string(),
            None => {
                let out = Command::new(containerd())
                    .args(["config", "default"])
                    .output()
                    .expect("containerd config default");
                assert!(out.status.success(), "{out:?}");
                String::from_utf8(out.stdout).expect("utf-8")
            }
        };
        fs::write(root.join("etc/containerd/config.toml"), text).expect("write config");
        Host { _dir: dir, root }
    }

    fn path(&self, host_path: &str) -> PathBuf {
        self.root.join(host_path.trim_start_matches('/'))
    }

    fn config(&self) -> Vec<u8> {
        fs::read(self.path("/etc/containerd/config.toml")).expect("read config")
    }

    fn helper(&self, what: &str) -> Run {
        let out = Command::new(bin("cedana"))
            .arg("--config-dir")
            .arg(self.path("/etc/cedana"))
            .args(["k8s-helper", what, "--host-root"])
            .arg(&self.root)
            .output()
            .expect("run cedana");
        Run::from_output(out)
    }

    /// What containerd makes of the config (its imports merged), as `config dump` says.
    fn containerd_sees(&self) -> String {
        let out = Command::new(containerd())
            .arg("--config")
            .arg(self.path("/etc/containerd/config.toml"))
            .args(["config", "dump"])
            .output()
            .expect("containerd config dump");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn containerd() -> PathBuf {
    which("containerd").expect("containerd is installed by `make deps`")
}

/// Whether containerd is there to check the config with (a failure under CEDANA_TEST_E2E).
fn have_containerd() -> bool {
    which("containerd").is_some() || skip("containerd is not installed", "run `make deps`")
}

/// The cedana runtime as containerd parsed it from `dump`.
fn assert_runtime_loaded(dump: &str) {
    let table = "runtimes.cedana]";
    let at = dump
        .find(table)
        .unwrap_or_else(|| panic!("containerd does not see the cedana runtime:\n{dump}"));
    let section = &dump[at..];
    assert!(
        section.contains("runtime_type = \"io.containerd.cedana.v2\""),
        "{section}"
    );
    assert!(
        section.contains("runtime_path = \"/usr/local/bin/containerd-shim-cedana-v2\""),
        "{section}"
    );
    assert!(section.contains("\"cedana.io/*\""), "{section}");
}

#[test]
fn install_twice_then_uninstall_gives_back_the_original_config() {
    if !have_containerd() {
        return;
    }
    let host = Host::new(None);
    let original = host.config();
    // An older cedana-runc the admin had: kept aside, and back after uninstall.
    let earlier_runc = host.path("/usr/local/bin/cedana-runc");
    fs::create_dir_all(earlier_runc.parent().expect("parent")).expect("mkdir");
    fs::write(&earlier_runc, b"#!/bin/sh\necho older\n").expect("write");

    let first = host.helper("install").ok();
    assert!(
        first
            .stdout
            .contains("added [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.cedana]"),
        "{}",
        first.stdout
    );
    assert!(
        first.stderr.contains("systemctl restart containerd"),
        "{}",
        first.stderr
    );
    for name in BINARIES {
        let installed = host.path(&format!("/usr/local/bin/{name}"));
        assert_eq!(
            fs::read(&installed).expect("installed binary"),
            fs::read(bin(name)).expect("built binary"),
            "{name}"
        );
    }
    let installed_config = host.config();
    assert_runtime_loaded(&host.containerd_sees());

    let second = host.helper("install").ok();
    assert!(second.stdout.contains("is in place"), "{}", second.stdout);
    assert!(second.stdout.contains("is up to date"), "{}", second.stdout);
    assert_eq!(
        host.config(),
        installed_config,
        "a second install changes nothing"
    );

    host.helper("uninstall").ok();
    assert_eq!(host.config(), original, "the original bytes are back");
    assert_eq!(
        fs::read(&earlier_runc).expect("earlier runc"),
        b"#!/bin/sh\necho older\n"
    );
    for name in [
        "cedana",
        "containerd-shim-cedana-v2",
        "cedana-criu-relay",
        "cedana-gpu-helper",
    ] {
        assert!(
            !host.path(&format!("/usr/local/bin/{name}")).exists(),
            "{name}"
        );
    }
    let mut files = walk(&host.root);
    files.sort();
    assert_eq!(
        files,
        [
            host.path("/etc/containerd/config.toml"),
            earlier_runc.clone()
        ],
        "only what was there before install is left"
    );
    host.helper("uninstall").fails_with("nothing to undo");
}

#[test]
fn an_imported_conf_d_gets_a_drop_in_and_the_config_stays_as_it_was() {
    if !have_containerd() {
        return;
    }
    let relative = "version = 2\nimports = [\"conf.d/*.toml\"]\n";
    let host = Host::new(Some(relative));
    let conf_d = host.path("/etc/containerd/conf.d");
    let out = host.helper("install").ok();
    assert!(out.stdout.contains("99-cedana.toml"), "{}", out.stdout);
    assert_eq!(
        host.config(),
        relative.as_bytes(),
        "the main config is untouched"
    );
    let drop_in = conf_d.join("99-cedana.toml");
    assert!(drop_in.exists());
    // containerd resolves relative imports against the config's directory and merges.
    assert_runtime_loaded(&host.containerd_sees());

    host.helper("uninstall").ok();
    assert!(!drop_in.exists(), "the drop-in is removed");
    assert_eq!(host.config(), relative.as_bytes());
}

#[test]
fn a_config_edited_after_install_keeps_the_edit_on_uninstall() {
    if !have_containerd() {
        return;
    }
    let host = Host::new(None);
    host.helper("install").ok();
    let mut edited = host.config();
    edited.extend_from_slice(b"\n# the admin was here\n");
    fs::write(host.path("/etc/containerd/config.toml"), &edited).expect("write");
    let out = host.helper("uninstall").ok();
    assert!(
        out.stdout.contains("removed only the cedana runtime"),
        "{}",
        out.stdout
    );
    let after = String::from_utf8(host.config()).expect("utf-8");
    assert!(after.contains("# the admin was here"), "{after}");
    assert!(!after.contains("runtimes.cedana"), "{after}");
    assert!(!host.containerd_sees().contains("runtimes.cedana]"));
}

#[test]
fn bad_configs_are_refused_with_what_to_do() {
    let host = Host::new(Some("root = \"/var/lib/containerd\"\n"));
    host.helper("install")
        .fails_with("containerd config migrate");
    let missing = Host::new(Some(""));
    fs::remove_file(missing.path("/etc/containerd/config.toml")).expect("rm");
    missing
        .helper("install")
        .fails_with("containerd config default > /etc/containerd/config.toml");
    // A failed install changes nothing on the host.
    assert!(!missing.path("/var/lib/cedana/k8s-helper.json").exists());
    assert!(!missing.path("/usr/local/bin").exists());
}

/// The documents of a YAML file, as JSON values.
fn yaml_docs(path: &Path) -> Vec<serde_json::Value> {
    let text = fs::read_to_string(path).expect("read manifest");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::to_value(v).expect("as JSON")
        })
        .collect()
}

/// A container's command as a `cedana` command line (after `nsenter ... --`, if any).
fn cedana_args(container: &serde_json::Value) -> Vec<String> {
    let cmd: Vec<String> = container["command"]
        .as_array()
        .expect("command")
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect();
    let start = cmd.iter().position(|a| a == "--").map_or(0, |i| i + 1);
    cmd[start..].to_vec()
}

/// deploy/k8s: valid YAML; the DaemonSet is privileged with the host's PIDs and root at
/// /host; its commands are command lines our CLI accepts; the RuntimeClass's handler is
/// the runtime install adds.
#[test]
fn the_deploy_manifests_match_the_helper() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s");
    let docs = yaml_docs(&dir.join("daemonset.yaml"));
    let kinds: Vec<_> = docs
        .iter()
        .map(|d| d["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["Namespace", "ServiceAccount", "DaemonSet"]);
    let ds = &docs[2];
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let volume = &pod["volumes"][0];
    assert_eq!(volume["hostPath"]["path"], "/");
    let init = &pod["initContainers"][0];
    let daemon = &pod["containers"][0];
    for c in [init, daemon] {
        assert_eq!(c["securityContext"]["privileged"], true, "{c}");
        assert_eq!(c["volumeMounts"][0]["name"], volume["name"], "{c}");
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/host", "{c}");
    }

    let install = cedana_args(init);
    let cli = cedana_cli::cli::Cli::try_parse_args(&install).expect("install parses");
    match cli.command {
        cedana_cli::cli::Command::K8sHelper(cedana_cli::cli::K8sHelperCmd::Install(args)) => {
            assert_eq!(args.host_root, Path::new("/host"));
            assert!(args.restart);
        }
        other => panic!("the init container runs {other:?}"),
    }
    let serve = cedana_args(daemon);
    assert_eq!(
        serve[0], "/usr/local/bin/cedana",
        "the binary install put on the host"
    );
    let cli = cedana_cli::cli::Cli::try_parse_args(&serve).expect("daemon parses");
    assert!(matches!(
        cli.command,
        cedana_cli::cli::Command::Daemon(cedana_cli::cli::DaemonCmd::Start)
    ));

    let rc = yaml_docs(&dir.join("runtimeclass.yaml"));
    assert_eq!(rc[0]["kind"], "RuntimeClass");
    assert_eq!(
        rc[0]["handler"],
        cedana_cli::k8s::containerd_config::RUNTIME_NAME
    );
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
