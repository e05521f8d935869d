//! Voxel interpolation (trilinear or Keys cubic convolution for images, nearest for labels) and
//! resampling between grids through their world coordinates.

use ndarray::{Array3, ArrayView3, Zip};
use negvol_volume::{Geometry, Volume};

use crate::{Result, TrainError};

/// Interpolation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Nearest neighbour (order 0): the only choice for labels.
    Nearest,
    /// Trilinear (order 1).
    Linear,
    /// Keys cubic convolution (`a = -0.5`, 4 taps per axis, interpolating, no prefilter): see
    /// [`sample_cubic`]. Sharper than trilinear between voxels; exact on the grid.
    Cubic,
}

/// `x.floor()` as an integer, without a libm call (x86-64's baseline has no `roundsd`). Exact
/// for `|x| < 2^52`; saturates beyond, NaN gives 0.
#[inline]
fn floor_i64(x: f64) -> i64 {
    let t = x as i64;
    if (t as f64) > x {
        t - 1
    } else {
        t
    }
}

/// `x.round()` (half away from zero) as an integer, without a libm call. Exact for
/// `|x| < 2^52`; saturates beyond, NaN gives 0.
#[inline]
fn round_i64(x: f64) -> i64 {
    let t = x as i64;
    let r = x - t as f64;
    if r >= 0.5 {
        t + 1
    } else if r <= -0.5 {
        t - 1
    } else {
        t
    }
}

/// Trilinear interpolation of `src` at fractional index `p`; corners outside the array read
/// `fill`. At integer positions inside the array this returns the voxel value exactly.
#[inline]
pub fn sample_linear(src: &ArrayView3<'_, f32>, p: [f64; 3], fill: f32) -> f32 {
    let sh = src.shape();
    if p.iter().any(|x| x.is_nan()) {
        return f32::NAN;
    }
    // Far outside (or infinite): every corner reads `fill` (and the index arithmetic below
    // cannot overflow).
    if p.iter().any(|x| !(x.abs() < 4.0e15)) {
        return fill;
    }
    let b = [floor_i64(p[0]), floor_i64(p[1]), floor_i64(p[2])];
    let t = [p[0] - b[0] as f64, p[1] - b[1] as f64, p[2] - b[2] as f64];
    let wx = [1.0 - t[0], t[0]];
    let wy = [1.0 - t[1], t[1]];
    let wz = [1.0 - t[2], t[2]];
    let inside = (0..3).all(|a| b[a] >= 0 && b[a] + 1 < sh[a] as i64);
    // Fast path: all eight corners inside a standard-layout array.
    if let (true, Some(data)) = (inside, src.as_slice()) {
        let (s0, s1) = (sh[1] * sh[2], sh[2]);
        let base = b[0] as usize * s0 + b[1] as usize * s1 + b[2] as usize;
        let mut acc = 0.0f64;
        for (dx, wx) in wx.iter().enumerate() {
            if *wx == 0.0 {
                continue;
            }
            for (dy, wy) in wy.iter().enumerate() {
                if *wy == 0.0 {
                    continue;
                }
                let row = base + dx * s0 + dy * s1;
                for (dz, wz) in wz.iter().enumerate() {
                    if *wz == 0.0 {
                        continue;
                    }
                    acc += wx * wy * wz * data[row + dz] as f64;
                }
            }
        }
        return acc as f32;
    }
    let mut acc = 0.0f64;
    for (dx, wx) in [(0i64, wx[0]), (1, wx[1])] {
        if wx == 0.0 {
            continue;
        }
        for (dy, wy) in [(0i64, wy[0]), (1, wy[1])] {
            if wy == 0.0 {
                continue;
            }
            for (dz, wz) in [(0i64, wz[0]), (1, wz[1])] {
                if wz == 0.0 {
                    continue;
                }
                let (i, j, k) = (b[0] + dx, b[1] + dy, b[2] + dz);
                let v = if inside
                    || (i >= 0
                        && j >= 0
                        && k >= 0
                        && (i as usize) < sh[0]
                        && (j as usize) < sh[1]
                        && (k as usize) < sh[2])
                {
                    src[[i as usize, j as usize, k as usize]]
                } else {
                    fill
                };
                acc += wx * wy * wz * v as f64;
            }
        }
    }
    acc as f32
}

