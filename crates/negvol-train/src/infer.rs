//! Sliding-window inference over whole volumes with Gaussian importance weighting.
//!
//! Windows of the patch size tile the volume with the given overlap (nnU-Net's rule: the
//! number of steps along an axis is `ceil((size - patch) / (patch * (1 - overlap))) + 1`,
//! spread evenly from the first to the last position); each window's output is weighted by a
//! separable Gaussian centred on the window (sigma = `sigma_scale` x patch size per axis,
//! normalised to a maximum of 1) and the weighted sum is divided by the summed weights.
//! Volumes smaller than the patch are padded with their minimum and cropped back. Windows
//! are batched; all accumulation happens on the model's device (CUDA when present). With
//! flip test-time augmentation every one of the 8 mirrorings of the three axes is predicted
//! and averaged.

use ndarray::{Array3, Array4};
use negvol_volume::Volume;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::{Precision, Result, TrainError};

/// What turns the network's output into the accumulated map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Softmax over channels (class probabilities).
    Softmax,
    /// Element-wise sigmoid.
    Sigmoid,
    /// The raw output (logits, or an identity model's input).
    None,
}

/// Sliding-window settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InferenceConfig {
    /// Window shape (voxels); should be a multiple of the network's size divisor.
    pub patch: [usize; 3],
    /// Fraction of a window shared with its neighbour, in `[0, 1)`.
    pub overlap: f64,
    /// Gaussian sigma as a fraction of the window size (nnU-Net: 1/8). 0 gives flat weights.
    pub sigma_scale: f64,
    /// Windows per forward pass.
    pub batch_size: usize,
    /// Average over the 8 axis mirrorings.
    pub flip_tta: bool,
    /// Output activation.
    pub activation: Activation,
    /// Forward-pass precision: `bf16`/`f16` run the network under CUDA autocast (nnU-Net
    /// predicts with autocast too); blending is always f32. Ignored on the CPU.
    pub precision: Precision,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            patch: [112, 144, 64],
            overlap: 0.5,
            sigma_scale: 0.125,
            batch_size: 2,
            flip_tta: false,
            activation: Activation::Softmax,
            precision: Precision::F32,
        }
    }
}

impl InferenceConfig {
    /// Check the settings.
    pub fn validate(&self) -> Result<()> {
        if self.patch.contains(&0) || self.batch_size == 0 {
            return Err(TrainError::Config(format!(
                "inference patch {:?} and batch size {} must be > 0",
                self.patch, self.batch_size
            )));
        }
        if !(0.0..1.0).contains(&self.overlap) || !(self.sigma_scale >= 0.0) {
            return Err(TrainError::Config(format!(
                "overlap {} must be in [0, 1) and sigma scale {} >= 0",
                self.overlap, self.sigma_scale
            )));
        }
        Ok(())
    }
}

/// Window start positions along one axis (nnU-Net's rule, see the module documentation).
pub fn window_starts(size: usize, patch: usize, overlap: f64) -> Vec<usize> {
    if size <= patch {
        return vec![0];
    }
    let step = (patch as f64 * (1.0 - overlap)).max(1.0);
    let n = ((size - patch) as f64 / step).ceil() as usize + 1;
    let actual = (size - patch) as f64 / (n - 1) as f64;
    (0..n)
        .map(|i| (actual * i as f64).round() as usize)
        .collect()
}

/// The Gaussian importance map of a window, max 1, as a flat `[pi * pj * pk]` vector.
pub fn gaussian_importance(patch: [usize; 3], sigma_scale: f64) -> Vec<f32> {
    let axis = |n: usize| -> Vec<f64> {
        let c = (n as f64 - 1.0) / 2.0;
        let s = n as f64 * sigma_scale;
        (0..n)
            .map(|i| {
                if s > 0.0 {
                    (-(i as f64 - c).powi(2) / (2.0 * s * s)).exp()
                } else {
                    1.0
                }
            })
            .collect()
    };
    let (a, b, c) = (axis(patch[0]), axis(patch[1]), axis(patch[2]));
    let max = a.iter().cloned().fold(0.0, f64::max)
        * b.iter().cloned().fold(0.0, f64::max)
        * c.iter().cloned().fold(0.0, f64::max);
    let mut out = Vec::with_capacity(patch.iter().product());
    for x in &a {
        for y in &b {
            for z in &c {
                out.push(((x * y * z / max) as f32).max(1e-6));
            }
        }
    }
    out
}

