//! Voxel codecs shared by the NIfTI, NRRD and MetaImage readers and writers: raw bytes in
//! file order (first axis fastest, as all three formats store voxels) to and from typed
//! arrays in negvol's `(i, j, k)` C order, with range checks.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use rayon::prelude::*;

use crate::scalar::fits;
use crate::{Endianness, NiftiDtype, NiftiScalar, Result, Volume, VolumeError};

/// Reorder voxels from NIfTI order (i fastest) to C order (k fastest), in cache-friendly
/// tiles, in parallel over blocks of `i`.
pub(crate) fn fortran_to_c<T: Copy + Default + Send + Sync>(
    f: &[T],
    [ni, nj, nk]: [usize; 3],
) -> Vec<T> {
    const B: usize = 32;
    let mut out = vec![T::default(); f.len()];
    let plane = nj * nk;
    if plane == 0 {
        return out;
    }
    out.par_chunks_mut(B * plane)
        .enumerate()
        .for_each(|(bi, o)| {
            let i0 = bi * B;
            let i1 = (i0 + B).min(ni);
            for j in 0..nj {
                for k0 in (0..nk).step_by(B) {
                    let k1 = (k0 + B).min(nk);
                    for k in k0..k1 {
                        let src = &f[ni * (j + nj * k)..];
                        for i in i0..i1 {
                            o[(i - i0) * plane + j * nk + k] = src[i];
                        }
                    }
                }
            }
        });
    out
}

pub(crate) fn out_of_range<T: NiftiScalar>(
    context: String,
    flat_fortran: usize,
    value: f64,
    shape: [usize; 3],
) -> VolumeError {
    let i = flat_fortran % shape[0];
    let j = (flat_fortran / shape[0]) % shape[1];
    let k = flat_fortran / (shape[0] * shape[1]);
    VolumeError::ValueOutOfRange {
        context,
        value,
        index: [i, j, k],
        dtype: T::NAME,
    }
}

/// Decode raw voxels (file order, i fastest) to `T`; on failure, the flat index and scaled value.
pub(crate) fn decode<T: NiftiScalar>(
    bytes: &[u8],
    dtype: NiftiDtype,
    endian: Endianness,
    slope: f64,
    inter: f64,
) -> std::result::Result<Vec<T>, (usize, f64)> {
    macro_rules! go {
        ($t:ty) => {{
            const N: usize = std::mem::size_of::<$t>();
            let identity = slope == 1.0 && inter == 0.0;
            const CHUNK: usize = 1 << 15;
            let n = bytes.len() / N;
            let mut out = vec![T::default(); n];
            out.par_chunks_mut(CHUNK)
                .zip(bytes.par_chunks(CHUNK * N))
                .enumerate()
                .try_for_each(|(ci, (o, b))| {
                    for (q, (x, c)) in o.iter_mut().zip(b.chunks_exact(N)).enumerate() {
                        let mut arr = [0u8; N];
                        arr.copy_from_slice(c);
                        let raw = match endian {
                            Endianness::Little => <$t>::from_le_bytes(arr),
                            Endianness::Big => <$t>::from_be_bytes(arr),
                        };
                        let v = raw as f64;
                        let v = if identity { v } else { v * slope + inter };
                        *x = T::from_f64_checked(v).ok_or((ci * CHUNK + q, v))?;
                    }
                    Ok(())
                })?;
            Ok(out)
        }};
    }
    match dtype {
        NiftiDtype::U8 => go!(u8),
        NiftiDtype::I8 => go!(i8),
        NiftiDtype::I16 => go!(i16),
        NiftiDtype::U16 => go!(u16),
        NiftiDtype::I32 => go!(i32),
        NiftiDtype::U32 => go!(u32),
        NiftiDtype::I64 => go!(i64),
        NiftiDtype::U64 => go!(u64),
        NiftiDtype::F32 => go!(f32),
        NiftiDtype::F64 => go!(f64),
    }
}

pub(crate) fn gz_io(path: &Path, e: std::io::Error) -> VolumeError {
    if e.kind() == std::io::ErrorKind::InvalidInput || e.kind() == std::io::ErrorKind::InvalidData {
        VolumeError::format(path, format!("corrupt gzip stream: {e}"))
    } else {
        VolumeError::io(path, e)
    }
}

