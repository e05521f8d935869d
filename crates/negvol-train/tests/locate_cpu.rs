//! The joint locator end to end on the CPU: train the coarse heatmap network and the atlas on
//! a few two-joint phantoms, save the locator, reload it as a user would and locate the joints
//! of unseen phantoms: a two-joint one as trained, the same stored LPS (flipped index axes),
//! one whose joints sit elsewhere in the field of view, and a single-joint scan framed unlike
//! every training scan (where the atlas prior is near zero, so the network must carry it).
//!
//! What "located" means here (the floor): every VOI must contain, for its joint, the whole
//! ground-truth negative volume grown by [`TB_MARGIN_MM`] on every side (clipped to the scan),
//! which holds the temporal bone around the fossa, and the condyle head (condyle voxels within
//! 10 mm of the head's top); and its centre must lie within [`CENTRE_FLOOR_MM`] of the centroid
//! of the joint's true NV.

use negvol_phantom::{generate, PhantomCase, PhantomConfig, Side};
use negvol_train::dataset::build_case;
use negvol_train::locate::{
    default_heatmap_run, train_locator, JointLocation, JointSide, LocateConfig, Locator,
    LocatorTrainConfig,
};
use negvol_train::trainer::Silent;
use negvol_train::Case;
use negvol_volume::Volume;
use tch::Device;

/// Phantom voxel size (mm).
const SPACING: f64 = 1.2;
/// Temporal bone kept around the NV that the VOI must hold too (mm).
const TB_MARGIN_MM: f64 = 4.0;
/// Largest distance (mm) between a located centre and its joint's true NV centroid.
const CENTRE_FLOOR_MM: f64 = 5.0;

fn class_names() -> Vec<String> {
    vec!["mc".into(), "tb".into(), "nv".into()]
}

fn two_joint_config() -> PhantomConfig {
    PhantomConfig {
        spacing: [SPACING; 3],
        both_sides: true,
        ..Default::default()
    }
}

fn to_case(id: &str, p: &PhantomCase) -> Case {
    let f = |m: &Volume<bool>| m.map(|v| f32::from(u8::from(*v)));
    build_case(
        id,
        id,
        p.image.clone(),
        &[
            ("mc".into(), f(&p.mc)),
            ("tb".into(), f(&p.tb)),
            ("nv".into(), f(&p.nv)),
        ],
    )
    .unwrap()
}

/// World position of voxel `(i, j, k)` of `v`.
fn world(v: &Volume<bool>, i: usize, j: usize, k: usize) -> [f64; 3] {
    v.geometry().voxel_to_world([i as f64, j as f64, k as f64])
}

