//! Small fallible building blocks over raw libtorch ops (no panics on libtorch errors).

use tch::nn::{Init, Path};
use tch::{TchError, Tensor};

use crate::error::{NetError, Result};

/// One line of a network's layer table, recorded while the network is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Parameter-name prefix of the layer (e.g. `encoders.0.basic_module.SingleConv1.conv`).
    pub name: String,
    /// What the layer is, e.g. `Conv3d(1 -> 16, k=3, s=1, p=1, bias=false)`.
    pub description: String,
    /// Number of trainable parameters of this layer.
    pub params: i64,
}

/// Collects [`LayerInfo`] while building.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub layers: Vec<LayerInfo>,
}

impl Recorder {
    fn push(&mut self, p: &Path, description: String, params: i64) {
        let name = p.components().collect::<Vec<_>>().join(".");
        self.layers.push(LayerInfo {
            name,
            description,
            params,
        });
    }
}

/// Weight initialisation of convolutions.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ConvInit {
    /// PyTorch's default: kaiming-uniform with a = sqrt(5), i.e. U(+-1/sqrt(fan_in)) for the weight
    /// and the bias.
    TorchDefault,
    /// Kaiming-normal (fan-in) with leaky-ReLU slope `a` (a = 0: ReLU gain), zero bias.
    KaimingNormal { a: f64 },
}

fn fan_in(dims: &[i64]) -> f64 {
    (dims[1] * dims[2..].iter().product::<i64>()).max(1) as f64
}

fn make_weight(p: &Path, dims: &[i64], init: ConvInit) -> Result<(Tensor, f64)> {
    let fi = fan_in(dims);
    let (winit, bbound) = match init {
        ConvInit::TorchDefault => {
            let b = 1.0 / fi.sqrt();
            (Init::Uniform { lo: -b, up: b }, b)
        }
        ConvInit::KaimingNormal { a } => {
            let gain = (2.0 / (1.0 + a * a)).sqrt();
            (
                Init::Randn {
                    mean: 0.0,
                    stdev: gain / fi.sqrt(),
                },
                0.0,
            )
        }
    };
    let w = p
        .f_var("weight", dims, winit)
        .map_err(NetError::torch("creating weight"))?;
    Ok((w, bbound))
}

fn make_bias(p: &Path, n: i64, bound: f64) -> Result<Tensor> {
    let init = if bound > 0.0 {
        Init::Uniform {
            lo: -bound,
            up: bound,
        }
    } else {
        Init::Const(0.0)
    };
    p.f_var("bias", &[n], init)
        .map_err(NetError::torch("creating bias"))
}

/// A 3D convolution.
#[derive(Debug)]
pub(crate) struct Conv3d {
    w: Tensor,
    b: Option<Tensor>,
    stride: [i64; 3],
    padding: [i64; 3],
}

