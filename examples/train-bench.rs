//! Training-step and sliding-window throughput of the negvol networks, for side-by-side runs
//! against PyTorch eager (`benches/peers/train_throughput.py` drives both and reads the JSON
//! line this prints on stdout).
//!
//! ```text
//! # paper patch, batch 1, bf16 autocast, 20 timed steps after 3 warm-up steps
//! cargo run --release --example train-bench -- --model unet3d --batch 1 --precision bf16
//! # whole-volume sliding-window inference of a 686^3 volume
//! cargo run --release --example train-bench -- --mode infer --model unet3d --shape 686,686,686
//! ```
//!
//! `train` mode builds the network, the loss and Adam exactly as `train` would (through
//! [`negvol_train::run::build_trainer`]) and times [`negvol_train::Trainer::train_batch`] on one
//! synthetic batch that stays on the device (Gaussian-noise image, a centred ball as class 1 and
//! a shell around it as class 2 when there are 3 classes), so the data pipeline is not measured.
//! `infer` mode times [`negvol_train::infer::sliding_window`] (Gaussian weighting, overlap,
//! batched windows, softmax) over a synthetic volume of `--shape`, from host array to host
//! array. Both synchronise the GPU before reading the clock.

use std::time::Instant;

use clap::{Parser, ValueEnum};
use ndarray::Array3;
use negvol_train::infer::{sliding_window, InferenceConfig};
use negvol_train::run::{build_trainer, parse_device, RunConfig};
use negvol_train::tch::{self, Device, Kind, Tensor};
use negvol_train::{Precision, StepTimes};

mod common;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Train,
    Infer,
}

