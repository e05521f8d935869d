//! The pipeline: [`derive_nv`].

use ndarray::{Array3, ArrayView3, Axis, Zip};
use negvol_metrics::components::{component_stats, label_components};
use negvol_metrics::edt::{feature_transform, squared_edt};
use negvol_metrics::Connectivity;
use negvol_volume::{Geometry, Volume};
use rayon::prelude::*;

use crate::grid::{self, check_same_grid, dot, Bbox, Lin};
use crate::report::{
    Asymmetry, Issue, IssueCode, NvReport, RayCounts, Side, SideReport, SplitPlane, WidthStats,
    REMOVED_VOLUME_ISSUE_FRACTION,
};
use crate::{
    Method, NvConfig, NvError, OverlapPolicy, Result, SideSplit, CONDYLE_COMPONENT_FRACTION,
};

/// One ray that met TB within `max_gap_mm`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RayRecord {
    /// Head-surface voxel the ray starts from (full-grid index).
    pub origin_voxel: [usize; 3],
    /// Unit outward normal (world).
    pub direction: [f64; 3],
    /// Joint-space width along the ray (mm).
    pub width_mm: f64,
}

/// Per-side products that are not part of the JSON report.
#[derive(Debug, Clone)]
pub struct SideOutput {
    /// Which joint.
    pub side: Side,
    /// Joint-space width (mm) per head-surface voxel whose ray met TB within reach, on the
    /// grid of the head's bounding box (its own geometry, so it can be written as a NIfTI
    /// that overlays the input). Voxels without a measured ray hold 0.
    pub width_map: Option<Volume<f32>>,
    /// The rays that met TB within reach.
    pub rays: Vec<RayRecord>,
}

/// The result of [`derive_nv`].
#[derive(Debug, Clone)]
pub struct NvResult {
    /// The NV mask on the input grid (both sides).
    pub nv: Volume<bool>,
    /// Per-side width maps and rays.
    pub sides: Vec<SideOutput>,
    /// Measurements and explanations (serialisable).
    pub report: NvReport,
}

impl NvResult {
    /// The NV mask, or [`NvError::NoNegativeVolume`] listing why each side has none.
    pub fn require_nv(&self) -> Result<&Volume<bool>> {
        if self.report.sides.iter().any(|s| s.has_nv) {
            return Ok(&self.nv);
        }
        let reasons = self
            .report
            .sides
            .iter()
            .map(|s| {
                let why: Vec<&str> = s.issues.iter().map(|i| i.message.as_str()).collect();
                format!("{}: {}", s.side.name(), why.join("; "))
            })
            .collect::<Vec<_>>()
            .join(" | ");
        Err(NvError::NoNegativeVolume { reasons })
    }
}

/// Signed plane `c0 + c . ijk` in world mm; `>= 0` is the patient's right.
#[derive(Debug, Clone, Copy)]
struct SidePlane {
    c0: f64,
    c: [f64; 3],
}

impl SidePlane {
    /// The plane `sp` (world mm) in the voxel indices of grid `g`.
    fn new(g: &Geometry, sp: &SplitPlane) -> Self {
        let (point, normal) = (sp.point, sp.normal);
        let lin = Lin::of(g);
        let a = g.affine();
        let t = [a[0][3], a[1][3], a[2][3]];
        // (A ijk + t - p) . n
        let c = [0, 1, 2].map(|ax| {
            let col = lin.apply(match ax {
                0 => [1.0, 0.0, 0.0],
                1 => [0.0, 1.0, 0.0],
                _ => [0.0, 0.0, 1.0],
            });
            dot(col, normal)
        });
        let c0 = dot([t[0] - point[0], t[1] - point[1], t[2] - point[2]], normal);
        Self { c0, c }
    }
    #[inline]
    fn side(&self, p: [usize; 3]) -> Side {
        let v =
            self.c0 + self.c[0] * p[0] as f64 + self.c[1] * p[1] as f64 + self.c[2] * p[2] as f64;
        if v >= 0.0 {
            Side::Right
        } else {
            Side::Left
        }
    }
}

/// The side of world point `x` (the same rule as [`SidePlane::side`] for voxel centres).
fn side_of_world(sp: &SplitPlane, x: [f64; 3]) -> Side {
    let d = [0, 1, 2].map(|a| x[a] - sp.point[a]);
    if dot(d, sp.normal) >= 0.0 {
        Side::Right
    } else {
        Side::Left
    }
}

/// The plane of a split that does not depend on the masks ([`SideSplit::WorldPlane`],
/// [`SideSplit::VolumeCentre`]), with a unit normal; `None` for the others.
fn fixed_plane(g: &Geometry, split: &SideSplit) -> Option<SplitPlane> {
    let (point, normal) = match split {
        SideSplit::None | SideSplit::CondyleMidplane => return None,
        SideSplit::WorldPlane { point, normal } => (*point, *normal),
        SideSplit::VolumeCentre => {
            let sh = g.shape();
            let c = [0, 1, 2].map(|a| (sh[a] as f64 - 1.0) / 2.0);
            (g.voxel_to_world(c), [1.0, 0.0, 0.0])
        }
    };
    // `NvConfig::validate` has checked that the normal is finite and non-zero.
    let n = grid::norm(normal);
    Some(SplitPlane {
        point,
        normal: normal.map(|v| v / n),
    })
}

/// A condyle candidate: one of MC's 26-connected components.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    voxels: usize,
    /// Centroid, world mm.
    centroid: [f64; 3],
}

/// MC's components as the split sees them.
#[derive(Debug, Clone)]
struct Condyles {
    /// Number of 26-connected components of MC.
    components: usize,
    /// The largest and the second largest, if any.
    largest: Option<Candidate>,
    second: Option<Candidate>,
}

impl Condyles {
    /// MC's 26-connected components inside its bounding box `b` (run-based, no label volume:
    /// [`negvol_metrics::components::component_stats`]).
    fn find(mc: ArrayView3<bool>, b: &Bbox, g: &Geometry) -> Result<Self> {
        let comps = if b.is_empty() {
            Vec::new()
        } else {
            component_stats(mc.slice(b.slice()), Connectivity::TwentySix)?
        };
        let cand = |i: usize| {
            comps.get(i).map(|c| {
                let local = c.centroid();
                Candidate {
                    voxels: c.voxels,
                    centroid: g.voxel_to_world([0, 1, 2].map(|a| b.lo[a] as f64 + local[a])),
                }
            })
        };
        Ok(Self {
            components: comps.len(),
            largest: cand(0),
            second: cand(1),
        })
    }
    /// The two condyles: the two largest components, if the second holds at least
    /// [`CONDYLE_COMPONENT_FRACTION`] of the largest.
    fn pair(&self) -> Option<[Candidate; 2]> {
        match (self.largest, self.second) {
            (Some(a), Some(b))
                if b.voxels as f64 >= CONDYLE_COMPONENT_FRACTION * a.voxels as f64 =>
            {
                Some([a, b])
            }
            _ => None,
        }
    }
}

