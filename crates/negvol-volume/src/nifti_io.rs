//! NIfTI-1 and NIfTI-2 reading and writing (`.nii`, `.nii.gz`).
//!
//! The header codec is negvol's own: the `nifti` crate (0.18) reads dimensions as unsigned
//! (so a negative `dim` turns into a huge one), panics in `qform_affine` on negative `pixdim`,
//! has no NIfTI-2 and no atomic writes, so a small, fully validated codec is safer here.
//! The `nifti` crate is still used in the tests as an independent reader of what we write.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use ndarray::Array3;

use crate::geometry::{det3, linear};
use crate::rawdata::{atomic_write, decode, fortran_to_c, gz_io, out_of_range, write_data};
use crate::{Geometry, NiftiDtype, NiftiScalar, Result, Volume, VolumeError};

/// Default for [`NiftiReadOptions::max_voxels`]: 2^31 voxels (e.g. 1290^3; a 686^3 CT has
/// 3.2e8).
pub const DEFAULT_MAX_VOXELS: u64 = 1 << 31;

const NIFTI1_MAGIC: &[u8; 4] = b"n+1\0";
const NIFTI1_PAIR_MAGIC: &[u8; 4] = b"ni1\0";
const NIFTI2_MAGIC: &[u8; 8] = b"n+2\0\r\n\x1a\n";
const NIFTI2_PAIR_MAGIC: &[u8; 8] = b"ni2\0\r\n\x1a\n";

/// Options for [`read_nifti_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiReadOptions {
    /// Largest number of voxels of one 3D frame that may be read. A header claiming more is
    /// refused with [`VolumeError::TooLarge`] before anything is allocated.
    pub max_voxels: u64,
    /// Which 3D frame of a 4D (or higher) file to read; `None` refuses files with more than
    /// one frame ([`VolumeError::NotThreeD`]). Dimensions 4..7 are flattened in NIfTI order
    /// (dim 4 fastest).
    pub frame: Option<u64>,
}

impl Default for NiftiReadOptions {
    fn default() -> Self {
        Self {
            max_voxels: DEFAULT_MAX_VOXELS,
            frame: None,
        }
    }
}

/// Options for [`write_nifti_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiWriteOptions {
    /// On-disk datatype; `None` uses the voxel type's own ([`NiftiScalar::DTYPE`]).
    pub dtype: Option<NiftiDtype>,
    /// `scl_slope` to store: the written raw value is `round((v - scl_inter) / scl_slope)`
    /// for integer types. Must be finite and nonzero. Default 1.
    pub scl_slope: f64,
    /// `scl_inter` to store (finite). Default 0.
    pub scl_inter: f64,
    /// gzip level 0..=9 for `.gz` paths (default 1, as nibabel: fast, and CT compresses well
    /// at any level). Whether to compress is decided by the
    /// extension alone.
    pub compression_level: u32,
    /// `descrip` (at most 79 bytes; longer text is refused).
    pub description: String,
    /// `qform_code` written with the affine's rigid part (default 1, scanner anatomical).
    pub qform_code: i16,
    /// `sform_code` written with the full affine (default 1, scanner anatomical).
    pub sform_code: i16,
}

impl Default for NiftiWriteOptions {
    fn default() -> Self {
        Self {
            dtype: None,
            scl_slope: 1.0,
            scl_inter: 0.0,
            compression_level: 1,
            description: String::new(),
            qform_code: 1,
            sform_code: 1,
        }
    }
}

/// Byte order of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Endianness {
    /// Little-endian (what negvol writes).
    Little,
    /// Big-endian.
    Big,
}

/// Where a volume's affine came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AffineSource {
    /// `sform_code > 0`: the `srow_*` rows.
    Sform,
    /// `qform_code > 0` (and no sform): quaternion, `pixdim` and `qfac`.
    Qform,
    /// Neither: NIfTI "method 1", `diag(pixdim[1..4])`, origin at voxel 0. (nibabel instead
    /// builds a centred LAS affine in that case; the NIfTI standard says method 1.)
    Spacing,
}

/// The header fields of a NIfTI-1 or NIfTI-2 file that negvol uses, in a version-neutral
/// form (NIfTI-1's f32/i16 fields widened to f64/i64).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NiftiHeader {
    /// 1 or 2.
    pub version: u8,
    /// Byte order of the file.
    pub endianness: Endianness,
    /// Whether the file is gzip-compressed (detected from its first bytes, not its name).
    pub compressed: bool,
    /// `dim[1..=dim[0]]`, all validated to be at least 1.
    pub dims: Vec<u64>,
    /// Raw `datatype` code.
    pub datatype: i32,
    /// `bitpix`.
    pub bitpix: i32,
    /// `pixdim[0..8]` (`pixdim[0]` is qfac).
    pub pixdim: [f64; 8],
    /// Byte offset of the voxel data.
    pub vox_offset: u64,
    /// `scl_slope` as stored.
    pub scl_slope: f64,
    /// `scl_inter` as stored.
    pub scl_inter: f64,
    /// `xyzt_units` (2 = mm for space).
    pub xyzt_units: i32,
    /// `cal_min`.
    pub cal_min: f64,
    /// `cal_max`.
    pub cal_max: f64,
    /// `intent_code`.
    pub intent_code: i32,
    /// `qform_code`.
    pub qform_code: i32,
    /// `sform_code`.
    pub sform_code: i32,
    /// `quatern_b`, `quatern_c`, `quatern_d`.
    pub quatern: [f64; 3],
    /// `qoffset_x`, `qoffset_y`, `qoffset_z`.
    pub qoffset: [f64; 3],
    /// `srow_x`, `srow_y`, `srow_z`.
    pub srow: [[f64; 4]; 3],
    /// `descrip`, up to its first NUL, lossily decoded as UTF-8.
    pub descrip: String,
}

