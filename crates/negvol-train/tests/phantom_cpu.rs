//! End-to-end CPU training with the real networks and losses on tiny TMJ phantoms: the loss
//! falls and the condyle is segmented on an unseen phantom above a stated Dice floor.

use negvol_phantom::{generate, PhantomConfig};
use negvol_train::dataset::build_case;
use negvol_train::infer::InferenceConfig;
use negvol_train::optim::{LrSchedule, OptimizerConfig};
use negvol_train::preprocess::Normalization;
use negvol_train::run::{build_trainer, LoadedModel, RunConfig};
use negvol_train::sampler::SamplerConfig;
use negvol_train::trainer::{dice, Silent};
use negvol_train::{augment::AugmentConfig, Case, TrainConfig, ValidationConfig};
use tch::Device;

/// Held-out Dice floor for the condyle after this short CPU training (measured 0.863 on the
/// shared 2-core box, debug profile, about 60 s, with the paper's augmentation read through
/// cubic interpolation; 0.857 with trilinear; 0.814 before the sampler stopped shifting labels
/// half a voxel against their images; the floor leaves room for libtorch numeric
/// differences between machines). The image also shows the temporal bone at bone intensity,
/// so the network must tell the two bones apart by shape and position.
const DICE_FLOOR: f64 = 0.80;

fn phantom_case(seed: u64, spacing: f64) -> Case {
    let cfg = PhantomConfig {
        spacing: [spacing; 3],
        ..Default::default()
    };
    let p = generate(&cfg, seed).unwrap();
    let mc = p.mc.map(|v| f32::from(u8::from(*v)));
    build_case(
        &format!("p{seed}"),
        &format!("p{seed}"),
        p.image,
        &[("mc".into(), mc)],
    )
    .unwrap()
}

fn run_config() -> RunConfig {
    let json = r#"{"net": {"arch": "unet3d", "f_maps": [8, 16], "num_groups": 4},
                   "loss": {"loss": "dice-ce", "alpha": 1.0, "beta": 1.0}}"#;
    RunConfig {
        model: serde_json::from_str(json).unwrap(),
        train: TrainConfig {
            targets: vec!["mc".into()],
            normalization: Normalization::default(),
            sampler: SamplerConfig {
                patch: [16, 16, 16],
                batch_size: 2,
                foreground_fraction: 0.5,
                batches_per_epoch: 10,
                workers: 2,
                prefetch: 2,
            },
            augment: AugmentConfig::paper(),
            optimizer: OptimizerConfig::adam(3e-3, 1e-5),
            schedule: LrSchedule::Poly { exponent: 0.9 },
            epochs: 8,
            grad_clip: Some(12.0),
            seed: 3,
            validation: ValidationConfig {
                every: 4,
                patience: None,
                hd95: true,
                inference: InferenceConfig {
                    patch: [16, 16, 16],
                    batch_size: 4,
                    ..Default::default()
                },
            },
            ..TrainConfig::default()
        },
    }
}

/// Train `run` on `train` (validating on `held_out`), check the loss fell below 70 % of its
/// first epoch, reload the best checkpoint as a user would, and return it with its held-out
/// condyle Dice.
fn train_and_score(run: &RunConfig, train: &[Case], held_out: &Case) -> (LoadedModel, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut t = build_trainer(run, Device::Cpu).unwrap();
    let s = t
        .fit(
            train,
            std::slice::from_ref(held_out),
            dir.path(),
            &mut Silent,
        )
        .unwrap();
    let h = &s.state.history;
    let (first, last) = (h[0].train_loss, h.last().unwrap().train_loss);
    assert!(
        last.is_finite() && last < 0.7 * first,
        "loss {first} -> {last}"
    );
    let m = LoadedModel::load(s.best.as_ref().unwrap(), Device::Cpu).unwrap();
    let pred = m.predict(&held_out.image, None).unwrap();
    assert_eq!(pred.labels.geometry(), held_out.image.geometry());
    let d = dice(pred.labels.data(), held_out.label.data(), 1);
    eprintln!("held-out condyle Dice {d:.4}, loss {first:.4} -> {last:.4}");
    (m, d)
}

#[test]
fn short_phantom_training_beats_the_dice_floor() {
    let spacing = 1.2; // 32^3 phantoms
    let train: Vec<Case> = (0..3).map(|s| phantom_case(s, spacing)).collect();
    let (_, d) = train_and_score(&run_config(), &train, &phantom_case(100, spacing));
    assert!(d > DICE_FLOOR, "held-out Dice {d} <= floor {DICE_FLOOR}");
}

/// Sparse annotation (nnU-Net's `ignore` label): only every third slice along k is
/// annotated, the rest of each training label map is 255. With `ignore_label` the loss skips
/// those voxels and the network still learns the condyle on a fully annotated held-out case;
/// without it the run refuses the data.
#[test]
fn training_on_sparse_slices_with_the_ignore_label() {
    let spacing = 1.2;
    let sparse = |seed: u64| {
        let mut c = phantom_case(seed, spacing);
        c.label
            .view_mut()
            .indexed_iter_mut()
            .filter(|((_, _, k), _)| k % 3 != 0)
            .for_each(|(_, l)| *l = negvol_train::IGNORE_LABEL);
        c
    };
    let train: Vec<Case> = (0..3).map(sparse).collect();
    let mut run = run_config();
    let dir = tempfile::tempdir().unwrap();
    let refused = build_trainer(&run, Device::Cpu)
        .unwrap()
        .fit(&train, &[], dir.path(), &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("ignore_label"), "{refused}");
    run.train.ignore_label = true;
    let (m, d) = train_and_score(&run, &train, &phantom_case(100, spacing));
    assert_eq!(
        m.model.loss.ignore_index,
        Some(255),
        "the checkpoint records the loss used"
    );
    assert!(
        d > SPARSE_DICE_FLOOR,
        "held-out Dice {d} <= floor {SPARSE_DICE_FLOOR}"
    );
}