/// World point as text, mm.
fn mm(x: [f64; 3]) -> String {
    format!("({:.1}, {:.1}, {:.1}) mm", x[0], x[1], x[2])
}

/// The line between the condyles is more than this angle from world `x` when the `x`
/// component of its unit direction is below this value (cos 60 deg).
const OBLIQUE_AXIS_COS: f64 = 0.5;

/// The plane half-way between condyle centroids `a` and `b` (world mm), its normal along
/// `b - a` turned toward world `+x` (the patient's right); `None` when the centroids are
/// closer than `min_sep` mm (no direction to split along). The flag says whether the line is
/// more than 60 degrees from world `x` (then left and right rest on a small `x` component).
fn midplane(a: [f64; 3], b: [f64; 3], min_sep: f64) -> Option<(SplitPlane, bool)> {
    let d = [0, 1, 2].map(|i| b[i] - a[i]);
    let len = grid::norm(d);
    if !(len.is_finite() && len >= min_sep) {
        return None;
    }
    let sign = if d[0] < 0.0 { -1.0 } else { 1.0 };
    let normal = d.map(|v| sign * v / len);
    let point = [0, 1, 2].map(|i| 0.5 * (a[i] + b[i]));
    Some((SplitPlane { point, normal }, normal[0] < OBLIQUE_AXIS_COS))
}

/// How the volume was split, and what the split has to say per side (indexed by
/// [`side_index`]).
struct Split {
    plane: Option<SplitPlane>,
    issues: [Vec<Issue>; 3],
    /// Why the volume was not split (for the asymmetry note).
    not_split: &'static str,
}

impl Split {
    fn decide(cfg: &NvConfig, g: &Geometry, condyles: Option<&Condyles>) -> Self {
        let mut issues: [Vec<Issue>; 3] = Default::default();
        let min_sp = g.spacing().iter().cloned().fold(f64::INFINITY, f64::min);
        if let Some(plane) = fixed_plane(g, &cfg.side_split) {
            // The sanity check of a plane split: both condyles on one side.
            if let Some([a, b]) = condyles.and_then(Condyles::pair) {
                let (sa, sb) = (
                    side_of_world(&plane, a.centroid),
                    side_of_world(&plane, b.centroid),
                );
                if sa == sb {
                    let other = if sa == Side::Left { "right" } else { "left" };
                    issues[side_index(sa)].push(Issue::new(
                        IssueCode::BothCondylesOneSide,
                        format!(
                            "both condyles are on the {} side of the split plane (point {}, \
                             normal ({:.3}, {:.3}, {:.3})): MC's two largest components \
                             ({} voxels, centroid {}; {} voxels, centroid {}) are measured as \
                             one joint and the {other} side has none. The affine probably does \
                             not put the mid-sagittal plane there (e.g. the world origin at a \
                             corner of the field of view): use side_split = condyle_midplane, \
                             or set side_split.world_plane between the condyles",
                            sa.name(),
                            mm(plane.point),
                            plane.normal[0],
                            plane.normal[1],
                            plane.normal[2],
                            a.voxels,
                            mm(a.centroid),
                            b.voxels,
                            mm(b.centroid),
                        ),
                    ));
                }
            }
            return Self {
                plane: Some(plane),
                issues,
                not_split: "",
            };
        }
        let Some(c) = condyles.filter(|_| cfg.side_split == SideSplit::CondyleMidplane) else {
            return Self {
                plane: None,
                issues,
                not_split: "side_split = none",
            };
        };
        let why = match (c.largest, c.second, c.pair()) {
            (_, _, Some([a, b])) => match midplane(a.centroid, b.centroid, min_sp) {
                Some((plane, oblique)) => {
                    if oblique {
                        for s in [Side::Left, Side::Right] {
                            issues[side_index(s)].push(Issue::new(
                                IssueCode::SplitAxisOblique,
                                format!(
                                    "the line between the condyles (centroids {} and {}) is \
                                     {:.0} degrees from world x: left and right are named by \
                                     the sign of its x component, which the affine may have \
                                     wrong; check the orientation",
                                    mm(a.centroid),
                                    mm(b.centroid),
                                    plane.normal[0].clamp(-1.0, 1.0).acos().to_degrees()
                                ),
                            ));
                        }
                    }
                    return Self {
                        plane: Some(plane),
                        issues,
                        not_split: "",
                    };
                }
                None => format!(
                    "the centroids of MC's two largest components ({} and {} voxels) coincide \
                     at {}, so they give no direction to split along",
                    a.voxels,
                    b.voxels,
                    mm(a.centroid)
                ),
            },
            (Some(a), Some(b), None) => format!(
                "MC's second largest 26-connected component ({} voxels, centroid {}) holds \
                 {:.1}% of the largest ({} voxels, centroid {}), below the {}% that counts as \
                 a condyle ({} components in all)",
                b.voxels,
                mm(b.centroid),
                100.0 * b.voxels as f64 / a.voxels as f64,
                a.voxels,
                mm(a.centroid),
                100.0 * CONDYLE_COMPONENT_FRACTION,
                c.components
            ),
            (Some(a), _, _) => format!(
                "MC is a single 26-connected component ({} voxels, centroid {})",
                a.voxels,
                mm(a.centroid)
            ),
            (None, _, _) => "MC has no voxel".to_string(),
        };
        issues[side_index(Side::Whole)].push(Issue::new(
            IssueCode::NoSecondCondyle,
            format!(
                "side_split = condyle_midplane found one condyle only: {why}; the volume is \
                 measured as one joint (side whole). If it holds both joints, MC's condyles \
                 are joined or one is missing: check MC, or set side_split.world_plane"
            ),
        ));
        Self {
            plane: None,
            issues,
            not_split: "side_split = condyle_midplane found a single condyle",
        }
    }
}

fn side_of(plane: &Option<SidePlane>, p: [usize; 3]) -> Side {
    match plane {
        None => Side::Whole,
        Some(pl) => pl.side(p),
    }
}

/// Per-side summary of the condyle from one scan of the full mask.
#[derive(Debug, Clone, Copy)]
struct McScan {
    count: usize,
    bbox: Bbox,
    top_s: f64,
    top: [usize; 3],
}

impl McScan {
    fn new() -> Self {
        Self {
            count: 0,
            bbox: Bbox::empty(),
            top_s: f64::NEG_INFINITY,
            top: [0; 3],
        }
    }
    fn merge(mut self, o: McScan) -> McScan {
        self.count += o.count;
        self.bbox = self.bbox.union(&o.bbox);
        if o.top_s > self.top_s {
            self.top_s = o.top_s;
            self.top = o.top;
        }
        self
    }
}

