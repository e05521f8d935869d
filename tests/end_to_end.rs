//! End-to-end checks across the pure crates, through files as a user would run them:
//! phantom dataset on disk (negvol-phantom) -> NIfTI read (negvol-volume) -> reorientation ->
//! negative volume (negvol) -> metrics against the analytic truth (negvol-metrics).

use negvol::{derive_nv, NvConfig};
use negvol_metrics::{evaluate_pair, EvalOptions};
use negvol_phantom::{write_dataset, GridOrientation, PhantomConfig, PhantomTruth};
use negvol_volume::{read_mask, read_nifti, reorient_to_ras, write_mask, Volume};

fn dice(a: &Volume<bool>, b: &Volume<bool>) -> f64 {
    let inter = a
        .data()
        .iter()
        .zip(b.data().iter())
        .filter(|(x, y)| **x && **y)
        .count();
    let na = a.data().iter().filter(|x| **x).count();
    let nb = b.data().iter().filter(|x| **x).count();
    2.0 * inter as f64 / (na + nb) as f64
}

/// A single-joint phantom on an LPS grid (the DICOM convention), so that the reorientation
/// step does real work.
fn lps_config() -> PhantomConfig {
    PhantomConfig {
        orientation: GridOrientation {
            axes: "LPS".into(),
            oblique_deg: [0.0; 3],
        },
        ..PhantomConfig::default()
    }
}

#[test]
fn phantom_files_to_nv_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = lps_config();
    let manifest = write_dataset(dir.path(), &cfg, 1, 2021).unwrap();
    assert_eq!(manifest.cases.len(), 1);
    let case = dir.path().join("case_000");

    let image = read_nifti::<f32>(case.join("image.nii.gz")).unwrap();
    let mc = read_mask(case.join("mc.nii.gz")).unwrap();
    let tb = read_mask(case.join("tb.nii.gz")).unwrap();
    let truth_nv = read_mask(case.join("nv.nii.gz")).unwrap();
    let truth: PhantomTruth =
        serde_json::from_slice(&std::fs::read(case.join("truth.json")).unwrap()).unwrap();
    assert_eq!(mc.geometry().orientation_code(), "LPS");
    // Image and masks share one grid.
    image.geometry().check_same(mc.geometry(), 1e-6).unwrap();
    // The image shows bone where the masks are (CT-like HU, not a copy of the mask).
    let mean_hu = |m: &Volume<bool>, inside: bool| {
        let (s, n) = image
            .data()
            .iter()
            .zip(m.data().iter())
            .filter(|(_, b)| **b == inside)
            .fold((0.0f64, 0usize), |(s, n), (v, _)| (s + *v as f64, n + 1));
        s / n as f64
    };
    assert!(mean_hu(&mc, true) > mean_hu(&mc, false) + 300.0);

    // NV on the file's own (LPS) grid.
    let cfg_nv = NvConfig::default();
    let nv = derive_nv(&mc, &tb, &cfg_nv).unwrap();
    let nv_mask = nv.require_nv().unwrap();

    // Metrics through the metrics crate, in mm, against the truth written to disk.
    let m = evaluate_pair(
        truth_nv.data().view(),
        nv_mask.data().view(),
        truth_nv.geometry().spacing(),
        &EvalOptions::default(),
    )
    .unwrap();
    let d = m.overlap.dice.value.expect("both masks are non-empty");
    assert!(d > 0.85, "NV Dice against the analytic truth {d}");
    approx::assert_relative_eq!(d, dice(&truth_nv, nv_mask), max_relative = 1e-12);
    let hd95 = m.voxel_surface.hd_percentile.value.expect("HD95 defined");
    assert!(hd95 < 2.0, "NV HD95 {hd95} mm");

    // Volume against the exact (integrated) truth, not the voxel mask.
    let exact: f64 = truth.sides.iter().map(|s| s.nv_volume_mm3).sum();
    let ours = nv.report.total_volume_mm3;
    let err = (ours - exact).abs() / exact;
    assert!(
        err < 0.10,
        "NV volume {ours:.1} mm3 vs exact {exact:.1} mm3"
    );

    // Same joint after reorientation to RAS: the pipeline works in world coordinates, so the
    // NV mapped back to LPS must be the same region.
    let (mc_ras, t) = reorient_to_ras(&mc).unwrap();
    let (tb_ras, _) = reorient_to_ras(&tb).unwrap();
    assert_eq!(mc_ras.geometry().orientation_code(), "RAS");
    let nv_ras = derive_nv(&mc_ras, &tb_ras, &cfg_nv).unwrap();
    let back = t.inverse().apply(nv_ras.require_nv().unwrap()).unwrap();
    let agree = dice(&back, nv_mask);
    assert!(agree > 0.98, "NV on LPS vs RAS grids: Dice {agree}");
    approx::assert_relative_eq!(nv_ras.report.total_volume_mm3, ours, max_relative = 0.02);

    // The NV written and read back is the same mask on the same grid.
    let out = dir.path().join("nv_pred.nii.gz");
    write_mask(&out, nv_mask).unwrap();
    let again = read_mask(&out).unwrap();
    assert_eq!(again.data(), nv_mask.data());
    again
        .geometry()
        .check_same(nv_mask.geometry(), 1e-9)
        .unwrap();
}

#[test]
fn mismatched_grids_are_refused_by_every_stage() {
    let cfg = PhantomConfig::default();
    let case = negvol_phantom::generate(&cfg, 7).unwrap();
    let shifted_geometry = {
        let g = case.tb.geometry();
        let mut a = g.affine();
        a[0][3] += 5.0;
        negvol_volume::Geometry::new(g.shape(), a).unwrap()
    };
    let tb_moved = Volume::new(case.tb.data().clone(), shifted_geometry).unwrap();
    let err = derive_nv(&case.mc, &tb_moved, &NvConfig::default()).unwrap_err();
    assert!(err.to_string().contains("MC vs TB"), "{err}");

    // The metrics crate refuses arrays of different shapes rather than cropping silently.
    let small = ndarray::Array3::<bool>::from_elem((4, 4, 4), false);
    assert!(evaluate_pair(
        case.nv.data().view(),
        small.view(),
        [0.4; 3],
        &EvalOptions::default()
    )
    .is_err());
}
