//! MetaImage reading and writing (ITK's `.mha`, and `.mhd` with a `.raw` / `.zraw` data file;
//! the format of the grand-challenge.org datasets such as ToothFairy).
//!
//! The codec is negvol's own, written from the MetaIO documentation and checked against
//! SimpleITK (`tests/fixtures/make_itk_fixtures.py`).
//!
//! **Reading** ([`read_metaimage`], [`read_metaimage_with`], [`read_metaimage_header`]): the
//! header is `Key = Value` lines up to `ElementDataFile`, which ends it (in a `.mha` the voxel
//! data follow that line). Keys: `ObjectType` (`Image`), `NDims` (3; other dimensions are
//! refused), `DimSize`, `ElementSpacing` (or `ElementSize` when there is no spacing),
//! `Offset` / `Origin` / `Position` (synonyms; two that disagree are refused),
//! `TransformMatrix` / `Rotation` / `Orientation` (synonyms), `CenterOfRotation` (ignored, as
//! ITK does), `AnatomicalOrientation` (kept, informational), `ElementType` `MET_CHAR` ..
//! `MET_DOUBLE` with `MET_LONG` / `MET_ULONG` 4 bytes as in MetaIO and `MET_LONG_LONG` /
//! `MET_ULONG_LONG` 8, `BinaryData` (`False`: numbers as text), `BinaryDataByteOrderMSB` /
//! `ElementByteOrderMSB`, `CompressedData` (a zlib stream; gzip is accepted too),
//! `CompressedDataSize`, `ElementNumberOfChannels` (1; more is refused), `HeaderSize` (bytes
//! before the data in the data file; for `LOCAL` data an offset from the start of the `.mha`,
//! as ITK reads it; -1: the data end the file), `ElementDataFile` (`LOCAL`, or a file relative
//! to the header's folder; `LIST` and numbered file patterns are refused). Every other key is
//! kept in [`MetaImageHeader::fields`].
//!
//! **World frame.** ITK's world is LPS. Voxel `(i, j, k)` sits at
//! `Offset + D * diag(ElementSpacing) * (i, j, k)`, where the direction matrix `D` is stored in
//! `TransformMatrix` **one axis direction after the other**: the first three numbers are the
//! world direction of the `i` axis (`D`'s first column), and so on. This is the transpose of
//! the row-major tuple SimpleITK's `GetDirection()` returns; a non-symmetric fixture written by
//! SimpleITK pins it (`tests/metaimage.rs`). negvol's RAS affine negates the x and y rows.
//!
//! **Writing** ([`write_metaimage`], [`write_metaimage_with`]): what ITK writes, with the
//! direction columns and origin converted to LPS and `AnatomicalOrientation` in ITK's
//! convention (the letter each axis comes *from*, e.g. `RAI` for an LPS grid); zlib
//! compression by default ([`MetaImageWriteOptions::compress`]); a `.mhd` path gets a
//! `<stem>.zraw` (or `.raw`) data file beside it. Files are written atomically.
//!
//! ```
//! use negvol_volume::*;
//! # fn main() -> Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let a = [[-0.3, 0.0, 0.0, 20.0], [0.0, -0.3, 0.0, 30.0], [0.0, 0.0, 0.6, -5.0], [0.0, 0.0, 0.0, 1.0]];
//! let cbct = Volume::new(ndarray::Array3::<u16>::from_elem((4, 3, 2), 1200), Geometry::new([4, 3, 2], a)?)?;
//! let path = dir.path().join("P1.mha");
//! write_metaimage(&path, &cbct)?;
//! let h = read_metaimage_header(&path)?;
//! assert_eq!(h.offset, [-20.0, -30.0, -5.0]); // LPS
//! assert_eq!(h.anatomical_orientation.as_deref(), Some("RAI"));
//! let back = read_metaimage::<u16>(&path)?;
//! assert_eq!(back.geometry().affine(), a);
//! assert_eq!(back.data(), cbct.data());
//! # Ok(())
//! # }
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::rawdata::{
    atomic_write, checked_size, parse_f64, read_exact_data, skip_bytes, text_values_to_bytes,
    volume_from_bytes, write_data, WriteErr,
};
use crate::{
    Endianness, Geometry, NiftiDtype, NiftiScalar, ReadOptions, Result, Volume, VolumeError,
};

/// Longest header negvol reads (bytes).
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// Where a MetaImage's voxel data are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum MetaDataFile {
    /// `ElementDataFile = LOCAL`: after the header, in the same file (`.mha`).
    Local,
    /// A data file, as written (relative to the header's folder unless absolute).
    File(String),
}