fn side_index(s: Side) -> usize {
    match s {
        Side::Left => 0,
        Side::Right => 1,
        Side::Whole => 2,
    }
}

/// Superior coordinate `s(ijk) = c0 + c . ijk` (world mm along the superior direction).
#[derive(Debug, Clone, Copy)]
struct Height {
    c0: f64,
    c: [f64; 3],
}

impl Height {
    fn new(g: &Geometry, sup: [f64; 3]) -> Self {
        let lin = Lin::of(g);
        let a = g.affine();
        let c = [
            dot(lin.apply([1.0, 0.0, 0.0]), sup),
            dot(lin.apply([0.0, 1.0, 0.0]), sup),
            dot(lin.apply([0.0, 0.0, 1.0]), sup),
        ];
        Self {
            c0: dot([a[0][3], a[1][3], a[2][3]], sup),
            c,
        }
    }
    #[inline]
    fn at(&self, p: [usize; 3]) -> f64 {
        self.c0 + self.c[0] * p[0] as f64 + self.c[1] * p[1] as f64 + self.c[2] * p[2] as f64
    }
}

/// Per-side scan results of both masks and their overlap.
struct Scans {
    mc: [McScan; 3],
    tb: [McScan; 3],
    overlap: usize,
    first_overlap: Option<[usize; 3]>,
}

/// Scans both masks once, in parallel over `i` planes and row by row (empty rows are skipped
/// with a vectorised test): per side count, bounding box and most superior voxel of each
/// mask, and the voxels they share. `mc` and `tb` are the box of the full grid that starts at
/// `lo` (full-grid indices are reported).
fn scan(
    mc: ArrayView3<bool>,
    tb: ArrayView3<bool>,
    lo: [usize; 3],
    plane: &Option<SidePlane>,
    h: &Height,
) -> Scans {
    let empty = || Scans {
        mc: [McScan::new(); 3],
        tb: [McScan::new(); 3],
        overlap: 0,
        first_overlap: None,
    };
    let visit = |acc: &mut [McScan; 3], q: [usize; 3]| {
        let p = [lo[0] + q[0], lo[1] + q[1], lo[2] + q[2]];
        let s = &mut acc[side_index(side_of(plane, p))];
        s.count += 1;
        s.bbox.add(p);
        let z = h.at(p);
        if z > s.top_s {
            s.top_s = z;
            s.top = p;
        }
    };
    let nk = mc.shape()[2];
    mc.axis_iter(Axis(0))
        .into_par_iter()
        .zip(tb.axis_iter(Axis(0)).into_par_iter())
        .enumerate()
        .fold(empty, |mut acc, (i, (pm, pt))| {
            for (j, (rm, rt)) in pm.outer_iter().zip(pt.outer_iter()).enumerate() {
                let (om, ot);
                let (sm, st) = match (rm.as_slice(), rt.as_slice()) {
                    (Some(a), Some(b)) => (a, b),
                    _ => {
                        om = rm.to_vec();
                        ot = rt.to_vec();
                        (&om[..], &ot[..])
                    }
                };
                let (am, at) = (grid::any_true(sm), grid::any_true(st));
                for k in 0..nk {
                    let (vm, vt) = (am && sm[k], at && st[k]);
                    if vm {
                        visit(&mut acc.mc, [i, j, k]);
                    }
                    if vt {
                        visit(&mut acc.tb, [i, j, k]);
                    }
                    if vm && vt {
                        acc.overlap += 1;
                        if acc.first_overlap.is_none() {
                            acc.first_overlap = Some([lo[0] + i, lo[1] + j, lo[2] + k]);
                        }
                    }
                    if !(am || at) {
                        break;
                    }
                }
            }
            acc
        })
        .reduce(empty, |a, b| Scans {
            mc: [0, 1, 2].map(|s| a.mc[s].merge(b.mc[s])),
            tb: [0, 1, 2].map(|s| a.tb[s].merge(b.tb[s])),
            overlap: a.overlap + b.overlap,
            first_overlap: match (a.first_overlap, b.first_overlap) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            },
        })
}

