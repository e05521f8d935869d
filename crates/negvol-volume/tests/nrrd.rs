//! NRRD: SimpleITK's files read as SimpleITK reads them (values, shape, world affine), round
//! trips of every scalar type in both byte orders, raw and gzip, attached and detached
//! headers, 3D Slicer segmentations (3D and layered 4D), and a refusal for each malformed
//! header.

mod common;

use std::path::Path;

use common::*;
use negvol_volume::*;

const TYPES: [&str; 10] = [
    "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
];

#[test]
fn simpleitk_files_read_as_simpleitk_reads_them() {
    for t in TYPES {
        check_itk_fixture(&format!("types/{t}.nrrd"), &format!("types/{t}.json"));
    }
    for (file, json) in [
        ("oblique_i16_gzip.nrrd", "oblique_i16_gzip.json"),
        ("oblique_i16.nhdr", "oblique_i16_gzip.json"), // detached, .raw.gz
        ("oblique_f32.nhdr", "oblique_f32.json"),      // detached, .raw
        ("big_endian_i16.nrrd", "big_endian_i16.json"),
        ("ascii_u16_ras.nrrd", "ascii_u16_ras.json"),
        ("hex_i16_las.nrrd", "hex_i16_las.json"),
        ("scanner_xyz_u8.nrrd", "scanner_xyz_u8.json"),
        ("spacings_axis_mins_f32.nrrd", "spacings_axis_mins_f32.json"),
        ("skips_las_i32.nhdr", "skips_las_i32.json"),
        ("byteskip_end_f64.nhdr", "byteskip_end_f64.json"),
    ] {
        check_itk_fixture(file, json);
    }
}

#[test]
fn header_fields_are_what_the_file_says() {
    let h = read_nrrd_header(itk("types/uint64.nrrd")).unwrap();
    assert_eq!(h.version, 4);
    assert_eq!(h.dtype, NiftiDtype::U64);
    assert_eq!(h.sizes, vec![2, 3, 4]);
    assert_eq!(h.space, Some(NrrdSpace::LeftPosteriorSuperior));
    assert_eq!(h.encoding, NrrdEncoding::Raw);
    assert_eq!(h.endianness, Some(Endianness::Little));
    assert_eq!(h.frames(), 1);
    assert!(h.comments[0].starts_with("Complete NRRD file format"));
    // Native types read exactly, 64-bit extremes included.
    let v = read_nrrd::<f64>(itk("types/uint64.nrrd")).unwrap();
    assert_eq!(v.data()[[1, 2, 3]], 12_300_000_000_000_000_000.0);
    let v = read_nrrd::<i16>(itk("types/int16.nrrd")).unwrap();
    assert_eq!(v.data()[[0, 0, 0]], -15000);
    assert_eq!(v.data()[[1, 2, 3]], 123 * 250 - 15000);
    // Out of range for the asked type: an error naming the file, not a wrap.
    let e = read_nrrd::<u8>(itk("types/int16.nrrd")).unwrap_err();
    assert!(matches!(e, VolumeError::ValueOutOfRange { .. }), "{e}");
    let h = read_nrrd_header(itk("skips_las_i32.nhdr")).unwrap();
    assert_eq!((h.line_skip, h.byte_skip), (2, 5));
    assert_eq!(h.data_file.as_deref(), Some("skips_las_i32.dat"));
    assert_eq!(h.space, Some(NrrdSpace::LeftAnteriorSuperior));
}

#[test]
fn slicer_label_map_segmentation() {
    let p = itk("labelmap_3d.seg.nrrd");
    let want = itk_json("labelmap_3d.json");
    let h = read_nrrd_header(&p).unwrap();
    let s = h.segments().unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(
        (
            s[0].id.as_str(),
            s[0].name.as_str(),
            s[0].label_value,
            s[0].layer
        ),
        ("Segment_1", "condyle", 1, 0)
    );
    assert_eq!(s[0].color, Some([0.9, 0.6, 0.2]));
    assert_eq!((s[1].name.as_str(), s[1].label_value), ("temporal bone", 2));
    assert_eq!(
        h.key_values["Segmentation_MasterRepresentation"],
        "Binary labelmap"
    );
    for (name, value) in [("condyle", 1.0), ("temporal bone", 2.0), ("Segment_2", 2.0)] {
        let m = read_slicer_segment(&p, name).unwrap();
        let expect: Vec<bool> = want.values[0].iter().map(|v| *v == value).collect();
        let got: Vec<bool> = m.data().t().iter().copied().collect();
        assert_eq!(got, expect, "{name}");
        assert_affine(&m.geometry().affine(), &want.affine, name);
    }
    let e = read_slicer_segment(&p, "fossa").unwrap_err().to_string();
    assert!(
        e.contains("condyle, temporal bone") && e.contains("fossa"),
        "{e}"
    );
    // A 3D label map is also a plain volume, and a mask is its nonzero voxels.
    let m = read_mask(&p).unwrap();
    assert_eq!(
        m.data().t().iter().copied().collect::<Vec<_>>(),
        want.values[0].iter().map(|v| *v != 0.0).collect::<Vec<_>>()
    );
    // Not a segmentation.
    let e = read_slicer_segment(itk("types/uint8.nrrd"), "x").unwrap_err();
    assert!(e.to_string().contains("not a Slicer segmentation"), "{e}");
}

