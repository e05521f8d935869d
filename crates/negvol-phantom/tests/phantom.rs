//! Integration tests: determinism, analytic truth, disjointness, orientation and spacing
//! invariance, both sides, image statistics, dataset writing.

use approx::assert_relative_eq;
use negvol_phantom::{
    case_seed, generate, write_dataset, DatasetManifest, PhantomConfig, PhantomError, PhantomModel,
    PhantomTruth, Region, Side,
};
use negvol_volume::{read_mask, read_nifti, Geometry, Volume};

fn coarse() -> PhantomConfig {
    PhantomConfig {
        spacing: [0.8; 3],
        ..PhantomConfig::default()
    }
}

fn count(v: &Volume<bool>) -> usize {
    v.data().iter().filter(|&&b| b).count()
}

fn disjoint(a: &Volume<bool>, b: &Volume<bool>) -> bool {
    a.data()
        .iter()
        .zip(b.data().iter())
        .all(|(x, y)| !(*x && *y))
}

#[test]
fn deterministic_under_seed() {
    let cfg = coarse();
    let a = generate(&cfg, 11).unwrap();
    let b = generate(&cfg, 11).unwrap();
    let bits = |v: &Volume<f32>| v.data().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.image), bits(&b.image));
    assert_eq!(a.mc, b.mc);
    assert_eq!(a.tb, b.tb);
    assert_eq!(a.nv, b.nv);
    assert_eq!(a.truth, b.truth);
    // Same with a single thread (per-slice RNG streams).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let c = pool.install(|| generate(&cfg, 11).unwrap());
    assert_eq!(bits(&a.image), bits(&c.image));
    assert_eq!(a.truth, c.truth);
    // Another seed gives another case.
    let d = generate(&cfg, 12).unwrap();
    assert_ne!(a.truth.sides[0].params, d.truth.sides[0].params);
    assert_ne!(a.nv, d.nv);
}

#[test]
fn anatomy_does_not_depend_on_grid_or_image_options() {
    let mut cfg = coarse();
    let a = PhantomModel::sample(&cfg, 5).unwrap();
    cfg.spacing = [0.3, 0.5, 0.7];
    cfg.orientation.axes = "LPI".into();
    cfg.image.cbct.enabled = true;
    cfg.image.noise_sigma_hu = 0.0;
    let b = PhantomModel::sample(&cfg, 5).unwrap();
    assert_eq!(a.joints()[0].params(), b.joints()[0].params());
}

/// A sphere head, constant width, circular fossa: the NV is a spherical shell sector whose
/// volume is known in closed form.
#[test]
fn analytic_shell_sector() {
    let mut cfg = PhantomConfig::default();
    let (r, w, theta_deg, flare, max_gap) = (5.0f64, 2.0f64, 50.0f64, 150.0, 6.0);
    cfg.anatomy.head_semi_axes_mm = [[r, r]; 3];
    cfg.anatomy.bump_count = 0;
    cfg.anatomy.head_yaw_deg = [0.0, 0.0];
    cfg.anatomy.head_pitch_deg = [0.0, 0.0];
    cfg.anatomy.head_roll_deg = [0.0, 0.0];
    cfg.anatomy.fossa_tilt_deg = [0.0, 0.0];
    cfg.anatomy.fossa_half_angle_ml_deg = [theta_deg; 2];
    cfg.anatomy.fossa_half_angle_anterior_deg = [theta_deg; 2];
    cfg.anatomy.fossa_half_angle_posterior_deg = [theta_deg; 2];
    cfg.anatomy.flare_mm = flare;
    cfg.anatomy.slab_bottom_mm = [-3.0, -3.0];
    cfg.width_range_mm = [w, w];
    cfg.truth_max_gap_mm = max_gap;
    // The kept cap ends where w + flare (e - 1)^2 = max_gap, e = tan(a/2) / tan(theta/2);
    // the volume is a 1D integral over the polar angle a (midpoint rule, 200k steps).
    let th = (theta_deg.to_radians() / 2.0).tan();
    let e_star = 1.0 + ((max_gap - w) / flare).sqrt();
    let a_star = 2.0 * (e_star * th).atan();
    let n = 200_000;
    let da = a_star / n as f64;
    let exact: f64 = (0..n)
        .map(|i| {
            let a = (i as f64 + 0.5) * da;
            let e = (a / 2.0).tan() / th;
            let g = w + flare * (e - 1.0).max(0.0).powi(2);
            std::f64::consts::TAU * a.sin() * ((r + g).powi(3) - r.powi(3)) / 3.0 * da
        })
        .sum();
    cfg.spacing = [0.25; 3];
    let case = generate(&cfg, 3).unwrap();
    let t = &case.truth.sides[0];
    assert_relative_eq!(t.nv_volume_mm3, exact, max_relative = 5e-5);
    assert_relative_eq!(t.nv_mask_volume_mm3, exact, max_relative = 0.02);
    let g = t.gap_mm.unwrap();
    assert_relative_eq!(g.min, w, epsilon = 1e-9);
    assert!(g.max <= max_gap && g.max > max_gap - 0.05, "{g:?}");
    let f = t.fossa_width_mm.unwrap();
    assert_relative_eq!(f.min, w, epsilon = 1e-9);
    assert_relative_eq!(f.max, w, epsilon = 1e-9);
    // Head area of the cap: 2 pi r^2 (1 - cos a*).
    let area = std::f64::consts::TAU * r * r * (1.0 - a_star.cos());
    assert_relative_eq!(t.nv_head_area_mm2, area, max_relative = 1e-3);
    // Head top straight above the centre.
    assert_relative_eq!(t.head_top_mm[2], t.head_centre_mm[2] + r, epsilon = 1e-9);
}

