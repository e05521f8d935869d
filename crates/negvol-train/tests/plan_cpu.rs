//! Experiment planning end to end on the CPU: fingerprint a phantom dataset written to disk,
//! plan from it, round-trip the plan through its JSON file, build the planned network and run
//! it on a patch of the planned size, and train one short epoch with the plan applied.

use std::path::Path;

use negvol_phantom::{case_seed, generate, write_dataset, PhantomConfig};
use negvol_train::plan::{fingerprint_with, plan, FingerprintOptions, Plan, PlanOptions};
use negvol_train::preprocess::Normalization;
use negvol_train::run::{build_trainer, RunConfig};
use negvol_train::trainer::Silent;
use negvol_train::{DatasetSpec, TrainError};
use tch::{Device, Kind, Tensor};

const SPACING: f64 = 1.2;
const CASES: usize = 3;
const SEED: u64 = 5;

fn targets() -> Vec<String> {
    vec!["mc".into(), "tb".into()]
}

fn config() -> PhantomConfig {
    PhantomConfig {
        spacing: [SPACING; 3],
        ..Default::default()
    }
}

fn write_phantoms(dir: &Path) {
    write_dataset(dir, &config(), CASES, SEED).unwrap();
}

fn options() -> FingerprintOptions {
    FingerprintOptions {
        foreground_samples: 600_000,
        ..Default::default()
    }
}

#[test]
fn fingerprint_of_a_phantom_dataset_has_its_known_facts() {
    let dir = tempfile::tempdir().unwrap();
    write_phantoms(dir.path());
    let spec = DatasetSpec::open(dir.path()).unwrap();
    let fp = fingerprint_with(&spec, &targets(), &options()).unwrap();
    let shape = config().grid_shape().unwrap();
    assert_eq!(fp.targets, targets());
    assert_eq!(fp.cases.len(), CASES);
    let mut fg_images = Vec::new();
    let mut fg_labels = Vec::new();
    for (i, c) in fp.cases.iter().enumerate() {
        assert_eq!(c.id, format!("case_{i:03}"));
        assert_eq!(c.shape, shape);
        for s in c.spacing {
            approx::assert_abs_diff_eq!(s, SPACING, epsilon = 1e-5);
        }
        // Class counts as training sees them: where the masks overlap the later target wins.
        let p = generate(&config(), case_seed(SEED, i)).unwrap();
        let tb = p.tb.data().iter().filter(|&&t| t).count() as u64;
        let mc_only =
            p.mc.data()
                .iter()
                .zip(p.tb.data().iter())
                .filter(|(&m, &t)| m && !t)
                .count() as u64;
        assert!(mc_only > 0 && tb > 0);
        assert_eq!(c.foreground_voxels, vec![mc_only, tb], "{}", c.id);
        // The NIfTI header stores the spacing as f32.
        approx::assert_relative_eq!(
            c.foreground_mm3[1],
            tb as f64 * SPACING.powi(3),
            max_relative = 1e-6
        );
        let lab = p.label_map().map(|&l| u8::from(l == 1 || l == 2));
        fg_labels.push(lab.data().clone());
        fg_images.push(p.image.data().clone());
    }
    let s3 = [SPACING; 3];
    for (got, want) in [
        (fp.median_spacing, s3),
        (fp.min_spacing, s3),
        (fp.max_spacing, s3),
        (fp.target_spacing, s3),
    ] {
        for a in 0..3 {
            approx::assert_abs_diff_eq!(got[a], want[a], epsilon = 1e-5);
        }
    }
    assert_eq!(fp.anisotropic_axis, None);
    assert_eq!(fp.median_shape, shape.map(|x| x as f64));
    assert_eq!(fp.median_shape_at_target, shape.map(|x| x as f64));
    let mut tb_mm3: Vec<f64> = fp.cases.iter().map(|c| c.foreground_mm3[1]).collect();
    tb_mm3.sort_by(f64::total_cmp);
    approx::assert_abs_diff_eq!(fp.median_volume_mm3[1], tb_mm3[1], epsilon = 1e-9);

    // The sampled statistics approach those of every foreground voxel (bone, so high HU).
    let st = &fp.intensity;
    assert_eq!(st.samples, CASES * (600_000 / CASES));
    assert!(st.min <= st.percentile_00_5 && st.percentile_00_5 < st.median);
    assert!(st.median < st.percentile_99_5 && st.percentile_99_5 <= st.max);
    let full = Normalization::default()
        .fit(fg_images.iter().zip(fg_labels.iter()), usize::MAX)
        .unwrap();
    let Normalization::ForegroundZScore {
        stats: Some(exact), ..
    } = full
    else {
        panic!("{full:?}")
    };
    // Cases of different foreground size weigh the same in the sample, not in `fit`: allow
    // a few percent of the spread.
    let tol = 0.05 * exact.std as f64;
    approx::assert_abs_diff_eq!(st.clipped_mean, exact.mean as f64, epsilon = tol);
    approx::assert_abs_diff_eq!(st.clipped_std, exact.std as f64, epsilon = tol);
    approx::assert_abs_diff_eq!(st.percentile_99_5, exact.hi as f64, epsilon = tol);
    assert!(st.mean > 300.0, "bone foreground, HU-like: {st:?}");

    // Deterministic: the same fingerprint again, cases read in parallel.
    let again = fingerprint_with(&spec, &targets(), &options()).unwrap();
    assert_eq!(again, fp);
    // Through its JSON file.
    let path = dir.path().join("fingerprint.json");
    fp.save(&path).unwrap();
    assert_eq!(
        negvol_train::plan::Fingerprint::from_json_file(&path).unwrap(),
        fp
    );

    // A case that cannot be read is named in the error.
    std::fs::remove_file(dir.path().join("case_001/tb.nii.gz")).unwrap();
    let e = fingerprint_with(&spec, &targets(), &options()).unwrap_err();
    assert!(e.to_string().contains("case_001"), "{e}");
    // No such target: named too.
    let e = fingerprint_with(&spec, &["xx".to_string()], &options()).unwrap_err();
    assert!(
        matches!(&e, TrainError::Case { message, .. } if message.contains("\"xx\"")),
        "{e}"
    );
}

