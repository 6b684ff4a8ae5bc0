//! Where a checkpoint (or a directory of checkpoints) lives: a local path, or a URL whose
//! scheme names a storage backend (`s3://bucket/prefix`). Requests still carry paths, so a
//! URL travels as a path of its text; [`Location::from_path`] reads either back.

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::StoreError;

/// The scheme of local paths (`file:///abs/dir`, or a plain path).
pub const LOCAL_SCHEME: &str = "file";

/// A checkpoint's place: a local path, or `SCHEME://REST` for another backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location(Repr);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Repr {
    Local(PathBuf),
    Url { scheme: String, rest: String },
}

impl Location {
    /// A local path.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Self(Repr::Local(path.into()))
    }

    /// Parses a user's `--dir` / `--path`: `SCHEME://REST` is a URL (`file://` takes an
    /// absolute path), anything else a local path, relative ones included.
    pub fn parse(value: &str) -> Result<Self, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidLocation {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let Some((scheme, rest)) = value.split_once("://") else {
            return Ok(Self::local(value));
        };
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            // `a/b://c` is a (strange) local path, not a URL.
            return Ok(Self::local(value));
        }
        let scheme = scheme.to_ascii_lowercase();
        if scheme == LOCAL_SCHEME {
            if !rest.starts_with('/') {
                return Err(invalid(
                    "file:// takes an absolute path (file:///var/lib/x)",
                ));
            }
            return Ok(Self::local(rest));
        }
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err(invalid(
                "nothing after the scheme; give SCHEME://BUCKET/PREFIX",
            ));
        }
        if rest
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(invalid(
                "empty, '.' or '..' parts are not allowed in a URL path",
            ));
        }
        Ok(Self(Repr::Url {
            scheme,
            rest: rest.to_string(),
        }))
    }

    /// Reads a location a request carries as a path (see the module doc).
    pub fn from_path(path: &Path) -> Result<Self, StoreError> {
        match path.to_str() {
            Some(text) => Self::parse(text),
            // Not UTF-8: no URL is, so it is a local path.
            None => Ok(Self::local(path)),
        }
    }

    /// The backend's scheme: [`LOCAL_SCHEME`] for local paths.
    pub fn scheme(&self) -> &str {
        match &self.0 {
            Repr::Local(_) => LOCAL_SCHEME,
            Repr::Url { scheme, .. } => scheme,
        }
    }

    /// The local path, for a local location.
    pub fn as_local(&self) -> Option<&Path> {
        match &self.0 {
            Repr::Local(p) => Some(p),
            Repr::Url { .. } => None,
        }
    }

    /// What follows `SCHEME://` (`bucket/prefix/name`); the path's text for a local one.
    pub fn rest(&self) -> String {
        match &self.0 {
            Repr::Local(p) => p.display().to_string(),
            Repr::Url { rest, .. } => rest.clone(),
        }
    }

    /// The location as a request path: the local path, or the URL's text.
    pub fn to_path_buf(&self) -> PathBuf {
        match &self.0 {
            Repr::Local(p) => p.clone(),
            Repr::Url { .. } => PathBuf::from(self.to_string()),
        }
    }

    /// `name` inside this location.
    pub fn join(&self, name: &str) -> Self {
        match &self.0 {
            Repr::Local(p) => Self::local(p.join(name)),
            Repr::Url { scheme, rest } => Self(Repr::Url {
                scheme: scheme.clone(),
                rest: format!("{rest}/{name}"),
            }),
        }
    }

    /// The last part of the location (a checkpoint's entry name), if any.
    pub fn name(&self) -> Option<String> {
        match &self.0 {
            Repr::Local(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
            Repr::Url { rest, .. } => rest.rsplit('/').next().map(str::to_string),
        }
    }

    /// The location holding this one (a checkpoint's directory or prefix), if any.
    pub fn parent(&self) -> Option<Self> {
        match &self.0 {
            Repr::Local(p) => p.parent().map(Self::local),
            Repr::Url { scheme, rest } => rest.rsplit_once('/').map(|(head, _)| {
                Self(Repr::Url {
                    scheme: scheme.clone(),
                    rest: head.to_string(),
                })
            }),
        }
    }

    /// Makes a relative local path absolute (later steps must not depend on the cwd).
    pub fn absolute(self) -> Result<Self, StoreError> {
        match &self.0 {
            Repr::Local(p) if !p.is_absolute() => {
                std::path::absolute(p)
                    .map(Self::local)
                    .map_err(|source| StoreError::Io {
                        location: self.to_string(),
                        context: "resolve the path".into(),
                        source,
                    })
            }
            _ => Ok(self),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Local(p) => write!(f, "{}", p.display()),
            Repr::Url { scheme, rest } => write!(f, "{scheme}://{rest}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls() {
        let l = Location::parse("/var/lib/ck").expect("path");
        assert_eq!(l.as_local(), Some(Path::new("/var/lib/ck")));
        assert_eq!(l.scheme(), LOCAL_SCHEME);
        assert_eq!(
            Location::parse("ck:1").expect("colon").as_local(),
            Some(Path::new("ck:1"))
        );
        let f = Location::parse("file:///x/y").expect("file url");
        assert_eq!(f.as_local(), Some(Path::new("/x/y")));
        assert!(Location::parse("file://x").is_err());

        let s = Location::parse("S3://ckpts/a/b/").expect("s3");
        assert_eq!(s.scheme(), "s3");
        assert_eq!(s.to_string(), "s3://ckpts/a/b");
        assert_eq!(
            s.join("ck.tar.zst").to_string(),
            "s3://ckpts/a/b/ck.tar.zst"
        );
        assert_eq!(s.name().as_deref(), Some("b"));
        assert_eq!(
            s.parent().map(|p| p.to_string()).as_deref(),
            Some("s3://ckpts/a")
        );
        assert_eq!(Location::from_path(&s.to_path_buf()).expect("back"), s);
        for bad in ["s3://", "s3:///x", "mem://a//b", "mem://a/../b"] {
            assert!(
                matches!(
                    Location::parse(bad),
                    Err(StoreError::InvalidLocation { .. })
                ),
                "{bad}"
            );
        }
    }
}
