//! Deep supervision: a weighted sum of one loss over several output resolutions.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{LossConfig, LossError};

/// Weights of the outputs of a deep-supervised network, highest resolution first, normalised to
/// sum 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeepSupervision {
    /// One weight per output, highest resolution first (sum 1).
    pub weights: Vec<f64>,
}

impl DeepSupervision {
    /// nnU-Net v2's weights for `levels` outputs: `1/2^i`, the lowest resolution set to 0 (when
    /// there are at least 2 levels), normalised to sum 1. E.g. 3 levels: `[2/3, 1/3, 0]`.
    pub fn nnunet(levels: usize) -> Result<Self, LossError> {
        let mut w: Vec<f64> = (0..levels).map(|i| 0.5f64.powi(i as i32)).collect();
        if levels > 1 {
            w[levels - 1] = 0.0;
        }
        Self::new(w)
    }

    /// `1/2^i` for every level (no zeroed lowest level), normalised.
    pub fn halving(levels: usize) -> Result<Self, LossError> {
        Self::new((0..levels).map(|i| 0.5f64.powi(i as i32)).collect())
    }

    /// Custom weights (finite, >= 0, not all 0), normalised to sum 1.
    pub fn new(weights: Vec<f64>) -> Result<Self, LossError> {
        let sum: f64 = weights.iter().sum();
        if weights.is_empty() || weights.iter().any(|w| !w.is_finite() || *w < 0.0) || sum <= 0.0 {
            return Err(LossError::Config(format!(
                "deep supervision weights must be finite, >= 0 and not all 0: {weights:?}"
            )));
        }
        Ok(Self {
            weights: weights.iter().map(|w| w / sum).collect(),
        })
    }

    /// `sum_i weights[i] * loss(outputs[i], target resized to outputs[i])`; the target (and mask)
    /// are down-sampled by nearest neighbour ([`downsample_target`]). Levels with weight 0 are
    /// not computed.
    pub fn compute(
        &self,
        loss: &LossConfig,
        outputs: &[Tensor],
        target: &Tensor,
    ) -> Result<Tensor, LossError> {
        self.compute_masked(loss, outputs, target, None)
    }

    /// Like [`DeepSupervision::compute`] with a keep mask (see [`LossConfig::compute_masked`]).
    pub fn compute_masked(
        &self,
        loss: &LossConfig,
        outputs: &[Tensor],
        target: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor, LossError> {
        if outputs.len() != self.weights.len() {
            return Err(LossError::Config(format!(
                "deep supervision has {} weights but the network gave {} outputs",
                self.weights.len(),
                outputs.len()
            )));
        }
        let mut total: Option<Tensor> = None;
        for (out, &w) in outputs.iter().zip(&self.weights) {
            if w == 0.0 {
                continue;
            }
            let sp = out.size();
            if sp.len() < 3 {
                return Err(LossError::Shape {
                    logits: sp,
                    target: target.size(),
                    reason: "deep-supervision output must be [N, C, *spatial]".into(),
                });
            }
            let t = downsample_target(target, &sp[2..])?;
            let m = match mask {
                Some(m) => Some(downsample_target(&m.f_to_kind(Kind::Int64)?, &sp[2..])?),
                None => None,
            };
            let l = loss.compute_masked(out, &t, m.as_ref())?.f_mul_scalar(w)?;
            total = Some(match total {
                Some(acc) => acc.f_add(&l)?,
                None => l,
            });
        }
        total.ok_or_else(|| LossError::Config("all deep supervision weights are 0".into()))
    }
}

/// Nearest-neighbour resize of a label map `[N, *sp]` (or `[N, 1, *sp]`) to the spatial size
/// `spatial` (1 to 3 axes); returned as `[N, *spatial]` Int64. A no-op when sizes already match.
/// For a factor-2 down-sampling it keeps the even voxels (PyTorch's `nearest` rule,
/// `src = floor(dst * in / out)`).
pub fn downsample_target(target: &Tensor, spatial: &[i64]) -> Result<Tensor, LossError> {
    let ts = target.size();
    let t = if ts.len() == spatial.len() + 2 && ts[1] == 1 {
        target.f_squeeze_dim(1)?
    } else {
        target.shallow_clone()
    };
    let ts = t.size();
    if ts.len() != spatial.len() + 1 {
        return Err(LossError::Shape {
            logits: spatial.to_vec(),
            target: ts,
            reason: "target rank does not match the output's spatial axes".into(),
        });
    }
    if ts[1..] == *spatial {
        return Ok(t);
    }
    let f = t.f_unsqueeze(1)?.f_to_kind(Kind::Float)?;
    let r = match spatial.len() {
        1 => f.f_upsample_nearest1d(spatial, None)?,
        2 => f.f_upsample_nearest2d(spatial, None, None)?,
        3 => f.f_upsample_nearest3d(spatial, None, None, None)?,
        n => {
            return Err(LossError::Config(format!(
                "deep supervision supports 1 to 3 spatial axes, got {n}"
            )))
        }
    };
    Ok(r.f_squeeze_dim(1)?.f_to_kind(Kind::Int64)?)
}
