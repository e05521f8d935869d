//! Loss values against hand-computed cases, gradients against finite differences (f64), the
//! paper Dice's gradient against its closed form, deep supervision, errors and JSON.

use approx::assert_relative_eq;
use negvol_losses::{
    downsample_target, DeepSupervision, DiceVariant, LossConfig, LossError, LossKind,
};
use tch::{Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

fn cfg(kind: LossKind) -> LossConfig {
    LossConfig {
        smooth: 0.0,
        ..LossConfig::new(kind)
    }
}

fn value(c: &LossConfig, logits: &Tensor, target: &Tensor) -> f64 {
    c.compute(logits, target).unwrap().double_value(&[])
}

/// Two voxels, two classes: voxel a has logits (0, 0) -> p = (1/2, 1/2), label 1;
/// voxel b has logits (ln 3, 0) -> p = (3/4, 1/4), label 0.
fn two_voxels() -> (Tensor, Tensor) {
    let logits = Tensor::from_slice(&[0.0, 3f64.ln(), 0.0, 0.0]).view([1, 2, 2]);
    let target = Tensor::from_slice(&[1i64, 0]).view([1, 2]);
    (logits, target)
}

#[test]
fn cross_entropy_hand_values() {
    let (l, t) = two_voxels();
    let ln2 = 2f64.ln();
    let ln43 = (4.0f64 / 3.0).ln();
    assert_relative_eq!(
        value(&cfg(LossKind::Ce), &l, &t),
        (ln2 + ln43) / 2.0,
        epsilon = 1e-12
    );
    let weighted = LossConfig {
        class_weights: Some(vec![1.0, 3.0]),
        ..cfg(LossKind::Ce)
    };
    assert_relative_eq!(
        value(&weighted, &l, &t),
        (3.0 * ln2 + ln43) / 4.0,
        epsilon = 1e-12
    );
    // ignore index: only voxel a counts
    let t_ign = Tensor::from_slice(&[1i64, 255]).view([1, 2]);
    let ign = LossConfig {
        ignore_index: Some(255),
        ..cfg(LossKind::Ce)
    };
    assert_relative_eq!(value(&ign, &l, &t_ign), ln2, epsilon = 1e-12);
    // an explicit mask does the same
    let mask = Tensor::from_slice(&[true, false]).view([1, 2]);
    let v = cfg(LossKind::Ce)
        .compute_masked(&l, &t, Some(&mask))
        .unwrap()
        .double_value(&[]);
    assert_relative_eq!(v, ln2, epsilon = 1e-12);
    // everything masked: 0, not NaN
    let none = Tensor::from_slice(&[false, false]).view([1, 2]);
    let v = cfg(LossKind::Ce)
        .compute_masked(&l, &t, Some(&none))
        .unwrap()
        .double_value(&[]);
    assert_eq!(v, 0.0);
}

#[test]
fn focal_hand_values() {
    let (l, t) = two_voxels();
    let f = value(&cfg(LossKind::Focal { gamma: 2.0 }), &l, &t);
    let expected = (0.25 * 2f64.ln() + 0.0625 * (4.0f64 / 3.0).ln()) / 2.0;
    assert_relative_eq!(f, expected, epsilon = 1e-12);
    // gamma = 0 is cross-entropy
    let f0 = value(&cfg(LossKind::Focal { gamma: 0.0 }), &l, &t);
    assert_relative_eq!(f0, value(&cfg(LossKind::Ce), &l, &t), epsilon = 1e-12);
}

#[test]
fn soft_dice_hand_values() {
    // foreground: p1 = (1/2, 1/4), g1 = (1, 0): I = 1/2, sum p = 3/4, sum g = 1
    let (l, t) = two_voxels();
    assert_relative_eq!(
        value(&cfg(LossKind::Dice), &l, &t),
        1.0 - 1.0 / 1.75,
        epsilon = 1e-12
    );
    // with smoothing s = 1: (1 + 1) / (1.75 + 1)
    let sm = LossConfig {
        smooth: 1.0,
        ..cfg(LossKind::Dice)
    };
    assert_relative_eq!(value(&sm, &l, &t), 1.0 - 2.0 / 2.75, epsilon = 1e-12);
    // background too: p0 = (1/2, 3/4), g0 = (0, 1): D0 = 1.5 / 2.25 = 2/3; mean with 4/7
    let bg = LossConfig {
        include_background: true,
        ..cfg(LossKind::Dice)
    };
    assert_relative_eq!(
        value(&bg, &l, &t),
        1.0 - (2.0 / 3.0 + 4.0 / 7.0) / 2.0,
        epsilon = 1e-12
    );
    // class weights (2, 1) on (background, foreground)
    let w = LossConfig {
        class_weights: Some(vec![2.0, 1.0]),
        ..bg.clone()
    };
    assert_relative_eq!(
        value(&w, &l, &t),
        1.0 - (2.0 * 2.0 / 3.0 + 4.0 / 7.0) / 3.0,
        epsilon = 1e-12
    );
    // squared probabilities (Milletari): 2 * 1/2 / (1/4 + 1/16 + 1)
    let sq = LossConfig {
        squared_pred: true,
        ..cfg(LossKind::Dice)
    };
    assert_relative_eq!(value(&sq, &l, &t), 1.0 - 1.0 / 1.3125, epsilon = 1e-12);
    // Dice + CE with alpha and beta
    let dce = cfg(LossKind::DiceCe {
        alpha: 2.0,
        beta: 0.5,
        dice: DiceVariant::Soft,
    });
    let expected = 2.0 * (1.0 - 1.0 / 1.75) + 0.5 * value(&cfg(LossKind::Ce), &l, &t);
    assert_relative_eq!(value(&dce, &l, &t), expected, epsilon = 1e-12);
}

#[test]
fn batch_dice_versus_per_sample() {
    // sample 0: prediction = target (confident); sample 1: completely wrong
    let big = 30.0;
    let logits = Tensor::from_slice(&[
        -big, big, big, -big, // sample 0: class 0 over 2 voxels, then class 1
        big, -big, -big, big, // sample 1
    ]);
    let logits = logits.view([2, 2, 2]);
    // sample 0: class-1 logits (big, -big) -> predicts (1, 0); sample 1: class-1 logits (-big, big) -> (0, 1)
    let target = Tensor::from_slice(&[1i64, 0, 1, 0]).view([2, 2]);
    let per = value(&cfg(LossKind::Dice), &logits, &target);
    // per-sample: D = 1 and D = 0 -> loss 0.5
    assert_relative_eq!(per, 0.5, epsilon = 1e-9);
    // pooled: I = 1, sum p = 2, sum g = 2 -> D = 1/2
    let batch = LossConfig {
        batch_dice: true,
        ..cfg(LossKind::Dice)
    };
    assert_relative_eq!(value(&batch, &logits, &target), 0.5, epsilon = 1e-9);
    // uneven case: sample 1 has an extra false positive voxel -> pooled differs from mean
    let target2 = Tensor::from_slice(&[1i64, 0, 0, 0]).view([2, 2]);
    let per2 = value(&cfg(LossKind::Dice), &logits, &target2);
    // sample 1: I = 0, sum p = 1, sum g = 0 -> D = 0; mean (1 + 0)/2
    assert_relative_eq!(per2, 0.5, epsilon = 1e-9);
    let pooled2 = value(&batch, &logits, &target2);
    // pooled: I = 1, sum p = 2, sum g = 1 -> D = 2/3
    assert_relative_eq!(pooled2, 1.0 / 3.0, epsilon = 1e-9);
}

#[test]
fn tversky_hand_values_and_dice_equivalence() {
    let (l, t) = two_voxels();
    // TP = 1/2, FP = 1/4, FN = 1/2
    let tv = value(
        &cfg(LossKind::Tversky {
            alpha: 0.3,
            beta: 0.7,
        }),
        &l,
        &t,
    );
    assert_relative_eq!(
        tv,
        1.0 - 0.5 / (0.5 + 0.3 * 0.25 + 0.7 * 0.5),
        epsilon = 1e-12
    );
    let half = value(
        &cfg(LossKind::Tversky {
            alpha: 0.5,
            beta: 0.5,
        }),
        &l,
        &t,
    );
    assert_relative_eq!(half, value(&cfg(LossKind::Dice), &l, &t), epsilon = 1e-12);
}

#[test]
fn paper_dice_forward_is_the_hard_dice() {
    // 4 voxels, target (1, 1, 0, 0), prediction argmax (1, 0, 1, 0): I = 1, S = 2 + 2 + 2e-6
    let z = [2.0, -1.0, 0.5, -3.0];
    let mut data = Vec::new();
    data.extend(z.iter().map(|_| 0.0)); // class 0 logits
    data.extend(z); // class 1 logits
    let logits = Tensor::from_slice(&data).view([1, 2, 4]);
    let target = Tensor::from_slice(&[1i64, 1, 0, 0]).view([1, 4]);
    let v = value(&LossConfig::new(LossKind::PaperDice), &logits, &target);
    assert_relative_eq!(v, 1.0 - 2.0 / (4.0 + 2e-6), epsilon = 1e-12);
    // the paper's D+CE = paper Dice + CE
    let dce = value(&LossConfig::paper_dice_ce(), &logits, &target);
    assert_relative_eq!(
        dce,
        v + value(&cfg(LossKind::Ce), &logits, &target),
        epsilon = 1e-12
    );
}

#[test]
fn paper_dice_gradient_is_milletaris_at_the_hard_quantities() {
    // Binary: dL/dp1 = -dD, dL/dp0 = +dD with dD = 2 g / S - 4 p1 I / S^2 (paper's backward),
    // through the softmax: dL/dz1 = -2 dD p0 p1, dL/dz0 = +2 dD p0 p1.
    tch::manual_seed(3);
    let n = 40;
    let logits = Tensor::randn([1, 2, n], F64).set_requires_grad(true);
    let target = Tensor::randint(2, [1, n], (Kind::Int64, Device::Cpu));
    let loss = LossConfig::new(LossKind::PaperDice)
        .compute(&logits, &target)
        .unwrap();
    loss.backward();
    let grad: Vec<f64> = Vec::try_from(logits.grad().flatten(0, -1)).unwrap();
    let z: Vec<f64> = Vec::try_from(logits.detach().flatten(0, -1)).unwrap();
    let g: Vec<i64> = Vec::try_from(target.flatten(0, -1)).unwrap();
    let (mut inter, mut hs, mut gs) = (0.0, 0.0, 0.0);
    let mut p1 = vec![0.0; n as usize];
    for v in 0..n as usize {
        p1[v] = 1.0 / (1.0 + (z[v] - z[n as usize + v]).exp());
        let h = if z[n as usize + v] > z[v] { 1.0 } else { 0.0 };
        inter += h * g[v] as f64;
        hs += h;
        gs += g[v] as f64;
    }
    let s = hs + gs + 2e-6;
    for v in 0..n as usize {
        let dd = 2.0 * g[v] as f64 / s - 4.0 * p1[v] * inter / (s * s);
        let core = 2.0 * dd * p1[v] * (1.0 - p1[v]);
        assert_relative_eq!(grad[v], core, epsilon = 1e-12);
        assert_relative_eq!(grad[n as usize + v], -core, epsilon = 1e-12);
    }
}

/// Central finite differences of `f` at `x` (f64), element by element.
fn finite_difference(f: &dyn Fn(&Tensor) -> f64, x: &Tensor) -> Vec<f64> {
    let h = 1e-6;
    let flat: Vec<f64> = Vec::try_from(x.flatten(0, -1)).unwrap();
    let mut out = Vec::with_capacity(flat.len());
    for i in 0..flat.len() {
        let mut plus = flat.clone();
        plus[i] += h;
        let mut minus = flat.clone();
        minus[i] -= h;
        let fp = f(&Tensor::from_slice(&plus).view(x.size().as_slice()));
        let fm = f(&Tensor::from_slice(&minus).view(x.size().as_slice()));
        out.push((fp - fm) / (2.0 * h));
    }
    out
}

#[test]
fn gradients_match_finite_differences() {
    tch::manual_seed(7);
    let shape = [2i64, 3, 3, 2, 2];
    let logits = Tensor::randn(shape, F64);
    let target = Tensor::randint(3, [2, 3, 2, 2], (Kind::Int64, Device::Cpu));
    // one ignored voxel
    let _ = target.get(0).get(0).get(0).get(0).fill_(9);
    let kinds = vec![
        LossKind::Ce,
        LossKind::Dice,
        LossKind::DiceCe {
            alpha: 0.7,
            beta: 1.3,
            dice: DiceVariant::Soft,
        },
        LossKind::Focal { gamma: 2.0 },
        LossKind::Focal { gamma: 0.5 },
        LossKind::Tversky {
            alpha: 0.3,
            beta: 0.7,
        },
    ];
    let mut configs = Vec::new();
    for k in kinds {
        configs.push(LossConfig {
            ignore_index: Some(9),
            ..LossConfig::new(k.clone())
        });
        configs.push(LossConfig {
            ignore_index: Some(9),
            class_weights: Some(vec![0.5, 1.0, 2.0]),
            include_background: true,
            batch_dice: true,
            smooth: 1.0,
            squared_pred: true,
            ..LossConfig::new(k)
        });
    }
    for c in configs {
        let x = logits.copy().set_requires_grad(true);
        c.compute(&x, &target).unwrap().backward();
        let auto: Vec<f64> = Vec::try_from(x.grad().flatten(0, -1)).unwrap();
        let f = |z: &Tensor| c.compute(z, &target).unwrap().double_value(&[]);
        let fd = finite_difference(&f, &logits);
        for (i, (a, n)) in auto.iter().zip(&fd).enumerate() {
            assert!(
                (a - n).abs() < 1e-6 * (1.0 + n.abs()),
                "{c:?}: element {i}: autograd {a} vs fd {n}"
            );
        }
        // the ignored voxel gets no gradient
        for k in 0..3 {
            assert_eq!(auto[(k * 12) as usize], 0.0, "{c:?}");
        }
    }
}

#[test]
fn deep_supervision_weights_and_sum() {
    let ds = DeepSupervision::nnunet(3).unwrap();
    assert_relative_eq!(ds.weights[0], 2.0 / 3.0, epsilon = 1e-15);
    assert_relative_eq!(ds.weights[1], 1.0 / 3.0, epsilon = 1e-15);
    assert_eq!(ds.weights[2], 0.0);
    assert_eq!(DeepSupervision::nnunet(1).unwrap().weights, vec![1.0]);
    let h = DeepSupervision::halving(3).unwrap();
    assert_relative_eq!(h.weights[2], 0.25 / 1.75, epsilon = 1e-15);
    assert!(DeepSupervision::new(vec![0.0, 0.0]).is_err());

    tch::manual_seed(11);
    let target = Tensor::randint(2, [1, 8, 8, 4], (Kind::Int64, Device::Cpu));
    let outs = vec![
        Tensor::randn([1, 2, 8, 8, 4], F64),
        Tensor::randn([1, 2, 4, 4, 2], F64),
        Tensor::randn([1, 2, 2, 2, 1], F64),
    ];
    let loss = LossConfig::default();
    let total = ds.compute(&loss, &outs, &target).unwrap().double_value(&[]);
    let l0 = value(&loss, &outs[0], &target);
    let t1 = downsample_target(&target, &[4, 4, 2]).unwrap();
    let l1 = value(&loss, &outs[1], &t1);
    assert_relative_eq!(total, 2.0 / 3.0 * l0 + 1.0 / 3.0 * l1, epsilon = 1e-12);
    // nearest down-sampling keeps the even voxels
    let expected = target.slice(1, 0, 8, 2).slice(2, 0, 8, 2).slice(3, 0, 4, 2);
    assert!(t1.equal(&expected));
    assert!(ds.compute(&loss, &outs[..2], &target).is_err());
}

#[test]
fn errors_are_reported() {
    let (l, t) = two_voxels();
    let bad = Tensor::from_slice(&[1i64, 2]).view([1, 2]);
    let err = LossConfig::default().compute(&l, &bad).unwrap_err();
    assert!(
        matches!(
            err,
            LossError::Label {
                found: 2,
                classes: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = LossConfig::default()
        .compute(&l, &t.view([2, 1]))
        .unwrap_err();
    assert!(matches!(err, LossError::Shape { .. }), "{err}");
    let w = LossConfig {
        class_weights: Some(vec![1.0]),
        ..LossConfig::default()
    };
    assert!(matches!(w.compute(&l, &t), Err(LossError::Config(_))));
    let float_target = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
    assert!(matches!(
        LossConfig::default().compute(&l, &float_target),
        Err(LossError::TargetKind(_))
    ));
    let nan = Tensor::from_slice(&[f64::NAN, 0.0, 0.0, 0.0]).view([1, 2, 2]);
    assert!(matches!(
        LossConfig::new(LossKind::Ce).compute(&nan, &t),
        Err(LossError::NonFinite { .. })
    ));
    let neg = LossConfig::new(LossKind::Focal { gamma: -1.0 });
    assert!(matches!(neg.compute(&l, &t), Err(LossError::Config(_))));
    // a target with a channel axis of 1 is accepted
    let v = value(&cfg(LossKind::Ce), &l, &t.view([1, 1, 2]));
    assert!(v.is_finite());
}

#[test]
fn json_configuration() {
    let c: LossConfig =
        serde_json::from_str(r#"{"loss": "dice-ce", "alpha": 2, "beta": 0.5, "batch_dice": true}"#)
            .unwrap();
    assert_eq!(
        c.kind,
        LossKind::DiceCe {
            alpha: 2.0,
            beta: 0.5,
            dice: DiceVariant::Soft
        }
    );
    assert!(c.batch_dice && !c.include_background && c.validate);
    assert_eq!(c.smooth, 1e-5);
    let c: LossConfig = serde_json::from_str(r#"{"loss": "dice-ce", "dice": "paper"}"#).unwrap();
    assert_eq!(c, LossConfig::paper_dice_ce());
    let c: LossConfig = serde_json::from_str(r#"{"loss": "tversky"}"#).unwrap();
    assert_eq!(
        c.kind,
        LossKind::Tversky {
            alpha: 0.3,
            beta: 0.7
        }
    );
    let c: LossConfig =
        serde_json::from_str(r#"{"loss": "paper-dice", "ignore_index": 255}"#).unwrap();
    assert_eq!(c.ignore_index, Some(255));
    assert!(serde_json::from_str::<LossConfig>(r#"{"loss": "hinge"}"#).is_err());
    // typos and fields of another loss kind are rejected
    let err = serde_json::from_str::<LossConfig>(r#"{"loss": "ce", "ignore_idx": 3}"#).unwrap_err();
    assert!(err.to_string().contains("ignore_idx"), "{err}");
    assert!(serde_json::from_str::<LossConfig>(r#"{"loss": "dice", "gamma": 2}"#).is_err());
    let c: LossConfig =
        serde_json::from_str(r#"{"loss": "focal", "gamma": 1, "smooth": 0}"#).unwrap();
    assert_eq!(c.kind, LossKind::Focal { gamma: 1.0 });
    assert_eq!(c.smooth, 0.0);
    let round: LossConfig =
        serde_json::from_str(&serde_json::to_string(&LossConfig::default()).unwrap()).unwrap();
    assert_eq!(round, LossConfig::default());
}

#[test]
fn half_precision_logits_are_computed_in_float() {
    let (l, t) = two_voxels();
    let v = value(&cfg(LossKind::Ce), &l.to_kind(Kind::BFloat16), &t);
    assert_relative_eq!(v, value(&cfg(LossKind::Ce), &l, &t), epsilon = 1e-2);
}
