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
//! takes every image file, NIfTI, NRRD or MetaImage (nnU-Net's `<case>_0000.nii.gz` names give
//! `<case>.nii.gz`), every case folder (`<case>/image.nii.gz`) and every other sub-folder as a
//! DICOM series (`negvol_train::dataset::list_images`), and writes `OUT/<case>.nii.gz` (another
//! format with `--out-ending .nrrd` or `.mha`; `--out` chooses by its name) (and probabilities
//! with `--probabilities`). `--skip-existing` resumes an interrupted folder. A case that fails
//! is reported and the others go on; the exit status is 1 if any failed.
//!
//! `--model-file` may be given several times, and each may be a checkpoint, a training output
//! folder (its best.json, else last.json) or a cross-validation folder (`fold_*/`, in fold
//! order): with more than one model the label map is the argmax of the mean of their softmax
//! probabilities (`negvol_train::ensemble::Ensemble`), each model with its own preprocessing
//! and sliding-window settings. One model gives the same output as before ensembles existed.
//!
//! Post-processing: when a model folder holds the `postprocessing.json` that
//! `eval --cross-validation RUN --determine-postprocessing` writes (per target: keep the
//! largest component(s) or not, whichever gave the higher mean Dice on the cross-validation;
//! `negvol_train::postprocess`), it is applied, as nnU-Net applies its determined
//! post-processing. `--postprocessing none` turns it off, `--postprocessing FILE` uses another
//! plan, and `--keep-largest N` applies one filter to every class instead.

use std::path::PathBuf;

use clap::Parser;
use negvol_train::ensemble::{Ensemble, InferenceOverrides};
use negvol_train::postprocess::{ComponentFilter, PostprocessingChoice, PostprocessingPlan};
use negvol_train::run::parse_device;
use negvol_train::Precision;

mod common;

