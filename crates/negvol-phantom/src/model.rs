//! The analytic joint model: condyle head and neck (MC), temporal bone (TB) and the
//! ground-truth negative volume (NV), as exact point predicates in world coordinates.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::{PhantomConfig, Range, Side};
use crate::geom::{self, dot, norm, scale, sub, V3};
use crate::Result;

/// One smooth, compactly supported bump on the condyle head: the radius is multiplied by
/// `1 + amplitude * (1 - t)^3 (1 + 3 t)` for `t = (1 - u . direction) / (1 - cos width_rad) < 1`
/// (a C2 Wendland profile; head-frame unit direction `u`), and by 1 outside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bump {
    /// Unit direction of the bump's centre (head frame).
    pub direction: [f64; 3],
    /// Relative amplitude (negative = dent).
    pub amplitude: f64,
    /// Angular radius (radians) of the bump's support.
    pub width_rad: f64,
}

/// The five joint-space widths (mm) that the width field blends across the fossa.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointWidths {
    /// Along the fossa axis (roof).
    pub superior: f64,
    /// Towards the articular eminence.
    pub anterior: f64,
    /// Towards the postglenoid process.
    pub posterior: f64,
    /// Towards the mid-sagittal plane.
    pub medial: f64,
    /// Away from the mid-sagittal plane.
    pub lateral: f64,
}

/// The external acoustic meatus: an air cylinder running laterally behind the joint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarCanal {
    /// Axis position relative to the head centre: anterior (negative = posterior) and superior
    /// offsets (mm) in the joint's local frame.
    pub offset_mm: [f64; 2],
    /// Radius (mm).
    pub radius_mm: f64,
}

/// Every sampled parameter of one joint (all lengths mm, angles degrees).
///
/// Geometry (head frame = local frame rotated by yaw, pitch, roll; see
/// [`crate::AnatomyConfig`]):
/// - head radius along unit direction `u`: `r_H(u) = r_E(u) * (1 + sum bumps)`, `r_E` the
///   radius of the ellipsoid with [`Self::head_semi_axes_mm`];
/// - neck: for head-frame `z <= 0`, the ellipse `(x/nx)^2 + (y/ny)^2 <= 1` with
///   `(nx, ny) = neck_semi_axes_mm * (1 + neck_taper * (-z) / 10)`;
/// - temporal bone lower surface along `u`: `r_T(u) = r_H(u) + g(u)`, the gap
///   `g(u) = w(u) + flare_mm * max(0, e(u) - 1)^2`, `w` the convex blend of the five
///   [`Self::widths_mm`] with weights `max(0, u . d)^4 + 1e-4` over their directions (fossa
///   axis, anterior, posterior, medial, lateral), `e` the fossa coordinate (0 on the fossa
///   axis, 1 on its rim through the three half-angles; stereographic, see
///   [`Joint::gap`]);
/// - TB = points with `|p - c| >= r_T(u)` whose world z lies within
///   `[c_z + slab_bottom_mm, c_z + slab_top_mm]`, minus MC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointParams {
    /// Which joint.
    pub side: Side,
    /// Head centre (world mm).
    pub head_centre_mm: [f64; 3],
    /// Ellipsoid semi-axes: mediolateral, anteroposterior, superoinferior.
    pub head_semi_axes_mm: [f64; 3],
    /// Rotation about superior.
    pub head_yaw_deg: f64,
    /// Rotation about lateral.
    pub head_pitch_deg: f64,
    /// Rotation about anterior.
    pub head_roll_deg: f64,
    /// Surface bumps.
    pub bumps: Vec<Bump>,
    /// Neck semi-axes at the head centre (head-frame x, y).
    pub neck_semi_axes_mm: [f64; 2],
    /// Relative neck widening per 10 mm down.
    pub neck_taper: f64,
    /// Joint-space widths blended across the fossa.
    pub widths_mm: JointWidths,
    /// Anterior tilt of the fossa axis from the head's superior axis.
    pub fossa_tilt_deg: f64,
    /// Fossa half-angles: mediolateral, anterior, posterior.
    pub fossa_half_angle_deg: [f64; 3],
    /// Flare of the gap beyond the fossa rim.
    pub flare_mm: f64,
    /// World z of the slab's lower plane, relative to the head centre.
    pub slab_bottom_mm: f64,
    /// World z of the slab's upper plane, relative to the head centre.
    pub slab_top_mm: f64,
    /// Cortical shell thickness.
    pub cortex_mm: f64,
    /// Cortical intensity of the condyle (HU).
    pub cortical_hu_mc: f64,
    /// Cortical intensity of the temporal bone (HU).
    pub cortical_hu_tb: f64,
    /// The ear canal, if any.
    pub ear_canal: Option<EarCanal>,
}

