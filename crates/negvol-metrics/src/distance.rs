//! Surface-distance metrics (HD, HDp, ASSD, MSD, NSD) and the solid-set Hausdorff variants.
//!
//! # Definitions (all distances in mm, between voxel centres or voxel corners)
//! - **Surface** ([`SurfaceKind`]): by default the boundary voxels under 6-connectivity (a
//!   foreground voxel with a background face neighbour; outside the array is background), or
//!   18/26-connectivity, or DeepMind-style surfels (voxel corners with area weights, see
//!   [`crate::surface`]).
//! - **Directed distances** `d(A -> B)`: for every surface point of `A`, the exact Euclidean
//!   distance to the nearest surface point of `B` (exact anisotropic EDT, [`crate::edt`]). With
//!   voxel surfaces each point has weight 1; with surfels its weight is its area.
//! - **HD** = max(max d(R -> P), max d(P -> R)).
//! - **HDp**, [`HdConvention::MaxOfDirected`] (MONAI, DeepMind): max of the two directed
//!   p-th percentiles; [`HdConvention::Pooled`] (MedPy `hd95`, seg-metrics): the p-th percentile
//!   of both directed distance lists pooled together.
//! - **Percentile interpolation**: unweighted (voxel surfaces) uses linear interpolation
//!   between order statistics, numpy's default `method="linear"`: with `n` sorted values
//!   `x[0..n]` and `h = (n - 1) p / 100`, the result is
//!   `x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h])`. Weighted (surfels) uses
//!   DeepMind's rule: the smallest distance `x[i]` whose cumulative weight fraction
//!   `sum(w[0..=i]) / sum(w)` is `>= p / 100` (no interpolation).
//! - **ASSD** = (sum of all directed distances of both directions) / (number of them), i.e.
//!   the mean of both lists pooled (MONAI `compute_average_surface_distance(symmetric=True)`);
//!   with surfels the area-weighted pooled mean.
//! - **MSD** (mean surface distance, variant) = (mean d(R -> P) + mean d(P -> R)) / 2, the
//!   average of DeepMind's two directed averages. The directed means are also reported.
//! - **NSD(tau)** (normalised surface Dice) = (weight of R's points with d <= tau + weight of
//!   P's points with d <= tau) / (total weight of both surfaces).
//! - **Solid-set HD** (SimpleITK `HausdorffDistanceImageFilter`): the same maxima, but over all
//!   foreground voxels of each mask to the nearest foreground voxel of the other; its
//!   "average Hausdorff distance" is the mean of the two directed means over all foreground
//!   voxels ([`solid_hausdorff`]).
//! - **Seed paper HD**: scipy `directed_hausdorff` over all foreground voxel indices with unit
//!   spacing, symmetric max, in voxels ([`seed_paper_hausdorff_voxels`]).
//!
//! # Empty masks
//! Both empty: distances are 0 and NSD is 1, noted [`Note::BothEmpty`]. One empty: every
//! distance is undefined (`None`) with [`Note::EmptyReference`] or [`Note::EmptyPrediction`];
//! NSD is then 0 (no surface point is within tolerance of an empty surface), with the note.
//!
//! # Speed
//! Everything is computed inside the bounding box of both masks (a crop that provably changes
//! no result: outside it both masks are background, and distances are translation invariant).
//! Directed distances are exact nearest-point searches from the query surface points to the
//! other surface's points, bucketed in a grid of 4x4x4-voxel cells and visited in shells with
//! an exact stopping bound; when the surfaces are far apart the search gives up and the exact
//! EDT evaluated at the query points takes over (same values either way). The solid-set
//! variants search the other mask's boundary voxels (which hold the nearest voxel of any
//! outside point) and give 0 inside it.

use ndarray::{Array3, ArrayView3, Zip};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{check_spacing, MetricsError, Result};
use crate::nearest::{points_of, points_where, squared_distances, Point};
use crate::overlap::check_same_shape;
use crate::surface::{
    boundary_voxels, bounding_box, neighbour_codes, surfel_area_table, BoundingBox, Connectivity,
};
use crate::value::{MetricValue, Note};

/// Which surface representation the distances use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SurfaceKind {
    /// Boundary voxels (unit weights) under the given connectivity.
    Voxels(Connectivity),
    /// DeepMind-style surfels: voxel corners weighted by marching-cubes area.
    Surfels,
}

impl Default for SurfaceKind {
    fn default() -> Self {
        SurfaceKind::Voxels(Connectivity::Six)
    }
}

