//! Evaluate a trained model, or an ensemble of models, on a dataset in the seed paper's Table 1
//! layout.
//!
//! ```text
//! cargo run --release --example eval -- --model-file runs/mc/best.json --input-data test --csv mc.csv
//! # the K models of `train --folds K --out runs/cv` as one ensemble:
//! cargo run --release --example eval -- --model-file runs/cv --input-data test
//! ```
//! `--model-file` may be given several times, and each may be a checkpoint, a training output
//! folder (its best.json, else last.json) or a cross-validation folder (`fold_*/`, in fold
//! order). With more than one model every case is segmented by the argmax of the mean of their
//! softmax probabilities (`negvol_train::ensemble::Ensemble`; every model keeps its own
//! preprocessing and sliding-window settings; all must segment the same targets in the same
//! order). One model gives the same output as before ensembles existed.
//!
//! `--cross-validation RUN` scores a `train --folds K --out RUN` (or `--splits`) run the way
//! nnU-Net reports cross-validation: each fold's model (RUN/fold_f, best.json else last.json)
//! on that fold's validation cases as listed in RUN/splits_final.json, all folds pooled into
//! one table. `--input-data` must be the dataset the run was trained on.
//!
//! ```text
//! cargo run --release --example eval -- --cross-validation runs/cv --input-data train-set
//! ```
//!
//! Post-processing like nnU-Net's: `--determine-postprocessing` (with `--cross-validation`)
//! tries, per target, keeping only the largest component and keeping up to 2 components
//! (each at least 10 % of the largest) on the pooled validation predictions, and writes
//! `RUN/postprocessing.json` choosing the one that raises the mean Dice (or none); the table
//! above it is without post-processing (`negvol_train::postprocess::PostprocessingSearch`).
//! With `--model-file`, a model folder's `postprocessing.json` is applied before scoring, as
//! `segment` applies it (`--postprocessing none` scores the raw argmax; `--postprocessing FILE`
//! another plan).
//!
//! Cases whose label map leaves voxels unannotated (the ignore label, sparse annotation) are
//! scored on the annotated voxels only: Dice and CE there, distances undefined
//! (`negvol_metrics::table1_row_annotated`).
//!
//! Per structure: DICE (%), CE (mean per-voxel cross-entropy of the predicted foreground
//! probability, nats), HD as the paper computes it (all foreground voxels, voxel units), and
//! negvol's surface metrics in mm: HD, HD95, ASSD and NSD at `--tolerance-mm`; mean +- std over
//! cases (cases where a metric is undefined, e.g. an empty prediction, are counted apart).
//! The rows are `negvol_metrics::table1_row`, the table `negvol_metrics::markdown_table` (their
//! docs define every column).
//!
//! For a model that segments both `mc` and `tb`, on cases with an `nv` mask, an NV row scores
//! the negative volume derived from the predicted masks the way `pipeline` derives it
//! (`negvol::clean_predicted_masks`: MC components resting on TB dropped, at most
//! `--keep-largest` components of each bone at >= 10 % of the largest; default NV settings or
//! `--nv-config`) against the case's NV: the paper's NV row, produced by negvol's MC+TB -> NV
//! method instead of a network trained on NV (`negvol::nv_table_row`). A case whose NV cannot
//! be derived counts as undefined, with the reason.

use std::path::PathBuf;

use clap::Parser;
use negvol::{nv_table_row, CleanupConfig, ComponentFilter, NvConfig};
use negvol_metrics::{
    csv_table, markdown_table, table1_row, table1_row_annotated, CaseRow, EvalOptions, Report,
};
use negvol_train::ensemble::{Ensemble, InferenceOverrides};
use negvol_train::postprocess::{
    describe_filter, PostprocessingChoice, PostprocessingSearch, PLAN_FILE,
};
use negvol_train::run::parse_device;
use negvol_train::DatasetSpec;
use negvol_train::Precision;

mod common;

