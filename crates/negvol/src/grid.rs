//! Grid helpers: boxes, crops, the affine's linear part, Gaussian smoothing, morphology and
//! connected components. Private to the crate.

use ndarray::{Array3, ArrayView3, Axis, Zip};
use negvol_volume::Geometry;
use rayon::prelude::*;

/// A box of voxels `lo[a] <= idx[a] < hi[a]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bbox {
    pub lo: [usize; 3],
    pub hi: [usize; 3],
}

impl Bbox {
    pub fn empty() -> Self {
        Self {
            lo: [usize::MAX; 3],
            hi: [0; 3],
        }
    }
    pub fn is_empty(&self) -> bool {
        (0..3).any(|a| self.lo[a] >= self.hi[a])
    }
    pub fn add(&mut self, p: [usize; 3]) {
        for a in 0..3 {
            self.lo[a] = self.lo[a].min(p[a]);
            self.hi[a] = self.hi[a].max(p[a] + 1);
        }
    }
    pub fn union(&self, o: &Bbox) -> Bbox {
        let mut r = *self;
        for a in 0..3 {
            r.lo[a] = r.lo[a].min(o.lo[a]);
            r.hi[a] = r.hi[a].max(o.hi[a]);
        }
        r
    }
    /// Grown by `m[a]` voxels per axis, clipped to `shape`.
    pub fn grow(&self, m: [usize; 3], shape: [usize; 3]) -> Bbox {
        let mut r = *self;
        for a in 0..3 {
            r.lo[a] = self.lo[a].saturating_sub(m[a]);
            r.hi[a] = (self.hi[a] + m[a]).min(shape[a]);
        }
        r
    }
    pub fn shape(&self) -> [usize; 3] {
        [
            self.hi[0] - self.lo[0],
            self.hi[1] - self.lo[1],
            self.hi[2] - self.lo[2],
        ]
    }
    /// This box expressed relative to `outer`'s origin.
    pub fn relative_to(&self, outer: &Bbox) -> Bbox {
        let mut r = *self;
        for a in 0..3 {
            r.lo[a] -= outer.lo[a];
            r.hi[a] -= outer.lo[a];
        }
        r
    }
    pub fn slice(
        &self,
    ) -> ndarray::SliceInfo<[ndarray::SliceInfoElem; 3], ndarray::Ix3, ndarray::Ix3> {
        ndarray::s![
            self.lo[0]..self.hi[0],
            self.lo[1]..self.hi[1],
            self.lo[2]..self.hi[2]
        ]
    }
}

/// Voxels needed on each axis to cover `mm` millimetres.
pub(crate) fn margin_voxels(g: &Geometry, mm: f64) -> [usize; 3] {
    let s = g.spacing();
    [0, 1, 2].map(|a| (mm / s[a]).ceil().max(0.0) as usize + 1)
}

/// Geometry of the sub-grid `b` of `g` (same axes, origin moved).
pub(crate) fn crop_geometry(g: &Geometry, b: &Bbox) -> Geometry {
    let o = g.voxel_to_world([b.lo[0] as f64, b.lo[1] as f64, b.lo[2] as f64]);
    let mut a = g.affine();
    for r in 0..3 {
        a[r][3] = o[r];
    }
    // The linear part is the one of a valid geometry and the shape is non-zero.
    Geometry::new(b.shape(), a).unwrap_or_else(|_| g.clone())
}

/// The linear part of the affine and its inverse.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lin {
    pub m: [[f64; 3]; 3],
    pub inv: [[f64; 3]; 3],
}

