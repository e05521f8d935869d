//! Optimisers (Adam, AdamW, SGD with Nesterov momentum) and learning-rate schedules, with
//! state that can be saved and restored exactly.
//!
//! The update rules are PyTorch's (`torch.optim.Adam` with L2 weight decay added to the
//! gradient, `AdamW` with decoupled decay, `SGD` with dampening 0). They are written here
//! rather than taken from libtorch's C++ optimisers because those expose no state for
//! checkpoints, and a resumed run must continue exactly where it stopped.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::{Result, TrainError};

/// Optimiser choice and hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OptimizerConfig {
    /// Adam with L2 weight decay (added to the gradient).
    Adam {
        /// Base learning rate.
        lr: f64,
        /// `(beta1, beta2)`.
        betas: [f64; 2],
        /// Denominator epsilon.
        eps: f64,
        /// L2 weight decay.
        weight_decay: f64,
    },
    /// AdamW (decoupled weight decay).
    AdamW {
        /// Base learning rate.
        lr: f64,
        /// `(beta1, beta2)`.
        betas: [f64; 2],
        /// Denominator epsilon.
        eps: f64,
        /// Decoupled weight decay.
        weight_decay: f64,
    },
    /// Stochastic gradient descent with (Nesterov) momentum (nnU-Net: lr 0.01, momentum 0.99,
    /// Nesterov, weight decay 3e-5).
    Sgd {
        /// Base learning rate.
        lr: f64,
        /// Momentum.
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 weight decay.
        weight_decay: f64,
    },
}

impl Default for OptimizerConfig {
    /// The seed paper's Adam, lr 1e-4, weight decay 0.01.
    fn default() -> Self {
        Self::Adam {
            lr: 1e-4,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl OptimizerConfig {
    /// Adam with PyTorch's betas `(0.9, 0.999)` and eps `1e-8`, L2 weight decay.
    pub fn adam(lr: f64, weight_decay: f64) -> Self {
        Self::Adam {
            lr,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay,
        }
    }

    /// nnU-Net's SGD.
    pub fn nnunet_sgd() -> Self {
        Self::Sgd {
            lr: 0.01,
            momentum: 0.99,
            nesterov: true,
            weight_decay: 3e-5,
        }
    }

    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Self::Adam { lr, .. } | Self::AdamW { lr, .. } | Self::Sgd { lr, .. } => *lr,
        }
    }

    /// Check the hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        let ok = match self {
            Self::Adam {
                lr,
                betas,
                eps,
                weight_decay,
            }
            | Self::AdamW {
                lr,
                betas,
                eps,
                weight_decay,
            } => {
                *lr > 0.0
                    && betas.iter().all(|b| (0.0..1.0).contains(b))
                    && *eps > 0.0
                    && *weight_decay >= 0.0
            }
            Self::Sgd {
                lr,
                momentum,
                weight_decay,
                nesterov,
            } => {
                *lr > 0.0
                    && (0.0..1.0).contains(momentum)
                    && *weight_decay >= 0.0
                    && (!*nesterov || *momentum > 0.0)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(TrainError::Config(format!(
                "invalid optimiser settings {self:?}"
            )))
        }
    }
}

/// Learning-rate schedule over epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `step_size` epochs (the paper: 30, 0.1).
    Step {
        /// Epochs per step.
        step_size: usize,
        /// Factor per step.
        gamma: f64,
    },
    /// `lr * (1 - epoch / epochs) ^ exponent` (nnU-Net: 0.9).
    Poly {
        /// Exponent.
        exponent: f64,
    },
}

impl Default for LrSchedule {
    /// The seed paper's StepLR(30, 0.1).
    fn default() -> Self {
        Self::Step {
            step_size: 30,
            gamma: 0.1,
        }
    }
}

impl LrSchedule {
    /// The learning rate of (0-based) `epoch` out of `epochs`.
    pub fn lr(&self, base: f64, epoch: usize, epochs: usize) -> f64 {
        match self {
            Self::Constant => base,
            Self::Step { step_size, gamma } => {
                base * gamma.powi((epoch / (*step_size).max(1)) as i32)
            }
            Self::Poly { exponent } => {
                let t = (epoch as f64 / epochs.max(1) as f64).min(1.0);
                base * (1.0 - t).powf(*exponent)
            }
        }
    }
}

/// An optimiser over the trainable variables of a [`VarStore`], with inspectable state.
///
/// # Flat buffers
///
/// On a GPU, when every trainable variable is on one device and of one floating-point kind
/// (the usual case), [`Optimizer::new`] moves them into one contiguous flat tensor and makes each variable
/// a view of it (`Tensor::set_data`: the network's and the `VarStore`'s handles share the
/// variable, so they all see the change). The optimiser's state (`m`, `v` for Adam, `momentum`
/// for SGD) is flat too, and the first gradient read after [`Optimizer::zero_grad`] copies the
/// gradients into one flat gradient and makes each gradient a view of it, so that later
/// backward passes accumulate straight into it. [`Optimizer::grad_norm`],
/// [`Optimizer::scale_grads`] and [`Optimizer::step`] are then a handful of kernels over the
/// flat buffers instead of several per variable (on a GPU, launches and host work dominated
/// the step of networks with many small tensors).
///
/// The arithmetic is the per-parameter arithmetic, element by element, so both paths agree to
/// float rounding (the gradient norm is summed in a different order). The per-parameter path
/// is still taken when a variable's gradient is undefined at the first gradient read after
/// `zero_grad` (that variable is then skipped entirely, as PyTorch does), and for good when the
/// variables stop being views of the flat buffer (someone called `set_data` on them, e.g.
/// `VarStore::set_device`; writing into them with `copy_`, as `VarStore::copy` and checkpoint
/// loading do, is fine).
#[derive(Debug)]
pub struct Optimizer {
    cfg: OptimizerConfig,
    params: Vec<(String, Tensor)>,
    /// Per-parameter state buffers (`m`, `v` for Adam; `momentum` for SGD), keyed
    /// `m/<name>`...; views of the flat state buffers on the flat path.
    state: BTreeMap<String, Tensor>,
    step: i64,
    lr: f64,
    /// The flat parameter and state buffers (`None`: per-parameter path only).
    flat: Option<Flat>,
    /// What the first gradient read since the last `zero_grad` found.
    grads: Mutex<GradRead>,
    /// Steps taken on the flat buffers (for tests).
    #[cfg_attr(not(test), allow(dead_code))]
    flat_steps: u64,
}

/// A state buffer of the optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    M,
    V,
    Momentum,
}

impl Slot {
    /// The prefix of its keys in the saved state.
    fn prefix(self) -> &'static str {
        match self {
            Slot::M => "m",
            Slot::V => "v",
            Slot::Momentum => "momentum",
        }
    }

    fn from_prefix(p: &str) -> Option<Self> {
        match p {
            "m" => Some(Slot::M),
            "v" => Some(Slot::V),
            "momentum" => Some(Slot::Momentum),
            _ => None,
        }
    }
}