/// Write `vol`'s voxels in file order (i fastest) as `dtype` in byte order `endian`, the
/// stored value being `(v - inter) / slope` (rounded to nearest for integer types).
pub(crate) fn write_data<T: NiftiScalar>(
    w: &mut dyn Write,
    vol: &Volume<T>,
    dtype: NiftiDtype,
    endian: Endianness,
    slope: f64,
    inter: f64,
    context: &str,
) -> std::result::Result<(), WriteErr> {
    let shape = vol.geometry().shape();
    let identity = slope == 1.0 && inter == 0.0;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    // Reversed axes: iterating this view visits i fastest, as NIfTI stores voxels.
    for (p, &x) in vol.data().t().iter().enumerate() {
        let v = x.to_f64();
        let raw = if identity { v } else { (v - inter) / slope };
        let r = fits(dtype, raw)
            .ok_or_else(|| WriteErr::Volume(out_of_range_write(context, p, v, shape, dtype)))?;
        let start = buf.len();
        match dtype {
            NiftiDtype::U8 => buf.push(r as u8),
            NiftiDtype::I8 => buf.push((r as i8) as u8),
            NiftiDtype::I16 => buf.extend_from_slice(&(r as i16).to_le_bytes()),
            NiftiDtype::U16 => buf.extend_from_slice(&(r as u16).to_le_bytes()),
            NiftiDtype::I32 => buf.extend_from_slice(&(r as i32).to_le_bytes()),
            NiftiDtype::U32 => buf.extend_from_slice(&(r as u32).to_le_bytes()),
            NiftiDtype::I64 => buf.extend_from_slice(&(r as i64).to_le_bytes()),
            NiftiDtype::U64 => buf.extend_from_slice(&(r as u64).to_le_bytes()),
            NiftiDtype::F32 => buf.extend_from_slice(&(r as f32).to_le_bytes()),
            NiftiDtype::F64 => buf.extend_from_slice(&r.to_le_bytes()),
        }
        if endian == Endianness::Big {
            buf[start..].reverse();
        }
        if buf.len() >= (1 << 16) - 8 {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    w.write_all(&buf)?;
    Ok(())
}

pub(crate) fn out_of_range_write(
    context: &str,
    p: usize,
    value: f64,
    shape: [usize; 3],
    dtype: NiftiDtype,
) -> VolumeError {
    let i = p % shape[0];
    let j = (p / shape[0]) % shape[1];
    let k = p / (shape[0] * shape[1]);
    VolumeError::ValueOutOfRange {
        context: context.to_string(),
        value,
        index: [i, j, k],
        dtype: dtype.name(),
    }
}

pub(crate) enum WriteErr {
    Io(std::io::Error),
    Volume(VolumeError),
}

impl From<std::io::Error> for WriteErr {
    fn from(e: std::io::Error) -> Self {
        WriteErr::Io(e)
    }
}

/// Write through a temporary file in the target's directory, then rename over the target.
pub(crate) fn atomic_write(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<&mut File>) -> std::result::Result<(), WriteErr>,
) -> Result<()> {
    crate::atomic::write_atomic(path, body).map_err(|e| match e {
        WriteErr::Io(e) => VolumeError::io(path, e),
        WriteErr::Volume(e) => e,
    })
}

/// Read exactly `nbytes` bytes from `r`; fewer is a "truncated" format error that names
/// `path` and says where the data were expected (`what`, e.g. "at offset 352").
pub(crate) fn read_exact_data(
    r: &mut dyn Read,
    nbytes: u64,
    path: &Path,
    what: &str,
) -> Result<Vec<u8>> {
    let cap = usize::try_from(nbytes)
        .map_err(|_| VolumeError::format(path, format!("{nbytes} bytes of voxel data overflow")))?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(cap)
        .map_err(|e| VolumeError::format(path, format!("cannot allocate {nbytes} bytes: {e}")))?;
    r.take(nbytes)
        .read_to_end(&mut bytes)
        .map_err(|e| gz_io(path, e))?;
    if (bytes.len() as u64) < nbytes {
        return Err(VolumeError::format(
            path,
            format!(
                "truncated: header promises {nbytes} bytes of voxel data {what}, found only {}",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// Skip `n` bytes of `r`; a shorter stream is a "truncated" format error.
pub(crate) fn skip_bytes(r: &mut dyn Read, n: u64, path: &Path, what: &str) -> Result<()> {
    let got = std::io::copy(&mut r.take(n), &mut std::io::sink()).map_err(|e| gz_io(path, e))?;
    if got < n {
        return Err(VolumeError::format(
            path,
            format!("truncated: {what}: file ends {} bytes early", n - got),
        ));
    }
    Ok(())
}

/// Elements `(frame, i, j, k)` of an array of `elem`-byte values stored first axis fastest
/// with the given per-axis element strides: frame `frame`'s bytes in i-fastest order.
pub(crate) fn gather_frame(
    bytes: &[u8],
    elem: usize,
    shape: [usize; 3],
    strides: [usize; 3],
    frame_offset: usize,
) -> Vec<u8> {
    let n = shape.iter().product::<usize>();
    let mut out = Vec::with_capacity(n * elem);
    for k in 0..shape[2] {
        for j in 0..shape[1] {
            for i in 0..shape[0] {
                let e = frame_offset + i * strides[0] + j * strides[1] + k * strides[2];
                out.extend_from_slice(&bytes[e * elem..(e + 1) * elem]);
            }
        }
    }
    out
}

/// Turn voxels in file order (i fastest) into a volume of `T`, with `(slope, inter)`
/// applied; a value `T` cannot hold is a [`VolumeError::ValueOutOfRange`] naming `path`.
pub(crate) fn volume_from_bytes<T: NiftiScalar>(
    bytes: &[u8],
    dtype: NiftiDtype,
    endian: Endianness,
    geometry: crate::Geometry,
    path: &Path,
) -> Result<Volume<T>> {
    let shape = geometry.shape();
    let data: Vec<T> = decode(bytes, dtype, endian, 1.0, 0.0)
        .map_err(|(p, v)| out_of_range::<T>(path.display().to_string(), p, v, shape))?;
    let data = fortran_to_c(&data, shape);
    let arr = ndarray::Array3::from_shape_vec((shape[0], shape[1], shape[2]), data)
        .map_err(|e| VolumeError::format(path, format!("internal shape error: {e}")))?;
    Volume::new(arr, geometry)
}

/// Values written as text (NRRD `ascii` encoding, MetaImage `BinaryData = False`): the
/// first `n` numbers separated by whitespace or commas, each checked to be representable
/// in the stored type `dtype` and returned as little-endian bytes of that type. Fewer
/// numbers is a "truncated" error; a token that is not a number names its position.
pub(crate) fn text_values_to_bytes(
    text: &str,
    n: usize,
    dtype: NiftiDtype,
    path: &Path,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.try_reserve_exact(n.saturating_mul(dtype.size()))
        .map_err(|e| VolumeError::format(path, format!("cannot allocate {n} values: {e}")))?;
    let mut count = 0usize;
    for tok in text
        .split(|c: char| c.is_ascii_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
    {
        if count == n {
            break;
        }
        let v = parse_text_number(tok).ok_or_else(|| {
            VolumeError::format(
                path,
                format!("text data: value #{count} {tok:?} is not a number"),
            )
        })?;
        let r = fits(dtype, v).ok_or_else(|| {
            VolumeError::format(
                path,
                format!("text data: value #{count} ({tok}) does not fit the stored type {dtype}"),
            )
        })?;
        push_value(&mut out, dtype, r);
        count += 1;
    }
    if count < n {
        return Err(VolumeError::format(
            path,
            format!("truncated: header promises {n} text values, found only {count}"),
        ));
    }
    Ok(out)
}

/// A number as text: integers exactly (also beyond 2^53, as f64 rounding allows), floats,
/// and `nan` / `inf` in any case.
fn parse_text_number(tok: &str) -> Option<f64> {
    if let Ok(i) = tok.parse::<i128>() {
        return Some(i as f64);
    }
    parse_f64(tok)
}

/// An f64 written in C's `printf`/`strtod` style, also `nan`, `inf`, `infinity` in any case
/// with an optional sign.
pub(crate) fn parse_f64(tok: &str) -> Option<f64> {
    let t = tok.trim();
    let (sign, rest) = match t.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, t.strip_prefix('+').unwrap_or(t)),
    };
    match rest.to_ascii_lowercase().as_str() {
        "nan" => return Some(f64::NAN),
        "inf" | "infinity" => return Some(sign * f64::INFINITY),
        _ => {}
    }
    // Rust accepts "1e5", "1.", ".5" like strtod; it refuses hex floats, which no writer of
    // these formats emits.
    t.parse::<f64>().ok()
}

/// Append `v` (already checked to fit) as a little-endian value of `dtype`.
fn push_value(out: &mut Vec<u8>, dtype: NiftiDtype, v: f64) {
    match dtype {
        NiftiDtype::U8 => out.push(v as u8),
        NiftiDtype::I8 => out.push((v as i8) as u8),
        NiftiDtype::I16 => out.extend_from_slice(&(v as i16).to_le_bytes()),
        NiftiDtype::U16 => out.extend_from_slice(&(v as u16).to_le_bytes()),
        NiftiDtype::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
        NiftiDtype::U32 => out.extend_from_slice(&(v as u32).to_le_bytes()),
        NiftiDtype::I64 => out.extend_from_slice(&(v as i64).to_le_bytes()),
        NiftiDtype::U64 => out.extend_from_slice(&(v as u64).to_le_bytes()),
        NiftiDtype::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
        NiftiDtype::F64 => out.extend_from_slice(&v.to_le_bytes()),
    }
}

/// The number of voxels and of bytes of an array with dimensions `dims` of `elem`-byte
/// values, or a format error naming `field` when the product overflows u64.
pub(crate) fn checked_size(
    dims: &[u64],
    elem: usize,
    path: &Path,
    field: &str,
) -> Result<(u64, u64)> {
    let nvox = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            VolumeError::format(path, format!("{field} {dims:?}: the voxel count overflows"))
        })?;
    let nbytes = nvox.checked_mul(elem as u64).ok_or_else(|| {
        VolumeError::format(path, format!("{field} {dims:?}: the byte count overflows"))
    })?;
    Ok((nvox, nbytes))
}
