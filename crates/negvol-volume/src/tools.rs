//! File-level helpers behind the `volume-info` and `volume-convert` examples: a JSON-ready
//! description of a NIfTI, NRRD, MetaImage or STL file (or a DICOM series folder), and a
//! conversion pipeline between the volume formats (frame, reorient, resample, datatype; or STL
//! voxelization onto a reference grid).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{
    read_nifti_header, read_nifti_with, read_stl, read_volume, read_volume_geometry,
    read_volume_with, resample_to_spacing, voxelize, write_volume_as, AffineSource, AxisTransform,
    Endianness, ImageFormat, Interpolation, MetaDataFile, NiftiDtype, NiftiReadOptions,
    NiftiScalar, ReadOptions, Result, SlicerSegment, Volume, VolumeError,
};

/// Summary statistics of voxel values (NaN voxels counted apart).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueStats {
    /// Smallest non-NaN value (`None` if all are NaN).
    pub min: Option<f64>,
    /// Largest non-NaN value.
    pub max: Option<f64>,
    /// Mean of non-NaN values.
    pub mean: Option<f64>,
    /// Number of NaN voxels.
    pub nan_count: u64,
    /// Number of nonzero voxels.
    pub nonzero_count: u64,
}

impl ValueStats {
    /// Statistics of a volume's values.
    pub fn of<T: NiftiScalar>(vol: &Volume<T>) -> Self {
        let mut min = f64::INFINITY;
        let mut max = f64::NEG_INFINITY;
        let (mut sum, mut n, mut nan, mut nz) = (0.0, 0u64, 0u64, 0u64);
        for x in vol.data().iter().map(|v| v.to_f64()) {
            if x.is_nan() {
                nan += 1;
                continue;
            }
            min = min.min(x);
            max = max.max(x);
            sum += x;
            n += 1;
            if x != 0.0 {
                nz += 1;
            }
        }
        Self {
            min: (n > 0).then_some(min),
            max: (n > 0).then_some(max),
            mean: (n > 0).then(|| sum / n as f64),
            nan_count: nan,
            nonzero_count: nz,
        }
    }
}

/// What `volume-info` prints for a NIfTI file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NiftiInfo {
    /// The file.
    pub path: PathBuf,
    /// NIfTI version (1 or 2).
    pub nifti_version: u8,
    /// All dimensions (`dim[1..=dim[0]]`).
    pub dims: Vec<u64>,
    /// Number of 3D frames.
    pub frames: u64,
    /// Shape `[ni, nj, nk]` of one frame.
    pub shape: [usize; 3],
    /// Spacing in mm (column norms of the affine).
    pub spacing: [f64; 3],
    /// Voxel-to-world (RAS+ mm) affine, row-major.
    pub affine: [[f64; 4]; 4],
    /// Which header transform the affine came from.
    pub affine_source: AffineSource,
    /// Orientation code, e.g. `"LPS"`.
    pub orientation: String,
    /// Stored datatype name.
    pub datatype: String,
    /// Effective `(scl_slope, scl_inter)`.
    pub scaling: (f64, f64),
    /// Byte order.
    pub endianness: Endianness,
    /// gzip-compressed.
    pub compressed: bool,
    /// `qform_code`, `sform_code`.
    pub xform_codes: (i32, i32),
    /// Voxel volume in mm^3.
    pub voxel_volume_mm3: f64,
    /// Value statistics of frame 0 (scaled values, read as f32).
    pub values: ValueStats,
}

/// Describe a NIfTI file (header, geometry and the value range of its first frame).
pub fn nifti_info(path: impl AsRef<Path>) -> Result<NiftiInfo> {
    let path = path.as_ref();
    let h = read_nifti_header(path)?;
    // f32 halves the memory of f64 and is exact for every integer type up to 24 bits.
    let vol = read_nifti_with::<f32>(
        path,
        &NiftiReadOptions {
            frame: Some(0),
            ..NiftiReadOptions::default()
        },
    )?;
    let g = vol.geometry();
    Ok(NiftiInfo {
        path: path.to_path_buf(),
        nifti_version: h.version,
        dims: h.dims.clone(),
        frames: h.frames(),
        shape: g.shape(),
        spacing: g.spacing(),
        affine: g.affine(),
        affine_source: h.affine_source(),
        orientation: g.orientation_code(),
        datatype: h
            .dtype()
            .map(|d| d.name().to_string())
            .unwrap_or_else(|| format!("code {}", h.datatype)),
        scaling: h.scaling(),
        endianness: h.endianness,
        compressed: h.compressed,
        xform_codes: (h.qform_code, h.sform_code),
        voxel_volume_mm3: g.voxel_volume_mm3(),
        values: ValueStats::of(&vol),
    })
}

