//! NRRD reading and writing (`.nrrd`, detached `.nhdr`), and 3D Slicer segmentations
//! (`.seg.nrrd`).
//!
//! The codec is negvol's own, written from the NRRD format definition (teem, NRRD0001 to
//! NRRD0005) and checked against SimpleITK (`tests/fixtures/make_itk_fixtures.py`).
//!
//! **Reading** ([`read_nrrd`], [`read_nrrd_with`], [`read_nrrd_header`]): every scalar `type`
//! with all its spellings (`uchar`, `unsigned char`, `uint8`, `uint8_t`, `short`, `short int`,
//! `signed short`, `int16`, ... `float`, `double`; `block` is refused); `dimension` 3, or 4
//! when one axis is not spatial (a `none` entry of `space directions`, else a `kinds` entry
//! other than `domain`/`space`, e.g. Slicer's multi-layer segmentations and ITK's vector
//! images with `list`/`vector` first): such a file is read one frame (layer) at a time with
//! [`ReadOptions::frame`]; `encoding` raw, gzip (`gz`), ascii (`text`, `txt`) and hex (bzip2
//! is refused: decompress it first); `endian`; `line skip`, `byte skip` (-1, "the data end
//! the file", for raw data); `data file` (detached header; the path is relative to the
//! header's folder; `LIST` and multi-file patterns are refused); comments; `key:=value` pairs
//! (kept in [`NrrdHeader::key_values`], escapes decoded).
//!
//! **World frame.** negvol's world is RAS+. The voxel-to-world affine is built from
//! `space directions` (one column per spatial axis, spacing included) and `space origin`:
//!
//! | `space` | coordinates taken as | conversion to RAS |
//! |---|---|---|
//! | `right-anterior-superior` / `RAS` | RAS | none |
//! | `left-anterior-superior` / `LAS` | LAS | x negated |
//! | `left-posterior-superior` / `LPS` | LPS | x, y negated |
//! | `scanner-xyz` | LPS: the NRRD definition says it equals LPS for a patient lying normally in the scanner | x, y negated |
//! | `3D-right-handed`, or only `space dimension: 3` | LPS, as ITK (and so SimpleITK, 3D Slicer, MONAI, nnU-Net) reads them; the format gives them no anatomical meaning | x, y negated |
//! | `3D-left-handed`, the `-time` spaces | refused ([`VolumeError::Unsupported`]): a left-handed frame read as LPS would mirror the image | |
//!
//! Without `space directions` the grid is axis-aligned with `spacings` (1 where absent or
//! `nan`; a negative spacing flips the axis), the first voxel centre at `axis mins` (plus half
//! a spacing for `cell` centering, the default; `node` adds nothing) or at 0, and the axes
//! taken as LPS, as ITK does. `space units` other than `mm` are refused (ITK ignores them;
//! a centimetre file would be silently 10x off).
//!
//! **Writing** ([`write_nrrd`], [`write_nrrd_with`]): NRRD0004 with `space:
//! left-posterior-superior` and the directions and origin converted to LPS, as 3D Slicer and
//! ITK write; gzip by default ([`NrrdWriteOptions::encoding`]), little-endian unless asked;
//! `key:=value` pairs from the options; a `.nhdr` path writes a detached header and its data
//! file (`<stem>.raw` or `<stem>.raw.gz`). Files are written atomically.
//!
//! **Slicer segmentations** ([`NrrdHeader::segments`], [`read_slicer_segment`]): the
//! `SegmentN_ID`, `SegmentN_Name`, `SegmentN_LabelValue` and `SegmentN_Layer` keys as a typed
//! list; one segment is the voxels of its layer equal to its label value. Slicer stores a
//! binary-labelmap segmentation as a 3D label map (one layer) or, when segments overlap, 4D
//! with the layers first. Files from Slicer before 4.11 have neither `LabelValue` nor `Layer`:
//! each segment is then its own layer with value 1.
//!
//! ```
//! use negvol_volume::*;
//! # fn main() -> Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let a = [[-0.3, 0.0, 0.0, 20.0], [0.0, -0.3, 0.0, 30.0], [0.0, 0.0, 0.6, -5.0], [0.0, 0.0, 0.0, 1.0]];
//! let ct = Volume::new(ndarray::Array3::<i16>::from_elem((4, 3, 2), -1000), Geometry::new([4, 3, 2], a)?)?;
//! let path = dir.path().join("ct.nrrd");
//! write_nrrd(&path, &ct)?; // gzip, space: left-posterior-superior
//! let h = read_nrrd_header(&path)?;
//! assert_eq!(h.space_directions.as_ref().unwrap()[0], Some([0.3, 0.0, 0.0])); // LPS
//! let back = read_nrrd::<f32>(&path)?;
//! assert_eq!(back.geometry().affine(), a); // RAS again
//! assert_eq!(back.geometry().orientation_code(), "LPS");
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::rawdata::{
    atomic_write, checked_size, gather_frame, parse_f64, read_exact_data, skip_bytes,
    text_values_to_bytes, volume_from_bytes, write_data, WriteErr,
};
use crate::{
    Endianness, Geometry, NiftiDtype, NiftiScalar, ReadOptions, Result, Volume, VolumeError,
};

/// Longest header negvol reads (bytes); a file with no blank line within it is refused.
const MAX_HEADER_BYTES: u64 = 8 << 20;

/// How a NRRD file's voxel data are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum NrrdEncoding {
    /// `raw`: the bytes as they are in memory.
    Raw,
    /// `gzip` / `gz`: a gzip stream of the raw bytes.
    Gzip,
    /// `ascii` / `text` / `txt`: numbers as text, separated by whitespace.
    Ascii,
    /// `hex`: two hexadecimal digits per byte.
    Hex,
}

impl NrrdEncoding {
    /// The name written in a header (`raw`, `gzip`, `ascii`, `hex`).
    pub fn name(self) -> &'static str {
        match self {
            NrrdEncoding::Raw => "raw",
            NrrdEncoding::Gzip => "gzip",
            NrrdEncoding::Ascii => "ascii",
            NrrdEncoding::Hex => "hex",
        }
    }
}

/// A NRRD `space` that negvol reads (see the module docs for how each maps to RAS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum NrrdSpace {
    /// `right-anterior-superior` / `RAS` (NIfTI's and 3D Slicer's world frame).
    RightAnteriorSuperior,
    /// `left-anterior-superior` / `LAS` (Analyze).
    LeftAnteriorSuperior,
    /// `left-posterior-superior` / `LPS` (DICOM's and ITK's).
    LeftPosteriorSuperior,
    /// `scanner-xyz` (ACR-NEMA 2.0), taken as LPS.
    ScannerXyz,
    /// `3D-right-handed`, taken as LPS (as ITK does).
    RightHanded3D,
}

impl NrrdSpace {
    /// The canonical name in a header, e.g. `left-posterior-superior`.
    pub fn name(self) -> &'static str {
        match self {
            NrrdSpace::RightAnteriorSuperior => "right-anterior-superior",
            NrrdSpace::LeftAnteriorSuperior => "left-anterior-superior",
            NrrdSpace::LeftPosteriorSuperior => "left-posterior-superior",
            NrrdSpace::ScannerXyz => "scanner-xyz",
            NrrdSpace::RightHanded3D => "3D-right-handed",
        }
    }

    /// Signs that turn coordinates of this space into RAS.
    fn to_ras(self) -> [f64; 3] {
        match self {
            NrrdSpace::RightAnteriorSuperior => [1.0, 1.0, 1.0],
            NrrdSpace::LeftAnteriorSuperior => [-1.0, 1.0, 1.0],
            _ => [-1.0, -1.0, 1.0],
        }
    }
}

/// One segment of a 3D Slicer segmentation (`.seg.nrrd`), from the header's
/// `SegmentN_*` keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlicerSegment {
    /// `N` in `SegmentN_*`.
    pub index: usize,
    /// `SegmentN_ID` (`Segment_N` when absent).
    pub id: String,
    /// `SegmentN_Name` (the ID when absent).
    pub name: String,
    /// `SegmentN_LabelValue`: the voxel value of the segment in its layer (1 when absent).
    pub label_value: u32,
    /// `SegmentN_Layer`: the frame of a 4D file holding the segment (when absent: `N` in a
    /// file with one layer per segment, else 0).
    pub layer: u64,
    /// `SegmentN_Color` (RGB in 0..1), when given.
    pub color: Option<[f64; 3]>,
}

