//! NV derivation on a 686^3 grid (the seed paper's CT size, 0.4 mm) with both joints of a
//! phantom embedded in it. Run briefly:
//! `cargo bench -p negvol --bench nv_derive -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::{s, Array3};
use negvol::{derive_nv, Method, NvConfig, SideSplit};
use negvol_phantom::{generate, PhantomConfig};
use negvol_volume::{Geometry, Volume};

const N: usize = 686;

fn embed(small: &Volume<bool>, off: [usize; 3], g: &Geometry) -> Volume<bool> {
    let mut a = Array3::from_elem([N; 3], false);
    let sh = small.geometry().shape();
    a.slice_mut(s![
        off[0]..off[0] + sh[0],
        off[1]..off[1] + sh[1],
        off[2]..off[2] + sh[2]
    ])
    .assign(small.data());
    Volume::new(a, g.clone()).expect("grid")
}

fn bench(c: &mut Criterion) {
    let pc = PhantomConfig {
        both_sides: true,
        ..Default::default()
    };
    let case = generate(&pc, 3).expect("phantom");
    let sg = case.mc.geometry();
    let sh = sg.shape();
    let off = [0, 1, 2].map(|a| (N - sh[a]) / 2);
    // Same world placement: move the origin back by the offset.
    let mut aff = sg.affine();
    let o = sg.voxel_to_world(off.map(|v| -(v as f64)));
    for r in 0..3 {
        aff[r][3] = o[r];
    }
    let g = Geometry::new([N; 3], aff).expect("grid");
    let mc = embed(&case.mc, off, &g);
    let tb = embed(&case.tb, off, &g);
    let mut group = c.benchmark_group("nv_derive_686");
    group.sample_size(10);
    for method in [Method::Rays, Method::Between] {
        let cfg = NvConfig {
            method,
            ..Default::default()
        };
        group.bench_function(format!("{method:?}"), |b| {
            b.iter(|| derive_nv(&mc, &tb, &cfg).expect("nv"))
        });
    }
    // The split found from the condyles (labelling MC's box, a second scan of the masks' box).
    let cfg = NvConfig {
        side_split: SideSplit::CondyleMidplane,
        ..Default::default()
    };
    group.bench_function("Rays condyle_midplane", |b| {
        b.iter(|| derive_nv(&mc, &tb, &cfg).expect("nv"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
