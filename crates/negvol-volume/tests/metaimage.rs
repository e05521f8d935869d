//! MetaImage: SimpleITK's files read as SimpleITK reads them (values, shape, world affine;
//! the TransformMatrix order pinned by a non-symmetric direction), round trips of every
//! scalar type in both byte orders, raw and zlib, `.mha` and `.mhd`, and a refusal for each
//! malformed header.

mod common;

use common::*;
use negvol_volume::*;

const TYPES: [&str; 10] = [
    "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
];

#[test]
fn simpleitk_files_read_as_simpleitk_reads_them() {
    for t in TYPES {
        check_itk_fixture(&format!("types/{t}.mha"), &format!("types/{t}.json"));
    }
    for (file, json) in [
        ("oblique_i16_zlib.mha", "oblique_i16_zlib.json"),
        ("oblique_i16.mhd", "oblique_i16_zlib.json"), // + .zraw
        ("oblique_f32.mhd", "oblique_f32.json"),      // + .raw
        ("big_endian_f64.mha", "big_endian_f64.json"),
        ("text_i16.mha", "text_i16.json"),
        ("headersize_end_u16.mhd", "headersize_end_u16.json"),
        ("long_i32.mha", "long_i32.json"),
    ] {
        check_itk_fixture(file, json);
    }
}