#[derive(Parser, Debug)]
#[command(about = "Training-step / sliding-window throughput of a negvol network")]
struct Args {
    /// What to time.
    #[arg(long, value_enum, default_value = "train")]
    mode: Mode,
    /// Network: unet3d, unet3d-att, vnet (the paper's settings otherwise); `identity` (with
    /// `--mode infer`): a two-channel identity-like model, to time the sliding window alone.
    #[arg(long, default_value = "unet3d")]
    model: String,
    /// Output classes (2: one target as in the paper; 3: MC and TB together).
    #[arg(long, default_value_t = 2)]
    classes: i64,
    /// Loss (negvol_losses JSON `loss` tag): ce, dice, dice-ce.
    #[arg(long, default_value = "dice-ce")]
    loss: String,
    /// Patch (training) or window (inference), voxels.
    #[arg(long, value_delimiter = ',', default_value = "112,144,64")]
    patch: Vec<usize>,
    /// Batch size (training) or windows per forward pass (inference).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// f32, bf16 or f16 (autocast on CUDA only).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Timed training steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed warm-up steps (cuDNN algorithm choice, allocator growth).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// After the timed steps, this many profiled steps (device synchronised after each phase):
    /// mean seconds per phase go to the JSON line as `phases`.
    #[arg(long, default_value_t = 3)]
    profile_steps: usize,
    /// Stop timing early after this many seconds (the steps done so far count).
    #[arg(long, default_value_t = 60.0)]
    max_seconds: f64,
    /// Volume shape for `--mode infer`.
    #[arg(long, value_delimiter = ',', default_value = "686,686,686")]
    shape: Vec<usize>,
    /// Sliding-window overlap for `--mode infer`.
    #[arg(long, default_value_t = 0.5)]
    overlap: f64,
    /// Let cuDNN benchmark convolution algorithms (PyTorch's `cudnn.benchmark`).
    #[arg(long)]
    cudnn_benchmark: bool,
    /// libtorch intra-op threads on the CPU (default: libtorch's choice).
    #[arg(long)]
    threads: Option<i32>,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Seed of the weights and the synthetic data.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn triple(v: &[usize], what: &str) -> Result<[usize; 3], String> {
    match v {
        [a, b, c] if *a > 0 && *b > 0 && *c > 0 => Ok([*a, *b, *c]),
        _ => Err(format!("--{what} needs three positive sizes, got {v:?}")),
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if readable.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The run configuration: the paper's optimiser (the default: Adam, lr 1e-4, weight decay
/// 0.01), no clipping, the requested network, loss, patch, batch and precision.
fn run_config(
    a: &Args,
    arch: &str,
    patch: [usize; 3],
    precision: Precision,
) -> Result<RunConfig, String> {
    let targets: Vec<String> = (1..a.classes).map(|c| format!("class{c}")).collect();
    let json = serde_json::json!({
        "model": {
            "net": {"arch": arch, "classes": a.classes},
            "loss": {"loss": a.loss},
        },
        "train": {
            "targets": targets,
            "precision": precision,
            "seed": a.seed,
            "grad_clip": null,
            "sampler": {"patch": patch, "batch_size": a.batch},
            "validation": {"inference": {"patch": patch, "batch_size": a.batch}},
        },
    });
    serde_json::from_value(json).map_err(|e| format!("run configuration: {e}"))
}

/// Class map of the synthetic batch: a centred ball (class 1) and, with 3 classes, a shell
/// around it (class 2).
fn synthetic_labels(patch: [usize; 3], classes: i64) -> Array3<i64> {
    let c = patch.map(|n| (n as f64 - 1.0) / 2.0);
    let r = 0.25 * *patch.iter().min().unwrap_or(&1) as f64;
    Array3::from_shape_fn((patch[0], patch[1], patch[2]), |(i, j, k)| {
        let d = ((i as f64 - c[0]).powi(2) + (j as f64 - c[1]).powi(2) + (k as f64 - c[2]).powi(2))
            .sqrt();
        if d <= r {
            1
        } else if classes > 2 && d <= 1.5 * r {
            2
        } else {
            0
        }
    })
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let device = parse_device(&a.device)?;
    tch::Cuda::cudnn_set_benchmark(a.cudnn_benchmark);
    let patch = triple(&a.patch, "patch")?;
    let precision = a.precision;
    if a.batch == 0 || a.classes < 2 {
        return Err("--batch must be > 0 and --classes >= 2".into());
    }
    // `identity` (inference only): a two-channel "network" (x, -x) that isolates the cost of
    // the sliding-window machinery (tiling, blending, copies) from the network's.
    let identity = a.model == "identity";
    if identity && !matches!(a.mode, Mode::Infer) {
        return Err("--model identity is for --mode infer".into());
    }
    let arch = if identity { "unet3d" } else { a.model.as_str() };
    let run = run_config(&a, arch, patch, precision)?;
    let mut trainer = build_trainer(&run, device)?;
    let params: i64 = trainer
        .var_store()
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    tch::manual_seed(a.seed as i64 + 1);
    let record = match a.mode {
        Mode::Train => {
            let [pi, pj, pk] = patch.map(|n| n as i64);
            let n = a.batch as i64;
            let lab = synthetic_labels(patch, a.classes);
            let lab: Vec<i64> = lab.iter().copied().collect();
            let y = Tensor::from_slice(&lab)
                .view([1, pi, pj, pk])
                .repeat([n, 1, 1, 1])
                .to_device(device);
            let x = Tensor::randn([n, 1, pi, pj, pk], (Kind::Float, device));
            for _ in 0..a.warmup {
                trainer.train_batch(&x, &y)?;
            }
            sync(device);
            let t0 = Instant::now();
            let (mut steps, mut last_loss) = (0usize, f64::NAN);
            while steps < a.steps.max(1) {
                last_loss = trainer.train_batch(&x, &y)?.loss;
                steps += 1;
                if t0.elapsed().as_secs_f64() > a.max_seconds {
                    break;
                }
            }
            sync(device);
            let secs = t0.elapsed().as_secs_f64();
            let mut phases = StepTimes::default();
            for _ in 0..a.profile_steps {
                let (_, t) = trainer.train_batch_profiled(&x, &y)?;
                phases.forward += t.forward;
                phases.loss += t.loss;
                phases.backward += t.backward;
                phases.grad_norm += t.grad_norm;
                phases.optimizer += t.optimizer;
            }
            let n = a.profile_steps.max(1) as f64;
            let phases = serde_json::json!({
                "forward": phases.forward / n, "loss": phases.loss / n,
                "backward": phases.backward / n, "grad_norm": phases.grad_norm / n,
                "optimizer": phases.optimizer / n,
            });
            eprintln!(
                "negvol {} batch {} {:?} {}: {steps} steps in {secs:.2} s = {:.3} steps/s \
                 ({:.2} samples/s), last loss {last_loss:.4}",
                a.model,
                a.batch,
                patch,
                a.precision,
                steps as f64 / secs,
                (steps * a.batch) as f64 / secs
            );
            serde_json::json!({
                "impl": "negvol", "mode": "train", "arch": a.model, "loss": a.loss,
                "classes": a.classes, "patch": patch, "batch": a.batch,
                "precision": a.precision, "params": params, "steps": steps, "seconds": secs,
                "steps_per_s": steps as f64 / secs,
                "samples_per_s": (steps * a.batch) as f64 / secs, "last_loss": last_loss,
                "device": format!("{device:?}"), "cudnn_benchmark": a.cudnn_benchmark,
                "peak_rss_mib": peak_rss_mib(),
                "phases": if a.profile_steps > 0 { phases } else { serde_json::Value::Null },
            })
        }
        Mode::Infer => {
            let shape = triple(&a.shape, "shape")?;
            let net = trainer.network();
            let model = |x: &Tensor| -> negvol_train::Result<Tensor> {
                if identity {
                    Ok(Tensor::cat(&[x, &x.neg()], 1))
                } else {
                    net.forward(x, false)
                }
            };
            let cfg = InferenceConfig {
                patch,
                overlap: a.overlap,
                batch_size: a.batch,
                precision,
                ..Default::default()
            };
            let img = Array3::from_shape_fn((shape[0], shape[1], shape[2]), |(i, j, k)| {
                ((i * 7 + j * 13 + k * 29) % 101) as f32 / 50.0 - 1.0
            });
            let windows: usize = (0..3)
                .map(|ax| {
                    negvol_train::infer::window_starts(
                        shape[ax].max(patch[ax]),
                        patch[ax],
                        a.overlap,
                    )
                    .len()
                })
                .product();
            // Warm-up on one window's worth of volume (cuDNN, allocator).
            let small = Array3::from_elem((patch[0], patch[1], patch[2]), 0f32);
            sliding_window(&model, &small, &cfg, device)?;
            sync(device);
            let t0 = Instant::now();
            let probs = sliding_window(&model, &img, &cfg, device)?;
            sync(device);
            let secs = t0.elapsed().as_secs_f64();
            eprintln!(
                "negvol {} sliding window over {shape:?} ({windows} windows of {patch:?}, \
                 overlap {}, {} per pass, {}): {secs:.2} s, output {:?}",
                a.model,
                a.overlap,
                a.batch,
                a.precision,
                probs.shape()
            );
            serde_json::json!({
                "impl": "negvol", "mode": "infer", "arch": a.model, "classes": a.classes,
                "shape": shape, "patch": patch, "overlap": a.overlap, "batch": a.batch,
                "precision": a.precision, "params": if identity { 0 } else { params }, "windows": windows,
                "seconds": secs, "device": format!("{device:?}"),
                "cudnn_benchmark": a.cudnn_benchmark, "peak_rss_mib": peak_rss_mib(),
            })
        }
    };
    println!("{record}");
    Ok(())
}

fn main() -> std::process::ExitCode {
    common::exit_with("train-bench", run())
}
