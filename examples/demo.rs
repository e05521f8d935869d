//! The README's main job, end to end on the CPU from nothing: generate synthetic TMJ phantoms,
//! train one small 3D U-Net for the condyle (MC) and the temporal bone (TB) for a bounded
//! time, segment an unseen two-joint phantom, derive its negative volume (NV), and print the
//! NV report with its metrics against the phantom's truth.
//!
//! ```text
//! cargo run --release --example demo -- --out demo-out [--seed 7] [--max-minutes 2]
//! ```
//! Deterministic under `--seed` as long as the training ends by its epochs, not by the
//! wall-clock budget (the output says which). Writes to `OUT`: `train/` (checkpoints, run.json,
//! log.jsonl, curves.png), the test phantom (`phantom_image.nii.gz`, `truth_{mc,tb,nv}.nii.gz`),
//! the predicted `mc.nii.gz`, `tb.nii.gz`, the NV outputs of `negvol::write_outputs`
//! (`nv.nii.gz`, `report.json`, widths, meshes, pictures), and `demo.json` (all metrics).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use negvol::{derive_nv, write_outputs, NvConfig, OutputOptions};
use negvol_metrics::{table1_row, EvalOptions};
use negvol_phantom::{case_seed, generate, PhantomConfig, Side};
use negvol_train::augment::AugmentConfig;
use negvol_train::checkpoint::{write_json, EpochRecord};
use negvol_train::dataset::build_case;
use negvol_train::infer::InferenceConfig;
use negvol_train::optim::{LrSchedule, OptimizerConfig};
use negvol_train::preprocess::Normalization;
use negvol_train::run::{build_trainer, LoadedModel, RunConfig};
use negvol_train::sampler::SamplerConfig;
use negvol_train::tch::{self, Device};
use negvol_train::trainer::Observer;
use negvol_train::{Case, TrainConfig, ValidationConfig};
use negvol_volume::{write_mask, write_nifti, Volume};
use serde::Serialize;

mod common;

/// Train a small MC + TB network on phantoms, then CT -> MC, TB -> NV on an unseen phantom.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Output folder.
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// Seed of the phantoms, the initial weights and the training data.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Training phantoms (one joint each, alternating left and right).
    #[arg(long, default_value_t = 4)]
    train_cases: usize,
    /// Voxel size (mm, isotropic) of every phantom.
    #[arg(long, default_value_t = 0.8)]
    spacing: f64,
    /// Training epochs.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Batches of two patches per epoch.
    #[arg(long, default_value_t = 16)]
    batches_per_epoch: usize,
    /// Patch edge (voxels; a multiple of 4).
    #[arg(long, default_value_t = 32)]
    patch: usize,
    /// Feature maps per U-Net level.
    #[arg(long, value_delimiter = ',', default_value = "8,16,32")]
    f_maps: Vec<i64>,
    /// Wall-clock budget of the training (minutes); it stops early when the next epoch would
    /// pass it.
    #[arg(long, default_value_t = 2.0)]
    max_minutes: f64,
    /// libtorch threads (0: libtorch's default, one per core). One by default: libtorch's
    /// CPU results depend on its thread count, so one thread gives the same numbers on every
    /// machine, and on a 2-core box shared with other work two threads were 6-9x slower
    /// than one (measured), while on an idle one they gain well under 2x.
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// Skip the STL meshes and PNG pictures.
    #[arg(long)]
    no_pictures: bool,
}

/// One epoch line on stdout.
struct Progress;

impl Observer for Progress {
    fn on_epoch(&mut self, r: &EpochRecord) {
        println!(
            "  epoch {:>3}: loss {:.4}, {:.1} s ({:.1} patches/s)",
            r.epoch + 1,
            r.train_loss,
            r.seconds,
            r.samples_per_second
        );
        let _ = std::io::stdout().flush();
    }
}

/// Overlap and surface distance of a predicted mask against the truth.
#[derive(Debug, Serialize)]
struct Score {
    dice: Option<f64>,
    hd95_mm: Option<f64>,
    predicted_mm3: f64,
    truth_mm3: f64,
}

