//! The file-level tools behind the examples: info and convert (NIfTI and STL).

use std::path::Path;

use negvol_volume::*;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn info_reports_geometry_and_values() {
    let i = nifti_info(fixture("oblique_lps_i16_scaled.nii.gz")).unwrap();
    assert_eq!(i.shape, [5, 6, 7]);
    assert_eq!(i.orientation, "LPS");
    assert_eq!(i.datatype, "i16");
    assert_eq!(i.scaling, (0.5, -1024.0));
    // raw = 100 i + 10 j + k - 300 over [0,4]x[0,5]x[0,6], value = raw / 2 - 1024.
    assert_eq!(i.values.min, Some(-300.0 / 2.0 - 1024.0));
    assert_eq!(i.values.max, Some((456.0 - 300.0) / 2.0 - 1024.0));
    let i = nifti_info(fixture("big_endian_f32_lps.nii")).unwrap();
    assert_eq!(i.values.nan_count, 1);
    let i = nifti_info(fixture("four_d_f64.nii.gz")).unwrap();
    assert_eq!(i.frames, 2);
    let json = serde_json::to_value(&i).unwrap();
    assert_eq!(json["affine_source"], "Sform");
    assert!(nifti_info(fixture("nope.nii")).is_err());
}

#[test]
fn convert_reorients_resamples_and_voxelizes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ras.nii.gz");
    let opts = ConvertOptions {
        reorient: Some("RAS".into()),
        spacing: Some([0.5, 0.5, 0.5]),
        ..Default::default()
    };
    let r = convert(fixture("oblique_lps_i16_scaled.nii.gz"), &out, &opts).unwrap();
    assert_eq!(r.orientation, "RAS");
    assert_eq!(r.datatype, "f32"); // scaled input: f32 by default
    let v = read_nifti::<f32>(&out).unwrap();
    assert_eq!(v.geometry().orientation_code(), "RAS");
    let src = read_nifti_geometry(fixture("oblique_lps_i16_scaled.nii.gz")).unwrap();
    let (a, b) = (src.center_world(), v.geometry().center_world());
    for ax in 0..3 {
        assert!((a[ax] - b[ax]).abs() < 1e-4, "{a:?} {b:?}");
    }
    // Unscaled integer input keeps its type.
    let out2 = dir.path().join("u16.nii");
    let r = convert(
        fixture("qform_only_u16.nii"),
        &out2,
        &ConvertOptions::default(),
    )
    .unwrap();
    assert_eq!(r.datatype, "u16");
    assert_eq!(
        read_nifti::<u16>(&out2).unwrap().data(),
        read_nifti::<u16>(fixture("qform_only_u16.nii"))
            .unwrap()
            .data()
    );
    // 4D needs a frame.
    let out3 = dir.path().join("f.nii");
    assert!(convert(
        fixture("four_d_f64.nii.gz"),
        &out3,
        &ConvertOptions::default()
    )
    .is_err());
    let opts = ConvertOptions {
        frame: Some(1),
        ..Default::default()
    };
    convert(fixture("four_d_f64.nii.gz"), &out3, &opts).unwrap();
    assert_eq!(read_nifti::<f64>(&out3).unwrap().data()[[0, 0, 0]], 1000.0);
    // STL voxelized onto a reference grid.
    let reference = dir.path().join("ref.nii");
    let g = Geometry::from_spacing([10, 10, 10], [1.0; 3]).unwrap();
    write_nifti(&reference, &Volume::<u8>::zeros(g)).unwrap();
    let cube = TriMesh::cuboid([2.0; 3], [6.0; 3]);
    let stl = dir.path().join("cube.stl");
    write_stl(&stl, &cube).unwrap();
    let info = stl_info(&stl).unwrap();
    assert!(info.closed);
    assert_eq!(info.signed_volume_mm3, 64.0);
    let mask_path = dir.path().join("mask.nii.gz");
    assert!(convert(&stl, &mask_path, &ConvertOptions::default()).is_err()); // needs --like
    let opts = ConvertOptions {
        like: Some(reference),
        ..Default::default()
    };
    let r = convert(&stl, &mask_path, &opts).unwrap();
    assert_eq!(r.datatype, "u8");
    let m = read_mask(&mask_path).unwrap();
    assert_eq!(m.data().iter().filter(|&&b| b).count(), 64);
}

