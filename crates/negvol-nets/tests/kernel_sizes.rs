//! Per-stage convolution kernels of the modern U-Net (`UnetConfig::kernel_sizes`): shapes on an
//! anisotropic input, parameter counts against a hand formula, the receptive field along an axis
//! with kernel 1, checkpoints, and errors.

use approx::assert_abs_diff_eq;
use negvol_nets::{
    build, load_checkpoint, output_shape, parameter_count, save_weights, summarize, NetConfig,
    NetError, NormConfig, SegmentationNet, UnetConfig,
};
use tch::{nn::VarStore, Device, Kind, Tensor};

fn built(cfg: &NetConfig) -> (VarStore, Box<dyn SegmentationNet>) {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let net = build(&vs.root(), cfg).expect("build");
    (vs, net)
}

/// Conv with kernel `k` and bias, then a norm with weight and bias.
fn cn(k: [i64; 3], cin: i64, cout: i64) -> i64 {
    k.iter().product::<i64>() * cin * cout + cout + 2 * cout
}

/// Parameters of the modern U-Net with two convs per stage, per-stage kernels and strides.
fn unet_params(
    in_ch: i64,
    f: &[i64],
    kernels: &[[i64; 3]],
    strides: &[[i64; 3]],
    classes: i64,
    deep: bool,
) -> i64 {
    let mut n = 0;
    for s in 0..f.len() {
        let cin = if s == 0 { in_ch } else { f[s - 1] };
        n += cn(kernels[s], cin, f[s]) + cn(kernels[s], f[s], f[s]);
    }
    // decoder at the resolution of encoder stage s (deepest first): the transposed conv from
    // stage s + 1 (kernel = its stride), two convs with stage s's kernel, the head
    for s in (0..f.len() - 1).rev() {
        n += strides[s + 1].iter().product::<i64>() * f[s + 1] * f[s] + f[s];
        n += cn(kernels[s], 2 * f[s], f[s]) + cn(kernels[s], f[s], f[s]);
        if deep || s == 0 {
            n += f[s] * classes + classes;
        }
    }
    n
}

const KERNELS: [[i64; 3]; 3] = [[1, 3, 3], [3, 3, 1], [3, 3, 3]];
const STRIDES: [[i64; 3]; 3] = [[1, 1, 1], [1, 2, 2], [2, 2, 2]];

fn anisotropic() -> NetConfig {
    NetConfig::Unet(UnetConfig {
        features: vec![4, 8, 8],
        strides: Some(STRIDES.to_vec()),
        kernel_sizes: Some(KERNELS.to_vec()),
        deep_supervision: true,
        ..Default::default()
    })
}

#[test]
fn anisotropic_kernels_keep_the_shape_and_train() {
    let cfg = anisotropic();
    assert_eq!(cfg.size_divisor(), [2, 4, 4]);
    let (vs, net) = built(&cfg);
    // Few thick slices along i, like a thick-slice CT.
    let input = [2, 1, 6, 16, 12];
    let x = Tensor::randn(input, (Kind::Float, Device::Cpu));
    let outs = net.forward_deep(&x, true).unwrap();
    let shapes: Vec<Vec<i64>> = outs.iter().map(Tensor::size).collect();
    assert_eq!(
        shapes,
        vec![vec![2, 2, 6, 16, 12], vec![2, 2, 6, 8, 6]],
        "one output per decoder stage, highest resolution first"
    );
    assert_eq!(shapes[0], output_shape(&cfg, &input).unwrap());
    let loss = outs
        .iter()
        .map(|o| o.square().mean(Kind::Float))
        .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
    loss.backward();
    for (name, t) in vs.variables() {
        if !t.requires_grad() {
            continue;
        }
        let g = t.grad();
        assert!(g.defined(), "{name}: no gradient");
        let g = g.abs().sum(Kind::Double).double_value(&[]);
        assert!(g.is_finite() && g > 0.0, "{name}: gradient {g}");
    }
    // Eval mode: the same shape.
    let y = tch::no_grad(|| net.forward_t(&x, false)).unwrap();
    assert_eq!(y.size(), vec![2, 2, 6, 16, 12]);

    // Weight shapes: encoder stage s has kernel s; decoder stage d (deepest first) has the
    // kernel of the encoder stage at its resolution, n - 2 - d.
    let vars = vs.variables();
    for (name, want) in [
        ("encoder.stages.0.convs.0.conv.weight", vec![4, 1, 1, 3, 3]),
        ("encoder.stages.1.convs.0.conv.weight", vec![8, 4, 3, 3, 1]),
        ("encoder.stages.2.convs.1.conv.weight", vec![8, 8, 3, 3, 3]),
        ("decoder.stages.0.convs.0.conv.weight", vec![8, 16, 3, 3, 1]),
        ("decoder.stages.1.convs.1.conv.weight", vec![4, 4, 1, 3, 3]),
        ("decoder.transpconvs.0.weight", vec![8, 8, 2, 2, 2]),
        ("decoder.transpconvs.1.weight", vec![8, 4, 1, 2, 2]),
        ("decoder.seg_layers.0.weight", vec![2, 8, 1, 1, 1]),
    ] {
        assert_eq!(vars[name].size(), want, "{name}");
    }
}

