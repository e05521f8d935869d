//! Runs with the negvol networks and losses: the full, serialisable description of a run
//! ([`RunConfig`]: network + loss + [`TrainConfig`]), building a [`Trainer`] from it,
//! cross-validation by patient, and loading a trained model for inference.
//!
//! ```no_run
//! use negvol_train::run::{RunConfig, build_trainer, default_device};
//! use negvol_train::{DatasetSpec, trainer::Silent};
//! let run: RunConfig = serde_json::from_str(r#"{"model": {"net": {"arch": "unet3d"}, "loss": {"loss": "dice-ce"}}}"#)?;
//! let cases = DatasetSpec::open("phantoms")?.load(&run.train.targets)?;
//! let (train, val) = cases.split_at(cases.len() - 2);
//! let mut trainer = build_trainer(&run, default_device())?;
//! let summary = trainer.fit(train, val, "runs/mc".as_ref(), &mut Silent)?;
//! println!("best mean Dice {:?}", summary.state.best_metric);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

use negvol_losses::{DeepSupervision, LossConfig};
use negvol_nets::{NetConfig, SegmentationNet};
use negvol_volume::Volume;
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Tensor};

use crate::checkpoint::{load_weights, read_record};
use crate::dataset::{kfold_by_patient, Case};
use crate::infer::Prediction;
use crate::trainer::{predict_image, Network, Objective, Observer, TrainSummary, Trainer};
use crate::{Result, TrainConfig, TrainError};

/// Network and loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ModelConfig {
    /// The network (`negvol_nets`).
    #[serde(default)]
    pub net: NetConfig,
    /// The loss (`negvol_losses`).
    #[serde(default)]
    pub loss: LossConfig,
}

/// Everything that defines a run; a run is reproduced from this alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RunConfig {
    /// Network and loss.
    #[serde(default)]
    pub model: ModelConfig,
    /// Data, optimisation and bookkeeping.
    #[serde(default)]
    pub train: TrainConfig,
}

impl RunConfig {
    /// Read from a JSON file.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| TrainError::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Check the parts and their agreement (classes, input channels).
    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        self.model
            .loss
            .validate_config()
            .map_err(|e| TrainError::Config(format!("loss: {e}")))?;
        if self.model.net.classes() as usize != self.train.classes() {
            return Err(TrainError::Config(format!(
                "the network has {} classes but {} targets ({:?}) need {}",
                self.model.net.classes(),
                self.train.targets.len(),
                self.train.targets,
                self.train.classes()
            )));
        }
        if self.model.net.in_channels() != 1 {
            return Err(TrainError::Config(format!(
                "the network takes {} input channels; negvol trains on one image channel",
                self.model.net.in_channels()
            )));
        }
        Ok(())
    }
}

impl Objective for LossConfig {
    fn loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        self.compute(logits, target)
            .map_err(|e| TrainError::Loss(e.to_string()))
    }
}

/// A loss over every output of a deep-supervised network: `sum_i w_i loss(output_i, target
/// down-sampled to output_i)` (negvol_losses::DeepSupervision). [`build_trainer`] uses it, with
/// nnU-Net's weights (`1/2^i`, lowest resolution 0, normalised), for networks configured with
/// deep supervision (`{"arch": "unet", "deep_supervision": true}`).
#[derive(Debug, Clone)]
pub struct DeepObjective {
    /// The loss of each output.
    pub loss: LossConfig,
    /// The weights, highest resolution first.
    pub weights: DeepSupervision,
}

impl Objective for DeepObjective {
    fn loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        self.loss.loss(logits, target)
    }

    fn loss_deep(&self, outputs: &[Tensor], target: &Tensor) -> Result<Tensor> {
        self.weights
            .compute(&self.loss, outputs, target)
            .map_err(|e| TrainError::Loss(e.to_string()))
    }
}

/// Outputs of `net` in training (more than one with deep supervision).
fn deep_outputs(net: &NetConfig) -> usize {
    match net {
        NetConfig::Unet(c) if c.deep_supervision => c.features.len().saturating_sub(1).max(1),
        _ => 1,
    }
}

/// CUDA device 0 when libtorch sees a GPU, else the CPU.
pub fn default_device() -> Device {
    Device::cuda_if_available()
}

/// A device from its command-line name: `auto` ([`default_device`]), `cpu`, `cuda` (GPU 0)
/// or `cuda:N`. A CUDA device that libtorch cannot see is an error, not a silent CPU run.
pub fn parse_device(name: &str) -> Result<Device> {
    let cuda = |i: usize| {
        let n = tch::Cuda::device_count().max(0) as usize;
        if i < n {
            Ok(Device::Cuda(i))
        } else {
            Err(TrainError::Config(format!(
                "device {name:?}: libtorch sees {n} CUDA device(s)"
            )))
        }
    };
    match name {
        "auto" => Ok(default_device()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => cuda(i),
            _ => Err(TrainError::Config(format!(
                "device {other:?}: expected auto, cpu, cuda or cuda:N"
            ))),
        },
    }
}

