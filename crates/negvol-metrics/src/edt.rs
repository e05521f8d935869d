//! Exact Euclidean distance transform (EDT) of a 3D mask with anisotropic spacing.
//!
//! Definition: for every voxel centre `x`, `squared_edt(mask)[x] = min over foreground voxel
//! centres y of |x - y|^2`, in mm^2, where the position of voxel `(i, j, k)` is
//! `(i * si, j * sj, k * sk)`. Foreground voxels get 0. The result is exact up to floating-point
//! rounding of the final sum of three squared axis offsets (no chamfer or band approximation).
//!
//! Algorithm: separable, one pass per axis. The pass along `i` (slowest in memory) is a
//! forward and a backward sweep over whole `i`-slices that records, in a 2-byte integer working
//! array, the index of the nearest foreground voxel on each `i`-line; the passes along `j` and
//! then `k` compute the lower envelope of parabolas (Felzenszwalb & Huttenlocher, "Distance
//! Transforms of Sampled Functions", Theory of Computing 8, 2012), with the axis spacing folded
//! into the parabolas, slab by slab (one `i`-slab per rayon task, so the `j` and `k` passes run
//! in cache). Strided `j`-lines are gathered in tiles of 16 neighbouring lines. Every kernel is
//! correct on one thread too.
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

use ndarray::{Array3, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis};
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

/// Integer type holding, after the first pass, the offset along `i` to the nearest foreground
/// voxel on the `i`-line (`NONE` when the line is empty). `u16` keeps the working array at two
/// bytes per voxel; `u32` is the fallback for lines of 65535 voxels or more.
pub(crate) trait Count: Copy + PartialEq + Send + Sync + 'static {
    /// Marker for "no foreground voxel on this line (yet)".
    const NONE: Self;
    /// Largest line length this type supports.
    const MAX_LEN: usize;
    fn from_usize(x: usize) -> Self;
    fn to_usize(self) -> usize;
}
impl Count for u16 {
    const NONE: Self = u16::MAX;
    const MAX_LEN: usize = u16::MAX as usize - 1;
    #[inline]
    fn from_usize(x: usize) -> Self {
        x as u16
    }
    #[inline]
    fn to_usize(self) -> usize {
        self as usize
    }
}
impl Count for u32 {
    const NONE: Self = u32::MAX;
    const MAX_LEN: usize = u32::MAX as usize - 1;
    #[inline]
    fn from_usize(x: usize) -> Self {
        x as u32
    }
    #[inline]
    fn to_usize(self) -> usize {
        self as usize
    }
}

/// Pass A: for every voxel, the index `i'` of the nearest foreground voxel on its `i`-line
/// (`C::NONE` if the line is empty), by a forward and a backward sweep over `i`-slices (which
/// reads memory contiguously). Returns whether any voxel is foreground.
fn pass_a<C: Count>(mask: ArrayView3<'_, bool>, near: &mut Array3<C>) -> bool {
    let ni = mask.shape()[0];
    near.axis_iter_mut(Axis(1))
        .into_par_iter()
        .zip(mask.axis_iter(Axis(1)).into_par_iter())
        .map(|(mut nv, mv)| {
            // nv, mv: [ni, nk]
            let mut any = false;
            let nk = mv.shape()[1];
            let mut last = vec![C::NONE; nk];
            for i in 0..ni {
                let mrow = mv.row(i);
                let mut nrow = nv.row_mut(i);
                let ci = C::from_usize(i);
                for ((l, &m), n) in last.iter_mut().zip(mrow.iter()).zip(nrow.iter_mut()) {
                    if m {
                        *l = ci;
                    }
                    *n = *l;
                }
            }
            let mut next = vec![C::NONE; nk];
            for i in (0..ni).rev() {
                let mrow = mv.row(i);
                let mut nrow = nv.row_mut(i);
                let ci = C::from_usize(i);
                for ((nx, &m), n) in next.iter_mut().zip(mrow.iter()).zip(nrow.iter_mut()) {
                    if m {
                        *nx = ci;
                        any = true;
                    } else if *nx != C::NONE {
                        let up = nx.to_usize() - i;
                        if *n == C::NONE || up < i - n.to_usize() {
                            *n = *nx;
                        }
                    }
                }
            }
            any
        })
        .reduce(|| false, |a, b| a | b)
}

