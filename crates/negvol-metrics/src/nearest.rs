//! Exact nearest-point distances for sparse point sets (surfaces), with the EDT as fallback.
//!
//! Surface-distance metrics need the distance from each query point (a surface voxel of one
//! mask) to the nearest target point (a surface voxel of the other) only at the query points,
//! and surfaces are sparse in their bounding box. The target points are bucketed in a uniform
//! grid of 4x4x4-voxel cells; each query visits cells in Chebyshev shells of growing radius and
//! stops as soon as its best squared distance is no larger than a lower bound of every
//! unvisited shell (the gap to the visited block along one axis, in mm), so the answer is exact.
//! The work is proportional to the surface size when the two surfaces are close (the usual
//! case). If the shells grow too much (far-apart masks), the search is abandoned once its
//! total work exceeds a fraction of the EDT's cost, and the exact EDT ([`crate::edt`]) gives
//! the distances instead. Both paths give the same values (they are tested against brute
//! force).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ndarray::{ArrayView3, Axis};
use rayon::prelude::*;

use crate::edt::squared_distances_at;
use crate::surface::{boundary_voxels, Connectivity};

/// Cell edge in voxels (a power of two).
const CELL_SHIFT: usize = 2;
const CELL: i64 = 1 << CELL_SHIFT;

/// Squared distances (mm^2) from every `true` voxel of `query` to the nearest `true` voxel of
/// `target`, in the row-major order of the query voxels; `None` if `target` is empty.
/// `target_is_solid`: the target is a filled mask (queries inside it get 0 and the search uses
/// only its boundary voxels, which hold the nearest target voxel of every outside point).
pub(crate) fn squared_distances(
    target: ArrayView3<'_, bool>,
    query: ArrayView3<'_, bool>,
    spacing: [f64; 3],
    target_is_solid: bool,
) -> Option<Vec<f64>> {
    let budget = target.len().max(1 << 16) / 2;
    match grid_search(target, query, spacing, target_is_solid, budget) {
        GridResult::Done(v) => Some(v),
        GridResult::EmptyTarget => None,
        GridResult::TooFar => squared_distances_at(target, query, spacing),
    }
}

pub(crate) enum GridResult {
    Done(Vec<f64>),
    EmptyTarget,
    TooFar,
}

/// The grid search with an explicit work budget (cells + points visited, over all queries).
pub(crate) fn grid_search(
    target: ArrayView3<'_, bool>,
    query: ArrayView3<'_, bool>,
    spacing: [f64; 3],
    target_is_solid: bool,
    budget: usize,
) -> GridResult {
    let sh = [target.shape()[0], target.shape()[1], target.shape()[2]];
    if sh.iter().any(|&n| n >= (i32::MAX as usize) / 2) {
        return GridResult::TooFar;
    }
    let boundary;
    let pts_mask = if target_is_solid {
        boundary = boundary_voxels(target, Connectivity::Six);
        boundary.view()
    } else {
        target
    };
    // Grid of cells, points bucketed by a counting sort.
    let g: [usize; 3] = std::array::from_fn(|a| sh[a].div_ceil(CELL as usize));
    let cell_of = |i: usize, j: usize, k: usize| {
        ((i >> CELL_SHIFT) * g[1] + (j >> CELL_SHIFT)) * g[2] + (k >> CELL_SHIFT)
    };
    let mut start = vec![0u32; g[0] * g[1] * g[2] + 1];
    let mut npts = 0usize;
    for ((i, j, k), &v) in pts_mask.indexed_iter() {
        if v {
            start[cell_of(i, j, k) + 1] += 1;
            npts += 1;
        }
    }
    if npts == 0 {
        return GridResult::EmptyTarget;
    }
    if npts >= u32::MAX as usize {
        return GridResult::TooFar;
    }
    for c in 1..start.len() {
        start[c] += start[c - 1];
    }
    let mut fill = start.clone();
    let mut pts = vec![[0i32; 3]; npts];
    for ((i, j, k), &v) in pts_mask.indexed_iter() {
        if v {
            let c = cell_of(i, j, k);
            pts[fill[c] as usize] = [i as i32, j as i32, k as i32];
            fill[c] += 1;
        }
    }
    drop(fill);
    let work = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let per_slab: Vec<Vec<f64>> = query
        .axis_iter(Axis(0))
        .into_par_iter()
        .enumerate()
        .map(|(i, slab)| {
            let mut out = Vec::new();
            if abort.load(Ordering::Relaxed) {
                return out;
            }
            let mut local = 0usize;
            for ((j, k), &q) in slab.indexed_iter() {
                if !q {
                    continue;
                }
                if target_is_solid && target[[i, j, k]] {
                    out.push(0.0);
                    continue;
                }
                let (d, w) = nearest(&pts, &start, g, [i as i64, j as i64, k as i64], spacing);
                out.push(d);
                local += w;
                if local > 4096 {
                    let total = work.fetch_add(local, Ordering::Relaxed) + local;
                    local = 0;
                    if total > budget {
                        abort.store(true, Ordering::Relaxed);
                        return out;
                    }
                    if abort.load(Ordering::Relaxed) {
                        return out;
                    }
                }
            }
            work.fetch_add(local, Ordering::Relaxed);
            out
        })
        .collect();
    if abort.load(Ordering::Relaxed) || work.load(Ordering::Relaxed) > budget {
        return GridResult::TooFar;
    }
    GridResult::Done(per_slab.concat())
}