/// What `volume-info` prints for a DICOM series folder.
#[cfg(feature = "dicom")]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DicomSeriesInfo {
    /// The folder.
    pub path: PathBuf,
    /// Shape `[ni, nj, nk]` (columns, rows, slices).
    pub shape: [usize; 3],
    /// Spacing in mm.
    pub spacing: [f64; 3],
    /// Voxel-to-world (RAS+ mm) affine.
    pub affine: [[f64; 4]; 4],
    /// Orientation code.
    pub orientation: String,
    /// Always `"HU (f32)"`: rescaled values.
    pub datatype: String,
    /// Value statistics (HU).
    pub values: ValueStats,
}

/// Describe a DICOM series folder (read with [`crate::read_dicom_series`]).
#[cfg(feature = "dicom")]
pub fn dicom_info(dir: impl AsRef<Path>) -> Result<DicomSeriesInfo> {
    let dir = dir.as_ref();
    let v = crate::read_dicom_series(dir)?;
    let g = v.geometry();
    Ok(DicomSeriesInfo {
        path: dir.to_path_buf(),
        shape: g.shape(),
        spacing: g.spacing(),
        affine: g.affine(),
        orientation: g.orientation_code(),
        datatype: "HU (f32)".into(),
        values: ValueStats::of(&v),
    })
}

/// What `volume-info` prints for an STL file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StlInfo {
    /// The file.
    pub path: PathBuf,
    /// Triangle count.
    pub triangles: usize,
    /// Distinct vertices.
    pub vertices: usize,
    /// No open edges.
    pub closed: bool,
    /// Edges used by an odd number of faces.
    pub open_edges: usize,
    /// Signed enclosed volume (mm^3; negative if faces point inward).
    pub signed_volume_mm3: f64,
    /// Surface area (mm^2).
    pub area_mm2: f64,
    /// Bounding box `(min, max)`.
    pub bounds: Option<([f64; 3], [f64; 3])>,
}

/// Describe an STL file.
pub fn stl_info(path: impl AsRef<Path>) -> Result<StlInfo> {
    let path = path.as_ref();
    let m = read_stl(path)?;
    Ok(StlInfo {
        path: path.to_path_buf(),
        triangles: m.len(),
        vertices: m.vertices.len(),
        closed: m.is_closed(),
        open_edges: m.open_edges(),
        signed_volume_mm3: m.signed_volume(),
        area_mm2: m.area(),
        bounds: m.bounds(),
    })
}

/// The kind of file a path names, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// `.nii` or `.nii.gz`.
    Nifti,
    /// `.nrrd`, `.seg.nrrd` or `.nhdr`.
    Nrrd,
    /// `.mha` or `.mhd`.
    MetaImage,
    /// `.stl`.
    Stl,
    /// A directory (read as a DICOM series).
    Directory,
}

/// The [`FileKind`] of a path, case-insensitively; `None` for other extensions.
pub fn file_kind(path: &Path) -> Option<FileKind> {
    if path.is_dir() {
        return Some(FileKind::Directory);
    }
    match ImageFormat::from_name(path) {
        Some(ImageFormat::Nifti) => Some(FileKind::Nifti),
        Some(ImageFormat::Nrrd) => Some(FileKind::Nrrd),
        Some(ImageFormat::MetaImage) => Some(FileKind::MetaImage),
        None => crate::io::ends_with_ci(path, ".stl").then_some(FileKind::Stl),
    }
}

