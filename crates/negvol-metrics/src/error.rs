//! The crate's error type.

use thiserror::Error;

/// Errors of `negvol-metrics`. Every message names the offending value.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum MetricsError {
    /// A mask that must contain at least one `true` voxel is empty (e.g. the input of a
    /// distance transform).
    #[error("the mask is empty (no foreground voxel), so distances to it are undefined")]
    EmptyMask,
    /// A spacing component is not finite or not strictly positive.
    #[error("invalid spacing {spacing:?} mm: every component must be finite and > 0")]
    InvalidSpacing {
        /// The spacing that was given.
        spacing: [f64; 3],
    },
    /// Two arrays that must have the same shape do not.
    #[error("shape mismatch: {what} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Which input mismatched.
        what: &'static str,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// The volume is too large for the 32-bit indices of an algorithm (the EDT's feature index,
    /// the run index of connected components).
    #[error("volume of shape {shape:?} has {voxels} voxels, too many for 32-bit indices")]
    TooLarge {
        /// Shape of the volume.
        shape: [usize; 3],
        /// Its number of voxels.
        voxels: u128,
    },
    /// A parameter is out of its valid range.
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What is required.
        reason: &'static str,
    },
    /// A probability is outside [0, 1] or not finite.
    #[error("invalid probability {value} at flat index {index}: must be finite and in [0, 1]")]
    InvalidProbability {
        /// The offending value.
        value: f64,
        /// Its flat (row-major) index.
        index: usize,
    },
}

/// `Result` with [`MetricsError`].
pub type Result<T, E = MetricsError> = std::result::Result<T, E>;

/// Checks that a spacing is finite and positive.
pub(crate) fn check_spacing(spacing: [f64; 3]) -> Result<()> {
    if spacing.iter().all(|s| s.is_finite() && *s > 0.0) {
        Ok(())
    } else {
        Err(MetricsError::InvalidSpacing { spacing })
    }
}