/// The flat buffers: the parameters and the optimiser state, each one contiguous tensor, the
/// parameters (and their state entries) being views of them in `Optimizer::params` order.
#[derive(Debug)]
struct Flat {
    device: Device,
    kind: Kind,
    /// Bytes per element.
    elt: usize,
    /// Elements per chunk of the update (`CPU_CHUNK` on the CPU, everything on a GPU).
    chunk: i64,
    /// `(offset, numel)` of each parameter, in elements.
    spans: Vec<(i64, i64)>,
    shapes: Vec<Vec<i64>>,
    param: Tensor,
    m: Option<Tensor>,
    v: Option<Tensor>,
    momentum: Option<Tensor>,
    /// Every parameter has its entries in `Optimizer::state` (as views of the flat state);
    /// regions of the flat state without an entry are zero.
    state_complete: bool,
}

/// The outcome of the first gradient read since `zero_grad`.
#[derive(Debug, Default)]
struct GradRead {
    path: Option<GradPath>,
    /// The flat gradient: while the layout holds, every parameter's gradient is a view of it.
    flat: Option<Tensor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GradPath {
    /// Every gradient is a view of the flat gradient.
    Flat,
    /// Some gradient is undefined, or there are no flat buffers: one parameter at a time.
    PerParameter,
}

impl Flat {
    /// Flat buffers for `params`, or `None` when they are not all of one device and one
    /// floating-point kind (or libtorch refuses, e.g. out of memory: the per-parameter path then
    /// runs as before).
    fn build(cfg: &OptimizerConfig, params: &mut [(String, Tensor)]) -> Option<Self> {
        let first = &params.first()?.1;
        let (device, kind) = (first.device(), first.kind());
        if !kind_is_float(kind)
            || params
                .iter()
                .any(|(_, p)| p.device() != device || p.kind() != kind)
        {
            return None;
        }
        let shapes: Vec<Vec<i64>> = params.iter().map(|(_, p)| p.size()).collect();
        let mut spans = Vec::with_capacity(shapes.len());
        let mut offset = 0i64;
        for s in &shapes {
            let n: i64 = s.iter().product();
            spans.push((offset, n));
            offset += n;
        }
        let total = offset;
        let zeros = || Tensor::f_zeros([total], (kind, device)).ok();
        let (m, v, momentum) = match cfg {
            OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => {
                (Some(zeros()?), Some(zeros()?), None)
            }
            OptimizerConfig::Sgd { momentum, .. } => (
                None,
                None,
                if *momentum > 0.0 {
                    Some(zeros()?)
                } else {
                    None
                },
            ),
        };
        let param = tch::no_grad(|| {
            let parts: Vec<Tensor> = params
                .iter()
                .map(|(_, p)| p.detach().reshape([-1]))
                .collect();
            Tensor::f_cat(&parts, 0).ok()
        })?;
        let flat = Self {
            device,
            kind,
            elt: kind.elt_size_in_bytes(),
            chunk: if device == Device::Cpu {
                CPU_CHUNK
            } else {
                total
            },
            spans,
            shapes,
            param,
            m,
            v,
            momentum,
            state_complete: false,
        };
        for (i, (_, p)) in params.iter_mut().enumerate() {
            // The values are already in the flat buffer; a failure here leaves a parameter
            // outside it, which `intact` notices (and the per-parameter path takes over).
            let view = flat.view(&flat.param, i);
            if p.f_set_data(&view).is_err() {
                return None;
            }
        }
        Some(flat)
    }

    /// Parameter `i`'s part of the flat tensor `buf`, shaped like the parameter.
    fn view(&self, buf: &Tensor, i: usize) -> Tensor {
        let (off, n) = self.spans[i];
        buf.narrow(0, off, n).view(self.shapes[i].as_slice())
    }

    fn buffer(&self, slot: Slot) -> Option<&Tensor> {
        match slot {
            Slot::M => self.m.as_ref(),
            Slot::V => self.v.as_ref(),
            Slot::Momentum => self.momentum.as_ref(),
        }
    }

    /// Whether `t` is exactly parameter `i`'s part of the flat tensor `base`.
    fn is_view_of(&self, t: &Tensor, base: &Tensor, i: usize) -> bool {
        let (off, n) = self.spans[i];
        t.defined()
            && t.device() == self.device
            && t.kind() == self.kind
            && t.size() == self.shapes[i]
            && t.is_contiguous()
            && (n == 0
                || t.data_ptr() as usize == base.data_ptr() as usize + off as usize * self.elt)
    }

    /// Whether every parameter is still its view of the flat parameter buffer (host-side
    /// checks only: pointers, shapes, device, kind).
    fn intact(&self, params: &[(String, Tensor)]) -> bool {
        params.len() == self.spans.len()
            && params
                .iter()
                .enumerate()
                .all(|(i, (_, p))| self.is_view_of(p, &self.param, i))
    }

    /// Whether every parameter's gradient is its view of the flat gradient `grad`.
    fn grads_are_views(&self, params: &[(String, Tensor)], grad: &Tensor) -> bool {
        params
            .iter()
            .enumerate()
            .all(|(i, (_, p))| self.is_view_of(&p.grad(), grad, i))
    }
}

fn kind_is_float(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
    )
}

impl Optimizer {
    /// An optimiser over every trainable variable of `vs` (sorted by name). On a GPU, when they
    /// are all on one device and of one floating-point kind, the variables are moved into one
    /// flat buffer (each becomes a view of it; see the type's documentation). On the CPU it
    /// updates one parameter at a time: there a kernel costs no launch, and a parameter's
    /// buffers stay in cache across its few operations, which one pass over the whole flat
    /// buffer does not (the paper's unet3d: 14 ms per step against 35 ms flat,
    /// `benches/optimizer.rs`).
    pub fn new(cfg: &OptimizerConfig, vs: &VarStore) -> Result<Self> {
        if vs.device() == Device::Cpu {
            return Self::new_per_parameter(cfg, vs);
        }
        Self::new_flat(cfg, vs)
    }

    /// An optimiser on flat buffers whatever the device (the GPU default of
    /// [`Optimizer::new`]; for tests and benchmarks on the CPU).
    #[doc(hidden)]
    pub fn new_flat(cfg: &OptimizerConfig, vs: &VarStore) -> Result<Self> {
        let mut opt = Self::new_per_parameter(cfg, vs)?;
        opt.flat = Flat::build(cfg, &mut opt.params);
        Ok(opt)
    }

