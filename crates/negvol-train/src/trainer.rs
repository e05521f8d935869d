//! The training loop: epochs of augmented patches, validation by sliding-window inference on
//! whole cases, checkpoints, early stopping, resume, and a JSON-lines log.
//!
//! The loop is generic over a [`Network`] (anything that maps `[N, 1, ...]` to logits
//! `[N, C, ...]`; every `negvol_nets` network is one) and an [`Objective`] (the loss; every
//! `negvol_losses::LossConfig` is one), so it is tested with tiny models and used with the
//! paper's networks alike. Progress goes to an [`Observer`]; the library never prints.
//!
//! Reproducibility: the data of epoch `e` depends only on `(seed, e)` (see
//! [`crate::sampler`]), and libtorch's generator is re-seeded with `seed + e` at the start of
//! every epoch, so a run resumed from the checkpoint of epoch `e` computes the same losses as
//! the uninterrupted run (on the same device and thread count).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ndarray::Array3;
use negvol_volume::{Geometry, Volume};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::checkpoint::{
    append_json_line, load_optimizer, load_weights, read_record, save_checkpoint, EpochRecord,
    TrainState,
};
use crate::config::{Precision, TrainConfig};
use crate::dataset::Case;
use crate::infer::{sliding_window, to_prediction, InferenceConfig, Prediction};
use crate::interp::{geometry_with_spacing, resample_image, resample_labels, Interpolation};
use crate::optim::Optimizer;
use crate::preprocess::{voi_around_labels, Normalization};
use crate::sampler::{Batch, Loader, PreparedCase};
use crate::{Result, TrainError};

/// A segmentation network as the trainer sees it.
pub trait Network: Send {
    /// Logits `[N, C, ...]` of a batch `[N, 1, ...]`; `train` selects training behaviour.
    fn forward(&self, xs: &Tensor, train: bool) -> Result<Tensor>;

    /// Every output for deep supervision, highest resolution first (the first equals
    /// [`Network::forward`]); training uses this, inference uses [`Network::forward`]. The
    /// default is the one output of `forward`.
    fn forward_deep(&self, xs: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        Ok(vec![self.forward(xs, train)?])
    }
}

impl Network for Box<dyn negvol_nets::SegmentationNet> {
    fn forward(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_t(xs, train)
            .map_err(|e| TrainError::Network(e.to_string()))
    }

    fn forward_deep(&self, xs: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        negvol_nets::SegmentationNet::forward_deep(self.as_ref(), xs, train)
            .map_err(|e| TrainError::Network(e.to_string()))
    }
}

/// A loss as the trainer sees it.
pub trait Objective: Send {
    /// A scalar loss of logits `[N, C, ...]` against class indices `[N, ...]` (Int64).
    fn loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor>;

    /// The loss of every output of a deep-supervised network (highest resolution first). The
    /// default accepts one output only and is [`Objective::loss`] of it; an objective that
    /// supports deep supervision (e.g. [`crate::run::DeepObjective`]) overrides this.
    fn loss_deep(&self, outputs: &[Tensor], target: &Tensor) -> Result<Tensor> {
        match outputs {
            [one] => self.loss(one, target),
            _ => Err(TrainError::Loss(format!(
                "the network gave {} outputs (deep supervision) but the objective takes one; \
                 use a deep-supervision objective",
                outputs.len()
            ))),
        }
    }
}

impl<F> Objective for F
where
    F: Fn(&Tensor, &Tensor) -> Result<Tensor> + Send,
{
    fn loss(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        self(logits, target)
    }
}

/// Progress of one optimiser step, for an [`Observer`].
#[derive(Debug, Clone)]
pub struct StepEvent {
    /// 0-based epoch.
    pub epoch: usize,
    /// 0-based batch within the epoch.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
    /// Loss of this batch.
    pub loss: f64,
    /// Running mean loss of the epoch.
    pub mean_loss: f64,
    /// Learning rate.
    pub lr: f64,
    /// Training samples per second so far in this epoch.
    pub samples_per_second: f64,
}

/// Receives progress from [`Trainer::fit`]. Every method has an empty default.
pub trait Observer {
    /// After every optimiser step.
    fn on_step(&mut self, _event: &StepEvent) {}
    /// After every epoch (with validation results if validated).
    fn on_epoch(&mut self, _record: &EpochRecord) {}
    /// After a checkpoint was written.
    fn on_checkpoint(&mut self, _path: &Path) {}
}

/// What one [`Trainer::train_batch`] step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// The batch's loss (before any loss scaling).
    pub loss: f64,
    /// Global L2 norm of the gradients before clipping (NaN on a skipped step).
    pub grad_norm: f64,
    /// True when f16 loss scaling found non-finite gradients and skipped the update.
    pub skipped: bool,
}

