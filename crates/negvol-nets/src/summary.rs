//! A printable model summary: layers, parameter count, output shape.

use std::fmt;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::config::NetConfig;
use crate::error::{NetError, Result};
use crate::layers::LayerInfo;
use crate::{build, output_shape, parameter_count};

/// How the output shape in a [`Summary`] was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShapeCheck {
    /// A real forward pass (eval mode, CPU, zeros) at the requested input shape.
    Forward,
    /// The requested input was too large for a CPU forward: a forward pass ran at the smaller
    /// `probe` input (its output shape verified), and the output shape for the requested input was
    /// derived (every network keeps the spatial size).
    Probe {
        /// The input shape that was run.
        probe: Vec<i64>,
    },
}

/// The result of [`summarize`].
#[derive(Debug, Clone)]
pub struct Summary {
    /// The configuration.
    pub config: NetConfig,
    /// The layers in build order.
    pub layers: Vec<LayerInfo>,
    /// Trainable parameters.
    pub parameters: i64,
    /// Non-trainable buffers (BatchNorm running statistics), in scalars.
    pub buffers: i64,
    /// Requested input shape `[N, C, ni, nj, nk]`.
    pub input: Vec<i64>,
    /// Output (logits) shape.
    pub output: Vec<i64>,
    /// Shape of every deep-supervision output (one entry without deep supervision).
    pub deep_outputs: Vec<Vec<i64>>,
    /// How the output shape was checked.
    pub check: ShapeCheck,
}

/// Builds the network of `cfg` on the CPU and describes it for input shape `input`
/// `[N, C, ni, nj, nk]`. A forward pass runs at `input` when it has at most `max_forward_voxels`
/// voxels per sample, otherwise at the smallest valid input of twice the size divisor (see
/// [`ShapeCheck`]).
pub fn summarize(cfg: &NetConfig, input: &[i64], max_forward_voxels: i64) -> Result<Summary> {
    let output = output_shape(cfg, input)?;
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let net = build(&vs.root(), cfg)?;
    let voxels: i64 = input[2..].iter().product();
    let (run_shape, check) = if voxels <= max_forward_voxels {
        (input.to_vec(), ShapeCheck::Forward)
    } else {
        let d = cfg.size_divisor();
        let probe = vec![1, input[1], 2 * d[0], 2 * d[1], 2 * d[2]];
        (probe.clone(), ShapeCheck::Probe { probe })
    };
    let x = Tensor::f_zeros(run_shape.as_slice(), (Kind::Float, Device::Cpu))
        .map_err(NetError::torch("allocating the summary input"))?;
    let outs = tch::no_grad(|| net.forward_deep(&x, false))?;
    let scale = |o: &Tensor| -> Vec<i64> {
        // map the run's output shape to the requested input (spatial ratios are exact)
        let s = o.size();
        let mut v = vec![input[0], s[1]];
        for a in 0..3 {
            v.push(s[2 + a] * input[2 + a] / run_shape[2 + a]);
        }
        v
    };
    let deep_outputs: Vec<Vec<i64>> = outs.iter().map(scale).collect();
    if deep_outputs.first() != Some(&output) {
        return Err(NetError::Config(format!(
            "forward gave {:?} but {output:?} was expected",
            deep_outputs.first()
        )));
    }
    let total: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
    let parameters = parameter_count(&vs);
    Ok(Summary {
        config: cfg.clone(),
        layers: net.layers().to_vec(),
        parameters,
        buffers: total - parameters,
        input: input.to_vec(),
        output,
        deep_outputs,
        check,
    })
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "arch: {}", self.config.arch())?;
        let w = self
            .layers
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(f, "{:<w$}  {:>10}  layer", "name", "params")?;
        for l in &self.layers {
            writeln!(f, "{:<w$}  {:>10}  {}", l.name, l.params, l.description)?;
        }
        writeln!(f, "layers: {}", self.layers.len())?;
        writeln!(
            f,
            "trainable parameters: {} ({:.2} MB as f32); buffers: {}",
            self.parameters,
            self.parameters as f64 * 4.0 / 1e6,
            self.buffers
        )?;
        writeln!(f, "size divisor: {:?}", self.config.size_divisor())?;
        writeln!(f, "input:  {:?}", self.input)?;
        writeln!(
            f,
            "output: {:?} (logits; softmax over dim 1 for probabilities)",
            self.output
        )?;
        if self.deep_outputs.len() > 1 {
            writeln!(f, "deep supervision outputs: {:?}", self.deep_outputs)?;
        }
        match &self.check {
            ShapeCheck::Forward => writeln!(f, "checked by a CPU forward pass at the input shape"),
            ShapeCheck::Probe { probe } => writeln!(
                f,
                "input too large for a CPU forward: ran {probe:?} instead and scaled its output \
                 shape (all networks keep the spatial size)"
            ),
        }
    }
}