/// Keys' cubic-convolution weights (`a = -0.5`) of the taps at offsets -1, 0, 1, 2 from
/// `floor(x)`, for the fraction `t = x - floor(x)` in `[0, 1)`. They sum to 1; at `t = 0` they
/// are exactly `(0, 1, 0, 0)`.
#[inline]
fn keys_weights(t: f64) -> [f64; 4] {
    let t2 = t * t;
    let t3 = t2 * t;
    [
        0.5 * (-t3 + 2.0 * t2 - t),
        0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
        0.5 * (-3.0 * t3 + 4.0 * t2 + t),
        0.5 * (t3 - t2),
    ]
}

/// Keys cubic-convolution interpolation (`a = -0.5`, 4 x 4 x 4 taps, no prefilter) of `src` at
/// fractional index `p`.
///
/// It interpolates (at integer positions inside the array it returns the voxel value exactly)
/// and reproduces polynomials up to degree 2 exactly away from the edges. Unlike trilinear
/// interpolation it does not blur between voxels much, but it can overshoot at steps (by up to
/// about 7 % of the step).
///
/// Edges: inside the array's extent (`0 <= p[a] <= n[a] - 1` on every axis) taps beyond the edge
/// read the nearest edge voxel (clamp to edge), so `fill` never leaks into the volume. Outside,
/// `fill` enters exactly as in [`sample_linear`]: the result is the value at `p` clamped to the
/// extent, blended with `fill` by the product over axes of `1 - d` (`d` the distance beyond the
/// extent, in voxels), so one voxel or more beyond the extent (or far away, infinite, or an
/// empty array) reads `fill`. A NaN position gives NaN.
#[inline]
pub fn sample_cubic(src: &ArrayView3<'_, f32>, p: [f64; 3], fill: f32) -> f32 {
    let sh = src.shape();
    if p.iter().any(|x| x.is_nan()) {
        return f32::NAN;
    }
    if p.iter().any(|x| !(x.abs() < 4.0e15)) || sh.contains(&0) {
        return fill;
    }
    // Distance beyond the extent per axis, and the position clamped onto it.
    let mut q = p;
    let mut w_in = 1.0f64;
    for a in 0..3 {
        let hi = (sh[a] - 1) as f64;
        let d = if p[a] < 0.0 {
            q[a] = 0.0;
            -p[a]
        } else if p[a] > hi {
            q[a] = hi;
            p[a] - hi
        } else {
            0.0
        };
        if d >= 1.0 {
            return fill;
        }
        w_in *= 1.0 - d;
    }
    let v = cubic_inside(src, q);
    if w_in == 1.0 {
        v as f32
    } else {
        (w_in * v + (1.0 - w_in) * fill as f64) as f32
    }
}

/// [`sample_cubic`] at a position within the array's extent (taps clamped to the edge), in f64.
#[inline]
fn cubic_inside(src: &ArrayView3<'_, f32>, q: [f64; 3]) -> f64 {
    let sh = src.shape();
    let b = [floor_i64(q[0]), floor_i64(q[1]), floor_i64(q[2])];
    let w = [
        keys_weights(q[0] - b[0] as f64),
        keys_weights(q[1] - b[1] as f64),
        keys_weights(q[2] - b[2] as f64),
    ];
    let inside = (0..3).all(|a| b[a] >= 1 && b[a] + 2 < sh[a] as i64);
    // Fast path: all 64 taps inside a standard-layout array.
    if let (true, Some(data)) = (inside, src.as_slice()) {
        let (s0, s1) = (sh[1] * sh[2], sh[2]);
        let base = (b[0] - 1) as usize * s0 + (b[1] - 1) as usize * s1 + (b[2] - 1) as usize;
        let mut acc = 0.0f64;
        for (dx, wx) in w[0].iter().enumerate() {
            if *wx == 0.0 {
                continue;
            }
            let mut plane = 0.0f64;
            for (dy, wy) in w[1].iter().enumerate() {
                if *wy == 0.0 {
                    continue;
                }
                let row = &data[base + dx * s0 + dy * s1..][..4];
                let mut r = 0.0f64;
                for (v, wz) in row.iter().zip(&w[2]) {
                    if *wz != 0.0 {
                        r += wz * *v as f64;
                    }
                }
                plane += wy * r;
            }
            acc += wx * plane;
        }
        return acc;
    }
    // General path: taps clamped to the edge, any layout.
    let idx = |a: usize, d: usize| (b[a] - 1 + d as i64).clamp(0, sh[a] as i64 - 1) as usize;
    let mut acc = 0.0f64;
    for (dx, wx) in w[0].iter().enumerate() {
        if *wx == 0.0 {
            continue;
        }
        let i = idx(0, dx);
        let mut plane = 0.0f64;
        for (dy, wy) in w[1].iter().enumerate() {
            if *wy == 0.0 {
                continue;
            }
            let j = idx(1, dy);
            let mut r = 0.0f64;
            for (dz, wz) in w[2].iter().enumerate() {
                if *wz != 0.0 {
                    r += wz * src[[i, j, idx(2, dz)]] as f64;
                }
            }
            plane += wy * r;
        }
        acc += wx * plane;
    }
    acc
}

