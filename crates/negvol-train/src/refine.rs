//! The seed paper's step C: refine a temporal-bone segmentation with 3D Canny edges of the CT,
//! kept where the predicted TB probability exceeds a threshold, followed by a morphological
//! closing.
//!
//! Canny here: Gaussian smoothing (sigma in mm, per axis in voxels), central-difference
//! gradient in intensity per mm, non-maximum suppression along the gradient direction (the
//! magnitude must be at least that of both neighbours the direction points to, rounded to the
//! 26-neighbourhood), hysteresis with thresholds given as fractions of the 99th percentile of
//! the gradient magnitude (weak edges are kept when 26-connected to a strong one).
//! The closing uses a ball of `closing_radius_mm` through the exact EDT.

use std::collections::VecDeque;

use ndarray::{Array3, Zip};
use negvol_volume::Volume;
use serde::{Deserialize, Serialize};

use crate::augment::gaussian_filter;
use crate::{Result, TrainError};

/// Settings of the refinement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefineConfig {
    /// Gaussian smoothing before the gradient (mm).
    pub sigma_mm: f64,
    /// Low hysteresis threshold (fraction of the 99th percentile of the gradient magnitude).
    pub low: f64,
    /// High hysteresis threshold (same unit).
    pub high: f64,
    /// Edges are kept where the TB probability exceeds this (the paper: 0.1).
    pub probability_threshold: f32,
    /// Radius (mm) of the closing ball (0: no closing).
    pub closing_radius_mm: f64,
}

impl Default for RefineConfig {
    fn default() -> Self {
        Self {
            sigma_mm: 0.8,
            low: 0.15,
            high: 0.35,
            probability_threshold: 0.1,
            closing_radius_mm: 1.0,
        }
    }
}