/// Derives the negative volume of each joint from the condyle (MC) and temporal-bone (TB)
/// masks, and measures it (DESIGN.md, "The negative volume").
///
/// Steps, per side of the mid-sagittal plane ([`NvConfig::side_split`]):
/// 1. head = MC voxels within `head_depth_mm` (along superior) of MC's most superior point;
/// 2. a working box = the head's bounding box grown by `max_distance_mm`; all further work is
///    done on it;
/// 3. normals = normalised gradient of the Gaussian-smoothed (`normal_sigma_mm`) signed
///    distance field of MC (exact EDT), at each head-surface voxel (a head voxel with a
///    6-neighbour outside MC; the cut face between head and neck casts no rays);
/// 4. [`Method::Rays`]: from each head-surface voxel centre a ray is marched along its normal
///    in steps of `step_mm`; it leaves the condyle and enters TB where the trilinearly
///    interpolated masks cross 0.5. A ray that meets TB within `max_gap_mm` sweeps the free
///    voxels it crosses; one that meets TB farther, never meets it within `max_distance_mm`,
///    leaves the volume or re-enters the condyle sweeps nothing.
///    [`Method::Between`]: the ellipse test on the EDT feature transforms (see [`Method`]);
/// 5. clean-up: closing with a ball of `closing_radius_mm`, minus MC and TB, keep the
///    26-connected components touching (sharing a face with) both bones; what is removed is
///    counted in the report ([`SideReport::removed_volume_mm3`]);
/// 6. measures: volume, ray widths (always from the rays, whichever method made the mask).
///
/// Side-level problems (no condyle, no TB within reach, no contact, head pointing away) are
/// reported as [`Issue`]s in the side's report; use [`NvResult::require_nv`] to turn "no NV
/// anywhere" into an error.
///
/// # Errors
/// Invalid configuration (including a `step_mm` or `closing_radius_mm` out of range for the
/// grid's spacing), mismatched geometries, an empty MC or TB mask, or overlapping masks
/// under [`OverlapPolicy::Error`].
pub fn derive_nv(mc: &Volume<bool>, tb: &Volume<bool>, cfg: &NvConfig) -> Result<NvResult> {
    cfg.validate()?;
    check_same_grid(mc, tb, "MC vs TB")?;
    let g = mc.geometry().clone();
    let sup = cfg.superior_unit()?;
    // The grid-dependent limits, before any work.
    let min_sp = g.spacing().iter().cloned().fold(f64::INFINITY, f64::min);
    cfg.step_for(min_sp)?;
    cfg.closing_for(g.spacing())?;
    let fixed = fixed_plane(&g, &cfg.side_split).map(|p| SidePlane::new(&g, &p));
    let h = Height::new(&g, sup);

    // A fixed plane splits in the first scan; `CondyleMidplane` scans without a plane first
    // (for MC's bounding box) and again once the condyles have given the plane.
    let mut scans = scan(mc.view(), tb.view(), [0; 3], &fixed, &h);
    let mc_box = scans.mc.iter().fold(Bbox::empty(), |b, s| b.union(&s.bbox));
    if scans.mc.iter().all(|s| s.count == 0) {
        return Err(NvError::EmptyMask {
            which: "MC",
            shape: g.shape(),
        });
    }
    if scans.tb.iter().all(|s| s.count == 0) {
        return Err(NvError::EmptyMask {
            which: "TB",
            shape: g.shape(),
        });
    }
    let (n_overlap, first) = (scans.overlap, scans.first_overlap);
    if n_overlap > 0 && cfg.overlap == OverlapPolicy::Error {
        return Err(NvError::MasksOverlap {
            count: n_overlap,
            first: first.unwrap_or([0; 3]),
        });
    }

    let condyles = (cfg.side_split != SideSplit::None)
        .then(|| Condyles::find(mc.view(), &mc_box, &g))
        .transpose()?;
    let mut split = Split::decide(cfg, &g, condyles.as_ref());
    let plane = split.plane.as_ref().map(|p| SidePlane::new(&g, p));
    if fixed.is_none() && plane.is_some() {
        // Assign the sides: a second scan of the box that holds both masks.
        let b = scans
            .mc
            .iter()
            .chain(&scans.tb)
            .fold(Bbox::empty(), |b, s| b.union(&s.bbox));
        scans = scan(
            mc.view().slice(b.slice()),
            tb.view().slice(b.slice()),
            b.lo,
            &plane,
            &h,
        );
    }
    let (mc_scan, tb_scan) = (scans.mc, scans.tb);
    let sides: Vec<Side> = match plane {
        None => vec![Side::Whole],
        Some(_) => vec![Side::Left, Side::Right],
    };
    let mut nv = Array3::from_elem(g.shape(), false);
    let mut reports = Vec::new();
    let mut outputs = Vec::new();
    for &side in &sides {
        let ctx = SideCtx {
            g: &g,
            mc: mc.view(),
            tb: tb.view(),
            cfg,
            plane: &plane,
            h: &h,
            side,
            sup,
        };
        let (mut rep, out, crop) =
            ctx.run(&mc_scan[side_index(side)], &tb_scan[side_index(side)])?;
        // What the split found comes first: it explains the side's other issues.
        let split_issues = std::mem::take(&mut split.issues[side_index(side)]);
        rep.issues.splice(0..0, split_issues);
        if n_overlap > 0 {
            rep.issues.push(Issue::new(
                IssueCode::OverlapResolved,
                format!(
                    "{n_overlap} voxel(s) were in both MC and TB; counted as {}",
                    if cfg.overlap == OverlapPolicy::PreferMc {
                        "MC"
                    } else {
                        "TB"
                    }
                ),
            ));
        }
        if let Some((b, m)) = crop {
            Zip::from(nv.slice_mut(b.slice()))
                .and(&m)
                .for_each(|o, &v| *o |= v);
        }
        reports.push(rep);
        outputs.push(out);
    }
    let total = reports.iter().map(|r| r.nv_volume_mm3).sum();
    let asymmetry = Asymmetry::of(
        reports.iter().find(|r| r.side == Side::Left),
        reports.iter().find(|r| r.side == Side::Right),
        split.not_split,
    );
    let report = NvReport {
        config: cfg.clone(),
        shape: g.shape(),
        spacing: g.spacing(),
        orientation: g.orientation_code(),
        overlap_voxels: n_overlap,
        sides: reports,
        total_volume_mm3: total,
        asymmetry,
        split_plane: split.plane,
    };
    let nv = Volume::new(nv, g).map_err(|source| NvError::Geometry {
        what: "NV".into(),
        source,
    })?;
    Ok(NvResult {
        nv,
        sides: outputs,
        report,
    })
}

struct SideCtx<'a> {
    g: &'a Geometry,
    mc: ArrayView3<'a, bool>,
    tb: ArrayView3<'a, bool>,
    cfg: &'a NvConfig,
    plane: &'a Option<SidePlane>,
    h: &'a Height,
    side: Side,
    sup: [f64; 3],
}

/// Outcome of one ray.
enum Ray {
    Hit { exit: f64, entry: f64 },
    TooLong(f64),
    Missed,
    LeftVolume,
    Blocked,
    BeyondGap,
}