/// Wall-clock seconds of the phases of a profiled step ([`Trainer::train_batch_profiled`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct StepTimes {
    /// Forward pass (under autocast when configured).
    pub forward: f64,
    /// Loss and reading its value.
    pub loss: f64,
    /// Backward pass.
    pub backward: f64,
    /// Global gradient norm (read every step for the log, clipping and f16 scaling).
    pub grad_norm: f64,
    /// Clipping/unscaling and the optimiser update.
    pub optimizer: f64,
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;
impl Observer for Silent {}

/// What [`Trainer::fit`] returns.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Final training state (history included).
    pub state: TrainState,
    /// The last checkpoint's JSON record.
    pub last: PathBuf,
    /// The best checkpoint's JSON record, if validation ran.
    pub best: Option<PathBuf>,
}

/// Normalise, resample (if configured) and predict a whole image; probabilities and labels
/// come back in the image's own geometry.
pub fn predict_image(
    net: &dyn Network,
    image: &Volume<f32>,
    normalization: &Normalization,
    orientation: Option<&str>,
    target_spacing: Option<[f64; 3]>,
    inference: &InferenceConfig,
    device: Device,
) -> Result<Prediction> {
    let Some(t) = orientation_transform(image.geometry(), orientation)? else {
        return predict_stored(net, image, normalization, target_spacing, inference, device);
    };
    let vol = |source| TrainError::Volume {
        context: "reoriented prediction".into(),
        source,
    };
    let turned = t.apply(image).map_err(vol)?;
    let p = predict_stored(
        net,
        &turned,
        normalization,
        target_spacing,
        inference,
        device,
    )?;
    // Back to the input's axes: an exact permutation/flip, so the same voxels.
    let back = t.inverse();
    let g = image.geometry();
    Ok(Prediction {
        probabilities: p
            .probabilities
            .iter()
            .map(|v| Volume::new(back.apply_array(v.view()), g.clone()).map_err(vol))
            .collect::<Result<_>>()?,
        labels: Volume::new(back.apply_array(p.labels.view()), g.clone()).map_err(vol)?,
    })
}

/// The axis transform that brings `geometry` to `orientation` (`None` when there is no
/// orientation or the grid already has it).
pub(crate) fn orientation_transform(
    geometry: &Geometry,
    orientation: Option<&str>,
) -> Result<Option<negvol_volume::AxisTransform>> {
    let Some(code) = orientation else {
        return Ok(None);
    };
    let t = negvol_volume::AxisTransform::to_code(geometry, code).map_err(|source| {
        TrainError::Volume {
            context: format!("reorienting to {code}"),
            source,
        }
    })?;
    Ok((!t.is_identity()).then_some(t))
}

/// [`predict_image`] in the image's stored voxel order.
fn predict_stored(
    net: &dyn Network,
    image: &Volume<f32>,
    normalization: &Normalization,
    target_spacing: Option<[f64; 3]>,
    inference: &InferenceConfig,
    device: Device,
) -> Result<Prediction> {
    let (work, work_geom) = prepare_image(image, normalization, target_spacing)?;
    let model = |x: &Tensor| net.forward(x, false);
    let probs = sliding_window(&model, &work, inference, device)?;
    if work_geom == *image.geometry() {
        return to_prediction(&probs, image.geometry());
    }
    // Back to the input grid, class by class (trilinear), then argmax.
    let mut back = ndarray::Array4::<f32>::zeros([
        probs.shape()[0],
        image.geometry().shape()[0],
        image.geometry().shape()[1],
        image.geometry().shape()[2],
    ]);
    for c in 0..probs.shape()[0] {
        let v = Volume::new(
            probs.index_axis(ndarray::Axis(0), c).to_owned(),
            work_geom.clone(),
        )
        .map_err(|source| TrainError::Volume {
            context: "resampled prediction".into(),
            source,
        })?;
        let r = resample_image(
            &v,
            image.geometry(),
            Interpolation::Linear,
            if c == 0 { 1.0 } else { 0.0 },
        )?;
        back.index_axis_mut(ndarray::Axis(0), c).assign(r.data());
    }
    to_prediction(&back, image.geometry())
}

