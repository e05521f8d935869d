//! Experiment planning as nnU-Net does it: dataset **fingerprint** -> **plan** -> training
//! configuration.
//!
//! [`fingerprint`] reads every case of a dataset once (in parallel) and records what the plan
//! needs: per case the shape, spacing and foreground voxels of each target class; over the
//! dataset the median / min / max spacing per axis, the median shape, the target spacing and the
//! median shape at it, foreground intensity statistics (from a fixed-size, seeded sample of
//! foreground voxels per case) and the median volume of each class.
//!
//! [`plan()`] turns a fingerprint into a [`Plan`] with the rules of nnU-Net v2's default
//! experiment planner (Isensee et al., *Nature Methods* 18:203, 2021; `ExperimentPlanner` and
//! `get_pool_and_conv_props` of nnU-Net v2), re-implemented here:
//!
//! 1. **target spacing**: the median spacing per axis; on anisotropic data (the largest median
//!    spacing is more than [`ANISOTROPY_THRESHOLD`] times the next largest *and* that axis has
//!    fewer than a third of the voxels of the others) the low-resolution axis takes the 10th
//!    percentile of its spacings instead, but never less than the other axes' largest spacing
//!    (+1e-5), so that thin slices are not interpolated from thick ones
//!    ([`target_spacing`]);
//! 2. **initial patch**: a patch of 256^3 voxels in volume with the aspect ratio `1 / spacing`,
//!    clipped to the median shape at the target spacing;
//! 3. **topology** ([`topology`]): pool an axis while its feature map stays at least
//!    [`FEATURE_MAP_MIN_EDGE`] voxels after pooling (size >= 8 before) and its spacing is within a
//!    factor 2 of the finest current spacing; a lone poolable axis needs at least 12 voxels;
//!    kernels are 3 on an axis once its spacing is within 2x of the finest, else 1; the patch is
//!    padded up to a multiple of `2^pools` per axis;
//! 4. **network**: the topology's strides and kernels, features 32, doubling per stage, capped
//!    at 320 ([`PlanOptions::max_features`]);
//! 5. **memory**: while the estimate at the minimum batch size (2) exceeds the GPU budget, shrink
//!    the patch axis that is largest relative to the median shape by one divisor step (nnU-Net's
//!    two-step reduction, so that no valid size is skipped) and re-derive the topology;
//! 6. **batch size**: as many patches as the budget holds (at least 2), capped so that one batch
//!    covers at most 5 % of the dataset's voxels (nnU-Net's overfitting guard), never below 2;
//! 7. **normalisation**: CT, so nnU-Net's foreground z-score: clip to the foreground's 0.5 and
//!    99.5 percentiles, subtract the mean, divide by the standard deviation (fitted here, from
//!    the fingerprint).
//!
//! The memory estimate ([`feature_map_elements`], [`estimate_memory_gib`]) counts what nnU-Net's
//! `compute_conv_feature_map_size` counts: the output elements of every convolution block
//! (convolution + norm + non-linearity counted once), every up-sampling and every segmentation
//! head, per sample. It is calibrated to nnU-Net's reference point: 560 million such elements
//! per sample at batch 2 is what nnU-Net v2 lets into its 8 GB target ([`REFERENCE_ELEMENTS`],
//! read here as 8 GiB). nnU-Net trains with mixed precision, so that point holds for
//! [`Precision::Bf16`] / [`Precision::F16`]; negvol's default [`Precision::F32`] stores every
//! activation in 4 bytes instead of 2 and is estimated at twice the bytes per element (an
//! assumption, not yet measured on a GPU). Why this reference: it is the one point at which
//! nnU-Net's published configurations were tuned on real GPUs, so plans made here at 8 GiB and
//! mixed precision are nnU-Net's.
//!
//! Deviations from nnU-Net, each on purpose: no crop to the non-zero region before the
//! fingerprint (CT air is not zero); 10 million foreground samples over the dataset instead of
//! 100 million (memory; the 0.5 / 99.5 percentiles of 10^7 draws are exact to well below a HU);
//! the batch size is rounded down instead of to the nearest integer, so the planned batch never
//! exceeds the budget; the paper's networks (`unet3d`, `unet3d-att`, `vnet`) pool all axes
//! together, so they take the smallest per-axis pool count, at most their published depth, and
//! keep their own kernels. The planned `unet` carries nnU-Net's per-stage kernels
//! ([`UnetConfig::kernel_sizes`], equal to [`Plan::kernel_sizes`]): 1 on an axis still more than
//! 2x coarser than the finest, as nnU-Net builds it.
//!
//! ```no_run
//! use negvol_train::plan::{fingerprint, plan, PlanOptions};
//! use negvol_train::run::RunConfig;
//! use negvol_train::DatasetSpec;
//!
//! let spec = DatasetSpec::open("phantoms")?;
//! let fp = fingerprint(&spec, &["mc".to_string(), "tb".to_string()])?;
//! let p = plan(&fp, &PlanOptions { gpu_memory_gib: 8.0, ..Default::default() })?;
//! println!("{fp}\n{p}");
//! p.save("plan.json".as_ref())?;
//! let mut run = RunConfig::default();
//! p.apply_to_run(&mut run); // spacing, patch, batch, normalisation, precision, network
//! # Ok::<(), negvol_train::TrainError>(())
//! ```

use std::fmt;
use std::path::Path;

use negvol_nets::{NetConfig, NormConfig, Unet3dAttConfig, Unet3dConfig, UnetConfig, VnetConfig};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::dataset::load_case;
use crate::preprocess::{percentile_sorted, ForegroundStats, Normalization};
use crate::run::RunConfig;
use crate::{DatasetSpec, Precision, Result, TrainConfig, TrainError};

/// nnU-Net's anisotropy threshold: the low-resolution axis is treated apart when its median
/// spacing exceeds this many times the next largest one (`ANISO_THRESHOLD` in nnU-Net v2).
pub const ANISOTROPY_THRESHOLD: f64 = 3.0;
/// Percentile of the low-resolution axis' spacings used as its target on anisotropic data.
pub const ANISOTROPIC_SPACING_PERCENTILE: f64 = 10.0;
/// Volume (voxels) of nnU-Net's initial 3D patch before clipping: 256^3.
pub const INITIAL_PATCH_VOXELS: f64 = 256.0 * 256.0 * 256.0;
/// Smallest edge of a feature map at the bottleneck (nnU-Net: 4 voxels).
pub const FEATURE_MAP_MIN_EDGE: usize = 4;
/// Feature-map elements per sample that nnU-Net v2 allows at its reference point
/// ([`REFERENCE_GIB`] at batch [`REFERENCE_BATCH`]): `UNet_reference_val_3d`.
pub const REFERENCE_ELEMENTS: f64 = 560_000_000.0;
/// The GPU memory of nnU-Net's reference point (its `UNet_reference_val_corresp_GB`, 8 GB, read
/// as GiB).
pub const REFERENCE_GIB: f64 = 8.0;
/// The batch size of nnU-Net's reference point (`UNet_reference_val_corresp_bs_3d`).
pub const REFERENCE_BATCH: f64 = 2.0;
/// Foreground voxels sampled over the whole dataset for the intensity statistics (split evenly
/// over the cases). nnU-Net samples 10^8; see the module documentation.
pub const DEFAULT_FOREGROUND_SAMPLES: usize = 10_000_000;
/// Seed of the foreground sampling of every case (nnU-Net's 1234).
pub const FOREGROUND_SAMPLE_SEED: u64 = 1234;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

// ---------------------------------------------------------------------------------------------
// Fingerprint
// ---------------------------------------------------------------------------------------------

/// What the planner needs of one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseFingerprint {
    /// Case id.
    pub id: String,
    /// Shape (voxels) along the axes of the case reoriented to RAS ([`PLAN_ORIENTATION`]),
    /// the axes a plan's spacing and patch refer to.
    pub shape: [usize; 3],
    /// Spacing (mm) along the same RAS axes.
    pub spacing: [f64; 3],
    /// Voxels of each target class in the case's label map, in target order (where masks
    /// overlap the later target wins, as in training).
    pub foreground_voxels: Vec<u64>,
    /// The same in mm^3 (voxels x voxel volume).
    pub foreground_mm3: Vec<f64>,
}

