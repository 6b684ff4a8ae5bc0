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

/// Reads a field of [`Config`].
type Get<T> = fn(&Config) -> &T;
/// Writes a field of [`Config`].
type Set<T> = fn(&mut Config) -> &mut T;

/// Where a key's value lives in [`Config`], by the type of text it takes.
#[derive(Clone, Copy)]
pub(crate) enum Field {
    /// A non-empty absolute path.
    AbsPath(Get<PathBuf>, Set<PathBuf>),
    /// An absolute path or a bare command name.
    Command(Get<PathBuf>, Set<PathBuf>),
    /// A group name or gid; empty text unsets it.
    OptGroup(Get<Option<String>>, Set<Option<String>>),
    /// One of a fixed list, stored lower-case.
    Choice(&'static [&'static str], Get<String>, Set<String>),
    /// A boolean.
    Bool(Get<bool>, Set<bool>),
    /// A positive integer.
    PositiveU64(Get<u64>, Set<u64>),
}

/// One configuration key: adding a key is one entry in [`KEYS`] (and its struct field);
/// defaults, env names, `--set`, `get`, validation and the JSON form all come from here.
pub(crate) struct Key {
    /// Name, env var, default and help.
    pub(crate) info: KeyInfo,
    /// Where its value lives and how its text is parsed.
    pub(crate) field: Field,
}

pub(crate) static KEYS: &[Key] = &[
    Key {
        info: KeyInfo {
            key: "address",
            env: "CEDANA_ADDRESS",
            default: "/run/cedana.sock",
            help: "Unix socket path the daemon listens on",
        },
        field: Field::AbsPath(|c| &c.address, |c| &mut c.address),
    },
    Key {
        info: KeyInfo {
            key: "socket_group",
            env: "CEDANA_SOCKET_GROUP",
            default: "",
            help: "Group owning the socket (mode 0660); unset or empty means mode 0600",
        },
        field: Field::OptGroup(|c| &c.socket_group, |c| &mut c.socket_group),
    },
    Key {
        info: KeyInfo {
            key: "db_path",
            env: "CEDANA_DB_PATH",
            default: "/var/lib/cedana/cedana.db",
            help: "Path of the daemon's SQLite database",
        },
        field: Field::AbsPath(|c| &c.db_path, |c| &mut c.db_path),
    },
    Key {
        info: KeyInfo {
            key: "log_level",
            env: "CEDANA_LOG_LEVEL",
            default: "info",
            help: "Log level: error, warn, info, debug or trace",
        },
        field: Field::Choice(LOG_LEVELS, |c| &c.log_level, |c| &mut c.log_level),
    },
    Key {
        info: KeyInfo {
            key: "checkpoint.dir",
            env: "CEDANA_CHECKPOINT_DIR",
            default: "/var/lib/cedana/checkpoints",
            help: "Directory where checkpoint images are stored",
        },
        field: Field::AbsPath(|c| &c.checkpoint.dir, |c| &mut c.checkpoint.dir),
    },
    Key {
        info: KeyInfo {
            key: "checkpoint.compression",
            env: "CEDANA_CHECKPOINT_COMPRESSION",
            default: "zstd",
            help: "Checkpoint compression: none, tar, gzip, lz4 or zstd",
        },
        field: Field::Choice(
            COMPRESSIONS,
            |c| &c.checkpoint.compression,
            |c| &mut c.checkpoint.compression,
        ),
    },
    Key {
        info: KeyInfo {
            key: "checkpoint.leave_running",
            env: "CEDANA_CHECKPOINT_LEAVE_RUNNING",
            default: "false",
            help: "Leave the process running after checkpointing",
        },
        field: Field::Bool(
            |c| &c.checkpoint.leave_running,
            |c| &mut c.checkpoint.leave_running,
        ),
    },
    Key {
        info: KeyInfo {
            key: "criu.binary_path",
            env: "CEDANA_CRIU_BINARY_PATH",
            default: "criu",
            help: "CRIU binary: an absolute path or a bare name looked up in PATH",
        },
        field: Field::Command(|c| &c.criu.binary_path, |c| &mut c.criu.binary_path),
    },
    Key {
        info: KeyInfo {
            key: "criu.pid_wait_timeout_ms",
            env: "CEDANA_CRIU_PID_WAIT_TIMEOUT_MS",
            default: "5000",
            help: "Milliseconds to wait for a restored process's pid",
        },
        field: Field::PositiveU64(
            |c| &c.criu.pid_wait_timeout_ms,
            |c| &mut c.criu.pid_wait_timeout_ms,
        ),
    },
    Key {
        info: KeyInfo {
            key: "jobs.log_dir",
            env: "CEDANA_JOBS_LOG_DIR",
            default: "/var/lib/cedana/jobs",
            help: "Directory holding per-job log files",
        },
        field: Field::AbsPath(|c| &c.jobs.log_dir, |c| &mut c.jobs.log_dir),
    },
    Key {
        info: KeyInfo {
            key: "runc.binary_path",
            env: "CEDANA_RUNC_BINARY_PATH",
            default: "runc",
            help:
                "OCI runtime wrapped by cedana-runc and driven by the runc plugin (runc, crun, ...)",
        },
        field: Field::Command(|c| &c.runc.binary_path, |c| &mut c.runc.binary_path),
    },
];

