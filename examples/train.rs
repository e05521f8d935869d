//! Train a segmentation network on a dataset (case folders, a manifest, nnU-Net v2 or Decathlon).
//!
//! ```text
//! cargo run --release --example train -- --input-data phantoms --target mc \
//!     --model unet3d --loss dice-ce --alpha 1 --beta 1 --epochs 100 --out runs/mc
//! ```
//! Without `--config`, the run starts from the seed paper's settings (Adam 1e-4, weight decay
//! 0.01, StepLR 30/0.1, patches 112x144x64, batch 1, 80 patches per epoch, its augmentations)
//! changed by the flags. The full configuration is written to `OUT/run.json`; `--config` reads
//! one back (flags given explicitly still override it). `--plan plan.json` (from the `plan`
//! example) applies an nnU-Net-style plan on top of that: targets, target spacing, patch,
//! batch size, fitted normalisation, precision and network; flags given explicitly still win.
//!
//! ```text
//! cargo run --release --example plan -- --input-data phantoms --targets mc,tb --out plan.json
//! cargo run --release --example train -- --input-data phantoms --plan plan.json --out runs/p
//! ```
//!
//! Cross-validation: `--folds 5` (by patient; the folds go to `OUT/splits_final.json` in
//! nnU-Net's form) or `--splits splits_final.json` (nnU-Net's folds for the same cases, so both
//! tools are compared on identical splits); `--fold 0` trains one fold (one job per fold).
//! `--continue` picks an interrupted run up where it stopped (each fold from its last.json;
//! finished folds are left alone), after checking that the dataset and the folds are the
//! ones it started with.
//! The input may be an nnU-Net v2 or Decathlon raw dataset as it is.
//!
//! ```text
//! cargo run --release --example train -- --input-data nnUNet_raw/Dataset501_TMJ --target mc \
//!     --target tb --splits nnUNet_preprocessed/Dataset501_TMJ/splits_final.json --fold 0 --out runs/f0
//! ```

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use negvol_nets::NetConfig;
use negvol_train::checkpoint::EpochRecord;
use negvol_train::dataset::{kfold_by_patient, read_splits, write_splits};
use negvol_train::optim::{LrSchedule, OptimizerConfig};
use negvol_train::preprocess::Normalization;
use negvol_train::run::{
    build_trainer, continue_folds, cross_validate_folds, parse_device, RunConfig,
};
use negvol_train::trainer::{Observer, StepEvent};
use negvol_train::DatasetSpec;

mod common;

