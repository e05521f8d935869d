//! Resampling a volume onto another grid (trilinear for images, nearest for labels).
//!
//! Convention: a voxel value is the sample at the voxel's centre; a grid covers its field of
//! view from half a voxel before its first centre to half a voxel after its last. A target
//! voxel whose centre lies outside the source's field of view gets the fill value; inside it,
//! samples beyond the outermost centres repeat the edge value (no fading to the fill value
//! inside the image).

use ndarray::parallel::prelude::*;
use ndarray::{Array3, Axis};

use crate::{Geometry, NiftiScalar, Result, Volume, VolumeError};

/// Interpolation used by [`resample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Interpolation {
    /// Nearest voxel centre (for label maps and masks; ties go to the higher index).
    Nearest,
    /// Trilinear (for images). Integer types round to nearest; `bool` becomes
    /// `interpolated >= 0.5`, i.e. linear interpolation of the 0/1 mask then threshold.
    Linear,
}

/// The grid with the given spacing that covers the same field of view as `g`, with the
/// same centre and axis directions: `n' = max(1, round(n * s / s'))` voxels per axis,
/// centred on `g`'s field-of-view centre (the SimpleITK/nnU-Net "same physical extent"
/// convention, up to the rounding of `n'`).
///
/// ```
/// let g = negvol_volume::Geometry::from_spacing([10, 10, 5], [0.5, 0.5, 2.0]).unwrap();
/// let h = negvol_volume::spacing_geometry(&g, [1.0, 1.0, 1.0]).unwrap();
/// assert_eq!(h.shape(), [5, 5, 10]);
/// assert_eq!(h.center_world(), g.center_world());
/// ```
pub fn spacing_geometry(g: &Geometry, spacing: [f64; 3]) -> Result<Geometry> {
    if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(VolumeError::InvalidArgument(format!(
            "target spacing {spacing:?} must be finite and positive"
        )));
    }
    let old = g.spacing();
    let shape = g.shape();
    let a = g.affine();
    let mut new_shape = [0usize; 3];
    let mut out = [[0.0; 4]; 4];
    out[3][3] = 1.0;
    let mut start = [0.0; 3]; // first new centre, in old index units
    for ax in 0..3 {
        let extent = shape[ax] as f64 * old[ax];
        let n = (extent / spacing[ax]).round().max(1.0);
        if n > (1u64 << 31) as f64 {
            return Err(VolumeError::InvalidArgument(format!(
                "target spacing {spacing:?} gives {n} voxels along axis {ax}"
            )));
        }
        new_shape[ax] = n as usize;
        let ratio = spacing[ax] / old[ax];
        start[ax] = (shape[ax] as f64 - 1.0) / 2.0 - (n - 1.0) / 2.0 * ratio;
        for r in 0..3 {
            out[r][ax] = a[r][ax] * ratio;
        }
    }
    let o = g.voxel_to_world(start);
    for r in 0..3 {
        out[r][3] = o[r];
    }
    Geometry::new(new_shape, out)
}

/// Resample onto the grid of [`spacing_geometry`] (same field of view, new spacing).
///
/// ```
/// use negvol_volume::{resample_to_spacing, Geometry, Interpolation, Volume};
/// let g = Geometry::from_spacing([4, 4, 4], [1.0; 3]).unwrap();
/// let v = Volume::new(ndarray::Array3::from_shape_fn((4, 4, 4), |(i, _, _)| i as f32), g).unwrap();
/// let up = resample_to_spacing(&v, [0.5, 1.0, 1.0], Interpolation::Linear).unwrap();
/// assert_eq!(up.geometry().shape(), [8, 4, 4]);
/// assert_eq!(up.data()[[3, 0, 0]], 1.25); // centre at old index 1.25
/// ```
pub fn resample_to_spacing<T: NiftiScalar>(
    vol: &Volume<T>,
    spacing: [f64; 3],
    interpolation: Interpolation,
) -> Result<Volume<T>> {
    let target = spacing_geometry(vol.geometry(), spacing)?;
    resample(vol, &target, interpolation, T::default())
}

