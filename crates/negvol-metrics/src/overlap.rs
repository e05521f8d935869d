//! Overlap metrics from the confusion counts of two binary masks.
//!
//! With `TP`, `FP`, `FN`, `TN` counted over all voxels (reference = ground truth):
//! - Dice = 2 TP / (2 TP + FP + FN); IoU (Jaccard) = TP / (TP + FP + FN);
//! - precision = TP / (TP + FP); recall (sensitivity) = TP / (TP + FN);
//!   specificity = TN / (TN + FP);
//! - volume similarity = 1 - |FN - FP| / (2 TP + FP + FN);
//! - relative volume difference = (|P| - |R|) / |R| = (FP - FN) / (TP + FN).
//!
//! Empty masks: both empty gives Dice = IoU = precision = recall = VS = 1 and RVD = 0 with the
//! note [`Note::BothEmpty`]; an empty prediction leaves precision undefined
//! ([`Note::EmptyPrediction`]) and an empty reference leaves recall and RVD undefined
//! ([`Note::EmptyReference`]); Dice and IoU are then 0 (defined). A reference covering the
//! whole volume leaves specificity undefined ([`Note::NoNegatives`]).

use ndarray::ArrayView3;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};
use crate::value::{MetricValue, Note};

/// Confusion counts over all voxels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConfusionCounts {
    /// Reference and prediction foreground.
    pub tp: u64,
    /// Prediction foreground, reference background.
    pub fp: u64,
    /// Reference foreground, prediction background.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Both background.
    pub tn: u64,
}

/// Checks that two arrays have the same shape.
pub(crate) fn check_same_shape(a: &[usize], b: &[usize]) -> Result<()> {
    if a != b {
        return Err(MetricsError::ShapeMismatch {
            what: "prediction",
            expected: a.to_vec(),
            found: b.to_vec(),
        });
    }
    Ok(())
}

/// Counts TP, FP, FN, TN (in parallel).
///
/// # Errors
/// [`MetricsError::ShapeMismatch`] if the shapes differ.
pub fn confusion(
    reference: ArrayView3<'_, bool>,
    prediction: ArrayView3<'_, bool>,
) -> Result<ConfusionCounts> {
    check_same_shape(reference.shape(), prediction.shape())?;
    let (r, p) = (
        reference.as_standard_layout(),
        prediction.as_standard_layout(),
    );
    let (rs, ps) = (
        r.as_slice().expect("standard layout"),
        p.as_slice().expect("standard layout"),
    );
    // Per chunk (< 2^32 voxels): TP, |R|, |P| with branch-free byte arithmetic.
    let [tp, nr, np] = rs
        .par_chunks(1 << 16)
        .zip(ps.par_chunks(1 << 16))
        .map(|(a, b)| {
            let (mut tp, mut nr, mut np) = (0u32, 0u32, 0u32);
            for (&x, &y) in a.iter().zip(b) {
                let (x, y) = (x as u32, y as u32);
                tp += x & y;
                nr += x;
                np += y;
            }
            [tp as u64, nr as u64, np as u64]
        })
        .reduce(|| [0; 3], |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2]]);
    let n = rs.len() as u64;
    Ok(ConfusionCounts {
        tp,
        fp: np - tp,
        fn_: nr - tp,
        tn: n - (nr + np - tp),
    })
}

impl ConfusionCounts {
    fn both_empty(&self) -> bool {
        self.tp + self.fp + self.fn_ == 0
    }
    /// Dice = 2 TP / (2 TP + FP + FN).
    pub fn dice(&self) -> MetricValue {
        if self.both_empty() {
            return MetricValue::conventional(1.0, Note::BothEmpty);
        }
        let tp = self.tp as f64;
        MetricValue::defined(2.0 * tp / (2.0 * tp + self.fp as f64 + self.fn_ as f64))
    }
    /// IoU (Jaccard) = TP / (TP + FP + FN).
    pub fn iou(&self) -> MetricValue {
        if self.both_empty() {
            return MetricValue::conventional(1.0, Note::BothEmpty);
        }
        MetricValue::defined(self.tp as f64 / (self.tp + self.fp + self.fn_) as f64)
    }
    /// Precision = TP / (TP + FP).
    pub fn precision(&self) -> MetricValue {
        if self.both_empty() {
            return MetricValue::conventional(1.0, Note::BothEmpty);
        }
        if self.tp + self.fp == 0 {
            return MetricValue::undefined(Note::EmptyPrediction);
        }
        MetricValue::defined(self.tp as f64 / (self.tp + self.fp) as f64)
    }
    /// Recall (sensitivity) = TP / (TP + FN).
    pub fn recall(&self) -> MetricValue {
        if self.both_empty() {
            return MetricValue::conventional(1.0, Note::BothEmpty);
        }
        if self.tp + self.fn_ == 0 {
            return MetricValue::undefined(Note::EmptyReference);
        }
        MetricValue::defined(self.tp as f64 / (self.tp + self.fn_) as f64)
    }
    /// Specificity = TN / (TN + FP).
    pub fn specificity(&self) -> MetricValue {
        if self.tn + self.fp == 0 {
            return MetricValue::undefined(Note::NoNegatives);
        }
        MetricValue::defined(self.tn as f64 / (self.tn + self.fp) as f64)
    }
    /// Volume similarity = 1 - |FN - FP| / (2 TP + FP + FN).
    pub fn volume_similarity(&self) -> MetricValue {
        if self.both_empty() {
            return MetricValue::conventional(1.0, Note::BothEmpty);
        }
        let d = (self.fn_ as f64 - self.fp as f64).abs();
        MetricValue::defined(1.0 - d / (2 * self.tp + self.fp + self.fn_) as f64)
    }
    /// Relative volume difference = (FP - FN) / (TP + FN).
    pub fn relative_volume_difference(&self) -> MetricValue {
        if self.both_empty() {
            return MetricValue::conventional(0.0, Note::BothEmpty);
        }
        if self.tp + self.fn_ == 0 {
            return MetricValue::undefined(Note::EmptyReference);
        }
        MetricValue::defined((self.fp as f64 - self.fn_ as f64) / (self.tp + self.fn_) as f64)
    }
    /// Number of reference foreground voxels.
    pub fn reference_voxels(&self) -> u64 {
        self.tp + self.fn_
    }
    /// Number of prediction foreground voxels.
    pub fn prediction_voxels(&self) -> u64 {
        self.tp + self.fp
    }
}