/// A parsed MetaImage header.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetaImageHeader {
    /// Every `Key = Value` line, in order, as written.
    pub fields: Vec<(String, String)>,
    /// `DimSize`.
    pub dims: [u64; 3],
    /// The stored type.
    pub dtype: NiftiDtype,
    /// `ElementType` as written, e.g. `MET_SHORT`.
    pub element_type: String,
    /// `ElementSpacing` (else `ElementSize`, else 1).
    pub spacing: [f64; 3],
    /// `Offset` / `Origin` / `Position`: the world (LPS) position of voxel 0 (default 0).
    pub offset: [f64; 3],
    /// `TransformMatrix` / `Rotation` / `Orientation` as written: the direction of axis 0,
    /// then of axis 1, then of axis 2 (default identity).
    pub transform_matrix: [f64; 9],
    /// `AnatomicalOrientation`, when given (informational; ITK ignores it on reading).
    pub anatomical_orientation: Option<String>,
    /// Byte order (`BinaryDataByteOrderMSB` / `ElementByteOrderMSB`; default little-endian).
    pub endianness: Endianness,
    /// `BinaryData` (default true); false means numbers as text.
    pub binary: bool,
    /// `CompressedData`.
    pub compressed: bool,
    /// `CompressedDataSize`, when given.
    pub compressed_size: Option<u64>,
    /// `HeaderSize` (default 0; -1: the data end the file).
    pub header_size: i64,
    /// `ElementDataFile`.
    pub data_file: MetaDataFile,
    /// Bytes of the header, up to and including the `ElementDataFile` line.
    pub header_bytes: u64,
}

impl MetaImageHeader {
    /// The direction matrix `D` (`D[r][c]`: world LPS component `r` of voxel axis `c`).
    pub fn direction(&self) -> [[f64; 3]; 3] {
        let t = &self.transform_matrix;
        let mut d = [[0.0; 3]; 3];
        for c in 0..3 {
            for r in 0..3 {
                d[r][c] = t[3 * c + r];
            }
        }
        d
    }

    /// The voxel-to-world affine in negvol's RAS+ frame: `diag(-1, -1, 1)` times ITK's
    /// `[D * diag(spacing) | offset]`. Not yet validated (see [`Geometry::new`]).
    pub fn affine(&self) -> [[f64; 4]; 4] {
        let d = self.direction();
        let mut a = [[0.0; 4]; 4];
        for r in 0..3 {
            let sign = if r < 2 { -1.0 } else { 1.0 };
            for c in 0..3 {
                a[r][c] = sign * d[r][c] * self.spacing[c] + 0.0;
            }
            a[r][3] = sign * self.offset[r] + 0.0;
        }
        a[3][3] = 1.0;
        a
    }