#[test]
fn transform_matrix_lists_axis_directions_not_rows() {
    // SimpleITK wrote this file from a direction matrix that is not symmetric. Its
    // TransformMatrix holds D's columns one after the other (the transpose of the row-major
    // GetDirection() tuple in the JSON); reading it as rows would give another grid.
    let p = itk("oblique_i16_zlib.mha");
    let h = read_metaimage_header(&p).unwrap();
    let want = itk_json("oblique_i16_zlib.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(itk("oblique_i16_zlib.json")).unwrap())
            .unwrap();
    let rows: Vec<f64> = v["direction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let d = h.direction();
    let mut asymmetric = false;
    for r in 0..3 {
        for c in 0..3 {
            approx::assert_abs_diff_eq!(d[r][c], rows[3 * r + c], epsilon = 1e-15);
            approx::assert_abs_diff_eq!(
                h.transform_matrix[3 * c + r],
                rows[3 * r + c],
                epsilon = 1e-15
            );
            asymmetric |= (rows[3 * r + c] - rows[3 * c + r]).abs() > 0.1;
        }
    }
    assert!(asymmetric, "the fixture must pin the order");
    assert_affine(
        &read_metaimage_geometry(&p).unwrap().affine(),
        &want.affine,
        "mha",
    );
    // negvol writes it back in ITK's order, and AnatomicalOrientation as ITK does.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.mha");
    write_metaimage(&out, &read_metaimage::<i16>(&p).unwrap()).unwrap();
    let back = read_metaimage_header(&out).unwrap();
    for (a, b) in back.transform_matrix.iter().zip(h.transform_matrix) {
        approx::assert_abs_diff_eq!(*a, b, epsilon = 1e-12);
    }
    assert_eq!(back.anatomical_orientation, h.anatomical_orientation);
    assert_eq!(h.anatomical_orientation.as_deref(), Some("AIR"));
}

#[test]
fn header_fields_are_what_the_file_says() {
    let h = read_metaimage_header(itk("oblique_i16.mhd")).unwrap();
    assert_eq!(h.dims, [3, 4, 5]);
    assert_eq!(
        (h.dtype, h.element_type.as_str()),
        (NiftiDtype::I16, "MET_SHORT")
    );
    assert!(h.compressed && h.binary);
    assert_eq!(h.compressed_size, Some(104));
    assert_eq!(h.data_file, MetaDataFile::File("oblique_i16.zraw".into()));
    assert_eq!(h.offset, [12.5, -30.25, 4.0]);
    assert_eq!(h.get("centerofrotation"), Some("0 0 0"));
    let h = read_metaimage_header(itk("big_endian_f64.mha")).unwrap();
    assert_eq!(h.endianness, Endianness::Big);
    let h = read_metaimage_header(itk("long_i32.mha")).unwrap();
    assert_eq!(h.dtype, NiftiDtype::I32); // MET_LONG is 4 bytes in MetaIO
    let v = read_metaimage::<f64>(itk("types/int64.mha")).unwrap();
    assert_eq!(v.data()[[1, 2, 3]], 63.0e15);
}

fn round_trip<T: NiftiScalar>(f: impl Fn(usize) -> T, dtype: NiftiDtype) {
    let dir = tempfile::tempdir().unwrap();
    let shape = [4, 3, 5];
    let v = ramp(shape, &f);
    for endian in [Endianness::Little, Endianness::Big] {
        for compress in [false, true] {
            for name in ["x.mha", "x.mhd"] {
                let p = dir.path().join(name);
                let o = MetaImageWriteOptions {
                    dtype: Some(dtype),
                    compress,
                    endianness: endian,
                    ..Default::default()
                };
                write_metaimage_with(&p, &v, &o).unwrap();
                let h = read_metaimage_header(&p).unwrap();
                assert_eq!(
                    (h.dtype, h.endianness, h.compressed),
                    (dtype, endian, compress)
                );
                let back = read_metaimage::<T>(&p).unwrap();
                assert_eq!(
                    back.data(),
                    v.data(),
                    "{dtype:?} {endian:?} {compress} {name}"
                );
                // Direction and spacing are split and multiplied back: a rounding apart.
                back.geometry().check_same(v.geometry(), 1e-12).unwrap();
            }
        }
    }
    let n = names(dir.path());
    assert_eq!(n, vec!["x.mha", "x.mhd", "x.raw", "x.zraw"]);
}

#[test]
fn every_scalar_type_round_trips() {
    round_trip(|p| (p as i64 % 256 - 128) as i8, NiftiDtype::I8);
    round_trip(|p| (p * 7 % 256) as u8, NiftiDtype::U8);
    round_trip(|p| (p as i64 * 997 - 30000) as i16, NiftiDtype::I16);
    round_trip(|p| (p * 1000) as u16, NiftiDtype::U16);
    round_trip(|p| p as i32 * -30_000_000 + 800_000_000, NiftiDtype::I32);
    round_trip(|p| p as u32 * 70_000_000, NiftiDtype::U32);
    round_trip(|p| p as f64 * 1.0e15 - 3.0e16, NiftiDtype::I64);
    round_trip(|p| p as f64 * 3.0e17, NiftiDtype::U64);
    round_trip(|p| p as f32 * 0.37 - 11.0, NiftiDtype::F32);
    round_trip(|p| p as f64 * 1.0e-7 + 1.0 / 3.0, NiftiDtype::F64);
    round_trip(|p| p % 3 == 0, NiftiDtype::U8);
}

#[test]
fn written_header_is_what_itk_writes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.mha");
    let v = ramp([3, 4, 5], |p| p as u16 * 3);
    write_metaimage(&p, &v).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let h = read_metaimage_header(&p).unwrap();
    let keys: Vec<&str> = h.fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "ObjectType",
            "NDims",
            "BinaryData",
            "BinaryDataByteOrderMSB",
            "CompressedData",
            "CompressedDataSize",
            "TransformMatrix",
            "Offset",
            "CenterOfRotation",
            "AnatomicalOrientation",
            "ElementSpacing",
            "DimSize",
            "ElementType",
            "ElementDataFile"
        ]
    );
    assert_eq!(h.compressed_size, Some(bytes.len() as u64 - h.header_bytes));
    assert_eq!(h.get("ElementType"), Some("MET_USHORT"));
    let sp = v.geometry().spacing();
    for (a, b) in h.spacing.iter().zip(sp) {
        assert_eq!(*a, b);
    }
    // A failing write keeps the old file.
    let o = MetaImageWriteOptions {
        dtype: Some(NiftiDtype::I8),
        ..Default::default()
    };
    assert!(write_metaimage_with(&p, &v, &o).is_err());
    assert_eq!(std::fs::read(&p).unwrap(), bytes);
    assert_eq!(names(dir.path()), vec!["a.mha"]);
}

// ------------------------------------------------------------------------------------------
// Refusals.

const OK: [&str; 7] = [
    "ObjectType = Image",
    "NDims = 3",
    "DimSize = 2 2 2",
    "ElementSpacing = 1 1 1",
    "TransformMatrix = 1 0 0 0 1 0 0 0 1",
    "ElementType = MET_SHORT",
    "ElementDataFile = LOCAL",
];

