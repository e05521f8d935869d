//! Datasets: a folder of cases, a JSON manifest, or an nnU-Net / Medical Segmentation
//! Decathlon dataset, loaded with geometry and label checks.
//!
//! Images, masks and label maps are volume files of any format negvol reads: NIfTI
//! (`.nii.gz`, `.nii`), NRRD (`.nrrd`, `.nhdr`; 3D Slicer) and MetaImage (`.mha`, `.mhd`; ITK,
//! grand-challenge.org), as SimpleITK-based tools (nnU-Net, MONAI) read them.
//!
//! A *folder* dataset holds one sub-folder per case (sorted by name), each with an image
//! `image.nii.gz` (or `image.nii`, `image.nrrd`, `image.nhdr`, `image.mha`, `image.mhd`, the
//! first of these found, or an `image/` folder holding a DICOM CT series) and one label per
//! structure: a binary mask `<target>.nii.gz` / `.nii` / `.nrrd` / `.seg.nrrd` / `.nhdr` /
//! `.mha` / `.mhd` (`mc`, `tb`, `nv` for the negvol phantoms) or a closed surface mesh
//! `<target>.stl` (world mm, voxelised on the image grid; the paper's expert annotations were
//! STL meshes). A 3D Slicer segmentation with several segments is named in a manifest
//! (`{"path": ..., "segment": "condyle"}`, see [`label`]). A *manifest* is a JSON file:
//!
//! ```json
//! { "cases": [ { "id": "case_000", "patient": "p000",
//!                "image": "case_000/image.nii.gz",
//!                "labels": { "mc": "case_000/mc.nii.gz",
//!                            "tb": {"path": "case_000/seg.nii.gz", "values": [2]} } } ] }
//! ```
//!
//! with paths relative to the manifest's folder (absolute paths are kept); a label is a
//! binary mask, classes of a label map, or a mesh ([`LabelSource`], all forms in
//! [`label`]). `patient` groups cases for cross-validation (default: the case id).
//!
//! [`DatasetSpec::open`] also reads, unchanged, the raw datasets of the two formats most
//! segmentation data already comes in ([`formats`]): **nnU-Net v2** (`dataset.json` with
//! `channel_names`, `labels`, `file_ending` `.nii.gz`, `.nii`, `.nrrd` or `.mha`, ...;
//! `imagesTr/<case>_0000.nii.gz`, `labelsTr/<case>.nii.gz`) and the **Medical Segmentation
//! Decathlon** / nnU-Net v1
//! (`dataset.json` with a `training` list); each declared label becomes a target named as
//! in the file, and every voxel of a label map must hold a declared label.
//! [`export::export_nnunet`] writes any dataset in nnU-Net v2's raw format, with
//! `splits_final.json` holding negvol's patient-grouped folds, so nnU-Net can be trained
//! side by side on the same cases and folds.
//!
//! Loading ([`DatasetSpec::load`]) builds one label map per case from the requested targets:
//! target `t` (in the order given) gets class `t + 1`; where masks overlap the later target
//! wins. Every mask must be binary (0/1) and share the image's grid (shape and affine within
//! [`GEOMETRY_TOLERANCE_MM`]); otherwise the error names the case and the file.
//! [`DatasetSpec::check`] reads every case and reports all problems at once (as nnU-Net's
//! dataset integrity check does) with each case's shape, spacing and structure volumes.

pub mod export;
pub mod formats;
pub mod label;

pub use label::{LabelSource, MeshFrame};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::Array3;
use negvol_volume::Volume;
use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// Largest difference (mm) allowed between the affines of an image and its masks.
pub const GEOMETRY_TOLERANCE_MM: f64 = 1e-3;

/// The structure name of a case's unannotated voxels (sparse annotation; nnU-Net's `ignore`
/// label): an `ignore.nii.gz` mask in a case folder, an `"ignore"` entry of a manifest's
/// `labels`, or the `ignore` label of an nnU-Net v2 dataset. [`load_case`] gives its voxels
/// [`crate::IGNORE_LABEL`] where no target claims them; it is never a target.
pub const IGNORE_STRUCTURE: &str = "ignore";

/// Where one case's files are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseSpec {
    /// Case id (unique in the dataset).
    pub id: String,
    /// Patient id, for cross-validation by patient. Defaults to the case id.
    #[serde(default)]
    pub patient: Option<String>,
    /// Image: a volume file (NIfTI, NRRD, MetaImage), or a folder holding one DICOM CT
    /// series.
    pub image: PathBuf,
    /// Where each structure's voxels come from, by structure name.
    #[serde(default)]
    pub labels: BTreeMap<String, LabelSource>,
}

impl CaseSpec {
    /// The patient id (the case id when none is given).
    pub fn patient_id(&self) -> &str {
        self.patient.as_deref().unwrap_or(&self.id)
    }
}

/// The files of a dataset, before loading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// The cases, in a stable order.
    pub cases: Vec<CaseSpec>,
}

/// One loaded case: image and label map on the same grid.
#[derive(Debug, Clone)]
pub struct Case {
    /// Case id.
    pub id: String,
    /// Patient id.
    pub patient: String,
    /// The image (raw intensities, e.g. HU).
    pub image: Volume<f32>,
    /// Label map: 0 background, `t + 1` for target `t`, [`crate::IGNORE_LABEL`] where the
    /// case leaves voxels unannotated ([`IGNORE_STRUCTURE`]).
    pub label: Volume<u8>,
}

/// The image file of a case folder: `image` with the first volume ending (in
/// [`negvol_volume::SUPPORTED_EXTENSIONS`]'s order, Slicer segmentations excluded) that exists,
/// else an `image` folder (a DICOM series).
fn find_image(dir: &Path) -> Option<PathBuf> {
    negvol_volume::SUPPORTED_EXTENSIONS
        .iter()
        .filter(|ext| **ext != SEGMENTATION_ENDING)
        .map(|ext| dir.join(format!("image{ext}")))
        .find(|p| p.is_file())
        .or_else(|| Some(dir.join("image")).filter(|p| p.is_dir()))
}

