//! Generate synthetic TMJ phantom cases (CT-like image, MC/TB/NV masks, analytic truth).
//!
//! ```text
//! cargo run --release --no-default-features --example phantom -- --out data/phantoms --cases 20 --seed 1
//! cargo run --release --no-default-features --example phantom -- --out both --both-sides --asymmetry 0.2
//! cargo run --release --no-default-features --example phantom -- --print-config > phantom.json
//! cargo run --release --no-default-features --example phantom -- --config phantom.json --out d
//! ```
//!
//! Without `--out` the cases are generated and summarised but nothing is written.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use negvol_phantom::{case_seed, generate, write_dataset, PhantomConfig, PhantomError, Side};

mod common;

#[derive(Parser, Debug)]
#[command(about = "Synthetic TMJ phantoms with analytic negative-volume ground truth")]
struct Args {
    /// Output dataset folder (case_XXX/{image,mc,tb,nv}.nii.gz, truth.json, dataset.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Number of cases.
    #[arg(long, default_value_t = 1)]
    cases: usize,
    /// Base seed (case i uses case_seed(seed, i), recorded in dataset.json).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Full config as JSON (missing fields take their defaults); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Grid shape: N or NI,NJ,NK (default: fit the field of view).
    #[arg(long, value_delimiter = ',')]
    size: Option<Vec<usize>>,
    /// Voxel size in mm: S or SI,SJ,SK (default 0.4).
    #[arg(long, value_delimiter = ',')]
    spacing: Option<Vec<f64>>,
    /// Field of view around one joint in mm (used when --size is not given): F or FX,FY,FZ.
    #[arg(long, value_delimiter = ',')]
    fov: Option<Vec<f64>>,
    /// Partial-volume sub-samples per axis (1 = none).
    #[arg(long)]
    supersample: Option<usize>,
    /// Gaussian blur sigma (mm).
    #[arg(long)]
    blur: Option<f64>,
    /// Grid orientation code, e.g. RAS, LPS, ASL.
    #[arg(long)]
    orientation: Option<String>,
    /// Extra oblique rotation of the grid in degrees about x,y,z.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    oblique: Option<Vec<f64>>,
    /// Both joints in one volume.
    #[arg(long)]
    both_sides: bool,
    /// Which joint when not --both-sides: left or right.
    #[arg(long)]
    side: Option<String>,
    /// Left/right joint-space asymmetry in (-1, 1) (positive = right wider).
    #[arg(long, allow_hyphen_values = true)]
    asymmetry: Option<f64>,
    /// Distance between the two head centres (mm).
    #[arg(long)]
    intercondylar: Option<f64>,
    /// Joint-space width range MIN,MAX in mm.
    #[arg(long, value_delimiter = ',')]
    width: Option<Vec<f64>>,
    /// Turn on CBCT-like artefacts (streaks, drift, cupping).
    #[arg(long)]
    cbct: bool,
    /// Image noise sigma (HU).
    #[arg(long)]
    noise: Option<f64>,
    /// Print the effective config as JSON and exit.
    #[arg(long)]
    print_config: bool,
}

fn three<T: Copy>(name: &str, v: &[T]) -> Result<[T; 3], String> {
    match v {
        [a] => Ok([*a; 3]),
        [a, b, c] => Ok([*a, *b, *c]),
        _ => Err(format!(
            "--{name} takes 1 or 3 comma-separated values, got {}",
            v.len()
        )),
    }
}

