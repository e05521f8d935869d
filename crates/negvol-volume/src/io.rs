//! One entry point for every volume format: [`read_volume`] and [`write_volume`] choose
//! NIfTI, NRRD or MetaImage by the file name ([`ImageFormat::of`]).
//!
//! | extension | format | reader / writer |
//! |---|---|---|
//! | `.nii`, `.nii.gz` | NIfTI-1/2 (gzip by name) | [`crate::read_nifti`] / [`crate::write_nifti`] |
//! | `.nrrd`, `.seg.nrrd` | NRRD, attached header | [`crate::read_nrrd`] / [`crate::write_nrrd`] |
//! | `.nhdr` | NRRD, detached header + data file | the same |
//! | `.mha` | MetaImage, header + data in one file | [`crate::read_metaimage`] / [`crate::write_metaimage`] |
//! | `.mhd` | MetaImage header + `.raw` / `.zraw` data file | the same |
//!
//! Extensions are compared case-insensitively; any other name is a
//! [`VolumeError::UnknownFormat`] listing these. Each reader refuses headers that claim more
//! than [`ReadOptions::max_voxels`] voxels before allocating, and reads the frame
//! [`ReadOptions::frame`] of a 4D file. Writers default to compressed data (gzip NIfTI only
//! when the name ends in `.gz`) and write atomically.
//!
//! ```
//! use negvol_volume::*;
//! # fn main() -> Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let a = [[0.0, 0.0, 0.8, -40.0], [-0.4, 0.0, 0.0, 12.0], [0.0, 0.5, 0.0, 3.0], [0.0, 0.0, 0.0, 1.0]];
//! let ct = Volume::new(ndarray::Array3::<i16>::from_elem((3, 4, 5), 40), Geometry::new([3, 4, 5], a)?)?;
//! for name in ["ct.nii.gz", "ct.nrrd", "ct.nhdr", "ct.mha", "ct.mhd"] {
//!     let p = dir.path().join(name);
//!     write_volume(&p, &ct)?;
//!     let back = read_volume::<i16>(&p)?;
//!     assert_eq!(back.data(), ct.data());
//!     back.geometry().check_same(ct.geometry(), 1e-6)?; // NIfTI stores f32
//! }
//! let err = read_volume::<f32>(dir.path().join("ct.tif")).unwrap_err();
//! assert!(matches!(err, VolumeError::UnknownFormat { .. }));
//! # Ok(())
//! # }
//! ```

use std::path::Path;

use serde::Serialize;

use crate::{
    Geometry, NiftiDtype, NiftiReadOptions, NiftiScalar, Result, Volume, VolumeError,
    DEFAULT_MAX_VOXELS,
};

/// The file extensions [`read_volume`] and [`write_volume`] handle, ordered so that the first
/// one a file name ends with is its whole ending (`.seg.nrrd` before `.nrrd`); see
/// [`split_volume_name`].
pub const SUPPORTED_EXTENSIONS: [&str; 7] = [
    ".nii.gz",
    ".nii",
    ".seg.nrrd",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
];

/// A volume file name split into its stem and its ending, one of [`SUPPORTED_EXTENSIONS`]
/// (matched ASCII case-insensitively; the stem keeps its case and must not be empty). `None`
/// for a name with no volume ending.
///
/// ```
/// use negvol_volume::split_volume_name;
/// assert_eq!(split_volume_name("case_001.nii.gz"), Some(("case_001", ".nii.gz")));
/// assert_eq!(split_volume_name("tb.seg.nrrd"), Some(("tb", ".seg.nrrd")));
/// assert_eq!(split_volume_name("CT.MHA"), Some(("CT", ".mha")));
/// assert_eq!(split_volume_name("mesh.stl"), None);
/// assert_eq!(split_volume_name(".nii"), None);
/// ```
pub fn split_volume_name(name: &str) -> Option<(&str, &'static str)> {
    let lower = name.to_ascii_lowercase();
    SUPPORTED_EXTENSIONS
        .iter()
        .find(|ext| lower.len() > ext.len() && lower.ends_with(*ext))
        .map(|ext| (&name[..name.len() - ext.len()], *ext))
}

/// A volume file format, as chosen by a file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum ImageFormat {
    /// NIfTI-1 / NIfTI-2: `.nii`, `.nii.gz`.
    Nifti,
    /// NRRD: `.nrrd` (also 3D Slicer's `.seg.nrrd`), detached `.nhdr`.
    Nrrd,
    /// MetaImage (ITK): `.mha`, `.mhd`.
    MetaImage,
}

