//! Data augmentation for 3D patches, image and label always in sync.
//!
//! Spatial augmentations (flip, rotation, scaling, elastic deformation) are composed into one
//! coordinate map from patch voxels to source-volume voxels, and the patch is *sampled* from
//! the whole (preprocessed) volume through that map: Keys cubic convolution or trilinear
//! ([`AugmentConfig::image_interpolation`]) for the image, nearest neighbour for the label, so both see exactly the same geometry and no border artefacts
//! appear inside the volume (nnU-Net does the same). Rotations are made in physical space
//! (anisotropic spacing is honoured). Intensity augmentations (contrast, multiplicative
//! brightness, gamma, Gaussian noise, Gaussian blur) then act on the image patch only.
//!
//! The seed paper's settings ([`AugmentConfig::paper`]): flip of one in-plane axis with
//! p 0.5; rotation by an integer angle in `[-15, 15]` degrees in one of the three planes,
//! always; elastic deformation with p 0.5, alpha 30, sigma 5 (voxels; displacements are
//! uniform noise in `[-1, 1]` smoothed by a Gaussian of `sigma` and scaled by `alpha`, as
//! scipy-based implementations do); contrast `mean + a (x - mean)` with `a` in `[1, 3]`, p 0.5,
//! clipped to the patch's range. The paper used spline order 2 for the image; negvol reads it
//! with Keys cubic convolution ([`Interpolation::Cubic`], measured better than trilinear on
//! phantoms, see the crate README) or, optionally, trilinear; nnU-Net resamples images with
//! order 3 (cubic B-spline) in its spatial augmentation.
//!
//! Every random draw comes from the generator passed in, so a seed fixes the result.

use ndarray::{Array3, ArrayView3, Axis, Zip};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::interp::{sample_cubic, sample_linear, sample_nearest, Interpolation};

/// Probabilities and ranges of every augmentation. A probability of 0 disables one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AugmentConfig {
    /// Probability of mirroring the patch.
    pub flip_prob: f64,
    /// Axes that may be mirrored; one of them is chosen uniformly when a flip happens.
    pub flip_axes: Vec<usize>,
    /// Probability of a rotation.
    pub rotation_prob: f64,
    /// Largest rotation angle in degrees (uniform in `[-max, max]`).
    pub max_rotation_deg: f64,
    /// Draw integer angles only (the seed paper).
    pub integer_degrees: bool,
    /// Planes `[a, b]` (voxel axes) a rotation may act in; one is chosen uniformly.
    pub rotation_planes: Vec<[usize; 2]>,
    /// Probability of an isotropic zoom.
    pub scale_prob: f64,
    /// Zoom factor range (> 1 enlarges structures).
    pub scale_range: [f64; 2],
    /// Probability of an elastic deformation.
    pub elastic_prob: f64,
    /// Elastic deformation strength (voxels).
    pub elastic_alpha: f64,
    /// Elastic deformation smoothness (Gaussian sigma, voxels).
    pub elastic_sigma: f64,
    /// Probability of the paper's contrast change.
    pub contrast_prob: f64,
    /// Contrast factor range.
    pub contrast_range: [f64; 2],
    /// Probability of multiplicative brightness.
    pub brightness_prob: f64,
    /// Brightness factor range.
    pub brightness_range: [f64; 2],
    /// Probability of a gamma transform (on the patch rescaled to `[0, 1]`).
    pub gamma_prob: f64,
    /// Gamma range.
    pub gamma_range: [f64; 2],
    /// Probability of additive Gaussian noise.
    pub noise_prob: f64,
    /// Range of the noise standard deviation (normalised intensity units).
    pub noise_std_range: [f64; 2],
    /// Probability of a Gaussian blur.
    pub blur_prob: f64,
    /// Range of the blur sigma (voxels).
    pub blur_sigma_range: [f64; 2],
    /// How spatially augmented patches read the image (the label is always read with nearest
    /// neighbour): `cubic` (Keys cubic convolution, the presets' choice: much less blur
    /// between voxels, closer to the un-interpolated images seen at inference) or `linear`
    /// (trilinear); `nearest` is accepted too. Identity and flip patches are exact crops with
    /// any of them. A JSON config without this key reads `linear`, which is what configs
    /// written before the option existed meant (so resuming such a run changes nothing).
    #[serde(default = "interpolation_before_the_option")]
    pub image_interpolation: Interpolation,
}

