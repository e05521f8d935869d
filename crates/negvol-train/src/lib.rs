//! # negvol-train
//!
//! Datasets, preprocessing, patch sampling, augmentation, the training loop, checkpoints and
//! sliding-window inference for 3D segmentation networks on tch.
//!
//! The stages, nnU-Net style, each with a serde configuration:
//! - [`dataset`]: a folder of case folders, a JSON manifest (the negvol-phantom
//!   `dataset.json` included), or an nnU-Net v2 / Decathlon raw dataset as it is; labels as
//!   masks, label-map classes or STL meshes, images as NIfTI or DICOM; geometry and label
//!   checks naming the case; export to nnU-Net v2 with the same folds; k-fold splits by
//!   patient;
//! - [`preprocess`] / [`interp`]: CT window, the paper's min-max to `[-1, 1]`, z-score, nnU-Net's
//!   foreground-percentile z-score (fitted on the training set and stored), resampling to a
//!   spacing, cropping to a volume of interest;
//! - [`augment`] / [`sampler`]: the paper's and nnU-Net's augmentations, image and label in
//!   sync, foreground oversampling, batches made on worker threads, deterministic per seed;
//! - [`trainer`] / [`optim`] / [`checkpoint`]: Adam/AdamW/SGD-Nesterov, step/poly LR, gradient
//!   clipping, CUDA autocast (bf16/f16), validation with Dice/HD95, early stopping, atomic best
//!   and last checkpoints, exact resume, `log.jsonl` and `curves.png`;
//! - [`infer`]: sliding-window inference with Gaussian weighting, batched windows, flip TTA;
//! - [`run`]: the whole run as one JSON ([`run::RunConfig`]) with the negvol networks and losses
//!   (deep supervision with nnU-Net's weights for networks that have it),
//!   cross-validation, and [`run::LoadedModel`] for inference from a checkpoint;
//! - [`ensemble`]: several models predicting together ([`ensemble::Ensemble`]: the mean of
//!   their softmax probabilities, then the argmax, e.g. the K models of a cross-validation
//!   folder `fold_*/`), as nnU-Net ensembles its folds;
//! - [`postprocess`]: keep the largest connected components of a predicted mask, and choose
//!   per target, on the pooled cross-validation, whether that helps (as nnU-Net does);
//! - [`refine`]: the paper's step C (Canny edges of the CT within the TB probability, closing);
//! - [`locate`]: the joint locator (coarse heatmap network x mean-mask atlas prior -> one
//!   volume of interest per joint), so the full-resolution networks run only there.
//!
//! ```
//! use ndarray::Array3;
//! use negvol_train::infer::{sliding_window, Activation, InferenceConfig};
//! use negvol_train::tch::{Device, Tensor};
//!
//! // An identity "network" through overlapping Gaussian-weighted windows gives the input back.
//! let img = Array3::from_shape_fn((12, 10, 9), |(i, j, k)| (i + 2 * j + 3 * k) as f32);
//! let cfg = InferenceConfig { patch: [8, 8, 8], activation: Activation::None, ..Default::default() };
//! let ident = |x: &Tensor| -> negvol_train::Result<Tensor> { Ok(x.shallow_clone()) };
//! let out = sliding_window(&ident, &img, &cfg, Device::Cpu)?;
//! assert!((out[[0, 5, 4, 3]] - img[[5, 4, 3]]).abs() < 1e-4);
//! # Ok::<(), negvol_train::TrainError>(())
//! ```
#![warn(missing_docs)]
// `!(x > 0.0)` is used on purpose: unlike `x <= 0.0` it also rejects NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod dataset;
pub mod ensemble;
mod error;
pub mod infer;
pub mod interp;
pub mod locate;
pub mod optim;
pub mod plan;
pub mod plot;
pub mod postprocess;
pub mod preprocess;
pub mod refine;
pub mod run;
pub mod sampler;
pub mod trainer;

pub use config::{Precision, TrainConfig, ValidationConfig};

/// The label-map value of voxels that carry no annotation (nnU-Net's `ignore` label, for
/// sparse annotation): with [`TrainConfig::ignore_label`] the loss leaves them out, patch
/// centres and normalisation statistics never come from them, and validation scores only the
/// annotated voxels. Targets are classes 1 to 254, so the value never names a structure.
pub const IGNORE_LABEL: u8 = 255;
pub use dataset::{Case, CaseSpec, DatasetSpec, LabelSource};
pub use error::{Result, TrainError};
pub use infer::{sliding_window, InferenceConfig, Prediction};
/// The tch version this crate is built on (for callers that build tensors or devices).
pub use tch;
pub use trainer::{predict_image, Network, Objective, Observer, StepOutcome, StepTimes, Trainer};
