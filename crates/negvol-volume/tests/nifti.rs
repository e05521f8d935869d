//! NIfTI reading against nibabel-written fixtures, round trips checked by the independent
//! `nifti` crate, and every bad-input case.

use std::path::{Path, PathBuf};

use approx::assert_abs_diff_eq;
use ndarray::Array3;
use negvol_volume::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct Expected {
    shape: Vec<usize>,
    affine: [[f64; 4]; 4],
    axcodes: String,
    values: Vec<Option<f64>>,
}

fn expected(json: &str) -> Expected {
    let s = std::fs::read_to_string(fixture(json)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    let mut affine = [[0.0; 4]; 4];
    for r in 0..4 {
        for c in 0..4 {
            affine[r][c] = v["affine"][r][c].as_f64().unwrap();
        }
    }
    Expected {
        shape: v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect(),
        affine,
        axcodes: v["axcodes"].as_str().unwrap().to_string(),
        values: v["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64())
            .collect(),
    }
}

fn assert_affine(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4], eps: f64) {
    for r in 0..4 {
        for c in 0..4 {
            assert!(
                (a[r][c] - b[r][c]).abs() <= eps,
                "affine[{r}][{c}]: {} vs {}\n{a:?}\n{b:?}",
                a[r][c],
                b[r][c]
            );
        }
    }
}

fn check_3d_fixture(stem: &str, ext: &str) {
    let e = expected(&format!("{stem}.json"));
    let v = read_nifti::<f64>(fixture(&format!("{stem}.{ext}"))).unwrap();
    let g = v.geometry();
    assert_eq!(g.shape().to_vec(), e.shape, "{stem}");
    assert_affine(&g.affine(), &e.affine, 1e-6);
    assert_eq!(g.orientation_code(), e.axcodes, "{stem}");
    // C order over (i, j, k) in both.
    for (got, want) in v.data().iter().zip(&e.values) {
        match want {
            // nibabel's float path may differ from exact in the last f64 bit.
            Some(w) => assert!((got - w).abs() <= 1e-12 * w.abs(), "{stem}: {got} vs {w}"),
            None => assert!(got.is_nan(), "{stem}: expected NaN, got {got}"),
        }
    }
    assert_eq!(v.data().len(), e.values.len());
}

#[test]
fn nibabel_fixtures_read_identically() {
    check_3d_fixture("oblique_lps_i16_scaled", "nii.gz");
    check_3d_fixture("big_endian_f32_lps", "nii");
    check_3d_fixture("qform_only_u16", "nii");
    check_3d_fixture("sform_wins_u8", "nii");
    check_3d_fixture("no_xform_i32", "nii");
    check_3d_fixture("nifti2_i32", "nii");
    for d in ["int8", "uint32", "int64", "float32", "float64"] {
        check_3d_fixture(&format!("dtype_{d}"), "nii");
    }
}

#[test]
fn header_reports_what_the_file_says() {
    let h = read_nifti_header(fixture("oblique_lps_i16_scaled.nii.gz")).unwrap();
    assert!(h.compressed);
    assert_eq!(h.version, 1);
    assert_eq!(h.dtype(), Some(NiftiDtype::I16));
    assert_eq!(h.scaling(), (0.5, -1024.0));
    assert_eq!(h.affine_source(), AffineSource::Sform);
    let h = read_nifti_header(fixture("big_endian_f32_lps.nii")).unwrap();
    assert_eq!(h.endianness, Endianness::Big);
    assert_eq!(h.scaling(), (1.0, 0.0));
    let h = read_nifti_header(fixture("qform_only_u16.nii")).unwrap();
    assert_eq!(h.affine_source(), AffineSource::Qform);
    assert_eq!(h.pixdim[0], -1.0);
    let h = read_nifti_header(fixture("nifti2_i32.nii")).unwrap();
    assert_eq!(h.version, 2);
    let h = read_nifti_header(fixture("no_xform_i32.nii")).unwrap();
    assert_eq!(h.affine_source(), AffineSource::Spacing);
}

#[test]
fn scaled_integers_convert_to_any_type() {
    // raw - 300 in i16, scaled by 0.5, -1024: every value is x.0 or x.5.
    let e = expected("oblique_lps_i16_scaled.json");
    let f = read_nifti::<f32>(fixture("oblique_lps_i16_scaled.nii.gz")).unwrap();
    for (got, want) in f.data().iter().zip(&e.values) {
        assert_eq!(*got as f64, want.unwrap());
    }
    // i16 target: rounds to nearest, ties away from zero.
    let i = read_nifti::<i16>(fixture("oblique_lps_i16_scaled.nii.gz")).unwrap();
    for (got, want) in i.data().iter().zip(&e.values) {
        assert_eq!(*got as f64, want.unwrap().round());
    }
    // u8 target: -1174 does not fit.
    let err = read_nifti::<u8>(fixture("oblique_lps_i16_scaled.nii.gz")).unwrap_err();
    assert!(
        matches!(
            err,
            VolumeError::ValueOutOfRange {
                index: [0, 0, 0],
                dtype: "u8",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("oblique_lps_i16_scaled.nii.gz"));
    // NaN into an integer type is refused, naming the voxel.
    let err = read_nifti::<i32>(fixture("big_endian_f32_lps.nii")).unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
    // int8 negatives do not fit u8; they do fit i16.
    assert!(read_nifti::<u8>(fixture("dtype_int8.nii")).is_err());
    assert!(read_nifti::<i16>(fixture("dtype_int8.nii")).is_ok());
    // Masks: nonzero is true.
    let m = read_mask(fixture("sform_wins_u8.nii")).unwrap();
    assert!(!m.data()[[0, 0, 0]]);
    assert!(m.data()[[0, 0, 1]]);
    assert_eq!(m.data().iter().filter(|&&b| b).count(), 23);
}

#[test]
fn four_d_files_need_a_frame() {
    let p = fixture("four_d_f64.nii.gz");
    let err = read_nifti::<f64>(&p).unwrap_err();
    assert!(
        matches!(err, VolumeError::NotThreeD { frames: 2, .. }),
        "{err}"
    );
    let e = expected("four_d_f64.json");
    assert_eq!(e.shape, vec![2, 3, 4, 2]);
    for t in 0..2u64 {
        let v = read_nifti_frame::<f64>(&p, t).unwrap();
        assert_eq!(v.geometry().shape(), [2, 3, 4]);
        for ((i, j, k), got) in v.data().indexed_iter() {
            let idx = ((i * 3 + j) * 4 + k) * 2 + t as usize;
            assert_eq!(Some(*got), e.values[idx]);
        }
    }
    let err = read_nifti_frame::<f64>(&p, 2).unwrap_err();
    assert!(matches!(err, VolumeError::InvalidArgument(_)), "{err}");
}

fn oblique_geometry(shape: [usize; 3]) -> Geometry {
    let (c, s) = (0.4f64.cos(), 0.4f64.sin());
    let a = [
        [-0.5 * c, 0.6 * s, 0.0, 40.0],
        [-0.5 * s, -0.6 * c, 0.0, 55.5],
        [0.0, 0.0, 1.25, -17.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    Geometry::new(shape, a).unwrap()
}

fn ramp<T: NiftiScalar>(shape: [usize; 3], f: impl Fn(usize) -> T) -> Volume<T> {
    let g = oblique_geometry(shape);
    let a = Array3::from_shape_fn((shape[0], shape[1], shape[2]), |(i, j, k)| {
        f(i * 10000 + j * 100 + k)
    });
    Volume::new(a, g).unwrap()
}

fn round_trip<T: NiftiScalar>(f: impl Fn(usize) -> T, dtype: NiftiDtype) {
    let dir = tempfile::tempdir().unwrap();
    let v = ramp([4, 5, 6], f);
    for name in ["a.nii", "a.nii.gz", "A.NII.GZ"] {
        let p = dir.path().join(name);
        write_nifti(&p, &v).unwrap();
        let w = read_nifti::<T>(&p).unwrap();
        assert_eq!(w.data(), v.data(), "{name}");
        assert_affine(&w.geometry().affine(), &v.geometry().affine(), 1e-5);
        let h = read_nifti_header(&p).unwrap();
        assert_eq!(h.dtype(), Some(dtype));
        assert_eq!(h.compressed, name.to_lowercase().ends_with(".gz"));
        assert_eq!((h.qform_code, h.sform_code), (1, 1));
        assert_eq!(h.xyzt_units & 7, 2);
        // qform alone gives the same affine (the geometry is rigid).
        assert_affine(&h.qform_affine().unwrap(), &v.geometry().affine(), 1e-5);
        // And the independent `nifti` crate reads the same voxels and sform (it detects gzip
        // by a lowercase ".gz" only).
        if name == "A.NII.GZ" {
            continue;
        }
        let obj = nifti::ReaderOptions::new().read_file(&p).unwrap();
        use nifti::{IntoNdArray, NiftiObject};
        let nh = obj.header().clone();
        assert_eq!(&nh.dim[..4], &[3, 4, 5, 6]);
        assert_eq!(nh.datatype, dtype.code());
        for c in 0..4 {
            assert_abs_diff_eq!(
                nh.srow_y[c] as f64,
                v.geometry().affine()[1][c],
                epsilon = 1e-5
            );
        }
        let arr = obj.into_volume().into_ndarray::<f64>().unwrap();
        assert_eq!(arr.shape(), &[4, 5, 6]);
        for ((i, j, k), x) in v.data().indexed_iter() {
            assert_eq!(arr[[i, j, k]], x.to_f64());
        }
    }
}

#[test]
fn every_scalar_type_round_trips() {
    round_trip(|n| (n % 251) as u8, NiftiDtype::U8);
    round_trip(|n| ((n % 251) as i16 - 120) as i8, NiftiDtype::I8);
    round_trip(|n| n as i16 - 30000, NiftiDtype::I16);
    round_trip(|n| (n as u16).wrapping_mul(7), NiftiDtype::U16);
    round_trip(|n| n as i32 * -50_000, NiftiDtype::I32);
    round_trip(|n| n as u32 * 100_000, NiftiDtype::U32);
    round_trip(|n| n as f32 * 0.37 - 5.0, NiftiDtype::F32);
    round_trip(|n| n as f64 * 1e-7 + 1e10, NiftiDtype::F64);
    round_trip(|n| n % 3 == 0, NiftiDtype::U8);
}

#[test]
fn write_as_other_dtype_and_with_scaling() {
    let dir = tempfile::tempdir().unwrap();
    let v = ramp([3, 3, 3], |n| n as f32 * 0.01 - 100.25);
    let p = dir.path().join("i16.nii");
    write_nifti_as(&p, &v, NiftiDtype::I16).unwrap();
    let w = read_nifti::<f32>(&p).unwrap();
    for (a, b) in v.data().iter().zip(w.data()) {
        assert_eq!(a.round(), *b);
    }
    // Out of range: refused, names the file, and leaves no file behind.
    let big = ramp([3, 3, 3], |n| n as f32 * 100.0);
    let p2 = dir.path().join("u8.nii");
    let err = write_nifti_as(&p2, &big, NiftiDtype::U8).unwrap_err();
    assert!(matches!(err, VolumeError::ValueOutOfRange { .. }), "{err}");
    assert!(err.to_string().contains("u8.nii"));
    assert!(!p2.exists());
    // Stored with slope/intercept.
    let p3 = dir.path().join("scaled.nii.gz");
    let opts = NiftiWriteOptions {
        dtype: Some(NiftiDtype::I16),
        scl_slope: 0.25,
        scl_inter: -100.0,
        description: "negvol test".into(),
        ..Default::default()
    };
    let v = ramp([3, 3, 3], |n| n as f64 * 0.25 - 100.0);
    write_nifti_with(&p3, &v, &opts).unwrap();
    let h = read_nifti_header(&p3).unwrap();
    assert_eq!(h.scaling(), (0.25, -100.0));
    assert_eq!(h.descrip, "negvol test");
    assert_eq!(read_nifti::<f64>(&p3).unwrap().data(), v.data());
}

#[test]
fn masks_round_trip_as_u8() {
    let dir = tempfile::tempdir().unwrap();
    let m = ramp([5, 4, 3], |n| n % 7 == 0);
    let p = dir.path().join("m.nii.gz");
    write_mask(&p, &m).unwrap();
    assert_eq!(read_nifti_header(&p).unwrap().dtype(), Some(NiftiDtype::U8));
    assert_eq!(read_mask(&p).unwrap().data(), m.data());
    let u = read_nifti::<u8>(&p).unwrap();
    let n_true = m.data().iter().filter(|&&b| b).count() as u32;
    assert!(n_true > 0);
    assert_eq!(u.data().iter().map(|&x| x as u32).sum::<u32>(), n_true);
    assert!(u.data().iter().all(|&x| x <= 1));
}

#[test]
fn writes_are_atomic_and_replace() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.nii");
    let a = ramp([2, 2, 2], |n| n as i16);
    write_nifti(&p, &a).unwrap();
    // A failing write leaves the old file intact and no temporary behind.
    let bad = ramp([2, 2, 2], |_| f32::NAN);
    assert!(write_nifti_as(&p, &bad, NiftiDtype::I16).is_err());
    assert_eq!(read_nifti::<i16>(&p).unwrap().data(), a.data());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // Overwrite works.
    let b = ramp([2, 2, 2], |n| -(n as i16));
    write_nifti(&p, &b).unwrap();
    assert_eq!(read_nifti::<i16>(&p).unwrap().data(), b.data());
    // Missing directory: an I/O error naming the path.
    let err = write_nifti(dir.path().join("no/such/dir/x.nii"), &b).unwrap_err();
    assert!(matches!(err, VolumeError::Io { .. }), "{err}");
    assert!(err.to_string().contains("x.nii"));
}

// ---- bad input ---------------------------------------------------------------------------

/// A valid little-endian NIfTI-1 file's bytes (uncompressed).
fn valid_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.nii");
    write_nifti(&p, &ramp([3, 4, 5], |n| n as i16)).unwrap();
    std::fs::read(p).unwrap()
}

fn read_bytes(bytes: &[u8], name: &str) -> (Result<Volume<f32>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    (read_nifti::<f32>(&p), dir)
}

fn expect_format(bytes: &[u8], needle: &str) {
    let (r, _d) = read_bytes(bytes, "bad.nii");
    let err = r.unwrap_err();
    assert!(
        matches!(err, VolumeError::Format { .. }),
        "expected Format error containing {needle:?}, got {err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("bad.nii"), "{msg}");
    assert!(msg.contains(needle), "{msg}");
}

fn patch(b: &mut [u8], off: usize, bytes: &[u8]) {
    b[off..off + bytes.len()].copy_from_slice(bytes);
}

#[test]
fn valid_bytes_are_valid() {
    let (r, _d) = read_bytes(&valid_bytes(), "ok.nii");
    assert_eq!(r.unwrap().geometry().shape(), [3, 4, 5]);
}

#[test]
fn truncated_files_are_refused() {
    let b = valid_bytes();
    expect_format(&b[..0], "not a NIfTI file");
    expect_format(&b[..200], "truncated header");
    expect_format(&b[..b.len() - 1], "truncated");
    expect_format(&b[..352], "truncated");
    // Truncated gzip stream.
    let mut gz = Vec::new();
    {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
        e.write_all(&b).unwrap();
        e.finish().unwrap();
    }
    let (r, _d) = read_bytes(&gz[..gz.len() / 2], "bad.nii.gz");
    let err = r.unwrap_err();
    assert!(err.to_string().contains("bad.nii.gz"), "{err}");
    // Complete gzip reads fine even under a .nii name (detected by magic bytes).
    let (r, _d) = read_bytes(&gz, "actually_gz.nii");
    assert!(r.is_ok());
    // Corrupt gzip body.
    let mut bad = gz.clone();
    for x in bad.iter_mut().skip(20).take(30) {
        *x ^= 0x5a;
    }
    let (r, _d) = read_bytes(&bad, "bad.nii.gz");
    assert!(r.is_err());
}

#[test]
fn wrong_magic_and_sizes() {
    let mut b = valid_bytes();
    patch(&mut b, 344, b"n+9\0");
    expect_format(&b, "magic");
    let mut b = valid_bytes();
    patch(&mut b, 0, &349i32.to_le_bytes());
    expect_format(&b, "sizeof_hdr");
    expect_format(
        b"this is a text file, not an image at all..........",
        "not a NIfTI",
    );
    let mut b = valid_bytes();
    patch(&mut b, 344, b"ni1\0");
    let (r, _d) = read_bytes(&b, "pair.nii");
    assert!(matches!(r.unwrap_err(), VolumeError::Unsupported { .. }));
}

#[test]
fn bad_dimensions() {
    for (off, val, needle) in [
        (40usize, 0i16, "dim[0] = 0"),
        (40, 8, "dim[0] = 8"),
        (42, 0, "dim[1] = 0"),
        (44, -3, "dim[2] = -3"),
    ] {
        let mut b = valid_bytes();
        patch(&mut b, off, &val.to_le_bytes());
        expect_format(&b, needle);
    }
}

#[test]
fn absurd_sizes_refused_before_allocating() {
    // NIfTI-1 maximum: 32767^3 = 3.5e13 voxels.
    let mut b = valid_bytes();
    for a in 1..=3 {
        patch(&mut b, 40 + 2 * a, &32767i16.to_le_bytes());
    }
    let (r, _d) = read_bytes(&b, "huge.nii");
    let err = r.unwrap_err();
    assert!(matches!(err, VolumeError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("huge.nii"));
    // The limit is configurable: 60 voxels > 59.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("small.nii");
    std::fs::write(&p, valid_bytes()).unwrap();
    let opts = NiftiReadOptions {
        max_voxels: 59,
        ..Default::default()
    };
    assert!(matches!(
        read_nifti_with::<u8>(&p, &opts),
        Err(VolumeError::TooLarge {
            voxels: 60,
            limit: 59,
            ..
        })
    ));
    let opts = NiftiReadOptions {
        max_voxels: 60,
        ..Default::default()
    };
    assert!(read_nifti_with::<i16>(&p, &opts).is_ok());
    // Within the limit but larger than the file: refused from the file size, no allocation.
    let mut b = valid_bytes();
    patch(&mut b, 46, &1000i16.to_le_bytes());
    expect_format(&b, "truncated");
    // NIfTI-2 header claiming 100000^3.
    let mut h2 = std::fs::read(fixture("nifti2_i32.nii")).unwrap();
    for a in 1..=3 {
        patch(&mut h2, 16 + 8 * a, &100_000i64.to_le_bytes());
    }
    let (r, _d) = read_bytes(&h2, "huge2.nii");
    assert!(matches!(
        r.unwrap_err(),
        VolumeError::TooLarge {
            voxels: 1_000_000_000_000_000,
            ..
        }
    ));
}

#[test]
fn non_finite_geometry_is_refused() {
    // NaN in the sform.
    let mut b = valid_bytes();
    patch(&mut b, 280, &f32::NAN.to_le_bytes());
    expect_format(&b, "non-finite");
    // Singular sform.
    let mut b = valid_bytes();
    for c in 0..4 {
        patch(&mut b, 296 + 4 * c, &0f32.to_le_bytes());
    }
    expect_format(&b, "singular");
    // qform only, with infinite spacing.
    let mut b = valid_bytes();
    patch(&mut b, 254, &0i16.to_le_bytes());
    patch(&mut b, 80, &f32::INFINITY.to_le_bytes());
    expect_format(&b, "pixdim[1]");
    // No transform, zero spacing.
    let mut b = valid_bytes();
    patch(&mut b, 252, &0i16.to_le_bytes());
    patch(&mut b, 254, &0i16.to_le_bytes());
    patch(&mut b, 84, &0f32.to_le_bytes());
    expect_format(&b, "pixdim[2] = 0");
    // NaN quaternion.
    let mut b = valid_bytes();
    patch(&mut b, 254, &0i16.to_le_bytes());
    patch(&mut b, 260, &f32::NAN.to_le_bytes());
    expect_format(&b, "quaternion");
    // NaN vox_offset.
    let mut b = valid_bytes();
    patch(&mut b, 108, &f32::NAN.to_le_bytes());
    expect_format(&b, "vox_offset");
}

#[test]
fn unsupported_datatypes_and_contradictions() {
    let mut b = valid_bytes();
    patch(&mut b, 70, &32i16.to_le_bytes()); // complex64
    patch(&mut b, 72, &64i16.to_le_bytes());
    let (r, _d) = read_bytes(&b, "cplx.nii");
    let err = r.unwrap_err();
    assert!(matches!(err, VolumeError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("complex64"), "{err}");
    let mut b = valid_bytes();
    patch(&mut b, 72, &8i16.to_le_bytes());
    expect_format(&b, "bitpix");
}

#[test]
fn missing_file_is_io_error_naming_it() {
    let err = read_nifti::<u8>("/definitely/not/here.nii").unwrap_err();
    assert!(matches!(err, VolumeError::Io { .. }));
    assert!(err.to_string().contains("/definitely/not/here.nii"));
}

/// Random and truncated inputs never panic (a stand-in for the fuzz target in `fuzz/`,
/// which runs the same reader on arbitrary bytes).
#[test]
fn random_bytes_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let base = valid_bytes();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fuzz.nii");
    for it in 0..1500 {
        let mut b = base.clone();
        match it % 3 {
            0 => {
                // Flip a few header bytes.
                for _ in 0..rng.gen_range(1..6) {
                    let i = rng.gen_range(0..352);
                    b[i] = rng.gen();
                }
            }
            1 => b.truncate(rng.gen_range(0..b.len())),
            _ => {
                let n = rng.gen_range(0..600);
                b = (0..n).map(|_| rng.gen()).collect();
                if n >= 4 && rng.gen_bool(0.5) {
                    b[..4].copy_from_slice(&348i32.to_le_bytes());
                }
            }
        }
        std::fs::write(&p, &b).unwrap();
        let opts = NiftiReadOptions {
            max_voxels: 1 << 20,
            ..Default::default()
        };
        let _ = read_nifti_with::<f32>(&p, &opts);
        let _ = read_nifti_with::<u8>(&p, &opts);
        let _ = read_nifti_header(&p);
    }
}