#[test]
fn mask_volume_converges_to_integrated_truth() {
    let base = PhantomConfig::default();
    for seed in [1u64, 2] {
        let m = PhantomModel::sample(&base, seed).unwrap();
        let mut errs = Vec::new();
        let mut exact = 0.0;
        for s in [0.8, 0.4, 0.2] {
            let cfg = PhantomConfig {
                spacing: [s; 3],
                ..base.clone()
            };
            let g = cfg.geometry().unwrap();
            let masks = m.masks(&g).unwrap();
            let t = m.truth(&g, &masks.nv).unwrap();
            exact = t.sides[0].nv_volume_mm3;
            errs.push((t.sides[0].nv_mask_volume_mm3 - exact).abs() / exact);
        }
        assert!(exact > 100.0, "{exact}");
        assert!(errs[2] < 0.01, "seed {seed}: {errs:?}");
        assert!(errs[1] < 0.03, "seed {seed}: {errs:?}");
        assert!(errs[0] < 0.10, "seed {seed}: {errs:?}");
    }
}

#[test]
fn widths_stay_in_range_and_labels_are_disjoint() {
    let cfg = coarse();
    for seed in 0..6u64 {
        let c = generate(&cfg, seed).unwrap();
        assert!(disjoint(&c.mc, &c.tb), "seed {seed}: MC and TB overlap");
        assert!(disjoint(&c.mc, &c.nv), "seed {seed}: MC and NV overlap");
        assert!(disjoint(&c.tb, &c.nv), "seed {seed}: TB and NV overlap");
        let t = &c.truth.sides[0];
        let f = t.fossa_width_mm.unwrap();
        let [lo, hi] = cfg.width_range_mm;
        assert!(
            f.min >= lo - 1e-9 && f.max <= hi + 1e-9,
            "seed {seed}: {f:?}"
        );
        assert!(f.min <= f.mean && f.mean <= f.max);
        let g = t.gap_mm.unwrap();
        assert!(g.max <= cfg.truth_max_gap_mm && g.min >= lo - 1e-9, "{g:?}");
        assert!(count(&c.nv) > 0 && count(&c.mc) > 0 && count(&c.tb) > 0);
        assert!(t.params.widths_mm.superior >= lo && t.params.widths_mm.superior <= hi);
    }
}

