//! The geometry of a voxel grid: shape, spacing and voxel-to-world affine.

use serde::{Deserialize, Serialize};

use crate::{Result, VolumeError};

/// Shape, spacing and orientation of a 3D voxel grid.
///
/// `affine` maps voxel indices `(i, j, k, 1)` to RAS+ world millimetres (NIfTI convention:
/// sform if set, else qform, else spacing only). `spacing[a]` is the length of the affine's
/// column `a`, so it always agrees with the affine.
///
/// Invariants (checked by every constructor): every dimension is at least 1, spacing is
/// finite and positive, the affine is finite, has last row `[0, 0, 0, 1]` and is invertible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    shape: [usize; 3],
    spacing: [f64; 3],
    affine: [[f64; 4]; 4],
}

impl Geometry {
    /// A grid with the given spacing (mm), axes aligned with RAS+, origin at voxel (0, 0, 0).
    ///
    /// ```
    /// let g = negvol_volume::Geometry::from_spacing([2, 2, 2], [1.0, 1.0, 2.0]).unwrap();
    /// assert_eq!(g.orientation_code(), "RAS");
    /// ```
    pub fn from_spacing(shape: [usize; 3], spacing: [f64; 3]) -> Result<Self> {
        let mut affine = [[0.0; 4]; 4];
        for a in 0..3 {
            affine[a][a] = spacing[a];
        }
        affine[3][3] = 1.0;
        Self::new(shape, affine)
    }

    /// A grid from a full 4x4 voxel-to-world affine (row-major; `affine[r][c]`).
    /// The spacing is derived from the column norms of the affine's 3x3 part.
    ///
    /// ```
    /// // LPS-oriented grid (as DICOM would give), 0.5 mm isotropic.
    /// let a = [[-0.5, 0.0, 0.0, 10.0], [0.0, -0.5, 0.0, 20.0], [0.0, 0.0, 0.5, -5.0], [0.0, 0.0, 0.0, 1.0]];
    /// let g = negvol_volume::Geometry::new([10, 10, 10], a).unwrap();
    /// assert_eq!(g.orientation_code(), "LPS");
    /// assert_eq!(g.spacing(), [0.5, 0.5, 0.5]);
    /// ```
    pub fn new(shape: [usize; 3], affine: [[f64; 4]; 4]) -> Result<Self> {
        if shape.contains(&0) {
            return Err(VolumeError::InvalidGeometry(format!(
                "shape {shape:?} has a zero dimension"
            )));
        }
        if shape
            .iter()
            .try_fold(1usize, |acc, &n| acc.checked_mul(n))
            .is_none()
        {
            return Err(VolumeError::InvalidGeometry(format!(
                "shape {shape:?} overflows the number of voxels"
            )));
        }
        if affine.iter().flatten().any(|v| !v.is_finite()) {
            return Err(VolumeError::InvalidGeometry(format!(
                "affine has a non-finite entry: {affine:?}"
            )));
        }
        if affine[3] != [0.0, 0.0, 0.0, 1.0] {
            return Err(VolumeError::InvalidGeometry(format!(
                "affine last row must be [0, 0, 0, 1], got {:?}",
                affine[3]
            )));
        }
        let mut spacing = [0.0; 3];
        for (c, s) in spacing.iter_mut().enumerate() {
            *s = (0..3)
                .map(|r| affine[r][c] * affine[r][c])
                .sum::<f64>()
                .sqrt();
            if !(s.is_finite() && *s > 0.0) {
                return Err(VolumeError::InvalidGeometry(format!(
                    "voxel axis {c} has spacing {s} (must be finite and > 0)"
                )));
            }
        }
        let det = det3(&linear(&affine));
        if det.abs() < 1e-12 * spacing.iter().product::<f64>() {
            return Err(VolumeError::InvalidGeometry(format!(
                "affine is singular (det {det}): {affine:?}"
            )));
        }
        Ok(Self {
            shape,
            spacing,
            affine,
        })
    }

    /// `[ni, nj, nk]`.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Voxel size `[si, sj, sk]` in mm.
    pub fn spacing(&self) -> [f64; 3] {
        self.spacing
    }

    /// The 4x4 voxel-to-world (RAS+ mm) affine, row-major.
    pub fn affine(&self) -> [[f64; 4]; 4] {
        self.affine
    }

    /// Number of voxels `ni * nj * nk`.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Always false: a geometry has at least one voxel. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Physical volume of one voxel in mm^3 (absolute determinant of the affine's 3x3 part).
    pub fn voxel_volume_mm3(&self) -> f64 {
        det3(&linear(&self.affine)).abs()
    }

    /// World (RAS+ mm) position of a (possibly fractional) voxel index.
    pub fn voxel_to_world(&self, ijk: [f64; 3]) -> [f64; 3] {
        let a = &self.affine;
        let mut out = [0.0; 3];
        for (r, o) in out.iter_mut().enumerate() {
            *o = a[r][0] * ijk[0] + a[r][1] * ijk[1] + a[r][2] * ijk[2] + a[r][3];
        }
        out
    }