/// The image interpolation of an augmentation config that does not name one (written before
/// [`AugmentConfig::image_interpolation`] existed): trilinear.
fn interpolation_before_the_option() -> Interpolation {
    Interpolation::Linear
}

impl Default for AugmentConfig {
    /// The seed paper's augmentations plus nnU-Net's intensity augmentations and zoom.
    fn default() -> Self {
        Self {
            scale_prob: 0.2,
            scale_range: [0.85, 1.25],
            brightness_prob: 0.15,
            brightness_range: [0.75, 1.25],
            gamma_prob: 0.3,
            gamma_range: [0.7, 1.5],
            noise_prob: 0.1,
            noise_std_range: [0.0, 0.1],
            blur_prob: 0.2,
            blur_sigma_range: [0.5, 1.0],
            ..Self::paper()
        }
    }
}

impl AugmentConfig {
    /// The seed paper's augmentations only (see the module documentation).
    pub fn paper() -> Self {
        Self {
            flip_prob: 0.5,
            flip_axes: vec![0],
            rotation_prob: 1.0,
            max_rotation_deg: 15.0,
            integer_degrees: true,
            rotation_planes: vec![[0, 1], [0, 2], [1, 2]],
            scale_prob: 0.0,
            scale_range: [1.0, 1.0],
            elastic_prob: 0.5,
            elastic_alpha: 30.0,
            elastic_sigma: 5.0,
            contrast_prob: 0.5,
            contrast_range: [1.0, 3.0],
            brightness_prob: 0.0,
            brightness_range: [1.0, 1.0],
            gamma_prob: 0.0,
            gamma_range: [1.0, 1.0],
            noise_prob: 0.0,
            noise_std_range: [0.0, 0.0],
            blur_prob: 0.0,
            blur_sigma_range: [0.0, 0.0],
            image_interpolation: Interpolation::Cubic,
        }
    }

    /// No augmentation at all (validation, tests).
    pub fn none() -> Self {
        Self {
            flip_prob: 0.0,
            rotation_prob: 0.0,
            elastic_prob: 0.0,
            contrast_prob: 0.0,
            ..Self::paper()
        }
    }

    /// Check axes, planes and ranges.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::TrainError::Config(format!("augmentation: {m}")));
        for p in [
            self.flip_prob,
            self.rotation_prob,
            self.scale_prob,
            self.elastic_prob,
            self.contrast_prob,
            self.brightness_prob,
            self.gamma_prob,
            self.noise_prob,
            self.blur_prob,
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("probability {p} not in [0, 1]"));
            }
        }
        if self.flip_axes.iter().any(|a| *a > 2) {
            return bad(format!("flip axes {:?} must be 0, 1 or 2", self.flip_axes));
        }
        if self
            .rotation_planes
            .iter()
            .any(|p| p[0] > 2 || p[1] > 2 || p[0] == p[1])
        {
            return bad(format!(
                "rotation planes {:?} must be two distinct axes",
                self.rotation_planes
            ));
        }
        for (name, r) in [
            ("scale", self.scale_range),
            ("contrast", self.contrast_range),
            ("brightness", self.brightness_range),
            ("gamma", self.gamma_range),
            ("noise", self.noise_std_range),
            ("blur", self.blur_sigma_range),
        ] {
            if !(r[0].is_finite() && r[1].is_finite() && r[0] <= r[1]) {
                return bad(format!("{name} range {r:?} is not an interval"));
            }
        }
        if self.scale_range[0] <= 0.0 || self.gamma_range[0] <= 0.0 || self.noise_std_range[0] < 0.0
        {
            return bad("scale and gamma must be > 0, noise std >= 0".into());
        }
        if !(self.elastic_alpha >= 0.0 && self.elastic_sigma > 0.0 && self.max_rotation_deg >= 0.0)
        {
            return bad("elastic alpha >= 0, sigma > 0 and rotation >= 0 required".into());
        }
        Ok(())
    }
}