/// How HDp combines the two directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HdConvention {
    /// max of the two directed percentiles (MONAI, DeepMind).
    #[default]
    MaxOfDirected,
    /// percentile of the pooled distances of both directions (MedPy, seg-metrics).
    Pooled,
}

/// Distances from the surface points of one mask to the other surface, sorted ascending, with
/// the points' weights (1 for voxels, area in mm^2 for surfels).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DirectedDistances {
    /// Sorted distances (mm).
    pub distances: Vec<f64>,
    /// Weights aligned with `distances`; `None` means all 1.
    pub weights: Option<Vec<f64>>,
}

impl DirectedDistances {
    fn total_weight(&self) -> f64 {
        match &self.weights {
            None => self.distances.len() as f64,
            Some(w) => w.iter().sum(),
        }
    }
    fn weighted_sum(&self) -> f64 {
        match &self.weights {
            None => self.distances.iter().sum(),
            Some(w) => self.distances.iter().zip(w).map(|(d, w)| d * w).sum(),
        }
    }
    fn weight_within(&self, tau: f64) -> f64 {
        let n = self.distances.partition_point(|&d| d <= tau);
        match &self.weights {
            None => n as f64,
            Some(w) => w[..n].iter().sum(),
        }
    }
    /// Largest distance (`None` if there is no point).
    pub fn max(&self) -> Option<f64> {
        self.distances.last().copied()
    }
    /// Weighted mean distance (`None` if there is no point).
    pub fn mean(&self) -> Option<f64> {
        (!self.distances.is_empty()).then(|| self.weighted_sum() / self.total_weight())
    }
    /// p-th percentile (see the module docs for the interpolation rule).
    pub fn percentile(&self, p: f64) -> Option<f64> {
        percentile_sorted(&self.distances, self.weights.as_deref(), p)
    }
}

/// Percentile of sorted values: numpy-linear without weights, DeepMind's rule with weights.
fn percentile_sorted(d: &[f64], w: Option<&[f64]>, p: f64) -> Option<f64> {
    if d.is_empty() {
        return None;
    }
    match w {
        None => {
            let h = (d.len() - 1) as f64 * p / 100.0;
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(d.len() - 1);
            let t = h - lo as f64;
            Some(d[lo] + t * (d[hi] - d[lo]))
        }
        Some(w) => {
            let total: f64 = w.iter().sum();
            let target = p / 100.0;
            let mut cum = 0.0;
            for (i, wi) in w.iter().enumerate() {
                cum += wi;
                if cum / total >= target {
                    return Some(d[i]);
                }
            }
            Some(d[d.len() - 1])
        }
    }
}

/// Both directed distance lists of a pair, and its empty-mask status.
#[derive(Debug, Clone, PartialEq)]
pub struct SurfaceDistances {
    /// Surface representation used.
    pub kind: SurfaceKind,
    /// `Some` when at least one mask is empty.
    pub empty: Option<Note>,
    /// From the reference surface to the prediction surface.
    pub ref_to_pred: DirectedDistances,
    /// From the prediction surface to the reference surface.
    pub pred_to_ref: DirectedDistances,
}

fn check_percentile(p: f64) -> Result<()> {
    if p.is_finite() && (0.0..=100.0).contains(&p) {
        Ok(())
    } else {
        Err(MetricsError::InvalidParameter {
            name: "percentile",
            value: p,
            reason: "must be in [0, 100]",
        })
    }
}

