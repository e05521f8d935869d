//! Dataset formats: one set of phantom cases read as a negvol folder, an nnU-Net v2 export,
//! a Decathlon manifest, a label-map manifest and STL meshes gives the same cases; bad
//! datasets are typed errors that name the case and the file.

use std::path::Path;

use negvol_phantom::{write_dataset, PhantomConfig};
use negvol_train::dataset::export::{export_nnunet, NnUnetExport};
use negvol_train::{Case, DatasetSpec, LabelSource};
use negvol_volume::{read_nifti, write_nifti_as, write_stl, NiftiDtype, TriMesh, Volume};

fn targets(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| s.to_string()).collect()
}

fn phantoms(dir: &Path, n: usize) -> DatasetSpec {
    let cfg = PhantomConfig {
        spacing: [1.0; 3],
        ..PhantomConfig::default()
    };
    write_dataset(dir, &cfg, n, 3).unwrap();
    DatasetSpec::open(dir).unwrap()
}

fn assert_same_cases(a: &[Case], b: &[Case], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.id, y.id, "{what}");
        assert_eq!(x.image.data(), y.image.data(), "{what}: image of {}", x.id);
        x.image
            .geometry()
            .check_same(y.image.geometry(), 1e-6)
            .unwrap();
        assert_eq!(x.label.data(), y.label.data(), "{what}: labels of {}", x.id);
    }
}