impl NiftiHeader {
    /// The supported on-disk datatype, or `None` for complex/RGB/bit/unknown codes.
    pub fn dtype(&self) -> Option<NiftiDtype> {
        NiftiDtype::from_code(self.datatype)
    }

    /// Shape of one 3D frame, `[ni, nj, nk]` (missing dimensions are 1).
    pub fn shape3(&self) -> [u64; 3] {
        let mut s = [1u64; 3];
        for (a, d) in self.dims.iter().take(3).enumerate() {
            s[a] = *d;
        }
        s
    }

    /// Number of 3D frames (product of dimensions 4..7; 1 for a 3D file), saturating.
    pub fn frames(&self) -> u64 {
        self.dims
            .iter()
            .skip(3)
            .fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// The effective scaling `(slope, inter)`: `(1, 0)` when `scl_slope` is 0 or not finite
    /// (NIfTI standard and nibabel), intercept 0 when it is not finite.
    pub fn scaling(&self) -> (f64, f64) {
        if self.scl_slope == 0.0 || !self.scl_slope.is_finite() {
            (1.0, 0.0)
        } else if !self.scl_inter.is_finite() {
            (self.scl_slope, 0.0)
        } else {
            (self.scl_slope, self.scl_inter)
        }
    }

    /// Which transform [`Self::affine`] uses: sform if `sform_code > 0`, else qform if
    /// `qform_code > 0`, else spacing.
    pub fn affine_source(&self) -> AffineSource {
        if self.sform_code > 0 {
            AffineSource::Sform
        } else if self.qform_code > 0 {
            AffineSource::Qform
        } else {
            AffineSource::Spacing
        }
    }

    /// The voxel-to-world affine chosen by [`Self::affine_source`]. Not yet validated
    /// (see [`Geometry::new`]).
    pub fn affine(&self) -> std::result::Result<[[f64; 4]; 4], String> {
        match self.affine_source() {
            AffineSource::Sform => Ok(self.sform_affine()),
            AffineSource::Qform => self.qform_affine(),
            AffineSource::Spacing => {
                let s = self.spacing3()?;
                Ok([
                    [s[0], 0.0, 0.0, 0.0],
                    [0.0, s[1], 0.0, 0.0],
                    [0.0, 0.0, s[2], 0.0],
                    [0.0, 0.0, 0.0, 1.0],
                ])
            }
        }
    }

    /// The sform affine (whatever `sform_code` says).
    pub fn sform_affine(&self) -> [[f64; 4]; 4] {
        [
            self.srow[0],
            self.srow[1],
            self.srow[2],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    /// The qform affine (NIfTI-1 standard, `nifti_quatern_to_mat44`), whatever `qform_code`
    /// says. Errors if the quaternion, offsets or spacings are not finite or a spacing is not
    /// positive.
    pub fn qform_affine(&self) -> std::result::Result<[[f64; 4]; 4], String> {
        let [mut b, mut c, mut d] = self.quatern;
        if !(b.is_finite() && c.is_finite() && d.is_finite()) {
            return Err(format!("qform quaternion {:?} is not finite", self.quatern));
        }
        if self.qoffset.iter().any(|v| !v.is_finite()) {
            return Err(format!("qform offset {:?} is not finite", self.qoffset));
        }
        let mut a = 1.0 - (b * b + c * c + d * d);
        if a < 1e-7 {
            let n = (b * b + c * c + d * d).sqrt();
            if n == 0.0 {
                return Err("qform quaternion is degenerate".into());
            }
            b /= n;
            c /= n;
            d /= n;
            a = 0.0;
        } else {
            a = a.sqrt();
        }
        let r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        let s = self.spacing3()?;
        let qfac = if self.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let z = [s[0], s[1], s[2] * qfac];
        let mut m = [[0.0; 4]; 4];
        for row in 0..3 {
            for col in 0..3 {
                m[row][col] = r[row][col] * z[col];
            }
            m[row][3] = self.qoffset[row];
        }
        m[3][3] = 1.0;
        Ok(m)
    }

    /// `pixdim[1..4]`; for axes beyond `dims.len()` a non-positive value is read as 1.
    fn spacing3(&self) -> std::result::Result<[f64; 3], String> {
        let mut s = [1.0; 3];
        for (a, v) in s.iter_mut().enumerate() {
            let p = self.pixdim[a + 1];
            if a < self.dims.len() {
                if !(p.is_finite() && p > 0.0) {
                    return Err(format!(
                        "pixdim[{}] = {p} is not a finite positive spacing",
                        a + 1
                    ));
                }
                *v = p;
            } else if p.is_finite() && p > 0.0 {
                *v = p;
            }
        }
        Ok(s)
    }
}

/// Read the header of a NIfTI-1 or NIfTI-2 file (`.nii` or `.nii.gz`), validated (magic,
/// size, dimensions, datatype size) but without reading the voxels.
///
/// ```no_run
/// let h = negvol_volume::read_nifti_header("ct.nii.gz")?;
/// println!("{:?} {:?} {:?}", h.dims, h.dtype(), h.affine_source());
/// # Ok::<(), negvol_volume::VolumeError>(())
/// ```
pub fn read_nifti_header(path: impl AsRef<Path>) -> Result<NiftiHeader> {
    let path = path.as_ref();
    let mut r = open_reader(path)?;
    Ok(read_header(&mut r.reader, r.compressed, path)?.0)
}

/// The geometry of a NIfTI file (one 3D frame) from its header alone, validated as
/// [`read_nifti`] would.
pub fn read_nifti_geometry(path: impl AsRef<Path>) -> Result<Geometry> {
    let path = path.as_ref();
    let h = read_nifti_header(path)?;
    header_geometry(&h, path)
}

fn header_geometry(h: &NiftiHeader, path: &Path) -> Result<Geometry> {
    let affine = h
        .affine()
        .map_err(|m| VolumeError::format(path, format!("{:?}: {m}", h.affine_source())))?;
    let shape = h.shape3();
    let too_big = shape.iter().any(|&d| d > usize::MAX as u64);
    if too_big {
        return Err(VolumeError::format(
            path,
            format!("dims {:?} overflow", h.dims),
        ));
    }
    let shape_us = [shape[0] as usize, shape[1] as usize, shape[2] as usize];
    Geometry::new(shape_us, affine).map_err(|e| {
        VolumeError::format(
            path,
            format!(
                "{:?} affine gives an invalid geometry: {e}",
                h.affine_source()
            ),
        )
    })
}

/// Read a 3D NIfTI file (`.nii` or `.nii.gz`, NIfTI-1 or NIfTI-2, either byte order) into a
/// volume of `T`, with `scl_slope`/`scl_inter` applied and the affine from the sform, else the
/// qform, else the spacing.
///
/// Every stored datatype can be read into every `T`; integer targets round to nearest and a
/// value that does not fit (or NaN into an integer) is a [`VolumeError::ValueOutOfRange`].
/// A 4D file is a [`VolumeError::NotThreeD`] (use [`read_nifti_frame`]).
///
/// ```no_run
/// let ct = negvol_volume::read_nifti::<f32>("ct.nii.gz")?;
/// println!("{:?} {}", ct.geometry().spacing(), ct.geometry().orientation_code());
/// # Ok::<(), negvol_volume::VolumeError>(())
/// ```
pub fn read_nifti<T: NiftiScalar>(path: impl AsRef<Path>) -> Result<Volume<T>> {
    read_nifti_with(path, &NiftiReadOptions::default())
}

/// Read frame `frame` (0-based) of a 4D NIfTI file (frame 0 of a 3D file is the volume).
pub fn read_nifti_frame<T: NiftiScalar>(path: impl AsRef<Path>, frame: u64) -> Result<Volume<T>> {
    read_nifti_with(
        path,
        &NiftiReadOptions {
            frame: Some(frame),
            ..NiftiReadOptions::default()
        },
    )
}

/// [`read_nifti`] with explicit options (voxel limit, frame).
pub fn read_nifti_with<T: NiftiScalar>(
    path: impl AsRef<Path>,
    options: &NiftiReadOptions,
) -> Result<Volume<T>> {
    let path = path.as_ref();
    let src = open_reader(path)?;
    read_source(src, path, options)
}

/// [`read_nifti_with`] from bytes in memory (a `.nii` or gzip-compressed `.nii.gz` image).
/// Errors name the file as `<memory>`.
///
/// ```
/// use negvol_volume::*;
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("x.nii");
/// write_nifti(&p, &Volume::<u8>::zeros(Geometry::from_spacing([2, 2, 2], [1.0; 3])?))?;
/// let bytes = std::fs::read(&p).unwrap();
/// let v = read_nifti_from_bytes::<f32>(&bytes, &NiftiReadOptions::default())?;
/// assert_eq!(v.geometry().shape(), [2, 2, 2]);
/// assert!(read_nifti_from_bytes::<f32>(&bytes[..100], &NiftiReadOptions::default()).is_err());
/// # Ok::<(), VolumeError>(())
/// ```
pub fn read_nifti_from_bytes<T: NiftiScalar>(
    bytes: &[u8],
    options: &NiftiReadOptions,
) -> Result<Volume<T>> {
    let compressed = bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
    let src = if compressed {
        Source {
            reader: Box::new(flate2::bufread::MultiGzDecoder::new(bytes)),
            compressed,
            file_len: None,
        }
    } else {
        Source {
            reader: Box::new(bytes),
            compressed,
            file_len: Some(bytes.len() as u64),
        }
    };
    read_source(src, Path::new("<memory>"), options)
}

fn read_source<T: NiftiScalar>(
    mut src: Source<'_>,
    path: &Path,
    options: &NiftiReadOptions,
) -> Result<Volume<T>> {
    let (h, consumed) = read_header(&mut src.reader, src.compressed, path)?;
    let dtype = h.dtype().ok_or_else(|| {
        VolumeError::unsupported(
            path,
            format!(
                "datatype code {} ({}) is not supported (supported: u8 i8 i16 u16 i32 u32 i64 u64 f32 f64)",
                h.datatype,
                datatype_name(h.datatype)
            ),
        )
    })?;
    let shape = h.shape3();
    let nvox = shape.iter().fold(1u64, |a, &d| a.saturating_mul(d));
    if nvox > options.max_voxels {
        return Err(VolumeError::TooLarge {
            path: path.to_path_buf(),
            dims: h.dims.clone(),
            voxels: nvox,
            limit: options.max_voxels,
        });
    }
    let frames = h.frames();
    let frame = match options.frame {
        None if frames > 1 => {
            return Err(VolumeError::NotThreeD {
                path: path.to_path_buf(),
                dims: h.dims.clone(),
                frames,
            })
        }
        None => 0,
        Some(f) if f >= frames => {
            return Err(VolumeError::InvalidArgument(format!(
                "{}: frame {f} requested but the file has {frames} frame(s)",
                path.display()
            )))
        }
        Some(f) => f,
    };
    let shape_us = [shape[0] as usize, shape[1] as usize, shape[2] as usize];
    let geometry = header_geometry(&h, path)?;
    let size = dtype.size() as u64;
    let nbytes = nvox * size; // nvox <= max_voxels, so no overflow for sane limits
    let start = frame
        .checked_mul(nbytes)
        .and_then(|o| o.checked_add(h.vox_offset))
        .ok_or_else(|| VolumeError::format(path, "data offset overflows"))?;
    if let Some(len) = src.file_len {
        let need = start.saturating_add(nbytes);
        if len < need {
            return Err(VolumeError::format(
                path,
                format!(
                    "truncated: header promises {nbytes} bytes of voxel data at offset {start}, but the file has {len} bytes"
                ),
            ));
        }
    }
    skip(&mut src.reader, start - consumed, path)?;
    let bytes = crate::rawdata::read_exact_data(
        &mut src.reader,
        nbytes,
        path,
        &format!("at offset {start}"),
    )?;
    let (slope, inter) = h.scaling();
    let data: Vec<T> = decode(&bytes, dtype, h.endianness, slope, inter)
        .map_err(|(p, v)| out_of_range::<T>(path.display().to_string(), p, v, shape_us))?;
    drop(bytes);
    let data = fortran_to_c(&data, shape_us);
    let arr = Array3::from_shape_vec((shape_us[0], shape_us[1], shape_us[2]), data)
        .map_err(|e| VolumeError::format(path, format!("internal shape error: {e}")))?;
    Volume::new(arr, geometry)
}

fn datatype_name(code: i32) -> &'static str {
    match code {
        0 => "unknown",
        1 => "binary (1 bit)",
        32 => "complex64",
        128 => "rgb24",
        1536 => "float128",
        1792 => "complex128",
        2048 => "complex256",
        2304 => "rgba32",
        _ => "not a NIfTI datatype",
    }
}

struct Source<'a> {
    reader: Box<dyn Read + 'a>,
    compressed: bool,
    /// Size of an uncompressed file.
    file_len: Option<u64>,
}

fn open_reader(path: &Path) -> Result<Source<'static>> {
    let file = File::open(path).map_err(|e| VolumeError::io(path, e))?;
    let len = file.metadata().map(|m| m.len()).ok();
    let mut br = BufReader::with_capacity(1 << 16, file);
    let head = {
        use std::io::BufRead;
        br.fill_buf().map_err(|e| VolumeError::io(path, e))?
    };
    let compressed = head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
    if compressed {
        Ok(Source {
            reader: Box::new(flate2::bufread::MultiGzDecoder::new(br)),
            compressed,
            file_len: None,
        })
    } else {
        Ok(Source {
            reader: Box::new(br),
            compressed,
            file_len: len,
        })
    }
}

