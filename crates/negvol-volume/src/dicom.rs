//! Reading a CT/CBCT DICOM series folder into a [`Volume<f32>`] of Hounsfield units
//! (feature `dicom`, on by default).
//!
//! - every file in the folder (not recursive) that parses as DICOM is a candidate; files
//!   that are not DICOM (e.g. `DICOMDIR`, notes) are skipped, and a folder without any
//!   image is an error;
//! - all images must share SeriesInstanceUID, Rows/Columns, PixelSpacing and
//!   ImageOrientationPatient: otherwise [`VolumeError::Series`] names what differs;
//! - slices are ordered by ImagePositionPatient projected on the slice normal
//!   (row direction x column direction), never by file name or InstanceNumber;
//! - spacing between slices must be uniform within `spacing_tolerance` (relative); a gap of
//!   about a whole multiple of the median step is reported as missing slices;
//! - values are `stored * RescaleSlope + RescaleIntercept`;
//! - geometry: voxel `i` runs along the columns of an image (row direction, IOP[0..3],
//!   spacing PixelSpacing[1]), `j` along the rows (column direction, IOP[3..6], spacing
//!   PixelSpacing[0]), `k` along the normal in order of position; the DICOM LPS affine is
//!   converted to RAS by negating its first two rows (what dcm2niix, ITK and nibabel do).
//!
//! Only uncompressed transfer syntaxes (implicit/explicit VR little endian) are supported;
//! compressed series are refused with [`VolumeError::Unsupported`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{open_file, DefaultDicomObject};
use ndarray::Array3;

use crate::{Geometry, Result, Volume, VolumeError};

/// Options of [`read_dicom_series_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct DicomReadOptions {
    /// Largest allowed relative deviation of a slice step from the median step (default 0.01).
    pub spacing_tolerance: f64,
    /// Largest number of voxels (default [`crate::DEFAULT_MAX_VOXELS`]).
    pub max_voxels: u64,
}

impl Default for DicomReadOptions {
    fn default() -> Self {
        Self {
            spacing_tolerance: 0.01,
            max_voxels: crate::DEFAULT_MAX_VOXELS,
        }
    }
}

struct Slice {
    path: PathBuf,
    obj: DefaultDicomObject,
    position: [f64; 3],
}

/// Read the DICOM series in `dir` as Hounsfield units. See the module docs for the rules.
///
/// ```no_run
/// let ct = negvol_volume::read_dicom_series("patient01/CT")?;
/// negvol_volume::write_nifti_as("ct.nii.gz", &ct, negvol_volume::NiftiDtype::I16)?;
/// # Ok::<(), negvol_volume::VolumeError>(())
/// ```
pub fn read_dicom_series(dir: impl AsRef<Path>) -> Result<Volume<f32>> {
    read_dicom_series_with(dir, &DicomReadOptions::default())
}

