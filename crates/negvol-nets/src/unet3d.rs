//! The seed paper's 3D U-Net (pytorch-3dunet family) and its attention-gated variant.
//!
//! Structure (defaults `f_maps = [32, 64, 128, 256]`):
//! - encoder level `l`: max-pool 2 (except level 0), then a double convolution; each single
//!   convolution is `Conv3d(3x3x3, no bias) -> ReLU -> GroupNorm(min(8, C))`; the first conv of a
//!   level outputs `max(out / 2, in)` channels, the second `out`;
//! - decoder level: nearest-neighbour up-sampling to the skip's size, concatenation
//!   `(skip, up)` (attention variant: `(gated skip, up)`), double convolution
//!   `(skip + deeper) -> skip -> skip` channels;
//! - final `Conv3d(1x1x1, bias)` to `classes` logits. No softmax inside.
//!
//! Attention gate (attention variant), with gating `g` = the up-sampled deeper features and `x` =
//! the skip: `W_g = Conv1x1(bias) + BN` on `g`, `W_x = Conv1x1(bias) + BN` on `x`,
//! `psi = sigmoid(BN(Conv1x1(ReLU(W_g g + W_x x))))` (one channel), output `x * psi`. Inner
//! channels default to half the skip's channels (64, 32, 16 for the default widths).
//!
//! Parameter names equal the paper's PyTorch `state_dict` names, e.g.
//! `encoders.0.basic_module.SingleConv1.conv.weight`, `decoders.0.attention.W_g.0.weight`,
//! `final_conv.bias`.

use tch::nn::Path;
use tch::{TchError, Tensor};

use crate::config::NetConfig;
use crate::error::{NetError, Result};
use crate::layers::{check_input, Conv3d, ConvInit, LayerInfo, Norm, Recorder};
use crate::SegmentationNet;

#[derive(Debug)]
struct SingleConv {
    conv: Conv3d,
    norm: Norm,
}

impl SingleConv {
    fn new(p: &Path, rec: &mut Recorder, cin: i64, cout: i64, groups: i64) -> Result<Self> {
        let conv = Conv3d::new(
            &(p / "conv"),
            rec,
            cin,
            cout,
            [3, 3, 3],
            [1, 1, 1],
            false,
            ConvInit::TorchDefault,
        )?;
        // pytorch-3dunet: fewer channels than groups -> one group per channel.
        let g = if cout < groups { cout } else { groups };
        let norm = Norm::group(&(p / "groupnorm"), rec, g, cout, "GroupNorm")?;
        Ok(Self { conv, norm })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        let y = self.conv.forward(x)?.f_relu()?;
        self.norm.forward_t(&y, false)
    }
}

#[derive(Debug)]
struct DoubleConv {
    c1: SingleConv,
    c2: SingleConv,
}

impl DoubleConv {
    fn new(
        p: &Path,
        rec: &mut Recorder,
        cin: i64,
        cout: i64,
        encoder: bool,
        groups: i64,
    ) -> Result<Self> {
        let mid = if encoder { (cout / 2).max(cin) } else { cout };
        let c1 = SingleConv::new(&(p / "SingleConv1"), rec, cin, mid, groups)?;
        let c2 = SingleConv::new(&(p / "SingleConv2"), rec, mid, cout, groups)?;
        Ok(Self { c1, c2 })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        self.c2.forward(&self.c1.forward(x)?)
    }
}

#[derive(Debug)]
struct AttentionGate {
    wg_conv: Conv3d,
    wg_bn: Norm,
    wx_conv: Conv3d,
    wx_bn: Norm,
    psi_conv: Conv3d,
    psi_bn: Norm,
}

impl AttentionGate {
    fn new(p: &Path, rec: &mut Recorder, g_ch: i64, x_ch: i64, inner: i64) -> Result<Self> {
        let one = [1, 1, 1];
        let init = ConvInit::TorchDefault;
        let wg = p / "W_g";
        let wx = p / "W_x";
        let psi = p / "psi";
        Ok(Self {
            wg_conv: Conv3d::new(&(&wg / "0"), rec, g_ch, inner, one, one, true, init)?,
            wg_bn: Norm::batch(&(&wg / "1"), rec, inner, false)?,
            wx_conv: Conv3d::new(&(&wx / "0"), rec, x_ch, inner, one, one, true, init)?,
            wx_bn: Norm::batch(&(&wx / "1"), rec, inner, false)?,
            psi_conv: Conv3d::new(&(&psi / "0"), rec, inner, 1, one, one, true, init)?,
            psi_bn: Norm::batch(&(&psi / "1"), rec, 1, false)?,
        })
    }