    /// The value of a key (case-insensitive), as written.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Read and validate a MetaImage header (`.mha` or `.mhd`) without reading the voxels.
///
/// ```no_run
/// let h = negvol_volume::read_metaimage_header("P1.mha")?;
/// println!("{:?} {} {:?}", h.dims, h.element_type, h.spacing);
/// # Ok::<(), negvol_volume::VolumeError>(())
/// ```
pub fn read_metaimage_header(path: impl AsRef<Path>) -> Result<MetaImageHeader> {
    let path = path.as_ref();
    let mut r = open(path)?;
    read_header(&mut r, path)
}

/// The geometry of a MetaImage from its header alone.
pub fn read_metaimage_geometry(path: impl AsRef<Path>) -> Result<Geometry> {
    let path = path.as_ref();
    let h = read_metaimage_header(path)?;
    header_geometry(&h, path)
}

/// Read a 3D MetaImage (`.mha`, or `.mhd` and its data file) into a volume of `T` (every
/// stored type into every `T`; values `T` cannot hold are a
/// [`VolumeError::ValueOutOfRange`]).
///
/// ```no_run
/// let cbct = negvol_volume::read_metaimage::<f32>("ToothFairy2/imagesTr/P1_0000.mha")?;
/// # Ok::<(), negvol_volume::VolumeError>(())
/// ```
pub fn read_metaimage<T: NiftiScalar>(path: impl AsRef<Path>) -> Result<Volume<T>> {
    read_metaimage_with(path, &ReadOptions::default())
}

/// [`read_metaimage`] with options (voxel limit; `frame` must be `None` or 0: negvol reads
/// 3D MetaImages only).
pub fn read_metaimage_with<T: NiftiScalar>(
    path: impl AsRef<Path>,
    options: &ReadOptions,
) -> Result<Volume<T>> {
    let path = path.as_ref();
    let mut r = open(path)?;
    let h = read_header(&mut r, path)?;
    options.check_frame(path, &h.dims, 1)?;
    let geometry = header_geometry(&h, path)?;
    let (nvox, nbytes) = checked_size(&h.dims, h.dtype.size(), path, "DimSize")?;
    if nvox > options.max_voxels {
        return Err(VolumeError::TooLarge {
            path: path.to_path_buf(),
            dims: h.dims.to_vec(),
            voxels: nvox,
            limit: options.max_voxels,
        });
    }
    let (bytes, endian, data_path) = read_data(r, &h, path, nvox, nbytes)?;
    volume_from_bytes(&bytes, h.dtype, endian, geometry, &data_path)
}

fn header_geometry(h: &MetaImageHeader, path: &Path) -> Result<Geometry> {
    let shape = [h.dims[0] as usize, h.dims[1] as usize, h.dims[2] as usize];
    let d = h.direction();
    if crate::geometry::det3(&d).abs() < 1e-12 {
        return Err(VolumeError::format(
            path,
            format!("TransformMatrix {:?} is singular", h.transform_matrix),
        ));
    }
    Geometry::new(shape, h.affine()).map_err(|e| {
        VolumeError::format(
            path,
            format!("TransformMatrix / ElementSpacing / Offset give an invalid geometry: {e}"),
        )
    })
}

fn open(path: &Path) -> Result<BufReader<File>> {
    let f = File::open(path).map_err(|e| VolumeError::io(path, e))?;
    Ok(BufReader::with_capacity(1 << 16, f))
}

fn element_type(s: &str) -> Option<NiftiDtype> {
    Some(match s {
        "MET_CHAR" => NiftiDtype::I8,
        "MET_UCHAR" => NiftiDtype::U8,
        "MET_SHORT" => NiftiDtype::I16,
        "MET_USHORT" => NiftiDtype::U16,
        "MET_INT" | "MET_LONG" => NiftiDtype::I32,
        "MET_UINT" | "MET_ULONG" => NiftiDtype::U32,
        "MET_LONG_LONG" => NiftiDtype::I64,
        "MET_ULONG_LONG" => NiftiDtype::U64,
        "MET_FLOAT" => NiftiDtype::F32,
        "MET_DOUBLE" => NiftiDtype::F64,
        _ => return None,
    })
}

/// The `ElementType` negvol writes for a datatype.
fn element_type_name(d: NiftiDtype) -> &'static str {
    match d {
        NiftiDtype::I8 => "MET_CHAR",
        NiftiDtype::U8 => "MET_UCHAR",
        NiftiDtype::I16 => "MET_SHORT",
        NiftiDtype::U16 => "MET_USHORT",
        NiftiDtype::I32 => "MET_INT",
        NiftiDtype::U32 => "MET_UINT",
        NiftiDtype::I64 => "MET_LONG_LONG",
        NiftiDtype::U64 => "MET_ULONG_LONG",
        NiftiDtype::F32 => "MET_FLOAT",
        NiftiDtype::F64 => "MET_DOUBLE",
    }
}

fn read_header(r: &mut BufReader<File>, path: &Path) -> Result<MetaImageHeader> {
    let bad = |m: String| VolumeError::format(path, m);
    let mut consumed = 0u64;
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut *r)
            .take(MAX_HEADER_BYTES + 1 - consumed.min(MAX_HEADER_BYTES))
            .read_until(b'\n', &mut buf)
            .map_err(|e| VolumeError::io(path, e))?;
        if n == 0 {
            return Err(bad(if fields.is_empty() {
                "not a MetaImage: the file is empty".into()
            } else {
                "the header has no ElementDataFile line (it must end the header)".into()
            }));
        }
        consumed += n as u64;
        if consumed > MAX_HEADER_BYTES {
            return Err(bad(format!(
                "no ElementDataFile line within {MAX_HEADER_BYTES} bytes: not a MetaImage header"
            )));
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line).map_err(|_| {
            bad(format!(
                "header line {} is not text: not a MetaImage header (or ElementDataFile is missing)",
                fields.len() + 1
            ))
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let (k, v) = text.split_once('=').ok_or_else(|| {
            bad(format!(
                "header line {} {text:?} is not \"Key = Value\"{}",
                fields.len() + 1,
                if fields.is_empty() {
                    ": not a MetaImage"
                } else {
                    ""
                }
            ))
        })?;
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        let last = k.eq_ignore_ascii_case("ElementDataFile");
        fields.push((k, v));
        if last {
            break;
        }
    }
    let mut h = parse_fields(fields, path)?;
    h.header_bytes = consumed;
    Ok(h)
}