/// The ending of 3D Slicer segmentation files, which hold labels, never an image.
const SEGMENTATION_ENDING: &str = ".seg.nrrd";

/// The id of an image file name: the name without its volume ending (`la_003.nii.gz` ->
/// `la_003`); `None` for a Slicer segmentation or a name with no volume ending.
pub(crate) fn image_id(name: &str) -> Option<&str> {
    negvol_volume::split_volume_name(name)
        .filter(|(_, ending)| *ending != SEGMENTATION_ENDING)
        .map(|(stem, _)| stem)
}

/// The structure name of a label file in a case folder (`mc.nii.gz` -> `mc`,
/// `tb.seg.nrrd` -> `tb`, `nv.stl` -> `nv`), if it is one.
fn label_stem(name: &str) -> Option<&str> {
    negvol_volume::split_volume_name(name)
        .map(|(stem, _)| stem)
        .or_else(|| {
            let cut = name.len().checked_sub(".stl".len())?;
            (name.is_char_boundary(cut) && name[cut..].eq_ignore_ascii_case(".stl"))
                .then(|| &name[..cut])
        })
        .filter(|stem| !stem.is_empty() && *stem != "image")
}

/// A folder's entries, sorted, without hidden ones (macOS `._x` files and the like).
pub(crate) fn visible_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut entries: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    entries.sort();
    Ok(entries)
}

/// Read a case's image: a volume file (NIfTI, NRRD, MetaImage), or a DICOM series folder
/// (in HU).
pub fn read_image(id: &str, path: &Path) -> Result<Volume<f32>> {
    let image = negvol_volume::read_image(path).map_err(|source| TrainError::Volume {
        context: format!("case {id}: image {}", path.display()),
        source,
    })?;
    if let Some(bad) = image.data().iter().find(|v| !v.is_finite()) {
        return Err(TrainError::case(
            id,
            format!("image {} has a non-finite voxel ({bad})", path.display()),
        ));
    }
    Ok(image)
}

/// The voxel grid of a case's image without reading its voxels where the format allows
/// (NIfTI, NRRD and MetaImage headers; a DICOM series is read whole).
fn image_geometry(id: &str, path: &Path) -> Result<negvol_volume::Geometry> {
    if path.is_dir() {
        return Ok(read_image(id, path)?.geometry().clone());
    }
    negvol_volume::read_volume_geometry(path).map_err(|source| TrainError::Volume {
        context: format!("case {id}: image {}", path.display()),
        source,
    })
}