/// A parsed NRRD header (attached or detached).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NrrdHeader {
    /// Format version, `N` of the `NRRD000N` magic (1..=5).
    pub version: u8,
    /// The scalar type of the voxels.
    pub dtype: NiftiDtype,
    /// `dimension` (3, or 4 with one non-spatial axis).
    pub dimension: usize,
    /// `sizes`, one per axis, fastest first.
    pub sizes: Vec<u64>,
    /// The non-spatial axis of a 4D file (layers, frames, vector components).
    pub frame_axis: Option<usize>,
    /// `encoding`.
    pub encoding: NrrdEncoding,
    /// `endian` (required for multi-byte types unless the encoding is text).
    pub endianness: Option<Endianness>,
    /// `space`, when named.
    pub space: Option<NrrdSpace>,
    /// `space dimension` (or the named space's, 3).
    pub space_dimension: Option<usize>,
    /// `space directions`: per axis, the vector (in the header's space, spacing included) or
    /// `None` for a `none` entry.
    pub space_directions: Option<Vec<Option<[f64; 3]>>>,
    /// `space origin`, in the header's space: the centre of the first voxel.
    pub space_origin: Option<[f64; 3]>,
    /// `spacings` (`NaN` for `nan`).
    pub spacings: Option<Vec<f64>>,
    /// `axis mins` (`NaN` for `nan`).
    pub axis_mins: Option<Vec<f64>>,
    /// `centers` / `centerings` (`cell`, `node`, `???`).
    pub centers: Option<Vec<String>>,
    /// `kinds` (`domain`, `space`, `list`, `vector`, ...).
    pub kinds: Option<Vec<String>>,
    /// `space units` (quotes removed).
    pub space_units: Option<Vec<String>>,
    /// `data file` of a detached header, as written (relative to the header's folder unless
    /// absolute).
    pub data_file: Option<String>,
    /// `line skip`: lines skipped at the start of the data file.
    pub line_skip: u64,
    /// `byte skip`: bytes skipped after the lines (of the decompressed data for gzip); -1
    /// means the data end the file.
    pub byte_skip: i64,
    /// Every field specification as written (canonical field name -> description).
    pub fields: BTreeMap<String, String>,
    /// `key:=value` pairs (escapes `\n` and `\\` decoded).
    pub key_values: BTreeMap<String, String>,
    /// Comment lines, without the `#`.
    pub comments: Vec<String>,
    /// Bytes of the header up to and including its blank line (where attached data start).
    pub header_bytes: u64,
}

impl NrrdHeader {
    /// Sizes `[ni, nj, nk]` of the three spatial axes.
    pub fn shape3(&self) -> [u64; 3] {
        let s: Vec<u64> = self
            .sizes
            .iter()
            .enumerate()
            .filter(|(a, _)| Some(*a) != self.frame_axis)
            .map(|(_, n)| *n)
            .collect();
        [s[0], s[1], s[2]]
    }

    /// Number of frames (layers): the size of the non-spatial axis, 1 for a 3D file.
    pub fn frames(&self) -> u64 {
        self.frame_axis.map_or(1, |a| self.sizes[a])
    }

    /// Indices of the three spatial axes in the file, fastest first.
    fn spatial_axes(&self) -> [usize; 3] {
        let s: Vec<usize> = (0..self.dimension)
            .filter(|a| Some(*a) != self.frame_axis)
            .collect();
        [s[0], s[1], s[2]]
    }

    /// The voxel-to-world affine in negvol's RAS+ frame (see the module docs). Not yet
    /// validated (see [`Geometry::new`]); errors name the offending field.
    pub fn affine(&self) -> std::result::Result<[[f64; 4]; 4], String> {
        let axes = self.spatial_axes();
        let mut a = [[0.0; 4]; 4];
        a[3][3] = 1.0;
        if let Some(dirs) = &self.space_directions {
            let sign = self.space.map_or([-1.0, -1.0, 1.0], NrrdSpace::to_ras);
            for (c, &ax) in axes.iter().enumerate() {
                let v = dirs[ax]
                    .ok_or_else(|| format!("space directions: spatial axis {ax} is \"none\""))?;
                for r in 0..3 {
                    a[r][c] = sign[r] * v[r];
                }
            }
            let o = self.space_origin.unwrap_or([0.0; 3]);
            for r in 0..3 {
                a[r][3] = sign[r] * o[r];
            }
        } else {
            // Axis-aligned; ITK takes the axes as LPS, a named space says otherwise.
            let sign = self.space.map_or([-1.0, -1.0, 1.0], NrrdSpace::to_ras);
            for (c, &ax) in axes.iter().enumerate() {
                let s = match self.spacings.as_ref().map(|s| s[ax]) {
                    Some(s) if s.is_nan() => 1.0,
                    Some(s) if !s.is_finite() || s == 0.0 => {
                        return Err(format!(
                            "spacings: axis {ax} has spacing {s} (must be finite and nonzero)"
                        ))
                    }
                    Some(s) => s,
                    None => 1.0,
                };
                a[c][c] = sign[c] * s;
                if let Some(min) = self.axis_mins.as_ref().map(|m| m[ax]) {
                    if min.is_infinite() {
                        return Err(format!("axis mins: axis {ax} is {min}"));
                    }
                    if min.is_finite() {
                        let node = self
                            .centers
                            .as_ref()
                            .is_some_and(|c| c[ax].eq_ignore_ascii_case("node"));
                        a[c][3] = sign[c] * if node { min } else { min + s / 2.0 };
                    }
                }
            }
        }
        Ok(a)
    }

    /// The 3D Slicer segments this header declares (`SegmentN_*` keys), by `N`; empty for
    /// a file that is not a Slicer segmentation.
    ///
    /// # Errors
    /// A `LabelValue` or `Layer` that is not a non-negative integer, a `Color` that is not
    /// three numbers, or a layer past the file's frames; the message names the key.
    pub fn segments(&self) -> std::result::Result<Vec<SlicerSegment>, String> {
        let mut by_index: BTreeMap<usize, BTreeMap<&str, &str>> = BTreeMap::new();
        for (k, v) in &self.key_values {
            let Some(rest) = k.strip_prefix("Segment") else {
                continue;
            };
            let Some((n, field)) = rest.split_once('_') else {
                continue;
            };
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(n) = n.parse::<usize>() else {
                continue;
            };
            by_index.entry(n).or_default().insert(field, v.as_str());
        }
        // Slicer before 4.11: one segment per layer, value 1, no LabelValue/Layer keys.
        let legacy = by_index
            .values()
            .all(|f| !f.contains_key("LabelValue") && !f.contains_key("Layer"))
            && self.frames() > 1
            && self.frames() == by_index.len() as u64;
        let mut out = Vec::with_capacity(by_index.len());
        for (pos, (n, f)) in by_index.iter().enumerate() {
            let key = |field: &str| format!("Segment{n}_{field}");
            let int = |field: &str| -> std::result::Result<Option<u64>, String> {
                f.get(field)
                    .map(|v| {
                        v.trim().parse::<u64>().map_err(|_| {
                            format!("{} = {v:?} is not a non-negative integer", key(field))
                        })
                    })
                    .transpose()
            };
            let id = f
                .get("ID")
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("Segment_{n}"));
            let name = f.get("Name").map(|s| s.to_string()).unwrap_or(id.clone());
            let label_value = match int("LabelValue")? {
                Some(v) => u32::try_from(v)
                    .map_err(|_| format!("{} = {v} is too large", key("LabelValue")))?,
                None => 1,
            };
            let layer = match int("Layer")? {
                Some(l) => l,
                None if legacy => pos as u64,
                None => 0,
            };
            if layer >= self.frames() {
                return Err(format!(
                    "{} = {layer}, but the file has {} layer(s)",
                    key("Layer"),
                    self.frames()
                ));
            }
            let color = match f.get("Color") {
                None => None,
                Some(c) => {
                    let v: Vec<f64> = c
                        .split_ascii_whitespace()
                        .map(|t| parse_f64(t).filter(|x| x.is_finite()))
                        .collect::<Option<_>>()
                        .ok_or_else(|| format!("{} = {c:?} is not three numbers", key("Color")))?;
                    Some(
                        <[f64; 3]>::try_from(v).map_err(|_| {
                            format!("{} = {c:?} is not three numbers", key("Color"))
                        })?,
                    )
                }
            };
            out.push(SlicerSegment {
                index: *n,
                id,
                name,
                label_value,
                layer,
                color,
            });
        }
        Ok(out)
    }
}