    /// An optimiser that always updates one parameter at a time (the path the flat buffers
    /// replaced; for tests and benchmarks).
    #[doc(hidden)]
    pub fn new_per_parameter(cfg: &OptimizerConfig, vs: &VarStore) -> Result<Self> {
        cfg.validate()?;
        let mut params: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self {
            cfg: cfg.clone(),
            params,
            state: BTreeMap::new(),
            step: 0,
            lr: cfg.lr(),
            flat: None,
            grads: Mutex::new(GradRead::default()),
            flat_steps: 0,
        })
    }

    /// Whether the next step runs on the flat buffers (false: one parameter at a time, see the
    /// type's documentation).
    #[doc(hidden)]
    pub fn is_flat(&self) -> bool {
        self.flat.as_ref().is_some_and(|f| f.intact(&self.params))
    }

    /// Number of steps taken.
    pub fn steps(&self) -> i64 {
        self.step
    }

    /// Set the learning rate of the next steps.
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Clear the gradients (in place, as `Tensor::zero_grad` does: a gradient once defined
    /// stays defined). The next [`Optimizer::grad_norm`], [`Optimizer::scale_grads`] or
    /// [`Optimizer::step`] reads the gradients afresh.
    pub fn zero_grad(&mut self) {
        self.drop_flat_if_broken();
        let read = self.grads.get_mut().unwrap_or_else(PoisonError::into_inner);
        read.path = None;
        if let (Some(f), Some(g)) = (&self.flat, &read.flat) {
            if f.grads_are_views(&self.params, g) {
                let mut g = g.shallow_clone();
                let _ = tch::no_grad(|| g.zero_());
                return;
            }
        }
        read.flat = None;
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Forget the flat buffers when the parameters are no longer views of them.
    fn drop_flat_if_broken(&mut self) {
        if self.flat.as_ref().is_some_and(|f| !f.intact(&self.params)) {
            self.flat = None;
            let read = self.grads.get_mut().unwrap_or_else(PoisonError::into_inner);
            *read = GradRead::default();
        }
    }

    /// Read the gradients if this is the first read since `zero_grad`: on the flat path, make
    /// them views of the flat gradient (copying them into it unless they already are), and
    /// return the flat gradient; `None` selects the per-parameter path.
    fn read_grads(&self) -> Option<Tensor> {
        let mut read = self.grads.lock().unwrap_or_else(PoisonError::into_inner);
        if read.path.is_none() {
            let path = self.gather(&mut read);
            read.path = Some(path);
        }
        match read.path {
            Some(GradPath::Flat) => read.flat.as_ref().map(Tensor::shallow_clone),
            _ => None,
        }
    }

    fn gather(&self, read: &mut GradRead) -> GradPath {
        let Some(f) = self.flat.as_ref().filter(|f| f.intact(&self.params)) else {
            return GradPath::PerParameter;
        };
        if let Some(g) = &read.flat {
            if f.grads_are_views(&self.params, g) {
                return GradPath::Flat;
            }
        }
        read.flat = None;
        let grads: Vec<Tensor> = self.params.iter().map(|(_, p)| p.grad()).collect();
        if grads
            .iter()
            .any(|g| !g.defined() || g.device() != f.device || g.kind() != f.kind)
        {
            return GradPath::PerParameter;
        }
        let flat = tch::no_grad(|| {
            let parts: Vec<Tensor> = grads.iter().map(|g| g.reshape([-1])).collect();
            Tensor::f_cat(&parts, 0)
        });
        let Ok(flat) = flat else {
            return GradPath::PerParameter;
        };
        for (i, mut g) in grads.into_iter().enumerate() {
            if g.f_set_data(&f.view(&flat, i)).is_err() {
                // The gradients set so far are views holding the same values; the rest are
                // untouched: the per-parameter path reads them all correctly.
                return GradPath::PerParameter;
            }
        }
        read.flat = Some(flat);
        GradPath::Flat
    }

    /// Global L2 norm of the gradients (0 if none).
    ///
    /// The first of `grad_norm`, [`Optimizer::scale_grads`] and [`Optimizer::step`] after
    /// [`Optimizer::zero_grad`] reads the gradients and chooses the path of this step: the
    /// flat path when every gradient is defined (the gradients then become views of one flat
    /// gradient, so changes made to them in place, a further backward pass included, are
    /// still seen), the per-parameter path otherwise. Replacing a gradient tensor between these
    /// calls (rather than writing into it) is not seen on the flat path.
    pub fn grad_norm(&self) -> f64 {
        tch::no_grad(|| {
            if let Some(g) = self.read_grads() {
                return g.to_kind(Kind::Float).norm().double_value(&[]);
            }
            let norms: Vec<Tensor> = self
                .params
                .iter()
                .map(|(_, p)| p.grad())
                .filter(|g| g.defined())
                .map(|g| g.to_kind(Kind::Float).norm())
                .collect();
            if norms.is_empty() {
                0.0
            } else {
                // The 2-norm of the per-tensor 2-norms is the global 2-norm.
                Tensor::stack(&norms, 0).norm().double_value(&[])
            }
        })
    }

    /// Multiply every gradient by `f` (the gradients as the parameters hold them: the next
    /// [`Optimizer::step`] uses the scaled gradients). Reads the gradients like
    /// [`Optimizer::grad_norm`] when it is the first such call after [`Optimizer::zero_grad`].
    pub fn scale_grads(&mut self, f: f64) {
        tch::no_grad(|| {
            if let Some(mut g) = self.read_grads() {
                let _ = g.g_mul_scalar_(f);
                return;
            }
            for (_, p) in &self.params {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(f);
                }
            }
        });
    }

    /// Clip the global gradient norm to `max_norm` (PyTorch's `clip_grad_norm_`); returns the
    /// norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let n = self.grad_norm();
        if n.is_finite() && n > max_norm {
            self.scale_grads(max_norm / (n + 1e-6));
        }
        n
    }

    /// One update with the current gradients. Reads the gradients like
    /// [`Optimizer::grad_norm`] when it is the first such call after [`Optimizer::zero_grad`];
    /// checks (on the host) that the parameters are still views of the flat buffer before
    /// updating it, and updates one parameter at a time otherwise.
    pub fn step(&mut self) {
        self.drop_flat_if_broken();
        self.step += 1;
        let t = self.step as f64;
        let lr = self.lr;
        match self.read_grads() {
            Some(g) => {
                self.flat_step(&g, t, lr);
                self.flat_steps += 1;
            }
            None => tch::no_grad(|| {
                per_parameter_step(
                    &self.cfg,
                    &mut self.params,
                    &mut self.state,
                    self.flat.as_ref(),
                    t,
                    lr,
                )
            }),
        }
    }

    /// The update on the flat buffers: the per-parameter arithmetic on all parameters at once
    /// (on the CPU, chunk by chunk so that each chunk's kernels run while it is in cache; on a
    /// GPU in one chunk: one launch per operation).
    fn flat_step(&mut self, g: &Tensor, t: f64, lr: f64) {
        let Some(f) = self.flat.as_mut() else {
            return;
        };
        let total = f.spans.last().map_or(0, |(off, n)| off + n);
        let chunk = f.chunk.clamp(1, total.max(1));
        let part = |b: &Tensor, s: i64, n: i64| {
            if n == total {
                b.shallow_clone()
            } else {
                b.narrow(0, s, n)
            }
        };
        tch::no_grad(|| {
            for s in (0..total).step_by(chunk as usize) {
                let n = chunk.min(total - s);
                let p = part(&f.param, s, n);
                let g = part(g, s, n);
                let [m, v, buf] =
                    [&f.m, &f.v, &f.momentum].map(|b| b.as_ref().map(|b| part(b, s, n)));
                flat_update(&self.cfg, p, &g, m, v, buf, t, lr);
            }
        });
        if !f.state_complete {
            for (i, (name, _)) in self.params.iter().enumerate() {
                for slot in [Slot::M, Slot::V, Slot::Momentum] {
                    if let Some(buf) = f.buffer(slot) {
                        self.state
                            .entry(format!("{}/{name}", slot.prefix()))
                            .or_insert_with(|| f.view(buf, i));
                    }
                }
            }
            f.state_complete = true;
        }
    }

    /// Save the state buffers and the step count (safetensors). The format is the same on
    /// both paths: one tensor per parameter and buffer (`m/<name>`, `v/<name>`,
    /// `momentum/<name>`) and `__step`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = self
            .state
            .iter()
            .map(|(k, v)| (k.clone(), v.to_device(tch::Device::Cpu)))
            .collect();
        named.push(("__step".into(), Tensor::from_slice(&[self.step])));
        Tensor::write_safetensors(&named, path).map_err(|e| {
            TrainError::torch(format!("writing optimiser state {}", path.display()), e)
        })
    }

    /// Restore state saved by [`Optimizer::save`] (onto the parameters' devices; into the flat
    /// state buffers on the flat path). Each buffer must have its parameter's shape.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let named = Tensor::read_safetensors(path).map_err(|e| {
            TrainError::torch(format!("reading optimiser state {}", path.display()), e)
        })?;
        self.drop_flat_if_broken();
        let index: BTreeMap<&str, usize> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.as_str(), i))
            .collect();
        let bad = |message: String| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message,
        };
        let mut entries = Vec::with_capacity(named.len());
        let mut step = None;
        for (k, v) in named {
            if k == "__step" {
                step = Some(v.int64_value(&[0]));
                continue;
            }
            let (prefix, pname) = k.split_once('/').unwrap_or(("", ""));
            let i = *index.get(pname).ok_or_else(|| {
                bad(format!(
                    "optimiser state {k:?} names no parameter of this network"
                ))
            })?;
            let want = self.params[i].1.size();
            if v.size() != want {
                return Err(bad(format!(
                    "optimiser state {k:?} has shape {:?}, the parameter has {want:?}",
                    v.size()
                )));
            }
            entries.push((k.clone(), Slot::from_prefix(prefix), i, v));
        }
        let step = step.ok_or_else(|| bad("optimiser state without a step count".into()))?;
        let mut state = BTreeMap::new();
        tch::no_grad(|| -> Result<()> {
            if let Some(f) = self.flat.as_mut() {
                for buf in [&f.m, &f.v, &f.momentum].into_iter().flatten() {
                    let mut b = buf.shallow_clone();
                    let _ = b
                        .f_zero_()
                        .map_err(|e| TrainError::torch("clearing optimiser state", e))?;
                }
                f.state_complete = false;
            }
            for (k, slot, i, v) in entries {
                let flat = self
                    .flat
                    .as_ref()
                    .and_then(|f| Some(f.view(f.buffer(slot?)?, i)));
                let t = match flat {
                    Some(mut view) => {
                        view.f_copy_(&v)
                            .map_err(|e| TrainError::torch(format!("loading {k}"), e))?;
                        view
                    }
                    None => v.to_device(self.params[i].1.device()),
                };
                state.insert(k, t);
            }
            Ok(())
        })?;
        self.step = step;
        self.state = state;
        Ok(())
    }
}