/// Sparse annotation: an `ignore` mask beside the targets marks unannotated voxels 255 where
/// no target claims them; the nnU-Net export declares it as the `ignore` label (the highest
/// value) and reads back as the same label maps; `ignore` is never a target.
#[test]
fn sparse_annotation_round_trips_through_the_nnunet_export() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = phantoms(&dir.path().join("ph"), 2);
    let t = targets(&["mc", "tb"]);
    let dense = spec.load(&t).unwrap();
    // Case 0: only every third k-slice is annotated.
    let g = dense[0].image.geometry().clone();
    let s = g.shape();
    let unannotated =
        ndarray::Array3::from_shape_fn((s[0], s[1], s[2]), |(_, _, k)| u8::from(k % 3 != 0));
    let path = dir.path().join("ignore.nii.gz");
    write_nifti_as(
        &path,
        &Volume::new(unannotated.clone(), g).unwrap(),
        NiftiDtype::U8,
    )
    .unwrap();
    spec.cases[0]
        .labels
        .insert("ignore".into(), LabelSource::Mask(path));
    assert_eq!(spec.common_targets(), targets(&["mc", "nv", "tb"]));
    let sparse = spec.load(&t).unwrap();
    let (d, s0) = (dense[0].label.data(), sparse[0].label.data());
    let mut ignored = 0;
    for ((x, y), u) in d.iter().zip(s0.iter()).zip(unannotated.iter()) {
        if *u == 1 && *x == 0 {
            assert_eq!(*y, negvol_train::IGNORE_LABEL);
            ignored += 1;
        } else {
            assert_eq!(x, y, "annotated voxels and target voxels keep their class");
        }
    }
    assert!(ignored > 0);
    assert_eq!(sparse[1].label.data(), dense[1].label.data());
    let e = spec
        .load(&targets(&["mc", "ignore"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a structure to segment"), "{e}");

    let out = dir.path().join("D");
    let mut o = NnUnetExport::new(t.clone());
    o.folds = None;
    let r = export_nnunet(&spec, &out, &o).unwrap();
    assert_eq!(r.labels.last().unwrap(), &("ignore".to_string(), 3));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(manifest["labels"]["ignore"], 3);
    let stored = read_nifti::<u8>(out.join("labelsTr/case_000.nii.gz")).unwrap();
    assert!(stored.data().iter().any(|v| *v == 3) && stored.data().iter().all(|v| *v <= 3));
    let back = DatasetSpec::open(&out).unwrap().load(&t).unwrap();
    assert_same_cases(&sparse, &back, "sparse nnU-Net export");
}

#[test]
fn phantom_manifest_lists_its_three_masks_not_the_label_map() {
    let dir = tempfile::tempdir().unwrap();
    let spec = phantoms(dir.path(), 2);
    assert_eq!(spec.common_targets(), targets(&["mc", "nv", "tb"]));
}

#[test]
fn nnunet_export_reads_back_as_the_same_cases_and_folds() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ph");
    let mut spec = phantoms(&src, 4);
    // Two cases of one patient: the folds must keep them together.
    spec.cases[1].patient = Some("p0".into());
    spec.cases[2].patient = Some("p0".into());
    let t = targets(&["mc", "tb", "nv"]);
    let native = spec.load(&t).unwrap();

    let out = dir.path().join("Dataset501_TMJ");
    let mut opts = NnUnetExport::new(t.clone());
    opts.folds = Some(3);
    let r = export_nnunet(&spec, &out, &opts).unwrap();
    assert_eq!((r.cases, r.folds), (4, 3));
    assert_eq!(r.labels[3], ("nv".to_string(), 3));
    // The image keeps its stored datatype (int16 HU).
    let h = negvol_volume::read_nifti_header(out.join("imagesTr/case_000_0000.nii.gz")).unwrap();
    assert_eq!(h.dtype(), Some(NiftiDtype::I16));

    let back = DatasetSpec::open(&out).unwrap();
    assert_eq!(back.common_targets(), targets(&["mc", "nv", "tb"]));
    assert!(matches!(
        back.cases[0].labels["tb"],
        LabelSource::LabelMap { ref values, .. } if values == &[2]
    ));
    assert_same_cases(&native, &back.load(&t).unwrap(), "nnU-Net export");
    // Another class order loads too (the label map is split by value, not copied).
    let swapped = back.load(&targets(&["tb", "mc"])).unwrap();
    assert_same_cases(
        &spec.load(&targets(&["tb", "mc"])).unwrap(),
        &swapped,
        "tb, mc",
    );

    let splits: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("splits_final.json")).unwrap())
            .unwrap();
    let folds = splits.as_array().unwrap();
    assert_eq!(folds.len(), 3);
    let mut seen = Vec::new();
    for f in folds {
        let val: Vec<&str> = f["val"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let train: Vec<&str> = f["train"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(val.len() + train.len(), 4);
        assert_eq!(
            val.contains(&"case_001"),
            val.contains(&"case_002"),
            "patient p0 split across folds: {f}"
        );
        seen.extend(val);
    }
    seen.sort();
    assert_eq!(seen, ["case_000", "case_001", "case_002", "case_003"]);

    // A second export into the same folder is refused unless asked for.
    let e = export_nnunet(&spec, &out, &opts).unwrap_err().to_string();
    assert!(e.contains("already holds"), "{e}");
    opts.overwrite = true;
    export_nnunet(&spec, &out, &opts).unwrap();
}

#[test]
fn decathlon_and_label_map_manifests_read_the_same_cases() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ph");
    let spec = phantoms(&src, 2);
    let t = targets(&["mc", "tb"]);
    let native = spec.load(&t).unwrap();

    // Decathlon: value -> name, a training list, paths relative to the manifest.
    let training: Vec<serde_json::Value> = (0..2)
        .map(|i| {
            serde_json::json!({"image": format!("./ph/case_00{i}/image.nii.gz"),
                               "label": format!("./ph/case_00{i}/label_map.nii.gz")})
        })
        .collect();
    let msd = serde_json::json!({
        "name": "TMJ", "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "mc", "2": "tb", "3": "nv"},
        "numTraining": 2, "training": training });
    let msd_path = dir.path().join("dataset.json");
    std::fs::write(&msd_path, msd.to_string()).unwrap();
    // Ids come from the image file names: both are "image", so the reader refuses.
    let e = DatasetSpec::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("\"image\" appears twice"), "{e}");

    // A negvol manifest with label-map sources (the phantom's 0/1/2/3 map).
    let cases: Vec<serde_json::Value> = (0..2)
        .map(|i| {
            let lm = format!("ph/case_00{i}/label_map.nii.gz");
            serde_json::json!({"id": format!("case_00{i}"),
                "image": format!("ph/case_00{i}/image.nii.gz"),
                "labels": {"mc": {"path": lm, "values": [1]},
                           "tb": {"path": lm, "values": [2], "declared": [0, 1, 2, 3]},
                           "bones": {"path": lm, "values": [1, 2]}}})
        })
        .collect();
    let path = dir.path().join("manifest.json");
    std::fs::write(&path, serde_json::json!({ "cases": cases }).to_string()).unwrap();
    let lm = DatasetSpec::open(&path).unwrap();
    assert_same_cases(&native, &lm.load(&t).unwrap(), "label-map manifest");
    let bones = lm.load(&targets(&["bones"])).unwrap();
    for (b, n) in bones.iter().zip(&native) {
        let want = n.label.data().mapv(|v| u8::from(v > 0));
        assert_eq!(b.label.data(), &want, "a class listing values 1 and 2");
    }
    // save_manifest round-trips every label form.
    let saved = dir.path().join("saved.json");
    lm.save_manifest(&saved).unwrap();
    assert_eq!(DatasetSpec::open(&saved).unwrap(), lm);
}

