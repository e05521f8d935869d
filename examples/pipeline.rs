//! The whole pipeline on one CT: segment the condyle (MC) and the temporal bone (TB) with two
//! trained models, optionally refine TB with 3D Canny edges (the paper's step C), derive the
//! negative volume, and write masks, meshes, pictures and a report.
//!
//! Order of the steps: (locate the joints, with `--locator`) -> segment MC and TB -> clean both
//! (`negvol::clean_predicted_masks`: drop MC components resting on TB, `--no-condyle-check` to
//! skip; then keep the largest components of each, `--keep-largest`, default 2) -> give voxels
//! claimed by both to the more confident model (`negvol::resolve_overlap_by_score`) -> step C
//! (`--refine`) -> NV (`--nv-config`) -> outputs (and scores with `--truth`). A model folder's
//! `postprocessing.json` (chosen on its cross-validation crops, see `eval
//! --determine-postprocessing`) is reported but not applied: this clean-up is made for scans
//! with one or two joints, where a plan's "keep one component" would erase a joint.
//!
//! ```text
//! cargo run --release --example pipeline -- --image ct.nii.gz \
//!     --mc-model runs/mc/best.json --tb-model runs/tb/best.json --out out/ct [--truth case_007]
//! ```
//! With `--truth DIR` (a phantom case folder holding `mc.nii.gz`, `tb.nii.gz`, `nv.nii.gz`) the
//! predicted MC, TB (with and without refinement) and NV are scored against it, printed and
//! written to `OUT/scores.json`.
//! With `--locator runs/locator/locator.json` (made by the `train-locator` example) the joints
//! are located first and MC/TB are segmented only inside each joint's VOI (plus
//! `--voi-margin-mm`), then pasted back into full-size masks; outside the VOIs both are empty.
//!
//! `--mc-model` and `--tb-model` may each be given several times, and each may be a checkpoint,
//! a training output folder (its best.json, else last.json) or a cross-validation folder
//! (`fold_*/`, in fold order): the structure is then segmented by an ensemble, the argmax of
//! the mean of the models' softmax probabilities (`negvol_train::ensemble::Ensemble`; the
//! models of one flag must segment the same targets in the same order). One model per flag
//! gives the same output as before ensembles existed.
//!
//! ```text
//! cargo run --release --example pipeline -- --image ct.nii.gz --mc-model runs/cv --tb-model runs/cv --out out/ct
//! ```
//! `--image` may also be a folder holding one DICOM CT series (read in HU; the outputs are NIfTI
//! in the series' geometry).
//!
//! A cohort: `--input-folder DIR` runs every CT of the folder (NIfTI files, case folders,
//! DICOM series folders; `negvol_train::dataset::list_images`) with the models loaded once,
//! each into `OUT/<case>/`, and writes `OUT/cohort.csv` (per case: NV volume and mean
//! joint-space width per side, asymmetry index, issues) and `OUT/cohort.json` (the full
//! reports). A case that fails is listed with its error and the others go on.
//!
//! ```text
//! cargo run --release --example pipeline -- --input-folder cts/ --mc-model runs/cv --tb-model runs/cv --out cohort/
//! ```

use std::path::{Path, PathBuf};

use clap::Parser;
use negvol::{
    clean_predicted_masks, derive_nv, resolve_overlap_by_score, write_outputs, CleanupConfig,
    ComponentFilter, NvConfig, OutputOptions, Side,
};
use negvol_metrics::{evaluate_pair, EvalOptions};
use negvol_train::ensemble::{Ensemble, InferenceOverrides};
use negvol_train::locate::{paste_merge, Locator};
use negvol_train::preprocess::crop;
use negvol_train::refine::{refine_tb, RefineConfig};
use negvol_train::run::parse_device;
use negvol_volume::Volume;

mod common;