impl Lin {
    pub fn of(g: &Geometry) -> Self {
        let a = g.affine();
        let m = [
            [a[0][0], a[0][1], a[0][2]],
            [a[1][0], a[1][1], a[1][2]],
            [a[2][0], a[2][1], a[2][2]],
        ];
        let d = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
        let mut inv = [[0.0; 3]; 3];
        for (i, row) in inv.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                let (a, b) = ((j + 1) % 3, (j + 2) % 3);
                let (c, e) = ((i + 1) % 3, (i + 2) % 3);
                *v = (m[a][c] * m[b][e] - m[a][e] * m[b][c]) / d;
            }
        }
        Self { m, inv }
    }
    /// World vector of a voxel-index displacement.
    pub fn apply(&self, v: [f64; 3]) -> [f64; 3] {
        mul(&self.m, v)
    }
    /// Voxel-index displacement of a world vector.
    pub fn apply_inv(&self, v: [f64; 3]) -> [f64; 3] {
        mul(&self.inv, v)
    }
    /// World gradient from a voxel-index gradient: `A^{-T} g`.
    pub fn grad_to_world(&self, g: [f64; 3]) -> [f64; 3] {
        let t = &self.inv;
        [
            t[0][0] * g[0] + t[1][0] * g[1] + t[2][0] * g[2],
            t[0][1] * g[0] + t[1][1] * g[1] + t[2][1] * g[2],
            t[0][2] * g[0] + t[1][2] * g[1] + t[2][2] * g[2],
        ]
    }
}

fn mul(m: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    [
        m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
        m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
        m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
    ]
}
/// `Err(NvError::Geometry)` unless `a` and `b` share a grid (affines equal within a thousandth
/// of the smallest voxel spacing).
pub(crate) fn check_same_grid<T, U>(
    a: &negvol_volume::Volume<T>,
    b: &negvol_volume::Volume<U>,
    what: &str,
) -> crate::error::Result<()> {
    let g = a.geometry();
    let tol = 1e-3 * g.spacing().iter().cloned().fold(f64::INFINITY, f64::min);
    g.check_same(b.geometry(), tol)
        .map_err(|source| crate::error::NvError::Geometry {
            what: what.into(),
            source,
        })
}

pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

/// Separable Gaussian smoothing in place; `sigma_vox[a]` in voxels (0 = no smoothing on that
/// axis). Borders replicate the edge value.
pub(crate) fn gaussian_smooth(arr: &mut Array3<f32>, sigma_vox: [f64; 3]) {
    for (axis, &s) in sigma_vox.iter().enumerate() {
        if s <= 1e-6 || arr.shape()[axis] < 2 {
            continue;
        }
        let r = (3.0 * s).ceil() as isize;
        let mut k: Vec<f32> = (-r..=r)
            .map(|x| (-(x as f64 * x as f64) / (2.0 * s * s)).exp() as f32)
            .collect();
        let sum: f32 = k.iter().sum();
        k.iter_mut().for_each(|v| *v /= sum);
        let n = arr.shape()[axis] as isize;
        // Process every 1D line along `axis`.
        let mut lanes: Vec<_> = arr.lanes_mut(Axis(axis)).into_iter().collect();
        lanes.par_iter_mut().for_each(|lane| {
            let src: Vec<f32> = lane.iter().copied().collect();
            for (x, out) in lane.iter_mut().enumerate() {
                let mut acc = 0.0f32;
                for (t, w) in k.iter().enumerate() {
                    let y = (x as isize + t as isize - r).clamp(0, n - 1) as usize;
                    acc += w * src[y];
                }
                *out = acc;
            }
        });
    }
}

/// Offsets of the ellipsoidal structuring element of radius `r_mm` (world mm, using the
/// affine's linear part so oblique and anisotropic grids are handled).
pub(crate) fn ball_offsets(lin: &Lin, spacing: [f64; 3], r_mm: f64) -> Vec<[isize; 3]> {
    let m = [0, 1, 2].map(|a| (r_mm / spacing[a]).floor() as isize);
    let mut out = Vec::new();
    for di in -m[0]..=m[0] {
        for dj in -m[1]..=m[1] {
            for dk in -m[2]..=m[2] {
                let w = lin.apply([di as f64, dj as f64, dk as f64]);
                if dot(w, w) <= r_mm * r_mm + 1e-9 {
                    out.push([di, dj, dk]);
                }
            }
        }
    }
    out
}

