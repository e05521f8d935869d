//! [`NvConfig`]: every parameter of the pipeline, serialisable, with defaults.

use serde::{Deserialize, Serialize};

use crate::{NvError, Result};

/// How the negative volume is derived from the two bones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Method {
    /// Normal-ray inflation of the condyle head clipped by the temporal bone (DESIGN.md steps
    /// 1-3): the reference method.
    #[default]
    Rays,
    /// Voxel-only method: a free voxel `x` is NV if its nearest head point `a` and its nearest
    /// TB point `b` (exact EDT feature transforms) satisfy
    /// `|a-x| + |x-b| <= (1 + between_eps) |a-b|` and `|a-b| <= between_max_width_mm`.
    /// Over-fills next to sharp bone edges (+28.6 % on the analytic shell with a sharp rim,
    /// where the rays method is within 4 %); see the crate README for why and what was tried.
    Between,
}

/// What to do when a voxel is in both MC and TB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OverlapPolicy {
    /// Stop with [`NvError::MasksOverlap`] (default: a voxel cannot be both bones, so the
    /// segmentation is wrong and the user should know).
    #[default]
    Error,
    /// Shared voxels count as condyle; the report records how many there were.
    PreferMc,
    /// Shared voxels count as temporal bone; the report records how many there were.
    PreferTb,
}

/// How the volume is split into the patient's left and right joints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SideSplit {
    /// A plane in world (RAS+ mm) coordinates: voxels with `(x - point) . normal >= 0` are the
    /// patient's right (for the default `normal = [1, 0, 0]`, world `+x` is the patient's right).
    WorldPlane {
        /// A point of the mid-sagittal plane, world mm.
        point: [f64; 3],
        /// The plane normal, pointing to the patient's right (need not be unit length).
        normal: [f64; 3],
    },
    /// The plane `x = x_c` of the world frame through the centre `c` of the volume (voxel
    /// index `(shape - 1) / 2`), with the patient's right at `x > x_c`: for volumes whose
    /// affine does not put the mid-sagittal plane at `x = 0` but whose field of view is
    /// centred on the head.
    VolumeCentre,
    /// No split: the whole volume is one joint (reported as side `whole`).
    None,
    /// A plane found from the condyles themselves, independent of where the affine puts the
    /// world origin: MC's 26-connected components are labelled and the two largest taken as
    /// the two condyles, provided the second holds at least
    /// [`CONDYLE_COMPONENT_FRACTION`] (10 %) of the largest's voxels. The plane passes through
    /// the midpoint of their centroids (world mm) with its normal along the line joining them,
    /// oriented to world `+x` (the patient's right, as for [`SideSplit::WorldPlane`]). The
    /// plane used is in [`crate::NvReport::split_plane`]; if the line between the condyles is
    /// more than 60 degrees from world `x`, the sides are still named by the sign of its `x`
    /// component and each side reports [`crate::IssueCode::SplitAxisOblique`].
    ///
    /// With fewer than two such components (a single-joint volume, or MC in one piece) the
    /// whole volume is one joint: side `whole`, with [`crate::IssueCode::NoSecondCondyle`]
    /// saying why.
    ///
    /// Cost: one pass over MC's bounding box (labelling runs of voxels, not voxels; no label
    /// volume is allocated) and a second scan of the box holding MC and TB to assign the sides;
    /// see the crate README ("Left/right split") for measured times.
    CondyleMidplane,
}

/// [`SideSplit::CondyleMidplane`] and the check of plane splits
/// ([`crate::IssueCode::BothCondylesOneSide`]) count MC's second largest 26-connected
/// component as a condyle only when it holds at least this fraction of the largest one's
/// voxels.
///
/// A condyle of one joint and that of the other differ in size by far less than a factor of
/// ten (the phantoms' two heads by a few percent; real left/right condyles by tens of percent
/// at most), while the debris of a segmentation (isolated false-positive voxels, a cut-off
/// piece of the neck) is a small fraction of a condyle; 10 % separates the two with a wide
/// margin on both sides.
pub const CONDYLE_COMPONENT_FRACTION: f64 = 0.1;

impl Default for SideSplit {
    fn default() -> Self {
        SideSplit::WorldPlane {
            point: [0.0; 3],
            normal: [1.0, 0.0, 0.0],
        }
    }
}