impl DatasetSpec {
    /// Read a dataset: a manifest file, or a folder. A folder with a `dataset.json` is read
    /// through it: a negvol manifest (`cases`), an nnU-Net v2 raw dataset (`channel_names`
    /// / `file_ending`) or a Medical Segmentation Decathlon one (`training`); a folder
    /// without one is a folder of case sub-folders.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let manifest = if path.is_file() {
            path.to_path_buf()
        } else {
            let m = path.join("dataset.json");
            if !m.is_file() {
                return Self::from_folder(path);
            }
            m
        };
        let v: serde_json::Value = crate::checkpoint::read_json(&manifest)?;
        match formats::detect(&v) {
            formats::Format::Negvol => Self::from_manifest_value(&manifest, &v),
            formats::Format::NnUnetV2 => formats::from_nnunet_v2(&manifest, &v),
            formats::Format::Decathlon => formats::from_decathlon(&manifest, &v),
            formats::Format::Unknown => Err(TrainError::Dataset {
                path: manifest,
                message: "not a dataset manifest: expected a negvol manifest (\"cases\"), an \
                          nnU-Net v2 dataset.json (\"channel_names\", \"labels\", \
                          \"file_ending\") or a Decathlon one (\"training\")"
                    .into(),
            }),
        }
    }

    /// Scan a folder of case sub-folders.
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let rd = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?;
        let mut subdirs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        let mut cases = Vec::new();
        for sub in subdirs {
            let Some(image) = find_image(&sub) else {
                continue;
            };
            let id = sub
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut labels = BTreeMap::new();
            let rd = std::fs::read_dir(&sub).map_err(|e| TrainError::io(&sub, e))?;
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for path in files {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if let Some(stem) = label_stem(&name) {
                    let source = LabelSource::from(path.clone());
                    if let Some(other) = labels.insert(stem.to_string(), source) {
                        return Err(TrainError::case(
                            &id,
                            format!(
                                "two labels for {stem:?}: {} and {}",
                                other.path().display(),
                                path.display()
                            ),
                        ));
                    }
                }
            }
            cases.push(CaseSpec {
                id,
                patient: None,
                image,
                labels,
            });
        }
        if cases.is_empty() {
            return Err(TrainError::Dataset {
                path: dir.to_path_buf(),
                message: "no case folder with an image.nii.gz / image.nii / image.nrrd / \
                          image.nhdr / image.mha / image.mhd / image/ (DICOM)"
                    .into(),
            });
        }
        Ok(Self { cases })
    }

    /// Read a negvol JSON manifest; relative paths are resolved against its folder. A case's
    /// labels are its `labels` object; a case without one takes every other string field
    /// whose value names a volume file (`.nii`, `.nii.gz`, `.nrrd`, `.nhdr`, `.mha`, `.mhd`)
    /// or `.stl` as a label named by its key (older negvol-phantom manifests list `mc`, `tb`,
    /// `nv` that way).
    pub fn from_manifest(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let v: serde_json::Value = crate::checkpoint::read_json(path)?;
        Self::from_manifest_value(path, &v)
    }

    fn from_manifest_value(path: &Path, v: &serde_json::Value) -> Result<Self> {
        let bad = |message: String| TrainError::Dataset {
            path: path.to_path_buf(),
            message,
        };
        let list = v
            .get("cases")
            .and_then(|c| c.as_array())
            .ok_or_else(|| bad("no \"cases\" array".into()))?;
        let mut spec = DatasetSpec {
            cases: Vec::with_capacity(list.len()),
        };
        for (n, c) in list.iter().enumerate() {
            let obj = c
                .as_object()
                .ok_or_else(|| bad(format!("case #{n} is not an object")))?;
            let field = |k: &str| obj.get(k).and_then(|x| x.as_str()).map(str::to_string);
            let id = field("id").ok_or_else(|| bad(format!("case #{n} has no string \"id\"")))?;
            let image = field("image")
                .ok_or_else(|| bad(format!("case {id:?} has no string \"image\"")))?;
            let mut labels = BTreeMap::new();
            if let Some(l) = obj.get("labels") {
                let l = l
                    .as_object()
                    .ok_or_else(|| bad(format!("case {id:?}: \"labels\" is not an object")))?;
                for (k, p) in l {
                    let source: LabelSource = serde_json::from_value(p.clone())
                        .map_err(|e| bad(format!("case {id:?}: label {k:?}: {e}")))?;
                    labels.insert(k.clone(), source);
                }
            }
            // Without a `labels` object, string fields naming label files are labels.
            if !obj.contains_key("labels") {
                for (k, x) in obj {
                    if matches!(k.as_str(), "id" | "patient" | "image") {
                        continue;
                    }
                    if let Some(p) = x.as_str().filter(|p| label_stem(p).is_some()) {
                        labels.insert(k.clone(), LabelSource::from(PathBuf::from(p)));
                    }
                }
            }
            spec.cases.push(CaseSpec {
                id,
                patient: field("patient"),
                image: PathBuf::from(image),
                labels,
            });
        }
        spec.resolve_relative(path.parent().unwrap_or(Path::new(".")));
        spec.check_ids(path)?;
        Ok(spec)
    }

    /// Make relative image and label paths relative to `base`.
    pub(crate) fn resolve_relative(&mut self, base: &Path) {
        for c in &mut self.cases {
            if c.image.is_relative() {
                c.image = base.join(&c.image);
            }
            for l in c.labels.values_mut() {
                let p = l.path_mut();
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
    }

    /// Case ids must be unique and the list non-empty.
    pub(crate) fn check_ids(&self, path: &Path) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for c in &self.cases {
            if !seen.insert(c.id.clone()) {
                return Err(TrainError::Dataset {
                    path: path.to_path_buf(),
                    message: format!("case id {:?} appears twice", c.id),
                });
            }
        }
        if self.cases.is_empty() {
            return Err(TrainError::Dataset {
                path: path.to_path_buf(),
                message: "lists no case".into(),
            });
        }
        Ok(())
    }

    /// Write this spec as a negvol manifest (atomically).
    pub fn save_manifest(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::checkpoint::write_json(path.as_ref(), self)
    }

    /// The sub-dataset of the given case indices.
    pub fn subset(&self, indices: &[usize]) -> Self {
        Self {
            cases: indices
                .iter()
                .filter_map(|&i| self.cases.get(i).cloned())
                .collect(),
        }
    }

    /// The structure names every case has a label for (sorted), [`IGNORE_STRUCTURE`] left out.
    pub fn common_targets(&self) -> Vec<String> {
        let mut it = self.cases.iter();
        let Some(first) = it.next() else {
            return Vec::new();
        };
        let mut names: Vec<String> = first
            .labels
            .keys()
            .filter(|n| *n != IGNORE_STRUCTURE)
            .cloned()
            .collect();
        for c in it {
            names.retain(|n| c.labels.contains_key(n));
        }
        names
    }

    /// Load every case (in parallel) with the given targets (e.g. `["mc"]`). When several
    /// cases fail, the error is the first failing case's in dataset order (deterministic,
    /// whichever thread failed first); [`check`](Self::check) lists them all.
    pub fn load(&self, targets: &[String]) -> Result<Vec<Case>> {
        use rayon::prelude::*;
        let loaded: Vec<Result<Case>> = self
            .cases
            .par_iter()
            .map(|c| load_case(c, targets))
            .collect();
        loaded.into_iter().collect()
    }

    /// Read every case (in parallel, one at a time in memory per thread) with the given
    /// targets and report each one's grid and structure volumes, or what is wrong with it.
    /// Unlike [`load`](Self::load) this does not stop at the first bad case.
    pub fn check(&self, targets: &[String]) -> Vec<CaseCheck> {
        use rayon::prelude::*;
        self.cases
            .par_iter()
            .map(|c| CaseCheck {
                id: c.id.clone(),
                result: load_case(c, targets)
                    .map(|case| CaseSummary::of(&case, targets))
                    .map_err(|e| e.to_string()),
            })
            .collect()
    }
}

/// One case's grid and structure sizes (see [`DatasetSpec::check`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseSummary {
    /// Patient id.
    pub patient: String,
    /// Image shape `[ni, nj, nk]`.
    pub shape: [usize; 3],
    /// Voxel spacing (mm).
    pub spacing: [f64; 3],
    /// Orientation code of the voxel axes, e.g. `RAS`.
    pub orientation: String,
    /// Image intensity range `[min, max]`.
    pub intensity_range: [f32; 2],
    /// Per target (in the order asked): voxels of its class in the label map and their
    /// volume in mm3 (after overlaps are resolved: the later target wins).
    pub structures: Vec<(String, usize, f64)>,
    /// Voxels the case leaves unannotated ([`crate::IGNORE_LABEL`], sparse annotation).
    pub unannotated_voxels: usize,
}

impl CaseSummary {
    fn of(case: &Case, targets: &[String]) -> Self {
        let g = case.image.geometry();
        let (lo, hi) = case
            .image
            .data()
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        let mut counts = vec![0usize; targets.len() + 1];
        let mut unannotated = 0;
        for l in case.label.data().iter() {
            if *l == crate::IGNORE_LABEL {
                unannotated += 1;
            } else if let Some(c) = counts.get_mut(*l as usize) {
                *c += 1;
            }
        }
        Self {
            patient: case.patient.clone(),
            shape: g.shape(),
            spacing: g.spacing(),
            orientation: g.orientation_code(),
            intensity_range: [lo, hi],
            structures: targets
                .iter()
                .enumerate()
                .map(|(t, name)| {
                    let n = counts[t + 1];
                    (name.clone(), n, n as f64 * g.voxel_volume_mm3())
                })
                .collect(),
            unannotated_voxels: unannotated,
        }
    }
}