/// Binary dilation (`dilate = true`) or erosion with a symmetric structuring element.
/// Out-of-grid voxels count as background for dilation and as foreground for erosion (so
/// erosion does not eat masks at the crop border).
pub(crate) fn morph(mask: ArrayView3<bool>, offs: &[[isize; 3]], dilate: bool) -> Array3<bool> {
    let sh = mask.shape();
    let n = [sh[0] as isize, sh[1] as isize, sh[2] as isize];
    let mut out = Array3::from_elem(mask.raw_dim(), false);
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut plane)| {
            for ((j, k), o) in plane.indexed_iter_mut() {
                let mut v = !dilate;
                for d in offs {
                    let p = [i as isize + d[0], j as isize + d[1], k as isize + d[2]];
                    let inside = (0..3).all(|a| p[a] >= 0 && p[a] < n[a]);
                    let m = if inside {
                        mask[[p[0] as usize, p[1] as usize, p[2] as usize]]
                    } else {
                        !dilate
                    };
                    if dilate && m {
                        v = true;
                        break;
                    }
                    if !dilate && !m {
                        v = false;
                        break;
                    }
                }
                *o = v;
            }
        });
    out
}

/// Morphological closing (dilation then erosion).
#[cfg(test)]
pub(crate) fn closing(mask: ArrayView3<bool>, offs: &[[isize; 3]]) -> Array3<bool> {
    let d = morph(mask, offs, true);
    morph(d.view(), offs, false)
}

/// Which voxels count as neighbours when labelling connected components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Connectivity {
    /// Voxels sharing a face (used by the tests, which compare the two).
    #[cfg_attr(not(test), allow(dead_code))]
    Face6,
    /// Voxels sharing a face, an edge or a corner.
    Full26,
}

/// Connected components: labels (0 = background, 1..=n) and the count.
pub(crate) fn label(mask: ArrayView3<bool>, conn: Connectivity) -> (Array3<u32>, u32) {
    let sh = mask.shape();
    let sh = [sh[0], sh[1], sh[2]];
    let mut lab = Array3::<u32>::zeros(sh);
    let mut n = 0u32;
    let mut stack = Vec::new();
    for i in 0..sh[0] {
        for j in 0..sh[1] {
            for k in 0..sh[2] {
                if !mask[[i, j, k]] || lab[[i, j, k]] != 0 {
                    continue;
                }
                n += 1;
                lab[[i, j, k]] = n;
                stack.push([i, j, k]);
                while let Some(p) = stack.pop() {
                    let mut visit = |q: [usize; 3]| {
                        if mask[q] && lab[q] == 0 {
                            lab[q] = n;
                            stack.push(q);
                        }
                    };
                    match conn {
                        Connectivity::Face6 => neighbours6(p, sh).for_each(&mut visit),
                        Connectivity::Full26 => neighbours26(p, sh).for_each(&mut visit),
                    }
                }
            }
        }
    }
    (lab, n)
}

/// A 26-connected component of a mask: its voxel count and the sum of its voxels' indices
/// (full-grid), from which its centroid follows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Component {
    pub voxels: usize,
    pub index_sum: [f64; 3],
}

impl Component {
    /// Mean voxel index (fractional, full grid).
    pub fn centroid(&self) -> [f64; 3] {
        self.index_sum.map(|s| s / self.voxels as f64)
    }
}

