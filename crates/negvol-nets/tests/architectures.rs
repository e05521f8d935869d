//! Output shapes, parameter counts (against hand formulas), forward + backward, input checks.

use negvol_nets::{
    build, output_shape, parameter_count, NetConfig, NetError, NormConfig, SegmentationNet,
    Unet3dAttConfig, Unet3dConfig, UnetConfig, VnetConfig,
};
use tch::{nn::VarStore, Device, Kind, Tensor};

fn built(cfg: &NetConfig) -> (VarStore, Box<dyn SegmentationNet>) {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let net = build(&vs.root(), cfg).expect("build");
    (vs, net)
}

// ---- hand formulas -------------------------------------------------------------------------

/// 3x3x3 conv without bias + GroupNorm (weight, bias).
fn sc(cin: i64, cout: i64) -> i64 {
    27 * cin * cout + 2 * cout
}

/// The paper's U-Net: encoder conv1 outputs max(out/2, in); decoder (skip+deeper) -> skip.
fn unet3d_params(in_ch: i64, f: &[i64], classes: i64) -> i64 {
    let mut n = 0;
    for l in 0..f.len() {
        let cin = if l == 0 { in_ch } else { f[l - 1] };
        let mid = (f[l] / 2).max(cin);
        n += sc(cin, mid) + sc(mid, f[l]);
    }
    for l in (0..f.len() - 1).rev() {
        n += sc(f[l] + f[l + 1], f[l]) + sc(f[l], f[l]);
    }
    n + f[0] * classes + classes
}

/// Attention gate: two 1x1 convs with bias + BN to `inner`, 1x1 conv to 1 + BN(1).
fn gate(g: i64, x: i64, inner: i64) -> i64 {
    (g * inner + inner + 2 * inner) + (x * inner + inner + 2 * inner) + (inner + 1 + 2)
}

fn conv5(cin: i64, cout: i64) -> i64 {
    125 * cin * cout + cout
}

/// LUConv: conv5 with bias + BN + PReLU.
fn lu(c: i64) -> i64 {
    conv5(c, c) + 2 * c + c
}

fn vnet_params_default() -> i64 {
    let c = [16i64, 32, 64, 128, 256];
    let down_n = [2i64, 3, 3, 3];
    let up_n = [3i64, 3, 2, 1];
    let mut n = conv5(1, 16) + 2 * 16 + 16;
    for l in 1..5 {
        n += 8 * c[l - 1] * c[l] + c[l] + 2 * c[l] + 2 * c[l] + down_n[l - 1] * lu(c[l]);
    }
    let mut cin = 256;
    for (i, l) in (0..4).rev().enumerate() {
        let out = 2 * c[l];
        n += 8 * cin * c[l] + c[l] + 2 * c[l] + c[l] + out + up_n[i] * lu(out);
        cin = out;
    }
    n + conv5(32, 2) + 2 * 2 + 2 + (2 * 2 + 2)
}

/// nnU-Net-style: conv3 with bias + norm(2c).
fn cn(cin: i64, cout: i64) -> i64 {
    27 * cin * cout + cout + 2 * cout
}

fn unet_params(in_ch: i64, f: &[i64], classes: i64, deep: bool) -> i64 {
    let mut n = 0;
    for s in 0..f.len() {
        let cin = if s == 0 { in_ch } else { f[s - 1] };
        n += cn(cin, f[s]) + cn(f[s], f[s]);
    }
    for s in (0..f.len() - 1).rev() {
        n += 8 * f[s + 1] * f[s] + f[s]; // transposed conv 2x2x2
        n += cn(2 * f[s], f[s]) + cn(f[s], f[s]);
        if deep || s == 0 {
            n += f[s] * classes + classes;
        }
    }
    n
}

// ---- parameter counts at the paper's default widths (no forward) ---------------------------

#[test]
fn unet3d_default_parameter_count() {
    let (vs, _) = built(&NetConfig::Unet3d(Unet3dConfig::default()));
    let expected = unet3d_params(1, &[32, 64, 128, 256], 2);
    assert_eq!(parameter_count(&vs), expected);
    // a literal, so a change of the formula above cannot hide a change of the network
    assert_eq!(expected, 4_080_914); // PyTorch count of the paper's UNet3D(f_maps=32)
}

#[test]
fn unet3d_att_default_parameter_count() {
    let (vs, _) = built(&NetConfig::Unet3dAtt(Unet3dAttConfig::default()));
    let expected = unet3d_params(1, &[32, 64, 128, 256], 2)
        + gate(256, 128, 64)
        + gate(128, 64, 32)
        + gate(64, 32, 16);
    assert_eq!(parameter_count(&vs), expected);
    assert_eq!(expected, 4_113_963); // PyTorch count of the paper's UNet3D_attention(f_maps=32)
}