#[test]
fn decathlon_dataset_reads_like_its_nnunet_export() {
    let dir = tempfile::tempdir().unwrap();
    let spec = phantoms(&dir.path().join("ph"), 2);
    let t = targets(&["mc", "tb", "nv"]);
    let out = dir.path().join("Task01_TMJ");
    export_nnunet(&spec, &out, &NnUnetExport::new(t.clone())).unwrap_err(); // 2 patients < 5 folds
    let mut o = NnUnetExport::new(t.clone());
    o.folds = None;
    export_nnunet(&spec, &out, &o).unwrap();
    let nn = DatasetSpec::open(&out).unwrap().load(&t).unwrap();
    // Rewrite its dataset.json in the Decathlon form over the same files.
    let training: Vec<serde_json::Value> = (0..2)
        .map(|i| {
            serde_json::json!({"image": format!("./imagesTr/case_00{i}_0000.nii.gz"),
                               "label": format!("./labelsTr/case_00{i}.nii.gz")})
        })
        .collect();
    let msd = serde_json::json!({
        "name": "TMJ", "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "mc", "2": "tb", "3": "nv"},
        "numTraining": 2, "training": training, "test": [] });
    std::fs::write(out.join("dataset.json"), msd.to_string()).unwrap();
    let msd_spec = DatasetSpec::open(&out).unwrap();
    assert_eq!(msd_spec.cases[1].id, "case_001_0000");
    let mut msd_cases = msd_spec.load(&t).unwrap();
    for c in &mut msd_cases {
        c.id = c.id.trim_end_matches("_0000").to_string();
    }
    assert_same_cases(&nn, &msd_cases, "Decathlon");
}

#[test]
fn bad_nnunet_datasets_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let spec = phantoms(&dir.path().join("ph"), 2);
    let out = dir.path().join("D");
    let mut o = NnUnetExport::new(targets(&["mc", "tb"]));
    o.folds = None;
    export_nnunet(&spec, &out, &o).unwrap();
    let manifest = out.join("dataset.json");
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        f(&mut v);
        std::fs::write(&manifest, v.to_string()).unwrap();
        DatasetSpec::open(&out)
    };
    let err = |r: negvol_train::Result<DatasetSpec>| r.unwrap_err().to_string();
    let e = err(with(&|v| v["channel_names"]["1"] = "MR".into()));
    assert!(e.contains("2 input channels"), "{e}");
    // NIfTI, NRRD and MetaImage endings are read (see nrrd_and_metaimage_datasets...); a
    // format negvol does not read is refused by name.
    let e = err(with(&|v| v["file_ending"] = ".gipl".into()));
    assert!(e.contains(".gipl") && e.contains(".mha"), "{e}");
    let e = err(with(&|v| v["numTraining"] = 5.into()));
    assert!(e.contains("numTraining is 5"), "{e}");
    // Label map holds a value (2 = tb) that the declaration no longer lists.
    let s = with(&|v| {
        v["labels"] = serde_json::json!({"background": 0, "mc": 1});
    })
    .unwrap();
    // Both cases fail; the error is the first in dataset order, whichever thread ran first.
    for _ in 0..4 {
        let e = s.load(&targets(&["mc"])).unwrap_err().to_string();
        assert!(
            e.contains("case_000") && e.contains("has value 2") && e.contains("not a declared"),
            "{e}"
        );
    }
    // check() reports every case, not just the first.
    let checks = s.check(&targets(&["mc"]));
    assert_eq!(checks.len(), 2);
    assert!(checks.iter().all(|c| c.result.is_err()));
    // A label map without its image.
    with(&|_| {}).unwrap();
    std::fs::remove_file(out.join("imagesTr/case_001_0000.nii.gz")).unwrap();
    let e = err(DatasetSpec::open(&out));
    assert!(e.contains("case_001") && e.contains("has no image"), "{e}");
}

