//! Errors of checkpoint stores, and how the engine reports them.

use crate::error::EngineError;
use crate::image::error::ImageError;

/// What a checkpoint store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A local filesystem problem, reported as the image code always has.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A location that cannot be parsed.
    #[error("invalid location {value:?}: {reason}")]
    InvalidLocation {
        /// The value given.
        value: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// No backend is registered for the location's scheme.
    #[error(
        "no storage backend serves {scheme}:// locations in this build (served: {served}); \
         use a local directory or s3://BUCKET/PREFIX"
    )]
    UnknownScheme {
        /// The scheme asked for.
        scheme: String,
        /// The schemes that are served, comma-separated.
        served: String,
    },
    /// Publishing would replace an existing checkpoint.
    #[error(
        "{location} already exists; a checkpoint is never replaced: choose another --name or \
         delete the old one (`cedana checkpoint delete`)"
    )]
    Exists {
        /// The checkpoint's location.
        location: String,
    },
    /// Nothing is stored there.
    #[error("no checkpoint at {location}")]
    NotFound {
        /// The location asked for.
        location: String,
    },
    /// A remote store refused or could not be reached; `problem` says what to do.
    #[error("{location}: {context}: {problem}")]
    Remote {
        /// The location being worked on.
        location: String,
        /// What was being done.
        context: String,
        /// What went wrong and what to do about it (never a credential).
        problem: String,
    },
    /// The backend failed.
    #[error("{location}: {context}: {source}")]
    Io {
        /// The location being worked on.
        location: String,
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// The engine's error for this one; `field` names the request field a bad or
    /// unserved location came from (`dir`, `path`).
    pub fn into_engine(self, field: &'static str) -> EngineError {
        match self {
            Self::Image(e) => EngineError::Image(e),
            e @ (Self::InvalidLocation { .. } | Self::UnknownScheme { .. }) => {
                EngineError::InvalidRequest {
                    field,
                    reason: e.to_string(),
                }
            }
            // Said the way a local rename's refusal always was.
            Self::Exists { location } => EngineError::Image(ImageError::Exists {
                path: location.into(),
            }),
            Self::NotFound { location } => EngineError::NoSuchCheckpoint {
                path: location.into(),
            },
            Self::Io {
                location,
                context,
                source,
            } => EngineError::io(format!("{location}: {context}"), source),
            Self::Remote {
                location,
                context,
                problem,
            } => EngineError::io(
                format!("{location}: {context}"),
                std::io::Error::other(problem),
            ),
        }
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        e.into_engine("location")
    }
}