/// Elements per chunk of the flat update on the CPU (16 MiB of f32 per buffer). Chunks bound
/// the temporaries and keep a chunk's buffers in the last-level cache across its kernels; much
/// smaller ones (1 MiB) were faster with one libtorch thread but, with two threads on the
/// shared 2-core box, each chunk's kernels became a parallel region that waited on a
/// descheduled thread (vnet: seconds per step).
const CPU_CHUNK: i64 = 1 << 22;

/// The update of a stretch `p` of the flat parameters with its gradient `g` and state: the
/// per-parameter arithmetic of [`per_parameter_step`], operation for operation (a state buffer
/// of a parameter without one yet is zero, which gives the per-parameter initial values).
#[allow(clippy::too_many_arguments)]
fn flat_update(
    cfg: &OptimizerConfig,
    mut p: Tensor,
    g: &Tensor,
    m: Option<Tensor>,
    v: Option<Tensor>,
    buf: Option<Tensor>,
    t: f64,
    lr: f64,
) {
    match *cfg {
        OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => {
            let (Some(adam), Some(mut m), Some(mut v)) = (AdamStep::of(cfg, t, lr), m, v) else {
                return;
            };
            adam.apply(&mut p, g, &mut m, &mut v);
        }
        OptimizerConfig::Sgd {
            momentum,
            nesterov,
            weight_decay,
            ..
        } => {
            let g = if weight_decay != 0.0 {
                g + &p * weight_decay
            } else {
                g.shallow_clone()
            };
            let d = match buf {
                // A new buffer is zero, so this is the per-parameter `buf = g` then.
                Some(mut buf) if momentum > 0.0 => {
                    let _ = buf.g_mul_scalar_(momentum);
                    let _ = buf.g_add_(&g);
                    if nesterov {
                        &g + buf * momentum
                    } else {
                        buf
                    }
                }
                _ => g,
            };
            let _ = p.g_sub_(&(d * lr));
        }
    }
}

/// The per-parameter update (the path for undefined gradients and non-flat parameters): each
/// parameter with a gradient is updated in its own kernels; one without is skipped entirely.
/// New state entries are views of the flat state when there is one (zero there).
fn per_parameter_step(
    cfg: &OptimizerConfig,
    params: &mut [(String, Tensor)],
    state: &mut BTreeMap<String, Tensor>,
    flat: Option<&Flat>,
    t: f64,
    lr: f64,
) {
    let flat_view = |slot: Slot, i: usize| flat.and_then(|f| f.buffer(slot).map(|b| f.view(b, i)));
    for (i, (name, p)) in params.iter_mut().enumerate() {
        let g = p.grad();
        if !g.defined() {
            continue;
        }
        match *cfg {
            OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => {
                let Some(adam) = AdamStep::of(cfg, t, lr) else {
                    continue;
                };
                let mut m = state_entry(state, format!("m/{name}"), &p.device())
                    .or_insert_with(|| flat_view(Slot::M, i).unwrap_or_else(|| g.zeros_like()))
                    .shallow_clone();
                let mut v = state_entry(state, format!("v/{name}"), &p.device())
                    .or_insert_with(|| flat_view(Slot::V, i).unwrap_or_else(|| g.zeros_like()))
                    .shallow_clone();
                adam.apply(p, &g, &mut m, &mut v);
            }
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
                ..
            } => {
                let g = if weight_decay != 0.0 {
                    &g + &*p * weight_decay
                } else {
                    g
                };
                let d = if momentum > 0.0 {
                    let buf = match state_entry(state, format!("momentum/{name}"), &p.device()) {
                        Entry::Occupied(mut b) => {
                            let b = b.get_mut();
                            let _ = b.g_mul_scalar_(momentum);
                            let _ = b.g_add_(&g);
                            b.shallow_clone()
                        }
                        Entry::Vacant(e) => {
                            let b = match flat_view(Slot::Momentum, i) {
                                Some(mut view) => {
                                    view.copy_(&g);
                                    view
                                }
                                None => g.copy(),
                            };
                            e.insert(b).shallow_clone()
                        }
                    };
                    if nesterov {
                        &g + buf * momentum
                    } else {
                        buf
                    }
                } else {
                    g
                };
                let _ = p.g_sub_(&(d * lr));
            }
        }
    }
}

