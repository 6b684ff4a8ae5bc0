//! `cedana k8s-helper install|uninstall`: puts our binaries and the `cedana` runtime into
//! a host's root (the DaemonSet mounts it at /host), and takes back exactly that. What
//! install did is recorded in a state file, so uninstall restores the bytes it found.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::containerd_config::{drop_in, ConfigError, ContainerdConfig};

/// The binaries a node needs: the CLI and daemon, the shim, the runc wrapper, the relay,
/// and the GPU helper (the driver's checkpoint API where cuda-checkpoint is missing).
pub const BINARIES: [&str; 5] = [
    "cedana",
    "containerd-shim-cedana-v2",
    "cedana-runc",
    "cedana-criu-relay",
    "cedana-gpu-helper",
];
/// The shim among [`BINARIES`], which containerd's config names.
const SHIM: &str = "containerd-shim-cedana-v2";
/// Where install records what it did, as the host sees it.
const STATE_FILE: &str = "/var/lib/cedana/k8s-helper.json";
/// Suffix of the copies of files install replaced.
const BACKUP_SUFFIX: &str = ".cedana-backup";
/// The drop-in's name in an imported directory (late, so it wins merges).
const DROP_IN_NAME: &str = "99-cedana.toml";

/// Why install or uninstall failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// containerd's config cannot take the runtime.
    #[error("containerd config {}: {source}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: ConfigError,
    },
    /// No containerd config to edit.
    #[error(
        "no containerd config at {0}; write one with `containerd config default > {0}`, or \
         pass --containerd-config"
    )]
    NoConfig(PathBuf),
    /// One of our binaries is not next to this one.
    #[error("{0} is missing: run k8s-helper from the directory that holds cedana's binaries")]
    MissingBinary(PathBuf),
    /// The state file cannot be read.
    #[error("the install record {0} is unreadable ({1}); fix or remove it by hand")]
    State(PathBuf, String),
    /// Uninstall without an install.
    #[error("cedana's k8s-helper install is not recorded on this host (no {0}); nothing to undo")]
    NotInstalled(PathBuf),
}

/// Shorthand for an I/O error on `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where to install, paths as the host sees them.
#[derive(Debug, Clone)]
pub struct Options {
    /// The host's root as mounted here (`/` when run on the host itself).
    pub host_root: PathBuf,
    /// containerd's config file on the host.
    pub containerd_config: PathBuf,
    /// Directory on the host for our binaries.
    pub bin_dir: PathBuf,
    /// Where our binaries are now.
    pub source_dir: PathBuf,
}

impl Options {
    /// A host path as seen from here.
    fn host(&self, path: &Path) -> PathBuf {
        self.host_root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// What install did to containerd's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ConfigChange {
    /// Wrote this drop-in into a directory the config imports.
    DropIn {
        /// The drop-in (host path).
        file: PathBuf,
    },
    /// Edited the config in place; the original bytes are in `backup`.
    Edited {
        /// The original config (host path).
        backup: PathBuf,
        /// sha256 of the config as install left it.
        sha256: String,
    },
    /// A `cedana` runtime was configured already: left alone.
    Untouched,
}

/// A binary install wrote, and the file it replaced if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct InstalledFile {
    /// Host path.
    path: PathBuf,
    /// Host path of the replaced file's copy.
    backup: Option<PathBuf>,
}

/// The install record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// containerd's config (host path).
    containerd_config: PathBuf,
    /// What was done to it.
    change: ConfigChange,
    /// Binaries written.
    binaries: Vec<InstalledFile>,
}