fn skip(r: &mut dyn Read, n: u64, path: &Path) -> Result<()> {
    let got = std::io::copy(&mut r.take(n), &mut std::io::sink()).map_err(|e| gz_io(path, e))?;
    if got < n {
        return Err(VolumeError::format(
            path,
            format!(
                "truncated: file ends {} bytes before the voxel data",
                n - got
            ),
        ));
    }
    Ok(())
}

/// Read as many bytes as available up to `buf.len()`; returns the count.
fn read_full(r: &mut dyn Read, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(gz_io(path, e)),
        }
    }
    Ok(n)
}

/// Byte reader over a header buffer.
struct Fields<'a> {
    b: &'a [u8],
    big: bool,
}

impl Fields<'_> {
    fn arr<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.b[off..off + N]);
        if self.big {
            a.reverse();
        }
        a
    }
    fn i16(&self, off: usize) -> i16 {
        i16::from_le_bytes(self.arr(off))
    }
    fn i32(&self, off: usize) -> i32 {
        i32::from_le_bytes(self.arr(off))
    }
    fn i64(&self, off: usize) -> i64 {
        i64::from_le_bytes(self.arr(off))
    }
    fn f32(&self, off: usize) -> f64 {
        f32::from_le_bytes(self.arr(off)) as f64
    }
    fn f64(&self, off: usize) -> f64 {
        f64::from_le_bytes(self.arr(off))
    }
    fn text(&self, off: usize, len: usize) -> String {
        let s = &self.b[off..off + len];
        let end = s.iter().position(|&c| c == 0).unwrap_or(len);
        String::from_utf8_lossy(&s[..end]).into_owned()
    }
}

