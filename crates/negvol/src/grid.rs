//! Grid helpers: boxes, crops, the affine's linear part, Gaussian smoothing, morphology and
//! neighbours. Private to the crate (connected components are `negvol_metrics::components`).

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
    use negvol_metrics::components::label_components;
    use negvol_metrics::Connectivity;

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
        let l = label_components(m.view(), Connectivity::Six).unwrap();
        assert_eq!(l.count(), 2);
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