fn prepare_image(
    image: &Volume<f32>,
    normalization: &Normalization,
    target_spacing: Option<[f64; 3]>,
) -> Result<(Array3<f32>, Geometry)> {
    let mut data = image.data().clone();
    normalization.apply(&mut data)?;
    match target_spacing {
        Some(sp) => {
            let g = geometry_with_spacing(image.geometry(), sp)?;
            let v = Volume::new(data, image.geometry().clone()).map_err(|source| {
                TrainError::Volume {
                    context: "normalised image".into(),
                    source,
                }
            })?;
            let fill = v.data().iter().copied().fold(f32::INFINITY, f32::min);
            let r = resample_image(&v, &g, Interpolation::Linear, fill)?;
            Ok((r.into_parts().0, g))
        }
        None => Ok((data, image.geometry().clone())),
    }
}

/// Dice of class `c` between two label maps (1 when both are empty), over the voxels the
/// truth annotates: voxels where `truth` is [`crate::IGNORE_LABEL`] are left out.
pub fn dice(pred: &Array3<u8>, truth: &Array3<u8>, c: u8) -> f64 {
    let (mut inter, mut a, mut b) = (0usize, 0usize, 0usize);
    for (p, t) in pred.iter().zip(truth.iter()) {
        if *t == crate::IGNORE_LABEL {
            continue;
        }
        let (x, y) = (*p == c, *t == c);
        inter += usize::from(x && y);
        a += usize::from(x);
        b += usize::from(y);
    }
    if a + b == 0 {
        1.0
    } else {
        2.0 * inter as f64 / (a + b) as f64
    }
}

/// Symmetric 95th-percentile Hausdorff distance (mm) between the surfaces of two masks, as
/// `negvol_metrics` defines it (boundary voxels with 6-connectivity, exact anisotropic EDT,
/// the max of the two directed 95th percentiles). `None` when either mask is empty.
pub fn hd95(pred: &Array3<bool>, truth: &Array3<bool>, spacing: [f64; 3]) -> Result<Option<f64>> {
    let opts = negvol_metrics::EvalOptions {
        surfels: false,
        solid: false,
        seed_paper: false,
        ..Default::default()
    };
    if !pred.iter().any(|v| *v) || !truth.iter().any(|v| *v) {
        return Ok(None);
    }
    let m = negvol_metrics::evaluate_pair(truth.view(), pred.view(), spacing, &opts)
        .map_err(|e| TrainError::Network(format!("HD95: {e}")))?;
    Ok(m.voxel_surface.hd_percentile.get())
}

/// Dice per foreground class and mean HD95 (over classes where defined) of a prediction.
/// Unannotated voxels ([`crate::IGNORE_LABEL`] in `truth`) are left out of the Dice, and a
/// case that has any gets no HD95 (surface distances to a partial annotation mean nothing).
pub fn score_case(
    pred: &Volume<u8>,
    truth: &Volume<u8>,
    classes: usize,
    with_hd95: bool,
) -> Result<(Vec<f64>, Option<f64>)> {
    let with_hd95 = with_hd95 && !truth.data().iter().any(|v| *v == crate::IGNORE_LABEL);
    let mut dices = Vec::with_capacity(classes.saturating_sub(1));
    let mut hds = Vec::new();
    for c in 1..classes {
        dices.push(dice(pred.data(), truth.data(), c as u8));
        if with_hd95 {
            let p = pred.data().mapv(|v| v == c as u8);
            let t = truth.data().mapv(|v| v == c as u8);
            if let Some(h) = hd95(&p, &t, truth.geometry().spacing())? {
                hds.push(h);
            }
        }
    }
    let hd = (!hds.is_empty()).then(|| hds.iter().sum::<f64>() / hds.len() as f64);
    Ok((dices, hd))
}

/// Trains one network with one configuration.
pub struct Trainer {
    cfg: TrainConfig,
    vs: VarStore,
    net: Box<dyn Network>,
    objective: Box<dyn Objective>,
    opt: Optimizer,
    state: TrainState,
    model: serde_json::Value,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("cfg", &self.cfg)
            .field("state", &self.state)
            .finish()
    }
}

impl Trainer {
    /// A trainer for `net` (whose variables live in `vs`) and `objective`. `model` describes
    /// the network and loss (stored verbatim in checkpoints so that they can be rebuilt).
    pub fn new(
        cfg: TrainConfig,
        vs: VarStore,
        net: Box<dyn Network>,
        objective: Box<dyn Objective>,
        model: serde_json::Value,
    ) -> Result<Self> {
        cfg.validate()?;
        let opt = Optimizer::new(&cfg.optimizer, &vs)?;
        let state = TrainState {
            loss_scale: if cfg.precision == Precision::F16 {
                65536.0
            } else {
                1.0
            },
            ..Default::default()
        };
        Ok(Self {
            cfg,
            vs,
            net,
            objective,
            opt,
            state,
            model,
        })
    }

