//! Convert a NIfTI file: pick a frame, reorient, resample, change the datatype; or voxelize
//! an STL mesh onto a reference grid. Prints a JSON report.
//!
//! ```sh
//! cargo run --example volume-convert -- ct.nii.gz ct_ras.nii.gz --reorient RAS --spacing 0.5,0.5,0.5
//! cargo run --example volume-convert -- labels.nii.gz l.nii.gz --spacing 1,1,1 --interp nearest --dtype u8
//! cargo run --example volume-convert -- condyle.stl condyle_mask.nii.gz --like ct.nii.gz
//! ```

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use negvol_volume::{convert, ConvertOptions, Interpolation, NiftiDtype};

#[derive(Clone, Copy, ValueEnum)]
enum Interp {
    /// Trilinear (images).
    Linear,
    /// Nearest neighbour (label maps).
    Nearest,
}

#[derive(Parser)]
#[command(about = "Convert/reorient/resample NIfTI files, or voxelize STL meshes")]
struct Args {
    /// Input .nii / .nii.gz (or .stl with --like).
    input: PathBuf,
    /// Output .nii / .nii.gz (gzip by extension).
    output: PathBuf,
    /// Output datatype: u8 i8 i16 u16 i32 u32 i64 u64 f32 f64.
    #[arg(long)]
    dtype: Option<NiftiDtype>,
    /// Reorient to this code, e.g. RAS or LPS (exact axis permutation/flip).
    #[arg(long)]
    reorient: Option<String>,
    /// Resample to this spacing in mm, e.g. 0.5,0.5,0.5 (same field of view).
    #[arg(long, value_delimiter = ',', num_args = 3)]
    spacing: Option<Vec<f64>>,
    /// Interpolation for --spacing.
    #[arg(long, value_enum, default_value = "linear")]
    interp: Interp,
    /// Frame of a 4D input.
    #[arg(long)]
    frame: Option<u64>,
    /// Reference NIfTI whose grid an STL input is voxelized onto.
    #[arg(long)]
    like: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let options = ConvertOptions {
        dtype: a.dtype,
        reorient: a.reorient,
        spacing: a.spacing.map(|s| [s[0], s[1], s[2]]),
        interpolation: Some(match a.interp {
            Interp::Linear => Interpolation::Linear,
            Interp::Nearest => Interpolation::Nearest,
        }),
        frame: a.frame,
        like: a.like,
    };
    let report = convert(&a.input, &a.output, &options)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
