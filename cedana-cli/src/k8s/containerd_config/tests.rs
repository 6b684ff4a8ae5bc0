//! Golden tests on real containerd configs: `containerd config default` of 1.7 (v2) and a
//! 2.x config (v3). `CEDANA_TEST_BLESS=1` rewrites the golden files.

use std::path::PathBuf;

use super::*;

const SHIM: &str = "/usr/local/bin/containerd-shim-cedana-v2";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/k8s-helper")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Compares with a golden file (or writes it under CEDANA_TEST_BLESS).
fn golden(name: &str, actual: &str) {
    if std::env::var_os("CEDANA_TEST_BLESS").is_some() {
        std::fs::write(fixture(name), actual).expect("bless");
        return;
    }
    assert_eq!(actual, read(name), "golden file {name} differs");
}

/// Install twice, then uninstall: the first adds the golden table, the second changes
/// nothing, the removal gives back the original bytes.
fn round_trip(original: &str, installed: &str, layout: Layout) {
    let text = read(original);
    let mut config = ContainerdConfig::parse(&text).expect("parse");
    assert_eq!(config.layout(), layout);
    assert!(!config.has_runtime());
    assert!(config.add_runtime(SHIM).expect("add"));
    let after = config.to_string();
    golden(installed, &after);

    let mut again = ContainerdConfig::parse(&after).expect("reparse");
    assert!(again.has_runtime());
    assert!(!again.add_runtime(SHIM).expect("add again"));
    assert_eq!(again.to_string(), after, "a second install changes nothing");

    assert!(again.remove_runtime());
    assert_eq!(
        again.to_string(),
        text,
        "uninstall gives back the original bytes"
    );
    assert!(!again.remove_runtime());
}

#[test]
fn v2_containerd_1_7_default_config() {
    round_trip(
        "v2-containerd-1.7-default.toml",
        "v2-containerd-1.7-default.installed.toml",
        Layout::V2,
    );
}

#[test]
fn v3_containerd_2_config_keeps_comments_and_quoting() {
    round_trip(
        "v3-containerd-2.toml",
        "v3-containerd-2.installed.toml",
        Layout::V3,
    );
    let after = read("v3-containerd-2.installed.toml");
    assert!(after.contains("# The default runtime."), "{after}");
    assert!(after.contains("[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]"));
}

#[test]
fn a_bare_config_gets_the_table_without_empty_parents() {
    let mut config = ContainerdConfig::parse("version = 2\n").expect("parse");
    assert!(config.add_runtime(SHIM).expect("add"));
    let text = config.to_string();
    assert!(!text.contains("[plugins]\n"), "{text}");
    assert!(
        text.contains(&Layout::V2.runtime_table()),
        "{text} lacks {}",
        Layout::V2.runtime_table()
    );
    assert!(config.remove_runtime());
}

#[test]
fn drop_in_for_an_imported_directory() {
    golden("drop-in-v2.toml", &drop_in(Layout::V2, SHIM));
    golden("drop-in-v3.toml", &drop_in(Layout::V3, SHIM));
    let parsed = ContainerdConfig::parse(&drop_in(Layout::V3, SHIM)).expect("parse");
    assert!(parsed.has_runtime());
}

#[test]
fn imports_are_listed() {
    let config = ContainerdConfig::parse(&read("v2-with-imports.toml")).expect("parse");
    assert_eq!(config.imports(), ["/etc/containerd/conf.d/*.toml"]);
}

#[test]
fn unsupported_versions_say_how_to_migrate() {
    for text in ["", "version = 1\n", "root = \"/x\"\n"] {
        let err = ContainerdConfig::parse(text).expect_err(text).to_string();
        assert!(err.contains("containerd config migrate"), "{err}");
    }
}

#[test]
fn a_key_in_the_way_is_reported_not_overwritten() {
    let mut config = ContainerdConfig::parse("version = 2\nplugins = 3\n").expect("parse");
    let err = config.add_runtime(SHIM).expect_err("plugins is no table");
    assert!(
        err.to_string().contains("`plugins` is not a table"),
        "{err}"
    );
    assert_eq!(config.to_string(), "version = 2\nplugins = 3\n");
}

#[test]
fn an_admins_own_cedana_runtime_is_left_alone() {
    let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.cedana]\n  runtime_type = \"io.containerd.cedana.v2\"\n  SystemdCgroup = true\n";
    let mut config = ContainerdConfig::parse(text).expect("parse");
    assert!(!config.add_runtime(SHIM).expect("add"));
    assert_eq!(config.to_string(), text);
}
