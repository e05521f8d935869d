//! The seed paper's Table 1: one row of scores per case and structure ([`table1_row`] ->
//! [`Table1Row`]), and the table of their mean +- std over cases ([`markdown_table`]).
//!
//! The columns (names as [`Table1Row::named_values`] gives them, in this order):
//!
//! | column | definition |
//! |---|---|
//! | `DICE %` | Dice `2|R ∩ P| / (|R| + |P|)` of reference `R` and prediction `P`, times 100 ([`crate::overlap`]) |
//! | `CE` | the seed paper's "CE": mean per-voxel binary cross-entropy (nats) of the predicted foreground probability against `R`, over the whole array ([`crate::probabilistic::cross_entropy`]); undefined ([`Note::NoProbability`]) without a probability map |
//! | `HD (paper, voxels)` | the seed paper's HD: symmetric Hausdorff distance over all foreground voxels in voxel units ([`crate::distance::seed_paper_hausdorff_voxels`]) |
//! | `HD mm` | Hausdorff distance between the two surfaces (boundary voxels), max of the two directed maxima, mm ([`crate::distance`]) |
//! | `HD95 mm` | max of the two directed 95th percentiles of the surface distances, mm (`HD{p} mm` for another [`EvalOptions::percentile`]) |
//! | `ASSD mm` | mean of both directed surface-distance lists pooled, mm |
//! | `NSD@1mm` | normalised surface Dice at tolerance 1 mm: the fraction of both surfaces within the tolerance of the other (`NSD@{t}mm` for [`EvalOptions::tolerance_mm`] `t`) |
//!
//! Surfaces are boundary voxels under [`EvalOptions::connectivity`] (6 by default), distances
//! come from the exact anisotropic EDT in mm. An empty mask gives the conventions of
//! [`MetricValue`]: both empty -> overlap 1 and distances 0, noted [`Note::BothEmpty`]; one empty
//! -> distances undefined, noted [`Note::EmptyPrediction`] / [`Note::EmptyReference`].
//!
//! [`Table1Row::volume_error_percent`] gives the `volume error %` column of a derived
//! structure (`negvol`'s NV row): `100 (|P| - |R|) / |R|` in mm3.
//!
//! ```
//! use ndarray::{s, Array3};
//! use negvol_metrics::{markdown_table, table1_row, EvalOptions, Report};
//!
//! // A 4x4x4 box and the same box shifted by 2 voxels along k, 1 mm voxels.
//! let mut r = Array3::from_elem([10, 10, 12], false);
//! r.slice_mut(s![3..7, 3..7, 3..7]).fill(true);
//! let mut p = Array3::from_elem([10, 10, 12], false);
//! p.slice_mut(s![3..7, 3..7, 5..9]).fill(true);
//! let row = table1_row(r.view(), p.view(), None, [1.0; 3], &EvalOptions::default())?;
//! assert_eq!(row.dice_percent().get(), Some(50.0));
//! assert_eq!(row.hd_mm.get(), Some(2.0));
//! assert_eq!(row.hd_paper_voxels.get(), Some(2.0));
//! assert_eq!(row.ce.get(), None); // no probability map given
//!
//! let report = Report::from_cases([row.named_values()]);
//! let table = markdown_table("unet3d (dice-ce, 1 cases)", &[("MC", &report)]);
//! assert!(table.starts_with("| Obj | Score | unet3d (dice-ce, 1 cases) |\n|---|---|---|\n"));
//! assert!(table.contains("| MC | DICE % | 50.000+-0.000 |\n"));
//! assert!(table.contains("| MC | CE | n/a (1 undefined) |\n"));
//! # Ok::<(), negvol_metrics::MetricsError>(())
//! ```

use std::borrow::Borrow;
use std::fmt::Write as _;

use ndarray::ArrayView3;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::pair::{evaluate_pair, EvalOptions};
use crate::probabilistic::cross_entropy;
use crate::report::{Report, Summary};
use crate::value::{MetricValue, Note};

/// Column name of the Dice score in percent.
pub const DICE_PERCENT: &str = "DICE %";
/// Column name of the seed paper's CE score.
pub const CE: &str = "CE";
/// Column name of the seed paper's all-voxel HD in voxels.
pub const HD_PAPER_VOXELS: &str = "HD (paper, voxels)";
/// Column name of the surface HD in mm.
pub const HD_MM: &str = "HD mm";
/// Column name of the ASSD in mm.
pub const ASSD_MM: &str = "ASSD mm";
/// Column name of the volume error of a derived structure in percent
/// ([`Table1Row::volume_error_percent`]).
pub const VOLUME_ERROR_PERCENT: &str = "volume error %";