    /// The configuration (with the normalisation fitted once [`Trainer::fit`] ran).
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The training state.
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// The variables.
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// The network.
    pub fn network(&self) -> &dyn Network {
        self.net.as_ref()
    }

    /// Continue from a checkpoint (its JSON record or weights file): weights, optimiser
    /// state, training state and fitted normalisation. The network must be the same
    /// architecture; the configuration's epochs, patience and validation may differ.
    pub fn resume(&mut self, checkpoint: impl AsRef<Path>) -> Result<()> {
        let (json, rec) = read_record(checkpoint.as_ref())?;
        load_weights(&json, &rec, &mut self.vs)?;
        load_optimizer(&json, &rec, &mut self.opt)?;
        if rec.config.targets != self.cfg.targets {
            return Err(TrainError::Checkpoint {
                path: json,
                message: format!(
                    "targets {:?} differ from the configuration's {:?}",
                    rec.config.targets, self.cfg.targets
                ),
            });
        }
        self.cfg.normalization = rec.config.normalization.clone();
        self.state = rec.state;
        Ok(())
    }

    fn prepare(&self, cases: &[Case]) -> Result<Vec<PreparedCase>> {
        use rayon::prelude::*;
        let (norm, spacing) = (&self.cfg.normalization, self.cfg.target_spacing);
        let orientation = self.cfg.orientation.as_deref();
        let crop_margin = self.cfg.crop_margin_mm;
        cases
            .par_iter()
            .map(|c| {
                let turned = match orientation_transform(c.image.geometry(), orientation)? {
                    Some(t) => {
                        let vol = |source| TrainError::Volume {
                            context: format!("case {}: reorienting", c.id),
                            source,
                        };
                        Some((
                            t.apply(&c.image).map_err(vol)?,
                            t.apply(&c.label).map_err(vol)?,
                        ))
                    }
                    None => None,
                };
                let (image, label) = match &turned {
                    Some((i, l)) => (i, l),
                    None => (&c.image, &c.label),
                };
                let (img, geom) = prepare_image(image, norm, spacing)?;
                let lab = if geom == *label.geometry() {
                    label.data().clone()
                } else {
                    resample_labels(label, &geom, 0)?.into_parts().0
                };
                let (img, lab) = match crop_margin.and_then(|m| {
                    let sp = geom.spacing();
                    let margin = [0, 1, 2].map(|a| (m / sp[a]).ceil() as usize);
                    voi_around_labels(&lab, margin)
                }) {
                    Some((start, size)) => {
                        let s0 = start.map(|x| x as usize);
                        let sl = ndarray::s![
                            s0[0]..s0[0] + size[0],
                            s0[1]..s0[1] + size[1],
                            s0[2]..s0[2] + size[2]
                        ];
                        (img.slice(sl).to_owned(), lab.slice(sl).to_owned())
                    }
                    None => (img, lab),
                };
                PreparedCase::new(c.id.clone(), img, lab, geom.spacing())
            })
            .collect()
    }

    /// The loader of `epoch`'s training batches.
    fn loader(&self, cases: &Arc<Vec<PreparedCase>>, epoch: usize) -> Result<Loader> {
        Loader::new(
            cases.clone(),
            &self.cfg.sampler,
            &self.cfg.augment,
            self.cfg.seed,
            epoch,
        )
    }

    fn batch_tensors(&self, b: &Batch) -> (Tensor, Tensor) {
        let dev = self.vs.device();
        let [n, i, j, k] = b.shape;
        let shape = [n as i64, 1, i as i64, j as i64, k as i64];
        let x = Tensor::from_slice(&b.image).view(shape).to_device(dev);
        let y = Tensor::from_slice(&b.target)
            .view([n as i64, i as i64, j as i64, k as i64])
            .to_device(dev);
        (x, y)
    }

    /// [`Trainer::train_batch`] with the time of each phase: the device is synchronised after
    /// each one, so the phases add up to more than an unprofiled step; use it to see where a
    /// step's time goes, not to measure throughput.
    pub fn train_batch_profiled(
        &mut self,
        x: &Tensor,
        y: &Tensor,
    ) -> Result<(StepOutcome, StepTimes)> {
        let (epoch, batch) = (self.state.epoch, self.state.global_step as usize);
        let mut times = StepTimes::default();
        let outcome = self.train_step(x, y, epoch, batch, Some(&mut times))?;
        Ok((outcome, times))
    }

