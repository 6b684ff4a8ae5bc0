//! A bundle's OCI runtime spec (`config.json`), read with the `oci-spec` crate: one
//! reader and one parse error for every caller that only looks at a spec. Code that
//! rewrites and saves a spec (the loopback hook, containerd's recorded spec) keeps raw
//! JSON, since `oci-spec` drops fields it does not know.

use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

/// The spec's file name in a bundle.
pub const CONFIG_JSON: &str = "config.json";

/// Why a spec could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The spec file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file is not a runtime spec.
    #[error("{} is not a valid OCI runtime spec: {source}", path.display())]
    Parse {
        /// The spec file.
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
}

impl SpecError {
    /// Whether the file is simply not there.
    pub fn is_missing(&self) -> bool {
        matches!(self, SpecError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Reads `bundle/config.json`.
pub fn read_bundle_spec(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join(CONFIG_JSON);
    let bytes = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| SpecError::Parse { path, source })
}

/// Whether the container's process runs on a terminal (`process.terminal`).
pub fn uses_terminal(spec: &Spec) -> bool {
    spec.process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
}

/// The root filesystem the spec names (`root.path`, relative to the bundle), if any.
pub fn rootfs(bundle: &Path, spec: &Spec) -> Option<PathBuf> {
    let root = spec.root().as_ref()?.path();
    Some(if root.is_absolute() {
        root.clone()
    } else {
        bundle.join(root)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A spec with what the runtime spec requires of a process.
    pub(crate) fn spec_json(terminal: bool, root: &str) -> String {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"terminal": terminal, "user": {"uid": 0, "gid": 0}, "cwd": "/", "args": ["sh"]},
            "root": {"path": root},
        })
        .to_string()
    }

    #[test]
    fn terminal_and_rootfs_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(CONFIG_JSON), spec_json(true, "rootfs")).expect("write");
        let spec = read_bundle_spec(dir.path()).expect("spec");
        assert!(uses_terminal(&spec));
        assert_eq!(rootfs(dir.path(), &spec), Some(dir.path().join("rootfs")));
        std::fs::write(dir.path().join(CONFIG_JSON), spec_json(false, "/abs")).expect("write");
        let spec = read_bundle_spec(dir.path()).expect("spec");
        assert!(!uses_terminal(&spec));
        assert_eq!(rootfs(dir.path(), &spec), Some(PathBuf::from("/abs")));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = read_bundle_spec(dir.path()).expect_err("missing");
        assert!(e.is_missing(), "{e}");
        std::fs::write(dir.path().join(CONFIG_JSON), "{not json").expect("write");
        let e = read_bundle_spec(dir.path()).expect_err("bad");
        assert!(!e.is_missing());
        assert!(
            e.to_string().contains("is not a valid OCI runtime spec"),
            "{e}"
        );
    }
}
