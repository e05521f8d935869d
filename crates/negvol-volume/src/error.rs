use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

/// Everything that can go wrong when building, reading or writing a volume.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// A geometry was asked for with an invalid shape, spacing or affine.
    #[error("invalid geometry: {0}")]
    InvalidGeometry(String),
    /// Two volumes (or a volume and an array) that must share a geometry do not.
    #[error("geometry mismatch: {0}")]
    GeometryMismatch(String),
    /// The data array does not have the shape the geometry says.
    #[error("array shape {found:?} does not match geometry shape {expected:?}")]
    ShapeMismatch {
        /// Shape given by the geometry.
        expected: [usize; 3],
        /// Shape of the array.
        found: Vec<usize>,
    },
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file could be opened but its content is not valid for its format.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A file uses a feature of its format that negvol does not support.
    #[error("{path}: unsupported: {message}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is unsupported.
        message: String,
    },
}
