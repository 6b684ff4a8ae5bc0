//! The shim's own error type and its one mapping onto ttrpc status codes, so containerd
//! (and `ctr`) show a clear message with the right code (NotFound, InvalidArgument, ...).

use containerd_shim_protos::ttrpc;

/// Everything a task request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// No container or process with that id in this shim (or it already finished).
    #[error("{0}")]
    NotFound(String),
    /// A container or process with that id already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The request is malformed (unknown options, bad spec, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The process is in the wrong state for the request (e.g. checkpoint of a stopped task).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The runtime binary (runc or cedana-runc) failed; carries its stderr.
    #[error("{binary} {command} failed ({status}): {stderr}")]
    Runtime {
        binary: String,
        command: String,
        status: String,
        stderr: String,
    },
    /// Host I/O, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The checkpoint a new container asks to be restored from cannot be used.
    #[error(
        "cannot restore from {}={path}: {reason}",
        crate::restore_from::RESTORE_ANNOTATION
    )]
    RestoreFrom { path: String, reason: String },
    /// Anything else from the shim library.
    #[error("{0}")]
    Other(String),
}

/// Result with [`ShimError`].
pub type Result<T> = std::result::Result<T, ShimError>;

impl ShimError {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ShimError {
        let context = context.into();
        move |source| ShimError::Io { context, source }
    }

    /// The ttrpc code containerd sees for this error.
    pub fn code(&self) -> ttrpc::Code {
        match self {
            ShimError::NotFound(_) => ttrpc::Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => ttrpc::Code::ALREADY_EXISTS,
            ShimError::InvalidArgument(_) => ttrpc::Code::INVALID_ARGUMENT,
            ShimError::FailedPrecondition(_) | ShimError::RestoreFrom { .. } => {
                ttrpc::Code::FAILED_PRECONDITION
            }
            ShimError::Runtime { .. } | ShimError::Io { .. } | ShimError::Other(_) => {
                ttrpc::Code::INTERNAL
            }
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

impl From<containerd_shim::Error> for ShimError {
    fn from(e: containerd_shim::Error) -> Self {
        match e {
            containerd_shim::Error::NotFoundError(s) => ShimError::NotFound(s),
            containerd_shim::Error::InvalidArgument(s) => ShimError::InvalidArgument(s),
            containerd_shim::Error::FailedPreconditionError(s) => ShimError::FailedPrecondition(s),
            other => ShimError::Other(other.to_string()),
        }
    }
}

impl From<ShimError> for containerd_shim::Error {
    fn from(e: ShimError) -> Self {
        match e {
            ShimError::NotFound(s) => containerd_shim::Error::NotFoundError(s),
            ShimError::InvalidArgument(s) => containerd_shim::Error::InvalidArgument(s),
            other => containerd_shim::Error::Other(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(
            ShimError::NotFound("x".into()).code(),
            ttrpc::Code::NOT_FOUND
        );
        assert_eq!(
            ShimError::InvalidArgument("x".into()).code(),
            ttrpc::Code::INVALID_ARGUMENT
        );
        assert_eq!(
            ShimError::FailedPrecondition("x".into()).code(),
            ttrpc::Code::FAILED_PRECONDITION
        );
        let e: ttrpc::Error = ShimError::AlreadyExists("container c1".into()).into();
        match e {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), ttrpc::Code::ALREADY_EXISTS);
                assert_eq!(s.message(), "container c1 already exists");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
