//! # negvol-losses
//!
//! Multi-class, batch-aware segmentation losses on logits (tch): cross-entropy, soft Dice,
//! Dice + CE, focal, Tversky and the seed paper's Dice variant.