fn check_divisible(net: &dyn SegmentationNet, patch: [usize; 3], what: &str) -> Result<()> {
    let d = net.size_divisor();
    for a in 0..3 {
        if d[a] > 0 && patch[a] as i64 % d[a] != 0 {
            return Err(TrainError::Config(format!(
                "{what} patch {patch:?} is not divisible by the network's size divisor {d:?}"
            )));
        }
    }
    Ok(())
}

/// Build a trainer for a run on `device` (libtorch's generator is seeded with the run's seed
/// first, so the initial weights are reproducible).
pub fn build_trainer(run: &RunConfig, device: Device) -> Result<Trainer> {
    run.validate()?;
    tch::manual_seed(run.train.seed as i64);
    let vs = VarStore::new(device);
    let net = negvol_nets::build(&vs.root(), &run.model.net)
        .map_err(|e| TrainError::Network(e.to_string()))?;
    check_divisible(net.as_ref(), run.train.sampler.patch, "training")?;
    check_divisible(
        net.as_ref(),
        run.train.validation.inference.patch,
        "inference",
    )?;
    // Sparse annotation: the loss leaves the unannotated voxels out.
    let mut loss = run.model.loss.clone();
    if run.train.ignore_label {
        let ii = i64::from(crate::IGNORE_LABEL);
        match loss.ignore_index {
            None => loss.ignore_index = Some(ii),
            Some(i) if i == ii => {}
            Some(i) => {
                return Err(TrainError::Config(format!(
                    "train.ignore_label marks unannotated voxels {ii}, but the loss ignores {i}"
                )))
            }
        }
    }
    let mut described = run.model.clone();
    described.loss = loss.clone();
    let model = serde_json::to_value(&described)
        .map_err(|e| TrainError::Config(format!("model description: {e}")))?;
    let levels = deep_outputs(&run.model.net);
    let objective: Box<dyn Objective> = if levels > 1 {
        Box::new(DeepObjective {
            loss,
            weights: DeepSupervision::nnunet(levels)
                .map_err(|e| TrainError::Config(e.to_string()))?,
        })
    } else {
        Box::new(loss)
    };
    Trainer::new(run.train.clone(), vs, Box::new(net), objective, model)
}

/// K-fold cross-validation by patient: a fresh network and optimiser per fold (nothing leaks
/// between folds), outputs in `out_dir/fold_<f>`. Returns one summary per fold.
pub fn cross_validate(
    run: &RunConfig,
    cases: &[Case],
    k: usize,
    device: Device,
    out_dir: &Path,
    observer: &mut dyn Observer,
) -> Result<Vec<TrainSummary>> {
    let patients: Vec<&str> = cases.iter().map(|c| c.patient.as_str()).collect();
    let folds = kfold_by_patient(&patients, k, run.train.seed)?;
    let all: Vec<usize> = (0..k).collect();
    cross_validate_folds(run, cases, &folds, &all, device, out_dir, observer)
}

/// Train the folds numbered in `which` of given `(train, validation)` case-index lists (e.g.
/// from [`kfold_by_patient`] or [`crate::dataset::read_splits`], nnU-Net's
/// `splits_final.json`): a fresh network and optimiser per fold, outputs in
/// `out_dir/fold_<f>`. Returns one summary per trained fold, in the order of `which`.
///
/// # Errors
/// A fold number past the list, an index past `cases`, an empty training or validation list,
/// and whatever training returns.
pub fn cross_validate_folds(
    run: &RunConfig,
    cases: &[Case],
    folds: &[(Vec<usize>, Vec<usize>)],
    which: &[usize],
    device: Device,
    out_dir: &Path,
    observer: &mut dyn Observer,
) -> Result<Vec<TrainSummary>> {
    run_folds(run, cases, folds, which, device, out_dir, observer, false)
}

/// [`cross_validate_folds`], continuing an interrupted run (nnU-Net's `--c`): a fold whose
/// folder holds a `last.json` continues from it ([`crate::Trainer::resume`]: weights,
/// optimiser, training state, fitted normalisation); a fold that had finished (its epochs
/// reached `run.train.epochs`, or early stopping ended it) is left as it is and its summary
/// read from the checkpoint; a fold without a checkpoint trains from scratch. Raising
/// `run.train.epochs` therefore extends finished folds.
///
/// # Errors
/// As [`cross_validate_folds`], and an unreadable or mismatching checkpoint (another network
/// or other targets).
pub fn continue_folds(
    run: &RunConfig,
    cases: &[Case],
    folds: &[(Vec<usize>, Vec<usize>)],
    which: &[usize],
    device: Device,
    out_dir: &Path,
    observer: &mut dyn Observer,
) -> Result<Vec<TrainSummary>> {
    run_folds(run, cases, folds, which, device, out_dir, observer, true)
}