impl SideCtx<'_> {
    fn in_side(&self, p: [usize; 3]) -> bool {
        side_of(self.plane, p) == self.side
    }

    /// MC and TB of this side on box `b` (overlap resolved per policy).
    fn crop_masks(&self, b: &Bbox) -> (Array3<bool>, Array3<bool>) {
        let sh = b.shape();
        let mut mc = Array3::from_elem(sh, false);
        let mut tb = Array3::from_elem(sh, false);
        let src_mc = self.mc.slice(b.slice());
        let src_tb = self.tb.slice(b.slice());
        let lo = b.lo;
        let prefer_mc = self.cfg.overlap == OverlapPolicy::PreferMc;
        Zip::indexed(&mut mc)
            .and(&mut tb)
            .and(&src_mc)
            .and(&src_tb)
            .par_for_each(|(i, j, k), m, t, &sm, &st| {
                if (sm || st) && self.in_side([lo[0] + i, lo[1] + j, lo[2] + k]) {
                    *m = sm && (prefer_mc || !st);
                    *t = st && !(*m);
                }
            });
        (mc, tb)
    }

    #[allow(clippy::type_complexity)]
    fn run(
        &self,
        mcs: &McScan,
        tbs: &McScan,
    ) -> Result<(SideReport, SideOutput, Option<(Bbox, Array3<bool>)>)> {
        let cfg = self.cfg;
        let g = self.g;
        let mut rep = SideReport::empty(self.side);
        let mut out = SideOutput {
            side: self.side,
            width_map: None,
            rays: Vec::new(),
        };
        rep.mc_voxels = mcs.count;
        if mcs.count == 0 {
            rep.issues.push(Issue::new(
                IssueCode::NoCondyle,
                format!("no condyle (MC) voxel on the {} side", self.side.name()),
            ));
            return Ok((rep, out, None));
        }
        rep.head_top_world = Some(g.voxel_to_world(mcs.top.map(|v| v as f64)));
        // 1. Head and working box.
        let cut = mcs.top_s - cfg.head_depth_mm;
        let mut head_box = Bbox::empty();
        {
            let sub = self.mc.slice(mcs.bbox.slice());
            for ((i, j, k), &m) in sub.indexed_iter() {
                let p = [mcs.bbox.lo[0] + i, mcs.bbox.lo[1] + j, mcs.bbox.lo[2] + k];
                if m && self.in_side(p) && self.h.at(p) >= cut {
                    head_box.add(p);
                }
            }
        }
        let shape = g.shape();
        let crop = head_box.grow(grid::margin_voxels(g, cfg.max_distance_mm), shape);
        rep.crop_lo = Some(crop.lo);
        rep.crop_hi = Some(crop.hi);
        let cg = grid::crop_geometry(g, &crop);
        let lin = Lin::of(&cg);
        let (mc_c, tb_c) = self.crop_masks(&crop);
        let hb = head_box.relative_to(&crop);
        let csh = crop.shape();
        let mut head = Array3::from_elem(csh, false);
        let ch = Height::new(&cg, self.sup);
        Zip::indexed(head.slice_mut(hb.slice()))
            .and(mc_c.slice(hb.slice()))
            .for_each(|(i, j, k), o, &m| {
                *o = m && ch.at([hb.lo[0] + i, hb.lo[1] + j, hb.lo[2] + k]) >= cut;
            });
        rep.head_voxels = grid::count(head.view());
        let n_tb = grid::count(tb_c.view());
        if n_tb == 0 {
            rep.issues.push(Issue::new(
                IssueCode::NoTemporalBone,
                format!(
                    "no temporal-bone (TB) voxel within max_distance_mm = {} mm of the condyle \
                     head on the {} side (TB voxels on this side: {})",
                    cfg.max_distance_mm,
                    self.side.name(),
                    tbs.count
                ),
            ));
            return Ok((rep, out, None));
        }
        // Fraction of TB in the box above the head's top (for the "points away" check).
        let tb_above = Zip::indexed(&tb_c).fold(0usize, |a, (i, j, k), &t| {
            a + (t && ch.at([i, j, k]) > mcs.top_s) as usize
        }) as f64
            / n_tb as f64;

        // 2. Head surface and normals.
        let surface: Vec<[usize; 3]> = {
            let mut v = Vec::new();
            for ((i, j, k), &m) in head.slice(hb.slice()).indexed_iter() {
                if !m {
                    continue;
                }
                let p = [hb.lo[0] + i, hb.lo[1] + j, hb.lo[2] + k];
                let boundary = [0usize, 1, 2].iter().any(|&a| {
                    let full = p[a] + crop.lo[a];
                    full == 0 || full + 1 >= shape[a] || {
                        let mut q = p;
                        q[a] -= 1;
                        let mut r = p;
                        r[a] += 1;
                        !mc_c[q] || !mc_c[r]
                    }
                });
                if boundary {
                    v.push(p);
                }
            }
            v
        };
        let normals = self.normals(&mc_c, &hb, &surface, &cg, &lin)?;

        // 3. Rays.
        let spacing = g.spacing();
        let min_sp = spacing.iter().cloned().fold(f64::INFINITY, f64::min);
        let step = cfg.step_for(min_sp)?;
        // Sub-voxel ray origins: `ray_density^2` per surface voxel, spread over the tangent
        // plane at `min_spacing / ray_density`, so diverging rays still cover every voxel.
        let nd = cfg.ray_density.max(1);
        let offsets: Vec<(f64, f64)> = (0..nd * nd)
            .map(|q| {
                let f = |a: usize| ((a as f64 + 0.5) / nd as f64 - 0.5) * min_sp;
                (f(q / nd), f(q % nd))
            })
            .collect();
        let cast = |classify: bool| -> Vec<Option<Vec<Ray>>> {
            surface
                .par_iter()
                .zip(normals.par_iter())
                .map(|(p, n)| {
                    n.map(|n| {
                        let (t1, t2) = tangents(n);
                        let dv = lin.apply_inv(n);
                        offsets
                            .iter()
                            .map(|&(a, b)| {
                                let o = lin.apply_inv([0, 1, 2].map(|c| a * t1[c] + b * t2[c]));
                                let start = [0, 1, 2].map(|c| p[c] as f64 + o[c]);
                                march(&mc_c, &tb_c, start, dv, step, cfg, &crop, shape, classify)
                            })
                            .collect()
                    })
                })
                .collect()
        };
        // Rays are cut at max_gap_mm; only when none meets TB are they marched to
        // max_distance_mm, to say why in the report.
        let mut outcomes = cast(false);
        let any_hit = outcomes
            .iter()
            .flatten()
            .flatten()
            .any(|r| matches!(r, Ray::Hit { .. }));
        if !any_hit {
            outcomes = cast(true);
        }
        let lat_tol2 = (LATERAL_TOLERANCE * min_sp).powi(2);
        let mut counts = RayCounts::default();
        let mut swept = Array3::from_elem(csh, false);
        let mut widths = Vec::new();
        let mut nearest_long = f64::INFINITY;
        let mut wmap = Array3::<f32>::zeros(hb.shape());
        for ((p, n), o) in surface.iter().zip(&normals).zip(&outcomes) {
            let (Some(n), Some(rays)) = (n, o) else {
                counts.no_normal += 1;
                continue;
            };
            let (t1, t2) = tangents(*n);
            let dv = lin.apply_inv(*n);
            let (mut wsum, mut wn) = (0.0, 0usize);
            for (ray, &(a, b)) in rays.iter().zip(&offsets) {
                counts.cast += 1;
                match *ray {
                    Ray::Hit { exit, entry } => {
                        counts.hit += 1;
                        let w = entry - exit;
                        widths.push(w);
                        wsum += w;
                        wn += 1;
                        if cfg.method == Method::Rays {
                            let o = lin.apply_inv([0, 1, 2].map(|c| a * t1[c] + b * t2[c]));
                            let mut t = exit;
                            while t < entry {
                                let q = [0, 1, 2].map(|c| p[c] as f64 + o[c] + t * dv[c]);
                                if let Some(v) = grid::nearest(q, &csh) {
                                    // Only voxels whose centre the ray passes close to: plain
                                    // rounding would widen the NV rim by half a voxel.
                                    let d = lin.apply([0, 1, 2].map(|c| v[c] as f64 - q[c]));
                                    let along = dot(d, *n);
                                    let lat2 = dot(d, d) - along * along;
                                    if lat2 <= lat_tol2 && !mc_c[v] && !tb_c[v] {
                                        swept[v] = true;
                                    }
                                }
                                t += step;
                            }
                        }
                    }
                    Ray::TooLong(w) => {
                        counts.too_long += 1;
                        nearest_long = nearest_long.min(w);
                    }
                    Ray::Missed => counts.missed += 1,
                    Ray::LeftVolume => counts.left_volume += 1,
                    Ray::Blocked => counts.blocked += 1,
                    Ray::BeyondGap => counts.beyond_gap += 1,
                }
            }
            if wn > 0 {
                let w = wsum / wn as f64;
                wmap[[p[0] - hb.lo[0], p[1] - hb.lo[1], p[2] - hb.lo[2]]] = w as f32;
                out.rays.push(RayRecord {
                    origin_voxel: [0, 1, 2].map(|a| p[a] + crop.lo[a]),
                    direction: *n,
                    width_mm: w,
                });
            }
        }
        rep.rays = counts.clone();
        if !widths.is_empty() {
            let n = widths.len() as f64;
            rep.width = Some(WidthStats {
                mean_mm: widths.iter().sum::<f64>() / n,
                min_mm: widths.iter().cloned().fold(f64::INFINITY, f64::min),
                max_mm: widths.iter().cloned().fold(0.0, f64::max),
                rays: widths.len(),
            });
        }
        let head_geo = grid::crop_geometry(g, &head_box);
        out.width_map = Volume::new(wmap, head_geo).ok();
        if counts.hit == 0 {
            let away = tb_above < 0.5;
            let msg = if nearest_long.is_finite() {
                format!(
                    "no ray from the {} condyle head met TB within max_gap_mm = {} mm ({} rays \
                     cast; the nearest TB along a ray was {:.2} mm away)",
                    self.side.name(),
                    cfg.max_gap_mm,
                    counts.cast,
                    nearest_long
                )
            } else {
                format!(
                    "no ray from the {} condyle head met TB within max_distance_mm = {} mm ({} \
                     rays cast: {} missed, {} left the volume, {} re-entered the condyle)",
                    self.side.name(),
                    cfg.max_distance_mm,
                    counts.cast,
                    counts.missed,
                    counts.left_volume,
                    counts.blocked
                )
            };
            rep.issues.push(Issue::new(IssueCode::NoContact, msg));
            if away {
                rep.issues.push(Issue::new(
                    IssueCode::HeadPointsAway,
                    format!(
                        "only {:.0}% of the nearby TB lies above the condyle's top: the head \
                         points away from the temporal bone (check the affine / superior \
                         direction, or whether MC and TB are swapped)",
                        100.0 * tb_above
                    ),
                ));
            }
            return Ok((rep, out, None));
        }

        // 4. The NV candidate set on a sub-box.
        let (mut cand, cb) = match cfg.method {
            Method::Rays => {
                let mut b = Bbox::empty();
                for ((i, j, k), &s) in swept.indexed_iter() {
                    if s {
                        b.add([i, j, k]);
                    }
                }
                (swept, b)
            }
            Method::Between => {
                let b = self.between(&mc_c, &tb_c, &head, &hb, &lin, spacing)?;
                let mut bb = Bbox::empty();
                for ((i, j, k), &s) in b.indexed_iter() {
                    if s {
                        bb.add([i, j, k]);
                    }
                }
                (b, bb)
            }
        };
        // 5. Clean-up.
        let r = cfg.closing_for(spacing)?;
        let (mut removed, mut removed_voxels) = (0, 0usize);
        if !cb.is_empty() {
            let offs = grid::ball_offsets(&lin, spacing, r);
            let m =
                [0, 1, 2].map(|a| offs.iter().map(|o| o[a].unsigned_abs()).max().unwrap_or(0) + 1);
            let wb = cb.grow(m, csh);
            if offs.len() > 1 {
                // Closing with the bones as walls: dilate the NV, add the bones, erode, keep
                // what the dilation reached. Holes between the NV and a bone are filled
                // like holes inside the NV.
                let d = grid::morph(cand.slice(wb.slice()), &offs, true);
                let mut walls = d.clone();
                Zip::from(&mut walls)
                    .and(mc_c.slice(wb.slice()))
                    .and(tb_c.slice(wb.slice()))
                    .for_each(|w, &m, &t| *w = *w || m || t);
                let e = grid::morph(walls.view(), &offs, false);
                Zip::from(cand.slice_mut(wb.slice()))
                    .and(&d)
                    .and(&e)
                    .for_each(|c, &d, &e| *c = d && e);
            }
            Zip::from(cand.slice_mut(wb.slice()))
                .and(mc_c.slice(wb.slice()))
                .and(tb_c.slice(wb.slice()))
                .for_each(|c, &m, &t| *c = *c && !m && !t);
            if cfg.keep_touching_components {
                (removed, removed_voxels) = keep_touching_both(&mut cand, &mc_c, &tb_c, &wb)?;
            }
        }
        let n = grid::count(cand.view());
        let vv = g.voxel_volume_mm3();
        rep.removed_components = removed;
        rep.removed_volume_mm3 = removed_voxels as f64 * vv;
        rep.issues
            .extend(components_issue(removed, removed_voxels, n, vv));
        if n == 0 {
            rep.issues.push(Issue::new(
                IssueCode::NoComponentTouchingBoth,
                format!(
                    "{} rays met TB but no swept region touches both MC and TB after clean-up",
                    counts.hit
                ),
            ));
            return Ok((rep, out, None));
        }
        let mut c = [0.0; 3];
        for ((i, j, k), &v) in cand.indexed_iter() {
            if v {
                c[0] += i as f64;
                c[1] += j as f64;
                c[2] += k as f64;
            }
        }
        rep.nv_centroid_world = Some(cg.voxel_to_world(c.map(|x| x / n as f64)));
        rep.has_nv = true;
        rep.nv_voxels = n;
        rep.nv_volume_mm3 = n as f64 * vv;
        Ok((rep, out, Some((crop, cand))))
    }

    /// Unit outward normals (world) at the surface voxels, from the smoothed SDF of MC.
    fn normals(
        &self,
        mc_c: &Array3<bool>,
        hb: &Bbox,
        surface: &[[usize; 3]],
        cg: &Geometry,
        lin: &Lin,
    ) -> Result<Vec<Option<[f64; 3]>>> {
        let sp = cg.spacing();
        let sigma = self.cfg.normal_sigma_mm;
        let nb = hb.grow(
            grid::margin_voxels(
                cg,
                3.0 * sigma + 2.0 * sp.iter().cloned().fold(0.0, f64::max),
            ),
            mc_c.dim().into(),
        );
        let sub = mc_c.slice(nb.slice());
        let outside = squared_edt(sub, sp)?;
        let inv = sub.map(|&m| !m);
        let inside = if inv.iter().any(|&v| v) {
            squared_edt(inv.view(), sp)?
        } else {
            Array3::zeros(sub.raw_dim())
        };
        let mut sdf = Array3::<f32>::zeros(sub.raw_dim());
        Zip::from(&mut sdf)
            .and(&outside)
            .and(&inside)
            .for_each(|s, &o, &i| *s = (o.sqrt() - i.sqrt()) as f32);
        grid::gaussian_smooth(&mut sdf, [0, 1, 2].map(|a| sigma / sp[a]));
        let sh = sdf.shape().to_vec();
        Ok(surface
            .iter()
            .map(|p| {
                let q = [0, 1, 2].map(|a| p[a] - nb.lo[a]);
                let mut gv = [0.0; 3];
                for a in 0..3 {
                    let mut lo = q;
                    let mut hi = q;
                    let mut d = 0.0;
                    if q[a] > 0 {
                        lo[a] -= 1;
                        d += 1.0;
                    }
                    if q[a] + 1 < sh[a] {
                        hi[a] += 1;
                        d += 1.0;
                    }
                    if d > 0.0 {
                        gv[a] = (sdf[hi] - sdf[lo]) as f64 / d;
                    }
                }
                let w = lin.grad_to_world(gv);
                let n = grid::norm(w);
                if n > 1e-6 && n.is_finite() {
                    Some([w[0] / n, w[1] / n, w[2] / n])
                } else {
                    None
                }
            })
            .collect())
    }

    /// The "between" candidate set on the working box.
    fn between(
        &self,
        mc_c: &Array3<bool>,
        tb_c: &Array3<bool>,
        head: &Array3<bool>,
        hb: &Bbox,
        lin: &Lin,
        spacing: [f64; 3],
    ) -> Result<Array3<bool>> {
        let cfg = self.cfg;
        let wmax = cfg.between_width();
        let csh: [usize; 3] = mc_c.dim().into();
        let bb = hb.grow(grid::margin_voxels(self.g, wmax), csh);
        let mut out = Array3::from_elem(csh, false);
        let tb_sub = tb_c.slice(bb.slice());
        if !tb_sub.iter().any(|&v| v) {
            return Ok(out);
        }
        let (_, fa) = feature_transform(head.slice(bb.slice()), spacing)?;
        let (_, fb) = feature_transform(tb_sub, spacing)?;
        let bsh = bb.shape();
        let unflat = |f: u32| {
            let f = f as usize;
            [f / (bsh[1] * bsh[2]), (f / bsh[2]) % bsh[1], f % bsh[2]]
        };
        let dist = |p: [usize; 3], q: [usize; 3]| {
            grid::norm(lin.apply([0, 1, 2].map(|a| p[a] as f64 - q[a] as f64)))
        };
        let eps = cfg.between_eps;
        Zip::indexed(out.slice_mut(bb.slice()))
            .and(mc_c.slice(bb.slice()))
            .and(tb_sub)
            .and(&fa)
            .and(&fb)
            .par_for_each(|(i, j, k), o, &m, &t, &a, &b| {
                if m || t {
                    return;
                }
                let x = [i, j, k];
                let (a, b) = (unflat(a), unflat(b));
                let ab = dist(a, b);
                *o = ab <= wmax && dist(a, x) + dist(x, b) <= (1.0 + eps) * ab;
            });
        Ok(out)
    }
}

