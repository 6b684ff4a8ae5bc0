//! Error type for configuration loading and validation.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration value came from; shown in error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default value.
    Default,
    /// The JSON configuration file at this path.
    File(PathBuf),
    /// The named environment variable.
    Env(String),
    /// A command-line `key=value` override (or a direct call to `Config::set`).
    Flag,
    /// A value already held in a `Config`, checked by `Config::validate`.
    Config,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default"),
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag => f.write_str("command-line override"),
            Origin::Config => f.write_str("configuration"),
        }
    }
}

/// Errors produced while loading, overriding or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key that cedana does not know, from a file or a flag.
    #[error("unknown config key `{key}` in {origin}; valid keys are: {known}")]
    UnknownKey {
        /// Full dotted key as given.
        key: String,
        /// Where the key was found.
        origin: Origin,
        /// Comma-separated list of valid keys.
        known: String,
    },
    /// A `CEDANA_*` environment variable that is neither a config key nor allowlisted.
    #[error("unknown environment variable {var} (known: {known}); unset it or fix its name")]
    UnknownEnv {
        /// The variable name.
        var: String,
        /// Comma-separated list of accepted variable names.
        known: String,
    },
    /// A value that does not parse or is out of range for its key.
    #[error("invalid value {value:?} for `{key}` from {origin}: expected {expected}")]
    BadValue {
        /// Full dotted key.
        key: String,
        /// The offending value as text.
        value: String,
        /// What would have been accepted.
        expected: String,
        /// Where the value came from.
        origin: Origin,
    },
    /// A JSON value of the wrong type in the config file.
    #[error("wrong JSON type for `{key}` in config file {}: expected {expected}, found {found}", path.display())]
    WrongType {
        /// Full dotted key.
        key: String,
        /// The JSON type that would have been accepted.
        expected: String,
        /// The JSON type found.
        found: &'static str,
        /// The config file.
        path: PathBuf,
    },
    /// The same key given twice in one file (nested and dotted forms).
    #[error("config key `{key}` is given more than once in config file {} (nested and dotted forms); keep only one", path.display())]
    DuplicateKey {
        /// Full dotted key.
        key: String,
        /// The config file.
        path: PathBuf,
    },
    /// The config file's top-level JSON value is not an object.
    #[error("config file {} must hold a JSON object at the top level, found {found}", path.display())]
    NotAnObject {
        /// The config file.
        path: PathBuf,
        /// The JSON type found.
        found: &'static str,
    },
    /// The config file exists but could not be read.
    #[error("cannot read config file {}: {source}; check its permissions", path.display())]
    Io {
        /// The config file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid JSON.
    #[error("cannot parse config file {} as JSON: {source}; fix the syntax or remove the file", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The underlying JSON error.
        #[source]
        source: serde_json::Error,
    },
}