fn build_config(a: &Args) -> Result<PhantomConfig, String> {
    let mut cfg = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => PhantomConfig::default(),
    };
    if let Some(s) = &a.size {
        cfg.shape = Some(three("size", s)?);
    }
    if let Some(s) = &a.spacing {
        cfg.spacing = three("spacing", s)?;
    }
    if let Some(f) = &a.fov {
        cfg.fov_mm = three("fov", f)?;
    }
    if let Some(n) = a.supersample {
        cfg.supersample = n;
    }
    if let Some(b) = a.blur {
        cfg.image.blur_sigma_mm = b;
    }
    if let Some(o) = &a.orientation {
        cfg.orientation.axes = o.clone();
    }
    if let Some(o) = &a.oblique {
        cfg.orientation.oblique_deg = three("oblique", o)?;
    }
    if a.both_sides {
        cfg.both_sides = true;
    }
    if let Some(s) = &a.side {
        cfg.side = match s.to_ascii_lowercase().as_str() {
            "left" | "l" => Side::Left,
            "right" | "r" => Side::Right,
            _ => return Err(format!("--side {s:?}: expected left or right")),
        };
    }
    if let Some(x) = a.asymmetry {
        cfg.asymmetry = x;
    }
    if let Some(x) = a.intercondylar {
        cfg.intercondylar_mm = x;
    }
    if let Some(w) = &a.width {
        match w.as_slice() {
            [lo, hi] => cfg.width_range_mm = [*lo, *hi],
            _ => return Err("--width takes MIN,MAX".into()),
        }
    }
    if a.cbct {
        cfg.image.cbct.enabled = true;
    }
    if let Some(n) = a.noise {
        cfg.image.noise_sigma_hu = n;
    }
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn run(a: &Args) -> Result<(), String> {
    let cfg = build_config(a)?;
    if a.print_config {
        println!(
            "{}",
            serde_json::to_string_pretty(&cfg).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let g = cfg.geometry().map_err(|e| e.to_string())?;
    eprintln!(
        "grid {:?} spacing {:?} mm orientation {} ({} voxels)",
        g.shape(),
        g.spacing(),
        g.orientation_code(),
        g.len()
    );
    let t0 = std::time::Instant::now();
    let truths: Vec<(String, u64, negvol_phantom::PhantomTruth)> = match &a.out {
        Some(dir) => {
            let m = write_dataset(dir, &cfg, a.cases, a.seed)
                .map_err(|e: PhantomError| e.to_string())?;
            let mut v = Vec::new();
            for e in &m.cases {
                let p = dir.join(&e.truth);
                let text =
                    std::fs::read_to_string(&p).map_err(|x| format!("{}: {x}", p.display()))?;
                let t = serde_json::from_str(&text).map_err(|x| format!("{}: {x}", p.display()))?;
                v.push((e.id.clone(), e.seed, t));
            }
            v
        }
        None => (0..a.cases)
            .map(|i| {
                let s = case_seed(a.seed, i);
                generate(&cfg, s)
                    .map(|c| (format!("case_{i:03}"), s, c.truth))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?,
    };
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "{:<10} {:>20} {:>5} {:>11} {:>11} {:>7} {:>17} {:>17}",
        "case",
        "seed",
        "side",
        "NV mm3",
        "mask mm3",
        "err %",
        "gap min/mean/max",
        "fossa w min/max"
    );
    for (id, seed, t) in &truths {
        for s in &t.sides {
            let err = 100.0 * (s.nv_mask_volume_mm3 - s.nv_volume_mm3) / s.nv_volume_mm3;
            let gap = s
                .gap_mm
                .map(|g| format!("{:.2}/{:.2}/{:.2}", g.min, g.mean, g.max))
                .unwrap_or_else(|| "-".into());
            let fw = s
                .fossa_width_mm
                .map(|g| format!("{:.2}/{:.2}", g.min, g.max))
                .unwrap_or_else(|| "-".into());
            println!(
                "{id:<10} {seed:>20} {:>5} {:>11.1} {:>11.1} {err:>7.2} {gap:>17} {fw:>17}",
                s.side.name(),
                s.nv_volume_mm3,
                s.nv_mask_volume_mm3
            );
        }
        if let Some(ai) = t.asymmetry_index {
            println!("{id:<10} asymmetry index {ai:.4}");
        }
    }
    eprintln!(
        "{} case(s) in {dt:.2} s{}",
        truths.len(),
        a.out
            .as_ref()
            .map(|d| format!(", written to {}", d.display()))
            .unwrap_or_default()
    );
    Ok(())
}

fn main() -> ExitCode {
    common::exit_with("phantom", run(&Args::parse()))
}