/// Per-task scratch buffers for one `i`-slab.
pub(crate) struct Scratch {
    /// Gathered input values of a tile, `TILE` columns of length `nj`, column-major.
    f: Vec<f64>,
    /// Output values of a tile, same layout.
    d: Vec<f64>,
    /// Gathered / output feature indices of a tile.
    fi: Vec<u32>,
    fo: Vec<u32>,
    /// The slab after pass B, `[nj, nk]` row-major.
    g: Vec<f64>,
    /// Its features (linear indices), when the feature transform is wanted.
    gf: Vec<u32>,
    /// Parabola apexes and left boundaries.
    v: Vec<usize>,
    z: Vec<f64>,
}

impl Scratch {
    fn new(nj: usize, nk: usize, with_ft: bool) -> Self {
        let n = nj.max(nk);
        let ft_len = |x: usize| if with_ft { x } else { 0 };
        Scratch {
            f: vec![0.0; nj * TILE],
            d: vec![0.0; nj * TILE],
            fi: vec![0; ft_len(nj * TILE)],
            fo: vec![0; ft_len(nj * TILE)],
            g: vec![0.0; nj * nk],
            gf: vec![0; ft_len(nj * nk)],
            v: vec![0; n],
            z: vec![0.0; n + 1],
        }
    }
}

/// Pass B on slab `i`: from the pass-A indices `near` (`[nj, nk]`), computes into `sc.g` the
/// squared distance to the nearest foreground voxel of the slab's `(i, j)` plane projection,
/// i.e. `min_j' (i - near[j', k])^2 si^2 + (j - j')^2 sj^2`, and into `sc.gf` the features.
fn pass_b<C: Count>(
    near: ArrayView2<'_, C>,
    i: usize,
    spacing: [f64; 3],
    with_ft: bool,
    sc: &mut Scratch,
) {
    let (nj, nk) = near.dim();
    let near = near.as_standard_layout();
    let ns = near.as_slice().expect("standard layout");
    let s2 = spacing[1] * spacing[1];
    let si = spacing[0];
    let mut c0 = 0;
    while c0 < nk {
        let w = TILE.min(nk - c0);
        let mut any_finite = [false; TILE];
        for r in 0..nj {
            let row = &ns[r * nk + c0..r * nk + c0 + w];
            for (c, &x) in row.iter().enumerate() {
                let idx = c * nj + r;
                if x == C::NONE {
                    sc.f[idx] = f64::INFINITY;
                } else {
                    let ip = x.to_usize();
                    let d = (ip.abs_diff(i)) as f64 * si;
                    sc.f[idx] = d * d;
                    any_finite[c] = true;
                    if with_ft {
                        sc.fi[idx] = ((ip * nj + r) * nk + c0 + c) as u32;
                    }
                }
            }
        }
        for (c, &finite) in any_finite.iter().enumerate().take(w) {
            let range = c * nj..(c + 1) * nj;
            if !finite {
                sc.d[range].fill(f64::INFINITY);
                continue;
            }
            let feat = if with_ft {
                Some((&sc.fi[range.clone()], &mut sc.fo[range.clone()]))
            } else {
                None
            };
            let (v, z) = (&mut sc.v[..], &mut sc.z[..]);
            let count = build_envelope(&sc.f[range.clone()], s2, v, z);
            if count == 0 {
                sc.d[range].fill(f64::INFINITY);
            } else {
                eval_envelope(
                    &sc.f[range.clone()],
                    s2,
                    v,
                    z,
                    count,
                    &mut sc.d[range],
                    feat,
                );
            }
        }
        for r in 0..nj {
            let grow = &mut sc.g[r * nk + c0..r * nk + c0 + w];
            for (c, x) in grow.iter_mut().enumerate() {
                *x = sc.d[c * nj + r];
            }
            if with_ft {
                let frow = &mut sc.gf[r * nk + c0..r * nk + c0 + w];
                for (c, x) in frow.iter_mut().enumerate() {
                    *x = sc.fo[c * nj + r];
                }
            }
        }
        c0 += w;
    }
}

