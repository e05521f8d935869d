//! The project's main job: derive the negative volume (NV) of the temporomandibular joints
//! from condyle (MC) and temporal-bone (TB) masks, and write the NV mask, width maps, meshes,
//! pictures and a JSON report.
//!
//! ```text
//! negvol --mc MC.nii.gz --tb TB.nii.gz [--image CT.nii.gz] --out DIR [--method rays|between]
//!        [--side-split world|centre|condyles|none]
//! negvol --out DIR            # built-in phantom (both joints), also scored against its truth
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use negvol::{derive_nv, write_outputs, Method, NvConfig, OutputOptions, SideSplit};
use negvol_metrics::pair::{evaluate_pair, EvalOptions};
use negvol_phantom::{generate, PhantomConfig};
use negvol_volume::{read_image, read_mask, write_mask, write_nifti, Volume};

#[derive(Clone, Copy, ValueEnum)]
enum MethodArg {
    Rays,
    Between,
}

/// How to split left from right (`negvol::SideSplit`).
#[derive(Clone, Copy, ValueEnum)]
enum SplitArg {
    /// The plane world x = 0 (another plane: `side_split.world_plane` in --config).
    World,
    /// The plane x = const through the centre of the volume.
    Centre,
    /// Half-way between the two condyles (MC's two largest components), whatever the affine's
    /// origin.
    Condyles,
    /// No split: one joint (side `whole`).
    None,
}