/// Read and validate the header of a NRRD file (`.nrrd`, `.seg.nrrd`, or a detached
/// `.nhdr`) without reading its voxels.
///
/// ```no_run
/// let h = negvol_volume::read_nrrd_header("Segmentation.seg.nrrd")?;
/// for s in h.segments().unwrap() {
///     println!("{} = layer {} value {}", s.name, s.layer, s.label_value);
/// }
/// # Ok::<(), negvol_volume::VolumeError>(())
/// ```
pub fn read_nrrd_header(path: impl AsRef<Path>) -> Result<NrrdHeader> {
    let path = path.as_ref();
    let mut r = open(path)?;
    read_header(&mut r, path)
}

/// The geometry (spatial axes) of a NRRD file from its header alone.
pub fn read_nrrd_geometry(path: impl AsRef<Path>) -> Result<Geometry> {
    let path = path.as_ref();
    let h = read_nrrd_header(path)?;
    header_geometry(&h, path)
}

/// Read a 3D NRRD file into a volume of `T` (every stored type into every `T`; integer
/// targets round to nearest, values `T` cannot hold are [`VolumeError::ValueOutOfRange`]).
/// A 4D file is a [`VolumeError::NotThreeD`]; read one frame with [`read_nrrd_with`].
///
/// ```no_run
/// let ct = negvol_volume::read_nrrd::<f32>("ct.nrrd")?;
/// println!("{}", ct.geometry().orientation_code());
/// # Ok::<(), negvol_volume::VolumeError>(())
/// ```
pub fn read_nrrd<T: NiftiScalar>(path: impl AsRef<Path>) -> Result<Volume<T>> {
    read_nrrd_with(path, &ReadOptions::default())
}

/// [`read_nrrd`] with options: the voxel limit (checked against every voxel of the file,
/// all frames, before anything is allocated) and the frame of a 4D file.
pub fn read_nrrd_with<T: NiftiScalar>(
    path: impl AsRef<Path>,
    options: &ReadOptions,
) -> Result<Volume<T>> {
    let path = path.as_ref();
    let mut r = open(path)?;
    let h = read_header(&mut r, path)?;
    let frame = options.check_frame(path, &h.sizes, h.frames())?;
    let geometry = header_geometry(&h, path)?;
    let (nvox, nbytes) = checked_size(&h.sizes, h.dtype.size(), path, "sizes")?;
    if nvox > options.max_voxels {
        return Err(VolumeError::TooLarge {
            path: path.to_path_buf(),
            dims: h.sizes.clone(),
            voxels: nvox,
            limit: options.max_voxels,
        });
    }
    let (bytes, endian, data_path) = read_data(r, &h, path, nvox, nbytes)?;
    let bytes = match h.frame_axis {
        None => bytes,
        Some(fa) => {
            let s = &h.sizes;
            let mut strides = [0usize; 4];
            let mut acc = 1usize;
            for (a, st) in strides.iter_mut().enumerate() {
                *st = acc;
                acc *= s[a] as usize;
            }
            let sp = h.spatial_axes();
            gather_frame(
                &bytes,
                h.dtype.size(),
                geometry.shape(),
                [strides[sp[0]], strides[sp[1]], strides[sp[2]]],
                frame as usize * strides[fa],
            )
        }
    };
    volume_from_bytes(&bytes, h.dtype, endian, geometry, &data_path)
}

/// One segment of a 3D Slicer segmentation (`.seg.nrrd`) as a mask: the voxels of the
/// segment's layer that equal its label value. `segment` is matched against the segments'
/// names, then their IDs.
///
/// ```no_run
/// let condyle = negvol_volume::read_slicer_segment("case01/Segmentation.seg.nrrd", "condyle")?;
/// # Ok::<(), negvol_volume::VolumeError>(())
/// ```
///
/// # Errors
/// No such segment (the message lists the file's segments), malformed segment keys, and
/// whatever [`read_nrrd_with`] returns.
pub fn read_slicer_segment(path: impl AsRef<Path>, segment: &str) -> Result<Volume<bool>> {
    let path = path.as_ref();
    let h = read_nrrd_header(path)?;
    let segments = h.segments().map_err(|m| VolumeError::format(path, m))?;
    let s = segments
        .iter()
        .find(|s| s.name == segment)
        .or_else(|| segments.iter().find(|s| s.id == segment))
        .ok_or_else(|| {
            let names: Vec<&str> = segments.iter().map(|s| s.name.as_str()).collect();
            VolumeError::InvalidArgument(format!(
                "{}: no segment named {segment:?} (segments: {})",
                path.display(),
                if names.is_empty() {
                    "none: not a Slicer segmentation".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })?;
    let layer: Volume<f64> = read_nrrd_with(
        path,
        &ReadOptions {
            frame: Some(s.layer),
            ..ReadOptions::default()
        },
    )?;
    let value = f64::from(s.label_value);
    Ok(layer.map(|v| *v == value))
}

fn header_geometry(h: &NrrdHeader, path: &Path) -> Result<Geometry> {
    let affine = h.affine().map_err(|m| VolumeError::format(path, m))?;
    let s = h.shape3();
    let shape = [s[0] as usize, s[1] as usize, s[2] as usize];
    let field = if h.space_directions.is_some() {
        "space directions / space origin"
    } else {
        "spacings / axis mins"
    };
    Geometry::new(shape, affine)
        .map_err(|e| VolumeError::format(path, format!("{field} give an invalid geometry: {e}")))
}

fn open(path: &Path) -> Result<BufReader<File>> {
    let f = File::open(path).map_err(|e| VolumeError::io(path, e))?;
    Ok(BufReader::with_capacity(1 << 16, f))
}

/// The canonical name of a NRRD field, or `None` for a name that is not a field.
fn canonical_field(name: &str) -> Option<&'static str> {
    const FIELDS: [&str; 30] = [
        "content",
        "number",
        "type",
        "block size",
        "dimension",
        "space",
        "space dimension",
        "sizes",
        "spacings",
        "thicknesses",
        "axis mins",
        "axis maxs",
        "centers",
        "labels",
        "units",
        "kinds",
        "min",
        "max",
        "old min",
        "old max",
        "endian",
        "encoding",
        "line skip",
        "byte skip",
        "sample units",
        "space units",
        "space origin",
        "space directions",
        "measurement frame",
        "data file",
    ];
    let n = name.trim().to_ascii_lowercase();
    let n = match n.as_str() {
        "blocksize" => "block size",
        "axismins" => "axis mins",
        "axismaxs" => "axis maxs",
        "centerings" => "centers",
        "oldmin" => "old min",
        "oldmax" => "old max",
        "lineskip" => "line skip",
        "byteskip" => "byte skip",
        "datafile" => "data file",
        "sampleunits" => "sample units",
        other => other,
    };
    FIELDS.iter().find(|f| **f == n).copied()
}

fn parse_type(s: &str) -> Option<std::result::Result<NiftiDtype, ()>> {
    let t: Vec<&str> = s.split_ascii_whitespace().collect();
    let t = t.join(" ").to_ascii_lowercase();
    Some(Ok(match t.as_str() {
        "signed char" | "int8" | "int8_t" => NiftiDtype::I8,
        "uchar" | "unsigned char" | "uint8" | "uint8_t" => NiftiDtype::U8,
        "short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t" => {
            NiftiDtype::I16
        }
        "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => {
            NiftiDtype::U16
        }
        "int" | "signed int" | "int32" | "int32_t" => NiftiDtype::I32,
        "uint" | "unsigned int" | "uint32" | "uint32_t" => NiftiDtype::U32,
        "longlong"
        | "long long"
        | "long long int"
        | "signed long long"
        | "signed long long int"
        | "int64"
        | "int64_t" => NiftiDtype::I64,
        "ulonglong" | "unsigned long long" | "unsigned long long int" | "uint64" | "uint64_t" => {
            NiftiDtype::U64
        }
        "float" => NiftiDtype::F32,
        "double" => NiftiDtype::F64,
        "block" => return Some(Err(())),
        _ => return None,
    }))
}

/// The NRRD type name negvol writes for a datatype (the canonical teem names).
fn type_name(d: NiftiDtype) -> &'static str {
    match d {
        NiftiDtype::I8 => "signed char",
        NiftiDtype::U8 => "unsigned char",
        NiftiDtype::I16 => "short",
        NiftiDtype::U16 => "unsigned short",
        NiftiDtype::I32 => "int",
        NiftiDtype::U32 => "unsigned int",
        NiftiDtype::I64 => "long long int",
        NiftiDtype::U64 => "unsigned long long int",
        NiftiDtype::F32 => "float",
        NiftiDtype::F64 => "double",
    }
}

