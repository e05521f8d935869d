//! Training-loop tests on the CPU with a tiny convolutional model and cross-entropy defined
//! here (independent of negvol-nets / negvol-losses): resume equals an uninterrupted run,
//! training lowers the loss and segments a held-out synthetic case.

use std::path::Path;

use ndarray::Array3;
use negvol_train::augment::AugmentConfig;
use negvol_train::checkpoint::{read_record, EpochRecord};
use negvol_train::infer::{Activation, InferenceConfig};
use negvol_train::optim::{LrSchedule, OptimizerConfig};
use negvol_train::preprocess::Normalization;
use negvol_train::sampler::SamplerConfig;
use negvol_train::trainer::{predict_image, Network, Silent};
use negvol_train::{Case, Result, TrainConfig, TrainError, Trainer, ValidationConfig};
use negvol_volume::{Geometry, Volume};
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

#[derive(Debug)]
struct Tiny {
    c1: nn::Conv3D,
    c2: nn::Conv3D,
}

impl Tiny {
    fn new(vs: &VarStore) -> Self {
        let cfg = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let p = vs.root();
        Self {
            c1: nn::conv3d(&p / "c1", 1, 8, 3, cfg),
            c2: nn::conv3d(&p / "c2", 8, 2, 1, Default::default()),
        }
    }
}

impl Network for Tiny {
    fn forward(&self, xs: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(self.c2.forward(&self.c1.forward(xs).relu()))
    }
}

fn ce(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    logits
        .f_log_softmax(1, Kind::Float)
        .and_then(|l| l.f_nll_loss_nd::<Tensor>(target, None, tch::Reduction::Mean, -100))
        .map_err(|e| TrainError::Loss(e.to_string()))
}

/// A synthetic "CT": a bright ball (the target) in a dimmer box, noise-free.
fn ball_case(id: &str, n: usize, c: [f64; 3], r: f64) -> Case {
    let g = Geometry::from_spacing([n, n, n], [0.5; 3]).unwrap();
    let lab = Array3::from_shape_fn((n, n, n), |(i, j, k)| {
        let d2 = (i as f64 - c[0]).powi(2) + (j as f64 - c[1]).powi(2) + (k as f64 - c[2]).powi(2);
        u8::from(d2 <= r * r)
    });
    let img = Array3::from_shape_fn((n, n, n), |(i, j, k)| {
        if lab[[i, j, k]] == 1 {
            1200.0
        } else if (3..n - 3).contains(&i) && (3..n - 3).contains(&j) {
            300.0
        } else {
            -1000.0
        }
    });
    Case {
        id: id.into(),
        patient: id.into(),
        image: Volume::new(img, g.clone()).unwrap(),
        label: Volume::new(lab, g).unwrap(),
    }
}

fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        targets: vec!["ball".into()],
        normalization: Normalization::Window {
            lo: -1000.0,
            hi: 1500.0,
        },
        sampler: SamplerConfig {
            patch: [8, 8, 8],
            batch_size: 2,
            foreground_fraction: 0.5,
            batches_per_epoch: 6,
            workers: 2,
            prefetch: 2,
        },
        augment: AugmentConfig::default(),
        optimizer: OptimizerConfig::adam(0.02, 1e-4),
        schedule: LrSchedule::Step {
            step_size: 2,
            gamma: 0.5,
        },
        epochs,
        grad_clip: Some(5.0),
        seed: 11,
        validation: ValidationConfig {
            every: 1,
            patience: None,
            hd95: true,
            inference: InferenceConfig {
                patch: [8, 8, 8],
                batch_size: 4,
                activation: Activation::Softmax,
                ..Default::default()
            },
        },
        ..TrainConfig::default()
    }
}

/// libtorch's generator and thread count are process-global: tests that build networks
/// take this lock so that parallel tests do not draw from each other's generator.
static TORCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    TORCH.lock().unwrap_or_else(|e| e.into_inner())
}

fn trainer(cfg: TrainConfig) -> Trainer {
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let net = Tiny::new(&vs);
    Trainer::new(
        cfg,
        vs,
        Box::new(net),
        Box::new(ce),
        serde_json::json!({"net": "tiny"}),
    )
    .unwrap()
}

