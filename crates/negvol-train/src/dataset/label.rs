//! Where a structure's voxels come from: a binary mask, classes of a label map, a segment of a
//! 3D Slicer segmentation, or a mesh.
//!
//! In a manifest a label is written as
//!
//! | JSON | source |
//! |---|---|
//! | `"case/mc.nii.gz"` | binary mask (every voxel 0 or 1) |
//! | `"case/mc.stl"` | closed surface mesh (STL, world mm), voxelised on the image grid |
//! | `{"path": "case/seg.nii.gz", "values": [1]}` | voxels of a label map whose value is listed |
//! | `{"path": "case/seg.nii.gz", "values": [1, 2], "declared": [0, 1, 2, 3]}` | the same, and every voxel of the map must be a declared value |
//! | `{"path": "case/Segmentation.seg.nrrd", "segment": "condyle"}` | one segment of a 3D Slicer segmentation, by name (or ID) |
//! | `{"path": "case/mc.stl", "frame": "lps"}` | a mesh whose coordinates are LPS (e.g. 3D Slicer's default since 4.11) |
//!
//! Masks and label maps are volume files of any format negvol reads
//! ([`negvol_volume::read_volume`]: NIfTI `.nii`/`.nii.gz`, NRRD `.nrrd`/`.nhdr`, MetaImage
//! `.mha`/`.mhd`). A Slicer segment is the voxels of its layer equal to its label value
//! ([`negvol_volume::read_slicer_segment`]); Slicer may save a segmentation cropped to its
//! extent, so a segment on a grid that is an exact sub-grid of the image's (same axes and
//! spacing, an integer voxel offset, inside the image) is placed on the image grid (outside
//! it: background); any other grid is an error, as for masks.
//!
//! A mesh's `frame` is `"ras"`, `"lps"` or `"auto"` (the default): `auto` reads a
//! `SPACE=RAS` / `SPACE=LPS` tag from the STL header (as 3D Slicer writes it) and takes RAS
//! when there is none. A voxel belongs to a mesh when its centre is inside
//! ([`negvol_volume::voxelize`], even-odd rule, exact on the grid); a mesh that covers no
//! voxel centre of the image is an error (usually the wrong frame).

use std::path::{Path, PathBuf};

use negvol_volume::{Geometry, Volume};
use serde::{Deserialize, Serialize};

/// The world frame of a mesh's coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeshFrame {
    /// From a `SPACE=RAS` / `SPACE=LPS` tag in the STL header; RAS when there is none.
    #[default]
    Auto,
    /// RAS+, negvol's (and NIfTI's) world frame: x grows towards the patient's right, y
    /// anterior, z superior.
    Ras,
    /// LPS+ (DICOM's and ITK's patient frame): x and y are negated against RAS.
    Lps,
}

/// Where one structure's voxels come from (see the module docs for the JSON forms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawLabel", into = "RawLabel")]
pub enum LabelSource {
    /// A binary mask (any volume format): every voxel must be 0 or 1.
    Mask(PathBuf),
    /// The voxels of an integer label map (any volume format) whose value is one of `values`.
    LabelMap {
        /// The label map.
        path: PathBuf,
        /// The values that make up this structure (non-empty).
        values: Vec<u32>,
        /// When given, every voxel of the map must hold one of these values (nnU-Net's and the
        /// Medical Segmentation Decathlon's declared labels).
        declared: Option<Vec<u32>>,
    },
    /// One segment of a 3D Slicer segmentation (`.seg.nrrd`).
    Segment {
        /// The segmentation file (NRRD).
        path: PathBuf,
        /// The segment's name (`SegmentN_Name`), or its ID.
        segment: String,
    },
    /// A closed surface mesh (STL, world mm), voxelised on the image grid.
    Mesh {
        /// The STL file.
        path: PathBuf,
        /// The frame of its coordinates.
        frame: MeshFrame,
    },
}

/// The JSON form of a [`LabelSource`]: a path, or an object with a path.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawLabel {
    Path(PathBuf),
    Object {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        values: Option<Vec<u32>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        declared: Option<Vec<u32>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        frame: Option<MeshFrame>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        segment: Option<String>,
    },
}

fn is_stl(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("stl"))
}

fn is_nrrd(path: &Path) -> bool {
    negvol_volume::ImageFormat::from_name(path) == Some(negvol_volume::ImageFormat::Nrrd)
}

impl TryFrom<RawLabel> for LabelSource {
    type Error = String;

