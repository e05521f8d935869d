//! Writing a folder of phantom cases.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use negvol_volume::{write_mask, write_nifti, write_nifti_as, NiftiDtype};

use crate::config::{PhantomConfig, Side};
use crate::{generate, PhantomError, Result};

/// One case of a dataset (paths relative to the dataset folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetEntry {
    /// Case name, `case_000`, `case_001`, ...
    pub id: String,
    /// The seed that regenerates this case: `generate(&manifest.config, seed)`.
    pub seed: u64,
    /// CT-like image (NIfTI, int16 HU).
    pub image: String,
    /// Condyle mask (NIfTI, u8 0/1).
    pub mc: String,
    /// Temporal bone mask (NIfTI, u8 0/1).
    pub tb: String,
    /// Ground-truth negative-volume mask (NIfTI, u8 0/1).
    pub nv: String,
    /// All three as one label map (NIfTI, u8: 0 background, 1 MC, 2 TB, 3 NV).
    pub label_map: String,
    /// The three masks by structure name (`mc`, `tb`, `nv`): the `labels` object of
    /// negvol-train's manifest reader, which then takes these and nothing else (not the
    /// multi-class `label_map` as a mask). Empty in manifests written before it existed.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The case's [`crate::PhantomTruth`] as JSON.
    pub truth: String,
    /// Exact NV volume (mm^3) per side, copied from the truth.
    pub nv_volume_mm3: Vec<(Side, f64)>,
}

/// The `dataset.json` manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetManifest {
    /// Format version of this manifest (1).
    pub format_version: u32,
    /// `negvol-phantom <version>`.
    pub generator: String,
    /// The base seed given to [`write_dataset`].
    pub base_seed: u64,
    /// The config every case was generated with.
    pub config: PhantomConfig,
    /// The cases in order.
    pub cases: Vec<DatasetEntry>,
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of case `index` of a dataset with base seed `base`:
/// `splitmix64(splitmix64(base) + index)`, so datasets with neighbouring base seeds do not
/// share cases.
pub fn case_seed(base: u64, index: usize) -> u64 {
    splitmix64(splitmix64(base).wrapping_add(index as u64))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PhantomError + '_ {
    move |source| PhantomError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `value` as pretty JSON atomically (see [`negvol_volume::atomic`]).
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| PhantomError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    negvol_volume::atomic::write_bytes_atomic(path, &bytes).map_err(io_err(path))
}

/// Generate `n_cases` cases and write them under `dir`:
///
/// ```text
/// dir/dataset.json              manifest (DatasetManifest)
/// dir/case_000/image.nii.gz     CT-like image, int16 HU (rounded)
/// dir/case_000/mc.nii.gz        condyle mask, u8
/// dir/case_000/tb.nii.gz        temporal bone mask, u8
/// dir/case_000/nv.nii.gz        ground-truth NV mask, u8
/// dir/case_000/label_map.nii.gz label map, u8: 0 background, 1 MC, 2 TB, 3 NV
/// dir/case_000/truth.json       PhantomTruth
/// ```
///
/// Case `i` uses seed [`case_seed`]`(seed, i)`. Every file is written atomically; the manifest
/// is written last, so a folder with a `dataset.json` is complete. Existing files are
/// overwritten. Returns the manifest.
pub fn write_dataset(
    dir: impl AsRef<Path>,
    cfg: &PhantomConfig,
    n_cases: usize,
    seed: u64,
) -> Result<DatasetManifest> {
    let dir = dir.as_ref();
    cfg.validate()?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let width = (n_cases.max(1) - 1).to_string().len().max(3);
    // Cases in parallel (and the image beside the small files): gzip is single-threaded.
    let cases = (0..n_cases)
        .into_par_iter()
        .map(|i| -> Result<DatasetEntry> {
            let s = case_seed(seed, i);
            let case = generate(cfg, s)?;
            let id = format!("case_{i:0width$}");
            let cdir: PathBuf = dir.join(&id);
            std::fs::create_dir_all(&cdir).map_err(io_err(&cdir))?;
            let (img, rest) = rayon::join(
                || write_nifti_as(cdir.join("image.nii.gz"), &case.image, NiftiDtype::I16),
                || -> Result<()> {
                    write_mask(cdir.join("mc.nii.gz"), &case.mc)?;
                    write_mask(cdir.join("tb.nii.gz"), &case.tb)?;
                    write_mask(cdir.join("nv.nii.gz"), &case.nv)?;
                    write_nifti(cdir.join("label_map.nii.gz"), &case.label_map())?;
                    write_json_atomic(&cdir.join("truth.json"), &case.truth)
                },
            );
            img?;
            rest?;
            Ok(DatasetEntry {
                seed: s,
                image: format!("{id}/image.nii.gz"),
                mc: format!("{id}/mc.nii.gz"),
                tb: format!("{id}/tb.nii.gz"),
                nv: format!("{id}/nv.nii.gz"),
                label_map: format!("{id}/label_map.nii.gz"),
                labels: ["mc", "tb", "nv"]
                    .iter()
                    .map(|t| (t.to_string(), format!("{id}/{t}.nii.gz")))
                    .collect(),
                truth: format!("{id}/truth.json"),
                nv_volume_mm3: case
                    .truth
                    .sides
                    .iter()
                    .map(|t| (t.side, t.nv_volume_mm3))
                    .collect(),
                id,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let manifest = DatasetManifest {
        format_version: 1,
        generator: format!("negvol-phantom {}", env!("CARGO_PKG_VERSION")),
        base_seed: seed,
        config: cfg.clone(),
        cases,
    };
    write_json_atomic(&dir.join("dataset.json"), &manifest)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_seeds_differ() {
        let s: std::collections::HashSet<u64> = (0..100).map(|i| case_seed(7, i)).collect();
        assert_eq!(s.len(), 100);
        assert_ne!(case_seed(7, 1), case_seed(8, 0));
    }
}
