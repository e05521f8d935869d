//! Save/load round trips, and the seed paper's PyTorch models reproduced numerically from their
//! exported `state_dict`s (fixtures made by `fixtures/make_paper_fixtures.py` with PyTorch 2.11
//! on CPU from the paper's released model classes).

use std::collections::HashMap;
use std::path::PathBuf;

use negvol_nets::{
    build, load_checkpoint, load_pytorch_state_dict, load_weights, map_pytorch_name, read_config,
    save_weights, NetConfig, NetError, Unet3dAttConfig, Unet3dConfig, UnetConfig, VnetConfig,
};
use tch::{nn::VarStore, Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn io_pair(name: &str) -> (Tensor, Tensor) {
    let map: HashMap<String, Tensor> =
        Tensor::read_safetensors(fixture(&format!("{name}.io.safetensors")))
            .unwrap()
            .into_iter()
            .collect();
    (
        map["input"].shallow_clone(),
        map["probabilities"].shallow_clone(),
    )
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn check_paper_model(name: &str, cfg: NetConfig) {
    tch::manual_seed(42);
    let vs = VarStore::new(Device::Cpu);
    let net = build(&vs.root(), &cfg).unwrap();
    let report = load_pytorch_state_dict(&vs, fixture(&format!("{name}.safetensors"))).unwrap();
    assert_eq!(report.loaded, vs.variables().len(), "{name}");
    assert!(
        report.unused.is_empty(),
        "{name}: unused {:?}",
        report.unused
    );
    let (x, probs) = io_pair(name);
    let logits = tch::no_grad(|| net.forward_t(&x, false)).unwrap();
    let ours = logits.softmax(1, Kind::Float);
    let diff = max_abs_diff(&ours, &probs);
    assert!(diff < 1e-5, "{name}: max |ours - PyTorch| = {diff}");
}

#[test]
fn paper_unet3d_matches_pytorch() {
    let cfg = NetConfig::Unet3d(Unet3dConfig {
        f_maps: vec![4, 8, 16, 32],
        ..Default::default()
    });
    check_paper_model("paper_unet3d_f4", cfg);
}

#[test]
fn paper_attention_unet3d_matches_pytorch() {
    let cfg = NetConfig::Unet3dAtt(Unet3dAttConfig {
        f_maps: vec![4, 8, 16, 32],
        ..Default::default()
    });
    check_paper_model("paper_unet3d_att_f4", cfg);
}

#[test]
fn paper_vnet_matches_pytorch_with_batch_statistics() {
    // The fixture's names carry DataParallel's "module." prefix and BatchNorm counters.
    let cfg = NetConfig::Vnet(VnetConfig {
        base_channels: 2,
        kernel: 3,
        batch_stats_in_eval: true,
        ..Default::default()
    });
    check_paper_model("paper_vnet_b2_k3", cfg);
    let vs = VarStore::new(Device::Cpu);
    let _net = build(
        &vs.root(),
        &NetConfig::Vnet(VnetConfig {
            base_channels: 2,
            kernel: 3,
            ..Default::default()
        }),
    )
    .unwrap();
    let report = load_pytorch_state_dict(&vs, fixture("paper_vnet_b2_k3.safetensors")).unwrap();
    assert!(report
        .ignored
        .iter()
        .all(|n| n.starts_with("module.") && n.ends_with("num_batches_tracked")));
    // BatchNorms: input 1, down 4 + (2 + 3 + 3 + 3), up 4 + (3 + 3 + 2 + 1), output 1
    assert_eq!(
        report.ignored.len(),
        1 + (4 + 2 + 3 + 3 + 3) + (4 + 3 + 3 + 2 + 1) + 1
    );
}

#[test]
fn default_vnet_names_and_shapes_equal_the_papers_state_dict() {
    let vs = VarStore::new(Device::Cpu);
    let _net = build(&vs.root(), &NetConfig::Vnet(VnetConfig::default())).unwrap();
    let ours: HashMap<String, Vec<i64>> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.size()))
        .collect();
    let text = std::fs::read_to_string(fixture("paper_vnet_names.txt")).unwrap();
    let mut theirs = HashMap::new();
    for line in text.lines() {
        let (name, shape) = line.split_once('\t').unwrap();
        let shape: Vec<i64> = serde_json::from_str(shape).unwrap();
        if let Some(mapped) = map_pytorch_name(name) {
            theirs.insert(mapped, shape);
        }
    }
    assert_eq!(ours.len(), theirs.len());
    for (name, shape) in &theirs {
        assert_eq!(ours.get(name), Some(shape), "{name}");
    }
}

