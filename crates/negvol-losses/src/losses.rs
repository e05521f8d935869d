//! The loss computations (see the crate docs for the definitions).

use tch::{Kind, Tensor};

use crate::{DiceVariant, LossConfig, LossError, LossKind};

/// Epsilon of the paper's hard Dice: `S = sum h + sum g + 2 * PAPER_EPS`.
const PAPER_EPS: f64 = 1e-6;
/// Lower bound of Dice/Tversky denominators (nnU-Net clips at 1e-8).
const DEN_MIN: f64 = 1e-8;

/// Prepared inputs shared by all losses.
struct Prepared {
    /// log-softmax over classes, `[N, C, *sp]`.
    logp: Tensor,
    /// softmax over classes.
    p: Tensor,
    /// labels with ignored voxels set to 0, `[N, *sp]` Int64.
    labels: Tensor,
    /// one-hot target `[N, C, *sp]` in the compute kind (ignored voxels: class 0 but m = 0).
    g: Tensor,
    /// keep mask `[N, 1, *sp]` in the compute kind, or None when every voxel counts.
    m: Option<Tensor>,
    /// class weights `[C]`.
    w: Tensor,
    classes: i64,
    kind: Kind,
    n_spatial: usize,
}

fn shape_err(logits: &Tensor, target: &Tensor, reason: impl Into<String>) -> LossError {
    LossError::Shape {
        logits: logits.size(),
        target: target.size(),
        reason: reason.into(),
    }
}

fn squeeze_channel(t: &Tensor, rank: usize) -> Result<Tensor, LossError> {
    let s = t.size();
    if s.len() == rank && s.len() >= 2 && s[1] == 1 {
        Ok(t.f_squeeze_dim(1)?)
    } else {
        Ok(t.shallow_clone())
    }
}