/// Foreground intensity statistics over the sampled foreground voxels of all cases.
///
/// `mean`, `std`, `median`, `min`, `max` and the percentiles are nnU-Net's fingerprint values
/// (unclipped). `clipped_mean` / `clipped_std` are of the samples clipped to
/// `[percentile_00_5, percentile_99_5]`, which is how negvol's
/// [`Normalization::ForegroundZScore`] defines its mean and standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntensityStats {
    /// Number of samples.
    pub samples: usize,
    /// Mean.
    pub mean: f64,
    /// Standard deviation (population).
    pub std: f64,
    /// Median.
    pub median: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// 0.5th percentile (linear interpolation, numpy's default).
    pub percentile_00_5: f64,
    /// 99.5th percentile.
    pub percentile_99_5: f64,
    /// Mean after clipping to the two percentiles.
    pub clipped_mean: f64,
    /// Standard deviation after clipping to the two percentiles (at least 1e-8).
    pub clipped_std: f64,
}

impl IntensityStats {
    /// Statistics of a set of samples; `None` when there are fewer than 2 finite ones.
    pub fn from_samples(mut samples: Vec<f32>) -> Option<Self> {
        samples.retain(|v| v.is_finite());
        if samples.len() < 2 {
            return None;
        }
        samples.sort_by(f32::total_cmp);
        let n = samples.len() as f64;
        let q = |p: f64| percentile_sorted(&samples, p).map_or(f64::NAN, f64::from);
        let lo = q(0.5);
        let hi = q(99.5);
        let moments = |f: &dyn Fn(f64) -> f64| {
            let mean = samples.iter().map(|&v| f(v as f64)).sum::<f64>() / n;
            let var = samples
                .iter()
                .map(|&v| (f(v as f64) - mean).powi(2))
                .sum::<f64>()
                / n;
            (mean, var.sqrt())
        };
        let (mean, std) = moments(&|v| v);
        let (clipped_mean, clipped_std) = moments(&|v| v.clamp(lo, hi));
        Some(Self {
            samples: samples.len(),
            mean,
            std,
            median: q(50.0),
            min: samples[0] as f64,
            max: samples[samples.len() - 1] as f64,
            percentile_00_5: lo,
            percentile_99_5: hi,
            clipped_mean,
            clipped_std: clipped_std.max(1e-8),
        })
    }

    /// nnU-Net's CT normalisation with these statistics: clip to the 0.5 / 99.5 percentiles,
    /// then the clipped mean and standard deviation.
    pub fn normalization(&self) -> Normalization {
        Normalization::ForegroundZScore {
            lower_percentile: 0.5,
            upper_percentile: 99.5,
            stats: Some(ForegroundStats {
                lo: self.percentile_00_5 as f32,
                hi: self.percentile_99_5 as f32,
                mean: self.clipped_mean as f32,
                std: self.clipped_std as f32,
            }),
        }
    }
}

/// A dataset's fingerprint: per-case facts and the dataset-level summaries derived from them
/// (see the module documentation). Build one with [`fingerprint`] or [`Fingerprint::from_cases`];
/// [`plan()`] re-derives the summaries from `cases`, so they are for reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Target structures, in class order (class `t + 1` is `targets[t]`).
    pub targets: Vec<String>,
    /// One entry per case, in the dataset's order.
    pub cases: Vec<CaseFingerprint>,
    /// Median spacing per axis (mm).
    pub median_spacing: [f64; 3],
    /// Smallest spacing per axis (mm).
    pub min_spacing: [f64; 3],
    /// Largest spacing per axis (mm).
    pub max_spacing: [f64; 3],
    /// Median shape per axis (voxels; a half when the number of cases is even).
    pub median_shape: [f64; 3],
    /// nnU-Net's target spacing ([`target_spacing`]).
    pub target_spacing: [f64; 3],
    /// The axis treated as low-resolution by the anisotropy rule, if any.
    pub anisotropic_axis: Option<usize>,
    /// Median shape after resampling every case to `target_spacing`.
    pub median_shape_at_target: [f64; 3],
    /// Median volume (mm^3) of each target class over the cases that contain it (0 when none
    /// does).
    pub median_volume_mm3: Vec<f64>,
    /// Foreground (any target) intensity statistics.
    pub intensity: IntensityStats,
}

/// Options of [`fingerprint_with`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FingerprintOptions {
    /// Foreground voxels sampled (with replacement) over the whole dataset, split evenly over
    /// the cases, so that every case weighs the same in the intensity statistics.
    pub foreground_samples: usize,
    /// Seed of every case's sample (each case uses its own generator with this seed, so the
    /// result does not depend on the order in which cases are read).
    pub seed: u64,
}

impl Default for FingerprintOptions {
    fn default() -> Self {
        Self {
            foreground_samples: DEFAULT_FOREGROUND_SAMPLES,
            seed: FOREGROUND_SAMPLE_SEED,
        }
    }
}

/// Median of values (numpy: the mean of the two middle values for an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Linear-interpolated percentile of values (numpy's default).
fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

fn per_axis(
    cases: &[CaseFingerprint],
    f: impl Fn(&CaseFingerprint, usize) -> f64,
) -> [Vec<f64>; 3] {
    std::array::from_fn(|a| cases.iter().map(|c| f(c, a)).collect())
}

/// A shape resampled from `spacing` to `target` (nnU-Net's `compute_new_shape`: rounded, ties
/// to even as Python's `round`).
pub fn shape_at_spacing(shape: [usize; 3], spacing: [f64; 3], target: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|a| (shape[a] as f64 * spacing[a] / target[a]).round_ties_even())
}

/// nnU-Net's target spacing of a dataset and the axis it treated as low-resolution, if any.
///
/// The median spacing per axis, except on anisotropic data: with `w` the axis of the largest
/// median spacing, if `median_spacing[w] > 3 x` the largest other median spacing **and**
/// `3 x median_shape[w] <` the smallest other median shape, axis `w` takes the 10th percentile
/// of its spacings, raised to the largest other spacing + 1e-5 if it falls below it.
pub fn target_spacing(cases: &[CaseFingerprint]) -> Result<([f64; 3], Option<usize>)> {
    check_cases(cases)?;
    let sp = per_axis(cases, |c, a| c.spacing[a]);
    let sh = per_axis(cases, |c, a| c.shape[a] as f64);
    let mut target: [f64; 3] = std::array::from_fn(|a| median(sp[a].clone()));
    let size: [f64; 3] = std::array::from_fn(|a| median(sh[a].clone()));
    // The first axis of the largest spacing, as numpy's argmax.
    let worst = (0..3).fold(0, |w, a| if target[a] > target[w] { a } else { w });
    let others: Vec<usize> = (0..3).filter(|&a| a != worst).collect();
    let max_other_spacing = others.iter().map(|&a| target[a]).fold(f64::MIN, f64::max);
    let min_other_size = others.iter().map(|&a| size[a]).fold(f64::MAX, f64::min);
    let aniso_spacing = target[worst] > ANISOTROPY_THRESHOLD * max_other_spacing;
    let aniso_voxels = size[worst] * ANISOTROPY_THRESHOLD < min_other_size;
    if aniso_spacing && aniso_voxels {
        let mut t = percentile(sp[worst].clone(), ANISOTROPIC_SPACING_PERCENTILE);
        if t < max_other_spacing {
            t = max_other_spacing.max(t) + 1e-5;
        }
        target[worst] = t;
        return Ok((target, Some(worst)));
    }
    Ok((target, None))
}

fn check_cases(cases: &[CaseFingerprint]) -> Result<()> {
    if cases.is_empty() {
        return Err(TrainError::Config(
            "the fingerprint has no case; planning needs at least one".into(),
        ));
    }
    for c in cases {
        if c.spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(TrainError::case(
                &c.id,
                format!("spacing {:?} mm is not finite and positive", c.spacing),
            ));
        }
        if c.shape.contains(&0) {
            return Err(TrainError::case(
                &c.id,
                format!("shape {:?} has a zero axis", c.shape),
            ));
        }
    }
    Ok(())
}

