//! The joint locator: where is each temporomandibular joint in a whole CT, so that the
//! full-resolution MC/TB networks only run inside its volume of interest (VOI).
//!
//! The seed paper locates each joint's VOI with "a V-Net on a low-resolution volume plus a
//! mean-mask atlas prior" and then segments inside a 120 x 150 x 70 VOI at 0.4 mm. negvol's
//! version has four parts:
//!
//! 1. **Coarse grid** ([`coarse_geometry`], [`downsample`], [`downsample_fraction`]): the CT is
//!    box-averaged onto a grid of `coarse_spacing_mm` voxels (default 3 mm: a 686^3 CT at 0.4 mm
//!    becomes 92^3) laid over the same field of view, with the axes of the locator's *frame*
//!    (RAS, see [Orientation](#orientation)). Every fine voxel falls in exactly one coarse voxel,
//!    so a mask becomes its *fraction* per coarse voxel and nothing aliases. Non-finite CT
//!    voxels are left out of the averages.
//! 2. **Atlas** ([`Atlas`]): the mean of the training joint masks (the union of
//!    [`LocatorTrainConfig::joint_labels`], default the condyle `mc`) on a fixed grid
//!    (default 32^3) spanning each case's field of view in *normalised world-aligned*
//!    coordinates: atlas axis `w` runs along world axis `w` (RAS+: x right, y anterior,
//!    z superior) from the low to the high side of the world bounding box of the case's field of
//!    view. Cases of different size, spacing and storage orientation (RAS, LPS, permuted axes)
//!    therefore average. [`Atlas::prior_for`] resamples it onto the coarse grid of a new CT.
//!    The atlas also stores a *centre offset*: the mean world vector from a joint component's
//!    centroid to the centroid of [`LocatorTrainConfig::centre_label`] (e.g. the negative
//!    volume `nv`, which lies above the condyle's centroid) in the same joint; without a centre
//!    label it is zero and the VOI is centred on the located component.
//! 3. **Heatmap network**: a small negvol network (default a 3-level `unet3d` with 8-32
//!    features) trained by the crate's own [`Trainer`](crate::Trainer) on coarse copies of the
//!    training cases in the locator's frame ([`coarse_cases`]; label 1 = coarse voxels at least
//!    half covered by the joint mask), predicting the joint probability `p` on the coarse grid.
//! 4. **Locate** ([`locate_joints`], [`joints_from_posterior`]): the posterior on the coarse
//!    grid is
//!    - with a network and an atlas: `p * (1 - w + w * prior / max(atlas))`, `w` =
//!      [`LocateConfig::prior_weight`] in `[0, 1]` (default 0.5). The prior re-weights the
//!      network but never vetoes it: where the atlas is zero the posterior is still `(1 - w) p`,
//!      so a joint where no training joint was (a shifted or differently framed scan) is found
//!      as long as `(1 - w) p` passes the threshold (default `w` 0.5, threshold 0.25: `p >= 0.5`).
//!      `w = 0` ignores the atlas, `w = 1` multiplies by it.
//!    - network only (no atlas): `p`.
//!    - **prior only** (no network, e.g. a locator trained with `train_network: false`):
//!      `prior / max(atlas)`. This needs no training beyond the mean mask and is only as good as
//!      the framing of the new scan is like that of the training scans.
//!
//!    Voxels with posterior `>= threshold` are grouped into 26-connected components; each has a
//!    mass (sum of posterior x coarse voxel volume, mm^3), a peak and a posterior-weighted
//!    centroid over its top [`LocateConfig::head_depth_mm`] (default 15 mm along superior, so
//!    that a condyle mask running down the ramus to the edge of the scan does not drag it
//!    down; the centre offset is fitted the same way). Components lighter than
//!    `min_relative_mass` x the heaviest are dropped, then the heaviest `max_joints`
//!    (default 2) are kept, or with `per_side` the heaviest on each
//!    side of the field of view's mid-sagittal plane (world x of the grid's centre; patient left
//!    is world `-x`). The centroid plus the atlas's centre offset is the joint centre (world mm);
//!    the VOI is a box of the CT's own grid, `voi_mm` along the world axes x, y, z (default the
//!    paper's 120 x 150 x 70 voxels at 0.4 mm = 48 x 60 x 28 mm; index axis `a` of the CT gets
//!    the extent of the world axis it runs along), centred on it, shifted to lie inside the
//!    volume (its size is kept, except along an axis shorter than the box, which the VOI then
//!    spans).
//!
//! Nothing above the threshold gives an **empty list**, not an error: a scan may simply not
//! show a joint; callers that need one (the `pipeline` example) turn that into an error.
//! Invalid settings, an all-NaN image, an empty atlas or a checkpoint that is not a one-target
//! network are errors ([`TrainError::Locate`], [`TrainError::Config`]).
//!
//! A [`Locator`] bundles the atlas, the settings and the network checkpoint; its JSON
//! ([`LocatorSpec`]) is written atomically and names the checkpoint relative to itself
//! ([`train_locator`] writes `OUT/locator.json` and the checkpoint under `OUT/net/`).
//!
//! # Orientation
//!
//! A CT may be stored in any voxel order: RAS (many NIfTI files), LPS (DICOM axial series),
//! PSL or ASL (sagittal stacks), ... The atlas, the component centroids, the sides and the
//! centre offset are world quantities and never depended on it, but a network sees voxel
//! axes: trained on RAS-stored scans, it would see a PSL-stored one with its axes permuted
//! and flipped. So a locator works in one *frame*, [`LocatorSpec::orientation`] (`"RAS"`
//! for every locator trained since it exists, [`LOCATOR_ORIENTATION`]): the coarse grid is
//! laid over the field of view with the frame's axes ([`coarse_geometry`]: the fine grid
//! reoriented exactly, i.e. its axes permuted and flipped with no interpolation, then
//! coarsened; the box average reads the CT in its stored order and makes no copy), the
//! heatmap network is trained and run on coarse grids in that frame, and the posterior, its
//! components and centroids live there too. Exact reorientation keeps every voxel's world
//! position, so two storage orders of the same scan give the same coarse grid, the same
//! posterior and the same joint centres (up to float rounding). The VOI is then cut from the
//! CT in its own stored order, with [`LocateConfig::voi_mm`] along world axes.
//!
//! Locator files written before (no `orientation` key) read `None`, the stored voxel order
//! their network was trained in, and locate as before; they were only used on scans whose
//! index axis `a` runs along world axis `a` (RAS-, LAS-, LPS-stored), where the world-axis
//! `voi_mm` gives the very same VOI as the per-index-axis `voi_mm` of that time.
//!
//! Prior-only location on an analytic volume (a bright ball at a known place; the atlas is
//! fitted from the ball's own mask, so the located centre is the ball's centre):
//!
//! ```
//! use ndarray::Array3;
//! use negvol_train::locate::{locate_joints, Atlas, LocateConfig};
//! use negvol_volume::{Geometry, Volume};
//!
//! let g = Geometry::from_spacing([40, 30, 20], [1.0, 1.0, 1.0])?;
//! let ball = |i: usize, j: usize, k: usize| {
//!     let d = [i as f64 - 12.0, j as f64 - 15.0, k as f64 - 10.0];
//!     d[0] * d[0] + d[1] * d[1] + d[2] * d[2] <= 16.0
//! };
//! let m = Array3::from_shape_fn((40, 30, 20), |(i, j, k)| f32::from(u8::from(ball(i, j, k))));
//! let mask = Volume::new(m, g.clone())?;
//! let atlas = Atlas::fit(&[(&g, &mask)], [20, 15, 10], 0.0)?;
//! let ct = mask.map(|m| -1000.0 + 2000.0 * m);
//! let cfg = LocateConfig { voi_mm: [20.0, 20.0, 10.0], ..LocateConfig::default() };
//! let joints = locate_joints(&ct, Some(&atlas), None, 2.0, Some("RAS"), &cfg)?;
//! assert_eq!(joints.len(), 1);
//! assert!((joints[0].center_mm[0] - 12.0).abs() < 1.0);
//! assert_eq!(joints[0].voi_size, [20, 20, 10]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

use ndarray::{Array3, ArrayView3, ArrayViewMut3, Axis};
use negvol_metrics::components::label_components;
use negvol_metrics::Connectivity;
use negvol_volume::{AxisTransform, Geometry, Volume};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::augment::{gaussian_filter, AugmentConfig};
use crate::dataset::Case;
use crate::infer::InferenceConfig;
use crate::interp::sample_linear;
use crate::optim::{LrSchedule, OptimizerConfig};
use crate::preprocess::Normalization;
use crate::run::{build_trainer, LoadedModel, RunConfig};
use crate::sampler::SamplerConfig;
use crate::trainer::{Observer, TrainSummary};
use crate::{Result, TrainConfig, TrainError, ValidationConfig};

/// Version of the locator JSON written by [`LocatorSpec::save`].
pub const LOCATOR_FORMAT_VERSION: u32 = 1;

/// The frame new locators work in ([`LocatorTrainConfig::orientation`]'s default).
pub const LOCATOR_ORIENTATION: &str = "RAS";

/// The name of the heatmap network's one target.
pub const JOINT_TARGET: &str = "joint";

/// A coarse voxel is labelled joint for training when at least this fraction of it is covered
/// by the joint mask.
pub const COARSE_LABEL_FRACTION: f32 = 0.5;

fn locate_err(m: impl Into<String>) -> TrainError {
    TrainError::Locate(m.into())
}

/// An orientation code (if any) must parse.
fn check_orientation(orientation: Option<&str>) -> Result<()> {
    match orientation {
        Some(code) => negvol_volume::parse_orientation_code(code)
            .map(|_| ())
            .map_err(|e| TrainError::Config(format!("locator orientation: {e}"))),
        None => Ok(()),
    }
}

fn vol_err(context: impl Into<String>) -> impl FnOnce(negvol_volume::VolumeError) -> TrainError {
    let context = context.into();
    move |source| TrainError::Volume { context, source }
}

// ---------------------------------------------------------------------------------------------
// Coarse grid
// ---------------------------------------------------------------------------------------------

/// Fine voxels per coarse voxel along each axis (at least 1: an axis already coarser than
/// `spacing_mm` keeps its spacing).
fn coarse_factors(g: &Geometry, spacing_mm: f64) -> [f64; 3] {
    let s = g.spacing();
    [0, 1, 2].map(|a| (spacing_mm / s[a]).max(1.0))
}

/// `g` in the frame `orientation` (an orientation code such as `"RAS"`; `None`: the stored
/// voxel order itself) and the axis transform from the stored order to it.
fn framed(g: &Geometry, orientation: Option<&str>) -> Result<(AxisTransform, Geometry)> {
    let Some(code) = orientation else {
        return Ok((AxisTransform::IDENTITY, g.clone()));
    };
    let context = || format!("locator frame {code:?} of a grid of shape {:?}", g.shape());
    let t = AxisTransform::to_code(g, code).map_err(vol_err(context()))?;
    let fg = t.apply_geometry(g).map_err(vol_err(context()))?;
    Ok((t, fg))
}

