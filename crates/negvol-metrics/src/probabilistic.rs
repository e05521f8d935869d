//! The seed paper's "CE" score: mean per-voxel cross-entropy (nats) of a predicted probability
//! map against the reference.
//!
//! - Binary: `CE = -(1/N) sum_x [y(x) ln p(x) + (1 - y(x)) ln(1 - p(x))]` with `p` the predicted
//!   foreground probability and `y` the reference mask.
//! - Multi-class: `CE = -(1/N) sum_x ln p_{c(x)}(x)` with `p_c` the probability of class `c`
//!   (shape `[C, ni, nj, nk]`) and `c(x)` the reference label.
//!
//! Each log term is clamped below at -100, as PyTorch's `BCELoss`/`NLLLoss` on log-probabilities
//! do, so a confident wrong voxel costs 100 nats instead of infinity. Probabilities must be
//! finite and in [0, 1] (typed error otherwise). Sums are accumulated in f64.

use ndarray::{ArrayView3, ArrayView4, Axis, Zip};

use crate::error::{MetricsError, Result};
use crate::overlap::check_same_shape;

/// Lower clamp of every log term (PyTorch convention).
pub const LOG_CLAMP: f64 = -100.0;

fn clamped_ln(p: f64) -> f64 {
    p.ln().max(LOG_CLAMP)
}

fn check_prob(p: f32, index: usize) -> Result<f64> {
    let v = p as f64;
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(MetricsError::InvalidProbability { value: v, index })
    }
}

/// Binary CE score of a foreground probability map against a mask.
///
/// # Errors
/// Shape mismatch, an empty volume ([`MetricsError::EmptyMask`]) or an invalid probability.
pub fn cross_entropy(
    probability: ArrayView3<'_, f32>,
    reference: ArrayView3<'_, bool>,
) -> Result<f64> {
    cross_entropy_over(probability, reference, None)
}

/// [`cross_entropy`] over the voxels where `annotated` is true only (sparse annotation): the
/// mean of the per-voxel terms there. Every probability is still checked.
///
/// ```
/// use ndarray::Array3;
/// let p = Array3::from_shape_vec((1, 1, 3), vec![0.5f32, 0.9, 0.1]).unwrap();
/// let r = Array3::from_shape_vec((1, 1, 3), vec![true, true, true]).unwrap();
/// let a = Array3::from_shape_vec((1, 1, 3), vec![false, true, false]).unwrap();
/// let ce = negvol_metrics::cross_entropy_masked(p.view(), r.view(), a.view())?;
/// assert!((ce + 0.9f64.ln()).abs() < 1e-6);
/// # Ok::<(), negvol_metrics::MetricsError>(())
/// ```
///
/// # Errors
/// As [`cross_entropy`]; [`MetricsError::EmptyMask`] when no voxel is annotated.
pub fn cross_entropy_masked(
    probability: ArrayView3<'_, f32>,
    reference: ArrayView3<'_, bool>,
    annotated: ArrayView3<'_, bool>,
) -> Result<f64> {
    cross_entropy_over(probability, reference, Some(annotated))
}

fn cross_entropy_over(
    probability: ArrayView3<'_, f32>,
    reference: ArrayView3<'_, bool>,
    annotated: Option<ArrayView3<'_, bool>>,
) -> Result<f64> {
    check_same_shape(reference.shape(), probability.shape())?;
    if let Some(a) = &annotated {
        check_same_shape(reference.shape(), a.shape())?;
    }
    if reference.is_empty() {
        return Err(MetricsError::EmptyMask);
    }
    let p = probability.as_standard_layout();
    let r = reference.as_standard_layout();
    let a = annotated.as_ref().map(|a| a.as_standard_layout());
    let (ps, rs) = (
        p.as_slice().expect("standard"),
        r.as_slice().expect("standard"),
    );
    let av = a.as_ref().map(|a| a.as_slice().expect("standard"));
    use rayon::prelude::*;
    let (sum, n) = ps
        .par_iter()
        .zip(rs.par_iter())
        .enumerate()
        .map(|(i, (&pv, &y))| {
            let v = check_prob(pv, i)?;
            if av.is_some_and(|a| !a[i]) {
                return Ok((0.0, 0usize));
            }
            Ok((
                -if y {
                    clamped_ln(v)
                } else {
                    clamped_ln(1.0 - v)
                },
                1,
            ))
        })
        .try_reduce(|| (0.0, 0), |a, b| Ok((a.0 + b.0, a.1 + b.1)))?;
    if n == 0 {
        return Err(MetricsError::EmptyMask);
    }
    Ok(sum / n as f64)
}

/// Multi-class CE score: `probabilities` has shape `[C, ni, nj, nk]`, `labels` holds class
/// indices `< C`.
///
/// # Errors
/// Shape mismatch, a label `>= C` ([`MetricsError::InvalidParameter`]), an empty volume or an
/// invalid probability.
pub fn cross_entropy_multiclass(
    probabilities: ArrayView4<'_, f32>,
    labels: ArrayView3<'_, u8>,
) -> Result<f64> {
    let c = probabilities.shape()[0];
    check_same_shape(labels.shape(), &probabilities.shape()[1..])?;
    if labels.is_empty() {
        return Err(MetricsError::EmptyMask);
    }
    let mut sum = 0.0f64;
    let mut err: Option<MetricsError> = None;
    let nk = labels.shape()[1] * labels.shape()[2];
    for (i, slab) in labels.axis_iter(Axis(0)).enumerate() {
        Zip::indexed(&slab).for_each(|(j, k), &l| {
            if err.is_some() {
                return;
            }
            let l = l as usize;
            if l >= c {
                err = Some(MetricsError::InvalidParameter {
                    name: "label",
                    value: l as f64,
                    reason: "must be smaller than the number of probability channels",
                });
                return;
            }
            let idx = i * nk + j * labels.shape()[2] + k;
            match check_prob(probabilities[[l, i, j, k]], idx) {
                Ok(v) => sum -= clamped_ln(v),
                Err(e) => err = Some(e),
            }
        });
    }
    if let Some(e) = err {
        return Err(e);
    }
    Ok(sum / labels.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use ndarray::{Array3, Array4};

    #[test]
    fn binary_and_multiclass_agree() {
        let p = Array3::from_shape_vec([1, 1, 4], vec![0.9f32, 0.2, 0.5, 0.0]).unwrap();
        let y = Array3::from_shape_vec([1, 1, 4], vec![true, false, true, true]).unwrap();
        let want = -((0.9f32 as f64).ln() + (0.8f32 as f64).ln() + 0.5f64.ln() - 100.0) / 4.0;
        assert_relative_eq!(
            cross_entropy(p.view(), y.view()).unwrap(),
            want,
            epsilon = 1e-7
        );
        let mut pm = Array4::<f32>::zeros([2, 1, 1, 4]);
        for k in 0..4 {
            pm[[1, 0, 0, k]] = p[[0, 0, k]];
            pm[[0, 0, 0, k]] = 1.0 - p[[0, 0, k]];
        }
        let l = y.mapv(|b| b as u8);
        assert_relative_eq!(
            cross_entropy_multiclass(pm.view(), l.view()).unwrap(),
            want,
            epsilon = 1e-6
        );
        let bad = Array3::from_elem([1, 1, 4], 1.5f32);
        assert!(matches!(
            cross_entropy(bad.view(), y.view()),
            Err(MetricsError::InvalidProbability { .. })
        ));
        let l3 = Array3::from_elem([1, 1, 4], 2u8);
        assert!(cross_entropy_multiclass(pm.view(), l3.view()).is_err());
    }
}