/// One Adam (L2 decay) or AdamW (decoupled decay) update, the same on the flat buffers and on
/// one parameter: PyTorch's single-tensor Adam in 7 kernels (9 with L2 decay):
/// m <- lerp(m, g, 1 - b1); v <- lerp(v, g^2, 1 - b2);
/// p <- p + m / d with d = -(sqrt(v) / sqrt(bc2) + eps) * bc1 / lr,
/// i.e. p - lr / bc1 * m / (sqrt(v / bc2) + eps).
struct AdamStep {
    betas: [f64; 2],
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    /// The step number (1 for the first), for the bias corrections.
    t: f64,
    lr: f64,
}

impl AdamStep {
    /// The Adam or AdamW update `cfg` asks for at step `t` with learning rate `lr` (`None`
    /// for SGD).
    fn of(cfg: &OptimizerConfig, t: f64, lr: f64) -> Option<Self> {
        let (betas, eps, weight_decay, decoupled) = match *cfg {
            OptimizerConfig::Adam {
                betas,
                eps,
                weight_decay,
                ..
            } => (betas, eps, weight_decay, false),
            OptimizerConfig::AdamW {
                betas,
                eps,
                weight_decay,
                ..
            } => (betas, eps, weight_decay, true),
            OptimizerConfig::Sgd { .. } => return None,
        };
        Some(Self {
            betas,
            eps,
            weight_decay,
            decoupled,
            t,
            lr,
        })
    }

    fn apply(&self, p: &mut Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor) {
        let Self {
            betas,
            eps,
            weight_decay,
            decoupled,
            t,
            lr,
        } = *self;
        let g = if !decoupled && weight_decay != 0.0 {
            g + &*p * weight_decay
        } else {
            g.shallow_clone()
        };
        if decoupled && weight_decay != 0.0 {
            let _ = p.g_mul_scalar_(1.0 - lr * weight_decay);
        }
        let _ = m.lerp_(&g, 1.0 - betas[0]);
        let _ = v.lerp_(&(&g * &g), 1.0 - betas[1]);
        if lr != 0.0 {
            let bc1 = 1.0 - betas[0].powf(t);
            let bc2 = 1.0 - betas[1].powf(t);
            let k = -bc1 / lr;
            let mut d = v.sqrt();
            let _ = d.g_mul_scalar_(k / bc2.sqrt());
            let _ = d.g_add_scalar_(k * eps);
            let _ = p.addcdiv_(m, &d);
        }
    }
}