/// Predict a whole image `[ni, nj, nk]` with a model mapping `[B, 1, pi, pj, pk]` to
/// `[B, C, pi, pj, pk]` on `device`. Returns the blended map `[C, ni, nj, nk]` after the
/// activation.
pub fn sliding_window(
    model: &dyn Fn(&Tensor) -> Result<Tensor>,
    image: &Array3<f32>,
    cfg: &InferenceConfig,
    device: Device,
) -> Result<Array4<f32>> {
    cfg.validate()?;
    let sh = image.shape();
    let size = [sh[0], sh[1], sh[2]];
    let p = cfg.patch;
    // Pad to at least the patch size.
    let padded: [usize; 3] = [size[0].max(p[0]), size[1].max(p[1]), size[2].max(p[2])];
    let to_i64 = |a: [usize; 3]| [a[0] as i64, a[1] as i64, a[2] as i64];
    // The host side copies every voxel at most once each way (the image to the device, the
    // result into the returned array; on the CPU without padding, neither) and scans nothing
    // it does not need.
    //
    // The image's own memory is wrapped as a CPU tensor, not copied into one:
    // `as_standard_layout` borrows it when it is already in standard (C) order (the usual
    // case) and copies it once into that order otherwise.
    let host = image.as_standard_layout();
    let data = host
        .as_slice()
        .ok_or_else(|| TrainError::Network("sliding window: image not contiguous".into()))?;
    // SAFETY: `data` is `size[0] * size[1] * size[2]` initialised f32s, contiguous in C order,
    // which is what `from_blob` is told (the shape, default strides, Float). The tensor does
    // not own that memory, so it must not outlive `host` (the caller's `image` or our
    // standard-layout copy), and nothing may write through it while `data` is borrowed:
    // `src` (and on the CPU `img`, which then is `src` itself, as `to_device` to the same
    // device returns the tensor) is a local of this function, dropped before `host` (declared
    // earlier) on every return path, explicitly (`drop(img)`) on the successful one; it is
    // only read (copied to the device or into the padded tensor, or `narrow`ed into windows
    // that `Tensor::stack` copies before the model sees them), never written or handed out.
    let src = unsafe {
        Tensor::f_from_blob(
            data.as_ptr().cast::<u8>(),
            &to_i64(size),
            &[],
            Kind::Float,
            Device::Cpu,
        )
    }
    .map_err(|e| TrainError::torch("sliding window: wrapping the image", e))?;
    let img = if padded != size {
        // The padding value (the image's minimum) is only needed, and only scanned for, when
        // the volume is smaller than the window along some axis.
        let fill = image.iter().copied().fold(f32::INFINITY, f32::min);
        let fill = if fill.is_finite() { fill } else { 0.0 };
        let t = Tensor::full(to_i64(padded), fill as f64, (Kind::Float, device));
        t.narrow(0, 0, size[0] as i64)
            .narrow(1, 0, size[1] as i64)
            .narrow(2, 0, size[2] as i64)
            .f_copy_(&src)
            .map_err(|e| TrainError::torch("sliding window: copying the image", e))?;
        t
    } else {
        // One host-to-device copy (synchronous: `to_device` does not ask for a non-blocking
        // copy, so `src` may go once it returns); on the CPU, `src` itself.
        src.f_to_device(device)
            .map_err(|e| TrainError::torch("sliding window: copying the image", e))?
    };
    drop(src);
    let gauss = Tensor::from_slice(&gaussian_importance(p, cfg.sigma_scale))
        .view(to_i64(p))
        .to_device(device);
    let starts: Vec<[usize; 3]> = {
        let (a, b, c) = (
            window_starts(padded[0], p[0], cfg.overlap),
            window_starts(padded[1], p[1], cfg.overlap),
            window_starts(padded[2], p[2], cfg.overlap),
        );
        let mut v = Vec::new();
        for x in &a {
            for y in &b {
                for z in &c {
                    v.push([*x, *y, *z]);
                }
            }
        }
        v
    };
    let flips: Vec<Vec<i64>> = if cfg.flip_tta {
        (0..8u8)
            .map(|m| {
                (0..3)
                    .filter(|a| m & (1 << a) != 0)
                    .map(|a| a + 2)
                    .collect()
            })
            .collect()
    } else {
        vec![vec![]]
    };
    let amp = cfg.precision.autocasts_on(device);
    if amp {
        crate::config::set_autocast_dtype(cfg.precision);
    }
    // On the CPU, when there is no padding to crop, the accumulator is the returned array's
    // own buffer (the result then needs no copy at all); elsewhere it lives on the device and
    // is copied once into a fresh buffer at the end. Declared before `agg`, so that on every
    // return path `agg` (which may borrow it) is dropped first.
    let in_place = device == Device::Cpu && padded == size;
    let mut acc_buf: Vec<f32> = Vec::new();
    let mut agg: Option<Tensor> = None;
    let weight = Tensor::zeros(to_i64(padded), (Kind::Float, device));
    tch::no_grad(|| -> Result<()> {
        for chunk in starts.chunks(cfg.batch_size) {
            let windows: Vec<Tensor> = chunk
                .iter()
                .map(|s| {
                    img.narrow(0, s[0] as i64, p[0] as i64)
                        .narrow(1, s[1] as i64, p[1] as i64)
                        .narrow(2, s[2] as i64, p[2] as i64)
                })
                .collect();
            let x = Tensor::stack(&windows, 0).unsqueeze(1);
            let mut out: Option<Tensor> = None;
            for f in &flips {
                let xin = if f.is_empty() {
                    x.shallow_clone()
                } else {
                    x.flip(f.as_slice())
                };
                let y = crate::config::autocast(amp, || model(&xin))?;
                let y = y.to_kind(Kind::Float);
                if y.dim() != 5 || y.size()[0] != x.size()[0] || y.size()[2..] != x.size()[2..] {
                    return Err(TrainError::Network(format!(
                        "sliding window: model output shape {:?} does not match window batch {:?}",
                        y.size(),
                        x.size()
                    )));
                }
                let y = match cfg.activation {
                    Activation::Softmax => y.softmax(1, Kind::Float),
                    Activation::Sigmoid => y.sigmoid(),
                    Activation::None => y,
                };
                let y = if f.is_empty() {
                    y
                } else {
                    y.flip(f.as_slice())
                };
                out = Some(match out {
                    None => y,
                    Some(o) => o + y,
                });
            }
            let out = out.expect("at least one flip") / flips.len() as f64;
            let out = out * gauss.view([1, 1, p[0] as i64, p[1] as i64, p[2] as i64]);
            let channels = out.size()[1];
            let acc = match &mut agg {
                Some(acc) => acc,
                None => {
                    let shape = [
                        channels,
                        padded[0] as i64,
                        padded[1] as i64,
                        padded[2] as i64,
                    ];
                    let acc = if in_place {
                        acc_buf = vec![0f32; channels as usize * padded.iter().product::<usize>()];
                        // SAFETY: `acc_buf` holds exactly `channels * padded` initialised
                        // (zero) f32s, contiguous, matching the shape, default strides and
                        // Float kind given; the pointer comes from `as_mut_ptr`, so libtorch
                        // may write through it (the in-place accumulation and normalisation).
                        // The tensor does not own the buffer: `acc_buf` is neither read,
                        // resized nor dropped while `agg`, `acc` or a view of them (`res`)
                        // exists. They are dropped before it on every return path (declared
                        // after it) and explicitly before it is taken on the successful one.
                        unsafe {
                            Tensor::f_from_blob(
                                acc_buf.as_mut_ptr().cast::<u8>().cast_const(),
                                &shape,
                                &[],
                                Kind::Float,
                                Device::Cpu,
                            )
                        }
                        .map_err(|e| TrainError::torch("sliding window: the accumulator", e))?
                    } else {
                        Tensor::zeros(shape, (Kind::Float, device))
                    };
                    agg.insert(acc)
                }
            };
            if acc.size()[0] != channels {
                return Err(TrainError::Network(format!(
                    "sliding window: channel count changed from {} to {channels}",
                    acc.size()[0]
                )));
            }
            for (b, s) in chunk.iter().enumerate() {
                let mut dst = acc
                    .narrow(1, s[0] as i64, p[0] as i64)
                    .narrow(2, s[1] as i64, p[1] as i64)
                    .narrow(3, s[2] as i64, p[2] as i64);
                let _ = dst.g_add_(&out.get(b as i64));
                let mut w = weight
                    .narrow(0, s[0] as i64, p[0] as i64)
                    .narrow(1, s[1] as i64, p[1] as i64)
                    .narrow(2, s[2] as i64, p[2] as i64);
                let _ = w.g_add_(&gauss);
            }
        }
        Ok(())
    })?;
    // Peak memory: release the image before normalising in place, and the weights after.
    drop(img);
    let mut acc = agg.ok_or_else(|| TrainError::Network("sliding window: no window".into()))?;
    let _ = acc.g_div_(&weight.unsqueeze(0));
    drop(weight);
    let res = acc
        .narrow(1, 0, size[0] as i64)
        .narrow(2, 0, size[1] as i64)
        .narrow(3, 0, size[2] as i64);
    let c = res.size()[0] as usize;
    // Finite? One reduction where the result lives (min and max propagate NaN, and an
    // infinity is an extreme), two scalars read back, before anything is copied to the host.
    if res.numel() > 0 {
        let (lo, hi) = res
            .f_aminmax(None, false)
            .map_err(|e| TrainError::torch("sliding window: checking the result", e))?;
        if !(lo.double_value(&[]).is_finite() && hi.double_value(&[]).is_finite()) {
            return Err(TrainError::Network(
                "sliding window: the model produced non-finite values".into(),
            ));
        }
    }
    let v = if in_place {
        // The accumulator is `acc_buf`: release every tensor on it, then take it.
        drop(res);
        drop(acc);
        std::mem::take(&mut acc_buf)
    } else {
        // One copy, from the (possibly strided) result on its device straight into the
        // buffer the returned array owns.
        let n = c * size.iter().product::<usize>();
        let mut v = vec![0f32; n];
        {
            // SAFETY: `v` holds exactly `n = c * size[0] * size[1] * size[2]` initialised
            // f32s, contiguous, matching the shape, default (C) strides and Float kind given.
            // `dst` does not own them: it is dropped at the end of this block, while `v` is
            // alive and not otherwise used (no reference into it exists meanwhile), and
            // `copy_` is synchronous (no non-blocking copy is requested), so no write reaches
            // `v` after the block. The pointer comes from `as_mut_ptr`, so writing through it
            // is allowed.
            let mut dst = unsafe {
                Tensor::f_from_blob(
                    v.as_mut_ptr().cast::<u8>().cast_const(),
                    &[c as i64, size[0] as i64, size[1] as i64, size[2] as i64],
                    &[],
                    Kind::Float,
                    Device::Cpu,
                )
            }
            .map_err(|e| TrainError::torch("sliding window: reading the result", e))?;
            dst.f_copy_(&res)
                .map_err(|e| TrainError::torch("sliding window: reading the result", e))?;
        }
        drop(res);
        drop(acc);
        v
    };
    Array4::from_shape_vec((c, size[0], size[1], size[2]), v)
        .map_err(|e| TrainError::Network(format!("sliding window: {e}")))
}