#[test]
fn stl_labels_are_voxelised_on_the_image_grid_in_either_frame() {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("case_a");
    std::fs::create_dir_all(&case).unwrap();
    // A 10^3 grid of 1 mm voxels at the origin (RAS affine): centres at 0..9 mm.
    let g = negvol_volume::Geometry::from_spacing([10, 10, 10], [1.0; 3]).unwrap();
    let img = Volume::<f32>::zeros(g.clone());
    write_nifti_as(case.join("image.nii.gz"), &img, NiftiDtype::I16).unwrap();
    // Box 2..6 x 1..4 x 3..8 mm: centres 2..5, 1..3, 3..7 (half-open) = 4 * 3 * 5 voxels.
    let (lo, hi) = ([2.0, 1.0, 3.0], [6.0, 4.0, 8.0]);
    write_stl(case.join("mc.stl"), &TriMesh::cuboid(lo, hi)).unwrap();
    let spec = DatasetSpec::open(dir.path()).unwrap();
    assert!(matches!(
        spec.cases[0].labels["mc"],
        LabelSource::Mesh { .. }
    ));
    let c = &spec.load(&targets(&["mc"])).unwrap()[0];
    assert_eq!(c.label.data().iter().filter(|v| **v == 1).count(), 60);
    assert_eq!(c.label.data()[[2, 1, 3]], 1);
    assert_eq!(c.label.data()[[6, 1, 3]], 0);
    let m = spec.cases[0].read_mask("mc").unwrap();
    assert_eq!(m.data().mapv(u8::from), c.label.data());

    // The same box in LPS (x, y negated), tagged as 3D Slicer tags it: read identically.
    let lps = TriMesh::cuboid([-6.0, -4.0, 3.0], [-2.0, -1.0, 8.0]);
    let tagged = case.join("tb.stl");
    write_stl(&tagged, &lps).unwrap();
    let mut bytes = std::fs::read(&tagged).unwrap();
    bytes[..80].fill(b' ');
    bytes[..9].copy_from_slice(b"SPACE=LPS");
    std::fs::write(&tagged, &bytes).unwrap();
    let spec = DatasetSpec::open(dir.path()).unwrap();
    let c2 = &spec.load(&targets(&["tb"])).unwrap()[0];
    assert_eq!(c2.label.data(), c.label.data());

    // Untagged LPS coordinates fall outside the image: an error that names the frame.
    write_stl(&tagged, &lps).unwrap();
    let spec = DatasetSpec::open(dir.path()).unwrap();
    let e = spec.load(&targets(&["tb"])).unwrap_err().to_string();
    assert!(
        e.contains("case_a") && e.contains("tb.stl") && e.contains("\"frame\": \"lps\""),
        "{e}"
    );
    // ...and "frame": "lps" in a manifest reads it.
    let manifest = dir.path().join("m.json");
    std::fs::write(
        &manifest,
        r#"{"cases": [{"id": "a", "image": "case_a/image.nii.gz",
                      "labels": {"tb": {"path": "case_a/tb.stl", "frame": "lps"}}}]}"#,
    )
    .unwrap();
    let c3 = &DatasetSpec::open(&manifest)
        .unwrap()
        .load(&targets(&["tb"]))
        .unwrap()[0];
    assert_eq!(c3.label.data(), c.label.data());

    // Two labels for one structure in a case folder.
    std::fs::copy(case.join("image.nii.gz"), case.join("mc.nii.gz")).unwrap();
    let e = DatasetSpec::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("two labels for \"mc\""), "{e}");
}