impl Fingerprint {
    /// Assemble a fingerprint from per-case facts and intensity statistics, deriving the
    /// dataset-level summaries. Fails on no case, a case without a finite positive spacing or a
    /// zero-sized axis, or per-class counts that do not match `targets`.
    pub fn from_cases(
        targets: Vec<String>,
        cases: Vec<CaseFingerprint>,
        intensity: IntensityStats,
    ) -> Result<Self> {
        check_cases(&cases)?;
        for c in &cases {
            if c.foreground_voxels.len() != targets.len() || c.foreground_mm3.len() != targets.len()
            {
                return Err(TrainError::case(
                    &c.id,
                    format!(
                        "{} foreground counts for {} targets {targets:?}",
                        c.foreground_voxels.len(),
                        targets.len()
                    ),
                ));
            }
        }
        let sp = per_axis(&cases, |c, a| c.spacing[a]);
        let sh = per_axis(&cases, |c, a| c.shape[a] as f64);
        let (target, anisotropic_axis) = target_spacing(&cases)?;
        let resampled = per_axis(&cases, |c, a| {
            shape_at_spacing(c.shape, c.spacing, target)[a]
        });
        let median_volume_mm3 = (0..targets.len())
            .map(|t| {
                let v: Vec<f64> = cases
                    .iter()
                    .filter(|c| c.foreground_voxels[t] > 0)
                    .map(|c| c.foreground_mm3[t])
                    .collect();
                if v.is_empty() {
                    0.0
                } else {
                    median(v)
                }
            })
            .collect();
        Ok(Self {
            median_spacing: std::array::from_fn(|a| median(sp[a].clone())),
            min_spacing: std::array::from_fn(|a| sp[a].iter().cloned().fold(f64::MAX, f64::min)),
            max_spacing: std::array::from_fn(|a| sp[a].iter().cloned().fold(f64::MIN, f64::max)),
            median_shape: std::array::from_fn(|a| median(sh[a].clone())),
            target_spacing: target,
            anisotropic_axis,
            median_shape_at_target: std::array::from_fn(|a| median(resampled[a].clone())),
            median_volume_mm3,
            intensity,
            targets,
            cases,
        })
    }

    /// Read a fingerprint JSON file.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        read_json(path.as_ref())
    }

    /// Write as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }
}

use crate::checkpoint::{read_json, write_json};

/// The orientation plans are made in: fingerprints measure shapes and spacings along the
/// axes of each case reoriented to it, and [`Plan::apply`] sets it as the run's
/// [`TrainConfig::orientation`], so a planned spacing or patch axis is an anatomical axis
/// whatever the storage order of the scans.
pub const PLAN_ORIENTATION: &str = "RAS";

/// The fingerprint of a dataset for the given targets (mask names, in class order), with the
/// default [`FingerprintOptions`]. See [`fingerprint_with`].
pub fn fingerprint(spec: &DatasetSpec, targets: &[String]) -> Result<Fingerprint> {
    fingerprint_with(spec, targets, &FingerprintOptions::default())
}

/// The fingerprint of a dataset: every case is read once ([`load_case`], cases in parallel),
/// its label map counted per class and `options.foreground_samples / cases` of its foreground
/// voxels (any target) drawn with replacement by a generator seeded with `options.seed`.
///
/// Errors: no target, no case, a case that cannot be loaded (the error names it and the file),
/// or no foreground voxel in the whole dataset (the intensity statistics need some).
pub fn fingerprint_with(
    spec: &DatasetSpec,
    targets: &[String],
    options: &FingerprintOptions,
) -> Result<Fingerprint> {
    use rayon::prelude::*;
    if targets.is_empty() {
        return Err(TrainError::Config(
            "fingerprint: no target structure given (e.g. mc, tb)".into(),
        ));
    }
    if spec.cases.is_empty() {
        return Err(TrainError::Config(
            "fingerprint: the dataset has no case".into(),
        ));
    }
    let per_case = (options.foreground_samples / spec.cases.len()).max(1);
    let results: Vec<(CaseFingerprint, Vec<f32>)> =
        spec.cases
            .par_iter()
            .map(|cs| -> Result<(CaseFingerprint, Vec<f32>)> {
                let case = load_case(cs, targets)?;
                let g = case.image.geometry();
                // Shape and spacing along the axes training will use (the run reorients to RAS).
                let t = negvol_volume::AxisTransform::to_code(g, PLAN_ORIENTATION).map_err(
                    |source| TrainError::Volume {
                        context: format!("case {}: reorienting", cs.id),
                        source,
                    },
                )?;
                let (stored_spacing, perm) = (g.spacing(), t.perm);
                let mut counts = vec![0u64; targets.len()];
                let mut fg = Vec::new();
                for (&l, &v) in case.label.data().iter().zip(case.image.data().iter()) {
                    if l > 0 && l != crate::IGNORE_LABEL {
                        counts[l as usize - 1] += 1;
                        fg.push(v);
                    }
                }
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(options.seed);
                let sample: Vec<f32> = if fg.is_empty() {
                    Vec::new()
                } else {
                    (0..per_case)
                        .map(|_| fg[rng.gen_range(0..fg.len())])
                        .collect()
                };
                let vv = g.voxel_volume_mm3();
                Ok((
                    CaseFingerprint {
                        id: cs.id.clone(),
                        shape: t.shape(g.shape()),
                        spacing: perm.map(|a| stored_spacing[a]),
                        foreground_mm3: counts.iter().map(|&n| n as f64 * vv).collect(),
                        foreground_voxels: counts,
                    },
                    sample,
                ))
            })
            .collect::<Vec<_>>()
            .into_iter()
            // The first failing case in dataset order, whichever thread failed first.
            .collect::<Result<_>>()?;
    let mut samples = Vec::with_capacity(per_case * results.len());
    let mut cases = Vec::with_capacity(results.len());
    for (c, s) in results {
        samples.extend(s);
        cases.push(c);
    }
    let intensity = IntensityStats::from_samples(samples).ok_or_else(|| {
        TrainError::Config(format!(
            "fingerprint: no foreground voxel of {targets:?} in any of the {} cases",
            cases.len()
        ))
    })?;
    Fingerprint::from_cases(targets.to_vec(), cases, intensity)
}

// ---------------------------------------------------------------------------------------------
// Topology and memory
// ---------------------------------------------------------------------------------------------

/// The pooling layout of a U-Net for a patch (nnU-Net's `get_pool_and_conv_props`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// Down-sampling steps per axis.
    pub pools_per_axis: [usize; 3],
    /// Stride of every stage, the first `[1, 1, 1]` (one entry per stage).
    pub strides: Vec<[i64; 3]>,
    /// nnU-Net's convolution kernel of every stage (1 on an axis still more than 2x coarser
    /// than the finest, else 3; the bottleneck is always 3).
    pub kernels: Vec<[i64; 3]>,
    /// The patch padded up to a multiple of `divisor`.
    pub patch: [usize; 3],
    /// `2^pools_per_axis`.
    pub divisor: [usize; 3],
}

/// nnU-Net's pooling rule for `patch` at `spacing` with bottleneck edge `min_edge` (4):
/// repeatedly pool (by 2) every axis whose current size is at least `2 min_edge` and whose
/// current spacing is less than twice the smallest current spacing among those axes; when only
/// one axis qualifies it must be at least `3 min_edge`. The patch is then padded up to a
/// multiple of `2^pools` per axis. (nnU-Net's kernel update indexes the list of poolable axes
/// by the axis number; here the rule it states is applied to every axis.)
pub fn topology(spacing: [f64; 3], patch: [usize; 3], min_edge: usize) -> Topology {
    let mut cur_spacing = spacing;
    let mut cur_size: [f64; 3] = patch.map(|p| p as f64);
    let mut pools = [0usize; 3];
    let mut kernel = [1i64; 3];
    let mut strides = vec![[1i64; 3]];
    let mut kernels = Vec::new();
    let edge = min_edge as f64;
    loop {
        let sized: Vec<usize> = (0..3).filter(|&a| cur_size[a] >= 2.0 * edge).collect();
        if sized.is_empty() {
            break;
        }
        let finest = sized
            .iter()
            .map(|&a| cur_spacing[a])
            .fold(f64::MAX, f64::min);
        let valid: Vec<usize> = sized
            .into_iter()
            .filter(|&a| cur_spacing[a] / finest < 2.0)
            .collect();
        if valid.is_empty() || (valid.len() == 1 && cur_size[valid[0]] < 3.0 * edge) {
            break;
        }
        let finest_all = cur_spacing.iter().cloned().fold(f64::MAX, f64::min);
        for a in 0..3 {
            if cur_spacing[a] / finest_all < 2.0 {
                kernel[a] = 3;
            }
        }
        let mut stride = [1i64; 3];
        for &a in &valid {
            stride[a] = 2;
            pools[a] += 1;
            cur_spacing[a] *= 2.0;
            cur_size[a] = (cur_size[a] / 2.0).ceil();
        }
        strides.push(stride);
        kernels.push(kernel);
    }
    kernels.push([3; 3]);
    let divisor = pools.map(|p| 1usize << p);
    let patch = std::array::from_fn(|a| patch[a].div_ceil(divisor[a]) * divisor[a]);
    Topology {
        pools_per_axis: pools,
        strides,
        kernels,
        patch,
        divisor,
    }
}

