//! Surface meshes of masks: marching tetrahedra (the marching-cubes family, with each voxel
//! cube split into the six Kuhn tetrahedra sharing its main diagonal, so the mesh is
//! watertight and needs no 256-case table), in world (RAS+ mm) coordinates.

use ndarray::{Array3, ArrayView3};
use negvol_volume::{Geometry, TriMesh, Volume};
use rayon::prelude::*;

use crate::grid::{self, Bbox};
use crate::{NvError, Result};

/// The six Kuhn tetrahedra of the unit cube: corner bit patterns `(di << 2) | (dj << 1) | dk`.
const TETS: [[usize; 4]; 6] = [
    [0, 4, 6, 7],
    [0, 4, 5, 7],
    [0, 2, 6, 7],
    [0, 2, 3, 7],
    [0, 1, 5, 7],
    [0, 1, 3, 7],
];

/// The iso-surface `field = iso` of a scalar field on `geometry`'s grid as triangles in world
/// mm, oriented with normals pointing from `field > iso` (inside) to `field <= iso`; the
/// outside of the grid counts as outside, so meshes are closed.
pub fn isosurface(field: ArrayView3<f32>, geometry: &Geometry, iso: f32) -> Vec<[[f64; 3]; 3]> {
    let sh = field.shape();
    let n = [sh[0] as isize, sh[1] as isize, sh[2] as isize];
    let mut bb = Bbox::empty();
    for ((i, j, k), &v) in field.indexed_iter() {
        if v > iso {
            bb.add([i, j, k]);
        }
    }
    if bb.is_empty() {
        return Vec::new();
    }
    let val = |p: [isize; 3]| -> f32 {
        if (0..3).all(|a| p[a] >= 0 && p[a] < n[a]) {
            field[[p[0] as usize, p[1] as usize, p[2] as usize]]
        } else {
            f32::NEG_INFINITY
        }
    };
    let lo = bb.lo.map(|v| v as isize - 1);
    let hi = bb.hi.map(|v| v as isize);
    (lo[0]..hi[0])
        .into_par_iter()
        .flat_map_iter(|i| {
            let mut tris = Vec::new();
            for j in lo[1]..hi[1] {
                for k in lo[2]..hi[2] {
                    let corner = |c: usize| {
                        [
                            i + (c >> 2) as isize,
                            j + ((c >> 1) & 1) as isize,
                            k + (c & 1) as isize,
                        ]
                    };
                    let vals: [f32; 8] = std::array::from_fn(|c| val(corner(c)));
                    let inside = vals.iter().filter(|&&v| v > iso).count();
                    if inside == 0 || inside == 8 {
                        continue;
                    }
                    for t in &TETS {
                        tet(t, &vals, &corner, iso, geometry, &mut tris);
                    }
                }
            }
            tris
        })
        .collect()
}

fn tet(
    t: &[usize; 4],
    vals: &[f32; 8],
    corner: &dyn Fn(usize) -> [isize; 3],
    iso: f32,
    g: &Geometry,
    out: &mut Vec<[[f64; 3]; 3]>,
) {
    let ins: Vec<usize> = t.iter().copied().filter(|&c| vals[c] > iso).collect();
    let outs: Vec<usize> = t.iter().copied().filter(|&c| vals[c] <= iso).collect();
    if ins.is_empty() || outs.is_empty() {
        return;
    }
    let world = |c: usize| {
        let p = corner(c);
        g.voxel_to_world([p[0] as f64, p[1] as f64, p[2] as f64])
    };
    let cross = |a: usize, b: usize| {
        let (va, vb) = (vals[a] as f64, vals[b] as f64);
        // `b` may be outside the grid (-inf): the crossing is then half-way.
        let s = if vb.is_finite() && va.is_finite() {
            ((iso as f64 - va) / (vb - va)).clamp(0.0, 1.0)
        } else {
            0.5
        };
        let (pa, pb) = (world(a), world(b));
        [0, 1, 2].map(|d| pa[d] + s * (pb[d] - pa[d]))
    };
    let dir = {
        let (pi, po) = (world(ins[0]), world(outs[0]));
        [po[0] - pi[0], po[1] - pi[1], po[2] - pi[2]]
    };
    let mut push = |a: [f64; 3], b: [f64; 3], c: [f64; 3]| {
        let u = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
        let v = [c[0] - a[0], c[1] - a[1], c[2] - a[2]];
        let nrm = [
            u[1] * v[2] - u[2] * v[1],
            u[2] * v[0] - u[0] * v[2],
            u[0] * v[1] - u[1] * v[0],
        ];
        if grid::dot(nrm, dir) >= 0.0 {
            out.push([a, b, c]);
        } else {
            out.push([a, c, b]);
        }
    };
    match (ins.len(), outs.len()) {
        (1, 3) => push(
            cross(ins[0], outs[0]),
            cross(ins[0], outs[1]),
            cross(ins[0], outs[2]),
        ),
        (3, 1) => push(
            cross(ins[0], outs[0]),
            cross(ins[1], outs[0]),
            cross(ins[2], outs[0]),
        ),
        _ => {
            let (a, b) = (ins[0], ins[1]);
            let (c, d) = (outs[0], outs[1]);
            let (p1, p2, p3, p4) = (cross(a, c), cross(a, d), cross(b, d), cross(b, c));
            push(p1, p2, p3);
            push(p1, p3, p4);
        }
    }
}