#[test]
fn vnet_default_parameter_count() {
    let (vs, _) = built(&NetConfig::Vnet(VnetConfig::default()));
    assert_eq!(parameter_count(&vs), vnet_params_default());
    assert_eq!(vnet_params_default(), 65_191_134); // PyTorch count of the paper's VNet()
}

#[test]
fn unet_default_parameter_count() {
    let (vs, _) = built(&NetConfig::Unet(UnetConfig::default()));
    assert_eq!(
        parameter_count(&vs),
        unet_params(1, &[32, 64, 128, 256, 320], 2, false)
    );
    let ds = UnetConfig {
        deep_supervision: true,
        ..Default::default()
    };
    let (vs, _) = built(&NetConfig::Unet(ds));
    assert_eq!(
        parameter_count(&vs),
        unet_params(1, &[32, 64, 128, 256, 320], 2, true)
    );
}

// ---- default widths: output shapes at a small input (eval mode) -----------------------------

fn check_default_shape(cfg: NetConfig, input: [i64; 5]) {
    let (_vs, net) = built(&cfg);
    let x = Tensor::randn(input, (Kind::Float, Device::Cpu));
    let y = tch::no_grad(|| net.forward_t(&x, false)).expect("forward");
    assert_eq!(y.size(), vec![input[0], 2, input[2], input[3], input[4]]);
    assert_eq!(y.size(), output_shape(&cfg, &input).unwrap());
    assert!(bool::try_from(y.isfinite().all()).unwrap());
}

#[test]
fn default_widths_output_shapes() {
    check_default_shape(NetConfig::Unet3d(Unet3dConfig::default()), [1, 1, 16, 8, 8]);
    check_default_shape(
        NetConfig::Unet3dAtt(Unet3dAttConfig::default()),
        [1, 1, 8, 16, 8],
    );
    check_default_shape(NetConfig::Vnet(VnetConfig::default()), [1, 1, 16, 16, 32]);
    check_default_shape(NetConfig::Unet(UnetConfig::default()), [1, 1, 16, 16, 16]);
}

// ---- tiny configurations: forward + backward in training mode -------------------------------

fn tiny_configs() -> Vec<NetConfig> {
    vec![
        NetConfig::Unet3d(Unet3dConfig {
            f_maps: vec![4, 8, 16],
            num_groups: 4,
            ..Default::default()
        }),
        NetConfig::Unet3dAtt(Unet3dAttConfig {
            f_maps: vec![4, 8, 16],
            num_groups: 4,
            classes: 3,
            ..Default::default()
        }),
        NetConfig::Vnet(VnetConfig {
            base_channels: 4,
            down_convs: vec![1, 2],
            up_convs: vec![2, 1],
            kernel: 3,
            dropout: 0.2,
            skip_dropout: 0.5,
            in_channels: 2,
            ..Default::default()
        }),
        NetConfig::Unet(UnetConfig {
            features: vec![4, 8, 8],
            strides: Some(vec![[1, 1, 1], [2, 2, 1], [2, 2, 2]]),
            norm: NormConfig::Group { groups: 2 },
            deep_supervision: true,
            in_channels: 2,
            ..Default::default()
        }),
        NetConfig::Unet(UnetConfig {
            features: vec![4, 8],
            norm: NormConfig::Batch,
            ..Default::default()
        }),
    ]
}

#[test]
fn tiny_forward_backward_every_parameter_gets_a_gradient() {
    for cfg in tiny_configs() {
        let (vs, net) = built(&cfg);
        let d = net.size_divisor();
        let shape = [2, cfg.in_channels(), 2 * d[0], 2 * d[1], 3 * d[2]];
        let x = Tensor::randn(shape, (Kind::Float, Device::Cpu));
        let outs = net.forward_deep(&x, true).expect("forward");
        assert_eq!(
            outs[0].size(),
            vec![2, cfg.classes(), shape[2], shape[3], shape[4]],
            "{cfg:?}"
        );
        let mut loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
        for o in &outs {
            // a loss that depends on every output voxel and class
            loss += (o * o).mean(Kind::Float);
        }
        loss.backward();
        for (name, var) in vs.variables() {
            if !var.requires_grad() {
                continue;
            }
            let g = var.grad();
            assert!(g.defined(), "{}: no gradient for {name}", cfg.arch());
            assert!(
                bool::try_from(g.isfinite().all()).unwrap(),
                "{name}: non-finite gradient"
            );
            assert!(
                g.abs().sum(Kind::Double).double_value(&[]) > 0.0,
                "{}: zero gradient for {name}",
                cfg.arch()
            );
        }
    }
}

