//! Metric values that say when they are undefined or conventional.

use serde::{Deserialize, Serialize};

/// Why a metric is undefined, or why its value is a convention rather than a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Note {
    /// Both masks are empty: overlap metrics are 1 and distances 0 by convention.
    BothEmpty,
    /// The reference mask is empty (the prediction is not).
    EmptyReference,
    /// The prediction mask is empty (the reference is not).
    EmptyPrediction,
    /// The reference covers the whole volume, so there are no negatives (specificity).
    NoNegatives,
    /// No predicted probability map was given, so a probabilistic score (the CE score of
    /// [`crate::table1::table1_row`]) is undefined.
    NoProbability,
    /// The reference annotates only part of the volume (sparse annotation, nnU-Net's
    /// `ignore` label): distances between surfaces are undefined, because a structure's
    /// surface may run through voxels nobody annotated
    /// ([`crate::table1::table1_row_annotated`]).
    PartialAnnotation,
}

/// A metric value: `value` is `None` when the metric is undefined, and `note` says why (or why
/// a value is a convention, e.g. Dice = 1 for two empty masks). Never a silent NaN or infinity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    /// The value, when defined.
    pub value: Option<f64>,
    /// The empty-mask case behind the value, if any.
    pub note: Option<Note>,
}

impl MetricValue {
    /// A measured value.
    pub fn defined(v: f64) -> Self {
        MetricValue {
            value: Some(v),
            note: None,
        }
    }
    /// A conventional value with the reason for it.
    pub fn conventional(v: f64, note: Note) -> Self {
        MetricValue {
            value: Some(v),
            note: Some(note),
        }
    }
    /// An undefined value with its reason.
    pub fn undefined(note: Note) -> Self {
        MetricValue {
            value: None,
            note: Some(note),
        }
    }
    /// The value, if defined.
    pub fn get(&self) -> Option<f64> {
        self.value
    }
}

impl std::fmt::Display for MetricValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.value, self.note) {
            (Some(v), None) => write!(f, "{v:.6}"),
            (Some(v), Some(n)) => write!(f, "{v:.6} ({n:?})"),
            (None, Some(n)) => write!(f, "undefined ({n:?})"),
            (None, None) => write!(f, "undefined"),
        }
    }
}