fn draw(rng: &mut ChaCha8Rng, r: Range) -> f64 {
    if r[1] > r[0] {
        rng.gen_range(r[0]..=r[1])
    } else {
        r[0]
    }
}

fn random_unit(rng: &mut ChaCha8Rng) -> V3 {
    loop {
        let v = [
            rng.gen_range(-1.0..=1.0),
            rng.gen_range(-1.0..=1.0),
            rng.gen_range(-1.0..=1.0),
        ];
        let n = norm(v);
        if n > 1e-3 && n <= 1.0 {
            return scale(v, 1.0 / n);
        }
    }
}

fn draw_bumps(rng: &mut ChaCha8Rng, cfg: &PhantomConfig) -> Vec<Bump> {
    let a = &cfg.anatomy;
    (0..a.bump_count)
        .map(|_| Bump {
            direction: random_unit(rng),
            amplitude: rng.gen_range(-1.0..=1.0) * a.bump_amplitude,
            width_rad: draw(rng, a.bump_width_rad),
        })
        .collect()
}

/// Sample the joints of a case. The RNG streams are separate per purpose, so turning image
/// options on or off never changes the anatomy.
pub(crate) fn sample_joints(cfg: &PhantomConfig, seed: u64) -> Vec<JointParams> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(0);
    let a = &cfg.anatomy;
    let semi = [0, 1, 2].map(|n| draw(&mut rng, a.head_semi_axes_mm[n]));
    let yaw = draw(&mut rng, a.head_yaw_deg);
    let pitch = draw(&mut rng, a.head_pitch_deg);
    let roll = draw(&mut rng, a.head_roll_deg);
    let bumps_left = draw_bumps(&mut rng, cfg);
    let neck = [
        semi[0] * draw(&mut rng, a.neck_fraction[0]),
        semi[1] * draw(&mut rng, a.neck_fraction[1]),
    ];
    let taper = draw(&mut rng, a.neck_taper);
    let fractions: [f64; 5] = std::array::from_fn(|_| rng.gen_range(0.0..=1.0));
    let tilt = draw(&mut rng, a.fossa_tilt_deg);
    let half = [
        draw(&mut rng, a.fossa_half_angle_ml_deg),
        draw(&mut rng, a.fossa_half_angle_anterior_deg),
        draw(&mut rng, a.fossa_half_angle_posterior_deg),
    ];
    let slab_bottom = draw(&mut rng, a.slab_bottom_mm);
    let roof = draw(&mut rng, a.roof_thickness_mm);
    let cortex = draw(&mut rng, a.cortex_mm);
    let cort_mc = draw(&mut rng, cfg.image.cortical_hu);
    let cort_tb = draw(&mut rng, cfg.image.cortical_hu);
    let ear_radius = draw(&mut rng, a.ear_canal_radius_mm);
    let ear_z = rng.gen_range(-2.0..=0.0);
    let mut rng_right = ChaCha8Rng::seed_from_u64(seed);
    rng_right.set_stream(1);
    let bumps_right = draw_bumps(&mut rng_right, cfg);

    let [wmin, wmax] = cfg.width_range_mm;
    let asym = if cfg.both_sides { cfg.asymmetry } else { 0.0 };
    cfg.joint_centres()
        .into_iter()
        .map(|(side, centre)| {
            let shift = match side {
                Side::Left => (-asym).max(0.0),
                Side::Right => asym.max(0.0),
            };
            let w = fractions.map(|t| wmin + (wmax - wmin) * (t * (1.0 - asym.abs()) + shift));
            let bumps = if cfg.both_sides && side == Side::Right {
                bumps_right.clone()
            } else {
                bumps_left.clone()
            };
            let mut p = JointParams {
                side,
                head_centre_mm: centre,
                head_semi_axes_mm: semi,
                head_yaw_deg: yaw,
                head_pitch_deg: pitch,
                head_roll_deg: roll,
                bumps,
                neck_semi_axes_mm: neck,
                neck_taper: taper,
                widths_mm: JointWidths {
                    superior: w[0],
                    anterior: w[1],
                    posterior: w[2],
                    medial: w[3],
                    lateral: w[4],
                },
                fossa_tilt_deg: tilt,
                fossa_half_angle_deg: half,
                flare_mm: a.flare_mm,
                slab_bottom_mm: slab_bottom,
                slab_top_mm: 0.0,
                cortex_mm: cortex,
                cortical_hu_mc: cort_mc,
                cortical_hu_tb: cort_tb,
                ear_canal: a.ear_canal.then(|| EarCanal {
                    offset_mm: [-(semi[1] + wmax + 3.0 + ear_radius), ear_z],
                    radius_mm: ear_radius,
                }),
            };
            // The slab's top: above the highest point of the fossa roof by the roof thickness.
            let j = Joint::new(p.clone(), None);
            p.slab_top_mm = j.fossa_roof_rel() + roof;
            p
        })
        .collect()
}

