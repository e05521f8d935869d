//! Clean-up of predicted MC and TB masks before the NV is derived from them.
//!
//! A network trained on joint-sized crops marks condyle-like and bone-like voxels elsewhere in
//! a whole CT, and every stray MC component would seed its own negative volume.
//! [`clean_predicted_masks`] runs, in this order:
//!
//! 1. [`drop_condyles_on_tb`]: MC components resting on temporal bone are removed
//!    ([`CleanupConfig::condyle_check`]; `None` skips it);
//! 2. [`keep_largest_components`] on MC and on TB: at most `max_components` 26-connected
//!    components of each, each at least `min_fraction` of the largest
//!    ([`CleanupConfig::keep_largest`]; `None` keeps all).
//!
//! The defaults are the `pipeline` example's: the condyle check with superior RAS+ `+z`, then
//! the 2 largest components of each bone at >= 10 % of the largest.
//!
//! ```
//! use ndarray::{s, Array3};
//! use negvol::{clean_predicted_masks, CleanupConfig};
//! use negvol_volume::{Geometry, Volume};
//!
//! let g = Geometry::from_spacing([30, 20, 28], [0.5; 3])?;
//! // TB: a slab; MC: a condyle-sized block under it, a plate lying on top of it and a stray
//! // voxel far away.
//! let mut tb = Array3::from_elem((30, 20, 28), false);
//! tb.slice_mut(s![.., .., 15..22]).fill(true);
//! let mut mc = Array3::from_elem((30, 20, 28), false);
//! mc.slice_mut(s![6..14, 6..14, 3..11]).fill(true);
//! mc.slice_mut(s![2..28, 2..18, 22..24]).fill(true);
//! mc[[28, 0, 0]] = true;
//! let mut mc = Volume::new(mc, g.clone())?;
//! let mut tb = Volume::new(tb, g)?;
//!
//! let report = clean_predicted_masks(&mut mc, &mut tb, &CleanupConfig::default())?;
//! let check = report.condyle_check.as_ref().unwrap();
//! assert_eq!((check.components, check.removed.len()), (3, 1)); // the plate
//! let kept = report.mc_components.unwrap();
//! assert_eq!((kept.components, kept.kept, kept.removed_voxels), (2, 1, 1)); // the stray voxel
//! assert_eq!(mc.data().iter().filter(|v| **v).count(), 8 * 8 * 8);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use negvol_metrics::components::{keep_largest_components, ComponentFilter, FilterOutcome};
use negvol_metrics::MetricsError;
use negvol_volume::Volume;
use serde::{Deserialize, Serialize};

use crate::config::{bad, NvConfig};
use crate::error::Result;
use crate::grid::check_same_grid;
use crate::plausible::{drop_condyles_on_tb, CondyleCheck, CondyleCheckOutcome};

/// What [`clean_predicted_masks`] does. Serde: a missing field takes its default, `null` turns
/// the step off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CleanupConfig {
    /// Drop MC components resting on temporal bone ([`drop_condyles_on_tb`]); `None` skips
    /// the check.
    pub condyle_check: Option<CondyleCheck>,
    /// Then keep the largest 26-connected components of MC and of TB
    /// ([`keep_largest_components`]); `None` keeps every component.
    pub keep_largest: Option<ComponentFilter>,
}

impl Default for CleanupConfig {
    /// The condyle check with its defaults (superior RAS+ `+z`, 10 mm reach, dropped above one
    /// half), then up to 2 components of each bone, each at least 10 % of the largest.
    fn default() -> Self {
        Self {
            condyle_check: Some(CondyleCheck::default()),
            keep_largest: Some(ComponentFilter::default()),
        }
    }
}

impl CleanupConfig {
    /// The defaults, with the condyle check looking along `nv`'s superior direction
    /// ([`NvConfig::superior`]; RAS+ `+z` when unset), so that the clean-up and the NV
    /// derivation agree on which way is up.
    pub fn for_nv(nv: &NvConfig) -> Self {
        let d = CondyleCheck::default();
        Self {
            condyle_check: Some(CondyleCheck {
                superior: nv.superior.unwrap_or(d.superior),
                ..d
            }),
            ..Self::default()
        }
    }