#[derive(Parser, Debug)]
#[command(about = "CT -> MC, TB -> NV with trained negvol models")]
struct Args {
    /// Input CT (HU): a NIfTI, NRRD or MetaImage file, or a DICOM series folder.
    #[arg(long, required_unless_present = "input_folder")]
    image: Option<PathBuf>,
    /// A cohort instead: every CT of this folder (NIfTI files, case folders, DICOM series
    /// folders), each into OUT/<case>/, with one row per case in OUT/cohort.csv.
    #[arg(long, conflicts_with_all = ["image", "truth"])]
    input_folder: Option<PathBuf>,
    /// Condyle model: checkpoint (.json or .safetensors), training output folder (its
    /// best.json, else last.json) or cross-validation folder (every fold_*/best.json, else
    /// last.json); its target `mc`, else its first target, is used. Repeat for an ensemble (the
    /// mean of the models' probabilities).
    #[arg(long, required = true)]
    mc_model: Vec<PathBuf>,
    /// Temporal-bone model(s), as --mc-model; its target `tb`, else its first target, is used.
    /// May be the same as --mc-model when one model (or ensemble) segments both (targets mc
    /// and tb).
    #[arg(long, required = true)]
    tb_model: Vec<PathBuf>,
    /// Output folder (with --input-folder: one sub-folder per case and cohort.csv).
    #[arg(long)]
    out: PathBuf,
    /// Refine TB with Canny edges (step C).
    #[arg(long)]
    refine: bool,
    /// Refinement settings (JSON file of negvol_train::refine::RefineConfig).
    #[arg(long)]
    refine_config: Option<PathBuf>,
    /// NV settings (JSON file of negvol::NvConfig).
    #[arg(long)]
    nv_config: Option<PathBuf>,
    /// A case folder with mc/tb/nv truth masks to score against.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Flip test-time augmentation.
    #[arg(long)]
    tta: bool,
    /// Skip meshes and pictures.
    #[arg(long)]
    no_pictures: bool,
    /// Joint locator (locator.json from `train-locator`): segment only inside the located VOIs.
    #[arg(long)]
    locator: Option<PathBuf>,
    /// Margin (mm) added around each located VOI before segmenting it.
    #[arg(long, default_value_t = 5.0)]
    voi_margin_mm: f64,
    /// Keep at most this many 26-connected components of MC and of TB (0: keep all), each at
    /// least --keep-fraction of the largest: removes stray false positives away from the
    /// joints (a scan holds one or two joints).
    #[arg(long, default_value_t = 2)]
    keep_largest: usize,
    /// Keep MC components that rest on temporal bone (TB under most of their footprint), which
    /// a condyle never does; by default they are dropped before --keep-largest.
    #[arg(long)]
    no_condyle_check: bool,
    /// See --keep-largest.
    #[arg(long, default_value_t = 0.1)]
    keep_fraction: f64,
    /// Device: auto, cpu, cuda.
    #[arg(long, default_value = "auto")]
    device: String,
}

/// Mask of `target` (by name; else the model's first target) predicted by `model` (one model
/// or an ensemble), and its probability.
fn segment(
    model: &Ensemble,
    image: &Volume<f32>,
    target: &str,
    tta: bool,
) -> Result<(Volume<bool>, Volume<f32>), Box<dyn std::error::Error>> {
    let overrides = InferenceOverrides {
        flip_tta: tta.then_some(true),
        ..Default::default()
    };
    let pred = model.predict_overriding(image, &overrides)?;
    let t = model
        .targets()
        .iter()
        .position(|x| x == target)
        .unwrap_or(0);
    let cls = (t + 1) as u8;
    Ok((
        pred.labels.map(|v| *v == cls),
        pred.probabilities[t + 1].clone(),
    ))
}

/// A VOI `(start, size)` of the image, inside it.
type Voi = ([i64; 3], [usize; 3]);