fn header_with(lines: &[&str]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

fn replaced(key: &str, line: &str) -> Vec<u8> {
    let lines: Vec<&str> = OK
        .iter()
        .map(|l| if l.starts_with(key) { line } else { l })
        .collect();
    header_with(&lines)
}

fn with_extra(extra: &[&str]) -> Vec<u8> {
    let mut lines: Vec<&str> = OK[..6].to_vec();
    lines.extend_from_slice(extra);
    lines.push(OK[6]);
    header_with(&lines)
}

fn expect_err(bytes: &[u8], needle: &str) -> VolumeError {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.mha");
    std::fs::write(&p, bytes).unwrap();
    let e = read_metaimage::<f32>(&p).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("bad.mha"),
        "error does not name the file: {msg}"
    );
    assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    e
}

#[test]
fn valid_reference_header_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = header_with(&OK);
    b.extend_from_slice(&[0u8; 16]);
    let p = dir.path().join("ok.mha");
    std::fs::write(&p, b).unwrap();
    assert_eq!(
        read_metaimage::<f32>(&p).unwrap().geometry().shape(),
        [2, 2, 2]
    );
}

#[test]
fn malformed_headers_are_refused_naming_the_key() {
    for (key, line, needle) in [
        ("NDims", "NDims = 4", "NDims = 4"),
        ("NDims", "NDims = 2", "NDims = 2"),
        ("NDims", "NDims = x", "NDims"),
        ("DimSize", "DimSize = 2 2", "DimSize"),
        ("DimSize", "DimSize = 2 0 2", "DimSize"),
        ("DimSize", "DimSize = 2 -1 2", "DimSize"),
        ("DimSize", "DimSize = 2 two 2", "DimSize"),
        (
            "ElementSpacing",
            "ElementSpacing = 1 -1 1",
            "ElementSpacing",
        ),
        (
            "ElementSpacing",
            "ElementSpacing = 1 nan 1",
            "ElementSpacing",
        ),
        (
            "ElementSpacing",
            "ElementSpacing = 1 inf 1",
            "ElementSpacing",
        ),
        (
            "ElementSpacing",
            "ElementSpacing = 1 1e-320 1",
            "ElementSpacing",
        ),
        (
            "TransformMatrix",
            "TransformMatrix = 1 0 0 1 0 0 0 0 1",
            "singular",
        ),
        (
            "TransformMatrix",
            "TransformMatrix = 1 0 0 0 1 0 0 0 nan",
            "TransformMatrix",
        ),
        (
            "TransformMatrix",
            "TransformMatrix = 1 0 0 0 1 0 0 0",
            "TransformMatrix",
        ),
        (
            "ElementType",
            "ElementType = MET_FLOAT_ARRAY",
            "MET_FLOAT_ARRAY",
        ),
        ("ElementType", "ElementType = MET_STRING", "ElementType"),
        ("ObjectType", "ObjectType = Tube", "Tube"),
        ("ElementDataFile", "ElementDataFile = LIST", "LIST"),
        (
            "ElementDataFile",
            "ElementDataFile = s%02d.raw 1 9 1",
            "numbered",
        ),
    ] {
        let e = expect_err(&replaced(key, line), needle);
        assert!(
            matches!(
                e,
                VolumeError::Format { .. } | VolumeError::Unsupported { .. }
            ),
            "{line}: {e:?}"
        );
    }
    for (extra, needle) in [
        ("ElementNumberOfChannels = 3", "ElementNumberOfChannels"),
        ("Offset = 0 0 x", "Offset"),
        ("Offset = 0 0", "Offset"),
        ("HeaderSize = -5", "HeaderSize"),
        ("HeaderSize = 5", "points into"),
        ("CompressedData = perhaps", "CompressedData"),
        ("BinaryDataByteOrderMSB = 2", "BinaryDataByteOrderMSB"),
        ("NDims = 3", "twice"),
    ] {
        expect_err(&with_extra(&[extra]), needle);
    }
    expect_err(&header_with(&OK[..6]), "ElementDataFile");
    expect_err(b"", "empty");
    expect_err(b"NRRD0004\ntype: short\n", "Key = Value");
    expect_err(b"ObjectType = Image\n\xff\xfe\x00\x01\n", "not text");
}

