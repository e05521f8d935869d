//! # negvol-phantom
//!
//! Seeded synthetic temporomandibular-joint (TMJ) phantoms: a CT-like image, the mandibular
//! condyle (MC) and temporal bone (TB) masks, and the negative volume (NV) known analytically,
//! so that the NV pipeline and the networks are tested against answers they did not produce.
//!
//! - [`PhantomConfig`] (serde, with defaults) sets the grid (shape, spacing, orientation), the
//!   anatomy ranges, the image model and the truth definition.
//! - [`generate`] samples one case from a seed (ChaCha8, so the same seed and config give the
//!   same case on every machine and thread count) and returns a [`PhantomCase`].
//! - [`PhantomTruth`] states the NV definition exactly and carries the exact NV volume per side
//!   (integrated from the analytic surfaces, not counted from voxels), the joint-space widths
//!   and every sampled parameter.
//! - [`write_dataset`] writes a folder of NIfTI cases with a JSON manifest.
//! - [`PhantomModel`] gives point queries on the analytic anatomy and masks on any grid.
//!
//! World coordinates are RAS+ mm: superior = `+z`, patient-left = `-x`, anterior = `+y`.
//!
//! ```
//! use negvol_phantom::{generate, PhantomConfig};
//! let cfg = PhantomConfig { spacing: [0.8; 3], ..PhantomConfig::default() };
//! let case = generate(&cfg, 42).unwrap();
//! assert_eq!(case.image.geometry().shape(), [48, 48, 48]);
//! let side = &case.truth.sides[0];
//! // The voxel count agrees with the exact volume to within discretisation error.
//! let rel = (side.nv_mask_volume_mm3 - side.nv_volume_mm3).abs() / side.nv_volume_mm3;
//! assert!(rel < 0.15, "{rel}");
//! // MC, TB and NV never overlap.
//! let (mc, tb, nv) = (case.mc.data(), case.tb.data(), case.nv.data());
//! assert!(mc.iter().zip(tb.iter()).zip(nv.iter()).all(|((m, t), n)| (*m as u8 + *t as u8 + *n as u8) <= 1));
//! ```
#![warn(missing_docs)]

mod config;
mod dataset;
mod error;
mod geom;
mod model;
mod raster;
mod truth;

pub use config::{
    AnatomyConfig, CbctConfig, GridOrientation, ImageConfig, PhantomConfig, Range, Side, MAX_VOXELS,
};
pub use dataset::{case_seed, write_dataset, DatasetEntry, DatasetManifest};
pub use error::{PhantomError, Result};
pub use model::{Bump, EarCanal, Joint, JointParams, JointWidths, PhantomModel, Region};
pub use truth::{PhantomTruth, SideTruth, Stats};

use negvol_volume::{Geometry, Volume};

/// One generated case.
#[derive(Debug, Clone)]
pub struct PhantomCase {
    /// CT-like image (HU-like `f32`).
    pub image: Volume<f32>,
    /// Mandibular condyle mask (voxel centres in MC).
    pub mc: Volume<bool>,
    /// Temporal bone mask (voxel centres in TB).
    pub tb: Volume<bool>,
    /// Ground-truth negative-volume mask (voxel centres in NV, see [`PhantomTruth`]).
    pub nv: Volume<bool>,
    /// Parameters, exact volumes and widths.
    pub truth: PhantomTruth,
}

impl PhantomCase {
    /// One `u8` label map: 0 background, 1 MC, 2 TB, 3 NV (the classes never overlap).
    pub fn label_map(&self) -> Volume<u8> {
        let mut out = self.mc.map(|&m| u8::from(m));
        ndarray::Zip::from(out.view_mut())
            .and(self.tb.view())
            .and(self.nv.view())
            .for_each(|o, &t, &n| {
                if t {
                    *o = 2;
                } else if n {
                    *o = 3;
                }
            });
        out
    }
}

/// The three label masks of a model on a grid.
#[derive(Debug, Clone)]
pub struct PhantomMasks {
    /// Mandibular condyle.
    pub mc: Volume<bool>,
    /// Temporal bone.
    pub tb: Volume<bool>,
    /// Ground-truth negative volume.
    pub nv: Volume<bool>,
}

impl PhantomModel {
    /// The MC, TB and NV masks on any grid (voxel centres; no image). Cheap: one exact point
    /// query per voxel, in parallel over `i`-slices.
    pub fn masks(&self, grid: &Geometry) -> Result<PhantomMasks> {
        let l = raster::labels(self, grid);
        Ok(PhantomMasks {
            mc: Volume::new(l.mc, grid.clone())?,
            tb: Volume::new(l.tb, grid.clone())?,
            nv: Volume::new(l.nv, grid.clone())?,
        })
    }