#[test]
fn deep_supervision_outputs_halve_in_resolution() {
    let cfg = NetConfig::Unet(UnetConfig {
        features: vec![4, 8, 8, 8],
        strides: Some(vec![[1, 1, 1], [2, 2, 2], [2, 2, 1], [2, 2, 2]]),
        deep_supervision: true,
        ..Default::default()
    });
    let (_vs, net) = built(&cfg);
    assert_eq!(net.size_divisor(), [8, 8, 4]);
    let x = Tensor::randn([1, 1, 16, 16, 8], (Kind::Float, Device::Cpu));
    let outs = net.forward_deep(&x, false).unwrap();
    let shapes: Vec<Vec<i64>> = outs.iter().map(|o| o.size()).collect();
    assert_eq!(
        shapes,
        vec![
            vec![1, 2, 16, 16, 8],
            vec![1, 2, 8, 8, 4],
            vec![1, 2, 4, 4, 4]
        ]
    );
    // forward_t is the first (full-resolution) output
    let y = net.forward_t(&x, false).unwrap();
    assert!(y.equal(&outs[0]));
}

#[test]
fn eval_mode_is_deterministic_and_batch_independent() {
    for cfg in tiny_configs() {
        let (_vs, net) = built(&cfg);
        let d = net.size_divisor();
        let x = Tensor::randn(
            [2, cfg.in_channels(), 2 * d[0], 2 * d[1], 2 * d[2]],
            (Kind::Float, Device::Cpu),
        );
        let both = net.forward_t(&x, false).unwrap();
        let first = net.forward_t(&x.narrow(0, 0, 1), false).unwrap();
        let diff = (both.narrow(0, 0, 1) - first).abs().max().double_value(&[]);
        assert!(
            diff < 1e-4,
            "{}: sample 0 depends on sample 1 in eval mode ({diff})",
            cfg.arch()
        );
    }
}

// ---- input validation ------------------------------------------------------------------------

