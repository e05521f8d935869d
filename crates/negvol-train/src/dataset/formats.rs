//! Reading the raw datasets of nnU-Net v2 and of the Medical Segmentation Decathlon.
//!
//! Both keep one integer label map per case; each declared foreground label becomes a
//! structure ([`LabelSource::LabelMap`]) named as in `dataset.json`, and the declared values
//! are checked on load (a voxel holding an undeclared value is an error naming the case and
//! the file).
//!
//! **nnU-Net v2** (`nnUNet_raw/DatasetXXX_Name/`): `dataset.json` with `channel_names`,
//! `labels` (name -> value, or name -> list of values for nnU-Net's region-based training),
//! `file_ending` and `numTraining`; images `imagesTr/<case>_0000<file_ending>`, label maps
//! `labelsTr/<case><file_ending>`; or, instead of the folders, a `dataset` object listing
//! `{"<case>": {"images": [...], "label": ...}}` (relative paths against the dataset folder).
//! negvol networks take one input channel, so `channel_names` must have one entry;
//! `file_ending` may be any volume format negvol reads: `.nii.gz`, `.nii`, `.nrrd`, `.mha`
//! (the endings nnU-Net's SimpleITK reader handles, `.gipl` excepted) and `.nhdr`, `.mhd`.
//! The `ignore` label (nnU-Net's sparse annotation) becomes the [`super::IGNORE_STRUCTURE`]
//! of every case: its voxels are unannotated ([`crate::IGNORE_LABEL`] in the loaded label
//! map), not background.
//!
//! **Decathlon** (and nnU-Net v1): `dataset.json` with `modality` (one entry), `labels`
//! (value -> name, `"0": "background"`) and `training`: `[{"image": ..., "label": ...}]`,
//! paths relative to the dataset folder. Case ids are the image file names without their
//! volume extension (`.nii.gz`, `.nii`, `.nrrd`, `.nhdr`, `.mha`, `.mhd`).
//!
//! Neither format knows patients; every case is its own patient for cross-validation
//! (nnU-Net's own splits are per case too).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{CaseSpec, DatasetSpec, LabelSource};
use crate::{Result, TrainError};

/// Which kind of `dataset.json` a JSON value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// negvol's manifest (`cases`).
    Negvol,
    /// nnU-Net v2 raw dataset (`channel_names` / `file_ending`).
    NnUnetV2,
    /// Medical Segmentation Decathlon / nnU-Net v1 (`training`).
    Decathlon,
    /// None of these.
    Unknown,
}

/// Tell the manifest formats apart by their keys.
pub fn detect(v: &Value) -> Format {
    let has = |k: &str| v.get(k).is_some();
    if has("cases") {
        Format::Negvol
    } else if has("channel_names") || has("file_ending") {
        Format::NnUnetV2
    } else if v.get("training").is_some_and(Value::is_array) {
        Format::Decathlon
    } else {
        Format::Unknown
    }
}

/// The declared foreground structures of a label table: name -> values, plus every
/// declared value (background included).
type Declared = (BTreeMap<String, Vec<u32>>, Vec<u32>);

fn label_value(x: &Value) -> Option<u32> {
    x.as_u64().and_then(|v| u32::try_from(v).ok())
}

/// nnU-Net v2's `labels`: name -> int or list of ints.
fn nnunet_labels(labels: &Value) -> std::result::Result<Declared, String> {
    let obj = labels
        .as_object()
        .ok_or("\"labels\" is not an object of name -> value")?;
    let mut structures = BTreeMap::new();
    let mut declared = Vec::new();
    for (name, x) in obj {
        let values: Vec<u32> = match x {
            Value::Array(list) => list
                .iter()
                .map(|v| label_value(v).ok_or(()))
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| format!("label {name:?}: values must be non-negative integers"))?,
            v => vec![label_value(v)
                .ok_or_else(|| format!("label {name:?}: {v} is not a non-negative integer"))?],
        };
        if values.is_empty() {
            return Err(format!("label {name:?} has no value"));
        }
        declared.extend(values.iter().copied());
        if name != "background" && values != [0] {
            structures.insert(name.clone(), values);
        }
    }
    declared.sort_unstable();
    declared.dedup();
    if !declared.contains(&0) {
        return Err("\"labels\" declares no background (value 0)".into());
    }
    if structures.is_empty() {
        return Err("\"labels\" declares no foreground structure".into());
    }
    Ok((structures, declared))
}

fn case_spec(id: String, image: PathBuf, label: PathBuf, declared: &Declared) -> CaseSpec {
    let labels = declared
        .0
        .iter()
        .map(|(name, values)| {
            (
                name.clone(),
                LabelSource::LabelMap {
                    path: label.clone(),
                    values: values.clone(),
                    declared: Some(declared.1.clone()),
                },
            )
        })
        .collect();
    CaseSpec {
        id,
        patient: None,
        image,
        labels,
    }
}

/// The `file_ending`s of an nnU-Net v2 dataset negvol reads.
pub const FILE_ENDINGS: [&str; 6] = [".nii.gz", ".nii", ".nrrd", ".mha", ".nhdr", ".mhd"];

