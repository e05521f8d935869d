//! # negvol-train
//!
//! Datasets, preprocessing, patch sampling, augmentation, the training loop, checkpoints and
//! sliding-window inference for 3D segmentation networks on tch.
#![warn(missing_docs)]
// `!(x > 0.0)` is used on purpose: unlike `x <= 0.0` it also rejects NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod dataset;
mod error;
pub mod infer;
pub mod interp;
pub mod optim;
pub mod plot;
pub mod preprocess;
pub mod run;
pub mod sampler;
pub mod trainer;

pub use config::{Precision, TrainConfig, ValidationConfig};
pub use dataset::{Case, CaseSpec, DatasetSpec};
pub use error::{Result, TrainError};
pub use infer::{sliding_window, InferenceConfig, Prediction};
/// The tch version this crate is built on (for callers that build tensors or devices).
pub use tch;
pub use trainer::{predict_image, Network, Objective, Observer, Trainer};
