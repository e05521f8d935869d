//! The serde configuration of a phantom: grid, anatomy ranges, image model and truth definition.

use serde::{Deserialize, Serialize};

use crate::{PhantomError, Result};

/// A closed interval `[min, max]` from which a parameter is drawn uniformly.
pub type Range = [f64; 2];

/// Which joint: the patient's left (world `-x` in RAS+) or right (world `+x`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The patient's left joint, at world `-x`.
    Left,
    /// The patient's right joint, at world `+x`.
    Right,
}

impl Side {
    /// Sign of world `x` on this side: `-1` for left, `+1` for right (RAS+).
    pub fn x_sign(self) -> f64 {
        match self {
            Side::Left => -1.0,
            Side::Right => 1.0,
        }
    }

    /// `"left"` or `"right"`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
}

/// Orientation of the voxel grid in the (RAS+) world. The anatomy always lives in world
/// coordinates (superior = `+z`, patient-left = `-x`, anterior = `+y`); this only changes how
/// voxel axes are laid over it, so that tests cover non-RAS and oblique grids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GridOrientation {
    /// Three-letter code (nibabel `aff2axcodes` convention): the direction that increasing
    /// `i`, `j`, `k` points to, one letter from each of `R/L`, `A/P`, `S/I`, e.g. `"RAS"`,
    /// `"LPS"`, `"ASL"`.
    pub axes: String,
    /// Extra rotation of the grid (degrees) about world `x`, then `y`, then `z` (extrinsic),
    /// applied after `axes`; `[0, 0, 0]` keeps the grid axis-aligned.
    pub oblique_deg: [f64; 3],
}

impl Default for GridOrientation {
    fn default() -> Self {
        Self {
            axes: "RAS".into(),
            oblique_deg: [0.0; 3],
        }
    }
}

impl GridOrientation {
    /// The 3x3 matrix whose column `a` is the world unit direction of voxel axis `a`.
    pub fn directions(&self) -> Result<[[f64; 3]; 3]> {
        let code: Vec<char> = self.axes.chars().collect();
        if code.len() != 3 {
            return Err(PhantomError::InvalidConfig(format!(
                "orientation.axes {:?} must have exactly 3 letters",
                self.axes
            )));
        }
        let mut seen = [false; 3];
        let mut m = [[0.0; 3]; 3];
        for (a, c) in code.iter().enumerate() {
            let (w, s) = match c.to_ascii_uppercase() {
                'R' => (0, 1.0),
                'L' => (0, -1.0),
                'A' => (1, 1.0),
                'P' => (1, -1.0),
                'S' => (2, 1.0),
                'I' => (2, -1.0),
                _ => {
                    return Err(PhantomError::InvalidConfig(format!(
                        "orientation.axes {:?}: letter {c:?} is not one of R L A P S I",
                        self.axes
                    )))
                }
            };
            if seen[w] {
                return Err(PhantomError::InvalidConfig(format!(
                    "orientation.axes {:?} names the same world axis twice",
                    self.axes
                )));
            }
            seen[w] = true;
            m[w][a] = s;
        }
        for (n, v) in self.oblique_deg.iter().enumerate() {
            if !v.is_finite() {
                return Err(PhantomError::InvalidConfig(format!(
                    "orientation.oblique_deg[{n}] = {v} is not finite"
                )));
            }
        }
        let r = crate::geom::euler_xyz(self.oblique_deg);
        Ok(crate::geom::mat_mul(&r, &m))
    }
}