fn itk(name: &str) -> std::path::PathBuf {
    fixture("itk").join(name)
}

#[test]
fn info_describes_nrrd_and_metaimage() {
    let i = image_info(itk("layers_4d.seg.nrrd")).unwrap();
    assert_eq!((i.format, i.frames, i.shape), ("NRRD", 2, [4, 3, 2]));
    assert_eq!(i.dims, vec![2, 4, 3, 2]);
    assert_eq!(i.encoding, "gzip");
    let names: Vec<&str> = i.segments.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["condyle", "temporal bone", "fossa"]);
    let json = serde_json::to_value(&i).unwrap();
    assert_eq!(json["segments"][2]["label_value"], 2);
    let i = image_info(itk("oblique_i16.mhd")).unwrap();
    assert_eq!((i.format, i.encoding.as_str()), ("MetaImage", "zlib"));
    assert_eq!(i.data_file, Some(itk("oblique_i16.zraw")));
    assert_eq!(i.datatype, "i16");
    assert_eq!(i.values.min, Some(-200.0));
    let json = serde_json::to_value(&i).unwrap();
    assert!(json.get("segments").is_none() && json.get("key_values").is_none());
    assert!(image_info(fixture("dtype_int8.nii")).is_err()); // nifti_info's job
    assert_eq!(file_kind(&itk("a.seg.nrrd")), Some(FileKind::Nrrd));
    assert_eq!(file_kind(&itk("a.MHD")), Some(FileKind::MetaImage));
    assert_eq!(file_kind(&itk("a.raw")), None);
}

#[test]
fn convert_between_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let src = itk("oblique_i16.mhd");
    let original = read_volume::<i16>(&src).unwrap();
    for name in ["a.nrrd", "a.nhdr", "a.mha", "b.mhd", "a.nii.gz", "a.nii"] {
        let out = dir.path().join(name);
        let r = convert(&src, &out, &ConvertOptions::default()).unwrap();
        assert_eq!(r.datatype, "i16", "{name}");
        let back = read_volume::<i16>(&out).unwrap();
        assert_eq!(back.data(), original.data(), "{name}");
        // NIfTI stores its affine as f32.
        let tol = if name.contains(".nii") { 1e-5 } else { 1e-9 };
        back.geometry()
            .check_same(original.geometry(), tol)
            .unwrap();
        assert_eq!(
            read_image(&out).unwrap().data(),
            original.map(|v| *v as f32).data()
        );
    }
    // NIfTI in, reoriented, NRRD out; the other way back.
    let out = dir.path().join("ras.nrrd");
    let opts = ConvertOptions {
        reorient: Some("RAS".into()),
        ..Default::default()
    };
    let r = convert(fixture("oblique_lps_i16_scaled.nii.gz"), &out, &opts).unwrap();
    assert_eq!(
        (r.orientation.as_str(), r.datatype.as_str()),
        ("RAS", "f32")
    );
    assert_eq!(read_nrrd_header(&out).unwrap().dtype, NiftiDtype::F32);
    // A layer of a segmentation.
    let out = dir.path().join("layer1.nii.gz");
    assert!(convert(itk("layers_4d.seg.nrrd"), &out, &ConvertOptions::default()).is_err());
    let opts = ConvertOptions {
        frame: Some(1),
        ..Default::default()
    };
    let r = convert(itk("layers_4d.seg.nrrd"), &out, &opts).unwrap();
    assert_eq!(r.datatype, "u8");
    // Unknown output names are refused before anything is read or written.
    let e = convert(&src, dir.path().join("a.tif"), &ConvertOptions::default()).unwrap_err();
    assert!(matches!(e, VolumeError::UnknownFormat { .. }), "{e}");
    assert!(!dir.path().join("a.tif").exists());
    // STL voxelized onto a MetaImage grid, written as NRRD.
    let cube = TriMesh::cuboid([-100.0; 3], [100.0; 3]);
    let stl = dir.path().join("cube.stl");
    write_stl(&stl, &cube).unwrap();
    let opts = ConvertOptions {
        like: Some(src.clone()),
        ..Default::default()
    };
    let out = dir.path().join("cube.seg.nrrd");
    convert(&stl, &out, &opts).unwrap();
    let m = read_mask(&out).unwrap();
    assert!(m.data().iter().all(|b| *b));
    m.geometry().check_same(original.geometry(), 1e-9).unwrap();
}