/// Parse and validate a header; returns it and the number of bytes consumed (348 or 540).
fn read_header(r: &mut dyn Read, compressed: bool, path: &Path) -> Result<(NiftiHeader, u64)> {
    let mut buf = [0u8; 540];
    let n = read_full(r, &mut buf[..348], path)?;
    if n < 4 {
        return Err(VolumeError::format(
            path,
            format!("not a NIfTI file: only {n} bytes"),
        ));
    }
    let le = i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let be = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let (version, big) = match (le, be) {
        (348, _) => (1u8, false),
        (_, 348) => (1, true),
        (540, _) => (2, false),
        (_, 540) => (2, true),
        _ => {
            return Err(VolumeError::format(
                path,
                format!(
                    "not a NIfTI file: sizeof_hdr is {le} (expected 348 for NIfTI-1 or 540 for NIfTI-2){}",
                    if compressed { "" } else { "; is it gzip-compressed or another format?" }
                ),
            ))
        }
    };
    let hdr_len = if version == 1 { 348 } else { 540 };
    let n = if version == 2 {
        n + read_full(r, &mut buf[348..540], path)?
    } else {
        n
    };
    if n < hdr_len {
        return Err(VolumeError::format(
            path,
            format!("truncated header: {n} of {hdr_len} bytes"),
        ));
    }
    let f = Fields { b: &buf, big };
    let h = if version == 1 {
        parse1(&f, path)?
    } else {
        parse2(&f, path)?
    };
    let mut h = h;
    h.compressed = compressed;
    h.endianness = if big {
        Endianness::Big
    } else {
        Endianness::Little
    };
    validate(&h, path)?;
    Ok((h, hdr_len as u64))
}

