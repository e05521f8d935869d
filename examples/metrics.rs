//! Segmentation metrics of masks (NIfTI, NRRD or MetaImage), with stated definitions (see
//! `negvol-metrics`).
//!
//! Single pair:
//!   metrics --reference A.nii.gz --prediction B.nii.gz [--labels 1,2] [--percentile 95]
//!           [--tolerance-mm 1] [--variant voxel,surfel,sitk-solid,seed-paper] [--json]
//! Batch (files matched by name, evaluated in parallel, CSV + mean +- std summary):
//!   metrics --reference-dir R --prediction-dir P --csv out.csv --summary out.json

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, ValueEnum};
use negvol_suite::metrics::{
    csv_table, evaluate_labels, evaluate_pair, CaseRow, Connectivity, EvalOptions, PairMetrics,
    Report,
};
use negvol_suite::volume::{
    read_mask, read_volume, Geometry, ImageFormat, Volume, SUPPORTED_EXTENSIONS,
};
use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Variant {
    /// Boundary voxels (always computed).
    Voxel,
    /// DeepMind-style surfels with area weights.
    Surfel,
    /// SimpleITK HausdorffDistanceImageFilter (all foreground voxels, mm).
    SitkSolid,
    /// The seed paper's HD (all foreground voxels, unit spacing, voxels).
    SeedPaper,
    /// Every variant.
    All,
}

#[derive(Debug, Parser)]
#[command(
    about = "Segmentation metrics (Dice, HD, HDp, ASSD, MSD, NSD, ...) of NIfTI/NRRD/MetaImage masks"
)]
struct Args {
    /// Reference (ground-truth) mask or label map.
    #[arg(long, requires = "prediction", conflicts_with = "reference_dir")]
    reference: Option<PathBuf>,
    /// Predicted mask or label map.
    #[arg(long)]
    prediction: Option<PathBuf>,
    /// Directory of reference files (batch mode; matched by file name).
    #[arg(long, requires = "prediction_dir")]
    reference_dir: Option<PathBuf>,
    /// Directory of predicted files (batch mode).
    #[arg(long)]
    prediction_dir: Option<PathBuf>,
    /// Labels to evaluate in label maps (comma separated); without it files are binary masks
    /// (nonzero = foreground).
    #[arg(long, value_delimiter = ',')]
    labels: Option<Vec<u8>>,
    /// Percentile of HDp.
    #[arg(long, default_value_t = 95.0)]
    percentile: f64,
    /// NSD tolerance in mm.
    #[arg(long, default_value_t = 1.0)]
    tolerance_mm: f64,
    /// Boundary connectivity: 6, 18 or 26.
    #[arg(long, default_value_t = 6)]
    connectivity: u8,
    /// Surface-distance variants to compute (comma separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    variant: Vec<Variant>,
    /// Largest affine difference (mm) tolerated between the two files' geometries.
    #[arg(long, default_value_t = 1e-3)]
    geometry_tolerance_mm: f64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Batch mode: per-case CSV output path.
    #[arg(long, default_value = "metrics.csv")]
    csv: PathBuf,
    /// Batch mode: summary JSON output path.
    #[arg(long, default_value = "metrics-summary.json")]
    summary: PathBuf,
    /// Number of threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
/// Metrics of one file pair: one entry per label (`None` for binary masks).
type PerLabel = Vec<(Option<u8>, PairMetrics)>;

fn options(a: &Args) -> AnyResult<EvalOptions> {
    let has = |v: Variant| a.variant.contains(&v) || a.variant.contains(&Variant::All);
    let connectivity = match a.connectivity {
        6 => Connectivity::Six,
        18 => Connectivity::Eighteen,
        26 => Connectivity::TwentySix,
        c => return Err(format!("--connectivity must be 6, 18 or 26, got {c}").into()),
    };
    Ok(EvalOptions {
        percentile: a.percentile,
        tolerance_mm: a.tolerance_mm,
        connectivity,
        surfels: has(Variant::Surfel),
        solid: has(Variant::SitkSolid),
        seed_paper: has(Variant::SeedPaper),
    })
}

/// Metrics of one file pair: one entry per label (`None` for binary masks).
fn evaluate_files(
    reference: &Path,
    prediction: &Path,
    a: &Args,
    opts: &EvalOptions,
) -> AnyResult<(PerLabel, f64)> {
    let geometry_check = |r: &Geometry, p: &Geometry| -> AnyResult<()> {
        r.check_same(p, a.geometry_tolerance_mm).map_err(|e| {
            format!(
                "{} and {} have different geometries: {e}",
                reference.display(),
                prediction.display()
            )
            .into()
        })
    };
    if a.labels.is_some() {
        let r: Volume<u8> = read_volume(reference)?;
        let p: Volume<u8> = read_volume(prediction)?;
        geometry_check(r.geometry(), p.geometry())?;
        let t = Instant::now();
        let res = evaluate_labels(
            r.view(),
            p.view(),
            r.geometry().spacing(),
            a.labels.as_deref(),
            opts,
        )?;
        let secs = t.elapsed().as_secs_f64();
        Ok((
            res.into_iter()
                .map(|l| (Some(l.label), l.metrics))
                .collect(),
            secs,
        ))
    } else {
        let r = read_mask(reference)?;
        let p = read_mask(prediction)?;
        geometry_check(r.geometry(), p.geometry())?;
        let t = Instant::now();
        let m = evaluate_pair(r.view(), p.view(), r.geometry().spacing(), opts)?;
        Ok((vec![(None, m)], t.elapsed().as_secs_f64()))
    }
}

fn write_atomic(path: &Path, text: &str) -> AnyResult<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, text).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming to {}: {e}", path.display()))?;
    Ok(())
}