/// Decode a key/value string's escapes (`\n` and `\\`).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Read the header lines from `r` (positioned at the start of the file).
fn read_header(r: &mut BufReader<File>, path: &Path) -> Result<NrrdHeader> {
    let mut consumed = 0u64;
    let mut lines: Vec<String> = Vec::new();
    let mut buf = Vec::new();
    let mut ended_blank = false;
    // A binary file of another format is refused before its "first line" is read.
    let head = r.fill_buf().map_err(|e| VolumeError::io(path, e))?;
    if head.len() >= 4 && !head.starts_with(b"NRRD") {
        return Err(VolumeError::format(
            path,
            "not a NRRD file: it does not start with the NRRD000N magic",
        ));
    }
    loop {
        buf.clear();
        let n = (&mut *r)
            .take(MAX_HEADER_BYTES + 1 - consumed.min(MAX_HEADER_BYTES))
            .read_until(b'\n', &mut buf)
            .map_err(|e| VolumeError::io(path, e))?;
        if n == 0 {
            break;
        }
        consumed += n as u64;
        if consumed > MAX_HEADER_BYTES {
            return Err(VolumeError::format(
                path,
                format!("no end of the NRRD header within {MAX_HEADER_BYTES} bytes"),
            ));
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if lines.is_empty() && !line.starts_with(b"NRRD") {
            return Err(VolumeError::format(
                path,
                "not a NRRD file: it does not start with the NRRD000N magic",
            ));
        }
        if line.is_empty() {
            ended_blank = true;
            break;
        }
        let text = std::str::from_utf8(line).map_err(|_| {
            VolumeError::format(
                path,
                format!("header line {} is not text (UTF-8)", lines.len() + 1),
            )
        })?;
        lines.push(text.to_string());
    }
    if lines.is_empty() {
        return Err(VolumeError::format(path, "not a NRRD file: it is empty"));
    }
    let mut h = parse_header(&lines, path)?;
    h.header_bytes = consumed;
    if !ended_blank && h.data_file.is_none() {
        return Err(VolumeError::format(
            path,
            "the header ends without a blank line and names no data file: no voxel data",
        ));
    }
    Ok(h)
}

fn parse_header(lines: &[String], path: &Path) -> Result<NrrdHeader> {
    let bad = |m: String| VolumeError::format(path, m);
    let magic = lines[0].trim_end();
    let version = match magic {
        "NRRD0001" => 1,
        "NRRD0002" => 2,
        "NRRD0003" => 3,
        "NRRD0004" => 4,
        "NRRD0005" => 5,
        m => {
            return Err(VolumeError::unsupported(
                path,
                format!("NRRD magic {m:?} (negvol reads NRRD0001 to NRRD0005)"),
            ))
        }
    };
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut key_values = BTreeMap::new();
    let mut comments = Vec::new();
    for (n, line) in lines.iter().enumerate().skip(1) {
        if let Some(c) = line.strip_prefix('#') {
            comments.push(c.trim().to_string());
            continue;
        }
        let field = line.split_once(':').and_then(|(name, rest)| {
            if rest.starts_with('=') {
                None
            } else {
                canonical_field(name).map(|f| (f, rest.trim()))
            }
        });
        if let Some((f, desc)) = field {
            if fields.insert(f.to_string(), desc.to_string()).is_some() {
                return Err(bad(format!("field \"{f}\" is given twice")));
            }
            // The rest of a `data file: LIST` header names the data files.
            if f == "data file" && desc.split_ascii_whitespace().next() == Some("LIST") {
                break;
            }
        } else if let Some((k, v)) = line.split_once(":=") {
            key_values.insert(unescape(k), unescape(v));
        } else {
            return Err(bad(format!(
                "header line {}: {line:?} is neither a known field (\"name: value\"), a \
                 key/value pair (\"key:=value\") nor a comment",
                n + 1
            )));
        }
    }
    let get = |f: &str| fields.get(f).map(String::as_str);
    let need = |f: &str| get(f).ok_or_else(|| bad(format!("required field \"{f}\" is missing")));

    let type_s = need("type")?;
    let dtype = match parse_type(type_s) {
        Some(Ok(d)) => d,
        Some(Err(())) => {
            return Err(VolumeError::unsupported(
                path,
                "type: block (opaque blocks of bytes are not voxel values)",
            ))
        }
        None => return Err(bad(format!("type: {type_s:?} is not a NRRD scalar type"))),
    };
    let dim_s = need("dimension")?;
    let dimension: usize = dim_s
        .parse()
        .map_err(|_| bad(format!("dimension: {dim_s:?} is not a positive integer")))?;
    if !(3..=4).contains(&dimension) {
        return Err(VolumeError::unsupported(
            path,
            format!(
                "dimension: {dimension} (negvol reads 3D volumes, and 4D files with one \
                 non-spatial axis such as segmentation layers)"
            ),
        ));
    }
    // Per-axis fields: exactly `dimension` entries.
    let per_axis = |f: &str, items: Vec<String>| -> Result<Vec<String>> {
        if items.len() != dimension {
            return Err(bad(format!(
                "{f}: {} entries for dimension {dimension}",
                items.len()
            )));
        }
        Ok(items)
    };
    let words = |s: &str| s.split_ascii_whitespace().map(String::from).collect();
    let numbers = |f: &str| -> Result<Option<Vec<f64>>> {
        get(f)
            .map(|s| {
                per_axis(f, words(s))?
                    .iter()
                    .map(|t| parse_f64(t).ok_or_else(|| bad(format!("{f}: {t:?} is not a number"))))
                    .collect()
            })
            .transpose()
    };
    let sizes_s = need("sizes")?;
    let sizes: Vec<u64> = per_axis("sizes", words(sizes_s))?
        .iter()
        .map(|t| match t.parse::<i128>() {
            Ok(v) if v >= 1 && v <= u64::MAX as i128 => Ok(v as u64),
            Ok(v) if v < 1 => Err(bad(format!("sizes: {v} (sizes must be at least 1)"))),
            _ => Err(bad(format!("sizes: {t:?} is not a size"))),
        })
        .collect::<Result<_>>()?;

    let enc_s = need("encoding")?;
    let encoding = match enc_s.to_ascii_lowercase().as_str() {
        "raw" => NrrdEncoding::Raw,
        "gz" | "gzip" => NrrdEncoding::Gzip,
        "txt" | "text" | "ascii" => NrrdEncoding::Ascii,
        "hex" => NrrdEncoding::Hex,
        "bz2" | "bzip2" => {
            return Err(VolumeError::unsupported(
                path,
                "encoding: bzip2 (negvol reads raw, gzip, ascii and hex; recompress the file, \
                 e.g. `unu save -e gzip` or in 3D Slicer)",
            ))
        }
        e => {
            return Err(VolumeError::unsupported(
                path,
                format!("encoding: {e:?} (negvol reads raw, gzip, ascii and hex)"),
            ))
        }
    };
    let endianness = match get("endian").map(|s| s.to_ascii_lowercase()) {
        None => None,
        Some(e) if e == "little" => Some(Endianness::Little),
        Some(e) if e == "big" => Some(Endianness::Big),
        Some(e) => return Err(bad(format!("endian: {e:?} (expected little or big)"))),
    };
    if endianness.is_none() && dtype.size() > 1 && encoding != NrrdEncoding::Ascii {
        return Err(bad(format!(
            "required field \"endian\" is missing (needed for {} with {} encoding)",
            type_name(dtype),
            encoding.name()
        )));
    }

    let space = match get("space") {
        None => None,
        Some(s) => Some(match s.to_ascii_lowercase().as_str() {
            "right-anterior-superior" | "ras" => NrrdSpace::RightAnteriorSuperior,
            "left-anterior-superior" | "las" => NrrdSpace::LeftAnteriorSuperior,
            "left-posterior-superior" | "lps" => NrrdSpace::LeftPosteriorSuperior,
            "scanner-xyz" => NrrdSpace::ScannerXyz,
            "3d-right-handed" => NrrdSpace::RightHanded3D,
            "3d-left-handed" => {
                return Err(VolumeError::unsupported(
                    path,
                    "space: 3D-left-handed (reading a left-handed frame as negvol's RAS would \
                     mirror the image)",
                ))
            }
            t if t.ends_with("-time") || matches!(t, "rast" | "last" | "lpst") => {
                return Err(VolumeError::unsupported(
                    path,
                    format!("space: {s} (a space with time; negvol reads 3D spaces)"),
                ))
            }
            _ => return Err(bad(format!("space: {s:?} is not a NRRD space"))),
        }),
    };
    let space_dimension = match get("space dimension") {
        None => space.map(|_| 3),
        Some(s) => {
            if space.is_some() {
                return Err(bad(
                    "both \"space\" and \"space dimension\" are given".into()
                ));
            }
            let d: usize = s
                .parse()
                .map_err(|_| bad(format!("space dimension: {s:?} is not a positive integer")))?;
            if d != 3 {
                return Err(VolumeError::unsupported(
                    path,
                    format!("space dimension: {d} (negvol reads 3D spaces)"),
                ));
            }
            Some(d)
        }
    };
    let space_directions = match get("space directions") {
        None => None,
        Some(s) => {
            if space_dimension.is_none() {
                return Err(bad(
                    "space directions: given without \"space\" or \"space dimension\"".into(),
                ));
            }
            let items = vectors(s).map_err(|m| bad(format!("space directions: {m}")))?;
            let items = per_axis_vec(items, dimension, "space directions", path)?;
            Some(items)
        }
    };
    let space_origin = match get("space origin") {
        None => None,
        Some(s) => {
            if space_dimension.is_none() {
                return Err(bad(
                    "space origin: given without \"space\" or \"space dimension\"".into(),
                ));
            }
            let v = vectors(s).map_err(|m| bad(format!("space origin: {m}")))?;
            match v.as_slice() {
                [Some(o)] => Some(*o),
                _ => {
                    return Err(bad(format!(
                        "space origin: {s:?} is not one (x,y,z) vector"
                    )))
                }
            }
        }
    };
    let space_units = match get("space units") {
        None => None,
        Some(s) => {
            let u = quoted(s).map_err(|m| bad(format!("space units: {m}")))?;
            if u.len() != 3 {
                return Err(bad(format!(
                    "space units: {} entries for a 3D space",
                    u.len()
                )));
            }
            if let Some(bad_unit) = u
                .iter()
                .find(|u| !u.is_empty() && !u.eq_ignore_ascii_case("mm"))
            {
                return Err(VolumeError::unsupported(
                    path,
                    format!("space units: {bad_unit:?} (negvol reads millimetres)"),
                ));
            }
            Some(u)
        }
    };
    let spacings = numbers("spacings")?;
    let axis_mins = numbers("axis mins")?;
    let centers = get("centers")
        .map(|s| per_axis("centers", words(s)))
        .transpose()?;
    let kinds = get("kinds")
        .map(|s| per_axis("kinds", words(s)))
        .transpose()?;

    // The non-spatial axis of a 4D file.
    let frame_axis = if dimension == 3 {
        if let Some(d) = &space_directions {
            if let Some(a) = d.iter().position(Option::is_none) {
                return Err(bad(format!(
                    "space directions: axis {a} is \"none\" in a 3D file (negvol needs three \
                     spatial axes)"
                )));
            }
        }
        None
    } else {
        let by_dirs: Option<Vec<usize>> = space_directions
            .as_ref()
            .map(|d| (0..dimension).filter(|a| d[*a].is_none()).collect());
        let by_kinds: Option<Vec<usize>> = kinds.as_ref().map(|k| {
            (0..dimension)
                .filter(|a| !matches!(k[*a].to_ascii_lowercase().as_str(), "domain" | "space"))
                .collect()
        });
        let (axes, from) = match (by_dirs, by_kinds) {
            (Some(d), _) => (d, "space directions (\"none\" entries)"),
            (None, Some(k)) => (k, "kinds (entries other than domain/space)"),
            (None, None) => {
                return Err(bad(
                    "a 4D file needs \"space directions\" or \"kinds\" to tell which axis is \
                     not spatial"
                        .into(),
                ))
            }
        };
        match axes.as_slice() {
            [a] => Some(*a),
            _ => {
                return Err(VolumeError::unsupported(
                    path,
                    format!(
                        "dimension 4 with {} non-spatial axes according to {from} (negvol reads \
                         4D files with exactly one)",
                        axes.len()
                    ),
                ))
            }
        }
    };

    let data_file = match get("data file") {
        None => None,
        Some(s) => {
            let t: Vec<&str> = s.split_ascii_whitespace().collect();
            if t.first() == Some(&"LIST") {
                return Err(VolumeError::unsupported(
                    path,
                    "data file: LIST (data in several files; join them into one first)",
                ));
            }
            if t.len() >= 4 && t[1..4].iter().all(|x| x.parse::<i64>().is_ok()) {
                return Err(VolumeError::unsupported(
                    path,
                    format!(
                        "data file: {s:?} (a numbered series of files; join them into one first)"
                    ),
                ));
            }
            if s.is_empty() {
                return Err(bad("data file: empty".into()));
            }
            Some(s.to_string())
        }
    };
    let line_skip = match get("line skip") {
        None => 0,
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| bad(format!("line skip: {s:?} is not a non-negative integer")))?,
    };
    let byte_skip = match get("byte skip") {
        None => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(v) if v >= -1 => v,
            _ => {
                return Err(bad(format!(
                    "byte skip: {s:?} (must be -1 or a non-negative integer)"
                )))
            }
        },
    };
    if byte_skip == -1 && encoding != NrrdEncoding::Raw {
        return Err(VolumeError::unsupported(
            path,
            format!("byte skip: -1 with {} encoding (only raw data can be found from the end of the file)", encoding.name()),
        ));
    }
    Ok(NrrdHeader {
        version,
        dtype,
        dimension,
        sizes,
        frame_axis,
        encoding,
        endianness,
        space,
        space_dimension,
        space_directions,
        space_origin,
        spacings,
        axis_mins,
        centers,
        kinds,
        space_units,
        data_file,
        line_skip,
        byte_skip,
        fields,
        key_values,
        comments,
        header_bytes: 0,
    })
}