#[test]
fn truncated_and_corrupt_data_are_refused() {
    let mut b = header_with(&OK);
    b.extend_from_slice(&[0u8; 15]);
    expect_err(&b, "truncated");
    // zlib stream cut short, and garbage.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(
        &mut z,
        &(0..16u8).map(|x| x.wrapping_mul(37)).collect::<Vec<_>>(),
    )
    .unwrap();
    let z = z.finish().unwrap();
    let mut b = with_extra(&["CompressedData = True"]);
    b.extend_from_slice(&z[..z.len() / 2]);
    expect_err(&b, "bad.mha");
    let mut b = with_extra(&["CompressedData = True"]);
    b.extend_from_slice(b"\x78\x9cnot a zlib stream, just text");
    expect_err(&b, "corrupt");
    // CompressedDataSize smaller than the stream.
    let size = format!("CompressedDataSize = {}", z.len() / 2);
    let mut b = with_extra(&["CompressedData = True", &size]);
    b.extend_from_slice(&z);
    expect_err(&b, "bad.mha");
    // Text data with too few numbers.
    let mut b = with_extra(&["BinaryData = False"]);
    b.extend_from_slice(b"1 2 3");
    expect_err(&b, "truncated");
    // HeaderSize -1 with a file smaller than the data.
    let mut b = with_extra(&["HeaderSize = -1"]);
    b.extend_from_slice(&[0u8; 4]);
    expect_err(&b, "HeaderSize = -1");
    // A missing data file is an I/O error naming it.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.mhd");
    std::fs::write(
        &p,
        replaced("ElementDataFile", "ElementDataFile = gone.raw"),
    )
    .unwrap();
    let e = read_metaimage::<f32>(&p).unwrap_err();
    assert!(
        matches!(e, VolumeError::Io { .. }) && e.to_string().contains("gone.raw"),
        "{e}"
    );
}

#[test]
fn absurd_sizes_are_refused_before_allocating() {
    let e = expect_err(
        &replaced("DimSize", "DimSize = 100000 100000 100000"),
        "voxels",
    );
    assert!(matches!(e, VolumeError::TooLarge { .. }), "{e}");
    let e = expect_err(
        &replaced("DimSize", "DimSize = 18446744073709551615 3 1"),
        "overflows",
    );
    assert!(matches!(e, VolumeError::Format { .. }), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let mut b = replaced("DimSize", "DimSize = 10 10 10");
    b.extend_from_slice(&[0u8; 2000]);
    let p = dir.path().join("s.mha");
    std::fs::write(&p, b).unwrap();
    let o = ReadOptions {
        max_voxels: 999,
        frame: None,
    };
    assert!(matches!(
        read_metaimage_with::<f32>(&p, &o),
        Err(VolumeError::TooLarge { voxels: 1000, .. })
    ));
    let o = ReadOptions {
        max_voxels: 999,
        frame: Some(1),
    };
    assert!(read_metaimage_with::<f32>(&p, &o).is_err());
}

#[test]
fn random_bytes_and_mutated_headers_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut valid = header_with(&OK);
    valid.extend_from_slice(&[7u8; 16]);
    let mut rng = Xorshift(0x2545_f491_4f6c_dd1d);
    let p = dir.path().join("fuzz.mha");
    for n in 0..600 {
        let mut b = valid.clone();
        match n % 3 {
            0 => {
                let k = (rng.next() % b.len() as u64) as usize;
                b.truncate(k);
            }
            1 => {
                for _ in 0..1 + rng.next() % 4 {
                    let k = (rng.next() % b.len() as u64) as usize;
                    b[k] = (rng.next() % 256) as u8;
                }
            }
            _ => {
                let k = (rng.next() % (valid.len() as u64 - 16)) as usize;
                if b[k].is_ascii_digit() {
                    b[k] = b"0123456789-"[(rng.next() % 11) as usize];
                }
            }
        }
        std::fs::write(&p, &b).unwrap();
        let _ = read_metaimage::<f32>(&p);
        let _ = read_metaimage_header(&p);
    }
}