fn prepare(
    cfg: &LossConfig,
    logits: &Tensor,
    target: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Prepared, LossError> {
    let ls = logits.size();
    if ls.len() < 3 {
        return Err(shape_err(
            logits,
            target,
            "logits must be [N, C, *spatial] with >= 1 spatial axis",
        ));
    }
    let classes = ls[1];
    let mut want = vec![ls[0]];
    want.extend_from_slice(&ls[2..]);
    let t = squeeze_channel(target, ls.len())?;
    if t.size() != want {
        return Err(shape_err(
            logits,
            target,
            format!("target must be {want:?} (or with a channel axis of 1)"),
        ));
    }
    let tk = t.kind();
    let t = match tk {
        Kind::Int64 => t,
        Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8 => t.f_to_kind(Kind::Int64)?,
        other => return Err(LossError::TargetKind(other)),
    };
    let kind = match logits.kind() {
        Kind::Double => Kind::Double,
        Kind::Float => Kind::Float,
        Kind::Half | Kind::BFloat16 => Kind::Float,
        other => {
            return Err(LossError::Config(format!(
                "logits must be floating point, got {other:?}"
            )))
        }
    };
    let logits = if logits.kind() == kind {
        logits.shallow_clone()
    } else {
        logits.f_to_kind(kind)?
    };
    let w = match &cfg.class_weights {
        Some(w) => {
            if w.len() as i64 != classes {
                return Err(LossError::Config(format!(
                    "class_weights has {} entries but the logits have {classes} classes",
                    w.len()
                )));
            }
            Tensor::f_from_slice(w)?
                .f_to_kind(kind)?
                .f_to_device(logits.device())?
        }
        None => Tensor::f_ones([classes], (kind, logits.device()))?,
    };
    // keep mask (bool) [N, *sp]
    let mut keep: Option<Tensor> = match cfg.ignore_index {
        Some(ii) => Some(t.f_ne(ii)?),
        None => None,
    };
    if let Some(mask) = mask {
        let mk = squeeze_channel(mask, ls.len())?;
        if mk.size() != want {
            return Err(shape_err(
                logits.as_ref(),
                target,
                format!("mask must be {want:?}, got {:?}", mask.size()),
            ));
        }
        let mk = mk.f_ne(0)?;
        keep = Some(match keep {
            Some(k) => k.f_logical_and(&mk)?,
            None => mk,
        });
    }
    if cfg.validate {
        let bad = t.f_lt(0)?.f_logical_or(&t.f_ge(classes)?)?;
        let bad = match &keep {
            Some(k) => bad.f_logical_and(k)?,
            None => bad,
        };
        if bad.f_any()?.f_int64_value(&[])? != 0 {
            let found = t.f_masked_select(&bad)?.f_int64_value(&[0])?;
            return Err(LossError::Label {
                classes,
                ignore: cfg.ignore_index,
                found,
            });
        }
    }
    let labels = match &keep {
        Some(k) => t.f_where_scalarother(k, 0)?,
        None => t,
    };
    let n_spatial = ls.len() - 2;
    let logp = logits.f_log_softmax(1, kind)?;
    let p = logp.f_exp()?;
    // one-hot [N, *sp, C] -> [N, C, *sp]
    let oh = labels.f_one_hot(classes)?.f_to_kind(kind)?;
    let mut perm = vec![0i64, (n_spatial + 1) as i64];
    perm.extend(1..=(n_spatial as i64));
    let g = oh.f_permute(&perm)?;
    let m = match keep {
        Some(k) => Some(k.f_unsqueeze(1)?.f_to_kind(kind)?),
        None => None,
    };
    Ok(Prepared {
        logp,
        p,
        labels,
        g,
        m,
        w,
        classes,
        kind,
        n_spatial,
    })
}

fn masked(t: &Tensor, m: &Option<Tensor>) -> Result<Tensor, LossError> {
    Ok(match m {
        Some(m) => t.f_mul(m)?,
        None => t.shallow_clone(),
    })
}

/// Weighted mean over voxels of a per-voxel loss `[N, 1, *sp]`, weights `w[y] * m`.
fn voxel_mean(pr: &Prepared, per_voxel: &Tensor) -> Result<Tensor, LossError> {
    let wv =
        pr.w.f_index_select(0, &pr.labels.f_flatten(0, -1)?)?
            .f_view_as(&pr.labels)?
            .f_unsqueeze(1)?;
    let wv = masked(&wv, &pr.m)?;
    let num = per_voxel.f_mul(&wv)?.f_sum(pr.kind)?;
    let den = wv.f_sum(pr.kind)?.f_clamp_min(1e-30)?;
    Ok(num.f_div(&den)?)
}

/// Negative log-likelihood of the true class per voxel, `[N, 1, *sp]`.
fn nll(pr: &Prepared) -> Result<Tensor, LossError> {
    Ok(pr
        .logp
        .f_gather(1, &pr.labels.f_unsqueeze(1)?, false)?
        .f_neg()?)
}

fn ce(pr: &Prepared) -> Result<Tensor, LossError> {
    voxel_mean(pr, &nll(pr)?)
}

fn focal(pr: &Prepared, gamma: f64) -> Result<Tensor, LossError> {
    let nll = nll(pr)?;
    let pt = nll.f_neg()?.f_exp()?;
    let factor = pt
        .f_neg()?
        .f_add_scalar(1.0)?
        .f_clamp_min(0.0)?
        .f_pow_tensor_scalar(gamma)?;
    voxel_mean(pr, &factor.f_mul(&nll)?)
}

/// Sum over voxels (and over the batch with `batch_dice`): `[N, C]` or `[C]`.
fn region_sum(pr: &Prepared, t: &Tensor, batch: bool) -> Result<Tensor, LossError> {
    let mut dims: Vec<i64> = (2..(2 + pr.n_spatial as i64)).collect();
    if batch {
        dims.push(0);
    }
    Ok(t.f_sum_dim_intlist(dims.as_slice(), false, pr.kind)?)
}

/// First scored class.
fn first_class(cfg: &LossConfig, classes: i64) -> Result<i64, LossError> {
    let start = if cfg.include_background || classes == 1 {
        0
    } else {
        1
    };
    if start >= classes {
        return Err(LossError::Config(format!(
            "no class to score with {classes} class(es)"
        )));
    }
    Ok(start)
}

/// `1 - weighted mean over the scored classes of score` (`score`: `[N, C]` or `[C]`), averaged
/// over samples.
fn one_minus_weighted(
    cfg: &LossConfig,
    pr: &Prepared,
    score: &Tensor,
) -> Result<Tensor, LossError> {
    let start = first_class(cfg, pr.classes)?;
    let k = pr.classes - start;
    let s = score.f_narrow(-1, start, k)?;
    let w = pr.w.f_narrow(0, start, k)?;
    let wsum: f64 = match &cfg.class_weights {
        Some(v) => v[start as usize..].iter().sum(),
        None => k as f64,
    };
    if wsum <= 0.0 {
        return Err(LossError::Config(
            "the class weights of the scored classes are all 0".into(),
        ));
    }
    let mean = s
        .f_mul(&w)?
        .f_sum_dim_intlist(-1, false, pr.kind)?
        .f_div_scalar(wsum)?;
    Ok(mean.f_mean(pr.kind)?.f_neg()?.f_add_scalar(1.0)?)
}

fn soft_dice(cfg: &LossConfig, pr: &Prepared) -> Result<Tensor, LossError> {
    let b = cfg.batch_dice;
    let pm = masked(&pr.p, &pr.m)?;
    let gm = masked(&pr.g, &pr.m)?;
    let inter = region_sum(pr, &pm.f_mul(&pr.g)?, b)?;
    let psum = if cfg.squared_pred {
        region_sum(pr, &pm.f_mul(&pr.p)?, b)?
    } else {
        region_sum(pr, &pm, b)?
    };
    let gsum = region_sum(pr, &gm, b)?;
    let den = psum
        .f_add(&gsum)?
        .f_add_scalar(cfg.smooth)?
        .f_clamp_min(DEN_MIN)?;
    let dice = inter
        .f_mul_scalar(2.0)?
        .f_add_scalar(cfg.smooth)?
        .f_div(&den)?;
    one_minus_weighted(cfg, pr, &dice)
}

fn tversky(cfg: &LossConfig, pr: &Prepared, alpha: f64, beta: f64) -> Result<Tensor, LossError> {
    let b = cfg.batch_dice;
    let pm = masked(&pr.p, &pr.m)?;
    let gm = masked(&pr.g, &pr.m)?;
    let tp = region_sum(pr, &pm.f_mul(&pr.g)?, b)?;
    let fp = region_sum(pr, &pm, b)?.f_sub(&tp)?;
    let fneg = region_sum(pr, &gm, b)?.f_sub(&tp)?;
    let den = tp
        .f_add(&fp.f_mul_scalar(alpha)?)?
        .f_add(&fneg.f_mul_scalar(beta)?)?
        .f_add_scalar(cfg.smooth)?
        .f_clamp_min(DEN_MIN)?;
    let t = tp.f_add_scalar(cfg.smooth)?.f_div(&den)?;
    one_minus_weighted(cfg, pr, &t)
}

fn paper_dice(cfg: &LossConfig, pr: &Prepared) -> Result<Tensor, LossError> {
    let b = cfg.batch_dice;
    let start = first_class(cfg, pr.classes)?;
    let k = pr.classes - start;
    let p = pr.p.f_detach()?;
    let hard = p
        .f_argmax(1, false)?
        .f_one_hot(pr.classes)?
        .f_to_kind(pr.kind)?;
    let mut perm = vec![0i64, (pr.n_spatial + 1) as i64];
    perm.extend(1..=(pr.n_spatial as i64));
    let h = hard.f_permute(&perm)?;
    let hm = masked(&h, &pr.m)?;
    let gm = masked(&pr.g, &pr.m)?;
    let inter = region_sum(pr, &hm.f_mul(&pr.g)?, b)?;
    let ssum = region_sum(pr, &hm, b)?
        .f_add(&region_sum(pr, &gm, b)?)?
        .f_add_scalar(2.0 * PAPER_EPS)?;
    let dice = inter.f_mul_scalar(2.0)?.f_div(&ssum)?;
    let value = one_minus_weighted(cfg, pr, &dice)?.f_detach()?;

    // Milletari gradient dD_c/dp_c = 2 g_c / S_c - 4 p_c I_c / S_c^2 at the hard I, S.
    let wsum: f64 = match &cfg.class_weights {
        Some(v) => v[start as usize..].iter().sum(),
        None => k as f64,
    };
    let n_eff = if b { 1.0 } else { pr.p.size()[0] as f64 };
    // coefficient per class: w_c / wsum / n_eff for scored classes, 0 otherwise
    let sel = Tensor::f_zeros([pr.classes], (pr.kind, pr.p.device()))?;
    let sel = sel.f_index_fill(
        0,
        &Tensor::f_arange_start(start, pr.classes, (Kind::Int64, pr.p.device()))?,
        1.0,
    )?;
    let coef = pr.w.f_mul(&sel)?.f_div_scalar(wsum * n_eff)?;
    // broadcast [N, C] / [C] to [N, C, 1, ...]
    let mut bshape: Vec<i64> = if b {
        vec![1, pr.classes]
    } else {
        vec![pr.p.size()[0], pr.classes]
    };
    bshape.extend(std::iter::repeat_n(1, pr.n_spatial));
    let s_b = ssum.f_reshape(&bshape)?;
    let i_b = inter.f_reshape(&bshape)?;
    let mut cshape = vec![1, pr.classes];
    cshape.extend(std::iter::repeat_n(1, pr.n_spatial));
    let coef_b = coef.f_reshape(&cshape)?;
    let d_dice =
        pr.g.f_mul_scalar(2.0)?
            .f_div(&s_b)?
            .f_sub(&p.f_mul(&i_b)?.f_mul_scalar(4.0)?.f_div(&s_b.f_mul(&s_b)?)?)?;
    let gcoef = masked(&d_dice.f_mul(&coef_b)?, &pr.m)?.f_detach()?; // [N, C, *sp]
                                                                     // dL/dp_c = -gcoef_c ; dL/dp_0 += sum_{c != 0} gcoef_c
    let fg = gcoef
        .f_narrow(1, 1, pr.classes - 1)?
        .f_sum_dim_intlist(1, true, pr.kind)?;
    let p0 = pr.p.f_narrow(1, 0, 1)?;
    let surrogate = fg
        .f_mul(&p0)?
        .f_sum(pr.kind)?
        .f_sub(&gcoef.f_mul(&pr.p)?.f_sum(pr.kind)?)?;
    Ok(value.f_add(&surrogate.f_sub(&surrogate.f_detach()?)?)?)
}

pub(crate) fn compute(
    cfg: &LossConfig,
    logits: &Tensor,
    target: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor, LossError> {
    let pr = prepare(cfg, logits, target, mask)?;
    match cfg.kind {
        LossKind::Ce => ce(&pr),
        LossKind::Dice => soft_dice(cfg, &pr),
        LossKind::DiceCe { alpha, beta, dice } => {
            let d = match dice {
                DiceVariant::Soft => soft_dice(cfg, &pr)?,
                DiceVariant::Paper => paper_dice(cfg, &pr)?,
            };
            Ok(d.f_mul_scalar(alpha)?
                .f_add(&ce(&pr)?.f_mul_scalar(beta)?)?)
        }
        LossKind::Focal { gamma } => focal(&pr, gamma),
        LossKind::Tversky { alpha, beta } => tversky(cfg, &pr, alpha, beta),
        LossKind::PaperDice => paper_dice(cfg, &pr),
    }
}