impl SurfaceDistances {
    fn guard(&self, both_empty_value: f64) -> Option<MetricValue> {
        match self.empty {
            Some(Note::BothEmpty) => {
                Some(MetricValue::conventional(both_empty_value, Note::BothEmpty))
            }
            Some(n) => Some(MetricValue::undefined(n)),
            None => None,
        }
    }
    /// HD = max of the two directed maxima.
    pub fn hausdorff(&self) -> MetricValue {
        if let Some(v) = self.guard(0.0) {
            return v;
        }
        let a = self.ref_to_pred.max().unwrap_or(0.0);
        let b = self.pred_to_ref.max().unwrap_or(0.0);
        MetricValue::defined(a.max(b))
    }
    /// The two directed Hausdorff distances `(R -> P, P -> R)`.
    pub fn directed_hausdorff(&self) -> (MetricValue, MetricValue) {
        if let Some(v) = self.guard(0.0) {
            return (v, v);
        }
        (
            MetricValue::defined(self.ref_to_pred.max().unwrap_or(0.0)),
            MetricValue::defined(self.pred_to_ref.max().unwrap_or(0.0)),
        )
    }
    /// The two directed p-th percentiles `(R -> P, P -> R)`.
    ///
    /// # Errors
    /// [`MetricsError::InvalidParameter`] unless `0 <= p <= 100`.
    pub fn directed_percentile(&self, p: f64) -> Result<(MetricValue, MetricValue)> {
        check_percentile(p)?;
        if let Some(v) = self.guard(0.0) {
            return Ok((v, v));
        }
        Ok((
            MetricValue::defined(self.ref_to_pred.percentile(p).unwrap_or(0.0)),
            MetricValue::defined(self.pred_to_ref.percentile(p).unwrap_or(0.0)),
        ))
    }
    /// HDp under `convention` (see the module docs).
    ///
    /// # Errors
    /// [`MetricsError::InvalidParameter`] unless `0 <= p <= 100`.
    pub fn hausdorff_percentile(&self, p: f64, convention: HdConvention) -> Result<MetricValue> {
        check_percentile(p)?;
        if let Some(v) = self.guard(0.0) {
            return Ok(v);
        }
        Ok(match convention {
            HdConvention::MaxOfDirected => {
                let (a, b) = self.directed_percentile(p)?;
                MetricValue::defined(a.value.unwrap_or(0.0).max(b.value.unwrap_or(0.0)))
            }
            HdConvention::Pooled => {
                let (d, w) = self.pooled();
                MetricValue::defined(percentile_sorted(&d, w.as_deref(), p).unwrap_or(0.0))
            }
        })
    }
    fn pooled(&self) -> (Vec<f64>, Option<Vec<f64>>) {
        let (a, b) = (&self.ref_to_pred, &self.pred_to_ref);
        match (&a.weights, &b.weights) {
            (None, None) => {
                let mut d: Vec<f64> = a.distances.iter().chain(&b.distances).copied().collect();
                d.par_sort_unstable_by(f64::total_cmp);
                (d, None)
            }
            _ => {
                let ones_a = vec![1.0; a.distances.len()];
                let ones_b = vec![1.0; b.distances.len()];
                let wa = a.weights.as_deref().unwrap_or(&ones_a);
                let wb = b.weights.as_deref().unwrap_or(&ones_b);
                let mut pairs: Vec<(f64, f64)> = a
                    .distances
                    .iter()
                    .copied()
                    .zip(wa.iter().copied())
                    .chain(b.distances.iter().copied().zip(wb.iter().copied()))
                    .collect();
                pairs.par_sort_unstable_by(|x, y| x.0.total_cmp(&y.0));
                let (d, w) = pairs.into_iter().unzip();
                (d, Some(w))
            }
        }
    }
    /// ASSD: (weighted) mean of both directed lists pooled.
    pub fn assd(&self) -> MetricValue {
        if let Some(v) = self.guard(0.0) {
            return v;
        }
        let (a, b) = (&self.ref_to_pred, &self.pred_to_ref);
        MetricValue::defined(
            (a.weighted_sum() + b.weighted_sum()) / (a.total_weight() + b.total_weight()),
        )
    }
    /// The two directed (weighted) mean distances `(R -> P, P -> R)`.
    pub fn directed_mean(&self) -> (MetricValue, MetricValue) {
        if let Some(v) = self.guard(0.0) {
            return (v, v);
        }
        (
            MetricValue::defined(self.ref_to_pred.mean().unwrap_or(0.0)),
            MetricValue::defined(self.pred_to_ref.mean().unwrap_or(0.0)),
        )
    }
    /// MSD: the average of the two directed mean distances.
    pub fn msd(&self) -> MetricValue {
        if let Some(v) = self.guard(0.0) {
            return v;
        }
        let (a, b) = self.directed_mean();
        MetricValue::defined((a.value.unwrap_or(0.0) + b.value.unwrap_or(0.0)) / 2.0)
    }
    /// NSD at tolerance `tau` mm (surface Dice).
    ///
    /// # Errors
    /// [`MetricsError::InvalidParameter`] unless `tau` is finite and `>= 0`.
    pub fn nsd(&self, tau: f64) -> Result<MetricValue> {
        if !(tau.is_finite() && tau >= 0.0) {
            return Err(MetricsError::InvalidParameter {
                name: "tolerance_mm",
                value: tau,
                reason: "must be finite and >= 0",
            });
        }
        Ok(match self.empty {
            Some(Note::BothEmpty) => MetricValue::conventional(1.0, Note::BothEmpty),
            Some(n) => MetricValue::conventional(0.0, n),
            None => {
                let (a, b) = (&self.ref_to_pred, &self.pred_to_ref);
                MetricValue::defined(
                    (a.weight_within(tau) + b.weight_within(tau))
                        / (a.total_weight() + b.total_weight()),
                )
            }
        })
    }
}

