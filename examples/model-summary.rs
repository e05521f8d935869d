//! Prints a network's layers, parameter count and output shape for an input shape.
//!
//! ```text
//! cargo run --example model-summary -- --arch vnet --input 112,144,64
//! cargo run --example model-summary -- --config net.json --input 96,96,96 --batch 2
//! ```
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use negvol_nets::{summarize, NetConfig};

#[derive(Parser)]
#[command(about = "Layers, parameter count and output shape of a negvol network")]
struct Args {
    /// Architecture with its default options: unet3d, unet3d-att, vnet or unet.
    #[arg(long, default_value = "unet3d")]
    arch: String,
    /// JSON network configuration (overrides --arch).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Spatial input size ni,nj,nk (default: the paper's training patch).
    #[arg(long, default_value = "112,144,64", value_parser = parse_size)]
    input: [i64; 3],
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    batch: i64,
    /// Largest input (voxels per sample) to run through a real CPU forward pass; larger inputs
    /// are checked with a small probe input instead.
    #[arg(long, default_value_t = 32 * 32 * 32)]
    max_forward_voxels: i64,
    /// Also print the configuration as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<[i64; 3], String> {
    let v: Vec<i64> = s
        .split(',')
        .map(|x| x.trim().parse::<i64>().map_err(|e| format!("{x:?}: {e}")))
        .collect::<Result<_, _>>()?;
    <[i64; 3]>::try_from(v)
        .map_err(|v| format!("expected ni,nj,nk (3 sizes), got {} value(s)", v.len()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match &args.config {
        Some(path) => NetConfig::from_json_file(path),
        None => NetConfig::default_for(&args.arch),
    };
    let result = cfg.and_then(|cfg| {
        let input = [
            args.batch,
            cfg.in_channels(),
            args.input[0],
            args.input[1],
            args.input[2],
        ];
        summarize(&cfg, &input, args.max_forward_voxels)
    });
    match result {
        Ok(summary) => {
            if args.json {
                println!("{}", summary.config.to_json());
            }
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("model-summary: {e}");
            ExitCode::FAILURE
        }
    }
}
