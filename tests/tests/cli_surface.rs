//! The informational commands name what they must: `check` and `daemon check` report
//! the CRIU binary each side uses and its version as `criu --version` says it (the
//! daemon's from the daemon's own config), and fail with the fix when CRIU is missing;
//! `version` shows that CRIU version for client and daemon; `features`, `plugin
//! features` and `plugin list` name the registry's plugins and the chains in order;
//! `completion bash` really completes subcommands and the running daemon's job ids in
//! bash.

use std::path::{Path, PathBuf};
use std::process::Command;

use cedana_e2e::*;
use serde_json::Value;

/// CRIU's version as `criu --version` prints it (`Version: 4.1.1`).
fn criu_version() -> String {
    let out = Command::new(which("criu").expect("criu installed"))
        .arg("--version")
        .output()
        .expect("criu --version");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no version in {text:?}"))
}

/// The check named `name` in a `--json check` answer.
fn check<'a>(checks: &'a Value, name: &str) -> &'a Value {
    checks
        .as_array()
        .and_then(|a| a.iter().find(|c| c["check"] == name))
        .unwrap_or_else(|| panic!("no {name:?} check in {checks}"))
}

fn same_file(a: &Path, b: &Path) -> bool {
    a.canonicalize().ok().is_some() && a.canonicalize().ok() == b.canonicalize().ok()
}

