//! Ground truth by numerical integration of the exact surfaces.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use negvol_volume::Geometry;

use crate::config::{PhantomConfig, Side};
use crate::geom::{self, dot, scale, V3};
use crate::model::{Joint, JointParams};

/// Minimum, mean and maximum of a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Smallest value.
    pub min: f64,
    /// Mean (weighted as stated where it is used).
    pub mean: f64,
    /// Largest value.
    pub max: f64,
}

/// Truth for one joint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideTruth {
    /// Which joint (left = world `-x`).
    pub side: Side,
    /// The sampled parameters.
    pub params: JointParams,
    /// Head centre (world mm); the centre of the radial lines of the NV definition.
    pub head_centre_mm: [f64; 3],
    /// The condyle's most superior point (world mm), analytic.
    pub head_top_mm: [f64; 3],
    /// The same point as a fractional voxel index of the case's grid.
    pub head_top_voxel: [f64; 3],
    /// Exact NV volume (mm^3) from numerical integration over directions and radii of the
    /// analytic set (see [`PhantomTruth`]); independent of the voxel grid.
    pub nv_volume_mm3: f64,
    /// Number of voxels in the `nv` mask on this side.
    pub nv_mask_voxels: usize,
    /// `nv_mask_voxels` times the voxel volume (mm^3): the discretised volume, for comparison.
    pub nv_mask_volume_mm3: f64,
    /// Area (mm^2) of the head surface whose radial segments make up the NV.
    pub nv_head_area_mm2: f64,
    /// Joint-space width (mm) = length of the radial head-to-TB segment, over every segment in
    /// the NV; mean weighted by head-surface area. `None` if the NV is empty.
    pub gap_mm: Option<Stats>,
    /// The same restricted to the fossa proper (`e <= 1`, where the gap equals the width field
    /// and lies within `width_range_mm`). `None` if no NV segment lies in the fossa.
    pub fossa_width_mm: Option<Stats>,
    /// World bounding box `[min, max]` (mm) of the NV.
    pub nv_bounds_mm: [[f64; 3]; 2],
    /// Number of directions sampled by the integration (coarse + refined).
    pub integration_rays: usize,
}

/// The ground truth of a case.
///
/// **Negative volume (NV), precisely.** For a joint with head centre `c`, head radius
/// function `r_H` and temporal bone TB (see [`JointParams`]), take every unit direction `u` and
/// the radial line `c + r u`. Its head point is `h = c + r_H(u) u`; let `r_B(u)` be the smallest
/// `r >= r_H(u)` at which the line is in TB (before MC is subtracted from TB, so it is given by
/// the lower surface and the slab planes). The segment `(r_H(u), r_B(u))` is kept when
/// 1. `r_B(u)` exists,
/// 2. `r_B(u) - r_H(u) <= truth_max_gap_mm` (longer segments lie beyond the fossa, where the
///    temporal bone flares away; the pipeline's `max_gap_mm` plays the same role), and
/// 3. `h` is at most `truth_head_depth_mm` below the head's most superior point (world z).
///
/// NV is the union of the kept open segments minus MC (the neck, where a segment crosses it).
/// It is disjoint from MC and TB by construction. This is what the pipeline computes when it
/// inflates the head along its normals until TB stops it: in the fossa the two agree up to the
/// direction of the rays (radial here, normal there), which changes only the rim.
///
/// - The voxel mask `nv` holds the voxels whose *centre* lies in NV (likewise `mc`, `tb`).
/// - `nv_volume_mm3` integrates the exact set: `sum over directions of
///   (r_B^3 - r_H^3) / 3 * dOmega` on an equal-area `(cos, azimuth)` grid about the fossa axis
///   (200 x 400 cells, midpoint rule; cells on the boundary of the kept set or where the gap
///   flares are refined into 8 azimuth columns integrated along the polar direction by the
///   trapezoid rule on 10 points, with the boundary of the kept set located by bisection), with
///   the neck-crossing segments integrated by a 512-point midpoint rule; its relative error is
///   well below 0.1 % (1e-5 on the closed-form shell-sector test).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhantomTruth {
    /// The seed.
    pub seed: u64,
    /// The full config.
    pub config: PhantomConfig,
    /// The grid of the case.
    pub geometry: Geometry,
    /// Per joint: one, or left then right.
    pub sides: Vec<SideTruth>,
    /// `|L - R| / (L + R)` of the exact NV volumes when both sides are present and non-empty;
    /// `None` (never a conventional number) otherwise.
    pub asymmetry_index: Option<f64>,
}

