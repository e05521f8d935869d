//! Optimisers (Adam, AdamW, SGD with Nesterov momentum) and learning-rate schedules, with
//! state that can be saved and restored exactly.
//!
//! The update rules are PyTorch's (`torch.optim.Adam` with L2 weight decay added to the
//! gradient, `AdamW` with decoupled decay, `SGD` with dampening 0). They are written here
//! rather than taken from libtorch's C++ optimisers because those expose no state for
//! checkpoints, and a resumed run must continue exactly where it stopped.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Kind, Tensor};

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
#[derive(Debug)]
pub struct Optimizer {
    cfg: OptimizerConfig,
    params: Vec<(String, Tensor)>,
    /// Per-parameter state buffers (`m`, `v` for Adam; `momentum` for SGD).
    state: BTreeMap<String, Tensor>,
    step: i64,
    lr: f64,
}

impl Optimizer {
    /// An optimiser over every trainable variable of `vs` (sorted by name).
    pub fn new(cfg: &OptimizerConfig, vs: &VarStore) -> Result<Self> {
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
        })
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

    /// Clear the gradients.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Global L2 norm of the gradients (0 if none).
    pub fn grad_norm(&self) -> f64 {
        tch::no_grad(|| {
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

    /// Multiply every gradient by `f`.
    pub fn scale_grads(&mut self, f: f64) {
        tch::no_grad(|| {
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

    /// One update with the current gradients.
    pub fn step(&mut self) {
        self.step += 1;
        let t = self.step as f64;
        let lr = self.lr;
        tch::no_grad(|| {
            for (name, p) in &mut self.params {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                match self.cfg {
                    OptimizerConfig::Adam {
                        betas,
                        eps,
                        weight_decay,
                        ..
                    }
                    | OptimizerConfig::AdamW {
                        betas,
                        eps,
                        weight_decay,
                        ..
                    } => {
                        let decoupled = matches!(self.cfg, OptimizerConfig::AdamW { .. });
                        let g = if !decoupled && weight_decay != 0.0 {
                            &g + &*p * weight_decay
                        } else {
                            g
                        };
                        if decoupled && weight_decay != 0.0 {
                            let _ = p.g_mul_scalar_(1.0 - lr * weight_decay);
                        }
                        let mut m = self
                            .state
                            .entry(format!("m/{name}"))
                            .or_insert_with(|| g.zeros_like())
                            .shallow_clone();
                        let mut v = self
                            .state
                            .entry(format!("v/{name}"))
                            .or_insert_with(|| g.zeros_like())
                            .shallow_clone();
                        // PyTorch's single-tensor Adam in 7 kernels (9 with L2 decay):
                        // m <- lerp(m, g, 1 - b1); v <- lerp(v, g^2, 1 - b2);
                        // p <- p + m / d with d = -(sqrt(v) / sqrt(bc2) + eps) * bc1 / lr,
                        // i.e. p - lr / bc1 * m / (sqrt(v / bc2) + eps).
                        let _ = m.lerp_(&g, 1.0 - betas[0]);
                        let _ = v.lerp_(&(&g * &g), 1.0 - betas[1]);
                        if lr != 0.0 {
                            let bc1 = 1.0 - betas[0].powf(t);
                            let bc2 = 1.0 - betas[1].powf(t);
                            let k = -bc1 / lr;
                            let mut d = v.sqrt();
                            let _ = d.g_mul_scalar_(k / bc2.sqrt());
                            let _ = d.g_add_scalar_(k * eps);
                            let _ = p.addcdiv_(&m, &d);
                        }
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
                            let key = format!("momentum/{name}");
                            let buf = match self.state.get_mut(&key) {
                                Some(b) => {
                                    let _ = b.g_mul_scalar_(momentum);
                                    let _ = b.g_add_(&g);
                                    b.shallow_clone()
                                }
                                None => {
                                    let b = g.copy();
                                    self.state.insert(key, b.shallow_clone());
                                    b
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
        });
    }

    /// Save the state buffers and the step count (safetensors).
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

    /// Restore state saved by [`Optimizer::save`] (onto the parameters' devices).
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let named = Tensor::read_safetensors(path).map_err(|e| {
            TrainError::torch(format!("reading optimiser state {}", path.display()), e)
        })?;
        let devices: BTreeMap<&str, tch::Device> = self
            .params
            .iter()
            .map(|(n, p)| (n.as_str(), p.device()))
            .collect();
        let mut state = BTreeMap::new();
        let mut step = None;
        for (k, v) in named {
            if k == "__step" {
                step = Some(v.int64_value(&[0]));
                continue;
            }
            let pname = k.split_once('/').map(|x| x.1).unwrap_or("");
            let dev = devices.get(pname).ok_or_else(|| TrainError::Checkpoint {
                path: path.to_path_buf(),
                message: format!("optimiser state {k:?} names no parameter of this network"),
            })?;
            state.insert(k, v.to_device(*dev));
        }
        self.step = step.ok_or_else(|| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: "optimiser state without a step count".into(),
        })?;
        self.state = state;
        Ok(())
    }
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
}
