//! Exact Euclidean distance transform (EDT) of a 3D mask with anisotropic spacing.
//!
//! Definition: for every voxel centre `x`, `squared_edt(mask)[x] = min over foreground voxel
//! centres y of |x - y|^2`, in mm^2, where the position of voxel `(i, j, k)` is
//! `(i * si, j * sj, k * sk)`. Foreground voxels get 0. The result is exact up to floating-point
//! rounding of the final sum of three squared axis offsets (no chamfer or band approximation).
//!
//! Algorithm: separable, one pass per axis. The pass along `k` (fastest in memory) is a
//! two-sided scan for the nearest foreground voxel on the row; the passes along `j` and then `i`
//! compute the lower envelope of parabolas (Felzenszwalb & Huttenlocher, "Distance Transforms of
//! Sampled Functions", Theory of Computing 8, 2012), with the axis spacing folded into the
//! parabolas. Lines are processed in parallel with rayon (correct on one thread too); strided
//! lines are gathered in tiles of 16 neighbouring lines so that memory is read in cache lines.
//!
//! ```
//! use ndarray::Array3;
//! use negvol_metrics::edt::{edt, squared_edt};
//! let mut m = Array3::from_elem([3, 4, 5], false);
//! m[[0, 0, 0]] = true;
//! let d2 = squared_edt(m.view(), [2.0, 1.0, 0.5]).unwrap();
//! assert!((d2[[1, 2, 4]] - (4.0 + 4.0 + 4.0)).abs() < 1e-12);
//! let d = edt(m.view(), [2.0, 1.0, 0.5]).unwrap();
//! assert!((d[[1, 2, 4]] - 12f64.sqrt()).abs() < 1e-12);
//! ```

use ndarray::{s, Array3, ArrayView1, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis};
use rayon::prelude::*;

use crate::error::{check_spacing, MetricsError, Result};

/// Number of neighbouring strided lines gathered together in the `j` and `i` passes.
const TILE: usize = 16;

/// Squared exact Euclidean distance (mm^2) from each voxel centre to the nearest `true` voxel
/// centre; 0 on the foreground.
///
/// `spacing` is `[si, sj, sk]` in mm. The mask may have any memory layout (e.g. a sliced view);
/// the result is in standard layout with the mask's shape.
///
/// # Errors
/// [`MetricsError::EmptyMask`] if the mask has no `true` voxel (distances are then undefined);
/// [`MetricsError::InvalidSpacing`] if a spacing component is not finite or not positive.
pub fn squared_edt(mask: ArrayView3<'_, bool>, spacing: [f64; 3]) -> Result<Array3<f64>> {
    check_spacing(spacing)?;
    let mut out = Array3::<f64>::zeros(mask.raw_dim());
    if !squared_edt_into(mask, spacing, out.view_mut(), None) {
        return Err(MetricsError::EmptyMask);
    }
    Ok(out)
}

/// Exact Euclidean distance (mm) from each voxel centre to the nearest `true` voxel centre:
/// the square root of [`squared_edt`].
///
/// # Errors
/// As [`squared_edt`].
pub fn edt(mask: ArrayView3<'_, bool>, spacing: [f64; 3]) -> Result<Array3<f64>> {
    let mut d = squared_edt(mask, spacing)?;
    d.par_mapv_inplace(f64::sqrt);
    Ok(d)
}

/// Squared EDT (mm^2, as [`squared_edt`]) together with the feature transform: for every voxel,
/// the row-major linear index `i * nj * nk + j * nk + k` of a nearest foreground voxel.
///
/// When several foreground voxels are at exactly the same distance, which one is reported is
/// unspecified (but its distance is the reported one).
///
/// # Errors
/// As [`squared_edt`], plus [`MetricsError::TooLarge`] if the volume has `u32::MAX` voxels or
/// more.
pub fn feature_transform(
    mask: ArrayView3<'_, bool>,
    spacing: [f64; 3],
) -> Result<(Array3<f64>, Array3<u32>)> {
    check_spacing(spacing)?;
    let sh = mask.shape();
    let voxels = sh[0] as u128 * sh[1] as u128 * sh[2] as u128;
    if voxels >= u32::MAX as u128 {
        return Err(MetricsError::TooLarge {
            shape: [sh[0], sh[1], sh[2]],
            voxels,
        });
    }
    let mut out = Array3::<f64>::zeros(mask.raw_dim());
    let mut ft = Array3::<u32>::from_elem(mask.raw_dim(), u32::MAX);
    if !squared_edt_into(mask, spacing, out.view_mut(), Some(ft.view_mut())) {
        return Err(MetricsError::EmptyMask);
    }
    Ok((out, ft))
}

