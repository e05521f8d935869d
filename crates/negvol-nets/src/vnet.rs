//! The seed paper's V-Net (Milletari et al. 2016, as in the paper's code after vnet.pytorch).
//!
//! With `c_l = base_channels * 2^l` (16, 32, 64, 128, 256 by default):
//! - input transition: `PReLU(BN(Conv5(x)) + x repeated to c_0 channels)`;
//! - down transition `l` (1..=depth): `down = PReLU(BN(Conv2 stride 2 (c_{l-1} -> c_l)))`, then
//!   `n` LUConvs `PReLU(BN(Conv5(.)))` and `PReLU(ops(down) + down)` (2, 3, 3, 3 convs);
//! - up transition to level `l`: `up = PReLU(BN(ConvTranspose2 stride 2 (in -> c_l)))`,
//!   `cat = (up, skip_l)` with `2 c_l` channels, `PReLU(ops(cat) + cat)` (3, 3, 2, 1 convs);
//! - output: `Conv1x1(PReLU(BN(Conv5(2 c_0 -> classes))))` to logits (no softmax inside).
//!
//! All convolutions have biases; PReLU has one slope per channel (init 0.25). Conv3d weights are
//! Kaiming-normal with zero biases (the paper's init); transposed convolutions keep PyTorch's
//! default init. Dropout3d on transition inputs (`dropout`) and on skips (`skip_dropout`) is
//! optional. Parameter names equal the paper's PyTorch names (`in_tr.conv1.weight`,
//! `down_tr32.ops.0.bn1.running_mean`, `up_tr256.up_conv.weight`, `out_tr.conv2.bias`, ...);
//! transition names carry the paper's channel numbering of the level whatever `base_channels`
//! is: down transition to level `l` is `down_tr{16 * 2^l}`, up transition to level `l` is
//! `up_tr{32 * 2^l}` (so `down_tr32` .. `down_tr256`, `up_tr256` .. `up_tr32` by default).

use tch::nn::Path;
use tch::{TchError, Tensor};

use crate::config::{NetConfig, VnetConfig};
use crate::error::{NetError, Result};
use crate::layers::{
    check_input, Conv3d, ConvInit, ConvTranspose3d, LayerInfo, Norm, Prelu, Recorder,
};
use crate::SegmentationNet;

const KAIMING: ConvInit = ConvInit::KaimingNormal { a: 0.0 };

#[derive(Debug)]
struct LuConv {
    conv: Conv3d,
    bn: Norm,
    act: Prelu,
}

impl LuConv {
    fn new(p: &Path, rec: &mut Recorder, c: i64, k: i64, bs: bool) -> Result<Self> {
        let conv = Conv3d::new(&(p / "conv1"), rec, c, c, [k; 3], [1, 1, 1], true, KAIMING)?;
        let bn = Norm::batch(&(p / "bn1"), rec, c, bs)?;
        let act = Prelu::new(&(p / "relu1"), rec, c)?;
        Ok(Self { conv, bn, act })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        self.act
            .forward(&self.bn.forward_t(&self.conv.forward(x)?, train)?)
    }
}

fn make_ops(
    p: &Path,
    rec: &mut Recorder,
    c: i64,
    n: usize,
    k: i64,
    bs: bool,
) -> Result<Vec<LuConv>> {
    let ops = p / "ops";
    (0..n)
        .map(|i| LuConv::new(&(&ops / i), rec, c, k, bs))
        .collect()
}

fn run_ops(ops: &[LuConv], x: &Tensor, train: bool) -> Result<Tensor, TchError> {
    let mut y = x.shallow_clone();
    for op in ops {
        y = op.forward_t(&y, train)?;
    }
    Ok(y)
}

#[derive(Debug)]
struct Down {
    conv: Conv3d,
    bn: Norm,
    relu1: Prelu,
    relu2: Prelu,
    ops: Vec<LuConv>,
}

#[derive(Debug)]
struct Up {
    conv: ConvTranspose3d,
    bn: Norm,
    relu1: Prelu,
    relu2: Prelu,
    ops: Vec<LuConv>,
}

/// The paper's V-Net. Build it with [`crate::build`].
#[derive(Debug)]
pub struct Vnet {
    in_conv: Conv3d,
    in_bn: Norm,
    in_act: Prelu,
    downs: Vec<Down>,
    ups: Vec<Up>,
    out_conv1: Conv3d,
    out_bn: Norm,
    out_act: Prelu,
    out_conv2: Conv3d,
    opts: VnetConfig,
    cfg: NetConfig,
    layers: Vec<LayerInfo>,
}