/// How a key's value is parsed, for messages and the config file's JSON types.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    AbsPath,
    Command,
    OptGroup,
    Choice(&'static [&'static str]),
    Bool,
    PositiveU64,
}

impl Field {
    fn kind(self) -> Kind {
        match self {
            Field::AbsPath(..) => Kind::AbsPath,
            Field::Command(..) => Kind::Command,
            Field::OptGroup(..) => Kind::OptGroup,
            Field::Choice(values, ..) => Kind::Choice(values),
            Field::Bool(..) => Kind::Bool,
            Field::PositiveU64(..) => Kind::PositiveU64,
        }
    }

    /// Parses `value` and stores it; `None` when the text is not acceptable.
    fn set(self, config: &mut Config, value: &str) -> Option<()> {
        match self {
            Field::AbsPath(_, set) => *set(config) = abs_path(value)?,
            Field::Command(_, set) => *set(config) = command(value)?,
            Field::OptGroup(_, set) => *set(config) = group(value)?,
            Field::Choice(values, _, set) => *set(config) = choice(values, value)?,
            Field::Bool(_, set) => *set(config) = boolean(value)?,
            Field::PositiveU64(_, set) => *set(config) = positive(value)?,
        }
        Some(())
    }

    /// The value as text, as `--set` takes it (an unset group is empty).
    fn get(self, config: &Config) -> String {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        match self {
            Field::AbsPath(get, _) | Field::Command(get, _) => path(get(config)),
            Field::OptGroup(get, _) => get(config).clone().unwrap_or_default(),
            Field::Choice(_, get, _) => get(config).clone(),
            Field::Bool(get, _) => get(config).to_string(),
            Field::PositiveU64(get, _) => get(config).to_string(),
        }
    }

    /// The value as the config file holds it.
    pub(crate) fn json(self, config: &Config) -> serde_json::Value {
        match self {
            Field::OptGroup(get, _) => serde_json::json!(get(config)),
            Field::Bool(get, _) => serde_json::json!(get(config)),
            Field::PositiveU64(get, _) => serde_json::json!(get(config)),
            other => serde_json::Value::String(other.get(config)),
        }
    }
}

fn abs_path(value: &str) -> Option<PathBuf> {
    (!value.is_empty() && Path::new(value).is_absolute()).then(|| PathBuf::from(value))
}

fn command(value: &str) -> Option<PathBuf> {
    let bare_or_absolute = !value.contains('/') || Path::new(value).is_absolute();
    (!value.is_empty() && value.trim() == value && bare_or_absolute).then(|| PathBuf::from(value))
}

fn group(value: &str) -> Option<Option<String>> {
    if value.is_empty() {
        return Some(None);
    }
    let odd = value.chars().any(|c| c.is_whitespace() || c == ':');
    (!odd).then(|| Some(value.to_string()))
}

fn choice(values: &[&str], value: &str) -> Option<String> {
    let lower = value.trim().to_ascii_lowercase();
    values.iter().find(|v| **v == lower).map(|v| v.to_string())
}

fn boolean(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn positive(value: &str) -> Option<u64> {
    value.trim().parse::<u64>().ok().filter(|n| *n > 0)
}

/// The entry of a dotted key.
pub(crate) fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.info.key == name)
}

pub(crate) fn kind(name: &str) -> Option<Kind> {
    key(name).map(|k| k.field.kind())
}

/// True when `prefix` names a section (e.g. `checkpoint`) containing keys.
pub(crate) fn is_section(prefix: &str) -> bool {
    KEYS.iter().any(|k| {
        k.info
            .key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

pub(crate) fn known_keys() -> String {
    KEYS.iter()
        .map(|k| k.info.key)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn known_env() -> String {
    let mut names: Vec<String> = KEYS.iter().map(|k| k.info.env.to_string()).collect();
    names.extend(NON_CONFIG_ENV.iter().map(|s| s.to_string()));
    names.push(format!("{TEST_ENV_PREFIX}*"));
    names.join(", ")
}

pub(crate) fn key_for_env(var: &str) -> Option<&'static str> {
    KEYS.iter().find(|k| k.info.env == var).map(|k| k.info.key)
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
}

/// Set `key` on `config` from text, recording `origin` in errors.
pub(crate) fn set_from(
    config: &mut Config,
    name: &str,
    value: &str,
    origin: &Origin,
) -> Result<(), ConfigError> {
    let key = key(name).ok_or_else(|| ConfigError::UnknownKey {
        key: name.to_string(),
        origin: origin.clone(),
        known: known_keys(),
    })?;
    key.field
        .set(config, value)
        .ok_or_else(|| ConfigError::BadValue {
            key: name.to_string(),
            value: value.to_string(),
            expected: key.field.kind().expected(),
            origin: origin.clone(),
        })
}

/// Read `key` from `config` as text; `None` for an unknown key.
pub(crate) fn get(config: &Config, name: &str) -> Option<String> {
    key(name).map(|k| k.field.get(config))
}
