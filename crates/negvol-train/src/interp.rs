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

/// Trilinear interpolation of `src` at fractional index `p`; corners outside the array read
/// `fill`. At integer positions inside the array this returns the voxel value exactly.
#[inline]
pub fn sample_linear(src: &ArrayView3<'_, f32>, p: [f64; 3], fill: f32) -> f32 {
    let sh = src.shape();
    let f = [p[0].floor(), p[1].floor(), p[2].floor()];
    let t = [p[0] - f[0], p[1] - f[1], p[2] - f[2]];
    let b = [f[0] as i64, f[1] as i64, f[2] as i64];
    // Fast path: fully inside.
    let inside = (0..3).all(|a| b[a] >= 0 && b[a] + 1 < sh[a] as i64);
    let mut acc = 0.0f64;
    for (dx, wx) in [(0i64, 1.0 - t[0]), (1, t[0])] {
        if wx == 0.0 {
            continue;
        }
        for (dy, wy) in [(0i64, 1.0 - t[1]), (1, t[1])] {
            if wy == 0.0 {
                continue;
            }
            for (dz, wz) in [(0i64, 1.0 - t[2]), (1, t[2])] {
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
/// outside the array returns `fill`.
#[inline]
pub fn sample_nearest<T: Copy>(src: &ArrayView3<'_, T>, p: [f64; 3], fill: T) -> T {
    let sh = src.shape();
    let mut idx = [0usize; 3];
    for a in 0..3 {
        let r = p[a].round();
        if !(r >= 0.0 && r < sh[a] as f64) {
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