/// Surface mesh of a mask (world mm): the 0.5 level of the mask, after an optional Gaussian
/// smoothing of `smooth_sigma_mm` (0 = none: a staircase surface through the edge
/// midpoints between inside and outside voxel centres). Work is limited to the mask's
/// bounding box.
///
/// ```
/// use negvol_volume::{Geometry, Volume};
/// let g = Geometry::from_spacing([3, 3, 3], [1.0; 3]).unwrap();
/// let mut m = ndarray::Array3::from_elem([3, 3, 3], false);
/// m[[1, 1, 1]] = true;
/// let mesh = negvol::mesh::mask_mesh(&Volume::new(m, g).unwrap(), 0.0);
/// assert!(!mesh.faces.is_empty());
/// ```
pub fn mask_mesh(mask: &Volume<bool>, smooth_sigma_mm: f64) -> TriMesh {
    let g = mask.geometry();
    let mut bb = Bbox::empty();
    for ((i, j, k), &v) in mask.data().indexed_iter() {
        if v {
            bb.add([i, j, k]);
        }
    }
    if bb.is_empty() {
        return TriMesh::from_triangles(&[]);
    }
    let pad = if smooth_sigma_mm > 0.0 {
        grid::margin_voxels(g, 3.0 * smooth_sigma_mm)
    } else {
        [1; 3]
    };
    let b = bb.grow(pad, g.shape());
    let sub = mask.data().slice(b.slice());
    let mut f: Array3<f32> = sub.map(|&v| v as u8 as f32);
    if smooth_sigma_mm > 0.0 {
        let sp = g.spacing();
        grid::gaussian_smooth(&mut f, [0, 1, 2].map(|a| smooth_sigma_mm / sp[a]));
    }
    let cg = grid::crop_geometry(g, &b);
    let tris = isosurface(f.view(), &cg, 0.5);
    TriMesh::from_triangles(&tris)
}

/// Writes the surface mesh of a mask as binary STL (atomic write, via negvol-volume).
pub fn write_mask_stl(
    path: impl AsRef<std::path::Path>,
    mask: &Volume<bool>,
    smooth_sigma_mm: f64,
) -> Result<TriMesh> {
    let mesh = mask_mesh(mask, smooth_sigma_mm);
    negvol_volume::write_stl(path.as_ref(), &mesh).map_err(|source| NvError::Geometry {
        what: format!("writing STL {}", path.as_ref().display()),
        source,
    })?;
    Ok(mesh)
}

/// Signed volume (mm^3) enclosed by a closed, outward-oriented triangle soup (divergence
/// theorem); used to check meshes.
pub fn enclosed_volume(mesh: &TriMesh) -> f64 {
    mesh.faces
        .iter()
        .map(|f| {
            let [a, b, c] = f.map(|i| mesh.vertices[i as usize]);
            (a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
                + a[2] * (b[0] * c[1] - b[1] * c[0]))
                / 6.0
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ball(g: &Geometry, c: [f64; 3], r: f64) -> Volume<bool> {
        let m = Array3::from_shape_fn(g.shape(), |(i, j, k)| {
            let w = g.voxel_to_world([i as f64, j as f64, k as f64]);
            (0..3).map(|a| (w[a] - c[a]).powi(2)).sum::<f64>() <= r * r
        });
        Volume::new(m, g.clone()).unwrap()
    }

    /// Every directed edge has its reverse exactly once: closed, consistently oriented.
    fn assert_closed(mesh: &TriMesh) {
        let mut edges = std::collections::HashMap::new();
        for f in &mesh.faces {
            for e in 0..3 {
                *edges.entry((f[e], f[(e + 1) % 3])).or_insert(0) += 1;
            }
        }
        for (&(a, b), &n) in &edges {
            assert_eq!(n, 1, "edge {a}-{b} used {n} times in one direction");
            assert_eq!(edges.get(&(b, a)), Some(&1), "edge {a}-{b} has no twin");
        }
    }

    #[test]
    fn single_voxel_is_closed_with_positive_volume() {
        let g = Geometry::from_spacing([3, 3, 3], [1.0; 3]).unwrap();
        let mut m = Array3::from_elem([3, 3, 3], false);
        m[[1, 1, 1]] = true;
        let mesh = mask_mesh(&Volume::new(m.clone(), g.clone()).unwrap(), 0.0);
        assert_closed(&mesh);
        let v = enclosed_volume(&mesh);
        // Star of the voxel centre in the Kuhn triangulation cut at edge midpoints: between
        // the octahedron (1/6) and the voxel (1).
        assert!(v > 1.0 / 6.0 - 1e-9 && v < 1.0, "{v}");
        // At the grid border (outside counts as empty) it is still closed.
        let mut m2 = Array3::from_elem([3, 3, 3], false);
        m2[[0, 0, 0]] = true;
        assert_closed(&mask_mesh(&Volume::new(m2, g).unwrap(), 0.0));
    }

    #[test]
    fn ball_volume_and_orientation_on_flipped_anisotropic_grid() {
        // LPS-like affine with negative determinant and anisotropic spacing.
        let a = [
            [-0.5, 0.0, 0.0, 10.0],
            [0.0, -0.5, 0.0, 10.0],
            [0.0, 0.0, 0.8, -10.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let g = Geometry::new([40, 40, 26], a).unwrap();
        let m = ball(&g, [0.0, 0.0, 0.0], 6.0);
        let voxels = m.data().iter().filter(|&&v| v).count() as f64 * g.voxel_volume_mm3();
        let mesh = mask_mesh(&m, 0.0);
        assert_closed(&mesh);
        let v = enclosed_volume(&mesh);
        // Positive (outward normals) and close to the voxel volume (the midpoint surface
        // cuts corners, so a little smaller).
        assert!(v > 0.85 * voxels && v < 1.02 * voxels, "{v} vs {voxels}");
        let smooth = enclosed_volume(&mask_mesh(&m, 0.5));
        let exact = 4.0 / 3.0 * std::f64::consts::PI * 216.0;
        assert!((smooth - exact).abs() / exact < 0.08, "{smooth} vs {exact}");
    }
}