/// Ranges of the anatomical parameters, sampled per case (per joint where stated).
///
/// Frames: the *local* frame of a joint has `x` lateral (away from the mid-sagittal plane),
/// `y` anterior and `z` superior; the *head* frame is the local frame rotated by the head's
/// yaw (about superior), pitch (about lateral) and roll (about anterior), in that order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnatomyConfig {
    /// Semi-axes (mm) of the condyle head's base ellipsoid: mediolateral, anteroposterior,
    /// superoinferior (head frame x, y, z).
    pub head_semi_axes_mm: [Range; 3],
    /// Head yaw (degrees, about superior); positive turns the medial pole posteriorly, as in
    /// real condyles.
    pub head_yaw_deg: Range,
    /// Head pitch (degrees, about the lateral axis).
    pub head_pitch_deg: Range,
    /// Head roll (degrees, about the anterior axis).
    pub head_roll_deg: Range,
    /// Number of smooth surface bumps on the head.
    pub bump_count: usize,
    /// Largest relative amplitude of one bump (see [`crate::Bump`]; `a` uniform in
    /// `[-bump_amplitude, bump_amplitude]`); `bump_count * bump_amplitude` must stay below 0.5
    /// so the head stays star-shaped.
    pub bump_amplitude: f64,
    /// Angular radius (radians) of a bump's support.
    pub bump_width_rad: Range,
    /// Neck semi-axes at the head centre as fractions of the head's ML and AP semi-axes.
    pub neck_fraction: [Range; 2],
    /// Relative widening of the neck per 10 mm going down (0 = cylinder).
    pub neck_taper: Range,
    /// Tilt (degrees) of the glenoid fossa's axis from the head's superior axis towards
    /// anterior.
    pub fossa_tilt_deg: Range,
    /// Angular half-width (degrees) of the fossa, measured from its axis: mediolateral.
    pub fossa_half_angle_ml_deg: Range,
    /// Angular half-width (degrees) towards anterior (the posterior slope of the articular
    /// eminence lies here, so it is wider than posterior).
    pub fossa_half_angle_anterior_deg: Range,
    /// Angular half-width (degrees) towards posterior.
    pub fossa_half_angle_posterior_deg: Range,
    /// Flare of the temporal bone's lower surface beyond the fossa: the radial gap grows by
    /// `flare_mm * (e - 1)^2`, `e` the fossa's normalised angular coordinate (1 on its rim).
    pub flare_mm: f64,
    /// World-z of the temporal bone slab's lower plane relative to the head centre (mm,
    /// negative = below it). Anteriorly this is where the articular eminence's crest ends.
    pub slab_bottom_mm: Range,
    /// Thickness (mm) of the temporal bone above the fossa roof: the slab's upper plane is at
    /// the fossa roof (head top + largest width) plus this.
    pub roof_thickness_mm: Range,
    /// Cortical shell thickness (mm), both bones.
    pub cortex_mm: Range,
    /// Whether to add the external acoustic meatus (an air canal behind the joint).
    pub ear_canal: bool,
    /// Radius (mm) of the ear canal.
    pub ear_canal_radius_mm: Range,
}

impl Default for AnatomyConfig {
    fn default() -> Self {
        Self {
            head_semi_axes_mm: [[8.0, 10.0], [4.0, 5.5], [4.5, 6.0]],
            head_yaw_deg: [5.0, 25.0],
            head_pitch_deg: [-10.0, 10.0],
            head_roll_deg: [-8.0, 8.0],
            bump_count: 6,
            bump_amplitude: 0.05,
            bump_width_rad: [0.4, 1.0],
            neck_fraction: [[0.45, 0.6], [0.6, 0.8]],
            neck_taper: [0.0, 0.3],
            fossa_tilt_deg: [5.0, 15.0],
            fossa_half_angle_ml_deg: [50.0, 60.0],
            fossa_half_angle_anterior_deg: [80.0, 95.0],
            fossa_half_angle_posterior_deg: [45.0, 55.0],
            flare_mm: 150.0,
            slab_bottom_mm: [-4.0, -2.0],
            roof_thickness_mm: [4.0, 8.0],
            cortex_mm: [0.8, 1.2],
            ear_canal: true,
            ear_canal_radius_mm: [2.5, 3.5],
        }
    }
}