/// Column name of HDp: `HD{p} mm`, e.g. `HD95 mm` for `p = 95`.
///
/// ```
/// assert_eq!(negvol_metrics::table1::hd_percentile_name(95.0), "HD95 mm");
/// assert_eq!(negvol_metrics::table1::hd_percentile_name(99.5), "HD99.5 mm");
/// ```
pub fn hd_percentile_name(percentile: f64) -> String {
    format!("HD{percentile} mm")
}

/// Column name of NSD: `NSD@{t}mm`, e.g. `NSD@1mm` for `t = 1`.
///
/// ```
/// assert_eq!(negvol_metrics::table1::nsd_name(1.0), "NSD@1mm");
/// assert_eq!(negvol_metrics::table1::nsd_name(0.5), "NSD@0.5mm");
/// ```
pub fn nsd_name(tolerance_mm: f64) -> String {
    format!("NSD@{tolerance_mm}mm")
}

/// One structure of one case in the seed paper's Table 1 layout (see the [module
/// docs](self) for the definitions), made by [`table1_row`].
///
/// ```
/// use ndarray::Array3;
/// use negvol_metrics::{table1_row, EvalOptions, Note};
///
/// // An empty prediction: Dice 0, every distance undefined and noted.
/// let mut r = Array3::from_elem([6, 6, 6], false);
/// r[[2, 2, 2]] = true;
/// let p = Array3::from_elem([6, 6, 6], false);
/// let row = table1_row(r.view(), p.view(), None, [0.5; 3], &EvalOptions::default())?;
/// assert_eq!(row.dice.get(), Some(0.0));
/// assert_eq!(row.hd_percentile_mm.note, Some(Note::EmptyPrediction));
/// assert_eq!(row.volume_error_percent().get(), Some(-100.0));
/// # Ok::<(), negvol_metrics::MetricsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table1Row {
    /// Dice as a fraction in [0, 1] ([`Table1Row::dice_percent`] is the column).
    pub dice: MetricValue,
    /// The seed paper's CE score (nats); undefined with [`Note::NoProbability`] when no
    /// probability map was given.
    pub ce: MetricValue,
    /// The seed paper's all-voxel HD (voxels).
    pub hd_paper_voxels: MetricValue,
    /// Surface HD (mm).
    pub hd_mm: MetricValue,
    /// Surface HDp at [`Table1Row::percentile`], max of the two directed percentiles (mm).
    pub hd_percentile_mm: MetricValue,
    /// ASSD (mm).
    pub assd_mm: MetricValue,
    /// NSD at [`Table1Row::tolerance_mm`].
    pub nsd: MetricValue,
    /// The percentile of `hd_percentile_mm`.
    pub percentile: f64,
    /// The NSD tolerance (mm).
    pub tolerance_mm: f64,
    /// Reference volume (mm3).
    pub reference_volume_mm3: f64,
    /// Prediction volume (mm3).
    pub prediction_volume_mm3: f64,
}

impl Table1Row {
    /// Dice in percent (the `DICE %` column), with Dice's note.
    ///
    /// ```
    /// # use ndarray::Array3;
    /// # use negvol_metrics::{table1_row, EvalOptions};
    /// let m = Array3::from_elem([3, 3, 3], true);
    /// let row = table1_row(m.view(), m.view(), None, [1.0; 3], &EvalOptions::default())?;
    /// assert_eq!(row.dice_percent().get(), Some(100.0));
    /// # Ok::<(), negvol_metrics::MetricsError>(())
    /// ```
    pub fn dice_percent(&self) -> MetricValue {
        MetricValue {
            value: self.dice.value.map(|x| 100.0 * x),
            note: self.dice.note,
        }
    }

    /// Volume error of the prediction in percent, `100 (|P| - |R|) / |R|` (volumes in mm3):
    /// the `volume error %` column of a derived structure. Undefined, noted
    /// [`Note::EmptyReference`], when the reference is empty.
    ///
    /// ```
    /// # use ndarray::{s, Array3};
    /// # use negvol_metrics::{table1_row, EvalOptions};
    /// let mut r = Array3::from_elem([4, 4, 4], false);
    /// r.slice_mut(s![0..2, .., ..]).fill(true); // 32 voxels
    /// let mut p = r.clone();
    /// p[[2, 0, 0]] = true; // 33 voxels
    /// let row = table1_row(r.view(), p.view(), None, [0.5; 3], &EvalOptions::default())?;
    /// assert_eq!(row.volume_error_percent().get(), Some(100.0 / 32.0));
    /// # Ok::<(), negvol_metrics::MetricsError>(())
    /// ```
    pub fn volume_error_percent(&self) -> MetricValue {
        if self.reference_volume_mm3 > 0.0 {
            MetricValue::defined(
                100.0 * (self.prediction_volume_mm3 - self.reference_volume_mm3)
                    / self.reference_volume_mm3,
            )
        } else {
            MetricValue::undefined(Note::EmptyReference)
        }
    }