/// The empty-mask case of a pair from its two bounding boxes, or the joint box.
fn joint_box(
    reference: ArrayView3<'_, bool>,
    prediction: ArrayView3<'_, bool>,
) -> std::result::Result<BoundingBox, Note> {
    let (br, bp) = rayon::join(|| bounding_box(reference), || bounding_box(prediction));
    match (br, bp) {
        (None, None) => Err(Note::BothEmpty),
        (None, Some(_)) => Err(Note::EmptyReference),
        (Some(_), None) => Err(Note::EmptyPrediction),
        (Some(a), Some(b)) => Ok(a.union(&b)),
    }
}

fn sorted_sqrt(mut d2: Vec<f64>) -> Vec<f64> {
    d2.par_iter_mut().for_each(|x| *x = x.sqrt());
    d2.par_sort_unstable_by(f64::total_cmp);
    d2
}

fn sorted_weighted(d2: Vec<f64>, w: Vec<f64>) -> DirectedDistances {
    let mut pairs: Vec<(f64, f64)> = d2.into_iter().map(f64::sqrt).zip(w).collect();
    pairs.par_sort_unstable_by(|x, y| x.0.total_cmp(&y.0));
    let (d, w) = pairs.into_iter().unzip();
    DirectedDistances {
        distances: d,
        weights: Some(w),
    }
}

/// Directed surface distances of a pair, from which every surface-distance metric follows.
///
/// # Errors
/// [`MetricsError::ShapeMismatch`] or [`MetricsError::InvalidSpacing`].
pub fn surface_distances(
    reference: ArrayView3<'_, bool>,
    prediction: ArrayView3<'_, bool>,
    spacing: [f64; 3],
    kind: SurfaceKind,
) -> Result<SurfaceDistances> {
    check_spacing(spacing)?;
    check_same_shape(reference.shape(), prediction.shape())?;
    let bb = match joint_box(reference, prediction) {
        Ok(b) => b,
        Err(note) => {
            return Ok(SurfaceDistances {
                kind,
                empty: Some(note),
                ref_to_pred: DirectedDistances::default(),
                pred_to_ref: DirectedDistances::default(),
            })
        }
    };
    let (r, p) = (bb.crop(reference), bb.crop(prediction));
    let (ref_to_pred, pred_to_ref) = match kind {
        SurfaceKind::Voxels(conn) => {
            let (sr, sp) = rayon::join(
                || points_of(boundary_voxels(r, conn).view()),
                || points_of(boundary_voxels(p, conn).view()),
            );
            let shape = bb.shape();
            let dir = |t: &[Point], q: &[Point]| DirectedDistances {
                distances: sorted_sqrt(
                    squared_distances(t, q, shape, spacing, None).unwrap_or_default(),
                ),
                weights: None,
            };
            rayon::join(|| dir(&sp, &sr), || dir(&sr, &sp))
        }
        SurfaceKind::Surfels => {
            let table = surfel_area_table(spacing);
            let (cr, cp) = rayon::join(|| neighbour_codes(r), || neighbour_codes(p));
            let surfel = |&c: &u8| c != 0 && c != 255;
            let (pr, pp) = rayon::join(
                || points_where(cr.view(), surfel),
                || points_where(cp.view(), surfel),
            );
            let shape = [cr.shape()[0], cr.shape()[1], cr.shape()[2]];
            let areas = |c: &Array3<u8>, pts: &[Point]| -> Vec<f64> {
                pts.iter()
                    .map(|q| table[c[[q[0] as usize, q[1] as usize, q[2] as usize]] as usize])
                    .collect()
            };
            let dir = |t: &[Point], q: &[Point], c: &Array3<u8>| {
                sorted_weighted(
                    squared_distances(t, q, shape, spacing, None).unwrap_or_default(),
                    areas(c, q),
                )
            };
            rayon::join(|| dir(&pp, &pr, &cr), || dir(&pr, &pp, &cp))
        }
    };
    Ok(SurfaceDistances {
        kind,
        empty: None,
        ref_to_pred,
        pred_to_ref,
    })
}