#[test]
fn parameter_count_follows_the_kernels() {
    // Tiny config by hand: features [2, 4], kernels [1,3,3] (9 taps) and [3,1,5] (15 taps),
    // default strides, 2 classes, instance norm (weight + bias), no deep supervision:
    //   encoder 0: 9*1*2 + 2 + 4 = 24, 9*2*2 + 2 + 4 = 42
    //   encoder 1: 15*2*4 + 4 + 8 = 132, 15*4*4 + 4 + 8 = 252
    //   transposed conv 2x2x2: 8*4*2 + 2 = 66
    //   decoder 0 (stage 0's kernel): 9*4*2 + 2 + 4 = 78, 9*2*2 + 2 + 4 = 42
    //   head: 2*2 + 2 = 6
    let kernels = [[1, 3, 3], [3, 1, 5]];
    let tiny = NetConfig::Unet(UnetConfig {
        features: vec![2, 4],
        kernel_sizes: Some(kernels.to_vec()),
        ..Default::default()
    });
    let (vs, net) = built(&tiny);
    assert_eq!(parameter_count(&vs), 642);
    assert_eq!(
        unet_params(1, &[2, 4], &kernels, &[[1; 3], [2; 3]], 2, false),
        642
    );
    let layers: i64 = net.layers().iter().map(|l| l.params).sum();
    assert_eq!(layers, 642);
    // The kernels differ from 3x3x3: so does the count.
    let (vs3, _) = built(&NetConfig::Unet(UnetConfig {
        features: vec![2, 4],
        ..Default::default()
    }));
    assert_eq!(
        parameter_count(&vs3),
        unet_params(1, &[2, 4], &[[3; 3]; 2], &[[1; 3], [2; 3]], 2, false)
    );
    assert_ne!(parameter_count(&vs3), 642);

    // The anisotropic config, with deep supervision, and its summary.
    let cfg = anisotropic();
    let (vs, net) = built(&cfg);
    let want = unet_params(1, &[4, 8, 8], &KERNELS, &STRIDES, 2, true);
    assert_eq!(parameter_count(&vs), want);
    let s = summarize(&cfg, &[1, 1, 6, 16, 12], 10_000).unwrap();
    assert_eq!(s.parameters, want);
    assert_eq!(s.layers.iter().map(|l| l.params).sum::<i64>(), want);
    assert_eq!(s.layers, net.layers());
    let first = &s.layers[0];
    assert_eq!(first.name, "encoder.stages.0.convs.0.conv");
    assert!(
        first.description.contains("k=[1, 3, 3]") && first.description.contains("p=[0, 1, 1]"),
        "{first:?}"
    );
    let dec = s
        .layers
        .iter()
        .find(|l| l.name == "decoder.stages.0.convs.0.conv")
        .unwrap();
    assert!(
        dec.description.contains("k=[3, 3, 1]") && dec.description.contains("p=[1, 1, 0]"),
        "{dec:?}"
    );
    // Too large for the forward limit: the probe (twice the divisor) runs, and the kernels of
    // 1 do not change the shapes.
    let big = summarize(&cfg, &[1, 1, 24, 64, 64], 1000).unwrap();
    assert_eq!(big.output, vec![1, 2, 24, 64, 64]);
    assert_eq!(big.deep_outputs[1], vec![1, 2, 24, 32, 32]);
}

