//! The optimiser's share of a training step: one `grad_norm` + `step` (Adam, the paper's lr
//! 1e-4 and weight decay 0.01) on the paper's networks (`unet3d`, `vnet`, default widths, f32,
//! CPU), on the flat buffers (the GPU default) and one parameter at a time (the CPU default),
//! side by side. The gradients are filled once with random values and not zeroed
//! between iterations, so only the optimiser is timed.
//!
//! `cargo bench -p negvol-train --bench optimizer -- --warm-up-time 1 --measurement-time 3`
//!
//! On a GPU the per-parameter path costs about 7 kernel launches per parameter tensor plus one
//! norm each, and the flat path a handful in all; on the CPU both are mostly memory-bound
//! arithmetic over the same bytes, so the CPU figures only bound the host-side overhead.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use negvol_nets::{NetConfig, Unet3dConfig, VnetConfig};
use negvol_train::optim::{Optimizer, OptimizerConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// The network's variables with random gradients, and an optimiser over them.
fn setup(net: &NetConfig, flat: bool) -> (VarStore, Optimizer, usize, i64) {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let _net = negvol_nets::build(&vs.root(), net).expect("the paper's network builds");
    let cfg = OptimizerConfig::default();
    let opt = if flat {
        Optimizer::new_flat(&cfg, &vs)
    } else {
        Optimizer::new_per_parameter(&cfg, &vs)
    }
    .expect("valid optimiser settings");
    assert_eq!(opt.is_flat(), flat);
    let params = vs.trainable_variables();
    // d/dp sum(p * r) = r: random gradients in one backward pass.
    let loss = params
        .iter()
        .map(|p| (p * p.randn_like().detach()).sum(Kind::Float))
        .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
    loss.backward();
    let numel = params.iter().map(|p| p.numel() as i64).sum();
    (vs, opt, params.len(), numel)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("grad_norm_and_step");
    g.sample_size(10);
    for (name, net) in [
        ("unet3d", NetConfig::Unet3d(Unet3dConfig::default())),
        ("vnet", NetConfig::Vnet(VnetConfig::default())),
    ] {
        for flat in [true, false] {
            let (_vs, mut opt, tensors, numel) = setup(&net, flat);
            let path = if flat { "flat" } else { "per_parameter" };
            let id = BenchmarkId::new(name, format!("{path}/{tensors}_tensors/{numel}_params"));
            g.bench_function(id, |b| {
                b.iter(|| {
                    let n = opt.grad_norm();
                    opt.step();
                    n
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
