//! Segment a CT with a trained model, or an ensemble of models: label map (and optionally
//! probabilities) as NIfTI in the CT's own geometry.
//!
//! ```text
//! cargo run --release --example segment -- --model-file runs/mc/best.json --image ct.nii.gz --out mc.nii.gz
//! # the K models of `train --folds K --out runs/cv` (each fold's best.json), averaged:
//! cargo run --release --example segment -- --model-file runs/cv --image ct.nii.gz --out mc.nii.gz
//! ```
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
    #[arg(long)]
    image: PathBuf,
    /// Output label map (NIfTI, u8: 0 background, t+1 for target t).
    #[arg(long)]
    out: PathBuf,
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
        println!("ensemble of {} models:", model.members().len());
        for m in model.members() {
            println!("  {} ({})", m.path.display(), m.model.net.arch());
        }
    }
    let overrides = InferenceOverrides {
        flip_tta: a.tta.then_some(true),
        overlap: a.overlap,
        batch_size: a.batch_size,
        precision: a.precision,
    };
    let image = negvol_volume::read_image(&a.image)?;
    let t0 = std::time::Instant::now();
    let mut pred = model.predict_overriding(&image, &overrides)?;
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
    negvol_volume::write_nifti(&a.out, &pred.labels)?;
    let g = image.geometry();
    println!(
        "{} {:?} at {:?} mm on {device:?}: {secs:.2} s",
        a.image.display(),
        g.shape(),
        g.spacing()
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
            let name_s = a
                .out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = name_s.trim_end_matches(".gz").trim_end_matches(".nii");
            let p = a.out.with_file_name(format!("{stem}_prob_{name}.nii.gz"));
            negvol_volume::write_nifti(&p, &pred.probabilities[t + 1])?;
            println!("  probabilities: {}", p.display());
        }
    }
    println!("labels: {}", a.out.display());
    Ok(())
}
