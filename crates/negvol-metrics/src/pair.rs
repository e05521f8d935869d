//! Every metric of a pair in one call, and per-label results from two label maps.

use std::collections::BTreeSet;

use ndarray::{ArrayView3, Zip};
use serde::{Deserialize, Serialize};

use crate::distance::{
    seed_paper_hausdorff_voxels, solid_hausdorff, surface_distances, HdConvention, SolidHausdorff,
    SurfaceDistances, SurfaceKind,
};
use crate::error::{check_spacing, Result};
use crate::overlap::{check_same_shape, overlap, OverlapMetrics};
use crate::surface::{bounding_box, Connectivity};
use crate::value::MetricValue;

/// What [`evaluate_pair`] computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalOptions {
    /// Percentile of HDp (default 95).
    pub percentile: f64,
    /// NSD tolerance in mm (default 1).
    pub tolerance_mm: f64,
    /// Connectivity of the boundary-voxel surface (default 6).
    pub connectivity: Connectivity,
    /// Also compute the surfel (DeepMind) variants.
    pub surfels: bool,
    /// Also compute SimpleITK's solid-set HD.
    pub solid: bool,
    /// Also compute the seed paper's all-voxel HD in voxels.
    pub seed_paper: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            percentile: 95.0,
            tolerance_mm: 1.0,
            connectivity: Connectivity::Six,
            surfels: true,
            solid: true,
            seed_paper: true,
        }
    }
}

/// Surface-distance metrics of one surface representation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistanceMetrics {
    /// Surface representation.
    pub kind: SurfaceKind,
    /// HD (mm).
    pub hd: MetricValue,
    /// HDp, max of the directed percentiles (mm).
    pub hd_percentile: MetricValue,
    /// HDp of the pooled distances (mm).
    pub hd_percentile_pooled: MetricValue,
    /// Directed HD, reference to prediction (mm).
    pub hd_ref_to_pred: MetricValue,
    /// Directed HD, prediction to reference (mm).
    pub hd_pred_to_ref: MetricValue,
    /// Directed p-th percentile, reference to prediction (mm).
    pub hd_percentile_ref_to_pred: MetricValue,
    /// Directed p-th percentile, prediction to reference (mm).
    pub hd_percentile_pred_to_ref: MetricValue,
    /// ASSD, pooled mean (mm).
    pub assd: MetricValue,
    /// MSD, mean of the directed means (mm).
    pub msd: MetricValue,
    /// Mean distance, reference to prediction (mm).
    pub mean_ref_to_pred: MetricValue,
    /// Mean distance, prediction to reference (mm).
    pub mean_pred_to_ref: MetricValue,
    /// NSD at the tolerance.
    pub nsd: MetricValue,
}

impl DistanceMetrics {
    /// All metrics from directed distances.
    ///
    /// # Errors
    /// Invalid percentile or tolerance.
    pub fn from_distances(
        d: &SurfaceDistances,
        percentile: f64,
        tolerance_mm: f64,
    ) -> Result<Self> {
        let (ha, hb) = d.directed_hausdorff();
        let (pa, pb) = d.directed_percentile(percentile)?;
        let (ma, mb) = d.directed_mean();
        Ok(DistanceMetrics {
            kind: d.kind,
            hd: d.hausdorff(),
            hd_percentile: d.hausdorff_percentile(percentile, HdConvention::MaxOfDirected)?,
            hd_percentile_pooled: d.hausdorff_percentile(percentile, HdConvention::Pooled)?,
            hd_ref_to_pred: ha,
            hd_pred_to_ref: hb,
            hd_percentile_ref_to_pred: pa,
            hd_percentile_pred_to_ref: pb,
            assd: d.assd(),
            msd: d.msd(),
            mean_ref_to_pred: ma,
            mean_pred_to_ref: mb,
            nsd: d.nsd(tolerance_mm)?,
        })
    }
    fn named(&self, prefix: &str, out: &mut Vec<(String, MetricValue)>) {
        for (n, v) in [
            ("hd", self.hd),
            ("hd_percentile", self.hd_percentile),
            ("hd_percentile_pooled", self.hd_percentile_pooled),
            ("hd_ref_to_pred", self.hd_ref_to_pred),
            ("hd_pred_to_ref", self.hd_pred_to_ref),
            ("hd_percentile_ref_to_pred", self.hd_percentile_ref_to_pred),
            ("hd_percentile_pred_to_ref", self.hd_percentile_pred_to_ref),
            ("assd", self.assd),
            ("msd", self.msd),
            ("mean_ref_to_pred", self.mean_ref_to_pred),
            ("mean_pred_to_ref", self.mean_pred_to_ref),
            ("nsd", self.nsd),
        ] {
            out.push((format!("{prefix}{n}"), v));
        }
    }
}

/// Every metric of a reference/prediction pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairMetrics {
    /// Options used.
    pub options: EvalOptions,
    /// Spacing used (mm).
    pub spacing: [f64; 3],
    /// Reference volume (mm^3).
    pub reference_volume_mm3: f64,
    /// Prediction volume (mm^3).
    pub prediction_volume_mm3: f64,
    /// Overlap metrics.
    pub overlap: OverlapMetrics,
    /// Distances on boundary voxels.
    pub voxel_surface: DistanceMetrics,
    /// Distances on surfels (when requested).
    pub surfel_surface: Option<DistanceMetrics>,
    /// SimpleITK solid-set HD (when requested).
    pub solid: Option<SolidHausdorff>,
    /// Seed paper HD in voxels (when requested).
    pub seed_paper_hd_voxels: Option<MetricValue>,
}