#[test]
fn slicer_layered_segmentation_reads_per_layer() {
    let p = itk("layers_4d.seg.nrrd");
    let want = itk_json("layers_4d.json");
    assert_eq!(want.components, 2);
    let h = read_nrrd_header(&p).unwrap();
    assert_eq!(
        (h.frame_axis, h.frames(), h.shape3()),
        (Some(0), 2, [4, 3, 2])
    );
    // 4D needs a frame.
    let e = read_nrrd::<u8>(&p).unwrap_err();
    assert!(matches!(e, VolumeError::NotThreeD { frames: 2, .. }), "{e}");
    assert!(matches!(
        read_volume::<u8>(&p),
        Err(VolumeError::NotThreeD { .. })
    ));
    for layer in 0..2 {
        let opts = ReadOptions {
            frame: Some(layer as u64),
            ..ReadOptions::default()
        };
        let v = read_volume_with::<u8>(&p, &opts).unwrap();
        assert_eq!(index_order(&v), want.values[layer], "layer {layer}");
        assert_affine(&v.geometry().affine(), &want.affine, "layer");
    }
    let opts = ReadOptions {
        frame: Some(2),
        ..ReadOptions::default()
    };
    assert!(read_nrrd_with::<u8>(&p, &opts).is_err());
    let s = h.segments().unwrap();
    let names: Vec<(&str, u64, u32)> = s
        .iter()
        .map(|s| (s.name.as_str(), s.layer, s.label_value))
        .collect();
    assert_eq!(
        names,
        vec![("condyle", 0, 1), ("temporal bone", 1, 1), ("fossa", 0, 2)]
    );
    for seg in &s {
        let m = read_slicer_segment(&p, &seg.name).unwrap();
        let expect: Vec<bool> = want.values[seg.layer as usize]
            .iter()
            .map(|v| *v == f64::from(seg.label_value))
            .collect();
        assert_eq!(m.data().t().iter().copied().collect::<Vec<_>>(), expect);
    }
    // Overlap: the temporal bone shares voxels with both layer-0 segments.
    let tb = read_slicer_segment(&p, "temporal bone").unwrap();
    let c = read_slicer_segment(&p, "condyle").unwrap();
    assert!(tb.data().iter().zip(c.data()).any(|(a, b)| *a && *b));
}

#[test]
fn slicer_legacy_segmentation_one_layer_per_segment() {
    let p = itk("legacy_layers.seg.nrrd");
    let want = itk_json("legacy_layers.json");
    let h = read_nrrd_header(&p).unwrap();
    assert_eq!(h.kinds.as_ref().unwrap()[0], "list");
    let s = h.segments().unwrap();
    assert_eq!((s[0].layer, s[0].label_value), (0, 1));
    assert_eq!((s[1].layer, s[1].label_value), (1, 1));
    for (seg, layer) in [("condyle", 0), ("temporal bone", 1)] {
        let m = read_slicer_segment(&p, seg).unwrap();
        let expect: Vec<bool> = want.values[layer].iter().map(|v| *v == 1.0).collect();
        assert_eq!(m.data().t().iter().copied().collect::<Vec<_>>(), expect);
        assert_affine(&m.geometry().affine(), &want.affine, seg);
    }
}

