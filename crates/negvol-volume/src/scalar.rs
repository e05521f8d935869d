//! Voxel types that can be stored in NIfTI files: [`NiftiScalar`] and [`NiftiDtype`].

use std::fmt;
use std::str::FromStr;

use crate::VolumeError;

/// An on-disk NIfTI datatype that negvol reads and writes.
///
/// Reading accepts every variant; writing accepts every variant. NIfTI's complex, RGB and
/// 1-bit types are refused with [`VolumeError::Unsupported`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum NiftiDtype {
    /// `DT_UINT8` (code 2).
    U8,
    /// `DT_INT8` (code 256).
    I8,
    /// `DT_INT16` (code 4).
    I16,
    /// `DT_UINT16` (code 512).
    U16,
    /// `DT_INT32` (code 8).
    I32,
    /// `DT_UINT32` (code 768).
    U32,
    /// `DT_INT64` (code 1024).
    I64,
    /// `DT_UINT64` (code 1280).
    U64,
    /// `DT_FLOAT32` (code 16).
    F32,
    /// `DT_FLOAT64` (code 64).
    F64,
}

impl NiftiDtype {
    /// Every supported datatype.
    pub const ALL: [NiftiDtype; 10] = [
        NiftiDtype::U8,
        NiftiDtype::I8,
        NiftiDtype::I16,
        NiftiDtype::U16,
        NiftiDtype::I32,
        NiftiDtype::U32,
        NiftiDtype::I64,
        NiftiDtype::U64,
        NiftiDtype::F32,
        NiftiDtype::F64,
    ];

    /// The NIfTI `datatype` code.
    ///
    /// ```
    /// assert_eq!(negvol_volume::NiftiDtype::I16.code(), 4);
    /// ```
    pub fn code(self) -> i16 {
        match self {
            NiftiDtype::U8 => 2,
            NiftiDtype::I8 => 256,
            NiftiDtype::I16 => 4,
            NiftiDtype::U16 => 512,
            NiftiDtype::I32 => 8,
            NiftiDtype::U32 => 768,
            NiftiDtype::I64 => 1024,
            NiftiDtype::U64 => 1280,
            NiftiDtype::F32 => 16,
            NiftiDtype::F64 => 64,
        }
    }

    /// The datatype with a NIfTI `datatype` code, if negvol supports it.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|d| i32::from(d.code()) == code)
    }

    /// Bytes per voxel.
    pub fn size(self) -> usize {
        match self {
            NiftiDtype::U8 | NiftiDtype::I8 => 1,
            NiftiDtype::I16 | NiftiDtype::U16 => 2,
            NiftiDtype::I32 | NiftiDtype::U32 | NiftiDtype::F32 => 4,
            NiftiDtype::I64 | NiftiDtype::U64 | NiftiDtype::F64 => 8,
        }
    }

    /// Short lowercase name (`"u8"`, `"i16"`, `"f32"`, ...), accepted back by `FromStr`.
    pub fn name(self) -> &'static str {
        match self {
            NiftiDtype::U8 => "u8",
            NiftiDtype::I8 => "i8",
            NiftiDtype::I16 => "i16",
            NiftiDtype::U16 => "u16",
            NiftiDtype::I32 => "i32",
            NiftiDtype::U32 => "u32",
            NiftiDtype::I64 => "i64",
            NiftiDtype::U64 => "u64",
            NiftiDtype::F32 => "f32",
            NiftiDtype::F64 => "f64",
        }
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, NiftiDtype::F32 | NiftiDtype::F64)
    }

    /// Smallest and largest representable value (as f64; exact for every type up to 32 bits).
    pub fn range(self) -> (f64, f64) {
        match self {
            NiftiDtype::U8 => (0.0, 255.0),
            NiftiDtype::I8 => (-128.0, 127.0),
            NiftiDtype::I16 => (-32768.0, 32767.0),
            NiftiDtype::U16 => (0.0, 65535.0),
            NiftiDtype::I32 => (i32::MIN as f64, i32::MAX as f64),
            NiftiDtype::U32 => (0.0, u32::MAX as f64),
            NiftiDtype::I64 => (i64::MIN as f64, i64::MAX as f64),
            NiftiDtype::U64 => (0.0, u64::MAX as f64),
            NiftiDtype::F32 => (f32::MIN as f64, f32::MAX as f64),
            NiftiDtype::F64 => (f64::MIN, f64::MAX),
        }
    }
}

