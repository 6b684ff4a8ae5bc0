//! The table of configuration keys and per-key parsing.

use std::path::{Path, PathBuf};

use crate::error::{ConfigError, Origin};
use crate::{Config, COMPRESSIONS};

/// Description of one configuration key, for docs and `cedana config` listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    /// Dotted key, e.g. `checkpoint.compression`.
    pub key: &'static str,
    /// Environment variable overriding the key, e.g. `CEDANA_CHECKPOINT_COMPRESSION`.
    pub env: &'static str,
    /// Default value as text (empty when unset).
    pub default: &'static str,
    /// One-line description.
    pub help: &'static str,
}

/// Accepted values of `log_level`.
pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// Environment variables starting with `CEDANA_` that are not config keys but are allowed.
pub const NON_CONFIG_ENV: &[&str] = &["CEDANA_CONFIG_DIR", "CEDANA_RUNTIME_BINARY", "CEDANA_LOG"];

/// Prefix of environment variables reserved for tests.
pub const TEST_ENV_PREFIX: &str = "CEDANA_TEST_";

pub(crate) static KEYS: &[KeyInfo] = &[
    KeyInfo {
        key: "address",
        env: "CEDANA_ADDRESS",
        default: "/run/cedana.sock",
        help: "Unix socket path the daemon listens on",
    },
    KeyInfo {
        key: "socket_group",
        env: "CEDANA_SOCKET_GROUP",
        default: "",
        help: "Group owning the socket (mode 0660); unset or empty means mode 0600",
    },
    KeyInfo {
        key: "db_path",
        env: "CEDANA_DB_PATH",
        default: "/var/lib/cedana/cedana.db",
        help: "Path of the daemon's SQLite database",
    },
    KeyInfo {
        key: "log_level",
        env: "CEDANA_LOG_LEVEL",
        default: "info",
        help: "Log level: error, warn, info, debug or trace",
    },
    KeyInfo {
        key: "checkpoint.dir",
        env: "CEDANA_CHECKPOINT_DIR",
        default: "/var/lib/cedana/checkpoints",
        help: "Directory where checkpoint images are stored",
    },
    KeyInfo {
        key: "checkpoint.compression",
        env: "CEDANA_CHECKPOINT_COMPRESSION",
        default: "zstd",
        help: "Checkpoint compression: none, tar, gzip, lz4 or zstd",
    },
    KeyInfo {
        key: "checkpoint.leave_running",
        env: "CEDANA_CHECKPOINT_LEAVE_RUNNING",
        default: "false",
        help: "Leave the process running after checkpointing",
    },
    KeyInfo {
        key: "criu.binary_path",
        env: "CEDANA_CRIU_BINARY_PATH",
        default: "criu",
        help: "CRIU binary: an absolute path or a bare name looked up in PATH",
    },
    KeyInfo {
        key: "criu.pid_wait_timeout_ms",
        env: "CEDANA_CRIU_PID_WAIT_TIMEOUT_MS",
        default: "5000",
        help: "Milliseconds to wait for a restored process's pid",
    },
    KeyInfo {
        key: "jobs.log_dir",
        env: "CEDANA_JOBS_LOG_DIR",
        default: "/var/lib/cedana/jobs",
        help: "Directory holding per-job log files",
    },
    KeyInfo {
        key: "runc.binary_path",
        env: "CEDANA_RUNC_BINARY_PATH",
        default: "runc",
        help: "OCI runtime wrapped by cedana-runc and driven by the runc plugin (runc, crun, ...)",
    },
];

/// How a key's value is parsed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    AbsPath,
    Command,
    OptGroup,
    Choice(&'static [&'static str]),
    Bool,
    PositiveU64,
}

/// A parsed value, ready to store.
pub(crate) enum Parsed {
    Path(PathBuf),
    Str(String),
    OptStr(Option<String>),
    Bool(bool),
    U64(u64),
}

pub(crate) fn kind(key: &str) -> Option<Kind> {
    Some(match key {
        "address" | "db_path" | "checkpoint.dir" | "jobs.log_dir" => Kind::AbsPath,
        "criu.binary_path" | "runc.binary_path" => Kind::Command,
        "socket_group" => Kind::OptGroup,
        "log_level" => Kind::Choice(LOG_LEVELS),
        "checkpoint.compression" => Kind::Choice(COMPRESSIONS),
        "checkpoint.leave_running" => Kind::Bool,
        "criu.pid_wait_timeout_ms" => Kind::PositiveU64,
        _ => return None,
    })
}

