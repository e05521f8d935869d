//! # negvol-losses
//!
//! Multi-class, batch-aware segmentation losses on logits (tch): cross-entropy, soft Dice,
//! Dice + CE (the seed paper's "D+CE"), focal, Tversky and the seed paper's own Dice variant
//! (hard Dice forward with the Milletari gradient), with class weights, ignore masks and a
//! deep-supervision wrapper with nnU-Net's `1/2^i` weights.
//!
//! Inputs: `logits` `[N, C, *spatial]` (any number of spatial axes, usually 3), `target`
//! `[N, *spatial]` (or `[N, 1, *spatial]`) of `Int64` class indices in `0..C`. Voxels are
//! excluded from every sum when their label equals [`LossConfig::ignore_index`] or when the
//! optional mask passed to [`LossConfig::compute_masked`] is zero there.
//!
//! ## Definitions
//! With `p = softmax(logits)` over classes, `g` the one-hot target, `m` the keep mask (1 = used),
//! `w_c` the class weights (default 1) and sums over voxels (per sample, or over the whole batch
//! with `batch_dice`):
//! - **CE**: `sum_v m_v w_{y_v} (-log p_{y_v,v}) / sum_v m_v w_{y_v}` (PyTorch's weighted mean;
//!   0 when every voxel is masked).
//! - **Soft Dice** (nnU-Net / MONAI): `D_c = (2 sum m p_c g_c + s) / (sum m p_c^q + sum m g_c + s)`
//!   with `q = 2` if `squared_pred` (Milletari) else 1 and `s = smooth`; loss
//!   `1 - sum_c w_c D_c / sum_c w_c` over the scored classes (background excluded unless
//!   `include_background`), averaged over samples (or computed once with `batch_dice`).
//! - **Dice + CE**: `alpha * Dice + beta * CE` (the paper's D+CE is `alpha = beta = 1` with the
//!   paper's Dice: set `dice` to [`DiceVariant::Paper`]).
//! - **Focal** (Lin et al.): `sum m w_y (1 - p_y)^gamma (-log p_y) / sum m w_y`; `gamma = 0` is CE.
//! - **Tversky** (Salehi et al.): `T_c = (TP + s) / (TP + alpha FP + beta FN + s)` with soft
//!   `TP = sum m p_c g_c`, `FP = sum m p_c (1 - g_c)`, `FN = sum m (1 - p_c) g_c`; loss
//!   `1 - weighted mean of T_c`; `alpha = beta = 0.5` is soft Dice (with `q = 1`).
//! - **Paper Dice** (the seed paper's `DiceLoss`): forward `1 - mean_c D_c` with the *hard*
//!   Dice `D_c = 2 I_c / S_c`, `I_c = sum m h_c g_c`, `S_c = sum m h_c + sum m g_c + 2e-6`,
//!   `h_c = [argmax p = c]`; backward is Milletari's soft gradient evaluated at the hard
//!   quantities: `dL/dp_c = -(2 g_c / S_c - 4 p_c I_c / S_c^2) / K` for each of the `K` scored
//!   classes, and the opposite amount on the background probability `p_0` when `c != 0` (for two
//!   classes this is exactly the paper's gradient `(+dD, -dD)` on `(p_0, p_1)`). Class weights
//!   weight the per-class terms as in soft Dice. The gradient then flows through the softmax.
//!
//! ```
//! use negvol_losses::{LossConfig, LossKind};
//! use tch::{Device, Kind, Tensor};
//!
//! let cfg: LossConfig = serde_json::from_str(r#"{"loss": "dice-ce", "alpha": 1.0, "beta": 1.0}"#)?;
//! let logits = Tensor::zeros([1, 2, 4, 4, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
//! let target = Tensor::zeros([1, 4, 4, 4], (Kind::Int64, Device::Cpu));
//! let loss = cfg.compute(&logits, &target)?;
//! loss.backward();
//! // uniform prediction: CE = ln 2, Dice of an absent foreground = 1 - s/(32 + s) ~ 1
//! assert!((loss.double_value(&[]) - (2f64.ln() + 1.0)).abs() < 1e-4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod deep;
mod losses;