    /// One optimiser step on a batch that is already on the trainer's device, with the
    /// configured precision (autocast, f16 loss scaling), gradient clipping and the current
    /// learning rate: the step [`Trainer::fit`] takes, for custom loops and throughput
    /// benchmarks. `x` is `[N, 1, ...]` (float, normalised as the configuration says), `y`
    /// `[N, ...]` class indices (Int64). Advances the global step count (not the epoch).
    ///
    /// Errors: shape or kind mismatches (network or loss), a non-finite loss or gradient norm
    /// (except f16 steps skipped by loss scaling, reported in [`StepOutcome::skipped`]).
    pub fn train_batch(&mut self, x: &Tensor, y: &Tensor) -> Result<StepOutcome> {
        let (epoch, batch) = (self.state.epoch, self.state.global_step as usize);
        self.train_step(x, y, epoch, batch, None)
    }

    /// One optimiser step on a batch (`epoch` and `batch` only name it in errors); with
    /// `times`, the device is synchronised after each phase and the phase's wall-clock time
    /// added to it.
    fn train_step(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        epoch: usize,
        batch: usize,
        mut times: Option<&mut StepTimes>,
    ) -> Result<StepOutcome> {
        let device = self.vs.device();
        let mut clock = Instant::now();
        let mut mark = |times: &mut Option<&mut StepTimes>,
                        phase: fn(&mut StepTimes) -> &mut f64| {
            if let Some(t) = times.as_deref_mut() {
                if let Device::Cuda(i) = device {
                    tch::Cuda::synchronize(i as i64);
                }
                *phase(t) += clock.elapsed().as_secs_f64();
                clock = Instant::now();
            }
        };
        self.opt.zero_grad();
        let amp = self.cfg.precision.autocasts_on(device);
        if amp {
            crate::config::set_autocast_dtype(self.cfg.precision);
        }
        let outputs = crate::config::autocast(amp, || self.net.forward_deep(x, true))?;
        let outputs: Vec<Tensor> = outputs.iter().map(|o| o.to_kind(Kind::Float)).collect();
        mark(&mut times, |t| &mut t.forward);
        let loss = self.objective.loss_deep(&outputs, y)?;
        if loss.numel() != 1 {
            return Err(TrainError::Loss(format!(
                "the loss has shape {:?}, not a scalar",
                loss.size()
            )));
        }
        let lv = loss.double_value(&[]);
        mark(&mut times, |t| &mut t.loss);
        let scaling = self.cfg.precision == Precision::F16 && amp;
        if !lv.is_finite() && !scaling {
            return Err(TrainError::Loss(format!(
                "non-finite loss {lv} at epoch {epoch}, batch {batch}"
            )));
        }
        let scale = if scaling { self.state.loss_scale } else { 1.0 };
        (loss * scale)
            .f_backward()
            .map_err(|e| TrainError::torch("backward pass", e))?;
        mark(&mut times, |t| &mut t.backward);
        let mut norm = self.opt.grad_norm();
        mark(&mut times, |t| &mut t.grad_norm);
        if scaling {
            if !norm.is_finite() {
                self.state.loss_scale = (self.state.loss_scale * 0.5).max(1.0);
                self.state.good_steps = 0;
                self.opt.zero_grad();
                return Ok(StepOutcome {
                    loss: lv,
                    grad_norm: f64::NAN,
                    skipped: true,
                });
            }
            self.opt.scale_grads(1.0 / scale);
            norm /= scale;
            self.state.good_steps += 1;
            if self.state.good_steps >= 2000 {
                self.state.loss_scale *= 2.0;
                self.state.good_steps = 0;
            }
        } else if !norm.is_finite() {
            return Err(TrainError::Loss(format!(
                "non-finite gradient norm at epoch {epoch}, batch {batch}"
            )));
        }
        if let Some(c) = self.cfg.grad_clip {
            if norm > c {
                self.opt.scale_grads(c / (norm + 1e-6));
            }
        }
        self.opt.step();
        mark(&mut times, |t| &mut t.optimizer);
        self.state.global_step += 1;
        Ok(StepOutcome {
            loss: lv,
            grad_norm: norm,
            skipped: false,
        })
    }

    /// Validate on whole cases: mean Dice per class and mean HD95.
    pub fn validate(&self, cases: &[Case]) -> Result<(Vec<f64>, Option<f64>)> {
        let k = self.cfg.classes();
        let mut sums = vec![0.0; k - 1];
        let mut hds = Vec::new();
        for c in cases {
            let pred = predict_image(
                self.net.as_ref(),
                &c.image,
                &self.cfg.normalization,
                self.cfg.orientation.as_deref(),
                self.cfg.target_spacing,
                &self.cfg.validation.inference,
                self.vs.device(),
            )?;
            let (d, h) = score_case(&pred.labels, &c.label, k, self.cfg.validation.hd95)?;
            for (s, v) in sums.iter_mut().zip(d) {
                *s += v;
            }
            if let Some(h) = h {
                hds.push(h);
            }
        }
        let n = cases.len().max(1) as f64;
        let hd = (!hds.is_empty()).then(|| hds.iter().sum::<f64>() / hds.len() as f64);
        Ok((sums.into_iter().map(|s| s / n).collect(), hd))
    }

