// The pipeline against analytic joints: a ball "condyle head" on a cylindrical neck under a
// concentric spherical-shell "fossa" cap of known gap `w`. The NV is then the shell
// `R < r < R + w` inside the cap's cone, of volume `2π/3 (1 - cos θ0) ((R + w)^3 - R^3)`.

use approx::assert_relative_eq;
use ndarray::Array3;
use negvol::{
    derive_nv, AsymmetryUndefined, IssueCode, Method, NvConfig, NvError, OverlapPolicy, Side,
    SideSplit,
};
use negvol_volume::{Geometry, Volume};

const R: f64 = 5.0;
const SHELL: f64 = 3.0;
const THETA0: f64 = 50.0 * std::f64::consts::PI / 180.0;

struct Joint {
    centre: [f64; 3],
    axis: [f64; 3],
    w: f64,
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

impl Joint {
    fn mc(&self, x: [f64; 3]) -> bool {
        let d = sub(x, self.centre);
        let r2 = dot(d, d);
        if r2 <= R * R {
            return true;
        }
        // Neck: a cylinder of radius R/2 going 12 mm down the axis.
        let h = dot(d, self.axis);
        let radial2 = r2 - h * h;
        (-12.0..=0.0).contains(&h) && radial2 <= 0.25 * R * R
    }
    fn tb(&self, x: [f64; 3]) -> bool {
        let d = sub(x, self.centre);
        let r = dot(d, d).sqrt();
        r >= R + self.w && r <= R + self.w + SHELL && dot(d, self.axis) >= r * THETA0.cos()
    }
    fn truth_volume(&self) -> f64 {
        2.0 * std::f64::consts::PI / 3.0 * (1.0 - THETA0.cos()) * ((R + self.w).powi(3) - R.powi(3))
    }
}

fn masks(g: &Geometry, joints: &[Joint]) -> (Volume<bool>, Volume<bool>) {
    let mc = Array3::from_shape_fn(g.shape(), |(i, j, k)| {
        let x = g.voxel_to_world([i as f64, j as f64, k as f64]);
        joints.iter().any(|jt| jt.mc(x))
    });
    let tb = Array3::from_shape_fn(g.shape(), |(i, j, k)| {
        let x = g.voxel_to_world([i as f64, j as f64, k as f64]);
        joints.iter().any(|jt| jt.tb(x))
    });
    (
        Volume::new(mc, g.clone()).unwrap(),
        Volume::new(tb, g.clone()).unwrap(),
    )
}

/// A grid of `spacing` covering a 28 x 28 x 34 mm box centred on `centre` (RAS-aligned).
fn grid_around(centre: [f64; 3], spacing: [f64; 3]) -> Geometry {
    let ext = [28.0, 28.0, 34.0];
    let shape = [0, 1, 2].map(|a| (ext[a] / spacing[a]).round() as usize);
    let mut aff = [[0.0; 4]; 4];
    for a in 0..3 {
        aff[a][a] = spacing[a];
        aff[a][3] = centre[a] - ext[a] / 2.0 + if a == 2 { -4.0 } else { 0.0 };
    }
    aff[3][3] = 1.0;
    Geometry::new(shape, aff).unwrap()
}

fn whole() -> NvConfig {
    NvConfig {
        side_split: SideSplit::None,
        ..Default::default()
    }
}

#[test]
fn concentric_shell_volume_and_width() {
    let jt = Joint {
        centre: [0.3, -0.1, 0.17],
        axis: [0.0, 0.0, 1.0],
        w: 2.0,
    };
    let g = grid_around(jt.centre, [0.4; 3]);
    let (mc, tb) = masks(&g, &[jt]);
    let jt = Joint {
        centre: [0.3, -0.1, 0.17],
        axis: [0.0, 0.0, 1.0],
        w: 2.0,
    };
    for method in [Method::Rays, Method::Between] {
        let cfg = NvConfig { method, ..whole() };
        let res = derive_nv(&mc, &tb, &cfg).unwrap();
        let s = res.report.side(Side::Whole).unwrap();
        assert!(s.has_nv, "{:?}", s.issues);
        let truth = jt.truth_volume();
        let err = (s.nv_volume_mm3 - truth) / truth;
        eprintln!(
            "{method:?}: NV {:.1} mm3, truth {truth:.1} mm3 ({:+.1}%)",
            s.nv_volume_mm3,
            100.0 * err
        );
        // The cap's rim is a sharp edge: beyond it, voxels whose nearest TB point is the edge
        // pass the ellipse test of the "between" method in a wedge, so that method
        // overestimates here (about +28 %); the rays method is the reference.
        let tol = if method == Method::Rays { 0.08 } else { 0.35 };
        assert!(err.abs() < tol, "{method:?}: volume error {err}");
        let w = s.width.as_ref().unwrap();
        assert!((w.mean_mm - 2.0).abs() < 0.25, "mean width {}", w.mean_mm);
        // Rays at the cap rim meet the cone face obliquely, so the max can be longer.
        assert!(w.min_mm > 1.4 && w.max_mm <= 4.5, "{w:?}");
        // NV never overlaps a bone.
        assert!(res
            .nv
            .data()
            .iter()
            .zip(mc.data().iter().zip(tb.data()))
            .all(|(&n, (&m, &t))| !(n && (m || t))));
        // The report says what the mask holds.
        let n = res.nv.data().iter().filter(|&&v| v).count();
        assert_eq!(n, s.nv_voxels);
        assert_relative_eq!(s.nv_volume_mm3, n as f64 * 0.064, max_relative = 1e-9);
    }
}

#[test]
fn tilted_joint_on_oblique_grid() {
    // Joint axis tilted 15 degrees from superior; the grid rotated 20 degrees about x.
    let t = 15f64.to_radians();
    let jt = Joint {
        centre: [5.0, 3.0, -2.0],
        axis: [t.sin(), 0.0, t.cos()],
        w: 2.5,
    };
    let (c, s) = (20f64.to_radians().cos(), 20f64.to_radians().sin());
    let sp = 0.4;
    let n = [70, 70, 85];
    // Rotated grid whose centre is near the joint.
    let mut aff = [
        [sp, 0.0, 0.0, 0.0],
        [0.0, sp * c, -sp * s, 0.0],
        [0.0, sp * s, sp * c, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let g0 = Geometry::new(n, aff).unwrap();
    let mid = g0.voxel_to_world([35.0, 35.0, 47.0]);
    for r in 0..3 {
        aff[r][3] = jt.centre[r] - mid[r];
    }
    let g = Geometry::new(n, aff).unwrap();
    let (mc, tb) = masks(&g, &[Joint { ..jt }]);
    let res = derive_nv(&mc, &tb, &whole()).unwrap();
    let side = res.report.side(Side::Whole).unwrap();
    let truth = jt.truth_volume();
    let err = (side.nv_volume_mm3 - truth) / truth;
    eprintln!(
        "tilted: {:.1} vs {truth:.1} ({:+.1}%)",
        side.nv_volume_mm3,
        100.0 * err
    );
    assert!(err.abs() < 0.08, "volume error {err}");
    let w = side.width.as_ref().unwrap();
    assert!((w.mean_mm - 2.5).abs() < 0.3, "{w:?}");
}

#[test]
fn anisotropic_spacing() {
    let jt = Joint {
        centre: [0.0, 0.0, 0.0],
        axis: [0.0, 0.0, 1.0],
        w: 3.0,
    };
    let g = grid_around(jt.centre, [0.4, 0.5, 0.8]);
    let (mc, tb) = masks(&g, &[Joint { ..jt }]);
    let res = derive_nv(&mc, &tb, &whole()).unwrap();
    let side = res.report.side(Side::Whole).unwrap();
    let truth = jt.truth_volume();
    let err = (side.nv_volume_mm3 - truth) / truth;
    eprintln!(
        "anisotropic: {:.1} vs {truth:.1} ({:+.1}%)",
        side.nv_volume_mm3,
        100.0 * err
    );
    assert!(err.abs() < 0.12, "volume error {err}");
    assert!((side.width.as_ref().unwrap().mean_mm - 3.0).abs() < 0.4);
}

/// A left and a right upright joint, 40 mm apart at world x = -20 and +20 mm, with joint-space
/// widths `w_left` and `w_right` (mm).
fn upright_pair(w_left: f64, w_right: f64) -> [Joint; 2] {
    [(-20.0, w_left), (20.0, w_right)].map(|(x, w)| Joint {
        centre: [x, 0.0, 0.0],
        axis: [0.0, 0.0, 1.0],
        w,
    })
}

#[test]
fn both_sides_with_known_asymmetry() {
    let [left, right] = upright_pair(2.0, 3.5);
    let sp = 0.4;
    let shape = [150, 70, 85];
    let aff = [
        [sp, 0.0, 0.0, -30.0],
        [0.0, sp, 0.0, -14.0],
        [0.0, 0.0, sp, -18.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let g = Geometry::new(shape, aff).unwrap();
    let (vl, vr) = (left.truth_volume(), right.truth_volume());
    let (mc, tb) = masks(&g, &[left, right]);
    let res = derive_nv(&mc, &tb, &NvConfig::default()).unwrap();
    let l = res.report.side(Side::Left).unwrap();
    let r = res.report.side(Side::Right).unwrap();
    assert!(l.has_nv && r.has_nv);
    // The left head's centre falls on a voxel centre, so the cap's rim staircase is the same
    // all around and the sweep passes it by about one voxel everywhere: +9.8 % (every truth
    // voxel is found; the excess lies beyond the rim). Under the former 6-connected clean-up
    // 3.1 mm3 of it was cut off as "components" (+7.9 %).
    assert!(
        (l.nv_volume_mm3 - vl).abs() / vl < 0.11,
        "{} vs {vl}",
        l.nv_volume_mm3
    );
    assert!(
        (r.nv_volume_mm3 - vr).abs() / vr < 0.08,
        "{} vs {vr}",
        r.nv_volume_mm3
    );
    assert!(l.nv_centroid_world.unwrap()[0] < 0.0 && r.nv_centroid_world.unwrap()[0] > 0.0);
    let truth_ai = (vl - vr).abs() / (vl + vr);
    let ai = res.report.asymmetry.index.unwrap();
    eprintln!("asymmetry {ai:.3} vs {truth_ai:.3}");
    assert!((ai - truth_ai).abs() < 0.03);
    assert!((l.width.as_ref().unwrap().mean_mm - 2.0).abs() < 0.3);
    assert!((r.width.as_ref().unwrap().mean_mm - 3.5).abs() < 0.3);
    // The report is JSON.
    let j = serde_json::to_string(&res.report).unwrap();
    assert!(j.contains("\"left\"") && j.contains("asymmetry"));
}

fn one_joint(w: f64) -> (Volume<bool>, Volume<bool>) {
    let jt = Joint {
        centre: [0.0; 3],
        axis: [0.0, 0.0, 1.0],
        w,
    };
    masks(&grid_around([0.0; 3], [0.5; 3]), &[jt])
}

#[test]
fn empty_masks_are_errors() {
    let (mc, tb) = one_joint(2.0);
    let empty = mc.map(|_| false);
    match derive_nv(&empty, &tb, &whole()) {
        Err(NvError::EmptyMask { which: "MC", .. }) => {}
        other => panic!("{other:?}"),
    }
    match derive_nv(&mc, &empty, &whole()) {
        Err(NvError::EmptyMask { which: "TB", .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn overlap_is_an_error_or_resolved() {
    let (mc, tb) = one_joint(2.0);
    let mut tb2 = tb.data().clone();
    let top = mc
        .data()
        .indexed_iter()
        .filter(|(_, &v)| v)
        .max_by_key(|((_, _, k), _)| *k)
        .map(|(p, _)| p)
        .unwrap();
    tb2[top] = true;
    let tb2 = Volume::new(tb2, tb.geometry().clone()).unwrap();
    let e = derive_nv(&mc, &tb2, &whole()).unwrap_err();
    assert!(matches!(e, NvError::MasksOverlap { count: 1, .. }), "{e}");
    assert!(e.to_string().contains("overlap"));
    let cfg = NvConfig {
        overlap: OverlapPolicy::PreferMc,
        ..whole()
    };
    let res = derive_nv(&mc, &tb2, &cfg).unwrap();
    let s = res.report.side(Side::Whole).unwrap();
    assert!(s.has_nv);
    assert!(s
        .issues
        .iter()
        .any(|i| i.code == IssueCode::OverlapResolved));
    assert_eq!(res.report.overlap_voxels, 1);
}

#[test]
fn no_contact_within_reach_is_reported() {
    let (mc, tb) = one_joint(8.0);
    let res = derive_nv(&mc, &tb, &whole()).unwrap();
    let s = res.report.side(Side::Whole).unwrap();
    assert!(!s.has_nv);
    assert_eq!(s.nv_voxels, 0);
    let i = s
        .issues
        .iter()
        .find(|i| i.code == IssueCode::NoContact)
        .unwrap();
    assert!(i.message.contains("max_gap_mm"), "{}", i.message);
    assert!(s.rays.too_long > 0);
    let e = res.require_nv().unwrap_err().to_string();
    assert!(e.contains("no negative volume"), "{e}");
    // A larger gap limit finds it.
    let cfg = NvConfig {
        max_gap_mm: 9.0,
        ..whole()
    };
    assert!(derive_nv(&mc, &tb, &cfg).unwrap().require_nv().is_ok());
}

#[test]
fn grid_dependent_config_limits_are_errors_before_any_work() {
    let (mc, tb) = one_joint(2.0);
    for (cfg, field) in [
        (
            NvConfig {
                step_mm: Some(1e-7),
                ..whole()
            },
            "step_mm",
        ),
        (
            NvConfig {
                closing_radius_mm: Some(25.0),
                ..whole()
            },
            "closing_radius_mm",
        ),
    ] {
        match derive_nv(&mc, &tb, &cfg) {
            Err(NvError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn mismatched_geometry_is_an_error() {
    let (mc, tb) = one_joint(2.0);
    let g2 = Geometry::from_spacing(tb.geometry().shape(), [0.6; 3]).unwrap();
    let tb2 = Volume::new(tb.data().clone(), g2).unwrap();
    let e = derive_nv(&mc, &tb2, &whole()).unwrap_err();
    assert!(matches!(e, NvError::Geometry { .. }), "{e}");
}

#[test]
fn head_pointing_away_is_reported() {
    // The same joint with superior declared as -z: the "head" is the neck's end and TB lies
    // below its top.
    let (mc, tb) = one_joint(2.0);
    let cfg = NvConfig {
        superior: Some([0.0, 0.0, -1.0]),
        ..whole()
    };
    let res = derive_nv(&mc, &tb, &cfg).unwrap();
    let s = res.report.side(Side::Whole).unwrap();
    assert!(!s.has_nv, "{:?}", s);
    assert!(
        s.issues.iter().any(|i| i.code == IssueCode::HeadPointsAway),
        "{:?}",
        s.issues
    );
}

#[test]
fn missing_side_is_reported() {
    let (mc, tb) = one_joint(2.0);
    // The joint is at x = 0 +- 14 mm; a plane at x = 30 puts everything on the left.
    let cfg = NvConfig {
        side_split: SideSplit::WorldPlane {
            point: [30.0, 0.0, 0.0],
            normal: [1.0, 0.0, 0.0],
        },
        ..Default::default()
    };
    let res = derive_nv(&mc, &tb, &cfg).unwrap();
    let r = res.report.side(Side::Right).unwrap();
    assert!(r.issues.iter().any(|i| i.code == IssueCode::NoCondyle));
    assert!(res.report.side(Side::Left).unwrap().has_nv);
    // One joint only: the asymmetry is undefined, not 1.
    let a = &res.report.asymmetry;
    assert_eq!(a.index, None);
    assert_eq!(a.reason, Some(AsymmetryUndefined::NoRightNv));
    let note = a.note.as_deref().unwrap();
    assert!(note.contains("no condyle"), "{note}");
    let j = serde_json::to_value(&res.report).unwrap();
    assert_eq!(j["asymmetry"]["index"], serde_json::Value::Null);
    assert_eq!(j["asymmetry"]["reason"], "no_right_nv");
}

#[test]
fn asymmetry_is_undefined_when_a_present_joint_has_no_contact() {
    // Two joints, the right one with a gap wider than max_gap_mm: it has a condyle but no NV,
    // so the pair cannot be compared.
    let [left, right] = upright_pair(2.0, 7.0);
    let aff = [
        [0.5, 0.0, 0.0, -30.0],
        [0.0, 0.5, 0.0, -14.0],
        [0.0, 0.0, 0.5, -18.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let g = Geometry::new([120, 56, 72], aff).unwrap();
    let (mc, tb) = masks(&g, &[left, right]);
    let res = derive_nv(&mc, &tb, &NvConfig::default()).unwrap();
    let r = res.report.side(Side::Right).unwrap();
    assert!(!r.has_nv && r.mc_voxels > 0, "{r:?}");
    let a = &res.report.asymmetry;
    assert_eq!(a.index, None);
    assert_eq!(a.reason, Some(AsymmetryUndefined::NoRightNv));
    assert!(a.note.as_deref().unwrap().contains("max_gap_mm"), "{a:?}");
}

// ---- Left/right split when the world origin is not on the mid-sagittal plane ----

/// The pair of `upright_pair` moved to world x = 60 (left, gap `w_left`) and x = 100 (right),
/// as when a scanner puts the world origin at a corner of the field of view: the plane
/// world `x = 0` misses both joints.
fn shifted_pair(w_left: f64, w_right: f64) -> [Joint; 2] {
    upright_pair(w_left, w_right).map(|j| Joint {
        centre: [j.centre[0] + 80.0, j.centre[1], j.centre[2]],
        ..j
    })
}

/// A 0.5 mm grid over world x 44..116, y -14..14, z -18..16 mm; stored RAS, or LPS (`i`
/// toward world `-x`, `j` toward `-y`: the same world box, mirrored storage).
fn shifted_grid(lps: bool) -> Geometry {
    let sp = 0.5;
    let aff = if lps {
        [
            [-sp, 0.0, 0.0, 116.0 - sp / 2.0],
            [0.0, -sp, 0.0, 14.0 - sp / 2.0],
            [0.0, 0.0, sp, -18.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    } else {
        [
            [sp, 0.0, 0.0, 44.0 + sp / 2.0],
            [0.0, sp, 0.0, -14.0 + sp / 2.0],
            [0.0, 0.0, sp, -18.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    };
    Geometry::new([144, 56, 68], aff).unwrap()
}

fn has(s: &negvol::SideReport, code: IssueCode) -> bool {
    s.issues.iter().any(|i| i.code == code)
}

#[test]
fn default_split_with_shifted_origin_reports_both_condyles_on_one_side() {
    let (mc, tb) = masks(&shifted_grid(false), &shifted_pair(2.0, 3.5));
    let res = derive_nv(&mc, &tb, &NvConfig::default()).unwrap();
    let l = res.report.side(Side::Left).unwrap();
    let r = res.report.side(Side::Right).unwrap();
    // Everything is at world x > 0: the right side holds both joints, the left none.
    assert!(has(l, IssueCode::NoCondyle) && l.mc_voxels == 0, "{l:?}");
    assert!(!has(l, IssueCode::BothCondylesOneSide));
    let i = r
        .issues
        .iter()
        .find(|i| i.code == IssueCode::BothCondylesOneSide)
        .unwrap_or_else(|| panic!("{:?}", r.issues));
    eprintln!("{}", i.message);
    assert!(!i.message.contains("  "), "{}", i.message);
    // The numbers: both centroids (x = 60 and 100 mm), the plane, and the way out.
    for part in [
        "60.0",
        "100.0",
        "point (0.0, 0.0, 0.0) mm",
        "condyle_midplane",
    ] {
        assert!(i.message.contains(part), "{part}: {}", i.message);
    }
    assert_eq!(r.mc_voxels, mc.data().iter().filter(|&&v| v).count());
    let sp = res.report.split_plane.as_ref().unwrap();
    assert_eq!((sp.point, sp.normal), ([0.0; 3], [1.0, 0.0, 0.0]));
    assert_eq!(res.report.asymmetry.index, None);
    let j = serde_json::to_value(&res.report).unwrap();
    assert_eq!(
        j["sides"][1]["issues"][0]["code"], "both_condyles_one_side",
        "{j}"
    );
    // The volume centre (x = 80 mm) of this field of view is between the joints: no issue.
    let cfg = NvConfig {
        side_split: SideSplit::VolumeCentre,
        ..Default::default()
    };
    let res = derive_nv(&mc, &tb, &cfg).unwrap();
    for s in &res.report.sides {
        assert!(s.has_nv && !has(s, IssueCode::BothCondylesOneSide), "{s:?}");
    }
}

#[test]
fn condyle_midplane_splits_between_the_joints_on_ras_and_lps_grids() {
    let [jl, jr] = shifted_pair(2.0, 3.5);
    let (vl, vr) = (jl.truth_volume(), jr.truth_volume());
    let placed = NvConfig {
        side_split: SideSplit::WorldPlane {
            point: [80.0, 0.0, 0.0],
            normal: [1.0, 0.0, 0.0],
        },
        ..Default::default()
    };
    let midplane = NvConfig {
        side_split: SideSplit::CondyleMidplane,
        ..Default::default()
    };
    let mut volumes = Vec::new();
    for lps in [false, true] {
        let g = shifted_grid(lps);
        let (mc, tb) = masks(&g, &shifted_pair(2.0, 3.5));
        let want = derive_nv(&mc, &tb, &placed).unwrap();
        let got = derive_nv(&mc, &tb, &midplane).unwrap();
        // The plane found from the condyles: half-way between them, normal to the right.
        let sp = got.report.split_plane.as_ref().unwrap();
        assert!((sp.point[0] - 80.0).abs() < 0.5, "{sp:?}");
        assert!(sp.normal[0] > 0.999, "{sp:?}");
        for side in [Side::Left, Side::Right] {
            let (w, m) = (
                want.report.side(side).unwrap(),
                got.report.side(side).unwrap(),
            );
            assert!(w.has_nv && m.has_nv, "lps {lps} {side:?}: {:?}", m.issues);
            assert!(m.issues.is_empty() && w.issues.is_empty(), "{:?}", m.issues);
            assert_relative_eq!(m.nv_volume_mm3, w.nv_volume_mm3, max_relative = 1e-9);
            let truth = if side == Side::Left { vl } else { vr };
            let err = (m.nv_volume_mm3 - truth) / truth;
            eprintln!(
                "lps {lps} {side:?}: NV {:.1} mm3, truth {truth:.1} ({:+.1}%)",
                m.nv_volume_mm3,
                100.0 * err
            );
            assert!(err.abs() < 0.12, "lps {lps} {side:?}: {err}");
            // Left and right are the patient's, whatever the storage order: the left joint
            // (world x = 60) has the 2.0 mm joint space, the right one (x = 100) 3.5 mm.
            let c = m.nv_centroid_world.unwrap();
            let width = m.width.as_ref().unwrap().mean_mm;
            match side {
                Side::Left => assert!(c[0] < 80.0 && (width - 2.0).abs() < 0.3, "{c:?} {width}"),
                _ => assert!(c[0] > 80.0 && (width - 3.5).abs() < 0.3, "{c:?} {width}"),
            }
            volumes.push(m.nv_volume_mm3);
        }
        assert!(got.report.asymmetry.index.is_some());
    }
    // The mirrored storage measures the same joints (voxel centres are the same world points).
    assert_relative_eq!(volumes[0], volumes[2], max_relative = 1e-9);
    assert_relative_eq!(volumes[1], volumes[3], max_relative = 1e-9);
}

#[test]
fn condyle_midplane_ignores_small_debris() {
    // A 27-voxel false-positive blob (under 10 % of a condyle) next to the two joints: the
    // split still runs between the two condyles.
    let g = shifted_grid(false);
    let (mc, tb) = masks(&g, &shifted_pair(2.0, 3.5));
    let mut m = mc.data().clone();
    m.slice_mut(ndarray::s![70..73, 2..5, 2..5]).fill(true);
    let mc = Volume::new(m, g).unwrap();
    let cfg = NvConfig {
        side_split: SideSplit::CondyleMidplane,
        ..Default::default()
    };
    let res = derive_nv(&mc, &tb, &cfg).unwrap();
    let sp = res.report.split_plane.as_ref().unwrap();
    assert!(
        (sp.point[0] - 80.0).abs() < 0.5 && sp.normal[0] > 0.999,
        "{sp:?}"
    );
    assert!(res.report.sides.iter().all(|s| s.has_nv));
}

#[test]
fn condyle_midplane_on_a_single_joint_measures_the_whole_volume() {
    let (mc, tb) = one_joint(2.0);
    // Debris: a small blob in a corner, far below 10 % of the condyle.
    let mut m = mc.data().clone();
    m.slice_mut(ndarray::s![2..5, 2..5, 2..5]).fill(true);
    let mc = Volume::new(m, mc.geometry().clone()).unwrap();
    let cfg = NvConfig {
        side_split: SideSplit::CondyleMidplane,
        ..Default::default()
    };
    let res = derive_nv(&mc, &tb, &cfg).unwrap();
    assert_eq!(res.report.sides.len(), 1);
    let s = res.report.side(Side::Whole).unwrap();
    let i = s
        .issues
        .iter()
        .find(|i| i.code == IssueCode::NoSecondCondyle)
        .unwrap_or_else(|| panic!("{:?}", s.issues));
    assert!(
        i.message.contains("27 voxels") && i.message.contains("below the 10%"),
        "{}",
        i.message
    );
    assert!(res.report.split_plane.is_none());
    // The same NV as without a split.
    let plain = derive_nv(&mc, &tb, &whole()).unwrap();
    let p = plain.report.side(Side::Whole).unwrap();
    assert!(s.has_nv);
    assert_relative_eq!(s.nv_volume_mm3, p.nv_volume_mm3, max_relative = 1e-9);
    let a = &res.report.asymmetry;
    assert_eq!(a.reason, Some(AsymmetryUndefined::NotSplit));
    assert!(
        a.note.as_deref().unwrap().contains("condyle_midplane"),
        "{a:?}"
    );
    // Without the debris MC is one component, and the message says so.
    let (mc, tb) = one_joint(2.0);
    let res = derive_nv(&mc, &tb, &cfg).unwrap();
    let s = res.report.side(Side::Whole).unwrap();
    assert!(s.has_nv);
    assert!(
        s.issues.iter().any(|i| i.code == IssueCode::NoSecondCondyle
            && i.message.contains("single 26-connected component")),
        "{:?}",
        s.issues
    );
}
