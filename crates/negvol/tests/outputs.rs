//! `write_outputs` writes every product, and they read back.

use ndarray::Array3;
use negvol::{derive_nv, write_outputs, NvConfig, OutputOptions, SideSplit};
use negvol_volume::{read_mask, read_nifti, read_stl, Geometry, Volume};

#[test]
fn writes_mask_width_map_meshes_pictures_and_report() {
    let g = Geometry::from_spacing([40, 40, 44], [0.5; 3]).unwrap();
    let c = [10.0, 10.0, 9.75];
    let mc = Array3::from_shape_fn(g.shape(), |(i, j, k)| {
        let p = [i as f64 * 0.5, j as f64 * 0.5, k as f64 * 0.5];
        (0..3).map(|a| (p[a] - c[a]).powi(2)).sum::<f64>() <= 25.0
    });
    let tb = Array3::from_shape_fn(g.shape(), |(_, _, k)| k as f64 * 0.5 >= 17.25);
    let mc = Volume::new(mc, g.clone()).unwrap();
    let tb = Volume::new(tb, g.clone()).unwrap();
    let image = mc.map(|&m| if m { 1000.0f32 } else { 0.0 });
    let cfg = NvConfig {
        side_split: SideSplit::None,
        ..Default::default()
    };
    let res = derive_nv(&mc, &tb, &cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = write_outputs(
        dir.path(),
        &res,
        &mc,
        &tb,
        Some(&image),
        &OutputOptions::default(),
    )
    .unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for n in [
        "nv.nii.gz",
        "whole_width.nii.gz",
        "whole_mc.stl",
        "whole_tb.stl",
        "whole_nv.stl",
        "whole_axial.png",
        "whole_coronal.png",
        "whole_sagittal.png",
        "report.json",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    let nv = read_mask(dir.path().join("nv.nii.gz")).unwrap();
    assert_eq!(nv.data(), res.nv.data());
    let w: Volume<f32> = read_nifti(dir.path().join("whole_width.nii.gz")).unwrap();
    let max = w.data().iter().cloned().fold(0.0f32, f32::max);
    assert!(max > 2.0 && max <= 4.5, "{max}");
    let mesh = read_stl(dir.path().join("whole_nv.stl")).unwrap();
    assert!(!mesh.faces.is_empty());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["sides"][0]["side"], "whole");
    assert_eq!(report["sides"][0]["has_nv"], true);
}