#[test]
fn a_plan_round_trips_builds_runs_and_trains() {
    let dir = tempfile::tempdir().unwrap();
    write_phantoms(dir.path());
    let spec = DatasetSpec::open(dir.path()).unwrap();
    let fp = fingerprint_with(&spec, &targets(), &options()).unwrap();
    let shape = config().grid_shape().unwrap();
    // A tiny budget, so that the patch is small and the forward pass cheap.
    let opts = PlanOptions {
        gpu_memory_gib: 0.05,
        ..Default::default()
    };
    let p = plan(&fp, &opts).unwrap();
    assert!(p.estimated_memory_gib <= 0.05, "{p:?}");
    assert!(p.patch.iter().zip(shape).all(|(&a, s)| a <= s), "{p:?}");
    let path = dir.path().join("plan.json");
    p.save(&path).unwrap();
    let back = Plan::from_json_file(&path).unwrap();
    assert_eq!(back, p);

    for arch in ["unet", "unet3d-att", "vnet"] {
        let p = plan(
            &fp,
            &PlanOptions {
                architecture: arch.parse().unwrap(),
                ..opts.clone()
            },
        )
        .unwrap();
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let net = negvol_nets::build(&vs.root(), &p.net).unwrap();
        let x = Tensor::zeros(
            [
                1,
                1,
                p.patch[0] as i64,
                p.patch[1] as i64,
                p.patch[2] as i64,
            ],
            (Kind::Float, Device::Cpu),
        );
        let y = tch::no_grad(|| net.forward_t(&x, false)).unwrap();
        assert_eq!(
            y.size(),
            vec![
                1,
                3,
                p.patch[0] as i64,
                p.patch[1] as i64,
                p.patch[2] as i64
            ],
            "{arch}"
        );
    }

    // One short epoch with the plan applied (spacing, patch, batch, normalisation, network).
    train_one_epoch(&back, &spec, dir.path());
}

/// One single-batch epoch of `plan` applied to a default run on `spec`'s cases; the loss must
/// be finite.
fn train_one_epoch(plan: &Plan, spec: &DatasetSpec, dir: &std::path::Path) {
    let mut run = RunConfig::default();
    plan.apply_to_run(&mut run);
    run.train.epochs = 1;
    run.train.sampler.batches_per_epoch = 1;
    run.train.sampler.workers = 0;
    run.train.validation.every = 0;
    let cases = spec.load(&run.train.targets).unwrap();
    let mut trainer = build_trainer(&run, Device::Cpu).unwrap();
    let s = trainer
        .fit(&cases, &[], &dir.join("run"), &mut Silent)
        .unwrap();
    assert_eq!(s.state.epoch, 1);
    let loss = s.state.history[0].train_loss;
    assert!(loss.is_finite(), "{loss}");
}