/// Keeps the 26-connected components of `cand` inside box `wb` that share a face with a voxel
/// of `mc` and with a voxel of `tb`; returns the number of removed components and their
/// voxels (an error only from the labelling's size limit).
///
/// 26-connectivity: against a bone's voxel staircase the NV is often joined to a few voxels
/// only by an edge or a corner (in a step of the staircase, once the bones are subtracted).
/// Under 6-connectivity those became separate components touching one bone and were removed
/// on every case (6-31 per phantom, nearly all within one voxel, Chebyshev, of the kept NV;
/// crate README, "Component clean-up").
fn keep_touching_both(
    cand: &mut Array3<bool>,
    mc: &Array3<bool>,
    tb: &Array3<bool>,
    wb: &Bbox,
) -> Result<(usize, usize)> {
    let csh: [usize; 3] = cand.dim().into();
    let labelling = label_components(cand.slice(wb.slice()), Connectivity::TwentySix)?;
    let n = labelling.count();
    let lab = labelling.labels;
    let mut touch = vec![(false, false); n + 1];
    for ((i, j, k), &l) in lab.indexed_iter() {
        if l == 0 {
            continue;
        }
        let p = [wb.lo[0] + i, wb.lo[1] + j, wb.lo[2] + k];
        for q in grid::neighbours6(p, csh) {
            touch[l as usize].0 |= mc[q];
            touch[l as usize].1 |= tb[q];
        }
    }
    let removed = touch[1..].iter().filter(|t| !(t.0 && t.1)).count();
    let mut removed_voxels = 0;
    Zip::from(cand.slice_mut(wb.slice()))
        .and(&lab)
        .for_each(|c, &l| {
            if l > 0 {
                let t = touch[l as usize];
                *c = t.0 && t.1;
                removed_voxels += usize::from(!*c);
            }
        });
    Ok((removed, removed_voxels))
}