/// Feature-map elements of one sample of `net` at input `patch` (the unit of nnU-Net's
/// `compute_conv_feature_map_size`): the output of every convolution block (convolution, norm
/// and non-linearity counted once), of every up-sampling and of every segmentation head. Sizes
/// are divided (rounding down) at every down-sampling step.
///
/// Per architecture (`V_s` the voxels at stage / level `s`, `f_s` its channels):
/// - `unet`: encoder `convs x f_s x V_s` per stage; decoder `(convs + 1) x f_s x V_s` per stage
///   (the convolutions and the transposed convolution) plus `classes x V_s` for each head
///   (every decoder stage with deep supervision, else the last);
/// - `unet3d` / `unet3d-att`: encoder `(max(f_s / 2, in) + f_s) x V_s`; decoder
///   `(f_{s+1} + 2 f_s) x V_s` (nearest up-sampling, two convolutions), plus
///   `(2 inner_s + 1 + f_s) x V_s` for an attention gate; `classes x V_0` for the head;
/// - `vnet`: `c_0 V_0` for the input transition, `(1 + n_down) c_s V_s` per down transition,
///   `(c_s + 2 n_up c_s) V_s` per up transition, `2 classes V_0` for the output.
pub fn feature_map_elements(net: &NetConfig, patch: [usize; 3]) -> Result<u64> {
    net.validate()
        .map_err(|e| TrainError::Config(format!("network: {e}")))?;
    let vox = |s: [usize; 3]| s.iter().map(|&x| x as u64).product::<u64>();
    let halve = |s: [usize; 3], st: [i64; 3]| -> [usize; 3] {
        std::array::from_fn(|a| s[a] / st[a].max(1) as usize)
    };
    let n = match net {
        NetConfig::Unet(c) => {
            let strides = c.resolved_strides();
            let mut size = patch;
            let mut v = Vec::with_capacity(strides.len());
            for st in &strides {
                size = halve(size, *st);
                v.push(vox(size));
            }
            let convs = c.convs_per_stage as u64;
            let classes = c.classes as u64;
            let f = |s: usize| c.features[s] as u64;
            let enc: u64 = (0..v.len()).map(|s| convs * f(s) * v[s]).sum();
            let dec: u64 = (0..v.len() - 1)
                .map(|s| {
                    let head = if c.deep_supervision || s == 0 {
                        classes * v[s]
                    } else {
                        0
                    };
                    (convs + 1) * f(s) * v[s] + head
                })
                .sum();
            enc + dec
        }
        NetConfig::Unet3d(_) | NetConfig::Unet3dAtt(_) => {
            let (f_maps, in_ch, classes, att) = match net {
                NetConfig::Unet3d(c) => (&c.f_maps, c.in_channels, c.classes, None),
                NetConfig::Unet3dAtt(c) => (
                    &c.f_maps,
                    c.in_channels,
                    c.classes,
                    Some(c.attention_channels.clone()),
                ),
                _ => unreachable!("matched above"),
            };
            let levels = f_maps.len();
            let v: Vec<u64> = (0..levels)
                .map(|l| vox(patch.map(|x| x >> l.min(63))))
                .collect();
            let f = |l: usize| f_maps[l] as u64;
            let mut n = 0u64;
            for (l, &vl) in v.iter().enumerate() {
                let cin = if l == 0 { in_ch as u64 } else { f(l - 1) };
                n += ((f(l) / 2).max(cin) + f(l)) * vl;
            }
            for l in 0..levels - 1 {
                n += (f(l + 1) + 2 * f(l)) * v[l];
                if let Some(att) = &att {
                    // attention_channels are given deepest decoder level first.
                    let inner = match att {
                        Some(a) => a[levels - 2 - l] as u64,
                        None => f(l) / 2,
                    };
                    n += (2 * inner + 1 + f(l)) * v[l];
                }
            }
            n + classes as u64 * v[0]
        }
        NetConfig::Vnet(c) => {
            let depth = c.down_convs.len();
            let v: Vec<u64> = (0..=depth)
                .map(|l| vox(patch.map(|x| x >> l.min(63))))
                .collect();
            let ch = |l: usize| (c.base_channels as u64) << l;
            let mut n = ch(0) * v[0];
            for (l, &vl) in v.iter().enumerate().skip(1) {
                n += (1 + c.down_convs[l - 1] as u64) * ch(l) * vl;
            }
            for (i, l) in (0..depth).rev().enumerate() {
                n += (ch(l) + 2 * c.up_convs[i] as u64 * ch(l)) * v[l];
            }
            n + 2 * c.classes as u64 * v[0]
        }
        other => {
            return Err(TrainError::Config(format!(
                "no memory model for network {}",
                other.arch()
            )))
        }
    };
    Ok(n)
}

/// Bytes of GPU memory per feature-map element and sample, from nnU-Net's reference point
/// (see the module documentation): `8 GiB / (560e6 x 2)` (about 7.7 bytes) for mixed precision,
/// twice that for f32.
pub fn bytes_per_element(precision: Precision) -> f64 {
    let mixed = REFERENCE_GIB * GIB / (REFERENCE_ELEMENTS * REFERENCE_BATCH);
    match precision {
        Precision::F32 => 2.0 * mixed,
        Precision::Bf16 | Precision::F16 => mixed,
    }
}

/// Estimated GPU memory (GiB) of training `net` on batches of `batch` patches of `patch` at
/// `precision`: [`feature_map_elements`] x `batch` x [`bytes_per_element`]. Grows with the
/// patch, the batch and the widths; at nnU-Net's reference (560e6 elements, batch 2, mixed
/// precision) it is 8 GiB.
pub fn estimate_memory_gib(
    net: &NetConfig,
    patch: [usize; 3],
    batch: usize,
    precision: Precision,
) -> Result<f64> {
    let n = feature_map_elements(net, patch)? as f64;
    Ok(n * batch as f64 * bytes_per_element(precision) / GIB)
}

// ---------------------------------------------------------------------------------------------
// Plan
// ---------------------------------------------------------------------------------------------

/// Which network a plan configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub enum Architecture {
    /// negvol's nnU-Net-style `unet` (the default): per-axis strides, instance norm, deep
    /// supervision.
    #[default]
    #[serde(rename = "unet")]
    Unet,
    /// The paper's 3D U-Net (all axes pooled together, at most 3 pools as published).
    #[serde(rename = "unet3d")]
    Unet3d,
    /// The paper's 3D U-Net with attention gates (as `unet3d`).
    #[serde(rename = "unet3d-att")]
    Unet3dAtt,
    /// The paper's V-Net (all axes together, at most 4 down transitions as published; base
    /// width 16 as published).
    #[serde(rename = "vnet")]
    Vnet,
}

impl Architecture {
    /// The `arch` name (`unet`, `unet3d`, `unet3d-att`, `vnet`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Unet => "unet",
            Self::Unet3d => "unet3d",
            Self::Unet3dAtt => "unet3d-att",
            Self::Vnet => "vnet",
        }
    }

    /// Most pooling steps of the paper's networks (their published depth); `None` for `unet`.
    fn max_pools(self) -> Option<usize> {
        match self {
            Self::Unet => None,
            Self::Unet3d | Self::Unet3dAtt => Some(3),
            Self::Vnet => Some(4),
        }
    }
}

impl std::str::FromStr for Architecture {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "unet" => Ok(Self::Unet),
            "unet3d" => Ok(Self::Unet3d),
            "unet3d-att" => Ok(Self::Unet3dAtt),
            "vnet" => Ok(Self::Vnet),
            other => Err(TrainError::Config(format!(
                "architecture {other:?}: expected unet, unet3d, unet3d-att or vnet"
            ))),
        }
    }
}

/// Options of [`plan()`]; the defaults are nnU-Net's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanOptions {
    /// GPU memory budget (GiB) for training (nnU-Net's default target: 8).
    pub gpu_memory_gib: f64,
    /// The network to configure.
    pub architecture: Architecture,
    /// Training precision the memory is estimated for (negvol's default f32; nnU-Net trains
    /// with mixed precision, i.e. `bf16` / `f16` here).
    pub precision: Precision,
    /// Smallest batch size (nnU-Net: 2); the patch shrinks until this many fit.
    pub min_batch_size: usize,
    /// Channels of the first stage (nnU-Net: 32), doubling per stage.
    pub base_features: i64,
    /// Most channels of a stage (nnU-Net 3D: 320).
    pub max_features: i64,
    /// Largest fraction of the dataset's voxels (median shape x cases) one batch may cover
    /// (nnU-Net: 0.05).
    pub max_dataset_fraction: f64,
    /// Deep supervision for `unet` (nnU-Net trains with it).
    pub deep_supervision: bool,
    /// Use this spacing instead of the fingerprint's target spacing (nnU-Net's
    /// `overwrite_target_spacing`).
    pub target_spacing: Option<[f64; 3]>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            gpu_memory_gib: REFERENCE_GIB,
            architecture: Architecture::Unet,
            precision: Precision::F32,
            min_batch_size: 2,
            base_features: 32,
            max_features: 320,
            max_dataset_fraction: 0.05,
            deep_supervision: true,
            target_spacing: None,
        }
    }
}

