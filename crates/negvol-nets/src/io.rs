//! Weights as safetensors: save/load with negvol's stable names, and import of PyTorch
//! `state_dict`s (the seed paper's models, nnU-Net v2's `PlainConvUNet`) exported to safetensors.
//!
//! # Parameter names
//! negvol's names for the paper's three networks **are** the paper's PyTorch `state_dict` names
//! (the modules are built under the same paths), so a paper checkpoint maps one to one. The
//! mapping applied by [`load_pytorch_state_dict`] to each name of the file is:
//!
//! | PyTorch name | negvol name |
//! |---|---|
//! | `module.X` (DataParallel), `_orig_mod.X` (torch.compile) | `X` (prefix stripped, repeatedly) |
//! | `X.num_batches_tracked` (BatchNorm counter) | ignored (negvol uses a fixed momentum 0.1) |
//! | 3D U-Net: `encoders.{l}.basic_module.SingleConv{1,2}.{conv.weight, groupnorm.weight, groupnorm.bias}` | same |
//! | 3D U-Net: `decoders.{i}.basic_module...`, `final_conv.{weight,bias}` | same |
//! | attention: `decoders.{i}.attention.{W_g,W_x,psi}.{0: conv, 1: BatchNorm}.*` | same |
//! | V-Net: `in_tr.{conv1,bn1,relu1}.*`, `down_tr{32,64,128,256}.{down_conv,bn1,relu1,relu2}.*`, `down_tr*.ops.{n}.{conv1,bn1,relu1}.*` | same |
//! | V-Net: `up_tr{256,128,64,32}.{up_conv,bn1,relu1,relu2,ops.*}.*`, `out_tr.{conv1,bn1,relu1,conv2}.*` | same |
//! | nnU-Net v2: `encoder.stages.{s}.0.convs.{c}.{conv,norm}.*` | `encoder.stages.{s}.convs.{c}.{conv,norm}.*` |
//! | nnU-Net v2: `*.all_modules.*`, `decoder.encoder.*` (aliases of the same tensors) | ignored |
//! | nnU-Net v2: `decoder.{stages,transpconvs,seg_layers}.*` | same |
//!
//! In the paper's code, the 3D U-Nets' softmax (eval mode only) and the V-Net's softmax and
//! channel permutations are not parameters: negvol returns logits, so apply softmax over
//! dimension 1 to get the paper's probabilities. The paper's V-Net used batch statistics in
//! evaluation too: set [`crate::VnetConfig::batch_stats_in_eval`] to reproduce its outputs.
//!
//! To export from PyTorch: `safetensors.torch.save_file(model.state_dict(), "model.safetensors")`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::config::NetConfig;
use crate::error::{NetError, Result};
use crate::SegmentationNet;

/// Metadata key holding the network configuration (JSON) in negvol checkpoints.
pub const CONFIG_KEY: &str = "negvol.net_config";
/// Metadata key holding the format tag.
pub const FORMAT_KEY: &str = "negvol.format";
/// Format tag written by [`save_weights`].
pub const FORMAT: &str = "negvol-nets/1";

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Number of network tensors filled from the file.
    pub loaded: usize,
    /// File tensors (after name mapping) the network has no use for, sorted.
    pub unused: Vec<String>,
    /// File tensors deliberately skipped by the name mapping (counters, aliases), sorted.
    pub ignored: Vec<String>,
}

fn st_err(path: &Path, message: impl Into<String>) -> NetError {
    NetError::Safetensors {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn kind_to_dtype(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        _ => return None,
    })
}