/// The coarse grid of `spacing_mm` (at least the fine spacing per axis) over the field of view
/// of `g`, with the voxel axes of the frame `orientation` (see the module documentation): `g`
/// is first reoriented exactly to `orientation` (`None`: kept in its stored order), and on that
/// grid, fine voxel `i` falls in coarse voxel `c = floor((i + 0.5) / f)`, `f` = coarse / fine
/// spacing, whose centre sits at fine index `(c + 0.5) f - 0.5`. The shape is `ceil(n / f)`, so
/// the coarse grid covers the fine one. Two storage orders of the same scan have the same
/// coarse grid in a given frame (with `None`, each has its own).
pub fn coarse_geometry(
    g: &Geometry,
    spacing_mm: f64,
    orientation: Option<&str>,
) -> Result<Geometry> {
    if !(spacing_mm.is_finite() && spacing_mm > 0.0) {
        return Err(TrainError::Config(format!(
            "coarse spacing {spacing_mm} mm must be finite and > 0"
        )));
    }
    let (_, g) = framed(g, orientation)?;
    let f = coarse_factors(&g, spacing_mm);
    let n = g.shape();
    let shape = [0, 1, 2].map(|a| ((n[a] as f64 / f[a]).ceil() as usize).max(1));
    let origin = g.voxel_to_world([0, 1, 2].map(|a| 0.5 * f[a] - 0.5));
    let old = g.affine();
    let mut aff = [[0.0; 4]; 4];
    for r in 0..3 {
        for c in 0..3 {
            aff[r][c] = old[r][c] * f[c];
        }
        aff[r][3] = origin[r];
    }
    aff[3][3] = 1.0;
    Geometry::new(shape, aff).map_err(vol_err(format!(
        "coarse grid of {spacing_mm} mm over {:?}",
        g.shape()
    )))
}

/// Per axis, the coarse index of every fine index.
fn axis_maps(fine: [usize; 3], coarse: [usize; 3], f: [f64; 3]) -> [Vec<usize>; 3] {
    [0, 1, 2].map(|a| {
        (0..fine[a])
            .map(|i| (((i as f64 + 0.5) / f[a]).floor() as usize).min(coarse[a] - 1))
            .collect()
    })
}

/// Box average of `value(voxel)` (None = left out) of `src` (stored order, grid `fine`) onto
/// [`coarse_geometry`]`(fine, spacing_mm, orientation)`; coarse voxels with nothing to average
/// get NaN. Returns the average and its grid.
///
/// The source is read in its stored order (contiguous), each voxel added to the coarse voxel
/// its frame index falls in; rayon runs over the coarse planes across the frame axis that the
/// stored axis 0 becomes, so every plane has one writer. In the stored order (identity frame)
/// this is a plain box average over coarse planes along axis 0.
fn box_average<T: Sync>(
    src: ArrayView3<'_, T>,
    fine: &Geometry,
    spacing_mm: f64,
    orientation: Option<&str>,
    value: impl Fn(&T) -> Option<f32> + Sync,
) -> Result<(Array3<f32>, Geometry)> {
    let coarse = coarse_geometry(fine, spacing_mm, orientation)?;
    let (t, fg) = framed(fine, orientation)?;
    let cs = coarse.shape();
    let stored = fine.shape();
    let frame_maps = axis_maps(fg.shape(), cs, coarse_factors(&fg, spacing_mm));
    // Stored axis b is frame axis `axis_of[b]`, reversed if that frame axis is flipped; the
    // coarse index of stored index i along b.
    let mut axis_of = [0usize; 3];
    for (a, &b) in t.perm.iter().enumerate() {
        axis_of[b] = a;
    }
    let stored_maps: [Vec<usize>; 3] = [0, 1, 2].map(|b| {
        let a = axis_of[b];
        (0..stored[b])
            .map(|i| {
                let n = if t.flip[a] { stored[b] - 1 - i } else { i };
                frame_maps[a][n]
            })
            .collect()
    });
    // A plane holds the two frame axes other than axis_of[0], in order; the offset in it of a
    // coarse index along stored axis 1 or 2.
    let a0 = axis_of[0];
    let (p, q) = match a0 {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let stride = |a: usize| if a == p { cs[q] } else { 1 };
    let off1: Vec<usize> = stored_maps[1]
        .iter()
        .map(|c| c * stride(axis_of[1]))
        .collect();
    let off2: Vec<usize> = stored_maps[2]
        .iter()
        .map(|c| c * stride(axis_of[2]))
        .collect();
    let plane_len = cs[p] * cs[q];
    let mut out = Array3::<f32>::zeros((cs[0], cs[1], cs[2]));
    out.axis_iter_mut(Axis(a0))
        .into_par_iter()
        .enumerate()
        .for_each(|(c0, mut plane)| {
            let mut sum = vec![0.0f64; plane_len];
            let mut cnt = vec![0u32; plane_len];
            for (i, _) in stored_maps[0].iter().enumerate().filter(|(_, &m)| m == c0) {
                let sl = src.index_axis(Axis(0), i);
                for (j, row) in sl.outer_iter().enumerate() {
                    let base = off1[j];
                    for (k, v) in row.iter().enumerate() {
                        if let Some(x) = value(v) {
                            let o = base + off2[k];
                            sum[o] += x as f64;
                            cnt[o] += 1;
                        }
                    }
                }
            }
            // The plane's logical order is (p, q), row-major: offset c_p * cs[q] + c_q.
            for ((o, s), c) in plane.iter_mut().zip(&sum).zip(&cnt) {
                *o = if *c > 0 {
                    (*s / *c as f64) as f32
                } else {
                    f32::NAN
                };
            }
        });
    Ok((out, coarse))
}

/// The image box-averaged onto [`coarse_geometry`]`(image, spacing_mm, orientation)` (no copy of
/// the image is made to reorient it). Non-finite voxels are left out of the averages (a coarse
/// voxel with none finite gets the smallest coarse value); an image with no finite voxel is an
/// error.
pub fn downsample(
    image: &Volume<f32>,
    spacing_mm: f64,
    orientation: Option<&str>,
) -> Result<Volume<f32>> {
    let (mut out, cg) = box_average(
        image.view(),
        image.geometry(),
        spacing_mm,
        orientation,
        |v| v.is_finite().then_some(*v),
    )?;
    let min = out
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::INFINITY, f32::min);
    if !min.is_finite() {
        return Err(locate_err("the image has no finite voxel"));
    }
    out.mapv_inplace(|v| if v.is_finite() { v } else { min });
    Volume::new(out, cg).map_err(vol_err("downsampled image"))
}

/// The fraction of every coarse voxel ([`coarse_geometry`]`(label, spacing_mm, orientation)`)
/// covered by the voxels of `label` whose class is in `classes`.
pub fn downsample_fraction(
    label: &Volume<u8>,
    classes: &[u8],
    spacing_mm: f64,
    orientation: Option<&str>,
) -> Result<Volume<f32>> {
    let (out, cg) = box_average(
        label.view(),
        label.geometry(),
        spacing_mm,
        orientation,
        |v| Some(f32::from(u8::from(classes.contains(v)))),
    )?;
    let out = out.mapv(|v| if v.is_finite() { v } else { 0.0 });
    Volume::new(out, cg).map_err(vol_err("downsampled mask"))
}

// ---------------------------------------------------------------------------------------------
// Normalised coordinates and the atlas
// ---------------------------------------------------------------------------------------------

/// World (RAS+ mm) bounding box `(low, high)` of a grid's field of view: the box around the
/// eight outer voxel corners (indices `-0.5` and `n - 0.5`).
pub fn field_of_view_box(g: &Geometry) -> ([f64; 3], [f64; 3]) {
    let n = g.shape();
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for corner in 0..8 {
        let p = [0, 1, 2].map(|a| {
            if corner >> a & 1 == 0 {
                -0.5
            } else {
                n[a] as f64 - 0.5
            }
        });
        let w = g.voxel_to_world(p);
        for a in 0..3 {
            lo[a] = lo[a].min(w[a]);
            hi[a] = hi[a].max(w[a]);
        }
    }
    (lo, hi)
}

/// A mean-mask atlas of the joints on a fixed grid in normalised world-aligned coordinates
/// (see the module documentation): atlas voxel `(a, b, c)` sits at normalised position
/// `((a + 0.5) / grid[0], (b + 0.5) / grid[1], (c + 0.5) / grid[2])` of the field-of-view
/// box, world x, y, z in that order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Atlas {
    /// Atlas grid size along world x, y, z.
    pub grid: [usize; 3],
    /// Mean joint fraction per atlas voxel, row-major over `grid` (z fastest), in `[0, 1]`.
    pub mean: Vec<f32>,
    /// Cases averaged.
    pub cases: usize,
    /// Gaussian smoothing (sigma, atlas voxels) applied after averaging.
    pub smoothing_voxels: f64,
    /// Mean world vector (mm) from a joint component's centroid to the centroid of the centre
    /// label in the same joint; zero when fitted without one.
    #[serde(default)]
    pub centre_offset_mm: [f64; 3],
}

impl Atlas {
    /// The mean of `masks`, each `(field of view, mask)`: the grid whose field of view is
    /// normalised (usually the full-resolution CT's) and a joint mask or fraction map on any
    /// grid covering it (usually the coarse one; sampled trilinearly, 0 outside). Each atlas
    /// voxel's normalised position is mapped into every case's field-of-view box and the mask
    /// sampled there; then `smoothing_voxels` (0 = none) of Gaussian blur.
    pub fn fit(
        masks: &[(&Geometry, &Volume<f32>)],
        grid: [usize; 3],
        smoothing_voxels: f64,
    ) -> Result<Self> {
        if grid.contains(&0) {
            return Err(TrainError::Config(format!(
                "atlas grid {grid:?} has a zero dimension"
            )));
        }
        if !(smoothing_voxels >= 0.0 && smoothing_voxels.is_finite()) {
            return Err(TrainError::Config(format!(
                "atlas smoothing {smoothing_voxels} must be finite and >= 0"
            )));
        }
        if masks.is_empty() {
            return Err(locate_err("no case to fit the atlas on"));
        }
        let mut acc = Array3::<f32>::zeros((grid[0], grid[1], grid[2]));
        for (fov, mask) in masks {
            let (lo, hi) = field_of_view_box(fov);
            let view = mask.view();
            let mg = mask.geometry();
            ndarray::Zip::indexed(&mut acc).par_for_each(|(a, b, c), o| {
                let u = [a, b, c];
                let w = [0, 1, 2]
                    .map(|x| lo[x] + (u[x] as f64 + 0.5) / grid[x] as f64 * (hi[x] - lo[x]));
                let v = sample_linear(&view, mg.world_to_voxel(w), 0.0);
                if v.is_finite() {
                    *o += v.clamp(0.0, 1.0);
                }
            });
        }
        acc.mapv_inplace(|v| v / masks.len() as f32);
        if smoothing_voxels > 0.0 {
            gaussian_filter(&mut acc, [smoothing_voxels; 3]);
        }
        Ok(Self {
            grid,
            mean: acc.iter().copied().collect(),
            cases: masks.len(),
            smoothing_voxels,
            centre_offset_mm: [0.0; 3],
        })
    }