impl ImageFormat {
    /// The format a file name calls for (case-insensitive).
    ///
    /// ```
    /// use negvol_volume::ImageFormat;
    /// assert_eq!(ImageFormat::of("a/Segmentation.seg.nrrd").unwrap(), ImageFormat::Nrrd);
    /// assert_eq!(ImageFormat::of("CT.MHA").unwrap(), ImageFormat::MetaImage);
    /// assert!(ImageFormat::of("ct.dcm").is_err());
    /// ```
    ///
    /// # Errors
    /// [`VolumeError::UnknownFormat`] listing [`SUPPORTED_EXTENSIONS`].
    pub fn of(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_name(path).ok_or_else(|| VolumeError::UnknownFormat {
            path: path.to_path_buf(),
            supported: SUPPORTED_EXTENSIONS.to_vec(),
        })
    }

    /// [`Self::of`] as an option.
    pub fn from_name(path: impl AsRef<Path>) -> Option<Self> {
        let name = path.as_ref().file_name()?.to_str()?;
        match split_volume_name(name)?.1 {
            ".nii" | ".nii.gz" => Some(Self::Nifti),
            ".nrrd" | ".seg.nrrd" | ".nhdr" => Some(Self::Nrrd),
            ".mha" | ".mhd" => Some(Self::MetaImage),
            _ => None,
        }
    }

    /// `"NIfTI"`, `"NRRD"` or `"MetaImage"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nifti => "NIfTI",
            Self::Nrrd => "NRRD",
            Self::MetaImage => "MetaImage",
        }
    }
}

/// Whether `path`'s file name ends in `suffix` (ASCII case-insensitively) and has a
/// non-empty stem before it.
pub(crate) fn ends_with_ci(path: &Path, suffix: &str) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() > suffix.len() && n.to_ascii_lowercase().ends_with(suffix))
}

/// Options of [`read_volume_with`] (and of the NRRD and MetaImage readers).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOptions {
    /// Largest number of voxels a header may claim; more is a [`VolumeError::TooLarge`]
    /// before anything is allocated. For NIfTI this bounds one 3D frame; for NRRD, whose 4D
    /// files interleave their layers, every voxel of the file. Default
    /// [`DEFAULT_MAX_VOXELS`].
    pub max_voxels: u64,
    /// Which frame (NRRD: layer) of a 4D file to read; `None` refuses 4D files
    /// ([`VolumeError::NotThreeD`]). Frame 0 of a 3D file is the volume.
    pub frame: Option<u64>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            max_voxels: DEFAULT_MAX_VOXELS,
            frame: None,
        }
    }
}

impl ReadOptions {
    /// The frame to read of a file with `frames` frames, or the error for it.
    pub(crate) fn check_frame(&self, path: &Path, dims: &[u64], frames: u64) -> Result<u64> {
        match self.frame {
            None if frames > 1 => Err(VolumeError::NotThreeD {
                path: path.to_path_buf(),
                dims: dims.to_vec(),
                frames,
            }),
            None => Ok(0),
            Some(f) if f >= frames => Err(VolumeError::InvalidArgument(format!(
                "{}: frame {f} requested but the file has {frames} frame(s)",
                path.display()
            ))),
            Some(f) => Ok(f),
        }
    }
}

impl From<&ReadOptions> for NiftiReadOptions {
    fn from(o: &ReadOptions) -> Self {
        NiftiReadOptions {
            max_voxels: o.max_voxels,
            frame: o.frame,
        }
    }
}

/// Read a 3D volume of `T` from a NIfTI, NRRD or MetaImage file, chosen by its name (see
/// the module docs). Every stored type reads into every `T`; a value `T` cannot hold is a
/// [`VolumeError::ValueOutOfRange`].
///
/// ```no_run
/// let ct = negvol_volume::read_volume::<f32>("ToothFairy/P1.mha")?;
/// println!("{:?} {}", ct.geometry().spacing(), ct.geometry().orientation_code());
/// # Ok::<(), negvol_volume::VolumeError>(())
/// ```
pub fn read_volume<T: NiftiScalar>(path: impl AsRef<Path>) -> Result<Volume<T>> {
    read_volume_with(path, &ReadOptions::default())
}

/// [`read_volume`] with options (voxel limit, frame of a 4D file).
pub fn read_volume_with<T: NiftiScalar>(
    path: impl AsRef<Path>,
    options: &ReadOptions,
) -> Result<Volume<T>> {
    let path = path.as_ref();
    match ImageFormat::of(path)? {
        ImageFormat::Nifti => crate::read_nifti_with(path, &options.into()),
        ImageFormat::Nrrd => crate::read_nrrd_with(path, options),
        ImageFormat::MetaImage => crate::read_metaimage_with(path, options),
    }
}

/// The geometry of a volume file from its header alone (the voxels are not read).
pub fn read_volume_geometry(path: impl AsRef<Path>) -> Result<Geometry> {
    let path = path.as_ref();
    match ImageFormat::of(path)? {
        ImageFormat::Nifti => crate::read_nifti_geometry(path),
        ImageFormat::Nrrd => crate::read_nrrd_geometry(path),
        ImageFormat::MetaImage => crate::read_metaimage_geometry(path),
    }
}