fn per_axis_vec(
    items: Vec<Option<[f64; 3]>>,
    dimension: usize,
    field: &str,
    path: &Path,
) -> Result<Vec<Option<[f64; 3]>>> {
    if items.len() != dimension {
        return Err(VolumeError::format(
            path,
            format!("{field}: {} entries for dimension {dimension}", items.len()),
        ));
    }
    Ok(items)
}

/// `(a,b,c) none (d,e,f)`: 3-vectors or `none`, whitespace allowed inside the parentheses.
fn vectors(s: &str) -> std::result::Result<Vec<Option<[f64; 3]>>, String> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('(') {
            let end = r
                .find(')')
                .ok_or_else(|| format!("{s:?}: a \"(\" is not closed"))?;
            let inner = &r[..end];
            let v: Vec<f64> = inner
                .split(',')
                .map(|t| parse_f64(t).ok_or_else(|| format!("{inner:?}: {t:?} is not a number")))
                .collect::<std::result::Result<_, _>>()?;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(format!("({inner}) is not finite"));
            }
            let v: [f64; 3] = v
                .try_into()
                .map_err(|v: Vec<f64>| format!("({inner}) has {} components, not 3", v.len()))?;
            out.push(Some(v));
            rest = r[end + 1..].trim_start();
        } else if rest.len() >= 4 && rest[..4].eq_ignore_ascii_case("none") {
            out.push(None);
            rest = rest[4..].trim_start();
        } else {
            return Err(format!(
                "{s:?}: expected \"(x,y,z)\" or \"none\" at {:?}",
                rest.chars().take(12).collect::<String>()
            ));
        }
    }
    Ok(out)
}