    fn try_from(raw: RawLabel) -> Result<Self, String> {
        match raw {
            RawLabel::Path(path) if is_stl(&path) => Ok(Self::Mesh {
                path,
                frame: MeshFrame::Auto,
            }),
            RawLabel::Path(path) => Ok(Self::Mask(path)),
            RawLabel::Object {
                path,
                values,
                declared,
                frame,
                segment: Some(segment),
            } => {
                if values.is_some() || declared.is_some() || frame.is_some() {
                    return Err(format!(
                        "label {}: \"segment\" (a Slicer segment) excludes \"values\", \
                         \"declared\" and \"frame\"",
                        path.display()
                    ));
                }
                if !is_nrrd(&path) {
                    return Err(format!(
                        "label {}: \"segment\" needs a 3D Slicer segmentation (.seg.nrrd, \
                         .nrrd or .nhdr)",
                        path.display()
                    ));
                }
                if segment.is_empty() {
                    return Err(format!("label {}: \"segment\" is empty", path.display()));
                }
                Ok(Self::Segment { path, segment })
            }
            RawLabel::Object {
                path,
                values,
                declared,
                frame,
                segment: None,
            } => match (values, frame) {
                (Some(_), Some(_)) => Err(format!(
                    "label {}: \"values\" (a label map) and \"frame\" (a mesh) exclude each other",
                    path.display()
                )),
                (Some(values), None) => {
                    if is_stl(&path) {
                        return Err(format!(
                            "label {}: an STL mesh has no \"values\"",
                            path.display()
                        ));
                    }
                    Self::label_map(path, values, declared)
                }
                (None, frame) => {
                    if declared.is_some() {
                        return Err(format!(
                            "label {}: \"declared\" needs \"values\" (a label map)",
                            path.display()
                        ));
                    }
                    match (is_stl(&path), frame) {
                        (true, frame) => Ok(Self::Mesh {
                            path,
                            frame: frame.unwrap_or_default(),
                        }),
                        (false, None) => Ok(Self::Mask(path)),
                        (false, Some(_)) => Err(format!(
                            "label {}: \"frame\" applies to STL meshes only",
                            path.display()
                        )),
                    }
                }
            },
        }
    }
}

impl From<LabelSource> for RawLabel {
    fn from(l: LabelSource) -> Self {
        match l {
            LabelSource::Mask(p) => RawLabel::Path(p),
            LabelSource::LabelMap {
                path,
                values,
                declared,
            } => RawLabel::Object {
                path,
                values: Some(values),
                declared,
                frame: None,
                segment: None,
            },
            LabelSource::Segment { path, segment } => RawLabel::Object {
                path,
                values: None,
                declared: None,
                frame: None,
                segment: Some(segment),
            },
            LabelSource::Mesh {
                path,
                frame: MeshFrame::Auto,
            } => RawLabel::Path(path),
            LabelSource::Mesh { path, frame } => RawLabel::Object {
                path,
                values: None,
                declared: None,
                frame: Some(frame),
                segment: None,
            },
        }
    }
}

impl From<PathBuf> for LabelSource {
    /// A path: a mesh when it ends in `.stl`, else a binary mask.
    fn from(path: PathBuf) -> Self {
        if is_stl(&path) {
            Self::Mesh {
                path,
                frame: MeshFrame::Auto,
            }
        } else {
            Self::Mask(path)
        }
    }
}

impl LabelSource {
    /// A label-map source; `values` must be non-empty and, when `declared` is given, each
    /// of them declared.
    pub fn label_map(
        path: PathBuf,
        values: Vec<u32>,
        declared: Option<Vec<u32>>,
    ) -> Result<Self, String> {
        if values.is_empty() {
            return Err(format!("label {}: \"values\" is empty", path.display()));
        }
        if let Some(d) = &declared {
            if let Some(v) = values.iter().find(|v| !d.contains(v)) {
                return Err(format!(
                    "label {}: value {v} is not among the declared values {d:?}",
                    path.display()
                ));
            }
        }
        Ok(Self::LabelMap {
            path,
            values,
            declared,
        })
    }

    /// The file this label is read from.
    pub fn path(&self) -> &Path {
        match self {
            Self::Mask(p)
            | Self::LabelMap { path: p, .. }
            | Self::Segment { path: p, .. }
            | Self::Mesh { path: p, .. } => p,
        }
    }

    /// The file, for rewriting (e.g. resolving a relative path).
    pub fn path_mut(&mut self) -> &mut PathBuf {
        match self {
            Self::Mask(p)
            | Self::LabelMap { path: p, .. }
            | Self::Segment { path: p, .. }
            | Self::Mesh { path: p, .. } => p,
        }
    }