#[test]
fn check_and_daemon_check_name_each_sides_criu_and_its_version() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    let version = criu_version();
    let real = which("criu").expect("criu");

    let r = env.cedana(&["--json", "check"]);
    let checks = r.json();
    let bin = check(&checks, "criu binary");
    assert_eq!(bin["status"], "ok", "{bin}");
    assert!(
        same_file(Path::new(bin["detail"].as_str().unwrap_or_default()), &real),
        "check names {} as CRIU: {bin}",
        real.display()
    );
    let v = check(&checks, "criu version");
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["detail"], version.as_str(), "{v}");
    assert_eq!(check(&checks, "criu check")["status"], "ok", "{checks}");
    let table = env.cedana(&["check"]).stdout;
    assert!(table.contains(&version), "{table}");

    // Missing CRIU: a failure, with the fix, and exit 1.
    let r = env.cedana(&[
        "--json",
        "--set",
        "criu.binary_path=/nonexistent/criu",
        "check",
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    let checks = r.json();
    let bin = check(&checks, "criu binary");
    assert_eq!(bin["status"], "fail", "{bin}");
    assert!(
        bin["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("criu.binary_path"),
        "{bin}"
    );

    // The daemon reports its own view: started with CRIU behind a recorder (its config
    // file), which the client no longer has once the file is gone.
    let criu = CriuRecorder::new(&env.path("criu"));
    std::fs::create_dir_all(env.path("etc")).expect("etc");
    let config = env.path("etc/config.json");
    std::fs::write(
        &config,
        serde_json::json!({"criu": {"binary_path": criu.wrapper}}).to_string(),
    )
    .expect("config");
    env.start_daemon();
    std::fs::remove_file(&config).expect("rm config");
    criu.clear();
    let checks = env.cedana(&["--json", "daemon", "check"]).ok().json();
    let bin = check(&checks, "criu binary");
    assert_eq!(
        bin["detail"],
        criu.wrapper.display().to_string().as_str(),
        "the daemon's CRIU: {bin}"
    );
    assert_eq!(check(&checks, "criu version")["detail"], version.as_str());
    assert!(
        !criu.calls().is_empty(),
        "the daemon ran its CRIU for the checks"
    );
    let here = env.cedana(&["--json", "check"]).ok().json();
    assert!(same_file(
        Path::new(
            check(&here, "criu binary")["detail"]
                .as_str()
                .unwrap_or_default()
        ),
        &real
    ));
}

#[test]
fn version_names_criu_as_criu_reports_it() {
    if !e2e_enabled() {
        return;
    }
    let mut env = Env::new();
    let version = criu_version();
    let v = env.cedana(&["--json", "version"]).ok().json();
    assert_eq!(v["criu"], version.as_str(), "{v}");
    assert!(v["cedana"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    env.start_daemon();
    let v = env.cedana(&["--json", "version"]).ok().json();
    assert_eq!(v["daemon"]["criu"], version.as_str(), "{v}");
    let text = env.cedana(&["version"]).ok().stdout;
    assert!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("criu") && l.contains(&version))
            .count()
            == 2,
        "client and daemon CRIU versions: {text}"
    );
    let missing = env
        .cedana(&[
            "--json",
            "--set",
            "criu.binary_path=/nonexistent/criu",
            "version",
        ])
        .ok()
        .json();
    assert!(missing["criu"].is_null(), "{missing}");
}

/// Whether `needles` appear in `hay` in this order.
fn in_order(hay: &str, needles: &[&str]) -> bool {
    let mut at = 0;
    for n in needles {
        match hay[at..].find(n) {
            Some(i) => at += i + n.len(),
            None => return false,
        }
    }
    true
}

#[test]
fn features_and_plugins_name_the_registry_and_the_chains() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let names = env.cedana(&["--json", "plugin", "list"]).ok().json();
    assert_eq!(
        names,
        serde_json::json!(["process", "runc", "containerd", "gpu"]),
        "the registry's plugins"
    );
    let table = env.cedana(&["plugin", "list"]).ok().stdout;
    for n in ["process", "runc", "containerd", "gpu"] {
        assert!(table.lines().any(|l| l.trim() == n), "{table}");
    }

    let f = env.cedana(&["--json", "features"]).ok().json();
    assert_eq!(
        f,
        env.cedana(&["--json", "plugin", "features"]).ok().json(),
        "plugin features is features"
    );
    let mut plugins: Vec<&str> = f["features"]
        .as_array()
        .expect("features")
        .iter()
        .filter_map(|x| x["plugin"].as_str())
        .collect();
    plugins.dedup();
    assert_eq!(plugins, ["process", "runc", "containerd", "gpu"], "{f}");
    let dump = f["chains"]
        .as_object()
        .and_then(|c| c.iter().find(|(k, _)| k.as_str() == "dump"))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no dump chain: {}", f["chains"]));
    assert!(
        in_order(
            dump,
            &[
                "fill_missing_dump_defaults",
                "validate_dump_request",
                "prepare_dump_storage",
                "detect_shell_job",
                "detect_io_uring",
                "detect_file_options",
                "detect_network_options",
                "gpu_dump",
                "check_criu_opts_for_dump",
                "criu_dump",
            ]
        ),
        "dump chain in the documented order: {dump}"
    );
    let text = env.cedana(&["features"]).ok().stdout;
    assert!(
        text.contains(dump),
        "the table prints the same chain: {text}"
    );
}

/// Runs bash completion for the words `words` (the last being completed) with the
/// `cedana completion bash` script loaded, called as bash calls it (command, current
/// word, previous word); returns COMPREPLY, one a line.
fn complete(env: &Env, script: &Path, words: &[&str]) -> Vec<String> {
    let cedana: PathBuf = bin("cedana");
    let quoted: Vec<String> = std::iter::once(cedana.display().to_string())
        .chain(words.iter().map(|w| w.to_string()))
        .map(|w| format!("'{w}'"))
        .collect();
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; \
         COMP_POINT=${{#COMP_LINE}}; \
         _cedana_ids \"${{COMP_WORDS[0]}}\" \"${{COMP_WORDS[COMP_CWORD]}}\" \
         \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&program)
        .env("CEDANA_ADDRESS", env.socket())
        .env("CEDANA_CONFIG_DIR", env.path("etc"))
        .output()
        .expect("bash");
    assert!(out.status.success(), "bash: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_completes_subcommands_and_live_job_ids() {
    if !e2e_enabled() {
        return;
    }
    if which("bash").is_none() {
        skip("bash not installed", "install bash");
        return;
    }
    let mut env = Env::new();
    let script = env.path("cedana.bash");
    let r = env.cedana(&["completion", "bash"]).ok();
    std::fs::write(&script, &r.stdout).expect("script");
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("bash -n");
    assert!(syntax.success(), "bash accepts the script");

    let subs = complete(&env, &script, &["fre"]);
    assert_eq!(subs, ["freeze"], "cedana fre<TAB>");
    let subs = complete(&env, &script, &["job", "ch"]);
    assert_eq!(subs, ["checkpoint"], "cedana job ch<TAB>");

    env.start_daemon();
    for jid in ["alpha1", "alpha2", "beta"] {
        env.cedana(&["run", "process", "--jid", jid, "--", "sleep", "1000"])
            .ok();
    }
    let mut ids = complete(&env, &script, &["job", "inspect", "al"]);
    ids.sort();
    assert_eq!(ids, ["alpha1", "alpha2"], "job ids from the daemon");
    let mut ids = complete(&env, &script, &["freeze", "job", ""]);
    ids.sort();
    assert_eq!(ids, ["alpha1", "alpha2", "beta"]);
}