/// A joint with everything precomputed for fast point queries.
#[derive(Debug, Clone)]
pub struct Joint {
    params: JointParams,
    c: V3,
    sx: f64,
    rot: geom::M3,
    up: V3,
    inv_a2: V3,
    bumps: Vec<(V3, f64, f64)>,
    af: V3,
    b1: V3,
    b2: V3,
    tan_half: [f64; 3],
    wdirs: [(V3, f64); 5],
    neck: [f64; 2],
    top_rel: f64,
    top_dir: V3,
    half_space: Option<f64>,
}

/// Where a world point falls for one joint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// Mandibular condyle (head or neck).
    Mc,
    /// Temporal bone.
    Tb,
    /// Ground-truth negative volume.
    Nv,
    /// Anything else (soft tissue or air).
    Other,
}

impl Joint {
    /// Precompute a joint; `half_space = Some(sign)` restricts its bones to world
    /// `x * sign >= 0` (used when both joints share a volume).
    pub fn new(params: JointParams, half_space: Option<f64>) -> Self {
        let rot = geom::mat_mul(
            &geom::rot_z(params.head_yaw_deg),
            &geom::mat_mul(
                &geom::rot_x(params.head_pitch_deg),
                &geom::rot_y(params.head_roll_deg),
            ),
        );
        let up = geom::mat_t_vec(&rot, [0.0, 0.0, 1.0]);
        let a = params.head_semi_axes_mm;
        let inv_a2 = a.map(|x| 1.0 / (x * x));
        let bumps = params
            .bumps
            .iter()
            .map(|b| {
                (
                    geom::normalize(b.direction),
                    b.amplitude,
                    1.0 / (1.0 - b.width_rad.cos()),
                )
            })
            .collect();
        let (st, ct) = params.fossa_tilt_deg.to_radians().sin_cos();
        let af = [0.0, st, ct];
        let b1 = [1.0, 0.0, 0.0];
        let b2 = [0.0, ct, -st];
        let tan_half = params
            .fossa_half_angle_deg
            .map(|d| (d.to_radians() / 2.0).tan());
        let w = &params.widths_mm;
        let wdirs = [
            (af, w.superior),
            (b2, w.anterior),
            (scale(b2, -1.0), w.posterior),
            (scale(b1, -1.0), w.medial),
            (b1, w.lateral),
        ];
        let mut j = Self {
            c: params.head_centre_mm,
            sx: params.side.x_sign(),
            rot,
            up,
            inv_a2,
            bumps,
            af,
            b1,
            b2,
            tan_half,
            wdirs,
            neck: params.neck_semi_axes_mm,
            top_rel: 0.0,
            top_dir: up,
            half_space,
            params,
        };
        let (t, d) = j.find_top();
        j.top_rel = t;
        j.top_dir = d;
        j
    }