    /// A short description for messages, e.g. `mask a/mc.nii.gz`, `label map a/seg.nii.gz =
    /// 1|2` or `segment "condyle" of a/Segmentation.seg.nrrd`.
    pub fn describe(&self) -> String {
        match self {
            Self::Mask(p) => format!("mask {}", p.display()),
            Self::LabelMap { path, values, .. } => {
                let v: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                format!("label map {} = {}", path.display(), v.join("|"))
            }
            Self::Segment { path, segment } => {
                format!("segment {segment:?} of {}", path.display())
            }
            Self::Mesh { path, .. } => format!("mesh {}", path.display()),
        }
    }
}

/// Label maps already read for one case (several structures often share one file).
#[derive(Default)]
pub(crate) struct LabelMapCache {
    maps: Vec<(PathBuf, Volume<f32>)>,
}

/// Read one label source as a mask on `grid` (the image's geometry). Errors are plain
/// messages; the caller adds the case.
pub(crate) fn read_label(
    source: &LabelSource,
    grid: &Geometry,
    tolerance_mm: f64,
    cache: &mut LabelMapCache,
) -> Result<Volume<bool>, String> {
    let on_grid = |path: &Path, g: &Geometry| {
        grid.check_same(g, tolerance_mm)
            .map_err(|e| format!("{} does not match the image grid: {e}", path.display()))
    };
    match source {
        LabelSource::Mask(path) => {
            let m = negvol_volume::read_volume::<f32>(path)
                .map_err(|e| format!("mask {}: {e}", path.display()))?;
            binary_mask_on(grid, tolerance_mm, path, &m)
        }
        LabelSource::LabelMap {
            path,
            values,
            declared,
        } => {
            let idx = match cache.maps.iter().position(|(p, _)| p == path) {
                Some(i) => {
                    // Checked against the declaration it was first read with; this source
                    // naming the same file may declare differently.
                    if declared.is_some() {
                        check_label_values(path, &cache.maps[i].1, declared.as_deref())?;
                    }
                    i
                }
                None => {
                    let m = negvol_volume::read_volume::<f32>(path)
                        .map_err(|e| format!("label map {}: {e}", path.display()))?;
                    on_grid(path, m.geometry())?;
                    check_label_values(path, &m, declared.as_deref())?;
                    cache.maps.push((path.clone(), m));
                    cache.maps.len() - 1
                }
            };
            let m = &cache.maps[idx].1;
            let vals: Vec<f32> = values.iter().map(|v| *v as f32).collect();
            Ok(m.map(|v| vals.contains(v)))
        }
        LabelSource::Segment { path, segment } => {
            let m = negvol_volume::read_slicer_segment(path, segment)
                .map_err(|e| format!("segment {segment:?} of {}: {e}", path.display()))?;
            onto_grid(&m, grid, tolerance_mm).map_err(|e| {
                format!(
                    "segment {segment:?} of {} does not match the image grid: {e}",
                    path.display()
                )
            })
        }
        LabelSource::Mesh { path, frame } => {
            let bytes = std::fs::read(path).map_err(|e| format!("mesh {}: {e}", path.display()))?;
            let mesh = negvol_volume::read_stl_from_bytes(&bytes)
                .map_err(|e| format!("mesh {}: {e}", path.display()))?;
            let lps = match frame {
                MeshFrame::Ras => false,
                MeshFrame::Lps => true,
                MeshFrame::Auto => stl_header_frame(&bytes) == Some(MeshFrame::Lps),
            };
            let mesh = if lps {
                mesh.map_vertices(|[x, y, z]| [-x, -y, z])
            } else {
                mesh
            };
            let m = negvol_volume::voxelize(&mesh, grid)
                .map_err(|e| format!("mesh {}: {e}", path.display()))?;
            if !m.data().iter().any(|b| *b) {
                let frame = if lps { "LPS" } else { "RAS" };
                let bounds = mesh
                    .bounds()
                    .map(|(lo, hi)| format!("{lo:.1?}..{hi:.1?}"))
                    .unwrap_or_else(|| "none".into());
                let corners = [
                    grid.voxel_to_world([0.0; 3]),
                    grid.voxel_to_world(grid.shape().map(|n| n as f64 - 1.0)),
                ];
                return Err(format!(
                    "mesh {} (read as {frame}, world bounds {bounds} mm) covers no voxel centre \
                     of the image (corner voxels at {:.1?} and {:.1?} mm); a mesh in the other \
                     frame needs \"frame\": \"{}\"",
                    path.display(),
                    corners[0],
                    corners[1],
                    if lps { "ras" } else { "lps" }
                ));
            }
            Ok(m)
        }
    }
}