/// Core: writes the squared EDT of `mask` into `out` (standard layout, same shape) and, when
/// given, the feature transform into `ft`. Returns `false` (and leaves `out` filled with
/// infinity) when the mask is empty. Spacing must already be validated.
pub(crate) fn squared_edt_into(
    mask: ArrayView3<'_, bool>,
    spacing: [f64; 3],
    mut out: ArrayViewMut3<'_, f64>,
    mut ft: Option<ArrayViewMut3<'_, u32>>,
) -> bool {
    debug_assert_eq!(mask.shape(), out.shape());
    let [ni, nj, nk] = [mask.shape()[0], mask.shape()[1], mask.shape()[2]];
    if ni == 0 || nj == 0 || nk == 0 {
        return false;
    }
    // Pass 1: along k, nearest foreground on the row by two scans.
    let sk = spacing[2];
    let any = match ft.as_mut() {
        None => out
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(mask.axis_iter(Axis(0)).into_par_iter())
            .map(|(mut o, m)| {
                let mut any = false;
                for (mut orow, mrow) in o.outer_iter_mut().zip(m.outer_iter()) {
                    let orow = orow.as_slice_mut().expect("standard layout");
                    any |= scan_row(mrow, orow, sk, None, 0);
                }
                any
            })
            .reduce(|| false, |a, b| a | b),
        Some(ft) => out
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(ft.axis_iter_mut(Axis(0)).into_par_iter())
            .zip(mask.axis_iter(Axis(0)).into_par_iter())
            .enumerate()
            .map(|(i, ((mut o, mut f), m))| {
                let mut any = false;
                for (j, ((mut orow, mut frow), mrow)) in o
                    .outer_iter_mut()
                    .zip(f.outer_iter_mut())
                    .zip(m.outer_iter())
                    .enumerate()
                {
                    let orow = orow.as_slice_mut().expect("standard layout");
                    let frow = frow.as_slice_mut().expect("standard layout");
                    let base = ((i * nj + j) * nk) as u32;
                    any |= scan_row(mrow, orow, sk, Some(frow), base);
                }
                any
            })
            .reduce(|| false, |a, b| a | b),
    };
    if !any {
        out.fill(f64::INFINITY);
        return false;
    }
    // Pass 2 (along j, per i-slab) and pass 3 (along i, per j-slab).
    for (axis_iter, s) in [(Axis(0), spacing[1]), (Axis(1), spacing[0])] {
        let s2 = s * s;
        match ft.as_mut() {
            None => out.axis_iter_mut(axis_iter).into_par_iter().for_each_init(
                || Scratch::new(if axis_iter == Axis(0) { nj } else { ni }),
                |sc, o| envelope_columns(o, None, s2, sc),
            ),
            Some(ft) => out
                .axis_iter_mut(axis_iter)
                .into_par_iter()
                .zip(ft.axis_iter_mut(axis_iter).into_par_iter())
                .for_each_init(
                    || Scratch::new(if axis_iter == Axis(0) { nj } else { ni }),
                    |sc, (o, f)| envelope_columns(o, Some(f), s2, sc),
                ),
        }
    }
    true
}