#[derive(Parser, Debug)]
#[command(about = "Train a negvol segmentation network")]
struct Args {
    /// Dataset: a folder of case folders, a manifest, or an nnU-Net v2 / Decathlon raw dataset
    /// (`dataset --input-data D` checks one).
    #[arg(long)]
    input_data: PathBuf,
    /// Output folder (checkpoints, log.jsonl, curves.png, run.json).
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
    /// Run configuration JSON (as written to OUT/run.json).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Plan JSON from the `plan` example (applied after --config): targets, target spacing,
    /// patch, batch size, fitted normalisation, precision and network. Flags given explicitly
    /// still win (e.g. --batch-size 1 keeps the plan's patch but changes its batch; --model
    /// replaces its network with that model's defaults).
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Structure(s) to segment (mask names), in class order.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Network: unet3d, unet3d-att, vnet or unet.
    #[arg(long)]
    model: Option<String>,
    /// Feature maps per level for unet3d / unet3d-att (e.g. 8,16,32), or the V-Net base width.
    #[arg(long, value_delimiter = ',')]
    f_maps: Option<Vec<i64>>,
    /// Deep supervision (nnU-Net weights) for `--model unet`.
    #[arg(long)]
    deep_supervision: bool,
    /// Loss: ce, dice, dice-ce, paper-dice, paper-dice-ce, focal, tversky.
    #[arg(long)]
    loss: Option<String>,
    /// Dice weight of dice-ce.
    #[arg(long)]
    alpha: Option<f64>,
    /// CE weight of dice-ce.
    #[arg(long)]
    beta: Option<f64>,
    /// Epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Batches per epoch.
    #[arg(long)]
    batches_per_epoch: Option<usize>,
    /// Batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Patch size i,j,k (training and inference).
    #[arg(long, value_delimiter = ',')]
    patch: Option<Vec<usize>>,
    /// Optimiser: adam, adamw, sgd (Nesterov, momentum 0.99).
    #[arg(long)]
    optimizer: Option<String>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Weight decay.
    #[arg(long)]
    weight_decay: Option<f64>,
    /// LR schedule: step (30 epochs x0.1), poly (0.9) or constant.
    #[arg(long)]
    schedule: Option<String>,
    /// Normalisation: minmax (paper), fg-zscore (nnU-Net CT), zscore, or window:LO,HI.
    #[arg(long)]
    normalization: Option<String>,
    /// Augmentation preset: paper, nnunet (paper + nnU-Net intensity/zoom) or none.
    #[arg(long)]
    augment: Option<String>,
    /// Train on volumes of interest: label bounding box + this margin (mm).
    #[arg(long)]
    crop_margin_mm: Option<f64>,
    /// Reorient every case and every image to predict to this orientation code (default RAS;
    /// `none`: voxels in stored order).
    #[arg(long)]
    orientation: Option<String>,
    /// Resample every case to this spacing (mm): S or SI,SJ,SK.
    #[arg(long, value_delimiter = ',')]
    spacing: Option<Vec<f64>>,
    /// Gradient-norm clip.
    #[arg(long)]
    grad_clip: Option<f64>,
    /// Precision on CUDA: f32, bf16, f16 (training, validation and the checkpoint's inference).
    #[arg(long)]
    precision: Option<negvol_train::Precision>,
    /// Wall-clock budget in minutes: stop after the last epoch that fits (validated and
    /// checkpointed as the final epoch).
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Validate every N epochs and after the last one (0: never validate, no best checkpoint).
    #[arg(long)]
    val_every: Option<usize>,
    /// Early-stopping patience (validations).
    #[arg(long)]
    patience: Option<usize>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Data-loading worker threads.
    #[arg(long)]
    workers: Option<usize>,
    /// Fraction of patients held out for validation (ignored with --folds).
    #[arg(long, default_value_t = 0.2)]
    val_fraction: f64,
    /// K-fold cross-validation by patient (trains K models in OUT/fold_*; the folds are
    /// written to OUT/splits_final.json in nnU-Net's form).
    #[arg(long)]
    folds: Option<usize>,
    /// Cross-validation on the folds of this nnU-Net splits_final.json (case ids), e.g. the
    /// one nnU-Net made for the same dataset, instead of --folds.
    #[arg(long)]
    splits: Option<PathBuf>,
    /// With --folds or --splits: train only these folds (e.g. 0 or 1,3), as nnU-Net trains
    /// one fold per job.
    #[arg(long, value_delimiter = ',')]
    fold: Option<Vec<usize>>,
    /// Resume from a checkpoint (OUT/last.json).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Continue an interrupted run in OUT (nnU-Net's --c): from OUT/last.json, or with
    /// --folds/--splits each fold from OUT/fold_<f>/last.json (finished folds are left as
    /// they are; raise --epochs to extend them). The dataset and the folds must be the ones
    /// the run started with (OUT/cases.json, OUT/splits_final.json).
    #[arg(long = "continue", conflicts_with = "resume")]
    continue_run: bool,
    /// Device: auto, cpu, cuda.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Print one line per epoch only (no per-step progress).
    #[arg(long)]
    quiet: bool,
}

struct Progress {
    quiet: bool,
    /// Training samples per epoch (batches x batch size), to turn `samples_per_second` back
    /// into the epoch's training seconds.
    samples_per_epoch: usize,
}

