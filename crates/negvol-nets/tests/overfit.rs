//! A tiny network overfits one synthetic patch (a noisy sphere) on the CPU: the end-to-end check
//! that forward, loss, backward and optimiser fit together.

use negvol_losses::LossConfig;
use negvol_nets::{build, NetConfig, NormConfig, SegmentationNet, Unet3dConfig, UnetConfig};
use tch::nn::{OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

/// A 16^3 patch: a ball of radius 5 (label 1) in the middle, image = 2 * label - 1 + noise.
fn sphere_patch() -> (Tensor, Tensor) {
    let n = 16i64;
    let ar = Tensor::arange(n, (Kind::Float, Device::Cpu)) - 7.5;
    let x = ar.view([n, 1, 1]);
    let y = ar.view([1, n, 1]);
    let z = ar.view([1, 1, n]);
    let r2 = &x * &x + &y * &y + &z * &z;
    let label = r2.le(25.0).to_kind(Kind::Int64).view([1, n, n, n]);
    tch::manual_seed(5);
    let image = (label.to_kind(Kind::Float) * 2.0 - 1.0
        + Tensor::randn([1, n, n, n], (Kind::Float, Device::Cpu)) * 0.3)
        .view([1, 1, n, n, n]);
    (image, label)
}

fn dice_of(net: &dyn SegmentationNet, image: &Tensor, label: &Tensor) -> f64 {
    let pred = tch::no_grad(|| net.forward_t(image, false))
        .unwrap()
        .argmax(1, false);
    let p = pred.eq(1).to_kind(Kind::Double);
    let g = label.eq(1).to_kind(Kind::Double);
    let inter = (&p * &g).sum(Kind::Double).double_value(&[]);
    2.0 * inter / (p.sum(Kind::Double).double_value(&[]) + g.sum(Kind::Double).double_value(&[]))
}

fn overfit(cfg: NetConfig, loss: LossConfig, steps: usize, lr: f64) -> f64 {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let net = build(&vs.root(), &cfg).unwrap();
    let mut opt = tch::nn::Adam::default().build(&vs, lr).unwrap();
    let (image, label) = sphere_patch();
    for _ in 0..steps {
        let logits = net.forward_t(&image, true).unwrap();
        let l = loss.compute(&logits, &label).unwrap();
        opt.backward_step(&l);
    }
    dice_of(net.as_ref(), &image, &label)
}

#[test]
fn tiny_modern_unet_overfits_a_sphere() {
    let cfg = NetConfig::Unet(UnetConfig {
        features: vec![4, 8],
        norm: NormConfig::Instance,
        ..Default::default()
    });
    let dice = overfit(cfg, LossConfig::default(), 40, 1e-2);
    assert!(dice > 0.9, "Dice after overfitting {dice}");
}

#[test]
fn tiny_paper_unet3d_overfits_a_sphere_with_the_papers_dice_ce() {
    let cfg = NetConfig::Unet3d(Unet3dConfig {
        f_maps: vec![4, 8],
        num_groups: 2,
        ..Default::default()
    });
    let dice = overfit(cfg, LossConfig::paper_dice_ce(), 40, 1e-2);
    assert!(dice > 0.9, "Dice after overfitting {dice}");
}