/// `"mm" "mm" "mm"`: quoted strings (backslash escapes a quote).
fn quoted(s: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        match it.next() {
            None => break,
            Some('"') => {
                let mut cur = String::new();
                loop {
                    match it.next() {
                        None => return Err(format!("{s:?}: a quote is not closed")),
                        Some('\\') => {
                            if let Some(c) = it.next() {
                                cur.push(c);
                            }
                        }
                        Some('"') => break,
                        Some(c) => cur.push(c),
                    }
                }
                out.push(cur);
            }
            Some(_) => return Err(format!("{s:?}: expected quoted strings")),
        }
    }
    Ok(out)
}

/// Read the voxel data the header describes (all frames), as bytes of the stored type, with
/// the byte order to decode them with and the file they came from (for messages).
fn read_data(
    mut r: BufReader<File>,
    h: &NrrdHeader,
    path: &Path,
    nvox: u64,
    nbytes: u64,
) -> Result<(Vec<u8>, Endianness, PathBuf)> {
    let data_path = match &h.data_file {
        None => path.to_path_buf(),
        Some(f) => {
            let p = PathBuf::from(f);
            let p = if p.is_absolute() {
                p
            } else {
                path.parent().unwrap_or(Path::new(".")).join(p)
            };
            r = open(&p)?;
            p
        }
    };
    let dp = data_path.as_path();
    let attached = h.data_file.is_none();
    let start = if attached { h.header_bytes } else { 0 };
    for n in 0..h.line_skip {
        let mut sink = Vec::new();
        let got = r
            .read_until(b'\n', &mut sink)
            .map_err(|e| VolumeError::io(dp, e))?;
        if got == 0 {
            return Err(VolumeError::format(
                dp,
                format!(
                    "truncated: line skip {} but the data end after {n} lines",
                    h.line_skip
                ),
            ));
        }
    }
    let endian = h.endianness.unwrap_or(Endianness::Little);
    let bytes = match h.encoding {
        NrrdEncoding::Raw => {
            if h.byte_skip == -1 {
                let len = r
                    .get_ref()
                    .metadata()
                    .map_err(|e| VolumeError::io(dp, e))?
                    .len();
                let pos = len
                    .checked_sub(nbytes)
                    .filter(|p| *p >= start)
                    .ok_or_else(|| {
                        VolumeError::format(
                            dp,
                            format!(
                            "truncated: byte skip -1 needs {nbytes} bytes of voxel data at the \
                             end of the file, which has {len} bytes{}",
                            if attached {
                                format!(" ({start} of them header)")
                            } else {
                                String::new()
                            }
                        ),
                        )
                    })?;
                r.seek(SeekFrom::Start(pos))
                    .map_err(|e| VolumeError::io(dp, e))?;
            } else {
                skip_bytes(&mut r, h.byte_skip as u64, dp, "byte skip")?;
            }
            read_exact_data(&mut r, nbytes, dp, "after the header")?
        }
        NrrdEncoding::Gzip => {
            let mut z = flate2::bufread::MultiGzDecoder::new(r);
            skip_bytes(&mut z, h.byte_skip as u64, dp, "byte skip")?;
            read_exact_data(&mut z, nbytes, dp, "in the gzip stream")?
        }
        NrrdEncoding::Ascii | NrrdEncoding::Hex => {
            skip_bytes(&mut r, h.byte_skip as u64, dp, "byte skip")?;
            // Text needs at most ~30 bytes per value (hex: 2 per byte, plus separators).
            let cap = nbytes.saturating_mul(3).max(nvox.saturating_mul(40)) + (1 << 20);
            let mut text = String::new();
            (&mut r)
                .take(cap)
                .read_to_string(&mut text)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::InvalidData => {
                        VolumeError::format(dp, "text data are not UTF-8")
                    }
                    _ => VolumeError::io(dp, e),
                })?;
            if h.encoding == NrrdEncoding::Ascii {
                let b = text_values_to_bytes(&text, nvox as usize, h.dtype, dp)?;
                return Ok((b, Endianness::Little, data_path));
            }
            hex_to_bytes(&text, nbytes as usize, dp)?
        }
    };
    Ok((bytes, endian, data_path))
}

fn hex_to_bytes(text: &str, n: usize, path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    let mut hi: Option<u8> = None;
    for c in text.chars() {
        if out.len() == n {
            break;
        }
        if c.is_ascii_whitespace() {
            continue;
        }
        let d = c.to_digit(16).ok_or_else(|| {
            VolumeError::format(path, format!("hex data: {c:?} is not a hexadecimal digit"))
        })? as u8;
        match hi.take() {
            None => hi = Some(d),
            Some(h) => out.push(h << 4 | d),
        }
    }
    if out.len() < n {
        return Err(VolumeError::format(
            path,
            format!(
                "truncated: header promises {n} bytes as hex, found only {}",
                out.len()
            ),
        ));
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Writing

/// Options of [`write_nrrd_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct NrrdWriteOptions {
    /// Stored type; `None` uses the voxel type's own (`bool` as unsigned char 0/1).
    pub dtype: Option<NiftiDtype>,
    /// [`NrrdEncoding::Gzip`] (default) or [`NrrdEncoding::Raw`]; text encodings are refused.
    pub encoding: NrrdEncoding,
    /// gzip level 0..=9 (default 1, as negvol's NIfTI writer).
    pub compression_level: u32,
    /// Byte order of the data (default little-endian).
    pub endianness: Endianness,
    /// `key:=value` pairs written after the fields, in order (e.g. `SegmentN_*` keys). Keys
    /// may not be empty or hold `:=` or a line break; line breaks in values are escaped.
    pub key_values: Vec<(String, String)>,
}

impl Default for NrrdWriteOptions {
    fn default() -> Self {
        Self {
            dtype: None,
            encoding: NrrdEncoding::Gzip,
            compression_level: 1,
            endianness: Endianness::Little,
            key_values: Vec::new(),
        }
    }
}

/// Write a volume as NRRD (gzip, the voxel type's own stored type, `space:
/// left-posterior-superior`), atomically. A path ending in `.nhdr` gets a detached header
/// and a `<stem>.raw.gz` data file beside it.
///
/// ```
/// use negvol_volume::*;
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("mask.seg.nrrd");
/// let m = Volume::<bool>::zeros(Geometry::from_spacing([3, 4, 5], [0.5, 0.5, 1.0])?);
/// write_nrrd(&p, &m)?;
/// assert_eq!(read_nrrd::<bool>(&p)?, m);
/// # Ok::<(), VolumeError>(())
/// ```
pub fn write_nrrd<T: NiftiScalar>(path: impl AsRef<Path>, vol: &Volume<T>) -> Result<()> {
    write_nrrd_with(path, vol, &NrrdWriteOptions::default())
}

/// [`write_nrrd`] with options (stored type, raw or gzip, byte order, key/value pairs).
/// Values the stored type cannot hold are a [`VolumeError::ValueOutOfRange`].
pub fn write_nrrd_with<T: NiftiScalar>(
    path: impl AsRef<Path>,
    vol: &Volume<T>,
    options: &NrrdWriteOptions,
) -> Result<()> {
    let path = path.as_ref();
    let dtype = options.dtype.unwrap_or(T::DTYPE);
    let gz = match options.encoding {
        NrrdEncoding::Raw => false,
        NrrdEncoding::Gzip => true,
        e => {
            return Err(VolumeError::InvalidArgument(format!(
                "{}: NRRD encoding {} is read, not written (use raw or gzip)",
                path.display(),
                e.name()
            )))
        }
    };
    if options.compression_level > 9 {
        return Err(VolumeError::InvalidArgument(format!(
            "compression level {} (must be 0..=9)",
            options.compression_level
        )));
    }
    for (k, _) in &options.key_values {
        if k.is_empty() || k.contains(":=") || k.contains('\n') || k.starts_with('#') {
            return Err(VolumeError::InvalidArgument(format!(
                "NRRD key {k:?}: keys must be non-empty, not start with '#', and hold neither \
                 \":=\" nor a line break"
            )));
        }
    }
    let detached = crate::io::ends_with_ci(path, ".nhdr");
    let data_name = if detached {
        let stem = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n[..n.len() - 5].to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                VolumeError::InvalidArgument(format!("{}: no file stem", path.display()))
            })?;
        Some(format!("{stem}.raw{}", if gz { ".gz" } else { "" }))
    } else {
        None
    };
    let header = header_text(vol.geometry(), dtype, options, data_name.as_deref());
    let context = path.display().to_string();
    let level = options.compression_level;
    let endian = options.endianness;
    let body = |w: &mut dyn Write| -> std::result::Result<(), WriteErr> {
        if gz {
            let mut z = flate2::write::GzEncoder::new(w, flate2::Compression::new(level));
            write_data(&mut z, vol, dtype, endian, 1.0, 0.0, &context)?;
            z.finish()?;
        } else {
            write_data(w, vol, dtype, endian, 1.0, 0.0, &context)?;
        }
        Ok(())
    };
    match data_name {
        Some(name) => {
            let data_path = path.with_file_name(name);
            atomic_write(&data_path, |w| body(w))?;
            atomic_write(path, |w| Ok(w.write_all(header.as_bytes())?))
        }
        None => atomic_write(path, |w| {
            w.write_all(header.as_bytes())?;
            body(w)
        }),
    }
}

