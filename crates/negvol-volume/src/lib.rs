//! # negvol-volume
//!
//! Volumes with geometry for the negvol toolkit: [`Geometry`] (shape, spacing and the 4x4
//! voxel-to-world affine) and [`Volume<T>`] (an `ndarray::Array3<T>` plus its geometry).
//!
//! Conventions (shared by every negvol crate):
//! - index order is NIfTI's `(i, j, k)`; an array has shape `[ni, nj, nk]` in standard
//!   (row-major) layout, so `k` is fastest in memory. No `(z, y, x)` reversal anywhere;
//! - spacing is `[si, sj, sk]` in millimetres, in the same order;
//! - world coordinates are RAS+ millimetres, from the voxel-to-world affine.
//!
//! ```
//! use negvol_volume::{Geometry, Volume};
//! let g = Geometry::from_spacing([4, 5, 6], [0.4, 0.4, 0.8]).unwrap();
//! let v = Volume::<u8>::zeros(g.clone());
//! assert_eq!(v.data().shape(), &[4, 5, 6]);
//! assert!((g.voxel_volume_mm3() - 0.128).abs() < 1e-12);
//! assert_eq!(g.voxel_to_world([1.0, 0.0, 1.0]), [0.4, 0.0, 0.8]);
//! ```

mod error;
mod geometry;
mod volume;

pub use error::{Result, VolumeError};
pub use geometry::Geometry;
pub use volume::Volume;
