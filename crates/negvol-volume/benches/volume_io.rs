//! NIfTI read/write, reorientation, resampling and voxelization on a 128^3 volume.
//! Run with short times on shared machines:
//! `cargo bench -p negvol-volume --bench volume_io -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::Array3;
use negvol_volume::*;

fn volume() -> Volume<i16> {
    let n = 128;
    let g = Geometry::new(
        [n, n, n],
        [
            [-0.4, 0.0, 0.0, 25.0],
            [0.0, -0.4, 0.0, 25.0],
            [0.0, 0.0, 0.4, -25.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
    )
    .unwrap();
    let a = Array3::from_shape_fn((n, n, n), |(i, j, k)| {
        let r2 = (i as f64 - 64.0).powi(2) + (j as f64 - 60.0).powi(2) + (k as f64 - 70.0).powi(2);
        if r2 < 1600.0 {
            1200
        } else {
            -1000 + ((i * 7 + j * 3 + k) % 50) as i16
        }
    });
    Volume::new(a, g).unwrap()
}

fn bench(c: &mut Criterion) {
    let v = volume();
    let dir = tempfile::tempdir().unwrap();
    let nii = dir.path().join("v.nii");
    let gz = dir.path().join("v.nii.gz");
    write_nifti(&nii, &v).unwrap();
    write_nifti(&gz, &v).unwrap();
    let mut g = c.benchmark_group("nifti_128^3_i16");
    g.sample_size(10);
    g.bench_function("read_nii_as_i16", |b| {
        b.iter(|| read_nifti::<i16>(&nii).unwrap())
    });
    let bytes = std::fs::read(&nii).unwrap();
    g.bench_function("std_fs_read_only", |b| {
        b.iter(|| std::fs::read(&nii).unwrap())
    });
    g.bench_function("read_from_bytes_as_i16", |b| {
        b.iter(|| read_nifti_from_bytes::<i16>(&bytes, &NiftiReadOptions::default()).unwrap())
    });
    g.bench_function("read_nii_as_f32", |b| {
        b.iter(|| read_nifti::<f32>(&nii).unwrap())
    });
    g.bench_function("read_nii_gz_as_f32", |b| {
        b.iter(|| read_nifti::<f32>(&gz).unwrap())
    });
    let out = dir.path().join("o.nii");
    let outgz = dir.path().join("o.nii.gz");
    g.bench_function("write_nii", |b| b.iter(|| write_nifti(&out, &v).unwrap()));
    g.bench_function("write_nii_gz", |b| {
        b.iter(|| write_nifti(&outgz, &v).unwrap())
    });
    g.finish();
    let mut g = c.benchmark_group("geometry_128^3");
    g.sample_size(10);
    g.bench_function("reorient_to_ras", |b| {
        b.iter(|| reorient(&v, "RAS").unwrap())
    });
    let f = v.map(|&x| x as f32);
    g.bench_function("resample_linear_0.5mm", |b| {
        b.iter(|| resample_to_spacing(&f, [0.5; 3], Interpolation::Linear).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
