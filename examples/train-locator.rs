//! Train the joint locator (coarse heatmap network + mean-mask atlas prior) on a NIfTI dataset,
//! for `pipeline --locator OUT/locator.json`.
//!
//! ```text
//! cargo run --release --example train-locator -- --input-data phantoms --out runs/locator \
//!     [--joint-label mc] [--centre-label nv] [--coarse-spacing 3] [--epochs 40] [--max-minutes 5]
//! ```
//! Writes `OUT/locator.json` (atlas, settings, checkpoint path) and the heatmap network's
//! checkpoints under `OUT/net/`. The network is trained, and later run, on coarse grids
//! reoriented to RAS (`LocatorTrainConfig::orientation`; `"orientation": null` in `--config`
//! keeps each scan's stored voxel order, as locators did before), so the cases may be stored
//! in any orientation and the locator works on CTs stored in any other. `--no-network` makes a prior-only locator (the atlas alone);
//! `--config FILE` reads a full `negvol_train::locate::LocatorTrainConfig` (flags given
//! explicitly still override it).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use negvol_train::checkpoint::EpochRecord;
use negvol_train::locate::{train_locator, LocatorTrainConfig};
use negvol_train::run::parse_device;
use negvol_train::tch;
use negvol_train::trainer::Observer;
use negvol_train::DatasetSpec;

mod common;

#[derive(Parser, Debug)]
#[command(about = "Train the negvol joint locator (heatmap network + atlas prior)")]
struct Args {
    /// Dataset: a folder of case folders, a manifest, or an nnU-Net v2 / Decathlon raw dataset
    /// (`dataset --input-data D` checks one).
    #[arg(long)]
    input_data: PathBuf,
    /// Output folder (locator.json, net/).
    #[arg(long, default_value = "runs/locator")]
    out: PathBuf,
    /// Locator training configuration (JSON of LocatorTrainConfig).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Mask(s) whose union is the joint (repeatable). Default: mc.
    #[arg(long = "joint-label")]
    joint_labels: Vec<String>,
    /// Mask whose per-joint centroid centres the VOI (e.g. nv).
    #[arg(long)]
    centre_label: Option<String>,
    /// Coarse voxel size (mm).
    #[arg(long)]
    coarse_spacing: Option<f64>,
    /// Epochs of the heatmap network.
    #[arg(long)]
    epochs: Option<usize>,
    /// Wall-clock budget of the network's training (minutes).
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Seed of the initial weights and the patches.
    #[arg(long)]
    seed: Option<u64>,
    /// Fit the atlas only (a prior-only locator).
    #[arg(long)]
    no_network: bool,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// libtorch CPU threads (0: libtorch's default).
    #[arg(long, default_value_t = 1)]
    threads: i32,
}

struct Progress;

impl Observer for Progress {
    fn on_epoch(&mut self, r: &EpochRecord) {
        println!(
            "  epoch {:>3}: loss {:.4}, {:.1} s",
            r.epoch + 1,
            r.train_loss,
            r.seconds
        );
        let _ = std::io::stdout().flush();
    }
}

fn run(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    if a.threads > 0 {
        tch::set_num_threads(a.threads);
    }
    let device = parse_device(&a.device)?;
    let mut cfg = match &a.config {
        Some(p) => serde_json::from_str(&std::fs::read_to_string(p)?)?,
        None => LocatorTrainConfig::default(),
    };
    if !a.joint_labels.is_empty() {
        cfg.joint_labels = a.joint_labels.clone();
    }
    if a.centre_label.is_some() {
        cfg.centre_label = a.centre_label.clone();
    }
    if let Some(s) = a.coarse_spacing {
        cfg.coarse_spacing_mm = s;
    }
    if let Some(e) = a.epochs {
        cfg.run.train.epochs = e;
    }
    if a.max_minutes.is_some() {
        cfg.run.train.max_minutes = a.max_minutes;
    }
    if let Some(s) = a.seed {
        cfg.run.train.seed = s;
    }
    if a.no_network {
        cfg.train_network = false;
    }
    let mut names = cfg.joint_labels.clone();
    if let Some(c) = &cfg.centre_label {
        if !names.contains(c) {
            names.push(c.clone());
        }
    }
    let t0 = std::time::Instant::now();
    let cases = DatasetSpec::open(&a.input_data)?.load(&names)?;
    println!(
        "{} cases from {} ({:.1} s); joint = {:?}, centre = {:?}, coarse {} mm in {}",
        cases.len(),
        a.input_data.display(),
        t0.elapsed().as_secs_f64(),
        cfg.joint_labels,
        cfg.centre_label,
        cfg.coarse_spacing_mm,
        cfg.orientation
            .as_deref()
            .map_or("stored voxel order".to_string(), |o| format!(
                "{o} orientation"
            ))
    );
    let t1 = std::time::Instant::now();
    let out = train_locator(&cases, &names, &cfg, &a.out, device, &mut Progress)?;
    let s = &out.spec;
    println!(
        "atlas {:?} of {} cases (peak {:.2}), centre offset [{:.1}, {:.1}, {:.1}] mm",
        s.atlas.grid,
        s.atlas.cases,
        s.atlas.max(),
        s.atlas.centre_offset_mm[0],
        s.atlas.centre_offset_mm[1],
        s.atlas.centre_offset_mm[2]
    );
    if let Some(sum) = &out.summary {
        let st = &sum.state;
        println!(
            "heatmap network: {} epochs{} in {:.1} s",
            st.epoch,
            if st.stopped_by_time_budget {
                " (stopped by the time budget)"
            } else {
                ""
            },
            t1.elapsed().as_secs_f64()
        );
    }
    println!("wrote {}", out.path.display());
    Ok(())
}

fn main() -> ExitCode {
    common::exit_with("train-locator", run(Args::parse()))
}