fn parse1(f: &Fields<'_>, path: &Path) -> Result<NiftiHeader> {
    let magic = &f.b[344..348];
    if magic == NIFTI1_PAIR_MAGIC {
        return Err(VolumeError::unsupported(
            path,
            "NIfTI-1 header/image pair (.hdr/.img); convert it to a single .nii",
        ));
    }
    if magic != NIFTI1_MAGIC {
        return Err(VolumeError::format(
            path,
            format!("wrong NIfTI-1 magic {magic:?} (expected \"n+1\\0\"); ANALYZE 7.5 files are not supported"),
        ));
    }
    let dim0 = f.i16(40);
    let ndim = check_dim0(dim0 as i64, path)?;
    let mut dims = Vec::with_capacity(ndim);
    for a in 1..=ndim {
        dims.push(check_dim(a, f.i16(40 + 2 * a) as i64, path)?);
    }
    let mut pixdim = [0.0; 8];
    for (a, p) in pixdim.iter_mut().enumerate() {
        *p = f.f32(76 + 4 * a);
    }
    let vox = f.f32(108);
    if !(vox.is_finite() && vox >= 0.0 && vox.fract() == 0.0) {
        return Err(VolumeError::format(
            path,
            format!("vox_offset {vox} is not a non-negative integer"),
        ));
    }
    let mut vox_offset = vox as u64;
    if vox_offset < 348 {
        if vox_offset == 0 {
            // Some writers leave 0 in single files; the data then start after the header
            // and the 4 extension bytes.
            vox_offset = 352;
        } else {
            return Err(VolumeError::format(
                path,
                format!("vox_offset {vox_offset} lies inside the 348-byte header"),
            ));
        }
    }
    let mut srow = [[0.0; 4]; 3];
    for (r, row) in srow.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = f.f32(280 + 16 * r + 4 * c);
        }
    }
    Ok(NiftiHeader {
        version: 1,
        endianness: Endianness::Little,
        compressed: false,
        dims,
        datatype: f.i16(70) as i32,
        bitpix: f.i16(72) as i32,
        pixdim,
        vox_offset,
        scl_slope: f.f32(112),
        scl_inter: f.f32(116),
        xyzt_units: f.b[123] as i32,
        cal_max: f.f32(124),
        cal_min: f.f32(128),
        intent_code: f.i16(68) as i32,
        qform_code: f.i16(252) as i32,
        sform_code: f.i16(254) as i32,
        quatern: [f.f32(256), f.f32(260), f.f32(264)],
        qoffset: [f.f32(268), f.f32(272), f.f32(276)],
        srow,
        descrip: f.text(148, 80),
    })
}