/// Every parameter of the negative-volume pipeline (DESIGN.md, "The negative volume").
///
/// Lengths are in millimetres of the world (RAS+) frame, so results do not depend on the voxel
/// spacing or orientation. The defaults are the ones validated on the phantoms.
///
/// ```
/// let cfg = negvol::NvConfig::default();
/// assert_eq!(cfg.head_depth_mm, 10.0);
/// let json = serde_json::to_string(&cfg).unwrap();
/// let back: negvol::NvConfig = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, cfg);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NvConfig {
    /// Derivation method (default [`Method::Rays`]).
    pub method: Method,
    /// The condyle head is the part of MC within this distance (mm, along superior) of MC's
    /// most superior point. Default 10 mm (DESIGN.md).
    pub head_depth_mm: f64,
    /// Rays are marched at most this far (mm) from the head surface; the working box is the
    /// head's bounding box grown by this much on every side. Default 30 mm (the paper's 3 cm
    /// box).
    pub max_distance_mm: f64,
    /// Rays whose gap to TB (head surface to TB surface, mm) exceeds this sweep nothing. Real
    /// temporal bone extends sideways, so low, lateral rays meet bone far outside the joint;
    /// this limit keeps the NV in the joint. Default 4.5 mm, chosen on phantoms whose TB slab
    /// extends well beyond the fossa (negvol-phantom: joint space 1.5-4 mm in the fossa, gap
    /// flaring beyond its rim, truth = radial head-to-TB segments of at most 6 mm): normal rays
    /// cross the flaring gap more steeply than radial lines, so they reach a given length
    /// farther out, and 4.5 mm along the normal matches the truth's rim best (sweep over 6
    /// cases at 0.4 mm, `tests/phantom_eval.rs::max_gap_sweep`: 4.0 mm -> Dice 0.923, volume
    /// -4.2 %; 4.5 -> 0.923, +2.0 %; 5.0 -> 0.916, +7.4 %; 6.0 -> 0.886, +20.2 %). It stays
    /// above the widest physiological joint space in the fossa (about 4 mm).
    pub max_gap_mm: f64,
    /// Ray step in mm; `None` = a quarter of the smallest voxel spacing. Must not exceed half
    /// of the smallest spacing (DESIGN.md: steps of at most half a voxel).
    pub step_mm: Option<f64>,
    /// Rays per head-surface voxel along each tangent direction: `ray_density^2` parallel rays
    /// start from sub-voxel points of each surface voxel (spaced by the smallest spacing /
    /// `ray_density`), so rays that diverge from a convex head still cross every voxel of the
    /// joint space. Default 2 (4 rays per surface voxel).
    pub ray_density: usize,
    /// Standard deviation (mm) of the Gaussian that smooths the signed distance field of MC
    /// before its gradient gives the surface normals. Default 1.0 mm: removes the voxel
    /// staircase (0.4 mm) while keeping the head's curvature (radius about 5-10 mm).
    pub normal_sigma_mm: f64,
    /// Radius (mm) of the ellipsoidal structuring element of the morphological closing that
    /// fills gaps between diverging rays; `None` = 1.5 x the largest voxel spacing; `Some(0)`
    /// disables the closing.
    pub closing_radius_mm: Option<f64>,
    /// World direction of "superior"; `None` = RAS+ `+z` (from the affine, which maps voxels
    /// to RAS+ world coordinates). Set it when the affine is not trustworthy.
    pub superior: Option<[f64; 3]>,
    /// How the volume is split into left and right joints (default: the plane world `x = 0`;
    /// [`SideSplit::CondyleMidplane`] when the affine does not put the mid-sagittal plane
    /// there). Every plane split is checked: if MC's two largest components fall on the same
    /// side, that side reports [`crate::IssueCode::BothCondylesOneSide`].
    pub side_split: SideSplit,
    /// What to do with voxels that are in both MC and TB (default: error).
    pub overlap: OverlapPolicy,
    /// [`Method::Between`]: relative slack of the ellipse condition. Default 0.04: feature
    /// points are voxel centres, so without slack (eps 0) the test keeps only voxels exactly
    /// on a centre-to-centre segment (Dice 0.17 on the phantoms); 0.04 is the best of a sweep
    /// (0.02: Dice 0.86, volume -11 %; 0.04: 0.877, +1.9 %; 0.06: 0.871, +10.9 %; 4 phantoms,
    /// 0.4 mm, width limit 4 mm).
    pub between_eps: f64,
    /// [`Method::Between`]: largest head-to-TB distance `|a - b|` (mm) that counts as joint
    /// space; `None` = `max_gap_mm - 0.5`. The nearest-point distance is never longer than the
    /// distance along the normal, so the same rim needs a smaller limit (phantom sweep: 3.75
    /// mm -> volume -2.6 %, 4.0 -> +1.9 %, 4.25 -> +4.2 %).
    pub between_max_width_mm: Option<f64>,
    /// Keep only the NV connected components (26-connectivity) that touch both MC and TB
    /// (share a face with a voxel of each; DESIGN.md step 3). Default true. The removed
    /// volume is reported per side ([`crate::SideReport::removed_volume_mm3`]).
    pub keep_touching_components: bool,
}

