//! Reading the JSON config file and the `CEDANA_*` environment.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{ConfigError, Origin};
use crate::keys::{self, Kind};
use crate::Config;

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Apply the config file at `path` to `config`; a missing file is not an error.
pub(crate) fn apply_file(config: &mut Config, path: &Path) -> Result<(), ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ConfigError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let value: Value = serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let Value::Object(map) = value else {
        return Err(ConfigError::NotAnObject {
            path: path.to_path_buf(),
            found: json_type(&value),
        });
    };
    let mut leaves = Vec::new();
    flatten("", map, path, &mut leaves)?;
    let mut seen = BTreeSet::new();
    for (key, _) in &leaves {
        if !seen.insert(key.clone()) {
            return Err(ConfigError::DuplicateKey {
                key: key.clone(),
                path: path.to_path_buf(),
            });
        }
    }
    let origin = Origin::File(path.to_path_buf());
    for (key, value) in leaves {
        let text = json_to_text(&key, &value, path)?;
        keys::set_from(config, &key, &text, &origin)?;
    }
    Ok(())
}

/// Collect `(dotted key, value)` leaves, accepting nested objects and dotted keys.
fn flatten(
    prefix: &str,
    map: Map<String, Value>,
    path: &Path,
    out: &mut Vec<(String, Value)>,
) -> Result<(), ConfigError> {
    for (k, v) in map {
        let full = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        if keys::kind(&full).is_some() {
            out.push((full, v));
        } else if keys::is_section(&full) {
            match v {
                Value::Object(inner) => flatten(&full, inner, path, out)?,
                other => {
                    return Err(ConfigError::WrongType {
                        key: full,
                        expected: "an object of settings".into(),
                        found: json_type(&other),
                        path: path.to_path_buf(),
                    })
                }
            }
        } else {
            return Err(ConfigError::UnknownKey {
                key: full,
                origin: Origin::File(path.to_path_buf()),
                known: keys::known_keys(),
            });
        }
    }
    Ok(())
}

/// Check the JSON type of a leaf and turn it into the textual form the parser takes.
fn json_to_text(key: &str, value: &Value, path: &Path) -> Result<String, ConfigError> {
    let kind = keys::kind(key).unwrap_or(Kind::AbsPath);
    let text = match (kind, value) {
        (Kind::Bool, Value::Bool(b)) => Some(b.to_string()),
        (Kind::PositiveU64, Value::Number(n)) => n.as_u64().map(|n| n.to_string()),
        (Kind::OptGroup | Kind::OptText, Value::Null) => Some(String::new()),
        (Kind::Bool | Kind::PositiveU64, _) => None,
        (_, Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    text.ok_or_else(|| ConfigError::WrongType {
        key: key.to_string(),
        expected: kind.expected_json().to_string(),
        found: match (kind, value) {
            (Kind::PositiveU64, Value::Number(_)) => "a negative or fractional number",
            (_, other) => json_type(other),
        },
        path: path.to_path_buf(),
    })
}

/// Apply `CEDANA_*` variables from `env` to `config`.
pub(crate) fn apply_env(
    config: &mut Config,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with("CEDANA_") && !keys::is_allowlisted_env(name))
        .collect();
    vars.sort();
    for (name, value) in vars {
        let key = keys::key_for_env(&name).ok_or_else(|| ConfigError::UnknownEnv {
            var: name.clone(),
            known: keys::known_env(),
        })?;
        keys::set_from(config, key, &value, &Origin::Env(name.clone()))?;
    }
    Ok(())
}

/// Path of the config file inside `dir`.
pub(crate) fn config_file(dir: &Path) -> PathBuf {
    dir.join(crate::CONFIG_FILE_NAME)
}