    /// The sampled parameters.
    pub fn params(&self) -> &JointParams {
        &self.params
    }

    /// Head centre (world mm).
    pub fn centre(&self) -> [f64; 3] {
        self.c
    }

    /// World-z height of the head's most superior point above the head centre (mm).
    pub fn head_top_height(&self) -> f64 {
        self.top_rel
    }

    /// The head's most superior point (world mm).
    pub fn head_top(&self) -> [f64; 3] {
        self.head_to_world(scale(self.top_dir, self.head_radius(self.top_dir)))
    }

    /// World point -> head-frame offset from the head centre.
    #[inline]
    pub(crate) fn world_to_head(&self, p: V3) -> V3 {
        let d = sub(p, self.c);
        geom::mat_t_vec(&self.rot, [d[0] * self.sx, d[1], d[2]])
    }

    /// Head-frame offset -> world point.
    #[inline]
    pub(crate) fn head_to_world(&self, v: V3) -> V3 {
        let l = geom::mat_vec(&self.rot, v);
        [
            self.c[0] + l[0] * self.sx,
            self.c[1] + l[1],
            self.c[2] + l[2],
        ]
    }

    /// Fossa axis and the two tangent directions (lateral, anterior) in the head frame.
    pub(crate) fn fossa_frame(&self) -> (V3, V3, V3) {
        (self.af, self.b1, self.b2)
    }

    /// World-superior unit vector expressed in the head frame.
    #[inline]
    pub(crate) fn up(&self) -> V3 {
        self.up
    }

    /// Head radius `r_H(u)` along a head-frame unit direction.
    #[inline]
    pub fn head_radius(&self, u: V3) -> f64 {
        let q = u[0] * u[0] * self.inv_a2[0]
            + u[1] * u[1] * self.inv_a2[1]
            + u[2] * u[2] * self.inv_a2[2];
        let mut f = 1.0;
        for &(d, amp, inv) in &self.bumps {
            let t = (1.0 - dot(u, d)) * inv;
            if t < 1.0 {
                let s = 1.0 - t;
                f += amp * s * s * s * (1.0 + 3.0 * t);
            }
        }
        f / q.sqrt()
    }

    /// Stereographic fossa coordinates `(X, Y)` of a head-frame unit direction and the
    /// normalised fossa coordinate `e(u)`: 0 on the fossa axis, 1 on its rim.
    ///
    /// With `x, y, z` the components of `u` along the fossa's lateral, anterior and axial
    /// directions, the stereographic coordinates `X = x / (1 + z)`, `Y = y / (1 + z)` (whose
    /// radius is `tan(alpha / 2)`) give `e = sqrt((X / T_ml)^2 + (Y / T_ap)^2)` with
    /// `T = tan(half_angle / 2)`, `T_ap` the anterior or posterior one by the sign of `Y`. So
    /// the rim is the ellipse-like curve through the three half-angles, and no trigonometry is
    /// needed per query.
    #[inline]
    fn fossa_xye(&self, u: V3) -> (f64, f64, f64) {
        let z = dot(u, self.af);
        let den = 1.0 + z;
        if den < 1e-12 {
            return (1e12, 1e12, 1e12);
        }
        let x = dot(u, self.b1) / den;
        let y = dot(u, self.b2) / den;
        let tap = if y > 0.0 {
            self.tan_half[1]
        } else {
            self.tan_half[2]
        };
        let qx = x / self.tan_half[0];
        let qy = y / tap;
        (x, y, (qx * qx + qy * qy).sqrt())
    }

    /// `de/dalpha` along the meridian through `u` (per radian of angle from the fossa axis).
    #[inline]
    pub(crate) fn fossa_dedalpha(&self, u: V3) -> f64 {
        let (x, y, e) = self.fossa_xye(u);
        // d tan(a/2) / da = (1 + tan^2(a/2)) / 2 and e is linear in tan(a/2) along a meridian.
        let rho2 = x * x + y * y;
        if rho2 > 1e-24 {
            e / rho2.sqrt() * 0.5 * (1.0 + rho2)
        } else {
            0.5 / self.tan_half[0].min(self.tan_half[1]).min(self.tan_half[2])
        }
    }

