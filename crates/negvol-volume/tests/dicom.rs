//! DICOM series written by pydicom (tests/fixtures/make_dicom_fixtures.py).
#![cfg(feature = "dicom")]

use std::path::{Path, PathBuf};

use negvol_volume::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dicom")
        .join(name)
}

#[test]
fn ct_series_in_hu_with_ras_affine() {
    let s = std::fs::read_to_string(fixture("ct.json")).unwrap();
    let e: serde_json::Value = serde_json::from_str(&s).unwrap();
    let v = read_dicom_series(fixture("ct")).unwrap();
    let shape: Vec<usize> = e["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(v.geometry().shape().to_vec(), shape);
    let a = v.geometry().affine();
    for r in 0..4 {
        for c in 0..4 {
            let want = e["affine"][r][c].as_f64().unwrap();
            assert!(
                (a[r][c] - want).abs() < 1e-9,
                "[{r}][{c}] {} vs {want}",
                a[r][c]
            );
        }
    }
    let want: Vec<f64> = e["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let got: Vec<f64> = v.data().iter().map(|&x| x as f64).collect();
    assert_eq!(got, want);
    assert_eq!(v.geometry().orientation_code(), "LPS");
    // Through NIfTI and back: same HU and affine.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ct.nii.gz");
    write_nifti_as(&p, &v, NiftiDtype::I16).unwrap();
    let w = read_nifti::<f32>(&p).unwrap();
    assert_eq!(w.data(), v.data());
    w.geometry().check_same(v.geometry(), 1e-4).unwrap();
}

fn series_error(name: &str) -> String {
    let err = read_dicom_series(fixture(name)).unwrap_err();
    assert!(matches!(err, VolumeError::Series { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(name), "{msg}");
    msg
}

#[test]
fn inconsistent_series_are_refused() {
    assert!(series_error("mixed").contains("mixed series"));
    assert!(series_error("gap").contains("missing slice"));
    assert!(series_error("uneven").contains("uneven slice spacing"));
    // A looser tolerance accepts the uneven series.
    let opts = DicomReadOptions {
        spacing_tolerance: 0.5,
        ..Default::default()
    };
    assert!(read_dicom_series_with(fixture("uneven"), &opts).is_ok());
    // Limits.
    let opts = DicomReadOptions {
        max_voxels: 10,
        ..Default::default()
    };
    assert!(matches!(
        read_dicom_series_with(fixture("ct"), &opts),
        Err(VolumeError::TooLarge { .. })
    ));
    // No images.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("notes.txt"), "not dicom").unwrap();
    let err = read_dicom_series(empty.path()).unwrap_err();
    assert!(err.to_string().contains("no DICOM images"), "{err}");
    assert!(matches!(
        read_dicom_series("/no/such/dir"),
        Err(VolumeError::Io { .. })
    ));
}

#[test]
fn truncated_slice_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture("ct")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let victim = dir.path().join("IM0007.dcm");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() - 20]).unwrap();
    // The truncated file is either skipped as unreadable (then a slice is missing) or its
    // pixel data is refused: an error either way.
    assert!(read_dicom_series(dir.path()).is_err());
}

#[test]
fn read_image_takes_a_series_folder_or_a_nifti_file() {
    let series = read_dicom_series(fixture("ct")).unwrap();
    let v = read_image(fixture("ct")).unwrap();
    assert_eq!(v.data(), series.data());
    assert_eq!(v.geometry(), series.geometry());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ct.nii.gz");
    write_nifti_as(&p, &series, NiftiDtype::F32).unwrap();
    let n = read_image(&p).unwrap();
    assert_eq!(n.data(), series.data());
    n.geometry().check_same(series.geometry(), 1e-6).unwrap();
    assert!(read_image(dir.path().join("missing.nii.gz")).is_err());
    // An empty folder is not a series.
    let e = read_image(dir.path()).unwrap_err().to_string();
    assert!(!e.is_empty());
}
