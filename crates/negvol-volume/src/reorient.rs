//! Exact reorientation: permuting and flipping voxel axes so that a volume's axes point in
//! the directions named by an orientation code (`"RAS"`, `"LPS"`, ...), with the affine
//! updated so every voxel keeps its world position. No interpolation.

use ndarray::{Array3, ArrayView3, Axis};

use crate::{Geometry, Result, Volume, VolumeError};

/// A permutation and flip of voxel axes: new axis `a` is old axis `perm[a]`, reversed if
/// `flip[a]`. Obtained from [`AxisTransform::to_code`]; applied to volumes, bare arrays (e.g.
/// network outputs computed in RAS) and geometries; [`AxisTransform::inverse`] undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct AxisTransform {
    /// Old axis read by each new axis.
    pub perm: [usize; 3],
    /// Whether each new axis runs backwards along its old axis.
    pub flip: [bool; 3],
}

/// Parse an orientation code such as `"RAS"` or `"lps"` into, per voxel axis, the world axis
/// (0 = R/L, 1 = A/P, 2 = S/I) and the sign (+1 for R, A, S).
pub fn parse_orientation_code(code: &str) -> Result<([usize; 3], [f64; 3])> {
    let chars: Vec<char> = code.chars().collect();
    let bad = || {
        VolumeError::InvalidArgument(format!(
            "orientation code {code:?} must be three letters naming each of R/L, A/P, S/I once (e.g. \"RAS\", \"LPS\")"
        ))
    };
    if chars.len() != 3 {
        return Err(bad());
    }
    let mut world = [0usize; 3];
    let mut sign = [0f64; 3];
    let mut seen = [false; 3];
    for (a, c) in chars.iter().enumerate() {
        let (w, s) = match c.to_ascii_uppercase() {
            'R' => (0, 1.0),
            'L' => (0, -1.0),
            'A' => (1, 1.0),
            'P' => (1, -1.0),
            'S' => (2, 1.0),
            'I' => (2, -1.0),
            _ => return Err(bad()),
        };
        if seen[w] {
            return Err(bad());
        }
        seen[w] = true;
        world[a] = w;
        sign[a] = s;
    }
    Ok((world, sign))
}

impl AxisTransform {
    /// The identity.
    pub const IDENTITY: AxisTransform = AxisTransform {
        perm: [0, 1, 2],
        flip: [false; 3],
    };

    /// The transform that makes a grid with geometry `from` have orientation `code`.
    pub fn to_code(from: &Geometry, code: &str) -> Result<Self> {
        let (want_w, want_s) = parse_orientation_code(code)?;
        let (have_w, have_s) = from.axis_assignment();
        let mut perm = [0; 3];
        let mut flip = [false; 3];
        for a in 0..3 {
            // `have_w` is a permutation, so exactly one old axis matches.
            let b = (0..3).find(|&b| have_w[b] == want_w[a]).unwrap_or(a);
            perm[a] = b;
            flip[a] = have_s[b] != want_s[a];
        }
        Ok(Self { perm, flip })
    }

    /// Whether this transform changes nothing.
    pub fn is_identity(&self) -> bool {
        *self == Self::IDENTITY
    }

    /// The transform that undoes this one.
    pub fn inverse(&self) -> Self {
        let mut perm = [0; 3];
        let mut flip = [false; 3];
        for a in 0..3 {
            perm[self.perm[a]] = a;
            flip[self.perm[a]] = self.flip[a];
        }
        Self { perm, flip }
    }

    /// Shape after the transform.
    pub fn shape(&self, old: [usize; 3]) -> [usize; 3] {
        [old[self.perm[0]], old[self.perm[1]], old[self.perm[2]]]
    }

    /// Old voxel index of new voxel index `n` (grid of old shape `old`).
    pub fn old_index(&self, n: [usize; 3], old: [usize; 3]) -> [usize; 3] {
        let mut o = [0; 3];
        for a in 0..3 {
            let b = self.perm[a];
            o[b] = if self.flip[a] {
                old[b] - 1 - n[a]
            } else {
                n[a]
            };
        }
        o
    }

    /// The geometry after the transform: same world positions for the same voxels.
    pub fn apply_geometry(&self, g: &Geometry) -> Result<Geometry> {
        let old = g.shape();
        let a = g.affine();
        let mut out = [[0.0; 4]; 4];
        out[3][3] = 1.0;
        let mut t = [0.0f64; 3];
        for c in 0..3 {
            let b = self.perm[c];
            let s = if self.flip[c] { -1.0 } else { 1.0 };
            for r in 0..3 {
                out[r][c] = s * a[r][b];
            }
            if self.flip[c] {
                t[b] = (old[b] - 1) as f64;
            }
        }
        for r in 0..3 {
            out[r][3] = a[r][3] + a[r][0] * t[0] + a[r][1] * t[1] + a[r][2] * t[2];
        }
        Geometry::new(self.shape(old), out)
    }

    /// The array after the transform (standard layout).
    pub fn apply_array<T: Clone>(&self, a: ArrayView3<'_, T>) -> Array3<T> {
        let mut v = a.permuted_axes(self.perm);
        for ax in 0..3 {
            if self.flip[ax] {
                v.invert_axis(Axis(ax));
            }
        }
        v.as_standard_layout().into_owned()
    }

    /// The volume after the transform.
    pub fn apply<T: Clone>(&self, vol: &Volume<T>) -> Result<Volume<T>> {
        let g = self.apply_geometry(vol.geometry())?;
        Volume::new(self.apply_array(vol.view()), g)
    }
}