/// The [`IssueCode::ComponentsRemoved`] issue, when the removed voxels are more than
/// [`REMOVED_VOLUME_ISSUE_FRACTION`] of the candidate (kept + removed).
fn components_issue(
    removed: usize,
    removed_voxels: usize,
    kept_voxels: usize,
    voxel_mm3: f64,
) -> Option<Issue> {
    let total = kept_voxels + removed_voxels;
    if removed == 0 || total == 0 {
        return None;
    }
    let fraction = removed_voxels as f64 / total as f64;
    (fraction > REMOVED_VOLUME_ISSUE_FRACTION).then(|| {
        Issue::new(
            IssueCode::ComponentsRemoved,
            format!(
                "{removed} NV component(s) not touching both bones were removed: {:.1} mm3, \
                 {:.1}% of the candidate NV on this side (reported above {}%)",
                removed_voxels as f64 * voxel_mm3,
                100.0 * fraction,
                100.0 * REMOVED_VOLUME_ISSUE_FRACTION
            ),
        )
    })
}

/// A swept voxel's centre lies within this fraction of the smallest spacing of a ray
/// (perpendicular distance).
const LATERAL_TOLERANCE: f64 = 0.5;

/// Two unit vectors orthogonal to unit `n` and to each other.
fn tangents(n: [f64; 3]) -> ([f64; 3], [f64; 3]) {
    let h = if n[0].abs() < 0.9 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    let c = |a: [f64; 3], b: [f64; 3]| {
        [
            a[1] * b[2] - a[2] * b[1],
            a[2] * b[0] - a[0] * b[2],
            a[0] * b[1] - a[1] * b[0],
        ]
    };
    let t1 = c(n, h);
    let l = grid::norm(t1);
    let t1 = t1.map(|v| v / l);
    (t1, c(n, t1))
}

