//! Voxelizing a closed triangle mesh onto a [`Geometry`].
//!
//! Rays run along the `k` axis through every `(i, j)` voxel-centre line, in voxel index
//! space (so any affine, oblique or flipped, is handled exactly). Exactness where meshes
//! touch the rays:
//! - vertex positions are snapped to a grid of 2^-20 voxel and all inside/outside decisions
//!   on the `(i, j)` plane use exact integer orientation tests, with a symbolic perturbation
//!   of the ray (simulation of simplicity), so a ray through a vertex or along an edge hits
//!   exactly the right number of triangles: never zero or two where one is right;
//! - along the ray, a voxel centre lying exactly on the surface counts as after the
//!   crossing, i.e. cells are half-open `[enter, exit)` in increasing `k`. An axis-aligned
//!   box whose faces lie on voxel centres therefore gets exactly (extent / spacing) voxels per
//!   axis, its exact volume.

use ndarray::parallel::prelude::*;
use ndarray::{Array3, Axis};
use rayon::slice::ParallelSliceMut;

use crate::{Geometry, Result, TriMesh, Volume, VolumeError};

/// How crossings decide inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum FillRule {
    /// Inside where a ray has crossed the surface an odd number of times. Needs no
    /// consistent face orientation; overlapping closed parts cancel.
    #[default]
    EvenOdd,
    /// Inside where the winding number is nonzero. Needs consistently oriented faces (either
    /// all outward or all inward); overlapping closed parts form their union.
    NonZero,
}

/// Options for [`voxelize_with`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VoxelizeOptions {
    /// Inside rule.
    pub fill_rule: FillRule,
    /// Voxelize even if the mesh has open edges (the result is then ray-dependent).
    pub allow_open: bool,
}

const Q: f64 = (1u64 << 20) as f64;
const MAX_INDEX: f64 = (1u64 << 30) as f64;

/// Voxelize a closed mesh (world mm) onto `geometry`: a voxel is `true` when its centre is
/// inside the mesh (even-odd rule). An open mesh is an error.
///
/// ```
/// use negvol_volume::{voxelize, Geometry, TriMesh};
/// // A 4 x 4 x 4 mm cube from (1, 1, 1) to (5, 5, 5), faces on voxel centres of a 1 mm grid.
/// let cube = TriMesh::cuboid([1.0; 3], [5.0; 3]);
/// let g = Geometry::from_spacing([8, 8, 8], [1.0; 3]).unwrap();
/// let m = voxelize(&cube, &g).unwrap();
/// assert_eq!(m.data().iter().filter(|&&b| b).count(), 64); // exactly 4^3
/// ```
pub fn voxelize(mesh: &TriMesh, geometry: &Geometry) -> Result<Volume<bool>> {
    voxelize_with(mesh, geometry, &VoxelizeOptions::default())
}

