//! Connected components of a mask, NIfTI, NRRD or MetaImage (`negvol_metrics::components`):
//! count, the largest components with their size and centroid, and optionally the label map.
//!
//! ```text
//! cargo run --release --no-default-features --example components -- --mask m.nii.gz \
//!     [--connectivity 26] [--top 10] [--labels-out labels.nii] [--repeat 5] [--json]
//! ```
//! `--repeat N` labels N times and reports the fastest (timing after reading the file; used by
//! `benches/peers/components_peers.py` to compare with `scipy.ndimage.label`).

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use negvol_suite::metrics::{component_stats, label_components, Connectivity};
use negvol_suite::volume::{read_mask, write_volume, Volume};

mod common;

#[derive(Debug, Parser)]
#[command(about = "Connected components of a NIfTI/NRRD/MetaImage mask (nonzero = foreground)")]
struct Args {
    /// The mask.
    #[arg(long)]
    mask: PathBuf,
    /// Connectivity: 6, 18 or 26.
    #[arg(long, default_value_t = 26)]
    connectivity: u8,
    /// How many of the largest components to list.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Write the label map (u32: 0 background, 1..=n in index order of the first voxel),
    /// in the format its name calls for (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd).
    #[arg(long)]
    labels_out: Option<PathBuf>,
    /// Label this many times and report the fastest run.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Number of threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    if let Some(n) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    let conn = match a.connectivity {
        6 => Connectivity::Six,
        18 => Connectivity::Eighteen,
        26 => Connectivity::TwentySix,
        c => return Err(format!("--connectivity must be 6, 18 or 26, got {c}").into()),
    };
    let mask = read_mask(&a.mask)?;
    let mut best = f64::INFINITY;
    let mut labelling = None;
    for _ in 0..a.repeat.max(1) {
        let t = Instant::now();
        let l = label_components(mask.view(), conn)?;
        best = best.min(t.elapsed().as_secs_f64());
        labelling = Some(l);
    }
    let labelling = labelling.expect("labelled at least once");
    let t = Instant::now();
    let stats = component_stats(mask.view(), conn)?;
    let secs_stats = t.elapsed().as_secs_f64();
    let g = mask.geometry();
    let top: Vec<_> = stats
        .iter()
        .take(a.top)
        .map(|c| {
            serde_json::json!({
                "label": c.label,
                "voxels": c.voxels,
                "centroid_index": c.centroid(),
                "centroid_mm": g.voxel_to_world(c.centroid()),
            })
        })
        .collect();
    if let Some(p) = &a.labels_out {
        write_volume(p, &Volume::new(labelling.labels, g.clone())?)?;
    }
    if a.json {
        let doc = serde_json::json!({
            "mask": a.mask,
            "shape": g.shape(),
            "connectivity": a.connectivity,
            "components": labelling.sizes.len(),
            "foreground_voxels": labelling.sizes.iter().sum::<usize>(),
            "largest": top,
            "seconds_label": best,
            "seconds_stats": secs_stats,
            "threads": rayon::current_num_threads(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "{}: {} components ({}-connected) of {} foreground voxels; labelled in {:.4} s, \
             statistics in {:.4} s",
            a.mask.display(),
            labelling.sizes.len(),
            a.connectivity,
            labelling.sizes.iter().sum::<usize>(),
            best,
            secs_stats
        );
        for c in stats.iter().take(a.top) {
            let w = g.voxel_to_world(c.centroid());
            println!(
                "  label {:>6}: {:>10} voxels, centroid ({:.1}, {:.1}, {:.1}) mm",
                c.label, c.voxels, w[0], w[1], w[2]
            );
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    common::exit_with("components", run())
}