    /// The truth of this model on `grid`, with `nv` (on the same grid) counted per side.
    ///
    /// Errors with [`PhantomError::DoesNotFit`] if any part of the NV lies outside the grid's
    /// voxel-centre box, since the mask would then be cut.
    pub fn truth(&self, grid: &Geometry, nv: &Volume<bool>) -> Result<PhantomTruth> {
        grid.check_same(nv.geometry(), 1e-9)?;
        let its = self.integrate(grid)?;
        Ok(self.assemble(grid, nv, its))
    }

    fn integrate(&self, grid: &Geometry) -> Result<Vec<truth::JointIntegral>> {
        let cfg = self.config();
        self.joints()
            .iter()
            .map(|j| {
                let it = truth::integrate(j, cfg.truth_max_gap_mm, cfg.truth_head_depth_mm, grid);
                match it.outside {
                    (c, Some(p)) => Err(PhantomError::DoesNotFit(format!(
                        "{} joint: {c} NV ray ends lie outside the {:?} grid, e.g. world \
                         {:.2?} mm (voxel {:.1?}); enlarge fov_mm or shape",
                        j.params().side.name(),
                        grid.shape(),
                        p,
                        grid.world_to_voxel(p)
                    ))),
                    _ => Ok(it),
                }
            })
            .collect()
    }

    fn assemble(
        &self,
        grid: &Geometry,
        nv: &Volume<bool>,
        its: Vec<truth::JointIntegral>,
    ) -> PhantomTruth {
        let cfg = self.config();
        let mut counts = vec![0usize; self.joints().len()];
        let aff = grid.affine();
        for ((i, j, k), &v) in nv.data().indexed_iter() {
            if v {
                let x =
                    aff[0][0] * i as f64 + aff[0][1] * j as f64 + aff[0][2] * k as f64 + aff[0][3];
                let n = usize::from(self.joints().len() == 2 && x >= 0.0);
                counts[n] += 1;
            }
        }
        let vv = grid.voxel_volume_mm3();
        let sides: Vec<SideTruth> = self
            .joints()
            .iter()
            .zip(its)
            .enumerate()
            .map(|(n, (j, it))| {
                let top = j.head_top();
                SideTruth {
                    side: j.params().side,
                    params: j.params().clone(),
                    head_centre_mm: j.centre(),
                    head_top_mm: top,
                    head_top_voxel: grid.world_to_voxel(top),
                    nv_volume_mm3: it.volume,
                    nv_mask_voxels: counts[n],
                    nv_mask_volume_mm3: counts[n] as f64 * vv,
                    nv_head_area_mm2: it.area,
                    gap_mm: it.gap,
                    fossa_width_mm: it.fossa,
                    nv_bounds_mm: it.bounds,
                    integration_rays: it.rays,
                }
            })
            .collect();
        // Undefined (not 0) for one joint, or when a side's NV is empty.
        let asymmetry_index = (sides.len() == 2)
            .then(|| (sides[0].nv_volume_mm3, sides[1].nv_volume_mm3))
            .filter(|&(l, r)| l > 0.0 && r > 0.0)
            .map(|(l, r)| (l - r).abs() / (l + r));
        PhantomTruth {
            seed: self.seed(),
            config: cfg.clone(),
            geometry: grid.clone(),
            sides,
            asymmetry_index,
        }
    }
}

/// Generate one case: sample the anatomy from `seed`, voxelize MC, TB and NV at voxel
/// centres, synthesise the image and integrate the truth.
///
/// Deterministic: the same `cfg` and `seed` give bit-identical output regardless of the number
/// of threads. The anatomy depends only on the anatomy fields, the widths, `both_sides`,
/// `asymmetry`, `side` and `intercondylar_mm` (not on the grid or the image options), so the
/// same seed on a finer grid gives the same joint.
///
/// Errors: [`PhantomError::InvalidConfig`] naming the bad field, or
/// [`PhantomError::DoesNotFit`] when the NV would be cut by the grid.
pub fn generate(cfg: &PhantomConfig, seed: u64) -> Result<PhantomCase> {
    let model = PhantomModel::sample(cfg, seed)?;
    let grid = cfg.geometry()?;
    // Integrate first: a grid that cuts the NV fails before the voxel work.
    let its = model.integrate(&grid)?;
    let (labels, image) = raster::labels_and_image(&model, &grid, seed);
    let nv = Volume::new(labels.nv, grid.clone())?;
    let truth = model.assemble(&grid, &nv, its);
    Ok(PhantomCase {
        image: Volume::new(image, grid.clone())?,
        mc: Volume::new(labels.mc, grid.clone())?,
        tb: Volume::new(labels.tb, grid)?,
        nv,
        truth,
    })
}
