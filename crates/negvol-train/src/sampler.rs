//! Patch sampling with foreground oversampling, and a multi-threaded loader that produces
//! augmented batches ahead of the training loop.
//!
//! Sample `s` of epoch `e` is a pure function of `(seed, e, s)` and the data: its random
//! generator is ChaCha8 seeded with `seed` on stream `(e << 32) | s`. The loader's workers
//! produce samples in any order and on any number of threads, yet the batches come out in
//! the same order with the same content, so a run is reproducible and resumable at an epoch
//! boundary.
//!
//! Foreground oversampling: with probability `foreground_fraction` a sample is centred on a
//! random voxel of a random class present in the case (nnU-Net's idea, drawn per sample so
//! that it also acts with batch size 1); otherwise the centre is uniform over the volume.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use ndarray::Array3;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::augment::{augment_intensity, sample_patch, AugmentConfig, SpatialTransform};
use crate::{Result, TrainError};

/// At most this many foreground voxels per class are kept as candidate patch centres.
pub const MAX_FOREGROUND_CANDIDATES: usize = 100_000;

/// Patch sampling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerConfig {
    /// Patch shape `[pi, pj, pk]` (voxels).
    pub patch: [usize; 3],
    /// Patches per batch.
    pub batch_size: usize,
    /// Probability that a sample is centred on foreground.
    pub foreground_fraction: f64,
    /// Batches per epoch.
    pub batches_per_epoch: usize,
    /// Worker threads producing batches (0: produce on the calling thread).
    pub workers: usize,
    /// Batches each worker may hold ready ahead of the consumer.
    pub prefetch: usize,
}

impl Default for SamplerConfig {
    /// The seed paper's patch 112x144x64, batch 1, 80 patches per epoch; nnU-Net's 1/3
    /// foreground oversampling; 2 workers.
    fn default() -> Self {
        Self {
            patch: [112, 144, 64],
            batch_size: 1,
            foreground_fraction: 0.33,
            batches_per_epoch: 80,
            workers: 2,
            prefetch: 2,
        }
    }
}

impl SamplerConfig {
    /// Check sizes and probabilities.
    pub fn validate(&self) -> Result<()> {
        if self.patch.contains(&0) || self.batch_size == 0 || self.batches_per_epoch == 0 {
            return Err(TrainError::Config(format!(
                "patch {:?}, batch size {} and batches per epoch {} must be > 0",
                self.patch, self.batch_size, self.batches_per_epoch
            )));
        }
        if !(0.0..=1.0).contains(&self.foreground_fraction) {
            return Err(TrainError::Config(format!(
                "foreground fraction {} not in [0, 1]",
                self.foreground_fraction
            )));
        }
        Ok(())
    }
}

/// A case ready for sampling: normalised image, label map and foreground candidates.
#[derive(Debug, Clone)]
pub struct PreparedCase {
    /// Case id.
    pub id: String,
    /// Normalised image.
    pub image: Array3<f32>,
    /// Label map.
    pub label: Array3<u8>,
    /// Voxel spacing (mm), for physical-space rotations.
    pub spacing: [f64; 3],
    /// Value read outside the image (its minimum).
    pub fill: f32,
    /// Candidate centres per present class (evenly strided subset of its voxels).
    pub foreground: Vec<Vec<[u32; 3]>>,
}

impl PreparedCase {
    /// Prepare a normalised image and its label map.
    pub fn new(
        id: impl Into<String>,
        image: Array3<f32>,
        label: Array3<u8>,
        spacing: [f64; 3],
    ) -> Result<Self> {
        let id = id.into();
        if image.shape() != label.shape() {
            return Err(TrainError::case(
                &id,
                format!(
                    "image shape {:?} != label shape {:?}",
                    image.shape(),
                    label.shape()
                ),
            ));
        }
        let fill = image.iter().copied().fold(f32::INFINITY, f32::min);
        if !fill.is_finite() {
            return Err(TrainError::case(&id, "image has no finite voxel"));
        }
        let classes = label.iter().copied().max().unwrap_or(0) as usize;
        let mut counts = vec![0usize; classes + 1];
        for l in label.iter() {
            counts[*l as usize] += 1;
        }
        let mut foreground = Vec::new();
        for (c, &n) in counts.iter().enumerate().skip(1) {
            // Unannotated voxels are no structure to centre patches on.
            if n == 0 || c == crate::IGNORE_LABEL as usize {
                continue;
            }
            let stride = n.div_ceil(MAX_FOREGROUND_CANDIDATES).max(1);
            let v: Vec<[u32; 3]> = label
                .indexed_iter()
                .filter(|(_, l)| **l as usize == c)
                .step_by(stride)
                .map(|((i, j, k), _)| [i as u32, j as u32, k as u32])
                .collect();
            foreground.push(v);
        }
        Ok(Self {
            id,
            image,
            label,
            spacing,
            fill,
            foreground,
        })
    }
}