impl Conv3d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: &Path,
        rec: &mut Recorder,
        cin: i64,
        cout: i64,
        k: [i64; 3],
        stride: [i64; 3],
        bias: bool,
        init: ConvInit,
    ) -> Result<Self> {
        // "same" padding for odd kernels, none for even ones (the strided 2x2x2 down convs)
        let padding = [(k[0] - 1) / 2, (k[1] - 1) / 2, (k[2] - 1) / 2];
        let dims = [cout, cin, k[0], k[1], k[2]];
        let (w, bound) = make_weight(p, &dims, init)?;
        let b = if bias {
            Some(make_bias(p, cout, bound)?)
        } else {
            None
        };
        let params = dims.iter().product::<i64>() + if bias { cout } else { 0 };
        rec.push(
            p,
            format!("Conv3d({cin} -> {cout}, k={k:?}, s={stride:?}, p={padding:?}, bias={bias})"),
            params,
        );
        Ok(Self {
            w,
            b,
            stride,
            padding,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_conv3d(
            &self.w,
            self.b.as_ref(),
            self.stride,
            self.padding,
            [1, 1, 1],
            1,
        )
    }
}

/// A 3D transposed convolution with kernel = stride (exact up-sampling by the stride).
#[derive(Debug)]
pub(crate) struct ConvTranspose3d {
    w: Tensor,
    b: Tensor,
    stride: [i64; 3],
}

impl ConvTranspose3d {
    pub fn new(
        p: &Path,
        rec: &mut Recorder,
        cin: i64,
        cout: i64,
        stride: [i64; 3],
        init: ConvInit,
    ) -> Result<Self> {
        let dims = [cin, cout, stride[0], stride[1], stride[2]];
        let (w, bound) = make_weight(p, &dims, init)?;
        let b = make_bias(p, cout, bound)?;
        let params = dims.iter().product::<i64>() + cout;
        rec.push(
            p,
            format!("ConvTranspose3d({cin} -> {cout}, k=s={stride:?}, bias=true)"),
            params,
        );
        Ok(Self { w, b, stride })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_conv_transpose3d(
            &self.w,
            Some(&self.b),
            self.stride,
            [0, 0, 0],
            [0, 0, 0],
            1,
            [1, 1, 1],
        )
    }
}

/// Normalisation layers.
#[derive(Debug)]
pub(crate) enum Norm {
    Batch {
        w: Tensor,
        b: Tensor,
        mean: Tensor,
        var: Tensor,
        always_batch_stats: bool,
    },
    Group {
        groups: i64,
        w: Tensor,
        b: Tensor,
    },
}

impl Norm {
    /// BatchNorm (momentum 0.1, eps 1e-5) with PyTorch parameter names.
    pub fn batch(p: &Path, rec: &mut Recorder, c: i64, always_batch_stats: bool) -> Result<Self> {
        let e = NetError::torch("creating BatchNorm");
        let w = p.f_var("weight", &[c], Init::Const(1.0)).map_err(&e)?;
        let b = p.f_var("bias", &[c], Init::Const(0.0)).map_err(&e)?;
        let mean = p.f_zeros_no_train("running_mean", &[c]).map_err(&e)?;
        let var = p.f_ones_no_train("running_var", &[c]).map_err(&e)?;
        let desc = if always_batch_stats {
            format!("BatchNorm3d({c}, batch statistics always)")
        } else {
            format!("BatchNorm3d({c})")
        };
        rec.push(p, desc, 2 * c);
        Ok(Norm::Batch {
            w,
            b,
            mean,
            var,
            always_batch_stats,
        })
    }

    /// GroupNorm (eps 1e-5, affine). `groups == c` is instance normalisation.
    pub fn group(p: &Path, rec: &mut Recorder, groups: i64, c: i64, label: &str) -> Result<Self> {
        if groups < 1 || c % groups != 0 {
            return Err(NetError::Config(format!(
                "{}: {groups} groups do not divide {c} channels",
                p.components().collect::<Vec<_>>().join(".")
            )));
        }
        let e = NetError::torch("creating GroupNorm");
        let w = p.f_var("weight", &[c], Init::Const(1.0)).map_err(&e)?;
        let b = p.f_var("bias", &[c], Init::Const(0.0)).map_err(&e)?;
        rec.push(p, format!("{label}({groups} groups, {c} channels)"), 2 * c);
        Ok(Norm::Group { groups, w, b })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        match self {
            Norm::Batch {
                w,
                b,
                mean,
                var,
                always_batch_stats,
            } => x.f_batch_norm(
                Some(w),
                Some(b),
                Some(mean),
                Some(var),
                train || *always_batch_stats,
                0.1,
                1e-5,
                true,
            ),
            Norm::Group { groups, w, b } => x.f_group_norm(*groups, Some(w), Some(b), 1e-5, true),
        }
    }
}

/// PReLU with one slope per channel (initialised to 0.25 like PyTorch).
#[derive(Debug)]
pub(crate) struct Prelu {
    w: Tensor,
}

impl Prelu {
    pub fn new(p: &Path, rec: &mut Recorder, c: i64) -> Result<Self> {
        let w = p
            .f_var("weight", &[c], Init::Const(0.25))
            .map_err(NetError::torch("creating PReLU"))?;
        rec.push(p, format!("PReLU({c})"), c);
        Ok(Self { w })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TchError> {
        x.f_prelu(&self.w)
    }
}

/// LeakyReLU with a given slope.
pub(crate) fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor, TchError> {
    if slope == 0.0 {
        x.f_relu()
    } else if (slope - 0.01).abs() < 1e-12 {
        x.f_leaky_relu()
    } else {
        // max(x, slope * x) for 0 <= slope <= 1; the general form x if x > 0 else slope * x.
        let neg = x.f_mul_scalar(slope)?;
        let pos = x.f_gt(0.0)?;
        x.f_where_self(&pos, &neg)
    }
}

/// Checks a `[N, C, ni, nj, nk]` input against the expected channels and divisor.
pub(crate) fn check_input(xs: &Tensor, in_channels: i64, divisor: [i64; 3]) -> Result<()> {
    let shape = xs.size();
    if shape.len() != 5 {
        return Err(NetError::InputRank { shape });
    }
    if shape[1] != in_channels {
        return Err(NetError::InputChannels {
            expected: in_channels,
            got: shape[1],
            shape,
        });
    }
    if shape[0] < 1 || (0..3).any(|a| shape[2 + a] < 1 || shape[2 + a] % divisor[a] != 0) {
        return Err(NetError::InputSize { shape, divisor });
    }
    Ok(())
}