/// Resample `vol` onto an arbitrary `target` grid (any orientation, spacing and shape): each
/// target voxel centre is mapped to the source through both affines and interpolated there;
/// centres outside the source's field of view get `fill`.
pub fn resample<T: NiftiScalar>(
    vol: &Volume<T>,
    target: &Geometry,
    interpolation: Interpolation,
    fill: T,
) -> Result<Volume<T>> {
    let src = vol.geometry();
    let n = src.shape();
    // Target index -> source index: M * ijk + t.
    let o = src.world_to_voxel(target.voxel_to_world([0.0; 3]));
    let mut m = [[0.0; 3]; 3];
    for c in 0..3 {
        let mut e = [0.0; 3];
        e[c] = 1.0;
        let p = src.world_to_voxel(target.voxel_to_world(e));
        for r in 0..3 {
            m[r][c] = p[r] - o[r];
        }
    }
    if m.iter().flatten().chain(o.iter()).any(|v| !v.is_finite()) {
        return Err(VolumeError::InvalidArgument(
            "resampling transform is not finite".into(),
        ));
    }
    let ts = target.shape();
    let mut out = Array3::from_elem((ts[0], ts[1], ts[2]), fill);
    let data = vol.data();
    let nf = [n[0] as f64, n[1] as f64, n[2] as f64];
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut plane)| {
            for j in 0..ts[1] {
                for k in 0..ts[2] {
                    let (fi, fj, fk) = (i as f64, j as f64, k as f64);
                    let mut x = [0.0; 3];
                    for r in 0..3 {
                        x[r] = m[r][0] * fi + m[r][1] * fj + m[r][2] * fk + o[r];
                    }
                    // Outside the field of view (with a tolerance for rounding).
                    if (0..3).any(|a| x[a] < -0.5 - 1e-9 || x[a] > nf[a] - 0.5 + 1e-9) {
                        continue;
                    }
                    let v = match interpolation {
                        Interpolation::Nearest => {
                            let mut idx = [0usize; 3];
                            for a in 0..3 {
                                let r = (x[a] + 0.5 + 1e-9).floor();
                                idx[a] = r.clamp(0.0, nf[a] - 1.0) as usize;
                            }
                            data[idx]
                        }
                        Interpolation::Linear => {
                            let mut i0 = [0usize; 3];
                            let mut w = [0.0f64; 3];
                            for a in 0..3 {
                                let xc = x[a].clamp(0.0, nf[a] - 1.0);
                                let f = xc.floor();
                                let base = (f as usize).min(n[a].saturating_sub(2));
                                i0[a] = base;
                                w[a] = if n[a] == 1 { 0.0 } else { xc - base as f64 };
                            }
                            let mut acc = 0.0;
                            for c in 0..8 {
                                let mut idx = i0;
                                let mut wt = 1.0;
                                for a in 0..3 {
                                    if c >> a & 1 == 1 {
                                        if w[a] == 0.0 {
                                            wt = 0.0;
                                            break;
                                        }
                                        idx[a] += 1;
                                        wt *= w[a];
                                    } else {
                                        wt *= 1.0 - w[a];
                                    }
                                }
                                if wt != 0.0 {
                                    acc += wt * data[idx].to_f64();
                                }
                            }
                            T::from_interpolated(acc)
                        }
                    };
                    plane[[j, k]] = v;
                }
            }
        });
    Volume::new(out, target.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    fn lin(p: [f64; 3]) -> f64 {
        0.3 * p[0] - 1.7 * p[1] + 0.25 * p[2] + 4.0
    }

    fn oblique() -> Geometry {
        let (c, s) = (0.3f64.cos(), 0.3f64.sin());
        Geometry::new(
            [12, 10, 9],
            [
                [-0.8 * c, 0.9 * s, 0.0, 5.0],
                [-0.8 * s, -0.9 * c, 0.0, 2.0],
                [0.0, 0.0, 1.2, -3.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        )
        .unwrap()
    }

    #[test]
    fn linear_reproduces_linear_functions_in_world_space() {
        let g = oblique();
        let s = g.shape();
        let v = Volume::new(
            Array3::from_shape_fn((s[0], s[1], s[2]), |(i, j, k)| {
                lin(g.voxel_to_world([i as f64, j as f64, k as f64]))
            }),
            g.clone(),
        )
        .unwrap();
        // A target grid in another orientation (RAS, 0.6 mm) around the source centre.
        let c = g.center_world();
        let t = Geometry::new(
            [8, 8, 8],
            [
                [0.6, 0.0, 0.0, c[0] - 2.1],
                [0.0, 0.6, 0.0, c[1] - 2.1],
                [0.0, 0.0, 0.6, c[2] - 2.1],
                [0.0, 0.0, 0.0, 1.0],
            ],
        )
        .unwrap();
        let r = resample(&v, &t, Interpolation::Linear, f64::NAN).unwrap();
        for ((i, j, k), x) in r.data().indexed_iter() {
            let w = t.voxel_to_world([i as f64, j as f64, k as f64]);
            assert_abs_diff_eq!(*x, lin(w), epsilon = 1e-9);
        }
        // Far away: fill.
        let far = Geometry::from_spacing([2, 2, 2], [1.0; 3]).unwrap();
        let far = Geometry::new(
            far.shape(),
            [
                [1.0, 0.0, 0.0, 500.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        )
        .unwrap();
        let r = resample(&v, &far, Interpolation::Linear, -7.0).unwrap();
        assert!(r.data().iter().all(|&x| x == -7.0));
    }

    #[test]
    fn identity_and_nearest_round_trip() {
        let g = oblique();
        let s = g.shape();
        let labels = Volume::new(
            Array3::from_shape_fn((s[0], s[1], s[2]), |(i, j, k)| {
                ((i * 7 + j * 3 + k) % 5) as u8
            }),
            g.clone(),
        )
        .unwrap();
        let same = resample(&labels, &g, Interpolation::Nearest, 0).unwrap();
        assert_eq!(same.data(), labels.data());
        let same = resample(&labels, &g, Interpolation::Linear, 0).unwrap();
        assert_eq!(same.data(), labels.data());
        let sp = g.spacing();
        let up = resample_to_spacing(
            &labels,
            [sp[0] / 2.0, sp[1] / 2.0, sp[2] / 2.0],
            Interpolation::Nearest,
        )
        .unwrap();
        assert_eq!(up.geometry().shape(), [24, 20, 18]);
        let down = resample_to_spacing(&up, sp, Interpolation::Nearest).unwrap();
        down.geometry().check_same(&g, 1e-9).unwrap();
        assert_eq!(down.data(), labels.data());
        // Label values are never invented.
        assert!(up.data().iter().all(|&x| x < 5));
    }

    #[test]
    fn spacing_geometry_keeps_centre_and_extent() {
        let g = oblique();
        let h = spacing_geometry(&g, [0.5, 0.5, 0.5]).unwrap();
        assert_eq!(h.shape(), [19, 18, 22]); // round(12*0.8/0.5)=19, 10*0.9/0.5=18, 9*1.2/0.5=21.6
        let (c0, c1) = (g.center_world(), h.center_world());
        for a in 0..3 {
            assert_abs_diff_eq!(c0[a], c1[a], epsilon = 1e-9);
        }
        assert_eq!(h.orientation_code(), g.orientation_code());
        for a in 0..3 {
            assert_abs_diff_eq!(h.spacing()[a], 0.5, epsilon = 1e-12);
        }
        assert!(spacing_geometry(&g, [0.0, 1.0, 1.0]).is_err());
        assert!(spacing_geometry(&g, [f64::NAN, 1.0, 1.0]).is_err());
    }

    #[test]
    fn masks_resample_by_linear_threshold() {
        let g = Geometry::from_spacing([8, 8, 8], [1.0; 3]).unwrap();
        let m = Volume::new(
            Array3::from_shape_fn((8, 8, 8), |(i, j, k)| {
                let d = |x: usize| x as f64 - 3.5;
                d(i).powi(2) + d(j).powi(2) + d(k).powi(2) < 9.0
            }),
            g,
        )
        .unwrap();
        let up = resample_to_spacing(&m, [0.5; 3], Interpolation::Linear).unwrap();
        let vol_a = m.data().iter().filter(|&&b| b).count() as f64;
        let vol_b = up.data().iter().filter(|&&b| b).count() as f64 * 0.125;
        assert!((vol_a - vol_b).abs() / vol_a < 0.1, "{vol_a} vs {vol_b}");
    }
}