fn parse_fields(fields: Vec<(String, String)>, path: &Path) -> Result<MetaImageHeader> {
    let bad = |m: String| VolumeError::format(path, m);
    let unsupported = |m: String| VolumeError::unsupported(path, m);
    let get = |k: &str| -> Result<Option<&str>> {
        let mut it = fields.iter().filter(|(f, _)| f.eq_ignore_ascii_case(k));
        let first = it.next().map(|(_, v)| v.as_str());
        if it.next().is_some() {
            return Err(bad(format!("{k} is given twice")));
        }
        Ok(first)
    };
    let numbers = |k: &str, n: usize| -> Result<Option<Vec<f64>>> {
        let Some(v) = get(k)? else {
            return Ok(None);
        };
        let x: Vec<f64> = v
            .split_ascii_whitespace()
            .map(|t| {
                parse_f64(t)
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| bad(format!("{k} = {v:?}: {t:?} is not a finite number")))
            })
            .collect::<Result<_>>()?;
        if x.len() != n {
            return Err(bad(format!(
                "{k} = {v:?}: {} numbers, expected {n}",
                x.len()
            )));
        }
        Ok(Some(x))
    };
    let boolean = |k: &str, default: bool| -> Result<bool> {
        match get(k)? {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(bad(format!("{k} = {v:?} is not True or False"))),
            },
        }
    };
    if let Some(t) = get("ObjectType")? {
        if !t.eq_ignore_ascii_case("Image") {
            return Err(unsupported(format!(
                "ObjectType = {t} (negvol reads images)"
            )));
        }
    }
    let ndims_s = get("NDims")?.ok_or_else(|| bad("NDims is missing".into()))?;
    let ndims: i64 = ndims_s
        .parse()
        .map_err(|_| bad(format!("NDims = {ndims_s:?} is not an integer")))?;
    if ndims != 3 {
        return Err(unsupported(format!(
            "NDims = {ndims} (negvol reads 3D MetaImages)"
        )));
    }
    let dim_s = get("DimSize")?.ok_or_else(|| bad("DimSize is missing".into()))?;
    let dims: Vec<u64> = dim_s
        .split_ascii_whitespace()
        .map(|t| match t.parse::<i128>() {
            Ok(v) if v >= 1 && v <= u64::MAX as i128 => Ok(v as u64),
            Ok(v) => Err(bad(format!(
                "DimSize = {dim_s:?}: {v} (sizes must be at least 1)"
            ))),
            Err(_) => Err(bad(format!("DimSize = {dim_s:?}: {t:?} is not a size"))),
        })
        .collect::<Result<_>>()?;
    let dims: [u64; 3] = dims.try_into().map_err(|d: Vec<u64>| {
        bad(format!(
            "DimSize = {dim_s:?}: {} sizes for NDims = 3",
            d.len()
        ))
    })?;
    let et = get("ElementType")?.ok_or_else(|| bad("ElementType is missing".into()))?;
    let dtype = element_type(et).ok_or_else(|| {
        unsupported(format!(
            "ElementType = {et} (negvol reads MET_CHAR, MET_UCHAR, MET_SHORT, MET_USHORT, \
             MET_INT, MET_UINT, MET_LONG, MET_ULONG, MET_LONG_LONG, MET_ULONG_LONG, MET_FLOAT, \
             MET_DOUBLE)"
        ))
    })?;
    if let Some(c) = get("ElementNumberOfChannels")? {
        match c.parse::<i64>() {
            Ok(1) => {}
            Ok(n) if n > 1 => {
                return Err(unsupported(format!(
                    "ElementNumberOfChannels = {n} (negvol reads one channel)"
                )))
            }
            _ => {
                return Err(bad(format!(
                    "ElementNumberOfChannels = {c:?} is not a count"
                )))
            }
        }
    }
    let spacing = match numbers("ElementSpacing", 3)? {
        Some(s) => Some(("ElementSpacing", s)),
        None => numbers("ElementSize", 3)?.map(|s| ("ElementSize", s)),
    };
    let spacing = match spacing {
        None => [1.0; 3],
        Some((k, s)) => {
            if let Some(x) = s.iter().find(|x| **x <= 0.0) {
                return Err(bad(format!("{k}: {x} (spacings must be positive)")));
            }
            [s[0], s[1], s[2]]
        }
    };
    let mut offset: Option<(&str, Vec<f64>)> = None;
    for k in ["Offset", "Origin", "Position"] {
        if let Some(v) = numbers(k, 3)? {
            if let Some((k0, v0)) = &offset {
                if *v0 != v {
                    return Err(bad(format!("{k0} = {v0:?} and {k} = {v:?} disagree")));
                }
            } else {
                offset = Some((k, v));
            }
        }
    }
    let offset = offset.map_or([0.0; 3], |(_, v)| [v[0], v[1], v[2]]);
    let mut matrix: Option<(&str, Vec<f64>)> = None;
    for k in ["TransformMatrix", "Rotation", "Orientation"] {
        if let Some(v) = numbers(k, 9)? {
            if let Some((k0, v0)) = &matrix {
                if *v0 != v {
                    return Err(bad(format!("{k0} and {k} disagree")));
                }
            } else {
                matrix = Some((k, v));
            }
        }
    }
    let transform_matrix: [f64; 9] = match matrix {
        None => [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        Some((_, v)) => {
            let mut m = [0.0; 9];
            m.copy_from_slice(&v);
            m
        }
    };
    let msb = match (get("BinaryDataByteOrderMSB")?, get("ElementByteOrderMSB")?) {
        (Some(_), Some(_)) => {
            let a = boolean("BinaryDataByteOrderMSB", false)?;
            let b = boolean("ElementByteOrderMSB", false)?;
            if a != b {
                return Err(bad(
                    "BinaryDataByteOrderMSB and ElementByteOrderMSB disagree".into(),
                ));
            }
            a
        }
        (Some(_), None) => boolean("BinaryDataByteOrderMSB", false)?,
        (None, _) => boolean("ElementByteOrderMSB", false)?,
    };
    let binary = boolean("BinaryData", true)?;
    let compressed = boolean("CompressedData", false)?;
    let compressed_size = match get("CompressedDataSize")? {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| bad(format!("CompressedDataSize = {s:?} is not a byte count")))?,
        ),
    };
    let header_size = match get("HeaderSize")? {
        None => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(v) if v >= -1 => v,
            _ => {
                return Err(bad(format!(
                    "HeaderSize = {s:?} (must be -1 or a non-negative byte count)"
                )))
            }
        },
    };
    if header_size == -1 && (compressed || !binary) {
        return Err(unsupported(
            "HeaderSize = -1 with compressed or text data (only raw data can be found from \
             the end of the file)"
                .into(),
        ));
    }
    if compressed && !binary {
        return Err(bad("CompressedData = True with BinaryData = False".into()));
    }
    let df = get("ElementDataFile")?.ok_or_else(|| bad("ElementDataFile is missing".into()))?;
    let t: Vec<&str> = df.split_ascii_whitespace().collect();
    let data_file = if df.eq_ignore_ascii_case("LOCAL") {
        MetaDataFile::Local
    } else if t.first().is_some_and(|f| f.eq_ignore_ascii_case("LIST")) {
        return Err(unsupported(
            "ElementDataFile = LIST (slices in several files; join them into one first)".into(),
        ));
    } else if t.len() >= 4 && t[1..4].iter().all(|x| x.parse::<i64>().is_ok()) {
        return Err(unsupported(format!(
            "ElementDataFile = {df} (a numbered series of files; join them into one first)"
        )));
    } else if df.is_empty() {
        return Err(bad("ElementDataFile is empty".into()));
    } else {
        MetaDataFile::File(df.to_string())
    };
    let anatomical_orientation = get("AnatomicalOrientation")?.map(str::to_string);
    Ok(MetaImageHeader {
        dims,
        dtype,
        element_type: et.to_string(),
        spacing,
        offset,
        transform_matrix,
        anatomical_orientation,
        endianness: if msb {
            Endianness::Big
        } else {
            Endianness::Little
        },
        binary,
        compressed,
        compressed_size,
        header_size,
        data_file,
        header_bytes: 0,
        fields,
    })
}