/// Held-out Dice floor after training on one annotated slice in three (see the test):
/// measured 0.857 on the shared 2-core box (debug profile, about 40 s), against 0.863 with every
/// slice annotated and 0.783 when the unannotated voxels are taken as background instead of
/// ignored, so the floor separates ignoring from not ignoring.
const SPARSE_DICE_FLOOR: f64 = 0.80;

#[test]
fn cross_validation_trains_one_fresh_model_per_fold() {
    let cases: Vec<Case> = (0..4).map(|s| phantom_case(10 + s, 2.4)).collect(); // 16^3
    let mut run = run_config();
    run.train.epochs = 1;
    run.train.sampler.batches_per_epoch = 2;
    let dir = tempfile::tempdir().unwrap();
    let folds =
        negvol_train::run::cross_validate(&run, &cases, 2, Device::Cpu, dir.path(), &mut Silent)
            .unwrap();
    assert_eq!(folds.len(), 2);
    for (f, s) in folds.iter().enumerate() {
        assert_eq!(s.state.epoch, 1);
        // Every fold starts from step 0: no optimiser state leaks between folds.
        assert_eq!(s.state.global_step, 2);
        assert!(dir.path().join(format!("fold_{f}/last.json")).is_file());
        assert!(s.state.history[0].val_dice.is_some());
    }
    // One fold of given splits (nnU-Net's splits_final.json form) trains alone, into its own
    // folder; a fold past the list is an error.
    let splits = vec![(vec![0, 1, 2], vec![3]), (vec![1, 2, 3], vec![0])];
    let dir = tempfile::tempdir().unwrap();
    let one = negvol_train::run::cross_validate_folds(
        &run,
        &cases,
        &splits,
        &[1],
        Device::Cpu,
        dir.path(),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(one.len(), 1);
    assert!(dir.path().join("fold_1/last.json").is_file());
    assert!(!dir.path().join("fold_0").exists());
    let e = negvol_train::run::cross_validate_folds(
        &run,
        &cases,
        &splits,
        &[2],
        Device::Cpu,
        dir.path(),
        &mut Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("fold 2 requested of 2"), "{e}");
}

#[test]
fn continuing_a_cross_validation_skips_finished_folds_and_extends_them() {
    let cases: Vec<Case> = (0..4).map(|s| phantom_case(20 + s, 2.4)).collect(); // 16^3
    let mut run = run_config();
    run.train.epochs = 1;
    run.train.sampler.batches_per_epoch = 2;
    let splits = vec![(vec![0, 1, 2], vec![3]), (vec![1, 2, 3], vec![0])];
    let dir = tempfile::tempdir().unwrap();
    let go = |run: &RunConfig, resume: bool| {
        let f = if resume {
            negvol_train::run::continue_folds
        } else {
            negvol_train::run::cross_validate_folds
        };
        f(
            run,
            &cases,
            &splits,
            &[0, 1],
            Device::Cpu,
            dir.path(),
            &mut Silent,
        )
        .unwrap()
    };
    let lines = |f: usize| {
        std::fs::read_to_string(dir.path().join(format!("fold_{f}/log.jsonl")))
            .unwrap()
            .lines()
            .count()
    };
    let first = go(&run, false);
    let weights = dir.path().join("fold_0/last.safetensors");
    let stamp = std::fs::metadata(&weights).unwrap().modified().unwrap();
    // Both folds finished their 1 epoch: continuing changes nothing and reports them.
    let again = go(&run, true);
    for (a, b) in first.iter().zip(&again) {
        assert_eq!(a.state.global_step, b.state.global_step);
        assert_eq!(a.state.history.len(), b.state.history.len());
        assert_eq!(a.last, b.last);
        assert_eq!(a.best, b.best);
    }
    assert_eq!((lines(0), lines(1)), (1, 1));
    assert_eq!(
        std::fs::metadata(&weights).unwrap().modified().unwrap(),
        stamp
    );
    // Fold 1 lost (never started): it trains from scratch; fold 0 is still finished.
    std::fs::remove_dir_all(dir.path().join("fold_1")).unwrap();
    let restarted = go(&run, true);
    assert_eq!(restarted[1].state.global_step, 2);
    assert_eq!(lines(1), 1);
    // One more epoch: each fold continues from its checkpoint (steps 2 -> 4), not from 0.
    run.train.epochs = 2;
    let longer = go(&run, true);
    for (f, s) in longer.iter().enumerate() {
        assert_eq!(s.state.epoch, 2, "fold {f}");
        assert_eq!(s.state.global_step, 4, "fold {f}");
        assert_eq!(lines(f), 2, "fold {f}");
    }
    // Without continuing, the same call starts both folds over, with a new log.
    let fresh = go(&run, false);
    assert!(fresh
        .iter()
        .all(|s| s.state.global_step == 4 && s.state.history.len() == 2));
    assert_eq!((lines(0), lines(1)), (2, 2));
}
