//! Errors of the CRIU driver, and the log scraping that makes a failed dump/restore readable.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// How many error lines of CRIU's log a [`CriuError::Failed`] carries.
pub const LOG_TAIL_LINES: usize = 15;

/// Log lines that contain an error marker but mean nothing (CRIU prints this one on every
/// run where the hard limit is already at its maximum).
const HARMLESS: &[&str] = &["Can't setup RLIMIT_NOFILE for self"];

/// Hint given when the CRIU binary can not be found.
pub const NOT_FOUND_HINT: &str =
    "install CRIU 4.1.1 (make deps) or set criu.binary_path / CEDANA_CRIU_BINARY_PATH";

#[derive(thiserror::Error, Debug)]
pub enum CriuError {
    #[error("CRIU binary {binary:?} not found: {hint}")]
    NotFound { binary: PathBuf, hint: String },

    #[error("failed to start {binary:?}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("CRIU RPC protocol error: {detail}")]
    Protocol { detail: String },

    #[error("{}", display_failed(op, *cr_errno, errmsg.as_deref(), log_path, log_tail))]
    Failed {
        op: &'static str,
        cr_errno: Option<i32>,
        errmsg: Option<String>,
        log_path: PathBuf,
        log_tail: Vec<String>,
    },

    /// A lazy restore whose page server failed (or was ended because the restore did).
    #[error("{}", display_lazy(why, log_tail, restore.as_deref()))]
    LazyPages {
        why: String,
        log_tail: Vec<String>,
        restore: Option<Box<CriuError>>,
    },

    #[error("CRIU {found} is too old: need at least {need}")]
    TooOld { found: String, need: String },
}

impl CriuError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CriuError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn protocol(detail: impl Into<String>) -> Self {
        CriuError::Protocol {
            detail: detail.into(),
        }
    }

    /// The path of CRIU's log for a failed dump/restore, if any.
    pub fn log_path(&self) -> Option<&Path> {
        match self {
            CriuError::LazyPages {
                restore: Some(r), ..
            } => r.log_path(),
            CriuError::Failed { log_path, .. } if !log_path.as_os_str().is_empty() => {
                Some(log_path)
            }
            _ => None,
        }
    }
}

fn display_lazy(why: &str, log_tail: &[String], restore: Option<&CriuError>) -> String {
    let mut s = format!("lazy restore failed: the page server, {why}");
    if !log_tail.is_empty() {
        s.push_str("; its log ends:");
        for line in log_tail {
            s.push_str("\n  ");
            s.push_str(line);
        }
    }
    if let Some(r) = restore {
        let _ = write!(s, "\nthe restore: {r}");
    }
    s.push_str("\nthe checkpoint is unchanged: restore it again (without --lazy to rule the page server out)");
    s
}

fn display_failed(
    op: &str,
    cr_errno: Option<i32>,
    errmsg: Option<&str>,
    log_path: &Path,
    log_tail: &[String],
) -> String {
    let mut s = format!("criu {op} failed");
    match errmsg {
        Some(m) if !m.trim().is_empty() => {
            let _ = write!(s, ": {}", m.trim());
        }
        _ => {}
    }
    if let Some(e) = cr_errno.filter(|e| *e != 0) {
        let _ = write!(s, " (errno {e}: {})", nix::errno::Errno::from_raw(e).desc());
    }
    if !log_path.as_os_str().is_empty() {
        let _ = write!(s, "; log: {}", log_path.display());
    }
    if !log_tail.is_empty() {
        s.push_str("; last errors:");
        for line in log_tail {
            s.push_str("\n  ");
            s.push_str(line);
        }
    }
    s
}

fn is_harmless(line: &str) -> bool {
    HARMLESS.iter().any(|h| line.contains(h))
}

fn read_lines(path: &Path) -> Vec<String> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The last `n` lines of CRIU log `path` that report an error (contain "Error" or "err"),
/// leaving out known-harmless ones. Empty when the file can not be read.
pub fn log_tail(path: &Path, n: usize) -> Vec<String> {
    let lines: Vec<String> = read_lines(path)
        .into_iter()
        .filter(|l| (l.contains("Error") || l.contains("err")) && !is_harmless(l))
        .collect();
    let skip = lines.len().saturating_sub(n);
    lines.into_iter().skip(skip).collect()
}

/// The first error line of CRIU log `path` that is not a known-harmless one, without its
/// `(00.012345) ` timestamp. CRIU's own `cr_errmsg` is its *first* error, which often is the
/// harmless RLIMIT_NOFILE one; this is the replacement for it.
pub(crate) fn first_error(path: &Path) -> Option<String> {
    read_lines(path)
        .into_iter()
        .find(|l| l.contains("Error") && !is_harmless(l))
        .map(|l| strip_timestamp(&l).to_string())
}