/// The coordinate map of one augmented patch: patch voxel `p` reads the source volume at
/// `center + matrix * (p - (patch - 1) / 2) + displacement(p)`.
#[derive(Debug, Clone)]
pub struct SpatialTransform {
    /// Linear part (patch offset to source offset, voxel units).
    pub matrix: [[f64; 3]; 3],
    /// Elastic displacement per axis (voxels), patch-shaped, if any.
    pub displacement: Option<[Array3<f32>; 3]>,
    /// How [`sample_patch`] reads the image (from [`AugmentConfig::image_interpolation`]).
    pub image_interpolation: Interpolation,
}

impl SpatialTransform {
    /// The identity map (reading the image trilinearly; on the grid every interpolation is exact).
    pub fn identity() -> Self {
        Self {
            matrix: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            displacement: None,
            image_interpolation: Interpolation::Linear,
        }
    }

    /// The same map, reading the image with `interp`.
    pub fn with_image_interpolation(mut self, interp: Interpolation) -> Self {
        self.image_interpolation = interp;
        self
    }

    /// Draw a random transform for a patch of shape `patch` of a volume with voxel `spacing`
    /// (reading the image with `cfg.image_interpolation`).
    pub fn random(
        cfg: &AugmentConfig,
        patch: [usize; 3],
        spacing: [f64; 3],
        rng: &mut impl Rng,
    ) -> Self {
        let mut m = Self::identity().matrix;
        if cfg.flip_prob > 0.0 && !cfg.flip_axes.is_empty() && rng.gen_bool(cfg.flip_prob) {
            let a = cfg.flip_axes[rng.gen_range(0..cfg.flip_axes.len())];
            m[a][a] = -1.0;
        }
        if cfg.scale_prob > 0.0 && rng.gen_bool(cfg.scale_prob) {
            let z = uniform(rng, cfg.scale_range);
            for row in m.iter_mut() {
                for v in row.iter_mut() {
                    *v /= z;
                }
            }
        }
        if cfg.rotation_prob > 0.0
            && !cfg.rotation_planes.is_empty()
            && rng.gen_bool(cfg.rotation_prob)
        {
            let [a, b] = cfg.rotation_planes[rng.gen_range(0..cfg.rotation_planes.len())];
            let mx = cfg.max_rotation_deg;
            let deg = if cfg.integer_degrees {
                let r = mx.floor() as i64;
                rng.gen_range(-r..=r) as f64
            } else {
                uniform(rng, [-mx, mx])
            };
            let (s, c) = deg.to_radians().sin_cos();
            // Rotation in physical space: D^-1 R D, D = diag(spacing).
            let mut r = Self::identity().matrix;
            r[a][a] = c;
            r[b][b] = c;
            r[a][b] = -s * spacing[b] / spacing[a];
            r[b][a] = s * spacing[a] / spacing[b];
            m = matmul(&r, &m);
        }
        let displacement = (cfg.elastic_prob > 0.0
            && cfg.elastic_alpha > 0.0
            && rng.gen_bool(cfg.elastic_prob))
        .then(|| {
            let mut field = || {
                let mut d = Array3::from_shape_simple_fn((patch[0], patch[1], patch[2]), || {
                    rng.gen_range(-1.0f32..=1.0)
                });
                gaussian_filter(&mut d, [cfg.elastic_sigma; 3]);
                d.mapv_inplace(|v| v * cfg.elastic_alpha as f32);
                d
            };
            [field(), field(), field()]
        });
        Self {
            matrix: m,
            displacement,
            image_interpolation: cfg.image_interpolation,
        }
    }

    /// Source position (voxel index) read by patch voxel `p`.
    #[inline]
    pub fn source(&self, center: [f64; 3], half: [f64; 3], p: [usize; 3]) -> [f64; 3] {
        let d = [
            p[0] as f64 - half[0],
            p[1] as f64 - half[1],
            p[2] as f64 - half[2],
        ];
        let m = &self.matrix;
        let mut q = [0.0; 3];
        for r in 0..3 {
            q[r] = center[r] + m[r][0] * d[0] + m[r][1] * d[1] + m[r][2] * d[2];
        }
        if let Some(disp) = &self.displacement {
            for (r, f) in disp.iter().enumerate() {
                q[r] += f[p] as f64;
            }
        }
        q
    }
}