impl Vnet {
    pub(crate) fn new(p: &Path, cfg: &NetConfig) -> Result<Self> {
        let NetConfig::Vnet(o) = cfg else {
            return Err(NetError::Config(format!(
                "Vnet cannot build arch {}",
                cfg.arch()
            )));
        };
        let mut rec = Recorder::default();
        let rec = &mut rec;
        let k = o.kernel;
        let bs = o.batch_stats_in_eval;
        let depth = o.down_convs.len();
        let ch = |l: usize| o.base_channels << l;
        let in_p = p / "in_tr";
        let in_conv = Conv3d::new(
            &(&in_p / "conv1"),
            rec,
            o.in_channels,
            ch(0),
            [k; 3],
            [1, 1, 1],
            true,
            KAIMING,
        )?;
        let in_bn = Norm::batch(&(&in_p / "bn1"), rec, ch(0), bs)?;
        let in_act = Prelu::new(&(&in_p / "relu1"), rec, ch(0))?;
        let mut downs = Vec::with_capacity(depth);
        for l in 1..=depth {
            let dp = p / format!("down_tr{}", 16i64 << l);
            let conv = Conv3d::new(
                &(&dp / "down_conv"),
                rec,
                ch(l - 1),
                ch(l),
                [2; 3],
                [2; 3],
                true,
                KAIMING,
            )?;
            let bn = Norm::batch(&(&dp / "bn1"), rec, ch(l), bs)?;
            let relu1 = Prelu::new(&(&dp / "relu1"), rec, ch(l))?;
            let relu2 = Prelu::new(&(&dp / "relu2"), rec, ch(l))?;
            let ops = make_ops(&dp, rec, ch(l), o.down_convs[l - 1], k, bs)?;
            downs.push(Down {
                conv,
                bn,
                relu1,
                relu2,
                ops,
            });
        }
        let mut ups = Vec::with_capacity(depth);
        let mut cin = ch(depth);
        for (i, l) in (0..depth).rev().enumerate() {
            let out = 2 * ch(l);
            let up = p / format!("up_tr{}", 32i64 << l);
            let conv = ConvTranspose3d::new(
                &(&up / "up_conv"),
                rec,
                cin,
                ch(l),
                [2; 3],
                ConvInit::TorchDefault,
            )?;
            let bn = Norm::batch(&(&up / "bn1"), rec, ch(l), bs)?;
            let relu1 = Prelu::new(&(&up / "relu1"), rec, ch(l))?;
            let relu2 = Prelu::new(&(&up / "relu2"), rec, out)?;
            let ops = make_ops(&up, rec, out, o.up_convs[i], k, bs)?;
            ups.push(Up {
                conv,
                bn,
                relu1,
                relu2,
                ops,
            });
            cin = out;
        }
        let op = p / "out_tr";
        let out_conv1 = Conv3d::new(
            &(&op / "conv1"),
            rec,
            cin,
            o.classes,
            [k; 3],
            [1, 1, 1],
            true,
            KAIMING,
        )?;
        let out_bn = Norm::batch(&(&op / "bn1"), rec, o.classes, bs)?;
        let out_act = Prelu::new(&(&op / "relu1"), rec, o.classes)?;
        let out_conv2 = Conv3d::new(
            &(&op / "conv2"),
            rec,
            o.classes,
            o.classes,
            [1; 3],
            [1, 1, 1],
            true,
            KAIMING,
        )?;
        let layers = std::mem::take(&mut rec.layers);
        Ok(Self {
            in_conv,
            in_bn,
            in_act,
            downs,
            ups,
            out_conv1,
            out_bn,
            out_act,
            out_conv2,
            opts: o.clone(),
            cfg: cfg.clone(),
            layers,
        })
    }

    fn dropout(x: &Tensor, p: f64, train: bool) -> Result<Tensor, TchError> {
        if p > 0.0 && train {
            x.f_feature_dropout(p, train)
        } else {
            Ok(x.shallow_clone())
        }
    }

    fn run(&self, xs: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let o = &self.opts;
        let reps = o.base_channels / o.in_channels;
        let y = self.in_bn.forward_t(&self.in_conv.forward(xs)?, train)?;
        let res = xs.f_repeat([1, reps, 1, 1, 1])?;
        let mut x = self.in_act.forward(&y.f_add(&res)?)?;
        let mut skips = vec![x.shallow_clone()];
        for d in &self.downs {
            let down = d
                .relu1
                .forward(&d.bn.forward_t(&d.conv.forward(&x)?, train)?)?;
            let out = run_ops(&d.ops, &Self::dropout(&down, o.dropout, train)?, train)?;
            x = d.relu2.forward(&out.f_add(&down)?)?;
            skips.push(x.shallow_clone());
        }
        let depth = self.downs.len();
        for (i, u) in self.ups.iter().enumerate() {
            let skip = Self::dropout(&skips[depth - 1 - i], o.skip_dropout, train)?;
            let inp = Self::dropout(&x, o.dropout, train)?;
            let up = u
                .relu1
                .forward(&u.bn.forward_t(&u.conv.forward(&inp)?, train)?)?;
            let cat = Tensor::f_cat(&[&up, &skip], 1)?;
            let out = run_ops(&u.ops, &cat, train)?;
            x = u.relu2.forward(&out.f_add(&cat)?)?;
        }
        let y = self
            .out_act
            .forward(&self.out_bn.forward_t(&self.out_conv1.forward(&x)?, train)?)?;
        self.out_conv2.forward(&y)
    }
}

impl SegmentationNet for Vnet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor, NetError> {
        check_input(xs, self.cfg.in_channels(), self.size_divisor())?;
        self.run(xs, train).map_err(NetError::torch("vnet forward"))
    }

    fn config(&self) -> &NetConfig {
        &self.cfg
    }

    fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }
}