/// All overlap metrics of a pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverlapMetrics {
    /// The confusion counts.
    pub counts: ConfusionCounts,
    /// Dice.
    pub dice: MetricValue,
    /// IoU (Jaccard).
    pub iou: MetricValue,
    /// Precision.
    pub precision: MetricValue,
    /// Recall (sensitivity).
    pub recall: MetricValue,
    /// Specificity.
    pub specificity: MetricValue,
    /// Volume similarity.
    pub volume_similarity: MetricValue,
    /// Relative volume difference.
    pub relative_volume_difference: MetricValue,
}

impl From<ConfusionCounts> for OverlapMetrics {
    fn from(c: ConfusionCounts) -> Self {
        OverlapMetrics {
            counts: c,
            dice: c.dice(),
            iou: c.iou(),
            precision: c.precision(),
            recall: c.recall(),
            specificity: c.specificity(),
            volume_similarity: c.volume_similarity(),
            relative_volume_difference: c.relative_volume_difference(),
        }
    }
}

/// Every overlap metric of a pair.
///
/// # Errors
/// [`MetricsError::ShapeMismatch`] if the shapes differ.
pub fn overlap(
    reference: ArrayView3<'_, bool>,
    prediction: ArrayView3<'_, bool>,
) -> Result<OverlapMetrics> {
    Ok(confusion(reference, prediction)?.into())
}

/// Dice of two masks (see the module docs for empty masks).
///
/// # Errors
/// [`MetricsError::ShapeMismatch`] if the shapes differ.
pub fn dice(
    reference: ArrayView3<'_, bool>,
    prediction: ArrayView3<'_, bool>,
) -> Result<MetricValue> {
    Ok(confusion(reference, prediction)?.dice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use ndarray::Array3;

    #[test]
    fn counts_and_scores() {
        let mut r = Array3::from_elem([2, 2, 3], false);
        let mut p = r.clone();
        r[[0, 0, 0]] = true;
        r[[0, 0, 1]] = true;
        r[[0, 1, 0]] = true;
        p[[0, 0, 0]] = true;
        p[[1, 1, 1]] = true;
        let c = confusion(r.view(), p.view()).unwrap();
        assert_eq!((c.tp, c.fp, c.fn_, c.tn), (1, 1, 2, 8));
        assert_relative_eq!(c.dice().get().unwrap(), 2.0 / 5.0);
        assert_relative_eq!(c.iou().get().unwrap(), 1.0 / 4.0);
        assert_relative_eq!(c.precision().get().unwrap(), 0.5);
        assert_relative_eq!(c.recall().get().unwrap(), 1.0 / 3.0);
        assert_relative_eq!(c.specificity().get().unwrap(), 8.0 / 9.0);
        assert_relative_eq!(c.volume_similarity().get().unwrap(), 1.0 - 1.0 / 5.0);
        assert_relative_eq!(c.relative_volume_difference().get().unwrap(), -1.0 / 3.0);
    }

    #[test]
    fn empty_cases() {
        let e = Array3::from_elem([2, 2, 2], false);
        let mut one = e.clone();
        one[[1, 1, 1]] = true;
        let both = overlap(e.view(), e.view()).unwrap();
        assert_eq!(both.dice, MetricValue::conventional(1.0, Note::BothEmpty));
        assert_eq!(
            both.relative_volume_difference,
            MetricValue::conventional(0.0, Note::BothEmpty)
        );
        let ep = overlap(one.view(), e.view()).unwrap();
        assert_eq!(ep.dice, MetricValue::defined(0.0));
        assert_eq!(ep.precision, MetricValue::undefined(Note::EmptyPrediction));
        let er = overlap(e.view(), one.view()).unwrap();
        assert_eq!(er.recall, MetricValue::undefined(Note::EmptyReference));
        assert_eq!(
            er.relative_volume_difference,
            MetricValue::undefined(Note::EmptyReference)
        );
        let full = Array3::from_elem([2, 2, 2], true);
        let f = overlap(full.view(), one.view()).unwrap();
        assert_eq!(f.specificity, MetricValue::undefined(Note::NoNegatives));
        assert!(confusion(e.view(), Array3::from_elem([2, 2, 3], false).view()).is_err());
    }
}
