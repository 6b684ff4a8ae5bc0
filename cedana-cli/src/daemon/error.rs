//! The daemon's errors and the ONE mapping from error kinds onto gRPC status codes.

use cedana_runtime::error::{EngineError, ErrorKind};
use tonic::{Code, Status};

/// Errors of the job manager.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The engine failed; its message already says what to do.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Reaching or driving a guest agent failed; its message says what to do.
    #[error(transparent)]
    Guest(#[from] cedana_runtime::guest::GuestError),
    /// No job with that id.
    #[error("no such job: {0} (see `cedana ps`)")]
    NoSuchJob(String),
    /// No checkpoint with that id.
    #[error("no such checkpoint: {0} (see `cedana checkpoints`)")]
    NoSuchCheckpoint(String),
    /// The job id is taken.
    #[error(
        "job {0} already exists; choose another --jid or delete it with `cedana job delete {0}`"
    )]
    JobExists(String),
    /// The job's process is alive, which the operation cannot allow.
    #[error("job {jid} is still running (PID {pid}); {what}")]
    JobRunning {
        jid: String,
        pid: i32,
        /// What to do about it.
        what: String,
    },
    /// The job's process is gone.
    #[error(
        "job {jid} is not running (state {state}); restore it with `cedana restore job {jid}`"
    )]
    JobNotRunning {
        jid: String,
        state: super::job_fields::JobState,
    },
    /// Nothing to restore a job from.
    #[error("job {0} has no checkpoint; dump it first with `cedana dump job {0}` or pass --path")]
    NoCheckpoint(String),
    /// A request field is wrong.
    #[error("{0}")]
    InvalidArgument(String),
    /// An id or name in the request breaks the rules of `ids.rs`.
    #[error(transparent)]
    BadId(#[from] crate::ids::IdError),
    /// The caller may not do this: the message says who, what, and why.
    #[error("{0}")]
    Forbidden(String),
    /// The store failed.
    #[error("daemon database error: {0}")]
    Store(#[from] rusqlite::Error),
    /// Any other I/O failure, with context.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl DaemonError {
    /// Broad class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Engine(e) => e.kind(),
            Self::Guest(e) => e.kind(),
            Self::NoSuchJob(_) | Self::NoSuchCheckpoint(_) => ErrorKind::NotFound,
            Self::JobExists(_) => ErrorKind::AlreadyExists,
            Self::JobRunning { .. } | Self::JobNotRunning { .. } | Self::NoCheckpoint(_) => {
                ErrorKind::FailedPrecondition
            }
            Self::InvalidArgument(_) | Self::BadId(_) => ErrorKind::InvalidArgument,
            Self::Forbidden(_) => ErrorKind::PermissionDenied,
            Self::Store(_) | Self::Io { .. } => ErrorKind::Internal,
        }
    }
}

/// The gRPC code for an error kind.
pub fn code_for(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Internal => Code::Internal,
    }
}

/// Longest message a Status carries. It travels in an HTTP/2 header (`grpc-message`),
/// and clients drop a connection whose headers pass 16 KiB ("h2 protocol error"), so a
/// message built from some long input must be cut rather than lose the answer.
pub const MAX_STATUS_MESSAGE: usize = 4096;

impl From<DaemonError> for Status {
    fn from(e: DaemonError) -> Status {
        Status::new(code_for(e.kind()), bounded(e.to_string()))
    }
}

/// `msg` cut to [`MAX_STATUS_MESSAGE`] bytes (on a character boundary), saying so.
pub fn bounded(mut msg: String) -> String {
    if msg.len() <= MAX_STATUS_MESSAGE {
        return msg;
    }
    let mut cut = MAX_STATUS_MESSAGE;
    while !msg.is_char_boundary(cut) {
        cut -= 1;
    }
    let total = msg.len();
    msg.truncate(cut);
    msg.push_str(&format!("… (message cut: {total} bytes)"));
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_its_code() {
        let cases = [
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::InvalidArgument, Code::InvalidArgument),
            (ErrorKind::AlreadyExists, Code::AlreadyExists),
            (ErrorKind::FailedPrecondition, Code::FailedPrecondition),
            (ErrorKind::PermissionDenied, Code::PermissionDenied),
            (ErrorKind::DataLoss, Code::DataLoss),
            (ErrorKind::Internal, Code::Internal),
        ];
        for (kind, code) in cases {
            assert_eq!(code_for(kind), code, "{kind:?}");
        }
    }

    #[test]
    fn engine_message_passes_unchanged() {
        let e = EngineError::NoSuchProcess { pid: 4242 };
        let msg = e.to_string();
        let status = Status::from(DaemonError::from(e));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), msg);
    }

    #[test]
    fn daemon_errors_have_their_codes() {
        let running = DaemonError::JobRunning {
            jid: "a".into(),
            pid: 1,
            what: "kill it".into(),
        };
        assert_eq!(Status::from(running).code(), Code::FailedPrecondition);
        assert_eq!(
            Status::from(DaemonError::NoSuchJob("x".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            Status::from(DaemonError::JobExists("x".into())).code(),
            Code::AlreadyExists
        );
    }

    #[test]
    fn a_huge_message_is_cut_to_fit_a_header() {
        let status = Status::from(DaemonError::NoSuchJob("x".repeat(20 << 10)));
        assert!(status.message().len() <= MAX_STATUS_MESSAGE + 64);
        assert!(status.message().ends_with("bytes)"), "says it was cut");
        assert_eq!(bounded("short".into()), "short");
    }
}
