//! Segment a CT with a trained model, or an ensemble of models: label map (and optionally
//! probabilities) as NIfTI in the CT's own geometry.
//!
//! ```text
//! cargo run --release --example segment -- --model-file runs/mc/best.json --image ct.nii.gz --out mc.nii.gz
//! # the K models of `train --folds K --out runs/cv` (each fold's best.json), averaged:
//! cargo run --release --example segment -- --model-file runs/cv --image ct.nii.gz --out mc.nii.gz
//! ```
//! A whole folder, with the model(s) loaded once (as `nnUNetv2_predict -i -o`):
//!
//! ```text
//! cargo run --release --example segment -- --model-file runs/cv --input-folder imagesTs --out-folder preds
//! ```
//! takes every NIfTI file (nnU-Net's `<case>_0000.nii.gz` names give `<case>.nii.gz`), every
//! case folder (`<case>/image.nii.gz`) and every other sub-folder as a DICOM series
//! (`negvol_train::dataset::list_images`), and writes `OUT/<case>.nii.gz` (and probabilities
//! with `--probabilities`). `--skip-existing` resumes an interrupted folder. A case that fails
//! is reported and the others go on; the exit status is 1 if any failed.
//!
//! `--model-file` may be given several times, and each may be a checkpoint, a training output
//! folder (its best.json, else last.json) or a cross-validation folder (`fold_*/`, in fold
//! order): with more than one model the label map is the argmax of the mean of their softmax
//! probabilities (`negvol_train::ensemble::Ensemble`), each model with its own preprocessing
//! and sliding-window settings. One model gives the same output as before ensembles existed.

use std::path::PathBuf;

use clap::Parser;
use negvol_train::ensemble::{Ensemble, InferenceOverrides};
use negvol_train::run::parse_device;
use negvol_train::Precision;

#[derive(Parser, Debug)]
#[command(about = "Segment a CT with a negvol model or an ensemble of models")]
struct Args {
    /// Checkpoint (best.json / best.safetensors), training output folder (its best.json, else
    /// last.json) or cross-validation folder (every fold_*/best.json, else last.json). Repeat
    /// for an ensemble: the mean of the models' probabilities, then the argmax.
    #[arg(long, required = true)]
    model_file: Vec<PathBuf>,
    /// Input image: a NIfTI file or a DICOM CT series folder.
    #[arg(long, required_unless_present = "input_folder", requires = "out")]
    image: Option<PathBuf>,
    /// Output label map (NIfTI, u8: 0 background, t+1 for target t).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Segment every image of this folder instead (see the docs above).
    #[arg(long, conflicts_with_all = ["image", "out"], requires = "out_folder")]
    input_folder: Option<PathBuf>,
    /// Where --input-folder's label maps go, as `<case>.nii.gz`.
    #[arg(long)]
    out_folder: Option<PathBuf>,
    /// With --input-folder: leave cases whose label map exists.
    #[arg(long)]
    skip_existing: bool,
    /// Also write the foreground probability of each target to `<out stem>_prob_<target>.nii.gz`.
    #[arg(long)]
    probabilities: bool,
    /// Flip test-time augmentation.
    #[arg(long)]
    tta: bool,
    /// Forward-pass precision on CUDA: f32, bf16 or f16 (default: each model's own).
    #[arg(long)]
    precision: Option<Precision>,
    /// Sliding-window overlap (default: each model's own).
    #[arg(long)]
    overlap: Option<f64>,
    /// Windows per forward pass (default: each model's own).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Keep at most this many connected components of each class, each at least 10 % of the
    /// class's largest (0: keep all).
    #[arg(long, default_value_t = 0)]
    keep_largest: usize,
    /// Device: auto, cpu, cuda.
    #[arg(long, default_value = "auto")]
    device: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let device = parse_device(&a.device)?;
    let model = Ensemble::load(&a.model_file, device)?;
    if model.members().len() > 1 {
        println!("{}", model.describe_members());
    }
    let overrides = InferenceOverrides {
        flip_tta: a.tta.then_some(true),
        overlap: a.overlap,
        batch_size: a.batch_size,
        precision: a.precision,
    };
    match (&a.image, &a.out, &a.input_folder, &a.out_folder) {
        (Some(image), Some(out), _, _) => segment_one(&a, &model, &overrides, image, out),
        (_, _, Some(input), Some(out_dir)) => {
            let images = negvol_train::dataset::list_images(input)?;
            std::fs::create_dir_all(out_dir)?;
            println!("{} images in {}", images.len(), input.display());
            let mut failed = Vec::new();
            for (id, path) in &images {
                let out = out_dir.join(format!("{id}.nii.gz"));
                if a.skip_existing && out.is_file() {
                    println!("{id}: {} exists, skipped", out.display());
                    continue;
                }
                if let Err(e) = segment_one(&a, &model, &overrides, path, &out) {
                    eprintln!("{id}: FAILED: {e}");
                    failed.push(id.clone());
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} images failed: {failed:?}",
                    failed.len(),
                    images.len()
                )
                .into())
            }
        }
        _ => Err("give --image and --out, or --input-folder and --out-folder".into()),
    }
}

/// Segment one image into `out` (and its probability maps beside it with --probabilities).
fn segment_one(
    a: &Args,
    model: &Ensemble,
    overrides: &InferenceOverrides,
    image_path: &std::path::Path,
    out: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let image = negvol_volume::read_image(image_path)?;
    let t0 = std::time::Instant::now();
    let mut pred = model.predict_overriding(&image, overrides)?;
    let secs = t0.elapsed().as_secs_f64();
    if a.keep_largest > 0 {
        let filter = negvol_train::postprocess::ComponentFilter {
            max_components: a.keep_largest,
            min_fraction: 0.1,
        };
        for (name, r) in model
            .targets()
            .iter()
            .zip(pred.keep_largest_components(&filter)?)
        {
            if r.removed_voxels > 0 {
                println!(
                    "  {name}: kept {} of {} components, removed {} voxels",
                    r.kept, r.components, r.removed_voxels
                );
            }
        }
    }
    negvol_volume::write_nifti(out, &pred.labels)?;
    let g = image.geometry();
    println!(
        "{} {:?} at {:?} mm on {:?}: {secs:.2} s",
        image_path.display(),
        g.shape(),
        g.spacing(),
        model.members()[0].vs.device()
    );
    for (t, name) in model.targets().iter().enumerate() {
        let n = pred
            .labels
            .data()
            .iter()
            .filter(|v| **v as usize == t + 1)
            .count();
        println!(
            "  {name}: {n} voxels, {:.1} mm3",
            n as f64 * g.voxel_volume_mm3()
        );
        if a.probabilities {
            let name_s = out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = name_s.trim_end_matches(".gz").trim_end_matches(".nii");
            let p = out.with_file_name(format!("{stem}_prob_{name}.nii.gz"));
            negvol_volume::write_nifti(&p, &pred.probabilities[t + 1])?;
            println!("  probabilities: {}", p.display());
        }
    }
    println!("labels: {}", out.display());
    Ok(())
}