/// Pass 1 on one row: squared distance (mm^2) to the nearest `true` on the row, infinity if none.
/// Returns whether the row has a `true`.
fn scan_row(
    m: ArrayView1<'_, bool>,
    o: &mut [f64],
    s: f64,
    mut f: Option<&mut [u32]>,
    base: u32,
) -> bool {
    let n = o.len();
    let mut last: Option<usize> = None;
    for (k, &v) in m.iter().enumerate() {
        if v {
            last = Some(k);
            o[k] = 0.0;
            if let Some(f) = f.as_deref_mut() {
                f[k] = base + k as u32;
            }
        } else {
            match last {
                Some(l) => {
                    let d = (k - l) as f64 * s;
                    o[k] = d * d;
                    if let Some(f) = f.as_deref_mut() {
                        f[k] = base + l as u32;
                    }
                }
                None => o[k] = f64::INFINITY,
            }
        }
    }
    let Some(_) = last else {
        return false;
    };
    let mut next: Option<usize> = None;
    for (k, &v) in m.iter().enumerate().rev() {
        if v {
            next = Some(k);
        } else if let Some(nx) = next {
            let d = (nx - k) as f64 * s;
            let d = d * d;
            if d < o[k] {
                o[k] = d;
                if let Some(f) = f.as_deref_mut() {
                    f[k] = base + nx as u32;
                }
            }
        }
    }
    debug_assert!(n == m.len());
    true
}

/// Per-task scratch buffers for the envelope passes.
pub(crate) struct Scratch {
    /// Gathered input values, `TILE` columns of length `n`, column-major.
    f: Vec<f64>,
    /// Output values, same layout.
    d: Vec<f64>,
    /// Gathered feature indices.
    fi: Vec<u32>,
    /// Output feature indices.
    fo: Vec<u32>,
    /// Parabola apexes.
    v: Vec<usize>,
    /// Parabola left boundaries.
    z: Vec<f64>,
}

impl Scratch {
    pub(crate) fn new(n: usize) -> Self {
        Scratch {
            f: vec![0.0; n * TILE],
            d: vec![0.0; n * TILE],
            fi: Vec::new(),
            fo: Vec::new(),
            v: vec![0; n],
            z: vec![0.0; n + 1],
        }
    }
}

/// Runs the 1D lower-envelope transform along axis 0 of `a` (shape `[n, m]`) for each of its
/// `m` columns, in place; the feature transform, when given, follows the chosen parabolas.
fn envelope_columns(
    mut a: ArrayViewMut2<'_, f64>,
    mut ft: Option<ArrayViewMut2<'_, u32>>,
    s2: f64,
    sc: &mut Scratch,
) {
    let (n, m) = a.dim();
    if ft.is_some() && sc.fi.len() < n * TILE {
        sc.fi = vec![0; n * TILE];
        sc.fo = vec![0; n * TILE];
    }
    let mut c0 = 0;
    while c0 < m {
        let w = TILE.min(m - c0);
        // Gather.
        let mut any_finite = [false; TILE];
        for (r, row) in a.slice(s![.., c0..c0 + w]).outer_iter().enumerate() {
            for (c, &x) in row.iter().enumerate() {
                sc.f[c * n + r] = x;
                any_finite[c] |= x != f64::INFINITY;
            }
        }
        if let Some(ft) = ft.as_ref() {
            for (r, row) in ft.slice(s![.., c0..c0 + w]).outer_iter().enumerate() {
                for (c, &x) in row.iter().enumerate() {
                    sc.fi[c * n + r] = x;
                }
            }
        }
        for (c, &finite) in any_finite.iter().enumerate().take(w) {
            let range = c * n..(c + 1) * n;
            if !finite {
                sc.d[range].fill(f64::INFINITY);
                continue;
            }
            if ft.is_some() {
                envelope_1d(
                    &sc.f[range.clone()],
                    &mut sc.d[range.clone()],
                    s2,
                    &mut sc.v,
                    &mut sc.z,
                    Some((&sc.fi[range.clone()], &mut sc.fo[range])),
                );
            } else {
                envelope_1d(
                    &sc.f[range.clone()],
                    &mut sc.d[range],
                    s2,
                    &mut sc.v,
                    &mut sc.z,
                    None,
                );
            }
        }
        // Scatter.
        for (r, mut row) in a.slice_mut(s![.., c0..c0 + w]).outer_iter_mut().enumerate() {
            for (c, x) in row.iter_mut().enumerate() {
                *x = sc.d[c * n + r];
            }
        }
        if let Some(ft) = ft.as_mut() {
            for (r, mut row) in ft
                .slice_mut(s![.., c0..c0 + w])
                .outer_iter_mut()
                .enumerate()
            {
                for (c, x) in row.iter_mut().enumerate() {
                    *x = sc.fo[c * n + r];
                }
            }
        }
        c0 += w;
    }
}

