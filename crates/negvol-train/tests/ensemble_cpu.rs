//! Ensembles on the CPU with tiny, untrained negvol networks written as real checkpoints:
//! one member equals that model bit for bit, two members (different architectures,
//! normalisations and spacings) give the element-wise mean of their probabilities and its
//! argmax, weights, cross-validation folders in numeric fold order, and typed errors for
//! members that disagree.

use std::path::{Path, PathBuf};

use ndarray::{Array3, Array4};
use negvol_train::checkpoint::{save_checkpoint, TrainState};
use negvol_train::ensemble::{Ensemble, InferenceOverrides};
use negvol_train::infer::to_prediction;
use negvol_train::optim::Optimizer;
use negvol_train::preprocess::Normalization;
use negvol_train::run::{LoadedModel, RunConfig};
use negvol_train::{Prediction, TrainError};
use negvol_volume::{Geometry, Volume};
use tch::{nn::VarStore, Device};

/// libtorch's generator is process-global: tests that initialise networks take this lock.
static TORCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    TORCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// A tiny run: `unet3d` with `f_maps`, the given targets, inference windows of 8^3.
fn run(targets: &[&str], f_maps: &[i64], norm: Normalization, spacing: Option<f64>) -> RunConfig {
    let mut r: RunConfig = serde_json::from_value(serde_json::json!({
        "model": {"net": {"arch": "unet3d", "classes": targets.len() + 1, "f_maps": f_maps,
                          "num_groups": 2},
                  "loss": {"loss": "dice-ce"}},
        "train": {"targets": targets,
                  "sampler": {"patch": [8, 8, 8]},
                  "validation": {"inference": {"patch": [8, 8, 8], "overlap": 0.5}}}
    }))
    .unwrap();
    r.train.normalization = norm;
    r.train.target_spacing = spacing.map(|s| [s; 3]);
    r.validate().unwrap();
    r
}

fn window() -> Normalization {
    Normalization::Window {
        lo: -1000.0,
        hi: 1500.0,
    }
}

/// Initialise `run`'s network from `seed` and write it as checkpoint `dir/name.*`.
fn checkpoint(dir: &Path, name: &str, run: &RunConfig, seed: i64) -> PathBuf {
    let _g = lock();
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let _net = negvol_nets::build(&vs.root(), &run.model.net).unwrap();
    let opt = Optimizer::new(&run.train.optimizer, &vs).unwrap();
    let model = serde_json::to_value(&run.model).unwrap();
    save_checkpoint(
        dir,
        name,
        &vs,
        &opt,
        &run.train,
        &model,
        &TrainState::default(),
    )
    .unwrap()
}

/// Model A: unet3d 4-8, CT window, native spacing.
fn model_a(dir: &Path) -> PathBuf {
    checkpoint(dir, "best", &run(&["mc", "tb"], &[4, 8], window(), None), 3)
}

/// Model B: another architecture depth, z-score, resampled to 1.1 mm.
fn model_b(dir: &Path) -> PathBuf {
    let norm = Normalization::ZScore { clip: None };
    checkpoint(
        dir,
        "best",
        &run(&["mc", "tb"], &[4, 8, 16], norm, Some(1.1)),
        4,
    )
}

/// A CT-like test image (0.8 mm, not a multiple of the window).
fn image() -> Volume<f32> {
    let g = Geometry::from_spacing([14, 11, 9], [0.8; 3]).unwrap();
    let data = Array3::from_shape_fn((14, 11, 9), |(i, j, k)| {
        let d2 = (i as f32 - 6.0).powi(2) + (j as f32 - 5.0).powi(2) + (k as f32 - 4.0).powi(2);
        if d2 < 10.0 {
            1200.0
        } else {
            ((i * 37 + j * 11 + k * 5) % 23) as f32 * 40.0 - 600.0
        }
    });
    Volume::new(data, g).unwrap()
}

fn probs(p: &Prediction) -> Array4<f32> {
    let s = p.labels.geometry().shape();
    let mut a = Array4::zeros((p.probabilities.len(), s[0], s[1], s[2]));
    for (c, v) in p.probabilities.iter().enumerate() {
        a.index_axis_mut(ndarray::Axis(0), c).assign(v.data());
    }
    a
}

fn assert_same(a: &Prediction, b: &Prediction) {
    assert_eq!(a.labels, b.labels);
    assert_eq!(a.probabilities, b.probabilities);
}

#[test]
fn one_member_is_that_model_bit_for_bit() {
    let d = tempfile::tempdir().unwrap();
    let a = model_a(&d.path().join("a"));
    let img = image();
    let single = LoadedModel::load(&a, Device::Cpu).unwrap();
    let want = single.predict(&img, None).unwrap();
    // By its record, by its weights file and by its folder.
    for p in [
        a.clone(),
        a.with_extension("safetensors"),
        d.path().join("a"),
    ] {
        let ens = Ensemble::load(&[&p], Device::Cpu).unwrap();
        assert_eq!(ens.members().len(), 1);
        assert_eq!(ens.members()[0].path, a);
        assert_eq!(ens.targets(), ["mc", "tb"]);
        assert_eq!(ens.class_of("tb").unwrap(), 2);
        assert_same(&ens.predict(&img, None).unwrap(), &want);
    }
    // Overrides reach the member as the examples set them by hand.
    let ens = Ensemble::load(&[&a], Device::Cpu).unwrap();
    let mut inf = single.train.validation.inference.clone();
    inf.flip_tta = true;
    inf.overlap = 0.25;
    let want_tta = single.predict(&img, Some(&inf)).unwrap();
    let o = InferenceOverrides {
        flip_tta: Some(true),
        overlap: Some(0.25),
        ..Default::default()
    };
    assert_same(&ens.predict_overriding(&img, &o).unwrap(), &want_tta);
    assert_same(&ens.predict(&img, Some(&inf)).unwrap(), &want_tta);
    // The test can fail: TTA and overlap do change this model's output.
    assert_ne!(want_tta.probabilities, want.probabilities);
}