#[test]
fn wrong_input_size_names_shape_and_divisor() {
    let (_vs, net) = built(&NetConfig::Unet3d(Unet3dConfig {
        f_maps: vec![4, 8, 16, 32],
        num_groups: 4,
        ..Default::default()
    }));
    assert_eq!(net.size_divisor(), [8, 8, 8]);
    let x = Tensor::zeros([1, 1, 16, 12, 8], (Kind::Float, Device::Cpu));
    let err = net.forward_t(&x, false).unwrap_err();
    assert!(matches!(err, NetError::InputSize { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("[1, 1, 16, 12, 8]") && msg.contains("[8, 8, 8]"),
        "{msg}"
    );

    let x = Tensor::zeros([1, 2, 16, 16, 8], (Kind::Float, Device::Cpu));
    assert!(matches!(
        net.forward_t(&x, false),
        Err(NetError::InputChannels {
            expected: 1,
            got: 2,
            ..
        })
    ));
    let x = Tensor::zeros([1, 16, 16, 8], (Kind::Float, Device::Cpu));
    assert!(matches!(
        net.forward_t(&x, false),
        Err(NetError::InputRank { .. })
    ));
}

#[test]
fn vnet_divisor_is_sixteen_and_paper_patch_is_accepted() {
    let cfg = NetConfig::Vnet(VnetConfig::default());
    assert_eq!(cfg.size_divisor(), [16, 16, 16]);
    // the paper's training patch 112 x 144 x 64
    assert_eq!(
        output_shape(&cfg, &[1, 1, 112, 144, 64]).unwrap(),
        vec![1, 2, 112, 144, 64]
    );
    assert!(output_shape(&cfg, &[1, 1, 120, 150, 70]).is_err());
}

// ---- configuration ---------------------------------------------------------------------------

#[test]
fn config_json_round_trip_and_defaults() {
    for arch in ["unet3d", "unet3d-att", "vnet", "unet"] {
        let cfg = NetConfig::from_json(&format!(r#"{{"arch": "{arch}"}}"#)).unwrap();
        assert_eq!(cfg, NetConfig::default_for(arch).unwrap());
        assert_eq!(cfg.arch(), arch);
        assert_eq!(NetConfig::from_json(&cfg.to_json()).unwrap(), cfg);
    }
    let cfg = NetConfig::from_json(
        r#"{"arch": "unet", "features": [8, 16], "norm": {"type": "group", "groups": 4}, "deep_supervision": true}"#,
    )
    .unwrap();
    let NetConfig::Unet(u) = &cfg else {
        panic!("wrong arch")
    };
    assert_eq!(u.norm, NormConfig::Group { groups: 4 });
    assert!(u.deep_supervision);
}

#[test]
fn config_errors_are_reported() {
    // typo in a field name
    assert!(NetConfig::from_json(r#"{"arch": "unet3d", "fmaps": [8, 16]}"#).is_err());
    assert!(NetConfig::from_json(r#"{"arch": "resnet"}"#).is_err());
    // V-Net: inconsistent transition lists, input channels not dividing the base
    assert!(NetConfig::from_json(r#"{"arch": "vnet", "up_convs": [1, 1]}"#).is_err());
    assert!(NetConfig::from_json(r#"{"arch": "vnet", "in_channels": 3}"#).is_err());
    // group norm that does not divide the widths
    let err = NetConfig::from_json(
        r#"{"arch": "unet", "features": [6, 12], "norm": {"type": "group", "groups": 4}}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("groups 4"), "{err}");
    // the paper's U-Net with widths GroupNorm(8) cannot split
    let cfg = NetConfig::Unet3d(Unet3dConfig {
        f_maps: vec![12, 20],
        ..Default::default()
    });
    let vs = VarStore::new(Device::Cpu);
    assert!(matches!(build(&vs.root(), &cfg), Err(NetError::Config(_))));
}

#[test]
fn layer_table_sums_to_parameter_count() {
    for cfg in tiny_configs() {
        let (vs, net) = built(&cfg);
        let total: i64 = net.layers().iter().map(|l| l.params).sum();
        assert_eq!(total, parameter_count(&vs), "{}", cfg.arch());
        assert!(net
            .layers()
            .iter()
            .all(|l| !l.name.is_empty() && !l.description.is_empty()));
    }
}

#[test]
fn parameter_names_follow_the_paper() {
    let (vs, _) = built(&NetConfig::Unet3dAtt(Unet3dAttConfig::default()));
    let vars = vs.variables();
    for name in [
        "encoders.0.basic_module.SingleConv1.conv.weight",
        "encoders.3.basic_module.SingleConv2.groupnorm.bias",
        "decoders.0.attention.W_g.0.weight",
        "decoders.0.attention.W_x.1.running_var",
        "decoders.2.attention.psi.0.bias",
        "decoders.2.basic_module.SingleConv1.conv.weight",
        "final_conv.bias",
    ] {
        assert!(vars.contains_key(name), "missing {name}");
    }
    assert_eq!(
        vars["decoders.0.attention.W_g.0.weight"].size(),
        vec![64, 256, 1, 1, 1]
    );
    assert_eq!(
        vars["decoders.0.attention.W_x.0.weight"].size(),
        vec![64, 128, 1, 1, 1]
    );
    assert_eq!(
        vars["decoders.2.attention.W_g.0.weight"].size(),
        vec![16, 64, 1, 1, 1]
    );
    assert_eq!(
        vars["encoders.0.basic_module.SingleConv1.conv.weight"].size(),
        vec![16, 1, 3, 3, 3]
    );
    assert!(!vars.contains_key("encoders.0.basic_module.SingleConv1.conv.bias"));
}

#[test]
fn summary_runs_a_forward_or_a_probe() {
    use negvol_nets::{summarize, ShapeCheck};
    let cfg = NetConfig::Unet(UnetConfig {
        features: vec![4, 8, 8],
        deep_supervision: true,
        ..Default::default()
    });
    let s = summarize(&cfg, &[1, 1, 8, 8, 4], 1000).unwrap();
    assert_eq!(s.check, ShapeCheck::Forward);
    assert_eq!(s.output, vec![1, 2, 8, 8, 4]);
    assert_eq!(
        s.deep_outputs,
        vec![vec![1, 2, 8, 8, 4], vec![1, 2, 4, 4, 2]]
    );
    let big = summarize(&cfg, &[2, 1, 64, 64, 32], 1000).unwrap();
    assert_eq!(
        big.check,
        ShapeCheck::Probe {
            probe: vec![1, 1, 8, 8, 8]
        }
    );
    assert_eq!(big.output, vec![2, 2, 64, 64, 32]);
    assert_eq!(big.deep_outputs[1], vec![2, 2, 32, 32, 16]);
    assert_eq!(big.parameters, s.parameters);
    let text = big.to_string();
    assert!(
        text.contains("trainable parameters") && text.contains("[2, 2, 64, 64, 32]"),
        "{text}"
    );
    assert!(summarize(&cfg, &[1, 1, 9, 8, 8], 1000).is_err());
}
