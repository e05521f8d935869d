//! Bounding boxes, boundary voxels and DeepMind-style surfels.
//!
//! - **Boundary voxels**: the foreground voxels with at least one background neighbour under
//!   6-, 18- or 26-connectivity ([`Connectivity`]); voxels outside the array count as background,
//!   so a foreground voxel on the array border is a boundary voxel (as MONAI's
//!   `get_mask_edges`, which erodes with a zero border, and ITK's contour filters).
//! - **Surfels** (DeepMind `surface-distance` style): the surface lives on the grid of voxel
//!   *corners*. Corner `(p, q, r)` (`0 <= p <= ni`, ...) is shared by the eight voxels
//!   `(p - 1 + a, q - 1 + b, r - 1 + c)`, `a, b, c in {0, 1}` (outside voxels are background);
//!   its 8-bit neighbour code has bit value `128 >> (4a + 2b + c)` set when that voxel is
//!   foreground (the bit order of DeepMind's 2x2x2 kernel). A corner is a surface point when its
//!   code is neither 0 nor 255, and it carries the area (mm^2) of the marching-cubes surface
//!   inside its 2x2x2 cell: see [`surfel_area_table`].

use std::sync::OnceLock;

use ndarray::{s, Array3, ArrayView3, Axis, Zip};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Voxel neighbourhood: which voxels are neighbours when deciding whether a foreground voxel is
/// on the boundary ([`boundary_voxels`]) and when labelling connected components
/// ([`crate::components`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Connectivity {
    /// The 6 face neighbours (default; MONAI / scipy `binary_erosion` default structure).
    #[default]
    Six,
    /// Face and edge neighbours (18).
    Eighteen,
    /// Face, edge and vertex neighbours (26).
    TwentySix,
}

impl Connectivity {
    /// The neighbour offsets of this connectivity.
    pub fn offsets(self) -> Vec<[isize; 3]> {
        let mut out = Vec::new();
        for di in -1isize..=1 {
            for dj in -1isize..=1 {
                for dk in -1isize..=1 {
                    let n = di.abs() + dj.abs() + dk.abs();
                    let keep = match self {
                        Connectivity::Six => n == 1,
                        Connectivity::Eighteen => n == 1 || n == 2,
                        Connectivity::TwentySix => n >= 1,
                    };
                    if keep {
                        out.push([di, dj, dk]);
                    }
                }
            }
        }
        out
    }
}

/// An axis-aligned box of voxel indices: `min` inclusive, `max` exclusive, per axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundingBox {
    /// First index inside the box, per axis.
    pub min: [usize; 3],
    /// One past the last index inside the box, per axis.
    pub max: [usize; 3],
}

impl BoundingBox {
    /// The smallest box holding both boxes.
    pub fn union(&self, other: &BoundingBox) -> BoundingBox {
        BoundingBox {
            min: std::array::from_fn(|a| self.min[a].min(other.min[a])),
            max: std::array::from_fn(|a| self.max[a].max(other.max[a])),
        }
    }
    /// The box grown by `margin` voxels on every side, clipped to an array of shape `shape`.
    pub fn expand(&self, margin: usize, shape: [usize; 3]) -> BoundingBox {
        BoundingBox {
            min: std::array::from_fn(|a| self.min[a].saturating_sub(margin)),
            max: std::array::from_fn(|a| (self.max[a] + margin).min(shape[a])),
        }
    }
    /// Extent per axis.
    pub fn shape(&self) -> [usize; 3] {
        std::array::from_fn(|a| self.max[a] - self.min[a])
    }
    /// A view of `a` restricted to the box.
    pub fn crop<'a, T>(&self, a: ArrayView3<'a, T>) -> ArrayView3<'a, T> {
        a.slice_move(s![
            self.min[0]..self.max[0],
            self.min[1]..self.max[1],
            self.min[2]..self.max[2]
        ])
    }
}