    /// Width field `w(u)` (mm): the convex blend of the five widths.
    #[inline]
    pub(crate) fn width(&self, u: V3) -> f64 {
        let mut num = 0.0;
        let mut den = 0.0;
        for &(d, w) in &self.wdirs {
            let c = dot(u, d).max(0.0);
            let c2 = c * c;
            let q = c2 * c2 + 1e-4;
            num += q * w;
            den += q;
        }
        num / den
    }

    /// Radial gap `g(u) = w(u) + flare_mm * max(0, e(u) - 1)^2` (mm) between the head and the
    /// temporal bone's lower surface along head-frame unit direction `u`, and the fossa
    /// coordinate `e(u)`: with `x, y, z` the components of `u` along the fossa's lateral,
    /// anterior and axial directions, `X = x / (1 + z)`, `Y = y / (1 + z)` (stereographic, radius
    /// `tan(alpha / 2)` at angle `alpha` from the axis) and
    /// `e = sqrt((X / tan(h_ml / 2))^2 + (Y / tan(h_ap / 2))^2)`, `h_ap` the anterior or posterior
    /// half-angle by the sign of `Y`; `e = 1` on the fossa's rim.
    #[inline]
    pub fn gap(&self, u: V3) -> (f64, f64) {
        let (_, _, e) = self.fossa_xye(u);
        let x = (e - 1.0).max(0.0);
        (self.width(u) + self.params.flare_mm * x * x, e)
    }

    fn in_half_space(&self, p: V3) -> bool {
        self.half_space.is_none_or(|s| p[0] * s >= 0.0)
    }

    /// Whether a head-frame offset is inside the neck.
    #[inline]
    fn in_neck(&self, v: V3) -> bool {
        if v[2] > 0.0 {
            return false;
        }
        let k = 1.0 + self.params.neck_taper * (-v[2]) / 10.0;
        if k <= 0.0 {
            return false;
        }
        let nx = self.neck[0] * k;
        let ny = self.neck[1] * k;
        (v[0] / nx).powi(2) + (v[1] / ny).powi(2) <= 1.0
    }

    /// Whether a head-frame offset is in MC (head or neck).
    #[inline]
    pub(crate) fn in_mc_head(&self, v: V3) -> bool {
        let r = norm(v);
        if r == 0.0 {
            return true;
        }
        r <= self.head_radius(scale(v, 1.0 / r)) || self.in_neck(v)
    }

    /// The `[lo, hi]` radii along head-frame direction `u` where the slab planes allow TB.
    #[inline]
    fn slab_interval(&self, u: V3) -> Option<(f64, f64)> {
        let uz = dot(self.up, u);
        let (zb, zt) = (self.params.slab_bottom_mm, self.params.slab_top_mm);
        let (lo, hi) = if uz > 1e-12 {
            (zb / uz, zt / uz)
        } else if uz < -1e-12 {
            (zt / uz, zb / uz)
        } else if zb <= 0.0 && zt >= 0.0 {
            (0.0, f64::INFINITY)
        } else {
            return None;
        };
        (hi >= lo.max(0.0)).then_some((lo.max(0.0), hi))
    }

    /// Radius along head-frame unit direction `u` where the ray from the head centre first
    /// enters the (raw, plane-limited) temporal bone beyond the head surface, if it does.
    #[inline]
    pub(crate) fn tb_entry(&self, u: V3, rh: f64) -> Option<f64> {
        let (g, _) = self.gap(u);
        let rt = rh + g;
        let (lo, hi) = self.slab_interval(u)?;
        let r = rt.max(lo);
        (r <= hi).then_some(r)
    }

    /// Where a world point falls for this joint (MC, TB, ground-truth NV or other), with the
    /// NV definition of [`crate::PhantomTruth`].
    pub fn region(&self, p: [f64; 3], max_gap: f64, head_depth: f64) -> Region {
        self.classify(p, Some((max_gap, head_depth))).0
    }

