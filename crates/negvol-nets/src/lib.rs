//! # negvol-nets
//!
//! 3D segmentation networks on tch (libtorch). Each network maps `[N, 1, ni, nj, nk]` to
//! logits `[N, classes, ni, nj, nk]`.