#[test]
fn pytorch_name_mapping() {
    assert_eq!(
        map_pytorch_name("module.in_tr.conv1.weight").as_deref(),
        Some("in_tr.conv1.weight")
    );
    assert_eq!(
        map_pytorch_name("_orig_mod.module.final_conv.bias").as_deref(),
        Some("final_conv.bias")
    );
    assert_eq!(map_pytorch_name("down_tr32.bn1.num_batches_tracked"), None);
    // nnU-Net v2 PlainConvUNet
    assert_eq!(
        map_pytorch_name("encoder.stages.3.0.convs.1.norm.weight").as_deref(),
        Some("encoder.stages.3.convs.1.norm.weight")
    );
    assert_eq!(
        map_pytorch_name("encoder.stages.0.0.convs.0.all_modules.0.weight"),
        None
    );
    assert_eq!(
        map_pytorch_name("decoder.encoder.stages.0.0.convs.0.conv.weight"),
        None
    );
    assert_eq!(
        map_pytorch_name("decoder.seg_layers.2.bias").as_deref(),
        Some("decoder.seg_layers.2.bias")
    );
}

fn tiny_cfgs() -> Vec<NetConfig> {
    vec![
        NetConfig::Unet3dAtt(Unet3dAttConfig {
            f_maps: vec![4, 8],
            num_groups: 2,
            ..Default::default()
        }),
        NetConfig::Vnet(VnetConfig {
            base_channels: 2,
            down_convs: vec![1],
            up_convs: vec![1],
            kernel: 3,
            ..Default::default()
        }),
        NetConfig::Unet(UnetConfig {
            features: vec![4, 8],
            deep_supervision: true,
            ..Default::default()
        }),
    ]
}

#[test]
fn save_load_round_trip_gives_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    for cfg in tiny_cfgs() {
        tch::manual_seed(1);
        let vs = VarStore::new(Device::Cpu);
        let net = build(&vs.root(), &cfg).unwrap();
        let d = net.size_divisor();
        let x = Tensor::randn(
            [2, 1, 4 * d[0], 2 * d[1], 2 * d[2]],
            (Kind::Float, Device::Cpu),
        );
        // one training-mode pass so BatchNorm running statistics differ from their init
        let _ = net.forward_t(&x, true).unwrap();
        let y = net.forward_t(&x, false).unwrap();
        let path = dir.path().join(format!("{}.safetensors", cfg.arch()));
        save_weights(&vs, Some(&cfg), &path).unwrap();
        // no temporary files left behind
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty());

        tch::manual_seed(2);
        let vs2 = VarStore::new(Device::Cpu);
        let net2 = build(&vs2.root(), &cfg).unwrap();
        assert!(
            !net2.forward_t(&x, false).unwrap().equal(&y),
            "different seeds should differ"
        );
        let report = load_weights(&vs2, &path).unwrap();
        assert_eq!(report.loaded, vs.variables().len());
        assert!(
            net2.forward_t(&x, false).unwrap().equal(&y),
            "{}: outputs differ after load",
            cfg.arch()
        );

        assert_eq!(read_config(&path).unwrap().as_ref(), Some(&cfg));
        let (_vs3, net3) = load_checkpoint(&path, Device::Cpu).unwrap();
        assert!(net3.forward_t(&x, false).unwrap().equal(&y));
    }
}