/// Bounding box of the `true` voxels; `None` when the mask is empty.
pub fn bounding_box(mask: ArrayView3<'_, bool>) -> Option<BoundingBox> {
    let per_slab: Vec<Option<BoundingBox>> = mask
        .axis_iter(Axis(0))
        .into_par_iter()
        .enumerate()
        .map(|(i, slab)| {
            let mut bb: Option<BoundingBox> = None;
            for (j, row) in slab.outer_iter().enumerate() {
                let span = match row.as_slice() {
                    // Branch-free OR first (vectorises), positions only for non-empty rows.
                    Some(sl) => sl.iter().fold(false, |a, &b| a | b).then(|| {
                        let f = sl.iter().position(|&x| x).unwrap_or(0);
                        let l = sl.len() - 1 - sl.iter().rev().position(|&x| x).unwrap_or(0);
                        (f, l)
                    }),
                    None => row.iter().position(|&x| x).map(|f| {
                        let l = row.len() - 1 - row.iter().rev().position(|&x| x).unwrap_or(0);
                        (f, l)
                    }),
                };
                if let Some((f, last)) = span {
                    let b = BoundingBox {
                        min: [i, j, f],
                        max: [i + 1, j + 1, last + 1],
                    };
                    bb = Some(match bb {
                        None => b,
                        Some(o) => o.union(&b),
                    });
                }
            }
            bb
        })
        .collect();
    per_slab.into_iter().flatten().reduce(|a, b| a.union(&b))
}

/// Boundary voxels: foreground voxels with at least one background neighbour under
/// `connectivity` (outside the array is background). Same shape as `mask`.
pub fn boundary_voxels(mask: ArrayView3<'_, bool>, connectivity: Connectivity) -> Array3<bool> {
    let m = mask.as_standard_layout();
    let (ni, nj, nk) = m.dim();
    let flat = m.as_slice().expect("standard layout");
    let offs = connectivity.offsets();
    let mut out = Array3::from_elem((ni, nj, nk), false);
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut slab)| {
            for j in 0..nj {
                let mut row = slab.row_mut(j);
                let base = (i * nj + j) * nk;
                for k in 0..nk {
                    if !flat[base + k] {
                        continue;
                    }
                    let interior =
                        i > 0 && i + 1 < ni && j > 0 && j + 1 < nj && k > 0 && k + 1 < nk;
                    let is_b = if interior {
                        offs.iter().any(|o| {
                            let idx = ((i as isize + o[0]) as usize * nj
                                + (j as isize + o[1]) as usize)
                                * nk
                                + (k as isize + o[2]) as usize;
                            !flat[idx]
                        })
                    } else {
                        true
                    };
                    row[k] = is_b;
                }
            }
        });
    out
}

/// The 8-bit neighbour code of every voxel corner (see the module docs): an array of shape
/// `[ni + 1, nj + 1, nk + 1]`.
pub fn neighbour_codes(mask: ArrayView3<'_, bool>) -> Array3<u8> {
    let (ni, nj, nk) = mask.dim();
    // Zero-padded u8 copy: pad[x + 1] = mask[x] on every axis.
    let mut pad = Array3::<u8>::zeros((ni + 2, nj + 2, nk + 2));
    Zip::from(pad.slice_mut(s![1..ni + 1, 1..nj + 1, 1..nk + 1]))
        .and(&mask)
        .par_for_each(|d, &m| *d = m as u8);
    let pf = pad.as_slice().expect("standard layout");
    let (pj, pk) = (nj + 2, nk + 2);
    let mut out = Array3::<u8>::zeros((ni + 1, nj + 1, nk + 1));
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(p, mut slab)| {
            for q in 0..=nj {
                let mut row = slab.row_mut(q);
                let row = row.as_slice_mut().expect("standard layout");
                // Corner (p, q, r) sees voxel (p-1+a, q-1+b, r-1+c) = pad[p+a, q+b, r+c] with
                // bit value 128 >> (4a + 2b + c).
                for a in 0..2 {
                    for b in 0..2 {
                        let base = ((p + a) * pj + (q + b)) * pk;
                        let src = &pf[base..base + pk];
                        let s0 = 7 - (4 * a + 2 * b) as u32;
                        for ((o, &x0), &x1) in row.iter_mut().zip(src).zip(&src[1..]) {
                            *o |= (x0 << s0) | (x1 << (s0 - 1));
                        }
                    }
                }
            }
        });
    out
}

