//! Writing a run's products to a folder: NV mask, width maps, meshes, pictures and report.

use std::path::{Path, PathBuf};

use negvol_volume::{Geometry, Volume};

use crate::grid::{self, Bbox};
use crate::render::{write_joint_pngs, Layers};
use crate::{NvError, NvResult, Result};

/// What [`write_outputs`] writes besides the NV mask and the report.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputOptions {
    /// Write STL meshes of MC, TB and NV (cropped to the joints' working boxes).
    pub meshes: bool,
    /// Gaussian smoothing (mm) of the masks before meshing (0 = staircase surface).
    pub mesh_smooth_mm: f64,
    /// Write axial/coronal/sagittal PNGs per joint.
    pub pictures: bool,
    /// Field of view (mm) of the pictures.
    pub picture_fov_mm: f64,
    /// Size (pixels) of the pictures.
    pub picture_pixels: usize,
}

impl Default for OutputOptions {
    fn default() -> Self {
        Self {
            meshes: true,
            mesh_smooth_mm: 0.4,
            pictures: true,
            picture_fov_mm: 40.0,
            picture_pixels: 400,
        }
    }
}

fn vol_err(path: &Path) -> impl FnOnce(negvol_volume::VolumeError) -> NvError + '_ {
    move |source| NvError::Geometry {
        what: format!("writing {}", path.display()),
        source,
    }
}

fn crop<T: Clone>(v: &Volume<T>, b: &Bbox) -> Result<Volume<T>> {
    let g: Geometry = grid::crop_geometry(v.geometry(), b);
    Volume::new(v.data().slice(b.slice()).to_owned(), g).map_err(|source| NvError::Geometry {
        what: "crop".into(),
        source,
    })
}

/// Writes into `dir` (created if missing): `nv.nii.gz`, `{side}_width.nii.gz` (joint-space
/// width in mm per head-surface voxel, on the head's bounding box), `report.json`, and, per
/// `opts`, `{side}_mc.stl`, `{side}_tb.stl`, `{side}_nv.stl` (on the side's working box) and `{side}_{axial,coronal,sagittal}.png`. Every file
/// is written atomically. Returns the written paths.
pub fn write_outputs(
    dir: impl AsRef<Path>,
    result: &NvResult,
    mc: &Volume<bool>,
    tb: &Volume<bool>,
    image: Option<&Volume<f32>>,
    opts: &OutputOptions,
) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|source| NvError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    let p = dir.join("nv.nii.gz");
    negvol_volume::write_mask(&p, &result.nv).map_err(vol_err(&p))?;
    written.push(p);
    for s in &result.sides {
        if let Some(w) = &s.width_map {
            let p = dir.join(format!("{}_width.nii.gz", s.side.name()));
            negvol_volume::write_nifti(&p, w).map_err(vol_err(&p))?;
            written.push(p);
        }
    }
    if opts.meshes {
        // Per joint, on its working box (a whole-volume TB mesh would be huge).
        for r in &result.report.sides {
            let (Some(lo), Some(hi)) = (r.crop_lo, r.crop_hi) else {
                continue;
            };
            let b = Bbox { lo, hi };
            for (name, m) in [("mc", mc), ("tb", tb), ("nv", &result.nv)] {
                let p = dir.join(format!("{}_{name}.stl", r.side.name()));
                crate::mesh::write_mask_stl(&p, &crop(m, &b)?, opts.mesh_smooth_mm)?;
                written.push(p);
            }
        }
    }
    if opts.pictures {
        let layers = Layers {
            image,
            mc: Some(mc),
            tb: Some(tb),
            nv: Some(&result.nv),
        };
        for r in &result.report.sides {
            let Some(centre) = r.nv_centroid_world.or(r.head_top_world) else {
                continue;
            };
            written.extend(write_joint_pngs(
                dir,
                r.side.name(),
                &layers,
                centre,
                opts.picture_fov_mm,
                opts.picture_pixels,
            )?);
        }
    }
    let p = dir.join("report.json");
    let json = serde_json::to_string_pretty(&result.report).map_err(|e| NvError::Io {
        path: p.clone(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(&p, json.as_bytes())?;
    written.push(p);
    Ok(written)
}

/// Writes bytes atomically (temporary file in the same folder, synced, then renamed over
/// `path`; see [`negvol_volume::atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    negvol_volume::atomic::write_bytes_atomic(path, bytes).map_err(|source| NvError::Io {
        path: path.to_path_buf(),
        source,
    })
}
