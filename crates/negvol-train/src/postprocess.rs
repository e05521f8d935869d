//! Post-processing of predicted masks: keep only the largest connected components.
//!
//! Thin wrappers over [`negvol_metrics::components`], where the labelling lives (run-based
//! union-find on the foreground, no label volume); [`ComponentFilter`] and [`FilterOutcome`]
//! are re-exported from there, and [`keep_largest_components`] takes any [`AsMaskMut`] and
//! returns a [`TrainError`].
//!
//! nnU-Net's post-processing removes every foreground region but the largest when that helps on
//! validation. A TMJ scan holds one or two joints, so negvol keeps up to `max_components`
//! 26-connected components, each at least `min_fraction` of the largest one: stray
//! condyle-like false positives far from the joints (which would each seed a negative volume)
//! go, both joints stay.
//!
//! ```
//! use ndarray::{Array3, ArrayViewMut3};
//! use negvol_train::postprocess::{keep_largest_components, ComponentFilter};
//!
//! // Two 27-voxel cubes and one stray voxel.
//! let mut m = Array3::from_elem((12, 12, 12), false);
//! m.slice_mut(ndarray::s![1..4, 1..4, 1..4]).fill(true);
//! m.slice_mut(ndarray::s![7..10, 7..10, 7..10]).fill(true);
//! m[[1, 10, 10]] = true;
//! let out = keep_largest_components(&mut m, &ComponentFilter { max_components: 2, min_fraction: 0.1 })?;
//! assert_eq!((out.components, out.kept, out.removed_voxels), (3, 2, 1));
//! assert!(!m[[1, 10, 10]]);
//! # Ok::<(), negvol_train::TrainError>(())
//! ```

use ndarray::{Array3, ArrayViewMut3};
use negvol_metrics::MetricsError;

pub use negvol_metrics::components::{ComponentFilter, FilterOutcome};

use crate::{Result, TrainError};

/// Keep the largest 26-connected components of `mask` (in place): at most
/// `filter.max_components`, each at least `filter.min_fraction` of the largest. Equal sizes are
/// ranked by the index order of their first voxel, so the result is deterministic. An empty
/// mask stays empty. See [`negvol_metrics::components::keep_largest_components`].
///
/// # Errors
/// [`TrainError::Config`] when `max_components` is 0 or `min_fraction` is outside `[0, 1]`
/// (or beyond the labelling's 32-bit limits).
pub fn keep_largest_components(
    mut mask: impl AsMaskMut,
    filter: &ComponentFilter,
) -> Result<FilterOutcome> {
    negvol_metrics::components::keep_largest_components(mask.mask_mut(), filter).map_err(
        |e| match e {
            MetricsError::InvalidParameter { .. } => {
                TrainError::Config(format!("component filter: {e}"))
            }
            e => TrainError::Config(format!("keeping the largest components: {e}")),
        },
    )
}

/// A mutable boolean 3D mask: an `Array3<bool>`, a view of one, or a
/// [`negvol_volume::Volume<bool>`].
pub trait AsMaskMut {
    /// The mask as a mutable view.
    fn mask_mut(&mut self) -> ArrayViewMut3<'_, bool>;
}

impl AsMaskMut for &mut Array3<bool> {
    fn mask_mut(&mut self) -> ArrayViewMut3<'_, bool> {
        self.view_mut()
    }
}

impl AsMaskMut for ArrayViewMut3<'_, bool> {
    fn mask_mut(&mut self) -> ArrayViewMut3<'_, bool> {
        self.view_mut()
    }
}

impl AsMaskMut for &mut negvol_volume::Volume<bool> {
    fn mask_mut(&mut self) -> ArrayViewMut3<'_, bool> {
        self.view_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::s;

    // The filter itself is tested in negvol-metrics (tests/components.rs); here the wrapper:
    // every mask type, and errors mapped to TrainError::Config.
    #[test]
    fn every_mask_type_and_errors_as_train_errors() {
        let mut m = Array3::from_elem((10, 10, 10), false);
        m.slice_mut(s![6..8, 6..8, 6..8]).fill(true);
        m.slice_mut(s![0..2, 0..2, 0..2]).fill(true);
        let one = ComponentFilter {
            max_components: 1,
            min_fraction: 0.0,
        };
        let mut a = m.clone();
        let out = keep_largest_components(&mut a, &one).unwrap();
        assert_eq!((out.components, out.kept, out.removed_voxels), (2, 1, 8));
        assert!(
            a[[0, 0, 0]] && !a[[6, 6, 6]],
            "the first in index order wins a tie"
        );
        let mut b = m.clone();
        keep_largest_components(b.view_mut(), &one).unwrap();
        assert_eq!(a, b);
        let g = negvol_volume::Geometry::from_spacing([10, 10, 10], [1.0; 3]).unwrap();
        let mut v = negvol_volume::Volume::new(m.clone(), g).unwrap();
        keep_largest_components(&mut v, &one).unwrap();
        assert_eq!(v.data(), &a);
        let bad = ComponentFilter {
            max_components: 0,
            min_fraction: 0.1,
        };
        match keep_largest_components(&mut m, &bad) {
            Err(TrainError::Config(msg)) => assert!(msg.contains("max_components"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
}