/// The analytic MC and TB never overlap, checked at random points (not only voxel centres),
/// and NV points really lie between the two bones along the radial line.
#[test]
fn regions_are_consistent_at_random_points() {
    use rand::{Rng, SeedableRng};
    let m = PhantomModel::sample(&PhantomConfig::default(), 9).unwrap();
    let j = &m.joints()[0];
    let c = j.centre();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut n_nv = 0;
    for _ in 0..20000 {
        let p = [
            c[0] + rng.gen_range(-15.0..15.0),
            c[1] + rng.gen_range(-15.0..15.0),
            c[2] + rng.gen_range(-10.0..20.0),
        ];
        if m.region(p) == Region::Nv {
            n_nv += 1;
            // Walking outwards from the centre through p: MC, then NV, then TB.
            let d = [p[0] - c[0], p[1] - c[1], p[2] - c[2]];
            let at = |f: f64| m.region([c[0] + d[0] * f, c[1] + d[1] * f, c[2] + d[2] * f]);
            assert_eq!(at(0.0), Region::Mc);
            let mut seen_tb = false;
            for s in 1..400 {
                let reg = at(1.0 + s as f64 * 0.005);
                if reg == Region::Tb {
                    seen_tb = true;
                    break;
                }
                assert_ne!(reg, Region::Mc);
            }
            assert!(seen_tb, "no TB beyond NV point {p:?}");
        }
    }
    assert!(n_nv > 50, "{n_nv}");
}

#[test]
fn rotated_and_anisotropic_grids() {
    let base = PhantomConfig::default();
    let m = PhantomModel::sample(&base, 4).unwrap();
    let mut vols = Vec::new();
    for (axes, obl, sp) in [
        ("RAS", [0.0, 0.0, 0.0], [0.4, 0.4, 0.4]),
        ("LPS", [0.0, 0.0, 0.0], [0.3, 0.4, 0.5]),
        ("ASL", [10.0, -7.0, 25.0], [0.35, 0.45, 0.4]),
        ("IRP", [0.0, 15.0, 0.0], [0.5, 0.3, 0.3]),
    ] {
        let mut cfg = base.clone();
        cfg.orientation.axes = axes.into();
        cfg.orientation.oblique_deg = obl;
        cfg.spacing = sp;
        let g = cfg.geometry().unwrap();
        if obl == [0.0; 3] {
            assert_eq!(g.orientation_code(), axes);
        }
        let masks = m.masks(&g).unwrap();
        let t = m.truth(&g, &masks.nv).unwrap();
        let s = &t.sides[0];
        vols.push(s.nv_mask_volume_mm3);
        assert_relative_eq!(s.nv_mask_volume_mm3, s.nv_volume_mm3, max_relative = 0.04);
        // The most superior MC voxel (world z) is within a voxel of the analytic head top.
        let mut best = f64::NEG_INFINITY;
        for ((i, j, k), &v) in masks.mc.data().indexed_iter() {
            if v {
                best = best.max(g.voxel_to_world([i as f64, j as f64, k as f64])[2]);
            }
        }
        let diag = (sp.iter().map(|x| x * x).sum::<f64>()).sqrt();
        assert!(
            s.head_top_mm[2] - best >= -1e-9 && s.head_top_mm[2] - best < diag,
            "{axes}: top {} vs voxel {best}",
            s.head_top_mm[2]
        );
        // Truth head-top voxel maps back to the head top.
        let w = g.voxel_to_world(s.head_top_voxel);
        for (x, y) in w.iter().zip(s.head_top_mm.iter()) {
            assert_relative_eq!(x, y, epsilon = 1e-6);
        }
    }
    let mean = vols.iter().sum::<f64>() / vols.len() as f64;
    for v in vols {
        assert_relative_eq!(v, mean, max_relative = 0.05);
    }
}