fn read_data(
    mut r: BufReader<File>,
    h: &MetaImageHeader,
    path: &Path,
    nvox: u64,
    nbytes: u64,
) -> Result<(Vec<u8>, Endianness, PathBuf)> {
    let (data_path, start) = match &h.data_file {
        MetaDataFile::Local => (path.to_path_buf(), h.header_bytes),
        MetaDataFile::File(f) => {
            let p = PathBuf::from(f);
            let p = if p.is_absolute() {
                p
            } else {
                path.parent().unwrap_or(Path::new(".")).join(p)
            };
            r = open(&p)?;
            (p, 0)
        }
    };
    let dp = data_path.as_path();
    // Position the reader at the data.
    match h.header_size {
        0 => {}
        -1 => {
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
                        "truncated: HeaderSize = -1 needs {nbytes} bytes of voxel data at the end \
                         of the file, which has {len} bytes"
                    ),
                    )
                })?;
            r.seek(SeekFrom::Start(pos))
                .map_err(|e| VolumeError::io(dp, e))?;
        }
        n if start > 0 => {
            // LOCAL: ITK seeks to HeaderSize from the start of the file.
            let n = n as u64;
            if n < start {
                return Err(VolumeError::format(
                    dp,
                    format!("HeaderSize = {n} points into the {start}-byte header"),
                ));
            }
            skip_bytes(&mut r, n - start, dp, "HeaderSize")?;
        }
        n => skip_bytes(&mut r, n as u64, dp, "HeaderSize")?,
    }
    if !h.binary {
        let cap = nvox.saturating_mul(40) + (1 << 20);
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
        let b = text_values_to_bytes(&text, nvox as usize, h.dtype, dp)?;
        return Ok((b, Endianness::Little, data_path));
    }
    let bytes = if h.compressed {
        let mut limited: Box<dyn BufRead> = match h.compressed_size {
            Some(n) => Box::new(BufReader::new((&mut r).take(n))),
            None => Box::new(&mut r),
        };
        let head = limited.fill_buf().map_err(|e| VolumeError::io(dp, e))?;
        let gzip = head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
        let mut z: Box<dyn Read> = if gzip {
            Box::new(flate2::bufread::MultiGzDecoder::new(limited))
        } else {
            Box::new(flate2::bufread::ZlibDecoder::new(limited))
        };
        read_exact_data(&mut z, nbytes, dp, "in the compressed stream").map_err(|e| match e {
            VolumeError::Format { path, message } if message.starts_with("corrupt gzip") => {
                VolumeError::Format {
                    path,
                    message: message.replacen("corrupt gzip", "corrupt zlib/gzip", 1),
                }
            }
            e => e,
        })?
    } else {
        read_exact_data(&mut r, nbytes, dp, "after the header")?
    };
    Ok((bytes, h.endianness, data_path))
}

