//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong when sampling, rasterizing or writing a phantom.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PhantomError {
    /// A configuration value is out of its valid domain; the message names the field and value.
    #[error("invalid phantom config: {0}")]
    InvalidConfig(String),
    /// The sampled anatomy does not fit the requested grid (e.g. the negative volume would be cut
    /// by the edge of the field of view); the message says which side and where.
    #[error("phantom does not fit its grid: {0}")]
    DoesNotFit(String),
    /// An error from the volume crate (geometry construction, NIfTI writing).
    #[error(transparent)]
    Volume(#[from] negvol_volume::VolumeError),
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON (de)serialization error on a named file.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = PhantomError> = std::result::Result<T, E>;
