//! Voxel interpolation (trilinear for images, nearest for labels) and resampling between
//! grids through their world coordinates.

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

    #[test]
    fn fast_and_general_trilinear_paths_agree_bit_for_bit() {
        // `a` is standard layout (fast path); the same values seen through a strided view of a
        // bigger array take the general path.
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
        let strided = big.slice(ndarray::s![..;2, .., ..]);
        assert!(strided.as_slice().is_none());
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