#[test]
fn label_sources_parse_from_json_and_refuse_contradictions() {
    let parse = |s: &str| serde_json::from_str::<LabelSource>(s);
    assert!(matches!(
        parse(r#""a/mc.nii.gz""#).unwrap(),
        LabelSource::Mask(_)
    ));
    assert!(matches!(
        parse(r#""a/MC.STL""#).unwrap(),
        LabelSource::Mesh { .. }
    ));
    assert!(matches!(
        parse(r#"{"path": "s.nii.gz", "values": [1, 3]}"#).unwrap(),
        LabelSource::LabelMap { ref values, declared: None, .. } if values == &[1, 3]
    ));
    for bad in [
        r#"{"path": "s.nii.gz", "values": []}"#,
        r#"{"path": "s.nii.gz", "values": [4], "declared": [0, 1]}"#,
        r#"{"path": "s.stl", "values": [1]}"#,
        r#"{"path": "s.nii.gz", "frame": "lps"}"#,
        r#"{"path": "s.nii.gz", "values": [1], "frame": "lps"}"#,
        r#"{"path": "s.nii.gz", "declared": [0, 1]}"#,
        r#"{"path": "s.nii.gz", "values": [-1]}"#,
        r#"3"#,
    ] {
        assert!(parse(bad).is_err(), "{bad} parsed");
    }
    // A manifest with a bad label names the case and the label.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.json");
    std::fs::write(
        &p,
        r#"{"cases": [{"id": "c9", "image": "i.nii.gz", "labels": {"tb": {"path": "x.stl", "values": [1]}}}]}"#,
    )
    .unwrap();
    let e = DatasetSpec::open(&p).unwrap_err().to_string();
    assert!(e.contains("c9") && e.contains("tb"), "{e}");
    // A label map with a non-integer voxel.
    let g = negvol_volume::Geometry::from_spacing([2, 2, 2], [1.0; 3]).unwrap();
    let mut lm = Volume::<f32>::zeros(g.clone());
    lm.view_mut()[[1, 1, 1]] = 1.5;
    write_nifti_as(dir.path().join("lm.nii.gz"), &lm, NiftiDtype::F32).unwrap();
    write_nifti_as(
        dir.path().join("i.nii.gz"),
        &Volume::<f32>::zeros(g),
        NiftiDtype::F32,
    )
    .unwrap();
    std::fs::write(
        &p,
        r#"{"cases": [{"id": "c9", "image": "i.nii.gz", "labels": {"mc": {"path": "lm.nii.gz", "values": [1]}}}]}"#,
    )
    .unwrap();
    let e = DatasetSpec::open(&p)
        .unwrap()
        .load(&targets(&["mc"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("c9") && e.contains("1.5"), "{e}");
    let _ = read_nifti::<f32>(dir.path().join("lm.nii.gz")).unwrap();
}

#[test]
fn a_case_image_may_be_a_dicom_series_folder() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../negvol-volume/tests/fixtures/dicom/ct");
    let ct = negvol_volume::read_dicom_series(&fixture).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("case_d");
    std::fs::create_dir_all(case.join("image")).unwrap();
    for f in std::fs::read_dir(&fixture).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, case.join("image").join(f.file_name().unwrap())).unwrap();
    }
    // A mask on the series' grid: voxels above the median HU.
    let mut hu: Vec<f32> = ct.data().iter().copied().collect();
    hu.sort_by(f32::total_cmp);
    let median = hu[hu.len() / 2];
    let mask = ct.map(|v| u8::from(*v > median));
    write_nifti_as(case.join("mc.nii.gz"), &mask, NiftiDtype::U8).unwrap();
    let spec = DatasetSpec::open(dir.path()).unwrap();
    assert_eq!(spec.cases[0].image, case.join("image"));
    let c = &spec.load(&targets(&["mc"])).unwrap()[0];
    assert_eq!(c.image.data(), ct.data());
    assert_eq!(c.label.data(), mask.data());
    assert_eq!(
        spec.cases[0].read_mask("mc").unwrap().data(),
        &mask.data().mapv(|v| v == 1)
    );
}

/// Rewrite every NIfTI file under `dir` (recursively) in another format by name (`ext` for
/// images, `label_ext` for everything else), removing the NIfTI.
fn convert_tree(dir: &Path, ext: &str, label_ext: &str) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            convert_tree(&p, ext, label_ext);
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".nii.gz") else {
            continue;
        };
        let h = negvol_volume::read_nifti_header(&p).unwrap();
        let v = read_nifti::<f64>(&p).unwrap();
        let image = stem == "image" || stem.ends_with("_0000");
        let out = p.with_file_name(format!("{stem}{}", if image { ext } else { label_ext }));
        negvol_volume::write_volume_as(&out, &v, h.dtype().unwrap()).unwrap();
        std::fs::remove_file(&p).unwrap();
    }
}