impl fmt::Display for NiftiDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NiftiDtype {
    type Err = VolumeError;

    /// Accepts Rust names (`u8`, `i16`, `f32`, ...) and numpy/NIfTI names (`uint8`, `int16`,
    /// `float32`, `float64`, `double`, `float`), case-insensitively.
    ///
    /// ```
    /// use negvol_volume::NiftiDtype;
    /// assert_eq!("float32".parse::<NiftiDtype>().unwrap(), NiftiDtype::F32);
    /// assert!("complex64".parse::<NiftiDtype>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "u8" | "uint8" | "uchar" => NiftiDtype::U8,
            "i8" | "int8" => NiftiDtype::I8,
            "i16" | "int16" | "short" => NiftiDtype::I16,
            "u16" | "uint16" => NiftiDtype::U16,
            "i32" | "int32" | "int" => NiftiDtype::I32,
            "u32" | "uint32" => NiftiDtype::U32,
            "i64" | "int64" => NiftiDtype::I64,
            "u64" | "uint64" => NiftiDtype::U64,
            "f32" | "float32" | "float" => NiftiDtype::F32,
            "f64" | "float64" | "double" => NiftiDtype::F64,
            other => {
                return Err(VolumeError::InvalidArgument(format!(
                    "unknown datatype {other:?} (expected one of u8 i8 i16 u16 i32 u32 i64 u64 f32 f64)"
                )))
            }
        })
    }
}

/// Convert a (scaled) value to the stored integer/float type `d`: integers are rounded to
/// nearest (ties away from zero); `None` if NaN for an integer type or out of range.
pub(crate) fn fits(d: NiftiDtype, v: f64) -> Option<f64> {
    if d.is_float() {
        if v.is_finite() && d == NiftiDtype::F32 && v.abs() > f32::MAX as f64 {
            return None;
        }
        return Some(v);
    }
    if !v.is_finite() {
        return None;
    }
    // Integral values (the common case) skip `round`, a libm call on baseline x86-64.
    let t = v as i64 as f64;
    let r = if t == v { v } else { v.round() };
    let (lo, hi) = d.range();
    // For 64-bit types hi is 2^63 or 2^64 exactly, which is itself out of range.
    let hi_ok = if matches!(d, NiftiDtype::I64 | NiftiDtype::U64) {
        r < hi
    } else {
        r <= hi
    };
    (r >= lo && hi_ok).then_some(r)
}

mod private {
    pub trait Sealed {}
}

/// A voxel type that volumes can be read into and written from.
///
/// Implemented for `u8`, `i8`, `i16`, `u16`, `i32`, `u32`, `f32`, `f64` and `bool` (stored as
/// `u8` 0/1; read as "nonzero"). Conversions go through `f64`, which is exact for all of them.
/// Sealed: the list may grow, but only inside this crate.
pub trait NiftiScalar:
    Copy + Send + Sync + PartialEq + Default + fmt::Debug + 'static + private::Sealed
{
    /// The datatype written by [`crate::write_nifti`] for this type.
    const DTYPE: NiftiDtype;
    /// Name used in error messages.
    const NAME: &'static str;
    /// The value as f64 (`bool`: 0 or 1).
    fn to_f64(self) -> f64;
    /// The value nearest to `v` if it is representable: integers round to nearest (ties
    /// away from zero) and refuse NaN and out-of-range values; floats keep NaN/inf and refuse
    /// finite values beyond their range; `bool` is `v != 0` and refuses NaN.
    fn from_f64_checked(v: f64) -> Option<Self>;
    /// The value for an interpolated sample `v` (always within the range of the samples it
    /// came from): integers round to nearest and saturate, `bool` is `v >= 0.5`.
    fn from_interpolated(v: f64) -> Self;
}