    /// Checks the component filter; returns [`crate::NvError::InvalidConfig`] naming the
    /// field (the condyle check is validated by [`drop_condyles_on_tb`] before it changes
    /// anything).
    pub fn validate(&self) -> Result<()> {
        let Some(f) = &self.keep_largest else {
            return Ok(());
        };
        match f.validate() {
            Ok(()) => Ok(()),
            Err(MetricsError::InvalidParameter {
                name,
                value,
                reason,
            }) => Err(bad(
                if name == "max_components" {
                    "keep_largest.max_components"
                } else {
                    "keep_largest.min_fraction"
                },
                value,
                reason,
            )),
            Err(e) => Err(e.into()),
        }
    }
}

/// What [`clean_predicted_masks`] removed, step by step (`None` for a step that did not run).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CleanupReport {
    /// The condyle check: MC components examined and those removed.
    pub condyle_check: Option<CondyleCheckOutcome>,
    /// Keeping the largest components of MC (after the condyle check).
    pub mc_components: Option<FilterOutcome>,
    /// Keeping the largest components of TB.
    pub tb_components: Option<FilterOutcome>,
}

/// Cleans predicted MC and TB masks in place (see the module docs for the steps and their
/// order) and reports what each step removed. `mc` and `tb` must share a grid.
///
/// # Errors
/// [`crate::NvError::Geometry`] when the grids differ; [`crate::NvError::InvalidConfig`] for
/// an invalid condyle check or component filter (nothing is changed then);
/// [`crate::NvError::Metrics`] beyond the labelling's 32-bit limits.
pub fn clean_predicted_masks(
    mc: &mut Volume<bool>,
    tb: &mut Volume<bool>,
    cfg: &CleanupConfig,
) -> Result<CleanupReport> {
    check_same_grid(mc, tb, "MC vs TB")?;
    cfg.validate()?;
    let mut report = CleanupReport::default();
    if let Some(check) = &cfg.condyle_check {
        report.condyle_check = Some(drop_condyles_on_tb(mc, tb, check)?);
    }
    if let Some(filter) = &cfg.keep_largest {
        report.mc_components = Some(keep_largest_components(mc.view_mut(), filter)?);
        report.tb_components = Some(keep_largest_components(tb.view_mut(), filter)?);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array3};
    use negvol_volume::Geometry;

    /// TB slab; MC: a condyle block under it, a plate on top of it, a small block and a stray
    /// voxel. TB also gets a stray voxel.
    fn scene() -> (Volume<bool>, Volume<bool>) {
        let g = Geometry::from_spacing([30, 20, 28], [0.5; 3]).unwrap();
        let mut tb = Array3::from_elem((30, 20, 28), false);
        tb.slice_mut(s![.., .., 15..22]).fill(true);
        tb[[0, 0, 0]] = true;
        let mut mc = Array3::from_elem((30, 20, 28), false);
        mc.slice_mut(s![6..14, 6..14, 3..11]).fill(true); // 512
        mc.slice_mut(s![2..28, 2..18, 22..24]).fill(true); // the plate, 832
        mc.slice_mut(s![20..24, 10..14, 3..7]).fill(true); // 64
        mc[[28, 0, 0]] = true;
        (
            Volume::new(mc, g.clone()).unwrap(),
            Volume::new(tb, g).unwrap(),
        )
    }

    fn count(v: &Volume<bool>) -> usize {
        v.data().iter().filter(|v| **v).count()
    }

    #[test]
    fn the_default_drops_the_plate_then_keeps_two_components_of_each() {
        let (mut mc, mut tb) = scene();
        let r = clean_predicted_masks(&mut mc, &mut tb, &CleanupConfig::default()).unwrap();
        let check = r.condyle_check.unwrap();
        assert_eq!(check.components, 4);
        assert_eq!(check.removed.len(), 1);
        assert_eq!(check.removed[0].0, 26 * 16 * 2);
        // After the plate: 512, 64 (12.5 % >= 10 %) and the stray voxel.
        assert_eq!(
            r.mc_components.unwrap(),
            FilterOutcome {
                components: 3,
                kept: 2,
                removed_voxels: 1
            }
        );
        assert_eq!(count(&mc), 512 + 64);
        assert_eq!(r.tb_components.unwrap().removed_voxels, 1);
        assert!(!tb.data()[[0, 0, 0]]);
    }

    #[test]
    fn steps_turn_off_and_order_matters() {
        // Without the condyle check the plate is the largest MC component and the condyle
        // block second: the small block goes instead of the plate.
        let (mut mc, mut tb) = scene();
        let cfg = CleanupConfig {
            condyle_check: None,
            ..Default::default()
        };
        let r = clean_predicted_masks(&mut mc, &mut tb, &cfg).unwrap();
        assert!(r.condyle_check.is_none());
        assert_eq!(count(&mc), 832 + 512);
        // Nothing at all.
        let (mut mc, mut tb) = scene();
        let before = (count(&mc), count(&tb));
        let none = CleanupConfig {
            condyle_check: None,
            keep_largest: None,
        };
        assert_eq!(
            clean_predicted_masks(&mut mc, &mut tb, &none).unwrap(),
            CleanupReport::default()
        );
        assert_eq!((count(&mc), count(&tb)), before);
    }

    #[test]
    fn bad_settings_change_nothing_and_serde_defaults_fill_gaps() {
        let (mut mc, mut tb) = scene();
        let before = mc.data().clone();
        let bad = CleanupConfig {
            keep_largest: Some(ComponentFilter {
                max_components: 0,
                min_fraction: 0.1,
            }),
            ..Default::default()
        };
        match clean_predicted_masks(&mut mc, &mut tb, &bad) {
            Err(crate::NvError::InvalidConfig { field, .. }) => {
                assert_eq!(field, "keep_largest.max_components")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(mc.data(), &before, "the condyle check did not run");
        let other = Volume::new(
            Array3::from_elem((3, 3, 3), false),
            Geometry::from_spacing([3, 3, 3], [0.5; 3]).unwrap(),
        )
        .unwrap();
        let mut other = other;
        assert!(matches!(
            clean_predicted_masks(&mut mc, &mut other, &CleanupConfig::default()),
            Err(crate::NvError::Geometry { .. })
        ));
        // JSON: missing fields are the defaults, null turns a step off.
        let c: CleanupConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, CleanupConfig::default());
        let c: CleanupConfig =
            serde_json::from_str(r#"{"condyle_check": null, "keep_largest": {"max_components": 1, "min_fraction": 0.5}}"#)
                .unwrap();
        assert_eq!(c.condyle_check, None);
        assert_eq!(c.keep_largest.unwrap().max_components, 1);
        let c: CleanupConfig =
            serde_json::from_str(r#"{"condyle_check": {"reach_mm": 5.0}}"#).unwrap();
        assert_eq!(c.condyle_check.unwrap().reach_mm, 5.0);
        assert_eq!(c.condyle_check.unwrap().superior, [0.0, 0.0, 1.0]);
    }

    #[test]
    fn for_nv_takes_the_superior_direction() {
        let nv = NvConfig {
            superior: Some([0.0, 1.0, 0.0]),
            ..Default::default()
        };
        let c = CleanupConfig::for_nv(&nv);
        assert_eq!(c.condyle_check.unwrap().superior, [0.0, 1.0, 0.0]);
        assert_eq!(c.keep_largest, Some(ComponentFilter::default()));
        assert_eq!(
            CleanupConfig::for_nv(&NvConfig::default()),
            CleanupConfig::default()
        );
    }
}
