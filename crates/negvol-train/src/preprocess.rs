//! Intensity normalisation, resampling and cropping to a volume of interest.
//!
//! Normalisation schemes ([`Normalization`]):
//! - [`Normalization::Window`]: clip to a CT window `[lo, hi]` (HU) and map it linearly to
//!   `[-1, 1]`;
//! - [`Normalization::DatasetMinMax`]: the seed paper's scheme, min and max over the training
//!   set mapped to `[-1, 1]` (values beyond them are clipped);
//! - [`Normalization::ZScore`]: per volume `(x - mean) / std`, after an optional clip;
//! - [`Normalization::ForegroundZScore`]: nnU-Net's CT scheme: clip to the
//!   `lower`/`upper` percentiles of the foreground intensities of the whole training set, then
//!   `(x - mean) / std` of those foreground intensities.
//!
//! The data-dependent schemes are *fitted* on the training cases ([`Normalization::fit`]) and
//! the fitted numbers are stored in the configuration, so that inference applies exactly the
//! training-time transform (the nnU-Net "plans" idea).

use ndarray::{s, Array3};
use negvol_volume::{Geometry, Volume};
use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// Foreground intensity statistics fitted by [`Normalization::ForegroundZScore`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForegroundStats {
    /// Clip floor (the lower percentile).
    pub lo: f32,
    /// Clip ceiling (the upper percentile).
    pub hi: f32,
    /// Mean of the clipped foreground intensities.
    pub mean: f32,
    /// Standard deviation of the clipped foreground intensities (> 0).
    pub std: f32,
}

/// An intensity normalisation scheme (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Normalization {
    /// Leave intensities unchanged.
    None,
    /// Clip to `[lo, hi]` and map linearly to `[-1, 1]`.
    Window {
        /// Lower bound of the window (e.g. HU).
        lo: f32,
        /// Upper bound of the window.
        hi: f32,
    },
    /// Min and max of the training set mapped to `[-1, 1]` (the seed paper). `None` until fitted.
    DatasetMinMax {
        /// Fitted minimum.
        min: Option<f32>,
        /// Fitted maximum.
        max: Option<f32>,
    },
    /// Per-volume z-score after an optional clip `[lo, hi]`.
    ZScore {
        /// Optional clip applied first.
        clip: Option<[f32; 2]>,
    },
    /// nnU-Net CT normalisation from foreground percentiles. `stats` is `None` until fitted.
    ForegroundZScore {
        /// Lower percentile in `[0, 100]` (nnU-Net: 0.5).
        lower_percentile: f64,
        /// Upper percentile in `[0, 100]` (nnU-Net: 99.5).
        upper_percentile: f64,
        /// Fitted statistics.
        stats: Option<ForegroundStats>,
    },
}

impl Default for Normalization {
    /// nnU-Net's CT normalisation (0.5 / 99.5 percentiles), unfitted.
    fn default() -> Self {
        Self::ForegroundZScore {
            lower_percentile: 0.5,
            upper_percentile: 99.5,
            stats: None,
        }
    }
}

/// Linear-interpolated percentile (`q` in `[0, 100]`) of sorted values (numpy's default).
pub fn percentile_sorted(sorted: &[f32], q: f64) -> Option<f32> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&q) {
        return None;
    }
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let t = pos - lo as f64;
    Some((sorted[lo] as f64 * (1.0 - t) + sorted[hi] as f64 * t) as f32)
}

impl Normalization {
    /// Whether every data-dependent number is known (schemes without any are always fitted).
    pub fn is_fitted(&self) -> bool {
        match self {
            Self::DatasetMinMax { min, max } => min.is_some() && max.is_some(),
            Self::ForegroundZScore { stats, .. } => stats.is_some(),
            _ => true,
        }
    }

