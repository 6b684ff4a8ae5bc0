use std::path::{Path, PathBuf};

use crate::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn flags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    env(pairs)
}

fn dir_with(contents: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(CONFIG_FILE_NAME), contents).expect("write config");
    dir
}

fn load_file(contents: &str) -> Result<Config, ConfigError> {
    let dir = dir_with(contents);
    Config::load(Some(dir.path()), env(&[]), &[])
}

#[test]
fn defaults() {
    let c = Config::default();
    assert_eq!(c.address, PathBuf::from("/run/cedana.sock"));
    assert_eq!(c.socket_group, None);
    assert_eq!(c.db_path, PathBuf::from("/var/lib/cedana/cedana.db"));
    assert_eq!(c.log_level, "info");
    assert_eq!(
        c.checkpoint.dir,
        PathBuf::from("/var/lib/cedana/checkpoints")
    );
    assert_eq!(c.checkpoint.compression, "zstd");
    assert!(!c.checkpoint.leave_running);
    assert_eq!(c.checkpoint.staging_dir, PathBuf::from("/dev/shm"));
    assert_eq!(c.criu.binary_path, PathBuf::from("criu"));
    assert_eq!(c.criu.pid_wait_timeout_ms, 5000);
    assert_eq!(c.jobs.log_dir, PathBuf::from("/var/lib/cedana/jobs"));
    assert_eq!(c.runc.binary_path, PathBuf::from("runc"));
    assert_eq!(c.gpu.device_dir, PathBuf::from("/dev"));
    assert_eq!(c.gpu.lock_timeout_ms, 10000);
    assert_eq!(c.gpu.backend, "auto");
    c.validate().expect("defaults are valid");
}

#[test]
fn key_table_matches_defaults_and_env_names() {
    let c = Config::default();
    assert_eq!(Config::keys().len(), 21);
    for info in Config::keys() {
        assert_eq!(
            c.get(info.key).expect("known key"),
            info.default,
            "{}",
            info.key
        );
        let env = format!("CEDANA_{}", info.key.to_uppercase().replace('.', "_"));
        assert_eq!(info.env, env);
        assert!(!info.help.is_empty());
    }
}

#[test]
fn every_key_round_trips_through_set_and_get() {
    let mut c = Config::default();
    let values = [
        ("address", "/tmp/x.sock"),
        ("socket_group", "cedana"),
        ("db_path", "/tmp/db"),
        ("log_level", "debug"),
        ("checkpoint.dir", "/tmp/ckpt"),
        ("checkpoint.compression", "lz4"),
        ("checkpoint.leave_running", "true"),
        ("criu.binary_path", "/usr/sbin/criu"),
        ("criu.pid_wait_timeout_ms", "123"),
        ("jobs.log_dir", "/tmp/jobs"),
        ("runc.binary_path", "crun"),
        ("gpu.backend", "criu-plugin"),
    ];
    for (k, v) in values {
        c.set(k, v).expect("valid value");
        assert_eq!(c.get(k).expect("known"), v);
    }
    c.validate().expect("valid");
    assert_eq!(c.socket_group.as_deref(), Some("cedana"));
    assert!(c.checkpoint.leave_running);
    assert_eq!(c.criu.pid_wait_timeout_ms, 123);
}

#[test]
fn missing_dir_or_file_is_fine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Config::load(Some(dir.path()), env(&[]), &[]).expect("load");
    assert_eq!(c, Config::default());
    let c = Config::load(Some(&dir.path().join("nope")), env(&[]), &[]).expect("load");
    assert_eq!(c, Config::default());
    let c = Config::load(None, env(&[]), &[]).expect("load");
    assert_eq!(c, Config::default());
}

#[test]
fn file_nested() {
    let c = load_file(
        r#"{"address": "/tmp/a.sock", "socket_group": "wheel", "log_level": "warn",
            "checkpoint": {"dir": "/x", "compression": "gzip", "leave_running": true},
            "criu": {"binary_path": "criu-dev", "pid_wait_timeout_ms": 42},
            "jobs": {"log_dir": "/j"}, "runc": {"binary_path": "/usr/bin/crun"}}"#,
    )
    .expect("load");
    assert_eq!(c.runc.binary_path, PathBuf::from("/usr/bin/crun"));
    assert_eq!(c.address, PathBuf::from("/tmp/a.sock"));
    assert_eq!(c.socket_group.as_deref(), Some("wheel"));
    assert_eq!(c.log_level, "warn");
    assert_eq!(c.checkpoint.dir, PathBuf::from("/x"));
    assert_eq!(c.checkpoint.compression, "gzip");
    assert!(c.checkpoint.leave_running);
    assert_eq!(c.criu.binary_path, PathBuf::from("criu-dev"));
    assert_eq!(c.criu.pid_wait_timeout_ms, 42);
    assert_eq!(c.jobs.log_dir, PathBuf::from("/j"));
}