pub use deep::{downsample_target, DeepSupervision};

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LossError {
    /// Logits and target shapes do not fit together.
    #[error("shape mismatch: logits {logits:?} vs target {target:?}: {reason}")]
    Shape {
        /// Logits shape.
        logits: Vec<i64>,
        /// Target shape.
        target: Vec<i64>,
        /// What is expected.
        reason: String,
    },
    /// The target holds a label outside `0..classes` (and not the ignore index).
    #[error(
        "target labels must be in 0..{classes} (or the ignore index {ignore:?}); found {found}"
    )]
    Label {
        /// Number of classes.
        classes: i64,
        /// Ignore index, if any.
        ignore: Option<i64>,
        /// An offending label.
        found: i64,
    },
    /// The target is not an integer tensor.
    #[error("target must hold Int64 class indices, got {0:?}")]
    TargetKind(tch::Kind),
    /// The configuration is inconsistent.
    #[error("invalid loss configuration: {0}")]
    Config(String),
    /// The loss came out NaN or infinite (non-finite logits).
    #[error("loss {kind} is not finite ({value}); check the logits for NaN/inf")]
    NonFinite {
        /// Loss name.
        kind: String,
        /// The value.
        value: f64,
    },
    /// A libtorch operation failed.
    #[error("libtorch error in {context}: {source}")]
    Torch {
        /// Where.
        context: String,
        /// The underlying error.
        #[source]
        source: tch::TchError,
    },
}

impl From<tch::TchError> for LossError {
    fn from(source: tch::TchError) -> Self {
        LossError::Torch {
            context: "loss computation".into(),
            source,
        }
    }
}

/// Which Dice is used inside [`LossKind::DiceCe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiceVariant {
    /// Soft Dice (default).
    #[default]
    Soft,
    /// The seed paper's hard-Dice-forward / Milletari-gradient Dice.
    Paper,
}

fn one() -> f64 {
    1.0
}
fn two() -> f64 {
    2.0
}
fn tv_alpha() -> f64 {
    0.3
}
fn tv_beta() -> f64 {
    0.7
}

/// The loss function and its own parameters. JSON: the `loss` tag plus the fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "loss", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LossKind {
    /// Cross-entropy.
    Ce,
    /// Soft Dice.
    Dice,
    /// `alpha * Dice + beta * CE`.
    DiceCe {
        /// Dice weight (default 1).
        #[serde(default = "one")]
        alpha: f64,
        /// CE weight (default 1).
        #[serde(default = "one")]
        beta: f64,
        /// Soft (default) or the paper's Dice.
        #[serde(default)]
        dice: DiceVariant,
    },
    /// Focal loss.
    Focal {
        /// Focusing parameter (default 2).
        #[serde(default = "two")]
        gamma: f64,
    },
    /// Tversky loss.
    Tversky {
        /// False-positive weight (default 0.3).
        #[serde(default = "tv_alpha")]
        alpha: f64,
        /// False-negative weight (default 0.7).
        #[serde(default = "tv_beta")]
        beta: f64,
    },
    /// The seed paper's Dice (hard forward, Milletari gradient).
    PaperDice,
}

fn default_smooth() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}

/// A loss: its kind plus the options shared by all kinds.
///
/// JSON example: `{"loss": "dice-ce", "alpha": 1, "beta": 1, "include_background": false,
/// "batch_dice": true, "class_weights": [1, 2], "ignore_index": 255}`.
/// The default is soft Dice + CE with `alpha = beta = 1` (nnU-Net's default loss).
/// Unknown fields (and fields of another loss kind, e.g. `gamma` with `dice`) are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawLossConfig")]
pub struct LossConfig {
    /// The loss and its parameters (JSON: `loss` tag and its fields at the same level).
    #[serde(flatten)]
    pub kind: LossKind,
    /// Per-class weights (length = classes); default all 1.
    #[serde(default)]
    pub class_weights: Option<Vec<f64>>,
    /// Target label to ignore (excluded from every sum); default none.
    #[serde(default)]
    pub ignore_index: Option<i64>,
    /// Score the background class (0) in Dice-type losses; default false (nnU-Net).
    #[serde(default)]
    pub include_background: bool,
    /// Dice-type sums over the whole batch instead of per sample; default false.
    #[serde(default)]
    pub batch_dice: bool,
    /// Dice/Tversky smoothing `s`; default 1e-5 (nnU-Net).
    #[serde(default = "default_smooth")]
    pub smooth: f64,
    /// Soft Dice with squared probabilities in the denominator (Milletari's form); default false.
    #[serde(default)]
    pub squared_pred: bool,
    /// Check target labels (one device sync) and the finiteness of the result (one more);
    /// default true.
    #[serde(default = "yes")]
    pub validate: bool,
}

/// What [`LossConfig`] is read from: the same fields plus every other key, to reject unknown ones
/// (`deny_unknown_fields` does not work together with a flattened enum).
#[derive(Deserialize)]
struct RawLossConfig {
    #[serde(flatten)]
    kind: LossKind,
    #[serde(default)]
    class_weights: Option<Vec<f64>>,
    #[serde(default)]
    ignore_index: Option<i64>,
    #[serde(default)]
    include_background: bool,
    #[serde(default)]
    batch_dice: bool,
    #[serde(default = "default_smooth")]
    smooth: f64,
    #[serde(default)]
    squared_pred: bool,
    #[serde(default = "yes")]
    validate: bool,
    #[serde(flatten)]
    rest: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

impl TryFrom<RawLossConfig> for LossConfig {
    type Error = String;

