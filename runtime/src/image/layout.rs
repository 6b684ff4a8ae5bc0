//! Where checkpoints live on disk and which names they may have.

use std::path::{Path, PathBuf};

use super::compression::Compression;
use super::error::ImageError;
use super::metadata::METADATA_FILE;

/// Longest accepted checkpoint name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// Path of checkpoint `name` in `dir`: `dir/name` for a directory, else `dir/name` plus the archive extension.
pub fn checkpoint_path(dir: &Path, name: &str, c: Compression) -> PathBuf {
    dir.join(format!("{name}{}", c.extension()))
}

/// Bytes of a user's value a message quotes: the rest is cut (messages travel in HTTP/2
/// headers, and a 16 KiB one breaks the connection instead of being read).
const SHOWN_MAX: usize = 48;

/// `value` quoted for a message, cut after `SHOWN_MAX` bytes (on a character boundary).
pub fn shown_name(value: &str) -> String {
    if value.len() <= SHOWN_MAX {
        return format!("{value:?}");
    }
    let cut = (0..=SHOWN_MAX)
        .rev()
        .find(|i| value.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{:?}… ({} bytes)", &value[..cut], value.len())
}

/// Checks that `name` is usable as a single file name for a checkpoint.
pub fn validate_name(name: &str) -> Result<(), ImageError> {
    let reason = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name == "." || name == ".." {
        Some("it is a special directory name".to_string())
    } else if name.contains('/') {
        Some("it contains '/'".to_string())
    } else if name.contains('\0') {
        Some("it contains a NUL byte".to_string())
    } else if name.chars().any(char::is_control) {
        // A newline in a name breaks every line-based listing and log of it.
        Some("it contains a control character (newline, tab, ...)".to_string())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!(
            "it is {} bytes long, more than {MAX_NAME_LEN}",
            name.len()
        ))
    } else if name.starts_with('.') {
        Some("it starts with '.'".to_string())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ImageError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Turns anything (a process or container name) into a safe checkpoint-name part:
/// characters other than ASCII letters, digits, `-` and `_` become `_`, leading dots and
/// underscores go, and an empty result becomes `fallback`.
pub fn name_part(raw: &str, fallback: &str) -> String {
    let s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches(['.', '_']);
    if s.is_empty() {
        fallback.to_string()
    } else {
        s.to_string()
    }
}

/// Whether `p` is a checkpoint directory (a directory holding metadata.json).
pub fn is_checkpoint_dir(p: &Path) -> bool {
    p.is_dir() && p.join(METADATA_FILE).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let d = Path::new("/var/lib/cedana");
        assert_eq!(
            checkpoint_path(d, "ck1", Compression::None),
            PathBuf::from("/var/lib/cedana/ck1")
        );
        assert_eq!(
            checkpoint_path(d, "ck1", Compression::Zstd),
            PathBuf::from("/var/lib/cedana/ck1.tar.zst")
        );
        assert_eq!(
            checkpoint_path(d, "ck1", Compression::Gzip),
            PathBuf::from("/var/lib/cedana/ck1.tar.gz")
        );
    }

    #[test]
    fn names() {
        assert!(validate_name("job-42_v1.2").is_ok());
        assert!(validate_name(&"a".repeat(200)).is_ok());
        for bad in ["", ".", "..", "a/b", "/abs", "a\0b", ".hidden"] {
            assert!(
                matches!(validate_name(bad), Err(ImageError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(validate_name(&"a".repeat(201)).is_err());
    }

    #[test]
    fn checkpoint_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_checkpoint_dir(dir.path()));
        std::fs::write(dir.path().join(METADATA_FILE), b"{}").expect("write");
        assert!(is_checkpoint_dir(dir.path()));
        assert!(!is_checkpoint_dir(&dir.path().join(METADATA_FILE)));
    }

    #[test]
    fn long_values_are_quoted_cut() {
        assert_eq!(shown_name("ab"), "\"ab\"");
        let long = "é".repeat(100);
        let shown = shown_name(&long);
        assert!(shown.ends_with("… (200 bytes)"), "{shown}");
        assert!(shown.len() < 80, "{shown}");
        let err = validate_name(&"n".repeat(20_000)).expect_err("too long");
        assert!(err.to_string().len() < 400, "{err}");
        assert!(err.to_string().contains("at most 200 bytes"), "{err}");
    }
}