/// `--locator`: the located joints' VOIs grown by the margin (an error if none is found).
fn locate_vois(
    (path, locator): &(PathBuf, Locator),
    image: &Volume<f32>,
    margin_mm: f64,
) -> Result<Vec<Voi>, Box<dyn std::error::Error>> {
    let t = std::time::Instant::now();
    let joints = locator.locate(image)?;
    if joints.is_empty() {
        return Err(format!("--locator {}: no joint found in the image", path.display()).into());
    }
    let mut vois = Vec::with_capacity(joints.len());
    for j in &joints {
        let voi = j.voi_with_margin(margin_mm, image.geometry())?;
        let c = j.center_mm;
        println!(
            "  {:>5} joint at ({:.1}, {:.1}, {:.1}) mm, score {:.2}: VOI from {:?}, {:?} voxels",
            j.side.name(),
            c[0],
            c[1],
            c[2],
            j.score,
            voi.0,
            voi.1
        );
        vois.push(voi);
    }
    println!(
        "located {} joint(s) in {:.2} s",
        joints.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(vois)
}

/// [`segment`] on the whole image, or only inside `vois` with the results pasted back into
/// full-size volumes (masks or-ed, probabilities maxed where VOIs overlap).
fn segment_in(
    model: &Ensemble,
    image: &Volume<f32>,
    target: &str,
    tta: bool,
    vois: Option<&[Voi]>,
) -> Result<(Volume<bool>, Volume<f32>), Box<dyn std::error::Error>> {
    let Some(vois) = vois else {
        return segment(model, image, target, tta);
    };
    let mut mask = image.map(|_| false);
    let mut prob = image.map(|_| 0.0f32);
    for &(start, size) in vois {
        // The VOI lies inside the image, so the fill value is never used.
        let part = crop(image, start, size, 0.0)?;
        let (m, p) = segment(model, &part, target, tta)?;
        paste_merge(mask.view_mut(), m.view(), start, |a, b| *a |= *b);
        paste_merge(prob.view_mut(), p.view(), start, |a, b| *a = a.max(*b));
    }
    Ok((mask, prob))
}

/// Prints one structure's scores against its truth mask and returns them as JSON.
fn score(
    name: &str,
    truth: &Path,
    pred: &Volume<bool>,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let t = negvol_volume::read_mask(truth)?;
    let opts = EvalOptions {
        surfels: false,
        solid: false,
        seed_paper: false,
        ..Default::default()
    };
    let m = evaluate_pair(t.view(), pred.view(), pred.geometry().spacing(), &opts)?;
    let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    println!(
        "  {name:<12} Dice {} HD95 {} mm ASSD {} mm volume {:.1} vs {:.1} mm3",
        f(m.overlap.dice.get()),
        f(m.voxel_surface.hd_percentile.get()),
        f(m.voxel_surface.assd.get()),
        m.prediction_volume_mm3,
        m.reference_volume_mm3
    );
    Ok(serde_json::json!({
        "structure": name,
        "dice": m.overlap.dice.get(),
        "hd95_mm": m.voxel_surface.hd_percentile.get(),
        "assd_mm": m.voxel_surface.assd.get(),
        "volume_mm3": m.prediction_volume_mm3,
        "truth_volume_mm3": m.reference_volume_mm3,
    }))
}

/// The model or ensemble of `--mc-model` / `--tb-model` (members listed when more than one).
fn load_models(
    what: &str,
    paths: &[PathBuf],
    device: negvol_train::tch::Device,
) -> Result<Ensemble, Box<dyn std::error::Error>> {
    let e = Ensemble::load(paths, device)?;
    if e.members().len() > 1 {
        println!("{what}: {}", e.describe_members());
    }
    if let Some((plan, p)) = negvol_train::postprocess::find_plan(paths)? {
        println!(
            "{what}: {} ({}) is not applied here: the pipeline cleans its masks for one or two \
             joints (--keep-largest, the condyle check)",
            plan.display(),
            p.describe()
        );
    }
    Ok(e)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let device = parse_device(&a.device)?;
    let mc = load_models("MC", &a.mc_model, device)?;
    let tb = if a.tb_model == a.mc_model {
        None
    } else {
        Some(load_models("TB", &a.tb_model, device)?)
    };
    let nv_cfg: NvConfig = match &a.nv_config {
        Some(p) => serde_json::from_str(&std::fs::read_to_string(p)?)?,
        None => NvConfig::default(),
    };
    let mut cleanup = CleanupConfig::for_nv(&nv_cfg);
    if a.no_condyle_check {
        cleanup.condyle_check = None;
    }
    cleanup.keep_largest = (a.keep_largest > 0).then_some(ComponentFilter {
        max_components: a.keep_largest,
        min_fraction: a.keep_fraction,
    });
    let refine = match (a.refine, &a.refine_config) {
        (false, _) => None,
        (true, Some(p)) => Some(serde_json::from_str(&std::fs::read_to_string(p)?)?),
        (true, None) => Some(RefineConfig::default()),
    };
    let locator = match &a.locator {
        Some(p) => Some((p.clone(), Locator::load(p, device)?)),
        None => None,
    };
    // Loaded once, for one CT or a whole cohort.
    let setup = Setup {
        mc: &mc,
        tb: tb.as_ref().unwrap_or(&mc),
        locator,
        nv_cfg,
        cleanup,
        refine,
        device,
    };
    match (&a.image, &a.input_folder) {
        (Some(image), _) => {
            run_one(&a, &setup, image, &a.out)?;
            Ok(())
        }
        (None, Some(dir)) => cohort(&a, &setup, dir),
        (None, None) => Err("give --image or --input-folder".into()),
    }
}

/// What every CT of a run shares: the models, the locator and the settings, loaded once.
struct Setup<'m> {
    mc: &'m Ensemble,
    tb: &'m Ensemble,
    locator: Option<(PathBuf, Locator)>,
    nv_cfg: NvConfig,
    cleanup: CleanupConfig,
    /// Step C settings when `--refine` is on.
    refine: Option<RefineConfig>,
    device: negvol_train::tch::Device,
}