/// Optional cone-beam-CT-like artefacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CbctConfig {
    /// Turn the artefacts on.
    pub enabled: bool,
    /// Number of streaks (straight bands in axial planes through dense bone).
    pub streaks: usize,
    /// Streak amplitude (HU); each streak is dark or bright at random.
    pub streak_hu: Range,
    /// Streak width (Gaussian sigma, mm).
    pub streak_width_mm: Range,
    /// Linear gain drift along superior: the attenuation `(HU + 1000)` is multiplied by
    /// `1 + drift * zn` with `zn` in `[-1, 1]` over the field of view (sign drawn at random).
    pub drift: f64,
    /// Cupping: the attenuation is multiplied by `1 - cupping * (1 - rho^2)`, `rho` the
    /// normalised in-plane distance from the field of view's centre axis.
    pub cupping: f64,
}

impl Default for CbctConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            streaks: 6,
            streak_hu: [100.0, 300.0],
            streak_width_mm: [0.3, 0.8],
            drift: 0.08,
            cupping: 0.1,
        }
    }
}

/// The CT-like image model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// Cortical bone (HU), drawn per joint.
    pub cortical_hu: Range,
    /// Trabecular bone (HU): a smooth random texture spanning this range.
    pub trabecular_hu: Range,
    /// Soft tissue mean (HU).
    pub soft_tissue_hu: f64,
    /// Amplitude (HU) of the smooth soft-tissue texture.
    pub soft_texture_hu: f64,
    /// Air (HU).
    pub air_hu: f64,
    /// Correlation length (mm) of the bone and soft-tissue textures.
    pub texture_scale_mm: f64,
    /// Gaussian blur (sigma, mm, isotropic in the world) modelling the scanner's point spread.
    pub blur_sigma_mm: f64,
    /// Additive white Gaussian noise (sigma, HU).
    pub noise_sigma_hu: f64,
    /// CBCT-like artefacts.
    pub cbct: CbctConfig,
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            cortical_hu: [1500.0, 1800.0],
            trabecular_hu: [300.0, 600.0],
            soft_tissue_hu: 40.0,
            soft_texture_hu: 15.0,
            air_hu: -1000.0,
            texture_scale_mm: 1.0,
            blur_sigma_mm: 0.3,
            noise_sigma_hu: 20.0,
            cbct: CbctConfig::default(),
        }
    }
}

/// Everything that defines a phantom, apart from the seed.
///
/// World coordinates are RAS+ mm: superior = `+z`, patient-left = `-x`, anterior = `+y`. The
/// head centre of the left joint is at `(-intercondylar_mm / 2, 0, 0)` and the right one's at
/// `(+intercondylar_mm / 2, 0, 0)`; a single-side phantom has only the joint of `side`.
///
/// ```
/// let cfg = negvol_phantom::PhantomConfig::default();
/// assert_eq!(cfg.spacing, [0.4; 3]);
/// assert_eq!(cfg.grid_shape().unwrap(), [96, 96, 96]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhantomConfig {
    /// Grid shape `[ni, nj, nk]`; `None` (the default) fits the field of view
    /// ([`Self::fov_mm`] per joint, both joints with [`Self::both_sides`]) at [`Self::spacing`].
    pub shape: Option<[usize; 3]>,
    /// Voxel size `[si, sj, sk]` (mm); anisotropic allowed. Default 0.4 mm isotropic, the seed
    /// paper's CT resolution.
    pub spacing: [f64; 3],
    /// How the voxel grid is laid over the world.
    pub orientation: GridOrientation,
    /// Field of view around one joint (world x, y, z extents, mm), used when `shape` is
    /// `None`. Default 38.4 mm (96 voxels at 0.4 mm).
    pub fov_mm: [f64; 3],
    /// Centre of one joint's field of view relative to its head centre (lateral, anterior,
    /// superior; mm). Default 2 mm superior, which leaves room for the temporal bone above.
    pub fov_offset_mm: [f64; 3],
    /// Both joints in one volume (left at world `-x`, right at `+x`).
    pub both_sides: bool,
    /// The joint generated when `both_sides` is false.
    pub side: Side,
    /// Distance (mm) between the two head centres. Only the placement uses it (the world x of
    /// a single joint is `x_sign * intercondylar_mm / 2`); both-sided grids grow with it.
    pub intercondylar_mm: f64,
    /// Left/right asymmetry of the joint space, in `(-1, 1)`: the right joint's width field is
    /// the left one's shifted by `asymmetry * (max - min)` of [`Self::width_range_mm`] (and the
    /// left one's fractions are compressed by `1 - |asymmetry|`), so both stay within the
    /// range; positive = right wider. The right head also gets its own bumps. The exact
    /// resulting volume asymmetry index is in the truth.
    pub asymmetry: f64,
    /// Joint-space width range (mm) inside the fossa: the radial gap between head and temporal
    /// bone is a smooth blend of five values (superior, anterior, posterior, medial, lateral)
    /// drawn from this range, so it varies across the fossa and never leaves the range.
    pub width_range_mm: Range,
    /// Ground-truth NV keeps a radial head-to-temporal-bone segment only if it is at most this
    /// long (mm). Default 6 mm: above every width in the fossa (default at most 4 mm), while
    /// the flare beyond the fossa (see [`AnatomyConfig::flare_mm`]) passes 6 mm within a few
    /// degrees, so it cuts only a thin rim. Must exceed `width_range_mm[1]`.
    pub truth_max_gap_mm: f64,
    /// Ground-truth NV keeps a segment only if its head point is within this distance (mm,
    /// along superior) of the head's most superior point. Default 10 mm (the pipeline's
    /// `head_depth_mm`).
    pub truth_head_depth_mm: f64,
    /// Sub-samples per axis for partial-volume image intensities (1 = none; at most 8;
    /// default 2). Only voxels with a 6-neighbour of another tissue class are sub-sampled;
    /// the others take their centre's value. Masks are always sampled at voxel centres.
    pub supersample: usize,
    /// Anatomy ranges.
    pub anatomy: AnatomyConfig,
    /// Image model.
    pub image: ImageConfig,
}