    fn check(&self) -> Result<()> {
        let n: usize = self.grid.iter().product();
        if self.grid.contains(&0) || self.mean.len() != n {
            return Err(locate_err(format!(
                "atlas grid {:?} does not hold its {} values",
                self.grid,
                self.mean.len()
            )));
        }
        if self.mean.iter().any(|v| !v.is_finite()) {
            return Err(locate_err("the atlas holds non-finite values"));
        }
        if self.centre_offset_mm.iter().any(|v| !v.is_finite()) {
            return Err(locate_err(format!(
                "atlas centre offset {:?} is not finite",
                self.centre_offset_mm
            )));
        }
        Ok(())
    }

    /// The atlas as an array of shape `grid` (world x, y, z axes).
    pub fn to_array(&self) -> Result<Array3<f32>> {
        self.check()?;
        Array3::from_shape_vec(
            (self.grid[0], self.grid[1], self.grid[2]),
            self.mean.clone(),
        )
        .map_err(|e| locate_err(format!("atlas: {e}")))
    }

    /// The largest atlas value.
    pub fn max(&self) -> f32 {
        self.mean.iter().copied().fold(0.0, f32::max)
    }

    /// The mean mask resampled onto `grid` (usually the coarse grid of a new CT), for a CT whose
    /// field of view is that of `fov` (the full-resolution grid): each voxel centre's world
    /// position is normalised in `fov`'s field-of-view box and the atlas sampled there
    /// (trilinear, 0 outside). Values are mean fractions in `[0, 1]`, not rescaled.
    pub fn prior_for(&self, fov: &Geometry, grid: &Geometry) -> Result<Array3<f32>> {
        let atlas = self.to_array()?;
        let view = atlas.view();
        let (lo, hi) = field_of_view_box(fov);
        let s = grid.shape();
        let mut out = Array3::<f32>::zeros((s[0], s[1], s[2]));
        let g = self.grid;
        ndarray::Zip::indexed(&mut out).par_for_each(|(i, j, k), o| {
            let w = grid.voxel_to_world([i as f64, j as f64, k as f64]);
            let p = [0, 1, 2].map(|x| (w[x] - lo[x]) / (hi[x] - lo[x]) * g[x] as f64 - 0.5);
            *o = sample_linear(&view, p, 0.0);
        });
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Components
// ---------------------------------------------------------------------------------------------

/// One component of a weight map: its mass (sum of weights), peak and weighted centroid
/// (voxel index).
#[derive(Debug, Clone, Copy)]
struct Blob {
    mass: f64,
    peak: f64,
    centroid: [f64; 3],
    first: usize,
}

/// The 26-connected components of `weights >= threshold` on `grid`
/// ([`negvol_metrics::components::label_components`]): mass and peak over the whole
/// component; the centroid over its voxels within `head_depth_mm` (world, along superior =
/// RAS+ `+z`) of the component's most superior voxel centre, or over all of it with `None`.
fn blobs(
    weights: &Array3<f32>,
    threshold: f64,
    grid: &Geometry,
    head_depth_mm: Option<f64>,
) -> Result<Vec<Blob>> {
    let mask = weights.mapv(|v| v.is_finite() && v as f64 >= threshold);
    let labelling = label_components(mask.view(), Connectivity::TwentySix)
        .map_err(|e| locate_err(format!("connected components: {e}")))?;
    let (lab, n) = (labelling.labels, labelling.sizes.len());
    let z = |i: usize, j: usize, k: usize| grid.voxel_to_world([i as f64, j as f64, k as f64])[2];
    let mut top = vec![f64::NEG_INFINITY; n];
    if head_depth_mm.is_some() {
        for ((i, j, k), &l) in lab.indexed_iter() {
            if l > 0 {
                let t = &mut top[l as usize - 1];
                *t = t.max(z(i, j, k));
            }
        }
    }
    let mut out = vec![
        Blob {
            mass: 0.0,
            peak: 0.0,
            centroid: [0.0; 3],
            first: usize::MAX,
        };
        n
    ];
    let mut head_mass = vec![0.0f64; n];
    for (flat, (((i, j, k), &l), &w)) in lab.indexed_iter().zip(weights.iter()).enumerate() {
        if l == 0 {
            continue;
        }
        let c = l as usize - 1;
        let b = &mut out[c];
        let w = w as f64;
        b.mass += w;
        b.peak = b.peak.max(w);
        b.first = b.first.min(flat);
        if head_depth_mm.is_none_or(|d| z(i, j, k) >= top[c] - d) {
            b.centroid[0] += w * i as f64;
            b.centroid[1] += w * j as f64;
            b.centroid[2] += w * k as f64;
            head_mass[c] += w;
        }
    }
    for (b, m) in out.iter_mut().zip(&head_mass) {
        if *m > 0.0 {
            b.centroid = b.centroid.map(|c| c / m);
        }
    }
    out.retain(|b| b.mass > 0.0);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Locate
// ---------------------------------------------------------------------------------------------

/// Which half of the field of view a joint is in: world x below (patient left, RAS+ `-x`) or
/// above the x of the grid's centre. For a CT of the whole head that is the patient's side; for
/// a scan of one joint it only says which half of the scan the joint's centre is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JointSide {
    /// World x below the field of view's centre (patient left).
    Left,
    /// World x at or above the field of view's centre (patient right).
    Right,
}

impl JointSide {
    /// `"left"` or `"right"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Left => "left",
            Self::Right => "right",
        }
    }
}

/// How to turn the coarse posterior into joints and VOIs (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LocateConfig {
    /// Weight `w` of the atlas prior in `p * (1 - w + w * prior / max)`, in `[0, 1]`.
    /// Default 0.5.
    pub prior_weight: f64,
    /// Posterior threshold in `(0, 1]`. Default 0.25.
    pub threshold: f64,
    /// Most joints returned (the heaviest components). Default 2.
    pub max_joints: usize,
    /// Keep at most one joint per side of the field of view (the heaviest), then at most
    /// `max_joints`. Default false.
    pub per_side: bool,
    /// Components lighter than this fraction of the heaviest one are dropped, in `[0, 1]`.
    /// Default 0.2.
    pub min_relative_mass: f64,
    /// VOI size (mm) along the world (RAS+) axes x (left-right), y (posterior-anterior) and
    /// z (inferior-superior), whatever the image's storage order: image index axis `a` gets
    /// `voi_mm[w]` for the world axis `w` it runs along
    /// ([`Geometry::axis_assignment`], the closest one on an oblique grid). Default the paper's
    /// 120 x 150 x 70 voxels at 0.4 mm: 48 x 60 x 28 mm. (Before locators worked in RAS this
    /// was per index axis i, j, k; locator files from then are read the new way, which is the
    /// same box on every image whose index axis `a` runs along world axis `a`, e.g. RAS-, LAS-
    /// or LPS-stored, the only kind they were used on.)
    pub voi_mm: [f64; 3],
    /// A component's centroid is taken over its voxels within this distance (mm, along
    /// superior) of its top, or over all of it with `None`. Default 15 mm: a condyle mask
    /// often continues down the ramus as far as the scan goes, which would drag the centroid
    /// (and the VOI) down by an amount that depends on the framing; its top 15 mm is the head.
    /// The atlas's centre offset is fitted with the same value, so change it only by retraining.
    pub head_depth_mm: Option<f64>,
}

impl Default for LocateConfig {
    fn default() -> Self {
        Self {
            prior_weight: 0.5,
            threshold: 0.25,
            max_joints: 2,
            per_side: false,
            min_relative_mass: 0.2,
            voi_mm: [48.0, 60.0, 28.0],
            head_depth_mm: Some(15.0),
        }
    }
}

impl LocateConfig {
    /// Check every field; the error names the offending one.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(format!("locate: {m}")));
        if !(0.0..=1.0).contains(&self.prior_weight) {
            return bad(format!(
                "prior_weight {} must be in [0, 1]",
                self.prior_weight
            ));
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return bad(format!("threshold {} must be in (0, 1]", self.threshold));
        }
        if self.max_joints == 0 {
            return bad("max_joints must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.min_relative_mass) {
            return bad(format!(
                "min_relative_mass {} must be in [0, 1]",
                self.min_relative_mass
            ));
        }
        if self.voi_mm.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return bad(format!("voi_mm {:?} must be finite and > 0", self.voi_mm));
        }
        if let Some(d) = self.head_depth_mm {
            if !(d.is_finite() && d > 0.0) {
                return bad(format!("head_depth_mm {d} must be finite and > 0"));
            }
        }
        Ok(())
    }
}

/// One located joint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointLocation {
    /// Which half of the field of view it is in.
    pub side: JointSide,
    /// Joint centre, world RAS+ mm (component centroid plus the atlas's centre offset).
    pub center_mm: [f64; 3],
    /// The same centre as a (fractional) voxel index of the image.
    pub center_voxel: [f64; 3],
    /// First voxel of the VOI in the image (always inside it).
    pub voi_start: [i64; 3],
    /// VOI size in voxels (`voi_start + voi_size <= shape`).
    pub voi_size: [usize; 3],
    /// Peak posterior of the component, in `[0, 1]`.
    pub score: f64,
    /// Posterior mass of the component: sum of posterior x coarse voxel volume (mm^3).
    pub mass_mm3: f64,
}

impl JointLocation {
    /// The VOI grown by `margin_mm` on every side and clipped to the image `g`, as
    /// `(start, size)` for [`crate::preprocess::crop`].
    pub fn voi_with_margin(&self, margin_mm: f64, g: &Geometry) -> Result<([i64; 3], [usize; 3])> {
        if !(margin_mm >= 0.0 && margin_mm.is_finite()) {
            return Err(TrainError::Config(format!(
                "VOI margin {margin_mm} mm must be finite and >= 0"
            )));
        }
        let sp = g.spacing();
        let n = g.shape();
        let mut start = [0i64; 3];
        let mut size = [0usize; 3];
        for a in 0..3 {
            let m = (margin_mm / sp[a]).ceil() as i64;
            let s = (self.voi_start[a] - m).clamp(0, n[a] as i64 - 1);
            let e = (self.voi_start[a] + self.voi_size[a] as i64 + m).clamp(s + 1, n[a] as i64);
            start[a] = s;
            size[a] = (e - s) as usize;
        }
        Ok((start, size))
    }
}