/// The outcome of checking one case (see [`DatasetSpec::check`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseCheck {
    /// Case id.
    pub id: String,
    /// Its summary, or the error loading it gave.
    pub result: std::result::Result<CaseSummary, String>,
}

/// Something in a dataset that loads but deserves a look (see [`review`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub enum DatasetWarning {
    /// An image whose darkest voxel is above -500: a CT in Hounsfield units shows air near
    /// -1000. Stored values without the DICOM rescale (the seed paper's inputs), an MR image or
    /// a crop without air look like this; intensity windows and normalisations in HU would
    /// then be wrong.
    NotHounsfield {
        /// Case id.
        id: String,
        /// Its darkest voxel.
        min: f32,
    },
    /// A structure with no voxel in a case.
    EmptyStructure {
        /// Case id.
        id: String,
        /// The structure.
        target: String,
    },
    /// A structure more than 4 times larger or smaller than its median over the cases
    /// (a wrong label value, a mask of another structure, a wrong unit or spacing).
    VolumeOutlier {
        /// Case id.
        id: String,
        /// The structure.
        target: String,
        /// Its volume in this case (mm3).
        mm3: f64,
        /// The median over the cases where it is not empty (mm3).
        median_mm3: f64,
    },
    /// The voxel spacing along one anatomical axis differs more than twice across cases:
    /// resample to a common spacing (`TrainConfig::target_spacing`, or `plan`).
    SpacingSpread {
        /// Anatomical axis: 0 = R/L, 1 = A/P, 2 = S/I.
        axis: usize,
        /// Smallest spacing (mm).
        min: f64,
        /// Largest spacing (mm).
        max: f64,
    },
    /// Cases are stored in more than one orientation (harmless for runs that reorient,
    /// `TrainConfig::orientation`, the default; harmful in stored order).
    MixedOrientation {
        /// Orientation codes and how many cases have each.
        codes: Vec<(String, usize)>,
    },
}

impl std::fmt::Display for DatasetWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotHounsfield { id, min } => write!(
                f,
                "{id}: darkest voxel {min} > -500: not a CT in HU (no rescale? MR? no air?)"
            ),
            Self::EmptyStructure { id, target } => write!(f, "{id}: {target} is empty"),
            Self::VolumeOutlier {
                id,
                target,
                mm3,
                median_mm3,
            } => write!(
                f,
                "{id}: {target} is {mm3:.0} mm3, more than 4x off its median {median_mm3:.0} mm3"
            ),
            Self::SpacingSpread { axis, min, max } => write!(
                f,
                "spacing along {} ranges {min:.3}..{max:.3} mm across cases: resample to one \
                 spacing (train --spacing, or plan)",
                ["R/L", "A/P", "S/I"][(*axis).min(2)]
            ),
            Self::MixedOrientation { codes } => {
                let c: Vec<String> = codes.iter().map(|(c, n)| format!("{n} {c}")).collect();
                write!(
                    f,
                    "cases stored in several orientations ({}): fine for runs that reorient \
                     (the default), wrong with --orientation none",
                    c.join(", ")
                )
            }
        }
    }
}

/// Look over the summaries of [`DatasetSpec::check`] for what loads but is probably wrong
/// (each [`DatasetWarning`] says what and why). Cases that failed to load are skipped.
pub fn review(checks: &[CaseCheck]) -> Vec<DatasetWarning> {
    let ok: Vec<(&str, &CaseSummary)> = checks
        .iter()
        .filter_map(|c| c.result.as_ref().ok().map(|s| (c.id.as_str(), s)))
        .collect();
    let mut out = Vec::new();
    for (id, s) in &ok {
        if s.intensity_range[0] > -500.0 {
            out.push(DatasetWarning::NotHounsfield {
                id: id.to_string(),
                min: s.intensity_range[0],
            });
        }
        for (t, n, _) in &s.structures {
            if *n == 0 {
                out.push(DatasetWarning::EmptyStructure {
                    id: id.to_string(),
                    target: t.clone(),
                });
            }
        }
    }
    // Volume outliers per structure (structures in the order of the first case).
    if let Some((_, first)) = ok.first() {
        for (t, _, _) in &first.structures {
            let vols: Vec<(&str, f64)> = ok
                .iter()
                .filter_map(|(id, s)| {
                    s.structures
                        .iter()
                        .find(|(n, v, _)| n == t && *v > 0)
                        .map(|(_, _, mm3)| (*id, *mm3))
                })
                .collect();
            if vols.len() < 3 {
                continue;
            }
            let median = crate::plan::median(vols.iter().map(|v| v.1).collect());
            for (id, v) in vols {
                if v > 4.0 * median || v < median / 4.0 {
                    out.push(DatasetWarning::VolumeOutlier {
                        id: id.to_string(),
                        target: t.clone(),
                        mm3: v,
                        median_mm3: median,
                    });
                }
            }
        }
    }
    // Spacing per anatomical axis, and orientations.
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [0.0f64; 3];
    let mut codes: Vec<(String, usize)> = Vec::new();
    for (_, s) in &ok {
        if let Ok((world, _)) = negvol_volume::parse_orientation_code(&s.orientation) {
            for a in 0..3 {
                lo[world[a]] = lo[world[a]].min(s.spacing[a]);
                hi[world[a]] = hi[world[a]].max(s.spacing[a]);
            }
        }
        match codes.iter_mut().find(|(c, _)| *c == s.orientation) {
            Some((_, n)) => *n += 1,
            None => codes.push((s.orientation.clone(), 1)),
        }
    }
    for axis in 0..3 {
        if hi[axis] > 2.0 * lo[axis] {
            out.push(DatasetWarning::SpacingSpread {
                axis,
                min: lo[axis],
                max: hi[axis],
            });
        }
    }
    if codes.len() > 1 {
        out.push(DatasetWarning::MixedOrientation { codes });
    }
    out
}