/// A batch in the layout a network takes: image `[N, 1, pi, pj, pk]` and target
/// `[N, pi, pj, pk]`, both flat in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Image values, `N * pi * pj * pk`.
    pub image: Vec<f32>,
    /// Class index per voxel, `N * pi * pj * pk`.
    pub target: Vec<i64>,
    /// `[N, pi, pj, pk]`.
    pub shape: [usize; 4],
    /// The case each sample was drawn from.
    pub case_ids: Vec<String>,
}

/// The generator of sample `sample` of epoch `epoch`.
pub fn sample_rng(seed: u64, epoch: usize, sample: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((epoch as u64) << 32) | (sample as u64 & 0xffff_ffff));
    rng
}

/// The centre of a `patch`-shaped window holding voxel `v` at its middle (the lower of the two
/// middle voxels along an even axis) whose untransformed voxels fall exactly on voxel centres.
///
/// [`sample_patch`] reads patch voxel `p` at `center + p - (patch - 1) / 2`: with an even patch
/// edge an integer centre puts every read half-way between two voxels, where the image is
/// interpolated (a two-voxel average, i.e. blurred) but the label is rounded (shifted half a
/// voxel). Training on such patches teaches a network a half-voxel shift of every boundary and
/// images sharper than it ever sees at inference. With this centre an identity or flip
/// transform is an exact crop; rotations, scaling and elastic deformation read off-grid
/// positions of every fraction, so rounding the label there has no preferred direction.
pub fn patch_center(v: [usize; 3], patch: [usize; 3]) -> [f64; 3] {
    std::array::from_fn(|a| v[a] as f64 + if patch[a] % 2 == 0 { 0.5 } else { 0.0 })
}

/// Draw one augmented patch: pick a case, a centre (foreground-biased, see [`patch_center`])
/// and a transform.
pub fn draw_sample(
    cases: &[PreparedCase],
    cfg: &SamplerConfig,
    aug: &AugmentConfig,
    rng: &mut impl Rng,
) -> (usize, Array3<f32>, Array3<u8>) {
    let ci = rng.gen_range(0..cases.len());
    let c = &cases[ci];
    let sh = c.image.shape();
    let voxel = if !c.foreground.is_empty()
        && cfg.foreground_fraction > 0.0
        && rng.gen_bool(cfg.foreground_fraction)
    {
        let cls = &c.foreground[rng.gen_range(0..c.foreground.len())];
        let v = cls[rng.gen_range(0..cls.len())];
        [v[0] as usize, v[1] as usize, v[2] as usize]
    } else {
        [
            rng.gen_range(0..sh[0]),
            rng.gen_range(0..sh[1]),
            rng.gen_range(0..sh[2]),
        ]
    };
    let center = patch_center(voxel, cfg.patch);
    let t = SpatialTransform::random(aug, cfg.patch, c.spacing, rng);
    let (mut img, lab) = sample_patch(
        &c.image.view(),
        &c.label.view(),
        center,
        cfg.patch,
        &t,
        c.fill,
    );
    augment_intensity(aug, &mut img, rng);
    (ci, img, lab)
}

/// Batch `b` of epoch `epoch`, deterministically.
pub fn make_batch(
    cases: &[PreparedCase],
    cfg: &SamplerConfig,
    aug: &AugmentConfig,
    seed: u64,
    epoch: usize,
    b: usize,
) -> Batch {
    let n: usize = cfg.patch.iter().product();
    let mut image = Vec::with_capacity(n * cfg.batch_size);
    let mut target = Vec::with_capacity(n * cfg.batch_size);
    let mut case_ids = Vec::with_capacity(cfg.batch_size);
    for s in 0..cfg.batch_size {
        let mut rng = sample_rng(seed, epoch, b * cfg.batch_size + s);
        let (ci, img, lab) = draw_sample(cases, cfg, aug, &mut rng);
        image.extend(img.iter());
        target.extend(lab.iter().map(|l| *l as i64));
        case_ids.push(cases[ci].id.clone());
    }
    Batch {
        image,
        target,
        shape: [cfg.batch_size, cfg.patch[0], cfg.patch[1], cfg.patch[2]],
        case_ids,
    }
}