impl PairMetrics {
    /// Every scalar metric with a stable name (used by reports and CSV).
    pub fn named_values(&self) -> Vec<(String, MetricValue)> {
        let o = &self.overlap;
        let mut out: Vec<(String, MetricValue)> = vec![
            ("dice".into(), o.dice),
            ("iou".into(), o.iou),
            ("precision".into(), o.precision),
            ("recall".into(), o.recall),
            ("specificity".into(), o.specificity),
            ("volume_similarity".into(), o.volume_similarity),
            (
                "relative_volume_difference".into(),
                o.relative_volume_difference,
            ),
            (
                "reference_volume_mm3".into(),
                MetricValue::defined(self.reference_volume_mm3),
            ),
            (
                "prediction_volume_mm3".into(),
                MetricValue::defined(self.prediction_volume_mm3),
            ),
        ];
        self.voxel_surface.named("", &mut out);
        if let Some(s) = &self.surfel_surface {
            s.named("surfel_", &mut out);
        }
        if let Some(s) = &self.solid {
            out.push(("sitk_solid_hd".into(), s.hausdorff));
            out.push(("sitk_solid_average_hd".into(), s.average));
        }
        if let Some(s) = self.seed_paper_hd_voxels {
            out.push(("seed_paper_hd_voxels".into(), s));
        }
        out
    }
}

/// Evaluates every requested metric of a pair of binary masks.
///
/// # Errors
/// Shape mismatch, invalid spacing, percentile or tolerance.
pub fn evaluate_pair(
    reference: ArrayView3<'_, bool>,
    prediction: ArrayView3<'_, bool>,
    spacing: [f64; 3],
    options: &EvalOptions,
) -> Result<PairMetrics> {
    check_spacing(spacing)?;
    check_same_shape(reference.shape(), prediction.shape())?;
    let ov = overlap(reference, prediction)?;
    let vv = spacing[0] * spacing[1] * spacing[2];
    // Crop once to the joint bounding box (changes no result; each metric would crop anyway).
    let (reference, prediction) = match (bounding_box(reference), bounding_box(prediction)) {
        (Some(a), Some(b)) => {
            let bb = a.union(&b);
            (bb.crop(reference), bb.crop(prediction))
        }
        _ => (reference, prediction),
    };
    let vox = surface_distances(
        reference,
        prediction,
        spacing,
        SurfaceKind::Voxels(options.connectivity),
    )?;
    let voxel_surface =
        DistanceMetrics::from_distances(&vox, options.percentile, options.tolerance_mm)?;
    drop(vox);
    let surfel_surface = if options.surfels {
        let s = surface_distances(reference, prediction, spacing, SurfaceKind::Surfels)?;
        Some(DistanceMetrics::from_distances(
            &s,
            options.percentile,
            options.tolerance_mm,
        )?)
    } else {
        None
    };
    let solid = if options.solid {
        Some(solid_hausdorff(reference, prediction, spacing)?)
    } else {
        None
    };
    let seed = if options.seed_paper {
        Some(seed_paper_hausdorff_voxels(reference, prediction)?)
    } else {
        None
    };
    Ok(PairMetrics {
        options: options.clone(),
        spacing,
        reference_volume_mm3: ov.counts.reference_voxels() as f64 * vv,
        prediction_volume_mm3: ov.counts.prediction_voxels() as f64 * vv,
        overlap: ov,
        voxel_surface,
        surfel_surface,
        solid,
        seed_paper_hd_voxels: seed,
    })
}

/// Metrics of one label of two label maps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelMetrics {
    /// The label value.
    pub label: u8,
    /// Its metrics (mask = voxels equal to the label).
    pub metrics: PairMetrics,
}

/// Per-label metrics of two label maps. `labels`: the labels to evaluate; `None` means every
/// non-zero label present in either map (background 0 excluded). A label absent from both
/// maps gives the both-empty conventions, noted.
///
/// # Errors
/// As [`evaluate_pair`].
pub fn evaluate_labels(
    reference: ArrayView3<'_, u8>,
    prediction: ArrayView3<'_, u8>,
    spacing: [f64; 3],
    labels: Option<&[u8]>,
    options: &EvalOptions,
) -> Result<Vec<LabelMetrics>> {
    check_same_shape(reference.shape(), prediction.shape())?;
    let labels: Vec<u8> = match labels {
        Some(l) => l.to_vec(),
        None => {
            let mut present = [false; 256];
            for &v in reference.iter().chain(prediction.iter()) {
                present[v as usize] = true;
            }
            (1..=255u8)
                .filter(|&l| present[l as usize])
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        }
    };
    let mut out = Vec::with_capacity(labels.len());
    for l in labels {
        let mut r = ndarray::Array3::from_elem(reference.raw_dim(), false);
        let mut p = r.clone();
        Zip::from(&mut r)
            .and(&reference)
            .par_for_each(|o, &v| *o = v == l);
        Zip::from(&mut p)
            .and(&prediction)
            .par_for_each(|o, &v| *o = v == l);
        out.push(LabelMetrics {
            label: l,
            metrics: evaluate_pair(r.view(), p.view(), spacing, options)?,
        });
    }
    Ok(out)
}