    /// Fit the data-dependent numbers on training cases `(image, label)`; labels > 0 are
    /// foreground. At most `max_samples_per_case` foreground voxels per case (evenly strided)
    /// enter the percentiles. Already-fitted schemes are returned unchanged.
    pub fn fit<'a>(
        &self,
        cases: impl IntoIterator<Item = (&'a Array3<f32>, &'a Array3<u8>)>,
        max_samples_per_case: usize,
    ) -> Result<Self> {
        if self.is_fitted() {
            return Ok(self.clone());
        }
        match self {
            Self::DatasetMinMax { .. } => {
                let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
                for (img, _) in cases {
                    for &v in img.iter() {
                        if v.is_finite() {
                            lo = lo.min(v);
                            hi = hi.max(v);
                        }
                    }
                }
                if !(lo.is_finite() && hi.is_finite() && hi > lo) {
                    return Err(TrainError::Config(format!(
                        "cannot fit min-max normalisation: min {lo}, max {hi}"
                    )));
                }
                Ok(Self::DatasetMinMax {
                    min: Some(lo),
                    max: Some(hi),
                })
            }
            Self::ForegroundZScore {
                lower_percentile,
                upper_percentile,
                ..
            } => {
                if !(0.0..=100.0).contains(lower_percentile)
                    || !(0.0..=100.0).contains(upper_percentile)
                    || lower_percentile >= upper_percentile
                {
                    return Err(TrainError::Config(format!(
                        "foreground percentiles {lower_percentile}, {upper_percentile} must satisfy 0 <= lower < upper <= 100"
                    )));
                }
                let mut vals = Vec::new();
                for (img, lab) in cases {
                    let fg: Vec<f32> = img
                        .iter()
                        .zip(lab.iter())
                        .filter(|(v, l)| **l > 0 && **l != crate::IGNORE_LABEL && v.is_finite())
                        .map(|(v, _)| *v)
                        .collect();
                    let stride = fg.len().div_ceil(max_samples_per_case.max(1)).max(1);
                    vals.extend(fg.iter().step_by(stride));
                }
                if vals.len() < 2 {
                    return Err(TrainError::Config(format!(
                        "cannot fit foreground normalisation: {} foreground voxels in the training set",
                        vals.len()
                    )));
                }
                vals.sort_by(f32::total_cmp);
                let lo = percentile_sorted(&vals, *lower_percentile).unwrap_or(vals[0]);
                let hi =
                    percentile_sorted(&vals, *upper_percentile).unwrap_or(vals[vals.len() - 1]);
                let n = vals.len() as f64;
                let clipped = vals.iter().map(|v| v.clamp(lo, hi) as f64);
                let mean = clipped.clone().sum::<f64>() / n;
                let var = clipped.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                let std = var.sqrt().max(1e-8);
                Ok(Self::ForegroundZScore {
                    lower_percentile: *lower_percentile,
                    upper_percentile: *upper_percentile,
                    stats: Some(ForegroundStats {
                        lo,
                        hi,
                        mean: mean as f32,
                        std: std as f32,
                    }),
                })
            }
            _ => Ok(self.clone()),
        }
    }

    /// Normalise an image in place. Non-finite voxels become the lowest normalised value.
    /// Fails if the scheme needs fitting and was not fitted.
    pub fn apply(&self, img: &mut Array3<f32>) -> Result<()> {
        let minmax = |img: &mut Array3<f32>, lo: f32, hi: f32| -> Result<()> {
            if !(hi > lo) {
                return Err(TrainError::Config(format!(
                    "normalisation window [{lo}, {hi}] is empty"
                )));
            }
            let scale = 2.0 / (hi - lo);
            img.par_mapv_inplace(|v| {
                let v = if v.is_finite() { v.clamp(lo, hi) } else { lo };
                (v - lo) * scale - 1.0
            });
            Ok(())
        };
        match self {
            Self::None => Ok(()),
            Self::Window { lo, hi } => minmax(img, *lo, *hi),
            Self::DatasetMinMax {
                min: Some(lo),
                max: Some(hi),
            } => minmax(img, *lo, *hi),
            Self::ZScore { clip } => {
                let (lo, hi) = clip.map_or((f32::NEG_INFINITY, f32::INFINITY), |c| (c[0], c[1]));
                let finite: Vec<f64> = img
                    .iter()
                    .filter(|v| v.is_finite())
                    .map(|v| v.clamp(lo, hi) as f64)
                    .collect();
                if finite.is_empty() {
                    return Err(TrainError::Config(
                        "z-score of an image without finite voxels".into(),
                    ));
                }
                let n = finite.len() as f64;
                let mean = finite.iter().sum::<f64>() / n;
                let std = (finite.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n)
                    .sqrt()
                    .max(1e-8);
                let floor = finite.iter().cloned().fold(f64::INFINITY, f64::min);
                img.par_mapv_inplace(|v| {
                    let v = if v.is_finite() {
                        v.clamp(lo, hi) as f64
                    } else {
                        floor
                    };
                    ((v - mean) / std) as f32
                });
                Ok(())
            }
            Self::ForegroundZScore {
                stats: Some(st), ..
            } => {
                let (lo, hi, mean, std) = (st.lo, st.hi, st.mean, st.std.max(1e-8));
                img.par_mapv_inplace(|v| {
                    let v = if v.is_finite() { v.clamp(lo, hi) } else { lo };
                    (v - mean) / std
                });
                Ok(())
            }
            other => Err(TrainError::Config(format!(
                "normalisation {other:?} must be fitted on training data before use"
            ))),
        }
    }
}