impl Default for PhantomConfig {
    fn default() -> Self {
        Self {
            shape: None,
            spacing: [0.4; 3],
            orientation: GridOrientation::default(),
            fov_mm: [38.4; 3],
            fov_offset_mm: [0.0, 0.0, 2.0],
            both_sides: false,
            side: Side::Left,
            intercondylar_mm: 100.0,
            asymmetry: 0.1,
            width_range_mm: [1.5, 4.0],
            truth_max_gap_mm: 6.0,
            truth_head_depth_mm: 10.0,
            supersample: 2,
            anatomy: AnatomyConfig::default(),
            image: ImageConfig::default(),
        }
    }
}

fn check_range(name: &str, r: Range, lo: f64, hi: f64) -> Result<()> {
    if !(r[0].is_finite() && r[1].is_finite()) || r[0] > r[1] || r[0] < lo || r[1] > hi {
        return Err(PhantomError::InvalidConfig(format!(
            "{name} = {r:?} must be finite with min <= max within [{lo}, {hi}]"
        )));
    }
    Ok(())
}

fn check_value(name: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
    if !v.is_finite() || v < lo || v > hi {
        return Err(PhantomError::InvalidConfig(format!(
            "{name} = {v} must be finite within [{lo}, {hi}]"
        )));
    }
    Ok(())
}

/// Largest number of voxels a phantom grid may have (4 Gi).
pub const MAX_VOXELS: usize = 1 << 32;

impl PhantomConfig {
    /// The default single joint on the given side.
    pub fn one_side(side: Side) -> Self {
        Self {
            side,
            ..Self::default()
        }
    }