fn volume_files(dir: &Path) -> AnyResult<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if ImageFormat::from_name(&name).is_some() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn run(a: Args) -> AnyResult<()> {
    if let Some(n) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    let opts = options(&a)?;
    if let (Some(r), Some(p)) = (&a.reference, &a.prediction) {
        let (res, secs) = evaluate_files(r, p, &a, &opts)?;
        if a.json {
            let out = serde_json::json!({
                "reference": r, "prediction": p, "seconds_metrics": secs,
                "results": res.iter().map(|(l, m)| serde_json::json!({
                    "label": l, "metrics": m,
                    "values": m.named_values().into_iter().collect::<BTreeMap<_, _>>(),
                })).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            for (l, m) in &res {
                if let Some(l) = l {
                    println!("label {l}");
                }
                for (n, v) in m.named_values() {
                    println!("  {n:<28} {v}");
                }
            }
            println!(
                "(metrics computed in {secs:.3} s; spacing {:?} mm)",
                res[0].1.spacing
            );
        }
        return Ok(());
    }
    let (Some(rd), Some(pd)) = (&a.reference_dir, &a.prediction_dir) else {
        return Err("give --reference/--prediction or --reference-dir/--prediction-dir".into());
    };
    let names = volume_files(rd)?;
    let missing: Vec<&String> = names.iter().filter(|n| !pd.join(n).exists()).collect();
    if !missing.is_empty() {
        return Err(format!("no prediction in {} for {missing:?}", pd.display()).into());
    }
    if names.is_empty() {
        return Err(format!(
            "no volume files ({}) in {}",
            SUPPORTED_EXTENSIONS.join(" "),
            rd.display()
        )
        .into());
    }
    let results: Vec<AnyResult<(String, PerLabel)>> = names
        .par_iter()
        .map(|n| {
            Ok((
                n.clone(),
                evaluate_files(&rd.join(n), &pd.join(n), &a, &opts)?.0,
            ))
        })
        .collect();
    let mut rows = Vec::new();
    for r in results {
        let (case, per) = r?;
        for (label, m) in per {
            rows.push(CaseRow {
                case: case.clone(),
                label,
                values: m.named_values(),
            });
        }
    }
    write_atomic(&a.csv, &csv_table(&rows))?;
    let mut by_label: BTreeMap<String, Vec<Vec<_>>> = BTreeMap::new();
    for r in &rows {
        let key = r.label.map_or("mask".to_string(), |l| format!("label_{l}"));
        by_label.entry(key).or_default().push(r.values.clone());
    }
    let reports: BTreeMap<String, Report> = by_label
        .into_iter()
        .map(|(k, v)| (k, Report::from_cases(v)))
        .collect();
    write_atomic(&a.summary, &serde_json::to_string_pretty(&reports)?)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for (k, rep) in &reports {
            println!("{k}: {} cases", rep.cases);
            for (n, s) in &rep.metrics {
                match (s.mean, s.std) {
                    (Some(m), Some(sd)) => println!(
                        "  {n:<28} {m:.4} +- {sd:.4}  (defined {}, undefined {}, both empty {})",
                        s.n_defined, s.n_undefined, s.n_both_empty
                    ),
                    _ => println!("  {n:<28} undefined in all {} cases", s.n_undefined),
                }
            }
        }
        println!("wrote {} and {}", a.csv.display(), a.summary.display());
    }
    Ok(())
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("metrics: error: {e}");
        std::process::exit(1);
    }
}