impl PlanOptions {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if !(self.gpu_memory_gib.is_finite() && self.gpu_memory_gib > 0.0) {
            return bad(format!(
                "GPU memory budget {} GiB must be finite and > 0",
                self.gpu_memory_gib
            ));
        }
        if self.min_batch_size == 0 {
            return bad("min_batch_size must be >= 1".into());
        }
        if self.base_features < 1 || self.max_features < self.base_features {
            return bad(format!(
                "features: need 1 <= base_features ({}) <= max_features ({})",
                self.base_features, self.max_features
            ));
        }
        if !(self.max_dataset_fraction > 0.0 && self.max_dataset_fraction.is_finite()) {
            return bad(format!(
                "max_dataset_fraction {} must be finite and > 0",
                self.max_dataset_fraction
            ));
        }
        if let Some(s) = self.target_spacing {
            if s.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
                return bad(format!(
                    "target spacing {s:?} mm must be finite and positive"
                ));
            }
        }
        Ok(())
    }
}

/// A training plan: what [`plan()`] decided, serde/JSON, applied to a run with
/// [`Plan::apply`] / [`Plan::apply_to_run`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Target structures, in class order.
    pub targets: Vec<String>,
    /// Spacing (mm) every case is resampled to.
    pub target_spacing: [f64; 3],
    /// Median shape of the cases at `target_spacing` (voxels).
    pub median_shape: [f64; 3],
    /// Training (and sliding-window) patch `[pi, pj, pk]`.
    pub patch: [usize; 3],
    /// Batch size.
    pub batch_size: usize,
    /// The batch size the memory budget allows (before the dataset cap and the minimum).
    pub batch_size_by_memory: usize,
    /// The batch size that covers `max_dataset_fraction` of the dataset's voxels.
    pub batch_size_dataset_cap: usize,
    /// Down-sampling steps per axis.
    pub pools_per_axis: [usize; 3],
    /// nnU-Net's convolution kernels per stage. The planned `unet` is built with them (its
    /// [`UnetConfig::kernel_sizes`]); the paper's networks keep their published kernels, so
    /// for them this is 3x3x3 per level.
    pub kernel_sizes: Vec<[i64; 3]>,
    /// The network (classes = targets + 1).
    pub net: NetConfig,
    /// Intensity normalisation, fitted from the fingerprint.
    pub normalization: Normalization,
    /// Training precision the memory was estimated for.
    pub precision: Precision,
    /// The budget (GiB).
    pub gpu_memory_gib: f64,
    /// Estimated memory (GiB) at `patch` and `batch_size` ([`estimate_memory_gib`]).
    pub estimated_memory_gib: f64,
    /// Number of cases the plan was made from.
    pub cases: usize,
}

impl Plan {
    /// Apply to a training configuration: targets, orientation ([`PLAN_ORIENTATION`]: the
    /// fingerprint's axes), target spacing, patch (training and inference), batch size,
    /// normalisation and precision (training and inference).
    pub fn apply(&self, train: &mut TrainConfig) {
        train.targets = self.targets.clone();
        train.orientation = Some(PLAN_ORIENTATION.into());
        train.target_spacing = Some(self.target_spacing);
        train.sampler.patch = self.patch;
        train.validation.inference.patch = self.patch;
        train.sampler.batch_size = self.batch_size;
        train.normalization = self.normalization.clone();
        train.precision = self.precision;
        train.validation.inference.precision = self.precision;
    }

    /// [`Plan::apply`] to the run's training configuration, and set its network.
    pub fn apply_to_run(&self, run: &mut RunConfig) {
        self.apply(&mut run.train);
        run.model.net = self.net.clone();
    }

    /// Read a plan JSON file.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        read_json(path.as_ref())
    }

    /// Write as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }
}

/// The topology for an architecture: `unet` pools per axis (nnU-Net); the paper's networks pool
/// all axes together, so they take the smallest per-axis count, between 1 and their depth.
fn arch_topology(arch: Architecture, spacing: [f64; 3], patch: [usize; 3]) -> Topology {
    let t = topology(spacing, patch, FEATURE_MAP_MIN_EDGE);
    let Some(max) = arch.max_pools() else {
        return t;
    };
    let p = t
        .pools_per_axis
        .iter()
        .copied()
        .min()
        .unwrap_or(0)
        .clamp(1, max);
    let d = 1usize << p;
    Topology {
        pools_per_axis: [p; 3],
        strides: std::iter::once([1; 3])
            .chain(std::iter::repeat_n([2; 3], p))
            .collect(),
        kernels: vec![[3; 3]; p + 1],
        patch: patch.map(|x| x.div_ceil(d) * d),
        divisor: [d; 3],
    }
}

fn features(stages: usize, o: &PlanOptions) -> Vec<i64> {
    (0..stages)
        .map(|s| {
            o.base_features
                .saturating_mul(1i64 << s.min(40))
                .min(o.max_features)
        })
        .collect()
}

/// The network of a topology.
fn arch_net(t: &Topology, classes: i64, o: &PlanOptions) -> Result<NetConfig> {
    let stages = t.strides.len();
    if stages < 2 {
        return Err(TrainError::Config(format!(
            "patch {:?} allows no down-sampling step (feature maps must keep {} voxels per \
             axis); the images or the GPU memory budget of {} GiB are too small",
            t.patch, FEATURE_MAP_MIN_EDGE, o.gpu_memory_gib
        )));
    }
    let f = features(stages, o);
    let pools = stages - 1;
    Ok(match o.architecture {
        Architecture::Unet => NetConfig::Unet(UnetConfig {
            classes,
            features: f,
            strides: Some(t.strides.clone()),
            kernel_sizes: Some(t.kernels.clone()),
            convs_per_stage: 2,
            norm: NormConfig::Instance,
            deep_supervision: o.deep_supervision,
            ..Default::default()
        }),
        Architecture::Unet3d => NetConfig::Unet3d(Unet3dConfig {
            classes,
            f_maps: f,
            ..Default::default()
        }),
        Architecture::Unet3dAtt => NetConfig::Unet3dAtt(Unet3dAttConfig {
            classes,
            f_maps: f,
            ..Default::default()
        }),
        Architecture::Vnet => NetConfig::Vnet(VnetConfig {
            classes,
            // The paper's [2, 3, 3, 3] down and [3, 3, 2, 1] up (deepest first), cut to depth.
            down_convs: (0..pools).map(|l| if l == 0 { 2 } else { 3 }).collect(),
            up_convs: (0..pools)
                .rev()
                .map(|l| match l {
                    0 => 1,
                    1 => 2,
                    _ => 3,
                })
                .collect(),
            ..Default::default()
        }),
    })
}