/// Installs binaries and runtime; running it again changes nothing that is in place.
/// Returns what it did, a line each.
pub fn install(opts: &Options) -> Result<Vec<String>, InstallError> {
    let state_path = opts.host(Path::new(STATE_FILE));
    let previous = read_state(&state_path)?;
    // A config we cannot edit fails the install before anything is copied.
    load_config(opts)?;
    let mut report = Vec::new();
    let binaries = install_binaries(opts, previous.as_ref(), &mut report)?;
    let change = match previous {
        Some(state) if config_change_in_place(opts, &state)? => {
            report.push(format!(
                "containerd config {}: the cedana runtime is in place",
                state.containerd_config.display()
            ));
            state.change
        }
        _ => add_runtime(opts, &mut report)?,
    };
    let state = State {
        containerd_config: opts.containerd_config.clone(),
        change,
        binaries,
    };
    let json = serde_json::to_vec_pretty(&state)
        .map_err(|e| InstallError::State(state_path.clone(), e.to_string()))?;
    write_file(&state_path, &json, 0o644)?;
    Ok(report)
}

/// Undoes what install recorded: the config's original bytes (or, if it changed since,
/// just our runtime removed), the replaced binaries back, the record gone.
pub fn uninstall(opts: &Options) -> Result<Vec<String>, InstallError> {
    let state_path = opts.host(Path::new(STATE_FILE));
    let state = read_state(&state_path)?.ok_or(InstallError::NotInstalled(state_path.clone()))?;
    let mut report = Vec::new();
    let config = opts.host(&state.containerd_config);
    match &state.change {
        ConfigChange::DropIn { file } => {
            remove_if_there(&opts.host(file))?;
            report.push(format!("removed {}", file.display()));
        }
        ConfigChange::Edited { backup, sha256 } => {
            let backup_here = opts.host(backup);
            let current = std::fs::read(&config).map_err(io(&config))?;
            if &sha256_hex(&current) == sha256 {
                std::fs::rename(&backup_here, &config).map_err(io(&backup_here))?;
                report.push(format!(
                    "restored {} as it was before install",
                    state.containerd_config.display()
                ));
            } else {
                let text = String::from_utf8_lossy(&current);
                let mut parsed =
                    ContainerdConfig::parse(&text).map_err(|source| InstallError::Config {
                        path: config.clone(),
                        source,
                    })?;
                parsed.remove_runtime();
                write_file(&config, parsed.to_string().as_bytes(), mode_of(&config))?;
                remove_if_there(&backup_here)?;
                report.push(format!(
                    "{} changed since install: removed only the cedana runtime, kept the rest",
                    state.containerd_config.display()
                ));
            }
        }
        ConfigChange::Untouched => report.push(format!(
            "left {}'s own cedana runtime alone, as install did",
            state.containerd_config.display()
        )),
    }
    for file in &state.binaries {
        let here = opts.host(&file.path);
        match &file.backup {
            Some(backup) => {
                let backup_here = opts.host(backup);
                std::fs::rename(&backup_here, &here).map_err(io(&backup_here))?;
                report.push(format!("restored the earlier {}", file.path.display()));
            }
            None => {
                remove_if_there(&here)?;
                report.push(format!("removed {}", file.path.display()));
            }
        }
    }
    remove_if_there(&state_path)?;
    Ok(report)
}

/// Copies each binary unless the host has the same bytes; a different file already there
/// (not ours) is kept as a backup first.
fn install_binaries(
    opts: &Options,
    previous: Option<&State>,
    report: &mut Vec<String>,
) -> Result<Vec<InstalledFile>, InstallError> {
    let mut installed = Vec::new();
    for name in BINARIES {
        let source = opts.source_dir.join(name);
        let bytes = std::fs::read(&source).map_err(|e| match e.kind() {
            ErrorKind::NotFound => InstallError::MissingBinary(source.clone()),
            _ => InstallError::Io {
                path: source.clone(),
                source: e,
            },
        })?;
        let path = opts.bin_dir.join(name);
        let here = opts.host(&path);
        let earlier = previous.and_then(|s| s.binaries.iter().find(|b| b.path == path));
        let backup = match earlier {
            Some(file) => file.backup.clone(),
            None if here.exists() => {
                let backup = PathBuf::from(format!("{}{BACKUP_SUFFIX}", path.display()));
                std::fs::copy(&here, opts.host(&backup)).map_err(io(&here))?;
                Some(backup)
            }
            None => None,
        };
        if std::fs::read(&here).ok().as_deref() == Some(bytes.as_slice()) {
            report.push(format!("{} is up to date", path.display()));
        } else {
            write_file(&here, &bytes, 0o755)?;
            report.push(format!("installed {}", path.display()));
        }
        installed.push(InstalledFile { path, backup });
    }
    Ok(installed)
}