impl PhantomTruth {
    /// The truth of one side, if present.
    pub fn side(&self, side: Side) -> Option<&SideTruth> {
        self.sides.iter().find(|s| s.side == side)
    }
}

#[derive(Clone, Copy, Default)]
struct RayOut {
    included: bool,
    vol: f64,
    area: f64,
    gap: f64,
    in_fossa: bool,
    lo: V3,
    hi: V3,
}

/// Integral over one joint.
pub(crate) struct JointIntegral {
    pub volume: f64,
    pub area: f64,
    pub gap: Option<Stats>,
    pub fossa: Option<Stats>,
    pub bounds: [[f64; 3]; 2],
    pub rays: usize,
    /// Ray endpoints outside the grid: (count, one example in world mm).
    pub outside: (usize, Option<V3>),
}

const N_MU: usize = 200;
const N_PHI: usize = 400;
const REFINE: usize = 8;

pub(crate) fn integrate(
    j: &Joint,
    max_gap: f64,
    head_depth: f64,
    grid: &Geometry,
) -> JointIntegral {
    let (axis, t1, t2) = j.fossa_frame();
    let shape = grid.shape();
    let dir = |mu: f64, phi: f64| -> V3 {
        let s = (1.0 - mu * mu).max(0.0).sqrt();
        let (sp, cp) = phi.sin_cos();
        geom::add(
            scale(axis, mu),
            geom::add(scale(t1, s * cp), scale(t2, s * sp)),
        )
    };
    let dmu = 2.0 / N_MU as f64;
    let dphi = std::f64::consts::TAU / N_PHI as f64;
    let ray = |u: V3| -> RayOut { ray_eval(j, u, max_gap, head_depth) };
    // Coarse pass.
    let coarse: Vec<RayOut> = (0..N_MU)
        .into_par_iter()
        .flat_map_iter(|a| {
            let mu = -1.0 + (a as f64 + 0.5) * dmu;
            (0..N_PHI).map(move |b| (mu, (b as f64 + 0.5) * dphi))
        })
        .map(|(mu, phi)| ray(dir(mu, phi)))
        .collect();
    let idx = |a: usize, b: usize| a * N_PHI + b;
    // A refined cell: REFINE azimuth columns; along each, the trapezoid rule over the two cell
    // edges and REFINE interior points, with any change of the kept/not-kept flag between two
    // neighbouring points located by bisection, so the boundary of the kept set is exact to
    // 2^-20 of a cell.
    let refine_cell = |a: usize, b: usize| -> Vec<(f64, RayOut)> {
        let mu0 = -1.0 + a as f64 * dmu;
        let wphi = dphi / REFINE as f64;
        let mut out = Vec::with_capacity(3 * REFINE * REFINE);
        for q in 0..REFINE {
            let phi = (b as f64 + (q as f64 + 0.5) / REFINE as f64) * dphi;
            let mut pts: Vec<(f64, RayOut)> = Vec::with_capacity(REFINE + 2);
            pts.push((mu0, ray(dir(mu0, phi))));
            for p in 0..REFINE {
                let mu = mu0 + (p as f64 + 0.5) / REFINE as f64 * dmu;
                pts.push((mu, ray(dir(mu, phi))));
            }
            let mu1 = (mu0 + dmu).min(1.0);
            pts.push((mu1, ray(dir(mu1, phi))));
            for pair in pts.windows(2) {
                let ((m1, r1), (m2, r2)) = (pair[0], pair[1]);
                let len = m2 - m1;
                match (r1.included, r2.included) {
                    (true, true) => {
                        out.push((wphi * len / 2.0, r1));
                        out.push((wphi * len / 2.0, r2));
                    }
                    (false, false) => {}
                    (inc1, _) => {
                        let (mut lo, mut hi) = (m1, m2);
                        for _ in 0..20 {
                            let mid = 0.5 * (lo + hi);
                            if ray(dir(mid, phi)).included == inc1 {
                                lo = mid;
                            } else {
                                hi = mid;
                            }
                        }
                        let mc = 0.5 * (lo + hi);
                        if inc1 {
                            out.push((wphi * (mc - m1), r1));
                        } else {
                            out.push((wphi * (m2 - mc), r2));
                        }
                    }
                }
            }
        }
        out
    };
    let boundary = |a: usize, b: usize| -> bool {
        let f = coarse[idx(a, b)].included;
        let mut nb = vec![idx(a, (b + 1) % N_PHI), idx(a, (b + N_PHI - 1) % N_PHI)];
        if a > 0 {
            nb.push(idx(a - 1, b));
        }
        if a + 1 < N_MU {
            nb.push(idx(a + 1, b));
        }
        nb.iter().any(|&n| coarse[n].included != f)
    };
    // Per cell: its list of (weight, ray).
    let cells: Vec<Vec<(f64, RayOut)>> = (0..N_MU * N_PHI)
        .into_par_iter()
        .map(|n| {
            let (a, b) = (n / N_PHI, n % N_PHI);
            let w = dmu * dphi;
            let c = &coarse[n];
            if boundary(a, b) || (c.included && !c.in_fossa) {
                refine_cell(a, b)
            } else {
                vec![(w, *c)]
            }
        })
        .collect();
    let mut volume = 0.0;
    let mut area = 0.0;
    let mut gsum = 0.0;
    let mut gmin = f64::INFINITY;
    let mut gmax = f64::NEG_INFINITY;
    let mut farea = 0.0;
    let mut fsum = 0.0;
    let mut fmin = f64::INFINITY;
    let mut fmax = f64::NEG_INFINITY;
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    let mut rays = 0;
    let mut outside = (0usize, None);
    for (w, r) in cells.iter().flatten() {
        rays += 1;
        if !r.included {
            continue;
        }
        volume += w * r.vol;
        let da = w * r.area;
        area += da;
        gsum += da * r.gap;
        gmin = gmin.min(r.gap);
        gmax = gmax.max(r.gap);
        if r.in_fossa {
            farea += da;
            fsum += da * r.gap;
            fmin = fmin.min(r.gap);
            fmax = fmax.max(r.gap);
        }
        for p in [r.lo, r.hi] {
            for a in 0..3 {
                lo[a] = lo[a].min(p[a]);
                hi[a] = hi[a].max(p[a]);
            }
            let ijk = grid.world_to_voxel(p);
            if (0..3).any(|a| ijk[a] < 0.0 || ijk[a] > shape[a] as f64 - 1.0) {
                outside.0 += 1;
                outside.1.get_or_insert(p);
            }
        }
    }
    JointIntegral {
        volume,
        area,
        gap: (area > 0.0).then(|| Stats {
            min: gmin,
            mean: gsum / area,
            max: gmax,
        }),
        fossa: (farea > 0.0).then(|| Stats {
            min: fmin,
            mean: fsum / farea,
            max: fmax,
        }),
        bounds: [lo, hi],
        rays,
        outside,
    }
}