/// Every CT of a folder through [`run_one`], then one CSV row per case: NV volume and
/// joint-space width per side, asymmetry, issues. A failing case is reported and the others
/// go on.
fn cohort(a: &Args, setup: &Setup, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let images = negvol_train::dataset::list_images(dir)?;
    println!("{} CTs in {}", images.len(), dir.display());
    std::fs::create_dir_all(&a.out)?;
    let mut csv = String::from(
        "case,left_nv_mm3,right_nv_mm3,whole_nv_mm3,left_width_mean_mm,right_width_mean_mm,\
         whole_width_mean_mm,asymmetry_index,issues,error\n",
    );
    let mut reports = Vec::new();
    let mut failed = 0usize;
    for (id, path) in &images {
        println!("== {id}");
        match run_one(a, setup, path, &a.out.join(id)) {
            Ok(r) => {
                let side = |n: Side| r.sides.iter().find(|s| s.side == n && s.has_nv);
                let vol =
                    |n: Side| side(n).map_or(String::new(), |s| format!("{:.3}", s.nv_volume_mm3));
                let width = |n: Side| {
                    side(n)
                        .and_then(|s| s.width.as_ref())
                        .map_or(String::new(), |w| format!("{:.4}", w.mean_mm))
                };
                let issues: Vec<String> = r
                    .sides
                    .iter()
                    .flat_map(|s| {
                        s.issues
                            .iter()
                            .map(move |i| format!("{}:{:?}", s.side.name(), i.code))
                    })
                    .collect();
                csv.push_str(&format!(
                    "{id},{},{},{},{},{},{},{},{},\n",
                    vol(Side::Left),
                    vol(Side::Right),
                    vol(Side::Whole),
                    width(Side::Left),
                    width(Side::Right),
                    width(Side::Whole),
                    r.asymmetry
                        .index
                        .map_or(String::new(), |v| format!("{v:.4}")),
                    issues.join(" ")
                ));
                reports.push(serde_json::json!({"case": id, "image": path, "report": r}));
            }
            Err(e) => {
                failed += 1;
                eprintln!("{id}: FAILED: {e}");
                let msg = e.to_string().replace(['"', '\n'], " ");
                csv.push_str(&format!("{id},,,,,,,,,\"{msg}\"\n"));
                reports
                    .push(serde_json::json!({"case": id, "image": path, "error": e.to_string()}));
            }
        }
    }
    negvol_volume::atomic::write_bytes_atomic(&a.out.join("cohort.csv"), csv.as_bytes())?;
    negvol_train::checkpoint::write_json(&a.out.join("cohort.json"), &reports)?;
    println!(
        "{} of {} CTs done; {} and {}",
        images.len() - failed,
        images.len(),
        a.out.join("cohort.csv").display(),
        a.out.join("cohort.json").display()
    );
    if failed > 0 {
        return Err(format!("{failed} of {} CTs failed", images.len()).into());
    }
    Ok(())
}