    /// The row's columns with their names, in Table 1 order: `DICE %`, `CE`,
    /// `HD (paper, voxels)`, `HD mm`, `HD{p} mm`, `ASSD mm`, `NSD@{t}mm` (the input of
    /// [`Report::from_cases`] and of a [`crate::CaseRow`]).
    ///
    /// ```
    /// # use ndarray::Array3;
    /// # use negvol_metrics::{table1_row, EvalOptions};
    /// let m = Array3::from_elem([3, 3, 3], true);
    /// let row = table1_row(m.view(), m.view(), None, [1.0; 3], &EvalOptions::default())?;
    /// let names: Vec<String> = row.named_values().into_iter().map(|(n, _)| n).collect();
    /// assert_eq!(
    ///     names,
    ///     ["DICE %", "CE", "HD (paper, voxels)", "HD mm", "HD95 mm", "ASSD mm", "NSD@1mm"]
    /// );
    /// # Ok::<(), negvol_metrics::MetricsError>(())
    /// ```
    pub fn named_values(&self) -> Vec<(String, MetricValue)> {
        vec![
            (DICE_PERCENT.to_string(), self.dice_percent()),
            (CE.to_string(), self.ce),
            (HD_PAPER_VOXELS.to_string(), self.hd_paper_voxels),
            (HD_MM.to_string(), self.hd_mm),
            (hd_percentile_name(self.percentile), self.hd_percentile_mm),
            (ASSD_MM.to_string(), self.assd_mm),
            (nsd_name(self.tolerance_mm), self.nsd),
        ]
    }
}

/// Scores one structure of one case in the seed paper's Table 1 layout: `reference` (the
/// true mask) against `prediction` on a grid of `spacing` mm, and the CE score of
/// `probability` (the predicted foreground probability, the same shape) when given.
///
/// Of `options` it uses [`EvalOptions::percentile`], [`EvalOptions::tolerance_mm`] and
/// [`EvalOptions::connectivity`]; the seed paper's HD is always computed, the surfel and
/// SimpleITK variants never (they are not Table 1 columns).
///
/// # Errors
/// [`crate::MetricsError::ShapeMismatch`] when the masks or the probability map differ in
/// shape; [`crate::MetricsError::InvalidSpacing`]; an invalid percentile or tolerance
/// ([`crate::MetricsError::InvalidParameter`]); a probability outside [0, 1]
/// ([`crate::MetricsError::InvalidProbability`]); an empty array with a probability map
/// ([`crate::MetricsError::EmptyMask`]).
///
/// ```
/// use ndarray::Array3;
/// use negvol_metrics::{table1_row, EvalOptions};
///
/// // Perfect masks, probability 0.9 on the foreground voxel and 0.1 elsewhere:
/// // CE = -ln 0.9 on every voxel.
/// let mut m = Array3::from_elem([2, 2, 2], false);
/// m[[0, 0, 0]] = true;
/// let p = m.mapv(|v| if v { 0.9f32 } else { 0.1 });
/// let row = table1_row(m.view(), m.view(), Some(p.view()), [1.0; 3], &EvalOptions::default())?;
/// assert!((row.ce.get().unwrap() + (0.9f32 as f64).ln()).abs() < 1e-6);
/// assert_eq!(row.nsd.get(), Some(1.0));
/// # Ok::<(), negvol_metrics::MetricsError>(())
/// ```
pub fn table1_row(
    reference: ArrayView3<'_, bool>,
    prediction: ArrayView3<'_, bool>,
    probability: Option<ArrayView3<'_, f32>>,
    spacing: [f64; 3],
    options: &EvalOptions,
) -> Result<Table1Row> {
    let opts = EvalOptions {
        surfels: false,
        solid: false,
        seed_paper: true,
        ..options.clone()
    };
    let m = evaluate_pair(reference, prediction, spacing, &opts)?;
    let ce = match probability {
        Some(p) => MetricValue::defined(cross_entropy(p, reference)?),
        None => MetricValue::undefined(Note::NoProbability),
    };
    let s = &m.voxel_surface;
    Ok(Table1Row {
        dice: m.overlap.dice,
        ce,
        // Always present: `seed_paper` is set above.
        hd_paper_voxels: m.seed_paper_hd_voxels.unwrap_or(MetricValue {
            value: None,
            note: None,
        }),
        hd_mm: s.hd,
        hd_percentile_mm: s.hd_percentile,
        assd_mm: s.assd,
        nsd: s.nsd,
        percentile: opts.percentile,
        tolerance_mm: opts.tolerance_mm,
        reference_volume_mm3: m.reference_volume_mm3,
        prediction_volume_mm3: m.prediction_volume_mm3,
    })
}