/// The solid-set Hausdorff distances of SimpleITK's `HausdorffDistanceImageFilter`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SolidHausdorff {
    /// max over the foreground voxels of either mask of the distance to the other mask (mm).
    pub hausdorff: MetricValue,
    /// Mean of the two directed mean distances over all foreground voxels (mm); ITK's
    /// `GetAverageHausdorffDistance()`.
    pub average: MetricValue,
    /// Directed maxima `(R -> P, P -> R)`.
    pub directed: (MetricValue, MetricValue),
}

/// Squared distances from the foreground voxels of each mask that lie outside the other mask
/// to the other mask, within the joint box, with the number of foreground voxels of each mask
/// (the voxels inside the other mask are at distance 0).
type SolidDirected = (Vec<f64>, usize);

fn solid_distances(
    reference: ArrayView3<'_, bool>,
    prediction: ArrayView3<'_, bool>,
    spacing: [f64; 3],
) -> std::result::Result<(SolidDirected, SolidDirected), Note> {
    let bb = joint_box(reference, prediction)?;
    let (r, p) = (bb.crop(reference), bb.crop(prediction));
    let shape = bb.shape();
    // Query voxels: foreground of one mask outside the other.
    let outside = |a: ArrayView3<'_, bool>, b: ArrayView3<'_, bool>| {
        let mut m = Array3::from_elem(a.raw_dim(), false);
        Zip::from(&mut m)
            .and(&a)
            .and(&b)
            .par_for_each(|o, &x, &y| *o = x & !y);
        points_of(m.view())
    };
    let count = |a: ArrayView3<'_, bool>| a.iter().filter(|&&x| x).count();
    let ((rb, rq), (pb, pq)) = rayon::join(
        || {
            rayon::join(
                || points_of(boundary_voxels(r, Connectivity::Six).view()),
                || outside(r, p),
            )
        },
        || {
            rayon::join(
                || points_of(boundary_voxels(p, Connectivity::Six).view()),
                || outside(p, r),
            )
        },
    );
    let (a, b) = rayon::join(
        || squared_distances(&pb, &rq, shape, spacing, None).unwrap_or_default(),
        || squared_distances(&rb, &pq, shape, spacing, None).unwrap_or_default(),
    );
    Ok(((a, count(r)), (b, count(p))))
}

/// SimpleITK's solid-set Hausdorff distance (see the module docs), in mm.
///
/// # Errors
/// [`MetricsError::ShapeMismatch`] or [`MetricsError::InvalidSpacing`].
pub fn solid_hausdorff(
    reference: ArrayView3<'_, bool>,
    prediction: ArrayView3<'_, bool>,
    spacing: [f64; 3],
) -> Result<SolidHausdorff> {
    check_spacing(spacing)?;
    check_same_shape(reference.shape(), prediction.shape())?;
    match solid_distances(reference, prediction, spacing) {
        Err(note) => {
            let v = if note == Note::BothEmpty {
                MetricValue::conventional(0.0, note)
            } else {
                MetricValue::undefined(note)
            };
            Ok(SolidHausdorff {
                hausdorff: v,
                average: v,
                directed: (v, v),
            })
        }
        Ok((a, b)) => {
            let max = |v: &SolidDirected| v.0.iter().copied().fold(0.0f64, f64::max).sqrt();
            let mean = |v: &SolidDirected| v.0.iter().map(|x| x.sqrt()).sum::<f64>() / v.1 as f64;
            let (ma, mb) = (max(&a), max(&b));
            Ok(SolidHausdorff {
                hausdorff: MetricValue::defined(ma.max(mb)),
                average: MetricValue::defined((mean(&a) + mean(&b)) / 2.0),
                directed: (MetricValue::defined(ma), MetricValue::defined(mb)),
            })
        }
    }
}

/// The seed paper's HD: symmetric Hausdorff distance over all foreground voxels with unit
/// spacing (scipy `directed_hausdorff` on voxel indices), in voxels. The paper set it to 0
/// when a mask was empty; here that case is explicit (`None` with the note, or 0 noted
/// [`Note::BothEmpty`]).
///
/// # Errors
/// [`MetricsError::ShapeMismatch`].
pub fn seed_paper_hausdorff_voxels(
    reference: ArrayView3<'_, bool>,
    prediction: ArrayView3<'_, bool>,
) -> Result<MetricValue> {
    Ok(solid_hausdorff(reference, prediction, [1.0; 3])?.hausdorff)
}