fn matmul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut o = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            o[r][c] = (0..3).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    o
}

fn uniform(rng: &mut impl Rng, r: [f64; 2]) -> f64 {
    if r[1] > r[0] {
        rng.gen_range(r[0]..r[1])
    } else {
        r[0]
    }
}

/// Sample an image patch and its label patch of shape `patch` centred on `center` through
/// `t`, the image with `t.image_interpolation`, the label with nearest neighbour. Outside the
/// volume the image reads `fill` and the label reads 0.
pub fn sample_patch(
    image: &ArrayView3<'_, f32>,
    label: &ArrayView3<'_, u8>,
    center: [f64; 3],
    patch: [usize; 3],
    t: &SpatialTransform,
    fill: f32,
) -> (Array3<f32>, Array3<u8>) {
    let half = [
        (patch[0] as f64 - 1.0) / 2.0,
        (patch[1] as f64 - 1.0) / 2.0,
        (patch[2] as f64 - 1.0) / 2.0,
    ];
    let sh = (patch[0], patch[1], patch[2]);
    let mut img = Array3::<f32>::zeros(sh);
    let mut lab = Array3::<u8>::zeros(sh);
    // One task per (i, j) row: the linear part advances by the matrix's third column along k
    // (the same map as `SpatialTransform::source`, up to rounding).
    let m = t.matrix;
    let interp = t.image_interpolation;
    Zip::indexed(img.lanes_mut(Axis(2)))
        .and(lab.lanes_mut(Axis(2)))
        .par_for_each(|(i, j), mut row_i, mut row_l| {
            let d = [i as f64 - half[0], j as f64 - half[1], -half[2]];
            let start: [f64; 3] = std::array::from_fn(|r| {
                center[r] + m[r][0] * d[0] + m[r][1] * d[1] + m[r][2] * d[2]
            });
            for (k, (vi, vl)) in row_i.iter_mut().zip(row_l.iter_mut()).enumerate() {
                let kf = k as f64;
                let mut q: [f64; 3] = std::array::from_fn(|r| start[r] + m[r][2] * kf);
                if let Some(disp) = &t.displacement {
                    for (r, f) in disp.iter().enumerate() {
                        q[r] += f[[i, j, k]] as f64;
                    }
                }
                *vi = match interp {
                    Interpolation::Linear => sample_linear(image, q, fill),
                    Interpolation::Cubic => sample_cubic(image, q, fill),
                    Interpolation::Nearest => sample_nearest(image, q, fill),
                };
                *vl = sample_nearest(label, q, 0);
            }
        });
    (img, lab)
}

/// Apply the configured intensity augmentations to an image patch in place.
pub fn augment_intensity(cfg: &AugmentConfig, img: &mut Array3<f32>, rng: &mut impl Rng) {
    if img.is_empty() {
        return;
    }
    if cfg.contrast_prob > 0.0 && rng.gen_bool(cfg.contrast_prob) {
        let a = uniform(rng, cfg.contrast_range) as f32;
        let (lo, hi) = min_max(img);
        let mean = (img.iter().map(|v| *v as f64).sum::<f64>() / img.len() as f64) as f32;
        img.mapv_inplace(|v| (mean + a * (v - mean)).clamp(lo, hi));
    }
    if cfg.brightness_prob > 0.0 && rng.gen_bool(cfg.brightness_prob) {
        let f = uniform(rng, cfg.brightness_range) as f32;
        img.mapv_inplace(|v| v * f);
    }
    if cfg.gamma_prob > 0.0 && rng.gen_bool(cfg.gamma_prob) {
        let g = uniform(rng, cfg.gamma_range);
        let (lo, hi) = min_max(img);
        let range = hi - lo;
        if range > 0.0 {
            img.mapv_inplace(|v| lo + range * (((v - lo) / range) as f64).powf(g) as f32);
        }
    }
    if cfg.noise_prob > 0.0 && rng.gen_bool(cfg.noise_prob) {
        let sd = uniform(rng, cfg.noise_std_range);
        if sd > 0.0 {
            for v in img.iter_mut() {
                *v += (sd * standard_normal(rng)) as f32;
            }
        }
    }
    if cfg.blur_prob > 0.0 && rng.gen_bool(cfg.blur_prob) {
        let s = uniform(rng, cfg.blur_sigma_range);
        if s > 0.0 {
            gaussian_filter(img, [s; 3]);
        }
    }
}

