//! Criterion benches of `negvol_metrics::components`: a 256^3 mask holding two balls (radius
//! 48 voxels, 16 voxels apart: long runs, few components) and a random 128^3 mask with 30 %
//! foreground (short runs, many components), on one thread and on all threads.
//!
//! Run briefly on a shared machine, e.g.
//! `cargo bench -p negvol-metrics --bench components -- --warm-up-time 1 --measurement-time 3`.
//! `benches/peers/components_peers.py` compares the same kinds of mask with
//! `scipy.ndimage.label` side by side.

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use ndarray::Array3;
use negvol_metrics::components::{
    component_stats, keep_largest_components, label_components, ComponentFilter,
};
use negvol_metrics::Connectivity;

/// Two balls of radius 48 voxels centred at i = 72 and i = 184 on the 256^3 grid's axis.
fn sphere_pair() -> Array3<bool> {
    Array3::from_shape_fn([256, 256, 256], |(i, j, k)| {
        [72.0, 184.0].iter().any(|ci| {
            let d = [i as f64 - ci, j as f64 - 127.5, k as f64 - 127.5];
            d[0] * d[0] + d[1] * d[1] + d[2] * d[2] <= 48.0 * 48.0
        })
    })
}

/// Each voxel foreground with probability 0.3 (a fixed LCG).
fn random30() -> Array3<bool> {
    let mut s = 0x0123_4567_89ab_cdefu64;
    Array3::from_shape_simple_fn([128, 128, 128], || {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (s >> 11) as f64 / (1u64 << 53) as f64 <= 0.3
    })
}

fn bench(c: &mut Criterion) {
    let pools = common::thread_pools();
    for (name, m) in [
        ("sphere_pair_256", sphere_pair()),
        ("random30_128", random30()),
    ] {
        let mut g = c.benchmark_group(format!("components/{name}"));
        g.sample_size(10);
        for (tn, pool) in &pools {
            let id = |what: &str| BenchmarkId::new(what, tn);
            for (cn, conn) in [("6", Connectivity::Six), ("26", Connectivity::TwentySix)] {
                g.bench_function(id(&format!("label{cn}")), |b| {
                    b.iter(|| pool.install(|| label_components(m.view(), conn).unwrap()))
                });
            }
            g.bench_function(id("stats26"), |b| {
                b.iter(|| {
                    pool.install(|| component_stats(m.view(), Connectivity::TwentySix).unwrap())
                })
            });
            let filter = ComponentFilter::default();
            g.bench_function(id("keep_largest26"), |b| {
                b.iter_batched_ref(
                    || m.clone(),
                    |x| pool.install(|| keep_largest_components(x.view_mut(), &filter).unwrap()),
                    BatchSize::LargeInput,
                )
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
