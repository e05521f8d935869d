//! Voxelization of the model and the CT-like image synthesis.

use ndarray::{Array3, Axis, Zip};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use negvol_volume::Geometry;

use crate::config::ImageConfig;
use crate::geom::V3;
use crate::model::{PhantomModel, Region, Tissue};

/// Smooth random texture in `[0, 1]`: trilinear interpolation of uniform values on a lattice.
pub(crate) struct Texture {
    origin: V3,
    inv_step: f64,
    dims: [usize; 3],
    vals: Vec<f32>,
}

impl Texture {
    pub(crate) fn new(rng: &mut ChaCha8Rng, lo: V3, hi: V3, step: f64) -> Self {
        // Keep the lattice at most ~256 points per axis.
        let ext = (0..3).map(|a| hi[a] - lo[a]).fold(0.0, f64::max);
        let step = step.max(ext / 256.0).max(1e-6);
        let dims = [0, 1, 2].map(|a| ((hi[a] - lo[a]) / step).ceil() as usize + 2);
        let n = dims[0] * dims[1] * dims[2];
        let vals = (0..n).map(|_| rng.gen::<f32>()).collect();
        Self {
            origin: lo,
            inv_step: 1.0 / step,
            dims,
            vals,
        }
    }

    #[inline]
    pub(crate) fn sample(&self, p: V3) -> f32 {
        let mut i0 = [0usize; 3];
        let mut f = [0f32; 3];
        for a in 0..3 {
            let x = ((p[a] - self.origin[a]) * self.inv_step).clamp(0.0, (self.dims[a] - 2) as f64);
            let fl = x.floor();
            i0[a] = (fl as usize).min(self.dims[a] - 2);
            f[a] = (x - i0[a] as f64) as f32;
        }
        let at = |i: usize, j: usize, k: usize| {
            self.vals[((i0[0] + i) * self.dims[1] + i0[1] + j) * self.dims[2] + i0[2] + k]
        };
        let l = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let c00 = l(at(0, 0, 0), at(0, 0, 1), f[2]);
        let c01 = l(at(0, 1, 0), at(0, 1, 1), f[2]);
        let c10 = l(at(1, 0, 0), at(1, 0, 1), f[2]);
        let c11 = l(at(1, 1, 0), at(1, 1, 1), f[2]);
        l(l(c00, c01, f[1]), l(c10, c11, f[1]), f[0])
    }
}

/// World bounding box of a grid (voxel centres, padded by one voxel).
pub(crate) fn world_bounds(g: &Geometry) -> (V3, V3) {
    let s = g.shape();
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for c in 0..8 {
        let ijk = [0, 1, 2].map(|a| if c >> a & 1 == 1 { s[a] as f64 } else { -1.0 });
        let w = g.voxel_to_world(ijk);
        for a in 0..3 {
            lo[a] = lo[a].min(w[a]);
            hi[a] = hi[a].max(w[a]);
        }
    }
    (lo, hi)
}

/// The label masks of a model on a grid (voxel centres).
pub(crate) struct Labels {
    pub mc: Array3<bool>,
    pub tb: Array3<bool>,
    pub nv: Array3<bool>,
}

#[inline]
fn world(a: &[[f64; 4]; 4], i: f64, j: f64, k: f64) -> V3 {
    [
        a[0][0] * i + a[0][1] * j + a[0][2] * k + a[0][3],
        a[1][0] * i + a[1][1] * j + a[1][2] * k + a[1][3],
        a[2][0] * i + a[2][1] * j + a[2][2] * k + a[2][3],
    ]
}

/// Rasterize only the labels (cheap: one query per voxel).
pub(crate) fn labels(model: &PhantomModel, g: &Geometry) -> Labels {
    let s = g.shape();
    let cfg = model.config();
    let nvp = Some((cfg.truth_max_gap_mm, cfg.truth_head_depth_mm));
    let aff = g.affine();
    let mut reg = Array3::<u8>::zeros((s[0], s[1], s[2]));
    reg.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut sl)| {
            for ((j, k), r) in sl.indexed_iter_mut() {
                let p = world(&aff, i as f64, j as f64, k as f64);
                *r = model.joint_at(p).classify(p, nvp).0 as u8;
            }
        });
    split(&reg)
}