fn dtype_to_kind(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    negvol_volume::atomic::write_bytes_atomic(path, bytes).map_err(|source| NetError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Saves every variable of `vs` (trainable parameters and BatchNorm running statistics) to a
/// safetensors file, with `cfg` as JSON in the header metadata (key [`CONFIG_KEY`]), so the
/// checkpoint describes its own architecture (see [`load_checkpoint`]). The write is atomic.
pub fn save_weights(vs: &VarStore, cfg: Option<&NetConfig>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mut blobs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(vars.len());
    for (name, t) in &vars {
        let t = t
            .f_to_device(Device::Cpu)
            .and_then(|t| t.f_contiguous())
            .map_err(NetError::torch(format!("copying {name} to the CPU")))?;
        let dtype = kind_to_dtype(t.kind()).ok_or_else(|| {
            st_err(
                path,
                format!("tensor {name}: unsupported kind {:?}", t.kind()),
            )
        })?;
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut bytes, numel)
            .map_err(NetError::torch(format!("reading {name}")))?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        blobs.push((name.clone(), dtype, shape, bytes));
    }
    let mut views = Vec::with_capacity(blobs.len());
    for (name, dtype, shape, bytes) in &blobs {
        let view = TensorView::new(*dtype, shape.clone(), bytes)
            .map_err(|e| st_err(path, format!("tensor {name}: {e:?}")))?;
        views.push((name.as_str(), view));
    }
    let mut meta = HashMap::new();
    meta.insert(FORMAT_KEY.to_string(), FORMAT.to_string());
    if let Some(cfg) = cfg {
        meta.insert(
            CONFIG_KEY.to_string(),
            serde_json::to_string(cfg).unwrap_or_default(),
        );
    }
    let bytes = safetensors::tensor::serialize(views, &Some(meta))
        .map_err(|e| st_err(path, format!("serialising: {e:?}")))?;
    write_atomic(path, &bytes)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| NetError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the network configuration stored in a checkpoint's metadata by [`save_weights`]
/// (`Ok(None)` when the file has none, e.g. a PyTorch export).
pub fn read_config(path: impl AsRef<Path>) -> Result<Option<NetConfig>> {
    let path = path.as_ref();
    let buf = read_file(path)?;
    let (_, meta) = SafeTensors::read_metadata(&buf).map_err(|e| st_err(path, format!("{e:?}")))?;
    match meta.metadata().as_ref().and_then(|m| m.get(CONFIG_KEY)) {
        None => Ok(None),
        Some(json) => {
            let cfg: NetConfig = serde_json::from_str(json).map_err(|source| NetError::Json {
                origin: format!("{} metadata {CONFIG_KEY}", path.display()),
                source,
            })?;
            cfg.validate()?;
            Ok(Some(cfg))
        }
    }
}

/// Copies named tensors into the variables of `vs`, converting dtype and device.
/// `map` turns a file name into a negvol name (`None`: ignore the tensor).
fn load_mapped(
    vs: &VarStore,
    path: &Path,
    map: impl Fn(&str) -> Option<String>,
) -> Result<LoadReport> {
    let buf = read_file(path)?;
    let st = SafeTensors::deserialize(&buf).map_err(|e| st_err(path, format!("{e:?}")))?;
    let mut report = LoadReport::default();
    let mut by_name: HashMap<String, TensorView<'_>> = HashMap::new();
    for (name, view) in st.tensors() {
        match map(&name) {
            Some(mapped) => {
                by_name.insert(mapped, view);
            }
            None => report.ignored.push(name),
        }
    }
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let missing: Vec<String> = vars
        .keys()
        .filter(|k| !by_name.contains_key(*k))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(NetError::MissingTensors {
            path: path.to_path_buf(),
            missing,
        });
    }
    let mut staged = Vec::with_capacity(vars.len());
    for (name, var) in &vars {
        let view = &by_name[name];
        let got: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if got != var.size() {
            return Err(NetError::ShapeMismatch {
                path: path.to_path_buf(),
                name: name.clone(),
                expected: var.size(),
                got,
            });
        }
        let kind = dtype_to_kind(view.dtype()).ok_or_else(|| {
            st_err(
                path,
                format!("tensor {name}: unsupported dtype {:?}", view.dtype()),
            )
        })?;
        let src = Tensor::f_from_data_size(view.data(), &got, kind)
            .and_then(|t| t.f_to_kind(var.kind()))
            .and_then(|t| t.f_to_device(var.device()))
            .map_err(NetError::torch(format!(
                "converting {name} from {}",
                path.display()
            )))?;
        staged.push((var, src, name));
    }
    // Everything checked: now copy (so a failed load leaves the network untouched).
    tch::no_grad(|| -> Result<()> {
        for (var, src, name) in &staged {
            let mut dst = var.shallow_clone();
            dst.f_copy_(src)
                .map_err(NetError::torch(format!("copying {name}")))?;
        }
        Ok(())
    })?;
    report.loaded = staged.len();
    report.unused = by_name
        .keys()
        .filter(|k| !vars.contains_key(*k))
        .cloned()
        .collect();
    report.unused.sort();
    report.ignored.sort();
    Ok(report)
}

/// Loads weights saved by [`save_weights`] into `vs` (names must match exactly; dtype and
/// device are converted to the variables'). Every variable of `vs` must be in the file and have
/// the same shape, otherwise nothing is changed and an error names the first problem. Tensors of
/// the file the network does not use are listed in [`LoadReport::unused`].
pub fn load_weights(vs: &VarStore, path: impl AsRef<Path>) -> Result<LoadReport> {
    load_mapped(vs, path.as_ref(), |n| Some(n.to_string()))
}

/// Maps one PyTorch `state_dict` name to negvol's (see the module docs); `None`: ignore it.
pub fn map_pytorch_name(name: &str) -> Option<String> {
    let mut n = name;
    loop {
        if let Some(rest) = n.strip_prefix("module.") {
            n = rest;
        } else if let Some(rest) = n.strip_prefix("_orig_mod.") {
            n = rest;
        } else {
            break;
        }
    }
    if n.ends_with(".num_batches_tracked")
        || n.contains(".all_modules.")
        || n.starts_with("decoder.encoder.")
    {
        return None;
    }
    // nnU-Net v2: encoder.stages.{s}.0.convs... (a Sequential around StackedConvBlocks)
    if let Some(rest) = n.strip_prefix("encoder.stages.") {
        let parts: Vec<&str> = rest.splitn(3, '.').collect();
        if parts.len() == 3 && parts[1] == "0" && parts[2].starts_with("convs.") {
            return Some(format!("encoder.stages.{}.{}", parts[0], parts[2]));
        }
    }
    Some(n.to_string())
}

/// Loads a PyTorch `state_dict` exported to safetensors (the seed paper's 3D U-Net, attention
/// U-Net and V-Net, or an nnU-Net v2 `PlainConvUNet` into [`crate::NetConfig::Unet`]) into `vs`,
/// mapping names with [`map_pytorch_name`]. Build the network at `vs.root()` with the
/// configuration the weights were trained with (the paper's defaults for its models).
pub fn load_pytorch_state_dict(vs: &VarStore, path: impl AsRef<Path>) -> Result<LoadReport> {
    load_mapped(vs, path.as_ref(), map_pytorch_name)
}

/// Opens a negvol checkpoint: reads its configuration from the metadata, builds the network at
/// the root of a new [`VarStore`] on `device` and loads the weights.
pub fn load_checkpoint(
    path: impl AsRef<Path>,
    device: Device,
) -> Result<(VarStore, Box<dyn SegmentationNet>)> {
    let path = path.as_ref();
    let cfg = read_config(path)?.ok_or_else(|| {
        st_err(path, format!("no {CONFIG_KEY} metadata: not a negvol checkpoint (use load_weights with a config)"))
    })?;
    let vs = VarStore::new(device);
    let net = crate::build(&vs.root(), &cfg)?;
    load_weights(&vs, path)?;
    Ok((vs, net))
}
