//! Voxel codecs shared by the NIfTI, NRRD and MetaImage readers and writers: raw bytes in
//! file order (first axis fastest, as all three formats store voxels) to and from typed
//! arrays in negvol's `(i, j, k)` C order, with range checks.

use std::fs::File;
use std::io::{BufWriter, Write};
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