#[test]
fn both_sides_with_asymmetry() {
    let cfg = PhantomConfig {
        both_sides: true,
        asymmetry: 0.3,
        intercondylar_mm: 44.0,
        spacing: [0.8; 3],
        ..PhantomConfig::default()
    };
    let c = generate(&cfg, 21).unwrap();
    let t: &PhantomTruth = &c.truth;
    assert_eq!(t.sides.len(), 2);
    let l = t.side(Side::Left).unwrap();
    let r = t.side(Side::Right).unwrap();
    assert!(l.head_centre_mm[0] < 0.0 && r.head_centre_mm[0] > 0.0);
    assert!(
        r.nv_volume_mm3 > l.nv_volume_mm3,
        "{} {}",
        r.nv_volume_mm3,
        l.nv_volume_mm3
    );
    let ai = t.asymmetry_index.unwrap();
    let expect = (l.nv_volume_mm3 - r.nv_volume_mm3).abs() / (l.nv_volume_mm3 + r.nv_volume_mm3);
    assert_relative_eq!(ai, expect, epsilon = 1e-12);
    assert!(ai > 0.05, "{ai}");
    for s in [l, r] {
        let f = s.fossa_width_mm.unwrap();
        assert!(f.min >= cfg.width_range_mm[0] - 1e-9 && f.max <= cfg.width_range_mm[1] + 1e-9);
        assert!(s.nv_mask_voxels > 0);
        assert_relative_eq!(s.nv_mask_volume_mm3, s.nv_volume_mm3, max_relative = 0.12);
    }
    // Every NV voxel of a side lies on that side of the mid-sagittal plane.
    let g = c.nv.geometry();
    let (mut nl, mut nr) = (0, 0);
    for ((i, j, k), &v) in c.nv.data().indexed_iter() {
        if v {
            if g.voxel_to_world([i as f64, j as f64, k as f64])[0] < 0.0 {
                nl += 1;
            } else {
                nr += 1;
            }
        }
    }
    assert_eq!((nl, nr), (l.nv_mask_voxels, r.nv_mask_voxels));
    // The left joint of a both-sided case has the same head as the single left joint.
    let single = PhantomModel::sample(
        &PhantomConfig {
            both_sides: false,
            ..cfg.clone()
        },
        21,
    )
    .unwrap();
    assert_eq!(single.joints()[0].params().bumps, l.params.bumps);
}

#[test]
fn image_intensities_are_ct_like() {
    let cfg = PhantomConfig {
        spacing: [0.5; 3],
        fov_mm: [40.0; 3],
        ..PhantomConfig::default()
    };
    let c = generate(&cfg, 8).unwrap();
    let img = c.image.data();
    let mean_where = |m: &Volume<bool>| {
        let (s, n) = img
            .iter()
            .zip(m.data().iter())
            .filter(|(_, &b)| b)
            .fold((0.0, 0usize), |(s, n), (v, _)| (s + *v as f64, n + 1));
        s / n as f64
    };
    let mc = mean_where(&c.mc);
    let tb = mean_where(&c.tb);
    let nv = mean_where(&c.nv);
    assert!((300.0..1300.0).contains(&mc), "MC mean {mc}");
    assert!((300.0..1300.0).contains(&tb), "TB mean {tb}");
    // NV is soft tissue (the disc), blurred by the nearby cortex.
    assert!((-100.0..600.0).contains(&nv), "NV mean {nv}");
    assert!(nv < mc - 200.0 && nv < tb - 200.0);
    // Air in the ear canal.
    assert!(img.iter().any(|&v| v < -700.0));
    assert!(img.iter().all(|v| v.is_finite()));
    // Artefacts change the image but not the labels or the truth.
    let mut cfg2 = cfg.clone();
    cfg2.image.cbct.enabled = true;
    let d = generate(&cfg2, 8).unwrap();
    assert_eq!(c.nv, d.nv);
    assert_eq!(c.truth.sides, d.truth.sides);
    let diff: f64 = c
        .image
        .data()
        .iter()
        .zip(d.image.data().iter())
        .map(|(a, b)| (a - b).abs() as f64)
        .sum::<f64>()
        / img.len() as f64;
    assert!(diff > 5.0, "{diff}");
}

#[test]
fn grid_too_small_is_an_error() {
    let cfg = PhantomConfig {
        shape: Some([30, 30, 30]),
        ..PhantomConfig::default()
    };
    match generate(&cfg, 1) {
        Err(PhantomError::DoesNotFit(m)) => assert!(m.contains("left"), "{m}"),
        other => panic!("expected DoesNotFit, got {other:?}"),
    }
    let bad = PhantomConfig {
        spacing: [0.0, 0.4, 0.4],
        ..PhantomConfig::default()
    };
    assert!(matches!(
        generate(&bad, 1),
        Err(PhantomError::InvalidConfig(_))
    ));
}