/// [`table1_row`] against a sparse annotation: only the voxels where `annotated` is true are
/// scored (nnU-Net's `ignore` label marks the others). Dice and the volumes count annotated
/// voxels only and the CE score averages over them ([`crate::cross_entropy_masked`]); every
/// distance (the paper's HD, HD, HDp, ASSD, NSD) is undefined with
/// [`Note::PartialAnnotation`], since a surface may run through unannotated voxels. When
/// every voxel is annotated this is exactly [`table1_row`].
///
/// ```
/// use ndarray::{s, Array3};
/// use negvol_metrics::{table1_row_annotated, EvalOptions, Note};
///
/// // Reference: a slab i = 2; the prediction also marks i = 5, which nobody annotated.
/// let r = Array3::from_shape_fn((8, 4, 4), |(i, _, _)| i == 2);
/// let p = Array3::from_shape_fn((8, 4, 4), |(i, _, _)| i == 2 || i == 5);
/// let annotated = Array3::from_shape_fn((8, 4, 4), |(i, _, _)| i < 4);
/// let row = table1_row_annotated(r.view(), p.view(), None, annotated.view(), [1.0; 3], &EvalOptions::default())?;
/// assert_eq!(row.dice.get(), Some(1.0));
/// assert_eq!(row.hd_percentile_mm.note, Some(Note::PartialAnnotation));
/// assert_eq!(row.prediction_volume_mm3, 16.0);
/// # Ok::<(), negvol_metrics::MetricsError>(())
/// ```
///
/// # Errors
/// As [`table1_row`], and a shape mismatch of `annotated`; [`crate::MetricsError::EmptyMask`]
/// for the CE score when nothing is annotated.
pub fn table1_row_annotated(
    reference: ArrayView3<'_, bool>,
    prediction: ArrayView3<'_, bool>,
    probability: Option<ArrayView3<'_, f32>>,
    annotated: ArrayView3<'_, bool>,
    spacing: [f64; 3],
    options: &EvalOptions,
) -> Result<Table1Row> {
    crate::overlap::check_same_shape(reference.shape(), annotated.shape())?;
    if annotated.iter().all(|a| *a) {
        return table1_row(reference, prediction, probability, spacing, options);
    }
    crate::overlap::check_same_shape(reference.shape(), prediction.shape())?;
    let keep = |m: ArrayView3<'_, bool>| {
        ndarray::Zip::from(&m)
            .and(&annotated)
            .map_collect(|v, a| *v && *a)
    };
    let (r, p) = (keep(reference), keep(prediction));
    let counts = crate::overlap::confusion(r.view(), p.view())?;
    let voxel_mm3 = spacing.iter().product::<f64>();
    let ce = match probability {
        Some(prob) => MetricValue::defined(crate::probabilistic::cross_entropy_masked(
            prob, reference, annotated,
        )?),
        None => MetricValue::undefined(Note::NoProbability),
    };
    let partial = MetricValue::undefined(Note::PartialAnnotation);
    Ok(Table1Row {
        dice: counts.dice(),
        ce,
        hd_paper_voxels: partial,
        hd_mm: partial,
        hd_percentile_mm: partial,
        assd_mm: partial,
        nsd: partial,
        percentile: options.percentile,
        tolerance_mm: options.tolerance_mm,
        reference_volume_mm3: (counts.tp + counts.fn_) as f64 * voxel_mm3,
        prediction_volume_mm3: (counts.tp + counts.fp) as f64 * voxel_mm3,
    })
}