/// Whether a checkpoint's training is over for `epochs` epochs, and its summary if so.
fn finished_summary(last: &Path, epochs: usize) -> Result<Option<TrainSummary>> {
    let (json, rec) = crate::checkpoint::read_record(last)?;
    if !(rec.state.stopped_early || rec.state.epoch >= epochs) {
        return Ok(None);
    }
    let best =
        crate::checkpoint::checkpoint_paths(json.parent().unwrap_or(Path::new(".")), "best").2;
    Ok(Some(TrainSummary {
        best: (rec.state.best_epoch.is_some() && best.is_file()).then_some(best),
        state: rec.state,
        last: json,
    }))
}

#[allow(clippy::too_many_arguments)]
fn run_folds(
    run: &RunConfig,
    cases: &[Case],
    folds: &[(Vec<usize>, Vec<usize>)],
    which: &[usize],
    device: Device,
    out_dir: &Path,
    observer: &mut dyn Observer,
    resume: bool,
) -> Result<Vec<TrainSummary>> {
    let pick = |idx: &[usize], f: usize, what: &str| -> Result<Vec<Case>> {
        if idx.is_empty() {
            return Err(TrainError::Config(format!("fold {f}: no {what} case")));
        }
        idx.iter()
            .map(|&i| {
                cases.get(i).cloned().ok_or_else(|| {
                    TrainError::Config(format!(
                        "fold {f}: case index {i} past the {} cases",
                        cases.len()
                    ))
                })
            })
            .collect()
    };
    let mut out = Vec::with_capacity(which.len());
    for &f in which {
        let (train, val) = folds.get(f).ok_or_else(|| {
            TrainError::Config(format!("fold {f} requested of {} folds", folds.len()))
        })?;
        let (tr, va) = (pick(train, f, "training")?, pick(val, f, "validation")?);
        let dir = out_dir.join(format!("fold_{f}"));
        let last = crate::checkpoint::checkpoint_paths(&dir, "last").2;
        let resumable = resume && last.is_file();
        if resumable {
            if let Some(done) = finished_summary(&last, run.train.epochs)? {
                out.push(done);
                continue;
            }
        }
        let mut t = build_trainer(run, device)?;
        if resumable {
            t.resume(&last)?;
        }
        out.push(t.fit(&tr, &va, &dir, observer)?);
    }
    Ok(out)
}

/// A trained model ready for inference.
pub struct LoadedModel {
    /// The variables (weights).
    pub vs: VarStore,
    /// The network.
    pub net: Box<dyn SegmentationNet>,
    /// Its training configuration (normalisation, spacing, inference settings, targets).
    pub train: TrainConfig,
    /// Network and loss.
    pub model: ModelConfig,
    /// The checkpoint record it came from.
    pub path: PathBuf,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("path", &self.path)
            .field("model", &self.model)
            .finish()
    }
}

impl LoadedModel {
    /// Load a checkpoint (its `.json` record or its `.safetensors` weights) onto `device`.
    pub fn load(checkpoint: impl AsRef<Path>, device: Device) -> Result<Self> {
        let (json, rec) = read_record(checkpoint.as_ref())?;
        let model: ModelConfig =
            serde_json::from_value(rec.model.clone()).map_err(|e| TrainError::Checkpoint {
                path: json.clone(),
                message: format!("model description is not a negvol network + loss: {e}"),
            })?;
        let mut vs = VarStore::new(device);
        let net = negvol_nets::build(&vs.root(), &model.net)
            .map_err(|e| TrainError::Network(e.to_string()))?;
        load_weights(&json, &rec, &mut vs)?;
        if !rec.config.normalization.is_fitted() {
            return Err(TrainError::Checkpoint {
                path: json,
                message: "the normalisation was never fitted (the run did not start)".into(),
            });
        }
        Ok(Self {
            vs,
            net,
            train: rec.config,
            model,
            path: json,
        })
    }