/// Probabilities and label map of a whole volume, in its geometry.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// One probability map per class (class 0 = background).
    pub probabilities: Vec<Volume<f32>>,
    /// Argmax over classes.
    pub labels: Volume<u8>,
}

impl Prediction {
    /// The mask of one class (voxels whose argmax is `class`), in the prediction's geometry.
    pub fn mask(&self, class: u8) -> Volume<bool> {
        self.labels.map(|l| *l == class)
    }

    /// Keep only the largest connected components of every foreground class of the label map
    /// ([`crate::postprocess::keep_largest_components`]); removed voxels become background (0).
    /// The probabilities are left as predicted. Returns what was done per class, class 1 first.
    pub fn keep_largest_components(
        &mut self,
        filter: &crate::postprocess::ComponentFilter,
    ) -> Result<Vec<crate::postprocess::FilterOutcome>> {
        // Up to 256 classes (to_prediction's limit): class indices 1..=255 fit the u8 labels.
        let classes = self.probabilities.len().clamp(1, 256);
        (1..classes)
            .map(|c| self.keep_largest_components_of(c as u8, filter))
            .collect()
    }

    /// [`Prediction::keep_largest_components`] for one class of the label map: its removed
    /// voxels become background (0); other classes and the probabilities are untouched.
    pub fn keep_largest_components_of(
        &mut self,
        class: u8,
        filter: &crate::postprocess::ComponentFilter,
    ) -> Result<crate::postprocess::FilterOutcome> {
        let mut m = self.mask(class);
        let r = crate::postprocess::keep_largest_components(&mut m, filter)?;
        if r.removed_voxels > 0 {
            ndarray::Zip::from(self.labels.view_mut())
                .and(m.view())
                .for_each(|l, kept| {
                    if *l == class && !*kept {
                        *l = 0;
                    }
                });
        }
        Ok(r)
    }
}

