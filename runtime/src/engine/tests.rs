//! The engine's routes as built from the registered plugins: every one builds (a
//! misspelt anchor panics here, not in a user's daemon) and is the documented one.

use cedana_config::Config;

use super::Engine;

const DUMP_HOST: &str = "fill_missing_dump_defaults -> validate_dump_request -> \
    prepare_dump_storage -> fill_process_state -> detect_shell_job -> detect_io_uring -> \
    detect_file_options -> detect_network_options -> save_process_state";

#[test]
fn every_registered_route_builds_in_the_documented_order() {
    let chains = Engine::new(Config::default()).chains();
    let route = |name: &str| {
        chains
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("no route {name:?} in {chains:?}"))
    };
    assert_eq!(
        route("dump"),
        format!("{DUMP_HOST} -> gpu_dump -> check_criu_opts_for_dump -> criu_dump")
    );
    assert_eq!(
        route("restore"),
        "fill_missing_restore_defaults -> validate_restore_request -> \
         prepare_restore_storage -> apply_recorded_options -> wait_for_free_pids -> \
         gpu_restore -> check_criu_opts_for_restore -> write_pid_file -> criu_restore"
    );
    assert_eq!(
        route("dump runc"),
        format!(
            "resolve_runc_container -> {DUMP_HOST} -> detect_container_options -> \
             gpu_dump -> check_criu_opts_for_dump -> runc_checkpoint"
        )
    );
    assert_eq!(
        route("restore runc"),
        "fill_missing_restore_defaults -> validate_restore_request -> validate_runc_restore \
         -> prepare_restore_storage -> apply_recorded_options -> ensure_loopback -> \
         gpu_restore -> check_criu_opts_for_restore -> write_pid_file -> runc_restore"
    );
    assert_eq!(
        route("dump containerd"),
        format!(
            "resolve_containerd_container -> resolve_runc_container -> {DUMP_HOST} -> \
             detect_container_options -> gpu_dump -> check_criu_opts_for_dump -> runc_checkpoint"
        )
    );
    assert_eq!(
        route("restore containerd"),
        "fill_missing_restore_defaults -> validate_restore_request -> \
         validate_containerd_restore -> prepare_restore_storage -> apply_recorded_options \
         -> gpu_restore -> check_criu_opts_for_restore -> write_pid_file -> containerd_restore"
    );
    let names: Vec<&str> = chains.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "dump",
            "restore",
            "run",
            "manage",
            "dump containerd",
            "dump runc",
            "restore containerd",
            "restore runc"
        ]
    );
}

#[test]
#[should_panic(expected = "registered twice")]
fn a_plugin_registers_once() {
    use crate::plugins::{process::ProcessPlugin, PluginRegistry};
    let _ = PluginRegistry::builtin().register(ProcessPlugin);
}