/// Exact nearest squared distance from `q` to the points, and the work done (cells + points).
#[inline]
fn nearest(
    pts: &[[i32; 3]],
    start: &[u32],
    g: [usize; 3],
    q: [i64; 3],
    sp: [f64; 3],
) -> (f64, usize) {
    let c: [i64; 3] = std::array::from_fn(|a| q[a] >> CELL_SHIFT);
    let gi: [i64; 3] = std::array::from_fn(|a| g[a] as i64);
    let mut best = f64::INFINITY;
    let mut work = 0usize;
    let visit = |ci: i64, cj: i64, ck: i64, best: &mut f64, work: &mut usize| {
        let cell = ((ci * gi[1] + cj) * gi[2] + ck) as usize;
        let (s, e) = (start[cell] as usize, start[cell + 1] as usize);
        *work += 1 + (e - s);
        for p in &pts[s..e] {
            let di = (q[0] - p[0] as i64) as f64 * sp[0];
            let dj = (q[1] - p[1] as i64) as f64 * sp[1];
            let dk = (q[2] - p[2] as i64) as f64 * sp[2];
            let d = di * di + dj * dj + dk * dk;
            if d < *best {
                *best = d;
            }
        }
    };
    let mut r: i64 = 0;
    loop {
        if r > 0 {
            // Lower bound (mm) on the distance to any point in shells >= r.
            let mut lb = f64::INFINITY;
            let mut any_cells = false;
            for a in 0..3 {
                if c[a] - r >= 0 {
                    any_cells = true;
                    let gap = q[a] - ((c[a] - r + 1) * CELL - 1);
                    lb = lb.min(gap as f64 * sp[a]);
                }
                if c[a] + r < gi[a] {
                    any_cells = true;
                    let gap = (c[a] + r) * CELL - q[a];
                    lb = lb.min(gap as f64 * sp[a]);
                }
            }
            if !any_cells || best <= lb * lb {
                break;
            }
        }
        let (i0, i1) = ((c[0] - r).max(0), (c[0] + r).min(gi[0] - 1));
        let (j0, j1) = ((c[1] - r).max(0), (c[1] + r).min(gi[1] - 1));
        let (k0, k1) = ((c[2] - r).max(0), (c[2] + r).min(gi[2] - 1));
        for ci in i0..=i1 {
            let edge_i = (ci - c[0]).abs() == r;
            for cj in j0..=j1 {
                if edge_i || (cj - c[1]).abs() == r {
                    for ck in k0..=k1 {
                        visit(ci, cj, ck, &mut best, &mut work);
                    }
                } else {
                    if c[2] - r >= 0 {
                        visit(ci, cj, c[2] - r, &mut best, &mut work);
                    }
                    if r > 0 && c[2] + r < gi[2] {
                        visit(ci, cj, c[2] + r, &mut best, &mut work);
                    }
                }
            }
        }
        r += 1;
    }
    (best, work)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edt::brute_force_squared_edt;
    use approx::assert_relative_eq;
    use ndarray::Array3;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn grid_and_fallback_match_brute_force() {
        let mut rng = Rng(99);
        for trial in 0..40 {
            let sh = [
                1 + (rng.next() % 14) as usize,
                1 + (rng.next() % 14) as usize,
                1 + (rng.next() % 20) as usize,
            ];
            let sp = [
                0.2 + 3.0 * rng.unit(),
                0.2 + 3.0 * rng.unit(),
                0.2 + 3.0 * rng.unit(),
            ];
            let pt = [0.002, 0.02, 0.3][trial % 3];
            let t = Array3::from_shape_fn(sh, |_| rng.unit() < pt);
            let q = Array3::from_shape_fn(sh, |_| rng.unit() < 0.3);
            let solid = trial % 2 == 0;
            let bf = brute_force_squared_edt(t.view(), sp);
            let want: Vec<f64> = bf
                .iter()
                .zip(q.iter())
                .filter(|(_, &x)| x)
                .map(|(d, _)| *d)
                .collect();
            let empty = !t.iter().any(|&x| x);
            for budget in [usize::MAX, 10] {
                match grid_search(t.view(), q.view(), sp, solid, budget) {
                    GridResult::EmptyTarget => assert!(empty),
                    GridResult::TooFar => assert!(budget == 10 && !empty),
                    GridResult::Done(got) => {
                        assert!(!empty);
                        assert_eq!(got.len(), want.len());
                        for (a, b) in got.iter().zip(&want) {
                            assert_relative_eq!(*a, *b, max_relative = 1e-12, epsilon = 1e-12);
                        }
                    }
                }
            }
            let got = squared_distances(t.view(), q.view(), sp, solid);
            assert_eq!(got.is_none(), empty);
            if let Some(got) = got {
                for (a, b) in got.iter().zip(&want) {
                    assert_relative_eq!(*a, *b, max_relative = 1e-12, epsilon = 1e-12);
                }
            }
        }
    }
}