fn parse2(f: &Fields<'_>, path: &Path) -> Result<NiftiHeader> {
    let magic = &f.b[4..12];
    if magic == NIFTI2_PAIR_MAGIC {
        return Err(VolumeError::unsupported(
            path,
            "NIfTI-2 header/image pair (.hdr/.img); convert it to a single .nii",
        ));
    }
    if magic != NIFTI2_MAGIC {
        return Err(VolumeError::format(
            path,
            format!("wrong NIfTI-2 magic {magic:?}"),
        ));
    }
    let ndim = check_dim0(f.i64(16), path)?;
    let mut dims = Vec::with_capacity(ndim);
    for a in 1..=ndim {
        dims.push(check_dim(a, f.i64(16 + 8 * a), path)?);
    }
    let mut pixdim = [0.0; 8];
    for (a, p) in pixdim.iter_mut().enumerate() {
        *p = f.f64(104 + 8 * a);
    }
    let vox = f.i64(168);
    if vox < 540 {
        return Err(VolumeError::format(
            path,
            format!("vox_offset {vox} lies inside the 540-byte NIfTI-2 header"),
        ));
    }
    let mut srow = [[0.0; 4]; 3];
    for (r, row) in srow.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = f.f64(400 + 32 * r + 8 * c);
        }
    }
    Ok(NiftiHeader {
        version: 2,
        endianness: Endianness::Little,
        compressed: false,
        dims,
        datatype: f.i16(12) as i32,
        bitpix: f.i16(14) as i32,
        pixdim,
        vox_offset: vox as u64,
        scl_slope: f.f64(176),
        scl_inter: f.f64(184),
        cal_max: f.f64(192),
        cal_min: f.f64(200),
        xyzt_units: f.i32(500),
        intent_code: f.i32(504),
        qform_code: f.i32(344),
        sform_code: f.i32(348),
        quatern: [f.f64(352), f.f64(360), f.f64(368)],
        qoffset: [f.f64(376), f.f64(384), f.f64(392)],
        srow,
        descrip: f.text(240, 80),
    })
}

fn check_dim0(dim0: i64, path: &Path) -> Result<usize> {
    if !(1..=7).contains(&dim0) {
        return Err(VolumeError::format(
            path,
            format!("dim[0] = {dim0} (number of dimensions must be 1..7)"),
        ));
    }
    Ok(dim0 as usize)
}

fn check_dim(a: usize, d: i64, path: &Path) -> Result<u64> {
    if d < 1 {
        return Err(VolumeError::format(
            path,
            format!("dim[{a}] = {d} (dimensions must be at least 1)"),
        ));
    }
    Ok(d as u64)
}

fn validate(h: &NiftiHeader, path: &Path) -> Result<()> {
    if let Some(d) = h.dtype() {
        let bits = 8 * d.size() as i32;
        // bitpix is redundant; writers that leave it 0 exist, so only a contradiction fails.
        if h.bitpix != 0 && h.bitpix != bits {
            return Err(VolumeError::format(
                path,
                format!(
                    "bitpix {} contradicts datatype {} ({} bits)",
                    h.bitpix, d, bits
                ),
            ));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Writing

/// Write a volume as NIfTI-1 (little-endian; gzip if the path ends in `.gz`), datatype from
/// `T` (`bool` as u8 0/1), with the affine in both sform and qform (`*_code` 1), spacing in
/// `pixdim`, units mm. The file is written to a temporary file in the same directory and
/// renamed, so readers never see a partial file.
///
/// ```
/// use negvol_volume::{read_nifti, write_nifti, Geometry, Volume};
/// let g = Geometry::from_spacing([3, 4, 5], [0.5, 0.5, 1.0])?;
/// let v = Volume::<i16>::zeros(g);
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("x.nii.gz");
/// write_nifti(&p, &v)?;
/// let w = read_nifti::<i16>(&p)?;
/// assert_eq!(w.data(), v.data());
/// # Ok::<(), negvol_volume::VolumeError>(())
/// ```
pub fn write_nifti<T: NiftiScalar>(path: impl AsRef<Path>, vol: &Volume<T>) -> Result<()> {
    write_nifti_with(path, vol, &NiftiWriteOptions::default())
}

/// [`write_nifti`] with an explicit on-disk datatype (e.g. `f32` data stored as `i16`: values
/// are rounded to nearest; out-of-range or NaN values are a [`VolumeError::ValueOutOfRange`]).
pub fn write_nifti_as<T: NiftiScalar>(
    path: impl AsRef<Path>,
    vol: &Volume<T>,
    dtype: NiftiDtype,
) -> Result<()> {
    write_nifti_with(
        path,
        vol,
        &NiftiWriteOptions {
            dtype: Some(dtype),
            ..NiftiWriteOptions::default()
        },
    )
}

/// [`write_nifti`] with explicit options (datatype, scaling, compression level, codes).
pub fn write_nifti_with<T: NiftiScalar>(
    path: impl AsRef<Path>,
    vol: &Volume<T>,
    options: &NiftiWriteOptions,
) -> Result<()> {
    let path = path.as_ref();
    let dtype = options.dtype.unwrap_or(T::DTYPE);
    if !(options.scl_slope.is_finite() && options.scl_slope != 0.0 && options.scl_inter.is_finite())
    {
        return Err(VolumeError::InvalidArgument(format!(
            "scl_slope {} / scl_inter {} must be finite with a nonzero slope",
            options.scl_slope, options.scl_inter
        )));
    }
    if options.compression_level > 9 {
        return Err(VolumeError::InvalidArgument(format!(
            "compression level {} (must be 0..=9)",
            options.compression_level
        )));
    }
    if options.description.len() > 79 {
        return Err(VolumeError::InvalidArgument(format!(
            "description is {} bytes (at most 79)",
            options.description.len()
        )));
    }
    let g = vol.geometry();
    for (a, &n) in g.shape().iter().enumerate() {
        if n > i16::MAX as usize {
            return Err(VolumeError::InvalidArgument(format!(
                "{}: dimension {a} is {n}, more than NIfTI-1 allows (32767)",
                path.display()
            )));
        }
    }
    let header = build_header1(g, dtype, options);
    let gz = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.to_ascii_lowercase().ends_with(".gz"));
    let level = options.compression_level;
    let context = path.display().to_string();
    let (slope, inter) = (options.scl_slope, options.scl_inter);
    atomic_write(path, |w| {
        let mut w: Box<dyn Write> = if gz {
            Box::new(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::new(level),
            ))
        } else {
            Box::new(w)
        };
        w.write_all(&header)?;
        write_data(
            &mut w,
            vol,
            dtype,
            Endianness::Little,
            slope,
            inter,
            &context,
        )?;
        w.flush()?;
        Ok(())
    })
}

fn build_header1(g: &Geometry, dtype: NiftiDtype, o: &NiftiWriteOptions) -> Vec<u8> {
    let mut b = vec![0u8; 352];
    let put = |b: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        b[off..off + bytes.len()].copy_from_slice(bytes);
    };
    put(&mut b, 0, &348i32.to_le_bytes());
    let s = g.shape();
    let dims: [i16; 8] = [3, s[0] as i16, s[1] as i16, s[2] as i16, 1, 1, 1, 1];
    for (a, d) in dims.iter().enumerate() {
        put(&mut b, 40 + 2 * a, &d.to_le_bytes());
    }
    put(&mut b, 70, &dtype.code().to_le_bytes());
    put(&mut b, 72, &((8 * dtype.size()) as i16).to_le_bytes());
    let q = affine_to_qform(&g.affine());
    let sp = g.spacing();
    let pixdim: [f32; 8] = [
        q.qfac as f32,
        sp[0] as f32,
        sp[1] as f32,
        sp[2] as f32,
        1.0,
        1.0,
        1.0,
        1.0,
    ];
    for (a, p) in pixdim.iter().enumerate() {
        put(&mut b, 76 + 4 * a, &p.to_le_bytes());
    }
    put(&mut b, 108, &352f32.to_le_bytes());
    put(&mut b, 112, &(o.scl_slope as f32).to_le_bytes());
    put(&mut b, 116, &(o.scl_inter as f32).to_le_bytes());
    b[123] = 2; // NIFTI_UNITS_MM
    let d = o.description.as_bytes();
    put(&mut b, 148, &d[..d.len().min(79)]);
    put(&mut b, 252, &o.qform_code.to_le_bytes());
    put(&mut b, 254, &o.sform_code.to_le_bytes());
    for (a, v) in q.quatern.iter().chain(q.offset.iter()).enumerate() {
        put(&mut b, 256 + 4 * a, &(*v as f32).to_le_bytes());
    }
    let af = g.affine();
    for r in 0..3 {
        for c in 0..4 {
            put(
                &mut b,
                280 + 16 * r + 4 * c,
                &(af[r][c] as f32).to_le_bytes(),
            );
        }
    }
    put(&mut b, 344, NIFTI1_MAGIC);
    b
}