/// Surface points of a neighbour-code array: codes other than 0 and 255.
pub fn surfel_mask(codes: ArrayView3<'_, u8>) -> Array3<bool> {
    let mut out = Array3::from_elem(codes.raw_dim(), false);
    Zip::from(&mut out)
        .and(&codes)
        .par_for_each(|o, &c| *o = c != 0 && c != 255);
    out
}

/// Unit-spacing area vectors (half cross products) of the marching-cubes triangles of each code.
fn triangle_vectors() -> &'static [Vec<[f64; 3]>; 256] {
    static T: OnceLock<[Vec<[f64; 3]>; 256]> = OnceLock::new();
    T.get_or_init(|| std::array::from_fn(|code| code_triangles(code as u8)))
}

/// Area (mm^2) of the surface element of each neighbour code at this spacing.
///
/// Geometry: for each 2x2x2 configuration, the marching-cubes surface through the midpoints of
/// the cell edges whose two corners differ. On a face with two diagonal foreground corners the
/// minority state is kept separated (the foreground corners when at most 4 of the 8 corners are
/// foreground, the background ones otherwise). The edge midpoints are chained face by face into
/// closed polygons; each polygon is triangulated with the minimum-area triangulation at unit
/// spacing (a fixed triangulation per code, ties broken by the first split in index order), and
/// the area at `spacing` is the sum over the triangles of `|(n0 sj sk, n1 si sk, n2 si sj)|`
/// where `n` is the unit-spacing area vector of the triangle.
///
/// Planar polygons have the same area under every triangulation, so this matches DeepMind's
/// table wherever the polygon is planar; for non-planar pentagons and hexagons DeepMind's
/// hand-made table uses other triangulations (up to about 6 % more area for that cell), which
/// shifts area-weighted means and percentiles slightly (see the crate docs).
pub fn surfel_area_table(spacing: [f64; 3]) -> [f64; 256] {
    let t = triangle_vectors();
    let [si, sj, sk] = spacing;
    std::array::from_fn(|code| {
        t[code]
            .iter()
            .map(|n| {
                let v = [n[0] * sj * sk, n[1] * si * sk, n[2] * si * sj];
                (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
            })
            .sum()
    })
}

fn code_triangles(code: u8) -> Vec<[f64; 3]> {
    let inside = |p: [usize; 3]| code & (128u8 >> (4 * p[0] + 2 * p[1] + p[2])) != 0;
    let isolate_inside = code.count_ones() <= 4;
    // Edge key: the two corners (sorted), each as index 4a+2b+c.
    let cid = |p: [usize; 3]| 4 * p[0] + 2 * p[1] + p[2];
    let mut adj: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut link = |a: u8, b: u8| {
        for (x, y) in [(a, b), (b, a)] {
            match adj.iter_mut().find(|(k, _)| *k == x) {
                Some((_, v)) => v.push(y),
                None => adj.push((x, vec![y])),
            }
        }
    };
    let ekey = |p: [usize; 3], q: [usize; 3]| {
        let (x, y) = (cid(p), cid(q));
        (x.min(y) * 8 + x.max(y)) as u8
    };
    for ax in 0..3 {
        let (u, w) = match ax {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        };
        for val in 0..2 {
            let cyc = [(0, 0), (1, 0), (1, 1), (0, 1)];
            let cs: Vec<[usize; 3]> = cyc
                .iter()
                .map(|&(a, b)| {
                    let mut p = [0usize; 3];
                    p[ax] = val;
                    p[u] = a;
                    p[w] = b;
                    p
                })
                .collect();
            let ins: Vec<bool> = cs.iter().map(|&p| inside(p)).collect();
            let e: Vec<u8> = (0..4).map(|t| ekey(cs[t], cs[(t + 1) % 4])).collect();
            let crossing: Vec<usize> = (0..4).filter(|&t| ins[t] != ins[(t + 1) % 4]).collect();
            match crossing.len() {
                2 => link(e[crossing[0]], e[crossing[1]]),
                4 => {
                    // Corner t is bounded by edges t-1 and t.
                    if ins[0] == isolate_inside {
                        link(e[3], e[0]);
                        link(e[1], e[2]);
                    } else {
                        link(e[0], e[1]);
                        link(e[2], e[3]);
                    }
                }
                _ => {}
            }
        }
    }
    let corner = |id: u8| -> [f64; 3] {
        let id = id as usize;
        [(id >> 2 & 1) as f64, (id >> 1 & 1) as f64, (id & 1) as f64]
    };
    let mid = |key: u8| -> [f64; 3] {
        let (a, b) = (corner(key / 8), corner(key % 8));
        [
            (a[0] + b[0]) / 2.0,
            (a[1] + b[1]) / 2.0,
            (a[2] + b[2]) / 2.0,
        ]
    };
    let mut seen: Vec<u8> = Vec::new();
    let mut tris = Vec::new();
    let keys: Vec<u8> = adj.iter().map(|(k, _)| *k).collect();
    for start in keys {
        if seen.contains(&start) {
            continue;
        }
        let mut lp = vec![start];
        seen.push(start);
        let mut prev = u8::MAX;
        let mut cur = start;
        loop {
            let nbrs = &adj.iter().find(|(k, _)| *k == cur).expect("vertex").1;
            let next = nbrs
                .iter()
                .copied()
                .find(|&x| x != prev && !seen.contains(&x));
            match next {
                Some(nx) => {
                    prev = cur;
                    cur = nx;
                    lp.push(cur);
                    seen.push(cur);
                }
                None => break,
            }
        }
        let pts: Vec<[f64; 3]> = lp.iter().map(|&k| mid(k)).collect();
        tris.extend(min_area_triangulation(&pts));
    }
    tris
}

fn half_cross(a: [f64; 3], b: [f64; 3], c: [f64; 3]) -> [f64; 3] {
    let u = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let v = [c[0] - a[0], c[1] - a[1], c[2] - a[2]];
    [
        (u[1] * v[2] - u[2] * v[1]) / 2.0,
        (u[2] * v[0] - u[0] * v[2]) / 2.0,
        (u[0] * v[1] - u[1] * v[0]) / 2.0,
    ]
}

fn norm(v: [f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

/// Minimum-area triangulation of a closed polygon (O(n^3) dynamic programme); returns the
/// area vectors of its triangles.
fn min_area_triangulation(p: &[[f64; 3]]) -> Vec<[f64; 3]> {
    let n = p.len();
    if n < 3 {
        return Vec::new();
    }
    let mut cost = vec![vec![0.0f64; n]; n];
    let mut split = vec![vec![usize::MAX; n]; n];
    for len in 2..n {
        for i in 0..n - len {
            let j = i + len;
            let mut best = f64::INFINITY;
            for k in i + 1..j {
                let c = cost[i][k] + cost[k][j] + norm(half_cross(p[i], p[k], p[j]));
                if c < best - 1e-12 {
                    best = c;
                    split[i][j] = k;
                }
            }
            cost[i][j] = best;
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![(0usize, n - 1)];
    while let Some((i, j)) = stack.pop() {
        if j < i + 2 {
            continue;
        }
        let k = split[i][j];
        out.push(half_cross(p[i], p[k], p[j]));
        stack.push((i, k));
        stack.push((k, j));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn table_basic_cases() {
        let t = surfel_area_table([1.0; 3]);
        assert_eq!(t[0], 0.0);
        assert_eq!(t[255], 0.0);
        // One corner: triangle through three edge midpoints, area sqrt(3)/8.
        for b in 0..8 {
            assert_relative_eq!(t[1 << b], 3f64.sqrt() / 8.0, epsilon = 1e-12);
            assert_relative_eq!(t[255 ^ (1 << b)], 3f64.sqrt() / 8.0, epsilon = 1e-12);
        }
        // A whole face foreground (4 corners, a = 1): a unit square.
        let face = 0b0000_1111u8;
        assert_relative_eq!(t[face as usize], 1.0, epsilon = 1e-12);
        // Two adjacent corners: rectangle 1 x sqrt(1/2).
        assert_relative_eq!(t[0b11], 0.5f64.sqrt(), epsilon = 1e-12);
        // Anisotropic face: the square spans axes j and k.
        let ta = surfel_area_table([2.0, 3.0, 5.0]);
        assert_relative_eq!(ta[face as usize], 15.0, epsilon = 1e-12);
        // Complement symmetry of the geometry.
        for c in 0..256 {
            assert_relative_eq!(t[c], t[255 - c], epsilon = 1e-12);
        }
    }

    #[test]
    fn flat_surface_area_is_exact() {
        // A slab i < 3 inside a 6x5x4 box: surfels on the plane i = 3 (interior part)
        // plus the box faces; check the total area of a big cube against its true area.
        let mut m = Array3::from_elem([8, 9, 10], false);
        m.slice_mut(s![2..6, 2..7, 3..8]).fill(true);
        let sp = [0.5, 0.8, 1.1];
        let t = surfel_area_table(sp);
        let codes = neighbour_codes(m.view());
        let total: f64 = codes.iter().map(|&c| t[c as usize]).sum();
        // Marching-cubes surface of a box: the box shrunk by half a voxel on each side with
        // chamfered edges and corners; check it against its closed form.
        let (a, b, c) = (3.0 * sp[0], 4.0 * sp[1], 4.0 * sp[2]);
        let (hi, hj, hk) = (sp[0] / 2.0, sp[1] / 2.0, sp[2] / 2.0);
        let faces = 2.0 * (b * c + a * c + a * b);
        let edges = 4.0 * a * (hj * hj + hk * hk).sqrt()
            + 4.0 * b * (hi * hi + hk * hk).sqrt()
            + 4.0 * c * (hi * hi + hj * hj).sqrt();
        let corners =
            8.0 * 0.5 * ((hj * hk).powi(2) + (hi * hk).powi(2) + (hi * hj).powi(2)).sqrt();
        assert_relative_eq!(total, faces + edges + corners, max_relative = 1e-12);
    }

    #[test]
    fn boundary_of_a_box() {
        let mut m = Array3::from_elem([5, 6, 7], false);
        m.slice_mut(s![1..4, 1..5, 1..6]).fill(true);
        let b6 = boundary_voxels(m.view(), Connectivity::Six);
        let n6 = b6.iter().filter(|&&x| x).count();
        assert_eq!(n6, 3 * 4 * 5 - 2 * 3);
        let b26 = boundary_voxels(m.view(), Connectivity::TwentySix);
        assert_eq!(b26, b6);
        // Border voxels count as boundary.
        let full = Array3::from_elem([3, 3, 3], true);
        let bf = boundary_voxels(full.view(), Connectivity::Six);
        assert_eq!(bf.iter().filter(|&&x| x).count(), 26);
        // 6 vs 18 vs 26 on an interior hole.
        let mut n2 = Array3::from_elem([7, 7, 7], true);
        n2[[2, 2, 3]] = false;
        let d6 = boundary_voxels(n2.view(), Connectivity::Six);
        let d18 = boundary_voxels(n2.view(), Connectivity::Eighteen);
        let d26 = boundary_voxels(n2.view(), Connectivity::TwentySix);
        assert!(d6[[3, 2, 3]] && !d6[[3, 3, 3]] && d18[[3, 3, 3]]);
        assert!(d26[[3, 3, 4]] && !d18[[3, 3, 4]]);
    }

    #[test]
    fn bbox() {
        let mut m = Array3::from_elem([5, 6, 7], false);
        assert!(bounding_box(m.view()).is_none());
        m[[1, 2, 3]] = true;
        m[[3, 1, 5]] = true;
        let b = bounding_box(m.view()).unwrap();
        assert_eq!(b.min, [1, 1, 3]);
        assert_eq!(b.max, [4, 3, 6]);
        assert_eq!(b.expand(2, [5, 6, 7]).max, [5, 5, 7]);
    }
}