    /// Check every field; the error names the first offending one.
    pub fn validate(&self) -> Result<()> {
        for (a, s) in self.spacing.iter().enumerate() {
            check_value(&format!("spacing[{a}]"), *s, 1e-3, 100.0)?;
        }
        for (a, s) in self.fov_mm.iter().enumerate() {
            check_value(&format!("fov_mm[{a}]"), *s, 1.0, 10_000.0)?;
        }
        for (a, s) in self.fov_offset_mm.iter().enumerate() {
            check_value(&format!("fov_offset_mm[{a}]"), *s, -1000.0, 1000.0)?;
        }
        self.orientation.directions()?;
        if let Some(s) = self.shape {
            if s.contains(&0) {
                return Err(PhantomError::InvalidConfig(format!(
                    "shape {s:?} has a zero dimension"
                )));
            }
        }
        check_value("asymmetry", self.asymmetry, -0.95, 0.95)?;
        check_range("width_range_mm", self.width_range_mm, 0.05, 50.0)?;
        check_value("truth_max_gap_mm", self.truth_max_gap_mm, 0.0, 100.0)?;
        if self.truth_max_gap_mm <= self.width_range_mm[1] {
            return Err(PhantomError::InvalidConfig(format!(
                "truth_max_gap_mm = {} must exceed the largest fossa width {} (width_range_mm[1])",
                self.truth_max_gap_mm, self.width_range_mm[1]
            )));
        }
        check_value("truth_head_depth_mm", self.truth_head_depth_mm, 0.0, 1000.0)?;
        if !(1..=8).contains(&self.supersample) {
            return Err(PhantomError::InvalidConfig(format!(
                "supersample = {} must be within 1..=8",
                self.supersample
            )));
        }
        let a = &self.anatomy;
        for (n, r) in a.head_semi_axes_mm.iter().enumerate() {
            check_range(&format!("anatomy.head_semi_axes_mm[{n}]"), *r, 0.5, 100.0)?;
        }
        check_range("anatomy.head_yaw_deg", a.head_yaw_deg, -90.0, 90.0)?;
        check_range("anatomy.head_pitch_deg", a.head_pitch_deg, -45.0, 45.0)?;
        check_range("anatomy.head_roll_deg", a.head_roll_deg, -45.0, 45.0)?;
        if a.bump_count > 64 {
            return Err(PhantomError::InvalidConfig(format!(
                "anatomy.bump_count = {} must be at most 64",
                a.bump_count
            )));
        }
        check_value("anatomy.bump_amplitude", a.bump_amplitude, 0.0, 0.5)?;
        if a.bump_count as f64 * a.bump_amplitude >= 0.5 {
            return Err(PhantomError::InvalidConfig(format!(
                "anatomy.bump_count * anatomy.bump_amplitude = {} must stay below 0.5",
                a.bump_count as f64 * a.bump_amplitude
            )));
        }
        check_range("anatomy.bump_width_rad", a.bump_width_rad, 0.05, 3.0)?;
        for (n, r) in a.neck_fraction.iter().enumerate() {
            check_range(&format!("anatomy.neck_fraction[{n}]"), *r, 0.05, 0.95)?;
        }
        check_range("anatomy.neck_taper", a.neck_taper, -0.5, 2.0)?;
        check_range("anatomy.fossa_tilt_deg", a.fossa_tilt_deg, -45.0, 45.0)?;
        check_range(
            "anatomy.fossa_half_angle_ml_deg",
            a.fossa_half_angle_ml_deg,
            5.0,
            150.0,
        )?;
        check_range(
            "anatomy.fossa_half_angle_anterior_deg",
            a.fossa_half_angle_anterior_deg,
            5.0,
            150.0,
        )?;
        check_range(
            "anatomy.fossa_half_angle_posterior_deg",
            a.fossa_half_angle_posterior_deg,
            5.0,
            150.0,
        )?;
        check_value("anatomy.flare_mm", a.flare_mm, 1.0, 1e5)?;
        check_range("anatomy.slab_bottom_mm", a.slab_bottom_mm, -100.0, 100.0)?;
        check_range("anatomy.roof_thickness_mm", a.roof_thickness_mm, 0.5, 100.0)?;
        check_range("anatomy.cortex_mm", a.cortex_mm, 0.0, 20.0)?;
        check_range(
            "anatomy.ear_canal_radius_mm",
            a.ear_canal_radius_mm,
            0.5,
            20.0,
        )?;
        let im = &self.image;
        check_range("image.cortical_hu", im.cortical_hu, -5000.0, 10_000.0)?;
        check_range("image.trabecular_hu", im.trabecular_hu, -5000.0, 10_000.0)?;
        check_value("image.soft_tissue_hu", im.soft_tissue_hu, -5000.0, 10_000.0)?;
        check_value("image.soft_texture_hu", im.soft_texture_hu, 0.0, 10_000.0)?;
        check_value("image.air_hu", im.air_hu, -5000.0, 10_000.0)?;
        check_value("image.texture_scale_mm", im.texture_scale_mm, 0.05, 1000.0)?;
        check_value("image.blur_sigma_mm", im.blur_sigma_mm, 0.0, 100.0)?;
        check_value("image.noise_sigma_hu", im.noise_sigma_hu, 0.0, 10_000.0)?;
        let cb = &im.cbct;
        if cb.streaks > 1000 {
            return Err(PhantomError::InvalidConfig(format!(
                "image.cbct.streaks = {} must be at most 1000",
                cb.streaks
            )));
        }
        check_range("image.cbct.streak_hu", cb.streak_hu, 0.0, 10_000.0)?;
        check_range(
            "image.cbct.streak_width_mm",
            cb.streak_width_mm,
            0.01,
            100.0,
        )?;
        check_value("image.cbct.drift", cb.drift, 0.0, 0.9)?;
        check_value("image.cbct.cupping", cb.cupping, 0.0, 0.9)?;
        check_value("intercondylar_mm", self.intercondylar_mm, 0.0, 1000.0)?;
        if self.both_sides {
            // Each joint owns its half of the world (split at x = 0); its negative volume must
            // stay well inside it.
            let reach = a.head_semi_axes_mm[0][1] * (1.0 + a.bump_count as f64 * a.bump_amplitude)
                + self.truth_max_gap_mm
                + 2.0;
            if self.intercondylar_mm / 2.0 < reach {
                return Err(PhantomError::InvalidConfig(format!(
                    "intercondylar_mm = {} is too small for both sides: each joint needs {reach:.1} mm \
                     from the mid-sagittal plane (largest head semi-axis + truth_max_gap_mm + 2)",
                    self.intercondylar_mm
                )));
            }
        }
        let n = self.grid_shape()?;
        let total = n.iter().try_fold(1usize, |acc, &x| acc.checked_mul(x));
        if total.is_none_or(|t| t > MAX_VOXELS) {
            return Err(PhantomError::InvalidConfig(format!(
                "grid shape {n:?} has more than {MAX_VOXELS} voxels"
            )));
        }
        Ok(())
    }