/// `mask` on `grid`: as it is when it shares the grid (within `tolerance_mm`); placed on it
/// when its grid is a sub-grid of `grid` (the same axes and spacing within `tolerance_mm`, an
/// integer voxel offset, inside it), as 3D Slicer crops segmentations; else the mismatch.
fn onto_grid(
    mask: &Volume<bool>,
    grid: &Geometry,
    tolerance_mm: f64,
) -> Result<Volume<bool>, String> {
    let Err(mismatch) = grid.check_same(mask.geometry(), tolerance_mm) else {
        return Ok(mask.clone());
    };
    let (a, b) = (grid.affine(), mask.geometry().affine());
    let same_axes = (0..3).all(|r| (0..3).all(|c| (a[r][c] - b[r][c]).abs() <= tolerance_mm));
    // The mask's first voxel must be a voxel centre of the image, and the mask inside it.
    let first = [b[0][3], b[1][3], b[2][3]];
    let off = grid.world_to_voxel(first).map(f64::round);
    let at = grid.voxel_to_world(off);
    let integral = (0..3).all(|r| (at[r] - first[r]).abs() <= tolerance_mm);
    let (gs, ms) = (grid.shape(), mask.geometry().shape());
    let inside = (0..3).all(|d| off[d] >= 0.0 && off[d] + ms[d] as f64 <= gs[d] as f64);
    if !(same_axes && integral && inside) {
        return Err(mismatch.to_string());
    }
    let mut out = ndarray::Array3::from_elem((gs[0], gs[1], gs[2]), false);
    let [oi, oj, ok] = off.map(|x| x as usize);
    out.slice_mut(ndarray::s![oi..oi + ms[0], oj..oj + ms[1], ok..ok + ms[2]])
        .assign(mask.data());
    Volume::new(out, grid.clone()).map_err(|e| e.to_string())
}

/// A mask given as numbers (`mask`, read from `path`): it must lie on `grid` (within
/// `tolerance_mm`) and hold only 0 and 1. Errors are plain messages naming `path`.
pub(crate) fn binary_mask_on(
    grid: &Geometry,
    tolerance_mm: f64,
    path: &Path,
    mask: &Volume<f32>,
) -> Result<Volume<bool>, String> {
    grid.check_same(mask.geometry(), tolerance_mm)
        .map_err(|e| format!("mask {} does not match the image grid: {e}", path.display()))?;
    if let Some(bad) = mask.data().iter().find(|v| **v != 0.0 && **v != 1.0) {
        return Err(format!(
            "mask {} is not binary (has value {bad})",
            path.display()
        ));
    }
    Ok(mask.map(|v| *v == 1.0))
}

/// Every voxel of a label map must be a non-negative integer, and a declared value when a
/// declaration is given.
fn check_label_values(
    path: &Path,
    m: &Volume<f32>,
    declared: Option<&[u32]>,
) -> Result<(), String> {
    let mut seen: Vec<f32> = Vec::new();
    let mut last = f32::NAN;
    for v in m.data().iter() {
        // Neighbouring voxels mostly agree: compare with the last value first.
        if *v == last || seen.contains(v) {
            last = *v;
            continue;
        }
        if !(v.is_finite() && *v >= 0.0 && v.fract() == 0.0 && *v <= u32::MAX as f32) {
            return Err(format!(
                "label map {} has value {v}: labels are non-negative integers",
                path.display()
            ));
        }
        if let Some(d) = declared {
            if !d.contains(&(*v as u32)) {
                return Err(format!(
                    "label map {} has value {v}, not a declared label (declared: {d:?})",
                    path.display()
                ));
            }
        }
        seen.push(*v);
        last = *v;
        if seen.len() > 4096 {
            return Err(format!(
                "label map {} has more than 4096 distinct values: not a label map",
                path.display()
            ));
        }
    }
    Ok(())
}

/// The frame an STL header declares with `SPACE=RAS` or `SPACE=LPS` (3D Slicer writes the
/// tag in the 80-byte header of binary files and on the `solid` line of ASCII files).
pub fn stl_header_frame(bytes: &[u8]) -> Option<MeshFrame> {
    let head = &bytes[..bytes.len().min(80)];
    let text = String::from_utf8_lossy(head).to_ascii_uppercase();
    if text.contains("SPACE=LPS") {
        Some(MeshFrame::Lps)
    } else if text.contains("SPACE=RAS") {
        Some(MeshFrame::Ras)
    } else {
        None
    }
}