/// Core: writes the squared EDT of `mask` into `out` (standard layout, same shape) and, when
/// given, the feature transform into `ft`. Returns `false` (and leaves `out` filled with
/// infinity) when the mask is empty. Spacing must already be validated.
pub(crate) fn squared_edt_into(
    mask: ArrayView3<'_, bool>,
    spacing: [f64; 3],
    out: ArrayViewMut3<'_, f64>,
    ft: Option<ArrayViewMut3<'_, u32>>,
) -> bool {
    if mask.shape()[0] <= u16::MAX_LEN {
        squared_edt_into_c::<u16>(mask, spacing, out, ft)
    } else {
        squared_edt_into_c::<u32>(mask, spacing, out, ft)
    }
}

fn squared_edt_into_c<C: Count>(
    mask: ArrayView3<'_, bool>,
    spacing: [f64; 3],
    mut out: ArrayViewMut3<'_, f64>,
    mut ft: Option<ArrayViewMut3<'_, u32>>,
) -> bool {
    debug_assert_eq!(mask.shape(), out.shape());
    let [_, nj, nk] = [mask.shape()[0], mask.shape()[1], mask.shape()[2]];
    if mask.is_empty() {
        return false;
    }
    let mut near = Array3::<C>::from_elem(mask.raw_dim(), C::NONE);
    if !pass_a(mask, &mut near) {
        out.fill(f64::INFINITY);
        return false;
    }
    let with_ft = ft.is_some();
    let sk2 = spacing[2] * spacing[2];
    let slab = |sc: &mut Scratch,
                i: usize,
                mut o: ArrayViewMut2<'_, f64>,
                f: Option<ArrayViewMut2<'_, u32>>| {
        pass_b(near.index_axis(Axis(0), i), i, spacing, with_ft, sc);
        let mut f = f;
        for j in 0..nj {
            let g = &sc.g[j * nk..(j + 1) * nk];
            let mut orow = o.row_mut(j);
            let orow = orow.as_slice_mut().expect("standard layout");
            let count = build_envelope(g, sk2, &mut sc.v, &mut sc.z);
            if count == 0 {
                orow.fill(f64::INFINITY);
                continue;
            }
            match f.as_mut() {
                None => eval_envelope(g, sk2, &sc.v, &sc.z, count, orow, None),
                Some(f) => {
                    let mut frow = f.row_mut(j);
                    let frow = frow.as_slice_mut().expect("standard layout");
                    let gf = &sc.gf[j * nk..(j + 1) * nk];
                    eval_envelope(g, sk2, &sc.v, &sc.z, count, orow, Some((gf, frow)));
                }
            }
        }
    };
    match ft.as_mut() {
        None => out
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each_init(
                || Scratch::new(nj, nk, false),
                |sc, (i, o)| slab(sc, i, o, None),
            ),
        Some(ft) => out
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(ft.axis_iter_mut(Axis(0)).into_par_iter())
            .enumerate()
            .for_each_init(
                || Scratch::new(nj, nk, true),
                |sc, (i, (o, f))| slab(sc, i, o, Some(f)),
            ),
    }
    true
}

/// Squared distances (mm^2) from every `true` voxel of `query` to the nearest `true` voxel of
/// `target`, in the row-major order of the query voxels. Both masks must have the same shape.
/// `None` if `target` is empty. Only the rows holding query voxels get the last pass, and the
/// full distance map is never stored (two bytes per voxel of working memory plus one slab per
/// thread).
pub(crate) fn squared_distances_at(
    target: ArrayView3<'_, bool>,
    query: ArrayView3<'_, bool>,
    spacing: [f64; 3],
) -> Option<Vec<f64>> {
    if target.shape()[0] <= u16::MAX_LEN {
        squared_distances_at_c::<u16>(target, query, spacing)
    } else {
        squared_distances_at_c::<u32>(target, query, spacing)
    }
}