    /// Height of the fossa roof's highest point above the head centre (world z, mm), from a
    /// direction scan (used to place the slab's upper plane).
    pub(crate) fn fossa_roof_rel(&self) -> f64 {
        let mut best = f64::NEG_INFINITY;
        let n = 48;
        for a in 0..=n {
            let alpha = std::f64::consts::FRAC_PI_2 * a as f64 / n as f64;
            for b in 0..(4 * n) {
                let phi = std::f64::consts::TAU * b as f64 / (4 * n) as f64;
                let u = self.dir_about(self.up, alpha, phi);
                let h = (self.head_radius(u) + self.gap(u).0) * dot(self.up, u);
                best = best.max(h);
            }
        }
        best
    }

    /// Unit vector at polar angle `alpha` and azimuth `phi` about `axis`.
    pub(crate) fn dir_about(&self, axis: V3, alpha: f64, phi: f64) -> V3 {
        let (t1, t2) = geom::tangents(axis);
        let (sa, ca) = alpha.sin_cos();
        let (sp, cp) = phi.sin_cos();
        geom::add(
            scale(axis, ca),
            geom::add(scale(t1, sa * cp), scale(t2, sa * sp)),
        )
    }

    /// The head's most superior point: height above the centre and head-frame direction.
    fn find_top(&self) -> (f64, V3) {
        let h = |u: V3| self.head_radius(u) * dot(self.up, u);
        let mut best = (h(self.up), self.up);
        let n = 40;
        for a in 1..=n {
            let alpha = std::f64::consts::FRAC_PI_2 * a as f64 / n as f64;
            for b in 0..(4 * n) {
                let phi = std::f64::consts::TAU * b as f64 / (4 * n) as f64;
                let u = self.dir_about(self.up, alpha, phi);
                let v = h(u);
                if v > best.0 {
                    best = (v, u);
                }
            }
        }
        // Pattern-search refinement on the sphere.
        let mut step = 0.05;
        let (mut hv, mut u) = best;
        while step > 1e-9 {
            let (t1, t2) = geom::tangents(u);
            let mut improved = false;
            for d in [t1, t2, scale(t1, -1.0), scale(t2, -1.0)] {
                let cand = geom::normalize(geom::add(u, scale(d, step)));
                let v = h(cand);
                if v > hv {
                    hv = v;
                    u = cand;
                    improved = true;
                }
            }
            if !improved {
                step *= 0.5;
            }
        }
        (hv, u)
    }

