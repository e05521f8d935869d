//! # negvol-volume
//!
//! Volumes with geometry for the negvol toolkit: [`Geometry`] (shape, spacing and the 4x4
//! voxel-to-world affine) and [`Volume<T>`] (an `ndarray::Array3<T>` plus its geometry), with
//! NIfTI-1/NIfTI-2, NRRD (3D Slicer, `.seg.nrrd` segmentations included) and MetaImage (ITK
//! `.mha`/`.mhd`) reading and writing, and DICOM series reading.
//!
//! Conventions (shared by every negvol crate):
//! - index order is NIfTI's `(i, j, k)`; an array has shape `[ni, nj, nk]` in standard
//!   (row-major) layout, so `k` is fastest in memory. No `(z, y, x)` reversal anywhere;
//! - spacing is `[si, sj, sk]` in millimetres, in the same order;
//! - world coordinates are RAS+ millimetres, from the voxel-to-world affine.
//!
//! ```
//! use negvol_volume::{Geometry, Volume};
//! let g = Geometry::from_spacing([4, 5, 6], [0.4, 0.4, 0.8]).unwrap();
//! let v = Volume::<u8>::zeros(g.clone());
//! assert_eq!(v.data().shape(), &[4, 5, 6]);
//! assert!((g.voxel_volume_mm3() - 0.128).abs() < 1e-12);
//! assert_eq!(g.voxel_to_world([1.0, 0.0, 1.0]), [0.4, 0.0, 0.8]);
//! ```
//!
//! ## NIfTI
//!
//! [`read_nifti`] reads `.nii` and `.nii.gz` (gzip detected from the bytes), NIfTI-1 and
//! NIfTI-2, either byte order, every integer and float datatype, into the voxel type you ask
//! for, with `scl_slope`/`scl_inter` applied. The affine is the sform if `sform_code > 0`,
//! else the qform if `qform_code > 0`, else `diag(pixdim)` (NIfTI "method 1"). 4D files are
//! refused by [`read_nifti`] and read frame by frame with [`read_nifti_frame`]. Headers that
//! claim more than [`NiftiReadOptions::max_voxels`] voxels are refused before anything is
//! allocated. Every failure is a [`VolumeError`] that names the file.
//!
//! [`write_nifti`] writes NIfTI-1, little-endian, the datatype of `T` (or another one with
//! [`write_nifti_as`]), the affine as both sform and qform (code 1, scanner anatomical),
//! spacing in `pixdim`, units mm, gzip when the name ends in `.gz`, atomically (temporary file
//! in the same directory, then rename). Masks are `Volume<bool>`, stored as u8 0/1
//! ([`write_mask`], [`read_mask`]).
//!
//! ```
//! use negvol_volume::*;
//! # fn main() -> Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! // A 0.3 mm LPS grid, as DICOM-derived CTs often are.
//! let a = [[-0.3, 0.0, 0.0, 20.0], [0.0, -0.3, 0.0, 30.0], [0.0, 0.0, 0.3, -5.0], [0.0, 0.0, 0.0, 1.0]];
//! let g = Geometry::new([8, 8, 4], a)?;
//! let ct = Volume::new(ndarray::Array3::<f32>::from_elem((8, 8, 4), -1000.0), g)?;
//! let path = dir.path().join("ct.nii.gz");
//! write_nifti_as(&path, &ct, NiftiDtype::I16)?; // stored as int16 HU
//! let back = read_nifti::<f32>(&path)?;
//! assert_eq!(back.data(), ct.data());
//! assert_eq!(back.geometry().orientation_code(), "LPS");
//! assert_eq!(read_nifti_header(&path)?.dtype(), Some(NiftiDtype::I16));
//! # Ok(())
//! # }
//! ```
//!
//! ## Any format by name: NIfTI, NRRD, MetaImage
//!
//! [`read_volume`] / [`write_volume`] pick the format from the file name ([`ImageFormat`]:
//! `.nii`, `.nii.gz`, `.nrrd`, `.seg.nrrd`, `.nhdr`, `.mha`, `.mhd`; anything else is a
//! [`VolumeError::UnknownFormat`] listing them); [`read_image`] (f32, or a DICOM series
//! folder), [`read_mask`] (nonzero = `true`, NaN refused, for every format) and
//! [`write_mask`] go through them, so every negvol tool takes every format.
//!
//! - [NRRD](crate::read_nrrd) (`.nrrd`, detached `.nhdr`): NRRD0001-0005, every scalar type
//!   and spelling, raw/gzip/ascii/hex, both byte orders, line and byte skips, 4D files with one
//!   non-spatial axis read frame by frame, `space` RAS/LAS/LPS (and scanner-xyz, 3D-right-handed,
//!   a bare `space dimension`, taken as LPS as ITK does) or `spacings`/`axis mins`; written as
//!   NRRD0004 LPS, as 3D Slicer and ITK write. 3D Slicer segmentations: [`NrrdHeader::segments`]
//!   and [`read_slicer_segment`].
//! - [MetaImage](crate::read_metaimage) (`.mha`, `.mhd` + `.raw`/`.zraw`): ITK's keys, every
//!   `MET_*` scalar type, zlib, both byte orders, `HeaderSize` (-1 too), text data; ITK's LPS
//!   world and its `TransformMatrix` order (axis directions one after the other) converted to
//!   negvol's RAS affine, checked against SimpleITK with a non-symmetric direction.
//!
//! Both are negvol's own codecs, refuse headers that claim more than
//! [`ReadOptions::max_voxels`] voxels before allocating, and report every malformed header as
//! a [`VolumeError`] naming the file and the field.
//!
//! ```
//! use negvol_volume::*;
//! # fn main() -> Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let mask = Volume::<bool>::zeros(Geometry::from_spacing([4, 4, 4], [0.5; 3])?);
//! write_mask(dir.path().join("mc.seg.nrrd"), &mask)?;   // NRRD, gzip, LPS
//! write_volume(dir.path().join("mc.mha"), &mask)?;       // MetaImage, zlib
//! assert_eq!(read_mask(dir.path().join("mc.seg.nrrd"))?, read_mask(dir.path().join("mc.mha"))?);
//! # Ok(())
//! # }
//! ```
//!
//! ## Reorientation and resampling
//!
//! [`reorient`] permutes and flips axes exactly (no interpolation) so that the volume's
//! [`Geometry::orientation_code`] becomes e.g. `"RAS"`; the affine is updated so every voxel
//! keeps its world position, and [`AxisTransform::inverse`] maps results (e.g. predictions
//! made in RAS) back. It matches nibabel's `as_closest_canonical` on the fixtures.
//! [`resample`] maps each target voxel centre through both affines (trilinear or nearest);
//! [`resample_to_spacing`] keeps the field of view centred ([`spacing_geometry`] states the
//! convention).
//!
//! ```
//! use negvol_volume::*;
//! let a = [[-0.4, 0.0, 0.0, 0.0], [0.0, 0.0, 0.4, 0.0], [0.0, -0.8, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
//! let v = Volume::<f32>::zeros(Geometry::new([10, 6, 12], a)?);
//! assert_eq!(v.geometry().orientation_code(), "LIA");
//! let (ras, t) = reorient_to_ras(&v)?;
//! assert_eq!(ras.geometry().shape(), [10, 12, 6]);
//! let iso = resample_to_spacing(&ras, [0.4; 3], Interpolation::Linear)?;
//! assert_eq!(iso.geometry().shape(), [10, 12, 12]);
//! let back = t.inverse().apply(&ras)?;
//! assert_eq!(back.data(), v.data());
//! # Ok::<(), VolumeError>(())
//! ```
//!
//! ## Meshes
//!
//! [`read_stl`] reads ASCII and binary STL into a welded [`TriMesh`]; [`write_stl`] writes
//! binary STL atomically. [`voxelize`] fills a closed mesh onto any [`Geometry`] exactly
//! (integer orientation tests with symbolic perturbation, so rays through vertices and edges
//! are counted once; voxel centres on the surface follow a half-open rule).
//!
//! ## DICOM (feature `dicom`, default)
//!
//! [`read_dicom_series`] reads an uncompressed CT/CBCT series folder into Hounsfield units with
//! slices ordered by position along the normal and the RAS affine; mixed series, missing
//! slices and uneven spacing are [`VolumeError::Series`] errors.
//!
#![warn(missing_docs)]
// Small fixed-size matrix code reads best with explicit indices.
#![allow(clippy::needless_range_loop)]

