//! # negvol-metrics
//!
//! Segmentation metrics with stated definitions: overlap scores, the exact anisotropic
//! Euclidean distance transform, surface extraction, surface-distance metrics and the seed
//! paper's probabilistic "CE" score. Pure Rust.
//!
//! ```
//! use ndarray::Array3;
//! use negvol_metrics::edt::squared_edt;
//! let mut m = Array3::from_elem([4, 4, 4], false);
//! m[[0, 0, 0]] = true;
//! let d2 = squared_edt(m.view(), [1.0, 1.0, 1.0]).unwrap();
//! assert_eq!(d2[[3, 3, 3]], 27.0);
//! ```
#![warn(missing_docs)]

pub mod edt;
mod error;
pub mod surface;

pub use error::{MetricsError, Result};
