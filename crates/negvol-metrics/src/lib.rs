//! # negvol-metrics
//!
//! Segmentation metrics with stated definitions: overlap scores ([`mod@overlap`]), the exact
//! anisotropic Euclidean distance transform ([`edt`]), surface extraction ([`surface`]),
//! surface-distance metrics and their named variants ([`distance`]), the seed paper's "CE"
//! score ([`probabilistic`]), whole-pair and per-label evaluation ([`pair`]), mean +- std
//! reports ([`report`]), the seed paper's Table 1 rows and their markdown table ([`table1`])
//! and connected components under 6-, 18- or 26-connectivity
//! ([`components`]: label volume, per-component statistics, keeping the largest components).
//! Pure Rust, parallel with rayon.
//!
//! Definitions follow `DESIGN.md` ("Metric definitions") and are written out in each module:
//! surface = boundary voxels under 6-connectivity by default (18/26 or DeepMind surfels as
//! variants); HD = max of the two directed maxima; HDp = max of the two directed percentiles
//! (pooled variant by name), numpy-linear percentile interpolation (DeepMind's cumulative-area
//! rule for surfels); ASSD = mean of both directed lists pooled; MSD = mean of the two
//! directed means; NSD(tau) = surface Dice at tolerance tau (distance <= tau). All distances
//! are in mm from the exact EDT. Empty masks are never a silent number: every value is a
//! [`MetricValue`] carrying a [`Note`] when it is undefined or conventional.
//!
//! Differences from the Python peers by design: DeepMind's surfel areas use a hand-made
//! marching-cubes table whose triangulation of non-planar polygons differs from ours (minimum
//! area) for 64 of the 256 codes, so area-weighted means and percentiles of the surfel variant
//! can differ slightly from DeepMind's; the distances themselves are identical.
//!
//! ```
//! use ndarray::{s, Array3};
//! use negvol_metrics::{evaluate_pair, surface_distances, EvalOptions, HdConvention, SurfaceKind};
//! // A 4x4x4 box and the same box shifted by 2 voxels along k, spacing 0.5 mm.
//! let mut r = Array3::from_elem([10, 10, 12], false);
//! r.slice_mut(s![3..7, 3..7, 3..7]).fill(true);
//! let mut p = Array3::from_elem([10, 10, 12], false);
//! p.slice_mut(s![3..7, 3..7, 5..9]).fill(true);
//! let d = surface_distances(r.view(), p.view(), [0.5; 3], SurfaceKind::default()).unwrap();
//! assert_eq!(d.hausdorff().value, Some(1.0));
//! let m = evaluate_pair(r.view(), p.view(), [0.5; 3], &EvalOptions::default()).unwrap();
//! assert_eq!(m.overlap.dice.value, Some(0.5));
//! assert!(m.voxel_surface.hd_percentile.value.unwrap() <= 1.0);
//! ```
#![warn(missing_docs)]

pub mod components;
pub mod distance;
pub mod edt;
mod error;
mod nearest;
pub mod overlap;
pub mod pair;
pub mod probabilistic;
pub mod report;
pub mod surface;
pub mod table1;
mod value;

pub use components::{
    component_stats, keep_largest_components, label_components, ComponentFilter, ComponentStats,
    FilterOutcome, Labelling,
};
pub use distance::{
    seed_paper_hausdorff_voxels, solid_hausdorff, surface_distances, DirectedDistances,
    HdConvention, SolidHausdorff, SurfaceDistances, SurfaceKind,
};
pub use error::{MetricsError, Result};
pub use overlap::{confusion, dice, overlap, ConfusionCounts, OverlapMetrics};
pub use pair::{
    evaluate_labels, evaluate_pair, DistanceMetrics, EvalOptions, LabelMetrics, PairMetrics,
};
pub use probabilistic::{cross_entropy, cross_entropy_masked, cross_entropy_multiclass};
pub use report::{csv_table, CaseRow, Report, Summary};
pub use surface::{BoundingBox, Connectivity};
pub use table1::{markdown_table, table1_row, table1_row_annotated, Table1Row};
pub use value::{MetricValue, Note};