impl Default for NvConfig {
    fn default() -> Self {
        Self {
            method: Method::Rays,
            head_depth_mm: 10.0,
            max_distance_mm: 30.0,
            max_gap_mm: 4.5,
            step_mm: None,
            ray_density: 2,
            normal_sigma_mm: 1.0,
            closing_radius_mm: None,
            superior: None,
            side_split: SideSplit::default(),
            overlap: OverlapPolicy::Error,
            between_eps: 0.04,
            between_max_width_mm: None,
            keep_touching_components: true,
        }
    }
}

/// Smallest ray step, as a fraction of the smallest voxel spacing.
const MIN_STEP_FRACTION: f64 = 0.01;

/// Largest closing ball (voxels of the grid).
const MAX_CLOSING_VOXELS: f64 = 50_000.0;

pub(crate) fn bad(
    field: &'static str,
    value: impl std::fmt::Debug,
    reason: &'static str,
) -> NvError {
    NvError::InvalidConfig {
        field,
        value: format!("{value:?}"),
        reason,
    }
}

pub(crate) fn positive(field: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(bad(field, v, "must be finite and > 0"))
    }
}

pub(crate) fn unit(field: &'static str, v: [f64; 3]) -> Result<[f64; 3]> {
    let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    if n.is_finite() && n > 1e-12 {
        Ok([v[0] / n, v[1] / n, v[2] / n])
    } else {
        Err(bad(field, v, "must be a finite, non-zero vector"))
    }
}

impl NvConfig {
    /// Checks every field; returns the first invalid one as [`NvError::InvalidConfig`].
    pub fn validate(&self) -> Result<()> {
        positive("head_depth_mm", self.head_depth_mm)?;
        positive("max_distance_mm", self.max_distance_mm)?;
        positive("max_gap_mm", self.max_gap_mm)?;
        if self.max_gap_mm > self.max_distance_mm {
            return Err(bad(
                "max_gap_mm",
                self.max_gap_mm,
                "must not exceed max_distance_mm",
            ));
        }
        if let Some(s) = self.step_mm {
            positive("step_mm", s)?;
        }
        if !(1..=8).contains(&self.ray_density) {
            return Err(bad("ray_density", self.ray_density, "must be in 1..=8"));
        }
        if !(self.normal_sigma_mm.is_finite() && self.normal_sigma_mm >= 0.0) {
            return Err(bad(
                "normal_sigma_mm",
                self.normal_sigma_mm,
                "must be finite and >= 0",
            ));
        }
        if let Some(r) = self.closing_radius_mm {
            if !(r.is_finite() && r >= 0.0) {
                return Err(bad("closing_radius_mm", r, "must be finite and >= 0"));
            }
        }
        if let Some(s) = self.superior {
            unit("superior", s)?;
        }
        if let SideSplit::WorldPlane { point, normal } = &self.side_split {
            unit("side_split.normal", *normal)?;
            if point.iter().any(|v| !v.is_finite()) {
                return Err(bad("side_split.point", point, "must be finite"));
            }
        }
        if !(self.between_eps.is_finite() && self.between_eps >= 0.0) {
            return Err(bad(
                "between_eps",
                self.between_eps,
                "must be finite and >= 0",
            ));
        }
        if let Some(w) = self.between_max_width_mm {
            positive("between_max_width_mm", w)?;
        }
        Ok(())
    }

    /// Unit superior direction in world coordinates.
    pub(crate) fn superior_unit(&self) -> Result<[f64; 3]> {
        unit("superior", self.superior.unwrap_or([0.0, 0.0, 1.0]))
    }

    /// The ray step (mm) for a grid whose smallest spacing is `min_spacing`.
    pub(crate) fn step_for(&self, min_spacing: f64) -> Result<f64> {
        match self.step_mm {
            None => Ok(0.25 * min_spacing),
            Some(s) if s > 0.5 * min_spacing + 1e-12 => Err(bad(
                "step_mm",
                s,
                "must be at most half of the smallest voxel spacing",
            )),
            // Each ray takes max_gap_mm / step steps: a tiny step would stall the run.
            Some(s) if s < MIN_STEP_FRACTION * min_spacing => Err(bad(
                "step_mm",
                s,
                "must be at least 1/100 of the smallest voxel spacing (finer steps only cost \
                 time: the crossings are interpolated between steps)",
            )),
            Some(s) => Ok(s),
        }
    }