/// Whether a message is one of the errors CRIU always reports and that mean nothing.
pub(crate) fn is_harmless_msg(msg: &str) -> bool {
    is_harmless(msg)
}

fn strip_timestamp(line: &str) -> &str {
    let t = line.trim_start();
    if t.starts_with('(') {
        if let Some(end) = t.find(") ") {
            if t[1..end].chars().all(|c| c.is_ascii_digit() || c == '.') {
                return &t[end + 2..];
            }
        }
    }
    t
}

/// [`log_tail`], falling back to the last `n` non-empty lines of the log when it holds no
/// error line at all (so that a failure always shows *something* when a log exists).
pub(crate) fn failure_tail(path: &Path, n: usize) -> Vec<String> {
    let tail = log_tail(path, n);
    if !tail.is_empty() {
        return tail;
    }
    let lines: Vec<String> = read_lines(path)
        .into_iter()
        .filter(|l| !l.trim().is_empty() && !is_harmless(l))
        .collect();
    let skip = lines.len().saturating_sub(n);
    lines.into_iter().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn log(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents.as_bytes()).unwrap();
        f
    }

    #[test]
    fn log_tail_keeps_error_lines_and_skips_rlimit() {
        let f = log("(00.000001) Version: 4.1.1\n\
             (00.000002) Error (criu/util.c:1): Can't setup RLIMIT_NOFILE for self: Operation not permitted\n\
             (00.000003) Dumping task\n\
             (00.000004) Error (criu/files.c:123): Can't open fd 5\n\
             (00.000005) seize: failed to attach: err -3\n\
             (00.000006) Unlock network\n");
        let tail = log_tail(f.path(), 15);
        assert_eq!(
            tail,
            vec![
                "(00.000004) Error (criu/files.c:123): Can't open fd 5".to_string(),
                "(00.000005) seize: failed to attach: err -3".to_string(),
            ]
        );
        let last = log_tail(f.path(), 1);
        assert_eq!(
            last,
            vec!["(00.000005) seize: failed to attach: err -3".to_string()]
        );
    }

    #[test]
    fn log_tail_limits_to_last_n() {
        let text: String = (0..40)
            .map(|i| format!("(00.{i:06}) Error (x.c:{i}): boom {i}\n"))
            .collect();
        let f = log(&text);
        let tail = log_tail(f.path(), 15);
        assert_eq!(tail.len(), 15);
        assert!(tail[0].ends_with("boom 25"));
        assert!(tail[14].ends_with("boom 39"));
    }

    #[test]
    fn log_tail_missing_file_is_empty() {
        assert!(log_tail(Path::new("/nonexistent/criu/dump.log"), 15).is_empty());
        assert!(failure_tail(Path::new("/nonexistent/criu/dump.log"), 15).is_empty());
    }

    #[test]
    fn first_error_skips_rlimit_and_timestamp() {
        let f = log("(00.000002) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n\
             (00.042126) Error (criu/cr-restore.c:1230): Can't fork for 12081: File exists\n\
             (00.042150) Error (criu/cr-restore.c:2320): Restoring FAILED.\n");
        assert_eq!(
            first_error(f.path()).as_deref(),
            Some("Error (criu/cr-restore.c:1230): Can't fork for 12081: File exists")
        );
        assert!(is_harmless_msg(
            "Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted"
        ));
    }

    #[test]
    fn failure_tail_falls_back_to_last_lines() {
        let f = log("a\nb\n\nc\n");
        assert!(log_tail(f.path(), 15).is_empty());
        assert_eq!(
            failure_tail(f.path(), 2),
            vec!["b".to_string(), "c".to_string()]
        );
    }

    #[test]
    fn failed_display_mentions_everything() {
        let e = CriuError::Failed {
            op: "dump",
            cr_errno: Some(libc::ESRCH),
            errmsg: Some("No process with such pid".into()),
            log_path: PathBuf::from("/tmp/img/dump.log"),
            log_tail: vec!["(00.1) Error (criu/cr-dump.c:1): nope".into()],
        };
        let s = e.to_string();
        assert!(s.contains("dump"), "{s}");
        assert!(s.contains("No process with such pid"), "{s}");
        assert!(s.contains("/tmp/img/dump.log"), "{s}");
        assert!(s.contains("Error (criu/cr-dump.c:1): nope"), "{s}");
        assert_eq!(e.log_path(), Some(Path::new("/tmp/img/dump.log")));
    }
}