fn header_text(
    g: &Geometry,
    dtype: NiftiDtype,
    o: &NrrdWriteOptions,
    data_file: Option<&str>,
) -> String {
    let a = g.affine();
    let s = g.shape();
    // RAS -> LPS: x and y negated.
    let lps = |r: usize, v: f64| (if r < 2 { -v } else { v }) + 0.0;
    let vec3 = |c: usize| {
        format!(
            "({},{},{})",
            lps(0, a[0][c]),
            lps(1, a[1][c]),
            lps(2, a[2][c])
        )
    };
    let mut h = String::new();
    h.push_str("NRRD0004\n");
    h.push_str("# Complete NRRD file format specification at:\n");
    h.push_str("# http://teem.sourceforge.net/nrrd/format.html\n");
    h.push_str(&format!("type: {}\n", type_name(dtype)));
    h.push_str("dimension: 3\n");
    h.push_str("space: left-posterior-superior\n");
    h.push_str(&format!("sizes: {} {} {}\n", s[0], s[1], s[2]));
    h.push_str(&format!(
        "space directions: {} {} {}\n",
        vec3(0),
        vec3(1),
        vec3(2)
    ));
    h.push_str("kinds: domain domain domain\n");
    h.push_str(&format!(
        "endian: {}\n",
        match o.endianness {
            Endianness::Little => "little",
            Endianness::Big => "big",
        }
    ));
    h.push_str(&format!("encoding: {}\n", o.encoding.name()));
    h.push_str(&format!("space origin: {}\n", vec3(3)));
    if let Some(f) = data_file {
        h.push_str(&format!("data file: {f}\n"));
    }
    for (k, v) in &o.key_values {
        h.push_str(&format!("{}:={}\n", escape(k), escape(v)));
    }
    // An attached header ends with a blank line; a detached one may, and does here.
    h.push('\n');
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(lines: &[&str]) -> Result<NrrdHeader> {
        let l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        parse_header(&l, Path::new("t.nrrd"))
    }

    const BASE: [&str; 5] = [
        "NRRD0004",
        "type: short",
        "dimension: 3",
        "sizes: 2 3 4",
        "encoding: raw",
    ];

    fn with(extra: &[&str]) -> Result<NrrdHeader> {
        let mut l: Vec<&str> = BASE.to_vec();
        l.push("endian: little");
        l.extend_from_slice(extra);
        header(&l)
    }

    #[test]
    fn every_type_spelling() {
        let cases = [
            ("signed char", NiftiDtype::I8),
            ("int8_t", NiftiDtype::I8),
            ("uchar", NiftiDtype::U8),
            ("unsigned  char", NiftiDtype::U8),
            ("uint8", NiftiDtype::U8),
            ("uint8_t", NiftiDtype::U8),
            ("short", NiftiDtype::I16),
            ("short int", NiftiDtype::I16),
            ("signed short", NiftiDtype::I16),
            ("signed short int", NiftiDtype::I16),
            ("int16", NiftiDtype::I16),
            ("int16_t", NiftiDtype::I16),
            ("ushort", NiftiDtype::U16),
            ("unsigned short", NiftiDtype::U16),
            ("unsigned short int", NiftiDtype::U16),
            ("uint16", NiftiDtype::U16),
            ("uint16_t", NiftiDtype::U16),
            ("int", NiftiDtype::I32),
            ("signed int", NiftiDtype::I32),
            ("int32", NiftiDtype::I32),
            ("int32_t", NiftiDtype::I32),
            ("uint", NiftiDtype::U32),
            ("unsigned int", NiftiDtype::U32),
            ("uint32", NiftiDtype::U32),
            ("uint32_t", NiftiDtype::U32),
            ("longlong", NiftiDtype::I64),
            ("long long", NiftiDtype::I64),
            ("long long int", NiftiDtype::I64),
            ("signed long long", NiftiDtype::I64),
            ("signed long long int", NiftiDtype::I64),
            ("int64", NiftiDtype::I64),
            ("int64_t", NiftiDtype::I64),
            ("ulonglong", NiftiDtype::U64),
            ("unsigned long long", NiftiDtype::U64),
            ("unsigned long long int", NiftiDtype::U64),
            ("uint64", NiftiDtype::U64),
            ("uint64_t", NiftiDtype::U64),
            ("float", NiftiDtype::F32),
            ("double", NiftiDtype::F64),
        ];
        for (name, d) in cases {
            assert_eq!(parse_type(name), Some(Ok(d)), "{name}");
        }
        assert_eq!(parse_type("block"), Some(Err(())));
        assert_eq!(parse_type("long"), None);
        for d in NiftiDtype::ALL {
            assert_eq!(parse_type(type_name(d)), Some(Ok(d)));
        }
    }

    #[test]
    fn field_synonyms_comments_and_key_values() {
        let h = with(&[
            "# a comment",
            "lineskip: 2",
            "byteskip: 5",
            "centerings: cell node cell",
            "my key:=a value: with := signs\\nand a line",
        ])
        .unwrap();
        assert_eq!((h.line_skip, h.byte_skip), (2, 5));
        assert_eq!(h.comments, vec!["a comment"]);
        assert_eq!(h.centers.as_ref().unwrap()[1], "node");
        assert_eq!(h.key_values["my key"], "a value: with := signs\nand a line");
        assert!(with(&["sizes: 1 1 1"]).is_err()); // twice
        assert!(with(&["bogus field: 3"]).is_err());
    }

    #[test]
    fn vectors_and_quotes_parse() {
        assert_eq!(
            vectors("none ( 1, 0,0) (0,1e-1,0)  (0,0,-2.5)").unwrap(),
            vec![
                None,
                Some([1.0, 0.0, 0.0]),
                Some([0.0, 0.1, 0.0]),
                Some([0.0, 0.0, -2.5])
            ]
        );
        assert!(vectors("(1,0)").is_err());
        assert!(vectors("(1,0,0").is_err());
        assert!(vectors("(1,nan,0)").is_err());
        assert!(vectors("(1,x,0)").is_err());
        assert_eq!(
            quoted(r#""mm" "a\"b"  """#).unwrap(),
            vec!["mm", "a\"b", ""]
        );
        assert!(quoted(r#""mm"#).is_err());
    }

    #[test]
    fn spaces_map_to_ras() {
        let dirs = "space directions: (2,0,0) (0,3,0) (0,0,4)";
        let org = "space origin: (10,20,30)";
        for (space, sx, sy) in [
            ("space: RAS", 1.0, 1.0),
            ("space: right-anterior-superior", 1.0, 1.0),
            ("space: LAS", -1.0, 1.0),
            ("space: left-posterior-superior", -1.0, -1.0),
            ("space: scanner-xyz", -1.0, -1.0),
            ("space: 3D-right-handed", -1.0, -1.0),
            ("space dimension: 3", -1.0, -1.0),
        ] {
            let a = with(&[space, dirs, org]).unwrap().affine().unwrap();
            assert_eq!(a[0], [2.0 * sx, 0.0, 0.0, 10.0 * sx], "{space}");
            assert_eq!(a[1], [0.0, 3.0 * sy, 0.0, 20.0 * sy], "{space}");
            assert_eq!(a[2], [0.0, 0.0, 4.0, 30.0], "{space}");
        }
        for refused in [
            "space: 3D-left-handed",
            "space: RAST",
            "space: scanner-xyz-time",
        ] {
            assert!(
                matches!(with(&[refused]), Err(VolumeError::Unsupported { .. })),
                "{refused}"
            );
        }
        assert!(with(&["space: RAS", "space dimension: 3"]).is_err());
        assert!(with(&[dirs]).is_err()); // no space
    }

    #[test]
    fn spacings_and_axis_mins_as_itk() {
        // Checked against SimpleITK 2.5: origin 10 + 2/2 for cell centering (the default),
        // axes taken as LPS, a negative spacing flips its axis.
        let h = with(&["spacings: 2 3 4", "axis mins: 10 20 30"]).unwrap();
        let a = h.affine().unwrap();
        assert_eq!(a[0], [-2.0, 0.0, 0.0, -11.0]);
        assert_eq!(a[1], [0.0, -3.0, 0.0, -21.5]);
        assert_eq!(a[2], [0.0, 0.0, 4.0, 32.0]);
        let h = with(&[
            "spacings: 2 3 4",
            "axis mins: 10 20 30",
            "centers: node node node",
        ])
        .unwrap();
        assert_eq!(h.affine().unwrap()[0][3], -10.0);
        let h = with(&["spacings: -2 nan 4"]).unwrap();
        let a = h.affine().unwrap();
        assert_eq!((a[0][0], a[1][1], a[0][3]), (2.0, -1.0, 0.0));
        assert!(with(&["spacings: 0 1 1"]).unwrap().affine().is_err());
        assert!(with(&["spacings: 1 1"]).is_err());
    }

    #[test]
    fn four_d_frame_axis() {
        let l = [
            "NRRD0004",
            "type: uchar",
            "dimension: 4",
            "sizes: 3 2 2 2",
            "encoding: gzip",
        ];
        let mut a = l.to_vec();
        a.extend([
            "space: LPS",
            "space directions: none (1,0,0) (0,1,0) (0,0,1)",
        ]);
        let h = header(&a).unwrap();
        assert_eq!(
            (h.frame_axis, h.frames(), h.shape3()),
            (Some(0), 3, [2, 2, 2])
        );
        let mut b = l.to_vec();
        b.push("kinds: domain domain domain list");
        let h = header(&b).unwrap();
        assert_eq!(h.frame_axis, Some(3));
        let mut c = l.to_vec();
        c.push("kinds: list vector domain domain");
        assert!(matches!(header(&c), Err(VolumeError::Unsupported { .. })));
        assert!(header(&l).is_err()); // which axis?
        let mut d = BASE.to_vec();
        d.extend([
            "endian: big",
            "space: LPS",
            "space directions: none (1,0,0) (0,1,0)",
        ]);
        assert!(header(&d).is_err()); // none in 3D
    }

    #[test]
    fn refusals_name_the_field() {
        let msg = |r: Result<NrrdHeader>| r.unwrap_err().to_string();
        assert!(msg(with(&["type: block"])).contains("twice"));
        let mut l = vec!["NRRD0004", "type: block", "dimension: 3", "sizes: 1 1 1"];
        l.push("encoding: raw");
        assert!(msg(header(&l)).contains("block"));
        assert!(msg(header(&["NRRD0009"])).contains("NRRD0009"));
        assert!(msg(header(&["NRRD0004", "dimension: 3"])).contains("type"));
        let mut l = BASE.to_vec();
        l[4] = "encoding: bzip2";
        assert!(msg(header(&l)).contains("bzip2"));
        assert!(msg(header(&BASE)).contains("endian"));
        let mut l = BASE.to_vec();
        l[3] = "sizes: 2 -3 4";
        assert!(msg(header(&l)).contains("sizes"));
        l[3] = "sizes: 2 x 4";
        assert!(msg(header(&l)).contains("sizes"));
        l[3] = "sizes: 2 99999999999999999999999 4";
        assert!(msg(header(&l)).contains("sizes"));
        let mut l = BASE.to_vec();
        l[2] = "dimension: 2";
        assert!(msg(header(&l)).contains("dimension"));
        assert!(msg(with(&["data file: LIST"])).contains("LIST"));
        assert!(msg(with(&["data file: slice%03d.raw 0 9 1"])).contains("numbered"));
        assert!(msg(with(&["byte skip: -2"])).contains("byte skip"));
        assert!(msg(with(&["line skip: x"])).contains("line skip"));
        assert!(msg(with(&["space: RAS", "space units: \"cm\" \"cm\" \"cm\""])).contains("cm"));
        assert!(msg(with(&["space: RAS", "space origin: (1,2)"])).contains("space origin"));
        assert!(msg(with(&["spacings: 1 1 q"])).contains("spacings"));
        assert!(msg(with(&["endian: middle"])).contains("endian"));
        assert!(msg(with(&["not a field line"])).contains("neither"));
    }

    #[test]
    fn segments_from_key_values() {
        let h = with(&[
            "Segment0_ID:=Segment_1",
            "Segment0_Name:=condyle",
            "Segment0_LabelValue:=1",
            "Segment0_Layer:=0",
            "Segment0_Color:=0.9 0.5 0.1",
            "Segment1_ID:=Segment_2",
            "Segment1_Name:=temporal bone",
            "Segment1_LabelValue:=2",
            "Segment10_Name:=ten",
            "Segmentation_MasterRepresentation:=Binary labelmap",
        ])
        .unwrap();
        let s = h.segments().unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "condyle");
        assert_eq!(s[0].color, Some([0.9, 0.5, 0.1]));
        assert_eq!(
            (s[1].name.as_str(), s[1].label_value, s[1].layer),
            ("temporal bone", 2, 0)
        );
        assert_eq!(
            (s[2].index, s[2].id.as_str(), s[2].label_value),
            (10, "Segment_10", 1)
        );
        let bad = with(&["Segment0_LabelValue:=x"]).unwrap();
        assert!(bad.segments().unwrap_err().contains("Segment0_LabelValue"));
        let bad = with(&["Segment0_Layer:=1"]).unwrap();
        assert!(bad.segments().unwrap_err().contains("layer"));
        assert!(with(&[]).unwrap().segments().unwrap().is_empty());
    }

    #[test]
    fn header_text_is_lps() {
        let a = [
            [-0.5, 0.0, 0.0, 10.0],
            [0.0, 0.0, 0.7, -20.0],
            [0.0, 1.2, 0.0, 5.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let g = Geometry::new([2, 3, 4], a).unwrap();
        let t = header_text(&g, NiftiDtype::I16, &NrrdWriteOptions::default(), None);
        assert!(
            t.contains("space directions: (0.5,0,0) (0,0,1.2) (0,-0.7,0)\n"),
            "{t}"
        );
        assert!(t.contains("space origin: (-10,20,5)\n"), "{t}");
        assert!(
            t.ends_with("encoding: gzip\nspace origin: (-10,20,5)\n\n"),
            "{t}"
        );
        let l: Vec<String> = t
            .lines()
            .take_while(|l| !l.is_empty())
            .map(String::from)
            .collect();
        let h = parse_header(&l, Path::new("x")).unwrap();
        assert_eq!(h.affine().unwrap(), a);
    }
}