/// Negative-volume segmentation of the TMJ from MC and TB masks.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Mandibular condyle mask (NIfTI, NRRD or MetaImage; nonzero = inside). Without
    /// --mc/--tb a built-in phantom is used.
    #[arg(long, requires = "tb")]
    mc: Option<PathBuf>,
    /// Temporal bone mask (NIfTI, NRRD or MetaImage), same grid as --mc.
    #[arg(long, requires = "mc")]
    tb: Option<PathBuf>,
    /// Image (CT/CBCT: NIfTI, NRRD, MetaImage or a DICOM series folder) drawn under the
    /// overlays of the PNG pictures.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Derivation method (overrides the config file's).
    #[arg(long, value_enum)]
    method: Option<MethodArg>,
    /// Left/right split (overrides the config file's). Use `condyles` when the affine does not
    /// put the mid-sagittal plane at world x = 0.
    #[arg(long, value_enum)]
    side_split: Option<SplitArg>,
    /// NvConfig as JSON (missing fields take their defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Phantom seed (built-in phantom only).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Skip STL meshes and PNG pictures.
    #[arg(long)]
    no_pictures: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("negvol: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut cfg = match &args.config {
        Some(p) => serde_json::from_str::<NvConfig>(
            &std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )
        .map_err(|e| format!("{}: {e}", p.display()))?,
        None => NvConfig::default(),
    };
    if let Some(m) = args.method {
        cfg.method = match m {
            MethodArg::Rays => Method::Rays,
            MethodArg::Between => Method::Between,
        };
    }
    if let Some(s) = args.side_split {
        cfg.side_split = match s {
            SplitArg::World => SideSplit::default(),
            SplitArg::Centre => SideSplit::VolumeCentre,
            SplitArg::Condyles => SideSplit::CondyleMidplane,
            SplitArg::None => SideSplit::None,
        };
    }
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let (mc, tb, image, phantom) = match (&args.mc, &args.tb) {
        (Some(mc), Some(tb)) => {
            let image = match &args.image {
                Some(p) => Some(read_image(p)?),
                None => None,
            };
            (read_mask(mc)?, read_mask(tb)?, image, None)
        }
        _ => {
            let pc = PhantomConfig {
                both_sides: true,
                ..Default::default()
            };
            println!(
                "no --mc/--tb: built-in phantom (both joints, seed {})",
                args.seed
            );
            let case = generate(&pc, args.seed)?;
            write_nifti(args.out.join("phantom_image.nii.gz"), &case.image)?;
            write_mask(args.out.join("phantom_mc.nii.gz"), &case.mc)?;
            write_mask(args.out.join("phantom_tb.nii.gz"), &case.tb)?;
            write_mask(args.out.join("phantom_nv_truth.nii.gz"), &case.nv)?;
            (
                case.mc,
                case.tb,
                Some(case.image),
                Some((case.nv, case.truth)),
            )
        }
    };
    let t0 = std::time::Instant::now();
    let result = derive_nv(&mc, &tb, &cfg)?;
    let elapsed = t0.elapsed();
    let opts = OutputOptions {
        meshes: !args.no_pictures,
        pictures: !args.no_pictures,
        ..Default::default()
    };
    let files = write_outputs(&args.out, &result, &mc, &tb, image.as_ref(), &opts)?;
    let r = &result.report;
    println!(
        "grid {:?} at {:?} mm ({}), method {:?}: NV derived in {:.2} s",
        r.shape,
        r.spacing,
        r.orientation,
        cfg.method,
        elapsed.as_secs_f64()
    );
    if let Some(p) = &r.split_plane {
        println!(
            "  split plane through ({:.1}, {:.1}, {:.1}) mm, normal to the right ({:.3}, {:.3}, {:.3})",
            p.point[0], p.point[1], p.point[2], p.normal[0], p.normal[1], p.normal[2]
        );
    }
    for s in &r.sides {
        match &s.width {
            Some(w) if s.has_nv => println!(
                "  {:>5}: NV {:8.1} mm3 ({} voxels), joint space {:.2} mm mean, {:.2}-{:.2} mm ({} rays)",
                s.side.name(),
                s.nv_volume_mm3,
                s.nv_voxels,
                w.mean_mm,
                w.min_mm,
                w.max_mm,
                w.rays
            ),
            _ => println!("  {:>5}: no NV", s.side.name()),
        }
        if s.removed_components > 0 {
            println!(
                "         clean-up removed {} detached component(s), {:.2} mm3",
                s.removed_components, s.removed_volume_mm3
            );
        }
        for i in &s.issues {
            println!("         {:?}: {}", i.code, i.message);
        }
    }
    match r.asymmetry.index {
        Some(a) => println!("  asymmetry index |L-R|/(L+R) = {a:.3}"),
        None => println!(
            "  asymmetry index undefined: {}",
            r.asymmetry.note.as_deref().unwrap_or("")
        ),
    }
    if let Some((truth_nv, truth)) = &phantom {
        score(truth_nv, &result.nv, truth)?;
    }
    println!("wrote {} files to {}", files.len(), args.out.display());
    if result.require_nv().is_err() {
        eprintln!("negvol: no negative volume found (see report.json for the reasons)");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// Dice, HD95 and volume error of the derived NV against the phantom's analytic truth.
fn score(
    truth_nv: &Volume<bool>,
    nv: &Volume<bool>,
    truth: &negvol_phantom::PhantomTruth,
) -> Result<(), Box<dyn std::error::Error>> {
    let opts = EvalOptions {
        percentile: 95.0,
        ..Default::default()
    };
    let m = evaluate_pair(truth_nv.view(), nv.view(), nv.geometry().spacing(), &opts)?;
    let exact: f64 = truth.sides.iter().map(|s| s.nv_volume_mm3).sum();
    let ours = m.prediction_volume_mm3;
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    println!("against the phantom's analytic truth:");
    println!(
        "  Dice {}, HD95 {} mm, volume {ours:.1} mm3 vs exact {exact:.1} mm3 ({:+.1} %)",
        fmt(m.overlap.dice.get()),
        fmt(m.voxel_surface.hd_percentile.get()),
        100.0 * (ours - exact) / exact
    );
    if let Some(a) = truth.asymmetry_index {
        println!("  true asymmetry index {a:.3}");
    }
    Ok(())
}