#[derive(Parser, Debug)]
#[command(about = "Segment a CT with a negvol model or an ensemble of models")]
struct Args {
    /// Checkpoint (best.json / best.safetensors), training output folder (its best.json, else
    /// last.json) or cross-validation folder (every fold_*/best.json, else last.json). Repeat
    /// for an ensemble: the mean of the models' probabilities, then the argmax.
    #[arg(long, required = true)]
    model_file: Vec<PathBuf>,
    /// Input image: a NIfTI, NRRD or MetaImage file, or a DICOM CT series folder.
    #[arg(long, required_unless_present = "input_folder", requires = "out")]
    image: Option<PathBuf>,
    /// Output label map (u8: 0 background, t+1 for target t), in the format its name gives
    /// (`.nii.gz`, `.nii`, `.nrrd`, `.mha`, ...).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Segment every image of this folder instead (see the docs above).
    #[arg(long, conflicts_with_all = ["image", "out"], requires = "out_folder")]
    input_folder: Option<PathBuf>,
    /// Where --input-folder's label maps go, as `<case><out-ending>`.
    #[arg(long)]
    out_folder: Option<PathBuf>,
    /// With --input-folder: the output files' ending, which picks the format: `.nii.gz`,
    /// `.nii`, `.nrrd` or `.mha`.
    #[arg(long, default_value = ".nii.gz")]
    out_ending: String,
    /// With --input-folder: leave cases whose label map exists.
    #[arg(long)]
    skip_existing: bool,
    /// Also write the foreground probability of each target to
    /// `<out stem>_prob_<target><out's ending>` (`.nrrd` for a `.seg.nrrd` output).
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
    /// class's largest (0: keep all), instead of the post-processing plan.
    #[arg(long, conflicts_with = "postprocessing")]
    keep_largest: Option<usize>,
    /// Post-processing plan: `auto` (the model folder's postprocessing.json, if any), `none`,
    /// or a plan file.
    #[arg(long, default_value = "auto")]
    postprocessing: PostprocessingChoice,
    /// Device: auto, cpu, cuda.
    #[arg(long, default_value = "auto")]
    device: String,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
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
    let post = match a.keep_largest {
        Some(0) => Post::None,
        Some(n) => Post::Filter(ComponentFilter {
            max_components: n,
            min_fraction: 0.1,
        }),
        None => match a.postprocessing.resolve(&a.model_file, model.targets())? {
            Some((path, plan)) => {
                println!(
                    "post-processing from {}: {}",
                    path.display(),
                    plan.describe()
                );
                Post::Plan(plan)
            }
            None => Post::None,
        },
    };
    let run = Run {
        model: &model,
        overrides: &overrides,
        post: &post,
        probabilities: a.probabilities,
    };
    // An output name negvol cannot write fails now, not after the inference.
    match (&a.out, &a.input_folder) {
        (Some(out), _) => negvol_volume::ImageFormat::of(out).map(|_| ())?,
        (None, Some(_)) => {
            negvol_volume::ImageFormat::of(format!("case{}", a.out_ending)).map(|_| ())?
        }
        (None, None) => {}
    }
    match (&a.image, &a.out, &a.input_folder, &a.out_folder) {
        (Some(image), Some(out), _, _) => run.segment_one(image, out),
        (_, _, Some(input), Some(out_dir)) => {
            let images = negvol_train::dataset::list_images(input)?;
            std::fs::create_dir_all(out_dir)?;
            println!("{} images in {}", images.len(), input.display());
            let mut failed = Vec::new();
            for (id, path) in &images {
                let out = out_dir.join(format!("{id}{}", a.out_ending));
                if a.skip_existing && out.is_file() {
                    println!("{id}: {} exists, skipped", out.display());
                    continue;
                }
                if let Err(e) = run.segment_one(path, &out) {
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

/// What is done to each prediction's label map before it is written.
enum Post {
    None,
    /// One filter for every class (--keep-largest).
    Filter(ComponentFilter),
    /// The model's determined plan.
    Plan(PostprocessingPlan),
}

/// The loaded model(s) and the settings every image shares.
struct Run<'a> {
    model: &'a Ensemble,
    overrides: &'a InferenceOverrides,
    post: &'a Post,
    probabilities: bool,
}

impl Run<'_> {
    /// Segment one image into `out` (and its probability maps beside it with --probabilities).
    fn segment_one(
        &self,
        image_path: &std::path::Path,
        out: &std::path::Path,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let model = self.model;
        let image = negvol_volume::read_image(image_path)?;
        let t0 = std::time::Instant::now();
        let mut pred = model.predict_overriding(&image, self.overrides)?;
        let secs = t0.elapsed().as_secs_f64();
        let done: Vec<Option<negvol_train::postprocess::FilterOutcome>> = match self.post {
            Post::None => Vec::new(),
            Post::Filter(f) => pred
                .keep_largest_components(f)?
                .into_iter()
                .map(Some)
                .collect(),
            Post::Plan(plan) => plan.apply(&mut pred)?,
        };
        for (name, r) in model.targets().iter().zip(done) {
            if let Some(r) = r.filter(|r| r.removed_voxels > 0) {
                println!(
                    "  {name}: kept {} of {} components, removed {} voxels",
                    r.kept, r.components, r.removed_voxels
                );
            }
        }
        negvol_volume::write_volume(out, &pred.labels)?;
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
            if self.probabilities {
                let name_s = out
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let (stem, ending) = split_ending(&name_s);
                let p = out.with_file_name(format!("{stem}_prob_{name}{ending}"));
                negvol_volume::write_volume(&p, &pred.probabilities[t + 1])?;
                println!("  probabilities: {}", p.display());
            }
        }
        println!("labels: {}", out.display());
        Ok(())
    }
}

/// A file name split into its stem and the ending that names its format (`.nii.gz`, `.nrrd`,
/// ...); a Slicer `.seg.nrrd` gives `.nrrd` (probabilities are no segmentation), a name with
/// no volume ending `.nii.gz`.
fn split_ending(name: &str) -> (&str, &'static str) {
    match negvol_volume::split_volume_name(name) {
        Some((stem, ".seg.nrrd")) => (stem, ".nrrd"),
        Some(split) => split,
        None => (name, ".nii.gz"),
    }
}

fn main() -> std::process::ExitCode {
    common::exit_with("segment", run())
}
