//! How fast one thread makes training batches: the data side of training, which must keep up
//! with the GPU. One patch of the paper's size (112x144x64) from a 120x150x70 case (the
//! paper's VOI), with the paper's augmentation, nnU-Net's (default), none, and the paper's
//! with the image read by trilinear interpolation instead of (the default) Keys cubic
//! convolution.
//!
//! `cargo bench -p negvol-train --bench sampler -- --warm-up-time 1 --measurement-time 5`
//! The batches/s of one thread times `SamplerConfig::workers` is the loader's ceiling; compare
//! it with `train-bench`'s steps/s on the GPU to size `workers`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::Array3;
use negvol_train::augment::{sample_patch, AugmentConfig, SpatialTransform};
use negvol_train::interp::Interpolation;
use negvol_train::sampler::{make_batch, PreparedCase, SamplerConfig};

fn case() -> PreparedCase {
    let (ni, nj, nk) = (120usize, 150usize, 70usize);
    let c = [60.0, 75.0, 35.0];
    let lab = Array3::from_shape_fn((ni, nj, nk), |(i, j, k)| {
        let d = ((i as f64 - c[0]).powi(2) / 900.0
            + (j as f64 - c[1]).powi(2) / 1200.0
            + (k as f64 - c[2]).powi(2) / 300.0)
            .sqrt();
        u8::from(d <= 1.0) + 2 * u8::from(k > 55)
    });
    let img = Array3::from_shape_fn((ni, nj, nk), |(i, j, k)| {
        let base = [-0.8f32, 0.9, 0.7][lab[[i, j, k]].min(2) as usize];
        base + 0.05 * (((i * 31 + j * 17 + k * 7) % 13) as f32 / 13.0 - 0.5)
    });
    PreparedCase::new("bench", img, lab, [0.4; 3]).expect("valid case")
}

fn bench(c: &mut Criterion) {
    let cases = vec![case()];
    let cfg = SamplerConfig {
        workers: 0,
        ..SamplerConfig::default()
    };
    let mut g = c.benchmark_group("make_batch_112x144x64");
    g.sample_size(10);
    for (name, aug) in [
        ("none", AugmentConfig::none()),
        ("paper", AugmentConfig::paper()),
        ("nnunet", AugmentConfig::default()),
        (
            "paper_linear",
            AugmentConfig {
                image_interpolation: Interpolation::Linear,
                ..AugmentConfig::paper()
            },
        ),
    ] {
        let mut b = 0usize;
        g.bench_function(BenchmarkId::from_parameter(name), |bn| {
            bn.iter(|| {
                b += 1;
                make_batch(&cases, &cfg, &aug, 7, 0, b)
            })
        });
    }
    g.finish();

    // The image read alone: one patch through a fixed 10-degree rotation (every read off the
    // grid), trilinear against Keys cubic convolution.
    let c0 = &cases[0];
    let (s, co) = 10f64.to_radians().sin_cos();
    let mut rot = SpatialTransform::identity();
    rot.matrix = [[co, -s, 0.0], [s, co, 0.0], [0.0, 0.0, 1.0]];
    let mut g = c.benchmark_group("sample_patch_112x144x64_rot10");
    g.sample_size(10);
    for interp in [Interpolation::Linear, Interpolation::Cubic] {
        let t = rot.clone().with_image_interpolation(interp);
        g.bench_function(BenchmarkId::from_parameter(format!("{interp:?}")), |bn| {
            bn.iter(|| {
                sample_patch(
                    &c0.image.view(),
                    &c0.label.view(),
                    [60.0, 75.5, 35.5],
                    [112, 144, 64],
                    &t,
                    c0.fill,
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