/// 3D Canny edges of an image (see the module documentation).
pub fn canny(image: &Volume<f32>, cfg: &RefineConfig) -> Result<Array3<bool>> {
    if !(cfg.low >= 0.0 && cfg.high >= cfg.low && cfg.sigma_mm >= 0.0) {
        return Err(TrainError::Config(format!(
            "canny: need 0 <= low <= high and sigma >= 0, got low {}, high {}, sigma {}",
            cfg.low, cfg.high, cfg.sigma_mm
        )));
    }
    let sp = image.geometry().spacing();
    let mut s = image.data().clone();
    gaussian_filter(
        &mut s,
        [
            cfg.sigma_mm / sp[0],
            cfg.sigma_mm / sp[1],
            cfg.sigma_mm / sp[2],
        ],
    );
    let sh = s.shape().to_vec();
    let n = [sh[0], sh[1], sh[2]];
    let at = |a: &Array3<f32>, i: i64, j: i64, k: i64| -> f32 {
        let c = |x: i64, m: usize| x.clamp(0, m as i64 - 1) as usize;
        a[[c(i, n[0]), c(j, n[1]), c(k, n[2])]]
    };
    let mut grad = Array3::<[f32; 3]>::from_elem((n[0], n[1], n[2]), [0.0; 3]);
    Zip::indexed(&mut grad).par_for_each(|(i, j, k), g| {
        let (i, j, k) = (i as i64, j as i64, k as i64);
        g[0] = (at(&s, i + 1, j, k) - at(&s, i - 1, j, k)) / (2.0 * sp[0] as f32);
        g[1] = (at(&s, i, j + 1, k) - at(&s, i, j - 1, k)) / (2.0 * sp[1] as f32);
        g[2] = (at(&s, i, j, k + 1) - at(&s, i, j, k - 1)) / (2.0 * sp[2] as f32);
    });
    let mag = grad.map(|g| (g[0] * g[0] + g[1] * g[1] + g[2] * g[2]).sqrt());
    let mut nms = Array3::<f32>::zeros((n[0], n[1], n[2]));
    Zip::indexed(&mut nms)
        .and(&grad)
        .par_for_each(|(i, j, k), o, g| {
            let m = mag[[i, j, k]];
            if m <= 0.0 {
                return;
            }
            // Direction in voxel units (gradient per mm times spacing gives per-voxel change).
            let d = [g[0] / m, g[1] / m, g[2] / m];
            let step = [
                d[0].round() as i64,
                d[1].round() as i64,
                d[2].round() as i64,
            ];
            let (i, j, k) = (i as i64, j as i64, k as i64);
            let fwd = at(&mag, i + step[0], j + step[1], k + step[2]);
            let bwd = at(&mag, i - step[0], j - step[1], k - step[2]);
            // Relative tolerance: the two voxels astride a symmetric edge tie up to rounding.
            if m >= fwd * (1.0 - 1e-4) && m >= bwd * (1.0 - 1e-4) {
                *o = m;
            }
        });
    let mut v: Vec<f32> = mag.iter().copied().filter(|x| *x > 0.0).collect();
    if v.is_empty() {
        return Ok(Array3::from_elem((n[0], n[1], n[2]), false));
    }
    v.sort_by(f32::total_cmp);
    let p99 = crate::preprocess::percentile_sorted(&v, 99.0).unwrap_or(0.0) as f64;
    let (lo, hi) = ((cfg.low * p99) as f32, (cfg.high * p99) as f32);
    let mut out = nms.mapv(|x| x > hi && x > 0.0);
    let mut queue: VecDeque<[usize; 3]> = out
        .indexed_iter()
        .filter(|(_, v)| **v)
        .map(|((i, j, k), _)| [i, j, k])
        .collect();
    while let Some(p) = queue.pop_front() {
        for di in -1i64..=1 {
            for dj in -1i64..=1 {
                for dk in -1i64..=1 {
                    let q = [p[0] as i64 + di, p[1] as i64 + dj, p[2] as i64 + dk];
                    if (0..3).any(|a| q[a] < 0 || q[a] >= n[a] as i64) {
                        continue;
                    }
                    let q = [q[0] as usize, q[1] as usize, q[2] as usize];
                    if !out[q] && nms[q] > lo {
                        out[q] = true;
                        queue.push_back(q);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Morphological closing of a mask with a ball of `radius_mm` (exact, through the EDT).
pub fn close(mask: &Array3<bool>, spacing: [f64; 3], radius_mm: f64) -> Result<Array3<bool>> {
    if radius_mm <= 0.0 || !mask.iter().any(|v| *v) {
        return Ok(mask.clone());
    }
    let err = |e: negvol_metrics::MetricsError| TrainError::Config(format!("closing: {e}"));
    let d = negvol_metrics::edt::edt(mask.view(), spacing).map_err(err)?;
    let dil = d.mapv(|x| x <= radius_mm);
    let bg = dil.mapv(|v| !v);
    if !bg.iter().any(|v| *v) {
        return Ok(dil);
    }
    let e = negvol_metrics::edt::edt(bg.view(), spacing).map_err(err)?;
    Ok(e.mapv(|x| x > radius_mm))
}

/// Step C: `tb` plus the Canny edges of `image` where `tb_probability > threshold`, closed.
pub fn refine_tb(
    image: &Volume<f32>,
    tb: &Volume<bool>,
    tb_probability: &Volume<f32>,
    cfg: &RefineConfig,
) -> Result<Volume<bool>> {
    let g = image.geometry();
    for (what, other) in [
        ("TB mask", tb.geometry()),
        ("TB probability", tb_probability.geometry()),
    ] {
        g.check_same(other, 1e-3).map_err(|e| {
            TrainError::Config(format!("refine: {what} is not on the image grid: {e}"))
        })?;
    }
    let edges = canny(image, cfg)?;
    let mut m = tb.data().clone();
    Zip::from(&mut m)
        .and(&edges)
        .and(tb_probability.data())
        .for_each(|m, e, p| {
            if *e && *p > cfg.probability_threshold {
                *m = true;
            }
        });
    let m = close(&m, g.spacing(), cfg.closing_radius_mm)?;
    Volume::new(m, g.clone()).map_err(|source| TrainError::Volume {
        context: "refined TB".into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use negvol_volume::Geometry;

    #[test]
    fn canny_finds_the_boundary_of_a_step() {
        let g = Geometry::from_spacing([20, 6, 6], [1.0; 3]).unwrap();
        let img = Volume::new(
            Array3::from_shape_fn((20, 6, 6), |(i, _, _)| if i < 10 { 0.0 } else { 1000.0 }),
            g,
        )
        .unwrap();
        let e = canny(&img, &RefineConfig::default()).unwrap();
        for ((i, _, _), v) in e.indexed_iter() {
            // The steepest smoothed gradient lies between voxels 9 and 10.
            assert_eq!(*v, i == 9 || i == 10, "voxel i={i}");
        }
    }

    #[test]
    fn closing_fills_a_gap_and_keeps_a_solid() {
        let mut m = Array3::from_shape_fn((20, 9, 9), |(i, j, k)| {
            (4..16).contains(&i) && (2..7).contains(&j) && (2..7).contains(&k)
        });
        for j in 0..9 {
            for k in 0..9 {
                m[[10, j, k]] = false; // a one-voxel cut
            }
        }
        let c = close(&m, [1.0; 3], 1.0).unwrap();
        assert!(c[[10, 4, 4]], "gap closed");
        assert!(!c[[1, 4, 4]], "no growth far away");
        assert!(c[[5, 4, 4]]);
    }

    #[test]
    fn refine_adds_edges_only_where_probable() {
        let g = Geometry::from_spacing([20, 8, 8], [1.0; 3]).unwrap();
        let img = Volume::new(
            Array3::from_shape_fn((20, 8, 8), |(i, _, _)| if i < 10 { 0.0 } else { 1000.0 }),
            g.clone(),
        )
        .unwrap();
        let tb = Volume::new(Array3::from_elem((20, 8, 8), false), g.clone()).unwrap();
        let prob = Volume::new(
            Array3::from_shape_fn((20, 8, 8), |(_, j, _)| if j < 4 { 0.5 } else { 0.0 }),
            g,
        )
        .unwrap();
        let cfg = RefineConfig {
            closing_radius_mm: 0.0,
            ..Default::default()
        };
        let r = refine_tb(&img, &tb, &prob, &cfg).unwrap();
        assert!(r.data()[[10, 1, 3]]);
        assert!(!r.data()[[10, 6, 3]]);
        assert!(!r.data()[[3, 1, 3]]);
    }
}