/// [`read_dicom_series`] with options.
pub fn read_dicom_series_with(
    dir: impl AsRef<Path>,
    options: &DicomReadOptions,
) -> Result<Volume<f32>> {
    let dir = dir.as_ref();
    let series_err = |m: String| VolumeError::Series {
        path: dir.to_path_buf(),
        message: m,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| VolumeError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut slices = Vec::new();
    for path in files {
        let obj = match open_file(&path) {
            Ok(o) => o,
            // A file with the DICOM preamble marker that fails to parse is damaged: refuse it
            // rather than silently dropping a slice. Other files are not DICOM: skip them.
            Err(e) if has_dicm_marker(&path) => {
                return Err(VolumeError::format(
                    &path,
                    format!("unreadable DICOM file: {e}"),
                ))
            }
            Err(_) => continue,
        };
        // Not an image (e.g. DICOMDIR, structured report): skip.
        if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
            continue;
        }
        let position = floats(
            &obj,
            tags::IMAGE_POSITION_PATIENT,
            "ImagePositionPatient",
            &path,
            3,
        )?;
        slices.push(Slice {
            path,
            obj,
            position: [position[0], position[1], position[2]],
        });
    }
    if slices.is_empty() {
        return Err(series_err("no DICOM images in the folder".into()));
    }
    // Consistency across the series.
    let first = &slices[0];
    let uid = |s: &Slice| text(&s.obj, tags::SERIES_INSTANCE_UID).unwrap_or_default();
    let uids: BTreeSet<String> = slices.iter().map(uid).collect();
    if uids.len() > 1 {
        return Err(series_err(format!(
            "mixed series: {} SeriesInstanceUIDs {:?}",
            uids.len(),
            uids
        )));
    }
    let rows = int(&first.obj, tags::ROWS, "Rows", &first.path)? as usize;
    let cols = int(&first.obj, tags::COLUMNS, "Columns", &first.path)? as usize;
    let iop = floats(
        &first.obj,
        tags::IMAGE_ORIENTATION_PATIENT,
        "ImageOrientationPatient",
        &first.path,
        6,
    )?;
    let ps = floats(
        &first.obj,
        tags::PIXEL_SPACING,
        "PixelSpacing",
        &first.path,
        2,
    )?;
    for s in &slices[1..] {
        let r = int(&s.obj, tags::ROWS, "Rows", &s.path)? as usize;
        let c = int(&s.obj, tags::COLUMNS, "Columns", &s.path)? as usize;
        if (r, c) != (rows, cols) {
            return Err(series_err(format!(
                "mixed image sizes: {} is {r}x{c}, {} is {rows}x{cols}",
                s.path.display(),
                first.path.display()
            )));
        }
        let o = floats(
            &s.obj,
            tags::IMAGE_ORIENTATION_PATIENT,
            "ImageOrientationPatient",
            &s.path,
            6,
        )?;
        if o.iter().zip(&iop).any(|(a, b)| (a - b).abs() > 1e-4) {
            return Err(series_err(format!(
                "mixed orientations: {} has {o:?}, {} has {iop:?}",
                s.path.display(),
                first.path.display()
            )));
        }
        let p = floats(&s.obj, tags::PIXEL_SPACING, "PixelSpacing", &s.path, 2)?;
        if p.iter()
            .zip(&ps)
            .any(|(a, b)| (a - b).abs() > 1e-6 * b.abs().max(1.0))
        {
            return Err(series_err(format!(
                "mixed pixel spacings: {} has {p:?}, {} has {ps:?}",
                s.path.display(),
                first.path.display()
            )));
        }
    }
    if ps.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(VolumeError::format(
            &first.path,
            format!("PixelSpacing {ps:?} is not positive"),
        ));
    }
    let row_dir = unit([iop[0], iop[1], iop[2]], &first.path)?;
    let col_dir = unit([iop[3], iop[4], iop[5]], &first.path)?;
    let normal = crate::stl::cross(row_dir, col_dir);
    if (crate::stl::norm(normal) - 1.0).abs() > 1e-3 {
        return Err(VolumeError::format(
            &first.path,
            format!("ImageOrientationPatient {iop:?} has non-orthogonal directions"),
        ));
    }
    // Order by position along the normal.
    let mut keyed: Vec<(f64, Slice)> = slices
        .into_iter()
        .map(|s| (crate::stl::dot(s.position, normal), s))
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = keyed.len();
    let dz = if n > 1 {
        let steps: Vec<f64> = keyed.windows(2).map(|w| w[1].0 - w[0].0).collect();
        if let Some((i, _)) = steps.iter().enumerate().find(|(_, s)| **s < 1e-6) {
            return Err(series_err(format!(
                "duplicate slice position {:?} ({} and {})",
                keyed[i].1.position,
                keyed[i].1.path.display(),
                keyed[i + 1].1.path.display()
            )));
        }
        let mut sorted = steps.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        for (i, s) in steps.iter().enumerate() {
            let rel = (s - median).abs() / median;
            if rel > options.spacing_tolerance {
                let ratio = s / median;
                let msg = if (ratio - ratio.round()).abs() < 0.1 && ratio.round() >= 2.0 {
                    format!(
                        "missing slice(s): gap of {s:.4} mm ({:.0} x the {median:.4} mm step) between {} and {}",
                        ratio.round(),
                        keyed[i].1.path.display(),
                        keyed[i + 1].1.path.display()
                    )
                } else {
                    format!(
                        "uneven slice spacing: step {s:.4} mm between {} and {} vs median {median:.4} mm (tolerance {})",
                        keyed[i].1.path.display(),
                        keyed[i + 1].1.path.display(),
                        options.spacing_tolerance
                    )
                };
                return Err(series_err(msg));
            }
        }
        (keyed[n - 1].0 - keyed[0].0) / (n - 1) as f64
    } else {
        // A single slice: SliceThickness, else 1 mm.
        keyed[0]
            .1
            .obj
            .element_opt(tags::SLICE_THICKNESS)
            .ok()
            .flatten()
            .and_then(|e| e.to_float64().ok())
            .filter(|t| t.is_finite() && *t > 0.0)
            .unwrap_or(1.0)
    };
    let nvox = (cols as u64) * (rows as u64) * (n as u64);
    if nvox > options.max_voxels {
        return Err(VolumeError::TooLarge {
            path: dir.to_path_buf(),
            dims: vec![cols as u64, rows as u64, n as u64],
            voxels: nvox,
            limit: options.max_voxels,
        });
    }
    // Affine: LPS, then to RAS.
    let origin = keyed[0].1.position;
    let mut a = [[0.0; 4]; 4];
    for r in 0..3 {
        a[r][0] = row_dir[r] * ps[1];
        a[r][1] = col_dir[r] * ps[0];
        a[r][2] = normal[r] * dz;
        a[r][3] = origin[r];
    }
    a[3][3] = 1.0;
    for row in a.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v;
        }
    }
    let geometry = Geometry::new([cols, rows, n], a)
        .map_err(|e| series_err(format!("invalid geometry: {e}")))?;
    let mut data = Array3::<f32>::zeros((cols, rows, n));
    for (k, (_, s)) in keyed.iter().enumerate() {
        let px = decode_pixels(s, rows, cols)?;
        for j in 0..rows {
            for i in 0..cols {
                data[[i, j, k]] = px[j * cols + i];
            }
        }
    }
    Volume::new(data, geometry)
}

