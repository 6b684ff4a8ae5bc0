//! `cedana completion zsh|fish`: each script loads in its shell, and completes the
//! running daemon's job ids where a command takes one (bash: cli_surface.rs).

use std::process::Command;

use cedana_e2e::{bin_dir, e2e_enabled, skip, which, Env};

/// Starts a daemon with three jobs; returns the env.
fn daemon_with_jobs() -> Env {
    let mut env = Env::new();
    env.start_daemon();
    for jid in ["alpha1", "alpha2", "beta"] {
        env.cedana(&["run", "process", "--jid", jid, "--", "sleep", "1000"])
            .ok();
    }
    env
}

/// `shell -c program`, as a user's shell with `cedana` on PATH talking to `env`'s daemon;
/// returns stdout lines.
fn shell(env: &Env, shell: &str, program: &str) -> Vec<String> {
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(shell)
        .arg("-c")
        .arg(program)
        .env("PATH", path)
        .env("HOME", env.path("home"))
        .env("CEDANA_ADDRESS", env.socket())
        .env("CEDANA_CONFIG_DIR", env.path("etc"))
        .output()
        .expect("run the shell");
    assert!(out.status.success(), "{shell}: {out:?}");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// The script for `sh`, written into `env`'s dir.
fn script(env: &Env, sh: &str) -> std::path::PathBuf {
    let path = env.path(&format!("cedana.{sh}"));
    let r = env.cedana(&["completion", sh]).ok();
    std::fs::write(&path, &r.stdout).expect("write the script");
    std::fs::create_dir_all(env.path("home")).expect("home");
    path
}

fn installed(sh: &str) -> bool {
    if which(sh).is_none() {
        skip(
            &format!("{sh} not installed"),
            &format!("apt-get install {sh}"),
        );
        return false;
    }
    true
}

#[test]
fn fish_completes_subcommands_and_live_job_ids() {
    if !e2e_enabled() || !installed("fish") {
        return;
    }
    let env = daemon_with_jobs();
    let s = script(&env, "fish");
    let complete = |line: &str| -> Vec<String> {
        shell(
            &env,
            "fish",
            &format!("source '{}'; complete -C '{line}'", s.display()),
        )
        .into_iter()
        // `candidate<TAB>description`
        .map(|l| l.split('\t').next().unwrap_or_default().to_string())
        .collect()
    };
    assert_eq!(complete("cedana fre"), ["freeze"], "cedana fre<TAB>");
    assert_eq!(
        complete("cedana job inspect al"),
        ["alpha1", "alpha2"],
        "job ids from the daemon"
    );
    assert_eq!(complete("cedana dump job "), ["alpha1", "alpha2", "beta"]);
}

#[test]
fn zsh_loads_the_script_and_its_wrapper_completes_live_job_ids() {
    if !e2e_enabled() || !installed("zsh") {
        return;
    }
    let env = daemon_with_jobs();
    let s = script(&env, "zsh");
    // Outside an interactive completion, call the wrapper as zsh's completion system
    // would (words, CURRENT, PREFIX set), with `compadd` printing what it is given.
    let complete = |words: &[&str]| -> Vec<String> {
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        shell(
            &env,
            "zsh",
            &format!(
                "autoload -U compinit && compinit -u -D; source '{}'; \
                 compadd() {{ while [[ $1 != -- ]]; do shift; done; shift; print -l -- \"$@\"; }}; \
                 words=({}); CURRENT={}; PREFIX={}; _cedana_ids",
                s.display(),
                quoted.join(" "),
                words.len(),
                quoted.last().map(String::as_str).unwrap_or("''"),
            ),
        )
        .into_iter()
        .filter(|c| c.starts_with(words.last().copied().unwrap_or_default()))
        .collect()
    };
    assert_eq!(
        complete(&["cedana", "job", "inspect", "al"]),
        ["alpha1", "alpha2"],
        "job ids from the daemon"
    );
    assert_eq!(
        complete(&["cedana", "freeze", "job", ""]),
        ["alpha1", "alpha2", "beta"]
    );
    // The script registered itself for `cedana`.
    let registered = shell(
        &env,
        "zsh",
        &format!(
            "autoload -U compinit && compinit -u -D; source '{}'; print -- $_comps[cedana]",
            s.display()
        ),
    );
    assert_eq!(registered, ["_cedana_ids"]);
}