/// Bounding box `(start, end_exclusive)` of the voxels where `pred` holds, or `None`.
pub fn bounding_box<T>(
    a: &Array3<T>,
    pred: impl Fn(&T) -> bool,
) -> Option<([usize; 3], [usize; 3])> {
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut any = false;
    for ((i, j, k), v) in a.indexed_iter() {
        if pred(v) {
            any = true;
            for (a, x) in [i, j, k].into_iter().enumerate() {
                lo[a] = lo[a].min(x);
                hi[a] = hi[a].max(x + 1);
            }
        }
    }
    any.then_some((lo, hi))
}

/// A box `(start, size)` around the foreground of `label` grown by `margin` voxels per side
/// and clamped to the volume, or `None` if the label is empty.
pub fn voi_around_labels(label: &Array3<u8>, margin: [usize; 3]) -> Option<([i64; 3], [usize; 3])> {
    let (lo, hi) = bounding_box(label, |v| *v > 0 && *v != crate::IGNORE_LABEL)?;
    let sh = label.shape();
    let mut start = [0i64; 3];
    let mut size = [0usize; 3];
    for a in 0..3 {
        let s = lo[a].saturating_sub(margin[a]);
        let e = (hi[a] + margin[a]).min(sh[a]);
        start[a] = s as i64;
        size[a] = e - s;
    }
    Some((start, size))
}

/// A box `(start, size)` of the given size centred on `center` (voxel index); it may extend
/// beyond the volume (see [`crop`]).
pub fn box_around(center: [f64; 3], size: [usize; 3]) -> ([i64; 3], [usize; 3]) {
    let mut start = [0i64; 3];
    for a in 0..3 {
        start[a] = (center[a] - (size[a] as f64 - 1.0) / 2.0).round() as i64;
    }
    (start, size)
}

/// Crop (and pad with `fill` where the box leaves the volume) the box `start..start+size`;
/// the result's geometry places every voxel where it was (the affine's origin moves to
/// `start`).
pub fn crop<T: Clone>(
    v: &Volume<T>,
    start: [i64; 3],
    size: [usize; 3],
    fill: T,
) -> Result<Volume<T>> {
    if size.contains(&0) {
        return Err(TrainError::Config(format!(
            "crop size {size:?} has a zero dimension"
        )));
    }
    let g = v.geometry();
    let sh = g.shape();
    let mut out = Array3::from_elem((size[0], size[1], size[2]), fill);
    // Overlap of the box with the volume.
    let mut src = [(0usize, 0usize); 3];
    let mut dst = [(0usize, 0usize); 3];
    let mut empty = false;
    for a in 0..3 {
        let s = start[a].max(0);
        let e = (start[a] + size[a] as i64).min(sh[a] as i64);
        if e <= s {
            empty = true;
            break;
        }
        src[a] = (s as usize, e as usize);
        dst[a] = ((s - start[a]) as usize, (e - start[a]) as usize);
    }
    if !empty {
        out.slice_mut(s![
            dst[0].0..dst[0].1,
            dst[1].0..dst[1].1,
            dst[2].0..dst[2].1
        ])
        .assign(&v.data().slice(s![
            src[0].0..src[0].1,
            src[1].0..src[1].1,
            src[2].0..src[2].1
        ]));
    }
    let origin = g.voxel_to_world([start[0] as f64, start[1] as f64, start[2] as f64]);
    let mut aff = g.affine();
    for r in 0..3 {
        aff[r][3] = origin[r];
    }
    let geom = Geometry::new(size, aff).map_err(|source| TrainError::Volume {
        context: format!("crop at {start:?} size {size:?}"),
        source,
    })?;
    Volume::new(out, geom).map_err(|source| TrainError::Volume {
        context: "crop".into(),
        source,
    })
}

