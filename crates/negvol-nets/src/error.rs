//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong when building, running, saving or loading a network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The input's spatial size is not a multiple of the network's total down-sampling factor.
    #[error(
        "input shape {shape:?}: spatial size must be divisible by {divisor:?} per axis \
         (the network's total down-sampling factor); pad or crop the input"
    )]
    InputSize {
        /// The offending input shape `[N, C, ni, nj, nk]`.
        shape: Vec<i64>,
        /// The required divisor per spatial axis.
        divisor: [i64; 3],
    },
    /// The input is not a 5-D tensor `[N, C, ni, nj, nk]`.
    #[error("input shape {shape:?}: expected a 5-D tensor [N, C, ni, nj, nk]")]
    InputRank {
        /// The offending input shape.
        shape: Vec<i64>,
    },
    /// The input has the wrong number of channels.
    #[error("input shape {shape:?}: expected {expected} input channel(s), got {got}")]
    InputChannels {
        /// The offending input shape.
        shape: Vec<i64>,
        /// Channels the network was built for.
        expected: i64,
        /// Channels found in the input.
        got: i64,
    },
    /// The network configuration is inconsistent.
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// A libtorch operation failed (out of memory, device mismatch, ...).
    #[error("libtorch error in {context}: {source}")]
    Torch {
        /// Where it happened.
        context: String,
        /// The underlying error.
        #[source]
        source: tch::TchError,
    },
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON configuration could not be parsed.
    #[error("configuration JSON {origin}: {source}")]
    Json {
        /// Where the JSON came from (a path or "string").
        origin: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A safetensors file is malformed or holds an unsupported dtype.
    #[error("safetensors file {path}: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The weights file lacks parameters the network needs.
    #[error("weights file {path}: missing {} tensor(s), first: {}", missing.len(), missing.first().map(String::as_str).unwrap_or(""))]
    MissingTensors {
        /// The file.
        path: PathBuf,
        /// Names (in negvol naming) that were not found.
        missing: Vec<String>,
    },
    /// A tensor in the weights file has the wrong shape.
    #[error(
        "weights file {path}: tensor {name} has shape {got:?}, the network expects {expected:?}"
    )]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// Parameter name (negvol naming).
        name: String,
        /// Shape the network expects.
        expected: Vec<i64>,
        /// Shape found in the file.
        got: Vec<i64>,
    },
}

impl NetError {
    pub(crate) fn torch(context: impl Into<String>) -> impl Fn(tch::TchError) -> NetError {
        let context = context.into();
        move |source| NetError::Torch {
            context: context.clone(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = NetError> = std::result::Result<T, E>;
