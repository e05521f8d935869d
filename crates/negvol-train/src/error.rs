//! The error type of this crate.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Everything that can go wrong while loading data, training, checkpointing or inferring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A volume could not be read, written or built.
    #[error("{context}: {source}")]
    Volume {
        /// What was being done (usually the case and the file).
        context: String,
        /// The underlying error.
        #[source]
        source: negvol_volume::VolumeError,
    },
    /// A case of a dataset is invalid (geometry mismatch, bad labels, missing file...).
    #[error("case {case}: {message}")]
    Case {
        /// The case id.
        case: String,
        /// What is wrong with it.
        message: String,
    },
    /// A dataset folder or manifest is invalid.
    #[error("dataset {path}: {message}")]
    Dataset {
        /// The folder or manifest.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or written.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A libtorch operation failed.
    #[error("{context}: {source}")]
    Torch {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: tch::TchError,
    },
    /// The network failed (shape error, wrong input size...).
    #[error("network: {0}")]
    Network(String),
    /// The loss failed or produced a non-finite value.
    #[error("loss: {0}")]
    Loss(String),
    /// A checkpoint is missing, incomplete or does not match the configuration.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A data-loading worker thread failed.
    #[error("data loader: {0}")]
    Loader(String),
    /// The joint locator cannot work (empty atlas, unreadable locator file, a network that is
    /// not a one-target heatmap, an image with no finite voxel...).
    #[error("joint locator: {0}")]
    Locate(String),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn torch(context: impl Into<String>, source: tch::TchError) -> Self {
        Self::Torch {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn case(case: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Case {
            case: case.into(),
            message: message.into(),
        }
    }
}