/// The 26-connected components of `mask` inside box `b`, largest first (ties in the order in
/// which their first voxel is met, i.e. deterministic).
///
/// Labels runs of true voxels along the last axis instead of voxels: each row of the box is
/// scanned once (rows without a true voxel are skipped with a vectorised test), each run is
/// joined (union-find) with the runs of the four previously scanned neighbouring rows
/// `(i-1, j-1..=j+1)` and `(i, j-1)` whose `k` ranges come within one voxel of its own. Time
/// O(box voxels + runs), memory O(runs + rows of the box): no label volume, so a box as large
/// as a 686^3 CT costs one pass over it and a few MB, where [`label`] would allocate 4 bytes
/// per voxel of the box.
pub(crate) fn components26(mask: ArrayView3<bool>, b: &Bbox) -> Vec<Component> {
    if b.is_empty() {
        return Vec::new();
    }
    let sh = b.shape();
    let sub = mask.slice(b.slice());
    // Runs `[k0, k1)` (box-relative), row by row; row `r = i * nj + j` owns
    // `runs[start[r]..start[r + 1]]`.
    let mut runs: Vec<(u32, u32)> = Vec::new();
    let mut start = Vec::with_capacity(sh[0] * sh[1] + 1);
    let mut tmp = Vec::new();
    for plane in sub.outer_iter() {
        for row in plane.outer_iter() {
            start.push(runs.len());
            let r = match row.as_slice() {
                Some(r) => r,
                None => {
                    tmp.clear();
                    tmp.extend(row.iter().copied());
                    &tmp[..]
                }
            };
            if !any_true(r) {
                continue;
            }
            let mut k = 0;
            while k < r.len() {
                if r[k] {
                    let k0 = k;
                    while k < r.len() && r[k] {
                        k += 1;
                    }
                    runs.push((k0 as u32, k as u32));
                } else {
                    k += 1;
                }
            }
        }
    }
    start.push(runs.len());
    let mut parent: Vec<u32> = (0..runs.len() as u32).collect();
    fn find(parent: &mut [u32], mut x: u32) -> u32 {
        while parent[x as usize] != x {
            let p = parent[x as usize];
            parent[x as usize] = parent[p as usize];
            x = p;
        }
        x
    }
    let nj = sh[1];
    for i in 0..sh[0] {
        for j in 0..nj {
            let r = i * nj + j;
            let cur = start[r]..start[r + 1];
            if cur.is_empty() {
                continue;
            }
            let mut prev = Vec::with_capacity(4);
            if i > 0 {
                for dj in [-1isize, 0, 1] {
                    let jj = j as isize + dj;
                    if jj >= 0 && (jj as usize) < nj {
                        prev.push((i - 1) * nj + jj as usize);
                    }
                }
            }
            if j > 0 {
                prev.push(r - 1);
            }
            for q in prev {
                // Two-pointer merge of two sorted run lists; runs [a0, a1) and [b0, b1) are
                // 26-adjacent (across rows) when their k ranges come within one voxel.
                let (mut a, mut c) = (cur.start, start[q]);
                while a < cur.end && c < start[q + 1] {
                    let (a0, a1) = runs[a];
                    let (b0, b1) = runs[c];
                    if a0 <= b1 && b0 <= a1 {
                        let (x, y) = (find(&mut parent, a as u32), find(&mut parent, c as u32));
                        if x != y {
                            parent[x.max(y) as usize] = x.min(y);
                        }
                    }
                    if a1 < b1 {
                        a += 1;
                    } else {
                        c += 1;
                    }
                }
            }
        }
    }
    // Per-root statistics, in full-grid indices.
    let mut slot = vec![u32::MAX; runs.len()];
    let mut out: Vec<Component> = Vec::new();
    for i in 0..sh[0] {
        for j in 0..nj {
            let r = i * nj + j;
            for x in start[r]..start[r + 1] {
                let root = find(&mut parent, x as u32) as usize;
                if slot[root] == u32::MAX {
                    slot[root] = out.len() as u32;
                    out.push(Component {
                        voxels: 0,
                        index_sum: [0.0; 3],
                    });
                }
                let (k0, k1) = runs[x];
                let len = (k1 - k0) as usize;
                let c = &mut out[slot[root] as usize];
                c.voxels += len;
                let n = len as f64;
                c.index_sum[0] += (b.lo[0] + i) as f64 * n;
                c.index_sum[1] += (b.lo[1] + j) as f64 * n;
                // Sum of k over the run: its length times its mid index.
                c.index_sum[2] += n * (b.lo[2] as f64 + 0.5 * (k0 as f64 + k1 as f64 - 1.0));
            }
        }
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.voxels));
    out
}