/// Position of a metric in the Table 1 column order (then the name breaks ties).
fn column_rank(name: &str) -> (u8, f64) {
    let param = |prefix: &str, suffix: &str| {
        name.strip_prefix(prefix)
            .and_then(|s| s.strip_suffix(suffix))
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|x| x.is_finite())
    };
    match name {
        DICE_PERCENT => (0, 0.0),
        CE => (1, 0.0),
        HD_PAPER_VOXELS => (2, 0.0),
        HD_MM => (3, 0.0),
        ASSD_MM => (5, 0.0),
        VOLUME_ERROR_PERCENT => (7, 0.0),
        _ => {
            if let Some(p) = param("HD", " mm") {
                (4, p)
            } else if let Some(t) = param("NSD@", "mm") {
                (6, t)
            } else {
                (8, 0.0)
            }
        }
    }
}

/// A summary cell: `mean+-std` with three decimals, `n/a` when no case has a value, and
/// ` (k undefined)` when k cases have none.
fn cell(s: &Summary) -> String {
    let value = match (s.mean, s.std) {
        (Some(m), Some(sd)) => format!("{m:.3}+-{sd:.3}"),
        (Some(m), None) => format!("{m:.3}"),
        _ => "n/a".into(),
    };
    if s.n_undefined > 0 {
        format!("{value} ({} undefined)", s.n_undefined)
    } else {
        value
    }
}

