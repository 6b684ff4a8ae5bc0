//! The table of configuration keys and per-key parsing.

use std::path::{Path, PathBuf};

use crate::error::{ConfigError, Origin};
use crate::Config;

mod table;

pub(crate) use table::KEYS;

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
    /// An absolute path or an `s3://BUCKET/PREFIX` URL (no other scheme is served).
    Location(Get<PathBuf>, Set<PathBuf>),
    /// Optional text without whitespace (a URL, a region); empty text unsets it.
    OptText(Get<Option<String>>, Set<Option<String>>),
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

/// How a key's value is parsed, for messages and the config file's JSON types.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    AbsPath,
    Location,
    OptText,
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
            Field::Location(..) => Kind::Location,
            Field::OptText(..) => Kind::OptText,
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
            Field::Location(_, set) => *set(config) = location(value)?,
            Field::OptText(_, set) => *set(config) = opt_text(value)?,
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
            Field::AbsPath(get, _) | Field::Location(get, _) | Field::Command(get, _) => {
                path(get(config))
            }
            Field::OptGroup(get, _) | Field::OptText(get, _) => {
                get(config).clone().unwrap_or_default()
            }
            Field::Choice(_, get, _) => get(config).clone(),
            Field::Bool(get, _) => get(config).to_string(),
            Field::PositiveU64(get, _) => get(config).to_string(),
        }
    }

    /// The value as the config file holds it.
    pub(crate) fn json(self, config: &Config) -> serde_json::Value {
        match self {
            Field::OptGroup(get, _) | Field::OptText(get, _) => serde_json::json!(get(config)),
            Field::Bool(get, _) => serde_json::json!(get(config)),
            Field::PositiveU64(get, _) => serde_json::json!(get(config)),
            other => serde_json::Value::String(other.get(config)),
        }
    }
}

fn abs_path(value: &str) -> Option<PathBuf> {
    (!value.is_empty() && Path::new(value).is_absolute()).then(|| PathBuf::from(value))
}

/// The URL schemes `checkpoint.dir` takes besides plain paths.
pub const LOCATION_SCHEMES: &[&str] = &["s3"];

fn location(value: &str) -> Option<PathBuf> {
    match value.split_once("://") {
        Some((scheme, rest)) => {
            let served = LOCATION_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str());
            let bucket = rest.split('/').next().unwrap_or_default();
            (served && !bucket.is_empty() && !value.contains(char::is_whitespace))
                .then(|| PathBuf::from(value))
        }
        None => abs_path(value),
    }
}

fn opt_text(value: &str) -> Option<Option<String>> {
    if value.is_empty() {
        return Some(None);
    }
    (!value.contains(char::is_whitespace)).then(|| Some(value.to_string()))
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
            Kind::Location => "an absolute path (starting with '/') or s3://BUCKET/PREFIX \
                               (no other URL scheme is served)"
                .into(),
            Kind::OptText => "text without whitespace, or empty to unset".into(),
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
            Kind::OptGroup | Kind::OptText => "a string or null",
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