/// What `volume-info` prints for a NRRD or MetaImage file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageInfo {
    /// The file.
    pub path: PathBuf,
    /// `"NRRD"` or `"MetaImage"`.
    pub format: &'static str,
    /// Every dimension as stored (a 4D NRRD's non-spatial axis included).
    pub dims: Vec<u64>,
    /// Number of frames (layers) of a 4D file; 1 for 3D.
    pub frames: u64,
    /// Shape `[ni, nj, nk]` of one frame.
    pub shape: [usize; 3],
    /// Spacing in mm (column norms of the affine).
    pub spacing: [f64; 3],
    /// Voxel-to-world (RAS+ mm) affine, row-major.
    pub affine: [[f64; 4]; 4],
    /// Orientation code, e.g. `"LPS"`.
    pub orientation: String,
    /// Stored datatype name.
    pub datatype: String,
    /// Byte order.
    pub endianness: Endianness,
    /// `raw`, `gzip`, `ascii`, `hex` (NRRD); `raw`, `zlib`, `text` (MetaImage).
    pub encoding: String,
    /// The data file of a detached header (`.nhdr`, `.mhd`).
    pub data_file: Option<PathBuf>,
    /// Voxel volume in mm^3.
    pub voxel_volume_mm3: f64,
    /// Value statistics of frame 0 (read as f32).
    pub values: ValueStats,
    /// The 3D Slicer segments of a `.seg.nrrd` (empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SlicerSegment>,
    /// NRRD `key:=value` pairs (empty for MetaImage).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub key_values: BTreeMap<String, String>,
}

/// Describe a NRRD or MetaImage file: header, geometry and the value range of its first
/// frame.
///
/// # Errors
/// A name that is neither format ([`VolumeError::UnknownFormat`], NIfTI included: see
/// [`nifti_info`]), and whatever the reader returns.
pub fn image_info(path: impl AsRef<Path>) -> Result<ImageInfo> {
    let path = path.as_ref();
    let first = ReadOptions {
        frame: Some(0),
        ..ReadOptions::default()
    };
    let relative = |f: &str| path.parent().unwrap_or(Path::new(".")).join(f);
    let (dims, frames, dtype, endianness, encoding, data_file, segments, key_values) =
        match ImageFormat::of(path)? {
            ImageFormat::Nrrd => {
                let h = crate::read_nrrd_header(path)?;
                let segments = h.segments().map_err(|m| VolumeError::format(path, m))?;
                (
                    h.sizes.clone(),
                    h.frames(),
                    h.dtype,
                    h.endianness.unwrap_or(Endianness::Little),
                    h.encoding.name().to_string(),
                    h.data_file.as_deref().map(relative),
                    segments,
                    h.key_values,
                )
            }
            ImageFormat::MetaImage => {
                let h = crate::read_metaimage_header(path)?;
                let encoding = match (h.binary, h.compressed) {
                    (false, _) => "text",
                    (true, true) => "zlib",
                    (true, false) => "raw",
                };
                let data_file = match &h.data_file {
                    MetaDataFile::Local => None,
                    MetaDataFile::File(f) => Some(relative(f)),
                };
                (
                    h.dims.to_vec(),
                    1,
                    h.dtype,
                    h.endianness,
                    encoding.to_string(),
                    data_file,
                    Vec::new(),
                    BTreeMap::new(),
                )
            }
            ImageFormat::Nifti => {
                return Err(VolumeError::InvalidArgument(format!(
                    "{}: a NIfTI file (use nifti_info)",
                    path.display()
                )))
            }
        };
    let vol = read_volume_with::<f32>(path, &first)?;
    let g = vol.geometry();
    Ok(ImageInfo {
        path: path.to_path_buf(),
        format: ImageFormat::of(path)?.name(),
        dims,
        frames,
        shape: g.shape(),
        spacing: g.spacing(),
        affine: g.affine(),
        orientation: g.orientation_code(),
        datatype: dtype.name().to_string(),
        endianness,
        encoding,
        data_file,
        voxel_volume_mm3: g.voxel_volume_mm3(),
        values: ValueStats::of(&vol),
        segments,
        key_values,
    })
}

/// Read an image as f32: a NIfTI, NRRD or MetaImage file ([`read_volume`]; NIfTI scaling
/// applied), or a folder holding one DICOM CT series (Hounsfield units, feature `dicom`).
/// What a user means by "the CT" in a command line.
///
/// ```no_run
/// let ct = negvol_volume::read_image("patient01/CT")?;          // DICOM series folder
/// let same = negvol_volume::read_image("patient01/ct.nii.gz")?;  // or NIfTI, .nrrd, .mha, ...
/// # Ok::<(), negvol_volume::VolumeError>(())
/// ```
///
/// # Errors
/// A folder without the `dicom` feature, an unknown extension
/// ([`VolumeError::UnknownFormat`]), and whatever the file or DICOM reader returns.
pub fn read_image(path: impl AsRef<Path>) -> Result<Volume<f32>> {
    let path = path.as_ref();
    if path.is_dir() {
        #[cfg(feature = "dicom")]
        return crate::read_dicom_series(path);
        #[cfg(not(feature = "dicom"))]
        return Err(VolumeError::InvalidArgument(format!(
            "{}: a folder (DICOM series) needs negvol-volume's `dicom` feature",
            path.display()
        )));
    }
    read_volume(path)
}