fn round_trip<T: NiftiScalar>(f: impl Fn(usize) -> T, dtype: NiftiDtype) {
    let dir = tempfile::tempdir().unwrap();
    let shape = [4, 3, 5];
    let v = ramp(shape, &f);
    for endian in [Endianness::Little, Endianness::Big] {
        for encoding in [NrrdEncoding::Raw, NrrdEncoding::Gzip] {
            for name in ["x.nrrd", "x.nhdr"] {
                let p = dir.path().join(name);
                let o = NrrdWriteOptions {
                    dtype: Some(dtype),
                    encoding,
                    endianness: endian,
                    ..Default::default()
                };
                write_nrrd_with(&p, &v, &o).unwrap();
                let h = read_nrrd_header(&p).unwrap();
                assert_eq!(
                    (h.dtype, h.endianness, h.encoding),
                    (dtype, Some(endian), encoding)
                );
                let back = read_nrrd::<T>(&p).unwrap();
                assert_eq!(
                    back.data(),
                    v.data(),
                    "{dtype:?} {endian:?} {encoding:?} {name}"
                );
                // Shortest round-trip decimals: the affine comes back bit for bit.
                assert_eq!(back.geometry(), v.geometry());
            }
        }
    }
    let mut n = names(dir.path());
    n.retain(|f| f.starts_with(".negvol"));
    assert!(n.is_empty(), "temporary files left: {n:?}");
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
fn written_files_look_like_slicer_and_itk_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ct.nrrd");
    let v = ramp([3, 4, 5], |p| p as i16 - 20);
    let o = NrrdWriteOptions {
        key_values: vec![
            ("Segment0_Name".into(), "condyle".into()),
            ("note".into(), "two\nlines \\ ok".into()),
        ],
        ..Default::default()
    };
    write_nrrd_with(&p, &v, &o).unwrap();
    let text = std::fs::read(&p).unwrap();
    let head =
        String::from_utf8_lossy(&text[..text.windows(2).position(|w| w == b"\n\n").unwrap()]);
    assert!(head.starts_with("NRRD0004\n"), "{head}");
    for line in [
        "type: short",
        "dimension: 3",
        "space: left-posterior-superior",
        "sizes: 3 4 5",
        "kinds: domain domain domain",
        "endian: little",
        "encoding: gzip",
        "Segment0_Name:=condyle",
        "note:=two\\nlines \\\\ ok",
    ] {
        assert!(head.lines().any(|l| l == line), "{line:?} in\n{head}");
    }
    let h = read_nrrd_header(&p).unwrap();
    assert_eq!(h.key_values["note"], "two\nlines \\ ok");
    // LPS on disk: the directions are the RAS affine's columns with x and y negated.
    let a = v.geometry().affine();
    let d = h.space_directions.unwrap();
    for c in 0..3 {
        assert_eq!(d[c].unwrap(), [-a[0][c] + 0.0, -a[1][c] + 0.0, a[2][c]]);
    }
    // Bad keys and encodings are refused before anything is written.
    for kv in ["", "a:=b", "x\ny", "#c"] {
        let o = NrrdWriteOptions {
            key_values: vec![(kv.into(), "v".into())],
            ..Default::default()
        };
        assert!(
            write_nrrd_with(dir.path().join("k.nrrd"), &v, &o).is_err(),
            "{kv:?}"
        );
    }
    let o = NrrdWriteOptions {
        encoding: NrrdEncoding::Ascii,
        ..Default::default()
    };
    assert!(write_nrrd_with(dir.path().join("k.nrrd"), &v, &o).is_err());
    assert!(!dir.path().join("k.nrrd").exists());
    // A value the stored type cannot hold fails and keeps the old file.
    let before = std::fs::read(&p).unwrap();
    let o = NrrdWriteOptions {
        dtype: Some(NiftiDtype::U8),
        ..Default::default()
    };
    let e = write_nrrd_with(&p, &v, &o).unwrap_err();
    assert!(matches!(e, VolumeError::ValueOutOfRange { .. }), "{e}");
    assert_eq!(std::fs::read(&p).unwrap(), before);
}

#[test]
fn masks_read_nonzero_as_true_in_every_format_like_nifti() {
    let dir = tempfile::tempdir().unwrap();
    let vals = ramp([2, 2, 2], |p| {
        [0.0f32, 1.0, 2.0, -0.5, 0.0, 0.25, 7.0, 0.0][p]
    });
    let nii = dir.path().join("m.nii");
    write_nifti(&nii, &vals).unwrap();
    let want = read_mask(&nii).unwrap();
    assert_eq!(want.data().iter().filter(|b| **b).count(), 5);
    let nan = ramp([2, 2, 2], |p| if p == 5 { f32::NAN } else { 1.0 });
    let is_nan_error = |e: &VolumeError| {
        matches!(
            e,
            VolumeError::ValueOutOfRange {
                index: [1, 0, 1],
                ..
            }
        )
    };
    for name in ["m.nrrd", "m.nhdr", "m.mha", "m.mhd"] {
        let p = dir.path().join(name);
        write_volume(&p, &vals).unwrap();
        assert_eq!(read_mask(&p).unwrap().data(), want.data(), "{name}");
        write_volume(&p, &nan).unwrap();
        let e = read_mask(&p).unwrap_err();
        assert!(is_nan_error(&e), "{name}: {e}");
    }
    write_nifti(&nii, &nan).unwrap();
    let e = read_mask(&nii).unwrap_err();
    assert!(is_nan_error(&e), "{e}");
}

