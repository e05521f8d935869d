//! Convert between volume formats (NIfTI `.nii`/`.nii.gz`, NRRD `.nrrd`/`.nhdr`, MetaImage
//! `.mha`/`.mhd`, chosen by the names; a DICOM series folder as input): pick a frame (a layer
//! of a 4D `.seg.nrrd`), reorient, resample, change the datatype; or voxelize an STL mesh onto
//! a reference grid. Prints a JSON report.
//!
//! ```sh
//! cargo run --example volume-convert -- ct.nii.gz ct_ras.nii.gz --reorient RAS --spacing 0.5,0.5,0.5
//! cargo run --example volume-convert -- labels.nii.gz l.nii.gz --spacing 1,1,1 --interp nearest --dtype u8
//! cargo run --example volume-convert -- dicom/CT/ ct.nrrd --dtype i16
//! cargo run --example volume-convert -- P1.mha P1.nii.gz
//! cargo run --example volume-convert -- Segmentation.seg.nrrd layer1.nii.gz --frame 1
//! cargo run --example volume-convert -- condyle.stl condyle_mask.nii.gz --like ct.mha
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
#[command(
    about = "Convert/reorient/resample NIfTI, NRRD and MetaImage files, or voxelize STL meshes"
)]
struct Args {
    /// Input .nii / .nii.gz / .nrrd / .nhdr / .mha / .mhd, a DICOM series folder, or .stl
    /// with --like.
    input: PathBuf,
    /// Output .nii / .nii.gz (gzip by extension), .nrrd / .nhdr (gzip), .mha / .mhd (zlib).
    output: PathBuf,
    /// Output datatype: u8 i8 i16 u16 i32 u32 i64 u64 f32 f64.
    #[arg(long)]
    dtype: Option<NiftiDtype>,
    /// Reorient to this code, e.g. RAS or LPS (exact axis permutation/flip).
    #[arg(long)]
    reorient: Option<String>,
    /// Resample to this spacing in mm, e.g. 0.5,0.5,0.5 (same field of view).
    #[arg(long, value_parser = parse_spacing)]
    spacing: Option<[f64; 3]>,
    /// Interpolation for --spacing.
    #[arg(long, value_enum, default_value = "linear")]
    interp: Interp,
    /// Frame of a 4D input (a layer of a 4D NRRD such as a Slicer .seg.nrrd).
    #[arg(long)]
    frame: Option<u64>,
    /// Reference volume (any format above) whose grid an STL input is voxelized onto.
    #[arg(long)]
    like: Option<PathBuf>,
}

fn parse_spacing(s: &str) -> Result<[f64; 3], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>().map_err(|e| format!("{x:?}: {e}")))
        .collect::<Result<_, _>>()?;
    <[f64; 3]>::try_from(v)
        .map_err(|v| format!("expected 3 comma-separated values, got {}", v.len()))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let options = ConvertOptions {
        dtype: a.dtype,
        reorient: a.reorient,
        spacing: a.spacing,
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
