//! # negvol
//!
//! Derives the negative volume (NV) of the temporomandibular joint, the empty space between
//! the mandibular condyle (MC) and the temporal bone (TB), from their masks, and measures it
//! (DESIGN.md, "The negative volume").
//!
//! - [`derive_nv`]: head extraction, normal-ray inflation clipped by TB (or the voxel-only
//!   "between" method), clean-up, per-side measurements ([`NvReport`]);
//! - [`NvConfig`]: every parameter, serde, documented defaults;
//! - [`mesh`]: marching tetrahedra on a mask, binary STL;
//! - [`render`]: PNG slices with MC/TB/NV overlays;
//! - [`resolve_overlap_by_score`]: makes MC and TB masks from two separate networks disjoint;
//! - [`drop_condyles_on_tb`]: removes predicted condyle components that rest on temporal bone;
//! - [`clean_predicted_masks`]: the clean-up of predicted MC and TB masks (that check, then the
//!   largest connected components of each, [`CleanupConfig`]) with a [`CleanupReport`];
//! - [`nv_table_row`]: the seed paper's Table 1 NV row from predicted MC and TB masks (clean-up,
//!   NV, scores against the true NV) as an [`NvTableRow`];
//! - [`write_outputs`]: NV mask, width maps, meshes, pictures and the JSON report in a folder.
//!
//! Accuracy on the phantoms and speed are in the crate README.
//!
//! ```
//! use ndarray::Array3;
//! use negvol::{derive_nv, NvConfig, Side, SideSplit};
//! use negvol_volume::{Geometry, Volume};
//!
//! // A ball (condyle head) of radius 5 mm, top at z = 12.75 mm, under a flat slab (temporal
//! // bone) from z = 15.25 mm: a 2.5 mm joint space.
//! let g = Geometry::from_spacing([40, 40, 40], [0.5; 3]).unwrap();
//! let c = [10.0, 10.0, 7.75];
//! let mc = Array3::from_shape_fn([40, 40, 40], |(i, j, k)| {
//!     let p = [i as f64 * 0.5, j as f64 * 0.5, k as f64 * 0.5];
//!     (p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2) <= 25.0
//! });
//! let tb = Array3::from_shape_fn([40, 40, 40], |(_, _, k)| k as f64 * 0.5 >= 15.25);
//! let cfg = NvConfig { side_split: SideSplit::None, ..Default::default() };
//! let res = derive_nv(
//!     &Volume::new(mc, g.clone()).unwrap(),
//!     &Volume::new(tb, g).unwrap(),
//!     &cfg,
//! )
//! .unwrap();
//! let side = res.report.side(Side::Whole).unwrap();
//! assert!(side.has_nv);
//! let w = side.width.as_ref().unwrap();
//! assert!((w.min_mm - 2.5).abs() < 0.15, "{}", w.min_mm);
//! ```
#![warn(missing_docs)]
// Index loops over the three axes read better than zipped iterators here.
#![allow(clippy::needless_range_loop)]

mod cleanup;
mod config;
mod error;
mod grid;
pub mod mesh;
mod output;
mod overlap;
mod pipeline;
mod plausible;
pub mod render;
mod report;
mod score;

pub use cleanup::{clean_predicted_masks, CleanupConfig, CleanupReport};
pub use config::{Method, NvConfig, OverlapPolicy, SideSplit, CONDYLE_COMPONENT_FRACTION};
pub use error::{NvError, Result};
/// The component filter of [`CleanupConfig::keep_largest`] and its outcome (from
/// `negvol-metrics`).
pub use negvol_metrics::components::{ComponentFilter, FilterOutcome};
pub use output::{write_atomic, write_outputs, OutputOptions};
pub use overlap::{resolve_overlap_by_score, OverlapResolution};
pub use pipeline::{derive_nv, NvResult, RayRecord, SideOutput};
pub use plausible::{drop_condyles_on_tb, CondyleCheck, CondyleCheckOutcome};
pub use report::{
    asymmetry_index, Asymmetry, AsymmetryUndefined, Issue, IssueCode, NvReport, RayCounts, Side,
    SideReport, SplitPlane, WidthStats, REMOVED_VOLUME_ISSUE_FRACTION,
};
pub use score::{nv_table_row, NvTableRow, TRUTH_GRID_TOLERANCE_MM};
