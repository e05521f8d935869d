//! A tiny network overfits one synthetic patch (a noisy sphere, and a TMJ phantom patch with
//! condyle and temporal bone) on the CPU: the end-to-end check that forward, loss, backward and
//! optimiser fit together.

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
    let (image, label) = sphere_patch();
    let (net, _vs) = fit(&cfg, &loss, steps, lr, &image, &label);
    dice_of(net.as_ref(), &image, &label)
}

fn fit(
    cfg: &NetConfig,
    loss: &LossConfig,
    steps: usize,
    lr: f64,
    image: &Tensor,
    label: &Tensor,
) -> (Box<dyn SegmentationNet>, VarStore) {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let net = build(&vs.root(), cfg).unwrap();
    let mut opt = tch::nn::Adam::default().build(&vs, lr).unwrap();
    for _ in 0..steps {
        let logits = net.forward_t(image, true).unwrap();
        let l = loss.compute(&logits, label).unwrap();
        opt.backward_step(&l);
    }
    (net, vs)
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

/// A 32^3 patch of a TMJ phantom (1.2 mm voxels): CT-like image (HU / 1000) and a 3-class label
/// map (0 background, 1 condyle, 2 temporal bone).
fn phantom_patch() -> (Tensor, Tensor) {
    let cfg = negvol_phantom::PhantomConfig {
        spacing: [1.2; 3],
        shape: Some([32, 32, 32]),
        ..Default::default()
    };
    let case = negvol_phantom::generate(&cfg, 11).unwrap();
    let hu: Vec<f32> = case.image.data().iter().map(|v| v / 1000.0).collect();
    let lab: Vec<i64> = case
        .mc
        .data()
        .iter()
        .zip(case.tb.data().iter())
        .map(|(m, t)| {
            if *m {
                1
            } else if *t {
                2
            } else {
                0
            }
        })
        .collect();
    assert!(
        lab.contains(&1) && lab.contains(&2),
        "patch holds both bones"
    );
    (
        Tensor::from_slice(&hu).view([1, 1, 32, 32, 32]),
        Tensor::from_slice(&lab).view([1, 32, 32, 32]),
    )
}

#[test]
fn tiny_modern_unet_overfits_a_phantom_patch_with_both_bones() {
    let cfg = NetConfig::Unet(UnetConfig {
        classes: 3,
        features: vec![4, 8],
        norm: NormConfig::Instance,
        ..Default::default()
    });
    let (image, label) = phantom_patch();
    let (net, _vs) = fit(&cfg, &LossConfig::default(), 60, 1e-2, &image, &label);
    let pred = tch::no_grad(|| net.forward_t(&image, false))
        .unwrap()
        .argmax(1, false);
    for class in [1i64, 2] {
        let p = pred.eq(class).to_kind(Kind::Double);
        let g = label.eq(class).to_kind(Kind::Double);
        let inter = (&p * &g).sum(Kind::Double).double_value(&[]);
        let dice = 2.0 * inter
            / (p.sum(Kind::Double).double_value(&[]) + g.sum(Kind::Double).double_value(&[]));
        eprintln!("class {class}: Dice {dice:.3}");
        assert!(dice > 0.85, "class {class}: Dice after overfitting {dice}");
    }
}