fn split(reg: &Array3<u8>) -> Labels {
    Labels {
        mc: reg.mapv(|r| r == Region::Mc as u8),
        tb: reg.mapv(|r| r == Region::Tb as u8),
        nv: reg.mapv(|r| r == Region::Nv as u8),
    }
}

struct Hu<'a> {
    cfg: &'a ImageConfig,
    bone: Texture,
    soft: Texture,
}

impl Hu<'_> {
    #[inline]
    fn value(&self, model: &PhantomModel, p: V3) -> (Tissue, f32) {
        let joint = model.joint_at(p);
        let (_, t, _) = joint.classify(p, None);
        (t, self.of(joint, t, p))
    }

    #[inline]
    fn of(&self, joint: &crate::model::Joint, t: Tissue, p: V3) -> f32 {
        let c = self.cfg;
        let jp = joint.params();
        match t {
            Tissue::Soft => {
                (c.soft_tissue_hu + c.soft_texture_hu * (2.0 * self.soft.sample(p) as f64 - 1.0))
                    as f32
            }
            Tissue::Air => c.air_hu as f32,
            Tissue::McCortical => jp.cortical_hu_mc as f32,
            Tissue::TbCortical => jp.cortical_hu_tb as f32,
            Tissue::McTrabecular | Tissue::TbTrabecular => {
                let [lo, hi] = c.trabecular_hu;
                (lo + (hi - lo) * self.bone.sample(p) as f64) as f32
            }
        }
    }
}

/// Labels and the CT-like image.
pub(crate) fn labels_and_image(
    model: &PhantomModel,
    g: &Geometry,
    seed: u64,
) -> (Labels, Array3<f32>) {
    let s = g.shape();
    let cfg = model.config();
    let icfg = &cfg.image;
    let nvp = Some((cfg.truth_max_gap_mm, cfg.truth_head_depth_mm));
    let aff = g.affine();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(2);
    let (lo, hi) = world_bounds(g);
    let hu = Hu {
        cfg: icfg,
        bone: Texture::new(&mut rng, lo, hi, icfg.texture_scale_mm),
        soft: Texture::new(&mut rng, lo, hi, 2.0 * icfg.texture_scale_mm),
    };
    // Pass 1: region, tissue and HU at voxel centres.
    let mut reg = Array3::<u8>::zeros((s[0], s[1], s[2]));
    let mut tis = Array3::<u8>::zeros((s[0], s[1], s[2]));
    let mut img = Array3::<f32>::zeros((s[0], s[1], s[2]));
    reg.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(tis.axis_iter_mut(Axis(0)).into_par_iter())
        .zip(img.axis_iter_mut(Axis(0)).into_par_iter())
        .enumerate()
        .for_each(|(i, ((mut rs, mut ts), mut is))| {
            for j in 0..s[1] {
                for k in 0..s[2] {
                    let p = world(&aff, i as f64, j as f64, k as f64);
                    let joint = model.joint_at(p);
                    let (r, t, _) = joint.classify(p, nvp);
                    rs[[j, k]] = r as u8;
                    ts[[j, k]] = t as u8;
                    is[[j, k]] = hu.of(joint, t, p);
                }
            }
        });
    // Pass 2: partial volume where a 6-neighbour has another tissue.
    let ss = cfg.supersample;
    if ss > 1 {
        let offs: Vec<f64> = (0..ss)
            .map(|a| (a as f64 + 0.5) / ss as f64 - 0.5)
            .collect();
        let tis = &tis;
        img.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(i, mut is)| {
                for j in 0..s[1] {
                    for k in 0..s[2] {
                        let t = tis[[i, j, k]];
                        let differs = (i > 0 && tis[[i - 1, j, k]] != t)
                            || (i + 1 < s[0] && tis[[i + 1, j, k]] != t)
                            || (j > 0 && tis[[i, j - 1, k]] != t)
                            || (j + 1 < s[1] && tis[[i, j + 1, k]] != t)
                            || (k > 0 && tis[[i, j, k - 1]] != t)
                            || (k + 1 < s[2] && tis[[i, j, k + 1]] != t);
                        if !differs {
                            continue;
                        }
                        let mut acc = 0.0f64;
                        for &a in &offs {
                            for &b in &offs {
                                for &c in &offs {
                                    let p = world(&aff, i as f64 + a, j as f64 + b, k as f64 + c);
                                    acc += hu.value(model, p).1 as f64;
                                }
                            }
                        }
                        is[[j, k]] = (acc / (ss * ss * ss) as f64) as f32;
                    }
                }
            });
    }
    // Pass 3: point spread.
    if icfg.blur_sigma_mm > 0.0 {
        let sp = g.spacing();
        for (a, s) in sp.iter().enumerate() {
            gaussian_blur_axis(&mut img, a, icfg.blur_sigma_mm / s);
        }
    }
    // Pass 4: CBCT artefacts.
    if icfg.cbct.enabled {
        cbct_artefacts(&mut img, model, g, seed);
    }
    // Pass 5: noise, one RNG stream per i-slice so the result does not depend on threads.
    if icfg.noise_sigma_hu > 0.0 {
        let sigma = icfg.noise_sigma_hu;
        img.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(i, mut is)| {
                let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x9E37_79B9_7F4A_7C15);
                r.set_stream(1000 + i as u64);
                let mut spare: Option<f64> = None;
                for v in is.iter_mut() {
                    let z = match spare.take() {
                        Some(z) => z,
                        None => {
                            let (a, b) = gaussian_pair(&mut r);
                            spare = Some(b);
                            a
                        }
                    };
                    *v += (sigma * z) as f32;
                }
            });
    }
    (split(&reg), img)
}