/// Marches one ray from crop voxel `p` with voxel-space direction `dv` (voxels per mm).
#[allow(clippy::too_many_arguments)]
fn march(
    mc: &Array3<bool>,
    tb: &Array3<bool>,
    p: [f64; 3],
    dv: [f64; 3],
    step: f64,
    cfg: &NvConfig,
    crop: &Bbox,
    full: [usize; 3],
    classify: bool,
) -> Ray {
    let mcv = mc.view();
    let tbv = tb.view();
    let sh = mc.shape();
    let at = |t: f64| [0, 1, 2].map(|a| p[a] + t * dv[a]);
    let mut t = 0.0;
    let mut prev_mc = grid::trilinear(&mcv, at(0.0));
    // Leave the condyle.
    let exit;
    loop {
        t += step;
        if t > cfg.max_distance_mm {
            return Ray::Missed;
        }
        let v = grid::trilinear(&mcv, at(t));
        if v < 0.5 {
            exit = if prev_mc >= 0.5 {
                t - step + step * (prev_mc - 0.5) / (prev_mc - v)
            } else {
                t - step
            };
            break;
        }
        prev_mc = v;
        if t > 3.0 {
            // Still inside the condyle 3 mm along the normal: the normal is wrong here.
            return Ray::Blocked;
        }
    }
    let mut prev_tb = grid::trilinear(&tbv, at(t));
    if prev_tb >= 0.5 {
        return Ray::Hit { exit, entry: exit };
    }
    loop {
        t += step;
        if t > cfg.max_distance_mm {
            return Ray::Missed;
        }
        let q = at(t);
        // Outside the working box: only possible where the box is clipped by the volume.
        if (0..3).any(|a| q[a] < -0.5 || q[a] > sh[a] as f64 - 0.5) {
            let on_edge = (0..3).any(|a| crop.lo[a] == 0 || crop.hi[a] == full[a]);
            return if on_edge {
                Ray::LeftVolume
            } else {
                Ray::Missed
            };
        }
        if !classify && t - exit > cfg.max_gap_mm + step {
            // It can no longer sweep anything; where it ends is only needed for diagnostics.
            return Ray::BeyondGap;
        }
        let v = grid::trilinear(&tbv, q);
        if v >= 0.5 {
            let entry = t - step + step * (0.5 - prev_tb) / (v - prev_tb);
            let w = entry - exit;
            return if w <= cfg.max_gap_mm {
                Ray::Hit { exit, entry }
            } else {
                Ray::TooLong(w)
            };
        }
        prev_tb = v;
        if grid::trilinear(&mcv, q) >= 0.5 {
            return Ray::Blocked;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::s;

    /// MC below `k = 2`, TB above `k = 6`, a free slab between them (the joint space).
    fn slab() -> (Array3<bool>, Array3<bool>, Array3<bool>) {
        let sh = [10, 10, 9];
        let mc = Array3::from_shape_fn(sh, |(_, _, k)| k < 2);
        let tb = Array3::from_shape_fn(sh, |(_, _, k)| k > 6);
        let mut nv = Array3::from_elem(sh, false);
        nv.slice_mut(s![0..5, .., 2..7]).fill(true);
        (mc, tb, nv)
    }

    fn whole(sh: [usize; 3]) -> Bbox {
        Bbox { lo: [0; 3], hi: sh }
    }

    #[test]
    fn diagonally_attached_voxels_are_kept_and_detached_ones_removed() {
        let (mc, mut tb, mut nv) = slab();
        // A voxel in a step of TB's staircase, attached to the NV by an edge only: it touches
        // TB but not MC, and 6-connectivity would have cut it off.
        tb[[4, 4, 6]] = true;
        nv[[4, 4, 6]] = false;
        nv[[5, 4, 6]] = true;
        // A detached pocket against TB, two voxels from the NV: removed.
        nv.slice_mut(s![8..10, 0..3, 5..7]).fill(true);
        let kept_before = 5 * 10 * 5;
        let (removed, voxels) = keep_touching_both(&mut nv, &mc, &tb, &whole([10, 10, 9])).unwrap();
        assert_eq!((removed, voxels), (1, 2 * 3 * 2));
        assert!(nv[[5, 4, 6]], "the edge-attached voxel must stay");
        assert!(!nv[[8, 0, 5]]);
        assert_eq!(grid::count(nv.view()), kept_before);
    }

    #[test]
    fn midplane_is_half_way_and_points_to_world_plus_x() {
        let (a, b) = ([110.0, 2.0, -1.0], [10.0, 0.0, 1.0]);
        // Either order gives the same plane, normal toward +x.
        for (p, q) in [(a, b), (b, a)] {
            let (sp, oblique) = midplane(p, q, 0.4).unwrap();
            assert!(!oblique);
            assert_eq!(sp.point, [60.0, 1.0, 0.0]);
            assert!(sp.normal[0] > 0.99 && (grid::norm(sp.normal) - 1.0).abs() < 1e-12);
            assert_eq!(side_of_world(&sp, a), Side::Right);
            assert_eq!(side_of_world(&sp, b), Side::Left);
        }
        // Condyles one above the other along y: still a plane, flagged as oblique.
        let (sp, oblique) = midplane([0.0, -40.0, 0.0], [1.0, 40.0, 0.0], 0.4).unwrap();
        assert!(oblique && sp.normal[0] > 0.0);
        // Coincident centroids give no direction.
        assert!(midplane([1.0; 3], [1.1, 1.0, 1.0], 0.4).is_none());
    }

    #[test]
    fn side_plane_on_the_grid_agrees_with_the_world_rule() {
        // An LPS-stored, oblique grid: the voxel rule and the world rule name the same sides.
        let (c, s) = (0.3f64.cos(), 0.3f64.sin());
        let a = [
            [-0.5 * c, 0.5 * s, 0.0, 40.0],
            [-0.5 * s, -0.5 * c, 0.0, 3.0],
            [0.0, 0.0, 0.7, -5.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let g = Geometry::new([20, 20, 20], a).unwrap();
        let sp = SplitPlane {
            point: [35.0, -1.0, 0.0],
            normal: [0.8, 0.6, 0.0],
        };
        let pl = SidePlane::new(&g, &sp);
        let (mut l, mut r) = (0, 0);
        for p in [
            [0, 0, 0],
            [19, 0, 3],
            [0, 19, 7],
            [19, 19, 19],
            [10, 10, 10],
            [4, 15, 2],
        ] {
            let x = g.voxel_to_world(p.map(|v| v as f64));
            let side = pl.side(p);
            assert_eq!(side, side_of_world(&sp, x), "{p:?} at {x:?}");
            l += usize::from(side == Side::Left);
            r += usize::from(side == Side::Right);
        }
        assert!(
            l > 0 && r > 0,
            "the points must straddle the plane ({l}, {r})"
        );
    }

    #[test]
    fn removed_components_are_an_issue_only_above_the_threshold() {
        // 1 % of the candidate is the limit.
        assert!(components_issue(0, 0, 1000, 0.064).is_none());
        assert!(components_issue(3, 10, 990, 0.064).is_none());
        let i = components_issue(2, 11, 989, 0.064).unwrap();
        assert_eq!(i.code, IssueCode::ComponentsRemoved);
        assert!(i.message.contains("0.7 mm3"), "{}", i.message);
        assert!(i.message.contains("1.1%"), "{}", i.message);
        // Everything removed (no NV left) is also reported.
        assert!(components_issue(1, 5, 0, 1.0).is_some());
    }
}