/// Check that `loc` holds the joint on `side` of phantom `p` (see the module docs); returns
/// the centre error (mm).
fn check_joint(p: &PhantomCase, side: Side, loc: &JointLocation) -> f64 {
    let truth = p.truth.side(side).expect("phantom side");
    let g = p.image.geometry();
    let n = g.shape();
    let sp = g.spacing();
    let on_side = |w: [f64; 3]| (w[0] < 0.0) == (side == Side::Left) || p.truth.sides.len() == 1;
    // Bounding boxes (voxel indices, inclusive) of the NV and of the condyle head.
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut centroid = [0.0f64; 3];
    let mut count = 0usize;
    for ((i, j, k), &v) in p.nv.data().indexed_iter() {
        let w = world(&p.nv, i, j, k);
        if v && on_side(w) {
            for (a, x) in [i, j, k].into_iter().enumerate() {
                lo[a] = lo[a].min(x);
                hi[a] = hi[a].max(x);
            }
            for a in 0..3 {
                centroid[a] += w[a];
            }
            count += 1;
        }
    }
    assert!(count > 0, "no NV voxel on the {side:?} side");
    let centroid = centroid.map(|c| c / count as f64);
    // Grow the NV box by the TB margin (clipped to the scan).
    for a in 0..3 {
        let m = (TB_MARGIN_MM / sp[a]).ceil() as usize;
        lo[a] = lo[a].saturating_sub(m);
        hi[a] = (hi[a] + m).min(n[a] - 1);
    }
    let top = truth.head_top_mm[2];
    for ((i, j, k), &v) in p.mc.data().indexed_iter() {
        let w = world(&p.mc, i, j, k);
        if v && on_side(w) && w[2] >= top - 10.0 {
            for (a, x) in [i, j, k].into_iter().enumerate() {
                lo[a] = lo[a].min(x);
                hi[a] = hi[a].max(x);
            }
        }
    }
    for a in 0..3 {
        let s = loc.voi_start[a];
        let e = s + loc.voi_size[a] as i64 - 1;
        assert!(
            s <= lo[a] as i64 && e >= hi[a] as i64,
            "{side:?} joint, axis {a}: VOI {s}..={e} does not hold the joint {}..={} ({loc:?})",
            lo[a],
            hi[a]
        );
    }
    let err = (0..3)
        .map(|a| (loc.center_mm[a] - centroid[a]).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(
        err < CENTRE_FLOOR_MM,
        "{side:?} joint: centre {:?} is {err:.2} mm from the NV centroid {centroid:?}",
        loc.center_mm
    );
    err
}

/// Every located joint of a two-joint phantom, one per side.
fn check_two(name: &str, p: &PhantomCase, joints: &[JointLocation]) {
    assert_eq!(joints.len(), 2, "{name}: {joints:?}");
    for (want, side) in [
        (JointSide::Left, Side::Left),
        (JointSide::Right, Side::Right),
    ] {
        let loc = joints
            .iter()
            .find(|j| j.side == want)
            .unwrap_or_else(|| panic!("{name}: no {want:?} joint in {joints:?}"));
        let err = check_joint(p, side, loc);
        eprintln!(
            "{name}: {want:?} centre error {err:.2} mm, score {:.2}",
            loc.score
        );
    }
}

#[test]
fn trained_locator_finds_both_joints_of_unseen_flipped_and_shifted_phantoms() {
    // One libtorch thread: the same numbers on every machine, and on a busy 2-core box much
    // faster than two (see the crate README's demo notes).
    tch::set_num_threads(1);
    let t0 = std::time::Instant::now();
    let cfg = two_joint_config();
    let train: Vec<Case> = (0..4)
        .map(|s| {
            let p = generate(
                &PhantomConfig {
                    asymmetry: 0.1 * s as f64,
                    ..cfg.clone()
                },
                10 + s,
            )
            .unwrap();
            to_case(&format!("t{s}"), &p)
        })
        .collect();
    let mut run = default_heatmap_run();
    run.train.epochs = 25;
    run.train.seed = 5;
    run.train.sampler.patch = [32, 16, 16];
    run.train.validation.inference.patch = [32, 16, 16];
    let lcfg = LocatorTrainConfig {
        centre_label: Some("nv".into()),
        coarse_spacing_mm: 2.4,
        atlas_grid: [32, 16, 16],
        run,
        locate: LocateConfig {
            per_side: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let trained = train_locator(
        &train,
        &class_names(),
        &lcfg,
        dir.path(),
        Device::Cpu,
        &mut Silent,
    )
    .unwrap();
    let h = &trained.summary.as_ref().unwrap().state.history;
    eprintln!(
        "trained in {:.1} s: loss {:.3} -> {:.3}, centre offset {:?} mm",
        t0.elapsed().as_secs_f64(),
        h[0].train_loss,
        h.last().unwrap().train_loss,
        trained.spec.atlas.centre_offset_mm
    );
    // The NV lies above the condyle's centroid (superior = world +z).
    assert!(trained.spec.atlas.centre_offset_mm[2] > 1.0);

    // Reload from the file, as the pipeline does.
    let loc = Locator::load(&trained.path, Device::Cpu).unwrap();
    assert!(loc.net.is_some());

    // 1. An unseen two-joint phantom.
    let held = generate(
        &PhantomConfig {
            asymmetry: 0.2,
            ..cfg.clone()
        },
        100,
    )
    .unwrap();
    check_two("held-out", &held, &loc.locate(&held.image).unwrap());

    // 2. The same anatomy stored LPS: i and j reversed in memory.
    let mut lps_cfg = PhantomConfig {
        asymmetry: 0.2,
        ..cfg.clone()
    };
    lps_cfg.orientation.axes = "LPS".into();
    let lps = generate(&lps_cfg, 100).unwrap();
    assert_eq!(lps.image.geometry().orientation_code(), "LPS");
    check_two("LPS", &lps, &loc.locate(&lps.image).unwrap());

    // 3. Joints shifted in the field of view (6 mm posterior, 5 mm inferior of where every
    //    training scan had them).
    let shifted = generate(
        &PhantomConfig {
            fov_offset_mm: [0.0, 6.0, 7.0],
            ..cfg.clone()
        },
        101,
    )
    .unwrap();
    check_two("shifted", &shifted, &loc.locate(&shifted.image).unwrap());

    // 4. One joint, centred in its scan: the two-joint atlas is near zero there, so this is
    //    found only because the prior re-weights and never vetoes the network.
    let single = generate(
        &PhantomConfig {
            spacing: [SPACING; 3],
            ..PhantomConfig::one_side(Side::Right)
        },
        102,
    )
    .unwrap();
    let one = loc
        .locate_with(
            &single.image,
            &LocateConfig {
                max_joints: 1,
                per_side: false,
                ..loc.spec.locate.clone()
            },
        )
        .unwrap();
    assert_eq!(one.len(), 1, "{one:?}");
    let err = check_joint(&single, Side::Right, &one[0]);
    // The (normalised) prior at the joint's coarse voxel: below the threshold, so the prior
    // alone would not have found it there.
    let maps = loc.coarse_maps(&single.image).unwrap();
    let c = maps
        .geometry
        .world_to_voxel(one[0].center_mm)
        .map(|x| x.round() as usize);
    let prior_here = maps.prior.as_ref().unwrap()[c];
    eprintln!(
        "single joint: centre error {err:.2} mm, prior there {prior_here:.3}; total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        prior_here < loc.spec.locate.threshold as f32,
        "prior {prior_here} at the single joint"
    );
}

#[test]
fn prior_only_locator_without_a_network_locates_a_like_framed_phantom() {
    let cfg = two_joint_config();
    let train: Vec<Case> = (0..3)
        .map(|s| to_case(&format!("t{s}"), &generate(&cfg, 20 + s).unwrap()))
        .collect();
    let lcfg = LocatorTrainConfig {
        centre_label: Some("nv".into()),
        coarse_spacing_mm: 2.4,
        atlas_grid: [32, 16, 16],
        train_network: false,
        locate: LocateConfig {
            per_side: true,
            threshold: 0.5,
            ..Default::default()
        },
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let t = train_locator(
        &train,
        &class_names(),
        &lcfg,
        dir.path(),
        Device::Cpu,
        &mut Silent,
    )
    .unwrap();
    assert!(t.summary.is_none() && t.spec.checkpoint.is_none());
    let loc = Locator::load(&t.path, Device::Cpu).unwrap();
    assert!(loc.net.is_none());
    let held = generate(&cfg, 200).unwrap();
    check_two("prior-only", &held, &loc.locate(&held.image).unwrap());
}