#[test]
fn load_rejects_wrong_architecture_and_leaves_weights_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let small = NetConfig::Unet3d(Unet3dConfig {
        f_maps: vec![4, 8],
        num_groups: 2,
        ..Default::default()
    });
    let wide = NetConfig::Unet3d(Unet3dConfig {
        f_maps: vec![8, 16],
        num_groups: 2,
        ..Default::default()
    });
    let vs = VarStore::new(Device::Cpu);
    let _ = build(&vs.root(), &small).unwrap();
    let path = dir.path().join("small.safetensors");
    save_weights(&vs, Some(&small), &path).unwrap();

    let vs2 = VarStore::new(Device::Cpu);
    let _ = build(&vs2.root(), &wide).unwrap();
    let before: Vec<(String, Tensor)> = vs2
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.copy()))
        .collect();
    let err = load_weights(&vs2, &path).unwrap_err();
    assert!(matches!(err, NetError::ShapeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("small.safetensors"));
    let after = vs2.variables();
    for (k, v) in before {
        assert!(after[&k].equal(&v), "{k} changed by a failed load");
    }

    let vs3 = VarStore::new(Device::Cpu);
    let _ = build(
        &vs3.root(),
        &NetConfig::Vnet(VnetConfig {
            base_channels: 2,
            down_convs: vec![1],
            up_convs: vec![1],
            ..Default::default()
        }),
    )
    .unwrap();
    assert!(matches!(
        load_weights(&vs3, &path),
        Err(NetError::MissingTensors { .. })
    ));

    let missing = dir.path().join("nope.safetensors");
    assert!(matches!(
        load_weights(&vs3, &missing),
        Err(NetError::Io { .. })
    ));
    std::fs::write(
        dir.path().join("junk.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    assert!(matches!(
        load_weights(&vs3, dir.path().join("junk.safetensors")),
        Err(NetError::Safetensors { .. })
    ));
}

#[test]
fn double_precision_var_store_loads_float_weights() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = NetConfig::Unet3d(Unet3dConfig {
        f_maps: vec![4, 8],
        num_groups: 2,
        ..Default::default()
    });
    let vs = VarStore::new(Device::Cpu);
    let net = build(&vs.root(), &cfg).unwrap();
    let path = dir.path().join("w.safetensors");
    save_weights(&vs, None, &path).unwrap();
    assert_eq!(read_config(&path).unwrap(), None);
    let mut vs2 = VarStore::new(Device::Cpu);
    let net2 = build(&vs2.root(), &cfg).unwrap();
    vs2.double();
    load_weights(&vs2, &path).unwrap();
    let x = Tensor::randn([1, 1, 4, 4, 4], (Kind::Float, Device::Cpu));
    let y = net.forward_t(&x, false).unwrap();
    let y2 = net2.forward_t(&x.to_kind(Kind::Double), false).unwrap();
    assert!(max_abs_diff(&y.to_kind(Kind::Double), &y2) < 1e-5);
}

#[test]
fn nnunet_v2_style_state_dict_loads_into_the_modern_unet() {
    // Rename our variables the way nnU-Net v2's PlainConvUNet names them, with its aliases
    // (`all_modules`, `decoder.encoder.*`) and BatchNorm counters, then import.
    let dir = tempfile::tempdir().unwrap();
    let cfg = NetConfig::Unet(UnetConfig {
        features: vec![4, 8, 8],
        norm: negvol_nets::NormConfig::Batch,
        deep_supervision: true,
        ..Default::default()
    });
    tch::manual_seed(4);
    let vs = VarStore::new(Device::Cpu);
    let net = build(&vs.root(), &cfg).unwrap();
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (name, t) in vs.variables() {
        let theirs = match name.strip_prefix("encoder.stages.") {
            Some(rest) => {
                let (s, tail) = rest.split_once('.').unwrap();
                format!("encoder.stages.{s}.0.{tail}")
            }
            None => name.clone(),
        };
        if theirs.starts_with("encoder.") {
            named.push((format!("decoder.{theirs}"), t.copy()));
            if theirs.ends_with("norm.running_mean") {
                named.push((
                    theirs.replace("running_mean", "num_batches_tracked"),
                    Tensor::from(3i64),
                ));
            }
            if theirs.contains(".conv.") {
                named.push((theirs.replace(".conv.", ".all_modules.0."), t.copy()));
            }
        }
        named.push((theirs, t.copy()));
    }
    let path = dir.path().join("nnunet.safetensors");
    Tensor::write_safetensors(&named, &path).unwrap();

    tch::manual_seed(5);
    let vs2 = VarStore::new(Device::Cpu);
    let net2 = build(&vs2.root(), &cfg).unwrap();
    let report = load_pytorch_state_dict(&vs2, &path).unwrap();
    assert_eq!(report.loaded, vs.variables().len());
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    assert!(report.ignored.iter().any(|n| n.contains("all_modules")));
    assert!(report
        .ignored
        .iter()
        .any(|n| n.starts_with("decoder.encoder.")));
    let x = Tensor::randn([1, 1, 8, 8, 8], (Kind::Float, Device::Cpu));
    assert!(net
        .forward_t(&x, false)
        .unwrap()
        .equal(&net2.forward_t(&x, false).unwrap()));
}
