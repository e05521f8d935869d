//! Post-processing of predicted masks: keep only the largest connected components.
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
use serde::{Deserialize, Serialize};

use crate::locate::components26;
use crate::{Result, TrainError};

/// Which components survive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ComponentFilter {
    /// Keep at most this many components, the largest first (>= 1).
    pub max_components: usize,
    /// Drop components smaller than this fraction of the largest, in `[0, 1]`.
    pub min_fraction: f64,
}

impl Default for ComponentFilter {
    /// Two joints: up to 2 components, each at least 10 % of the largest.
    fn default() -> Self {
        Self {
            max_components: 2,
            min_fraction: 0.1,
        }
    }
}

/// What [`keep_largest_components`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FilterOutcome {
    /// 26-connected components found.
    pub components: usize,
    /// Components kept.
    pub kept: usize,
    /// Foreground voxels removed.
    pub removed_voxels: usize,
}

/// Keep the largest 26-connected components of `mask` (in place). Equal sizes are ranked by
/// the index order of their first voxel, so the result is deterministic. An empty mask stays
/// empty. Labelling runs on the foreground's bounding box only (a whole-CT mask costs what its
/// foreground box costs).
///
/// # Errors
/// [`TrainError::Config`] when `max_components` is 0 or `min_fraction` is outside `[0, 1]`.
pub fn keep_largest_components(
    mut mask: impl AsMaskMut,
    filter: &ComponentFilter,
) -> Result<FilterOutcome> {
    if filter.max_components == 0 || !(0.0..=1.0).contains(&filter.min_fraction) {
        return Err(TrainError::Config(format!(
            "component filter: max_components {} must be >= 1 and min_fraction {} in [0, 1]",
            filter.max_components, filter.min_fraction
        )));
    }
    let mut mask = mask.mask_mut();
    let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
    for ((i, j, k), v) in mask.indexed_iter() {
        if *v {
            for (a, x) in [i, j, k].into_iter().enumerate() {
                lo[a] = lo[a].min(x);
                hi[a] = hi[a].max(x + 1);
            }
        }
    }
    if hi[0] == 0 {
        return Ok(FilterOutcome::default());
    }
    let mut bx = mask.slice_mut(ndarray::s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]]);
    let (labels, n) = components26(&bx.to_owned());
    let mut sizes = vec![0usize; n + 1];
    for l in labels.iter() {
        sizes[*l as usize] += 1;
    }
    let mut order: Vec<usize> = (1..=n).collect();
    order.sort_by(|a, b| sizes[*b].cmp(&sizes[*a]).then(a.cmp(b)));
    let largest = sizes[order[0]] as f64;
    let mut keep = vec![false; n + 1];
    let mut kept = 0;
    for &c in order.iter().take(filter.max_components) {
        if sizes[c] as f64 >= filter.min_fraction * largest {
            keep[c] = true;
            kept += 1;
        }
    }
    let mut removed = 0;
    ndarray::Zip::from(&mut bx).and(&labels).for_each(|m, l| {
        if *m && !keep[*l as usize] {
            *m = false;
            removed += 1;
        }
    });
    Ok(FilterOutcome {
        components: n,
        kept,
        removed_voxels: removed,
    })
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

    fn cubes() -> Array3<bool> {
        // Sizes 64 (4^3), 27 (3^3), 8 (2^3) and a diagonal pair touching at a corner (2).
        let mut m = Array3::from_elem((20, 20, 20), false);
        m.slice_mut(s![0..4, 0..4, 0..4]).fill(true);
        m.slice_mut(s![10..13, 10..13, 10..13]).fill(true);
        m.slice_mut(s![0..2, 15..17, 15..17]).fill(true);
        m[[18, 0, 18]] = true;
        m[[19, 1, 19]] = true;
        m
    }

    #[test]
    fn keeps_the_largest_and_respects_the_fraction() {
        let mut m = cubes();
        let f = ComponentFilter {
            max_components: 3,
            min_fraction: 0.1,
        };
        let out = keep_largest_components(&mut m, &f).unwrap();
        // 8 >= 6.4 is kept; the corner-touching pair is one 26-component of 2 < 6.4.
        assert_eq!(
            out,
            FilterOutcome {
                components: 4,
                kept: 3,
                removed_voxels: 2
            }
        );
        assert_eq!(m.iter().filter(|v| **v).count(), 64 + 27 + 8);
        let mut m = cubes();
        let out = keep_largest_components(
            &mut m,
            &ComponentFilter {
                max_components: 1,
                min_fraction: 0.0,
            },
        )
        .unwrap();
        assert_eq!((out.kept, out.removed_voxels), (1, 27 + 8 + 2));
        assert!(m[[0, 0, 0]] && !m[[10, 10, 10]]);
        // A fraction above the second's share drops it even when two may stay.
        let mut m = cubes();
        let out = keep_largest_components(
            &mut m,
            &ComponentFilter {
                max_components: 2,
                min_fraction: 0.5,
            },
        )
        .unwrap();
        assert_eq!(out.kept, 1);
    }

    #[test]
    fn ties_are_deterministic_and_bad_filters_are_errors() {
        let mut m = Array3::from_elem((10, 10, 10), false);
        m.slice_mut(s![6..8, 6..8, 6..8]).fill(true);
        m.slice_mut(s![0..2, 0..2, 0..2]).fill(true);
        let f = ComponentFilter {
            max_components: 1,
            min_fraction: 0.0,
        };
        keep_largest_components(&mut m, &f).unwrap();
        assert!(
            m[[0, 0, 0]] && !m[[6, 6, 6]],
            "the first in index order wins a tie"
        );
        let mut empty = Array3::from_elem((3, 3, 3), false);
        assert_eq!(
            keep_largest_components(&mut empty, &f).unwrap(),
            FilterOutcome::default()
        );
        for bad in [
            ComponentFilter {
                max_components: 0,
                min_fraction: 0.1,
            },
            ComponentFilter {
                max_components: 2,
                min_fraction: 1.5,
            },
            ComponentFilter {
                max_components: 2,
                min_fraction: f64::NAN,
            },
        ] {
            assert!(keep_largest_components(&mut m, &bad).is_err());
        }
    }
}