#[test]
fn two_members_give_the_mean_probability_and_its_argmax() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (model_a(&d.path().join("a")), model_b(&d.path().join("b")));
    let img = image();
    let pa = probs(
        &LoadedModel::load(&a, Device::Cpu)
            .unwrap()
            .predict(&img, None)
            .unwrap(),
    );
    let pb = probs(
        &LoadedModel::load(&b, Device::Cpu)
            .unwrap()
            .predict(&img, None)
            .unwrap(),
    );
    // The two differently initialised (and differently built) models really differ.
    let diff = (&pa - &pb).mapv(f32::abs).fold(0.0f32, |m, v| m.max(*v));
    assert!(diff > 1e-2, "max |pa - pb| = {diff}");

    let ens = Ensemble::load(&[&a, &b], Device::Cpu).unwrap();
    assert_eq!(ens.weights(), [1.0, 1.0]);
    let text = ens.describe_members();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "ensemble of 2 models:");
    assert!(
        lines[1].starts_with("  ") && lines[1].ends_with("(unet3d)"),
        "{text}"
    );
    let got = ens.predict(&img, None).unwrap();
    let mean = (&pa + &pb) / 2.0;
    for (x, y) in probs(&got).iter().zip(mean.iter()) {
        approx::assert_abs_diff_eq!(*x, *y, epsilon = 1e-6);
    }
    let want = to_prediction(&mean, img.geometry()).unwrap();
    assert_eq!(got.labels, want.labels);
    assert_eq!(got.labels.geometry(), img.geometry());
    // Probabilities still sum to one.
    let s = probs(&got).sum_axis(ndarray::Axis(0));
    assert!(s.iter().all(|v| (v - 1.0).abs() < 1e-5));

    // Weighted: (3 pa + pb) / 4; a zero weight leaves the other member alone, exactly.
    let w = Ensemble::load(&[&a, &b], Device::Cpu)
        .unwrap()
        .with_weights(vec![3.0, 1.0])
        .unwrap();
    let wmean = (&pa * 3.0 + &pb) / 4.0;
    for (x, y) in probs(&w.predict(&img, None).unwrap())
        .iter()
        .zip(wmean.iter())
    {
        approx::assert_abs_diff_eq!(*x, *y, epsilon = 1e-6);
    }
    let only_b = Ensemble::load(&[&a, &b], Device::Cpu)
        .unwrap()
        .with_weights(vec![0.0, 2.5])
        .unwrap();
    for (x, y) in probs(&only_b.predict(&img, None).unwrap())
        .iter()
        .zip(pb.iter())
    {
        approx::assert_abs_diff_eq!(*x, *y, epsilon = 1e-6);
    }
    // Bad weights are configuration errors.
    for bad in [
        vec![1.0],
        vec![1.0, f64::NAN],
        vec![1.0, -0.5],
        vec![0.0, 0.0],
        vec![f64::INFINITY, 1.0],
    ] {
        let e = Ensemble::load(&[&a, &b], Device::Cpu)
            .unwrap()
            .with_weights(bad.clone());
        assert!(matches!(e, Err(TrainError::Config(_))), "{bad:?}: {e:?}");
    }
}

#[test]
fn a_cross_validation_folder_gives_its_folds_in_numeric_order() {
    let d = tempfile::tempdir().unwrap();
    let cv = d.path().join("cv");
    // fold_10 must come after fold_2 (a name sort would put it first).
    let b = model_b(&cv.join("fold_10"));
    let a = model_a(&cv.join("fold_2"));
    let ens = Ensemble::load(&[&cv], Device::Cpu).unwrap();
    let paths: Vec<&Path> = ens.members().iter().map(|m| m.path.as_path()).collect();
    assert_eq!(paths, [a.as_path(), b.as_path()]);
    // The same ensemble as naming both checkpoints.
    let img = image();
    let by_files = Ensemble::load(&[&a, &b], Device::Cpu).unwrap();
    assert_same(
        &ens.predict(&img, None).unwrap(),
        &by_files.predict(&img, None).unwrap(),
    );
}

#[test]
fn members_that_disagree_and_no_model_are_typed_errors() {
    let d = tempfile::tempdir().unwrap();
    let a = model_a(&d.path().join("a"));
    // Other targets (and so another class count).
    let c = checkpoint(
        &d.path().join("c"),
        "best",
        &run(&["mc"], &[4, 8], window(), None),
        5,
    );
    // The same targets in another order.
    let r = checkpoint(
        &d.path().join("r"),
        "last",
        &run(&["tb", "mc"], &[4, 8], window(), None),
        6,
    );
    for other in [&c, &r] {
        match Ensemble::load(&[&a, other], Device::Cpu) {
            Err(TrainError::Checkpoint { path, message }) => {
                assert_eq!(&path, other);
                assert!(message.contains("targets"), "{message}");
                assert!(message.contains(&a.display().to_string()), "{message}");
            }
            e => panic!("{e:?}"),
        }
    }
    let none: [&Path; 0] = [];
    assert!(matches!(
        Ensemble::load(&none, Device::Cpu),
        Err(TrainError::Config(_))
    ));
    match Ensemble::load(&[d.path()], Device::Cpu) {
        Err(TrainError::Checkpoint { path, .. }) => assert_eq!(path, d.path()),
        e => panic!("{e:?}"),
    }
}
