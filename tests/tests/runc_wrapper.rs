//! `cedana-runc` against the real runc: pass-through commands behave identically
//! (differential), checkpoint/restore go through the engine (options detected and
//! recorded, runc itself can restore the images), and bad input fails cleanly.

mod runc_support;

use std::fs;
use std::path::Path;

use cedana_e2e::Env;
use runc_support::*;

fn metadata(img: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(img.join("metadata.json")).expect("metadata.json"))
        .expect("metadata json")
}

#[test]
fn checkpoint_and_restore_through_cedana_runc_continue_counting() {
    if !runc_available() {
        return;
    }
    let env = Env::new();
    let root = env.path("runc-root");
    let bundle = env.path("bundle");
    build_bundle(&bundle, COUNTER, Net::Own);
    let count = bundle.join("rootfs/tmp/count");
    let cr = Rt::cedana(&root);
    let _guard = Ctr::new(&root, "cnt");
    let b = bundle.to_str().expect("utf8");
    cr.run_detached(&bundle, "cnt");
    wait_above(&count, 5);

    // Checkpoint with no option flags: the engine picks them and records them.
    let img = env.path("img");
    let i = img.to_str().expect("utf8");
    cr.out(&["checkpoint", "--image-path", i, "cnt"]).ok();
    assert!(
        cr.state("cnt").is_none(),
        "runc removes a checkpointed container"
    );
    let last = *numbers(&count).last().expect("counted");
    let md = metadata(&img);
    assert_eq!(md["kind"], "runc");
    assert_eq!(md["container"]["id"], "cnt");
    assert_eq!(md["container"]["layout"], "images");
    assert!(md["criu_options"].is_object());
    assert!(md["files"]["inventory.img"]["sha256"].is_string());
    assert!(img.join("inventory.img").is_file(), "runc's image layout");

    let (code, err) = cr.detached(
        &["restore", "-d", "--image-path", i, "--bundle", b, "cnt"],
        &bundle,
    );
    assert_eq!(code, 0, "restore: {err}");
    cr.wait_status("cnt", "running");
    assert_eq!(next_after(&count, last), last + 1, "counter continued");
    wait_above(&count, last + 5);

    // The images stay runc's: the real runc restores what cedana-runc checkpointed.
    let img2 = env.path("img2");
    let i2 = img2.to_str().expect("utf8");
    cr.out(&["checkpoint", "--image-path", i2, "cnt"]).ok();
    let last = *numbers(&count).last().expect("counted");
    let runc = Rt::runc(&root);
    let (code, err) = runc.detached(
        &["restore", "-d", "--image-path", i2, "--bundle", b, "cnt"],
        &bundle,
    );
    assert_eq!(code, 0, "runc restore of cedana-runc images: {err}");
    assert_eq!(
        next_after(&count, last),
        last + 1,
        "counter continued under runc"
    );
}