    /// Fractional voxel index of a world (RAS+ mm) position (inverse of [`Self::voxel_to_world`]).
    pub fn world_to_voxel(&self, xyz: [f64; 3]) -> [f64; 3] {
        let m = linear(&self.affine);
        let inv = inv3(&m);
        let d = [
            xyz[0] - self.affine[0][3],
            xyz[1] - self.affine[1][3],
            xyz[2] - self.affine[2][3],
        ];
        let mut out = [0.0; 3];
        for (r, o) in out.iter_mut().enumerate() {
            *o = inv[r][0] * d[0] + inv[r][1] * d[1] + inv[r][2] * d[2];
        }
        out
    }

    /// World direction (unit vector) of voxel axis `axis` (0, 1 or 2), in RAS+.
    pub fn axis_direction(&self, axis: usize) -> [f64; 3] {
        let s = self.spacing[axis];
        [
            self.affine[0][axis] / s,
            self.affine[1][axis] / s,
            self.affine[2][axis] / s,
        ]
    }

    /// The voxel axis closest to a world direction and the sign (+1 or -1) with which
    /// increasing that index moves along it.
    pub fn axis_closest_to(&self, world_dir: [f64; 3]) -> (usize, f64) {
        let mut best = (0, 1.0, -1.0);
        for a in 0..3 {
            let d = self.axis_direction(a);
            let dot = d[0] * world_dir[0] + d[1] * world_dir[1] + d[2] * world_dir[2];
            if dot.abs() > best.2 {
                best = (a, dot.signum(), dot.abs());
            }
        }
        (best.0, best.1)
    }

    /// The voxel axis closest to superior (RAS+ `+S`) and its sign.
    pub fn superior_axis(&self) -> (usize, f64) {
        self.axis_closest_to([0.0, 0.0, 1.0])
    }

    /// The voxel axis closest to the patient's left and its sign. In RAS+ world coordinates
    /// `+x` points to the patient's right, so patient-left is world `-x`.
    pub fn left_axis(&self) -> (usize, f64) {
        self.axis_closest_to([-1.0, 0.0, 0.0])
    }

    /// Three-letter orientation code (e.g. `"RAS"`, `"LPS"`): for each voxel axis, the
    /// anatomical direction that increasing index points to (nibabel's `aff2axcodes`
    /// convention). For oblique grids the axes are matched to world axes as a whole (the
    /// permutation with the largest summed |cosine|), so the code always names each world
    /// axis exactly once, even for 45-degree obliques.
    ///
    /// ```
    /// let g = negvol_volume::Geometry::from_spacing([2, 2, 2], [1.0, -1.0, 1.0]).unwrap();
    /// assert_eq!(g.orientation_code(), "RPS");
    /// ```
    pub fn orientation_code(&self) -> String {
        let (world, sign) = self.axis_assignment();
        let mut code = String::with_capacity(3);
        for a in 0..3 {
            let pos = sign[a] > 0.0;
            code.push(match (world[a], pos) {
                (0, true) => 'R',
                (0, false) => 'L',
                (1, true) => 'A',
                (1, false) => 'P',
                (2, true) => 'S',
                _ => 'I',
            });
        }
        code
    }

    /// For each voxel axis, the world axis (0 = x/R, 1 = y/A, 2 = z/S) it is matched to and
    /// the sign (+1 or -1) of that match: the axis permutation that maximises the summed
    /// absolute direction cosines (ties broken towards the identity).
    pub fn axis_assignment(&self) -> ([usize; 3], [f64; 3]) {
        const PERMS: [[usize; 3]; 6] = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        let d = [
            self.axis_direction(0),
            self.axis_direction(1),
            self.axis_direction(2),
        ];
        let mut best = (PERMS[0], f64::NEG_INFINITY);
        for p in PERMS {
            let score: f64 = (0..3).map(|a| d[a][p[a]].abs()).sum();
            if score > best.1 + 1e-12 {
                best = (p, score);
            }
        }
        let p = best.0;
        let sign = [
            if d[0][p[0]] >= 0.0 { 1.0 } else { -1.0 },
            if d[1][p[1]] >= 0.0 { 1.0 } else { -1.0 },
            if d[2][p[2]] >= 0.0 { 1.0 } else { -1.0 },
        ];
        (p, sign)
    }

    /// World position (RAS+ mm) of the centre of the grid's field of view.
    pub fn center_world(&self) -> [f64; 3] {
        let s = self.shape;
        self.voxel_to_world([
            (s[0] as f64 - 1.0) / 2.0,
            (s[1] as f64 - 1.0) / 2.0,
            (s[2] as f64 - 1.0) / 2.0,
        ])
    }

