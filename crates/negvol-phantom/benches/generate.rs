//! Phantom generation speed. Run with short times on the shared box, e.g.
//! `cargo bench -p negvol-phantom -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, Criterion};
use negvol_phantom::{generate, PhantomConfig};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("generate");
    g.sample_size(10);
    for n in [96usize, 128] {
        let cfg = PhantomConfig {
            shape: Some([n; 3]),
            ..PhantomConfig::default()
        };
        g.bench_function(format!("{n}^3"), |b| b.iter(|| generate(&cfg, 3).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