/// The output slices along i (the first spatial axis) that change when input slice `p` changes,
/// for a two-stage network with strides `[1,1,1]`, `[1,2,2]` (no down-sampling along i) and
/// kernels `kernels`, evaluated in eval mode with batch norm. Batch norm in evaluation is a
/// per-channel affine map, so only the convolutions move information between voxels; with
/// instance or group norm the statistics mix every voxel and no slice would be independent.
fn changed_slices(kernels: Option<Vec<[i64; 3]>>, p: i64) -> Vec<i64> {
    let cfg = NetConfig::Unet(UnetConfig {
        features: vec![4, 8],
        strides: Some(vec![[1, 1, 1], [1, 2, 2]]),
        kernel_sizes: kernels,
        norm: NormConfig::Batch,
        ..Default::default()
    });
    let (_vs, net) = built(&cfg);
    let n = 12;
    let x = Tensor::randn([1, 1, n, 8, 8], (Kind::Float, Device::Cpu));
    let x2 = x.copy();
    let _ = x2
        .narrow(2, p, 1)
        .f_add_(&Tensor::randn([1, 1, 1, 8, 8], (Kind::Float, Device::Cpu)))
        .unwrap();
    let y = tch::no_grad(|| net.forward_t(&x, false)).unwrap();
    let y2 = tch::no_grad(|| net.forward_t(&x2, false)).unwrap();
    let mut changed = Vec::new();
    for i in 0..n {
        let d = (y.narrow(2, i, 1) - y2.narrow(2, i, 1))
            .abs()
            .max()
            .double_value(&[]);
        if d > 1e-6 {
            // well above rounding: a real dependence
            assert!(d > 1e-4, "slice {i}: change {d} is ambiguous");
            changed.push(i);
        } else {
            assert_abs_diff_eq!(d, 0.0, epsilon = 1e-6);
        }
    }
    changed
}

#[test]
fn kernel_one_along_an_axis_does_not_mix_slices_along_it() {
    // Receptive field along i: two convs per encoder stage and two in the decoder stage (at
    // stage 0's resolution, with stage 0's kernel); a 3 along i widens it by 1 per conv,
    // a 1 not at all, and nothing is strided along i.
    let p = 5;
    let range = |r: i64| ((p - r).max(0)..=(p + r).min(11)).collect::<Vec<_>>();
    // Kernel 1 along i everywhere: every output slice sees only its own input slice.
    assert_eq!(changed_slices(Some(vec![[1, 3, 3], [1, 3, 3]]), p), vec![p]);
    // Kernel 1 along i at stage 0 (encoder and decoder) only: the two stage-1 convs, radius 2.
    assert_eq!(
        changed_slices(Some(vec![[1, 3, 3], [3, 3, 3]]), p),
        range(2)
    );
    // Kernel 1 along i at stage 1 only: two encoder + two decoder convs at stage 0, radius 4
    // (2 if the decoder took the deeper stage's kernel).
    assert_eq!(
        changed_slices(Some(vec![[3, 3, 3], [1, 3, 3]]), p),
        range(4)
    );
    // 3x3x3 everywhere (the default): radius 6, so the checks above can fail.
    assert_eq!(changed_slices(None, p), range(6));
}

#[test]
fn checkpoints_carry_the_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = anisotropic();
    let (vs, net) = built(&cfg);
    let path = dir.path().join("k.safetensors");
    save_weights(&vs, Some(&cfg), &path).unwrap();
    let (_vs2, net2) = load_checkpoint(&path, Device::Cpu).unwrap();
    assert_eq!(net2.config(), &cfg);
    let x = Tensor::randn([1, 1, 4, 8, 8], (Kind::Float, Device::Cpu));
    let y = tch::no_grad(|| net.forward_t(&x, false)).unwrap();
    let y2 = tch::no_grad(|| net2.forward_t(&x, false)).unwrap();
    assert!(y.equal(&y2));
}

#[test]
fn bad_kernels_do_not_build() {
    for kernels in [
        vec![[3, 3, 3]],
        vec![[3, 3, 3], [3, 3, 3], [3, 3, 3]],
        vec![[3, 3, 3], [2, 3, 3]],
        vec![[3, 0, 3], [3, 3, 3]],
        vec![[3, 3, 3], [3, 3, -3]],
    ] {
        let cfg = NetConfig::Unet(UnetConfig {
            features: vec![4, 8],
            kernel_sizes: Some(kernels.clone()),
            ..Default::default()
        });
        let vs = VarStore::new(Device::Cpu);
        let e = build(&vs.root(), &cfg).unwrap_err();
        assert!(
            matches!(&e, NetError::Config(m) if m.contains("kernel_sizes")),
            "{kernels:?}: {e}"
        );
        assert!(cfg.validate().is_err());
    }
}
