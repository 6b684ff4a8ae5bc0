//! The README's containerd section, run as written against a real containerd (issue 11,
//! items 4 and 5): its `ctr` checkpoint/restore sequence (README "## containerd", the
//! ```sh block after "With `ctr`:") against a private containerd with our shim, and
//! every ```toml config snippet of that section appended to `containerd config default`
//! and loaded by a private containerd with its CRI plugin on. Both read README.md, so
//! they break when the README changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cedana_e2e::containerd::{containerd_available, Containerd};
use cedana_e2e::{e2e_enabled, wait_for};

/// The README at the workspace root.
fn readme() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The lines of the README's "## containerd" section.
fn containerd_section(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| l.trim() != "## containerd")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .map(str::to_string)
        .collect()
}

/// The fenced blocks of `lang` in `lines`, each with the line it follows.
fn fenced(lines: &[String], lang: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut it = lines.iter().enumerate();
    while let Some((i, l)) = it.next() {
        if l.trim() != format!("```{lang}") {
            continue;
        }
        let before = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .cloned()
            .unwrap_or_default();
        let body: Vec<&str> = it
            .by_ref()
            .map(|(_, l)| l.as_str())
            .take_while(|l| l.trim() != "```")
            .collect();
        blocks.push((before, body.join("\n")));
    }
    blocks
}

/// Shell commands of a block: continuation lines joined, blank lines dropped.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in block.lines() {
        match line.strip_suffix('\\') {
            Some(head) => cur.push_str(head),
            None => {
                cur.push_str(line);
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
            }
        }
    }
    out
}

/// Runs one README command line with `sh`, `ctr` pointed at the private containerd.
fn sh(c: &Containerd, line: &str) -> cedana_e2e::Run {
    let script = format!(
        "set -e; ctr() {{ command ctr --address '{}' --namespace '{}' \"$@\"; }}; {line}",
        c.socket().display(),
        c.namespace
    );
    let out = Command::new("timeout")
        .args(["120", "sh", "-c", &script])
        .output()
        .expect("run sh");
    cedana_e2e::Run::from_output(out)
}

#[test]
fn readme_ctr_checkpoint_restore_sequence_works_as_written() {
    let Some(c) = Containerd::setup() else { return };
    let section = containerd_section(&readme());
    let (_, block) = fenced(&section, "sh")
        .into_iter()
        .find(|(before, _)| before.contains("With `ctr`"))
        .expect("README: a ```sh block after \"With `ctr`:\" in ## containerd");
    let lines = commands(&block);
    // The image the README names, built locally (no registry here).
    let image = lines
        .first()
        .and_then(|l| {
            l.split_whitespace()
                .find(|w| w.contains(':') && w.contains('/'))
        })
        .expect("the README's ctr run names an image");
    c.import_busybox_as(image);
    let mut before = 0;
    for line in &lines {
        let r = sh(&c, line);
        assert_eq!(
            r.code,
            0,
            "README command failed: {line}\n{}{}\ncontainerd log tail:\n{}",
            r.stdout,
            r.stderr,
            c.log_tail()
        );
        if line.starts_with("ctr run ") {
            // Let the counter pass a value a restart from 1 could not reach at once.
            before = wait_for("c1 to count past 3", Duration::from_secs(30), || {
                c.counts("c1").last().copied().filter(|v| *v > 3)
            });
        }
    }
    assert!(before > 3, "the README's sequence starts a counter in c1");
    assert_eq!(c.task_status("c2").as_deref(), Some("RUNNING"));
    // The rw layer holds 1..=N (N >= `before`, where the checkpoint was taken) and the
    // restored process appends N+1, ...: each number follows the one before it.
    let grown = wait_for("c2 to count on", Duration::from_secs(30), || {
        let seq = c.counts("c2");
        (seq.last().copied().unwrap_or(0) > before + 2).then_some(seq)
    });
    let expected: Vec<u64> = (1..=grown.len() as u64).collect();
    assert_eq!(grown, expected, "c2 did not carry on from the checkpoint");
    let i = grown.iter().position(|v| *v == before).expect("before");
    assert_eq!(grown[i + 1], before + 1, "next_after(last) == last + 1");
    c.remove_all();
}

/// `runtimes.NAME` tables of a snippet with their `runtime_type`.
fn runtimes(snippet: &str) -> Vec<(String, String)> {
    let prefix = "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.";
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in snippet.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix(prefix).and_then(|r| r.strip_suffix(']')) {
            current = (!name.contains('.')).then(|| name.to_string());
        } else if let (Some(name), Some(ty)) = (&current, line.strip_prefix("runtime_type = ")) {
            found.push((name.clone(), ty.trim_matches('"').to_string()));
        }
    }
    found
}

/// `containerd config default` with root, state and the gRPC socket moved into `d`.
fn default_config_in(d: &Path) -> String {
    let out = Command::new("containerd")
        .args(["config", "default"])
        .output()
        .expect("containerd config default");
    assert!(out.status.success(), "containerd config default: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let moved: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("root = ") {
                format!("root = \"{}\"", d.join("root").display())
            } else if l.starts_with("state = ") {
                format!("state = \"{}\"", d.join("state").display())
            } else {
                l.replace(
                    "\"/run/containerd/containerd.sock\"",
                    &format!("\"{}\"", d.join("c.sock").display()),
                )
            }
        })
        .collect();
    assert!(
        moved.iter().any(|l| l.contains("c.sock")),
        "the default config has no gRPC address to move"
    );
    moved.join("\n") + "\n"
}

