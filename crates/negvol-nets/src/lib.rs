//! # negvol-nets
//!
//! 3D segmentation networks on tch (libtorch 2.11 via `tch =0.24.0`): the seed paper's
//! (Belikova et al., Sci. Rep. 11:16292, 2021) **3D U-Net**, **3D U-Net with attention gates**
//! and **V-Net**, ported faithfully from its released PyTorch code, plus a **modern
//! nnU-Net-style U-Net** with configurable depth, widths, strides, kernel sizes, normalisation and deep
//! supervision.
//!
//! Every network maps `[N, in_channels, ni, nj, nk]` to logits `[N, classes, ni, nj, nk]`
//! (no softmax inside: apply it in inference) and accepts any spatial size divisible by its
//! total down-sampling factor ([`SegmentationNet::size_divisor`]); other sizes give
//! [`NetError::InputSize`]. The networks never panic on libtorch errors (e.g. out of memory):
//! they return [`NetError::Torch`].
//!
//! Configurations are serde/JSON ([`NetConfig`], tagged by `arch`); weights are safetensors with
//! stable names equal to the paper's PyTorch names ([`save_weights`], [`load_weights`],
//! [`load_checkpoint`], [`load_pytorch_state_dict`]; the name mapping is documented in [`io`]).
//!
//! ```
//! use negvol_nets::{build, parameter_count, NetConfig, SegmentationNet, Unet3dConfig};
//! use tch::{nn::VarStore, Device, Kind, Tensor};
//!
//! let cfg = NetConfig::Unet3d(Unet3dConfig { f_maps: vec![8, 16], ..Default::default() });
//! let vs = VarStore::new(Device::Cpu);
//! let net = build(&vs.root(), &cfg)?;
//! assert!(parameter_count(&vs) > 0);
//! let x = Tensor::zeros([1, 1, 8, 8, 4], (Kind::Float, Device::Cpu));
//! let logits = net.forward_t(&x, false)?;
//! assert_eq!(logits.size(), vec![1, 2, 8, 8, 4]);
//! // 8 x 8 x 5 is not divisible by the network's factor 2:
//! let bad = Tensor::zeros([1, 1, 8, 8, 5], (Kind::Float, Device::Cpu));
//! assert!(net.forward_t(&bad, false).is_err());
//! # Ok::<(), negvol_nets::NetError>(())
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod io;
mod layers;
pub mod summary;
pub mod unet;
pub mod unet3d;
pub mod vnet;

pub use config::{NetConfig, NormConfig, Unet3dAttConfig, Unet3dConfig, UnetConfig, VnetConfig};
pub use error::{NetError, Result};
pub use io::{
    load_checkpoint, load_pytorch_state_dict, load_weights, map_pytorch_name, read_config,
    save_weights, LoadReport,
};
pub use layers::LayerInfo;
pub use summary::{summarize, ShapeCheck, Summary};

use tch::nn::{Path, VarStore};
use tch::Tensor;

/// A 3D segmentation network: `[N, C_in, ni, nj, nk]` to logits `[N, classes, ni, nj, nk]`.
pub trait SegmentationNet: std::fmt::Debug + Send {
    /// Forward pass; `train` selects training behaviour (BatchNorm batch statistics and running
    /// statistics updates, dropout). Returns logits (no softmax).
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor, NetError>;

    /// All outputs for deep supervision, highest resolution first (the first equals
    /// [`SegmentationNet::forward_t`]). Networks without deep supervision return one output.
    fn forward_deep(&self, xs: &Tensor, train: bool) -> Result<Vec<Tensor>, NetError> {
        Ok(vec![self.forward_t(xs, train)?])
    }

    /// Inputs must be divisible by this per spatial axis (the configuration's
    /// [`NetConfig::size_divisor`]).
    fn size_divisor(&self) -> [i64; 3] {
        self.config().size_divisor()
    }

    /// Number of output classes (logit channels; the configuration's [`NetConfig::classes`]).
    fn classes(&self) -> i64 {
        self.config().classes()
    }

    /// The configuration the network was built from.
    fn config(&self) -> &NetConfig;

    /// The layers in build order, with their parameter counts.
    fn layers(&self) -> &[LayerInfo] {
        &[]
    }
}

/// Builds the network described by `cfg` with its variables under `path` (use `vs.root()` so
/// parameter names match the paper's PyTorch names).
pub fn build(path: &Path, cfg: &NetConfig) -> Result<Box<dyn SegmentationNet>> {
    cfg.validate()?;
    Ok(match cfg {
        NetConfig::Unet3d(_) | NetConfig::Unet3dAtt(_) => Box::new(unet3d::Unet3d::new(path, cfg)?),
        NetConfig::Vnet(_) => Box::new(vnet::Vnet::new(path, cfg)?),
        NetConfig::Unet(_) => Box::new(unet::Unet::new(path, cfg)?),
    })
}

/// Number of trainable parameters (scalars) in `vs` (BatchNorm running statistics excluded).
pub fn parameter_count(vs: &VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// The output shape for an input shape `[N, C, ni, nj, nk]`, checked like a forward pass would
/// (without running one): `[N, classes, ni, nj, nk]`.
pub fn output_shape(cfg: &NetConfig, input: &[i64]) -> Result<Vec<i64>> {
    let shape = input.to_vec();
    if shape.len() != 5 {
        return Err(NetError::InputRank { shape });
    }
    if shape[1] != cfg.in_channels() {
        return Err(NetError::InputChannels {
            expected: cfg.in_channels(),
            got: shape[1],
            shape,
        });
    }
    let divisor = cfg.size_divisor();
    if shape[0] < 1 || (0..3).any(|a| shape[2 + a] < 1 || shape[2 + a] % divisor[a] != 0) {
        return Err(NetError::InputSize { shape, divisor });
    }
    Ok(vec![shape[0], cfg.classes(), shape[2], shape[3], shape[4]])
}