/// Paste `part` (a crop made by [`crop`] at `start`) back into `into`, skipping voxels
/// outside `into`.
pub fn paste<T: Clone>(into: &mut Array3<T>, part: &Array3<T>, start: [i64; 3]) {
    let sh = into.shape().to_vec();
    let ps = part.shape().to_vec();
    let mut src = [(0usize, 0usize); 3];
    let mut dst = [(0usize, 0usize); 3];
    for a in 0..3 {
        let s = start[a].max(0);
        let e = (start[a] + ps[a] as i64).min(sh[a] as i64);
        if e <= s {
            return;
        }
        dst[a] = (s as usize, e as usize);
        src[a] = ((s - start[a]) as usize, (e - start[a]) as usize);
    }
    into.slice_mut(s![
        dst[0].0..dst[0].1,
        dst[1].0..dst[1].1,
        dst[2].0..dst[2].1
    ])
    .assign(&part.slice(s![
        src[0].0..src[0].1,
        src[1].0..src[1].1,
        src[2].0..src[2].1
    ]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    #[test]
    fn window_maps_to_unit_interval() {
        let mut a =
            Array3::from_shape_vec((1, 1, 4), vec![-2000.0, -1000.0, 1000.0, f32::NAN]).unwrap();
        Normalization::Window {
            lo: -1000.0,
            hi: 1000.0,
        }
        .apply(&mut a)
        .unwrap();
        assert_eq!(a.as_slice().unwrap(), &[-1.0, -1.0, 1.0, -1.0]);
    }

    #[test]
    fn unannotated_voxels_are_not_foreground() {
        // Foreground k in 1..=100, unannotated (255) k in 101..200 with other intensities:
        // the fit and the crop see only the annotated foreground.
        let img = Array3::from_shape_fn((1, 1, 200), |(_, _, k)| k as f32);
        let lab = Array3::from_shape_fn((1, 1, 200), |(_, _, k)| match k {
            0 => 0,
            1..=100 => 1,
            _ => crate::IGNORE_LABEL,
        });
        let sparse = Normalization::default()
            .fit([(&img, &lab)], usize::MAX)
            .unwrap();
        let first = lab.mapv(|l| u8::from(l == 1));
        let dense = Normalization::default()
            .fit([(&img, &first)], usize::MAX)
            .unwrap();
        assert_eq!(sparse, dense);
        assert_eq!(
            voi_around_labels(&lab, [0; 3]),
            Some(([0, 0, 1], [1, 1, 100]))
        );
    }

    #[test]
    fn foreground_zscore_matches_hand_computation() {
        let img = Array3::from_shape_fn((1, 1, 101), |(_, _, k)| k as f32);
        let lab = Array3::from_shape_fn((1, 1, 101), |(_, _, k)| u8::from(k >= 1));
        let n = Normalization::default()
            .fit([(&img, &lab)], usize::MAX)
            .unwrap();
        let Normalization::ForegroundZScore {
            stats: Some(st), ..
        } = &n
        else {
            panic!("{n:?}")
        };
        // Foreground values 1..=100: percentiles 0.5 and 99.5 by linear interpolation.
        assert_abs_diff_eq!(st.lo, 1.0 + 0.005 * 99.0, epsilon = 1e-4);
        assert_abs_diff_eq!(st.hi, 1.0 + 0.995 * 99.0, epsilon = 1e-4);
        assert_abs_diff_eq!(st.mean, 50.5, epsilon = 1e-3);
        let mut x = img.clone();
        n.apply(&mut x).unwrap();
        assert_abs_diff_eq!(x[[0, 0, 50]], (50.0 - st.mean) / st.std, epsilon = 1e-5);
        assert!(Normalization::default().apply(&mut x).is_err());
    }

    #[test]
    fn crop_and_paste_round_trip_with_geometry() {
        let g = Geometry::from_spacing([5, 6, 7], [0.5, 1.0, 2.0]).unwrap();
        let v = Volume::new(
            Array3::from_shape_fn((5, 6, 7), |(i, j, k)| (i * 100 + j * 10 + k) as i32),
            g,
        )
        .unwrap();
        let c = crop(&v, [-1, 2, 3], [3, 3, 5], -1).unwrap();
        assert_eq!(c.data()[[0, 0, 0]], -1);
        assert_eq!(c.data()[[1, 0, 0]], v.data()[[0, 2, 3]]);
        assert_eq!(c.data()[[2, 2, 3]], v.data()[[1, 4, 6]]);
        assert_eq!(c.data()[[2, 2, 4]], -1);
        assert_eq!(
            c.geometry().voxel_to_world([1.0, 0.0, 0.0]),
            v.geometry().voxel_to_world([0.0, 2.0, 3.0])
        );
        let mut back = Array3::from_elem((5, 6, 7), 0);
        paste(&mut back, c.data(), [-1, 2, 3]);
        assert_eq!(back[[1, 4, 6]], v.data()[[1, 4, 6]]);
        assert_eq!(back[[0, 0, 0]], 0);
        let lab =
            Array3::from_shape_fn((5, 6, 7), |(i, j, k)| u8::from(i == 2 && j == 3 && k == 4));
        assert_eq!(
            voi_around_labels(&lab, [1, 1, 10]),
            Some(([1, 2, 0], [3, 3, 7]))
        );
    }
}