/// Split a `[C, ni, nj, nk]` probability map into volumes of `geometry` and its argmax.
pub fn to_prediction(
    probs: &Array4<f32>,
    geometry: &negvol_volume::Geometry,
) -> Result<Prediction> {
    let c = probs.shape()[0];
    if c > 256 {
        return Err(TrainError::Network(format!(
            "{c} classes do not fit a u8 label map"
        )));
    }
    let probabilities = (0..c)
        .map(|i| {
            Volume::new(
                probs.index_axis(ndarray::Axis(0), i).to_owned(),
                geometry.clone(),
            )
            .map_err(|source| TrainError::Volume {
                context: "prediction".into(),
                source,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Prediction::from_probabilities(probabilities)
}

impl Prediction {
    /// A prediction from per-class probability maps (class 0 = background) that share one
    /// geometry: the label map is their argmax (on a tie the lowest class wins, as in
    /// [`to_prediction`]). The maps are kept as given, not copied. Errors: no map, more than
    /// 256 classes (a `u8` label map), or maps of different geometries.
    pub fn from_probabilities(probabilities: Vec<Volume<f32>>) -> Result<Self> {
        let c = probabilities.len();
        let Some(first) = probabilities.first() else {
            return Err(TrainError::Network(
                "a prediction needs at least one probability map".into(),
            ));
        };
        if c > 256 {
            return Err(TrainError::Network(format!(
                "{c} classes do not fit a u8 label map"
            )));
        }
        let geometry = first.geometry().clone();
        if let Some(i) = probabilities.iter().position(|p| p.geometry() != &geometry) {
            return Err(TrainError::Network(format!(
                "probability map {i} has geometry {:?}, map 0 {:?}",
                probabilities[i].geometry(),
                geometry
            )));
        }
        let maps: Vec<&Array3<f32>> = probabilities.iter().map(|p| p.data()).collect();
        let s = geometry.shape();
        let labels = Array3::from_shape_fn((s[0], s[1], s[2]), |ijk| {
            let mut best = 0usize;
            for ch in 1..c {
                if maps[ch][ijk] > maps[best][ijk] {
                    best = ch;
                }
            }
            best as u8
        });
        let labels = Volume::new(labels, geometry).map_err(|source| TrainError::Volume {
            context: "prediction".into(),
            source,
        })?;
        Ok(Self {
            probabilities,
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    #[test]
    fn window_starts_cover_the_volume() {
        assert_eq!(window_starts(10, 10, 0.5), vec![0]);
        assert_eq!(window_starts(5, 10, 0.5), vec![0]);
        assert_eq!(window_starts(20, 10, 0.5), vec![0, 5, 10]);
        let s = window_starts(23, 8, 0.5);
        assert_eq!(*s.first().unwrap(), 0);
        assert_eq!(*s.last().unwrap(), 15);
        assert!(s.windows(2).all(|w| w[1] - w[0] <= 4));
    }

    #[test]
    fn gaussian_is_centred_and_normalised() {
        let g = gaussian_importance([5, 4, 3], 0.125);
        let at = |i: usize, j: usize, k: usize| g[(i * 4 + j) * 3 + k];
        assert_abs_diff_eq!(at(2, 1, 1), at(2, 2, 1), epsilon = 1e-7);
        assert!(at(2, 1, 1) <= 1.0 && at(0, 0, 0) < at(1, 1, 1));
        assert!(g.iter().all(|v| *v > 0.0));
    }

    #[test]
    fn identity_model_reconstructs_its_input() {
        let img = Array3::from_shape_fn((13, 9, 7), |(i, j, k)| {
            ((i * 31 + j * 7 + k * 3) % 17) as f32 - 4.0
        });
        let ident = |x: &Tensor| -> Result<Tensor> { Ok(x.shallow_clone()) };
        for (patch, tta) in [([4, 4, 4], false), ([8, 6, 4], true), ([16, 16, 16], false)] {
            let cfg = InferenceConfig {
                patch,
                batch_size: 3,
                flip_tta: tta,
                activation: Activation::None,
                ..Default::default()
            };
            let out = sliding_window(&ident, &img, &cfg, Device::Cpu).unwrap();
            assert_eq!(out.shape(), &[1, 13, 9, 7]);
            for (a, b) in out.iter().zip(img.iter()) {
                assert_abs_diff_eq!(a, b, epsilon = 1e-5);
            }
        }
    }

    /// The refusal of non-finite output, now checked on the device before the copy: a NaN or
    /// an infinity from one window (any activation, with or without flips and padding) is
    /// the same error as before, and a non-finite value in the padding only (cropped away)
    /// is still accepted.
    #[test]
    fn non_finite_output_of_one_window_is_refused() {
        let marker = 1000.0;
        for (shape, at) in [
            ((20, 20, 20), [17, 3, 11]),
            ((20, 20, 20), [19, 19, 19]),
            ((13, 9, 7), [0, 0, 0]),
        ] {
            let mut img =
                Array3::from_shape_fn(shape, |(i, j, k)| ((i + 2 * j + 3 * k) % 7) as f32);
            img[at] = marker;
            for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                let m = move |x: &Tensor| -> Result<Tensor> {
                    Ok(x.masked_fill(&x.eq(marker as f64), bad))
                };
                for (activation, tta) in [
                    (Activation::None, false),
                    (Activation::None, true),
                    (Activation::Sigmoid, false),
                ] {
                    let cfg = InferenceConfig {
                        patch: [8, 8, 8],
                        batch_size: 3,
                        flip_tta: tta,
                        activation,
                        ..Default::default()
                    };
                    // A sigmoid maps an infinity to 0 or 1: only NaN stays non-finite.
                    let expect_err = activation == Activation::None || bad.is_nan();
                    match sliding_window(&m, &img, &cfg, Device::Cpu) {
                        Err(TrainError::Network(msg)) if expect_err => {
                            assert_eq!(msg, "sliding window: the model produced non-finite values")
                        }
                        Ok(out) if !expect_err => {
                            assert!(out.iter().all(|v| v.is_finite()))
                        }
                        other => {
                            panic!("{shape:?} at {at:?}, {bad} {activation:?} tta {tta}: {other:?}")
                        }
                    }
                }
            }
        }
        // NaN only where the window covers the padding (planes i >= 5 of a 5-plane image,
        // one window of 8 planes starting at 0): cropped away, so accepted, as before.
        let img = Array3::from_shape_fn((5, 9, 7), |(i, j, k)| (i * j + k) as f32);
        let pad_nan = |x: &Tensor| -> Result<Tensor> {
            let y = x.copy();
            let _ = y.narrow(2, 5, 3).fill_(f64::NAN);
            Ok(y)
        };
        let cfg = InferenceConfig {
            patch: [8, 4, 4],
            activation: Activation::None,
            ..Default::default()
        };
        let out = sliding_window(&pad_nan, &img, &cfg, Device::Cpu).unwrap();
        for (a, b) in out.iter().zip(img.iter()) {
            assert_abs_diff_eq!(a, b, epsilon = 1e-5);
        }
    }

    /// An image that is not in standard layout (copied once into it) predicts exactly like
    /// its standard-layout copy, and the image, wrapped rather than copied on the CPU, is
    /// left as it was.
    #[test]
    fn any_memory_layout_predicts_alike_and_the_image_is_untouched() {
        let m = |x: &Tensor| -> Result<Tensor> {
            Ok(Tensor::cat(&[x.zeros_like(), x.shallow_clone()], 1))
        };
        let base = Array3::from_shape_fn((7, 9, 12), |(i, j, k)| {
            ((i * 31 + j * 7 + k * 3) % 17) as f32 * 0.25 - 2.0
        });
        let fortran = base.clone().reversed_axes(); // [12, 9, 7], column-major
        assert!(fortran.as_slice().is_none());
        let standard = fortran.as_standard_layout().to_owned();
        for patch in [[4, 4, 4], [16, 8, 8]] {
            let cfg = InferenceConfig {
                patch,
                batch_size: 2,
                ..Default::default()
            };
            let a = sliding_window(&m, &fortran, &cfg, Device::Cpu).unwrap();
            let b = sliding_window(&m, &standard, &cfg, Device::Cpu).unwrap();
            assert_eq!(a, b);
            assert_eq!(fortran, standard);
            assert_eq!(standard, base.clone().reversed_axes());
        }
    }

    #[test]
    fn prediction_keeps_the_largest_components_per_class() {
        use crate::postprocess::ComponentFilter;
        let g = negvol_volume::Geometry::from_spacing([10, 10, 10], [1.0; 3]).unwrap();
        let mut lab = Array3::<u8>::zeros((10, 10, 10));
        lab.slice_mut(ndarray::s![0..3, 0..3, 0..3]).fill(1); // 27 voxels of class 1
        lab[[8, 8, 8]] = 1; // a stray class-1 voxel
        lab.slice_mut(ndarray::s![5..7, 0..2, 0..2]).fill(2); // 8 voxels of class 2
        let probs = (0..3)
            .map(|_| Volume::new(Array3::<f32>::zeros((10, 10, 10)), g.clone()).unwrap())
            .collect();
        let mut p = Prediction {
            probabilities: probs,
            labels: Volume::new(lab, g).unwrap(),
        };
        let f = ComponentFilter {
            max_components: 1,
            min_fraction: 0.0,
        };
        let out = p.keep_largest_components(&f).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].components, out[0].removed_voxels), (2, 1));
        assert_eq!(out[1].removed_voxels, 0);
        assert_eq!(p.labels.data()[[8, 8, 8]], 0);
        assert_eq!(p.labels.data().iter().filter(|v| **v == 1).count(), 27);
        assert_eq!(p.labels.data().iter().filter(|v| **v == 2).count(), 8);
    }

    #[test]
    fn position_dependent_model_is_blended_and_argmax_follows() {
        // A two-class model whose logits are (0, x): class 1 wherever x > 0.
        let img = Array3::from_shape_fn((10, 10, 10), |(i, _, _)| i as f32 - 4.5);
        let m = |x: &Tensor| -> Result<Tensor> {
            Ok(Tensor::cat(&[x.zeros_like(), x.shallow_clone()], 1))
        };
        let cfg = InferenceConfig {
            patch: [4, 6, 8],
            batch_size: 2,
            ..Default::default()
        };
        let out = sliding_window(&m, &img, &cfg, Device::Cpu).unwrap();
        let g = negvol_volume::Geometry::from_spacing([10, 10, 10], [1.0; 3]).unwrap();
        let p = to_prediction(&out, &g).unwrap();
        for ((i, _, _), l) in p.labels.data().indexed_iter() {
            assert_eq!(*l, u8::from(i >= 5));
        }
        let (bg, fg) = (p.mask(0), p.mask(1));
        assert_eq!(fg.geometry(), &g);
        for ((i, _, _), m) in fg.data().indexed_iter() {
            assert_eq!(*m, i >= 5);
        }
        assert_eq!(bg.data().iter().filter(|v| **v).count(), 500);
        assert!(!p.mask(2).data().iter().any(|v| *v));
        let s: f32 = p.probabilities[0].data()[[3, 3, 3]] + p.probabilities[1].data()[[3, 3, 3]];
        assert_abs_diff_eq!(s, 1.0, epsilon = 1e-5);
        // Wrong output shape is an error, not a panic.
        let bad = |x: &Tensor| -> Result<Tensor> { Ok(x.narrow(2, 0, 1)) };
        assert!(sliding_window(&bad, &img, &cfg, Device::Cpu).is_err());
    }
}