// ------------------------------------------------------------------------------------------
// Writing

/// Options of [`write_metaimage_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct MetaImageWriteOptions {
    /// Stored type; `None` uses the voxel type's own (`bool` as `MET_UCHAR` 0/1).
    pub dtype: Option<NiftiDtype>,
    /// zlib-compress the data (`CompressedData = True`; default true).
    pub compress: bool,
    /// zlib level 0..=9 (default 1).
    pub compression_level: u32,
    /// Byte order of the data (default little-endian).
    pub endianness: Endianness,
}

impl Default for MetaImageWriteOptions {
    fn default() -> Self {
        Self {
            dtype: None,
            compress: true,
            compression_level: 1,
            endianness: Endianness::Little,
        }
    }
}

/// Write a volume as MetaImage (zlib-compressed, the voxel type's own stored type),
/// atomically: a `.mha` holds header and data; a `.mhd` gets its data in `<stem>.zraw`
/// (`<stem>.raw` uncompressed) beside it.
///
/// ```
/// use negvol_volume::*;
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("seg.mhd");
/// let m = Volume::<u8>::zeros(Geometry::from_spacing([3, 4, 5], [0.5, 0.5, 1.0])?);
/// write_metaimage(&p, &m)?;
/// assert!(dir.path().join("seg.zraw").is_file());
/// assert_eq!(read_metaimage::<u8>(&p)?, m);
/// # Ok::<(), VolumeError>(())
/// ```
pub fn write_metaimage<T: NiftiScalar>(path: impl AsRef<Path>, vol: &Volume<T>) -> Result<()> {
    write_metaimage_with(path, vol, &MetaImageWriteOptions::default())
}

/// [`write_metaimage`] with options (stored type, compression, byte order). Values the
/// stored type cannot hold are a [`VolumeError::ValueOutOfRange`].
pub fn write_metaimage_with<T: NiftiScalar>(
    path: impl AsRef<Path>,
    vol: &Volume<T>,
    options: &MetaImageWriteOptions,
) -> Result<()> {
    let path = path.as_ref();
    let dtype = options.dtype.unwrap_or(T::DTYPE);
    if options.compression_level > 9 {
        return Err(VolumeError::InvalidArgument(format!(
            "compression level {} (must be 0..=9)",
            options.compression_level
        )));
    }
    let detached = crate::io::ends_with_ci(path, ".mhd");
    let data_name = if detached {
        let stem = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n[..n.len() - 4].to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                VolumeError::InvalidArgument(format!("{}: no file stem", path.display()))
            })?;
        Some(format!(
            "{stem}.{}",
            if options.compress { "zraw" } else { "raw" }
        ))
    } else {
        None
    };
    let context = path.display().to_string();
    let endian = options.endianness;
    // Compressed data go to memory first: the header states their size.
    let compressed = if options.compress {
        let mut z = flate2::write::ZlibEncoder::new(
            Vec::new(),
            flate2::Compression::new(options.compression_level),
        );
        write_data(&mut z, vol, dtype, endian, 1.0, 0.0, &context).map_err(|e| match e {
            WriteErr::Io(e) => VolumeError::io(path, e),
            WriteErr::Volume(e) => e,
        })?;
        Some(z.finish().map_err(|e| VolumeError::io(path, e))?)
    } else {
        None
    };
    let header = header_text(
        vol.geometry(),
        dtype,
        options,
        compressed.as_ref().map(|c| c.len()),
        data_name.as_deref().unwrap_or("LOCAL"),
    );
    let body = |w: &mut dyn Write| -> std::result::Result<(), WriteErr> {
        match &compressed {
            Some(c) => w.write_all(c)?,
            None => write_data(w, vol, dtype, endian, 1.0, 0.0, &context)?,
        }
        Ok(())
    };
    match data_name {
        Some(name) => {
            atomic_write(&path.with_file_name(name), |w| body(w))?;
            atomic_write(path, |w| Ok(w.write_all(header.as_bytes())?))
        }
        None => atomic_write(path, |w| {
            w.write_all(header.as_bytes())?;
            body(w)
        }),
    }
}