impl CaseSpec {
    /// Read one structure of this case as a mask on the image's grid (a mesh is voxelised
    /// on it; a mask or label map must share it). The image's voxels are not read when it
    /// is a file (only its header).
    pub fn read_mask(&self, target: &str) -> Result<Volume<bool>> {
        let source = self.label(target)?;
        let grid = image_geometry(&self.id, &self.image)?;
        label::read_label(
            source,
            &grid,
            GEOMETRY_TOLERANCE_MM,
            &mut label::LabelMapCache::default(),
        )
        .map_err(|m| TrainError::case(&self.id, m))
    }

    fn label(&self, target: &str) -> Result<&LabelSource> {
        self.labels.get(target).ok_or_else(|| {
            TrainError::case(
                &self.id,
                format!(
                    "no label for target {target:?} (has: {:?})",
                    self.labels.keys().collect::<Vec<_>>()
                ),
            )
        })
    }
}

/// Load one case: the image and a label map built from `targets` (see the module docs).
/// An empty `targets` loads the image with an all-background label map.
/// Where the case has an [`IGNORE_STRUCTURE`], its voxels that no target claims become
/// [`crate::IGNORE_LABEL`].
pub fn load_case(spec: &CaseSpec, targets: &[String]) -> Result<Case> {
    if targets.iter().any(|t| t == IGNORE_STRUCTURE) {
        return Err(TrainError::case(
            &spec.id,
            "\"ignore\" marks unannotated voxels; it is not a structure to segment",
        ));
    }
    let image = read_image(&spec.id, &spec.image)?;
    let mut cache = label::LabelMapCache::default();
    let mut read = |source| {
        label::read_label(source, image.geometry(), GEOMETRY_TOLERANCE_MM, &mut cache)
            .map_err(|m| TrainError::case(&spec.id, m))
    };
    let mut masks = Vec::with_capacity(targets.len());
    for t in targets {
        masks.push(read(spec.label(t)?)?);
    }
    let ignore = match (targets.is_empty(), spec.labels.get(IGNORE_STRUCTURE)) {
        (false, Some(source)) => Some(read(source)?),
        _ => None,
    };
    let mut case = assemble(&spec.id, spec.patient_id(), image, &masks)?;
    if let Some(ignore) = ignore {
        ndarray::Zip::from(case.label.view_mut())
            .and(ignore.data())
            .for_each(|l, i| {
                if *i && *l == 0 {
                    *l = crate::IGNORE_LABEL;
                }
            });
    }
    Ok(case)
}

/// Assemble a case from an image and named binary masks (given as numbers, checked to be
/// 0 or 1 and on the image's grid). Exposed for in-memory datasets.
pub fn build_case(
    id: &str,
    patient: &str,
    image: Volume<f32>,
    masks: &[(PathBuf, Volume<f32>)],
) -> Result<Case> {
    let bool_masks = masks
        .iter()
        .map(|(path, m)| {
            label::binary_mask_on(image.geometry(), GEOMETRY_TOLERANCE_MM, path, m)
                .map_err(|e| TrainError::case(id, e))
        })
        .collect::<Result<Vec<_>>>()?;
    assemble(id, patient, image, &bool_masks)
}

/// Target `t` gets class `t + 1`; the later target wins where masks overlap. The masks are
/// on the image's grid.
fn assemble(id: &str, patient: &str, image: Volume<f32>, masks: &[Volume<bool>]) -> Result<Case> {
    if masks.len() > 254 {
        return Err(TrainError::case(
            id,
            format!("{} targets (at most 254)", masks.len()),
        ));
    }
    let s = image.geometry().shape();
    let mut label = Array3::<u8>::zeros((s[0], s[1], s[2]));
    for (t, m) in masks.iter().enumerate() {
        if m.geometry().shape() != s {
            return Err(TrainError::case(
                id,
                "a mask's shape differs from the image's",
            ));
        }
        let class = (t + 1) as u8;
        ndarray::Zip::from(&mut label)
            .and(m.data())
            .for_each(|l, v| {
                if *v {
                    *l = class;
                }
            });
    }
    let label = image
        .with_data(label)
        .map_err(|source| TrainError::Volume {
            context: format!("case {id}: label map"),
            source,
        })?;
    Ok(Case {
        id: id.to_string(),
        patient: patient.to_string(),
        image,
        label,
    })
}

/// K-fold cross-validation split by patient: every patient's cases fall in the same fold.
/// Patients are shuffled with `seed` and dealt round-robin. Returns `(train, validation)`
/// case-index lists, one pair per fold.
pub fn kfold_by_patient(
    patients: &[&str],
    k: usize,
    seed: u64,
) -> Result<Vec<(Vec<usize>, Vec<usize>)>> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut ids: Vec<&str> = patients.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if k < 2 || k > ids.len() {
        return Err(TrainError::Config(format!(
            "{k}-fold cross-validation needs 2 <= k <= number of patients ({})",
            ids.len()
        )));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    ids.shuffle(&mut rng);
    let fold_of: std::collections::HashMap<&str, usize> =
        ids.iter().enumerate().map(|(i, p)| (*p, i % k)).collect();
    Ok((0..k)
        .map(|f| {
            let (val, train): (Vec<usize>, Vec<usize>) =
                (0..patients.len()).partition(|&i| fold_of[patients[i]] == f);
            (train, val)
        })
        .collect())
}