/// 1D lower envelope: `d[q] = min_p f[p] + s2 * (q - p)^2` over finite `f[p]`
/// (Felzenszwalb-Huttenlocher). `f` must contain at least one finite value.
#[inline]
pub(crate) fn envelope_1d(
    f: &[f64],
    d: &mut [f64],
    s2: f64,
    v: &mut [usize],
    z: &mut [f64],
    mut feat: Option<(&[u32], &mut [u32])>,
) {
    let n = f.len();
    let inv_s2 = 1.0 / s2;
    let mut count = 0usize;
    for q in 0..n {
        let fq = f[q];
        if fq == f64::INFINITY {
            continue;
        }
        let qf = q as f64;
        let mut sect = f64::NEG_INFINITY;
        while count > 0 {
            let p = v[count - 1];
            let pf = p as f64;
            // Abscissa (in index units) where the parabolas of p and q meet.
            let x = ((fq - f[p]) * inv_s2 + (qf * qf - pf * pf)) / (2.0 * (qf - pf));
            if x <= z[count - 1] {
                count -= 1;
            } else {
                sect = x;
                break;
            }
        }
        v[count] = q;
        z[count] = if count == 0 { f64::NEG_INFINITY } else { sect };
        count += 1;
    }
    debug_assert!(count > 0);
    let mut idx = 0usize;
    for (q, dq) in d.iter_mut().enumerate() {
        let qf = q as f64;
        while idx + 1 < count && z[idx + 1] < qf {
            idx += 1;
        }
        let p = v[idx];
        let off = qf - p as f64;
        *dq = f[p] + s2 * off * off;
        if let Some((fi, fo)) = feat.as_mut() {
            fo[q] = fi[p];
        }
    }
}