/// Two independent standard normal draws (Box-Muller).
fn gaussian_pair(r: &mut ChaCha8Rng) -> (f64, f64) {
    let u1: f64 = 1.0 - r.gen::<f64>(); // (0, 1]
    let u2: f64 = r.gen();
    let m = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
    (m * c, m * s)
}

/// Separable Gaussian blur along voxel axis `axis` (sigma in voxels), edges clamped.
pub(crate) fn gaussian_blur_axis(img: &mut Array3<f32>, axis: usize, sigma: f64) {
    if sigma < 1e-3 {
        return;
    }
    let rad = (3.0 * sigma).ceil() as isize;
    let mut kern: Vec<f32> = (-rad..=rad)
        .map(|x| (-(x as f64).powi(2) / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let sum: f32 = kern.iter().sum();
    kern.iter_mut().for_each(|k| *k /= sum);
    let n = img.shape()[axis];
    Zip::from(img.lanes_mut(Axis(axis))).par_for_each(|mut lane| {
        let src: Vec<f32> = lane.iter().copied().collect();
        for (x, out) in lane.iter_mut().enumerate() {
            let mut acc = 0.0;
            for (t, kv) in kern.iter().enumerate() {
                let y = (x as isize + t as isize - rad).clamp(0, n as isize - 1) as usize;
                acc += kv * src[y];
            }
            *out = acc;
        }
    });
}

/// Streaks through dense bone in axial planes, gain drift along superior, cupping.
fn cbct_artefacts(img: &mut Array3<f32>, model: &PhantomModel, g: &Geometry, seed: u64) {
    let cb = &model.config().image.cbct;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(3);
    let (lo, hi) = world_bounds(g);
    let centre = [0, 1, 2].map(|a| (lo[a] + hi[a]) / 2.0);
    let half = [0, 1, 2].map(|a| ((hi[a] - lo[a]) / 2.0).max(1e-6));
    struct Streak {
        q: [f64; 2],
        n: [f64; 2],
        amp: f64,
        inv2w2: f64,
        z: [f64; 2],
    }
    let joints = model.joints();
    let streaks: Vec<Streak> = (0..cb.streaks)
        .map(|_| {
            let j = &joints[rng.gen_range(0..joints.len())];
            let c = j.centre();
            let top = j.head_top();
            let q = [
                c[0] + rng.gen_range(-6.0..=6.0),
                c[1] + rng.gen_range(-4.0..=4.0),
            ];
            let ang: f64 = rng.gen_range(0.0..std::f64::consts::PI);
            let amp = rng.gen_range(cb.streak_hu[0]..=cb.streak_hu[1].max(cb.streak_hu[0]))
                * if rng.gen::<bool>() { 1.0 } else { -1.0 };
            let w = rng.gen_range(
                cb.streak_width_mm[0]..=cb.streak_width_mm[1].max(cb.streak_width_mm[0]),
            );
            Streak {
                q,
                n: [-ang.sin(), ang.cos()],
                amp,
                inv2w2: 1.0 / (2.0 * w * w),
                z: [c[2] - 4.0, top[2] + 8.0],
            }
        })
        .collect();
    let drift = cb.drift * if rng.gen::<bool>() { 1.0 } else { -1.0 };
    let cup = cb.cupping;
    let aff = g.affine();
    let s = g.shape();
    img.axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut is)| {
            for j in 0..s[1] {
                for k in 0..s[2] {
                    let p = world(&aff, i as f64, j as f64, k as f64);
                    let mut v = is[[j, k]] as f64;
                    for st in &streaks {
                        let d = (p[0] - st.q[0]) * st.n[0] + (p[1] - st.q[1]) * st.n[1];
                        let zw = smooth_window(p[2], st.z[0], st.z[1], 2.0);
                        v += st.amp * zw * (-d * d * st.inv2w2).exp();
                    }
                    let zn = ((p[2] - centre[2]) / half[2]).clamp(-1.0, 1.0);
                    let rho2 = (((p[0] - centre[0]) / half[0]).powi(2)
                        + ((p[1] - centre[1]) / half[1]).powi(2))
                        / 2.0;
                    let gain = (1.0 + drift * zn) * (1.0 - cup * (1.0 - rho2.min(1.0)));
                    is[[j, k]] = ((v + 1000.0) * gain - 1000.0) as f32;
                }
            }
        });
}