    /// Train for the configured epochs (from the resumed state, if any), validating on `val`
    /// (may be empty), writing `last.*` every epoch and `best.*` on improvement into
    /// `out_dir`, and a line per epoch to `out_dir/log.jsonl`. A fresh (not resumed) run first
    /// removes the `log.jsonl` and `best.*` an earlier run left in `out_dir`. With a wall-clock budget
    /// ([`TrainConfig::max_minutes`]) the run may end before its epochs are done; the
    /// returned state says so (`stopped_by_time_budget`).
    pub fn fit(
        &mut self,
        train: &[Case],
        val: &[Case],
        out_dir: &Path,
        observer: &mut dyn Observer,
    ) -> Result<TrainSummary> {
        if train.is_empty() {
            return Err(TrainError::Config("no training case".into()));
        }
        let ignore = self.cfg.ignore_label;
        for c in train.iter().chain(val) {
            if let Some(m) = c.label.data().iter().find(|l| {
                **l as usize >= self.cfg.classes() && !(ignore && **l == crate::IGNORE_LABEL)
            }) {
                return Err(TrainError::case(
                    &c.id,
                    if *m == crate::IGNORE_LABEL {
                        "unannotated voxels (the ignore label 255) but the run's \
                         train.ignore_label is off"
                            .to_string()
                    } else {
                        format!(
                            "label {m} but only {} targets are configured",
                            self.cfg.targets.len()
                        )
                    },
                ));
            }
        }
        std::fs::create_dir_all(out_dir).map_err(|e| TrainError::io(out_dir, e))?;
        if self.state.epoch == 0 && self.state.history.is_empty() {
            // A fresh run: a log or a best checkpoint an earlier run left in `out_dir` is not
            // this run's (loaders prefer best.json to last.json), so they go.
            let (w, o, j) = crate::checkpoint::checkpoint_paths(out_dir, "best");
            for p in [out_dir.join("log.jsonl"), w, o, j] {
                match std::fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(TrainError::io(&p, e))
                    }
                    _ => {}
                }
            }
        }
        if !self.cfg.normalization.is_fitted() {
            self.cfg.normalization = self.cfg.normalization.fit(
                train.iter().map(|c| (c.image.data(), c.label.data())),
                100_000,
            )?;
        }
        let cases = Arc::new(self.prepare(train)?);
        let log = out_dir.join("log.jsonl");
        let mut best = self
            .state
            .best_epoch
            .map(|_| crate::checkpoint::checkpoint_paths(out_dir, "best").2);
        let mut last = crate::checkpoint::checkpoint_paths(out_dir, "last").2;
        let base_lr = self.cfg.optimizer.lr();
        let epochs = self.cfg.epochs;
        let started = Instant::now();
        let budget_s = self.cfg.max_minutes.map(|m| m * 60.0);
        // Seconds of the epochs completed in this call (training and validation).
        let (mut done_s, mut done_epochs) = (0.0f64, 0usize);
        self.state.stopped_by_time_budget = false;
        // The next epoch's loader, started before this epoch's validation and checkpoints so
        // that its workers make the first batches meanwhile. Its batches are a function of
        // (cases, sampler, augmentation, seed, epoch) alone (see `crate::sampler`; the workers
        // never touch libtorch's generator), so starting it early changes no data. An error
        // from starting it is kept and returned where the epoch would have started it.
        let mut next_loader: Option<(usize, Result<Loader>)> = None;
        while self.state.epoch < epochs && !self.state.stopped_early {
            let epoch = self.state.epoch;
            let t0 = Instant::now();
            tch::manual_seed(self.cfg.seed.wrapping_add(epoch as u64) as i64);
            let lr = self.cfg.schedule.lr(base_lr, epoch, epochs);
            self.opt.set_lr(lr);
            let loader = match next_loader.take() {
                Some((e, loader)) if e == epoch => loader?,
                _ => self.loader(&cases, epoch)?,
            };
            let batches = self.cfg.sampler.batches_per_epoch;
            let (mut loss_sum, mut norm_sum, mut counted, mut skipped) = (0.0, 0.0, 0usize, 0usize);
            let mut samples = 0usize;
            // Seconds blocked on the loader: from the epoch's start to the first batch (which
            // covers starting the loader when it was not started early), then from each step's
            // end to the next batch. The rest of the training time is the steps'.
            let (mut data_wait, mut waiting_since) = (0.0f64, t0);
            let mut batch_iter = loader.enumerate();
            loop {
                let next = batch_iter.next();
                data_wait += waiting_since.elapsed().as_secs_f64();
                let Some((bi, b)) = next else {
                    break;
                };
                let b = b?;
                let (x, y) = self.batch_tensors(&b);
                let StepOutcome {
                    loss: lv,
                    grad_norm: norm,
                    skipped: skip,
                } = self.train_step(&x, &y, epoch, bi, None)?;
                samples += b.shape[0];
                if skip {
                    skipped += 1;
                } else {
                    loss_sum += lv;
                    norm_sum += norm;
                    counted += 1;
                }
                observer.on_step(&StepEvent {
                    epoch,
                    batch: bi,
                    batches,
                    loss: lv,
                    mean_loss: loss_sum / counted.max(1) as f64,
                    lr,
                    samples_per_second: samples as f64 / t0.elapsed().as_secs_f64().max(1e-9),
                });
                waiting_since = Instant::now();
            }
            // Every batch was taken: the workers have ended; join them before reading the clock.
            drop(batch_iter);
            let train_secs = t0.elapsed().as_secs_f64();
            let out_of_time = epoch + 1 < epochs
                && budget_s.is_some_and(|b| {
                    let mean_epoch = (done_s + train_secs) / (done_epochs + 1) as f64;
                    started.elapsed().as_secs_f64() + mean_epoch > b
                });
            if epoch + 1 < epochs && !out_of_time {
                next_loader = Some((epoch + 1, self.loader(&cases, epoch + 1)));
            }
            let every = self.cfg.validation.every;
            let do_val = !val.is_empty()
                && every > 0
                && ((epoch + 1) % every == 0 || epoch + 1 == epochs || out_of_time);
            let (val_dice, val_hd95) = if do_val {
                let (d, h) = self.validate(val)?;
                (Some(d), h)
            } else {
                (None, None)
            };
            let val_mean_dice = val_dice
                .as_ref()
                .map(|d| d.iter().sum::<f64>() / d.len().max(1) as f64);
            let record = EpochRecord {
                epoch,
                lr,
                train_loss: loss_sum / counted.max(1) as f64,
                grad_norm: norm_sum / counted.max(1) as f64,
                skipped_steps: skipped,
                val_dice,
                val_mean_dice,
                val_hd95,
                seconds: t0.elapsed().as_secs_f64(),
                samples_per_second: samples as f64 / train_secs.max(1e-9),
                data_wait_seconds: data_wait,
            };
            self.state.epoch = epoch + 1;
            self.state.stopped_by_time_budget = out_of_time;
            self.state.history.push(record.clone());
            let mut improved = false;
            if let Some(m) = val_mean_dice {
                if self.state.best_metric.is_none_or(|b| m > b) {
                    self.state.best_metric = Some(m);
                    self.state.best_epoch = Some(epoch);
                    self.state.validations_without_improvement = 0;
                    improved = true;
                } else {
                    self.state.validations_without_improvement += 1;
                    if let Some(p) = self.cfg.validation.patience {
                        if self.state.validations_without_improvement >= p {
                            self.state.stopped_early = true;
                        }
                    }
                }
            }
            append_json_line(&log, &record)?;
            observer.on_epoch(&record);
            if improved {
                let p = save_checkpoint(
                    out_dir,
                    "best",
                    &self.vs,
                    &self.opt,
                    &self.cfg,
                    &self.model,
                    &self.state,
                )?;
                observer.on_checkpoint(&p);
                best = Some(p);
            }
            last = save_checkpoint(
                out_dir,
                "last",
                &self.vs,
                &self.opt,
                &self.cfg,
                &self.model,
                &self.state,
            )?;
            observer.on_checkpoint(&last);
            done_s += t0.elapsed().as_secs_f64();
            done_epochs += 1;
            if out_of_time {
                break;
            }
        }
        let _ = crate::plot::write_history_png(&out_dir.join("curves.png"), &self.state.history);
        Ok(TrainSummary {
            state: self.state.clone(),
            last,
            best,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dice_and_hd95_on_parallel_planes() {
        let a = Array3::from_shape_fn((8, 5, 5), |(i, _, _)| i == 2);
        let b = Array3::from_shape_fn((8, 5, 5), |(i, _, _)| i == 5);
        let h = hd95(&a, &b, [0.5, 1.0, 1.0]).unwrap().unwrap();
        assert!((h - 1.5).abs() < 1e-9, "{h}");
        assert_eq!(
            hd95(&a, &Array3::from_elem((8, 5, 5), false), [1.0; 3]).unwrap(),
            None
        );
        let la = a.mapv(u8::from);
        let mut lb = la.clone();
        lb[[2, 0, 0]] = 0;
        assert!((dice(&la, &lb, 1) - 2.0 * 24.0 / 49.0).abs() < 1e-12);
        assert_eq!(dice(&la, &la, 3), 1.0);
    }

    /// Sparse annotation: voxels the truth marks 255 count neither way, and such a case gets
    /// no HD95.
    #[test]
    fn unannotated_voxels_are_left_out_of_validation_scores() {
        // Truth: plane i = 2 is class 1, but planes i >= 4 are unannotated. The prediction
        // adds class 1 on plane i = 5 (unannotated: not a false positive) and on plane i = 0
        // (annotated background: a false positive).
        let mut truth = Array3::from_shape_fn((8, 5, 5), |(i, _, _)| u8::from(i == 2));
        truth
            .slice_mut(ndarray::s![4.., .., ..])
            .fill(crate::IGNORE_LABEL);
        let mut pred = Array3::from_shape_fn((8, 5, 5), |(i, _, _)| u8::from(i == 2 || i == 5));
        assert_eq!(dice(&pred, &truth, 1), 1.0);
        pred.slice_mut(ndarray::s![0, .., ..]).fill(1);
        assert!((dice(&pred, &truth, 1) - 2.0 * 25.0 / 75.0).abs() < 1e-12);
        let g = Geometry::from_spacing([8, 5, 5], [1.0; 3]).unwrap();
        let (p, t) = (
            Volume::new(pred.clone(), g.clone()).unwrap(),
            Volume::new(truth, g.clone()).unwrap(),
        );
        let (d, h) = score_case(&p, &t, 2, true).unwrap();
        assert!((d[0] - 2.0 * 25.0 / 75.0).abs() < 1e-12);
        assert_eq!(h, None);
        // Fully annotated, the same prediction gets its HD95.
        let full = Volume::new(
            Array3::from_shape_fn((8, 5, 5), |(i, _, _)| u8::from(i == 2)),
            g,
        )
        .unwrap();
        assert!(score_case(&p, &full, 2, true).unwrap().1.is_some());
    }

    /// A scan stored LPS and the same scan stored RAS get the same prediction, voxel for
    /// world voxel, when the model reorients to RAS; in stored order they do not (a
    /// convolution is not flip-invariant), which is why runs reorient by default.
    #[test]
    fn reorienting_makes_the_prediction_independent_of_storage_order() {
        let vs = VarStore::new(Device::Cpu);
        tch::manual_seed(5);
        let cfg: negvol_nets::NetConfig = serde_json::from_str(
            r#"{"arch": "unet3d", "classes": 3, "f_maps": [4, 8], "num_groups": 2}"#,
        )
        .unwrap();
        let net = negvol_nets::build(&vs.root(), &cfg).unwrap();
        let g = Geometry::from_spacing([12, 10, 8], [1.0, 1.2, 0.9]).unwrap();
        let ras = Volume::new(
            Array3::from_shape_fn((12, 10, 8), |(i, j, k)| {
                ((i * 7 + j * 3 + k * 5) % 11) as f32 * 100.0 - 300.0 + (i * j) as f32
            }),
            g,
        )
        .unwrap();
        let lps = negvol_volume::reorient(&ras, "LPS").unwrap();
        assert_ne!(lps.data(), ras.data());
        let inf = InferenceConfig {
            patch: [8, 8, 8],
            ..Default::default()
        };
        let norm = Normalization::ZScore { clip: None };
        let run = |img: &Volume<f32>, o: Option<&str>| {
            let net: &dyn Network = &net;
            predict_image(net, img, &norm, o, None, &inf, Device::Cpu).unwrap()
        };
        let back_to_ras = |p: &Volume<f32>| negvol_volume::reorient(p, "RAS").unwrap();
        let (a, b) = (run(&ras, Some("RAS")), run(&lps, Some("RAS")));
        // Predictions come back in each input's own grid...
        assert_eq!(b.labels.geometry(), lps.geometry());
        // ...and are the same in world space, bit for bit.
        for c in 0..3 {
            assert_eq!(
                back_to_ras(&b.probabilities[c]).data(),
                a.probabilities[c].data()
            );
        }
        let (a0, b0) = (run(&ras, None), run(&lps, None));
        assert_eq!(a0.probabilities[1].data(), a.probabilities[1].data());
        assert_ne!(
            back_to_ras(&b0.probabilities[1]).data(),
            a0.probabilities[1].data()
        );
    }
}