    /// The closing radius (mm) for a grid of `spacing`; rejects a structuring element of more
    /// than [`MAX_CLOSING_VOXELS`] voxels (the closing's cost grows with the cube of the
    /// radius, and a ball that large would fill the joint space anyway).
    pub(crate) fn closing_for(&self, spacing: [f64; 3]) -> Result<f64> {
        let max_sp = spacing.iter().cloned().fold(0.0, f64::max);
        let r = self.closing_radius_mm.unwrap_or(1.5 * max_sp);
        let ball = 4.0 / 3.0 * std::f64::consts::PI * r.powi(3) / spacing.iter().product::<f64>();
        if ball > MAX_CLOSING_VOXELS {
            return Err(bad(
                "closing_radius_mm",
                r,
                "the closing ball would hold more than 50 000 voxels of this grid",
            ));
        }
        Ok(r)
    }

    /// The largest joint width of the "between" method.
    pub(crate) fn between_width(&self) -> f64 {
        self.between_max_width_mm
            .unwrap_or((self.max_gap_mm - 0.5).max(0.5 * self.max_gap_mm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip() {
        let c = NvConfig::default();
        c.validate().unwrap();
        let j = serde_json::to_string_pretty(&c).unwrap();
        assert!(j.contains("\"method\": \"rays\""), "{j}");
        let back: NvConfig = serde_json::from_str(&j).unwrap();
        assert_eq!(back, c);
        // The split by the condyles is spelt like the other variants.
        let p: NvConfig = serde_json::from_str(r#"{"side_split":"condyle_midplane"}"#).unwrap();
        assert_eq!(p.side_split, SideSplit::CondyleMidplane);
        p.validate().unwrap();
        assert!(serde_json::to_string(&p)
            .unwrap()
            .contains("\"condyle_midplane\""));
        // Partial configs fill in defaults.
        let p: NvConfig = serde_json::from_str(r#"{"method":"between","max_gap_mm":5}"#).unwrap();
        assert_eq!(p.method, Method::Between);
        assert_eq!(p.max_gap_mm, 5.0);
        assert_eq!(p.head_depth_mm, 10.0);
        assert!(serde_json::from_str::<NvConfig>(r#"{"max_gapp":5}"#).is_err());
    }

    #[test]
    fn rejects_bad_values() {
        let mut c = NvConfig {
            head_depth_mm: -1.0,
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("head_depth_mm"), "{e}");
        c.head_depth_mm = 10.0;
        c.max_gap_mm = 40.0;
        assert!(c.validate().unwrap_err().to_string().contains("max_gap_mm"));
        c.max_gap_mm = 4.5;
        c.superior = Some([0.0; 3]);
        assert!(c.validate().unwrap_err().to_string().contains("superior"));
        c.superior = None;
        c.step_mm = Some(0.3);
        c.validate().unwrap();
        assert!(c.step_for(0.4).is_err());
        assert!((c.step_for(0.8).unwrap() - 0.3).abs() < 1e-12);
        // A step so fine that the rays would never end is refused too.
        c.step_mm = Some(1e-6);
        c.validate().unwrap();
        let e = c.step_for(0.4).unwrap_err().to_string();
        assert!(e.contains("step_mm") && e.contains("1/100"), "{e}");
        c.step_mm = None;
        c.normal_sigma_mm = 1.0;
        c.normal_sigma_mm = f64::NAN;
        assert!(c.validate().is_err());
    }

    #[test]
    fn closing_ball_size_is_bounded() {
        let mut c = NvConfig::default();
        // Default: 1.5 x the largest spacing, also on a strongly anisotropic grid.
        assert!((c.closing_for([0.4, 0.4, 0.8]).unwrap() - 1.2).abs() < 1e-12);
        assert!((c.closing_for([0.1, 0.1, 2.0]).unwrap() - 3.0).abs() < 1e-12);
        c.closing_radius_mm = Some(5.0);
        assert!(c.closing_for([0.4; 3]).is_ok()); // 8181 voxels
        c.closing_radius_mm = Some(20.0);
        let e = c.closing_for([0.4; 3]).unwrap_err().to_string();
        assert!(e.contains("closing_radius_mm"), "{e}");
    }
}