/// The joints in a coarse posterior map (see the module documentation): `posterior` lives on
/// `coarse` (shape must match; any grid, e.g. in the locator's frame), the VOIs on `image` (the
/// full-resolution grid, in its stored order; [`LocateConfig::voi_mm`] is along world axes),
/// and the centre of every component is moved by `centre_offset_mm` (world). Returns the joints
/// heaviest first; an empty list when nothing passes the threshold.
pub fn joints_from_posterior(
    image: &Geometry,
    coarse: &Geometry,
    posterior: &Array3<f32>,
    centre_offset_mm: [f64; 3],
    cfg: &LocateConfig,
) -> Result<Vec<JointLocation>> {
    cfg.validate()?;
    if posterior.shape() != coarse.shape() {
        return Err(locate_err(format!(
            "posterior of shape {:?} is not on the coarse grid {:?}",
            posterior.shape(),
            coarse.shape()
        )));
    }
    if centre_offset_mm.iter().any(|v| !v.is_finite()) {
        return Err(locate_err(format!(
            "centre offset {centre_offset_mm:?} is not finite"
        )));
    }
    let mut bl = blobs(posterior, cfg.threshold, coarse, cfg.head_depth_mm)?;
    bl.sort_by(|a, b| b.mass.total_cmp(&a.mass).then(a.first.cmp(&b.first)));
    let Some(heaviest) = bl.first().map(|b| b.mass) else {
        return Ok(Vec::new());
    };
    bl.retain(|b| b.mass >= cfg.min_relative_mass * heaviest);
    let mid_x = image.center_world()[0];
    let side_of = |w: [f64; 3]| {
        if w[0] < mid_x {
            JointSide::Left
        } else {
            JointSide::Right
        }
    };
    let mut chosen: Vec<(Blob, JointSide)> = Vec::new();
    for b in bl {
        if chosen.len() == cfg.max_joints {
            break;
        }
        let side = side_of(coarse.voxel_to_world(b.centroid));
        if cfg.per_side && chosen.iter().any(|(_, s)| *s == side) {
            continue;
        }
        chosen.push((b, side));
    }
    let n = image.shape();
    let sp = image.spacing();
    let (world_axis, _) = image.axis_assignment();
    let vv = coarse.voxel_volume_mm3();
    Ok(chosen
        .into_iter()
        .map(|(b, side)| {
            let c = coarse.voxel_to_world(b.centroid);
            let center_mm = [0, 1, 2].map(|a| c[a] + centre_offset_mm[a]);
            let center_voxel = image.world_to_voxel(center_mm);
            let mut voi_start = [0i64; 3];
            let mut voi_size = [0usize; 3];
            for a in 0..3 {
                let size = ((cfg.voi_mm[world_axis[a]] / sp[a]).round() as usize).clamp(1, n[a]);
                let s = (center_voxel[a] - (size as f64 - 1.0) / 2.0).round();
                // A NaN centre cannot happen (finite inputs), but clamp keeps it in range.
                let s = if s.is_finite() { s as i64 } else { 0 };
                voi_start[a] = s.clamp(0, (n[a] - size) as i64);
                voi_size[a] = size;
            }
            JointLocation {
                side,
                center_mm,
                center_voxel,
                voi_start,
                voi_size,
                score: b.peak.clamp(0.0, 1.0),
                mass_mm3: b.mass * vv,
            }
        })
        .collect())
}

/// The coarse maps behind a location, for inspection. They all live on the coarse grid in the
/// locator's frame (for a RAS locator its axes are R, A, S whatever the image's storage order).
#[derive(Debug, Clone)]
pub struct CoarseMaps {
    /// The coarse grid ([`coarse_geometry`] in the locator's frame).
    pub geometry: Geometry,
    /// The box-averaged image.
    pub image: Volume<f32>,
    /// The network's joint probability, if a network was used.
    pub network: Option<Array3<f32>>,
    /// The atlas prior divided by the atlas maximum (in `[0, 1]`), if an atlas was used.
    pub prior: Option<Array3<f32>>,
    /// The posterior that is thresholded, in `[0, 1]`.
    pub posterior: Array3<f32>,
}

/// The joint probability of a one-target heatmap network on a coarse image.
fn network_probability(net: &LoadedModel, coarse: &Volume<f32>) -> Result<Array3<f32>> {
    if net.train.targets.len() != 1 {
        return Err(locate_err(format!(
            "the locator network {} must have one target, it has {:?}",
            net.path.display(),
            net.train.targets
        )));
    }
    let pred = net.predict(coarse, None)?;
    let p = pred
        .probabilities
        .get(1)
        .ok_or_else(|| locate_err("the locator network predicts no foreground class"))?;
    Ok(p.data().mapv(|v| {
        if v.is_finite() {
            v.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }))
}

/// Compute the coarse maps of [`locate_joints`] (same arguments, without the VOI step).
pub fn coarse_maps(
    image: &Volume<f32>,
    atlas: Option<&Atlas>,
    net: Option<&LoadedModel>,
    coarse_spacing_mm: f64,
    orientation: Option<&str>,
    prior_weight: f64,
) -> Result<CoarseMaps> {
    if atlas.is_none() && net.is_none() {
        return Err(locate_err("neither an atlas nor a network to locate with"));
    }
    if !(0.0..=1.0).contains(&prior_weight) {
        return Err(TrainError::Config(format!(
            "locate: prior_weight {prior_weight} must be in [0, 1]"
        )));
    }
    let coarse = downsample(image, coarse_spacing_mm, orientation)?;
    let cg = coarse.geometry().clone();
    let prior = match atlas {
        Some(a) => {
            let m = a.max();
            if !(m > 0.0) {
                return Err(locate_err("the atlas is empty (no training joint voxel)"));
            }
            let p = a.prior_for(image.geometry(), &cg)?;
            Some(p.mapv(|v| (v / m).clamp(0.0, 1.0)))
        }
        None => None,
    };
    let network = net.map(|n| network_probability(n, &coarse)).transpose()?;
    let posterior = match (&network, &prior) {
        (Some(p), Some(q)) => {
            let w = prior_weight as f32;
            ndarray::Zip::from(p)
                .and(q)
                .map_collect(|p, q| p * (1.0 - w + w * q))
        }
        (Some(p), None) => p.clone(),
        (None, Some(q)) => q.clone(),
        (None, None) => unreachable!("checked above"),
    };
    Ok(CoarseMaps {
        geometry: cg,
        image: coarse,
        network,
        prior,
        posterior,
    })
}

/// Locate the joints of a CT (HU, any grid and storage order): box-average it to
/// `coarse_spacing_mm` on the coarse grid in the frame `orientation` ([`coarse_geometry`]; the
/// network must have been trained in that frame, `None` = the stored order), combine the
/// network probability and the atlas prior as the module documentation says (either may be
/// absent, not both), and turn the posterior into joints with [`joints_from_posterior`]
/// (applying the atlas's centre offset). An empty list means no joint was found.
pub fn locate_joints(
    image: &Volume<f32>,
    atlas: Option<&Atlas>,
    net: Option<&LoadedModel>,
    coarse_spacing_mm: f64,
    orientation: Option<&str>,
    cfg: &LocateConfig,
) -> Result<Vec<JointLocation>> {
    cfg.validate()?;
    let maps = coarse_maps(
        image,
        atlas,
        net,
        coarse_spacing_mm,
        orientation,
        cfg.prior_weight,
    )?;
    let offset = atlas.map_or([0.0; 3], |a| a.centre_offset_mm);
    joints_from_posterior(
        image.geometry(),
        &maps.geometry,
        &maps.posterior,
        offset,
        cfg,
    )
}

/// Paste `part` (a crop taken at `start`, see [`crate::preprocess::crop`]) into `into`,
/// combining each overlapping voxel with `merge(existing, new)` (e.g. a logical or, or a
/// maximum, where the VOIs of two joints overlap); voxels outside `into` are skipped.
pub fn paste_merge<T>(
    mut into: ArrayViewMut3<'_, T>,
    part: ArrayView3<'_, T>,
    start: [i64; 3],
    mut merge: impl FnMut(&mut T, &T),
) {
    let sh = into.shape().to_vec();
    for ((i, j, k), v) in part.indexed_iter() {
        let p = [
            start[0] + i as i64,
            start[1] + j as i64,
            start[2] + k as i64,
        ];
        if (0..3).all(|a| p[a] >= 0 && (p[a] as usize) < sh[a]) {
            merge(&mut into[[p[0] as usize, p[1] as usize, p[2] as usize]], v);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Training data
// ---------------------------------------------------------------------------------------------

/// A training case on the coarse grid.
#[derive(Debug, Clone)]
pub struct CoarseCase {
    /// The full-resolution grid (its field of view normalises the atlas).
    pub fov: Geometry,
    /// Coarse image and label (1 = at least [`COARSE_LABEL_FRACTION`] joint), for the trainer,
    /// on the coarse grid in the locator's frame.
    pub case: Case,
    /// Joint fraction per coarse voxel.
    pub joint: Volume<f32>,
    /// Centre-label fraction per coarse voxel, when a centre label is configured.
    pub centre: Option<Volume<f32>>,
}

fn classes_of(names: &[String], wanted: &[String], case: &str) -> Result<Vec<u8>> {
    wanted
        .iter()
        .map(|w| {
            names
                .iter()
                .position(|n| n == w)
                .map(|t| (t + 1) as u8)
                .ok_or_else(|| {
                    TrainError::case(
                        case,
                        format!("no label {w:?} among the loaded targets {names:?}"),
                    )
                })
        })
        .collect()
}

/// Coarse copies of full-resolution cases whose label classes are `class_names` (class `t + 1`
/// = `class_names[t]`, as [`crate::DatasetSpec::load`] builds them): the box-averaged image,
/// the fraction of the union of `cfg.joint_labels` and of `cfg.centre_label`, all on the
/// coarse grid of `cfg.coarse_spacing_mm` in the frame `cfg.orientation`
/// ([`coarse_geometry`]). A case without any joint voxel is an error naming it.
pub fn coarse_cases(
    cases: &[Case],
    class_names: &[String],
    cfg: &LocatorTrainConfig,
) -> Result<Vec<CoarseCase>> {
    cases
        .iter()
        .map(|c| {
            let joint_classes = classes_of(class_names, &cfg.joint_labels, &c.id)?;
            let (sp, frame) = (cfg.coarse_spacing_mm, cfg.orientation.as_deref());
            let image = downsample(&c.image, sp, frame)?;
            let joint = downsample_fraction(&c.label, &joint_classes, sp, frame)?;
            if !joint.data().iter().any(|v| *v > 0.0) {
                return Err(TrainError::case(
                    &c.id,
                    format!("no voxel of {:?}", cfg.joint_labels),
                ));
            }
            let centre = match &cfg.centre_label {
                Some(l) => {
                    let cl = classes_of(class_names, std::slice::from_ref(l), &c.id)?;
                    Some(downsample_fraction(&c.label, &cl, sp, frame)?)
                }
                None => None,
            };
            let label = joint.map(|v| u8::from(*v >= COARSE_LABEL_FRACTION));
            Ok(CoarseCase {
                fov: c.image.geometry().clone(),
                case: Case {
                    id: c.id.clone(),
                    patient: c.patient.clone(),
                    image,
                    label,
                },
                joint,
                centre,
            })
        })
        .collect()
}

/// The mean world vector from each joint component's centroid to the centroid of the centre
/// label's voxels nearest to it (components of the coarse joint label, fraction-weighted
/// centroids, each over the component's top `head_depth_mm` as in [`LocateConfig::head_depth_mm`],
/// which must be the value used when locating; every centre voxel goes to the nearest
/// component). `None` when no case has a centre map with voxels.
pub fn fit_centre_offset(cases: &[CoarseCase], head_depth_mm: Option<f64>) -> Option<[f64; 3]> {
    let mut sum = [0.0f64; 3];
    let mut n = 0usize;
    for c in cases {
        let Some(centre) = &c.centre else { continue };
        let g = c.joint.geometry();
        let comps = match blobs(
            &c.joint
                .data()
                .mapv(|v| if v >= COARSE_LABEL_FRACTION { v } else { 0.0 }),
            f64::from(COARSE_LABEL_FRACTION),
            g,
            head_depth_mm,
        ) {
            Ok(comps) => comps,
            // Only beyond the labelling's 32-bit limits, far above any coarse grid.
            Err(_) => continue,
        };
        if comps.is_empty() {
            continue;
        }
        let cw: Vec<[f64; 3]> = comps.iter().map(|b| g.voxel_to_world(b.centroid)).collect();
        let mut acc = vec![([0.0f64; 3], 0.0f64); comps.len()];
        for ((i, j, k), &w) in centre.data().indexed_iter() {
            if !(w > 0.0) {
                continue;
            }
            let p = g.voxel_to_world([i as f64, j as f64, k as f64]);
            let d2 = |q: &[f64; 3]| (0..3).map(|a| (p[a] - q[a]).powi(2)).sum::<f64>();
            let best = (0..cw.len())
                .min_by(|&a, &b| d2(&cw[a]).total_cmp(&d2(&cw[b])))
                .unwrap_or(0);
            for (o, x) in acc[best].0.iter_mut().zip(p) {
                *o += w as f64 * x;
            }
            acc[best].1 += w as f64;
        }
        for (b, (s, m)) in cw.iter().zip(&acc) {
            if *m > 0.0 {
                for a in 0..3 {
                    sum[a] += s[a] / m - b[a];
                }
                n += 1;
            }
        }
    }
    (n > 0).then(|| sum.map(|s| s / n as f64))
}

// ---------------------------------------------------------------------------------------------
// Locator: training, saving, loading
// ---------------------------------------------------------------------------------------------

/// The default heatmap run: a 3-level `unet3d` (8, 16, 32 features, 2 classes), Dice + CE,
/// Adam 3e-3 with poly decay, 40 epochs of 8 batches of two 32^3 coarse patches (96 mm cubes
/// at 3 mm), flips along the first two axes, a fixed CT window -1000..2000 HU to `[-1, 1]`
/// (independent of the label statistics), no validation.
pub fn default_heatmap_run() -> RunConfig {
    let model = serde_json::json!({
        "net": {"arch": "unet3d", "classes": 2, "f_maps": [8, 16, 32], "num_groups": 4},
        "loss": {"loss": "dice-ce", "alpha": 1.0, "beta": 1.0}
    });
    RunConfig {
        model: serde_json::from_value(model)
            .expect("the constant heatmap model description is a valid ModelConfig"),
        train: TrainConfig {
            targets: vec![JOINT_TARGET.into()],
            normalization: Normalization::Window {
                lo: -1000.0,
                hi: 2000.0,
            },
            // The locator hands the trainer coarse grids already in its own frame
            // (`LocatorTrainConfig::orientation`, RAS by default), and the network sees them so.
            orientation: None,
            target_spacing: None,
            sampler: SamplerConfig {
                patch: [32, 32, 32],
                batch_size: 2,
                foreground_fraction: 0.5,
                batches_per_epoch: 8,
                workers: 1,
                prefetch: 2,
            },
            augment: AugmentConfig {
                flip_prob: 0.5,
                flip_axes: vec![0, 1],
                ..AugmentConfig::none()
            },
            optimizer: OptimizerConfig::Adam {
                lr: 3e-3,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: 1e-5,
            },
            schedule: LrSchedule::Poly { exponent: 0.9 },
            epochs: 40,
            grad_clip: Some(12.0),
            seed: 0,
            validation: ValidationConfig {
                every: 0,
                patience: None,
                hd95: false,
                inference: InferenceConfig {
                    patch: [32, 32, 32],
                    overlap: 0.25,
                    batch_size: 2,
                    ..Default::default()
                },
            },
            ..TrainConfig::default()
        },
    }
}

/// How to train a locator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LocatorTrainConfig {
    /// Labels whose union is the joint mask (atlas and heatmap target). Default `["mc"]`: the
    /// condyle is one compact component per joint (the phantoms' temporal bone spans the whole
    /// skull base, so it would merge the two joints).
    pub joint_labels: Vec<String>,
    /// Label whose centroid, per joint, defines the VOI centre through the atlas's centre
    /// offset (e.g. `"nv"`), or none (the VOI is centred on the joint component).
    pub centre_label: Option<String>,
    /// Coarse voxel size (mm). Default 3.
    pub coarse_spacing_mm: f64,
    /// Orientation code of the frame the coarse grids, the heatmap network and the posterior
    /// work in ([`coarse_geometry`]): every case and every CT to locate in is reoriented
    /// exactly to it first, so that the network sees the anatomy the same way whatever the
    /// storage order. Default `"RAS"` (also when the key is missing from a configuration
    /// file: this configures new locators); `None` keeps each scan's stored voxel order, as
    /// locators did before this setting existed.
    pub orientation: Option<String>,
    /// Atlas grid (world x, y, z). Default 32^3.
    pub atlas_grid: [usize; 3],
    /// Atlas Gaussian smoothing (atlas voxels). Default 1.
    pub atlas_smoothing_voxels: f64,
    /// Train the heatmap network (false: an atlas-only, prior-only locator).
    pub train_network: bool,
    /// The heatmap network's run; its targets must be `["joint"]`. Default
    /// [`default_heatmap_run`].
    pub run: RunConfig,
    /// Location settings stored in the locator.
    pub locate: LocateConfig,
}

impl Default for LocatorTrainConfig {
    fn default() -> Self {
        Self {
            joint_labels: vec!["mc".into()],
            centre_label: None,
            coarse_spacing_mm: 3.0,
            orientation: Some(LOCATOR_ORIENTATION.into()),
            atlas_grid: [32; 3],
            atlas_smoothing_voxels: 1.0,
            train_network: true,
            run: default_heatmap_run(),
            locate: LocateConfig::default(),
        }
    }
}

impl LocatorTrainConfig {
    /// Check the settings (the run only when a network is trained).
    pub fn validate(&self) -> Result<()> {
        if self.joint_labels.is_empty() {
            return Err(TrainError::Config("locator: no joint label".into()));
        }
        if !(self.coarse_spacing_mm.is_finite() && self.coarse_spacing_mm > 0.0) {
            return Err(TrainError::Config(format!(
                "locator: coarse spacing {} mm must be finite and > 0",
                self.coarse_spacing_mm
            )));
        }
        check_orientation(self.orientation.as_deref())?;
        self.locate.validate()?;
        if self.train_network {
            if self.run.train.targets != [JOINT_TARGET] {
                return Err(TrainError::Config(format!(
                    "locator: the heatmap run's targets must be [\"{JOINT_TARGET}\"], not {:?}",
                    self.run.train.targets
                )));
            }
            self.run.validate()?;
        }
        Ok(())
    }
}

/// The serialisable locator (`locator.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocatorSpec {
    /// [`LOCATOR_FORMAT_VERSION`].
    pub format_version: u32,
    /// Coarse voxel size (mm) the network and atlas work at.
    pub coarse_spacing_mm: f64,
    /// Orientation code of the frame of the coarse grid, the network and the posterior
    /// ([`LocatorTrainConfig::orientation`]): `"RAS"` for locators trained since it exists.
    /// A locator file without this key (written before) reads `None`: the CT's stored voxel
    /// order, as it was trained, so it locates exactly as before (up to
    /// [`LocateConfig::voi_mm`], now along world axes: the same VOIs on the axis-aligned,
    /// RAS-, LAS- or LPS-stored, scans those locators were used on).
    #[serde(default)]
    pub orientation: Option<String>,
    /// The labels that made the joint mask.
    pub joint_labels: Vec<String>,
    /// The centre label, if any.
    pub centre_label: Option<String>,
    /// The atlas (with its centre offset).
    pub atlas: Atlas,
    /// The heatmap network's checkpoint record (`.json`), relative to the locator file's
    /// folder (or absolute); none for a prior-only locator.
    pub checkpoint: Option<PathBuf>,
    /// Location settings.
    pub locate: LocateConfig,
}

/// A loaded locator: its spec and, if it has one, the heatmap network.
pub struct Locator {
    /// The settings and the atlas.
    pub spec: LocatorSpec,
    /// The heatmap network (none: prior-only).
    pub net: Option<LoadedModel>,
}

impl std::fmt::Debug for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locator")
            .field("spec.checkpoint", &self.spec.checkpoint)
            .field("net", &self.net.as_ref().map(|n| &n.path))
            .finish()
    }
}

