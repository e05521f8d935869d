//! Serialisable results: [`NvReport`], [`SideReport`], [`Issue`].

use serde::{Deserialize, Serialize};

use crate::NvConfig;

/// Which joint a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The patient's left joint (world `-x` side of the mid-sagittal plane).
    Left,
    /// The patient's right joint (world `+x` side).
    Right,
    /// The whole volume ([`crate::SideSplit::None`]).
    Whole,
}

impl Side {
    /// `"left"`, `"right"` or `"whole"` (used in output file names).
    pub fn name(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
            Side::Whole => "whole",
        }
    }
}

/// Machine-readable kind of an [`Issue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IssueCode {
    /// No condyle voxel on this side.
    NoCondyle,
    /// No temporal-bone voxel within `max_distance_mm` of the condyle head on this side.
    NoTemporalBone,
    /// No ray met TB within `max_gap_mm` (the joint space is wider, or the bones do not face).
    NoContact,
    /// TB lies below the head's top: the head points away from TB (wrong superior direction or
    /// affine, or swapped masks).
    HeadPointsAway,
    /// Rays met TB but the swept voxels formed no component touching both bones.
    NoComponentTouchingBoth,
    /// Voxels shared by MC and TB were assigned to one bone ([`crate::OverlapPolicy`]).
    OverlapResolved,
    /// Components of the NV candidate that did not touch both bones were removed, and they
    /// held more than [`REMOVED_VOLUME_ISSUE_FRACTION`] of the side's NV volume (smaller
    /// removals are only counted in [`SideReport::removed_components`] and
    /// [`SideReport::removed_volume_mm3`]).
    ComponentsRemoved,
    /// A plane split ([`crate::SideSplit::WorldPlane`] or [`crate::SideSplit::VolumeCentre`])
    /// put the centroids of MC's two largest 26-connected components (each at least
    /// [`crate::CONDYLE_COMPONENT_FRACTION`] of the largest) on this side: most likely both
    /// condyles, because the affine does not put the mid-sagittal plane where the split
    /// assumes (e.g. the world origin at a corner of the field of view). This side then
    /// measures two joints as one and the other side reports [`IssueCode::NoCondyle`]. The
    /// message gives both centroids and the plane; use [`crate::SideSplit::CondyleMidplane`]
    /// or set the plane between the condyles.
    BothCondylesOneSide,
    /// [`crate::SideSplit::CondyleMidplane`] found fewer than two condyles (MC's second
    /// largest component is missing or below [`crate::CONDYLE_COMPONENT_FRACTION`] of the
    /// largest, or the two centroids coincide), so the volume was measured as one joint (side
    /// `whole`).
    NoSecondCondyle,
    /// [`crate::SideSplit::CondyleMidplane`]: the line between the two condyles is more than 60
    /// degrees from world `x`, so naming the sides by world `+x` (the patient's right) is
    /// unreliable; check the affine.
    SplitAxisOblique,
}

/// The plane that split the volume into left and right ([`NvReport::split_plane`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitPlane {
    /// A point of the plane (world mm).
    pub point: [f64; 3],
    /// Unit normal, pointing to the patient's right: voxels with
    /// `(x - point) . normal >= 0` are the right side.
    pub normal: [f64; 3],
}

/// A report entry that explains a missing or unusual result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    /// What kind of issue.
    pub code: IssueCode,
    /// Human-readable explanation with the numbers involved.
    pub message: String,
}

impl Issue {
    pub(crate) fn new(code: IssueCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Joint-space width statistics along the rays that met TB within `max_gap_mm`.
///
/// The width of one ray is the distance (mm) between the points where it leaves the condyle
/// and enters the temporal bone, each located to sub-step accuracy on the 0.5 level of the
/// trilinearly interpolated mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WidthStats {
    /// Mean width over the rays (mm).
    pub mean_mm: f64,
    /// Smallest width (mm): the narrowest point of the joint space.
    pub min_mm: f64,
    /// Largest width (mm), at most `max_gap_mm`.
    pub max_mm: f64,
    /// Number of rays measured.
    pub rays: usize,
}

/// What happened to the rays cast from one head surface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RayCounts {
    /// Rays cast (one per head-surface voxel with a defined normal).
    pub cast: usize,
    /// Rays that met TB within `max_gap_mm`: they sweep NV.
    pub hit: usize,
    /// Rays that did not meet TB within `max_gap_mm` and were not followed further (they
    /// sweep nothing). Only on a side where no ray met TB within reach are all rays followed
    /// to `max_distance_mm` and split into `too_long`, `missed` and `left_volume` instead.
    pub beyond_gap: usize,
    /// Rays that met TB farther than `max_gap_mm`: they sweep nothing.
    pub too_long: usize,
    /// Rays that met nothing within `max_distance_mm`.
    pub missed: usize,
    /// Rays that left the volume before meeting anything.
    pub left_volume: usize,
    /// Rays that re-entered the condyle before meeting TB.
    pub blocked: usize,
    /// Head-surface voxels whose smoothed-SDF gradient vanished (no normal, no ray).
    pub no_normal: usize,
}

