use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

/// Everything that can go wrong when building, reading or writing a volume.
///
/// Every variant that concerns a file names it, so a message alone says which file failed
/// and why.
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
    /// An argument given by the caller is invalid (e.g. an orientation code such as `"RAR"`,
    /// a non-positive target spacing, a frame index past the end).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file could be opened but its content is not valid for its format (wrong magic,
    /// truncated, zero or negative dimensions, non-finite spacing or affine, ...).
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A DICOM series folder is inconsistent: mixed series, sizes or orientations, missing
    /// slices, uneven or duplicate slice positions, or no images at all.
    #[error("{path}: DICOM series: {message}")]
    Series {
        /// The folder.
        path: PathBuf,
        /// What is wrong.
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
    /// A file's header claims more voxels than the configured limit; nothing was allocated.
    #[error("{path}: header claims {voxels} voxels ({dims:?}), more than the limit of {limit} (raise the max_voxels read option if this is intended)")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Dimensions claimed by the header.
        dims: Vec<u64>,
        /// Number of voxels claimed (saturating).
        voxels: u64,
        /// The limit in force.
        limit: u64,
    },
    /// A 4D (or higher) file was read as a single 3D volume.
    #[error("{path}: file has {frames} frames (dims {dims:?}); read one with a frame option (read_nifti_frame, ReadOptions::frame)")]
    NotThreeD {
        /// The file.
        path: PathBuf,
        /// Dimensions of the file.
        dims: Vec<u64>,
        /// Number of 3D frames.
        frames: u64,
    },
    /// A file name whose extension names no format negvol reads or writes.
    #[error("{path}: unknown image format (supported: {})", supported.join(", "))]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// The extensions negvol handles.
        supported: Vec<&'static str>,
    },
    /// A stored or computed value cannot be represented in the requested voxel type
    /// (out of range, or NaN for an integer type).
    #[error("{context}: value {value} at voxel {index:?} cannot be represented as {dtype}")]
    ValueOutOfRange {
        /// The file (or operation) concerned.
        context: String,
        /// The offending value (after scaling).
        value: f64,
        /// Index `[i, j, k]` of the first offending voxel.
        index: [usize; 3],
        /// The target type.
        dtype: &'static str,
    },
}

impl VolumeError {
    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        VolumeError::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        VolumeError::Unsupported {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        VolumeError::Io {
            path: path.into(),
            source,
        }
    }
}