fn min_max(a: &Array3<f32>) -> (f32, f32) {
    a.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| {
            (l.min(*v), h.max(*v))
        })
}

/// A standard normal draw (Box-Muller).
pub(crate) fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Separable Gaussian filter with per-axis sigma (voxels), kernel truncated at 4 sigma,
/// mirror-reflected borders (scipy's `reflect` mode). Axes with sigma 0 are skipped.
///
/// Each lane is first copied once into a buffer padded by the kernel radius on both sides
/// (reflected), so the inner loop is a plain dot product; accumulation order is the kernel's.
pub fn gaussian_filter(a: &mut Array3<f32>, sigma: [f64; 3]) {
    for (ax, &s) in sigma.iter().enumerate() {
        if !(s > 0.0) {
            continue;
        }
        let r = (4.0 * s).ceil() as usize;
        let mut w: Vec<f32> = (-(r as i64)..=r as i64)
            .map(|x| (-(x * x) as f64 / (2.0 * s * s)).exp() as f32)
            .collect();
        let sum: f32 = w.iter().sum();
        w.iter_mut().for_each(|v| *v /= sum);
        let n = a.len_of(Axis(ax));
        Zip::from(a.lanes_mut(Axis(ax))).par_for_each(|mut lane| {
            let padded: Vec<f32> = (-(r as i64)..(n + r) as i64)
                .map(|x| lane[reflect(x, n as i64)])
                .collect();
            for (x, o) in lane.iter_mut().enumerate() {
                *o = padded[x..x + w.len()]
                    .iter()
                    .zip(&w)
                    .fold(0.0f32, |acc, (v, wt)| acc + wt * v);
            }
        });
    }
}