/// The qform parameters of an affine (NIfTI-1 `nifti_mat44_to_quatern`): the direction
/// cosines (columns normalised, orthogonalised by polar decomposition when the affine has
/// shear), `qfac = -1` for a left-handed grid, and the quaternion of the rotation.
pub(crate) struct QForm {
    pub quatern: [f64; 3],
    pub offset: [f64; 3],
    pub qfac: f64,
}

pub(crate) fn affine_to_qform(a: &[[f64; 4]; 4]) -> QForm {
    let m = linear(a);
    let mut r = [[0.0; 3]; 3];
    for c in 0..3 {
        let n = (0..3).map(|k| m[k][c] * m[k][c]).sum::<f64>().sqrt();
        for k in 0..3 {
            r[k][c] = m[k][c] / n;
        }
    }
    let r = polar(r);
    let mut r = r;
    let qfac = if det3(&r) < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
        -1.0
    } else {
        1.0
    };
    let (r11, r12, r13) = (r[0][0], r[0][1], r[0][2]);
    let (r21, r22, r23) = (r[1][0], r[1][1], r[1][2]);
    let (r31, r32, r33) = (r[2][0], r[2][1], r[2][2]);
    let t = r11 + r22 + r33 + 1.0;
    let (mut qa, mut qb, mut qc, mut qd);
    if t > 0.5 {
        qa = 0.5 * t.sqrt();
        qb = 0.25 * (r32 - r23) / qa;
        qc = 0.25 * (r13 - r31) / qa;
        qd = 0.25 * (r21 - r12) / qa;
    } else {
        let xd = 1.0 + r11 - (r22 + r33);
        let yd = 1.0 + r22 - (r11 + r33);
        let zd = 1.0 + r33 - (r11 + r22);
        if xd > 1.0 {
            qb = 0.5 * xd.sqrt();
            qc = 0.25 * (r12 + r21) / qb;
            qd = 0.25 * (r13 + r31) / qb;
            qa = 0.25 * (r32 - r23) / qb;
        } else if yd > 1.0 {
            qc = 0.5 * yd.sqrt();
            qb = 0.25 * (r12 + r21) / qc;
            qd = 0.25 * (r23 + r32) / qc;
            qa = 0.25 * (r13 - r31) / qc;
        } else {
            qd = 0.5 * zd.sqrt();
            qb = 0.25 * (r13 + r31) / qd;
            qc = 0.25 * (r23 + r32) / qd;
            qa = 0.25 * (r21 - r12) / qd;
        }
        if qa < 0.0 {
            qa = -qa;
            qb = -qb;
            qc = -qc;
            qd = -qd;
        }
    }
    let _ = qa;
    QForm {
        quatern: [qb, qc, qd],
        offset: [a[0][3], a[1][3], a[2][3]],
        qfac,
    }
}