/// True when `prefix` names a section (e.g. `checkpoint`) containing keys.
pub(crate) fn is_section(prefix: &str) -> bool {
    KEYS.iter().any(|k| {
        k.key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

pub(crate) fn known_keys() -> String {
    KEYS.iter().map(|k| k.key).collect::<Vec<_>>().join(", ")
}

pub(crate) fn known_env() -> String {
    let mut names: Vec<String> = KEYS.iter().map(|k| k.env.to_string()).collect();
    names.extend(NON_CONFIG_ENV.iter().map(|s| s.to_string()));
    names.push(format!("{TEST_ENV_PREFIX}*"));
    names.join(", ")
}

pub(crate) fn key_for_env(var: &str) -> Option<&'static str> {
    KEYS.iter().find(|k| k.env == var).map(|k| k.key)
}

pub(crate) fn is_allowlisted_env(var: &str) -> bool {
    NON_CONFIG_ENV.contains(&var) || var.starts_with(TEST_ENV_PREFIX)
}

impl Kind {
    /// Human description of accepted text values.
    pub(crate) fn expected(self) -> String {
        match self {
            Kind::AbsPath => "a non-empty absolute path (starting with '/')".into(),
            Kind::Command => {
                "an absolute path or a bare command name looked up in PATH (e.g. `criu`)".into()
            }
            Kind::OptGroup => "a group name or numeric gid without whitespace or ':'".into(),
            Kind::Choice(values) => format!("one of: {}", values.join(", ")),
            Kind::Bool => "a boolean: true/false, 1/0 or yes/no".into(),
            Kind::PositiveU64 => "a positive integer".into(),
        }
    }

    /// Human description of the accepted JSON type in the config file.
    pub(crate) fn expected_json(self) -> &'static str {
        match self {
            Kind::Bool => "a boolean (true or false)",
            Kind::PositiveU64 => "a non-negative integer",
            Kind::OptGroup => "a string or null",
            _ => "a string",
        }
    }

    /// Parse a textual value for `key`.
    pub(crate) fn parse(
        self,
        key: &str,
        value: &str,
        origin: &Origin,
    ) -> Result<Parsed, ConfigError> {
        let bad = || ConfigError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            expected: self.expected(),
            origin: origin.clone(),
        };
        match self {
            Kind::AbsPath => {
                if value.is_empty() || !Path::new(value).is_absolute() {
                    return Err(bad());
                }
                Ok(Parsed::Path(PathBuf::from(value)))
            }
            Kind::Command => {
                if value.is_empty() || value.trim() != value {
                    return Err(bad());
                }
                if value.contains('/') && !Path::new(value).is_absolute() {
                    return Err(bad());
                }
                Ok(Parsed::Path(PathBuf::from(value)))
            }
            Kind::OptGroup => {
                if value.is_empty() {
                    return Ok(Parsed::OptStr(None));
                }
                if value.chars().any(|c| c.is_whitespace() || c == ':') {
                    return Err(bad());
                }
                Ok(Parsed::OptStr(Some(value.to_string())))
            }
            Kind::Choice(values) => {
                let lower = value.trim().to_ascii_lowercase();
                values
                    .iter()
                    .find(|v| **v == lower)
                    .map(|v| Parsed::Str((*v).to_string()))
                    .ok_or_else(bad)
            }
            Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Parsed::Bool(true)),
                "false" | "0" | "no" => Ok(Parsed::Bool(false)),
                _ => Err(bad()),
            },
            Kind::PositiveU64 => match value.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(Parsed::U64(n)),
                _ => Err(bad()),
            },
        }
    }
}

/// Set `key` on `config` from text, recording `origin` in errors.
pub(crate) fn set_from(
    config: &mut Config,
    key: &str,
    value: &str,
    origin: &Origin,
) -> Result<(), ConfigError> {
    let kind = kind(key).ok_or_else(|| ConfigError::UnknownKey {
        key: key.to_string(),
        origin: origin.clone(),
        known: known_keys(),
    })?;
    let parsed = kind.parse(key, value, origin)?;
    match (key, parsed) {
        ("address", Parsed::Path(p)) => config.address = p,
        ("db_path", Parsed::Path(p)) => config.db_path = p,
        ("checkpoint.dir", Parsed::Path(p)) => config.checkpoint.dir = p,
        ("jobs.log_dir", Parsed::Path(p)) => config.jobs.log_dir = p,
        ("criu.binary_path", Parsed::Path(p)) => config.criu.binary_path = p,
        ("runc.binary_path", Parsed::Path(p)) => config.runc.binary_path = p,
        ("socket_group", Parsed::OptStr(g)) => config.socket_group = g,
        ("log_level", Parsed::Str(s)) => config.log_level = s,
        ("checkpoint.compression", Parsed::Str(s)) => config.checkpoint.compression = s,
        ("checkpoint.leave_running", Parsed::Bool(b)) => config.checkpoint.leave_running = b,
        ("criu.pid_wait_timeout_ms", Parsed::U64(n)) => config.criu.pid_wait_timeout_ms = n,
        _ => unreachable!("kind table and setter table disagree for key {key}"),
    }
    Ok(())
}

/// Read `key` from `config` as text; `None` for an unknown key.
pub(crate) fn get(config: &Config, key: &str) -> Option<String> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    Some(match key {
        "address" => path(&config.address),
        "socket_group" => config.socket_group.clone().unwrap_or_default(),
        "db_path" => path(&config.db_path),
        "log_level" => config.log_level.clone(),
        "checkpoint.dir" => path(&config.checkpoint.dir),
        "checkpoint.compression" => config.checkpoint.compression.clone(),
        "checkpoint.leave_running" => config.checkpoint.leave_running.to_string(),
        "criu.binary_path" => path(&config.criu.binary_path),
        "runc.binary_path" => path(&config.runc.binary_path),
        "criu.pid_wait_timeout_ms" => config.criu.pid_wait_timeout_ms.to_string(),
        "jobs.log_dir" => path(&config.jobs.log_dir),
        _ => return None,
    })
}