/// The state entry `key`, moved to `device` if it lives elsewhere (the parameters were moved
/// after the state was made).
fn state_entry<'a>(
    state: &'a mut BTreeMap<String, Tensor>,
    key: String,
    device: &Device,
) -> Entry<'a, String, Tensor> {
    if let Some(t) = state.get_mut(&key) {
        if t.device() != *device {
            *t = t.to_device(*device);
        }
    }
    state.entry(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use tch::{nn, Device};

    /// `n` steps on f(w) = w0^2 + (3 w1)^2 from w = (1, 1): both weights after each step.
    fn quadratic_steps(
        cfg: &OptimizerConfig,
        n: usize,
    ) -> (Vec<[f64; 2]>, Optimizer, nn::VarStore) {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2], nn::Init::Const(1.0));
        let mut opt = Optimizer::new(cfg, &vs).unwrap();
        let mut out = vec![];
        for _ in 0..n {
            opt.zero_grad();
            let loss = (&w * Tensor::from_slice(&[1.0f32, 3.0]))
                .square()
                .sum(Kind::Float);
            loss.backward();
            opt.step();
            out.push([w.double_value(&[0]), w.double_value(&[1])]);
        }
        (out, opt, vs)
    }

    #[test]
    fn adam_first_step_is_lr_times_sign() {
        let cfg = OptimizerConfig::Adam {
            lr: 0.1,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let (w, _, _) = quadratic_steps(&cfg, 1);
        // Bias-corrected first Adam step moves each weight by lr in the gradient's sign.
        assert_abs_diff_eq!(w[0][1], 0.9, epsilon = 1e-6);
    }

    /// Adam / AdamW in f64 on f(w) = sum (c_i w_i)^2, as PyTorch documents them.
    fn adam_reference(
        decoupled: bool,
        lr: f64,
        b: [f64; 2],
        eps: f64,
        wd: f64,
        n: usize,
    ) -> Vec<[f64; 2]> {
        let c = [1.0f64, 3.0];
        let (mut w, mut m, mut v) = ([1.0f64; 2], [0.0f64; 2], [0.0f64; 2]);
        let mut out = vec![];
        for t in 1..=n {
            for i in 0..2 {
                let mut g = 2.0 * c[i] * c[i] * w[i];
                if decoupled {
                    w[i] *= 1.0 - lr * wd;
                } else {
                    g += wd * w[i];
                }
                m[i] = b[0] * m[i] + (1.0 - b[0]) * g;
                v[i] = b[1] * v[i] + (1.0 - b[1]) * g * g;
                let mh = m[i] / (1.0 - b[0].powi(t as i32));
                let vh = v[i] / (1.0 - b[1].powi(t as i32));
                w[i] -= lr * mh / (vh.sqrt() + eps);
            }
            out.push(w);
        }
        out
    }

    #[test]
    fn adam_and_adamw_match_the_reference_over_many_steps() {
        for decoupled in [false, true] {
            let (lr, b, eps, wd) = (0.02, [0.9, 0.99], 1e-8, 0.1);
            let cfg = if decoupled {
                OptimizerConfig::AdamW {
                    lr,
                    betas: b,
                    eps,
                    weight_decay: wd,
                }
            } else {
                OptimizerConfig::Adam {
                    lr,
                    betas: b,
                    eps,
                    weight_decay: wd,
                }
            };
            let n = 40;
            let (got_steps, _, _) = quadratic_steps(&cfg, n);
            let want = adam_reference(decoupled, lr, b, eps, wd, n);
            for (t, (r, got)) in want.iter().zip(&got_steps).enumerate() {
                for (i, (want, got)) in r.iter().zip(got).enumerate() {
                    assert!(
                        (got - want).abs() <= 1e-5 * want.abs().max(1e-3),
                        "decoupled {decoupled}, step {}, w[{i}] = {got} vs {want}",
                        t + 1,
                    );
                }
            }
        }
    }

    #[test]
    fn grad_norm_is_the_global_two_norm_and_clipping_scales_to_it() {
        let vs = nn::VarStore::new(Device::Cpu);
        let a = vs.root().var("a", &[2], nn::Init::Const(1.0));
        let b = vs.root().var("b", &[1], nn::Init::Const(1.0));
        let mut opt = Optimizer::new(&OptimizerConfig::default(), &vs).unwrap();
        // Linear losses with known gradients: (3, 4) for a, 12 for b; global norm 13.
        let loss = (&a * Tensor::from_slice(&[3.0f32, 4.0])).sum(Kind::Float)
            + (&b * 12.0).sum(Kind::Float);
        loss.backward();
        assert_abs_diff_eq!(opt.grad_norm(), 13.0, epsilon = 1e-5);
        let before = opt.clip_grad_norm(6.5);
        assert_abs_diff_eq!(before, 13.0, epsilon = 1e-5);
        assert_abs_diff_eq!(opt.grad_norm(), 6.5, epsilon = 1e-4);
        assert_abs_diff_eq!(b.grad().double_value(&[0]), 6.0, epsilon = 1e-4);
    }

    #[test]
    fn sgd_nesterov_matches_hand_computation() {
        let cfg = OptimizerConfig::Sgd {
            lr: 0.01,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.0,
        };
        let (w, _, _) = quadratic_steps(&cfg, 2);
        // f = 9 w^2, g = 18 w. Step 1: buf = 18, d = 18 + 0.9*18 = 34.2, w = 1 - 0.342.
        let w1 = 1.0 - 0.01 * 34.2;
        assert_abs_diff_eq!(w[0][1], w1, epsilon = 1e-6);
        let g2 = 18.0 * w1;
        let buf = 0.9 * 18.0 + g2;
        assert_abs_diff_eq!(w[1][1], w1 - 0.01 * (g2 + 0.9 * buf), epsilon = 1e-5);
    }

    #[test]
    fn state_round_trips() {
        let cfg = OptimizerConfig::AdamW {
            lr: 0.05,
            betas: [0.9, 0.99],
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let (_, opt, _) = quadratic_steps(&cfg, 3);
        let dir =
            std::env::temp_dir().join(format!("negvol-optim-{}.safetensors", std::process::id()));
        opt.save(&dir).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let _w = vs.root().var("w", &[2], nn::Init::Const(1.0));
        let mut o2 = Optimizer::new(&cfg, &vs).unwrap();
        o2.load(&dir).unwrap();
        assert_eq!(o2.steps(), 3);
        assert_eq!(o2.state.len(), 2);
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn schedules() {
        let s = LrSchedule::default();
        assert_abs_diff_eq!(s.lr(1e-4, 29, 100), 1e-4);
        assert_abs_diff_eq!(s.lr(1e-4, 30, 100), 1e-5, epsilon = 1e-12);
        let p = LrSchedule::Poly { exponent: 0.9 };
        assert_abs_diff_eq!(p.lr(0.01, 0, 10), 0.01);
        assert_abs_diff_eq!(p.lr(0.01, 5, 10), 0.01 * 0.5f64.powf(0.9), epsilon = 1e-12);
    }

    // ---- The flat buffers against the per-parameter path. ----

    use approx::assert_relative_eq;

    /// Five parameters of different shapes (`p0`..`p4`), the same values for the same `seed`.
    fn toy(seed: i64) -> (nn::VarStore, Vec<Tensor>) {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let shapes: [&[i64]; 5] = [&[4, 3, 3, 3, 3], &[4], &[7, 5], &[1], &[2, 3, 4]];
        let ws = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                root.var(
                    &format!("p{i}"),
                    s,
                    nn::Init::Randn {
                        mean: 0.0,
                        stdev: 1.0,
                    },
                )
            })
            .collect();
        (vs, ws)
    }

    /// Fixed random coefficients and targets of [`toy_loss`].
    fn toy_data(ws: &[Tensor]) -> Vec<(Tensor, Tensor)> {
        tch::manual_seed(99);
        ws.iter()
            .map(|w| (w.randn_like() * 2.0, w.randn_like() * 0.5))
            .collect()
    }

    /// A non-quadratic loss over the parameters in `used` (gradients change every step).
    fn toy_loss(ws: &[Tensor], data: &[(Tensor, Tensor)], used: &[usize]) -> Tensor {
        let mut terms: Vec<Tensor> = used
            .iter()
            .map(|&i| {
                let (a, t) = &data[i];
                ((&ws[i] * a).tanh() - t).square().sum(Kind::Float)
            })
            .collect();
        if used.contains(&0) && used.contains(&2) {
            terms.push((ws[0].sum(Kind::Float) * ws[2].mean(Kind::Float)).square() * 0.1);
        }
        Tensor::stack(&terms, 0).sum(Kind::Float)
    }

    #[derive(Clone, Copy, Debug)]
    enum Grads {
        Plain,
        /// `clip_grad_norm(c)`.
        Clip(f64),
        /// Backward of `loss * s`, then `scale_grads(1 / s)` (f16 loss scaling).
        Scaled(f64),
    }

    fn values(ws: &[Tensor]) -> Vec<Vec<f64>> {
        ws.iter()
            .map(|w| Vec::<f64>::try_from(w.to_kind(Kind::Double).reshape([-1])).unwrap())
            .collect()
    }

    fn assert_close(a: &[Vec<f64>], b: &[Vec<f64>], what: &str) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            for (j, (x, y)) in x.iter().zip(y).enumerate() {
                assert!(
                    approx::relative_eq!(x, y, max_relative = 1e-6, epsilon = 1e-7),
                    "{what}: p{i}[{j}] = {x} vs {y}"
                );
            }
        }
    }

    /// One training step; the gradient norm the step saw.
    fn toy_step(
        opt: &mut Optimizer,
        ws: &[Tensor],
        data: &[(Tensor, Tensor)],
        used: &[usize],
        grads: Grads,
    ) -> f64 {
        opt.zero_grad();
        let loss = toy_loss(ws, data, used);
        match grads {
            Grads::Plain => {
                loss.backward();
                opt.grad_norm()
            }
            Grads::Clip(c) => {
                loss.backward();
                opt.clip_grad_norm(c)
            }
            Grads::Scaled(s) => {
                (loss * s).backward();
                let n = opt.grad_norm() / s;
                opt.scale_grads(1.0 / s);
                n
            }
        }
    }

    fn configs() -> Vec<OptimizerConfig> {
        vec![
            OptimizerConfig::adam(0.01, 0.0),
            OptimizerConfig::adam(0.01, 0.05),
            OptimizerConfig::AdamW {
                lr: 0.01,
                betas: [0.9, 0.99],
                eps: 1e-8,
                weight_decay: 0.1,
            },
            OptimizerConfig::Sgd {
                lr: 0.01,
                momentum: 0.9,
                nesterov: true,
                weight_decay: 1e-3,
            },
            OptimizerConfig::Sgd {
                lr: 0.01,
                momentum: 0.5,
                nesterov: false,
                weight_decay: 0.0,
            },
            OptimizerConfig::Sgd {
                lr: 0.01,
                momentum: 0.0,
                nesterov: false,
                weight_decay: 1e-2,
            },
        ]
    }

    #[test]
    fn flat_path_matches_the_per_parameter_path() {
        let all = [0, 1, 2, 3, 4];
        for cfg in configs() {
            for grads in [Grads::Plain, Grads::Clip(0.5), Grads::Scaled(1024.0)] {
                let (vs_a, wa) = toy(1);
                let (vs_b, wb) = toy(1);
                let data = toy_data(&wa);
                let mut a = Optimizer::new_flat(&cfg, &vs_a).unwrap();
                let mut b = Optimizer::new_per_parameter(&cfg, &vs_b).unwrap();
                assert!(a.is_flat() && !b.is_flat());
                if let Grads::Clip(_) = grads {
                    // Chunks that straddle parameters (the CPU's are 2^18 elements).
                    a.flat.as_mut().unwrap().chunk = 37;
                }
                let start = values(&wa);
                let mut clipped = 0;
                for step in 0..50 {
                    let na = toy_step(&mut a, &wa, &data, &all, grads);
                    let nb = toy_step(&mut b, &wb, &data, &all, grads);
                    assert_relative_eq!(na, nb, max_relative = 1e-6);
                    if let Grads::Clip(c) = grads {
                        if na > c {
                            clipped += 1;
                            assert_relative_eq!(a.grad_norm(), c, max_relative = 1e-5);
                        }
                    }
                    a.step();
                    b.step();
                    let what = format!("{cfg:?} {grads:?} step {step}");
                    assert_close(&values(&wa), &values(&wb), &what);
                }
                assert!(!matches!(grads, Grads::Clip(_)) || clipped > 10);
                assert_eq!((a.flat_steps, b.flat_steps), (50, 0));
                assert_ne!(values(&wa), start, "{cfg:?}: the parameters moved");
                assert_eq!(
                    a.state.keys().collect::<Vec<_>>(),
                    b.state.keys().collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn an_undefined_gradient_is_skipped_like_the_per_parameter_path() {
        let some = [0, 2, 3];
        let all = [0, 1, 2, 3, 4];
        for cfg in configs() {
            let (vs_a, wa) = toy(2);
            let (vs_b, wb) = toy(2);
            let data = toy_data(&wa);
            let mut a = Optimizer::new_flat(&cfg, &vs_a).unwrap();
            let mut b = Optimizer::new_per_parameter(&cfg, &vs_b).unwrap();
            let start = values(&wa);
            // p1 and p4 have no gradient for 5 steps: not decayed, no state, unchanged.
            for step in 0..12 {
                let used: &[usize] = if step < 5 { &some } else { &all };
                toy_step(&mut a, &wa, &data, used, Grads::Clip(0.5));
                toy_step(&mut b, &wb, &data, used, Grads::Clip(0.5));
                a.step();
                b.step();
                let what = format!("{cfg:?} step {step}");
                assert_close(&values(&wa), &values(&wb), &what);
                if step < 5 {
                    assert_eq!(values(&wa)[1], start[1], "{what}");
                    assert_eq!(values(&wa)[4], start[4], "{what}");
                    assert!(a.state.keys().all(|k| !k.ends_with("p1")), "{what}");
                    assert_eq!(a.flat_steps, 0, "{what}");
                }
            }
            // Once every gradient is defined, the flat path takes over.
            assert_eq!(a.flat_steps, 7, "{cfg:?}");
            assert!(a.is_flat());
            assert_ne!(values(&wa)[1], start[1]);
        }
    }

    #[test]
    fn the_network_and_the_var_store_see_the_flat_parameters() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let lin = nn::linear(vs.root() / "lin", 3, 2, Default::default());
        let conv = nn::conv3d(vs.root() / "conv", 1, 2, 3, Default::default());
        let before = lin.ws.copy();
        let mut opt = Optimizer::new_flat(&OptimizerConfig::adam(0.1, 0.0), &vs).unwrap();
        assert!(opt.is_flat());
        let flat = opt.flat.as_ref().unwrap();
        let (base, end) = (
            flat.param.data_ptr() as usize,
            flat.param.data_ptr() as usize + flat.param.numel() * 4,
        );
        for w in [&lin.ws, &conv.ws] {
            let p = w.data_ptr() as usize;
            assert!(
                base <= p && p < end,
                "the network's variable is in the flat buffer"
            );
        }
        let x = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
        let v = Tensor::randn([1, 1, 3, 3, 3], (Kind::Float, Device::Cpu));
        for _ in 0..3 {
            opt.zero_grad();
            let loss =
                x.apply(&lin).square().sum(Kind::Float) + v.apply(&conv).square().sum(Kind::Float);
            loss.backward();
            opt.step();
            // From the second step on, backward accumulates into the flat gradient.
            let g = opt
                .grads
                .lock()
                .unwrap()
                .flat
                .as_ref()
                .unwrap()
                .shallow_clone();
            assert!(opt.flat.as_ref().unwrap().grads_are_views(&opt.params, &g));
        }
        assert_eq!(opt.flat_steps, 3);
        let from_vs = vs.variables()["lin.weight"].shallow_clone();
        assert_eq!(lin.ws.data_ptr(), from_vs.data_ptr());
        assert!(lin.ws.allclose(&from_vs, 0.0, 0.0, false));
        assert!(
            !lin.ws.allclose(&before, 1e-3, 1e-3, false),
            "the step moved it"
        );
        // The network's weight went by about 3 * lr per element (Adam on a loss of one sign).
        let moved = (&lin.ws - &before)
            .abs()
            .mean(Kind::Float)
            .double_value(&[]);
        assert!(moved > 0.1, "moved {moved}");
    }

    #[test]
    fn parameters_replaced_behind_its_back_send_it_to_the_per_parameter_path() {
        let all = [0, 1, 2, 3, 4];
        let cfg = OptimizerConfig::AdamW {
            lr: 0.01,
            betas: [0.9, 0.99],
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let (mut vs_a, wa) = toy(4);
        let (mut vs_b, wb) = toy(4);
        let data = toy_data(&wa);
        let mut a = Optimizer::new_flat(&cfg, &vs_a).unwrap();
        let mut b = Optimizer::new_per_parameter(&cfg, &vs_b).unwrap();
        for step in 0..10 {
            toy_step(&mut a, &wa, &data, &all, Grads::Plain);
            toy_step(&mut b, &wb, &data, &all, Grads::Plain);
            if step == 2 {
                // Writing into the parameters (checkpoint loading, `VarStore::copy`) is fine.
                let (other, _) = toy(5);
                tch::no_grad(|| {
                    vs_a.copy(&other).unwrap();
                    vs_b.copy(&other).unwrap();
                });
                assert!(a.is_flat());
            }
            if step == 5 {
                // Between the gradient read and the step, p2 stops being a view of the flat
                // buffer (as `VarStore::set_device` would do to all of them).
                for w in [&wa[2], &wb[2]] {
                    let mut w = w.shallow_clone();
                    tch::no_grad(|| w.set_data(&w.copy()));
                }
                assert!(!a.is_flat());
            }
            a.step();
            b.step();
            assert_close(&values(&wa), &values(&wb), &format!("step {step}"));
        }
        assert_eq!(a.flat_steps, 5);
        assert!(a.flat.is_none(), "the flat buffers are dropped for good");
        // The state is still the same (and still saves in the same format).
        let dir = tempfile::tempdir().unwrap();
        a.save(&dir.path().join("a")).unwrap();
        b.save(&dir.path().join("b")).unwrap();
        assert_same_files(&dir.path().join("a"), &dir.path().join("b"));
    }

    fn assert_same_files(a: &Path, b: &Path) {
        let read = |p: &Path| -> BTreeMap<String, Tensor> {
            Tensor::read_safetensors(p).unwrap().into_iter().collect()
        };
        let (a, b) = (read(a), read(b));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (k, x) in &a {
            let y = &b[k];
            assert_eq!(x.size(), y.size(), "{k}");
            assert_eq!(x.kind(), y.kind(), "{k}");
            assert!(x.allclose(y, 1e-6, 1e-7, false), "{k}");
        }
    }

    #[test]
    fn the_cpu_default_is_per_parameter_and_the_flat_path_is_opt_in() {
        let (vs, _) = toy(3);
        let cfg = OptimizerConfig::default();
        assert!(!Optimizer::new(&cfg, &vs).unwrap().is_flat());
        assert!(Optimizer::new_flat(&cfg, &vs).unwrap().is_flat());
    }

    #[test]
    fn mixed_kinds_stay_on_the_per_parameter_path() {
        let vs = nn::VarStore::new(Device::Cpu);
        let a = vs.root().var("a", &[3], nn::Init::Const(1.0));
        let mut b = vs.root().var("b", &[2], nn::Init::Const(2.0));
        tch::no_grad(|| b.set_data(&b.to_kind(Kind::Double)));
        let mut opt = Optimizer::new_flat(&OptimizerConfig::adam(0.1, 0.0), &vs).unwrap();
        assert!(!opt.is_flat());
        opt.zero_grad();
        (a.sum(Kind::Float) + b.sum(Kind::Double).to_kind(Kind::Float)).backward();
        opt.step();
        assert_abs_diff_eq!(a.double_value(&[0]), 0.9, epsilon = 1e-6);
        assert_abs_diff_eq!(b.double_value(&[1]), 1.9, epsilon = 1e-7);
    }

    #[test]
    fn flat_state_round_trips_and_continues_identically() {
        let all = [0, 1, 2, 3, 4];
        for cfg in configs() {
            let dir = tempfile::tempdir().unwrap();
            let (vs_a, wa) = toy(6);
            let (vs_b, wb) = toy(6);
            let data = toy_data(&wa);
            let mut a = Optimizer::new_flat(&cfg, &vs_a).unwrap();
            let mut b = Optimizer::new_per_parameter(&cfg, &vs_b).unwrap();
            for _ in 0..10 {
                for (o, w) in [(&mut a, &wa), (&mut b, &wb)] {
                    toy_step(o, w, &data, &all, Grads::Clip(0.5));
                    o.step();
                }
            }
            let (fa, fb) = (dir.path().join("a"), dir.path().join("b"));
            a.save(&fa).unwrap();
            b.save(&fb).unwrap();
            // The flat optimiser writes what the per-parameter one writes.
            assert_same_files(&fa, &fb);
            // Resume into a flat and a per-parameter optimiser over copies of the weights.
            let (mut vs_c, wc) = toy(7);
            let (mut vs_d, wd) = toy(7);
            tch::no_grad(|| {
                vs_c.copy(&vs_a).unwrap();
                vs_d.copy(&vs_a).unwrap();
            });
            let mut c = Optimizer::new_flat(&cfg, &vs_c).unwrap();
            let mut d = Optimizer::new_per_parameter(&cfg, &vs_d).unwrap();
            c.load(&fa).unwrap();
            d.load(&fa).unwrap();
            assert_eq!((c.steps(), d.steps()), (10, 10));
            assert_eq!(c.state.len(), a.state.len());
            for _ in 0..10 {
                for (o, w) in [(&mut a, &wa), (&mut c, &wc), (&mut d, &wd)] {
                    toy_step(o, w, &data, &all, Grads::Clip(0.5));
                    o.step();
                }
            }
            assert_eq!(values(&wa), values(&wc), "{cfg:?}: flat resume is exact");
            assert_close(&values(&wa), &values(&wd), &format!("{cfg:?}"));
            assert_eq!(c.flat_steps, 10);
        }
    }

    #[test]
    fn state_in_the_per_parameter_format_loads() {
        let all = [0, 1, 2, 3, 4];
        let cfg = OptimizerConfig::adam(0.01, 0.01);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("old.optim.safetensors");
        // A file as the per-parameter optimiser wrote it: one tensor per parameter and buffer
        // (here without p3, which had no gradient yet), and the step.
        let (vs_a, wa) = toy(8);
        let (vs_b, wb) = toy(8);
        let data = toy_data(&wa);
        tch::manual_seed(11);
        let mut named: Vec<(String, Tensor)> = vec![];
        for (i, w) in wa.iter().enumerate() {
            if i != 3 {
                named.push((format!("m/p{i}"), w.randn_like() * 0.1));
                named.push((format!("v/p{i}"), w.rand_like() * 0.01));
            }
        }
        named.push(("__step".into(), Tensor::from_slice(&[5i64])));
        Tensor::write_safetensors(&named, &file).unwrap();
        let mut a = Optimizer::new_flat(&cfg, &vs_a).unwrap();
        let mut b = Optimizer::new_per_parameter(&cfg, &vs_b).unwrap();
        a.load(&file).unwrap();
        b.load(&file).unwrap();
        assert_eq!(a.steps(), 5);
        assert_eq!(a.state.len(), 8);
        for step in 0..5 {
            for (o, w) in [(&mut a, &wa), (&mut b, &wb)] {
                toy_step(o, w, &data, &all, Grads::Plain);
                o.step();
            }
            assert_close(&values(&wa), &values(&wb), &format!("step {step}"));
        }
        assert_eq!(a.flat_steps, 5);
        assert_eq!(a.state.len(), 10);
        // A buffer of the wrong shape is a typed error, and leaves the state as it was.
        let bad = dir.path().join("bad.optim.safetensors");
        let named = vec![
            (
                "m/p1".to_string(),
                Tensor::zeros([5], (Kind::Float, Device::Cpu)),
            ),
            ("__step".to_string(), Tensor::from_slice(&[1i64])),
        ];
        Tensor::write_safetensors(&named, &bad).unwrap();
        assert!(matches!(a.load(&bad), Err(TrainError::Checkpoint { .. })));
        assert_eq!((a.steps(), a.state.len()), (10, 10));
    }
}
