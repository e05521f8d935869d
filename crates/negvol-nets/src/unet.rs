//! A modern configurable U-Net in the style of nnU-Net's `PlainConvUNet`.
//!
//! Encoder stage `s`: `convs_per_stage` x (Conv3d with bias -> norm -> LeakyReLU) of kernel
//! `kernel_sizes[s]` (default 3x3x3; padding `k / 2` per axis keeps the shape), the first conv
//! strided by `strides[s]` (no pooling). Decoder stage (deepest first): transposed conv
//! (kernel = stride) from the deeper features to the skip's channels, concatenation
//! `(skip, up)`, `convs_per_stage` convs with the kernel of the encoder stage of the same
//! resolution (nnU-Net v2's `UNetDecoder`). A 1x1x1 conv with bias gives the logits; with deep
//! supervision every decoder stage has one. Weights: Kaiming-normal with slope 0.01 and zero
//! biases (nnU-Net's `InitWeights_He(1e-2)`).
//!
//! Parameter names: `encoder.stages.{s}.convs.{c}.conv.weight`, `...norm.weight`,
//! `decoder.transpconvs.{d}.weight`, `decoder.stages.{d}.convs.{c}.conv.weight`,
//! `decoder.seg_layers.{d}.weight` with `d = 0` the deepest decoder stage (as in nnU-Net v2).
//! Without deep supervision only the last (full-resolution) seg layer exists.

use tch::nn::Path;
use tch::{TchError, Tensor};

use crate::config::{NetConfig, NormConfig, UnetConfig};
use crate::error::{NetError, Result};
use crate::layers::{
    check_input, leaky_relu, Conv3d, ConvInit, ConvTranspose3d, LayerInfo, Norm, Recorder,
};
use crate::SegmentationNet;

const HE: ConvInit = ConvInit::KaimingNormal { a: 0.01 };

#[derive(Debug)]
struct ConvNormAct {
    conv: Conv3d,
    norm: Norm,
}

#[derive(Debug)]
struct Stage {
    convs: Vec<ConvNormAct>,
}

impl Stage {
    fn new(
        p: &Path,
        rec: &mut Recorder,
        o: &UnetConfig,
        cin: i64,
        cout: i64,
        kernel: [i64; 3],
        first_stride: [i64; 3],
    ) -> Result<Self> {
        let cp = p / "convs";
        let mut convs = Vec::with_capacity(o.convs_per_stage);
        for c in 0..o.convs_per_stage {
            let lp = &cp / c;
            let (ci, st) = if c == 0 {
                (cin, first_stride)
            } else {
                (cout, [1, 1, 1])
            };
            let conv = Conv3d::new(&(&lp / "conv"), rec, ci, cout, kernel, st, true, HE)?;
            let np = &lp / "norm";
            let norm = match o.norm {
                NormConfig::Instance => Norm::group(&np, rec, cout, cout, "InstanceNorm3d")?,
                NormConfig::Group { groups } => Norm::group(&np, rec, groups, cout, "GroupNorm")?,
                NormConfig::Batch => Norm::batch(&np, rec, cout, false)?,
            };
            convs.push(ConvNormAct { conv, norm });
        }
        Ok(Self { convs })
    }

    fn forward_t(&self, x: &Tensor, train: bool, slope: f64) -> Result<Tensor, TchError> {
        let mut y = x.shallow_clone();
        for c in &self.convs {
            y = leaky_relu(&c.norm.forward_t(&c.conv.forward(&y)?, train)?, slope)?;
        }
        Ok(y)
    }
}

/// The modern nnU-Net-style U-Net. Build it with [`crate::build`].
#[derive(Debug)]
pub struct Unet {
    enc: Vec<Stage>,
    transp: Vec<ConvTranspose3d>,
    dec: Vec<Stage>,
    /// One per decoder stage (deepest first) with deep supervision; else only the last.
    seg: Vec<Option<Conv3d>>,
    opts: UnetConfig,
    cfg: NetConfig,
    layers: Vec<LayerInfo>,
}