#[test]
fn nrrd_and_metaimage_datasets_read_like_nifti() {
    let dir = tempfile::tempdir().unwrap();
    let t = targets(&["mc", "tb", "nv"]);
    let src = dir.path().join("ph");
    let spec = phantoms(&src, 2);
    let native = spec.load(&t).unwrap();
    // Case folders: image.mha (ToothFairy-style) with masks as .seg.nrrd, then image.nrrd
    // with .mhd masks (+ .zraw data files).
    for (image_ext, label_ext) in [(".mha", ".seg.nrrd"), (".nrrd", ".mhd"), (".nhdr", ".mha")] {
        let copy = dir.path().join(format!("copy{}", &image_ext[1..]));
        std::fs::create_dir_all(&copy).unwrap();
        for c in ["case_000", "case_001"] {
            std::fs::create_dir_all(copy.join(c)).unwrap();
            for f in std::fs::read_dir(src.join(c)).unwrap() {
                let f = f.unwrap().path();
                std::fs::copy(&f, copy.join(c).join(f.file_name().unwrap())).unwrap();
            }
        }
        convert_tree(&copy, image_ext, label_ext);
        let s = DatasetSpec::open(&copy).unwrap();
        assert_eq!(
            s.cases[0].image,
            copy.join(format!("case_000/image{image_ext}"))
        );
        assert_eq!(
            s.common_targets(),
            targets(&["label_map", "mc", "nv", "tb"])
        );
        assert_same_cases(&native, &s.load(&t).unwrap(), image_ext);
        let m = s.cases[1].read_mask("tb").unwrap();
        assert_eq!(m, spec.cases[1].read_mask("tb").unwrap(), "{label_ext}");
    }
    // nnU-Net v2 raw datasets with .nrrd and .mha endings (what nnU-Net reads via SimpleITK).
    let mut o = NnUnetExport::new(t.clone());
    o.folds = None;
    for ending in [".nrrd", ".mha"] {
        let out = dir.path().join(format!("Dataset50{}_TMJ", ending.len()));
        export_nnunet(&spec, &out, &o).unwrap();
        convert_tree(&out, ending, ending);
        let manifest = out.join("dataset.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
        v["file_ending"] = ending.into();
        std::fs::write(&manifest, v.to_string()).unwrap();
        let s = DatasetSpec::open(&out).unwrap();
        assert_eq!(
            s.cases[0].image,
            out.join(format!("imagesTr/case_000_0000{ending}"))
        );
        assert_same_cases(&native, &s.load(&t).unwrap(), ending);
        let listed = negvol_train::dataset::list_images(&out.join("imagesTr")).unwrap();
        assert_eq!(listed[1].0, "case_001");
    }
}

#[test]
fn slicer_segments_are_labels_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ph");
    let spec = phantoms(&src, 1);
    let t = targets(&["mc", "tb", "nv"]);
    let native = spec.load(&t).unwrap();
    // One Slicer label map holding the three structures, as 3D Slicer writes a segmentation
    // whose segments do not overlap (the phantom's label map: mc 1, tb 2, nv 3).
    let lm = read_nifti::<u8>(src.join("case_000/label_map.nii.gz")).unwrap();
    let keys = |segs: &[(&str, u32)]| -> Vec<(String, String)> {
        segs.iter()
            .enumerate()
            .flat_map(|(n, (name, value))| {
                [
                    (format!("Segment{n}_ID"), format!("Segment_{}", n + 1)),
                    (format!("Segment{n}_Name"), name.to_string()),
                    (format!("Segment{n}_LabelValue"), value.to_string()),
                    (format!("Segment{n}_Layer"), "0".to_string()),
                ]
            })
            .collect()
    };
    let o = negvol_volume::NrrdWriteOptions {
        key_values: keys(&[("condyle", 1), ("temporal bone", 2), ("negative volume", 3)]),
        ..Default::default()
    };
    let seg = src.join("case_000/Segmentation.seg.nrrd");
    negvol_volume::write_nrrd_with(&seg, &lm, &o).unwrap();
    let manifest = dir.path().join("m.json");
    let label = |name: &str| serde_json::json!({"path": "ph/case_000/Segmentation.seg.nrrd", "segment": name});
    let doc = serde_json::json!({"cases": [{"id": "case_000",
        "image": "ph/case_000/image.nii.gz",
        "labels": {"mc": label("condyle"), "tb": label("temporal bone"),
                   "nv": label("Segment_3")}}]});
    std::fs::write(&manifest, doc.to_string()).unwrap();
    let s = DatasetSpec::open(&manifest).unwrap();
    assert!(matches!(
        s.cases[0].labels["mc"],
        LabelSource::Segment { ref segment, .. } if segment == "condyle"
    ));
    assert_eq!(
        s.cases[0].labels["tb"].describe(),
        format!("segment \"temporal bone\" of {}", seg.display())
    );
    assert_same_cases(&native, &s.load(&t).unwrap(), "Slicer segments");
    // The manifest round-trips.
    let saved = dir.path().join("saved.json");
    s.save_manifest(&saved).unwrap();
    assert_eq!(DatasetSpec::open(&saved).unwrap(), s);
    // Slicer may crop a segmentation to its extent ("crop to minimum extent"): a sub-grid of
    // the image is placed on it. Here the negative volume alone, cropped to its bounding box.
    let (l, g) = (lm.data(), lm.geometry());
    let (mut lo, mut hi) = (g.shape(), [0usize; 3]);
    for ((i, j, k), v) in l.indexed_iter() {
        if *v == 3 {
            for (a, x) in [i, j, k].into_iter().enumerate() {
                lo[a] = lo[a].min(x);
                hi[a] = hi[a].max(x + 1);
            }
        }
    }
    assert!(
        lo.iter().all(|x| *x > 0),
        "the crop must start inside the image"
    );
    assert_ne!(hi, g.shape());
    let crop = l
        .slice(ndarray::s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]])
        .mapv(|v| u8::from(v == 3));
    let mut a = g.affine();
    let origin = g.voxel_to_world([lo[0] as f64, lo[1] as f64, lo[2] as f64]);
    for r in 0..3 {
        a[r][3] = origin[r];
    }
    let shape = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];
    let cropped = Volume::new(crop, negvol_volume::Geometry::new(shape, a).unwrap()).unwrap();
    let nv_only = negvol_volume::NrrdWriteOptions {
        key_values: keys(&[("negative volume", 1)]),
        ..Default::default()
    };
    let crop_path = src.join("case_000/nv.seg.nrrd");
    negvol_volume::write_nrrd_with(&crop_path, &cropped, &nv_only).unwrap();
    let crop_label =
        serde_json::json!({"path": "ph/case_000/nv.seg.nrrd", "segment": "negative volume"});
    let doc = serde_json::json!({"cases": [{"id": "case_000",
        "image": "ph/case_000/image.nii.gz",
        "labels": {"mc": label("condyle"), "tb": label("temporal bone"),
                   "nv": crop_label}}]});
    std::fs::write(&manifest, doc.to_string()).unwrap();
    let s = DatasetSpec::open(&manifest).unwrap();
    assert_same_cases(&native, &s.load(&t).unwrap(), "cropped Slicer segment");
    // A grid shifted by half a voxel is refused, and so is one sticking out of the image.
    for shift in [0.5, -(lo[0] as f64) - 1.0] {
        let mut b = a;
        // Along the image's first axis (its last row is [0, 0, 0, 1]: no change there).
        for (row, image_row) in b.iter_mut().zip(g.affine()) {
            row[3] += shift * image_row[0];
        }
        let moved = Volume::new(
            cropped.data().clone(),
            negvol_volume::Geometry::new(shape, b).unwrap(),
        )
        .unwrap();
        negvol_volume::write_nrrd_with(&crop_path, &moved, &nv_only).unwrap();
        let e = s.load(&t).unwrap_err().to_string();
        assert!(
            e.contains("case_000") && e.contains("does not match the image grid"),
            "{shift}: {e}"
        );
    }
    // An unknown segment names the ones there are.
    negvol_volume::write_nrrd_with(&seg, &lm, &o).unwrap();
    let doc = serde_json::json!({"cases": [{"id": "c", "image": "ph/case_000/image.nii.gz",
        "labels": {"mc": label("fossa")}}]});
    std::fs::write(&manifest, doc.to_string()).unwrap();
    let e = DatasetSpec::open(&manifest)
        .unwrap()
        .load(&targets(&["mc"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"fossa\"") && e.contains("condyle, temporal bone, negative volume"),
        "{e}"
    );
    // "segment" needs an NRRD and excludes the other keys.
    let parse = |s: &str| serde_json::from_str::<LabelSource>(s);
    for bad in [
        r#"{"path": "s.nii.gz", "segment": "condyle"}"#,
        r#"{"path": "s.seg.nrrd", "segment": "condyle", "values": [1]}"#,
        r#"{"path": "s.seg.nrrd", "segment": "condyle", "frame": "lps"}"#,
        r#"{"path": "s.seg.nrrd", "segment": ""}"#,
    ] {
        assert!(parse(bad).is_err(), "{bad} parsed");
    }
    assert!(parse(r#"{"path": "s.nhdr", "segment": "x"}"#).is_ok());
}
