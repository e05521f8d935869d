//! Criterion benches of negvol-metrics on realistic mask pairs: a smooth star-shaped blob and
//! the same blob with a smooth boundary error and a small shift (not noise), at 64^3, 128^3,
//! 256^3 and 512x512x300, on one thread and on all threads.
//!
//! Run briefly on a shared machine, e.g.
//! `cargo bench -p negvol-metrics --bench metrics -- --warm-up-time 1 --measurement-time 3 128`
//! (set `NEGVOL_BENCH_LARGE=1` to include 256^3 and 512x512x300).

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ndarray::{Array3, Axis};
use negvol_metrics::edt::squared_edt;
use negvol_metrics::surface::{boundary_voxels, neighbour_codes};
use negvol_metrics::{dice, surface_distances, Connectivity, HdConvention, SurfaceKind};
use rayon::prelude::*;

/// Star-shaped blob: |x - c|_a <= 1 + sum of low-frequency harmonics of the direction.
fn blob(shape: [usize; 3], shift: [f64; 3], error: f64) -> Array3<bool> {
    let c: Vec<f64> = (0..3).map(|a| shape[a] as f64 / 2.0 + shift[a]).collect();
    let ax: Vec<f64> = (0..3).map(|a| shape[a] as f64 * 0.3).collect();
    let base = [
        ([1.3, -2.1, 0.7], 0.4, 0.06),
        ([-0.5, 1.1, 2.4], 1.9, 0.05),
        ([2.2, 0.3, -1.7], 3.1, 0.04),
    ];
    let err = [
        ([3.1, -4.2, 1.5], 0.2, error),
        ([-2.6, 1.9, 4.4], 2.5, error * 0.7),
    ];
    let mut m = Array3::from_elem(shape, false);
    m.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut slab)| {
            let x = (i as f64 - c[0]) / ax[0];
            for ((j, k), v) in slab.indexed_iter_mut() {
                let y = (j as f64 - c[1]) / ax[1];
                let z = (k as f64 - c[2]) / ax[2];
                let r = (x * x + y * y + z * z).sqrt() + 1e-9;
                let u = [x / r, y / r, z / r];
                let mut p = 0.0;
                for (f, ph, am) in base.iter().chain(err.iter()) {
                    p += am * (f[0] * u[0] + f[1] * u[1] + f[2] * u[2] + ph).sin();
                }
                *v = r <= 1.0 + p;
            }
        });
    m
}

fn pair(shape: [usize; 3]) -> (Array3<bool>, Array3<bool>) {
    (
        blob(shape, [0.0; 3], 0.0),
        blob(shape, [1.5, -1.0, 0.5], 0.03),
    )
}

fn sizes() -> Vec<[usize; 3]> {
    let mut s = vec![[64, 64, 64], [128, 128, 128]];
    if std::env::var_os("NEGVOL_BENCH_LARGE").is_some() {
        s.push([256, 256, 256]);
        s.push([512, 512, 300]);
    }
    s
}

fn bench(c: &mut Criterion) {
    let sp = [0.4, 0.4, 0.4];
    let pools = common::thread_pools();
    for shape in sizes() {
        let (r, p) = pair(shape);
        let name = format!("{}x{}x{}", shape[0], shape[1], shape[2]);
        let mut g = c.benchmark_group(format!("metrics/{name}"));
        g.sample_size(10);
        for (tn, pool) in &pools {
            let id = |what: &str| BenchmarkId::new(what, tn);
            g.bench_function(id("edt"), |b| {
                b.iter(|| pool.install(|| squared_edt(r.view(), sp).unwrap()))
            });
            g.bench_function(id("surface_voxels6"), |b| {
                b.iter(|| pool.install(|| boundary_voxels(r.view(), Connectivity::Six)))
            });
            g.bench_function(id("surfel_codes"), |b| {
                b.iter(|| pool.install(|| neighbour_codes(r.view())))
            });
            g.bench_function(id("dice"), |b| {
                b.iter(|| pool.install(|| dice(r.view(), p.view()).unwrap()))
            });
            let kind = SurfaceKind::Voxels(Connectivity::Six);
            g.bench_function(id("hd"), |b| {
                b.iter(|| {
                    pool.install(|| {
                        surface_distances(r.view(), p.view(), sp, kind)
                            .unwrap()
                            .hausdorff()
                    })
                })
            });
            g.bench_function(id("hd95"), |b| {
                b.iter(|| {
                    pool.install(|| {
                        surface_distances(r.view(), p.view(), sp, kind)
                            .unwrap()
                            .hausdorff_percentile(95.0, HdConvention::MaxOfDirected)
                            .unwrap()
                    })
                })
            });
            g.bench_function(id("assd"), |b| {
                b.iter(|| {
                    pool.install(|| {
                        surface_distances(r.view(), p.view(), sp, kind)
                            .unwrap()
                            .assd()
                    })
                })
            });
            g.bench_function(id("nsd"), |b| {
                b.iter(|| {
                    pool.install(|| {
                        surface_distances(r.view(), p.view(), sp, kind)
                            .unwrap()
                            .nsd(1.0)
                            .unwrap()
                    })
                })
            });
            g.bench_function(id("nsd_surfels"), |b| {
                b.iter(|| {
                    pool.install(|| {
                        surface_distances(r.view(), p.view(), sp, SurfaceKind::Surfels)
                            .unwrap()
                            .nsd(1.0)
                            .unwrap()
                    })
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