/// NV measures of one joint, predicted and true.
#[derive(Debug, Serialize)]
struct SideSummary {
    side: String,
    nv_mm3: f64,
    /// From the NV derived from the true MC and TB masks (the NV method's own error).
    nv_from_true_masks_mm3: f64,
    nv_exact_mm3: f64,
    nv_volume_error_percent: f64,
    width_mean_mm: Option<f64>,
    width_min_mm: Option<f64>,
    width_max_mm: Option<f64>,
    true_width_mean_mm: Option<f64>,
}

/// Everything the demo measured (written to `OUT/demo.json`).
#[derive(Debug, Serialize)]
struct Summary {
    seed: u64,
    spacing_mm: f64,
    train_cases: usize,
    test_grid: [usize; 3],
    epochs_run: usize,
    epochs_configured: usize,
    stopped_by_time_budget: bool,
    final_train_loss: f64,
    seconds: Timings,
    mc: Score,
    tb: Score,
    nv: Score,
    nv_from_true_masks: Score,
    sides: Vec<SideSummary>,
    asymmetry_index: Option<f64>,
    true_asymmetry_index: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
struct Timings {
    phantoms: f64,
    training: f64,
    segmentation: f64,
    nv: f64,
    total: f64,
}

fn main() -> ExitCode {
    common::exit_with("demo", run(Args::parse()))
}

fn phantom_config(spacing: f64) -> PhantomConfig {
    PhantomConfig {
        spacing: [spacing; 3],
        ..Default::default()
    }
}

/// A training case with targets `mc` (class 1) and `tb` (class 2).
fn training_case(
    id: &str,
    cfg: &PhantomConfig,
    seed: u64,
) -> Result<Case, Box<dyn std::error::Error>> {
    let p = generate(cfg, seed)?;
    let f = |m: &Volume<bool>| m.map(|v| f32::from(u8::from(*v)));
    Ok(build_case(
        id,
        id,
        p.image,
        &[("mc".into(), f(&p.mc)), ("tb".into(), f(&p.tb))],
    )?)
}

fn run_config(a: &Args) -> Result<RunConfig, Box<dyn std::error::Error>> {
    let model = serde_json::json!({
        "net": {"arch": "unet3d", "classes": 3, "f_maps": a.f_maps, "num_groups": 4},
        "loss": {"loss": "dice-ce", "alpha": 1.0, "beta": 1.0}
    });
    let patch = [a.patch; 3];
    Ok(RunConfig {
        model: serde_json::from_value(model)?,
        train: TrainConfig {
            targets: vec!["mc".into(), "tb".into()],
            normalization: Normalization::default(),
            sampler: SamplerConfig {
                patch,
                batch_size: 2,
                foreground_fraction: 0.67,
                batches_per_epoch: a.batches_per_epoch,
                workers: 1,
                prefetch: 2,
            },
            // Left-right flips only: the phantoms vary enough, and a two-minute run learns
            // faster without rotations and elastic deformation.
            augment: AugmentConfig {
                flip_prob: 0.5,
                flip_axes: vec![0],
                ..AugmentConfig::none()
            },
            optimizer: OptimizerConfig::adam(3e-3, 1e-5),
            schedule: LrSchedule::Poly { exponent: 0.9 },
            epochs: a.epochs,
            max_minutes: Some(a.max_minutes),
            grad_clip: Some(12.0),
            seed: a.seed,
            validation: ValidationConfig {
                every: 0,
                patience: None,
                hd95: false,
                inference: InferenceConfig {
                    patch,
                    overlap: 0.25,
                    batch_size: 2,
                    ..Default::default()
                },
            },
            ..TrainConfig::default()
        },
    })
}

/// Dice, HD95 and volumes of `negvol_metrics::table1_row` (no probability: no CE).
fn score(truth: &Volume<bool>, pred: &Volume<bool>) -> Result<Score, Box<dyn std::error::Error>> {
    let row = table1_row(
        truth.view(),
        pred.view(),
        None,
        truth.geometry().spacing(),
        &EvalOptions::default(),
    )?;
    Ok(Score {
        dice: row.dice.get(),
        hd95_mm: row.hd_percentile_mm.get(),
        predicted_mm3: row.prediction_volume_mm3,
        truth_mm3: row.reference_volume_mm3,
    })
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.digits$}"))
}