#[derive(Parser, Debug)]
#[command(about = "Evaluate a negvol model or an ensemble of models (Table 1 layout)")]
struct Args {
    /// Checkpoint (best.json / best.safetensors), training output folder (its best.json, else
    /// last.json) or cross-validation folder (every fold_*/best.json, else last.json). Repeat
    /// for an ensemble: the mean of the models' probabilities, then the argmax.
    #[arg(long, required_unless_present = "cross_validation")]
    model_file: Vec<PathBuf>,
    /// Cross-validation run folder (RUN/splits_final.json, RUN/fold_*): each fold's model on
    /// its own validation cases of --input-data, pooled. Excludes --model-file.
    #[arg(long, conflicts_with = "model_file")]
    cross_validation: Option<PathBuf>,
    /// Dataset: a folder of case folders, a manifest, or an nnU-Net v2 / Decathlon raw dataset.
    #[arg(long)]
    input_data: PathBuf,
    /// Per-case CSV output.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Summary JSON output.
    #[arg(long)]
    json: Option<PathBuf>,
    /// NSD tolerance (mm).
    #[arg(long, default_value_t = 1.0)]
    tolerance_mm: f64,
    /// Flip test-time augmentation.
    #[arg(long)]
    tta: bool,
    /// Forward-pass precision on CUDA: f32, bf16 or f16 (default: each model's own).
    #[arg(long)]
    precision: Option<Precision>,
    /// Sliding-window overlap (default: each model's own).
    #[arg(long)]
    overlap: Option<f64>,
    /// NV rows: keep at most this many components of predicted MC and TB (0: all).
    #[arg(long, default_value_t = 2)]
    keep_largest: usize,
    /// NV settings (JSON file of negvol::NvConfig) for the NV rows.
    #[arg(long)]
    nv_config: Option<PathBuf>,
    /// Device: auto, cpu, cuda.
    #[arg(long, default_value = "auto")]
    device: String,
    /// With --cross-validation: choose each target's post-processing on the pooled validation
    /// predictions and write RUN/postprocessing.json.
    #[arg(long, requires = "cross_validation")]
    determine_postprocessing: bool,
    /// Post-processing applied before scoring: `auto` (with --model-file, the model folder's
    /// postprocessing.json, if any; none with --cross-validation), `none`, or a plan file.
    #[arg(long, default_value = "auto")]
    postprocessing: PostprocessingChoice,
}

/// Label of the NV rows in the per-case table (not a class of the model).
const NV_LABEL: u8 = 255;