    /// Region (NV only when `nv = Some((max_gap, head_depth))`) and image tissue of a world
    /// point, with the approximate depth (mm) below the bone surface for bone tissues.
    pub(crate) fn classify(&self, p: V3, nv: Option<(f64, f64)>) -> (Region, Tissue, f64) {
        if !self.in_half_space(p) {
            return (Region::Other, Tissue::Soft, 0.0);
        }
        let v = self.world_to_head(p);
        let r = norm(v);
        if r < 1e-12 {
            return (Region::Mc, Tissue::McTrabecular, f64::INFINITY);
        }
        let u = scale(v, 1.0 / r);
        let rh = self.head_radius(u);
        let cortex = self.params.cortex_mm;
        let in_head = r <= rh;
        let in_neck = self.in_neck(v);
        if in_head || in_neck {
            let mut depth = if in_head { rh - r } else { 0.0 };
            if in_neck {
                let k = 1.0 + self.params.neck_taper * (-v[2]) / 10.0;
                let q = ((v[0] / (self.neck[0] * k)).powi(2) + (v[1] / (self.neck[1] * k)).powi(2))
                    .sqrt();
                depth = depth.max((1.0 - q) * self.neck[0].min(self.neck[1]) * k);
            }
            let t = if depth < cortex {
                Tissue::McCortical
            } else {
                Tissue::McTrabecular
            };
            return (Region::Mc, t, depth);
        }
        let (g, e) = self.gap(u);
        let rt = rh + g;
        let slab = self.slab_interval(u);
        if r >= rt {
            if let Some((lo, hi)) = slab {
                if r >= lo && r <= hi {
                    // Distance to the curved surface, corrected for its slope along the ray:
                    // d ~ dr / sqrt(1 + (r' / r)^2), r' from the flare term.
                    let slope = if e > 1.0 {
                        2.0 * self.params.flare_mm * (e - 1.0) * self.fossa_dedalpha(u)
                    } else {
                        0.0
                    };
                    let d_surf = (r - rt) / (1.0 + (slope / r).powi(2)).sqrt();
                    let z = dot(self.up, v);
                    let depth = d_surf
                        .min(z - self.params.slab_bottom_mm)
                        .min(self.params.slab_top_mm - z);
                    let t = if depth < cortex {
                        Tissue::TbCortical
                    } else {
                        Tissue::TbTrabecular
                    };
                    return (Region::Tb, t, depth);
                }
            }
        }
        let region = match (nv, slab) {
            (Some((max_gap, head_depth)), Some((lo, hi))) => {
                let rb = rt.max(lo);
                if rb <= hi
                    && r < rb
                    && rb - rh <= max_gap
                    && self.top_rel - rh * dot(self.up, u) <= head_depth
                {
                    Region::Nv
                } else {
                    Region::Other
                }
            }
            _ => Region::Other,
        };
        if let Some(ec) = &self.params.ear_canal {
            let d = sub(p, self.c);
            let lx = d[0] * self.sx;
            let dy = d[1] - ec.offset_mm[0];
            let dz = d[2] - ec.offset_mm[1];
            if lx >= -self.params.head_semi_axes_mm[0]
                && dy * dy + dz * dz <= ec.radius_mm * ec.radius_mm
            {
                return (region, Tissue::Air, 0.0);
            }
        }
        (region, Tissue::Soft, 0.0)
    }
}

/// Tissue classes of the image model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Tissue {
    Soft = 0,
    Air = 1,
    McCortical = 2,
    McTrabecular = 3,
    TbCortical = 4,
    TbTrabecular = 5,
}

/// All joints of a case with their sampling, ready for point queries.
///
/// ```
/// use negvol_phantom::{PhantomConfig, PhantomModel, Region};
/// let m = PhantomModel::sample(&PhantomConfig::default(), 7).unwrap();
/// let j = &m.joints()[0];
/// // Straight above the head's top, just over the head surface, lies the joint space.
/// let top = j.head_top();
/// assert_eq!(m.region([top[0], top[1], top[2] - 0.5]), Region::Mc);
/// assert_eq!(m.region([top[0], top[1], top[2] + 0.3]), Region::Nv);
/// assert_eq!(m.region([top[0], top[1], top[2] + 30.0]), Region::Other);
/// ```
#[derive(Debug, Clone)]
pub struct PhantomModel {
    cfg: PhantomConfig,
    seed: u64,
    joints: Vec<Joint>,
}

impl PhantomModel {
    /// Validate the config and sample the anatomy for `seed`.
    pub fn sample(cfg: &PhantomConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let params = sample_joints(cfg, seed);
        let joints = params
            .into_iter()
            .map(|p| {
                let hs = cfg.both_sides.then(|| p.side.x_sign());
                Joint::new(p, hs)
            })
            .collect();
        Ok(Self {
            cfg: cfg.clone(),
            seed,
            joints,
        })
    }

    /// The config.
    pub fn config(&self) -> &PhantomConfig {
        &self.cfg
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The joints (one, or left then right).
    pub fn joints(&self) -> &[Joint] {
        &self.joints
    }

    /// The joint that owns a world point (by the sign of x when both sides are present).
    #[inline]
    pub(crate) fn joint_at(&self, p: V3) -> &Joint {
        if self.joints.len() == 2 && p[0] >= 0.0 {
            &self.joints[1]
        } else {
            &self.joints[0]
        }
    }

    /// Which region a world point lies in (MC, TB, ground-truth NV, other).
    pub fn region(&self, p: [f64; 3]) -> Region {
        self.joint_at(p)
            .region(p, self.cfg.truth_max_gap_mm, self.cfg.truth_head_depth_mm)
    }
}