/// Whether the recorded config change is still there.
fn config_change_in_place(opts: &Options, state: &State) -> Result<bool, InstallError> {
    if state.containerd_config != opts.containerd_config {
        return Ok(false);
    }
    Ok(match &state.change {
        ConfigChange::DropIn { file } => opts.host(file).exists(),
        ConfigChange::Edited { .. } | ConfigChange::Untouched => load_config(opts)?.has_runtime(),
    })
}

/// Reads and parses containerd's config.
fn load_config(opts: &Options) -> Result<ContainerdConfig, InstallError> {
    let path = opts.host(&opts.containerd_config);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(InstallError::NoConfig(opts.containerd_config.clone()))
        }
        Err(e) => return Err(io(&path)(e)),
    };
    ContainerdConfig::parse(&text).map_err(|source| InstallError::Config { path, source })
}

/// Adds the runtime: a drop-in where the config imports a directory of `*.toml`, else an
/// edit in place with the original kept as a backup.
fn add_runtime(opts: &Options, report: &mut Vec<String>) -> Result<ConfigChange, InstallError> {
    let mut config = load_config(opts)?;
    let shown = opts.containerd_config.display();
    if config.has_runtime() {
        report.push(format!(
            "{shown} already has a cedana runtime: left as it is"
        ));
        return Ok(ConfigChange::Untouched);
    }
    let shim = opts.bin_dir.join(SHIM).display().to_string();
    if let Some(dir) = imported_dir(opts, &config) {
        let file = dir.join(DROP_IN_NAME);
        let here = opts.host(&file);
        if let Some(parent) = here.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        write_file(&here, drop_in(config.layout(), &shim).as_bytes(), 0o644)?;
        report.push(format!(
            "added the cedana runtime in {} (imported by {shown})",
            file.display()
        ));
        return Ok(ConfigChange::DropIn { file });
    }
    let path = opts.host(&opts.containerd_config);
    let original = std::fs::read(&path).map_err(io(&path))?;
    let backup = PathBuf::from(format!(
        "{}{BACKUP_SUFFIX}",
        opts.containerd_config.display()
    ));
    write_file(&opts.host(&backup), &original, mode_of(&path))?;
    config
        .add_runtime(&shim)
        .map_err(|source| InstallError::Config {
            path: path.clone(),
            source,
        })?;
    let edited = config.to_string();
    write_file(&path, edited.as_bytes(), mode_of(&path))?;
    report.push(format!(
        "added {} to {shown} (the original is {})",
        config.layout().runtime_table(),
        backup.display()
    ));
    Ok(ConfigChange::Edited {
        backup,
        sha256: sha256_hex(edited.as_bytes()),
    })
}

/// The directory of the config's first `DIR/*.toml` import (host path).
fn imported_dir(opts: &Options, config: &ContainerdConfig) -> Option<PathBuf> {
    let base = opts.containerd_config.parent().unwrap_or(Path::new("/"));
    config.imports().iter().find_map(|import| {
        let dir = import.strip_suffix("/*.toml")?;
        Some(base.join(dir))
    })
}

/// Reads the install record, if any.
fn read_state(path: &Path) -> Result<Option<State>, InstallError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| InstallError::State(path.to_path_buf(), e.to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes through a temporary file and a rename: a running binary cannot be overwritten
/// in place (ETXTBSY), and a crash never leaves half a config.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = PathBuf::from(format!("{}.cedana-tmp", path.display()));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The file's permission bits (0644 when it cannot be read).
fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777)
}

/// Removes a file; one already gone is fine.
fn remove_if_there(path: &Path) -> Result<(), InstallError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// Hex sha256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
