//! Checkpoints: weights (safetensors), optimiser state (safetensors) and a JSON record of the
//! configuration and training state, each written atomically.
//!
//! A checkpoint named `NAME` in a folder is three files:
//! - `NAME.safetensors`: the network's variables (loadable by `VarStore::load` and by
//!   `negvol_nets::load_weights`) plus a scalar `__negvol_step`;
//! - `NAME.optim.safetensors`: the optimiser's buffers and step count;
//! - `NAME.json`: a [`CheckpointRecord`] (format version, configuration, model description,
//!   training state and history).
//!
//! Each file is written to a temporary name in the same folder and renamed into place; the
//! JSON record is renamed last and carries the global step that the two tensor files also
//! carry, so a checkpoint interrupted half-way is detected on load (the step numbers differ)
//! instead of silently mixing two states.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Tensor};

use crate::config::TrainConfig;
use crate::optim::Optimizer;
use crate::{Result, TrainError};

/// Version of the checkpoint layout written by this crate.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// Write `bytes` to `path` atomically: a temporary file in the same folder, flushed and
/// synced, then renamed over `path` (see [`negvol_volume::atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    negvol_volume::atomic::write_bytes_atomic(path, bytes).map_err(|e| TrainError::io(path, e))
}

/// Write `value` as pretty JSON with a final newline, atomically ([`write_atomic`]): how
/// plans, manifests, splits and run records are written.
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| TrainError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Read a JSON file into `T`; errors name the file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| TrainError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// A temporary name next to `path` that keeps `path`'s extension `ext` (so that tch picks
/// the safetensors writer): `.NAME.tmp-PID.ext`.
fn temp_sibling(path: &Path, ext: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    dir.join(format!(".{name}.tmp-{}{ext}", std::process::id()))
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| TrainError::io(to, e))
}

/// One epoch of the training history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 0-based epoch.
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Mean gradient norm before clipping.
    pub grad_norm: f64,
    /// Optimiser steps skipped because of non-finite gradients (f16 loss scaling only).
    pub skipped_steps: usize,
    /// Mean Dice per foreground class over the validation cases, if validated.
    pub val_dice: Option<Vec<f64>>,
    /// Mean of `val_dice`.
    pub val_mean_dice: Option<f64>,
    /// Mean HD95 (mm) over validation cases and classes where it is defined.
    pub val_hd95: Option<f64>,
    /// Wall-clock seconds of the epoch (training and validation).
    pub seconds: f64,
    /// Training samples per second.
    pub samples_per_second: f64,
    /// Seconds of the epoch's training spent blocked on the data loader, waiting for the next
    /// batch: from the epoch's start to its first batch (which includes starting the loader's
    /// workers unless they were started during the previous epoch's validation), then from
    /// each step's end to the next batch. Part of the training time
    /// (`samples / samples_per_second`); the rest is the steps'. 0 in histories written before
    /// this field existed.
    #[serde(default)]
    pub data_wait_seconds: f64,
}

/// The training state that a resumed run continues from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimiser steps taken.
    pub global_step: u64,
    /// Best validation score so far (mean Dice).
    pub best_metric: Option<f64>,
    /// Epoch of the best score.
    pub best_epoch: Option<usize>,
    /// Validations since the best score.
    pub validations_without_improvement: usize,
    /// Current f16 loss scale (1 when unused).
    pub loss_scale: f64,
    /// Good steps since the loss scale last changed.
    pub good_steps: u64,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Whether the wall-clock budget ([`TrainConfig::max_minutes`]) ended the last
    /// [`crate::Trainer::fit`] call before its epochs were done (a resumed run continues).
    #[serde(default)]
    pub stopped_by_time_budget: bool,
    /// Per-epoch history.
    pub history: Vec<EpochRecord>,
}

/// The JSON part of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// Layout version ([`CHECKPOINT_FORMAT`]).
    pub format: u32,
    /// Training configuration (with fitted normalisation).
    pub config: TrainConfig,
    /// The model description given to the trainer (network and loss configuration).
    pub model: serde_json::Value,
    /// Training state after `state.epoch` epochs.
    pub state: TrainState,
    /// Weights file name (same folder).
    pub weights: String,
    /// Optimiser file name (same folder).
    pub optimizer: String,
}

/// Paths of checkpoint `name` in `dir`: `(weights, optimiser, record)`.
pub fn checkpoint_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.safetensors")),
        dir.join(format!("{name}.optim.safetensors")),
        dir.join(format!("{name}.json")),
    )
}