pub mod atomic;
#[cfg(feature = "dicom")]
mod dicom;
mod error;
mod geometry;
mod io;
mod metaimage;
mod nifti_io;
mod nrrd;
mod rawdata;
mod reorient;
mod resample;
mod scalar;
mod stl;
mod tools;
mod volume;
mod voxelize;

#[cfg(feature = "dicom")]
pub use dicom::{read_dicom_series, read_dicom_series_with, DicomReadOptions};
pub use error::{Result, VolumeError};
pub use geometry::Geometry;
pub use io::{
    read_mask, read_volume, read_volume_geometry, read_volume_with, split_volume_name, write_mask,
    write_volume, write_volume_as, ImageFormat, ReadOptions, SUPPORTED_EXTENSIONS,
};
pub use metaimage::{
    read_metaimage, read_metaimage_geometry, read_metaimage_header, read_metaimage_with,
    write_metaimage, write_metaimage_with, MetaDataFile, MetaImageHeader, MetaImageWriteOptions,
};
pub use nifti_io::{
    read_nifti, read_nifti_frame, read_nifti_from_bytes, read_nifti_geometry, read_nifti_header,
    read_nifti_with, write_nifti, write_nifti_as, write_nifti_with, AffineSource, Endianness,
    NiftiHeader, NiftiReadOptions, NiftiWriteOptions, DEFAULT_MAX_VOXELS,
};
pub use nrrd::{
    read_nrrd, read_nrrd_geometry, read_nrrd_header, read_nrrd_with, read_slicer_segment,
    write_nrrd, write_nrrd_with, NrrdEncoding, NrrdHeader, NrrdSpace, NrrdWriteOptions,
    SlicerSegment,
};
pub use reorient::{parse_orientation_code, reorient, reorient_to_ras, AxisTransform};
pub use resample::{resample, resample_to_spacing, spacing_geometry, Interpolation};
pub use scalar::{NiftiDtype, NiftiScalar};
pub use stl::{read_stl, read_stl_from_bytes, write_stl, TriMesh};
pub use tools::{
    convert, file_kind, image_info, nifti_info, read_image, stl_info, ConvertOptions,
    ConvertReport, FileKind, ImageInfo, NiftiInfo, StlInfo, ValueStats,
};
#[cfg(feature = "dicom")]
pub use tools::{dicom_info, DicomSeriesInfo};
pub use volume::Volume;
pub use voxelize::{voxelize, voxelize_with, FillRule, VoxelizeOptions};