fn ray_eval(j: &Joint, u: V3, max_gap: f64, head_depth: f64) -> RayOut {
    let rh = j.head_radius(u);
    if j.head_top_height() - rh * dot(j.up(), u) > head_depth {
        return RayOut::default();
    }
    let Some(rb) = j.tb_entry(u, rh) else {
        return RayOut::default();
    };
    let gap = rb - rh;
    if gap > max_gap {
        return RayOut::default();
    }
    // Does the segment cross the neck?
    // The neck lives at head-frame z <= 0: a ray going up from the centre never meets it.
    let crosses = u[2] <= 0.0
        && (0..32).any(|k| {
            let r = rh + gap * (k as f64 + 0.5) / 32.0;
            j.in_mc_head(scale(u, r))
        });
    let vol = if crosses {
        let n = 512;
        let dr = gap / n as f64;
        (0..n)
            .map(|k| {
                let r = rh + (k as f64 + 0.5) * dr;
                if j.in_mc_head(scale(u, r)) {
                    0.0
                } else {
                    r * r * dr
                }
            })
            .sum()
    } else {
        (rb * rb * rb - rh * rh * rh) / 3.0
    };
    // Head-surface area element dA = r sqrt(r^2 + |grad r|^2) dOmega.
    let (t1, t2) = geom::tangents(u);
    let h = 1e-5;
    let d = |t: V3| {
        (j.head_radius(geom::normalize(geom::add(u, scale(t, h))))
            - j.head_radius(geom::normalize(geom::add(u, scale(t, -h)))))
            / (2.0 * h)
    };
    let (g1, g2) = (d(t1), d(t2));
    let area = rh * (rh * rh + g1 * g1 + g2 * g2).sqrt();
    let (_, e) = j.gap(u);
    RayOut {
        included: true,
        vol,
        area,
        gap,
        in_fossa: e <= 1.0,
        lo: j.head_to_world(scale(u, rh)),
        hi: j.head_to_world(scale(u, rb)),
    }
}