impl Observer for Progress {
    fn on_step(&mut self, e: &StepEvent) {
        if !self.quiet {
            let w = 30;
            let done = (e.batch + 1) * w / e.batches.max(1);
            eprint!(
                "\repoch {:>3} [{}{}] {}/{} loss {:.4} (mean {:.4}) lr {:.2e} {:.1} samples/s   ",
                e.epoch + 1,
                "#".repeat(done),
                ".".repeat(w - done),
                e.batch + 1,
                e.batches,
                e.loss,
                e.mean_loss,
                e.lr,
                e.samples_per_second
            );
            let _ = std::io::stderr().flush();
        }
    }
    fn on_epoch(&mut self, r: &EpochRecord) {
        if !self.quiet {
            eprintln!();
        }
        let val = match (&r.val_dice, r.val_hd95) {
            (Some(d), h) => format!(
                " val Dice {} HD95 {}",
                d.iter()
                    .map(|x| format!("{:.2}%", 100.0 * x))
                    .collect::<Vec<_>>()
                    .join("/"),
                h.map_or("-".into(), |h| format!("{h:.2} mm"))
            ),
            _ => String::new(),
        };
        // The share of the training time (not of validation) spent blocked on the loader.
        let train_secs = self.samples_per_epoch as f64 / r.samples_per_second;
        let wait = if train_secs.is_finite() && train_secs > 0.0 {
            format!(
                "{:.1} s ({:.0}%)",
                r.data_wait_seconds,
                100.0 * r.data_wait_seconds / train_secs
            )
        } else {
            format!("{:.1} s", r.data_wait_seconds)
        };
        println!(
            "epoch {:>3}: loss {:.4} lr {:.2e} {:.1} samples/s {:.1} s data wait {wait}{val}",
            r.epoch + 1,
            r.train_loss,
            r.lr,
            r.samples_per_second,
            r.seconds
        );
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let mut run = match &a.config {
        Some(p) => RunConfig::from_json_file(p)?,
        None => RunConfig::default(),
    };
    if let Some(p) = &a.plan {
        let plan = negvol_train::plan::Plan::from_json_file(p)?;
        plan.apply_to_run(&mut run);
        eprintln!("applied plan {}:\n{plan}", p.display());
    }
    let t = &mut run.train;
    if !a.targets.is_empty() {
        t.targets = a.targets.clone();
    }
    if let Some(m) = &a.model {
        run.model.net = NetConfig::default_for(m)?;
    }
    if let Some(f) = &a.f_maps {
        run.model.net = match std::mem::take(&mut run.model.net) {
            NetConfig::Unet3d(mut c) => {
                c.f_maps = f.clone();
                NetConfig::Unet3d(c)
            }
            NetConfig::Unet3dAtt(mut c) => {
                c.f_maps = f.clone();
                NetConfig::Unet3dAtt(c)
            }
            NetConfig::Vnet(mut c) => {
                c.base_channels = f[0];
                NetConfig::Vnet(c)
            }
            NetConfig::Unet(mut c) => {
                c.features = f.clone();
                NetConfig::Unet(c)
            }
            other => other,
        };
    }
    if a.deep_supervision {
        match &mut run.model.net {
            NetConfig::Unet(c) => c.deep_supervision = true,
            other => {
                return Err(format!(
                    "--deep-supervision needs --model unet, not {}",
                    other.arch()
                )
                .into())
            }
        }
    }
    // Classes follow the targets.
    let classes = t.targets.len() as i64 + 1;
    let mut net_json = serde_json::to_value(&run.model.net)?;
    net_json["classes"] = classes.into();
    run.model.net = serde_json::from_value(net_json)?;
    if a.loss.is_some() || a.alpha.is_some() || a.beta.is_some() {
        let name = a.loss.clone().unwrap_or_else(|| "dice-ce".into());
        let mut j = match name.as_str() {
            "paper-dice-ce" => serde_json::json!({"loss": "dice-ce", "dice": "paper"}),
            other => serde_json::json!({ "loss": other }),
        };
        if let Some(x) = a.alpha {
            j["alpha"] = x.into();
        }
        if let Some(x) = a.beta {
            j["beta"] = x.into();
        }
        run.model.loss = serde_json::from_value(j).map_err(|e| format!("--loss {name}: {e}"))?;
    }
    if let Some(e) = a.epochs {
        t.epochs = e;
    }
    if let Some(b) = a.batches_per_epoch {
        t.sampler.batches_per_epoch = b;
    }
    if let Some(b) = a.batch_size {
        t.sampler.batch_size = b;
    }
    if let Some(p) = &a.patch {
        let p: [usize; 3] = p
            .as_slice()
            .try_into()
            .map_err(|_| format!("--patch needs 3 sizes, got {p:?}"))?;
        t.sampler.patch = p;
        t.validation.inference.patch = p;
    }
    let lr = a.lr.unwrap_or(t.optimizer.lr());
    if let Some(o) = &a.optimizer {
        t.optimizer = match o.as_str() {
            "adam" => OptimizerConfig::adam(lr, a.weight_decay.unwrap_or(0.01)),
            "adamw" => OptimizerConfig::AdamW {
                lr,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: a.weight_decay.unwrap_or(0.01),
            },
            "sgd" => OptimizerConfig::Sgd {
                lr,
                momentum: 0.99,
                nesterov: true,
                weight_decay: a.weight_decay.unwrap_or(3e-5),
            },
            other => return Err(format!("--optimizer {other}: expected adam, adamw or sgd").into()),
        };
    } else if a.lr.is_some() || a.weight_decay.is_some() {
        let mut j = serde_json::to_value(&t.optimizer)?;
        if let Some(x) = a.lr {
            j["lr"] = x.into();
        }
        if let Some(x) = a.weight_decay {
            j["weight_decay"] = x.into();
        }
        t.optimizer = serde_json::from_value(j)?;
    }
    if let Some(s) = &a.schedule {
        t.schedule = match s.as_str() {
            "step" => LrSchedule::Step {
                step_size: 30,
                gamma: 0.1,
            },
            "poly" => LrSchedule::Poly { exponent: 0.9 },
            "constant" => LrSchedule::Constant,
            other => {
                return Err(format!("--schedule {other}: expected step, poly or constant").into())
            }
        };
    }
    if let Some(n) = &a.normalization {
        t.normalization = match n.as_str() {
            "minmax" => Normalization::DatasetMinMax {
                min: None,
                max: None,
            },
            "fg-zscore" => Normalization::default(),
            "zscore" => Normalization::ZScore { clip: None },
            w if w.starts_with("window:") => {
                let v: Vec<f32> = w[7..]
                    .split(',')
                    .map(|x| x.trim().parse())
                    .collect::<Result<_, _>>()?;
                match v.as_slice() {
                    [lo, hi] => Normalization::Window { lo: *lo, hi: *hi },
                    _ => return Err(format!("--normalization {w}: expected window:LO,HI").into()),
                }
            }
            other => {
                return Err(format!(
                    "--normalization {other}: expected minmax, fg-zscore, zscore or window:LO,HI"
                )
                .into())
            }
        };
    }
    if let Some(s) = &a.augment {
        t.augment = match s.as_str() {
            "paper" => negvol_train::augment::AugmentConfig::paper(),
            "nnunet" => negvol_train::augment::AugmentConfig::default(),
            "none" => negvol_train::augment::AugmentConfig::none(),
            other => {
                return Err(format!("--augment {other}: expected paper, nnunet or none").into())
            }
        };
    }
    if a.crop_margin_mm.is_some() {
        t.crop_margin_mm = a.crop_margin_mm;
    }
    if let Some(o) = &a.orientation {
        t.orientation = (!o.eq_ignore_ascii_case("none")).then(|| o.to_ascii_uppercase());
    }
    if let Some(sp) = &a.spacing {
        t.target_spacing = Some(match sp.as_slice() {
            [s] => [*s; 3],
            [a, b, c] => [*a, *b, *c],
            _ => return Err(format!("--spacing needs 1 or 3 values, got {sp:?}").into()),
        });
    }
    if a.grad_clip.is_some() {
        t.grad_clip = a.grad_clip;
    }
    if let Some(p) = a.precision {
        t.precision = p;
        // Validation and later inference from the checkpoint use the same precision.
        t.validation.inference.precision = t.precision;
    }
    if a.patience.is_some() {
        t.validation.patience = a.patience;
    }
    if a.max_minutes.is_some() {
        t.max_minutes = a.max_minutes;
    }
    if let Some(v) = a.val_every {
        t.validation.every = v;
    }
    if let Some(s) = a.seed {
        t.seed = s;
    }
    if let Some(w) = a.workers {
        t.sampler.workers = w;
    }
    let device = parse_device(&a.device)?;
    run.validate()?;
    std::fs::create_dir_all(&a.out)?;

    let spec = DatasetSpec::open(&a.input_data)?;
    eprintln!(
        "loading {} cases from {} ...",
        spec.cases.len(),
        a.input_data.display()
    );
    let cases = spec.load(&run.train.targets)?;
    // Sparse annotation: voxels a label map leaves unannotated are ignored by the loss.
    let sparse = cases
        .iter()
        .filter(|c| {
            c.label
                .data()
                .iter()
                .any(|v| *v == negvol_train::IGNORE_LABEL)
        })
        .count();
    if sparse > 0 && !run.train.ignore_label {
        eprintln!(
            "{sparse} of {} cases leave voxels unannotated (ignore label): the loss ignores them",
            cases.len()
        );
        run.train.ignore_label = true;
    }
    eprintln!(
        "{} on {:?}: {} {}, patch {:?} x{}, {} epochs x {} batches",
        run.model.net.arch(),
        device,
        run.model.loss.name(),
        run.train.targets.join("+"),
        run.train.sampler.patch,
        run.train.sampler.batch_size,
        run.train.epochs,
        run.train.sampler.batches_per_epoch
    );
    // Which images this run trains on, so that `eval --cross-validation` can check it scores
    // the same ones (case ids alone repeat across datasets).
    let records = negvol_train::dataset::CaseRecord::of_all(&cases);
    let recorded = a.out.join("cases.json");
    if a.continue_run && recorded.is_file() {
        let before: Vec<negvol_train::dataset::CaseRecord> =
            negvol_train::checkpoint::read_json(&recorded)?;
        if before != records {
            return Err(format!(
                "--continue: the cases of {} differ from the ones the run started with ({}); \
                 continue with the same dataset or train into a new folder",
                a.input_data.display(),
                recorded.display()
            )
            .into());
        }
    }
    let mut obs = Progress {
        quiet: a.quiet,
        samples_per_epoch: run.train.sampler.batches_per_epoch * run.train.sampler.batch_size,
    };
    let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    let patients: Vec<&str> = cases.iter().map(|c| c.patient.as_str()).collect();
    let folds = match (a.folds, &a.splits) {
        (Some(_), Some(_)) => return Err("give --folds or --splits, not both".into()),
        (Some(k), None) => Some(kfold_by_patient(&patients, k, run.train.seed)?),
        (None, Some(p)) => Some(read_splits(p, &ids, Some(&patients))?),
        (None, None) => None,
    };
    if let Some(folds) = folds {
        if a.resume.is_some() {
            return Err(
                "--resume continues one run; --continue continues every fold of OUT".into(),
            );
        }
        let split_file = a.out.join("splits_final.json");
        if a.continue_run && split_file.is_file() {
            let before = read_splits(&split_file, &ids, Some(&patients))?;
            if before != folds {
                return Err(format!(
                    "--continue: the folds differ from the run's {}; pass it with --splits",
                    split_file.display()
                )
                .into());
            }
        }
        write_splits(&split_file, &ids, &folds)?;
        negvol_train::checkpoint::write_json(&recorded, &records)?;
        negvol_train::checkpoint::write_json(&a.out.join("run.json"), &run)?;
        let which = a.fold.clone().unwrap_or_else(|| (0..folds.len()).collect());
        let train_folds = if a.continue_run {
            continue_folds
        } else {
            cross_validate_folds
        };
        let summaries = train_folds(&run, &cases, &folds, &which, device, &a.out, &mut obs)?;
        for (f, s) in which.iter().zip(&summaries) {
            println!(
                "fold {f}: best mean Dice {:?} at epoch {:?}",
                s.state.best_metric,
                s.state.best_epoch.map(|e| e + 1)
            );
        }
        return Ok(());
    }
    if a.fold.is_some() {
        return Err("--fold needs --folds or --splits".into());
    }
    // Hold out whole patients for validation (deterministic: sorted patient ids, last ones).
    let mut patients: Vec<&str> = cases.iter().map(|c| c.patient.as_str()).collect();
    patients.sort_unstable();
    patients.dedup();
    let n_val = ((patients.len() as f64 * a.val_fraction).round() as usize)
        .min(patients.len().saturating_sub(1));
    let val_patients: Vec<&str> = patients[patients.len() - n_val..].to_vec();
    let (val, train): (Vec<_>, Vec<_>) = cases
        .iter()
        .cloned()
        .partition(|c| val_patients.contains(&c.patient.as_str()));
    eprintln!(
        "{} training and {} validation cases",
        train.len(),
        val.len()
    );
    negvol_train::checkpoint::write_json(&recorded, &records)?;
    negvol_train::checkpoint::write_json(&a.out.join("run.json"), &run)?;
    let mut trainer = build_trainer(&run, device)?;
    let last = a.out.join("last.json");
    let resume = match (&a.resume, a.continue_run) {
        (Some(r), _) => Some(r.clone()),
        (None, true) if last.is_file() => Some(last),
        (None, true) => {
            eprintln!(
                "--continue: no {} yet, starting from scratch",
                last.display()
            );
            None
        }
        (None, false) => None,
    };
    if let Some(r) = &resume {
        trainer.resume(r)?;
        eprintln!(
            "resumed from {} at epoch {}",
            r.display(),
            trainer.state().epoch
        );
    }
    let s = trainer.fit(&train, &val, &a.out, &mut obs)?;
    println!(
        "done: {} epochs, best mean Dice {} (epoch {}), last checkpoint {}",
        s.state.epoch,
        s.state
            .best_metric
            .map_or("-".into(), |d| format!("{:.2}%", 100.0 * d)),
        s.state
            .best_epoch
            .map_or("-".into(), |e| (e + 1).to_string()),
        s.last.display()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    common::exit_with("train", run())
}