/// Write checkpoint `name` in `dir` (see the module documentation).
pub fn save_checkpoint(
    dir: &Path,
    name: &str,
    vs: &VarStore,
    opt: &Optimizer,
    config: &TrainConfig,
    model: &serde_json::Value,
    state: &TrainState,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let (wp, op, jp) = checkpoint_paths(dir, name);
    let (wt, ot) = (
        temp_sibling(&wp, ".safetensors"),
        temp_sibling(&op, ".safetensors"),
    );
    let step = Tensor::from_slice(&[state.global_step as i64]);
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.to_device(tch::Device::Cpu)))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.push(("__negvol_step".into(), step));
    Tensor::write_safetensors(&named, &wt)
        .map_err(|e| TrainError::torch(format!("writing weights {}", wt.display()), e))?;
    opt.save(&ot)?;
    let record = CheckpointRecord {
        format: CHECKPOINT_FORMAT,
        config: config.clone(),
        model: model.clone(),
        state: state.clone(),
        weights: file_name(&wp),
        optimizer: file_name(&op),
    };
    let text = serde_json::to_string_pretty(&record).map_err(|source| TrainError::Json {
        path: jp.clone(),
        source,
    })?;
    rename(&wt, &wp)?;
    rename(&ot, &op)?;
    write_atomic(&jp, text.as_bytes())?;
    Ok(jp)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Read a checkpoint record. `path` may be the JSON record or the weights file next to it
/// (`NAME.safetensors` -> `NAME.json`).
pub fn read_record(path: &Path) -> Result<(PathBuf, CheckpointRecord)> {
    let json = if path.extension().is_some_and(|e| e == "json") {
        path.to_path_buf()
    } else {
        let s = path.to_string_lossy();
        PathBuf::from(format!(
            "{}.json",
            s.strip_suffix(".safetensors").unwrap_or(&s)
        ))
    };
    let text = std::fs::read_to_string(&json).map_err(|e| TrainError::io(&json, e))?;
    let rec: CheckpointRecord = serde_json::from_str(&text).map_err(|source| TrainError::Json {
        path: json.clone(),
        source,
    })?;
    if rec.format != CHECKPOINT_FORMAT {
        return Err(TrainError::Checkpoint {
            path: json,
            message: format!(
                "format {} (this build reads {CHECKPOINT_FORMAT})",
                rec.format
            ),
        });
    }
    Ok((json, rec))
}

/// Load the weights of a checkpoint into `vs` and check that they belong to the record's step.
pub fn load_weights(json: &Path, rec: &CheckpointRecord, vs: &mut VarStore) -> Result<()> {
    let dir = json.parent().unwrap_or(Path::new("."));
    let wp = dir.join(&rec.weights);
    let named = Tensor::read_safetensors(&wp)
        .map_err(|e| TrainError::torch(format!("reading weights {}", wp.display()), e))?;
    let mut step = None;
    let mut map = std::collections::HashMap::new();
    for (k, v) in named {
        if k == "__negvol_step" {
            step = Some(v.int64_value(&[0]) as u64);
        } else {
            map.insert(k, v);
        }
    }
    if step != Some(rec.state.global_step) {
        return Err(TrainError::Checkpoint {
            path: wp,
            message: format!(
                "weights are from step {step:?} but the record {} says step {} (interrupted save?)",
                json.display(),
                rec.state.global_step
            ),
        });
    }
    let vars = vs.variables();
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vars {
            let src = map.get(&name).ok_or_else(|| TrainError::Checkpoint {
                path: wp.clone(),
                message: format!("variable {name:?} of the network is missing"),
            })?;
            if src.size() != var.size() {
                return Err(TrainError::Checkpoint {
                    path: wp.clone(),
                    message: format!(
                        "variable {name:?} has shape {:?}, the network wants {:?}",
                        src.size(),
                        var.size()
                    ),
                });
            }
            var.f_copy_(src)
                .map_err(|e| TrainError::torch(format!("loading {name}"), e))?;
        }
        Ok(())
    })
}

/// Load the optimiser state of a checkpoint and check its step.
pub fn load_optimizer(json: &Path, rec: &CheckpointRecord, opt: &mut Optimizer) -> Result<()> {
    let dir = json.parent().unwrap_or(Path::new("."));
    let op = dir.join(&rec.optimizer);
    opt.load(&op)?;
    if opt.steps() as u64 != rec.state.global_step {
        return Err(TrainError::Checkpoint {
            path: op,
            message: format!(
                "optimiser is at step {} but the record says step {} (interrupted save?)",
                opt.steps(),
                rec.state.global_step
            ),
        });
    }
    Ok(())
}

/// Append one JSON line to `path` (creating it).
pub fn append_json_line(path: &Path, value: &impl Serialize) -> Result<()> {
    let line = serde_json::to_string(value).map_err(|source| TrainError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| TrainError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("negvol-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        assert!(write_atomic(&dir.join("missing/x"), b"").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