    /// Head centres (world mm) of the joints this config generates, with their sides.
    pub fn joint_centres(&self) -> Vec<(Side, [f64; 3])> {
        let sides: &[Side] = if self.both_sides {
            &[Side::Left, Side::Right]
        } else {
            std::slice::from_ref(&self.side)
        };
        sides
            .iter()
            .map(|&s| (s, [s.x_sign() * self.intercondylar_mm / 2.0, 0.0, 0.0]))
            .collect()
    }

    /// World box (centre, half-extents) that the field of view must cover.
    pub fn fov_box(&self) -> ([f64; 3], [f64; 3]) {
        let centres = self.joint_centres();
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for (side, c) in centres {
            let off = [
                side.x_sign() * self.fov_offset_mm[0],
                self.fov_offset_mm[1],
                self.fov_offset_mm[2],
            ];
            for a in 0..3 {
                lo[a] = lo[a].min(c[a] + off[a] - self.fov_mm[a] / 2.0);
                hi[a] = hi[a].max(c[a] + off[a] + self.fov_mm[a] / 2.0);
            }
        }
        let centre = [0, 1, 2].map(|a| (lo[a] + hi[a]) / 2.0);
        let half = [0, 1, 2].map(|a| (hi[a] - lo[a]) / 2.0);
        (centre, half)
    }

    /// The grid shape: `shape` if given, else the smallest grid at `spacing` (in the configured
    /// orientation) that covers the field-of-view box.
    pub fn grid_shape(&self) -> Result<[usize; 3]> {
        if let Some(s) = self.shape {
            return Ok(s);
        }
        let d = self.orientation.directions()?;
        let (_, half) = self.fov_box();
        let mut n = [0usize; 3];
        for a in 0..3 {
            let extent: f64 = (0..3).map(|w| d[w][a].abs() * 2.0 * half[w]).sum();
            let v = (extent / self.spacing[a] - 1e-6).ceil().max(1.0);
            if !v.is_finite() || v > MAX_VOXELS as f64 {
                return Err(PhantomError::InvalidConfig(format!(
                    "field of view {:?} mm at spacing {:?} gives a grid too large on axis {a}",
                    self.fov_mm, self.spacing
                )));
            }
            n[a] = v as usize;
        }
        Ok(n)
    }