fn run(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    let t_all = Instant::now();
    if a.train_cases == 0 {
        return Err("--train-cases must be at least 1".into());
    }
    if a.threads > 0 {
        tch::set_num_threads(a.threads);
    }
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let mut t = Timings::default();

    // 1. Phantoms: single joints for training, an unseen two-joint case for the test.
    let t0 = Instant::now();
    let base = phantom_config(a.spacing);
    let train: Vec<Case> = (0..a.train_cases)
        .map(|i| {
            let cfg = PhantomConfig {
                side: if i % 2 == 0 { Side::Left } else { Side::Right },
                ..base.clone()
            };
            training_case(&format!("train_{i:03}"), &cfg, case_seed(a.seed, i))
        })
        .collect::<Result<_, _>>()?;
    let test_cfg = PhantomConfig {
        both_sides: true,
        asymmetry: 0.2,
        ..base.clone()
    };
    let test = generate(&test_cfg, case_seed(a.seed, 1000))?;
    t.phantoms = t0.elapsed().as_secs_f64();
    println!(
        "1. phantoms: {} training joints of {:?} voxels and an unseen two-joint test case of {:?}, at {} mm ({:.1} s)",
        train.len(),
        train[0].image.geometry().shape(),
        test.image.geometry().shape(),
        a.spacing,
        t.phantoms
    );

    // 2. Training, bounded in time.
    let run = run_config(&a)?;
    let train_dir = a.out.join("train");
    std::fs::create_dir_all(&train_dir)?;
    write_json(&train_dir.join("run.json"), &run)?;
    println!(
        "2. training unet3d {:?} for MC + TB on the CPU: {} epochs x {} batches of 2 x {}^3 patches, budget {} min",
        a.f_maps, a.epochs, a.batches_per_epoch, a.patch, a.max_minutes
    );
    let t0 = Instant::now();
    let mut trainer = build_trainer(&run, Device::Cpu)?;
    let summary = trainer.fit(&train, &[], &train_dir, &mut Progress)?;
    t.training = t0.elapsed().as_secs_f64();
    let st = &summary.state;
    if st.stopped_by_time_budget {
        println!(
            "   stopped by the {} min budget after {} of {} epochs ({:.1} s): this run is not reproducible bit for bit",
            a.max_minutes, st.epoch, a.epochs, t.training
        );
    } else {
        println!("   {} epochs in {:.1} s", st.epoch, t.training);
    }

    // 3. Pipeline on the unseen phantom: segment (from the saved checkpoint) -> NV -> report.
    let t0 = Instant::now();
    let model = LoadedModel::load(&summary.last, Device::Cpu)?;
    let pred = model.predict(&test.image, None)?;
    let mc = pred.mask(model.train.class_of("mc")?);
    let tb = pred.mask(model.train.class_of("tb")?);
    t.segmentation = t0.elapsed().as_secs_f64();
    let nv_cfg = NvConfig::default();
    let t0 = Instant::now();
    let result = derive_nv(&mc, &tb, &nv_cfg)?;
    t.nv = t0.elapsed().as_secs_f64();
    // The same NV method on the true masks: how much of the NV error is the segmentation's.
    let oracle = derive_nv(&test.mc, &test.tb, &nv_cfg)?;
    println!(
        "3. segmented the test phantom in {:.1} s (sliding window), NV derived in {:.2} s",
        t.segmentation, t.nv
    );

    write_nifti(a.out.join("phantom_image.nii.gz"), &test.image)?;
    write_mask(a.out.join("truth_mc.nii.gz"), &test.mc)?;
    write_mask(a.out.join("truth_tb.nii.gz"), &test.tb)?;
    write_mask(a.out.join("truth_nv.nii.gz"), &test.nv)?;
    write_mask(a.out.join("mc.nii.gz"), &mc)?;
    write_mask(a.out.join("tb.nii.gz"), &tb)?;
    let opts = OutputOptions {
        meshes: !a.no_pictures,
        pictures: !a.no_pictures,
        ..Default::default()
    };
    let files = write_outputs(&a.out, &result, &mc, &tb, Some(&test.image), &opts)?;

    // 4. Report and metrics against the truth.
    let r = &result.report;
    println!("4. NV report (predicted masks):");
    let mut sides = Vec::new();
    for s in &r.sides {
        let truth = test
            .truth
            .sides
            .iter()
            .find(|x| x.side.name() == s.side.name());
        let oracle_mm3 = oracle
            .report
            .sides
            .iter()
            .find(|x| x.side == s.side)
            .map_or(0.0, |x| x.nv_volume_mm3);
        let exact = truth.map_or(f64::NAN, |x| x.nv_volume_mm3);
        let w = s.width.as_ref().filter(|_| s.has_nv);
        let true_w = truth.and_then(|x| x.gap_mm.as_ref()).map(|g| g.mean);
        match w {
            Some(w) => println!(
                "   {:>5}: NV {:7.1} mm3 (truth {:7.1} mm3, {:+.1} %), joint space mean {:.2} mm ({:.2}-{:.2} mm; truth mean {} mm)",
                s.side.name(),
                s.nv_volume_mm3,
                exact,
                100.0 * (s.nv_volume_mm3 - exact) / exact,
                w.mean_mm,
                w.min_mm,
                w.max_mm,
                fmt(true_w, 2)
            ),
            None => println!("   {:>5}: no NV (truth {exact:.1} mm3)", s.side.name()),
        }
        for i in &s.issues {
            println!("          {:?}: {}", i.code, i.message);
        }
        sides.push(SideSummary {
            side: s.side.name().into(),
            nv_mm3: s.nv_volume_mm3,
            nv_from_true_masks_mm3: oracle_mm3,
            nv_exact_mm3: exact,
            nv_volume_error_percent: 100.0 * (s.nv_volume_mm3 - exact) / exact,
            width_mean_mm: w.map(|w| w.mean_mm),
            width_min_mm: w.map(|w| w.min_mm),
            width_max_mm: w.map(|w| w.max_mm),
            true_width_mean_mm: true_w,
        });
    }
    println!(
        "   asymmetry index |L-R|/(L+R): {} (truth {})",
        fmt(r.asymmetry.index, 3),
        fmt(test.truth.asymmetry_index, 3)
    );
    let s_mc = score(&test.mc, &mc)?;
    let s_tb = score(&test.tb, &tb)?;
    let s_nv = score(&test.nv, &result.nv)?;
    let s_or = score(&test.nv, &oracle.nv)?;
    let exact: f64 = test.truth.sides.iter().map(|s| s.nv_volume_mm3).sum();
    println!("   against the phantom's truth:");
    for (name, s) in [
        ("MC", &s_mc),
        ("TB", &s_tb),
        ("NV", &s_nv),
        ("NV from true MC/TB", &s_or),
    ] {
        println!(
            "   {name:<19} Dice {}  HD95 {} mm",
            fmt(s.dice, 3),
            fmt(s.hd95_mm, 2)
        );
    }
    println!(
        "   NV volume {:.1} mm3 vs exact {:.1} mm3: {:+.1} % (from the true masks: {:+.1} %)",
        s_nv.predicted_mm3,
        exact,
        100.0 * (s_nv.predicted_mm3 - exact) / exact,
        100.0 * (s_or.predicted_mm3 - exact) / exact
    );
    t.total = t_all.elapsed().as_secs_f64();
    let summary = Summary {
        seed: a.seed,
        spacing_mm: a.spacing,
        train_cases: a.train_cases,
        test_grid: test.image.geometry().shape(),
        epochs_run: st.epoch,
        epochs_configured: a.epochs,
        stopped_by_time_budget: st.stopped_by_time_budget,
        final_train_loss: st.history.last().map_or(f64::NAN, |h| h.train_loss),
        seconds: t,
        mc: s_mc,
        tb: s_tb,
        nv: s_nv,
        nv_from_true_masks: s_or,
        sides,
        asymmetry_index: r.asymmetry.index,
        true_asymmetry_index: test.truth.asymmetry_index,
    };
    write_json(&a.out.join("demo.json"), &summary)?;
    println!(
        "wrote masks (mc, tb, nv, truth_*), report.json, demo.json and {} more files to {}; {:.1} s in all",
        files.len().saturating_sub(2),
        a.out.display(),
        summary.seconds.total
    );
    Ok(())
}