/// Whether a run of bools has a `true` (branch-free OR over 64-byte chunks, which the
/// compiler vectorises).
#[inline]
pub(crate) fn any_true(row: &[bool]) -> bool {
    row.chunks(64)
        .any(|c| c.iter().fold(false, |acc, &v| acc | v))
}

/// The in-grid 6-neighbours of `p`.
pub(crate) fn neighbours6(p: [usize; 3], sh: [usize; 3]) -> impl Iterator<Item = [usize; 3]> {
    const D: [[isize; 3]; 6] = [
        [-1, 0, 0],
        [1, 0, 0],
        [0, -1, 0],
        [0, 1, 0],
        [0, 0, -1],
        [0, 0, 1],
    ];
    D.iter().filter_map(move |d| {
        let q = [
            p[0] as isize + d[0],
            p[1] as isize + d[1],
            p[2] as isize + d[2],
        ];
        if (0..3).all(|a| q[a] >= 0 && (q[a] as usize) < sh[a]) {
            Some([q[0] as usize, q[1] as usize, q[2] as usize])
        } else {
            None
        }
    })
}

/// The in-grid 26-neighbours of `p` (face, edge and corner neighbours).
pub(crate) fn neighbours26(p: [usize; 3], sh: [usize; 3]) -> impl Iterator<Item = [usize; 3]> {
    (0..27usize).filter(|&c| c != 13).filter_map(move |c| {
        let d = [c / 9, (c / 3) % 3, c % 3];
        let q = [0, 1, 2].map(|a| (p[a] + d[a]).checked_sub(1));
        match q {
            [Some(a), Some(b), Some(c)] if a < sh[0] && b < sh[1] && c < sh[2] => Some([a, b, c]),
            _ => None,
        }
    })
}

/// Trilinear interpolation of a boolean mask (as 0/1) at fractional index `p`; outside the
/// grid the mask is 0.
#[inline]
pub(crate) fn trilinear(mask: &ArrayView3<bool>, p: [f64; 3]) -> f64 {
    let sh = mask.shape();
    let f = [p[0].floor(), p[1].floor(), p[2].floor()];
    let t = [p[0] - f[0], p[1] - f[1], p[2] - f[2]];
    let b = [f[0] as isize, f[1] as isize, f[2] as isize];
    let mut acc = 0.0;
    for c in 0..8 {
        let d = [(c >> 2) & 1, (c >> 1) & 1, c & 1];
        let q = [
            b[0] + d[0] as isize,
            b[1] + d[1] as isize,
            b[2] + d[2] as isize,
        ];
        if (0..3).any(|a| q[a] < 0 || q[a] as usize >= sh[a]) {
            continue;
        }
        if mask[[q[0] as usize, q[1] as usize, q[2] as usize]] {
            let mut w = 1.0;
            for a in 0..3 {
                w *= if d[a] == 1 { t[a] } else { 1.0 - t[a] };
            }
            acc += w;
        }
    }
    acc
}

/// Nearest voxel of a fractional index, if inside the grid.
#[inline]
pub(crate) fn nearest(p: [f64; 3], sh: &[usize]) -> Option<[usize; 3]> {
    let q = [p[0].round(), p[1].round(), p[2].round()];
    if (0..3).all(|a| q[a] >= 0.0 && (q[a] as usize) < sh[a]) {
        Some([q[0] as usize, q[1] as usize, q[2] as usize])
    } else {
        None
    }
}