/// Reorient a volume (exactly: axis permutation and flips, no interpolation) so that its
/// orientation code is `code`; every voxel keeps its value and its world position.
///
/// To go back, reorient to the original code, or keep the [`AxisTransform`] and apply its
/// inverse (also to arrays computed in the new orientation, e.g. predictions).
///
/// ```
/// use negvol_volume::{reorient, Geometry, Volume};
/// let a = [[-0.5, 0.0, 0.0, 10.0], [0.0, -0.5, 0.0, 20.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
/// let g = Geometry::new([4, 3, 2], a).unwrap();
/// let v = Volume::new(ndarray::Array3::from_shape_fn((4, 3, 2), |(i, j, k)| (100 * i + 10 * j + k) as i32), g).unwrap();
/// let ras = reorient(&v, "RAS").unwrap();
/// assert_eq!(ras.geometry().orientation_code(), "RAS");
/// // Voxel (0, 0, 0) of the RAS volume is the old voxel (3, 2, 0), at the same world point.
/// assert_eq!(ras.data()[[0, 0, 0]], 320);
/// assert_eq!(ras.geometry().voxel_to_world([0.0; 3]), v.geometry().voxel_to_world([3.0, 2.0, 0.0]));
/// let back = reorient(&ras, "LPS").unwrap();
/// assert_eq!(back.data(), v.data());
/// ```
pub fn reorient<T: Clone>(vol: &Volume<T>, code: &str) -> Result<Volume<T>> {
    AxisTransform::to_code(vol.geometry(), code)?.apply(vol)
}

/// [`reorient`] to `"RAS"`, also returning the transform (whose inverse restores the original
/// orientation).
pub fn reorient_to_ras<T: Clone>(vol: &Volume<T>) -> Result<(Volume<T>, AxisTransform)> {
    let t = AxisTransform::to_code(vol.geometry(), "RAS")?;
    Ok((t.apply(vol)?, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    fn oblique(shape: [usize; 3]) -> Geometry {
        // Rotated ~20 degrees about z and ~10 about x, then axes permuted to "ASL"-ish.
        let (c, s) = (0.35f64.cos(), 0.35f64.sin());
        let (c2, s2) = (0.17f64.cos(), 0.17f64.sin());
        let r = [[c, -s, 0.0], [s * c2, c * c2, -s2], [s * s2, c * s2, c2]];
        // columns: axis0 -> +A-ish (r col 1), axis1 -> -S-ish (-r col 2), axis2 -> -R-ish.
        let cols = [
            [r[0][1], r[1][1], r[2][1]],
            [-r[0][2], -r[1][2], -r[2][2]],
            [-r[0][0], -r[1][0], -r[2][0]],
        ];
        let sp = [0.5, 0.7, 1.1];
        let mut a = [[0.0; 4]; 4];
        for c in 0..3 {
            for r in 0..3 {
                a[r][c] = cols[c][r] * sp[c];
            }
        }
        a[0][3] = 3.0;
        a[1][3] = -4.0;
        a[2][3] = 50.0;
        a[3][3] = 1.0;
        Geometry::new(shape, a).unwrap()
    }

    #[test]
    fn parse_codes() {
        assert!(parse_orientation_code("RAS").is_ok());
        assert!(parse_orientation_code("lpi").is_ok());
        for bad in ["", "RA", "RASS", "RAR", "XYZ", "RLS"] {
            assert!(
                matches!(
                    parse_orientation_code(bad),
                    Err(VolumeError::InvalidArgument(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_target_code_keeps_world_positions() {
        let g = oblique([3, 4, 5]);
        assert_eq!(g.orientation_code(), "AIL");
        let v = Volume::new(
            Array3::from_shape_fn((3, 4, 5), |(i, j, k)| (100 * i + 10 * j + k) as u16),
            g.clone(),
        )
        .unwrap();
        let letters = [['R', 'L'], ['A', 'P'], ['S', 'I']];
        let perms = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for p in perms {
            for f in 0..8 {
                let code: String = (0..3).map(|a| letters[p[a]][(f >> a) & 1]).collect();
                let t = AxisTransform::to_code(&g, &code).unwrap();
                let r = t.apply(&v).unwrap();
                assert_eq!(r.geometry().orientation_code(), code);
                assert_abs_diff_eq!(
                    r.geometry().voxel_volume_mm3(),
                    g.voxel_volume_mm3(),
                    epsilon = 1e-12
                );
                for ((i, j, k), x) in r.data().indexed_iter() {
                    let o = t.old_index([i, j, k], g.shape());
                    assert_eq!(*x, v.data()[o]);
                    let w1 = r.geometry().voxel_to_world([i as f64, j as f64, k as f64]);
                    let w0 = g.voxel_to_world([o[0] as f64, o[1] as f64, o[2] as f64]);
                    for a in 0..3 {
                        assert_abs_diff_eq!(w1[a], w0[a], epsilon = 1e-9);
                    }
                }
                let back = t.inverse().apply(&r).unwrap();
                assert_eq!(back.data(), v.data());
                back.geometry().check_same(&g, 1e-9).unwrap();
                let back2 = reorient(&r, "AIL").unwrap();
                assert_eq!(back2.data(), v.data());
            }
        }
    }

    #[test]
    fn ras_helper_and_identity() {
        let g = Geometry::from_spacing([2, 3, 4], [1.0, 2.0, 3.0]).unwrap();
        let v = Volume::<u8>::zeros(g);
        let (r, t) = reorient_to_ras(&v).unwrap();
        assert!(t.is_identity());
        assert_eq!(r, v);
        assert!(reorient(&v, "RAR").is_err());
    }
}