/// The images to segment in a folder, as `(id, path)` sorted by id: every volume file
/// (`<id>.nii.gz`, `.nii`, `.nrrd`, `.nhdr`, `.mha`, `.mhd`; 3D Slicer segmentations
/// `*.seg.nrrd` are not images and are skipped), and every sub-folder, as its `image.*`
/// (negvol's case folders) or else as a DICOM series (id = the folder's name). When every
/// image file ends in `_0000` (nnU-Net's `imagesTs` naming, channel 0) the suffix is dropped
/// from the ids, as `nnUNetv2_predict` names its outputs. Hidden entries are skipped.
///
/// # Errors
/// An unreadable folder, nnU-Net channel files other than `_0000` (negvol networks take one
/// channel), two entries with one id, or a folder with no image.
pub fn list_images(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let bad = |message: String| TrainError::Dataset {
        path: dir.to_path_buf(),
        message,
    };
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for p in visible_entries(dir)? {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p.is_dir() {
            out.push((name, find_image(&p).unwrap_or(p)));
        } else if let Some(id) = image_id(&name) {
            files.push((id.to_string(), p));
        }
    }
    let channel = |id: &str| {
        let (stem, suffix) = id.split_at(id.len().saturating_sub(5));
        (suffix.len() == 5
            && suffix.starts_with('_')
            && suffix[1..].bytes().all(|b| b.is_ascii_digit()))
        .then(|| (stem.to_string(), suffix[1..].to_string()))
    };
    let nnunet = !files.is_empty() && files.iter().all(|(id, _)| channel(id).is_some());
    for (id, p) in files {
        if nnunet {
            let (stem, ch) = channel(&id).unwrap_or_default();
            if ch != "0000" {
                return Err(bad(format!(
                    "{}: channel {ch} of an nnU-Net multi-channel image; negvol networks take \
                     one channel",
                    p.display()
                )));
            }
            out.push((stem, p));
        } else {
            out.push((id, p));
        }
    }
    out.sort();
    if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(bad(format!(
            "two images with id {:?}: {} and {}",
            w[0].0,
            w[0].1.display(),
            w[1].1.display()
        )));
    }
    if out.is_empty() {
        return Err(bad(
            "no image (NIfTI/NRRD/MetaImage file, case folder or DICOM series folder)".into(),
        ));
    }
    Ok(out)
}

/// A 64-bit FNV-1a digest (16 hex digits) of an image's grid (shape, affine) and voxel values
/// (their f32 bits). Stable across platforms and releases; it tells whether a case id still
/// names the image a model was trained on (see [`CaseRecord`]).
pub fn image_digest(image: &Volume<f32>) -> String {
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    let g = image.geometry();
    for n in g.shape() {
        eat(&(n as u64).to_le_bytes());
    }
    for row in g.affine() {
        for x in row {
            eat(&x.to_le_bytes());
        }
    }
    for v in image.data().iter() {
        eat(&v.to_bits().to_le_bytes());
    }
    format!("{h:016x}")
}

/// One case as a training run saw it: written by `train` as `OUT/cases.json`, so that a later
/// evaluation of the run can check it is scoring the same images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRecord {
    /// Case id.
    pub id: String,
    /// Patient id.
    pub patient: String,
    /// [`image_digest`] of its image.
    pub image_digest: String,
}

impl CaseRecord {
    /// The record of a loaded case.
    pub fn of(case: &Case) -> Self {
        Self {
            id: case.id.clone(),
            patient: case.patient.clone(),
            image_digest: image_digest(&case.image),
        }
    }

    /// The records of many cases, in order, digested in parallel (one pass over each
    /// image's voxels).
    pub fn of_all(cases: &[Case]) -> Vec<Self> {
        use rayon::prelude::*;
        cases.par_iter().map(Self::of).collect()
    }
}

/// Read cross-validation folds in nnU-Net's `splits_final.json` form
/// (`[{"train": [ids], "val": [ids]}, ...]`) as `(train, validation)` index lists into
/// `ids` (the dataset's case ids, in order).
///
/// # Errors
/// An id that is not in the dataset, a case in both lists of one fold, an empty training
/// or validation list, or (with `patients`, one per id) a patient with cases on both sides
/// of a fold (leakage); each error names the fold and the case. `patients` of another
/// length than `ids` is a `Config` error.
pub fn read_splits(
    path: &Path,
    ids: &[&str],
    patients: Option<&[&str]>,
) -> Result<Vec<(Vec<usize>, Vec<usize>)>> {
    #[derive(Deserialize)]
    struct Split {
        train: Vec<String>,
        val: Vec<String>,
    }
    let bad = |message: String| TrainError::Dataset {
        path: path.to_path_buf(),
        message,
    };
    if let Some(p) = patients.filter(|p| p.len() != ids.len()) {
        return Err(TrainError::Config(format!(
            "read_splits: {} patient ids for {} case ids",
            p.len(),
            ids.len()
        )));
    }
    let splits: Vec<Split> = crate::checkpoint::read_json(path)?;
    if splits.is_empty() {
        return Err(bad("no fold".into()));
    }
    let index: std::collections::HashMap<&str, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut folds = Vec::with_capacity(splits.len());
    for (f, s) in splits.iter().enumerate() {
        let resolve = |list: &[String], what: &str| -> Result<Vec<usize>> {
            if list.is_empty() {
                return Err(bad(format!("fold {f}: empty {what} list")));
            }
            list.iter()
                .map(|id| {
                    index.get(id.as_str()).copied().ok_or_else(|| {
                        bad(format!(
                            "fold {f}: {what} case {id:?} is not in the dataset"
                        ))
                    })
                })
                .collect()
        };
        let (train, val) = (resolve(&s.train, "train")?, resolve(&s.val, "val")?);
        for v in &val {
            if train.contains(v) {
                return Err(bad(format!(
                    "fold {f}: case {:?} is in both train and val",
                    ids[*v]
                )));
            }
            if let Some(p) = patients {
                if let Some(t) = train.iter().find(|t| p[**t] == p[*v]) {
                    return Err(bad(format!(
                        "fold {f}: patient {:?} has cases in train ({:?}) and val ({:?})",
                        p[*v], ids[*t], ids[*v]
                    )));
                }
            }
        }
        folds.push((train, val));
    }
    Ok(folds)
}

