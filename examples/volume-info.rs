//! Print what a volume or mesh file holds, as JSON: shape, spacing, affine, orientation,
//! datatype, value range (NIfTI, NRRD, MetaImage; a 3D Slicer `.seg.nrrd` also lists its
//! segments) or triangle count, closedness, volume (STL). Given a directory, describes every
//! `.nii`, `.nii.gz`, `.nrrd`, `.nhdr`, `.mha`, `.mhd` and `.stl` in it (not recursively), or,
//! if it has none, reads it as a DICOM series (shape, spacing, RAS affine, HU range).
//!
//! ```sh
//! cargo run --example volume-info -- ct.nii.gz
//! cargo run --example volume-info -- Segmentation.seg.nrrd
//! cargo run --example volume-info -- annotations/
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Parser;
use negvol_volume::{dicom_info, file_kind, image_info, nifti_info, stl_info, FileKind};

mod common;

#[derive(Parser)]
#[command(about = "Describe NIfTI/NRRD/MetaImage/STL files (or a DICOM series folder) as JSON")]
struct Args {
    /// A .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd or .stl file, or a directory of them.
    path: PathBuf,
}

fn describe(p: &Path) -> serde_json::Value {
    let r = match file_kind(p) {
        Some(FileKind::Stl) => stl_info(p).map(serde_json::to_value),
        Some(FileKind::Directory) => dicom_info(p).map(serde_json::to_value),
        Some(FileKind::Nrrd | FileKind::MetaImage) => image_info(p).map(serde_json::to_value),
        _ => nifti_info(p).map(serde_json::to_value),
    };
    match r {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => serde_json::json!({ "path": p, "error": e.to_string() }),
        Err(e) => serde_json::json!({ "path": p, "error": e.to_string() }),
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let files: Vec<PathBuf> = if args.path.is_dir() {
        let mut f: Vec<PathBuf> = std::fs::read_dir(&args.path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    file_kind(p),
                    Some(FileKind::Nifti | FileKind::Nrrd | FileKind::MetaImage | FileKind::Stl)
                )
            })
            .collect();
        f.sort();
        f
    } else {
        Vec::new()
    };
    // A folder of volume/STL files is listed; any other folder is read as a DICOM series.
    let out = if !files.is_empty() {
        serde_json::Value::Array(files.iter().map(|p| describe(p)).collect())
    } else {
        describe(&args.path)
    };
    // A reader that closes the pipe early (`| head`) is not an error.
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{}", serde_json::to_string_pretty(&out)?) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        r => r?,
    }
    if out.get("error").is_some() {
        std::process::exit(1);
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    common::exit_with("volume-info", run())
}