#[test]
fn readme_containerd_config_snippets_load_with_cri() {
    if !e2e_enabled() || !containerd_available() {
        return;
    }
    let section = containerd_section(&readme());
    let snippets = fenced(&section, "toml");
    assert!(
        !snippets.is_empty(),
        "README: no ```toml block in ## containerd"
    );
    for (_, snippet) in snippets {
        let named = runtimes(&snippet);
        assert!(!named.is_empty(), "snippet names no runtime:\n{snippet}");
        // containerd parses the whole file first: a TOML error is reported here.
        let check = tempfile::tempdir().expect("tempdir");
        let file = check.path().join("config.toml");
        let text = default_config_in(check.path()) + "\n" + &snippet + "\n";
        std::fs::write(&file, &text).expect("write config");
        let dump = Command::new("containerd")
            .arg("--config")
            .arg(&file)
            .args(["config", "dump"])
            .output()
            .expect("containerd config dump");
        assert!(
            dump.status.success(),
            "the README snippet appended to `containerd config default` is not a valid \
             config: {}\n{snippet}",
            String::from_utf8_lossy(&dump.stderr)
        );
        let c = Containerd::start_with(|d| default_config_in(d) + "\n" + &snippet + "\n");
        let plugins = c.ok(&["plugins", "ls"]);
        let cri = plugins.lines().find(|l| {
            l.split_whitespace()
                .take(2)
                .eq(["io.containerd.grpc.v1", "cri"])
        });
        assert!(
            cri.is_some_and(|l| l.trim_end().ends_with("ok")),
            "CRI plugin not loaded with the README snippet:\n{snippet}\n{plugins}\n{}",
            c.log()
                .lines()
                .filter(|l| l.contains("cri"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        // The CRI plugin logs its config at start: each runtime of the snippet is in it.
        let log = wait_for(
            "the CRI plugin's config in the log",
            Duration::from_secs(30),
            || {
                let log = c.log();
                log.contains("Start cri plugin with config").then_some(log)
            },
        );
        for (name, ty) in named {
            assert!(
                log.contains(&format!("{name}:{{Type:{ty} ")),
                "runtime {name} ({ty}) is not in the CRI config:\n{snippet}"
            );
        }
    }
}

/// README "## containerd", the `cedana dump containerd` / `restore containerd` block, run
/// as written through a daemon: `default` is the private containerd's namespace (also
/// as `CONTAINERD_NAMESPACE`, the default where a line names none),
/// `/var/lib/ck` a temp dir, and the `....` of the archive's name a shell glob.
#[test]
fn readme_cedana_dump_restore_containerd_block_works_as_written() {
    let Some(c) = Containerd::setup() else { return };
    let section = containerd_section(&readme());
    let (_, block) = fenced(&section, "sh")
        .into_iter()
        .find(|(_, b)| b.contains("cedana dump containerd"))
        .expect("README: the cedana dump/restore containerd block in ## containerd");
    let lines = commands(&block);
    assert_eq!(
        lines.len(),
        2,
        "README block changed: update this test\n{block}"
    );
    let mut env = cedana_e2e::Env::new();
    env.start_daemon();
    c.ok(&[
        "run",
        "-d",
        "--runtime",
        cedana_e2e::containerd::CEDANA,
        cedana_e2e::containerd::IMAGE,
        "c1",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i >> /count; sleep 0.2; done",
    ]);
    let before = wait_for("c1 to count past 3", Duration::from_secs(30), || {
        c.counts("c1").last().copied().filter(|v| *v > 3)
    });
    let ck = env.path("ck");
    // `cedana` with this test's daemon and config; containerd from the environment.
    let cedana = env
        .cmd()
        .get_args()
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    for line in &lines {
        let line = line
            .replace(
                "--namespace default",
                &format!("--namespace {}", c.namespace),
            )
            .replace("/var/lib/ck", &ck.display().to_string())
            .replace("....", "*");
        let script = format!(
            "set -e; cedana() {{ '{}' {cedana} \"$@\"; }}; {line}",
            cedana_e2e::bin("cedana").display()
        );
        let out = Command::new("timeout")
            .args(["120", "sh", "-c", &script])
            .env("CONTAINERD_ADDRESS", c.socket())
            // Where a README line names no namespace, `default` is this one too.
            .env("CONTAINERD_NAMESPACE", &c.namespace)
            .output()
            .expect("run sh");
        let r = cedana_e2e::Run::from_output(out);
        assert_eq!(
            r.code,
            0,
            "README command failed: {line}\n{}{}\n{}",
            r.stdout,
            r.stderr,
            c.log_tail()
        );
    }
    assert_eq!(
        c.task_status("c2").as_deref(),
        Some("RUNNING"),
        "ctr task ls shows it"
    );
    let grown = wait_for("c2 to count on", Duration::from_secs(30), || {
        let seq = c.counts("c2");
        (seq.last().copied().unwrap_or(0) > before + 2).then_some(seq)
    });
    let i = grown.iter().rposition(|v| *v == before).expect("before");
    assert_eq!(
        grown[i + 1],
        before + 1,
        "c2 carries on from c1's last value"
    );
    c.remove_all();
}