    /// Predict a whole image (in its own geometry) with the training-time preprocessing and
    /// the saved sliding-window settings, optionally overridden.
    pub fn predict(
        &self,
        image: &Volume<f32>,
        inference: Option<&crate::InferenceConfig>,
    ) -> Result<Prediction> {
        let inf = inference.unwrap_or(&self.train.validation.inference);
        let net: &dyn Network = &self.net;
        predict_image(
            net,
            image,
            &self.train.normalization,
            self.train.orientation.as_deref(),
            self.train.target_spacing,
            inf,
            self.vs.device(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run configuration of the crate README's example (keep the two in step).
    const README_RUN: &str = r#"{
    "model": {"net": {"arch": "unet3d", "classes": 3, "f_maps": [8, 16, 32], "num_groups": 4},
              "loss": {"loss": "dice-ce"}},
    "train": {"targets": ["mc", "tb"], "epochs": 30, "max_minutes": 2.0,
              "sampler": {"patch": [32, 32, 32], "batch_size": 2, "batches_per_epoch": 16},
              "validation": {"every": 0, "inference": {"patch": [32, 32, 32]}}}
}"#;

    #[test]
    fn readme_run_config_parses_and_builds() {
        let run: RunConfig = serde_json::from_str(README_RUN).unwrap();
        assert_eq!(run.train.max_minutes, Some(2.0));
        assert_eq!(run.train.class_of("tb").unwrap(), 2);
        assert_eq!(run.train.sampler.patch, [32; 3]);
        build_trainer(&run, Device::Cpu).unwrap();
        // Two targets need three classes.
        let mut bad = run.clone();
        bad.train.targets.push("nv".into());
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("classes"), "{e}");
    }

    #[test]
    fn device_names_parse_and_bad_ones_are_errors() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device("auto").unwrap(), default_device());
        for bad in ["gpu", "cuda:x", "cuda:-1", ""] {
            let e = parse_device(bad).unwrap_err().to_string();
            assert!(e.contains("expected auto"), "{bad}: {e}");
        }
        // A device index past the last GPU (every GPU on a CPU-only machine) is refused.
        let e = parse_device("cuda:64").unwrap_err().to_string();
        assert!(e.contains("CUDA device"), "{e}");
        if !tch::Cuda::is_available() {
            assert!(parse_device("cuda").is_err());
        }
    }

    #[test]
    fn deep_supervised_unet_trains_on_the_weighted_sum_of_its_outputs() {
        let json = r#"{
            "model": {"net": {"arch": "unet", "features": [4, 8, 16], "deep_supervision": true},
                      "loss": {"loss": "dice-ce"}},
            "train": {"targets": ["ball"], "grad_clip": null,
                      "sampler": {"patch": [16, 16, 16]},
                      "validation": {"inference": {"patch": [16, 16, 16]}}}
        }"#;
        let run: RunConfig = serde_json::from_str(json).unwrap();
        assert_eq!(deep_outputs(&run.model.net), 2);
        let x = Tensor::randn([2, 1, 16, 16, 16], (tch::Kind::Float, Device::Cpu));
        let y = x.gt(0.5).to_kind(tch::Kind::Int64).squeeze_dim(1);
        // One step of a fresh trainer: (its loss, the nnU-Net-weighted loss and the
        // full-resolution loss computed from the same weights before the step; instance norm
        // keeps no running statistics, so that forward pass changes nothing), and the output
        // shapes.
        let step = |run: &RunConfig| {
            let mut t = build_trainer(run, Device::Cpu).unwrap();
            let outs = t.network().forward_deep(&x, true).unwrap();
            let ds = DeepSupervision::nnunet(outs.len()).unwrap();
            let want = ds
                .compute(&run.model.loss, &outs, &y)
                .unwrap()
                .double_value(&[]);
            let full_only = run
                .model
                .loss
                .compute(&outs[0], &y)
                .unwrap()
                .double_value(&[]);
            let got = t.train_batch(&x, &y).unwrap().loss;
            let shapes: Vec<Vec<i64>> = outs.iter().map(|o| o.size()).collect();
            (got, want, full_only, shapes)
        };
        let (got, want, full_only, shapes) = step(&run);
        assert_eq!(shapes.len(), 2);
        assert_eq!(shapes[1], [2, 2, 8, 8, 8]);
        approx::assert_relative_eq!(got, want, max_relative = 1e-5);
        // nnU-Net's weights for two outputs put everything on the full resolution (the lowest
        // is zeroed), so the values agree; three outputs must differ from the full-res loss.
        approx::assert_relative_eq!(want, full_only, max_relative = 1e-5);
        let mut run3 = run.clone();
        run3.model.net = serde_json::from_str(
            r#"{"arch": "unet", "features": [4, 8, 16, 16], "deep_supervision": true}"#,
        )
        .unwrap();
        let (got, want, full_only, shapes) = step(&run3);
        assert_eq!(shapes.len(), 3);
        approx::assert_relative_eq!(got, want, max_relative = 1e-5);
        assert!((got - full_only).abs() > 1e-4, "{got} vs {full_only}");
    }
}