/// 1 inside `[a, b]`, falling smoothly to 0 over `edge` mm outside.
fn smooth_window(x: f64, a: f64, b: f64, edge: f64) -> f64 {
    let d = if x < a {
        a - x
    } else if x > b {
        x - b
    } else {
        0.0
    };
    if d >= edge {
        0.0
    } else {
        let t = d / edge;
        1.0 - t * t * (3.0 - 2.0 * t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_preserves_mean_and_constant() {
        let mut a = Array3::<f32>::from_elem((5, 6, 7), 3.0);
        for ax in 0..3 {
            gaussian_blur_axis(&mut a, ax, 1.2);
        }
        assert!(a.iter().all(|v| (v - 3.0).abs() < 1e-5));
        let mut b = Array3::<f32>::zeros((1, 1, 41));
        b[[0, 0, 20]] = 1.0;
        gaussian_blur_axis(&mut b, 2, 2.0);
        let sum: f32 = b.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5);
        // Second moment = sigma^2.
        let m2: f32 = b
            .iter()
            .enumerate()
            .map(|(i, v)| v * (i as f32 - 20.0).powi(2))
            .sum();
        assert!((m2 - 4.0).abs() < 0.05, "{m2}");
    }

    #[test]
    fn texture_in_unit_range_and_continuous() {
        let mut r = ChaCha8Rng::seed_from_u64(1);
        let t = Texture::new(&mut r, [0.0; 3], [10.0; 3], 1.0);
        let mut prev = t.sample([0.0, 0.0, 3.0]);
        for n in 1..1000 {
            let x = n as f64 * 0.01;
            let v = t.sample([x, 0.5 * x, 3.0]);
            assert!((0.0..=1.0).contains(&v));
            assert!((v - prev).abs() < 0.05);
            prev = v;
        }
    }

    #[test]
    fn gaussian_pair_moments() {
        let mut r = ChaCha8Rng::seed_from_u64(5);
        let n = 20000;
        let (mut s1, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let (a, b) = gaussian_pair(&mut r);
            s1 += a + b;
            s2 += a * a + b * b;
        }
        let m = s1 / (2 * n) as f64;
        let v = s2 / (2 * n) as f64 - m * m;
        assert!(m.abs() < 0.03 && (v - 1.0).abs() < 0.04, "{m} {v}");
    }

    #[test]
    fn window() {
        assert_eq!(smooth_window(1.0, 0.0, 2.0, 1.0), 1.0);
        assert_eq!(smooth_window(-2.0, 0.0, 2.0, 1.0), 0.0);
        assert!((smooth_window(-0.5, 0.0, 2.0, 1.0) - 0.5).abs() < 1e-12);
    }
}
