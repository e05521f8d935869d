//! Voxels claimed by both the condyle and the temporal-bone masks.
//!
//! The paper segments MC and TB with two separate networks, so nothing keeps their masks
//! disjoint, while [`crate::derive_nv`] needs a voxel to be one bone or the other (by default a
//! shared voxel is an error, see [`crate::OverlapPolicy`]). [`resolve_overlap_by_score`] gives
//! each shared voxel to the bone whose network is the more confident there, which is what an
//! argmax over one multi-class network would have done.

use negvol_volume::Volume;

use crate::error::{NvError, Result};
use crate::grid::check_same_grid;

/// What [`resolve_overlap_by_score`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OverlapResolution {
    /// Voxels that were in both masks.
    pub overlapping: usize,
    /// Of those, how many were kept as condyle (score ties go to the condyle).
    pub to_mc: usize,
    /// Of those, how many were kept as temporal bone.
    pub to_tb: usize,
}

/// Make `mc` and `tb` disjoint: a voxel in both stays in the mask whose score (e.g. the
/// network's foreground probability) is higher there, and leaves the other; ties go to MC.
/// Voxels in one mask only are not touched.
///
/// # Errors
/// [`NvError::Geometry`] when the four volumes do not share one grid;
/// [`NvError::NonFiniteScore`] when a shared voxel's score is NaN or infinite (nothing is
/// changed then).
pub fn resolve_overlap_by_score(
    mc: &mut Volume<bool>,
    mc_score: &Volume<f32>,
    tb: &mut Volume<bool>,
    tb_score: &Volume<f32>,
) -> Result<OverlapResolution> {
    check_same_grid(mc, tb, "MC vs TB")?;
    check_same_grid(mc, mc_score, "MC vs its scores")?;
    check_same_grid(mc, tb_score, "MC vs the TB scores")?;
    // First pass: decide, so that a bad score leaves both masks as they were.
    let mut to_tb = Vec::new();
    let mut res = OverlapResolution::default();
    for (((idx, m), t), (pm, pt)) in mc
        .data()
        .indexed_iter()
        .zip(tb.data().iter())
        .zip(mc_score.data().iter().zip(tb_score.data().iter()))
    {
        if !(*m && *t) {
            continue;
        }
        if !pm.is_finite() || !pt.is_finite() {
            return Err(NvError::NonFiniteScore {
                voxel: [idx.0, idx.1, idx.2],
                mc: *pm,
                tb: *pt,
            });
        }
        res.overlapping += 1;
        if pt > pm {
            to_tb.push(idx);
        }
    }
    res.to_tb = to_tb.len();
    res.to_mc = res.overlapping - res.to_tb;
    let mut mcv = mc.view_mut();
    for idx in &to_tb {
        mcv[*idx] = false;
    }
    ndarray::Zip::from(tb.view_mut())
        .and(mc.view())
        .for_each(|t, m| {
            if *m {
                *t = false;
            }
        });
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;
    use negvol_volume::Geometry;

    fn vol<T: Clone>(a: Array3<T>) -> Volume<T> {
        let s = a.shape();
        let g = Geometry::from_spacing([s[0], s[1], s[2]], [0.5; 3]).unwrap();
        Volume::new(a, g).unwrap()
    }

    #[test]
    fn shared_voxels_go_to_the_more_confident_mask() {
        // MC: k < 6, TB: k >= 4; shared slab k = 4, 5. MC is more confident at k = 4 only.
        let n = 8;
        let mut mc = vol(Array3::from_shape_fn((n, n, n), |(_, _, k)| k < 6));
        let mut tb = vol(Array3::from_shape_fn((n, n, n), |(_, _, k)| k >= 4));
        let pm = vol(Array3::from_shape_fn((n, n, n), |(_, _, k)| {
            if k == 4 {
                0.9f32
            } else {
                0.6
            }
        }));
        let pt = vol(Array3::from_shape_fn((n, n, n), |(_, _, k)| {
            if k == 5 {
                0.8f32
            } else {
                0.6
            }
        }));
        let r = resolve_overlap_by_score(&mut mc, &pm, &mut tb, &pt).unwrap();
        assert_eq!(r.overlapping, 2 * n * n);
        assert_eq!(r.to_mc, n * n);
        assert_eq!(r.to_tb, n * n);
        for (((_, _, k), m), t) in mc.data().indexed_iter().zip(tb.data().iter()) {
            let (m, t) = (*m, *t);
            assert!(!(m && t), "still shared at k = {k}");
            assert_eq!(m, k <= 4, "MC at k = {k}");
            assert_eq!(t, k >= 5, "TB at k = {k}");
        }
    }

    #[test]
    fn ties_go_to_mc_and_disjoint_masks_are_untouched() {
        let n = 6;
        let mut mc = vol(Array3::from_shape_fn((n, n, n), |(i, _, _)| i < 3));
        let mut tb = vol(Array3::from_shape_fn((n, n, n), |(i, _, _)| i >= 2));
        let p = vol(Array3::from_elem((n, n, n), 0.5f32));
        let r = resolve_overlap_by_score(&mut mc, &p, &mut tb, &p).unwrap();
        assert_eq!((r.overlapping, r.to_mc, r.to_tb), (n * n, n * n, 0));
        assert!(tb
            .data()
            .indexed_iter()
            .all(|((i, _, _), t)| *t == (i >= 3)));
        let before = (mc.clone(), tb.clone());
        let r = resolve_overlap_by_score(&mut mc, &p, &mut tb, &p).unwrap();
        assert_eq!(r, OverlapResolution::default());
        assert_eq!(mc.data(), before.0.data());
        assert_eq!(tb.data(), before.1.data());
    }

    #[test]
    fn nan_scores_and_mismatched_grids_are_errors_and_change_nothing() {
        let n = 4;
        let mut mc = vol(Array3::from_elem((n, n, n), true));
        let mut tb = vol(Array3::from_elem((n, n, n), true));
        let mut pm = Array3::from_elem((n, n, n), 0.5f32);
        pm[[3, 3, 3]] = f32::NAN;
        let pm = vol(pm);
        let pt = vol(Array3::from_elem((n, n, n), 0.7f32));
        let e = resolve_overlap_by_score(&mut mc, &pm, &mut tb, &pt).unwrap_err();
        assert!(
            matches!(
                e,
                NvError::NonFiniteScore {
                    voxel: [3, 3, 3],
                    ..
                }
            ),
            "{e}"
        );
        assert!(mc.data().iter().all(|v| *v) && tb.data().iter().all(|v| *v));
        let small = vol(Array3::from_elem((n, n, n - 1), 0.5f32));
        let e = resolve_overlap_by_score(&mut mc, &small, &mut tb, &pt).unwrap_err();
        assert!(matches!(e, NvError::Geometry { .. }), "{e}");
    }
}