/// [`voxelize`] with a fill rule and the option to accept open meshes.
pub fn voxelize_with(
    mesh: &TriMesh,
    geometry: &Geometry,
    options: &VoxelizeOptions,
) -> Result<Volume<bool>> {
    if !options.allow_open {
        let open = mesh.open_edges();
        if open > 0 {
            return Err(VolumeError::InvalidArgument(format!(
                "mesh is not closed: {open} edge(s) are used by an odd number of faces"
            )));
        }
    }
    let [ni, nj, nk] = geometry.shape();
    // Vertices in voxel index space: (i, j) snapped to integers in units of 2^-20 voxel.
    let mut pts: Vec<(i64, i64, f64)> = Vec::with_capacity(mesh.vertices.len());
    for (n, v) in mesh.vertices.iter().enumerate() {
        let q = geometry.world_to_voxel(*v);
        if q.iter().any(|x| !x.is_finite() || x.abs() > MAX_INDEX) {
            return Err(VolumeError::InvalidArgument(format!(
                "mesh vertex {n} {v:?} lies at voxel index {q:?}, beyond 2^30 voxels from the grid"
            )));
        }
        pts.push((
            (q[0] * Q).round() as i64,
            (q[1] * Q).round() as i64,
            (q[2] * Q).round() / Q,
        ));
    }
    let mut lines: Vec<Vec<(f64, i8)>> = vec![Vec::new(); ni * nj];
    let qi = 1i64 << 20;
    for f in &mesh.faces {
        let a = pts[f[0] as usize];
        let b = pts[f[1] as usize];
        let c = pts[f[2] as usize];
        let area = orient((a.0, a.1), (b.0, b.1), (c.0, c.1));
        if area == 0 {
            continue; // parallel to the rays: the perturbed ray misses it
        }
        let s: i8 = if area > 0 { 1 } else { -1 };
        let (xmin, xmax) = (a.0.min(b.0).min(c.0), a.0.max(b.0).max(c.0));
        let (ymin, ymax) = (a.1.min(b.1).min(c.1), a.1.max(b.1).max(c.1));
        let i0 = div_ceil(xmin, qi).max(0);
        let i1 = xmax.div_euclid(qi).min(ni as i64 - 1);
        let j0 = div_ceil(ymin, qi).max(0);
        let j1 = ymax.div_euclid(qi).min(nj as i64 - 1);
        for i in i0..=i1 {
            for j in j0..=j1 {
                let p = (i * qi, j * qi);
                let (pa, pb, pc) = ((a.0, a.1), (b.0, b.1), (c.0, c.1));
                if orient_sos(pb, pc, p) != s
                    || orient_sos(pc, pa, p) != s
                    || orient_sos(pa, pb, p) != s
                {
                    continue;
                }
                let wa = orient(pb, pc, p) as f64;
                let wb = orient(pc, pa, p) as f64;
                let wc = orient(pa, pb, p) as f64;
                let z = (wa * a.2 + wb * b.2 + wc * c.2) / area as f64;
                let z = (z * Q).round() / Q;
                lines[i as usize * nj + j as usize].push((z, s));
            }
        }
    }
    let mut out = Array3::from_elem((ni, nj, nk), false);
    let rule = options.fill_rule;
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(lines.par_chunks_mut(nj))
        .for_each(|(mut plane, lines)| {
            for (j, line) in lines.iter_mut().enumerate() {
                if line.is_empty() {
                    continue;
                }
                line.sort_unstable_by(|x, y| x.0.total_cmp(&y.0));
                let mut next = 0;
                let mut count: i64 = 0;
                for k in 0..nk {
                    let kf = k as f64;
                    while next < line.len() && line[next].0 <= kf {
                        count += match rule {
                            FillRule::EvenOdd => 1,
                            FillRule::NonZero => line[next].1 as i64,
                        };
                        next += 1;
                    }
                    plane[[j, k]] = match rule {
                        FillRule::EvenOdd => count % 2 == 1,
                        FillRule::NonZero => count != 0,
                    };
                }
            }
        });
    Volume::new(out, geometry.clone())
}

fn div_ceil(a: i64, b: i64) -> i64 {
    -((-a).div_euclid(b))
}

/// Twice the signed area of (a, b, p), exact.
#[inline]
fn orient(a: (i64, i64), b: (i64, i64), p: (i64, i64)) -> i128 {
    (b.0 - a.0) as i128 * (p.1 - a.1) as i128 - (b.1 - a.1) as i128 * (p.0 - a.0) as i128
}

/// Sign of `orient(a, b, p + (eps, eps^2))` for infinitesimal eps: never 0 unless a == b.
#[inline]
fn orient_sos(a: (i64, i64), b: (i64, i64), p: (i64, i64)) -> i8 {
    let o = orient(a, b, p);
    if o != 0 {
        return if o > 0 { 1 } else { -1 };
    }
    let dy = b.1 - a.1;
    if dy != 0 {
        return if dy > 0 { -1 } else { 1 };
    }
    let dx = b.0 - a.0;
    match dx.cmp(&0) {
        std::cmp::Ordering::Greater => 1,
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sos_is_antisymmetric_and_nonzero() {
        let pts = [(0, 0), (3, 0), (0, 3), (3, 3), (-2, 5), (1, 1)];
        for &a in &pts {
            for &b in &pts {
                if a == b {
                    continue;
                }
                for &p in &pts {
                    let s = orient_sos(a, b, p);
                    assert_ne!(s, 0);
                    assert_eq!(s, -orient_sos(b, a, p));
                }
            }
        }
        assert_eq!(div_ceil(5, 2), 3);
        assert_eq!(div_ceil(-5, 2), -2);
        assert_eq!(div_ceil(4, 2), 2);
    }
}