macro_rules! int_scalar {
    ($t:ty, $d:expr) => {
        impl private::Sealed for $t {}
        impl NiftiScalar for $t {
            const DTYPE: NiftiDtype = $d;
            const NAME: &'static str = stringify!($t);
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn from_f64_checked(v: f64) -> Option<Self> {
                fits($d, v).map(|r| r as $t)
            }
            #[inline]
            fn from_interpolated(v: f64) -> Self {
                // `as` saturates and maps NaN to 0.
                v.round() as $t
            }
        }
    };
}

int_scalar!(u8, NiftiDtype::U8);
int_scalar!(i8, NiftiDtype::I8);
int_scalar!(i16, NiftiDtype::I16);
int_scalar!(u16, NiftiDtype::U16);
int_scalar!(i32, NiftiDtype::I32);
int_scalar!(u32, NiftiDtype::U32);

impl private::Sealed for f32 {}
impl NiftiScalar for f32 {
    const DTYPE: NiftiDtype = NiftiDtype::F32;
    const NAME: &'static str = "f32";
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn from_f64_checked(v: f64) -> Option<Self> {
        fits(NiftiDtype::F32, v).map(|r| r as f32)
    }
    #[inline]
    fn from_interpolated(v: f64) -> Self {
        v as f32
    }
}

impl private::Sealed for f64 {}
impl NiftiScalar for f64 {
    const DTYPE: NiftiDtype = NiftiDtype::F64;
    const NAME: &'static str = "f64";
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline]
    fn from_f64_checked(v: f64) -> Option<Self> {
        Some(v)
    }
    #[inline]
    fn from_interpolated(v: f64) -> Self {
        v
    }
}

impl private::Sealed for bool {}
impl NiftiScalar for bool {
    const DTYPE: NiftiDtype = NiftiDtype::U8;
    const NAME: &'static str = "bool";
    #[inline]
    fn to_f64(self) -> f64 {
        if self {
            1.0
        } else {
            0.0
        }
    }
    #[inline]
    fn from_f64_checked(v: f64) -> Option<Self> {
        (!v.is_nan()).then_some(v != 0.0)
    }
    #[inline]
    fn from_interpolated(v: f64) -> Self {
        v >= 0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for d in NiftiDtype::ALL {
            assert_eq!(NiftiDtype::from_code(d.code() as i32), Some(d));
            assert_eq!(d.name().parse::<NiftiDtype>().unwrap(), d);
        }
        assert_eq!(NiftiDtype::from_code(32), None); // complex64
        assert_eq!(NiftiDtype::from_code(128), None); // rgb24
    }

    #[test]
    fn conversions_round_and_refuse() {
        assert_eq!(u8::from_f64_checked(254.5), Some(255));
        assert_eq!(u8::from_f64_checked(255.5), None);
        assert_eq!(u8::from_f64_checked(-0.4), Some(0));
        assert_eq!(u8::from_f64_checked(-0.6), None);
        assert_eq!(i16::from_f64_checked(f64::NAN), None);
        assert_eq!(i16::from_f64_checked(-32768.0), Some(-32768));
        assert_eq!(i16::from_f64_checked(32768.0), None);
        assert_eq!(u32::from_f64_checked(4294967295.0), Some(u32::MAX));
        assert_eq!(f32::from_f64_checked(1e39), None);
        assert!(f32::from_f64_checked(f64::NAN).unwrap().is_nan());
        assert_eq!(bool::from_f64_checked(0.001), Some(true));
        assert_eq!(bool::from_f64_checked(0.0), Some(false));
        assert_eq!(bool::from_f64_checked(f64::NAN), None);
        assert!(bool::from_interpolated(0.5));
        assert!(!bool::from_interpolated(0.49));
        assert_eq!(u8::from_interpolated(300.0), 255);
        assert_eq!(fits(NiftiDtype::I64, 9.3e18), None);
        assert_eq!(fits(NiftiDtype::U64, -1.0), None);
    }
}