fn squared_distances_at_c<C: Count>(
    target: ArrayView3<'_, bool>,
    query: ArrayView3<'_, bool>,
    spacing: [f64; 3],
) -> Option<Vec<f64>> {
    debug_assert_eq!(target.shape(), query.shape());
    let [_, nj, nk] = [target.shape()[0], target.shape()[1], target.shape()[2]];
    if target.is_empty() {
        return None;
    }
    let mut near = Array3::<C>::from_elem(target.raw_dim(), C::NONE);
    if !pass_a(target, &mut near) {
        return None;
    }
    let sk2 = spacing[2] * spacing[2];
    let per_slab: Vec<Vec<f64>> = query
        .axis_iter(Axis(0))
        .into_par_iter()
        .enumerate()
        .map_init(
            || None,
            |sc: &mut Option<Scratch>, (i, q)| {
                let mut res = Vec::new();
                if !q.iter().any(|&x| x) {
                    return res;
                }
                let sc = sc.get_or_insert_with(|| Scratch::new(nj, nk, false));
                pass_b(near.index_axis(Axis(0), i), i, spacing, false, sc);
                for (j, qrow) in q.outer_iter().enumerate() {
                    if !qrow.iter().any(|&x| x) {
                        continue;
                    }
                    let g = &sc.g[j * nk..(j + 1) * nk];
                    let count = build_envelope(g, sk2, &mut sc.v, &mut sc.z);
                    let mut idx = 0usize;
                    for (k, &x) in qrow.iter().enumerate() {
                        if !x {
                            continue;
                        }
                        if count == 0 {
                            res.push(f64::INFINITY);
                            continue;
                        }
                        let kf = k as f64;
                        while idx + 1 < count && sc.z[idx + 1] < kf {
                            idx += 1;
                        }
                        let p = sc.v[idx];
                        let off = kf - p as f64;
                        res.push(g[p] + sk2 * off * off);
                    }
                }
                res
            },
        )
        .collect();
    Some(per_slab.concat())
}

/// Builds the lower envelope of the parabolas `y = f[p] + s2 (x - p)^2` over finite `f[p]`
/// (Felzenszwalb-Huttenlocher): apexes in `v[..count]`, left boundaries in `z[..count]`
/// (index units). Returns `count` (0 if every `f` is infinite).
#[inline]
pub(crate) fn build_envelope(f: &[f64], s2: f64, v: &mut [usize], z: &mut [f64]) -> usize {
    let inv_s2 = 1.0 / s2;
    let mut count = 0usize;
    for (q, &fq) in f.iter().enumerate() {
        if fq == f64::INFINITY {
            continue;
        }
        let qf = q as f64;
        let mut sect = f64::NEG_INFINITY;
        while count > 0 {
            let p = v[count - 1];
            let pf = p as f64;
            // Abscissa (index units) where the parabolas of p and q meet.
            let x = ((fq - f[p]) * inv_s2 + (qf * qf - pf * pf)) / (2.0 * (qf - pf));
            if x <= z[count - 1] {
                count -= 1;
            } else {
                sect = x;
                break;
            }
        }
        v[count] = q;
        z[count] = sect;
        count += 1;
    }
    count
}

/// Evaluates an envelope from [`build_envelope`] at every index: `d[q] = f[p] + s2 (q - p)^2`
/// for the parabola `p` covering `q`; copies the features of the chosen parabolas.
#[inline]
pub(crate) fn eval_envelope(
    f: &[f64],
    s2: f64,
    v: &[usize],
    z: &[f64],
    count: usize,
    d: &mut [f64],
    mut feat: Option<(&[u32], &mut [u32])>,
) {
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
    use ndarray::s;

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
    fn distances_at_queries_match_brute_force() {
        let mut rng = Rng(4242);
        for trial in 0..40 {
            let sh = [
                1 + (rng.next() % 8) as usize,
                1 + (rng.next() % 8) as usize,
                1 + (rng.next() % 20) as usize,
            ];
            let sp = [
                0.2 + 2.0 * rng.unit(),
                0.2 + 2.0 * rng.unit(),
                0.2 + 2.0 * rng.unit(),
            ];
            let t = random_mask(&mut rng, sh, [0.02, 0.1, 0.5][trial % 3]);
            let q = random_mask(&mut rng, sh, 0.3);
            let got = squared_distances_at(t.view(), q.view(), sp);
            if !t.iter().any(|&x| x) {
                assert!(got.is_none());
                continue;
            }
            let bf = brute_force_squared_edt(t.view(), sp);
            let want: Vec<f64> = bf
                .iter()
                .zip(q.iter())
                .filter(|(_, &x)| x)
                .map(|(d, _)| *d)
                .collect();
            let got = got.unwrap();
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(want.iter()) {
                assert_relative_eq!(*a, *b, max_relative = 1e-12, epsilon = 1e-12);
            }
        }
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
