//! Check a dataset, or export it to nnU-Net v2's raw format.
//!
//! Reads any dataset `train`, `eval` and `plan` read (a folder of case folders, a negvol
//! manifest, an nnU-Net v2 raw dataset, a Medical Segmentation Decathlon dataset), loads
//! every case and prints its grid and structure volumes, listing **every** bad case rather
//! than stopping at the first (exit status 1 if there is one), like nnU-Net's dataset
//! integrity check.
//!
//! ```text
//! cargo run --release --example dataset -- --input-data phantoms
//! cargo run --release --example dataset -- --input-data nnUNet_raw/Dataset501_TMJ --targets mc,tb
//! # the same cases and patient-grouped folds for nnU-Net:
//! cargo run --release --example dataset -- --input-data phantoms --targets mc,tb \
//!     --export-nnunet nnUNet_raw/Dataset501_TMJ --folds 5
//! ```

use std::path::PathBuf;

use clap::Parser;
use negvol_train::dataset::export::{export_nnunet, NnUnetExport};
use negvol_train::DatasetSpec;

#[derive(Parser, Debug)]
#[command(about = "Check a segmentation dataset, or export it as an nnU-Net v2 raw dataset")]
struct Args {
    /// Dataset: a folder of case folders, a manifest, an nnU-Net v2 or Decathlon dataset.
    #[arg(long)]
    input_data: PathBuf,
    /// Structures to load, in class order (default: those every case has).
    #[arg(long, value_delimiter = ',')]
    targets: Option<Vec<String>>,
    /// Write the per-case check as JSON here (atomically).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Export to this folder in nnU-Net v2's raw format (dataset.json, imagesTr, labelsTr,
    /// splits_final.json) instead of checking.
    #[arg(long)]
    export_nnunet: Option<PathBuf>,
    /// Folds of splits_final.json (grouped by patient; 0: no splits file).
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Seed of the fold assignment.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Name of the input channel in the export (CT selects nnU-Net's CT normalisation).
    #[arg(long, default_value = "CT")]
    channel: String,
    /// Write the export into a folder that already has a dataset.json.
    #[arg(long)]
    overwrite: bool,
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let a = Args::parse();
    let spec = DatasetSpec::open(&a.input_data)?;
    let targets = a.targets.unwrap_or_else(|| spec.common_targets());
    let patients: std::collections::BTreeSet<&str> =
        spec.cases.iter().map(|c| c.patient_id()).collect();
    println!(
        "{}: {} cases, {} patients; targets {:?} (structures every case has: {:?})",
        a.input_data.display(),
        spec.cases.len(),
        patients.len(),
        targets,
        spec.common_targets()
    );
    if let Some(out) = &a.export_nnunet {
        let mut options = NnUnetExport::new(targets);
        options.channel_name = a.channel;
        options.folds = (a.folds > 0).then_some(a.folds);
        options.seed = a.seed;
        options.overwrite = a.overwrite;
        options.name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "negvol".into());
        let r = export_nnunet(&spec, out, &options)?;
        println!(
            "wrote {} cases to {} (labels {:?}, {} folds in splits_final.json)",
            r.cases,
            r.out.display(),
            r.labels,
            r.folds
        );
        return Ok(true);
    }
    let checks = spec.check(&targets);
    let mut bad = 0;
    for c in &checks {
        match &c.result {
            Ok(s) => {
                let mut structures: Vec<String> = s
                    .structures
                    .iter()
                    .map(|(n, v, mm3)| format!("{n} {v} vox {mm3:.0} mm3"))
                    .collect();
                if s.unannotated_voxels > 0 {
                    structures.push(format!("unannotated {} vox", s.unannotated_voxels));
                }
                println!(
                    "  {:<14} {:?} {} {:.3?} mm  HU {:.0}..{:.0}  {}",
                    c.id,
                    s.shape,
                    s.orientation,
                    s.spacing,
                    s.intensity_range[0],
                    s.intensity_range[1],
                    structures.join(", ")
                );
            }
            Err(e) => {
                bad += 1;
                println!("  {:<14} ERROR {e}", c.id);
            }
        }
    }
    let warnings = negvol_train::dataset::review(&checks);
    for w in &warnings {
        println!("  warning: {w}");
    }
    if let Some(p) = &a.json {
        let text = serde_json::to_vec_pretty(&checks)?;
        negvol_volume::atomic::write_bytes_atomic(p, &text)?;
    }
    println!(
        "{} of {} cases load; {bad} with errors",
        checks.len() - bad,
        checks.len()
    );
    Ok(bad == 0)
}