impl LocatorSpec {
    /// Write as pretty JSON, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(self).map_err(|source| TrainError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        negvol_volume::atomic::write_bytes_atomic(path, text.as_bytes())
            .map_err(|e| TrainError::io(path, e))
    }

    /// Read and check a locator JSON.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let spec: Self = serde_json::from_str(&text).map_err(|source| TrainError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        if spec.format_version != LOCATOR_FORMAT_VERSION {
            return Err(locate_err(format!(
                "{}: format version {} (this build reads {LOCATOR_FORMAT_VERSION})",
                path.display(),
                spec.format_version
            )));
        }
        spec.atlas
            .check()
            .map_err(|e| locate_err(format!("{}: {e}", path.display())))?;
        check_orientation(spec.orientation.as_deref())
            .map_err(|e| locate_err(format!("{}: {e}", path.display())))?;
        spec.locate.validate()?;
        Ok(spec)
    }
}

impl Locator {
    /// Load a locator JSON and its network checkpoint (if any) onto `device`.
    pub fn load(path: impl AsRef<Path>, device: Device) -> Result<Self> {
        let path = path.as_ref();
        let spec = LocatorSpec::read(path)?;
        let net = match &spec.checkpoint {
            Some(c) => {
                let base = path.parent().unwrap_or(Path::new("."));
                let ck = if c.is_relative() {
                    base.join(c)
                } else {
                    c.clone()
                };
                Some(LoadedModel::load(&ck, device)?)
            }
            None => None,
        };
        Ok(Self { spec, net })
    }

    /// Locate the joints of `image` with the stored settings ([`locate_joints`]).
    pub fn locate(&self, image: &Volume<f32>) -> Result<Vec<JointLocation>> {
        self.locate_with(image, &self.spec.locate)
    }

    /// Locate with other settings (e.g. `per_side`, another VOI size or `prior_weight`).
    pub fn locate_with(
        &self,
        image: &Volume<f32>,
        cfg: &LocateConfig,
    ) -> Result<Vec<JointLocation>> {
        locate_joints(
            image,
            Some(&self.spec.atlas),
            self.net.as_ref(),
            self.spec.coarse_spacing_mm,
            self.spec.orientation.as_deref(),
            cfg,
        )
    }

    /// The coarse maps (image, network probability, prior, posterior) behind [`Self::locate`].
    pub fn coarse_maps(&self, image: &Volume<f32>) -> Result<CoarseMaps> {
        coarse_maps(
            image,
            Some(&self.spec.atlas),
            self.net.as_ref(),
            self.spec.coarse_spacing_mm,
            self.spec.orientation.as_deref(),
            self.spec.locate.prior_weight,
        )
    }
}

/// What [`train_locator`] produced.
#[derive(Debug, Clone)]
pub struct LocatorTraining {
    /// The locator file (`OUT/locator.json`).
    pub path: PathBuf,
    /// Its contents.
    pub spec: LocatorSpec,
    /// The heatmap network's training summary (none for a prior-only locator).
    pub summary: Option<TrainSummary>,
}