    /// `g`: gating signal (up-sampled deeper features); `x`: skip connection.
    fn forward_t(&self, g: &Tensor, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let g1 = self.wg_bn.forward_t(&self.wg_conv.forward(g)?, train)?;
        let x1 = self.wx_bn.forward_t(&self.wx_conv.forward(x)?, train)?;
        let a = g1.f_add(&x1)?.f_relu()?;
        let psi = self
            .psi_bn
            .forward_t(&self.psi_conv.forward(&a)?, train)?
            .f_sigmoid()?;
        x.f_mul(&psi)
    }
}

#[derive(Debug)]
struct Decoder {
    attention: Option<AttentionGate>,
    basic: DoubleConv,
}

/// The paper's 3D U-Net, with or without attention gates. Build it with [`crate::build`].
#[derive(Debug)]
pub struct Unet3d {
    encoders: Vec<DoubleConv>,
    decoders: Vec<Decoder>,
    final_conv: Conv3d,
    cfg: NetConfig,
    layers: Vec<LayerInfo>,
}

impl Unet3d {
    pub(crate) fn new(p: &Path, cfg: &NetConfig) -> Result<Self> {
        let (in_ch, classes, f_maps, groups, att) = match cfg {
            NetConfig::Unet3d(c) => (
                c.in_channels,
                c.classes,
                c.f_maps.clone(),
                c.num_groups,
                None,
            ),
            NetConfig::Unet3dAtt(c) => {
                let att = match &c.attention_channels {
                    Some(a) => a.clone(),
                    // deepest decoder level first: half the skip's channels
                    None => c.f_maps.iter().rev().skip(1).map(|f| f / 2).collect(),
                };
                (
                    c.in_channels,
                    c.classes,
                    c.f_maps.clone(),
                    c.num_groups,
                    Some(att),
                )
            }
            _ => {
                return Err(NetError::Config(format!(
                    "Unet3d cannot build arch {}",
                    cfg.arch()
                )))
            }
        };
        let mut rec = Recorder::default();
        let enc_p = p / "encoders";
        let mut encoders = Vec::with_capacity(f_maps.len());
        for (l, &f) in f_maps.iter().enumerate() {
            let cin = if l == 0 { in_ch } else { f_maps[l - 1] };
            let lp = &enc_p / l;
            encoders.push(DoubleConv::new(
                &(&lp / "basic_module"),
                &mut rec,
                cin,
                f,
                true,
                groups,
            )?);
        }
        let dec_p = p / "decoders";
        let mut decoders = Vec::with_capacity(f_maps.len() - 1);
        let rev: Vec<i64> = f_maps.iter().rev().copied().collect();
        for i in 0..rev.len() - 1 {
            let deeper = rev[i];
            let skip = rev[i + 1];
            let lp = &dec_p / i;
            let attention = match &att {
                Some(a) => Some(AttentionGate::new(
                    &(&lp / "attention"),
                    &mut rec,
                    deeper,
                    skip,
                    a[i],
                )?),
                None => None,
            };
            let basic = DoubleConv::new(
                &(&lp / "basic_module"),
                &mut rec,
                skip + deeper,
                skip,
                false,
                groups,
            )?;
            decoders.push(Decoder { attention, basic });
        }
        let final_conv = Conv3d::new(
            &(p / "final_conv"),
            &mut rec,
            f_maps[0],
            classes,
            [1, 1, 1],
            [1, 1, 1],
            true,
            ConvInit::TorchDefault,
        )?;
        Ok(Self {
            encoders,
            decoders,
            final_conv,
            cfg: cfg.clone(),
            layers: rec.layers,
        })
    }

    fn run(&self, xs: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let mut feats: Vec<Tensor> = Vec::with_capacity(self.encoders.len());
        let mut x = xs.shallow_clone();
        for (l, enc) in self.encoders.iter().enumerate() {
            if l > 0 {
                x = x.f_max_pool3d([2, 2, 2], [2, 2, 2], [0, 0, 0], [1, 1, 1], false)?;
            }
            x = enc.forward(&x)?;
            feats.push(x.shallow_clone());
        }
        let n = feats.len();
        for (i, dec) in self.decoders.iter().enumerate() {
            let skip = &feats[n - 2 - i];
            let size = skip.size();
            let up = x.f_upsample_nearest3d(&size[2..], None, None, None)?;
            let joined = match &dec.attention {
                Some(gate) => {
                    let gated = gate.forward_t(&up, skip, train)?;
                    Tensor::f_cat(&[&gated, &up], 1)?
                }
                None => Tensor::f_cat(&[skip, &up], 1)?,
            };
            x = dec.basic.forward(&joined)?;
        }
        self.final_conv.forward(&x)
    }
}

impl SegmentationNet for Unet3d {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor, NetError> {
        check_input(xs, self.cfg.in_channels(), self.size_divisor())?;
        self.run(xs, train)
            .map_err(NetError::torch(format!("{} forward", self.cfg.arch())))
    }

    fn config(&self) -> &NetConfig {
        &self.cfg
    }

    fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }
}