/// Plan an experiment from a fingerprint with nnU-Net's rules (see the module documentation).
///
/// Errors: invalid options (a budget that is not finite and positive, ...), a fingerprint
/// without cases or targets, or a budget too small for any patch with one down-sampling step.
pub fn plan(fp: &Fingerprint, options: &PlanOptions) -> Result<Plan> {
    options.validate()?;
    if fp.targets.is_empty() {
        return Err(TrainError::Config("the fingerprint has no target".into()));
    }
    let (auto_spacing, _) = target_spacing(&fp.cases)?;
    let spacing = options.target_spacing.unwrap_or(auto_spacing);
    let resampled = per_axis(&fp.cases, |c, a| {
        shape_at_spacing(c.shape, c.spacing, spacing)[a]
    });
    let median_shape: [f64; 3] = std::array::from_fn(|a| median(resampled[a].clone()).max(1.0));
    let classes = fp.targets.len() as i64 + 1;
    let arch = options.architecture;

    // Initial patch: 256^3 voxels in volume, aspect 1 / spacing, clipped to the median shape.
    let inv = spacing.map(|s| 1.0 / s);
    let scale = (INITIAL_PATCH_VOXELS / inv.iter().product::<f64>()).cbrt();
    let mut patch: [usize; 3] = std::array::from_fn(|a| {
        ((inv[a] * scale).round_ties_even())
            .min(median_shape[a].round_ties_even())
            .max(1.0) as usize
    });

    let fits = |net: &NetConfig, patch: [usize; 3]| -> Result<(bool, f64)> {
        let per_sample = estimate_memory_gib(net, patch, 1, options.precision)?;
        Ok((
            per_sample * options.min_batch_size as f64 <= options.gpu_memory_gib,
            per_sample,
        ))
    };
    let mut topo = arch_topology(arch, spacing, patch);
    let mut net = arch_net(&topo, classes, options)?;
    let mut guard = 0usize;
    let per_sample = loop {
        let (ok, per_sample) = fits(&net, topo.patch)?;
        if ok {
            break per_sample;
        }
        guard += 1;
        if guard > 100_000 {
            return Err(TrainError::Config(
                "patch reduction did not converge".into(),
            ));
        }
        // Shrink the axis that is largest relative to the median shape (the last on ties), by
        // the divisor of the patch one step smaller (nnU-Net's two-step reduction).
        let cur = topo.patch;
        let axis = (0..3).fold(0, |b, a| {
            if cur[a] as f64 / median_shape[a] >= cur[b] as f64 / median_shape[b] {
                a
            } else {
                b
            }
        });
        let too_small = || {
            TrainError::Config(format!(
                "GPU memory budget of {} GiB is too small: even patch {cur:?} ({}) needs more \
                 at batch {}",
                options.gpu_memory_gib,
                arch.name(),
                options.min_batch_size
            ))
        };
        let mut tmp = cur;
        tmp[axis] = cur[axis]
            .checked_sub(topo.divisor[axis])
            .filter(|&x| x > 0)
            .ok_or_else(too_small)?;
        let step = arch_topology(arch, spacing, tmp).divisor[axis];
        patch = cur;
        patch[axis] = cur[axis]
            .checked_sub(step)
            .filter(|&x| x > 0)
            .ok_or_else(too_small)?;
        let mut next = arch_topology(arch, spacing, patch);
        if next.patch == cur {
            // Padding brought the patch back: step by the new divisor instead.
            patch[axis] = cur[axis]
                .checked_sub(next.divisor[axis])
                .filter(|&x| x > 0)
                .ok_or_else(too_small)?;
            next = arch_topology(arch, spacing, patch);
        }
        topo = next;
        net = arch_net(&topo, classes, options).map_err(|_| too_small())?;
    };

    let by_memory = (options.gpu_memory_gib / per_sample).floor() as usize;
    let dataset_voxels = median_shape.iter().product::<f64>() * fp.cases.len() as f64;
    let patch_voxels = topo.patch.iter().map(|&x| x as f64).product::<f64>();
    let cap =
        (dataset_voxels * options.max_dataset_fraction / patch_voxels).round_ties_even() as usize;
    let batch_size = by_memory.min(cap).max(options.min_batch_size);
    Ok(Plan {
        targets: fp.targets.clone(),
        target_spacing: spacing,
        median_shape,
        patch: topo.patch,
        batch_size,
        batch_size_by_memory: by_memory,
        batch_size_dataset_cap: cap,
        pools_per_axis: topo.pools_per_axis,
        kernel_sizes: topo.kernels.clone(),
        estimated_memory_gib: per_sample * batch_size as f64,
        net,
        normalization: fp.intensity.normalization(),
        precision: options.precision,
        gpu_memory_gib: options.gpu_memory_gib,
        cases: fp.cases.len(),
    })
}

// ---------------------------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------------------------