/// Train a locator on full-resolution `cases` whose classes are `class_names` (see
/// [`coarse_cases`]): fit the atlas and centre offset on coarse copies, train the heatmap
/// network on them (checkpoints in `out_dir/net/`, the trainer's `last` checkpoint is used),
/// and write `out_dir/locator.json` atomically.
pub fn train_locator(
    cases: &[Case],
    class_names: &[String],
    cfg: &LocatorTrainConfig,
    out_dir: &Path,
    device: Device,
    observer: &mut dyn Observer,
) -> Result<LocatorTraining> {
    cfg.validate()?;
    if cases.is_empty() {
        return Err(TrainError::Config("locator: no training case".into()));
    }
    let coarse = coarse_cases(cases, class_names, cfg)?;
    let pairs: Vec<(&Geometry, &Volume<f32>)> = coarse.iter().map(|c| (&c.fov, &c.joint)).collect();
    let mut atlas = Atlas::fit(&pairs, cfg.atlas_grid, cfg.atlas_smoothing_voxels)?;
    if cfg.centre_label.is_some() {
        atlas.centre_offset_mm =
            fit_centre_offset(&coarse, cfg.locate.head_depth_mm).ok_or_else(|| {
                locate_err(format!(
                    "no case has {:?} voxels near a joint to fit the centre offset",
                    cfg.centre_label
                ))
            })?;
    }
    std::fs::create_dir_all(out_dir).map_err(|e| TrainError::io(out_dir, e))?;
    let (checkpoint, summary) = if cfg.train_network {
        let train: Vec<Case> = coarse.iter().map(|c| c.case.clone()).collect();
        let net_dir = out_dir.join("net");
        let mut trainer = build_trainer(&cfg.run, device)?;
        let s = trainer.fit(&train, &[], &net_dir, observer)?;
        let rel = s
            .last
            .strip_prefix(out_dir)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| s.last.clone());
        (Some(rel), Some(s))
    } else {
        (None, None)
    };
    let spec = LocatorSpec {
        format_version: LOCATOR_FORMAT_VERSION,
        coarse_spacing_mm: cfg.coarse_spacing_mm,
        orientation: cfg.orientation.clone(),
        joint_labels: cfg.joint_labels.clone(),
        centre_label: cfg.centre_label.clone(),
        atlas,
        checkpoint,
        locate: cfg.locate.clone(),
    };
    let path = out_dir.join("locator.json");
    spec.save(&path)?;
    Ok(LocatorTraining {
        path,
        spec,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    fn geom(shape: [usize; 3], spacing: [f64; 3]) -> Geometry {
        Geometry::from_spacing(shape, spacing).unwrap()
    }

    /// A ball of radius `r` mm centred at world `c`, as 0/1 on `g`.
    fn ball(g: &Geometry, c: [f64; 3], r: f64) -> Volume<f32> {
        let s = g.shape();
        let a = Array3::from_shape_fn((s[0], s[1], s[2]), |(i, j, k)| {
            let w = g.voxel_to_world([i as f64, j as f64, k as f64]);
            let d2: f64 = (0..3).map(|x| (w[x] - c[x]).powi(2)).sum();
            f32::from(u8::from(d2 <= r * r))
        });
        Volume::new(a, g.clone()).unwrap()
    }

    #[test]
    fn coarse_grid_covers_the_fine_one_and_averages_boxes() {
        let g = geom([10, 9, 4], [1.0, 1.0, 2.0]);
        let cg = coarse_geometry(&g, 3.0, None).unwrap();
        // ceil(10 / 3), ceil(9 / 3), ceil(4 / 1.5).
        assert_eq!(cg.shape(), [4, 3, 3]);
        assert_abs_diff_eq!(cg.spacing()[2], 3.0, epsilon = 1e-12);
        // Coarse voxel 0 is centred on fine index 1 (the mean of 0, 1, 2).
        let w = cg.voxel_to_world([0.0; 3]);
        assert_abs_diff_eq!(w[0], 1.0, epsilon = 1e-12);
        let img = Volume::new(
            Array3::from_shape_fn((10, 9, 4), |(i, j, k)| (i + 10 * j + 100 * k) as f32),
            g.clone(),
        )
        .unwrap();
        let d = downsample(&img, 3.0, None).unwrap();
        // Coarse (0, 0, 0) averages i in 0..3, j in 0..3, k in {0} (floor((k + 0.5) / 1.5) = 0).
        assert_abs_diff_eq!(d.data()[[0, 0, 0]], 1.0 + 10.0, epsilon = 1e-4);
        // The last coarse i holds fine i = 9 only.
        assert_abs_diff_eq!(d.data()[[3, 0, 0]], 9.0 + 10.0, epsilon = 1e-4);
        // Coarse (1, 1, 1): i and j in 3..6 (mean 4), k in {1, 2} (mean 1.5).
        assert_abs_diff_eq!(d.data()[[1, 1, 1]], 4.0 + 40.0 + 150.0, epsilon = 1e-3);
    }

    #[test]
    fn downsample_skips_nan_and_rejects_an_all_nan_image() {
        let g = geom([4, 4, 4], [1.0; 3]);
        let mut a = Array3::<f32>::from_elem((4, 4, 4), 5.0);
        a[[0, 0, 0]] = f32::NAN;
        let d = downsample(&Volume::new(a, g.clone()).unwrap(), 2.0, None).unwrap();
        assert!(d.data().iter().all(|v| *v == 5.0));
        let nan = Volume::new(Array3::from_elem((4, 4, 4), f32::NAN), g).unwrap();
        let e = downsample(&nan, 2.0, None).unwrap_err().to_string();
        assert!(e.contains("no finite voxel"), "{e}");
        assert!(coarse_geometry(nan.geometry(), f64::NAN, None).is_err());
    }

    #[test]
    fn atlas_of_identical_cases_is_the_mask_in_any_storage_orientation() {
        let g = geom([8, 6, 4], [1.0, 2.0, 3.0]);
        let mut m = Array3::<f32>::zeros((8, 6, 4));
        m.slice_mut(ndarray::s![2..5, 1..3, 1..4]).fill(1.0);
        let mask = Volume::new(m.clone(), g.clone()).unwrap();
        let atlas = Atlas::fit(&[(&g, &mask), (&g, &mask), (&g, &mask)], [8, 6, 4], 0.0).unwrap();
        assert_eq!(atlas.cases, 3);
        let a = atlas.to_array().unwrap();
        for (x, y) in a.iter().zip(m.iter()) {
            assert_abs_diff_eq!(*x, *y, epsilon = 1e-5);
        }
        // The same world content stored LPS (i and j reversed) gives the same atlas.
        let mut aff = g.affine();
        aff[0][0] = -1.0;
        aff[1][1] = -2.0;
        aff[0][3] = 7.0;
        aff[1][3] = 10.0;
        let lps = Geometry::new([8, 6, 4], aff).unwrap();
        let flipped = m.slice(ndarray::s![..;-1, ..;-1, ..]).to_owned();
        let fm = Volume::new(flipped, lps.clone()).unwrap();
        let b = Atlas::fit(&[(&lps, &fm)], [8, 6, 4], 0.0).unwrap();
        for (x, y) in b.mean.iter().zip(&atlas.mean) {
            assert_abs_diff_eq!(*x, *y, epsilon = 1e-5);
        }
        // And the prior resampled onto the LPS grid is the flipped mask.
        let p = b.prior_for(&lps, &lps).unwrap();
        for (x, y) in p.iter().zip(fm.data().iter()) {
            assert_abs_diff_eq!(*x, *y, epsilon = 1e-5);
        }
    }

    #[test]
    fn atlas_of_two_boxes_is_their_mean_and_scales_with_the_field_of_view() {
        // Case 1: a box over the lower half of x; case 2 (twice the spacing, same voxel
        // count): the whole volume. The atlas is 1 in the lower half, 0.5 in the upper.
        let g1 = geom([8, 4, 4], [1.0; 3]);
        let mut m1 = Array3::<f32>::zeros((8, 4, 4));
        m1.slice_mut(ndarray::s![..4, .., ..]).fill(1.0);
        let g2 = geom([8, 4, 4], [2.0; 3]);
        let m2 = Array3::<f32>::ones((8, 4, 4));
        let v1 = Volume::new(m1, g1.clone()).unwrap();
        let v2 = Volume::new(m2, g2.clone()).unwrap();
        let atlas = Atlas::fit(&[(&g1, &v1), (&g2, &v2)], [4, 2, 2], 0.0).unwrap();
        let a = atlas.to_array().unwrap();
        for ((x, _, _), v) in a.indexed_iter() {
            let want = if x < 2 { 1.0 } else { 0.5 };
            assert_abs_diff_eq!(*v, want, epsilon = 1e-5);
        }
        assert_abs_diff_eq!(atlas.max(), 1.0, epsilon = 1e-6);
        // Bad input.
        assert!(Atlas::fit(&[], [4, 2, 2], 0.0).is_err());
        assert!(Atlas::fit(&[(&g1, &v1)], [0, 2, 2], 0.0).is_err());
        assert!(Atlas::fit(&[(&g1, &v1)], [4, 2, 2], f64::NAN).is_err());
        let mut broken = atlas.clone();
        broken.mean.pop();
        assert!(broken.prior_for(&g1, &g1).is_err());
    }

    #[test]
    fn head_depth_keeps_a_long_neck_from_dragging_the_centre_down() {
        // A ball (radius 4 mm, centre z = 30) on a 3 x 3 mm bar running down to z = 0.
        let g = geom([20, 20, 40], [1.0; 3]);
        let mut p = ball(&g, [10.0, 10.0, 30.0], 4.0).into_parts().0;
        p.slice_mut(ndarray::s![9..12, 9..12, 0..30]).fill(1.0);
        let cfg = LocateConfig {
            voi_mm: [10.0; 3],
            ..Default::default()
        };
        let j = joints_from_posterior(&g, &g, &p, [0.0; 3], &cfg).unwrap();
        // Top at z = 34: the centroid of z >= 19 is the ball's, pulled down a little by the
        // bar's voxels at z 19..26 (to about 28.4); over everything the bar's 234 voxels
        // below the ball pull it to about 21.7.
        assert!(
            (j[0].center_mm[2] - 30.0).abs() < 2.0,
            "{:?}",
            j[0].center_mm
        );
        let all = LocateConfig {
            head_depth_mm: None,
            ..cfg.clone()
        };
        let k = joints_from_posterior(&g, &g, &p, [0.0; 3], &all).unwrap();
        assert!(k[0].center_mm[2] < 24.0, "{:?}", k[0].center_mm);
        // The mass is the whole component's either way.
        assert_abs_diff_eq!(j[0].mass_mm3, k[0].mass_mm3, epsilon = 1e-9);
        let bad = LocateConfig {
            head_depth_mm: Some(0.0),
            ..cfg
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn blobs_are_26_connected_components() {
        let g = geom([5, 5, 5], [1.0; 3]);
        let mut w = Array3::<f32>::zeros((5, 5, 5));
        w[[0, 0, 0]] = 1.0;
        w[[1, 1, 1]] = 3.0; // corner neighbour: same component
        w[[3, 3, 3]] = 1.0;
        w[[4, 4, 3]] = 1.0; // edge neighbour
        w[[0, 4, 0]] = 0.5;
        w[[2, 2, 2]] = 0.1; // below the threshold: would join all three
        let b = blobs(&w, 0.2, &g, None).unwrap();
        // In index order of their first voxel.
        assert_eq!(
            b.iter().map(|b| b.mass).collect::<Vec<_>>(),
            [4.0, 0.5, 2.0]
        );
        assert_eq!(b[0].centroid, [0.75; 3]);
        assert_eq!(b[2].centroid, [3.5, 3.5, 3.0]);
    }

    #[test]
    fn a_ball_is_located_within_a_voxel_and_its_voi_is_centred() {
        // 0.5 mm grid, oblique-free but with an origin; a ball at a known world point.
        let mut aff = [[0.0; 4]; 4];
        aff[0][0] = 0.5;
        aff[1][1] = 0.5;
        aff[2][2] = 0.5;
        aff[0][3] = -30.0;
        aff[1][3] = 12.0;
        aff[2][3] = -5.0;
        aff[3][3] = 1.0;
        let g = Geometry::new([120, 100, 80], aff).unwrap();
        let centre = [-7.3, 35.1, 15.4];
        let posterior_fine = ball(&g, centre, 5.0);
        let cg = coarse_geometry(&g, 2.0, None).unwrap();
        let post = downsample(&posterior_fine, 2.0, None).unwrap();
        let cfg = LocateConfig {
            voi_mm: [20.0, 15.0, 10.0],
            ..Default::default()
        };
        let j = joints_from_posterior(&g, &cg, post.data(), [0.0; 3], &cfg).unwrap();
        assert_eq!(j.len(), 1);
        for a in 0..3 {
            assert!(
                (j[0].center_mm[a] - centre[a]).abs() < 0.5,
                "{:?} vs {centre:?}",
                j[0].center_mm
            );
        }
        assert_eq!(j[0].voi_size, [40, 30, 20]);
        let cv = j[0].center_voxel;
        for (a, c) in cv.iter().enumerate() {
            let mid = j[0].voi_start[a] as f64 + (j[0].voi_size[a] as f64 - 1.0) / 2.0;
            assert!((mid - c).abs() <= 0.5 + 1e-9, "axis {a}: {mid} vs {c}");
        }
        assert_abs_diff_eq!(j[0].score, 1.0, epsilon = 1e-6);
        // The mass is the ball's volume (4/3 pi 125 = 523.6 mm^3) up to the voxelisation.
        assert!((j[0].mass_mm3 - 523.6).abs() < 30.0, "{}", j[0].mass_mm3);
        // The centre offset moves the centre and the VOI.
        let k = joints_from_posterior(&g, &cg, post.data(), [0.0, 0.0, 2.0], &cfg).unwrap();
        assert_abs_diff_eq!(k[0].center_mm[2], j[0].center_mm[2] + 2.0, epsilon = 1e-9);
        assert_eq!(k[0].voi_start[2], j[0].voi_start[2] + 4);
    }

    #[test]
    fn vois_are_clamped_inside_the_volume() {
        let g = geom([40, 40, 20], [1.0; 3]);
        // A ball touching the low corner and one near the high x edge.
        let mut p = ball(&g, [1.0, 1.0, 1.0], 3.0);
        let q = ball(&g, [38.0, 20.0, 10.0], 4.0);
        ndarray::Zip::from(p.view_mut())
            .and(q.view())
            .for_each(|a, b| *a = a.max(*b));
        let cfg = LocateConfig {
            voi_mm: [16.0, 16.0, 30.0], // longer than the volume along k
            min_relative_mass: 0.0,
            ..Default::default()
        };
        let j = joints_from_posterior(&g, &g, p.data(), [0.0; 3], &cfg).unwrap();
        assert_eq!(j.len(), 2);
        // Heaviest first: the bigger ball at high x.
        // x: clamped to 40 - 16; y: centred; z: the whole axis.
        let y0 = (j[0].center_voxel[1] - 7.5).round() as i64;
        assert_eq!(j[0].voi_start, [24, y0, 0]);
        assert_eq!(j[0].voi_size, [16, 16, 20]);
        assert_eq!(j[0].side, JointSide::Right);
        assert_eq!(j[1].voi_start, [0, 0, 0]);
        assert_eq!(j[1].side, JointSide::Left);
        for l in &j {
            for a in 0..3 {
                assert!(l.voi_start[a] >= 0);
                assert!(l.voi_start[a] as usize + l.voi_size[a] <= g.shape()[a]);
            }
        }
        // With a margin the VOI grows and is clipped to the volume.
        let (s, z) = j[0].voi_with_margin(3.0, &g).unwrap();
        assert_eq!(s, [21, y0 - 3, 0]);
        assert_eq!(z, [19, 22, 20]);
        assert!(j[0].voi_with_margin(-1.0, &g).is_err());
    }

    #[test]
    fn selection_by_count_side_and_relative_mass() {
        let g = geom([60, 20, 20], [1.0; 3]);
        let mut p = Array3::<f32>::zeros((60, 20, 20));
        for (c, r) in [
            ([8.0, 10.0, 10.0], 4.0),
            ([20.0, 10.0, 10.0], 3.0),
            ([50.0, 10.0, 10.0], 2.0),
        ] {
            let b = ball(&g, c, r);
            ndarray::Zip::from(&mut p)
                .and(b.data())
                .for_each(|a, b| *a = a.max(*b));
        }
        let base = LocateConfig {
            min_relative_mass: 0.0,
            ..Default::default()
        };
        let j = joints_from_posterior(&g, &g, &p, [0.0; 3], &base).unwrap();
        assert_eq!(j.len(), 2);
        assert!(j[0].center_mm[0] < 10.0 && j[1].center_mm[0] < 30.0);
        // One per side: the left pair gives one, the right ball the other.
        let ps = LocateConfig {
            per_side: true,
            ..base.clone()
        };
        let j = joints_from_posterior(&g, &g, &p, [0.0; 3], &ps).unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!((j[0].side, j[1].side), (JointSide::Left, JointSide::Right));
        assert!((j[1].center_mm[0] - 50.0).abs() < 0.5);
        // The default relative mass drops the small right ball (about 33 voxels against
        // about 257) next to the big one.
        let j = joints_from_posterior(
            &g,
            &g,
            &p,
            [0.0; 3],
            &LocateConfig {
                per_side: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(j.len(), 1);
        // Nothing above the threshold: an empty list, not an error or NaN.
        let zero = Array3::<f32>::zeros((60, 20, 20));
        assert!(joints_from_posterior(&g, &g, &zero, [0.0; 3], &base)
            .unwrap()
            .is_empty());
        let nan = Array3::<f32>::from_elem((60, 20, 20), f32::NAN);
        assert!(joints_from_posterior(&g, &g, &nan, [0.0; 3], &base)
            .unwrap()
            .is_empty());
        // Bad settings and shapes are errors.
        for bad in [
            LocateConfig {
                threshold: 0.0,
                ..Default::default()
            },
            LocateConfig {
                prior_weight: 1.5,
                ..Default::default()
            },
            LocateConfig {
                max_joints: 0,
                ..Default::default()
            },
            LocateConfig {
                voi_mm: [1.0, f64::NAN, 1.0],
                ..Default::default()
            },
        ] {
            assert!(joints_from_posterior(&g, &g, &p, [0.0; 3], &bad).is_err());
        }
        let small = Array3::<f32>::zeros((2, 2, 2));
        assert!(joints_from_posterior(&g, &g, &small, [0.0; 3], &base).is_err());
    }

    #[test]
    fn prior_only_location_finds_the_atlas_joints_in_a_new_grid() {
        // Train: two-joint masks on a 1 mm grid; test: the same framing at 0.7 mm, stored
        // LPS, with an unrelated image (prior-only ignores it).
        let g = geom([100, 40, 40], [1.0; 3]);
        let joints = [[20.0, 20.0, 22.0], [80.0, 20.0, 22.0]];
        let mut m = ball(&g, joints[0], 5.0);
        let r = ball(&g, joints[1], 5.0);
        ndarray::Zip::from(m.view_mut())
            .and(r.view())
            .for_each(|a, b| *a = a.max(*b));
        let atlas = Atlas::fit(&[(&g, &m)], [32, 16, 16], 1.0).unwrap();
        let mut aff = [[0.0; 4]; 4];
        aff[0][0] = -0.7;
        aff[1][1] = -0.7;
        aff[2][2] = 0.7;
        aff[0][3] = 99.5 - 0.35; // same field of view: x from -0.5 to 99.5
        aff[1][3] = 39.5 - 0.35;
        aff[2][3] = -0.5 + 0.35;
        aff[3][3] = 1.0;
        let t = Geometry::new([143, 57, 57], aff).unwrap();
        let ct = Volume::new(Array3::from_elem((143, 57, 57), -1000.0f32), t.clone()).unwrap();
        let cfg = LocateConfig {
            per_side: true,
            threshold: 0.5,
            ..Default::default()
        };
        let j = locate_joints(&ct, Some(&atlas), None, 3.0, Some("RAS"), &cfg).unwrap();
        assert_eq!(j.len(), 2);
        let mut found: Vec<[f64; 3]> = j.iter().map(|l| l.center_mm).collect();
        found.sort_by(|a, b| a[0].total_cmp(&b[0]));
        for (f, want) in found.iter().zip(&joints) {
            for a in 0..3 {
                assert!((f[a] - want[a]).abs() < 1.5, "{f:?} vs {want:?}");
            }
        }
        // Neither atlas nor network; an empty atlas.
        assert!(locate_joints(&ct, None, None, 3.0, Some("RAS"), &cfg).is_err());
        let mut empty = atlas.clone();
        empty.mean.iter_mut().for_each(|v| *v = 0.0);
        let e = locate_joints(&ct, Some(&empty), None, 3.0, Some("RAS"), &cfg).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn centre_offset_points_from_the_component_to_the_centre_label() {
        let g = geom([60, 20, 20], [1.0; 3]);
        let cg = coarse_geometry(&g, 2.0, None).unwrap();
        let joint = downsample(&ball(&g, [15.0, 10.0, 8.0], 4.0), 2.0, None).unwrap();
        let mut j2 = joint.clone();
        let other = downsample(&ball(&g, [45.0, 10.0, 8.0], 4.0), 2.0, None).unwrap();
        ndarray::Zip::from(j2.view_mut())
            .and(other.view())
            .for_each(|a, b| *a = a.max(*b));
        // Centre label 3 mm above each joint.
        let mut c = downsample(&ball(&g, [15.0, 10.0, 11.0], 2.0), 2.0, None).unwrap();
        let c2 = downsample(&ball(&g, [45.0, 10.0, 11.0], 2.0), 2.0, None).unwrap();
        ndarray::Zip::from(c.view_mut())
            .and(c2.view())
            .for_each(|a, b| *a = a.max(*b));
        let case = CoarseCase {
            fov: g.clone(),
            case: Case {
                id: "x".into(),
                patient: "x".into(),
                image: j2.clone(),
                label: j2.map(|v| u8::from(*v >= 0.5)),
            },
            joint: j2,
            centre: Some(c),
        };
        assert_eq!(case.joint.geometry(), &cg);
        let off = fit_centre_offset(std::slice::from_ref(&case), None).unwrap();
        assert_abs_diff_eq!(off[0], 0.0, epsilon = 0.3);
        assert_abs_diff_eq!(off[1], 0.0, epsilon = 0.3);
        assert_abs_diff_eq!(off[2], 3.0, epsilon = 0.5);
        let none = CoarseCase {
            centre: None,
            ..case
        };
        assert!(fit_centre_offset(&[none], None).is_none());
    }

    #[test]
    fn paste_merge_combines_overlaps_and_skips_the_outside() {
        let mut full = Array3::from_elem((4, 4, 4), false);
        let mut part = Array3::from_elem((2, 2, 2), false);
        part[[0, 0, 0]] = true;
        part[[1, 1, 1]] = true;
        paste_merge(full.view_mut(), part.view(), [3, 3, 3], |a, b| *a |= *b);
        assert!(full[[3, 3, 3]]);
        assert_eq!(full.iter().filter(|v| **v).count(), 1);
        // A second paste over it with `false` keeps the `true` (or).
        let none = Array3::from_elem((2, 2, 2), false);
        paste_merge(full.view_mut(), none.view(), [2, 2, 2], |a, b| *a |= *b);
        assert!(full[[3, 3, 3]]);
    }

    #[test]
    fn locator_spec_round_trips_and_checks_its_version() {
        let g = geom([8, 8, 8], [1.0; 3]);
        let m = ball(&g, [4.0, 4.0, 4.0], 2.0);
        let mut atlas = Atlas::fit(&[(&g, &m)], [4, 4, 4], 0.5).unwrap();
        atlas.centre_offset_mm = [0.5, -1.0, 2.0];
        let spec = LocatorSpec {
            format_version: LOCATOR_FORMAT_VERSION,
            coarse_spacing_mm: 3.0,
            orientation: Some("RAS".into()),
            joint_labels: vec!["mc".into()],
            centre_label: Some("nv".into()),
            atlas,
            checkpoint: None,
            locate: LocateConfig::default(),
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("locator.json");
        spec.save(&p).unwrap();
        let back = LocatorSpec::read(&p).unwrap();
        assert_eq!(back, spec);
        // A prior-only locator loads without a network.
        let l = Locator::load(&p, Device::Cpu).unwrap();
        assert!(l.net.is_none());
        let mut v2 = spec.clone();
        v2.format_version = 99;
        v2.save(&p).unwrap();
        let e = LocatorSpec::read(&p).unwrap_err().to_string();
        assert!(e.contains("format version 99"), "{e}");
        let mut bad = spec.clone();
        bad.orientation = Some("XYZ".into());
        bad.save(&p).unwrap();
        let e = LocatorSpec::read(&p).unwrap_err().to_string();
        assert!(e.contains("XYZ"), "{e}");
        // The training config rejects a heatmap run with other targets.
        let mut t = LocatorTrainConfig::default();
        assert!(t.validate().is_ok());
        t.run.train.targets = vec!["mc".into()];
        assert!(t.validate().is_err());
        let t = LocatorTrainConfig {
            orientation: Some("RAR".into()),
            ..Default::default()
        };
        assert!(t.validate().is_err());
    }

    /// `v` (RAS-stored) stored with orientation `code`, exactly.
    fn stored_as<T: Clone>(v: &Volume<T>, code: &str) -> Volume<T> {
        let out = negvol_volume::reorient(v, code).unwrap();
        assert_eq!(out.geometry().orientation_code(), code);
        out
    }

    /// An RAS grid with an origin, anisotropic voxels and a shape that is no multiple of the
    /// coarse factors, and a volume on it whose every voxel differs.
    fn odd_volume() -> Volume<f32> {
        let mut aff = [[0.0; 4]; 4];
        aff[0][0] = 0.8;
        aff[1][1] = 1.1;
        aff[2][2] = 1.7;
        aff[0][3] = -20.0;
        aff[1][3] = 5.0;
        aff[2][3] = 3.0;
        aff[3][3] = 1.0;
        let g = Geometry::new([23, 17, 11], aff).unwrap();
        let a = Array3::from_shape_fn((23, 17, 11), |(i, j, k)| {
            (i as f32 * 1.3 - j as f32 * 0.7 + (k * k) as f32 * 0.11).sin() * 500.0
        });
        Volume::new(a, g).unwrap()
    }

    #[test]
    fn coarse_grid_in_the_ras_frame_is_the_same_for_every_storage_order() {
        let ras = odd_volume();
        let want = downsample(&ras, 3.0, None).unwrap();
        assert_eq!(want.geometry().shape(), [7, 7, 7]);
        let lab = ras.map(|v| u8::from(*v > 100.0) + u8::from(*v > 300.0));
        let want_f = downsample_fraction(&lab, &[2], 3.0, None).unwrap();
        for code in ["RAS", "PSL", "LIP", "ASL", "LPS"] {
            let img = stored_as(&ras, code);
            let d = downsample(&img, 3.0, Some("RAS")).unwrap();
            d.geometry().check_same(want.geometry(), 1e-9).unwrap();
            // Read in stored order: the same sums in another order (f64), so equal to float
            // rounding of the f32 result.
            for (x, y) in d.data().iter().zip(want.data()) {
                assert_abs_diff_eq!(*x, *y, epsilon = 1e-4);
            }
            let f = downsample_fraction(&stored_as(&lab, code), &[2], 3.0, Some("RAS")).unwrap();
            for (x, y) in f.data().iter().zip(want_f.data()) {
                assert_abs_diff_eq!(*x, *y, epsilon = 1e-6);
            }
            // In stored order (`None`) the grid follows the stored axes, as before.
            let s = coarse_geometry(img.geometry(), 3.0, None).unwrap();
            assert_eq!(s.orientation_code(), code);
            // Any frame: the stored copy coarsened in LPS is the RAS one coarsened in LPS.
            let lps = downsample(&img, 3.0, Some("LPS")).unwrap();
            let direct = downsample(&stored_as(&ras, "LPS"), 3.0, None).unwrap();
            lps.geometry().check_same(direct.geometry(), 1e-9).unwrap();
            for (x, y) in lps.data().iter().zip(direct.data()) {
                assert_abs_diff_eq!(*x, *y, epsilon = 1e-4);
            }
        }
        let e = coarse_geometry(ras.geometry(), 3.0, Some("XYZ")).unwrap_err();
        assert!(e.to_string().contains("XYZ"), "{e}");
    }

    #[test]
    fn voi_extent_is_along_world_axes_in_any_storage_order() {
        // A ball posterior on an anisotropic RAS grid; the image stored in several orders.
        let mut aff = [[0.0; 4]; 4];
        aff[0][0] = 0.5;
        aff[1][1] = 0.6;
        aff[2][2] = 0.7;
        aff[3][3] = 1.0;
        let g = Geometry::new([120, 100, 80], aff).unwrap();
        let centre = [31.0, 28.0, 30.0];
        let post = ball(&g, centre, 4.0);
        let cfg = LocateConfig {
            voi_mm: [20.0, 15.0, 10.0],
            ..Default::default()
        };
        let image = post.map(|v| *v - 1000.0);
        let ras = joints_from_posterior(&g, &g, post.data(), [0.0; 3], &cfg).unwrap();
        // Along x 20 mm / 0.5, y 15 / 0.6, z 10 / 0.7 (rounded).
        assert_eq!(ras[0].voi_size, [40, 25, 14]);
        let world_box = |g: &Geometry, j: &JointLocation| {
            let lo = [0, 1, 2].map(|a| j.voi_start[a] as f64 - 0.5);
            let hi = [0, 1, 2].map(|a| (j.voi_start[a] + j.voi_size[a] as i64) as f64 - 0.5);
            let (a, b) = (g.voxel_to_world(lo), g.voxel_to_world(hi));
            [0, 1, 2].map(|x| (a[x].min(b[x]), a[x].max(b[x])))
        };
        let want = world_box(&g, &ras[0]);
        for (code, size) in [
            ("LPS", [40, 25, 14]),
            ("LAS", [40, 25, 14]),
            // Sagittal-like: i posterior, j superior, k left; per index axis this was
            // [20 / 0.6, 15 / 0.7, 10 / 0.5] = [33, 21, 20] voxels.
            ("PSL", [25, 14, 40]),
            ("SLA", [14, 40, 25]),
        ] {
            let img = stored_as(&image, code);
            let j = joints_from_posterior(img.geometry(), &g, post.data(), [0.0; 3], &cfg).unwrap();
            assert_eq!(j[0].voi_size, size, "{code}");
            for a in 0..3 {
                assert!((j[0].center_mm[a] - ras[0].center_mm[a]).abs() < 1e-9);
            }
            // The same world box, up to rounding its start to a whole voxel.
            for (x, (b, w)) in world_box(img.geometry(), &j[0])
                .iter()
                .zip(&want)
                .enumerate()
            {
                assert_abs_diff_eq!(b.1 - b.0, w.1 - w.0, epsilon = 1e-9);
                assert!(
                    (b.0 - w.0).abs() <= g.spacing()[x] + 1e-9,
                    "{code} axis {x}"
                );
            }
        }
    }

    #[test]
    fn locator_files_without_an_orientation_keep_the_stored_order() {
        // A prior-only locator fitted on an RAS ball; its file as written before the
        // orientation key existed.
        let ras = odd_volume();
        let g = ras.geometry().clone();
        let m = ball(&g, g.voxel_to_world([12.0, 8.0, 5.0]), 4.0);
        let atlas = Atlas::fit(&[(&g, &m)], [8, 8, 8], 0.0).unwrap();
        let spec = LocatorSpec {
            format_version: LOCATOR_FORMAT_VERSION,
            coarse_spacing_mm: 3.0,
            orientation: Some("RAS".into()),
            joint_labels: vec!["mc".into()],
            centre_label: None,
            atlas,
            checkpoint: None,
            locate: LocateConfig {
                threshold: 0.5,
                ..Default::default()
            },
        };
        let dir = tempfile::tempdir().unwrap();
        let (new_p, old_p) = (dir.path().join("new.json"), dir.path().join("old.json"));
        spec.save(&new_p).unwrap();
        assert!(std::fs::read_to_string(&new_p)
            .unwrap()
            .contains("\"orientation\": \"RAS\""));
        let mut old: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&new_p).unwrap()).unwrap();
        old.as_object_mut().unwrap().remove("orientation");
        std::fs::write(&old_p, old.to_string()).unwrap();
        let new_l = Locator::load(&new_p, Device::Cpu).unwrap();
        let old_l = Locator::load(&old_p, Device::Cpu).unwrap();
        assert_eq!(new_l.spec.orientation.as_deref(), Some("RAS"));
        assert_eq!(old_l.spec.orientation, None);
        // On an RAS-stored image both are the same locator.
        assert_eq!(old_l.locate(&ras).unwrap(), new_l.locate(&ras).unwrap());
        // On a PSL-stored copy the old one still works on the stored axes, the new one in RAS.
        let psl = stored_as(&ras, "PSL");
        let om = old_l.coarse_maps(&psl).unwrap();
        let nm = new_l.coarse_maps(&psl).unwrap();
        assert_eq!(om.geometry.orientation_code(), "PSL");
        om.geometry
            .check_same(&coarse_geometry(psl.geometry(), 3.0, None).unwrap(), 0.0)
            .unwrap();
        assert_eq!(nm.geometry.orientation_code(), "RAS");
        nm.geometry
            .check_same(&coarse_geometry(&g, 3.0, None).unwrap(), 1e-9)
            .unwrap();
        // A training configuration without the key configures a new (RAS) locator.
        let t: LocatorTrainConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(t.orientation.as_deref(), Some(LOCATOR_ORIENTATION));
    }
}