/// ITK's `AnatomicalOrientation` of a geometry: per axis, the letter of the side the axis
/// comes *from* (the opposite of negvol's orientation code, which names where it points).
fn itk_orientation(g: &Geometry) -> String {
    g.orientation_code()
        .chars()
        .map(|c| match c {
            'R' => 'L',
            'L' => 'R',
            'A' => 'P',
            'P' => 'A',
            'S' => 'I',
            _ => 'S',
        })
        .collect()
}

fn header_text(
    g: &Geometry,
    dtype: NiftiDtype,
    o: &MetaImageWriteOptions,
    compressed_size: Option<usize>,
    data_file: &str,
) -> String {
    let a = g.affine();
    let sp = g.spacing();
    let lps = |r: usize, v: f64| (if r < 2 { -v } else { v }) + 0.0;
    let mut tm = Vec::with_capacity(9);
    for c in 0..3 {
        for r in 0..3 {
            tm.push(format!("{}", lps(r, a[r][c]) / sp[c] + 0.0));
        }
    }
    let join = |v: [f64; 3]| format!("{} {} {}", v[0], v[1], v[2]);
    let s = g.shape();
    let b = |x: bool| if x { "True" } else { "False" };
    let mut h = String::new();
    h.push_str("ObjectType = Image\n");
    h.push_str("NDims = 3\n");
    h.push_str("BinaryData = True\n");
    h.push_str(&format!(
        "BinaryDataByteOrderMSB = {}\n",
        b(o.endianness == Endianness::Big)
    ));
    h.push_str(&format!(
        "CompressedData = {}\n",
        b(compressed_size.is_some())
    ));
    if let Some(n) = compressed_size {
        h.push_str(&format!("CompressedDataSize = {n}\n"));
    }
    h.push_str(&format!("TransformMatrix = {}\n", tm.join(" ")));
    h.push_str(&format!(
        "Offset = {}\n",
        join([lps(0, a[0][3]), lps(1, a[1][3]), lps(2, a[2][3])])
    ));
    h.push_str("CenterOfRotation = 0 0 0\n");
    h.push_str(&format!("AnatomicalOrientation = {}\n", itk_orientation(g)));
    h.push_str(&format!("ElementSpacing = {}\n", join(sp)));
    h.push_str(&format!("DimSize = {} {} {}\n", s[0], s[1], s[2]));
    h.push_str(&format!("ElementType = {}\n", element_type_name(dtype)));
    h.push_str(&format!("ElementDataFile = {data_file}\n"));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<MetaImageHeader> {
        let f = lines
            .iter()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect();
        parse_fields(f, Path::new("t.mha"))
    }

    const BASE: [&str; 4] = [
        "ObjectType = Image",
        "NDims = 3",
        "DimSize = 2 3 4",
        "ElementType = MET_SHORT",
    ];

    fn with(extra: &[&str]) -> Result<MetaImageHeader> {
        let mut l = BASE.to_vec();
        l.extend_from_slice(extra);
        l.push("ElementDataFile = LOCAL");
        parse(&l)
    }

    #[test]
    fn element_types() {
        for (n, d) in [
            ("MET_CHAR", NiftiDtype::I8),
            ("MET_UCHAR", NiftiDtype::U8),
            ("MET_SHORT", NiftiDtype::I16),
            ("MET_USHORT", NiftiDtype::U16),
            ("MET_INT", NiftiDtype::I32),
            ("MET_UINT", NiftiDtype::U32),
            ("MET_LONG", NiftiDtype::I32),
            ("MET_ULONG", NiftiDtype::U32),
            ("MET_LONG_LONG", NiftiDtype::I64),
            ("MET_ULONG_LONG", NiftiDtype::U64),
            ("MET_FLOAT", NiftiDtype::F32),
            ("MET_DOUBLE", NiftiDtype::F64),
        ] {
            assert_eq!(element_type(n), Some(d));
        }
        for d in NiftiDtype::ALL {
            assert_eq!(element_type(element_type_name(d)), Some(d));
        }
        assert_eq!(element_type("MET_FLOAT_ARRAY"), None);
    }

    #[test]
    fn transform_matrix_is_axis_directions() {
        // Axis i points along LPS +y, axis j along LPS -x (a 90 degree turn), spacing 2 3 4.
        let h = with(&[
            "TransformMatrix = 0 1 0 -1 0 0 0 0 1",
            "ElementSpacing = 2 3 4",
            "Offset = 10 20 30",
        ])
        .unwrap();
        let d = h.direction();
        assert_eq!(d, [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]);
        let a = h.affine();
        assert_eq!(a[0], [0.0, 3.0, 0.0, -10.0]);
        assert_eq!(a[1], [-2.0, 0.0, 0.0, -20.0]);
        assert_eq!(a[2], [0.0, 0.0, 4.0, 30.0]);
        // The writer puts it back the same way.
        let g = Geometry::new([2, 3, 4], a).unwrap();
        let t = header_text(
            &g,
            NiftiDtype::I16,
            &MetaImageWriteOptions::default(),
            None,
            "LOCAL",
        );
        assert!(t.contains("TransformMatrix = 0 1 0 -1 0 0 0 0 1\n"), "{t}");
        assert!(t.contains("Offset = 10 20 30\n"), "{t}");
        assert!(t.contains("ElementSpacing = 2 3 4\n"), "{t}");
    }

    #[test]
    fn synonyms_and_defaults() {
        let h = with(&[
            "ElementSize = 2 3 4",
            "Position = 1 2 3",
            "Rotation = 1 0 0 0 1 0 0 0 1",
        ])
        .unwrap();
        assert_eq!((h.spacing, h.offset), ([2.0, 3.0, 4.0], [1.0, 2.0, 3.0]));
        let h = with(&["ElementSize = 2 3 4", "ElementSpacing = 1 1 1"]).unwrap();
        assert_eq!(h.spacing, [1.0; 3]);
        let h = with(&["ElementByteOrderMSB = True", "CompressedData = true"]).unwrap();
        assert_eq!(
            (h.endianness, h.compressed, h.binary),
            (Endianness::Big, true, true)
        );
        assert!(with(&["Offset = 1 2 3", "Origin = 1 2 3"]).is_ok());
        assert!(with(&["Offset = 1 2 3", "Origin = 1 2 4"]).is_err());
    }

    #[test]
    fn refusals_name_the_key() {
        let msg = |r: Result<MetaImageHeader>| r.unwrap_err().to_string();
        let mut l = BASE.to_vec();
        l[1] = "NDims = 4";
        l.push("ElementDataFile = LOCAL");
        assert!(msg(parse(&l)).contains("NDims = 4"));
        assert!(msg(with(&["ElementNumberOfChannels = 3"])).contains("ElementNumberOfChannels"));
        assert!(msg(with(&["ElementSpacing = 1 0 1"])).contains("ElementSpacing"));
        assert!(msg(with(&["ElementSpacing = 1 1"])).contains("ElementSpacing"));
        assert!(msg(with(&["ElementSpacing = 1 nan 1"])).contains("ElementSpacing"));
        assert!(msg(with(&["TransformMatrix = 1 0 0 0 1 0 0 0"])).contains("TransformMatrix"));
        assert!(msg(with(&["HeaderSize = -2"])).contains("HeaderSize"));
        assert!(msg(with(&["HeaderSize = -1", "CompressedData = True"])).contains("HeaderSize"));
        assert!(msg(with(&["CompressedDataSize = -4"])).contains("CompressedDataSize"));
        assert!(msg(with(&["BinaryData = maybe"])).contains("BinaryData"));
        assert!(msg(with(&["ObjectType = Image"])).contains("twice"));
        let mut l = BASE.to_vec();
        l[2] = "DimSize = 2 -3 4";
        l.push("ElementDataFile = LOCAL");
        assert!(msg(parse(&l)).contains("DimSize"));
        l[2] = "DimSize = 2 3";
        assert!(msg(parse(&l)).contains("DimSize"));
        l[2] = "DimSize = 2 3 99999999999999999999999";
        assert!(msg(parse(&l)).contains("DimSize"));
        let mut l = BASE.to_vec();
        l[3] = "ElementType = MET_FLOAT_ARRAY";
        l.push("ElementDataFile = LOCAL");
        assert!(matches!(parse(&l), Err(VolumeError::Unsupported { .. })));
        let mut l = BASE.to_vec();
        l.push("ElementDataFile = LIST");
        assert!(msg(parse(&l)).contains("LIST"));
        let mut l = BASE.to_vec();
        l.push("ElementDataFile = slice%03d.raw 1 10 1");
        assert!(msg(parse(&l)).contains("numbered"));
        let mut l = BASE.to_vec();
        l[0] = "ObjectType = Scene";
        l.push("ElementDataFile = LOCAL");
        assert!(msg(parse(&l)).contains("Scene"));
    }

    #[test]
    fn itk_orientation_letters() {
        let g = Geometry::from_spacing([2, 2, 2], [1.0; 3]).unwrap();
        assert_eq!(itk_orientation(&g), "LPI");
        let a = [
            [-1.0, 0.0, 0.0, 0.0],
            [0.0, -1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(
            itk_orientation(&Geometry::new([2, 2, 2], a).unwrap()),
            "RAI"
        );
    }
}