/// The aggregated Table 1 as markdown: a header `| Obj | Score | {title} |`, the separator,
/// then for each `(object, report)` pair (the object's display name and its
/// [`Report::from_cases`] over cases) in the order given one line per metric of the report,
/// `| {object} | {metric} | {mean}+-{std} |` with three decimals (population std, as
/// [`Report::from_cases`] computes it), `n/a` when no case has a value, followed by
/// ` (k undefined)` when k cases have none. Every line ends with `\n`.
///
/// Metrics appear in Table 1 column order: `DICE %`, `CE`, `HD (paper, voxels)`, `HD mm`,
/// `HD{p} mm` (by `p`), `ASSD mm`, `NSD@{t}mm` (by `t`), `volume error %`, then any other
/// metric by name. An object whose report has no metric gives no line.
///
/// ```
/// use negvol_metrics::{markdown_table, MetricValue, Note, Report};
///
/// let row = |dice: f64, hd: MetricValue| {
///     vec![("DICE %".to_string(), MetricValue::defined(dice)), ("HD mm".to_string(), hd)]
/// };
/// let mc = Report::from_cases([
///     row(90.0, MetricValue::defined(1.0)),
///     row(80.0, MetricValue::undefined(Note::EmptyPrediction)),
/// ]);
/// assert_eq!(
///     markdown_table("unet3d (dice-ce, 2 cases)", &[("MC", &mc)]),
///     "| Obj | Score | unet3d (dice-ce, 2 cases) |\n\
///      |---|---|---|\n\
///      | MC | DICE % | 85.000+-5.000 |\n\
///      | MC | HD mm | 1.000+-0.000 (1 undefined) |\n"
/// );
/// ```
pub fn markdown_table<N, R>(title: &str, objects: &[(N, R)]) -> String
where
    N: AsRef<str>,
    R: Borrow<Report>,
{
    let mut out = format!("| Obj | Score | {title} |\n|---|---|---|\n");
    for (name, report) in objects {
        let report = report.borrow();
        let mut metrics: Vec<(&String, &Summary)> = report.metrics.iter().collect();
        // Stable: the map's name order breaks ties.
        metrics.sort_by(|a, b| {
            let (ra, pa) = column_rank(a.0);
            let (rb, pb) = column_rank(b.0);
            ra.cmp(&rb).then(pa.total_cmp(&pb))
        });
        for (metric, s) in metrics {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "| {} | {metric} | {} |", name.as_ref(), cell(s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use ndarray::{s, Array3};

    #[test]
    fn sparse_annotation_scores_annotated_voxels_only() {
        let r = cube([2, 2, 2], 4);
        let mut p = cube([3, 2, 2], 4);
        p[[14, 14, 20]] = true; // outside the annotated part
        let prob = p.mapv(|v| if v { 0.8f32 } else { 0.1 });
        // Everything annotated: exactly table1_row.
        let all = Array3::from_elem(r.raw_dim(), true);
        let o = EvalOptions::default();
        assert_eq!(
            table1_row_annotated(
                r.view(),
                p.view(),
                Some(prob.view()),
                all.view(),
                [0.5; 3],
                &o
            )
            .unwrap(),
            table1_row(r.view(), p.view(), Some(prob.view()), [0.5; 3], &o).unwrap()
        );
        // Only i < 10 annotated: the stray voxel does not count.
        let ann = Array3::from_shape_fn(r.raw_dim(), |(i, _, _)| i < 10);
        let row = table1_row_annotated(
            r.view(),
            p.view(),
            Some(prob.view()),
            ann.view(),
            [0.5; 3],
            &o,
        )
        .unwrap();
        // Cubes of 64 voxels shifted by one along i: 48 in common.
        assert_relative_eq!(row.dice.get().unwrap(), 2.0 * 48.0 / 128.0);
        assert_relative_eq!(row.prediction_volume_mm3, 64.0 * 0.125);
        assert_relative_eq!(row.reference_volume_mm3, 64.0 * 0.125);
        // CE over the annotated voxels, by hand.
        let (mut sum, mut n) = (0.0f64, 0usize);
        for ((idx, &y), &pv) in r.indexed_iter().zip(prob.iter()) {
            if idx.0 < 10 {
                let v = pv as f64;
                sum -= if y { v.ln() } else { (1.0 - v).ln() };
                n += 1;
            }
        }
        assert_relative_eq!(row.ce.get().unwrap(), sum / n as f64, max_relative = 1e-12);
        for d in [
            row.hd_mm,
            row.hd_percentile_mm,
            row.assd_mm,
            row.nsd,
            row.hd_paper_voxels,
        ] {
            assert_eq!(d, MetricValue::undefined(Note::PartialAnnotation));
        }
        // Nothing annotated: CE has no voxel to average over.
        let none = Array3::from_elem(r.raw_dim(), false);
        assert!(table1_row_annotated(
            r.view(),
            p.view(),
            Some(prob.view()),
            none.view(),
            [0.5; 3],
            &o
        )
        .is_err());
        let bad = Array3::from_elem([2, 2, 2], true);
        assert!(table1_row_annotated(r.view(), p.view(), None, bad.view(), [0.5; 3], &o).is_err());
    }

    /// An `n`-voxel cube at `at` in a 16 x 16 x 24 array.
    fn cube(at: [usize; 3], n: usize) -> Array3<bool> {
        let mut a = Array3::from_elem([16, 16, 24], false);
        a.slice_mut(s![at[0]..at[0] + n, at[1]..at[1] + n, at[2]..at[2] + n])
            .fill(true);
        a
    }

    /// Two 6^3 boxes, the second shifted by 2 voxels (1 mm) along k, spacing (1, 1, 0.5) mm.
    fn shifted() -> (Array3<bool>, Array3<bool>) {
        (cube([4, 4, 6], 6), cube([4, 4, 8], 6))
    }

    #[test]
    fn shifted_boxes_have_the_known_scores() {
        let (r, p) = shifted();
        let opts = EvalOptions::default();
        let row = table1_row(r.view(), p.view(), None, [1.0, 1.0, 0.5], &opts).unwrap();
        // Overlap 6 x 6 x 4 = 144 voxels of 216 + 216: Dice = 288 / 432 = 2/3.
        assert_relative_eq!(row.dice.get().unwrap(), 2.0 / 3.0, epsilon = 1e-15);
        assert_relative_eq!(
            row.dice_percent().get().unwrap(),
            200.0 / 3.0,
            epsilon = 1e-12
        );
        assert_eq!(row.reference_volume_mm3, 108.0);
        assert_eq!(row.prediction_volume_mm3, 108.0);
        assert_eq!(row.volume_error_percent().get(), Some(0.0));
        assert_eq!(row.ce, MetricValue::undefined(Note::NoProbability));
        // The seed paper's HD, in voxel units over all voxels: R's first slab is 2 voxels
        // from P.
        assert_eq!(row.hd_paper_voxels.get(), Some(2.0));
        // Surfaces: the box shells, 6^3 - 4^3 = 152 voxels each. R -> P (P -> R is its
        // mirror image): R's bottom face (36 voxels) is 2 slabs = 1 mm below P's bottom
        // face; the rim of R's second slab (20) is 0.5 mm from it; the rims of slabs 3-6
        // (4 x 20) lie on P's side faces (0 mm); the 16 inner voxels of R's top face are
        // inside P, 1 mm from P's top face and >= 1 mm from its side faces.
        // Directed distances: 52 x 1 mm, 20 x 0.5 mm, 80 x 0 mm.
        assert_eq!(row.hd_mm.get(), Some(1.0));
        // The 95th percentile (numpy linear, index 0.95 x 151 = 143.45) is among the 52
        // largest, all 1 mm.
        assert_eq!(row.hd_percentile_mm.get(), Some(1.0));
        // ASSD: (52 x 1 + 20 x 0.5) x 2 / 304.
        assert_relative_eq!(row.assd_mm.get().unwrap(), 62.0 / 152.0, epsilon = 1e-12);
        // NSD at 1 mm: every distance <= 1 mm.
        assert_eq!(row.nsd.get(), Some(1.0));
        // At 0.5 mm the 52 + 52 voxels at 1 mm fall out: 200 / 304.
        let tight = EvalOptions {
            tolerance_mm: 0.5,
            ..opts
        };
        let row = table1_row(r.view(), p.view(), None, [1.0, 1.0, 0.5], &tight).unwrap();
        assert_relative_eq!(row.nsd.get().unwrap(), 200.0 / 304.0, epsilon = 1e-12);
        assert_eq!(row.named_values()[6].0, "NSD@0.5mm");
        // HD99 instead of HD95: the same value, another column name.
        let p99 = EvalOptions {
            percentile: 99.0,
            ..EvalOptions::default()
        };
        let row = table1_row(r.view(), p.view(), None, [1.0, 1.0, 0.5], &p99).unwrap();
        assert_eq!(
            row.named_values()[4],
            ("HD99 mm".to_string(), MetricValue::defined(1.0))
        );
    }

    #[test]
    fn empty_masks_give_noted_values() {
        let r = cube([2, 2, 2], 3);
        let empty = Array3::from_elem(r.raw_dim(), false);
        let row = table1_row(
            r.view(),
            empty.view(),
            None,
            [1.0; 3],
            &EvalOptions::default(),
        )
        .unwrap();
        assert_eq!(row.dice, MetricValue::defined(0.0));
        for v in [
            row.hd_paper_voxels,
            row.hd_mm,
            row.hd_percentile_mm,
            row.assd_mm,
        ] {
            assert_eq!(v, MetricValue::undefined(Note::EmptyPrediction));
        }
        assert_eq!(
            row.nsd,
            MetricValue::conventional(0.0, Note::EmptyPrediction)
        );
        assert_eq!(row.volume_error_percent().get(), Some(-100.0));
        // Empty reference: the volume error is undefined.
        let row = table1_row(
            empty.view(),
            r.view(),
            None,
            [1.0; 3],
            &EvalOptions::default(),
        )
        .unwrap();
        assert_eq!(row.hd_mm, MetricValue::undefined(Note::EmptyReference));
        assert_eq!(
            row.volume_error_percent(),
            MetricValue::undefined(Note::EmptyReference)
        );
        // Both empty: the conventions.
        let row = table1_row(
            empty.view(),
            empty.view(),
            None,
            [1.0; 3],
            &EvalOptions::default(),
        )
        .unwrap();
        assert_eq!(row.dice, MetricValue::conventional(1.0, Note::BothEmpty));
        assert_eq!(row.hd_mm, MetricValue::conventional(0.0, Note::BothEmpty));
    }

    #[test]
    fn ce_of_a_known_probability_map() {
        // 3 x 3 x 3 with one foreground voxel at probability 0.8; the 26 background voxels:
        // 13 at 0.1, 12 at 0.3, one at 1.0 (a confident wrong voxel, clamped to 100 nats).
        let mut r = Array3::from_elem([3, 3, 3], false);
        r[[1, 1, 1]] = true;
        let mut prob = Array3::from_elem([3, 3, 3], 0.1f32);
        prob[[1, 1, 1]] = 0.8;
        let mut n = 0;
        for ((i, j, k), v) in prob.indexed_iter_mut() {
            if (i, j, k) != (1, 1, 1) && i == 0 {
                *v = if n < 8 { 0.3 } else { 1.0 };
                n += 1;
            }
        }
        // i == 0 has 9 voxels: 8 at 0.3, one at 1.0; the other 17 background voxels at 0.1.
        let want = (-(0.8f32 as f64).ln()
            - 8.0 * (1.0 - 0.3f32 as f64).ln()
            - 17.0 * (1.0 - 0.1f32 as f64).ln()
            + 100.0)
            / 27.0;
        let row = table1_row(
            r.view(),
            r.view(),
            Some(prob.view()),
            [1.0; 3],
            &EvalOptions::default(),
        )
        .unwrap();
        assert_relative_eq!(row.ce.get().unwrap(), want, epsilon = 1e-12);
        assert_eq!(row.ce.note, None);
        // A map of another shape, or a value outside [0, 1], is an error.
        let small = Array3::from_elem([3, 3, 2], 0.5f32);
        assert!(matches!(
            table1_row(
                r.view(),
                r.view(),
                Some(small.view()),
                [1.0; 3],
                &EvalOptions::default()
            ),
            Err(crate::MetricsError::ShapeMismatch { .. })
        ));
        prob[[2, 2, 2]] = f32::NAN;
        assert!(matches!(
            table1_row(
                r.view(),
                r.view(),
                Some(prob.view()),
                [1.0; 3],
                &EvalOptions::default()
            ),
            Err(crate::MetricsError::InvalidProbability { .. })
        ));
        assert!(matches!(
            table1_row(
                r.view(),
                r.view(),
                None,
                [0.0, 1.0, 1.0],
                &EvalOptions::default()
            ),
            Err(crate::MetricsError::InvalidSpacing { .. })
        ));
    }

    #[test]
    fn renderer_exact_output() {
        let case = |dice: f64, ce: MetricValue, hd95: MetricValue| {
            vec![
                ("NSD@1mm".to_string(), MetricValue::defined(1.0)),
                ("HD95 mm".to_string(), hd95),
                ("CE".to_string(), ce),
                ("DICE %".to_string(), MetricValue::defined(dice)),
                ("zeta".to_string(), MetricValue::defined(2.0)),
                ("HD mm".to_string(), MetricValue::defined(3.25)),
                ("ASSD mm".to_string(), MetricValue::defined(0.1234)),
                ("HD (paper, voxels)".to_string(), MetricValue::defined(4.0)),
                ("HD99 mm".to_string(), MetricValue::defined(5.0)),
                ("NSD@0.5mm".to_string(), MetricValue::defined(0.5)),
            ]
        };
        let mc = Report::from_cases([
            case(98.0, MetricValue::defined(0.02), MetricValue::defined(1.0)),
            case(
                96.0,
                MetricValue::defined(0.04),
                MetricValue::undefined(Note::EmptyPrediction),
            ),
        ]);
        let nv = Report::from_cases([
            vec![
                (
                    VOLUME_ERROR_PERCENT.to_string(),
                    MetricValue {
                        value: None,
                        note: None,
                    },
                ),
                (DICE_PERCENT.to_string(), MetricValue::defined(88.8888)),
            ],
            vec![
                (VOLUME_ERROR_PERCENT.to_string(), MetricValue::defined(-4.5)),
                (DICE_PERCENT.to_string(), MetricValue::defined(90.0)),
            ],
        ]);
        let empty = Report::from_cases(Vec::<Vec<(String, MetricValue)>>::new());
        let t = markdown_table(
            "unet3d (dice-ce, 2 cases)",
            &[
                ("MC".to_string(), mc),
                ("TB".to_string(), empty),
                ("NV (from MC+TB)".to_string(), nv),
            ],
        );
        assert_eq!(
            t,
            "| Obj | Score | unet3d (dice-ce, 2 cases) |\n\
             |---|---|---|\n\
             | MC | DICE % | 97.000+-1.000 |\n\
             | MC | CE | 0.030+-0.010 |\n\
             | MC | HD (paper, voxels) | 4.000+-0.000 |\n\
             | MC | HD mm | 3.250+-0.000 |\n\
             | MC | HD95 mm | 1.000+-0.000 (1 undefined) |\n\
             | MC | HD99 mm | 5.000+-0.000 |\n\
             | MC | ASSD mm | 0.123+-0.000 |\n\
             | MC | NSD@0.5mm | 0.500+-0.000 |\n\
             | MC | NSD@1mm | 1.000+-0.000 |\n\
             | MC | zeta | 2.000+-0.000 |\n\
             | NV (from MC+TB) | DICE % | 89.444+-0.556 |\n\
             | NV (from MC+TB) | volume error % | -4.500+-0.000 (1 undefined) |\n"
        );
        // No case with a value: n/a.
        let none = Report::from_cases([vec![(
            CE.to_string(),
            MetricValue::undefined(Note::NoProbability),
        )]]);
        assert_eq!(
            markdown_table("t", &[("X", &none)]),
            "| Obj | Score | t |\n|---|---|---|\n| X | CE | n/a (1 undefined) |\n"
        );
    }

    #[test]
    fn column_names_parse_back_to_their_rank() {
        assert_eq!(column_rank(&hd_percentile_name(95.0)), (4, 95.0));
        assert_eq!(column_rank(&nsd_name(2.5)), (6, 2.5));
        assert_eq!(column_rank("HD mm").0, 3);
        assert_eq!(column_rank("HDx mm").0, 8);
        assert_eq!(column_rank("NSD@mm").0, 8);
    }
}