/// Read an nnU-Net v2 raw dataset from its `dataset.json` (already parsed as `v`).
pub fn from_nnunet_v2(manifest: &Path, v: &Value) -> Result<DatasetSpec> {
    let bad = |message: String| TrainError::Dataset {
        path: manifest.to_path_buf(),
        message,
    };
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let channels = v
        .get("channel_names")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no \"channel_names\" object".into()))?;
    if channels.len() != 1 {
        let names: Vec<String> = channels.values().map(|c| c.to_string()).collect();
        return Err(bad(format!(
            "{} input channels ({}): negvol networks take one (a CT)",
            channels.len(),
            names.join(", ")
        )));
    }
    let ending = v
        .get("file_ending")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no string \"file_ending\"".into()))?;
    if !FILE_ENDINGS.contains(&ending) {
        return Err(bad(format!(
            "file_ending {ending:?}: negvol reads {} (convert the dataset first, e.g. with \
             the volume-convert example or SimpleITK)",
            FILE_ENDINGS.join(", ")
        )));
    }
    let declared = nnunet_labels(v.get("labels").unwrap_or(&Value::Null)).map_err(bad)?;
    let mut cases = Vec::new();
    if let Some(listed) = v.get("dataset") {
        let listed = listed
            .as_object()
            .ok_or_else(|| bad("\"dataset\" is not an object of case -> files".into()))?;
        for (id, entry) in listed {
            let images: Vec<&str> = entry
                .get("images")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let [image] = images[..] else {
                return Err(bad(format!(
                    "case {id:?}: \"images\" must list exactly one file (one channel), found {}",
                    images.len()
                )));
            };
            let label = entry
                .get("label")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("case {id:?}: no string \"label\"")))?;
            cases.push(case_spec(
                id.clone(),
                PathBuf::from(image),
                PathBuf::from(label),
                &declared,
            ));
        }
    } else {
        let (images_dir, labels_dir) = (dir.join("imagesTr"), dir.join("labelsTr"));
        if !labels_dir.is_dir() {
            return Err(bad(format!(
                "no {} folder (and no \"dataset\" list)",
                labels_dir.display()
            )));
        }
        let names = super::visible_entries(&labels_dir)?
            .into_iter()
            .filter(|p| p.is_file())
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        for name in names {
            let Some(id) = name.strip_suffix(ending) else {
                continue;
            };
            let image = images_dir.join(format!("{id}_0000{ending}"));
            if !image.is_file() {
                return Err(bad(format!(
                    "case {id:?}: label {} has no image {}",
                    labels_dir.join(&name).display(),
                    image.display()
                )));
            }
            cases.push(case_spec(
                id.to_string(),
                image,
                labels_dir.join(&name),
                &declared,
            ));
        }
        if let Some(n) = v.get("numTraining").and_then(Value::as_u64) {
            if n as usize != cases.len() {
                return Err(bad(format!(
                    "numTraining is {n} but labelsTr holds {} label maps ending in {ending:?}",
                    cases.len()
                )));
            }
        }
    }
    let mut spec = DatasetSpec { cases };
    if v.get("dataset").is_some() {
        // Listed paths are relative to the dataset folder (the folder layout's already
        // start there).
        spec.resolve_relative(dir);
    }
    spec.check_ids(manifest)?;
    Ok(spec)
}

/// Read a Medical Segmentation Decathlon (or nnU-Net v1) dataset from its `dataset.json`
/// (already parsed as `v`).
pub fn from_decathlon(manifest: &Path, v: &Value) -> Result<DatasetSpec> {
    let bad = |message: String| TrainError::Dataset {
        path: manifest.to_path_buf(),
        message,
    };
    let dir = manifest.parent().unwrap_or(Path::new("."));
    if let Some(m) = v.get("modality").and_then(Value::as_object) {
        if m.len() != 1 {
            return Err(bad(format!(
                "{} modalities: negvol networks take one input channel (a CT)",
                m.len()
            )));
        }
    }
    let labels = v
        .get("labels")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no \"labels\" object of value -> name".into()))?;
    // Value -> name becomes name -> value, nnU-Net v2's direction.
    let mut by_name = serde_json::Map::new();
    for (value, name) in labels {
        let n: u32 = value
            .trim()
            .parse()
            .map_err(|_| bad(format!("label key {value:?} is not a non-negative integer")))?;
        let name = name
            .as_str()
            .ok_or_else(|| bad(format!("label {value}: the name is not a string")))?;
        let name = if n == 0 { "background" } else { name };
        if by_name.insert(name.to_string(), Value::from(n)).is_some() {
            return Err(bad(format!("label name {name:?} is declared twice")));
        }
    }
    let declared = nnunet_labels(&Value::Object(by_name)).map_err(bad)?;
    let training = v
        .get("training")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"training\" array".into()))?;
    let mut cases = Vec::with_capacity(training.len());
    for (n, entry) in training.iter().enumerate() {
        let field = |k: &str| {
            entry
                .get(k)
                .and_then(Value::as_str)
                .map(PathBuf::from)
                .ok_or_else(|| bad(format!("training entry #{n} has no string \"{k}\"")))
        };
        let (image, label) = (field("image")?, field("label")?);
        let id = image
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .map(|f| super::image_id(&f).unwrap_or(f.as_str()).to_string())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| bad(format!("training entry #{n}: no file name in {image:?}")))?;
        cases.push(case_spec(id, image, label, &declared));
    }
    let mut spec = DatasetSpec { cases };
    spec.resolve_relative(dir);
    spec.check_ids(manifest)?;
    Ok(spec)
}
