//! The crate's error type.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = NvError> = std::result::Result<T, E>;

/// Everything that can stop the negative-volume pipeline.
///
/// Conditions that concern one side only (no condyle on the left, no contact within reach, ...)
/// are not errors: they are [`crate::Issue`] entries of that side's report, so that the other
/// side is still measured. [`crate::NvResult::require_nv`] turns "no side produced an NV" into
/// [`NvError::NoNegativeVolume`] for callers that want an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NvError {
    /// A configuration value is out of its valid range.
    #[error("invalid configuration: {field} = {value}: {reason}")]
    InvalidConfig {
        /// The offending field of [`crate::NvConfig`].
        field: &'static str,
        /// Its value, as text.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// An input mask has no foreground voxel at all.
    #[error("the {which} mask is empty (no foreground voxel in {shape:?})")]
    EmptyMask {
        /// `"MC"` or `"TB"`.
        which: &'static str,
        /// Shape of the empty mask.
        shape: [usize; 3],
    },
    /// MC and TB share foreground voxels and the configuration says that is an error.
    #[error(
        "MC and TB overlap in {count} voxel(s) (first at voxel {first:?}); a voxel cannot be both \
         bones. Fix the segmentation or set overlap = prefer_mc / prefer_tb"
    )]
    MasksOverlap {
        /// Number of voxels that are in both masks.
        count: usize,
        /// The first such voxel in (i, j, k) order.
        first: [usize; 3],
    },
    /// A score (probability) used to separate MC from TB is NaN or infinite.
    #[error("non-finite score at voxel {voxel:?} (MC {mc}, TB {tb}); check the network output")]
    NonFiniteScore {
        /// The voxel, (i, j, k).
        voxel: [usize; 3],
        /// The condyle score there.
        mc: f32,
        /// The temporal-bone score there.
        tb: f32,
    },
    /// Two volumes that must share a grid do not.
    #[error("{what}: {source}")]
    Geometry {
        /// Which volumes were compared.
        what: String,
        /// The mismatch.
        #[source]
        source: negvol_volume::VolumeError,
    },
    /// No side produced a negative volume; the reasons per side are listed.
    #[error("no negative volume was found: {reasons}")]
    NoNegativeVolume {
        /// One line per side saying why it has no NV.
        reasons: String,
    },
    /// A negvol-metrics computation failed: the distance transform (should not happen on a
    /// non-empty crop) or a connected-component labelling (only beyond its 32-bit limits).
    #[error("negvol-metrics: {0}")]
    Metrics(#[from] negvol_metrics::MetricsError),
    /// Writing an output file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding a PNG failed.
    #[error("{path}: PNG encoding: {message}")]
    Png {
        /// The file.
        path: PathBuf,
        /// What the encoder said.
        message: String,
    },
}
