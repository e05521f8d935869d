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
