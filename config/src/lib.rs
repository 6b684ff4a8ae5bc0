//! Typed configuration for cedana.
//!
//! Values are resolved in order: built-in defaults, then the JSON config file
//! (`<config dir>/config.json`, nested objects or dotted top-level keys), then
//! `CEDANA_*` environment variables (`checkpoint.dir` -> `CEDANA_CHECKPOINT_DIR`),
//! then `key=value` overrides from command-line flags.

mod error;
mod file;
mod keys;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::{ConfigError, Origin};
pub use keys::{KeyInfo, LOG_LEVELS, NON_CONFIG_ENV, TEST_ENV_PREFIX};

/// Directory searched for the config file when none is given.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/cedana";
/// Name of the config file inside the config directory.
pub const CONFIG_FILE_NAME: &str = "config.json";
/// Environment variable naming the config directory.
pub const CONFIG_DIR_ENV: &str = "CEDANA_CONFIG_DIR";
/// Accepted values of `criu.network_lock` (CRIU's `--network-lock`).
pub const NETWORK_LOCKS: &[&str] = &["iptables", "nftables", "skip"];
/// Accepted values of `checkpoint.compression`.
pub const COMPRESSIONS: &[&str] = &["none", "tar", "gzip", "lz4", "zstd"];
/// Accepted values of `gpu.backend`: who moves a GPU job's state.
pub const GPU_BACKENDS: &[&str] = &["auto", "criu-plugin", "cuda-checkpoint", "driver-api"];

/// Complete daemon configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Unix socket path the daemon listens on.
    pub address: PathBuf,
    /// Group owning the socket (mode 0660); `None` means mode 0600.
    pub socket_group: Option<String>,
    /// Path of the daemon's SQLite database.
    pub db_path: PathBuf,
    /// Log level: one of [`LOG_LEVELS`].
    pub log_level: String,
    /// Checkpoint settings.
    pub checkpoint: CheckpointConfig,
    /// CRIU settings.
    pub criu: CriuConfig,
    /// Job settings.
    pub jobs: JobsConfig,
    /// Container runtime settings (the runc plugin and `cedana-runc`).
    pub runc: RuncConfig,
    /// GPU settings (the gpu plugin).
    pub gpu: GpuConfig,
    /// Object storage settings (`s3.*`) for `s3://` checkpoints.
    pub s3: S3Config,
    /// kata settings (`kata.*`): where kata's runtime keeps its VMs' sockets.
    pub kata: KataConfig,
}

/// kata settings (`kata.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KataConfig {
    /// kata's runtime state root (`/run/vc`): `vm/SANDBOX/clh.sock` (Cloud Hypervisor),
    /// `firecracker/SANDBOX/root/kata.hvsock` (Firecracker).
    pub vm_root: PathBuf,
}

/// Object storage settings (`s3.*`); credentials only ever come from the `AWS_*`
/// environment, never from a file that could be shown or copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible server (over `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Region (over `AWS_REGION`).
    pub region: Option<String>,
}

/// Checkpoint settings (`checkpoint.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// Where checkpoints are stored: an absolute directory or an `s3://BUCKET/PREFIX`
    /// URL (kept as its text).
    pub dir: PathBuf,
    /// Compression: one of [`COMPRESSIONS`].
    pub compression: String,
    /// Leave the process running after checkpointing.
    pub leave_running: bool,
    /// Where CRIU's images wait before they are packed into an archive, when they fit.
    pub staging_dir: PathBuf,
}

/// CRIU settings (`criu.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CriuConfig {
    /// CRIU binary: an absolute path, or a bare name to look up in `PATH`.
    pub binary_path: PathBuf,
    /// Milliseconds to wait for a restored process's pid.
    pub pid_wait_timeout_ms: u64,
    /// How CRIU keeps TCP peers off a dumped tree's connections: one of
    /// [`NETWORK_LOCKS`].
    pub network_lock: String,
}

/// Container runtime settings (`runc.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuncConfig {
    /// OCI runtime binary (runc, crun, ...): an absolute path, or a bare name to look up in `PATH`.
    pub binary_path: PathBuf,
}

/// GPU settings (`gpu.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuConfig {
    /// Directory holding the GPU device nodes (`nvidia0`, `nvidiactl`, `nvidia-uvm`, `kfd`).
    pub device_dir: PathBuf,
    /// NVIDIA's `cuda-checkpoint` tool: an absolute path, or a bare name to look up in `PATH`.
    pub cuda_checkpoint: PathBuf,
    /// `nvidia-smi`: an absolute path, or a bare name to look up in `PATH`.
    pub nvidia_smi: PathBuf,
    /// Milliseconds a GPU lock may wait for the job's running CUDA calls.
    pub lock_timeout_ms: u64,
    /// Who moves a GPU job's state: one of [`GPU_BACKENDS`].
    pub backend: String,
}