fn weights(t: &Trainer) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = t
        .var_store()
        .variables()
        .into_iter()
        .map(|(k, t)| {
            let n = t.numel();
            let mut d = vec![0f32; n];
            t.copy_data(&mut d, n);
            (k, d)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn resume_continues_exactly_like_an_uninterrupted_run() {
    let _g = lock();
    tch::set_num_threads(1);
    let cases = vec![
        ball_case("a", 16, [8.0, 8.0, 8.0], 3.0),
        ball_case("b", 16, [6.0, 9.0, 7.0], 4.0),
    ];
    let val = vec![ball_case("v", 16, [9.0, 7.0, 8.0], 3.5)];
    let dir = tempfile::tempdir().unwrap();
    let (full, part) = (dir.path().join("full"), dir.path().join("part"));

    let mut a = trainer(config(3));
    let sa = a.fit(&cases, &val, &full, &mut Silent).unwrap();
    assert_eq!(sa.state.history.len(), 3);

    let mut b = trainer(config(1));
    b.fit(&cases, &val, &part, &mut Silent).unwrap();
    // A fresh process would build a fresh network with different random weights: resume
    // must overwrite them.
    tch::manual_seed(999);
    let vs = VarStore::new(Device::Cpu);
    let net = Tiny::new(&vs);
    let mut c = Trainer::new(
        config(3),
        vs,
        Box::new(net),
        Box::new(ce),
        serde_json::json!({"net": "tiny"}),
    )
    .unwrap();
    c.resume(part.join("last.json")).unwrap();
    assert_eq!(c.state().epoch, 1);
    let sc = c.fit(&cases, &val, &part, &mut Silent).unwrap();
    for e in 0..3 {
        let (x, y) = (&sa.state.history[e], &sc.state.history[e]);
        assert!(
            (x.train_loss - y.train_loss).abs() <= 1e-6 * x.train_loss.abs().max(1.0),
            "epoch {e}: {} vs {}",
            x.train_loss,
            y.train_loss
        );
        assert_eq!(x.val_mean_dice.is_some(), y.val_mean_dice.is_some());
    }
    for ((n1, w1), (n2, w2)) in weights(&a).iter().zip(weights(&c).iter()) {
        assert_eq!(n1, n2);
        for (p, q) in w1.iter().zip(w2) {
            assert!((p - q).abs() <= 1e-5, "{n1}: {p} vs {q}");
        }
    }
    // Log, checkpoints and plot exist; the log has one line per epoch.
    let log = std::fs::read_to_string(part.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3);
    for f in [
        "last.safetensors",
        "last.optim.safetensors",
        "last.json",
        "best.json",
        "curves.png",
    ] {
        assert!(part.join(f).is_file(), "{f}");
    }
    let (_, rec) = read_record(&part.join("last.safetensors")).unwrap();
    assert_eq!(rec.state.epoch, 3);
    // A fresh run into the same folder without validation: the earlier run's best.* and log
    // are gone (a loader would take the stale best.json over this run's last.json).
    let mut d = trainer(config(1));
    let sd = d.fit(&cases, &[], &part, &mut Silent).unwrap();
    assert!(sd.best.is_none());
    for f in ["best.json", "best.safetensors", "best.optim.safetensors"] {
        assert!(!part.join(f).exists(), "{f}");
    }
    let log = std::fs::read_to_string(part.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 1);
}

#[test]
fn interrupted_checkpoint_is_detected() {
    let _g = lock();
    let cases = vec![ball_case("a", 12, [6.0, 6.0, 6.0], 3.0)];
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(config(1));
    t.fit(&cases, &[], dir.path(), &mut Silent).unwrap();
    // Simulate a crash between the weight and record renames: the record claims another step.
    let p = dir.path().join("last.json");
    let text = std::fs::read_to_string(&p).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["state"]["global_step"] = serde_json::json!(12345);
    std::fs::write(&p, v.to_string()).unwrap();
    let mut u = trainer(config(2));
    let e = u.resume(&p).unwrap_err();
    assert!(matches!(e, TrainError::Checkpoint { .. }), "{e}");
    assert!(e.to_string().contains("step"), "{e}");
}

#[test]
fn short_training_learns_to_segment_a_held_out_case() {
    let _g = lock();
    let cases: Vec<Case> = (0..3)
        .map(|i| {
            ball_case(
                &format!("t{i}"),
                16,
                [7.0 + i as f64, 8.0, 8.0 - i as f64],
                3.0 + 0.5 * i as f64,
            )
        })
        .collect();
    let held_out = ball_case("h", 20, [10.0, 9.0, 11.0], 4.0);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(6);
    cfg.sampler.batches_per_epoch = 10;
    // Train on volumes of interest around the balls; validate on the whole held-out volume.
    cfg.crop_margin_mm = Some(2.0);
    let mut t = trainer(cfg.clone());
    let s = t
        .fit(
            &cases,
            std::slice::from_ref(&held_out),
            dir.path(),
            &mut Silent,
        )
        .unwrap();
    let h = &s.state.history;
    assert!(
        h.last().unwrap().train_loss < 0.5 * h[0].train_loss,
        "loss {} -> {}",
        h[0].train_loss,
        h.last().unwrap().train_loss
    );
    let pred = predict_image(
        t.network(),
        &held_out.image,
        &t.config().normalization,
        t.config().orientation.as_deref(),
        None,
        &cfg.validation.inference,
        Device::Cpu,
    )
    .unwrap();
    let d = negvol_train::trainer::dice(pred.labels.data(), held_out.label.data(), 1);
    // Floor: the ball is the only bright structure, a 2-layer conv net separates it.
    assert!(d > 0.9, "held-out Dice {d}");
    assert!(s.state.best_metric.unwrap() > 0.9);
    assert!(Path::new(&s.best.unwrap()).is_file());
}

#[test]
fn time_budget_ends_a_long_run_early_with_a_validated_checkpoint() {
    let _g = lock();
    let cases = vec![ball_case("a", 12, [6.0, 6.0, 6.0], 3.0)];
    let val = vec![ball_case("v", 12, [5.0, 6.0, 7.0], 3.0)];
    let dir = tempfile::tempdir().unwrap();

    // A budget far below one epoch: exactly one epoch runs, is validated and checkpointed.
    let mut cfg = config(1_000_000);
    cfg.validation.every = 1_000_000;
    cfg.max_minutes = Some(1e-9);
    let mut t = trainer(cfg.clone());
    let s = t
        .fit(&cases, &val, &dir.path().join("one"), &mut Silent)
        .unwrap();
    assert_eq!(s.state.epoch, 1);
    assert!(s.state.stopped_by_time_budget);
    assert!(s.state.history[0].val_dice.is_some());
    let (_, rec) = read_record(&s.last).unwrap();
    assert!(rec.state.stopped_by_time_budget);
    assert_eq!(rec.config.max_minutes, Some(1e-9));

    // Half a second: several epochs, far fewer than configured; only the last is validated
    // (`every` is never reached), and the run ends near the budget.
    cfg.max_minutes = Some(0.5 / 60.0);
    let mut t = trainer(cfg.clone());
    let t0 = std::time::Instant::now();
    let s = t
        .fit(&cases, &val, &dir.path().join("half"), &mut Silent)
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let h = &s.state.history;
    assert!(s.state.stopped_by_time_budget);
    assert!(h.len() > 1 && h.len() < 1_000_000, "{} epochs", h.len());
    assert!(h[..h.len() - 1].iter().all(|r| r.val_dice.is_none()));
    assert!(h.last().unwrap().val_dice.is_some());
    assert!(secs < 20.0, "{secs} s for a 0.5 s budget");

    // Resuming without a budget continues and clears the flag.
    let mut more = cfg.clone();
    more.max_minutes = None;
    more.epochs = h.len() + 1;
    let mut u = trainer(more);
    u.resume(&s.last).unwrap();
    let s2 = u
        .fit(&cases, &val, &dir.path().join("half"), &mut Silent)
        .unwrap();
    assert_eq!(s2.state.epoch, h.len() + 1);
    assert!(!s2.state.stopped_by_time_budget);
}

#[test]
fn train_batch_steps_lower_the_loss_and_reject_a_bad_batch() {
    let _g = lock();
    tch::set_num_threads(1);
    let mut t = trainer(config(1));
    // One fixed batch: a bright cube (class 1) in a dark background.
    let y = Tensor::zeros([2, 8, 8, 8], (Kind::Int64, Device::Cpu));
    let _ = y.narrow(1, 2, 4).narrow(2, 2, 4).narrow(3, 2, 4).fill_(1);
    let x = (y.to_kind(Kind::Float) * 2.0 - 1.0).unsqueeze(1);
    let first = t.train_batch(&x, &y).unwrap();
    assert!(first.loss.is_finite() && first.grad_norm > 0.0 && !first.skipped);
    let mut last = first;
    for _ in 0..30 {
        last = t.train_batch(&x, &y).unwrap();
    }
    assert!(
        last.loss < 0.5 * first.loss,
        "loss {} -> {}",
        first.loss,
        last.loss
    );
    assert_eq!(t.state().global_step, 31);
    // A target whose shape does not match the logits is a typed error, not a panic.
    let wrong = Tensor::zeros([2, 4, 4, 4], (Kind::Int64, Device::Cpu));
    assert!(t.train_batch(&x, &wrong).is_err());
}

#[test]
fn profiled_step_is_the_same_step_with_phase_times() {
    let _g = lock();
    tch::set_num_threads(1);
    let y = Tensor::zeros([2, 8, 8, 8], (Kind::Int64, Device::Cpu));
    let _ = y.narrow(1, 2, 4).narrow(2, 2, 4).narrow(3, 2, 4).fill_(1);
    let x = (y.to_kind(Kind::Float) * 2.0 - 1.0).unsqueeze(1);
    let mut a = trainer(config(1));
    let mut b = trainer(config(1));
    for _ in 0..3 {
        let plain = a.train_batch(&x, &y).unwrap();
        let (profiled, t) = b.train_batch_profiled(&x, &y).unwrap();
        assert_eq!(plain, profiled);
        for v in [t.forward, t.loss, t.backward, t.grad_norm, t.optimizer] {
            assert!(v >= 0.0 && v.is_finite(), "{t:?}");
        }
        assert!(t.forward + t.backward > 0.0, "{t:?}");
    }
    assert_eq!(weights(&a), weights(&b));
}

/// `data_wait_seconds`: the seconds of an epoch's training spent blocked on the loader, in the
/// history and the log; finite, non-negative, within the epoch's training time. With workers
/// (the next epoch's loader started before validation) and without (batches made on the
/// training thread) the losses are the same: starting a loader early changes no data.
#[test]
fn epochs_record_the_seconds_spent_waiting_for_batches() {
    let _g = lock();
    tch::set_num_threads(1);
    let cases = vec![ball_case("a", 12, [6.0, 6.0, 6.0], 3.0)];
    let val = vec![ball_case("v", 12, [5.0, 6.0, 7.0], 3.0)];
    let dir = tempfile::tempdir().unwrap();
    let mut losses = Vec::new();
    for workers in [2, 0] {
        let mut cfg = config(3);
        cfg.sampler.workers = workers;
        let samples = (cfg.sampler.batches_per_epoch * cfg.sampler.batch_size) as f64;
        let out = dir.path().join(format!("workers{workers}"));
        let s = trainer(cfg).fit(&cases, &val, &out, &mut Silent).unwrap();
        let h = &s.state.history;
        assert_eq!(h.len(), 3);
        for r in h {
            let train_secs = samples / r.samples_per_second;
            let w = r.data_wait_seconds;
            assert!(w.is_finite() && w >= 0.0, "{r:?}");
            assert!(w <= train_secs * (1.0 + 1e-6) && w <= r.seconds, "{r:?}");
        }
        if workers == 0 {
            // Every batch is made while the loop waits for it.
            assert!(h.iter().all(|r| r.data_wait_seconds > 0.0), "{h:?}");
        }
        let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
        for (line, r) in log.lines().zip(h) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["data_wait_seconds"].as_f64(), Some(r.data_wait_seconds));
        }
        let (_, rec) = read_record(&s.last).unwrap();
        assert_eq!(&rec.state.history, h);
        losses.push(h.iter().map(|r| r.train_loss).collect::<Vec<_>>());
    }
    for (a, b) in losses[0].iter().zip(&losses[1]) {
        assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{losses:?}");
    }
    // A log line or checkpoint history written before the field existed reads as 0.
    let old = r#"{"epoch":0,"lr":0.01,"train_loss":0.5,"grad_norm":1.0,"skipped_steps":0,
        "val_dice":null,"val_mean_dice":null,"val_hd95":null,"seconds":2.0,
        "samples_per_second":6.0}"#;
    let r: EpochRecord = serde_json::from_str(old).unwrap();
    assert_eq!(r.data_wait_seconds, 0.0);
}