    /// The voxel grid: [`Self::grid_shape`], `spacing` and `orientation`, centred on the
    /// field-of-view box.
    pub fn geometry(&self) -> Result<negvol_volume::Geometry> {
        let d = self.orientation.directions()?;
        let n = self.grid_shape()?;
        let (centre, _) = self.fov_box();
        let mut aff = [[0.0; 4]; 4];
        for r in 0..3 {
            for c in 0..3 {
                aff[r][c] = d[r][c] * self.spacing[c];
            }
            let mut t = centre[r];
            for c in 0..3 {
                t -= aff[r][c] * (n[c] as f64 - 1.0) / 2.0;
            }
            aff[r][3] = t;
        }
        aff[3][3] = 1.0;
        Ok(negvol_volume::Geometry::new(n, aff)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_small() {
        let c = PhantomConfig::default();
        c.validate().unwrap();
        let g = c.geometry().unwrap();
        assert_eq!(g.shape(), [96, 96, 96]);
        assert_eq!(g.orientation_code(), "RAS");
        // Grid centre at the FOV centre: left joint at x = -50, 2 mm up.
        let w = g.voxel_to_world([47.5, 47.5, 47.5]);
        assert!((w[0] + 50.0).abs() < 1e-9 && w[1].abs() < 1e-9 && (w[2] - 2.0).abs() < 1e-9);
    }

    #[test]
    fn orientation_codes() {
        let mut c = PhantomConfig::default();
        for code in ["LPS", "ASL", "IRP"] {
            c.orientation.axes = code.into();
            assert_eq!(c.geometry().unwrap().orientation_code(), code);
        }
        c.orientation.axes = "RAR".into();
        assert!(c.validate().unwrap_err().to_string().contains("RAR"));
        c.orientation.axes = "RAX".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn rejects_bad_values() {
        let d = PhantomConfig::default;
        let err = |c: PhantomConfig| c.validate().unwrap_err().to_string();
        let mut spacing = d().spacing;
        spacing[1] = f64::NAN;
        assert!(err(PhantomConfig { spacing, ..d() }).contains("spacing[1]"));
        let c = PhantomConfig {
            width_range_mm: [4.0, 1.0],
            ..d()
        };
        assert!(err(c).contains("width_range_mm"));
        let c = PhantomConfig {
            truth_max_gap_mm: 3.0,
            ..d()
        };
        assert!(err(c).contains("truth_max_gap_mm"));
        let c = PhantomConfig {
            both_sides: true,
            intercondylar_mm: 20.0,
            ..d()
        };
        assert!(err(c).contains("intercondylar_mm"));
        let c = PhantomConfig {
            supersample: 0,
            ..d()
        };
        assert!(err(c).contains("supersample"));
        let mut c = d();
        c.anatomy.bump_count = 20;
        assert!(err(c).contains("bump_count"));
        let mut c = d();
        c.image.cbct.drift = -1.0;
        assert!(err(c).contains("drift"));
    }

    #[test]
    fn serde_round_trip_and_defaults() {
        let c = PhantomConfig {
            both_sides: true,
            ..Default::default()
        };
        let s = serde_json::to_string(&c).unwrap();
        let d: PhantomConfig = serde_json::from_str(&s).unwrap();
        assert_eq!(c, d);
        let e: PhantomConfig = serde_json::from_str(r#"{"spacing": [0.3, 0.3, 0.6]}"#).unwrap();
        assert_eq!(e.spacing, [0.3, 0.3, 0.6]);
        assert!(serde_json::from_str::<PhantomConfig>(r#"{"spacnig": 1}"#).is_err());
    }
}