/// The type a file stores its voxels as, and whether they are stored as they are (no
/// NIfTI scaling): what [`crate::convert`] keeps by default.
pub(crate) fn stored_dtype(path: &Path) -> Result<(NiftiDtype, bool)> {
    Ok(match ImageFormat::of(path)? {
        ImageFormat::Nifti => {
            let h = crate::read_nifti_header(path)?;
            let d = h.dtype().unwrap_or(NiftiDtype::F32);
            (d, h.dtype().is_some() && h.scaling() == (1.0, 0.0))
        }
        ImageFormat::Nrrd => (crate::read_nrrd_header(path)?.dtype, true),
        ImageFormat::MetaImage => (crate::read_metaimage_header(path)?.dtype, true),
    })
}

/// Read a mask from any supported format: voxels are `true` where the stored value is
/// nonzero; NaN voxels are a [`VolumeError::ValueOutOfRange`] (NIfTI values are scaled
/// first). The same rule for every format.
pub fn read_mask(path: impl AsRef<Path>) -> Result<Volume<bool>> {
    read_volume(path)
}

/// Write a volume in the format its name calls for, the voxel type's own stored type
/// (`bool` as u8 0/1), with each format's defaults: NIfTI gzip when the name ends in `.gz`,
/// NRRD gzip, MetaImage zlib-compressed (`.mhd` + `.zraw`). Atomic.
///
/// # Errors
/// [`VolumeError::UnknownFormat`] for other names, and the writer's errors.
pub fn write_volume<T: NiftiScalar>(path: impl AsRef<Path>, vol: &Volume<T>) -> Result<()> {
    write_volume_impl(path.as_ref(), vol, None)
}

/// [`write_volume`] with another stored type (e.g. `f32` HU stored as `i16`): values are
/// rounded to nearest; values the type cannot hold are a [`VolumeError::ValueOutOfRange`].
pub fn write_volume_as<T: NiftiScalar>(
    path: impl AsRef<Path>,
    vol: &Volume<T>,
    dtype: NiftiDtype,
) -> Result<()> {
    write_volume_impl(path.as_ref(), vol, Some(dtype))
}

fn write_volume_impl<T: NiftiScalar>(
    path: &Path,
    vol: &Volume<T>,
    dtype: Option<NiftiDtype>,
) -> Result<()> {
    match ImageFormat::of(path)? {
        ImageFormat::Nifti => crate::write_nifti_with(
            path,
            vol,
            &crate::NiftiWriteOptions {
                dtype,
                ..Default::default()
            },
        ),
        ImageFormat::Nrrd => crate::write_nrrd_with(
            path,
            vol,
            &crate::NrrdWriteOptions {
                dtype,
                ..Default::default()
            },
        ),
        ImageFormat::MetaImage => crate::write_metaimage_with(
            path,
            vol,
            &crate::MetaImageWriteOptions {
                dtype,
                ..Default::default()
            },
        ),
    }
}

/// Write a mask as u8 0/1 in the format its name calls for (see [`write_volume`]).
pub fn write_mask(path: impl AsRef<Path>, vol: &Volume<bool>) -> Result<()> {
    write_volume(path, vol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_name() {
        for (n, f) in [
            ("a.nii", ImageFormat::Nifti),
            ("a.NII.GZ", ImageFormat::Nifti),
            ("a.nrrd", ImageFormat::Nrrd),
            ("a.seg.nrrd", ImageFormat::Nrrd),
            ("dir.d/a.nhdr", ImageFormat::Nrrd),
            ("a.mha", ImageFormat::MetaImage),
            ("a.MHD", ImageFormat::MetaImage),
        ] {
            assert_eq!(ImageFormat::of(n).unwrap(), f, "{n}");
        }
        for n in [
            "a.gz",
            "a.raw",
            "a.zraw",
            "a.nii.bz2",
            ".nrrd",
            "a",
            "a.dcm",
        ] {
            let e = ImageFormat::of(n).unwrap_err().to_string();
            assert!(e.contains(".mha") && e.contains(".nii.gz"), "{e}");
        }
    }

    #[test]
    fn frame_checks() {
        let o = ReadOptions::default();
        let p = Path::new("x");
        assert_eq!(o.check_frame(p, &[2, 2, 2], 1).unwrap(), 0);
        assert!(matches!(
            o.check_frame(p, &[3, 2, 2, 2], 3),
            Err(VolumeError::NotThreeD { frames: 3, .. })
        ));
        let o = ReadOptions {
            frame: Some(3),
            ..o
        };
        assert!(o.check_frame(p, &[3, 2, 2, 2], 3).is_err());
    }
}