/// Write folds (index lists into `ids`) as nnU-Net's `splits_final.json`, atomically.
pub fn write_splits(path: &Path, ids: &[&str], folds: &[(Vec<usize>, Vec<usize>)]) -> Result<()> {
    let names =
        |idx: &[usize]| -> Vec<&str> { idx.iter().filter_map(|&i| ids.get(i).copied()).collect() };
    let value: Vec<serde_json::Value> = folds
        .iter()
        .map(|(t, v)| serde_json::json!({"train": names(t), "val": names(v)}))
        .collect();
    crate::checkpoint::write_json(path, &value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use negvol_volume::Geometry;

    #[test]
    fn kfold_keeps_patients_together() {
        let p = ["a", "a", "b", "c", "c", "c", "d", "e"];
        let folds = kfold_by_patient(&p, 3, 7).unwrap();
        assert_eq!(folds.len(), 3);
        let mut all_val: Vec<usize> = folds.iter().flat_map(|f| f.1.clone()).collect();
        all_val.sort();
        assert_eq!(all_val, (0..8).collect::<Vec<_>>());
        for (train, val) in &folds {
            for v in val {
                assert!(train.iter().all(|t| p[*t] != p[*v]));
            }
            assert_eq!(train.len() + val.len(), 8);
        }
        assert!(kfold_by_patient(&p, 6, 0).is_err());
    }

    #[test]
    fn review_flags_what_loads_but_looks_wrong() {
        let case =
            |id: &str, min: f32, spacing: [f64; 3], orientation: &str, mc: usize| CaseCheck {
                id: id.into(),
                result: Ok(CaseSummary {
                    patient: id.into(),
                    shape: [10; 3],
                    spacing,
                    orientation: orientation.into(),
                    intensity_range: [min, 2000.0],
                    structures: vec![("mc".into(), mc, mc as f64)],
                    unannotated_voxels: 0,
                }),
            };
        let fine = vec![
            case("a", -1024.0, [0.4; 3], "RAS", 100),
            case("b", -1000.0, [0.5; 3], "RAS", 120),
            case("c", -990.0, [0.4; 3], "RAS", 90),
        ];
        assert_eq!(review(&fine), vec![]);
        let mut bad = fine.clone();
        bad.push(case("raw", 0.0, [0.4, 0.4, 1.0], "LPS", 0));
        bad.push(case("big", -1000.0, [0.4; 3], "PSL", 1000));
        bad.push(CaseCheck {
            id: "broken".into(),
            result: Err("no image".into()),
        });
        let w = review(&bad);
        let text: Vec<String> = w.iter().map(|w| w.to_string()).collect();
        assert!(w.contains(&DatasetWarning::NotHounsfield {
            id: "raw".into(),
            min: 0.0
        }));
        assert!(w.contains(&DatasetWarning::EmptyStructure {
            id: "raw".into(),
            target: "mc".into()
        }));
        assert!(w.iter().any(|w| matches!(w,
            DatasetWarning::VolumeOutlier { id, median_mm3, .. } if id == "big" && *median_mm3 == 110.0)));
        // raw's 1.0 mm is along S/I (LPS keeps S on k); PSL's axes are permuted, spacing 0.4.
        assert!(w.contains(&DatasetWarning::SpacingSpread {
            axis: 2,
            min: 0.4,
            max: 1.0
        }));
        assert!(!w
            .iter()
            .any(|w| matches!(w, DatasetWarning::SpacingSpread { axis: 0 | 1, .. })));
        assert!(
            text.iter().any(|t| t.contains("3 RAS, 1 LPS, 1 PSL")),
            "{text:?}"
        );
        assert_eq!(w.len(), 5, "{text:?}");
    }

    #[test]
    fn list_images_reads_nnunet_negvol_and_dicom_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let touch = |p: &str| {
            let p = d.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        };
        // nnU-Net imagesTs: the channel suffix is dropped.
        touch("ts/a_0000.nii.gz");
        touch("ts/b_0000.nii");
        touch("ts/.hidden_0000.nii.gz");
        touch("ts/notes.txt");
        let l = list_images(&d.join("ts")).unwrap();
        let ids: Vec<&str> = l.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(l[1].1, d.join("ts/b_0000.nii"));
        // A second channel is refused.
        touch("ts/a_0001.nii.gz");
        let e = list_images(&d.join("ts")).unwrap_err().to_string();
        assert!(e.contains("channel 0001"), "{e}");
        // Mixed names keep their ids; case folders give their image; other folders are
        // DICOM series.
        touch("mix/scan_0000.nii.gz");
        touch("mix/other.nii.gz");
        touch("mix/case_007/image.nii.gz");
        touch("mix/case_007/mc.nii.gz");
        touch("mix/patient9/IM0001.dcm");
        let l = list_images(&d.join("mix")).unwrap();
        assert_eq!(
            l,
            vec![
                ("case_007".into(), d.join("mix/case_007/image.nii.gz")),
                ("other".into(), d.join("mix/other.nii.gz")),
                ("patient9".into(), d.join("mix/patient9")),
                ("scan_0000".into(), d.join("mix/scan_0000.nii.gz")),
            ]
        );
        touch("dup/x.nii");
        touch("dup/x.nii.gz");
        let e = list_images(&d.join("dup")).unwrap_err().to_string();
        assert!(e.contains("two images with id \"x\""), "{e}");
        std::fs::create_dir_all(d.join("empty")).unwrap();
        assert!(list_images(&d.join("empty")).is_err());
        // NRRD and MetaImage files are images (their data files and Slicer segmentations
        // are not); case folders may hold any of them.
        touch("fmt/a_0000.nrrd");
        touch("fmt/b_0000.mha");
        touch("fmt/c_0000.mhd");
        touch("fmt/c_0000.zraw");
        touch("fmt/d_0000.NHDR");
        touch("fmt/d_0000.raw.gz");
        touch("fmt/Segmentation.seg.nrrd");
        touch("fmt/case_1/image.mha");
        touch("fmt/case_1/mc.seg.nrrd");
        let l = list_images(&d.join("fmt")).unwrap();
        assert_eq!(
            l,
            vec![
                ("a".into(), d.join("fmt/a_0000.nrrd")),
                ("b".into(), d.join("fmt/b_0000.mha")),
                ("c".into(), d.join("fmt/c_0000.mhd")),
                ("case_1".into(), d.join("fmt/case_1/image.mha")),
                ("d".into(), d.join("fmt/d_0000.NHDR")),
            ]
        );
    }

    #[test]
    fn label_files_of_every_volume_format_name_their_structure() {
        for (name, stem) in [
            ("mc.nii.gz", Some("mc")),
            ("mc.NII", Some("mc")),
            ("tb.nrrd", Some("tb")),
            ("tb.seg.nrrd", Some("tb")),
            ("nv.nhdr", Some("nv")),
            ("nv.mha", Some("nv")),
            ("nv.mhd", Some("nv")),
            ("mc.stl", Some("mc")),
            ("image.mha", None),
            ("nv.raw", None),
            ("nv.zraw", None),
            ("notes.txt", None),
            ("mc.STL", Some("mc")),
            (".stl", None),
            (".nii.gz", None),
        ] {
            assert_eq!(label_stem(name), stem, "{name}");
        }
    }

    #[test]
    fn image_ids_strip_every_image_ending_and_skip_segmentations() {
        for (name, id) in [
            ("la_003.nii.gz", Some("la_003")),
            ("la_003_0000.NII", Some("la_003_0000")),
            ("ct.nrrd", Some("ct")),
            ("ct.nhdr", Some("ct")),
            ("ct.mha", Some("ct")),
            ("ct.mhd", Some("ct")),
            ("tb.seg.nrrd", None),
            ("ct.raw", None),
        ] {
            assert_eq!(image_id(name), id, "{name}");
        }
        // Every nnU-Net file ending negvol accepts is an image ending, and vice versa.
        let mut accepted: Vec<&str> = formats::FILE_ENDINGS.to_vec();
        let mut images: Vec<&str> = negvol_volume::SUPPORTED_EXTENSIONS
            .iter()
            .copied()
            .filter(|e| *e != SEGMENTATION_ENDING)
            .collect();
        accepted.sort_unstable();
        images.sort_unstable();
        assert_eq!(accepted, images);
    }

    #[test]
    fn image_digest_sees_values_and_grid() {
        let g = Geometry::from_spacing([3, 2, 2], [1.0; 3]).unwrap();
        let a = Volume::<f32>::zeros(g.clone());
        let d = image_digest(&a);
        assert_eq!(d.len(), 16);
        assert_eq!(d, image_digest(&a.clone()));
        let mut b = a.clone();
        b.view_mut()[[2, 1, 1]] = 1.0;
        assert_ne!(image_digest(&b), d);
        let c = Volume::<f32>::zeros(Geometry::from_spacing([3, 2, 2], [1.0, 1.0, 1.5]).unwrap());
        assert_ne!(image_digest(&c), d);
        // -0.0 and 0.0 are different bits: a digest of values, not of their order.
        let mut z = a.clone();
        z.view_mut()[[0, 0, 0]] = -0.0;
        assert_ne!(image_digest(&z), d);
    }

    #[test]
    fn splits_read_back_and_refuse_leaks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("splits_final.json");
        let ids = ["a", "b", "c", "d"];
        let folds = vec![(vec![0, 1], vec![2, 3]), (vec![2, 3], vec![0, 1])];
        write_splits(&p, &ids, &folds).unwrap();
        assert_eq!(read_splits(&p, &ids, None).unwrap(), folds);
        let e = read_splits(&p, &ids, Some(&["p0"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 patient ids for 4 case ids"), "{e}");
        // a and c are one patient: fold 0 has them on both sides.
        let e = read_splits(&p, &ids, Some(&["p0", "p1", "p0", "p2"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fold 0") && e.contains("patient \"p0\""), "{e}");
        for (text, want) in [
            (
                r#"[{"train": ["a"], "val": ["z"]}]"#,
                "\"z\" is not in the dataset",
            ),
            (
                r#"[{"train": ["a", "b"], "val": ["b"]}]"#,
                "both train and val",
            ),
            (r#"[{"train": [], "val": ["b"]}]"#, "empty train"),
            (r#"[]"#, "no fold"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = read_splits(&p, &ids, None).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn build_case_checks_masks() {
        let g = Geometry::from_spacing([2, 2, 2], [1.0; 3]).unwrap();
        let img = Volume::<f32>::zeros(g.clone());
        let mut m1 = Volume::<f32>::zeros(g.clone());
        m1.view_mut()[[0, 0, 0]] = 1.0;
        m1.view_mut()[[1, 1, 1]] = 1.0;
        let mut m2 = Volume::<f32>::zeros(g.clone());
        m2.view_mut()[[1, 1, 1]] = 1.0;
        let c = build_case(
            "c1",
            "p",
            img.clone(),
            &[("a".into(), m1.clone()), ("b".into(), m2)],
        )
        .unwrap();
        assert_eq!(c.label.data()[[0, 0, 0]], 1);
        assert_eq!(c.label.data()[[1, 1, 1]], 2);
        let mut bad = m1.clone();
        bad.view_mut()[[0, 1, 0]] = 2.0;
        let e = build_case("c7", "p", img.clone(), &[("x/mc.nii.gz".into(), bad)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c7") && e.contains("mc.nii.gz") && e.contains("not binary"),
            "{e}"
        );
        let g2 = Geometry::from_spacing([2, 2, 2], [1.0, 1.0, 1.5]).unwrap();
        let off = Volume::<f32>::zeros(g2);
        let e = build_case("c8", "p", img, &[("tb.nii".into(), off)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c8") && e.contains("tb.nii") && e.contains("grid"),
            "{e}"
        );
    }

    #[test]
    fn manifest_resolves_relative_paths() {
        let dir =
            std::env::temp_dir().join(format!("negvol-train-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dataset.json");
        std::fs::write(
            &path,
            r#"{"cases":[{"id":"a","image":"a/image.nii.gz","labels":{"mc":"/abs/mc.nii.gz"}}]}"#,
        )
        .unwrap();
        let s = DatasetSpec::open(&path).unwrap();
        assert_eq!(s.cases[0].image, dir.join("a/image.nii.gz"));
        assert_eq!(
            s.cases[0].labels["mc"],
            LabelSource::Mask(PathBuf::from("/abs/mc.nii.gz"))
        );
        assert_eq!(s.cases[0].patient_id(), "a");
        std::fs::write(
            &path,
            r#"{"cases":[{"id":"a","image":"x"},{"id":"a","image":"y"}]}"#,
        )
        .unwrap();
        assert!(DatasetSpec::from_manifest(&path)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