impl Unet {
    pub(crate) fn new(p: &Path, cfg: &NetConfig) -> Result<Self> {
        let NetConfig::Unet(o) = cfg else {
            return Err(NetError::Config(format!(
                "Unet cannot build arch {}",
                cfg.arch()
            )));
        };
        let mut rec = Recorder::default();
        let strides = o.resolved_strides();
        let kernels = o.resolved_kernel_sizes();
        let f = &o.features;
        let n = f.len();
        let ep = p / "encoder" / "stages";
        let mut enc = Vec::with_capacity(n);
        for s in 0..n {
            let cin = if s == 0 { o.in_channels } else { f[s - 1] };
            enc.push(Stage::new(
                &(&ep / s),
                &mut rec,
                o,
                cin,
                f[s],
                kernels[s],
                strides[s],
            )?);
        }
        let dp = p / "decoder";
        let mut transp = Vec::with_capacity(n - 1);
        let mut dec = Vec::with_capacity(n - 1);
        let mut seg = Vec::with_capacity(n - 1);
        for d in 0..n - 1 {
            let deeper = f[n - 1 - d];
            let skip = f[n - 2 - d];
            let stride = strides[n - 1 - d];
            transp.push(ConvTranspose3d::new(
                &(&dp / "transpconvs" / d),
                &mut rec,
                deeper,
                skip,
                stride,
                HE,
            )?);
            dec.push(Stage::new(
                &(&dp / "stages" / d),
                &mut rec,
                o,
                2 * skip,
                skip,
                // the kernel of the encoder stage at this resolution (nnU-Net's decoder)
                kernels[n - 2 - d],
                [1, 1, 1],
            )?);
            let seg_here = o.deep_supervision || d == n - 2;
            seg.push(if seg_here {
                Some(Conv3d::new(
                    &(&dp / "seg_layers" / d),
                    &mut rec,
                    skip,
                    o.classes,
                    [1, 1, 1],
                    [1, 1, 1],
                    true,
                    HE,
                )?)
            } else {
                None
            });
        }
        Ok(Self {
            enc,
            transp,
            dec,
            seg,
            opts: o.clone(),
            cfg: cfg.clone(),
            layers: rec.layers,
        })
    }

    /// Returns the outputs of the requested decoder stages, highest resolution first.
    fn run(&self, xs: &Tensor, train: bool, all: bool) -> Result<Vec<Tensor>, TchError> {
        let slope = self.opts.negative_slope;
        let mut skips = Vec::with_capacity(self.enc.len());
        let mut x = xs.shallow_clone();
        for st in &self.enc {
            x = st.forward_t(&x, train, slope)?;
            skips.push(x.shallow_clone());
        }
        let n = skips.len();
        let mut outs = Vec::new();
        for d in 0..n - 1 {
            let up = self.transp[d].forward(&x)?;
            let cat = Tensor::f_cat(&[&skips[n - 2 - d], &up], 1)?;
            x = self.dec[d].forward_t(&cat, train, slope)?;
            let last = d == n - 2;
            if let Some(seg) = &self.seg[d] {
                if all || last {
                    outs.push(seg.forward(&x)?);
                }
            }
        }
        outs.reverse();
        Ok(outs)
    }
}

impl SegmentationNet for Unet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor, NetError> {
        check_input(xs, self.cfg.in_channels(), self.size_divisor())?;
        let mut outs = self
            .run(xs, train, false)
            .map_err(NetError::torch("unet forward"))?;
        outs.pop()
            .ok_or_else(|| NetError::Config("unet produced no output".into()))
    }

    fn forward_deep(&self, xs: &Tensor, train: bool) -> Result<Vec<Tensor>, NetError> {
        check_input(xs, self.cfg.in_channels(), self.size_divisor())?;
        self.run(xs, train, self.opts.deep_supervision)
            .map_err(NetError::torch("unet forward"))
    }

    fn config(&self) -> &NetConfig {
        &self.cfg
    }

    fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }
}