/// Number of true voxels.
pub(crate) fn count(mask: ArrayView3<bool>) -> usize {
    Zip::from(mask).par_fold(|| 0usize, |a, &m| a + m as usize, |a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_preserves_constant_and_mass() {
        let mut a = Array3::<f32>::from_elem([5, 6, 7], 2.0);
        gaussian_smooth(&mut a, [1.0, 0.5, 2.0]);
        assert!(a.iter().all(|v| (v - 2.0).abs() < 1e-5));
        let mut b = Array3::<f32>::zeros([1, 1, 41]);
        b[[0, 0, 20]] = 1.0;
        gaussian_smooth(&mut b, [0.0, 0.0, 2.0]);
        let s: f32 = b.iter().sum();
        assert!((s - 1.0).abs() < 1e-5);
        assert!(b[[0, 0, 20]] > b[[0, 0, 21]] && b[[0, 0, 21]] > b[[0, 0, 25]]);
    }

    #[test]
    fn closing_fills_a_one_voxel_hole_and_labels_count() {
        let g = Geometry::from_spacing([9, 9, 9], [1.0; 3]).unwrap();
        let lin = Lin::of(&g);
        let offs = ball_offsets(&lin, g.spacing(), 1.0);
        assert_eq!(offs.len(), 7);
        let mut m = Array3::from_elem([9, 9, 9], false);
        m.slice_mut(ndarray::s![2..7, 2..7, 2..7]).fill(true);
        m[[4, 4, 4]] = false;
        let c = closing(m.view(), &offs);
        assert!(c[[4, 4, 4]]);
        assert_eq!(count(c.view()), 125);
        m[[0, 0, 0]] = true;
        let (_, n) = label(m.view(), Connectivity::Face6);
        assert_eq!(n, 2);
    }

    #[test]
    fn diagonal_neighbours_join_only_under_26_connectivity() {
        let mut m = Array3::from_elem([4, 4, 4], false);
        m[[1, 1, 1]] = true;
        m[[2, 2, 2]] = true; // corner neighbour
        m[[1, 2, 1]] = true; // face neighbour of [1, 1, 1]
        m[[3, 0, 3]] = true; // two voxels away from everything
        let (lab6, n6) = label(m.view(), Connectivity::Face6);
        assert_eq!(n6, 3);
        assert_eq!(lab6[[1, 1, 1]], lab6[[1, 2, 1]]);
        assert_ne!(lab6[[1, 1, 1]], lab6[[2, 2, 2]]);
        let (lab26, n26) = label(m.view(), Connectivity::Full26);
        assert_eq!(n26, 2);
        assert_eq!(lab26[[1, 1, 1]], lab26[[2, 2, 2]]);
        assert_ne!(lab26[[1, 1, 1]], lab26[[3, 0, 3]]);
        assert_eq!(neighbours26([0, 0, 0], [4, 4, 4]).count(), 7);
        assert_eq!(neighbours26([1, 1, 1], [4, 4, 4]).count(), 26);
    }

    #[test]
    fn run_components_match_voxel_labelling() {
        // Random masks of several densities (a tiny LCG: no dependency), against the voxel
        // flood fill under 26-connectivity: same sizes, same centroids.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        for (density, sh) in [(0.05, [9, 11, 13]), (0.2, [12, 7, 10]), (0.35, [6, 15, 9])] {
            let m = Array3::from_shape_fn(sh, |_| next() < density);
            let b = Bbox { lo: [0; 3], hi: sh };
            let got = components26(m.view(), &b);
            let (lab, n) = label(m.view(), Connectivity::Full26);
            let mut want = vec![
                Component {
                    voxels: 0,
                    index_sum: [0.0; 3]
                };
                n as usize
            ];
            for ((i, j, k), &l) in lab.indexed_iter() {
                if l > 0 {
                    let c = &mut want[l as usize - 1];
                    c.voxels += 1;
                    c.index_sum[0] += i as f64;
                    c.index_sum[1] += j as f64;
                    c.index_sum[2] += k as f64;
                }
            }
            assert!(n > 1, "density {density}: {n} components");
            assert_eq!(got.len(), n as usize, "density {density}");
            let key = |c: &Component| (c.voxels, c.index_sum.map(|v| v as u64));
            let mut g: Vec<_> = got.iter().map(key).collect();
            let mut w: Vec<_> = want.iter().map(key).collect();
            g.sort_unstable();
            w.sort_unstable();
            assert_eq!(g, w, "density {density}");
            assert!(got.windows(2).all(|p| p[0].voxels >= p[1].voxels));
        }
        // A sub-box, and a non-contiguous view: indices stay full-grid.
        let mut m = Array3::from_elem([6, 6, 6], false);
        m[[2, 3, 4]] = true;
        m[[3, 4, 5]] = true; // corner neighbour
        m[[5, 0, 1]] = true;
        let b = Bbox {
            lo: [1, 0, 1],
            hi: [6, 6, 6],
        };
        let c = components26(m.view(), &b);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].voxels, 2);
        assert_eq!(c[0].centroid(), [2.5, 3.5, 4.5]);
        assert_eq!(c[1].centroid(), [5.0, 0.0, 1.0]);
        let t = m.clone().reversed_axes();
        let ct = components26(
            t.view(),
            &Bbox {
                lo: [0; 3],
                hi: [6; 3],
            },
        );
        assert_eq!(ct.len(), 2);
        assert_eq!(ct[0].centroid(), [4.5, 3.5, 2.5]);
        assert!(components26(m.view(), &Bbox::empty()).is_empty());
    }

    /// The labelling's worst case on a CT-sized grid: MC's bounding box is the whole 686^3
    /// volume (two condyle-sized balls and a stray voxel in two opposite corners). Run:
    /// `cargo test --release -p negvol --lib components26_on_686 -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing on a 686^3 grid (323 MB): run with --release --ignored --nocapture"]
    fn components26_on_686_cube() {
        let n = 686;
        let mut m = Array3::from_elem([n; 3], false);
        // Touch every page, as a mask read from a file is (untouched zeroed pages would all
        // map to one shared page and read unrealistically fast).
        m.fill(false);
        let r = 20.0; // 8 mm at 0.4 mm
        for cx in [200.0, 486.0] {
            let c = [cx, 343.0, 343.0];
            let lo = (cx - r) as usize;
            let mut sub = m.slice_mut(ndarray::s![lo..lo + 41, 323..364, 323..364]);
            sub.indexed_iter_mut().for_each(|((i, j, k), v)| {
                let p = [(lo + i) as f64, (323 + j) as f64, (323 + k) as f64];
                let d2: f64 = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum();
                *v |= d2 <= r * r;
            });
        }
        m[[0, 0, 0]] = true;
        m[[n - 1, n - 1, n - 1]] = true;
        let b = Bbox {
            lo: [0; 3],
            hi: [n; 3],
        };
        let t = std::time::Instant::now();
        let c = components26(m.view(), &b);
        let dt = t.elapsed().as_secs_f64();
        eprintln!(
            "components26 over 686^3: {:.3} s, {} components, largest {} voxels",
            dt,
            c.len(),
            c[0].voxels
        );
        assert_eq!(c.len(), 4);
        assert_eq!(c[0].voxels, c[1].voxels);
        assert_eq!((c[2].voxels, c[3].voxels), (1, 1));
    }

    #[test]
    fn trilinear_half_way() {
        let mut m = Array3::from_elem([2, 2, 2], false);
        m[[1, 0, 0]] = true;
        let v = m.view();
        assert!((trilinear(&v, [0.5, 0.0, 0.0]) - 0.5).abs() < 1e-12);
        assert!((trilinear(&v, [1.0, 0.0, 0.0]) - 1.0).abs() < 1e-12);
        assert_eq!(trilinear(&v, [-3.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn lin_inverse() {
        let a = [
            [0.0, 0.5, 0.0, 1.0],
            [-0.4, 0.0, 0.0, 2.0],
            [0.0, 0.0, 1.2, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let g = Geometry::new([3, 3, 3], a).unwrap();
        let l = Lin::of(&g);
        let v = l.apply_inv(l.apply([1.0, -2.0, 3.0]));
        assert!((v[0] - 1.0).abs() < 1e-12 && (v[1] + 2.0).abs() < 1e-12);
        let cg = crop_geometry(
            &g,
            &Bbox {
                lo: [1, 1, 1],
                hi: [3, 3, 3],
            },
        );
        assert_eq!(cg.voxel_to_world([0.0; 3]), g.voxel_to_world([1.0; 3]));
    }
}