#[test]
fn dataset_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PhantomConfig {
        spacing: [1.0; 3],
        ..PhantomConfig::default()
    };
    let m = write_dataset(dir.path(), &cfg, 2, 77).unwrap();
    assert_eq!(m.cases.len(), 2);
    let text = std::fs::read_to_string(dir.path().join("dataset.json")).unwrap();
    let back: DatasetManifest = serde_json::from_str(&text).unwrap();
    assert_eq!(back, m);
    let e = &m.cases[1];
    assert_eq!(e.id, "case_001");
    assert_eq!(e.seed, case_seed(77, 1));
    assert_eq!((&e.labels["mc"], &e.labels["nv"]), (&e.mc, &e.nv));
    assert_eq!(e.labels.len(), 3);
    let case = generate(&cfg, e.seed).unwrap();
    let nv = read_mask(dir.path().join(&e.nv)).unwrap();
    assert_eq!(nv.data(), case.nv.data());
    let g: &Geometry = nv.geometry();
    g.check_same(case.nv.geometry(), 1e-4).unwrap();
    let labels = read_nifti::<u8>(dir.path().join(&e.label_map)).unwrap();
    assert_eq!(labels.data(), case.label_map().data());
    let lm = case.label_map();
    let n3 = lm.data().iter().filter(|&&v| v == 3).count();
    assert_eq!(n3, count(&case.nv));
    assert_eq!(
        lm.data().iter().filter(|&&v| v == 1).count(),
        count(&case.mc)
    );
    let img = read_nifti::<f32>(dir.path().join(&e.image)).unwrap();
    let max_err = img
        .data()
        .iter()
        .zip(case.image.data().iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_err <= 0.5 + 1e-3, "{max_err}");
    let truth: PhantomTruth =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(&e.truth)).unwrap()).unwrap();
    assert_eq!(
        truth.sides[0].nv_volume_mm3,
        case.truth.sides[0].nv_volume_mm3
    );
    assert_eq!(e.nv_volume_mm3[0].1, case.truth.sides[0].nv_volume_mm3);
}

/// The two truth limits do what the definition says: a shallow head depth keeps only NV above
/// `top - depth`, and a larger max gap only adds volume.
#[test]
fn truth_limits_behave() {
    let base = PhantomConfig::default();
    let m = PhantomModel::sample(&base, 6).unwrap();
    let g = base.geometry().unwrap();
    let full = m.truth(&g, &m.masks(&g).unwrap().nv).unwrap().sides[0].clone();

    let depth = 1.5;
    let shallow_cfg = PhantomConfig {
        truth_head_depth_mm: depth,
        ..base.clone()
    };
    let ms = PhantomModel::sample(&shallow_cfg, 6).unwrap();
    let nv = ms.masks(&g).unwrap().nv;
    let shallow = ms.truth(&g, &nv).unwrap().sides[0].clone();
    assert!(shallow.nv_volume_mm3 < 0.8 * full.nv_volume_mm3);
    assert!(shallow.nv_volume_mm3 > 0.0);
    let top_z = shallow.head_top_mm[2];
    for ((i, j, k), &v) in nv.data().indexed_iter() {
        if v {
            let z = g.voxel_to_world([i as f64, j as f64, k as f64])[2];
            assert!(z >= top_z - depth - 1e-9, "NV voxel at z {z}, top {top_z}");
        }
    }
    assert!(shallow.nv_bounds_mm[0][2] >= top_z - depth - 1e-9);

    let mut last = 0.0;
    for gap in [4.5, 6.0, 8.0] {
        let c = PhantomConfig {
            truth_max_gap_mm: gap,
            ..base.clone()
        };
        let mg = PhantomModel::sample(&c, 6).unwrap();
        let t = mg.truth(&g, &mg.masks(&g).unwrap().nv).unwrap();
        let s = &t.sides[0];
        assert!(
            s.nv_volume_mm3 > last,
            "{gap}: {} <= {last}",
            s.nv_volume_mm3
        );
        assert!(s.gap_mm.unwrap().max <= gap);
        last = s.nv_volume_mm3;
    }
}

#[test]
fn truth_json_is_complete() {
    let c = generate(&coarse(), 2).unwrap();
    let v: serde_json::Value = serde_json::to_value(&c.truth).unwrap();
    let s = &v["sides"][0];
    for key in [
        "side",
        "nv_volume_mm3",
        "head_top_mm",
        "head_centre_mm",
        "gap_mm",
        "fossa_width_mm",
        "params",
    ] {
        assert!(!s[key].is_null(), "{key} missing");
    }
    assert_eq!(s["side"], "left");
    assert!(v["config"]["spacing"].is_array());
    assert!(v["geometry"].is_object());
    let back: PhantomTruth = serde_json::from_value(v).unwrap();
    assert_eq!(back, c.truth);
}