/// Everything measured on one joint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideReport {
    /// Which joint.
    pub side: Side,
    /// Whether an NV was found on this side.
    pub has_nv: bool,
    /// NV voxels on this side.
    pub nv_voxels: usize,
    /// NV volume (mm^3) = voxels x voxel volume.
    pub nv_volume_mm3: f64,
    /// Centroid of the NV (world mm), if any.
    pub nv_centroid_world: Option<[f64; 3]>,
    /// Joint-space width along the rays, if any ray met TB within reach.
    pub width: Option<WidthStats>,
    /// Ray bookkeeping.
    pub rays: RayCounts,
    /// Condyle voxels on this side.
    pub mc_voxels: usize,
    /// Voxels of the condyle head.
    pub head_voxels: usize,
    /// The most superior condyle point (world mm), if any.
    pub head_top_world: Option<[f64; 3]>,
    /// Working box (voxel index range `[lo, hi)`) of this side, if there was a head.
    pub crop_lo: Option<[usize; 3]>,
    /// Exclusive upper corner of the working box.
    pub crop_hi: Option<[usize; 3]>,
    /// Connected components (26-connectivity) of the cleaned-up NV candidate that touched
    /// MC or TB but not both, or neither, and were removed
    /// ([`crate::NvConfig::keep_touching_components`]).
    pub removed_components: usize,
    /// Their total volume (mm^3); not part of `nv_volume_mm3`.
    pub removed_volume_mm3: f64,
    /// Why this side has no NV, or what was unusual.
    pub issues: Vec<Issue>,
}

/// [`IssueCode::ComponentsRemoved`] is raised when the removed components hold more than this
/// fraction of the side's NV volume (kept + removed).
///
/// With 26-connectivity the removed pieces are the few voxels that the sweep leaves detached
/// from the joint space (on the 20 phantom cases at most a few tenths of a percent of the NV;
/// see the crate README), far below the method's volume error (a few percent). A removal above
/// 1 % changes the reported volume by more than the voxel discretisation of its boundary does,
/// and means the candidate held a real separate region (e.g. a sweep between TB and the neck or
/// a second structure on the same side), which the user should look at.
pub const REMOVED_VOLUME_ISSUE_FRACTION: f64 = 0.01;

impl SideReport {
    pub(crate) fn empty(side: Side) -> Self {
        Self {
            side,
            has_nv: false,
            nv_voxels: 0,
            nv_volume_mm3: 0.0,
            nv_centroid_world: None,
            width: None,
            rays: RayCounts::default(),
            mc_voxels: 0,
            head_voxels: 0,
            head_top_world: None,
            crop_lo: None,
            crop_hi: None,
            removed_components: 0,
            removed_volume_mm3: 0.0,
            issues: Vec::new(),
        }
    }
}

/// Why [`Asymmetry::index`] is undefined (machine-readable; [`Asymmetry::note`] says it in
/// words, with the sides' reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AsymmetryUndefined {
    /// The volume was not split into left and right ([`crate::SideSplit::None`], or
    /// [`crate::SideSplit::CondyleMidplane`] with a single condyle).
    NotSplit,
    /// The left side has no NV (no condyle there, e.g. a single-joint volume, or no contact),
    /// so there is nothing to compare the right side with.
    NoLeftNv,
    /// The right side has no NV.
    NoRightNv,
    /// Neither side has an NV.
    NoNvEitherSide,
}

