//! Plan a training run from a dataset, as nnU-Net does: fingerprint the dataset (spacing,
//! shapes, class volumes, foreground intensities), then derive the target spacing, patch,
//! batch size, network and normalisation for a GPU memory budget
//! (`negvol_train::plan`).
//!
//! ```text
//! cargo run --release --example plan -- --input-data phantoms --targets mc,tb --out plan.json
//! cargo run --release --example plan -- --input-data phantoms --targets mc,tb \
//!     --gpu-memory-gib 24 --model unet3d --out plan.json
//! cargo run --release --example train -- --input-data phantoms --plan plan.json --out runs/p
//! ```

use std::path::PathBuf;

use clap::Parser;
use negvol_train::plan::{fingerprint, plan, Architecture, PlanOptions};
use negvol_train::{DatasetSpec, Precision};

mod common;

#[derive(Parser, Debug)]
#[command(
    about = "Fingerprint a dataset and plan a training run for a GPU memory budget (nnU-Net's rules)"
)]
struct Args {
    /// Dataset: a folder of case folders, a manifest, or an nnU-Net v2 / Decathlon raw dataset
    /// (`dataset --input-data D` checks one).
    #[arg(long)]
    input_data: PathBuf,
    /// Structures to segment (mask names), in class order.
    #[arg(long, value_delimiter = ',', default_value = "mc")]
    targets: Vec<String>,
    /// GPU memory budget in GiB (nnU-Net's reference: 8).
    #[arg(long, default_value_t = 8.0)]
    gpu_memory_gib: f64,
    /// Network: unet (nnU-Net-style, default), unet3d, unet3d-att or vnet.
    #[arg(long, default_value = "unet")]
    model: String,
    /// Training precision the memory is estimated for: f32 (negvol's default), bf16 or f16
    /// (mixed precision, as nnU-Net trains; about half the activation memory).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Target spacing in mm instead of the planned one: S or SI,SJ,SK.
    #[arg(long, value_delimiter = ',')]
    spacing: Option<Vec<f64>>,
    /// No deep supervision for `--model unet`.
    #[arg(long)]
    no_deep_supervision: bool,
    /// Where to write the plan (JSON, atomically).
    #[arg(long, default_value = "plan.json")]
    out: PathBuf,
    /// Also write the fingerprint here (JSON, atomically).
    #[arg(long)]
    fingerprint_out: Option<PathBuf>,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let precision = a.precision;
    let target_spacing = match a.spacing.as_deref() {
        None => None,
        Some([s]) => Some([*s; 3]),
        Some([x, y, z]) => Some([*x, *y, *z]),
        Some(other) => return Err(format!("--spacing needs 1 or 3 values, got {other:?}").into()),
    };
    let options = PlanOptions {
        gpu_memory_gib: a.gpu_memory_gib,
        architecture: a.model.parse::<Architecture>()?,
        precision,
        deep_supervision: !a.no_deep_supervision,
        target_spacing,
        ..Default::default()
    };
    let spec = DatasetSpec::open(&a.input_data)?;
    eprintln!(
        "fingerprinting {} cases of {} ...",
        spec.cases.len(),
        a.input_data.display()
    );
    let fp = fingerprint(&spec, &a.targets)?;
    print!("{fp}");
    let p = plan(&fp, &options)?;
    print!("{p}");
    p.save(&a.out)?;
    println!("wrote {}", a.out.display());
    if let Some(f) = &a.fingerprint_out {
        fp.save(f)?;
        println!("wrote {}", f.display());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    common::exit_with("plan", run())
}