/// Orthogonal polar factor of a nonsingular 3x3 matrix (Newton iteration
/// `X <- (X + X^-T) / 2`).
fn polar(m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut x = m;
    for _ in 0..100 {
        let inv = crate::geometry::inv3(&x);
        let mut next = [[0.0; 3]; 3];
        let mut diff = 0.0f64;
        for r in 0..3 {
            for c in 0..3 {
                next[r][c] = 0.5 * (x[r][c] + inv[c][r]);
                diff = diff.max((next[r][c] - x[r][c]).abs());
            }
        }
        x = next;
        if diff < 1e-15 {
            break;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    fn header_from_affine(a: &[[f64; 4]; 4]) -> NiftiHeader {
        let q = affine_to_qform(a);
        let g = Geometry::new([2, 2, 2], *a).unwrap();
        let s = g.spacing();
        NiftiHeader {
            version: 1,
            endianness: Endianness::Little,
            compressed: false,
            dims: vec![2, 2, 2],
            datatype: 2,
            bitpix: 8,
            pixdim: [q.qfac, s[0], s[1], s[2], 1.0, 1.0, 1.0, 1.0],
            vox_offset: 352,
            scl_slope: 1.0,
            scl_inter: 0.0,
            xyzt_units: 2,
            cal_min: 0.0,
            cal_max: 0.0,
            intent_code: 0,
            qform_code: 1,
            sform_code: 0,
            quatern: q.quatern,
            qoffset: q.offset,
            srow: [a[0], a[1], a[2]],
            descrip: String::new(),
        }
    }

    #[test]
    fn qform_round_trips_rigid_affines() {
        // All 48 axis permutations/flips, plus an oblique rotation, with anisotropic spacing.
        let sp = [0.4, 0.7, 1.3];
        let perms = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        let mut cases = Vec::new();
        for p in perms {
            for flips in 0..8 {
                let mut a = [[0.0; 4]; 4];
                for c in 0..3 {
                    let sign = if flips >> c & 1 == 1 { -1.0 } else { 1.0 };
                    a[p[c]][c] = sign * sp[c];
                }
                a[0][3] = 10.0;
                a[1][3] = -20.0;
                a[2][3] = 5.5;
                a[3][3] = 1.0;
                cases.push(a);
            }
        }
        let (c1, s1) = (0.3f64.cos(), 0.3f64.sin());
        let (c2, s2) = (0.2f64.cos(), 0.2f64.sin());
        // Rz(0.3) * Rx(0.2) * diag(sp) with a flip of the last axis.
        let rz = [[c1, -s1, 0.0], [s1, c1, 0.0], [0.0, 0.0, 1.0]];
        let rx = [[1.0, 0.0, 0.0], [0.0, c2, -s2], [0.0, s2, c2]];
        let mut a = [[0.0; 4]; 4];
        for r in 0..3 {
            for c in 0..3 {
                let v: f64 = (0..3).map(|k| rz[r][k] * rx[k][c]).sum();
                a[r][c] = v * sp[c] * if c == 2 { -1.0 } else { 1.0 };
            }
        }
        a[3][3] = 1.0;
        cases.push(a);
        for a in cases {
            let h = header_from_affine(&a);
            let q = h.qform_affine().unwrap();
            for r in 0..4 {
                for c in 0..4 {
                    assert_abs_diff_eq!(q[r][c], a[r][c], epsilon = 1e-9);
                }
            }
        }
    }

    #[test]
    fn fortran_to_c_matches_ndarray() {
        for shape in [[1, 1, 1], [3, 1, 70], [33, 2, 65], [40, 35, 3]] {
            let n = shape[0] * shape[1] * shape[2];
            let f: Vec<u32> = (0..n as u32).collect();
            let want = ndarray::Array3::from_shape_vec(
                ndarray::ShapeBuilder::f((shape[0], shape[1], shape[2])),
                f.clone(),
            )
            .unwrap();
            let got = fortran_to_c(&f, shape);
            assert_eq!(got, want.iter().copied().collect::<Vec<_>>(), "{shape:?}");
        }
    }

    #[test]
    fn qform_of_sheared_affine_is_rigid_part() {
        let a = [
            [1.0, 0.1, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let h = header_from_affine(&a);
        let q = h.qform_affine().unwrap();
        // Orthogonal columns.
        let dot: f64 = (0..3).map(|r| q[r][0] * q[r][1]).sum();
        assert_abs_diff_eq!(dot, 0.0, epsilon = 1e-9);
        assert_eq!(
            Geometry::new([2, 2, 2], q).unwrap().orientation_code(),
            "RAS"
        );
    }
}