/// Left/right asymmetry of the NV volume.
///
/// Defined only when both joints have an NV: a side without one (no condyle on that side,
/// or no contact within reach) has not been measured, and an index of 1 would present that
/// as a maximally asymmetric pair of joints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asymmetry {
    /// `|L - R| / (L + R)` of the NV volumes; `None` when it is undefined (see `reason`).
    pub index: Option<f64>,
    /// Why the index is undefined, if it is.
    pub reason: Option<AsymmetryUndefined>,
    /// The same in words, with the sides' own reasons.
    pub note: Option<String>,
}

impl Asymmetry {
    /// The asymmetry of the two sides' reports (`None` for either when the volume was not
    /// split, `not_split` saying why).
    pub(crate) fn of(
        left: Option<&SideReport>,
        right: Option<&SideReport>,
        not_split: &str,
    ) -> Self {
        let undefined = |reason, note: String| Self {
            index: None,
            reason: Some(reason),
            note: Some(note),
        };
        let why = |s: &SideReport| {
            s.issues
                .iter()
                .map(|i| i.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        };
        match (left, right) {
            (Some(l), Some(r)) => match (l.has_nv, r.has_nv) {
                (true, true) => match asymmetry_index(l.nv_volume_mm3, r.nv_volume_mm3) {
                    Some(i) => Self {
                        index: Some(i),
                        reason: None,
                        note: None,
                    },
                    // Both sides have NV voxels, so both volumes are positive and finite.
                    None => undefined(
                        AsymmetryUndefined::NoNvEitherSide,
                        "the NV volumes are not positive".into(),
                    ),
                },
                (false, true) => undefined(
                    AsymmetryUndefined::NoLeftNv,
                    format!("only the right side has an NV (left: {})", why(l)),
                ),
                (true, false) => undefined(
                    AsymmetryUndefined::NoRightNv,
                    format!("only the left side has an NV (right: {})", why(r)),
                ),
                (false, false) => undefined(
                    AsymmetryUndefined::NoNvEitherSide,
                    "neither side has an NV".into(),
                ),
            },
            _ => undefined(
                AsymmetryUndefined::NotSplit,
                format!("the volume was not split into left and right ({not_split})"),
            ),
        }
    }
}

/// The JSON report of one pipeline run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NvReport {
    /// The configuration used (so the run can be reproduced from the report).
    pub config: NvConfig,
    /// Grid shape.
    pub shape: [usize; 3],
    /// Voxel spacing (mm).
    pub spacing: [f64; 3],
    /// Orientation code of the grid (e.g. `"RAS"`).
    pub orientation: String,
    /// Voxels that were in both MC and TB (resolved per `config.overlap`).
    pub overlap_voxels: usize,
    /// One report per joint.
    pub sides: Vec<SideReport>,
    /// Total NV volume over the sides (mm^3).
    pub total_volume_mm3: f64,
    /// Left/right asymmetry.
    pub asymmetry: Asymmetry,
    /// The plane that split the volume (world mm), `None` when it was not split
    /// ([`crate::SideSplit::None`], or [`crate::SideSplit::CondyleMidplane`] with one
    /// condyle).
    #[serde(default)]
    pub split_plane: Option<SplitPlane>,
}

impl NvReport {
    /// The report of one side, if present.
    pub fn side(&self, side: Side) -> Option<&SideReport> {
        self.sides.iter().find(|s| s.side == side)
    }
}

/// Asymmetry index `|L - R| / (L + R)` of two NV volumes; `None` unless both are positive and
/// finite.
///
/// A volume of 0 means that no NV was found on that side, not that a joint space was measured
/// to be empty, so `(v, 0)` is undefined rather than 1.
///
/// ```
/// assert_eq!(negvol::asymmetry_index(30.0, 10.0), Some(0.5));
/// assert_eq!(negvol::asymmetry_index(30.0, 0.0), None);
/// assert_eq!(negvol::asymmetry_index(0.0, 0.0), None);
/// assert_eq!(negvol::asymmetry_index(f64::NAN, 1.0), None);
/// ```
pub fn asymmetry_index(left: f64, right: f64) -> Option<f64> {
    let ok = |v: f64| v.is_finite() && v > 0.0;
    (ok(left) && ok(right)).then(|| (left - right).abs() / (left + right))
}
