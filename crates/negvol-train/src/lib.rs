//! # negvol-train
//!
//! Datasets, patch sampling, augmentation, the training loop, checkpoints and sliding-window
//! inference for 3D segmentation networks on tch.
