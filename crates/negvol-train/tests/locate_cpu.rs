//! The joint locator end to end on the CPU: train the coarse heatmap network and the atlas on
//! a few two-joint phantoms, save the locator, reload it as a user would and locate the joints
//! of unseen phantoms: a two-joint one as trained, the same stored LPS (flipped index axes),
//! one whose joints sit elsewhere in the field of view, and a single-joint scan framed unlike
//! every training scan (where the atlas prior is near zero, so the network must carry it).
//! The same locator (trained on RAS-stored scans) must locate an exact PSL-stored copy of a
//! phantom like the original, and its file without the `orientation` key (as written before
//! locators worked in RAS) must still locate in the stored voxel order.
//!
//! What "located" means here (the floor): every VOI must contain, for its joint, the whole
//! ground-truth negative volume grown by [`TB_MARGIN_MM`] on every side (clipped to the scan),
//! which holds the temporal bone around the fossa, and the condyle head (condyle voxels within
//! 10 mm of the head's top); and its centre must lie within [`CENTRE_FLOOR_MM`] of the centroid
//! of the joint's true NV.

use negvol_phantom::{generate, PhantomCase, PhantomConfig, Side};
use negvol_train::dataset::build_case;
use negvol_train::locate::{
    default_heatmap_run, downsample, train_locator, JointLocation, JointSide, LocateConfig,
    Locator, LocatorTrainConfig,
};
use negvol_train::trainer::Silent;
use negvol_train::Case;
use negvol_volume::{reorient, Geometry, Volume};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
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

/// The locator the network tests share: trained once, on the first call, on four RAS-stored
/// two-joint phantoms, into `CARGO_TARGET_TMPDIR/locate_cpu/` (`locator.json`, `net/`).
fn trained() -> &'static Path {
    static TRAINED: OnceLock<PathBuf> = OnceLock::new();
    TRAINED.get_or_init(|| {
        // One libtorch thread: the same numbers on every machine, and on a busy 2-core box
        // much faster than two (see the crate README's demo notes).
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
                assert_eq!(p.image.geometry().orientation_code(), "RAS");
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
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("locate_cpu");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let trained = train_locator(
            &train,
            &class_names(),
            &lcfg,
            &dir,
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
        trained.path
    })
}

/// The unseen two-joint phantom (RAS-stored, like the training ones).
fn held_out() -> PhantomCase {
    generate(
        &PhantomConfig {
            asymmetry: 0.2,
            ..two_joint_config()
        },
        100,
    )
    .unwrap()
}