#[test]
fn thick_slice_phantoms_plan_kernel_one_and_the_network_runs_and_trains() {
    // 0.8 mm in-plane, 3.2 mm slices along k: 48 x 48 x 12 voxels.
    let thick = PhantomConfig {
        spacing: [0.8, 0.8, 3.2],
        ..Default::default()
    };
    let shape = thick.grid_shape().unwrap();
    assert_eq!(shape, [48, 48, 12]);
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), &thick, CASES, SEED).unwrap();
    let spec = DatasetSpec::open(dir.path()).unwrap();
    let fp = fingerprint_with(&spec, &targets(), &options()).unwrap();
    // 3.2 > 3 x 0.8 and 12 voxels < 48 / 3: anisotropic along k.
    assert_eq!(fp.anisotropic_axis, Some(2));
    let p = plan(
        &fp,
        &PlanOptions {
            gpu_memory_gib: 0.05,
            ..Default::default()
        },
    )
    .unwrap();
    let negvol_nets::NetConfig::Unet(c) = &p.net else {
        panic!("{p:?}")
    };
    // Stage 0 does not mix voxels along the coarse axis; the network is built that way.
    assert_eq!(p.kernel_sizes[0], [3, 3, 1], "{p}");
    assert_eq!(c.kernel_sizes.as_ref(), Some(&p.kernel_sizes), "{p}");
    assert_eq!(c.resolved_strides()[1][2], 1, "k is not pooled first: {p}");
    let path = dir.path().join("plan.json");
    p.save(&path).unwrap();
    let back = Plan::from_json_file(&path).unwrap();
    // Exact, f64 fields included (serde_json's float_roundtrip feature).
    assert_eq!(back, p);

    let vs = tch::nn::VarStore::new(Device::Cpu);
    let net = negvol_nets::build(&vs.root(), &p.net).unwrap();
    let stem = &net.layers()[0];
    assert!(stem.description.contains("k=[3, 3, 1]"), "{stem:?}");
    let patch = p.patch.map(|x| x as i64);
    let x = Tensor::randn(
        [1, 1, patch[0], patch[1], patch[2]],
        (Kind::Float, Device::Cpu),
    );
    let y = tch::no_grad(|| net.forward_t(&x, false)).unwrap();
    assert_eq!(y.size(), vec![1, 3, patch[0], patch[1], patch[2]], "{p}");

    // One short epoch with this plan applied.
    train_one_epoch(&back, &spec, dir.path());
}

/// Plans are made in RAS axes: the same anatomy stored PSL (anisotropic spacing permuted with
/// the axes) fingerprints to the same spacings and shapes and plans the same patch, and the
/// plan makes the run reorient to RAS.
#[test]
fn plans_do_not_depend_on_the_storage_order_of_the_scans() {
    let ras = PhantomConfig {
        spacing: [1.0, 1.2, 1.4],
        ..Default::default()
    };
    let mut psl = ras.clone();
    psl.orientation.axes = "PSL".into();
    psl.spacing = [1.2, 1.4, 1.0];
    let plan_of = |cfg: &PhantomConfig| {
        let dir = tempfile::tempdir().unwrap();
        write_dataset(dir.path(), cfg, 2, SEED).unwrap();
        let spec = DatasetSpec::open(dir.path()).unwrap();
        let fp = fingerprint_with(&spec, &targets(), &options()).unwrap();
        let opts = PlanOptions {
            gpu_memory_gib: 0.05,
            ..Default::default()
        };
        (fp.clone(), plan(&fp, &opts).unwrap())
    };
    let ((fa, pa), (fb, pb)) = (plan_of(&ras), plan_of(&psl));
    assert_eq!(psl.grid_shape().unwrap(), {
        let s = ras.grid_shape().unwrap();
        [s[1], s[2], s[0]]
    });
    for (a, b) in fa.cases.iter().zip(&fb.cases) {
        assert_eq!(a.shape, b.shape);
        for (x, y) in a.spacing.iter().zip(b.spacing) {
            approx::assert_abs_diff_eq!(*x, y, epsilon = 1e-5);
        }
    }
    assert_eq!((pa.patch, pa.target_spacing), (pb.patch, pb.target_spacing));
    let mut t = negvol_train::TrainConfig {
        orientation: None,
        ..Default::default()
    };
    pb.apply(&mut t);
    assert_eq!(t.orientation.as_deref(), Some("RAS"));
}
