//! Datasets: a folder of cases or a JSON manifest, loaded with geometry and label checks.
//!
//! A *folder* dataset holds one sub-folder per case (sorted by name), each with an image
//! `image.nii.gz` (or `image.nii`) and one binary mask per structure, `<target>.nii.gz`
//! (`mc`, `tb`, `nv` for the negvol phantoms). A *manifest* is a JSON file:
//!
//! ```json
//! { "cases": [ { "id": "case_000", "patient": "p000",
//!                "image": "case_000/image.nii.gz",
//!                "labels": { "mc": "case_000/mc.nii.gz", "tb": "case_000/tb.nii.gz" } } ] }
//! ```
//!
//! with paths relative to the manifest's folder (absolute paths are kept). `patient` groups
//! cases for cross-validation (default: the case id). A folder that contains a
//! `dataset.json` of this form is read through it.
//!
//! Loading ([`DatasetSpec::load`]) builds one label map per case from the requested targets:
//! target `t` (in the order given) gets class `t + 1`; where masks overlap the later target
//! wins. Every mask must be binary (0/1) and share the image's grid (shape and affine within
//! [`GEOMETRY_TOLERANCE_MM`]); otherwise the error names the case and the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::Array3;
use negvol_volume::Volume;
use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// Largest difference (mm) allowed between the affines of an image and its masks.
pub const GEOMETRY_TOLERANCE_MM: f64 = 1e-3;

/// Where one case's files are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseSpec {
    /// Case id (unique in the dataset).
    pub id: String,
    /// Patient id, for cross-validation by patient. Defaults to the case id.
    #[serde(default)]
    pub patient: Option<String>,
    /// Image file.
    pub image: PathBuf,
    /// Mask file per structure name.
    #[serde(default)]
    pub labels: BTreeMap<String, PathBuf>,
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
    /// Label map: 0 background, `t + 1` for target `t`.
    pub label: Volume<u8>,
}

fn find_image(dir: &Path) -> Option<PathBuf> {
    ["image.nii.gz", "image.nii"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

impl DatasetSpec {
    /// Read a folder or a manifest file (see the module documentation).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_file() {
            return Self::from_manifest(path);
        }
        let manifest = path.join("dataset.json");
        if manifest.is_file() {
            return Self::from_manifest(&manifest);
        }
        Self::from_folder(path)
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
            for e in rd.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().into_owned();
                let stem = name
                    .strip_suffix(".nii.gz")
                    .or_else(|| name.strip_suffix(".nii"));
                if let Some(stem) = stem {
                    if stem != "image" {
                        labels.insert(stem.to_string(), e.path());
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
                message: "no case folder with an image.nii.gz / image.nii".into(),
            });
        }
        Ok(Self { cases })
    }

    /// Read a JSON manifest; relative paths are resolved against its folder. Besides a
    /// `labels` object, any other string field of a case whose value ends in `.nii` or
    /// `.nii.gz` is a mask named by its key (the negvol-phantom `dataset.json` lists `mc`,
    /// `tb`, `nv` that way).
    pub fn from_manifest(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| TrainError::Json {
                path: path.to_path_buf(),
                source,
            })?;
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
                    let p = p
                        .as_str()
                        .ok_or_else(|| bad(format!("case {id:?}: label {k:?} is not a path")))?;
                    labels.insert(k.clone(), PathBuf::from(p));
                }
            }
            for (k, x) in obj {
                if matches!(k.as_str(), "id" | "patient" | "image" | "labels") {
                    continue;
                }
                if let Some(p) = x.as_str() {
                    if p.ends_with(".nii") || p.ends_with(".nii.gz") {
                        labels.entry(k.clone()).or_insert_with(|| PathBuf::from(p));
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
        let base = path.parent().unwrap_or(Path::new("."));
        for c in &mut spec.cases {
            if c.image.is_relative() {
                c.image = base.join(&c.image);
            }
            for p in c.labels.values_mut() {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for c in &spec.cases {
            if !seen.insert(c.id.clone()) {
                return Err(TrainError::Dataset {
                    path: path.to_path_buf(),
                    message: format!("case id {:?} appears twice", c.id),
                });
            }
        }
        if spec.cases.is_empty() {
            return Err(TrainError::Dataset {
                path: path.to_path_buf(),
                message: "manifest lists no case".into(),
            });
        }
        Ok(spec)
    }

    /// Write this spec as a manifest (atomically).
    pub fn save_manifest(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(self).map_err(|source| TrainError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        crate::checkpoint::write_atomic(path, text.as_bytes())
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

    /// Load every case (in parallel) with the given targets (e.g. `["mc"]`).
    pub fn load(&self, targets: &[String]) -> Result<Vec<Case>> {
        use rayon::prelude::*;
        self.cases
            .par_iter()
            .map(|c| load_case(c, targets))
            .collect()
    }
}

/// Load one case: the image and a label map built from `targets` (see the module docs).
/// An empty `targets` loads the image with an all-background label map.
pub fn load_case(spec: &CaseSpec, targets: &[String]) -> Result<Case> {
    let image =
        negvol_volume::read_nifti::<f32>(&spec.image).map_err(|source| TrainError::Volume {
            context: format!("case {}: image {}", spec.id, spec.image.display()),
            source,
        })?;
    if let Some(bad) = image.data().iter().find(|v| !v.is_finite()) {
        return Err(TrainError::case(
            &spec.id,
            format!(
                "image {} has a non-finite voxel ({bad})",
                spec.image.display()
            ),
        ));
    }
    let mut masks = Vec::with_capacity(targets.len());
    for t in targets {
        let path = spec.labels.get(t).ok_or_else(|| {
            TrainError::case(
                &spec.id,
                format!(
                    "no mask for target {t:?} (has: {:?})",
                    spec.labels.keys().collect::<Vec<_>>()
                ),
            )
        })?;
        let m = negvol_volume::read_nifti::<f32>(path).map_err(|source| TrainError::Volume {
            context: format!("case {}: mask {}", spec.id, path.display()),
            source,
        })?;
        masks.push((path.clone(), m));
    }
    build_case(&spec.id, spec.patient_id(), image, &masks)
}

/// Assemble a case from an image and named binary masks (given as numbers, checked to be
/// 0 or 1 and on the image's grid). Exposed for in-memory datasets.
pub fn build_case(
    id: &str,
    patient: &str,
    image: Volume<f32>,
    masks: &[(PathBuf, Volume<f32>)],
) -> Result<Case> {
    if masks.len() > 254 {
        return Err(TrainError::case(
            id,
            format!("{} targets (at most 254)", masks.len()),
        ));
    }
    let s = image.geometry().shape();
    let mut label = Array3::<u8>::zeros((s[0], s[1], s[2]));
    for (t, (path, m)) in masks.iter().enumerate() {
        image
            .geometry()
            .check_same(m.geometry(), GEOMETRY_TOLERANCE_MM)
            .map_err(|e| {
                TrainError::case(
                    id,
                    format!("mask {} does not match the image grid: {e}", path.display()),
                )
            })?;
        if let Some(bad) = m.data().iter().find(|v| **v != 0.0 && **v != 1.0) {
            return Err(TrainError::case(
                id,
                format!("mask {} is not binary (has value {bad})", path.display()),
            ));
        }
        let class = (t + 1) as u8;
        ndarray::Zip::from(&mut label)
            .and(m.data())
            .for_each(|l, v| {
                if *v == 1.0 {
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
        assert_eq!(s.cases[0].labels["mc"], PathBuf::from("/abs/mc.nii.gz"));
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