#[test]
fn trained_locator_finds_both_joints_of_unseen_flipped_and_shifted_phantoms() {
    let t0 = std::time::Instant::now();
    let cfg = two_joint_config();
    let path = trained();

    // Reload from the file, as the pipeline does.
    let loc = Locator::load(path, Device::Cpu).unwrap();
    assert!(loc.net.is_some());

    // 1. An unseen two-joint phantom.
    let held = held_out();
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

/// `p` stored with orientation `code`: every volume reoriented exactly (axis permutation and
/// flips, no interpolation), so each voxel keeps its value and its world position.
fn stored_as(p: &PhantomCase, code: &str) -> PhantomCase {
    PhantomCase {
        image: reorient(&p.image, code).unwrap(),
        mc: reorient(&p.mc, code).unwrap(),
        tb: reorient(&p.tb, code).unwrap(),
        nv: reorient(&p.nv, code).unwrap(),
        truth: p.truth.clone(),
    }
}

/// World (RAS+ mm) box `(low, high)` of a VOI of `g`: the outer corners of its voxels.
fn voi_world_box(g: &Geometry, loc: &JointLocation) -> ([f64; 3], [f64; 3]) {
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for corner in 0..8 {
        let p = [0, 1, 2].map(|a| {
            let s = loc.voi_start[a] as f64;
            if corner >> a & 1 == 0 {
                s - 0.5
            } else {
                s + loc.voi_size[a] as f64 - 0.5
            }
        });
        let w = g.voxel_to_world(p);
        for a in 0..3 {
            lo[a] = lo[a].min(w[a]);
            hi[a] = hi[a].max(w[a]);
        }
    }
    (lo, hi)
}

/// A locator trained on RAS-stored phantoms finds the same joints, with VOIs over the same
/// world box, in an exact PSL-stored copy of an unseen phantom (i posterior, j superior,
/// k left: how a sagittal DICOM stack is often stored) as in the RAS original, and its coarse
/// maps are the same arrays on the same grid.
///
/// Before the locator worked in RAS this failed on every count (measured with this test on
/// the previous commit): the coarse grid was laid over the stored axes (16 x 16 x 58 instead
/// of 58 x 16 x 16 voxels), so the heatmap network saw the head with permuted and flipped
/// axes and found one "joint" on the PSL copy instead of two, at the mid-sagittal plane 50 mm
/// from the right joint, with a peak posterior of 0.50 instead of 0.98; and the
/// 48 x 60 x 28 mm VOI was laid along i, j, k = P, S, L, so its left-right extent was 28 mm
/// (27.6 mm measured) instead of 48 mm.
#[test]
fn locator_trained_on_ras_locates_a_psl_stored_copy_like_the_original() {
    let loc = Locator::load(trained(), Device::Cpu).unwrap();
    let ras = held_out();
    let psl = stored_as(&ras, "PSL");
    assert_eq!(psl.image.geometry().orientation_code(), "PSL");
    let a = loc.locate(&ras.image).unwrap();
    let b = loc.locate(&psl.image).unwrap();
    eprintln!("RAS: {a:?}\nPSL: {b:?}");
    let ma = loc.coarse_maps(&ras.image).unwrap();
    let mb = loc.coarse_maps(&psl.image).unwrap();
    eprintln!(
        "coarse grids: RAS {:?} ({}), PSL {:?} ({})",
        ma.geometry.shape(),
        ma.geometry.orientation_code(),
        mb.geometry.shape(),
        mb.geometry.orientation_code()
    );
    // Everything measured first (printed), then checked.
    let pairs: Vec<_> = [JointSide::Left, JointSide::Right]
        .into_iter()
        .map(|side| {
            let ja = a.iter().find(|j| j.side == side);
            let jb = b.iter().find(|j| j.side == side);
            if let (Some(ja), Some(jb)) = (ja, jb) {
                let d = (0..3)
                    .map(|x| (ja.center_mm[x] - jb.center_mm[x]).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let (alo, ahi) = voi_world_box(ras.image.geometry(), ja);
                let (blo, bhi) = voi_world_box(psl.image.geometry(), jb);
                eprintln!(
                    "{side:?}: centres {d:.2e} mm apart; VOI world box RAS {alo:.1?}..{ahi:.1?}, PSL {blo:.1?}..{bhi:.1?}"
                );
            }
            (side, ja, jb)
        })
        .collect();
    let same_grid = ma.geometry.check_same(&mb.geometry, 1e-9);
    assert!(same_grid.is_ok(), "coarse grids differ: {same_grid:?}");
    let net_diff = ma
        .network
        .as_ref()
        .unwrap()
        .iter()
        .zip(mb.network.as_ref().unwrap().iter())
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    eprintln!("network probability: largest difference {net_diff:.2e}");
    assert!(net_diff < 1e-4);
    check_two("RAS", &ras, &a);
    check_two("PSL", &psl, &b);
    for (side, ja, jb) in pairs {
        let (ja, jb) = (ja.unwrap(), jb.unwrap());
        let d = (0..3)
            .map(|x| (ja.center_mm[x] - jb.center_mm[x]).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            d < 0.05,
            "{side:?}: {:?} vs {:?}",
            ja.center_mm,
            jb.center_mm
        );
        assert!((ja.score - jb.score).abs() < 1e-4);
        let (alo, ahi) = voi_world_box(ras.image.geometry(), ja);
        let (blo, bhi) = voi_world_box(psl.image.geometry(), jb);
        // The same extent along every world axis, and the same place up to the rounding of
        // the start to a whole voxel (one voxel).
        for x in 0..3 {
            let (ea, eb) = (ahi[x] - alo[x], bhi[x] - blo[x]);
            assert!(
                (ea - eb).abs() < 1e-6,
                "{side:?} world axis {x}: {ea} vs {eb} mm"
            );
            assert!(
                (alo[x] - blo[x]).abs() <= SPACING + 1e-6,
                "{side:?} world axis {x}: VOI from {} vs {} mm",
                alo[x],
                blo[x]
            );
        }
    }
}

/// A locator file written before the `orientation` key existed (the trained one with the key
/// removed) loads as a stored-order locator and behaves as before: on an RAS-stored CT the
/// same joints as with the key (the frame is the stored order there), and on a PSL-stored one
/// it still runs its network on the coarse grid of the stored axes, as it was trained.
#[test]
fn locator_file_without_orientation_locates_in_stored_order_as_before() {
    let path = trained();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(v["orientation"], "RAS");
    v.as_object_mut().unwrap().remove("orientation");
    // Next to the original, so that the relative checkpoint path resolves.
    let old_path = path.with_file_name("locator-without-orientation.json");
    std::fs::write(&old_path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let old = Locator::load(&old_path, Device::Cpu).unwrap();
    let new = Locator::load(path, Device::Cpu).unwrap();
    assert_eq!(old.spec.orientation, None);
    assert_eq!(new.spec.orientation.as_deref(), Some("RAS"));

    let ras = held_out();
    let a = old.locate(&ras.image).unwrap();
    assert_eq!(a, new.locate(&ras.image).unwrap());
    check_two("old file, RAS", &ras, &a);

    // Stored order on the PSL copy: the coarse grid has the stored axes, and the network
    // probability is the network's output on the stored-order coarse image.
    let psl = stored_as(&ras, "PSL");
    let maps = old.coarse_maps(&psl.image).unwrap();
    let stored = downsample(&psl.image, old.spec.coarse_spacing_mm, None).unwrap();
    assert_eq!(maps.geometry.orientation_code(), "PSL");
    maps.geometry.check_same(stored.geometry(), 0.0).unwrap();
    let net = old.net.as_ref().unwrap();
    let p = net.predict(&stored, None).unwrap();
    let direct = p.probabilities[1].data();
    let diff = direct
        .iter()
        .zip(maps.network.as_ref().unwrap().iter())
        .fold(0.0f32, |m, (x, y)| m.max((x.clamp(0.0, 1.0) - y).abs()));
    assert_eq!(diff, 0.0);
}