/// Everything needed to make batches on the calling thread.
type InlineSource = (
    Arc<Vec<PreparedCase>>,
    SamplerConfig,
    AugmentConfig,
    u64,
    usize,
);

/// An epoch's batches, produced ahead by worker threads (bounded, in order).
///
/// Worker `w` makes batches `w, w + W, w + 2W, ...` and hands them over through its own
/// channel of capacity `prefetch`; the iterator reads the channels round-robin, so the order
/// is fixed and memory is bounded by `W * prefetch` batches. Dropping the loader stops the
/// workers.
pub struct Loader {
    receivers: Vec<Receiver<Batch>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    total: usize,
    inline: Option<InlineSource>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("workers", &self.receivers.len())
            .field("next", &self.next)
            .field("total", &self.total)
            .finish()
    }
}

impl Loader {
    /// Start producing the batches of `epoch`.
    pub fn new(
        cases: Arc<Vec<PreparedCase>>,
        cfg: &SamplerConfig,
        aug: &AugmentConfig,
        seed: u64,
        epoch: usize,
    ) -> Result<Self> {
        cfg.validate()?;
        aug.validate()?;
        if cases.is_empty() {
            return Err(TrainError::Config("no training case to sample from".into()));
        }
        let total = cfg.batches_per_epoch;
        if cfg.workers == 0 {
            return Ok(Self {
                receivers: Vec::new(),
                handles: Vec::new(),
                next: 0,
                total,
                inline: Some((cases, cfg.clone(), aug.clone(), seed, epoch)),
            });
        }
        let workers = cfg.workers.min(total);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(cfg.prefetch.max(1));
            let (cases, cfg, aug) = (cases.clone(), cfg.clone(), aug.clone());
            let h = std::thread::Builder::new()
                .name(format!("negvol-loader-{w}"))
                .spawn(move || {
                    for b in (w..total).step_by(workers) {
                        let batch = make_batch(&cases, &cfg, &aug, seed, epoch, b);
                        if tx.send(batch).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| TrainError::Loader(format!("cannot start worker {w}: {e}")))?;
            receivers.push(rx);
            handles.push(h);
        }
        Ok(Self {
            receivers,
            handles,
            next: 0,
            total,
            inline: None,
        })
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        let b = self.next;
        self.next += 1;
        if let Some((cases, cfg, aug, seed, epoch)) = &self.inline {
            return Some(Ok(make_batch(cases, cfg, aug, *seed, *epoch, b)));
        }
        let w = b % self.receivers.len();
        Some(self.receivers[w].recv().map_err(|_| {
            TrainError::Loader(format!(
                "worker {w} stopped before batch {b} (it panicked?)"
            ))
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.total - self.next;
        (n, Some(n))
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::Interpolation;

    fn case(id: &str, n: usize) -> PreparedCase {
        let lab = Array3::from_shape_fn((n, n, n), |(i, j, k)| u8::from(i < 3 && j < 3 && k < 3));
        let img = lab.mapv(|l| l as f32 * 10.0);
        PreparedCase::new(id, img, lab, [1.0; 3]).unwrap()
    }

    #[test]
    fn unannotated_voxels_are_no_patch_centres() {
        let mut lab =
            Array3::from_shape_fn((10, 10, 10), |(i, j, k)| u8::from(i < 2 && j < 2 && k < 2));
        lab.slice_mut(ndarray::s![5.., .., ..])
            .fill(crate::IGNORE_LABEL);
        let img = lab.mapv(f32::from);
        let c = PreparedCase::new("s", img, lab.clone(), [1.0; 3]).unwrap();
        assert_eq!(c.foreground.len(), 1);
        assert_eq!(c.foreground[0].len(), 8);
        assert!(c.foreground[0]
            .iter()
            .all(|v| lab[[v[0] as usize, v[1] as usize, v[2] as usize]] == 1));
    }

    #[test]
    fn foreground_oversampling_hits_small_objects() {
        let cases = vec![case("a", 40)];
        let mut cfg = SamplerConfig {
            patch: [4, 4, 4],
            batch_size: 1,
            foreground_fraction: 1.0,
            ..Default::default()
        };
        let aug = AugmentConfig::none();
        let hits = |cfg: &SamplerConfig| {
            (0..50)
                .filter(|s| {
                    let (_, _, lab) = draw_sample(&cases, cfg, &aug, &mut sample_rng(1, 0, *s));
                    lab.iter().any(|l| *l == 1)
                })
                .count()
        };
        assert_eq!(hits(&cfg), 50);
        cfg.foreground_fraction = 0.0;
        assert!(
            hits(&cfg) < 10,
            "uniform sampling should rarely hit a 27-voxel object"
        );
    }

    /// Without spatial augmentation (or with flips only) a sample is an exact crop of the case,
    /// image and label at the same offset: no interpolated (blurred) image voxel, no label
    /// rounded half a voxel away from its image. Caught a sampler that centred even patches on
    /// voxel indices (every read half-way between two voxels).
    #[test]
    fn unaugmented_and_flipped_samples_are_exact_crops() {
        let n = [13, 11, 9];
        // Distinct values everywhere, so a crop's offset is unique.
        let img = Array3::from_shape_fn(n, |(i, j, k)| (i * 1000 + j * 30 + k) as f32);
        let lab = Array3::from_shape_fn(n, |(i, j, k)| u8::from((i + 2 * j + 3 * k) % 5 == 0));
        let cases = vec![PreparedCase::new("a", img.clone(), lab.clone(), [1.0; 3]).unwrap()];
        for (patch, interp) in [[4, 4, 4], [5, 6, 3], [6, 5, 2]]
            .into_iter()
            .flat_map(|p| [(p, Interpolation::Linear), (p, Interpolation::Cubic)])
        {
            for flip in [false, true] {
                let aug = AugmentConfig {
                    flip_prob: if flip { 1.0 } else { 0.0 },
                    flip_axes: vec![0, 1, 2],
                    image_interpolation: interp,
                    ..AugmentConfig::none()
                };
                let cfg = SamplerConfig {
                    patch,
                    foreground_fraction: 0.5,
                    ..Default::default()
                };
                for s in 0..40 {
                    let (_, pi, pl) = draw_sample(&cases, &cfg, &aug, &mut sample_rng(3, 0, s));
                    for ((i, j, k), v) in pi.indexed_iter() {
                        if *v == 0.0 && pl[[i, j, k]] == 0 {
                            continue; // outside the volume (fill); 0 is also voxel (0, 0, 0)
                        }
                        let (a, b, c) = (
                            *v as usize / 1000,
                            *v as usize % 1000 / 30,
                            *v as usize % 1000 % 30,
                        );
                        assert_eq!(
                            img.get([a, b, c]),
                            Some(v),
                            "patch {patch:?} {interp:?} flip {flip} sample {s}: image voxel ({i}, {j}, {k}) = {v} is not a voxel of the case (interpolated)"
                        );
                        assert_eq!(
                            pl[[i, j, k]],
                            lab[[a, b, c]],
                            "patch {patch:?} flip {flip} sample {s}: label at ({i}, {j}, {k}) is not the label of image voxel ({a}, {b}, {c})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn patch_center_puts_reads_on_voxel_centres() {
        assert_eq!(patch_center([7, 7, 7], [32, 5, 2]), [7.5, 7.0, 7.5]);
    }

    #[test]
    fn loader_is_deterministic_and_ordered_across_worker_counts() {
        let cases = Arc::new(vec![case("a", 12), case("b", 10)]);
        let aug = AugmentConfig::default();
        let collect = |workers: usize| -> Vec<Batch> {
            let cfg = SamplerConfig {
                patch: [6, 5, 4],
                batch_size: 2,
                batches_per_epoch: 7,
                workers,
                prefetch: 1,
                foreground_fraction: 0.5,
            };
            Loader::new(cases.clone(), &cfg, &aug, 42, 3)
                .unwrap()
                .map(|b| b.unwrap())
                .collect()
        };
        let a = collect(0);
        assert_eq!(a.len(), 7);
        assert_eq!(a[0].shape, [2, 6, 5, 4]);
        assert_eq!(a[0].image.len(), 240);
        assert_eq!(a, collect(1));
        assert_eq!(a, collect(3));
        assert_ne!(a[0], a[1]);
        // Dropping a loader early stops its workers.
        let cfg = SamplerConfig {
            patch: [6, 5, 4],
            batches_per_epoch: 100,
            workers: 2,
            ..Default::default()
        };
        let mut l = Loader::new(cases, &cfg, &aug, 1, 0).unwrap();
        assert!(l.next().is_some());
        drop(l);
    }
}