// ------------------------------------------------------------------------------------------
// Refusals: each malformed file is a typed error naming the file and the field.

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn header_with(lines: &[&str]) -> Vec<u8> {
    let mut s = String::from("NRRD0004\n");
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.push('\n');
    s.into_bytes()
}

const OK: [&str; 8] = [
    "type: short",
    "dimension: 3",
    "space: left-posterior-superior",
    "sizes: 2 2 2",
    "space directions: (1,0,0) (0,1,0) (0,0,1)",
    "space origin: (0,0,0)",
    "endian: little",
    "encoding: raw",
];

fn replaced(field: &str, line: &str) -> Vec<u8> {
    let lines: Vec<&str> = OK
        .iter()
        .map(|l| if l.starts_with(field) { line } else { l })
        .collect();
    header_with(&lines)
}

fn expect_err(bytes: &[u8], needle: &str) -> VolumeError {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bad.nrrd", bytes);
    let e = read_nrrd::<f32>(&p).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("bad.nrrd"),
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
    let p = write(dir.path(), "ok.nrrd", &b);
    assert_eq!(read_nrrd::<f32>(&p).unwrap().geometry().shape(), [2, 2, 2]);
}

#[test]
fn truncated_and_corrupt_data_are_refused() {
    let mut b = header_with(&OK);
    b.extend_from_slice(&[0u8; 15]);
    expect_err(&b, "truncated");
    let mut b = replaced("encoding", "encoding: gzip");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &[0u8; 16]).unwrap();
    let z = gz.finish().unwrap();
    b.extend_from_slice(&z[..z.len() - 12]);
    expect_err(&b, "bad.nrrd");
    let mut b = replaced("encoding", "encoding: gzip");
    b.extend_from_slice(b"\x1f\x8bthis is not deflate data at all");
    expect_err(&b, "gzip");
    let mut b = replaced("encoding", "encoding: ascii");
    b.extend_from_slice(b"1 2 3 4 5 6 7");
    expect_err(&b, "truncated");
    let mut b = replaced("encoding", "encoding: ascii");
    b.extend_from_slice(b"1 2 3 x 5 6 7 8");
    expect_err(&b, "not a number");
    let mut b = replaced("encoding", "encoding: ascii");
    b.extend_from_slice(b"1 2 3 40000 5 6 7 8");
    expect_err(&b, "does not fit");
    let mut b = replaced("encoding", "encoding: hex");
    b.extend_from_slice(b"00112233445566778899aabbccddeeZZ");
    expect_err(&b, "hexadecimal");
    // No blank line and no data file: no data.
    let mut b = header_with(&OK);
    b.pop();
    expect_err(&b, "blank line");
    // A detached header whose data file is missing names the data file.
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<&str> = OK.iter().copied().chain(["data file: gone.raw"]).collect();
    let p = write(dir.path(), "h.nhdr", &header_with(&lines));
    let e = read_nrrd::<f32>(&p).unwrap_err();
    assert!(
        matches!(e, VolumeError::Io { .. }) && e.to_string().contains("gone.raw"),
        "{e}"
    );
    // byte skip -1 with too few bytes.
    let lines: Vec<&str> = OK.iter().copied().chain(["byte skip: -1"]).collect();
    let mut b = header_with(&lines);
    b.extend_from_slice(&[0u8; 10]);
    expect_err(&b, "byte skip -1");
    // line skip past the end.
    let lines: Vec<&str> = OK.iter().copied().chain(["line skip: 3"]).collect();
    let mut b = header_with(&lines);
    b.extend_from_slice(b"one\ntwo\n");
    expect_err(&b, "line skip");
}