/// One CT -> MC, TB -> NV into `out` (masks, meshes, pictures, report; scores with --truth).
fn run_one(
    a: &Args,
    setup: &Setup,
    image_path: &Path,
    out: &Path,
) -> Result<negvol::NvReport, Box<dyn std::error::Error>> {
    let image = negvol_volume::read_image(image_path)?;
    let t0 = std::time::Instant::now();
    let vois = match &setup.locator {
        Some(l) => Some(locate_vois(l, &image, a.voi_margin_mm)?),
        None => None,
    };
    let (mut mc, mc_prob) = segment_in(setup.mc, &image, "mc", a.tta, vois.as_deref())?;
    let (mut tb_raw, tb_prob) = segment_in(setup.tb, &image, "tb", a.tta, vois.as_deref())?;
    let cleaned = clean_predicted_masks(&mut mc, &mut tb_raw, &setup.cleanup)?;
    if let Some(out) = cleaned.condyle_check.filter(|o| !o.removed.is_empty()) {
        let voxels: usize = out.removed.iter().map(|(v, _)| v).sum();
        let largest = out.removed.iter().map(|(v, _)| *v).max().unwrap_or(0);
        println!(
            "MC: dropped {} of {} components resting on TB ({voxels} voxels, largest {largest})",
            out.removed.len(),
            out.components
        );
    }
    for (name, out) in [("MC", cleaned.mc_components), ("TB", cleaned.tb_components)] {
        if let Some(out) = out.filter(|o| o.removed_voxels > 0) {
            println!(
                "{name}: kept {} of {} components, removed {} voxels",
                out.kept, out.components, out.removed_voxels
            );
        }
    }
    // Two separate networks may both claim a voxel: the more confident one keeps it.
    let shared = resolve_overlap_by_score(&mut mc, &mc_prob, &mut tb_raw, &tb_prob)?;
    if shared.overlapping > 0 {
        println!(
            "MC and TB overlapped in {} voxels: {} kept as MC, {} as TB (higher probability)",
            shared.overlapping, shared.to_mc, shared.to_tb
        );
    }
    let t_seg = t0.elapsed().as_secs_f64();
    let tb = if let Some(cfg) = &setup.refine {
        let mut r = refine_tb(&image, &tb_raw, &tb_prob, cfg)?;
        // Edges on the condyle's own surface are not temporal bone.
        let mut removed = 0usize;
        ndarray::Zip::from(r.view_mut())
            .and(mc.view())
            .for_each(|t, m| {
                if *t && *m {
                    *t = false;
                    removed += 1;
                }
            });
        let added = r.data().iter().filter(|v| **v).count() as i64
            - tb_raw.data().iter().filter(|v| **v).count() as i64;
        println!("step C: TB refined with Canny edges ({added:+} voxels; {removed} condyle voxels left out)");
        r
    } else {
        tb_raw.clone()
    };
    let t1 = std::time::Instant::now();
    let result = derive_nv(&mc, &tb, &setup.nv_cfg)?;
    let t_nv = t1.elapsed().as_secs_f64();
    std::fs::create_dir_all(out)?;
    negvol_volume::write_mask(out.join("mc.nii.gz"), &mc)?;
    negvol_volume::write_mask(out.join("tb.nii.gz"), &tb)?;
    let opts = OutputOptions {
        meshes: !a.no_pictures,
        pictures: !a.no_pictures,
        ..Default::default()
    };
    let files = write_outputs(out, &result, &mc, &tb, Some(&image), &opts)?;
    let r = &result.report;
    println!(
        "{}: segmentation {t_seg:.2} s, NV {t_nv:.2} s (device {:?})",
        image_path.display(),
        setup.device
    );
    for s in &r.sides {
        match &s.width {
            Some(w) if s.has_nv => println!(
                "  {:>5}: NV {:8.1} mm3, joint space mean {:.2} mm ({:.2}-{:.2} mm)",
                s.side.name(),
                s.nv_volume_mm3,
                w.mean_mm,
                w.min_mm,
                w.max_mm
            ),
            _ => println!("  {:>5}: no NV", s.side.name()),
        }
        for i in &s.issues {
            println!("         {:?}: {}", i.code, i.message);
        }
    }
    if let Some(ai) = r.asymmetry.index {
        println!("  asymmetry index {ai:.3}");
    }
    if let Some(dir) = &a.truth {
        println!("against the truth in {}:", dir.display());
        let mut scores = vec![
            score("MC", &dir.join("mc.nii.gz"), &mc)?,
            score("TB", &dir.join("tb.nii.gz"), &tb_raw)?,
        ];
        if a.refine {
            scores.push(score("TB refined", &dir.join("tb.nii.gz"), &tb)?);
        }
        scores.push(score("NV", &dir.join("nv.nii.gz"), &result.nv)?);
        let doc = serde_json::json!({"truth": dir, "image": image_path, "scores": scores});
        negvol_volume::atomic::write_bytes_atomic(
            &out.join("scores.json"),
            serde_json::to_string_pretty(&doc)?.as_bytes(),
        )?;
    }
    println!("wrote {} files to {}", files.len() + 2, out.display());
    Ok(result.report)
}

fn main() -> std::process::ExitCode {
    common::exit_with("pipeline", run())
}