    fn try_from(r: RawLossConfig) -> Result<Self, String> {
        let own: &[&str] = match r.kind {
            LossKind::Ce | LossKind::Dice | LossKind::PaperDice => &[],
            LossKind::DiceCe { .. } => &["alpha", "beta", "dice"],
            LossKind::Focal { .. } => &["gamma"],
            LossKind::Tversky { .. } => &["alpha", "beta"],
        };
        let cfg = LossConfig {
            kind: r.kind,
            class_weights: r.class_weights,
            ignore_index: r.ignore_index,
            include_background: r.include_background,
            batch_dice: r.batch_dice,
            smooth: r.smooth,
            squared_pred: r.squared_pred,
            validate: r.validate,
        };
        if let Some(k) = r
            .rest
            .keys()
            .find(|k| k.as_str() != "loss" && !own.contains(&k.as_str()))
        {
            return Err(format!(
                "unknown field {k:?} for loss {:?} (its own fields: {own:?}; common: class_weights, \
                 ignore_index, include_background, batch_dice, smooth, squared_pred, validate)",
                cfg.name()
            ));
        }
        Ok(cfg)
    }
}

impl Default for LossConfig {
    fn default() -> Self {
        Self::new(LossKind::DiceCe {
            alpha: 1.0,
            beta: 1.0,
            dice: DiceVariant::Soft,
        })
    }
}

impl LossConfig {
    /// A configuration of the given kind with the default options.
    pub fn new(kind: LossKind) -> Self {
        Self {
            kind,
            class_weights: None,
            ignore_index: None,
            include_background: false,
            batch_dice: false,
            smooth: default_smooth(),
            squared_pred: false,
            validate: true,
        }
    }

    /// The seed paper's "D+CE": paper Dice + CE, both with weight 1.
    pub fn paper_dice_ce() -> Self {
        Self::new(LossKind::DiceCe {
            alpha: 1.0,
            beta: 1.0,
            dice: DiceVariant::Paper,
        })
    }

    /// A short name of the loss (`ce`, `dice`, `dice-ce`, ...).
    pub fn name(&self) -> &'static str {
        match self.kind {
            LossKind::Ce => "ce",
            LossKind::Dice => "dice",
            LossKind::DiceCe { .. } => "dice-ce",
            LossKind::Focal { .. } => "focal",
            LossKind::Tversky { .. } => "tversky",
            LossKind::PaperDice => "paper-dice",
        }
    }

    /// Checks the parameters (called by `compute`).
    pub fn validate_config(&self) -> Result<(), LossError> {
        let bad = |m: String| Err(LossError::Config(m));
        if !(self.smooth.is_finite() && self.smooth >= 0.0) {
            return bad(format!(
                "smooth must be finite and >= 0, got {}",
                self.smooth
            ));
        }
        if let Some(w) = &self.class_weights {
            if w.iter().any(|x| !x.is_finite() || *x < 0.0) || w.iter().all(|x| *x == 0.0) {
                return bad(format!(
                    "class_weights must be finite, >= 0 and not all 0: {w:?}"
                ));
            }
        }
        let nonneg = |x: f64| x.is_finite() && x >= 0.0;
        match self.kind {
            LossKind::DiceCe { alpha, beta, .. } if !(nonneg(alpha) && nonneg(beta)) => bad(
                format!("dice-ce alpha/beta must be finite and >= 0: {alpha}, {beta}"),
            ),
            LossKind::Focal { gamma } if !nonneg(gamma) => {
                bad(format!("focal gamma must be finite and >= 0, got {gamma}"))
            }
            LossKind::Tversky { alpha, beta } if !(nonneg(alpha) && nonneg(beta)) => bad(format!(
                "tversky alpha/beta must be finite and >= 0: {alpha}, {beta}"
            )),
            _ => Ok(()),
        }
    }

    /// Computes the loss (a scalar tensor with gradient) of `logits` `[N, C, *spatial]` against
    /// `target` `[N, *spatial]` (or `[N, 1, *spatial]`) Int64 class indices.
    pub fn compute(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor, LossError> {
        self.compute_masked(logits, target, None)
    }

    /// Like [`LossConfig::compute`], with an extra keep mask `[N, *spatial]` (or `[N, 1,
    /// *spatial]`; bool or numeric, nonzero = use the voxel).
    pub fn compute_masked(
        &self,
        logits: &Tensor,
        target: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor, LossError> {
        self.validate_config()?;
        let loss = losses::compute(self, logits, target, mask)?;
        if self.validate {
            let v = loss
                .f_double_value(&[])
                .map_err(|source| LossError::Torch {
                    context: "reading the loss".into(),
                    source,
                })?;
            if !v.is_finite() {
                return Err(LossError::NonFinite {
                    kind: self.name().into(),
                    value: v,
                });
            }
        }
        Ok(loss)
    }
}
