//! # negvol-metrics
//!
//! Segmentation metrics with stated definitions: overlap scores, the exact anisotropic
//! Euclidean distance transform, surface extraction, surface-distance metrics and the seed
//! paper's probabilistic "CE" score. Pure Rust.