#[inline]
fn reflect(mut i: i64, n: i64) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * n;
    i = i.rem_euclid(period);
    if i >= n {
        i = period - 1 - i;
    }
    i as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// An asymmetric object: a ball plus an off-centre bar, so any flip or shift of the label
    /// against the image is visible.
    fn object(n: usize) -> (Array3<f32>, Array3<u8>) {
        let c = n as f64 / 2.0;
        let lab = Array3::from_shape_fn((n, n, n), |(i, j, k)| {
            let (x, y, z) = (i as f64 - c, j as f64 - c, k as f64 - c);
            let ball = x * x + y * y + z * z < (n as f64 / 5.0).powi(2);
            let bar = (x - 5.0).abs() < 2.0 && y > 3.0 && y < 12.0 && z.abs() < 2.5;
            u8::from(ball || bar)
        });
        (lab.mapv(|l| 100.0 * l as f32), lab)
    }

    #[test]
    fn identity_transform_reads_the_crop() {
        let (img, lab) = object(20);
        let t = SpatialTransform::identity();
        let (pi, pl) = sample_patch(
            &img.view(),
            &lab.view(),
            [10.0, 9.5, 10.0],
            [5, 4, 6],
            &t,
            -1.0,
        );
        // Patch voxel (0,0,0) reads source (10 - 2, 9.5 - 1.5, 10 - 2.5) -> k is fractional.
        assert_eq!(pl[[0, 0, 0]], lab[[8, 8, 8]]);
        assert_abs_diff_eq!(
            pi[[1, 1, 1]],
            0.5 * (img[[9, 9, 8]] + img[[9, 9, 9]]),
            epsilon = 1e-4
        );
        let (pi, pl) = sample_patch(
            &img.view(),
            &lab.view(),
            [10.0, 10.0, 10.0],
            [5, 5, 5],
            &t,
            -1.0,
        );
        for ((i, j, k), v) in pl.indexed_iter() {
            assert_eq!(*v, lab[[i + 8, j + 8, k + 8]]);
            assert_eq!(pi[[i, j, k]], img[[i + 8, j + 8, k + 8]]);
        }
    }

    #[test]
    fn every_spatial_augmentation_keeps_image_and_label_aligned() {
        let (img, lab) = object(40);
        let mut cfg = AugmentConfig::paper();
        cfg.flip_prob = 1.0;
        cfg.flip_axes = vec![0, 1, 2];
        cfg.scale_prob = 1.0;
        cfg.elastic_prob = 1.0;
        cfg.elastic_alpha = 300.0; // strong, to make a misalignment obvious
        for seed in 0..6 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let t = SpatialTransform::random(&cfg, [24, 28, 20], [1.0, 1.0, 2.0], &mut rng);
            let (pi, pl) = sample_patch(
                &img.view(),
                &lab.view(),
                [20.0, 21.0, 19.0],
                [24, 28, 20],
                &t,
                0.0,
            );
            let mut checked = 0;
            for (v, l) in pi.iter().zip(pl.iter()) {
                // Away from the interpolated boundary, the label must match the image.
                if *v < 1.0 {
                    assert_eq!(*l, 0, "seed {seed}: label 1 where image is background");
                    checked += 1;
                } else if *v > 99.0 {
                    assert_eq!(*l, 1, "seed {seed}: label 0 where image is foreground");
                    checked += 1;
                }
            }
            assert!(
                checked > pi.len() * 8 / 10,
                "seed {seed}: only {checked} voxels checked"
            );
            assert!(
                pl.iter().any(|l| *l == 1),
                "seed {seed}: patch misses the object"
            );
        }
    }

    /// A smooth image (wavelengths of 7-9 voxels) read through rotated patches: Keys cubic
    /// convolution is much closer to the analytic rotated image than trilinear interpolation,
    /// which blurs between voxels.
    #[test]
    fn cubic_rotated_patch_is_closer_to_the_analytic_image_than_linear() {
        let f = |p: [f64; 3]| (0.8 * p[0]).sin() * (0.7 * p[1]).cos() + (0.9 * p[2] + 0.3).sin();
        let n = 40;
        let img = Array3::from_shape_fn((n, n, n), |(i, j, k)| {
            f([i as f64, j as f64, k as f64]) as f32
        });
        let lab = Array3::<u8>::zeros((n, n, n));
        let mut cfg = AugmentConfig::paper();
        cfg.flip_prob = 0.0;
        cfg.elastic_prob = 0.0;
        let (patch, center) = ([16, 18, 14], [20.0, 19.5, 20.5]);
        let half = [7.5, 8.5, 6.5];
        for seed in 0..6 {
            let t = SpatialTransform::random(
                &cfg,
                patch,
                [1.0; 3],
                &mut ChaCha8Rng::seed_from_u64(seed),
            );
            let rms = |interp| {
                let t = t.clone().with_image_interpolation(interp);
                let (pi, _) = sample_patch(&img.view(), &lab.view(), center, patch, &t, 0.0);
                let se: f64 = pi
                    .indexed_iter()
                    .map(|((i, j, k), v)| {
                        (*v as f64 - f(t.source(center, half, [i, j, k]))).powi(2)
                    })
                    .sum();
                (se / pi.len() as f64).sqrt()
            };
            let (lin, cub) = (rms(Interpolation::Linear), rms(Interpolation::Cubic));
            assert!(
                lin > 0.01,
                "seed {seed}: the rotation must read off the grid ({lin})"
            );
            assert!(
                cub < 0.35 * lin,
                "seed {seed}: cubic RMS {cub} vs linear {lin}"
            );
        }
    }

    #[test]
    fn image_interpolation_is_optional_in_json() {
        // A config written before the option existed still parses, as linear (what it meant),
        // although the presets use cubic.
        let old = r#"{"flip_prob": 0.5, "rotation_prob": 1.0}"#;
        let c: AugmentConfig = serde_json::from_str(old).unwrap();
        assert_eq!(c.image_interpolation, Interpolation::Linear);
        assert_eq!(c.rotation_prob, 1.0);
        assert_eq!(
            AugmentConfig::paper().image_interpolation,
            Interpolation::Cubic
        );
        assert_eq!(
            AugmentConfig::default().image_interpolation,
            Interpolation::Cubic
        );
        let c: AugmentConfig = serde_json::from_str(r#"{"image_interpolation": "cubic"}"#).unwrap();
        assert_eq!(c.image_interpolation, Interpolation::Cubic);
        let mut p = AugmentConfig::paper();
        p.image_interpolation = Interpolation::Linear;
        let back: AugmentConfig =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert!(
            serde_json::from_str::<AugmentConfig>(r#"{"image_interpolation": "quintic"}"#).is_err()
        );
    }

    #[test]
    fn flip_mirrors_both() {
        let (img, lab) = object(20);
        let mut cfg = AugmentConfig::none();
        cfg.flip_prob = 1.0;
        cfg.flip_axes = vec![1];
        let t =
            SpatialTransform::random(&cfg, [8, 8, 8], [1.0; 3], &mut ChaCha8Rng::seed_from_u64(0));
        let id = SpatialTransform::identity();
        let c = [12.5, 12.5, 10.5];
        let (fi, fl) = sample_patch(&img.view(), &lab.view(), c, [8, 8, 8], &t, 0.0);
        let (ii, il) = sample_patch(&img.view(), &lab.view(), c, [8, 8, 8], &id, 0.0);
        for ((i, j, k), v) in fl.indexed_iter() {
            assert_eq!(*v, il[[i, 7 - j, k]]);
            assert_eq!(fi[[i, j, k]], ii[[i, 7 - j, k]]);
        }
        assert_ne!(fl, il, "the test object must not be symmetric here");
    }

    #[test]
    fn deterministic_under_seed() {
        let (img, _) = object(16);
        let cfg = AugmentConfig::default();
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let t = SpatialTransform::random(&cfg, [8, 8, 8], [1.0; 3], &mut rng);
            let (mut p, _) = sample_patch(
                &img.view(),
                &img.mapv(|v| v as u8).view(),
                [8.0; 3],
                [8, 8, 8],
                &t,
                0.0,
            );
            augment_intensity(&cfg, &mut p, &mut rng);
            p
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn rotation_by_90_in_plane() {
        // 90 degrees in plane (0, 1): source offset = R d with R = [[0,-1],[1,0]].
        let mut cfg = AugmentConfig::none();
        cfg.rotation_prob = 1.0;
        cfg.max_rotation_deg = 90.0;
        cfg.rotation_planes = vec![[0, 1]];
        let mut found = false;
        for seed in 0..500 {
            let t = SpatialTransform::random(
                &cfg,
                [4, 4, 4],
                [1.0; 3],
                &mut ChaCha8Rng::seed_from_u64(seed),
            );
            if (t.matrix[0][1] + 1.0).abs() < 1e-12 {
                assert_abs_diff_eq!(t.matrix[0][0], 0.0, epsilon = 1e-12);
                assert_abs_diff_eq!(t.matrix[1][0], 1.0, epsilon = 1e-12);
                assert_eq!(t.matrix[2][2], 1.0);
                found = true;
                break;
            }
        }
        assert!(found);
    }

    #[test]
    fn gaussian_filter_preserves_constants_and_mass() {
        let mut a = Array3::from_elem((5, 6, 7), 3.0f32);
        gaussian_filter(&mut a, [1.0, 2.0, 0.5]);
        assert!(a.iter().all(|v| (v - 3.0).abs() < 1e-5));
        let mut d = Array3::zeros((21, 1, 1));
        d[[10, 0, 0]] = 1.0f32;
        gaussian_filter(&mut d, [2.0, 0.0, 0.0]);
        assert_abs_diff_eq!(d.sum(), 1.0, epsilon = 1e-5);
        assert_abs_diff_eq!(
            d[[10, 0, 0]],
            1.0 / (2.0 * (2.0 * std::f32::consts::PI).sqrt()),
            epsilon = 2e-3
        );
    }

    #[test]
    fn intensity_contrast_stays_in_range() {
        let mut cfg = AugmentConfig::none();
        cfg.contrast_prob = 1.0;
        let mut a = Array3::from_shape_fn((4, 4, 4), |(i, j, k)| (i + j + k) as f32);
        augment_intensity(&cfg, &mut a, &mut ChaCha8Rng::seed_from_u64(1));
        assert!(a.iter().all(|v| (0.0..=9.0).contains(v)));
        assert!(AugmentConfig::default().validate().is_ok());
        let bad = AugmentConfig {
            flip_axes: vec![3],
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
