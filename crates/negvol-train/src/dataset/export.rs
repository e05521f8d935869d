//! Writing a dataset in nnU-Net v2's raw format, with negvol's folds, so nnU-Net can be
//! trained side by side on the same cases and the same patient-grouped splits.
//!
//! ```text
//! out/dataset.json          channel_names {"0": "CT"}, labels {"background": 0, t: i + 1}, ...
//! out/imagesTr/<case>_0000.nii.gz   the image (its stored datatype kept; DICOM as f32 HU)
//! out/labelsTr/<case>.nii.gz        u8 label map: target i -> i + 1 (later targets win overlaps);
//!                                   unannotated voxels (sparse annotation) -> T + 1, declared
//!                                   as nnU-Net's "ignore" label (the highest value)
//! out/splits_final.json     [{"train": [...], "val": [...]}, ...]: negvol's k folds by patient
//! ```
//!
//! Copy `splits_final.json` into `nnUNet_preprocessed/DatasetXXX_Name/` after nnU-Net's
//! planning so its folds are negvol's. Every file is written atomically and `dataset.json`
//! last, so a folder with a `dataset.json` is complete.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{kfold_by_patient, load_case, DatasetSpec};
use crate::checkpoint::write_json;
use crate::{Result, TrainError};

/// Options of [`export_nnunet`].
#[derive(Debug, Clone, PartialEq)]
pub struct NnUnetExport {
    /// The structures to export, in class order (class `i + 1`).
    pub targets: Vec<String>,
    /// The name of the one input channel (`"CT"` selects nnU-Net's CT normalisation).
    pub channel_name: String,
    /// Written as `dataset.json`'s `name`.
    pub name: String,
    /// Folds in `splits_final.json` (`None`: no splits file).
    pub folds: Option<usize>,
    /// Seed of the fold assignment ([`kfold_by_patient`]).
    pub seed: u64,
    /// Write into a folder that already has a `dataset.json`.
    pub overwrite: bool,
}

impl NnUnetExport {
    /// Export `targets` with a CT channel, five folds and seed 0.
    pub fn new(targets: Vec<String>) -> Self {
        Self {
            targets,
            channel_name: "CT".into(),
            name: "negvol".into(),
            folds: Some(5),
            seed: 0,
            overwrite: false,
        }
    }
}

/// What [`export_nnunet`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportReport {
    /// The output folder.
    pub out: PathBuf,
    /// Cases written.
    pub cases: usize,
    /// Labels as in `dataset.json` (background first).
    pub labels: Vec<(String, u32)>,
    /// Folds written to `splits_final.json` (0: none).
    pub folds: usize,
}

#[derive(Serialize)]
struct Split {
    train: Vec<String>,
    val: Vec<String>,
}

/// Write `spec` as an nnU-Net v2 raw dataset in `out` (see the module docs).
///
/// # Errors
/// A case that does not load with `options.targets` (the error names it), an output folder
/// that already holds a dataset (unless `overwrite`), fewer patients than folds, no target,
/// a target named `background`, I/O errors.
pub fn export_nnunet(
    spec: &DatasetSpec,
    out: &Path,
    options: &NnUnetExport,
) -> Result<ExportReport> {
    use rayon::prelude::*;
    let bad = |message: String| TrainError::Dataset {
        path: out.to_path_buf(),
        message,
    };
    if options.targets.is_empty() {
        return Err(bad("no target to export".into()));
    }
    if options.targets.len() > 254 {
        return Err(bad(format!(
            "{} targets (at most 254)",
            options.targets.len()
        )));
    }
    for (i, t) in options.targets.iter().enumerate() {
        if t == "background" || t == "ignore" || options.targets[..i].contains(t) {
            return Err(bad(format!("target name {t:?} is reserved or repeated")));
        }
    }
    if options.channel_name.is_empty() {
        return Err(bad("empty channel name".into()));
    }
    if spec.cases.is_empty() {
        return Err(bad("the dataset has no case".into()));
    }
    let manifest = out.join("dataset.json");
    if manifest.exists() && !options.overwrite {
        return Err(bad(
            "already holds a dataset.json (choose another folder or overwrite)".into(),
        ));
    }
    let splits = match options.folds {
        Some(k) => {
            let patients: Vec<&str> = spec.cases.iter().map(|c| c.patient_id()).collect();
            kfold_by_patient(&patients, k, options.seed)?
        }
        None => Vec::new(),
    };
    let (images, labels) = (out.join("imagesTr"), out.join("labelsTr"));
    for d in [&images, &labels] {
        std::fs::create_dir_all(d).map_err(|e| TrainError::io(d, e))?;
    }
    // Every case is attempted; the error reported is the first failing case in order.
    // nnU-Net's ignore label is the highest value: after the targets.
    let ignore_value = options.targets.len() as u8 + 1;
    let written: Vec<Result<bool>> = spec
        .cases
        .par_iter()
        .map(|c| -> Result<bool> {
            let mut case = load_case(c, &options.targets)?;
            let mut sparse = false;
            case.label.view_mut().iter_mut().for_each(|l| {
                if *l == crate::IGNORE_LABEL {
                    *l = ignore_value;
                    sparse = true;
                }
            });
            let vol = |what: &str, source| TrainError::Volume {
                context: format!("case {}: writing the {what}", c.id),
                source,
            };
            let image_out = images.join(format!("{}_0000.nii.gz", c.id));
            if c.image.is_dir() {
                negvol_volume::write_nifti(&image_out, &case.image).map_err(|e| vol("image", e))?;
            } else {
                // Re-encode from the file so the stored datatype (e.g. int16 HU) is kept.
                negvol_volume::convert(&c.image, &image_out, &Default::default())
                    .map_err(|e| vol("image", e))?;
            }
            negvol_volume::write_nifti_as(
                labels.join(format!("{}.nii.gz", c.id)),
                &case.label,
                negvol_volume::NiftiDtype::U8,
            )
            .map_err(|e| vol("label map", e))?;
            Ok(sparse)
        })
        .collect();
    let sparse = written
        .into_iter()
        .collect::<Result<Vec<bool>>>()?
        .into_iter()
        .any(|s| s);
    let ids = |idx: &[usize]| idx.iter().map(|&i| spec.cases[i].id.clone()).collect();
    if !splits.is_empty() {
        let folds: Vec<Split> = splits
            .iter()
            .map(|(t, v)| Split {
                train: ids(t),
                val: ids(v),
            })
            .collect();
        write_json(&out.join("splits_final.json"), &folds)?;
    }
    let mut label_table = vec![("background".to_string(), 0u32)];
    label_table.extend(
        options
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32 + 1)),
    );
    if sparse {
        label_table.push((super::IGNORE_STRUCTURE.to_string(), u32::from(ignore_value)));
    }
    let labels_json: serde_json::Map<String, serde_json::Value> = label_table
        .iter()
        .map(|(n, v)| (n.clone(), serde_json::Value::from(*v)))
        .collect();
    let dataset = serde_json::json!({
        "channel_names": {"0": options.channel_name},
        "labels": labels_json,
        "numTraining": spec.cases.len(),
        "file_ending": ".nii.gz",
        "name": options.name,
        "description": format!("exported by negvol-train {}", env!("CARGO_PKG_VERSION")),
    });
    write_json(&manifest, &dataset)?;
    Ok(ExportReport {
        out: out.to_path_buf(),
        cases: spec.cases.len(),
        labels: label_table,
        folds: splits.len(),
    })
}