/// Without blur and noise, only sub-sampling (partial volume) produces values between the
/// tissue intensity bands.
#[test]
fn partial_volume_comes_from_supersampling() {
    let mut cfg = coarse();
    cfg.image.blur_sigma_mm = 0.0;
    cfg.image.noise_sigma_hu = 0.0;
    cfg.image.cortical_hu = [1600.0, 1600.0];
    let between = |c: &PhantomConfig| {
        let case = generate(c, 4).unwrap();
        case.image
            .data()
            .iter()
            .filter(|&&v| (60.0..290.0).contains(&v) || (610.0..1590.0).contains(&v))
            .count()
    };
    cfg.supersample = 1;
    assert_eq!(between(&cfg), 0);
    cfg.supersample = 4;
    assert!(between(&cfg) > 500);
}

/// A fossa so wide that NV segments run down beside the neck: the part of each radial
/// segment inside the neck is excluded, against a closed-form 1D reference and the voxels.
#[test]
fn neck_crossing_segments_are_excluded() {
    let mut cfg = PhantomConfig::default();
    let (r, w, half_deg, flare, max_gap, neck) = (5.0f64, 2.0f64, 150.0f64, 1000.0, 2.2, 0.9);
    cfg.anatomy.head_semi_axes_mm = [[r, r]; 3];
    cfg.anatomy.bump_count = 0;
    cfg.anatomy.head_yaw_deg = [0.0, 0.0];
    cfg.anatomy.head_pitch_deg = [0.0, 0.0];
    cfg.anatomy.head_roll_deg = [0.0, 0.0];
    cfg.anatomy.fossa_tilt_deg = [0.0, 0.0];
    cfg.anatomy.fossa_half_angle_ml_deg = [half_deg; 2];
    cfg.anatomy.fossa_half_angle_anterior_deg = [half_deg; 2];
    cfg.anatomy.fossa_half_angle_posterior_deg = [half_deg; 2];
    cfg.anatomy.flare_mm = flare;
    cfg.anatomy.slab_bottom_mm = [-12.0, -12.0];
    cfg.anatomy.neck_fraction = [[neck, neck]; 2];
    cfg.anatomy.neck_taper = [0.0, 0.0];
    cfg.anatomy.ear_canal = false;
    cfg.width_range_mm = [w, w];
    cfg.truth_max_gap_mm = max_gap;
    cfg.truth_head_depth_mm = 2.0 * r;
    let rn = neck * r;
    let th = (half_deg.to_radians() / 2.0).tan();
    let e_star = 1.0 + ((max_gap - w) / flare).sqrt();
    let a_star = 2.0 * (e_star * th).atan();
    let n = 400_000;
    let da = a_star / n as f64;
    let exact: f64 = (0..n)
        .map(|i| {
            let a = (i as f64 + 0.5) * da;
            let e = (a / 2.0).tan() / th;
            let hi = r + w + flare * (e - 1.0).max(0.0).powi(2);
            let lo = if a > std::f64::consts::FRAC_PI_2 {
                r.max(rn / a.sin())
            } else {
                r
            };
            let seg = if hi > lo {
                (hi.powi(3) - lo.powi(3)) / 3.0
            } else {
                0.0
            };
            std::f64::consts::TAU * a.sin() * seg * da
        })
        .sum();
    let m = PhantomModel::sample(&cfg, 1).unwrap();
    let fine = PhantomConfig {
        spacing: [0.2; 3],
        fov_mm: [20.0; 3],
        fov_offset_mm: [0.0; 3],
        ..cfg.clone()
    };
    let g = fine.geometry().unwrap();
    let masks = m.masks(&g).unwrap();
    assert!(disjoint(&masks.mc, &masks.nv) && disjoint(&masks.tb, &masks.nv));
    let t = m.truth(&g, &masks.nv).unwrap();
    let s = &t.sides[0];
    // The neck removes a visible part of the full shell.
    let shell = 4.0 / 3.0 * std::f64::consts::PI * ((r + w).powi(3) - r.powi(3));
    assert!(exact < 0.97 * shell, "{exact} vs shell {shell}");
    assert_relative_eq!(s.nv_volume_mm3, exact, max_relative = 2e-4);
    assert_relative_eq!(s.nv_mask_volume_mm3, exact, max_relative = 0.01);
}