/// Options of [`convert`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConvertOptions {
    /// Output datatype; default: the input's stored type when it has no scaling, else f32
    /// (u8 for voxelized meshes).
    pub dtype: Option<NiftiDtype>,
    /// Reorient to this code (e.g. `"RAS"`) before resampling.
    pub reorient: Option<String>,
    /// Resample to this spacing (mm), same field of view ([`crate::spacing_geometry`]).
    pub spacing: Option<[f64; 3]>,
    /// Interpolation for resampling (default linear).
    pub interpolation: Option<Interpolation>,
    /// Frame of a 4D input.
    pub frame: Option<u64>,
    /// For an STL input: the volume file whose grid the mesh is voxelized onto (required).
    pub like: Option<PathBuf>,
}

/// What [`convert`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConvertReport {
    /// Input file.
    pub input: PathBuf,
    /// Output file.
    pub output: PathBuf,
    /// Output shape.
    pub shape: [usize; 3],
    /// Output spacing.
    pub spacing: [f64; 3],
    /// Output orientation code.
    pub orientation: String,
    /// Output datatype.
    pub datatype: String,
}

/// Convert a NIfTI, NRRD or MetaImage file, or a DICOM series folder (feature `dicom`;
/// written as f32 HU unless `dtype` says otherwise) (optionally one frame, reoriented,
/// resampled, retyped) to a volume file in the format its name calls for
/// ([`crate::write_volume`]: `.nii`, `.nii.gz`, `.nrrd`, `.nhdr`, `.mha`, `.mhd`); or voxelize an
/// STL mesh onto the grid of `options.like` and write it as a mask. The output is written
/// atomically.
///
/// # Errors
/// An input or output name of no supported format ([`VolumeError::UnknownFormat`]), an STL
/// without `like`, and the readers' and writers' errors.
pub fn convert(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    options: &ConvertOptions,
) -> Result<ConvertReport> {
    let (input, output) = (input.as_ref(), output.as_ref());
    let (mut vol, default_dtype) = match file_kind(input) {
        Some(FileKind::Stl) => {
            let like = options.like.as_ref().ok_or_else(|| {
                VolumeError::InvalidArgument(format!(
                    "{}: voxelizing an STL needs a reference grid (--like REF.nii.gz)",
                    input.display()
                ))
            })?;
            let geometry = read_volume_geometry(like)?;
            let mesh = read_stl(input)?;
            let mask = voxelize(&mesh, &geometry)?;
            (mask.map(|&b| if b { 1.0 } else { 0.0 }), NiftiDtype::U8)
        }
        #[cfg(feature = "dicom")]
        Some(FileKind::Directory) => (
            crate::read_dicom_series(input)?.map(|&x| x as f64),
            NiftiDtype::F32,
        ),
        _ => {
            // Check the output's name before reading a large input.
            ImageFormat::of(output)?;
            let (stored, unscaled) = crate::io::stored_dtype(input)?;
            let v = read_volume_with::<f64>(
                input,
                &ReadOptions {
                    frame: options.frame,
                    ..Default::default()
                },
            )?;
            (v, if unscaled { stored } else { NiftiDtype::F32 })
        }
    };
    if let Some(code) = &options.reorient {
        vol = AxisTransform::to_code(vol.geometry(), code)?.apply(&vol)?;
    }
    if let Some(sp) = options.spacing {
        vol = resample_to_spacing(
            &vol,
            sp,
            options.interpolation.unwrap_or(Interpolation::Linear),
        )?;
    }
    let dtype = options.dtype.unwrap_or(default_dtype);
    write_volume_as(output, &vol, dtype)?;
    let g = vol.geometry();
    Ok(ConvertReport {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        shape: g.shape(),
        spacing: g.spacing(),
        orientation: g.orientation_code(),
        datatype: dtype.name().to_string(),
    })
}