/// Nearest-neighbour lookup of `src` at fractional index `p` (rounding half away from zero);
/// outside the array (or at a NaN position) it reads `fill`.
#[inline]
pub fn sample_nearest<T: Copy>(src: &ArrayView3<'_, T>, p: [f64; 3], fill: T) -> T {
    let sh = src.shape();
    let mut idx = [0usize; 3];
    for a in 0..3 {
        if !(p[a].abs() < 4.0e15) {
            return fill;
        }
        let r = round_i64(p[a]);
        if r < 0 || r >= sh[a] as i64 {
            return fill;
        }
        idx[a] = r as usize;
    }
    src[idx]
}

/// Affine map from destination voxel indices to source voxel indices:
/// `src_index = m * dst_index + t`, through world coordinates.
pub(crate) fn index_map(src: &Geometry, dst: &Geometry) -> ([[f64; 3]; 3], [f64; 3]) {
    let o = src.world_to_voxel(dst.voxel_to_world([0.0; 3]));
    let mut m = [[0.0; 3]; 3];
    for c in 0..3 {
        let mut e = [0.0; 3];
        e[c] = 1.0;
        let q = src.world_to_voxel(dst.voxel_to_world(e));
        for r in 0..3 {
            m[r][c] = q[r] - o[r];
        }
    }
    (m, o)
}

/// Resample an image onto another grid (any affine), reading `fill` outside the source.
pub fn resample_image(
    src: &Volume<f32>,
    dst: &Geometry,
    interp: Interpolation,
    fill: f32,
) -> Result<Volume<f32>> {
    let (m, t) = index_map(src.geometry(), dst);
    let s = dst.shape();
    let view = src.view();
    let mut out = Array3::<f32>::zeros((s[0], s[1], s[2]));
    Zip::indexed(&mut out).par_for_each(|(i, j, k), o| {
        let d = [i as f64, j as f64, k as f64];
        let mut p = t;
        for r in 0..3 {
            p[r] += m[r][0] * d[0] + m[r][1] * d[1] + m[r][2] * d[2];
        }
        *o = match interp {
            Interpolation::Linear => sample_linear(&view, p, fill),
            Interpolation::Cubic => sample_cubic(&view, p, fill),
            Interpolation::Nearest => sample_nearest(&view, p, fill),
        };
    });
    Volume::new(out, dst.clone()).map_err(|source| TrainError::Volume {
        context: "resampling an image".into(),
        source,
    })
}

/// Resample a label map onto another grid with nearest neighbour, reading `fill` outside.
pub fn resample_labels(src: &Volume<u8>, dst: &Geometry, fill: u8) -> Result<Volume<u8>> {
    let (m, t) = index_map(src.geometry(), dst);
    let s = dst.shape();
    let view = src.view();
    let mut out = Array3::<u8>::zeros((s[0], s[1], s[2]));
    Zip::indexed(&mut out).par_for_each(|(i, j, k), o| {
        let d = [i as f64, j as f64, k as f64];
        let mut p = t;
        for r in 0..3 {
            p[r] += m[r][0] * d[0] + m[r][1] * d[1] + m[r][2] * d[2];
        }
        *o = sample_nearest(&view, p, fill);
    });
    Volume::new(out, dst.clone()).map_err(|source| TrainError::Volume {
        context: "resampling a label map".into(),
        source,
    })
}