/// Strips what legitimately differs between two runs: pids, times, ids, paths.
fn normalize(s: &str, subst: &[(&str, &str)]) -> String {
    let mut s = s.to_string();
    for (from, to) in subst {
        s = s.replace(from, to);
    }
    s.lines()
        .map(|l| {
            l.split_whitespace()
                .map(|w| {
                    if w.starts_with("time=") {
                        "time=T".to_string()
                    } else if w.chars().all(|c| c.is_ascii_digit() || c == ':') {
                        "N".to_string()
                    } else {
                        w.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn json_keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// Runs the lifecycle on one runtime; returns one observation per step.
fn lifecycle(rt: &Rt, bundle: &Path, id: &str) -> Vec<(String, i32, String)> {
    let b = bundle.to_str().expect("utf8");
    let root = rt.root.to_str().expect("utf8").to_string();
    let subst = [(id, "ID"), (b, "BUNDLE"), (root.as_str(), "ROOT")];
    let mut obs = Vec::new();
    let mut note = |step: &str, code: i32, text: String| obs.push((step.to_string(), code, text));
    let (code, err) = rt.detached(&["run", "-d", "--bundle", b, id], bundle);
    note("run -d", code, normalize(&err, &subst));
    rt.wait_status(id, "running");
    let st = rt.out(&["state", id]);
    let v: serde_json::Value = serde_json::from_str(&st.stdout).expect("state json");
    note(
        "state",
        st.code,
        format!("{} {:?}", v["status"], json_keys(&v)),
    );
    let l = rt.out(&["list"]);
    note(
        "list",
        l.code,
        normalize(l.stdout.lines().next().unwrap_or(""), &[]),
    );
    let l = rt.out(&["list", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&l.stdout).expect("list json");
    note("list json", l.code, format!("{:?}", json_keys(&v[0])));
    let e = rt.out(&["exec", id, "echo", "hello from exec"]);
    note("exec", e.code, format!("{}|{}", e.stdout, e.stderr));
    let e = rt.out(&["exec", id, "sh", "-c", "echo out; echo err >&2; exit 3"]);
    note("exec exit 3", e.code, format!("{}|{}", e.stdout, e.stderr));
    let p = rt.out(&["ps", id]);
    note(
        "ps",
        p.code,
        p.stdout.lines().next().unwrap_or("").to_string(),
    );
    let p = rt.out(&["ps", "--format", "json", id]);
    note("ps json", p.code, String::new());
    for step in ["pause", "resume"] {
        let r = rt.out(&[step, id]);
        note(step, r.code, normalize(&r.stderr, &subst));
        let s = rt.state(id).expect("state");
        note(&format!("{step} state"), 0, s["status"].to_string());
    }
    let u = rt.out(&["update", "--pids-limit", "50", id]);
    note("update", u.code, normalize(&u.stderr, &subst));
    let ev = rt.out(&["events", "--stats", id]);
    let v: serde_json::Value = serde_json::from_str(&ev.stdout).expect("events json");
    note(
        "events --stats",
        ev.code,
        format!("{} {:?}", v["type"], json_keys(&v["data"])),
    );
    let r = rt.out(&["delete", id]);
    note("delete running", r.code, normalize(&r.stderr, &subst));
    let r = rt.out(&["kill", id, "KILL"]);
    note("kill", r.code, normalize(&r.stderr, &subst));
    rt.wait_status(id, "stopped");
    let r = rt.out(&["delete", id]);
    note("delete", r.code, normalize(&r.stderr, &subst));
    let r = rt.out(&["state", id]);
    note("state missing", r.code, normalize(&r.stderr, &subst));
    let r = rt.out(&["kill", id]);
    note("kill missing", r.code, normalize(&r.stderr, &subst));
    let r = rt.out(&["no-such-command"]);
    note("unknown command", r.code, normalize(&r.stdout, &subst));
    obs
}

#[test]
fn pass_through_behaves_like_runc() {
    if !runc_available() {
        return;
    }
    let env = Env::new();
    let mut results = Vec::new();
    for (name, rt_of) in [
        ("runc", Rt::runc as fn(&Path) -> Rt),
        ("cedana-runc", Rt::cedana),
    ] {
        let root = env.path(&format!("{name}-root"));
        let bundle = env.path(&format!("{name}-bundle"));
        build_bundle(&bundle, &["sleep", "1000"], Net::Own);
        let _guard = Ctr::new(&root, "diff");
        results.push(lifecycle(&rt_of(&root), &bundle, "diff"));
    }
    let (runc, ours) = (&results[0], &results[1]);
    assert_eq!(runc.len(), ours.len());
    for (a, b) in runc.iter().zip(ours) {
        assert_eq!(a, b, "step {} differs (runc vs cedana-runc)", a.0);
    }
    // Sanity: the steps did what they should.
    let code = |step: &str| runc.iter().find(|o| o.0 == step).map(|o| o.1);
    assert_eq!(code("exec exit 3"), Some(3));
    assert_eq!(code("run -d"), Some(0));
    assert_ne!(code("state missing"), Some(0));
}

#[test]
fn version_and_exit_codes_pass_through() {
    if !runc_available() {
        return;
    }
    let env = Env::new();
    let root = env.path("root");
    let a = Rt::runc(&root).out(&["--version"]);
    let b = Rt::cedana(&root).out(&["--version"]);
    assert_eq!(
        (a.code, &a.stdout, &a.stderr),
        (b.code, &b.stdout, &b.stderr)
    );
    let a = Rt::runc(&root).out(&["checkpoint"]);
    let b = Rt::cedana(&root).out(&["checkpoint"]);
    assert_eq!(a.code, b.code);
    assert_eq!(normalize(&a.stderr, &[]), normalize(&b.stderr, &[]));
}

#[test]
fn bad_input_is_refused_and_leaves_the_original_untouched() {
    if !runc_available() {
        return;
    }
    let env = Env::new();
    let root = env.path("runc-root");
    let bundle = env.path("bundle");
    build_bundle(&bundle, COUNTER, Net::Own);
    let b = bundle.to_str().expect("utf8");
    let cr = Rt::cedana(&root);

    // Unknown container: clear error, nothing written.
    let img = env.path("img-none");
    let i = img.to_str().expect("utf8");
    cr.out(&["checkpoint", "--image-path", i, "nope"])
        .fails_with("does not exist");
    assert!(!img.join("metadata.json").exists());

    // A created (not started) container cannot be checkpointed; it stays as it was.
    let _g1 = Ctr::new(&root, "created");
    let (code, err) = cr.detached(&["create", "--bundle", b, "created"], &bundle);
    assert_eq!(code, 0, "create: {err}");
    cr.out(&["checkpoint", "--image-path", i, "created"])
        .fails_with("not running");
    assert_eq!(
        cr.state("created").expect("still there")["status"],
        "created"
    );

    // Restore into an existing id: refused, the running container untouched.
    let _g2 = Ctr::new(&root, "live");
    cr.run_detached(&bundle, "live");
    let count = bundle.join("rootfs/tmp/count");
    wait_above(&count, 3);
    let img = env.path("img");
    let i = img.to_str().expect("utf8");
    cr.out(&["checkpoint", "--leave-running", "--image-path", i, "live"])
        .ok();
    assert_eq!(cr.state("live").expect("left running")["status"], "running");
    let (code, err) = cr.detached(
        &["restore", "-d", "--image-path", i, "--bundle", b, "live"],
        &bundle,
    );
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
    let before = *numbers(&count).last().expect("count");
    wait_above(&count, before + 2);

    // A corrupted image: refused before runc runs; no container is created.
    let mut pages: Vec<_> = fs::read_dir(&img)
        .expect("img")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("pages-"))
        })
        .collect();
    pages.sort();
    let victim = pages.first().expect("a pages image");
    let mut bytes = fs::read(victim).expect("read");
    bytes[0] ^= 0xff;
    fs::write(victim, bytes).expect("write");
    let (code, err) = cr.detached(
        &["restore", "-d", "--image-path", i, "--bundle", b, "other"],
        &bundle,
    );
    let _g3 = Ctr::new(&root, "other");
    assert_ne!(code, 0);
    assert!(err.contains("is corrupt"), "{err}");
    assert!(cr.state("other").is_none(), "no container made");
    assert_eq!(cr.state("live").expect("untouched")["status"], "running");
}

#[test]
fn a_successful_restore_leaves_no_error_line_in_the_runtime_log() {
    if !runc_available() {
        return;
    }
    let env = Env::new();
    let root = env.path("runc-root");
    let bundle = env.path("bundle");
    build_bundle(&bundle, COUNTER, Net::Own);
    let count = bundle.join("rootfs/tmp/count");
    let cr = Rt::cedana(&root);
    let _guard = Ctr::new(&root, "logged");
    let b = bundle.to_str().expect("utf8");
    cr.run_detached(&bundle, "logged");
    wait_above(&count, 3);
    // As containerd's shim calls the runtime: a JSON --log it reads errors back from.
    let log = env.path("runtime.log");
    let l = log.to_str().expect("utf8");
    let img = env.path("img");
    let i = img.to_str().expect("utf8");
    let logged = ["--log", l, "--log-format", "json"];
    cr.out(&[&logged[..], &["checkpoint", "--image-path", i, "logged"]].concat())
        .ok();
    let last = *numbers(&count).last().expect("counted");
    let restore = [
        &logged[..],
        &["restore", "-d", "--image-path", i, "--bundle", b, "logged"],
    ]
    .concat();
    let (code, err) = cr.detached(&restore, &bundle);
    assert_eq!(code, 0, "restore: {err}");
    assert_eq!(next_after(&count, last), last + 1, "counter continued");
    let text = fs::read_to_string(&log).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v["level"] == "error")
        })
        .collect();
    assert!(
        errors.is_empty(),
        "a successful checkpoint and restore logged errors: {errors:?}"
    );
}