/// Job settings (`jobs.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobsConfig {
    /// Directory holding per-job log files.
    pub log_dir: PathBuf,
}

impl Default for Config {
    /// Every key at its declared default (`keys.rs`).
    fn default() -> Self {
        let mut config = Config {
            address: PathBuf::new(),
            socket_group: None,
            db_path: PathBuf::new(),
            log_level: String::new(),
            checkpoint: CheckpointConfig::default(),
            criu: CriuConfig::default(),
            jobs: JobsConfig::default(),
            runc: RuncConfig::default(),
            s3: S3Config::default(),
            gpu: GpuConfig::default(),
            kata: KataConfig::default(),
        };
        for key in keys::KEYS {
            // The defaults are constants, parsed by the same rules as user text; the
            // key-table test fails on one that does not parse.
            let _ = keys::set_from(&mut config, key.info.key, key.info.default, &Origin::Config);
        }
        config
    }
}

impl Config {
    /// Load: defaults <- file (`config_dir/config.json` if it exists; missing file is fine; `None` reads no file) <- env <- overrides.
    pub fn load(
        config_dir: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(dir) = config_dir {
            file::apply_file(&mut config, &file::config_file(dir))?;
        }
        file::apply_env(&mut config, env)?;
        for (key, value) in overrides {
            keys::set_from(&mut config, key, value, &Origin::Flag)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Load from the process environment; the config dir is `config_dir`, else `$CEDANA_CONFIG_DIR`, else [`DEFAULT_CONFIG_DIR`].
    pub fn load_default(
        config_dir: Option<&Path>,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut env = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Ok(name) = name.into_string() else {
                continue;
            };
            match value.into_string() {
                Ok(value) => env.push((name, value)),
                Err(raw) if name.starts_with("CEDANA_") => {
                    return Err(ConfigError::BadValue {
                        key: keys::key_for_env(&name).unwrap_or(&name).to_string(),
                        value: raw.to_string_lossy().into_owned(),
                        expected: "valid UTF-8 text".into(),
                        origin: Origin::Env(name),
                    });
                }
                Err(_) => {}
            }
        }
        let env_dir = env
            .iter()
            .find(|(name, value)| name == CONFIG_DIR_ENV && !value.is_empty())
            .map(|(_, value)| PathBuf::from(value));
        let dir = config_dir
            .map(Path::to_path_buf)
            .or(env_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR));
        Config::load(Some(&dir), env, overrides)
    }

    /// Set a dotted key (e.g. `checkpoint.compression`) from text, as a command-line override would.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        keys::set_from(self, key, value, &Origin::Flag)
    }

    /// Get a dotted key's value as text (an unset `socket_group` is empty).
    pub fn get(&self, key: &str) -> Result<String, ConfigError> {
        keys::get(self, key).ok_or_else(|| ConfigError::UnknownKey {
            key: key.to_string(),
            origin: Origin::Flag,
            known: keys::known_keys(),
        })
    }

    /// All configuration keys with their env var, default and help text.
    pub fn keys() -> impl ExactSizeIterator<Item = &'static KeyInfo> {
        keys::KEYS.iter().map(|k| &k.info)
    }

    /// Check every value (absolute paths, known choices, positive numbers).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for key in keys::KEYS {
            let name = key.info.key;
            let value = keys::get(self, name).unwrap_or_default();
            let bad = |expected: String| ConfigError::BadValue {
                key: name.to_string(),
                value: value.clone(),
                expected,
                origin: Origin::Config,
            };
            if matches!(key.field, keys::Field::OptGroup(..))
                && self.socket_group.as_deref() == Some("")
            {
                return Err(bad("a group name, or no value (null) for mode 0600".into()));
            }
            // A value is valid when setting its own text keeps it as it is: choices are
            // case-insensitive as input but must be stored canonically.
            let mut probe = self.clone();
            keys::set_from(&mut probe, name, &value, &Origin::Config)?;
            if keys::get(&probe, name).as_deref() != Some(value.as_str()) {
                let expected = keys::kind(name).map(|k| k.expected()).unwrap_or_default();
                return Err(bad(expected));
            }
        }
        Ok(())
    }

    /// The configuration as pretty-printed nested JSON, loadable as a config file.
    pub fn to_json_pretty(&self) -> String {
        let mut root = serde_json::Map::new();
        let mut sections: BTreeMap<&str, serde_json::Map<String, serde_json::Value>> =
            BTreeMap::new();
        for key in keys::KEYS {
            let value = key.field.json(self);
            match key.info.key.split_once('.') {
                Some((section, leaf)) => {
                    sections
                        .entry(section)
                        .or_default()
                        .insert(leaf.to_string(), value);
                }
                None => {
                    root.insert(key.info.key.to_string(), value);
                }
            }
        }
        for (section, map) in sections {
            root.insert(section.to_string(), serde_json::Value::Object(map));
        }
        format!("{:#}", serde_json::Value::Object(root))
    }
}