#[test]
fn file_dotted_and_null_group() {
    let c = load_file(
        r#"{"checkpoint.dir": "/x", "criu.pid_wait_timeout_ms": 7, "socket_group": null,
            "jobs": {"log_dir": "/j"}}"#,
    )
    .expect("load");
    assert_eq!(c.checkpoint.dir, PathBuf::from("/x"));
    assert_eq!(c.criu.pid_wait_timeout_ms, 7);
    assert_eq!(c.socket_group, None);
    assert_eq!(c.jobs.log_dir, PathBuf::from("/j"));
}

#[test]
fn file_duplicate_nested_and_dotted_is_error() {
    let err = load_file(r#"{"checkpoint.dir": "/x", "checkpoint": {"dir": "/y"}}"#).unwrap_err();
    assert!(
        matches!(&err, ConfigError::DuplicateKey { key, .. } if key == "checkpoint.dir"),
        "{err}"
    );
}

#[test]
fn file_unknown_keys_name_full_key_and_path() {
    for (json, key) in [
        (r#"{"bogus": 1}"#, "bogus"),
        (r#"{"checkpoint": {"bogus": 1}}"#, "checkpoint.bogus"),
        (r#"{"checkpoint.bogus": 1}"#, "checkpoint.bogus"),
        (r#"{"nope": {"dir": "/x"}}"#, "nope"),
    ] {
        let dir = dir_with(json);
        let err = Config::load(Some(dir.path()), env(&[]), &[]).unwrap_err();
        let msg = err.to_string();
        match &err {
            ConfigError::UnknownKey { key: k, origin, .. } => {
                assert_eq!(k, key);
                assert_eq!(origin, &Origin::File(dir.path().join(CONFIG_FILE_NAME)));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(msg.contains(key), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(
            msg.contains("checkpoint.compression"),
            "lists valid keys: {msg}"
        );
    }
}

#[test]
fn file_wrong_types_name_key() {
    for (json, key) in [
        (
            r#"{"checkpoint": {"leave_running": "yes"}}"#,
            "checkpoint.leave_running",
        ),
        (
            r#"{"criu": {"pid_wait_timeout_ms": "5"}}"#,
            "criu.pid_wait_timeout_ms",
        ),
        (
            r#"{"criu": {"pid_wait_timeout_ms": -5}}"#,
            "criu.pid_wait_timeout_ms",
        ),
        (
            r#"{"criu": {"pid_wait_timeout_ms": 1.5}}"#,
            "criu.pid_wait_timeout_ms",
        ),
        (r#"{"address": 5}"#, "address"),
        (r#"{"address": null}"#, "address"),
        (r#"{"socket_group": 5}"#, "socket_group"),
        (r#"{"checkpoint": "/x"}"#, "checkpoint"),
    ] {
        let err = load_file(json).unwrap_err();
        assert!(
            matches!(&err, ConfigError::WrongType { key: k, .. } if k == key),
            "{json}: {err:?}"
        );
        assert!(err.to_string().contains(key));
    }
}

#[test]
fn file_bad_values_and_syntax() {
    let err = load_file(r#"{"checkpoint": {"compression": "rar"}}"#).unwrap_err();
    assert!(
        matches!(&err, ConfigError::BadValue { key, origin: Origin::File(_), .. }
        if key == "checkpoint.compression")
    );
    assert!(
        err.to_string().contains("none, tar, gzip, lz4, zstd"),
        "{err}"
    );

    let err = load_file(r#"{"criu": {"pid_wait_timeout_ms": 0}}"#).unwrap_err();
    assert!(matches!(err, ConfigError::BadValue { .. }), "{err:?}");

    let err = load_file("{not json").unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");

    let err = load_file("[1, 2]").unwrap_err();
    assert!(matches!(err, ConfigError::NotAnObject { .. }), "{err:?}");
}

#[test]
fn unreadable_file_is_io_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join(CONFIG_FILE_NAME)).expect("mkdir");
    let err = Config::load(Some(dir.path()), env(&[]), &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
}

#[test]
fn precedence_default_file_env_flag() {
    let dir = dir_with(
        r#"{"log_level": "warn", "db_path": "/file/db", "checkpoint": {"dir": "/file/ckpt"},
            "jobs": {"log_dir": "/file/jobs"}}"#,
    );
    let e = env(&[
        ("CEDANA_DB_PATH", "/env/db"),
        ("CEDANA_CHECKPOINT_DIR", "/env/ckpt"),
        ("PATH", "/usr/bin"),
    ]);
    let f = flags(&[("checkpoint.dir", "/flag/ckpt")]);
    let c = Config::load(Some(dir.path()), e, &f).expect("load");
    assert_eq!(c.address, PathBuf::from("/run/cedana.sock")); // default
    assert_eq!(c.log_level, "warn"); // file
    assert_eq!(c.jobs.log_dir, PathBuf::from("/file/jobs")); // file
    assert_eq!(c.db_path, PathBuf::from("/env/db")); // env over file
    assert_eq!(c.checkpoint.dir, PathBuf::from("/flag/ckpt")); // flag over env
}

#[test]
fn env_parses_all_kinds() {
    let c = Config::load(
        None,
        env(&[
            ("CEDANA_CHECKPOINT_LEAVE_RUNNING", "yes"),
            ("CEDANA_CRIU_PID_WAIT_TIMEOUT_MS", "250"),
            ("CEDANA_LOG_LEVEL", "DEBUG"),
            ("CEDANA_SOCKET_GROUP", "docker"),
        ]),
        &[],
    )
    .expect("load");
    assert!(c.checkpoint.leave_running);
    assert_eq!(c.criu.pid_wait_timeout_ms, 250);
    assert_eq!(c.log_level, "debug");
    assert_eq!(c.socket_group.as_deref(), Some("docker"));
}

#[test]
fn booleans_accept_all_spellings() {
    let mut c = Config::default();
    for (v, want) in [
        ("true", true),
        ("false", false),
        ("1", true),
        ("0", false),
        ("yes", true),
        ("no", false),
        ("TRUE", true),
        ("No", false),
    ] {
        c.set("checkpoint.leave_running", v).expect(v);
        assert_eq!(c.checkpoint.leave_running, want, "{v}");
    }
    let err = c.set("checkpoint.leave_running", "maybe").unwrap_err();
    assert!(err.to_string().contains("true/false"), "{err}");
}

#[test]
fn env_allowlist_is_ignored() {
    let c = Config::load(
        None,
        env(&[
            ("CEDANA_CONFIG_DIR", "/somewhere"),
            ("CEDANA_RUNTIME_BINARY", "/bin/true"),
            ("CEDANA_LOG", "trace"),
            ("CEDANA_TEST_ANYTHING", "x"),
            ("cedana_lowercase", "x"),
            ("HOME", "/root"),
        ]),
        &[],
    )
    .expect("load");
    assert_eq!(c, Config::default());
}

#[test]
fn env_unknown_variable_is_error() {
    let err = Config::load(None, env(&[("CEDANA_FOO", "1")]), &[]).unwrap_err();
    assert!(matches!(&err, ConfigError::UnknownEnv { var, .. } if var == "CEDANA_FOO"));
    let msg = err.to_string();
    assert!(
        msg.starts_with("unknown environment variable CEDANA_FOO (known: "),
        "{msg}"
    );
    assert!(msg.contains("CEDANA_CHECKPOINT_DIR"), "{msg}");
    assert!(msg.contains("CEDANA_CONFIG_DIR"), "{msg}");
}

#[test]
fn env_bad_value_names_variable() {
    let err = Config::load(
        None,
        env(&[("CEDANA_CRIU_PID_WAIT_TIMEOUT_MS", "soon")]),
        &[],
    )
    .unwrap_err();
    match &err {
        ConfigError::BadValue {
            key, value, origin, ..
        } => {
            assert_eq!(key, "criu.pid_wait_timeout_ms");
            assert_eq!(value, "soon");
            assert_eq!(
                origin,
                &Origin::Env("CEDANA_CRIU_PID_WAIT_TIMEOUT_MS".into())
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("CEDANA_CRIU_PID_WAIT_TIMEOUT_MS"));
}

#[test]
fn flag_unknown_key_is_error() {
    let err = Config::load(None, env(&[]), &flags(&[("checkpoint.nope", "1")])).unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnknownKey { key, origin: Origin::Flag, .. }
        if key == "checkpoint.nope")
    );
    assert!(err.to_string().contains("valid keys are"), "{err}");
    assert!(Config::default().get("nope").is_err());
    assert!(Config::default().set("checkpoint", "/x").is_err());
}

#[test]
fn bad_values_are_rejected() {
    let mut c = Config::default();
    for (k, v) in [
        ("address", ""),
        ("address", "relative.sock"),
        ("db_path", "db"),
        ("checkpoint.dir", ""),
        ("jobs.log_dir", "./jobs"),
        ("criu.binary_path", ""),
        ("criu.binary_path", "bin/criu"),
        ("runc.binary_path", "bin/runc"),
        ("runc.binary_path", ""),
        ("criu.pid_wait_timeout_ms", "-1"),
        ("criu.pid_wait_timeout_ms", "0"),
        ("criu.pid_wait_timeout_ms", "1.5"),
        ("log_level", "verbose"),
        ("checkpoint.compression", "bzip2"),
        ("socket_group", "a b"),
    ] {
        let err = c.set(k, v).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadValue { key, .. } if key == k),
            "{k}={v}: {err:?}"
        );
        assert!(err.to_string().contains("expected"), "{err}");
    }
    assert_eq!(c, Config::default(), "failed sets leave config unchanged");
    let err = c.set("log_level", "loud").unwrap_err();
    assert!(
        err.to_string().contains("error, warn, info, debug, trace"),
        "{err}"
    );
}

#[test]
fn empty_socket_group_unsets() {
    let mut c = Config::default();
    c.set("socket_group", "cedana").expect("set");
    c.set("socket_group", "").expect("unset");
    assert_eq!(c.socket_group, None);
    assert_eq!(c.get("socket_group").expect("get"), "");
}

#[test]
fn validate_catches_direct_edits() {
    fn edited(edit: impl FnOnce(&mut Config)) -> Config {
        let mut c = Config::default();
        edit(&mut c);
        c
    }
    let c = edited(|c| c.checkpoint.compression = "rar".into());
    assert!(
        matches!(c.validate(), Err(ConfigError::BadValue { key, origin: Origin::Config, .. })
            if key == "checkpoint.compression")
    );
    assert!(edited(|c| c.log_level = "INFO".into()).validate().is_err());
    assert!(edited(|c| c.address = PathBuf::from("rel"))
        .validate()
        .is_err());
    assert!(edited(|c| c.socket_group = Some(String::new()))
        .validate()
        .is_err());
    assert!(edited(|c| c.criu.pid_wait_timeout_ms = 0)
        .validate()
        .is_err());
    assert!(edited(|c| c.jobs.log_dir = PathBuf::new())
        .validate()
        .is_err());
    edited(|c| c.criu.binary_path = PathBuf::from("/opt/criu/bin/criu"))
        .validate()
        .expect("absolute criu path ok");
}

#[test]
fn json_round_trip() {
    let mut c = Config::default();
    c.set("socket_group", "cedana").expect("set");
    c.set("checkpoint.leave_running", "1").expect("set");
    let dir = dir_with(&c.to_json_pretty());
    let loaded = Config::load(Some(dir.path()), env(&[]), &[]).expect("load");
    assert_eq!(loaded, c);

    let defaults = Config::default().to_json_pretty();
    assert!(defaults.contains("\"socket_group\": null"), "{defaults}");
    assert!(defaults.contains('\n'));
    let dir = dir_with(&defaults);
    let loaded = Config::load(Some(dir.path()), env(&[]), &[]).expect("load");
    assert_eq!(loaded, Config::default());
}

#[test]
fn constants() {
    assert_eq!(DEFAULT_CONFIG_DIR, "/etc/cedana");
    assert_eq!(CONFIG_FILE_NAME, "config.json");
    assert_eq!(CONFIG_DIR_ENV, "CEDANA_CONFIG_DIR");
    assert_eq!(COMPRESSIONS, &["none", "tar", "gzip", "lz4", "zstd"]);
    assert!(Path::new(DEFAULT_CONFIG_DIR).is_absolute());
}

#[test]
fn load_default_with_explicit_dir() {
    // Only checks the explicit-dir path; the process env in tests may hold CEDANA_TEST_* only.
    let dir = dir_with(r#"{"log_level": "trace"}"#);
    let polluted = std::env::vars().any(|(k, _)| {
        k.starts_with("CEDANA_")
            && !k.starts_with(TEST_ENV_PREFIX)
            && !NON_CONFIG_ENV.contains(&k.as_str())
    });
    if polluted {
        return;
    }
    let c =
        Config::load_default(Some(dir.path()), &flags(&[("log_level", "error")])).expect("load");
    assert_eq!(c.log_level, "error");
    let c = Config::load_default(Some(dir.path()), &[]).expect("load");
    assert_eq!(c.log_level, "trace");
}

#[test]
fn checkpoint_dir_takes_s3_urls_and_refuses_other_schemes_by_name() {
    let mut c = Config::default();
    c.set("checkpoint.dir", "s3://ckpts/prefix")
        .expect("s3 url");
    assert_eq!(c.checkpoint.dir, PathBuf::from("s3://ckpts/prefix"));
    c.validate().expect("valid");
    for bad in ["gs://b/x", "http://h/x", "s3://", "relative/dir"] {
        let err = c.set("checkpoint.dir", bad).expect_err(bad).to_string();
        assert!(err.contains("s3://BUCKET/PREFIX"), "{bad}: {err}");
    }
    c.set("s3.endpoint", "http://127.0.0.1:9000")
        .expect("endpoint");
    assert_eq!(c.s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    c.set("s3.endpoint", "").expect("unset");
    assert_eq!(c.s3.endpoint, None);
    assert!(c.set("s3.region", "us east").is_err());
}