fn decode_pixels(s: &Slice, rows: usize, cols: usize) -> Result<Vec<f32>> {
    let path = &s.path;
    let ts = s.obj.meta().transfer_syntax().trim_end_matches(['\0', ' ']);
    if ts != "1.2.840.10008.1.2" && ts != "1.2.840.10008.1.2.1" {
        return Err(VolumeError::unsupported(
            path,
            format!("transfer syntax {ts} (only uncompressed little-endian DICOM is supported)"),
        ));
    }
    let spp = opt_int(&s.obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if spp != 1 {
        return Err(VolumeError::unsupported(
            path,
            format!("SamplesPerPixel {spp} (CT is 1)"),
        ));
    }
    let bits = int(&s.obj, tags::BITS_ALLOCATED, "BitsAllocated", path)?;
    let signed = opt_int(&s.obj, tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1;
    let slope = opt_float(&s.obj, tags::RESCALE_SLOPE).unwrap_or(1.0);
    let inter = opt_float(&s.obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0);
    if !(slope.is_finite() && inter.is_finite()) {
        return Err(VolumeError::format(
            path,
            format!("RescaleSlope/Intercept {slope}/{inter} not finite"),
        ));
    }
    let bytes = s
        .obj
        .element(tags::PIXEL_DATA)
        .map_err(|e| VolumeError::format(path, format!("PixelData: {e}")))?
        .to_bytes()
        .map_err(|e| VolumeError::format(path, format!("PixelData: {e}")))?;
    let n = rows * cols;
    let size = match bits {
        8 => 1,
        16 => 2,
        32 => 4,
        b => {
            return Err(VolumeError::unsupported(path, format!("BitsAllocated {b}")));
        }
    };
    if bytes.len() < n * size {
        return Err(VolumeError::format(
            path,
            format!(
                "PixelData has {} bytes, {rows}x{cols}x{size} needed",
                bytes.len()
            ),
        ));
    }
    let raw = |p: usize| -> f64 {
        let b = &bytes[p * size..p * size + size];
        match (size, signed) {
            (1, false) => b[0] as f64,
            (1, true) => b[0] as i8 as f64,
            (2, false) => u16::from_le_bytes([b[0], b[1]]) as f64,
            (2, true) => i16::from_le_bytes([b[0], b[1]]) as f64,
            (_, false) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            (_, true) => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
        }
    };
    Ok((0..n).map(|p| (raw(p) * slope + inter) as f32).collect())
}

fn has_dicm_marker(path: &Path) -> bool {
    use std::io::Read;
    let mut b = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
        && &b[128..] == b"DICM"
}

fn unit(v: [f64; 3], path: &Path) -> Result<[f64; 3]> {
    let n = crate::stl::norm(v);
    if !(n.is_finite() && n > 0.5 && n < 1.5) {
        return Err(VolumeError::format(
            path,
            format!("ImageOrientationPatient direction {v:?} is not a unit vector"),
        ));
    }
    Ok(v.map(|x| x / n))
}

fn text(obj: &DefaultDicomObject, tag: dicom_object::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
}

fn floats(
    obj: &DefaultDicomObject,
    tag: dicom_object::Tag,
    name: &str,
    path: &Path,
    n: usize,
) -> Result<Vec<f64>> {
    let e = obj
        .element_opt(tag)
        .ok()
        .flatten()
        .ok_or_else(|| VolumeError::format(path, format!("missing {name}")))?;
    let v = e
        .to_multi_float64()
        .map_err(|err| VolumeError::format(path, format!("{name}: {err}")))?;
    if v.len() != n || v.iter().any(|x| !x.is_finite()) {
        return Err(VolumeError::format(
            path,
            format!("{name} must be {n} finite numbers, got {v:?}"),
        ));
    }
    Ok(v)
}

fn int(obj: &DefaultDicomObject, tag: dicom_object::Tag, name: &str, path: &Path) -> Result<i64> {
    opt_int(obj, tag).ok_or_else(|| VolumeError::format(path, format!("missing or invalid {name}")))
}

fn opt_int(obj: &DefaultDicomObject, tag: dicom_object::Tag) -> Option<i64> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<i64>().ok())
}

fn opt_float(obj: &DefaultDicomObject, tag: dicom_object::Tag) -> Option<f64> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_float64().ok())
}