/// The grid covering the same field of view as `g` with the given spacing (mm): same axis
/// directions and same world position of voxel (0, 0, 0); the shape is the old extent
/// divided by the new spacing, rounded (at least 1).
pub fn geometry_with_spacing(g: &Geometry, spacing: [f64; 3]) -> Result<Geometry> {
    if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(TrainError::Config(format!(
            "target spacing {spacing:?} must be finite and > 0"
        )));
    }
    let old = g.spacing();
    let sh = g.shape();
    let mut shape = [0usize; 3];
    let mut a = g.affine();
    for c in 0..3 {
        shape[c] = ((sh[c] as f64 * old[c] / spacing[c]).round() as usize).max(1);
        let dir = g.axis_direction(c);
        for (r, d) in dir.iter().enumerate() {
            a[r][c] = d * spacing[c];
        }
    }
    Geometry::new(shape, a).map_err(|source| TrainError::Volume {
        context: format!("grid with spacing {spacing:?}"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    #[test]
    fn integer_floor_and_round_match_std() {
        let mut x = -1000.0f64;
        while x <= 1000.0 {
            for v in [
                x,
                x + 0.5,
                x - 0.5,
                x + 1e-12,
                x - 1e-12,
                0.49999999999999994,
                -0.0,
            ] {
                assert_eq!(floor_i64(v), v.floor() as i64, "floor {v}");
                assert_eq!(round_i64(v), v.round() as i64, "round {v}");
            }
            x += 0.37;
        }
    }

    /// `a` (standard layout: the samplers' fast path) and a bigger array whose even `i` planes
    /// hold the same values: sliced `[..;2, .., ..]` it is a strided view (the general path).
    fn standard_and_strided_twin() -> (Array3<f32>, Array3<f32>) {
        let a = Array3::from_shape_fn((7, 6, 5), |(i, j, k)| {
            ((i * 37 + j * 11 + k * 5) % 17) as f32 - 3.3
        });
        let big = Array3::from_shape_fn((14, 6, 5), |(i, j, k)| {
            if i % 2 == 0 {
                a[[i / 2, j, k]]
            } else {
                f32::NAN
            }
        });
        assert!(big.slice(ndarray::s![..;2, .., ..]).as_slice().is_none());
        (a, big)
    }

    #[test]
    fn fast_and_general_trilinear_paths_agree_bit_for_bit() {
        let (a, big) = standard_and_strided_twin();
        let strided = big.slice(ndarray::s![..;2, .., ..]);
        let mut n = 0;
        for i in 0..30 {
            for j in 0..13 {
                for k in 0..11 {
                    let p = [
                        i as f64 * 0.23 - 0.6,
                        j as f64 * 0.51 - 0.3,
                        k as f64 * 0.47 - 0.2,
                    ];
                    let fast = sample_linear(&a.view(), p, -9.0);
                    let slow = sample_linear(&strided, p, -9.0);
                    assert_eq!(fast.to_bits(), slow.to_bits(), "{p:?}");
                    n += 1;
                }
            }
        }
        assert_eq!(n, 30 * 13 * 11);
        // Far away or infinite positions read the fill value; NaN positions give NaN.
        assert_eq!(sample_linear(&a.view(), [1e300, 0.0, 0.0], -9.0), -9.0);
        assert_eq!(
            sample_linear(&a.view(), [f64::NEG_INFINITY, 0.0, 0.0], -9.0),
            -9.0
        );
        assert!(sample_linear(&a.view(), [f64::NAN, 0.0, 0.0], -9.0).is_nan());
        assert_eq!(
            sample_nearest(&a.view(), [f64::INFINITY, 0.0, 0.0], -9.0),
            -9.0
        );
        assert_eq!(sample_nearest(&a.view(), [f64::NAN, 0.0, 0.0], -9.0), -9.0);
    }

    #[test]
    fn linear_is_exact_on_grid_and_linear_between() {
        let a = Array3::from_shape_fn((4, 5, 6), |(i, j, k)| (i * 3 + 2 * j + k) as f32);
        let v = a.view();
        assert_eq!(sample_linear(&v, [1.0, 2.0, 3.0], -1.0), a[[1, 2, 3]]);
        // A linear function is reproduced exactly by trilinear interpolation.
        let x = sample_linear(&v, [1.25, 2.5, 3.75], -1.0);
        assert_abs_diff_eq!(x, 1.25 * 3.0 + 5.0 + 3.75, epsilon = 1e-5);
        // Outside reads the fill value.
        assert_eq!(sample_linear(&v, [-1.0, 0.0, 0.0], -7.0), -7.0);
        assert_abs_diff_eq!(sample_linear(&v, [-0.5, 0.0, 0.0], -8.0), -4.0);
        assert_eq!(sample_nearest(&v, [3.4, 4.4, 5.4], -1.0), a[[3, 4, 5]]);
        assert_eq!(sample_nearest(&v, [3.6, 0.0, 0.0], -1.0), -1.0);
    }

    /// A quadratic in all three indices (every monomial up to degree 2).
    fn quadratic(i: f64, j: f64, k: f64) -> f64 {
        0.05 * i * i - 0.03 * i * j + 0.02 * j * j + 0.04 * j * k - 0.06 * k * k
            + 0.01 * i * k
            + 0.7 * i
            - 0.4 * j
            + 0.3 * k
            + 2.0
    }

    #[test]
    fn cubic_is_exact_on_grid_and_reproduces_quadratics_inside() {
        let n = (9, 10, 11);
        let q = Array3::from_shape_fn(n, |(i, j, k)| {
            quadratic(i as f64, j as f64, k as f64) as f32
        });
        let lin = Array3::from_shape_fn(n, |(i, j, k)| {
            (0.7 * i as f64 - 0.4 * j as f64 + 0.3 * k as f64 + 2.0) as f32
        });
        // Exactly the voxel on the grid, edges and corners included.
        for a in [&q, &lin] {
            for ((i, j, k), v) in a.indexed_iter() {
                let p = [i as f64, j as f64, k as f64];
                assert_eq!(
                    sample_cubic(&a.view(), p, -5.0).to_bits(),
                    v.to_bits(),
                    "{p:?}"
                );
            }
        }
        // Between voxels, wherever all 64 taps are inside: polynomials of degree <= 2 exactly.
        let mut n_checked = 0;
        for i in 0..25 {
            for j in 0..23 {
                for k in 0..29 {
                    let p = [
                        1.0 + i as f64 * 0.2333,
                        1.0 + j as f64 * 0.2871,
                        1.0 + k as f64 * 0.2707,
                    ];
                    if (0..3).any(|a| p[a] >= [n.0, n.1, n.2][a] as f64 - 2.0) {
                        continue;
                    }
                    assert_abs_diff_eq!(
                        sample_cubic(&q.view(), p, -5.0) as f64,
                        quadratic(p[0], p[1], p[2]),
                        epsilon = 2e-5
                    );
                    assert_abs_diff_eq!(
                        sample_cubic(&lin.view(), p, -5.0) as f64,
                        0.7 * p[0] - 0.4 * p[1] + 0.3 * p[2] + 2.0,
                        epsilon = 2e-5
                    );
                    n_checked += 1;
                }
            }
        }
        assert!(n_checked > 5000, "{n_checked}");
        // A cubic is not reproduced (the kernel is exact up to degree 2 only): the test can fail.
        let c = Array3::from_shape_fn(n, |(i, _, _)| (i as f64).powi(3) as f32);
        assert!((sample_cubic(&c.view(), [3.25, 4.0, 4.0], 0.0) - 34.328125).abs() > 0.05);
    }

    #[test]
    fn fast_and_general_cubic_paths_agree_bit_for_bit() {
        let (a, big) = standard_and_strided_twin();
        let strided = big.slice(ndarray::s![..;2, .., ..]);
        for i in 0..40 {
            for j in 0..30 {
                for k in 0..25 {
                    let p = [
                        i as f64 * 0.23 - 1.6,
                        j as f64 * 0.27 - 1.3,
                        k as f64 * 0.29 - 1.2,
                    ];
                    let fast = sample_cubic(&a.view(), p, -9.0);
                    let slow = sample_cubic(&strided, p, -9.0);
                    assert_eq!(fast.to_bits(), slow.to_bits(), "{p:?}");
                }
            }
        }
    }

    #[test]
    fn cubic_is_symmetric_under_flips() {
        let n = [8usize, 7, 6];
        let a = Array3::from_shape_fn(n, |(i, j, k)| {
            (((i * 7919 + j * 104_729 + k * 1299) % 101) as f32) / 10.0
        });
        for ax in 0..3 {
            let mut f = a.clone();
            f.invert_axis(ndarray::Axis(ax));
            for s in 0..400 {
                // Inside, near the edges and up to a voxel outside.
                let p: [f64; 3] = std::array::from_fn(|b| {
                    -1.2 + ((s * (7 + 3 * b) + 11 * b) % 97) as f64 / 96.0 * (n[b] as f64 + 1.4)
                });
                let mut pf = p;
                pf[ax] = (n[ax] - 1) as f64 - p[ax];
                assert_abs_diff_eq!(
                    sample_cubic(&a.view(), p, 3.0),
                    sample_cubic(&f.view(), pf, 3.0),
                    epsilon = 1e-4
                );
            }
        }
    }

    #[test]
    fn cubic_reads_fill_outside_like_linear() {
        let a = Array3::from_shape_fn((5, 6, 7), |(i, j, k)| (i * 3 + 2 * j + k) as f32 + 1.0);
        let v = a.view();
        for p in [
            [-1.0, 2.0, 3.0],
            [5.0, 2.0, 3.0],
            [2.0, -3.5, 3.0],
            [2.0, 2.0, 7.2],
            [1e300, 0.0, 0.0],
            [f64::NEG_INFINITY, 0.0, 0.0],
        ] {
            assert_eq!(sample_cubic(&v, p, -7.0), -7.0, "{p:?}");
        }
        assert!(sample_cubic(&v, [0.0, f64::NAN, 0.0], -7.0).is_nan());
        let empty = Array3::<f32>::zeros((0, 3, 3));
        assert_eq!(sample_cubic(&empty.view(), [0.0; 3], -7.0), -7.0);
        // Less than a voxel outside (grid positions on the other axes): the same blend of the
        // edge value and `fill` as trilinear interpolation.
        for p in [
            [-0.5, 2.0, 3.0],
            [4.25, 0.0, 6.0],
            [-0.3, -0.6, 2.0],
            [4.9, 5.1, 6.5],
        ] {
            assert_abs_diff_eq!(
                sample_cubic(&v, p, -7.0),
                sample_linear(&v, p, -7.0),
                epsilon = 1e-5
            );
        }
        assert_abs_diff_eq!(sample_cubic(&v, [-0.5, 0.0, 0.0], -7.0), -3.0);
        // Continuous across the extent; inside, near the edge, no fill leaks in (clamped taps).
        let inner = sample_cubic(&v, [0.0, 2.5, 3.0], -7.0);
        assert_abs_diff_eq!(
            sample_cubic(&v, [-1e-9, 2.5, 3.0], -7.0),
            inner,
            epsilon = 1e-5
        );
        // Taps 1, 1 (clamped), 4, 7 with weights (-1, 9, 9, -1) / 16.
        assert_eq!(sample_cubic(&v, [0.5, 0.0, 0.0], -1e6), 2.3125);
        assert_eq!(sample_cubic(&v, [0.5, 0.0, 0.0], 0.0), 2.3125);
    }

    #[test]
    fn resample_halves_and_back() {
        let g = Geometry::from_spacing([8, 6, 4], [0.5, 0.5, 1.0]).unwrap();
        let img = Volume::new(
            Array3::from_shape_fn((8, 6, 4), |(i, j, k)| (i + j + k) as f32),
            g.clone(),
        )
        .unwrap();
        let g2 = geometry_with_spacing(&g, [1.0, 1.0, 1.0]).unwrap();
        assert_eq!(g2.shape(), [4, 3, 4]);
        let r = resample_image(&img, &g2, Interpolation::Linear, 0.0).unwrap();
        // Voxel (1, 1, 1) of the coarse grid is voxel (2, 2, 1) of the fine one.
        assert_abs_diff_eq!(r.data()[[1, 1, 1]], 5.0, epsilon = 1e-5);
        let lab = img.map(|v| (*v as u32 % 3) as u8);
        let rl = resample_labels(&lab, &g2, 0).unwrap();
        assert_eq!(rl.data()[[1, 1, 1]], lab.data()[[2, 2, 1]]);
        // Same grid: identity.
        let same = resample_image(&img, &g, Interpolation::Linear, 0.0).unwrap();
        assert_eq!(same.data(), img.data());
    }
}