/// Brute-force squared EDT (all pairs), for tests. `O(N * F)`.
#[cfg(test)]
pub(crate) fn brute_force_squared_edt(
    mask: ArrayView3<'_, bool>,
    spacing: [f64; 3],
) -> Array3<f64> {
    let fg: Vec<[usize; 3]> = mask
        .indexed_iter()
        .filter(|(_, &v)| v)
        .map(|((i, j, k), _)| [i, j, k])
        .collect();
    let mut out = Array3::from_elem(mask.raw_dim(), f64::INFINITY);
    ndarray::Zip::indexed(&mut out).for_each(|(i, j, k), o| {
        for p in &fg {
            let d: f64 = (0..3)
                .map(|a| {
                    let x = ([i, j, k][a] as f64 - p[a] as f64) * spacing[a];
                    x * x
                })
                .sum();
            if d < *o {
                *o = d;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    /// Small deterministic PRNG (xorshift) so the unit tests need no extra dependency.
    pub(crate) struct Rng(u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub(crate) fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn random_mask(rng: &mut Rng, sh: [usize; 3], p: f64) -> Array3<bool> {
        Array3::from_shape_fn(sh, |_| rng.unit() < p)
    }

    #[test]
    fn matches_brute_force_on_random_masks() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for trial in 0..60 {
            let sh = [
                1 + (rng.next() % 9) as usize,
                1 + (rng.next() % 9) as usize,
                1 + (rng.next() % 9) as usize,
            ];
            let sp = [
                0.2 + 2.0 * rng.unit(),
                0.2 + 2.0 * rng.unit(),
                0.2 + 2.0 * rng.unit(),
            ];
            let p = [0.01, 0.05, 0.2, 0.6][trial % 4];
            let mut m = random_mask(&mut rng, sh, p);
            if !m.iter().any(|&x| x) {
                m[[0, 0, 0]] = true;
            }
            let bf = brute_force_squared_edt(m.view(), sp);
            let d2 = squared_edt(m.view(), sp).unwrap();
            let (d2f, ft) = feature_transform(m.view(), sp).unwrap();
            let [_, nj, nk] = sh;
            for ((idx, &b), (&a, (&af, &f))) in bf
                .indexed_iter()
                .zip(d2.iter().zip(d2f.iter().zip(ft.iter())))
            {
                assert_relative_eq!(a, b, max_relative = 1e-12, epsilon = 1e-12);
                assert_relative_eq!(af, b, max_relative = 1e-12, epsilon = 1e-12);
                let f = f as usize;
                let (fi, fj, fk) = (f / (nj * nk), (f / nk) % nj, f % nk);
                assert!(m[[fi, fj, fk]], "feature must be foreground");
                let dd: f64 = [
                    (idx.0 as f64 - fi as f64) * sp[0],
                    (idx.1 as f64 - fj as f64) * sp[1],
                    (idx.2 as f64 - fk as f64) * sp[2],
                ]
                .iter()
                .map(|x| x * x)
                .sum();
                assert_relative_eq!(dd, b, max_relative = 1e-12, epsilon = 1e-12);
            }
        }
    }

    #[test]
    fn works_on_sliced_views_and_wide_volumes() {
        // Wider than one tile in k, non-standard layout input.
        let mut rng = Rng(12345);
        let big = random_mask(&mut rng, [7, 9, 40], 0.02);
        let view = big.slice(s![1..6;2, .., 3..37]);
        let mut owned = view.to_owned();
        owned[[0, 0, 0]] = true;
        let sp = [0.7, 1.3, 0.4];
        let bf = brute_force_squared_edt(owned.view(), sp);
        let mut view2 = big.clone();
        view2[[1, 0, 3]] = true;
        let d2 = squared_edt(view2.slice(s![1..6;2, .., 3..37]), sp).unwrap();
        for (a, b) in d2.iter().zip(bf.iter()) {
            assert_relative_eq!(*a, *b, max_relative = 1e-12, epsilon = 1e-12);
        }
    }

    #[test]
    fn single_threaded_equals_parallel() {
        let mut rng = Rng(777);
        let m = random_mask(&mut rng, [20, 18, 35], 0.01);
        let sp = [0.5, 0.9, 1.7];
        let par = squared_edt(m.view(), sp).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let seq = pool.install(|| squared_edt(m.view(), sp).unwrap());
        assert_eq!(par, seq);
    }

    #[test]
    fn errors() {
        let m = Array3::from_elem([3, 3, 3], false);
        assert_eq!(
            squared_edt(m.view(), [1.0; 3]).unwrap_err(),
            MetricsError::EmptyMask
        );
        let mut m2 = m.clone();
        m2[[1, 1, 1]] = true;
        for bad in [[0.0, 1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, f64::NAN]] {
            assert!(matches!(
                edt(m2.view(), bad),
                Err(MetricsError::InvalidSpacing { .. })
            ));
        }
        let empty = Array3::from_elem([0, 3, 3], false);
        assert_eq!(
            feature_transform(empty.view(), [1.0; 3]).unwrap_err(),
            MetricsError::EmptyMask
        );
    }

    #[test]
    fn single_point_is_exact_distance() {
        let mut m = Array3::from_elem([11, 13, 17], false);
        m[[5, 6, 7]] = true;
        let sp = [0.4, 0.45, 1.25];
        let d = edt(m.view(), sp).unwrap();
        for ((i, j, k), &v) in d.indexed_iter() {
            let e = (((i as f64 - 5.0) * sp[0]).powi(2)
                + ((j as f64 - 6.0) * sp[1]).powi(2)
                + ((k as f64 - 7.0) * sp[2]).powi(2))
            .sqrt();
            assert_relative_eq!(v, e, max_relative = 1e-12, epsilon = 1e-12);
        }
    }
}
