//! AWS profiles: a daemon whose environment has no `AWS_*` secrets, only `AWS_PROFILE`
//! and the paths of a credentials and a config file (key pair in the first; region and
//! `endpoint_url` in the second), dumps a counter job to a moto server that checks
//! credentials, and restores it; the job counts on. An `AWS_*` key pair in the
//! environment wins over the profile's (a wrong one is refused), and no secret of
//! either is ever printed.

use cedana_e2e::s3::Moto;
use cedana_e2e::*;

const BUCKET: &str = "profiled";

/// The profile files, and the environment that points at them (and nothing else AWS).
fn profile_env(
    moto: &Moto,
    dir: &std::path::Path,
    id: &str,
    secret: &str,
) -> Vec<(String, String)> {
    let (creds, config) = (dir.join("credentials"), dir.join("config"));
    std::fs::write(
        &creds,
        format!("[default]\naws_access_key_id = AKIAWRONG\naws_secret_access_key = wrong\n\n[ci]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"),
    )
    .expect("credentials");
    std::fs::write(
        &config,
        format!(
            "[profile ci]\nregion = us-east-1\nendpoint_url = {}\n",
            moto.endpoint()
        ),
    )
    .expect("config");
    vec![
        ("AWS_PROFILE".into(), "ci".into()),
        (
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            creds.display().to_string(),
        ),
        ("AWS_CONFIG_FILE".into(), config.display().to_string()),
    ]
}

#[test]
fn a_profile_reaches_the_bucket_and_env_keys_win_over_it() {
    if !e2e_enabled() {
        return;
    }
    // What would reach the server other than through the profile.
    let inherited: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| {
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_REGION",
                "AWS_DEFAULT_REGION",
                "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT",
                "AWS_PROFILE",
            ]
            .contains(&k.as_str())
        })
        .collect();
    assert!(
        inherited.is_empty(),
        "run without AWS_* in the environment: {inherited:?}"
    );
    let Some((moto, id, secret)) = Moto::start_with_s3_user(BUCKET) else {
        panic!("moto did not start with auth (run scripts/install-deps.sh)");
    };
    let files = tempfile::tempdir().expect("tempdir");
    let vars = profile_env(&moto, files.path(), &id, &secret);
    let mut env = Env::new().with_vars(vars.clone());
    env.start_daemon();
    let log = env.run_counter_job("p");
    let url = format!("s3://{BUCKET}/p");
    let d = env
        .cedana(&["--json", "dump", "job", "p", "--dir", &url])
        .ok()
        .json();
    let path = d["path"].as_str().expect("path").to_string();
    assert!(path.starts_with(&url), "{d}");
    let at_dump = last_count(&log).expect("count");
    env.cedana(&["restore", "job", "p", "--path", &path]).ok();
    assert_eq!(next_after(&log, at_dump), at_dump + 1);
    env.cedana(&["job", "kill", "p", "--signal", "KILL"]).ok();
    let logged = env.daemon_log();
    assert!(
        !logged.contains(&secret),
        "the profile's secret reached the daemon log"
    );
    drop(env);

    // A key pair in the environment wins over the profile: a wrong one is refused.
    let mut vars = vars;
    vars.push(("AWS_ACCESS_KEY_ID".into(), id.clone()));
    vars.push((
        "AWS_SECRET_ACCESS_KEY".into(),
        "env-secret-wrong-0123".into(),
    ));
    let mut env = Env::new().with_vars(vars);
    env.start_daemon();
    let _log = env.run_counter_job("q");
    let r = env
        .cedana(&["dump", "job", "q", "--dir", &url])
        .fails_with("refused our credentials");
    for s in [secret.as_str(), "env-secret-wrong-0123"] {
        assert!(!r.stderr.contains(s) && !r.stdout.contains(s));
        assert!(!env.daemon_log().contains(s));
    }
    assert_eq!(env.job("q").expect("job")["state"], "running");
}