fn fmt3(v: [f64; 3], digits: usize) -> String {
    format!("{:.d$} x {:.d$} x {:.d$}", v[0], v[1], v[2], d = digits)
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fingerprint: {} cases, targets {}",
            self.cases.len(),
            self.targets.join(", ")
        )?;
        writeln!(
            f,
            "  spacing (mm)    median {}   min {}   max {}",
            fmt3(self.median_spacing, 3),
            fmt3(self.min_spacing, 3),
            fmt3(self.max_spacing, 3)
        )?;
        writeln!(f, "  shape (voxels)  median {}", fmt3(self.median_shape, 1))?;
        let why = match self.anisotropic_axis {
            Some(a) => format!("anisotropic: axis {a} at its 10th percentile"),
            None => "the median".into(),
        };
        writeln!(
            f,
            "  target spacing  {} mm ({why}); median shape there {}",
            fmt3(self.target_spacing, 3),
            fmt3(self.median_shape_at_target, 1)
        )?;
        let s = &self.intensity;
        writeln!(
            f,
            "  foreground intensity ({} samples): mean {:.1} std {:.1} median {:.1} \
             p0.5 {:.1} p99.5 {:.1} min {:.1} max {:.1}",
            s.samples, s.mean, s.std, s.median, s.percentile_00_5, s.percentile_99_5, s.min, s.max
        )?;
        for (t, name) in self.targets.iter().enumerate() {
            let present = self
                .cases
                .iter()
                .filter(|c| c.foreground_voxels[t] > 0)
                .count();
            writeln!(
                f,
                "  {name}: median volume {:.1} mm3 (present in {present}/{} cases)",
                self.median_volume_mm3[t],
                self.cases.len()
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan: {} for {} ({} classes), {} cases, budget {} GiB in {}",
            self.net.arch(),
            self.targets.join(", "),
            self.targets.len() + 1,
            self.cases,
            self.gpu_memory_gib,
            match self.precision {
                Precision::F32 => "f32",
                Precision::Bf16 => "bf16",
                Precision::F16 => "f16",
            }
        )?;
        writeln!(
            f,
            "  target spacing  {} mm; median shape there {}",
            fmt3(self.target_spacing, 3),
            fmt3(self.median_shape, 1)
        )?;
        writeln!(
            f,
            "  patch           {} x {} x {}; pools per axis {:?}",
            self.patch[0], self.patch[1], self.patch[2], self.pools_per_axis
        )?;
        writeln!(
            f,
            "  batch size      {} (memory allows {}, 5% of the dataset caps at {})",
            self.batch_size, self.batch_size_by_memory, self.batch_size_dataset_cap
        )?;
        let layout = match &self.net {
            NetConfig::Unet(c) => format!(
                "features {:?}, strides {:?}, kernels {:?}, deep supervision {}",
                c.features,
                c.resolved_strides(),
                c.resolved_kernel_sizes(),
                c.deep_supervision
            ),
            NetConfig::Unet3d(c) => format!("f_maps {:?}", c.f_maps),
            NetConfig::Unet3dAtt(c) => format!("f_maps {:?}", c.f_maps),
            NetConfig::Vnet(c) => format!(
                "base {} channels, down convs {:?}, up convs {:?}",
                c.base_channels, c.down_convs, c.up_convs
            ),
            other => other.arch().to_string(),
        };
        writeln!(f, "  network         {}: {layout}", self.net.arch())?;
        writeln!(
            f,
            "  memory          about {:.2} GiB at batch {}",
            self.estimated_memory_gib, self.batch_size
        )?;
        match &self.normalization {
            Normalization::ForegroundZScore { stats: Some(s), .. } => writeln!(
                f,
                "  normalisation   foreground z-score: clip [{:.1}, {:.1}], mean {:.1}, std {:.1}",
                s.lo, s.hi, s.mean, s.std
            ),
            other => writeln!(f, "  normalisation   {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    fn case(id: &str, shape: [usize; 3], spacing: [f64; 3]) -> CaseFingerprint {
        CaseFingerprint {
            id: id.into(),
            shape,
            spacing,
            foreground_voxels: vec![1000],
            foreground_mm3: vec![1000.0 * spacing.iter().product::<f64>()],
        }
    }

    fn stats() -> IntensityStats {
        IntensityStats::from_samples((0..1000).map(|v| v as f32).collect()).unwrap()
    }

    fn fp(cases: Vec<CaseFingerprint>) -> Fingerprint {
        Fingerprint::from_cases(vec!["mc".into()], cases, stats()).unwrap()
    }

    /// 20 cases of about 100 x 120 x 80 voxels at 0.4 mm.
    fn ct_like() -> Fingerprint {
        fp((0..20)
            .map(|i| case(&format!("c{i}"), [100 + i, 120, 80], [0.4, 0.4, 0.4]))
            .collect())
    }

    #[test]
    fn target_spacing_is_the_median_on_isotropic_data() {
        let f = fp(vec![
            case("a", [100, 100, 100], [0.4, 0.4, 0.5]),
            case("b", [100, 100, 100], [0.5, 0.4, 0.3]),
            case("c", [100, 100, 100], [0.8, 0.6, 0.3]),
        ]);
        assert_eq!(f.target_spacing, [0.5, 0.4, 0.3]);
        assert_eq!(f.anisotropic_axis, None);
        assert_eq!(f.median_spacing, [0.5, 0.4, 0.3]);
        assert_eq!(f.min_spacing, [0.4, 0.4, 0.3]);
        assert_eq!(f.max_spacing, [0.8, 0.6, 0.5]);
        // Case a at (0.5, 0.4, 0.3): 80 x 100 x 167 (166.67 rounded).
        assert_eq!(
            shape_at_spacing([100, 100, 100], [0.4, 0.4, 0.5], f.target_spacing),
            [80.0, 100.0, 167.0]
        );
    }

    #[test]
    fn anisotropic_axis_takes_its_tenth_percentile() {
        // Thick slices along k: median 5 mm > 3 x 0.7 mm, and 3 x 30 voxels < 512.
        let k = [1.0, 2.5, 3.0, 5.0, 5.0, 5.0, 5.0, 6.0, 6.0, 8.0];
        let cases: Vec<_> = k
            .iter()
            .enumerate()
            .map(|(n, &s)| case(&format!("c{n}"), [512, 512, 30], [0.7, 0.7, s]))
            .collect();
        let (t, axis) = target_spacing(&cases).unwrap();
        assert_eq!(axis, Some(2));
        // numpy.percentile([1, 2.5, 3, 5, 5, 5, 5, 6, 6, 8], 10) = 1 + 0.9 x 1.5 = 2.35.
        assert_abs_diff_eq!(t[2], 2.35, epsilon = 1e-12);
        assert_eq!([t[0], t[1]], [0.7, 0.7]);
        // A 10th percentile finer than the other axes is raised to them (+1e-5).
        let mut fine = cases.clone();
        fine[0].spacing[2] = 0.5;
        fine[1].spacing[2] = 0.5;
        let (t, _) = target_spacing(&fine).unwrap();
        assert_abs_diff_eq!(t[2], 0.7 + 1e-5, epsilon = 1e-12);
        // Anisotropic spacing but as many voxels along k: the median stays.
        let many: Vec<_> = cases
            .iter()
            .map(|c| CaseFingerprint {
                shape: [512, 512, 200],
                ..c.clone()
            })
            .collect();
        assert_eq!(target_spacing(&many).unwrap(), ([0.7, 0.7, 5.0], None));
        // Ratio 3 exactly is not anisotropic (nnU-Net: strictly greater).
        let three: Vec<_> = (0..3)
            .map(|n| case(&format!("c{n}"), [512, 512, 30], [1.0, 1.0, 3.0]))
            .collect();
        assert_eq!(target_spacing(&three).unwrap().1, None);
    }

    #[test]
    fn pools_stop_at_the_four_voxel_floor() {
        let t = topology([1.0; 3], [64, 64, 20], 4);
        // 64 -> 32 -> 16 -> 8 -> 4 (4 pools); 20 -> 10 -> 5 (2 pools: 5 < 8).
        assert_eq!(t.pools_per_axis, [4, 4, 2]);
        assert_eq!(t.divisor, [16, 16, 4]);
        assert_eq!(t.patch, [64, 64, 20]);
        assert_eq!(t.strides.len(), 5);
        assert_eq!(t.strides[0], [1, 1, 1]);
        assert_eq!(t.strides[3], [2, 2, 1]);
        for a in 0..3 {
            let bottleneck = t.patch[a] / t.divisor[a];
            assert!(bottleneck >= 4, "axis {a}: {bottleneck}");
            // One more pool would go below the floor.
            assert!(bottleneck < 8, "axis {a}: {bottleneck}");
        }
        // A lone poolable axis needs 3 x 4 = 12 voxels: 10 is not pooled again.
        let lone = topology([1.0; 3], [4, 4, 10], 4);
        assert_eq!(lone.pools_per_axis, [0, 0, 0]);
        let lone = topology([1.0; 3], [4, 4, 12], 4);
        assert_eq!(lone.pools_per_axis, [0, 0, 1]);
        // Padding up to the divisor.
        assert_eq!(topology([1.0; 3], [63, 64, 64], 4).patch, [64, 64, 64]);
    }

    #[test]
    fn thick_axis_pools_later_and_gets_kernel_one() {
        // k is 3x coarser: not pooled until i, j have caught up to within 2x; kernel 1 first.
        let t = topology([1.0, 1.0, 3.0], [128, 128, 48], 4);
        assert_eq!(t.strides[1], [2, 2, 1]);
        assert_eq!(t.strides[2], [2, 2, 2]);
        assert_eq!(t.kernels[0], [3, 3, 1]);
        assert_eq!(t.kernels[1], [3, 3, 3]);
        assert_eq!(*t.kernels.last().unwrap(), [3, 3, 3]);
        assert_eq!(t.kernels.len(), t.strides.len());
    }

    #[test]
    fn thick_slices_plan_a_unet_with_kernel_one_that_runs_at_the_planned_patch() {
        // 20 CT-like cases with 2.5 mm slices along k and 0.5 mm in-plane.
        let f = fp((0..20)
            .map(|i| case(&format!("c{i}"), [200 + i, 200, 30], [0.5, 0.5, 2.5]))
            .collect());
        assert_eq!(f.anisotropic_axis, Some(2));
        let p = plan(
            &f,
            &PlanOptions {
                gpu_memory_gib: 0.1,
                ..Default::default()
            },
        )
        .unwrap();
        let NetConfig::Unet(c) = &p.net else {
            panic!("{p:?}")
        };
        // k is 5x coarser than i, j: kernel 1 along k at stage 0 (and not strided there).
        assert_eq!(p.kernel_sizes[0], [3, 3, 1], "{p:?}");
        assert_eq!(c.strides.as_ref().unwrap()[1], [2, 2, 1], "{p:?}");
        // The network carries the planned kernels, one per stage, 3x3x3 at the bottleneck.
        assert_eq!(c.kernel_sizes.as_ref(), Some(&p.kernel_sizes));
        assert_eq!(p.kernel_sizes.len(), c.features.len());
        assert_eq!(*p.kernel_sizes.last().unwrap(), [3, 3, 3]);
        p.net.validate().unwrap();
        // Through JSON.
        let back: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back.net, p.net);

        // Built, its first convolution is 3x3x1 and it runs a forward pass at the patch.
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let net = negvol_nets::build(&vs.root(), &p.net).unwrap();
        assert!(
            net.layers()[0].description.contains("k=[3, 3, 1]"),
            "{:?}",
            net.layers()[0]
        );
        let shape = [
            1,
            1,
            p.patch[0] as i64,
            p.patch[1] as i64,
            p.patch[2] as i64,
        ];
        let x = tch::Tensor::randn(shape, (tch::Kind::Float, tch::Device::Cpu));
        let y = tch::no_grad(|| net.forward_t(&x, false)).unwrap();
        assert_eq!(y.size(), vec![1, 2, shape[2], shape[3], shape[4]]);
        assert!(bool::try_from(y.isfinite().all()).unwrap());
        // Kernels of 1 mean fewer parameters than the same network with 3x3x3 everywhere.
        let all3 = NetConfig::Unet(UnetConfig {
            kernel_sizes: None,
            ..c.clone()
        });
        let vs3 = tch::nn::VarStore::new(tch::Device::Cpu);
        negvol_nets::build(&vs3.root(), &all3).unwrap();
        assert!(
            negvol_nets::parameter_count(&vs) < negvol_nets::parameter_count(&vs3),
            "{p:?}"
        );
        // The printed plan names the kernels.
        assert!(p.to_string().contains("kernels [[3, 3, 1]"), "{p}");
    }

    #[test]
    fn memory_estimate_matches_a_hand_count_and_grows() {
        let net = NetConfig::Unet(UnetConfig {
            features: vec![2, 4],
            classes: 2,
            deep_supervision: false,
            ..Default::default()
        });
        // Encoder: 2 convs x 2 ch x 4^3 + 2 convs x 4 ch x 2^3 = 256 + 64; decoder stage 0:
        // 2 convs x 2 x 64 + transposed conv 2 x 64 + head 2 x 64 = 512.
        assert_eq!(feature_map_elements(&net, [4, 4, 4]).unwrap(), 832);
        let big = NetConfig::default_for("unet").unwrap();
        let mut last = 0.0;
        for s in [32, 48, 64, 96, 128] {
            let m = estimate_memory_gib(&big, [s, s, s], 2, Precision::F32).unwrap();
            assert!(m > last, "{s}: {m} <= {last}");
            last = m;
        }
        let one = estimate_memory_gib(&big, [64; 3], 1, Precision::F32).unwrap();
        let two = estimate_memory_gib(&big, [64; 3], 2, Precision::F32).unwrap();
        assert_abs_diff_eq!(two, 2.0 * one, epsilon = 1e-12);
        let mixed = estimate_memory_gib(&big, [64; 3], 2, Precision::Bf16).unwrap();
        assert_abs_diff_eq!(two, 2.0 * mixed, epsilon = 1e-12);
        // The reference point: 560e6 elements x batch 2 in mixed precision = 8 GiB.
        assert_abs_diff_eq!(
            REFERENCE_ELEMENTS * 2.0 * bytes_per_element(Precision::Bf16) / GIB,
            8.0,
            epsilon = 1e-9
        );
        for arch in ["unet3d", "unet3d-att", "vnet"] {
            let n = NetConfig::default_for(arch).unwrap();
            let a = feature_map_elements(&n, [32; 3]).unwrap();
            let b = feature_map_elements(&n, [64; 3]).unwrap();
            assert_eq!(b, 8 * a, "{arch}: sizes divisible by 16 scale exactly");
        }
    }

    #[test]
    fn planned_patch_fits_is_divisible_and_grows_with_the_budget() {
        let f = ct_like();
        for arch in [
            Architecture::Unet,
            Architecture::Unet3d,
            Architecture::Unet3dAtt,
            Architecture::Vnet,
        ] {
            let mut last = 0usize;
            for gib in [0.5, 1.0, 2.0, 4.0, 8.0, 16.0] {
                let o = PlanOptions {
                    gpu_memory_gib: gib,
                    architecture: arch,
                    ..Default::default()
                };
                let p = plan(&f, &o).unwrap();
                let at_min = estimate_memory_gib(&p.net, p.patch, 2, p.precision).unwrap();
                assert!(at_min <= gib, "{arch:?} {gib}: {at_min}");
                assert!(p.estimated_memory_gib <= gib + 1e-12, "{arch:?} {gib}");
                let d = p.net.size_divisor();
                for (a, &da) in d.iter().enumerate() {
                    assert_eq!(p.patch[a] % (1 << p.pools_per_axis[a]), 0, "{arch:?} {p:?}");
                    assert_eq!(p.patch[a] as i64 % da, 0, "{arch:?} {p:?}");
                }
                assert!(p.batch_size >= 2);
                let vox: usize = p.patch.iter().product();
                assert!(vox >= last, "{arch:?} {gib}: {vox} < {last}");
                last = vox;
                assert_eq!(p.net.classes(), 2);
            }
        }
    }

    #[test]
    fn default_plan_of_a_small_isotropic_dataset() {
        // 20 cases of ~110 x 120 x 80 at 0.4 mm, 8 GiB, f32. The initial patch is clipped to
        // the median shape (110 x 120 x 80 after rounding 109.5 to even); topology pads it.
        let p = plan(&ct_like(), &PlanOptions::default()).unwrap();
        assert_eq!(p.target_spacing, [0.4; 3]);
        assert_eq!(p.median_shape, [109.5, 120.0, 80.0]);
        let NetConfig::Unet(c) = &p.net else {
            panic!("{p:?}")
        };
        assert_eq!(c.features[..4], [32, 64, 128, 256]);
        assert!(c.features.iter().all(|&f| f <= 320));
        assert!(c.deep_supervision);
        assert_eq!(c.features.len(), c.resolved_strides().len());
        // 5 % of 20 x 109.5 x 120 x 80 voxels over one patch bounds the batch from above,
        // unless the minimum of 2 wins.
        let cap = (20.0 * 109.5 * 120.0 * 80.0 * 0.05 / p.patch.iter().product::<usize>() as f64)
            .round() as usize;
        assert_eq!(p.batch_size_dataset_cap, cap);
        assert_eq!(p.batch_size, p.batch_size_by_memory.min(cap).max(2));
        match &p.normalization {
            Normalization::ForegroundZScore { stats: Some(s), .. } => {
                assert_abs_diff_eq!(s.lo as f64, 0.005 * 999.0, epsilon = 1e-3);
                assert_abs_diff_eq!(s.hi as f64, 0.995 * 999.0, epsilon = 1e-3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batch_is_limited_by_memory_then_by_five_percent_of_the_dataset() {
        // Small images, large budget: memory would allow a big batch; 200 cases of 64^3 cap it.
        let cases: Vec<_> = (0..200)
            .map(|n| case(&format!("c{n}"), [64, 64, 64], [1.0; 3]))
            .collect();
        let p = plan(
            &fp(cases),
            &PlanOptions {
                gpu_memory_gib: 80.0,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.patch, [64, 64, 64]);
        assert_eq!(p.pools_per_axis, [4, 4, 4]);
        assert_eq!(p.batch_size_dataset_cap, 10); // 200 x 64^3 x 0.05 / 64^3
        assert!(p.batch_size_by_memory > 10, "{p:?}");
        assert_eq!(p.batch_size, 10);
    }

    #[test]
    fn plan_applies_to_a_run() {
        let p = plan(&ct_like(), &PlanOptions::default()).unwrap();
        let mut run = RunConfig::default();
        p.apply_to_run(&mut run);
        assert_eq!(run.train.sampler.patch, p.patch);
        assert_eq!(run.train.validation.inference.patch, p.patch);
        assert_eq!(run.train.sampler.batch_size, p.batch_size);
        assert_eq!(run.train.target_spacing, Some([0.4; 3]));
        assert!(run.train.normalization.is_fitted());
        assert_eq!(run.model.net, p.net);
        run.validate().unwrap();
        let json = serde_json::to_string(&p).unwrap();
        let back: Plan = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn bad_inputs_give_typed_errors() {
        let f = ct_like();
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = plan(
                &f,
                &PlanOptions {
                    gpu_memory_gib: bad,
                    ..Default::default()
                },
            )
            .unwrap_err();
            assert!(
                matches!(&e, TrainError::Config(m) if m.contains("GPU memory budget")),
                "{bad}: {e}"
            );
        }
        // A budget too small for any patch with one down-sampling step.
        let e = plan(
            &f,
            &PlanOptions {
                gpu_memory_gib: 1e-9,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(&e, TrainError::Config(m) if m.contains("too small")),
            "{e}"
        );
        let e = Fingerprint::from_cases(vec!["mc".into()], vec![], stats()).unwrap_err();
        assert!(
            matches!(&e, TrainError::Config(m) if m.contains("no case")),
            "{e}"
        );
        let mut empty = f.clone();
        empty.cases.clear();
        assert!(matches!(
            plan(&empty, &PlanOptions::default()),
            Err(TrainError::Config(_))
        ));
        let e = Fingerprint::from_cases(
            vec!["mc".into()],
            vec![case("bad_case", [10, 10, 10], [0.4, 0.0, 0.4])],
            stats(),
        )
        .unwrap_err();
        assert!(
            matches!(&e, TrainError::Case { case, .. } if case == "bad_case"),
            "{e}"
        );
        let e = fingerprint(&DatasetSpec { cases: vec![] }, &["mc".into()]).unwrap_err();
        assert!(
            matches!(&e, TrainError::Config(m) if m.contains("no case")),
            "{e}"
        );
        assert!("unet2d".parse::<Architecture>().is_err());
        assert_eq!(
            "unet3d-att".parse::<Architecture>().unwrap(),
            Architecture::Unet3dAtt
        );
    }

    #[test]
    fn intensity_stats_follow_numpy() {
        let s = IntensityStats::from_samples((1..=100).map(|v| v as f32).collect()).unwrap();
        assert_eq!(s.samples, 100);
        assert_abs_diff_eq!(s.mean, 50.5, epsilon = 1e-12);
        assert_abs_diff_eq!(s.median, 50.5, epsilon = 1e-12);
        // numpy.std(range(1, 101)) = sqrt((100^2 - 1) / 12)
        assert_abs_diff_eq!(s.std, (9999.0f64 / 12.0).sqrt(), epsilon = 1e-9);
        assert_abs_diff_eq!(s.percentile_00_5, 1.0 + 0.005 * 99.0, epsilon = 1e-4);
        assert_abs_diff_eq!(s.percentile_99_5, 1.0 + 0.995 * 99.0, epsilon = 1e-4);
        assert!(s.clipped_std < s.std);
        assert!(IntensityStats::from_samples(vec![1.0]).is_none());
    }
}