/// `what` of the members: their distinct values joined by `+`, in member order.
fn describe(e: &Ensemble, what: impl Fn(&negvol_train::run::LoadedModel) -> String) -> String {
    let mut seen: Vec<String> = Vec::new();
    for m in e.members() {
        let v = what(m);
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen.join("+")
}

/// Each case to score must be the image the run recorded under its id.
fn check_cases(
    spec: &DatasetSpec,
    jobs: &[(usize, usize)],
    records: &[negvol_train::dataset::CaseRecord],
    path: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    for &(_, ci) in jobs {
        let c = &spec.cases[ci];
        let r = records
            .iter()
            .find(|r| r.id == c.id)
            .ok_or_else(|| format!("case {} is not in {}", c.id, path.display()))?;
        let image = negvol_train::dataset::read_image(&c.id, &c.image)?;
        let digest = negvol_train::dataset::image_digest(&image);
        if digest != r.image_digest {
            return Err(format!(
                "case {}: {} is not the image the run trained on (digest {digest}, recorded \
                 {}); is --input-data the run's dataset?",
                c.id,
                c.image.display(),
                r.image_digest
            )
            .into());
        }
    }
    Ok(())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let device = parse_device(&a.device)?;
    let spec = DatasetSpec::open(&a.input_data)?;
    // The models, and which model segments which case (model index, case index).
    let (models, jobs): (Vec<Ensemble>, Vec<(usize, usize)>) = match &a.cross_validation {
        None => {
            let e = Ensemble::load(&a.model_file, device)?;
            if e.members().len() > 1 {
                println!("{}", e.describe_members());
            }
            (vec![e], (0..spec.cases.len()).map(|c| (0, c)).collect())
        }
        Some(run) => {
            let ids: Vec<&str> = spec.cases.iter().map(|c| c.id.as_str()).collect();
            let patients: Vec<&str> = spec.cases.iter().map(|c| c.patient_id()).collect();
            let folds = negvol_train::dataset::read_splits(
                &run.join("splits_final.json"),
                &ids,
                Some(&patients),
            )?;
            // The run's record of its images (train writes it): same ids, same images.
            let recorded = run.join("cases.json");
            let records: Option<Vec<negvol_train::dataset::CaseRecord>> = if recorded.is_file() {
                Some(serde_json::from_str(&std::fs::read_to_string(&recorded)?)?)
            } else {
                println!(
                    "note: {} is missing (a run from before it was written): the images \
                     cannot be checked against the ones the run trained on",
                    recorded.display()
                );
                None
            };
            let mut models = Vec::with_capacity(folds.len());
            let mut jobs = Vec::new();
            for (f, (_, val)) in folds.iter().enumerate() {
                let e = Ensemble::load(&[run.join(format!("fold_{f}"))], device)?;
                println!(
                    "fold {f}: {} on {} validation cases",
                    e.members()[0].path.display(),
                    val.len()
                );
                jobs.extend(val.iter().map(|&c| (f, c)));
                models.push(e);
            }
            if let Some(records) = &records {
                check_cases(&spec, &jobs, records, &recorded)?;
            }
            (models, jobs)
        }
    };
    // Every model segments the same targets in the same order (checked on load for the
    // members of one ensemble; here for the folds).
    let model = &models[0].members()[0];
    let targets = model.train.targets.clone();
    for e in &models[1..] {
        let m = &e.members()[0];
        if m.train.targets != targets {
            return Err(format!(
                "{} segments {:?}, {} segments {:?}",
                model.path.display(),
                targets,
                m.path.display(),
                m.train.targets
            )
            .into());
        }
    }
    let ensemble = &models[0];
    let overrides = InferenceOverrides {
        flip_tta: a.tta.then_some(true),
        overlap: a.overlap,
        batch_size: None,
        precision: a.precision,
    };
    let opts = EvalOptions {
        tolerance_mm: a.tolerance_mm,
        ..Default::default()
    };
    let nv_cfg: NvConfig = match &a.nv_config {
        Some(p) => serde_json::from_str(&std::fs::read_to_string(p)?)?,
        None => NvConfig::default(),
    };
    // The NV rows clean the predicted masks as `pipeline` does by default.
    let cleanup = CleanupConfig {
        keep_largest: (a.keep_largest > 0).then_some(ComponentFilter {
            max_components: a.keep_largest,
            ..Default::default()
        }),
        ..CleanupConfig::for_nv(&nv_cfg)
    };
    // The NV row needs both bones from this model and an NV mask per case.
    let nv_classes = match (model.train.class_of("mc"), model.train.class_of("tb")) {
        (Ok(m), Ok(t)) if spec.cases.iter().all(|c| c.labels.contains_key("nv")) => Some((m, t)),
        _ => None,
    };
    // The plan applied before scoring (the cross-validation is scored as predicted unless a
    // plan file is named).
    let plan = match (&a.cross_validation, &a.postprocessing) {
        (Some(_), PostprocessingChoice::Auto) => None,
        (_, choice) => choice.resolve(&a.model_file, &targets)?,
    };
    if let Some((path, plan)) = &plan {
        println!(
            "post-processing from {}: {}",
            path.display(),
            plan.describe()
        );
    }
    let mut search = if a.determine_postprocessing {
        Some(PostprocessingSearch::new(
            targets.clone(),
            PostprocessingSearch::default_candidates(),
        )?)
    } else {
        None
    };
    let mut rows: Vec<CaseRow> = Vec::new();
    let t0 = std::time::Instant::now();
    for &(mi, ci) in &jobs {
        let c = &spec.cases[ci];
        let case = negvol_train::dataset::load_case(c, &targets)?;
        let mut pred = models[mi].predict_overriding(&case.image, &overrides)?;
        if let Some(s) = &mut search {
            s.add_case(case.label.data().view(), pred.labels.data().view())?;
        }
        if let Some((_, plan)) = &plan {
            plan.apply(&mut pred)?;
        }
        // Sparse annotation: score the annotated voxels only (distances are undefined).
        let annotated = case
            .label
            .data()
            .iter()
            .any(|v| *v == negvol_train::IGNORE_LABEL)
            .then(|| case.label.data().mapv(|v| v != negvol_train::IGNORE_LABEL));
        for (t, name) in targets.iter().enumerate() {
            let cls = (t + 1) as u8;
            let truth = case.label.data().mapv(|v| v == cls);
            let mask = pred.labels.data().mapv(|v| v == cls);
            let (prob, spacing) = (
                Some(pred.probabilities[t + 1].view()),
                case.image.geometry().spacing(),
            );
            let row = match &annotated {
                None => table1_row(truth.view(), mask.view(), prob, spacing, &opts)?,
                Some(a) => {
                    table1_row_annotated(truth.view(), mask.view(), prob, a.view(), spacing, &opts)?
                }
            };
            eprintln!(
                "{} {name}: Dice {}, HD95 {}",
                c.id,
                row.dice_percent()
                    .get()
                    .map_or("-".into(), |v| format!("{v:.2}%")),
                row.hd_percentile_mm
                    .get()
                    .map_or("-".into(), |v| format!("{v:.2} mm"))
            );
            let values = row.named_values();
            rows.push(CaseRow {
                case: format!("{}:{name}", c.id),
                label: Some(cls),
                values,
            });
        }
        if let Some((mc_cls, tb_cls)) = nv_classes {
            let truth = c.read_mask("nv")?;
            let row = nv_table_row(
                pred.mask(mc_cls),
                pred.mask(tb_cls),
                &truth,
                &nv_cfg,
                &cleanup,
                &opts,
            )?;
            if let Some(e) = row.not_derived() {
                eprintln!("  NV not derived: {e}");
            }
            let values = row.named_values();
            rows.push(CaseRow {
                case: format!("{}:nv", c.id),
                label: Some(NV_LABEL),
                values,
            });
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let title = format!(
        "{} ({}, {} cases{})",
        match (models.len(), ensemble.members().len()) {
            (1, 1) => model.model.net.arch().to_string(),
            (1, k) => format!(
                "ensemble of {k} {}",
                describe(ensemble, |m| m.model.net.arch().to_string())
            ),
            (k, _) => format!(
                "{k}-fold cross-validation, {}",
                describe(ensemble, |m| m.model.net.arch().to_string())
            ),
        },
        describe(ensemble, |m| m.model.loss.name().to_string()),
        jobs.len(),
        plan.as_ref().map_or(String::new(), |(_, p)| format!(
            ", post-processed: {}",
            p.describe()
        ))
    );
    let mut objects: Vec<(String, u8)> = targets
        .iter()
        .enumerate()
        .map(|(t, n)| (n.clone(), (t + 1) as u8))
        .collect();
    if nv_classes.is_some() {
        objects.push(("nv".into(), NV_LABEL));
    }
    let mut summaries = serde_json::Map::new();
    let mut table = Vec::new();
    for (name, cls) in &objects {
        let report = Report::from_cases(
            rows.iter()
                .filter(|r| r.label == Some(*cls))
                .map(|r| r.values.clone()),
        );
        summaries.insert(name.clone(), serde_json::to_value(&report)?);
        let obj = if *cls == NV_LABEL {
            "NV (from MC+TB)".to_string()
        } else {
            name.to_uppercase()
        };
        table.push((obj, report));
    }
    print!("{}", markdown_table(&title, &table));
    println!("{} cases in {secs:.1} s", jobs.len());
    if let (Some(s), Some(run)) = (&search, &a.cross_validation) {
        let determined = s.finish(format!(
            "{}-fold cross-validation of {}, {} validation cases",
            models.len(),
            run.display(),
            s.cases()
        ))?;
        println!("\npost-processing on the pooled validation predictions (mean Dice %):");
        for t in &determined.targets {
            let cells: Vec<String> = t
                .candidates
                .iter()
                .map(|c| {
                    let moved = if c.keep_largest.is_some() {
                        format!(" (+{} -{} cases)", c.improved, c.worsened)
                    } else {
                        String::new()
                    };
                    format!(
                        "{} {:.3}{moved}",
                        describe_filter(c.keep_largest.as_ref()),
                        100.0 * c.mean_dice
                    )
                })
                .collect();
            println!(
                "  {}: {} -> {}",
                t.target,
                cells.join(" | "),
                describe_filter(t.keep_largest.as_ref())
            );
        }
        let path = run.join(PLAN_FILE);
        determined.save(&path)?;
        println!(
            "{} ({}); segment and eval --model-file {} apply it",
            path.display(),
            determined.describe(),
            run.display()
        );
    }
    if let Some(p) = &a.csv {
        negvol_train::checkpoint::write_atomic(p, csv_table(&rows).as_bytes())?;
        println!("per-case CSV: {}", p.display());
    }
    if let Some(p) = &a.json {
        negvol_train::checkpoint::write_json(p, &summaries)?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    common::exit_with("eval", run())
}