    /// Ok if `other` has the same shape and (within `tol_mm`) the same affine; else an error
    /// naming the difference.
    pub fn check_same(&self, other: &Geometry, tol_mm: f64) -> Result<()> {
        if self.shape != other.shape {
            return Err(VolumeError::GeometryMismatch(format!(
                "shape {:?} vs {:?}",
                self.shape, other.shape
            )));
        }
        for r in 0..3 {
            for c in 0..4 {
                let d = (self.affine[r][c] - other.affine[r][c]).abs();
                if d > tol_mm {
                    return Err(VolumeError::GeometryMismatch(format!(
                        "affine[{r}][{c}] differs by {d} ({} vs {}); spacing {:?} vs {:?}",
                        self.affine[r][c], other.affine[r][c], self.spacing, other.spacing
                    )));
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn linear(a: &[[f64; 4]; 4]) -> [[f64; 3]; 3] {
    [
        [a[0][0], a[0][1], a[0][2]],
        [a[1][0], a[1][1], a[1][2]],
        [a[2][0], a[2][1], a[2][2]],
    ]
}

pub(crate) fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

pub(crate) fn inv3(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let d = det3(m);
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            let (a, b) = ((j + 1) % 3, (j + 2) % 3);
            let (c, e) = ((i + 1) % 3, (i + 2) % 3);
            r[i][j] = (m[a][c] * m[b][e] - m[a][e] * m[b][c]) / d;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    #[test]
    fn rejects_bad_input() {
        assert!(Geometry::from_spacing([0, 1, 1], [1.0; 3]).is_err());
        assert!(Geometry::from_spacing([1, 1, 1], [1.0, f64::NAN, 1.0]).is_err());
        assert!(Geometry::from_spacing([1, 1, 1], [1.0, 0.0, 1.0]).is_err());
        assert!(Geometry::from_spacing([1, 1, 1], [1.0, -1.0, 1.0]).is_ok()); // flip is fine
        assert!(Geometry::from_spacing([usize::MAX, 2, 2], [1.0; 3]).is_err());
        let mut a = Geometry::from_spacing([2, 2, 2], [1.0; 3])
            .unwrap()
            .affine();
        a[2] = a[1];
        assert!(Geometry::new([2, 2, 2], a).is_err());
    }

    #[test]
    fn world_round_trip_oblique() {
        let (c, s) = (0.3f64.cos(), 0.3f64.sin());
        let a = [
            [0.4 * c, -0.5 * s, 0.0, -12.0],
            [0.4 * s, 0.5 * c, 0.0, 7.5],
            [0.0, 0.0, -0.8, 33.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let g = Geometry::new([5, 6, 7], a).unwrap();
        assert_abs_diff_eq!(g.spacing()[0], 0.4, epsilon = 1e-12);
        assert_abs_diff_eq!(g.spacing()[1], 0.5, epsilon = 1e-12);
        assert_abs_diff_eq!(g.voxel_volume_mm3(), 0.16, epsilon = 1e-12);
        let p = [1.5, -2.0, 3.25];
        let w = g.voxel_to_world(p);
        let q = g.world_to_voxel(w);
        for a in 0..3 {
            assert_abs_diff_eq!(p[a], q[a], epsilon = 1e-9);
        }
        assert_eq!(g.orientation_code(), "RAI");
        assert_eq!(g.superior_axis(), (2, -1.0));
    }

    #[test]
    fn orientation_code_is_a_permutation_even_at_45_degrees() {
        let h = std::f64::consts::FRAC_1_SQRT_2;
        // Axes 0 and 1 both at 45 degrees between R and A.
        let a = [
            [h, -h, 0.0, 0.0],
            [h, h, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let g = Geometry::new([2, 2, 2], a).unwrap();
        let code = g.orientation_code();
        let mut letters: Vec<char> = code.chars().collect();
        letters.sort_unstable();
        assert!(code == "RAS" || code == "ALS", "{code}");
        assert_eq!(letters.len(), 3);
        let lps = Geometry::new(
            [2, 2, 2],
            [
                [0.0, -1.0, 0.0, 0.0],
                [0.0, 0.0, -2.0, 0.0],
                [3.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        )
        .unwrap();
        assert_eq!(lps.orientation_code(), "SLP");
        assert_eq!(lps.axis_assignment(), ([2, 0, 1], [1.0, -1.0, -1.0]));
    }

    #[test]
    fn check_same_names_difference() {
        let g = Geometry::from_spacing([2, 2, 2], [1.0; 3]).unwrap();
        let h = Geometry::from_spacing([2, 2, 2], [1.0, 1.0, 1.5]).unwrap();
        let e = g.check_same(&h, 1e-6).unwrap_err().to_string();
        assert!(e.contains("affine[2][2]"), "{e}");
        assert!(g.check_same(&g.clone(), 0.0).is_ok());
    }
}