#[test]
fn malformed_headers_are_refused_naming_the_field() {
    for (field, line, needle) in [
        ("type", "type: block", "block"),
        ("type", "type: complex", "type"),
        ("dimension", "dimension: 2", "dimension"),
        ("dimension", "dimension: three", "dimension"),
        ("sizes", "sizes: 2 2", "sizes"),
        ("sizes", "sizes: 2 0 2", "sizes"),
        ("sizes", "sizes: 2 -2 2", "sizes"),
        ("sizes", "sizes: 2 2.5 2", "sizes"),
        ("encoding", "encoding: bz2", "bzip2"),
        ("encoding", "encoding: zrl", "encoding"),
        ("endian", "endian: both", "endian"),
        ("space:", "space: 3D-left-handed", "left-handed"),
        ("space:", "space: nowhere", "space"),
        (
            "space directions",
            "space directions: (1,0,0) (0,1,0)",
            "space directions",
        ),
        (
            "space directions",
            "space directions: (1,0,0) (0,1,0) (0,nan,1)",
            "space directions",
        ),
        (
            "space directions",
            "space directions: (1,0,0) (0,1,0) (0,inf,1)",
            "space directions",
        ),
        (
            "space directions",
            "space directions: (1,0,0) (0,1,0) (1,0,0)",
            "singular",
        ),
        (
            "space directions",
            "space directions: (1,0,0) (0,1,0) (0,0,1e-300)",
            "space directions",
        ),
        (
            "space directions",
            "space directions: (1,0,0) (0,1,0) (0,0,x)",
            "space directions",
        ),
        ("space origin", "space origin: (0,0)", "space origin"),
        ("space origin", "space origin: (0,0,1e999)", "space origin"),
    ] {
        let e = expect_err(&replaced(field, line), needle);
        assert!(
            matches!(
                e,
                VolumeError::Format { .. } | VolumeError::Unsupported { .. }
            ),
            "{line}: {e:?}"
        );
    }
    expect_err(b"NRRD0006\ntype: short\n\n", "NRRD0006");
    expect_err(b"P5\n2 2\n255\n", "not a NRRD file");
    expect_err(b"", "empty");
    expect_err(b"NRRD0004\n\xff\xfe\n\n", "not text");
    let lines: Vec<&str> = OK
        .iter()
        .copied()
        .chain(["data file: LIST", "a.raw"])
        .collect();
    expect_err(&header_with(&lines), "LIST");
    let lines: Vec<&str> = OK
        .iter()
        .copied()
        .chain(["space units: \"cm\" \"cm\" \"cm\""])
        .collect();
    expect_err(&header_with(&lines), "millimetres");
    // 4D with several non-spatial axes, or none known.
    let four = [
        "type: uchar",
        "dimension: 4",
        "sizes: 2 2 2 2",
        "encoding: raw",
        "kinds: list list domain domain",
    ];
    expect_err(&header_with(&four), "non-spatial");
    expect_err(&header_with(&four[..4]), "kinds");
}

#[test]
fn absurd_sizes_are_refused_before_allocating() {
    let e = expect_err(&replaced("sizes", "sizes: 100000 100000 100000"), "voxels");
    assert!(matches!(e, VolumeError::TooLarge { .. }), "{e}");
    let e = expect_err(
        &replaced(
            "sizes",
            "sizes: 18446744073709551615 18446744073709551615 2",
        ),
        "overflows",
    );
    assert!(matches!(e, VolumeError::Format { .. }), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let mut b = replaced("sizes", "sizes: 10 10 10");
    b.extend_from_slice(&[0u8; 2000]);
    let p = write(dir.path(), "small.nrrd", &b);
    let o = ReadOptions {
        max_voxels: 999,
        frame: None,
    };
    assert!(matches!(
        read_nrrd_with::<f32>(&p, &o),
        Err(VolumeError::TooLarge { voxels: 1000, .. })
    ));
    let o = ReadOptions {
        max_voxels: 1000,
        frame: None,
    };
    assert!(read_nrrd_with::<f32>(&p, &o).is_ok());
}

#[test]
fn random_bytes_and_mutated_headers_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut valid = header_with(&OK);
    valid.extend_from_slice(&[7u8; 16]);
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let p = dir.path().join("fuzz.nrrd");
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
                // Replace a digit in the header by another number.
                let k = (rng.next() % (valid.len() as u64 - 16)) as usize;
                if b[k].is_ascii_digit() {
                    b[k] = b"0123456789-"[(rng.next() % 11) as usize];
                }
            }
        }
        std::fs::write(&p, &b).unwrap();
        let _ = read_nrrd::<f32>(&p);
        let _ = read_nrrd_header(&p);
    }
}
