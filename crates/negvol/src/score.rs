//! The NV row of the seed paper's Table 1 from predicted masks ([`nv_table_row`],
//! [`NvTableRow`]).

use negvol_metrics::table1::{
    hd_percentile_name, ASSD_MM, DICE_PERCENT, HD_MM, HD_PAPER_VOXELS, VOLUME_ERROR_PERCENT,
};
use negvol_metrics::{table1_row, EvalOptions, MetricValue, Table1Row};
use negvol_volume::Volume;

use crate::cleanup::{clean_predicted_masks, CleanupConfig, CleanupReport};
use crate::config::NvConfig;
use crate::error::{NvError, Result};
use crate::pipeline::derive_nv;

/// How far (mm, per affine entry) the true NV's grid may be from the predicted masks' grid:
/// the tolerance with which `negvol-train` reads a case's masks onto its image grid.
pub const TRUTH_GRID_TOLERANCE_MM: f64 = 1e-3;

/// The NV row of one case, made by [`nv_table_row`]: the NV derived by negvol's MC + TB -> NV
/// method from predicted masks, scored against the true NV.
///
/// The columns, in this order ([`NvTableRow::named_values`]; definitions in
/// [`negvol_metrics::table1`]): `DICE %`, `HD (paper, voxels)`, `HD mm`, `HD95 mm` (`HD{p} mm`
/// for another [`EvalOptions::percentile`]), `ASSD mm` and `volume error %`
/// (`100 (|NV| - |NV_true|) / |NV_true|`, volumes in mm3 of the two masks). There is no CE
/// column (a derived NV has no probability) and no NSD column.
///
/// When no NV can be derived ([`derive_nv`] fails: an empty MC or TB after the clean-up,
/// overlapping masks, an invalid [`NvConfig`]), every value is undefined without a note and
/// [`NvTableRow::not_derived`] gives the reason. A derived NV that is empty (no side reached
/// the temporal bone) is scored as an empty prediction: Dice 0, distances undefined with
/// [`Note::EmptyPrediction`](negvol_metrics::Note::EmptyPrediction), volume error -100 %.
///
/// ```
/// use ndarray::Array3;
/// use negvol::{nv_table_row, CleanupConfig, NvConfig, NvError};
/// use negvol_metrics::EvalOptions;
/// use negvol_volume::{Geometry, Volume};
///
/// // An empty MC cannot give an NV: every value is undefined, and the row says why.
/// let g = Geometry::from_spacing([8, 8, 8], [0.5; 3])?;
/// let empty = Volume::new(Array3::from_elem([8, 8, 8], false), g.clone())?;
/// let mut tb = Array3::from_elem([8, 8, 8], false);
/// tb[[4, 4, 6]] = true;
/// let tb = Volume::new(tb, g)?;
/// let row = nv_table_row(
///     empty.clone(),
///     tb.clone(),
///     &tb,
///     &NvConfig::default(),
///     &CleanupConfig::default(),
///     &EvalOptions::default(),
/// )?;
/// assert!(matches!(row.not_derived(), Some(NvError::EmptyMask { which: "MC", .. })));
/// assert!(row.named_values().iter().all(|(_, v)| v.value.is_none() && v.note.is_none()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct NvTableRow {
    /// What the clean-up removed from the predicted masks before the NV was derived.
    pub cleanup: CleanupReport,
    /// The derived NV scored against the true NV (its `ce` is undefined: no probability), or
    /// the error of [`derive_nv`] when no NV could be derived.
    pub scores: std::result::Result<Table1Row, NvError>,
    /// The percentile of the `HD{p} mm` column (from the [`EvalOptions`] used).
    pub percentile: f64,
}

impl NvTableRow {
    /// Why no NV could be derived, if it could not (the values are then undefined).
    ///
    /// ```
    /// # use negvol::{nv_table_row, CleanupConfig, NvConfig, NvError};
    /// # use negvol_metrics::EvalOptions;
    /// # use negvol_volume::{Geometry, Volume};
    /// # let g = Geometry::from_spacing([8, 8, 8], [0.5; 3])?;
    /// # let empty = Volume::new(ndarray::Array3::from_elem([8, 8, 8], false), g)?;
    /// let row = nv_table_row(empty.clone(), empty.clone(), &empty, &NvConfig::default(),
    ///                        &CleanupConfig::default(), &EvalOptions::default())?;
    /// assert_eq!(
    ///     row.not_derived().unwrap().to_string(),
    ///     "the MC mask is empty (no foreground voxel in [8, 8, 8])"
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn not_derived(&self) -> Option<&NvError> {
        self.scores.as_ref().err()
    }

    /// The row's columns with their names (defined in [`NvTableRow`]): `DICE %`,
    /// `HD (paper, voxels)`, `HD mm`, `HD{p} mm`, `ASSD mm`, `volume error %`; all undefined
    /// without a note when no NV could be derived.
    ///
    /// ```
    /// # use negvol::{nv_table_row, CleanupConfig, NvConfig};
    /// # use negvol_metrics::EvalOptions;
    /// # use negvol_volume::{Geometry, Volume};
    /// # let g = Geometry::from_spacing([8, 8, 8], [0.5; 3])?;
    /// # let empty = Volume::new(ndarray::Array3::from_elem([8, 8, 8], false), g)?;
    /// let row = nv_table_row(empty.clone(), empty.clone(), &empty, &NvConfig::default(),
    ///                        &CleanupConfig::default(), &EvalOptions::default())?;
    /// let names: Vec<String> = row.named_values().into_iter().map(|(n, _)| n).collect();
    /// assert_eq!(
    ///     names,
    ///     ["DICE %", "HD (paper, voxels)", "HD mm", "HD95 mm", "ASSD mm", "volume error %"]
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn named_values(&self) -> Vec<(String, MetricValue)> {
        let names = [
            DICE_PERCENT.to_string(),
            HD_PAPER_VOXELS.to_string(),
            HD_MM.to_string(),
            hd_percentile_name(self.percentile),
            ASSD_MM.to_string(),
            VOLUME_ERROR_PERCENT.to_string(),
        ];
        let values = match &self.scores {
            Ok(r) => [
                r.dice_percent(),
                r.hd_paper_voxels,
                r.hd_mm,
                r.hd_percentile_mm,
                r.assd_mm,
                r.volume_error_percent(),
            ],
            // Undefined without a note: the reason is the error in `scores`.
            Err(_) => {
                [MetricValue {
                    value: None,
                    note: None,
                }; 6]
            }
        };
        names.into_iter().zip(values).collect()
    }
}

/// The NV row of one case: cleans the predicted `mc` and `tb` with `cleanup`
/// ([`clean_predicted_masks`], as the `pipeline` example does), derives the NV with `nv`
/// ([`derive_nv`]) and scores it against `truth` (the true NV mask) with `options`
/// ([`negvol_metrics::table1_row`], on `truth`'s spacing). Returns, rather than fails with,
/// the error of [`derive_nv`] ([`NvTableRow::not_derived`]); nothing is printed.
///
/// # Errors
/// [`NvError::Geometry`] when `mc` and `tb` do not share a grid, or `truth`'s grid differs
/// from theirs by more than [`TRUTH_GRID_TOLERANCE_MM`]; [`NvError::InvalidConfig`] for an
/// invalid `cleanup`; [`NvError::Metrics`] for invalid `options` (percentile, tolerance).
///
/// ```
/// use negvol::{nv_table_row, CleanupConfig, NvConfig};
/// use negvol_metrics::EvalOptions;
/// use negvol_phantom::{generate, PhantomConfig};
///
/// // A phantom's true MC and TB must give back (nearly) its true NV.
/// let case = generate(&PhantomConfig { spacing: [0.8; 3], ..Default::default() }, 7)?;
/// let nv = NvConfig::default();
/// let row = nv_table_row(
///     case.mc.clone(),
///     case.tb.clone(),
///     &case.nv,
///     &nv,
///     &CleanupConfig::for_nv(&nv),
///     &EvalOptions::default(),
/// )?;
/// assert!(row.not_derived().is_none());
/// let values = row.named_values();
/// assert_eq!(values[0].0, "DICE %");
/// assert!(values[0].1.get().unwrap() > 80.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Grids must agree:
///
/// ```
/// use ndarray::Array3;
/// use negvol::{nv_table_row, CleanupConfig, NvConfig, NvError};
/// use negvol_metrics::EvalOptions;
/// use negvol_volume::{Geometry, Volume};
///
/// let mask = |g: &Geometry| Volume::new(Array3::from_elem(g.shape(), false), g.clone());
/// let g = Geometry::from_spacing([8, 8, 8], [0.5; 3])?;
/// let other = Geometry::from_spacing([8, 8, 8], [0.6; 3])?;
/// let r = nv_table_row(mask(&g)?, mask(&g)?, &mask(&other)?, &NvConfig::default(),
///                      &CleanupConfig::default(), &EvalOptions::default());
/// assert!(matches!(r, Err(NvError::Geometry { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn nv_table_row(
    mut mc: Volume<bool>,
    mut tb: Volume<bool>,
    truth: &Volume<bool>,
    nv: &NvConfig,
    cleanup: &CleanupConfig,
    options: &EvalOptions,
) -> Result<NvTableRow> {
    mc.geometry()
        .check_same(truth.geometry(), TRUTH_GRID_TOLERANCE_MM)
        .map_err(|source| NvError::Geometry {
            what: "predicted MC vs true NV".into(),
            source,
        })?;
    let cleanup = clean_predicted_masks(&mut mc, &mut tb, cleanup)?;
    let scores = match derive_nv(&mc, &tb, nv) {
        Ok(r) => Ok(table1_row(
            truth.view(),
            r.nv.view(),
            None,
            truth.geometry().spacing(),
            options,
        )?),
        Err(e) => Err(e),
    };
    Ok(NvTableRow {
        cleanup,
        scores,
        percentile: options.percentile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use negvol_metrics::{evaluate_pair, Note};
    use negvol_phantom::{generate, PhantomConfig};

    fn phantom() -> negvol_phantom::PhantomCase {
        generate(
            &PhantomConfig {
                spacing: [0.8; 3],
                ..Default::default()
            },
            7,
        )
        .unwrap()
    }

    #[test]
    fn true_masks_give_back_the_true_nv() {
        let case = phantom();
        let nv = NvConfig::default();
        let opts = EvalOptions::default();
        let row = nv_table_row(
            case.mc.clone(),
            case.tb.clone(),
            &case.nv,
            &nv,
            &CleanupConfig::for_nv(&nv),
            &opts,
        )
        .unwrap();
        let v = row.named_values();
        let get = |name: &str| v.iter().find(|(n, _)| n == name).unwrap().1;
        let dice = get("DICE %").get().unwrap();
        let vol = get("volume error %").get().unwrap();
        eprintln!("NV from the true masks: {v:?}");
        assert!(dice > 85.0, "{v:?}");
        assert!(vol.abs() < 10.0, "{v:?}");
        assert!(get("HD95 mm").get().unwrap() < 2.0, "{v:?}");
        // The clean-up leaves a phantom's true masks as they are.
        let c = &row.cleanup;
        assert!(c.condyle_check.as_ref().unwrap().removed.is_empty());
        assert_eq!(c.mc_components.unwrap().removed_voxels, 0);
        assert_eq!(c.tb_components.unwrap().removed_voxels, 0);
        // The same numbers by hand: derive_nv, then evaluate_pair.
        let res = derive_nv(&case.mc, &case.tb, &nv).unwrap();
        let m = evaluate_pair(
            case.nv.view(),
            res.nv.view(),
            case.nv.geometry().spacing(),
            &opts,
        )
        .unwrap();
        assert_eq!(dice, 100.0 * m.overlap.dice.get().unwrap());
        assert_eq!(get("HD mm"), m.voxel_surface.hd);
        assert_eq!(get("ASSD mm"), m.voxel_surface.assd);
        assert_eq!(get("HD (paper, voxels)"), m.seed_paper_hd_voxels.unwrap());
        assert_eq!(
            vol,
            100.0 * (m.prediction_volume_mm3 - m.reference_volume_mm3) / m.reference_volume_mm3
        );
    }

    #[test]
    fn an_mc_that_gives_no_nv_is_undefined_with_the_reason() {
        let case = phantom();
        let nv = NvConfig::default();
        // A prediction without any condyle voxel: no NV can be derived.
        let empty = case.mc.map(|_| false);
        let row = nv_table_row(
            empty,
            case.tb.clone(),
            &case.nv,
            &nv,
            &CleanupConfig::for_nv(&nv),
            &EvalOptions::default(),
        )
        .unwrap();
        assert!(
            matches!(
                row.not_derived(),
                Some(NvError::EmptyMask { which: "MC", .. })
            ),
            "{:?}",
            row.scores
        );
        assert_eq!(row.cleanup.mc_components.unwrap().components, 0);
        let v = row.named_values();
        assert_eq!(v.len(), 6);
        assert!(v.iter().all(|(_, x)| x.value.is_none() && x.note.is_none()));
        // An invalid NV configuration is a reason too (as before the row moved here).
        let bad = NvConfig {
            max_gap_mm: 100.0,
            ..Default::default()
        };
        let row = nv_table_row(
            case.mc.clone(),
            case.tb.clone(),
            &case.nv,
            &bad,
            &CleanupConfig::for_nv(&bad),
            &EvalOptions::default(),
        )
        .unwrap();
        assert!(matches!(
            row.not_derived(),
            Some(NvError::InvalidConfig {
                field: "max_gap_mm",
                ..
            })
        ));
        // So are MC and TB predicted on the same voxels (the condyle check keeps this "MC",
        // and derive_nv refuses the overlap).
        let row = nv_table_row(
            case.tb.clone(),
            case.tb.clone(),
            &case.nv,
            &nv,
            &CleanupConfig::for_nv(&nv),
            &EvalOptions::default(),
        )
        .unwrap();
        assert!(matches!(
            row.not_derived(),
            Some(NvError::MasksOverlap { .. })
        ));
        assert!(row.named_values().iter().all(|(_, x)| x.value.is_none()));
    }

    #[test]
    fn an_mc_out_of_reach_gives_an_empty_nv_scored_as_empty() {
        let case = phantom();
        // The condyle moved 8 mm (10 voxels) down, out of the 4.5 mm contact gap (the joint
        // space is at most 6 mm wide): derive_nv succeeds with no NV on either side.
        let mut mc = case.mc.clone();
        let shape = mc.geometry().shape();
        let src = case.mc.data().clone();
        let mut dst = mc.view_mut();
        dst.fill(false);
        for ((i, j, k), &v) in src.indexed_iter() {
            if v && k >= 10 {
                dst[[i, j, k - 10]] = true;
            }
        }
        assert!(mc.data().iter().any(|v| *v), "{shape:?}");
        let nv = NvConfig::default();
        let cleanup = CleanupConfig {
            condyle_check: None,
            keep_largest: None,
        };
        let row = nv_table_row(
            mc,
            case.tb.clone(),
            &case.nv,
            &nv,
            &cleanup,
            &EvalOptions::default(),
        )
        .unwrap();
        let r = row.scores.as_ref().unwrap();
        assert_eq!(r.prediction_volume_mm3, 0.0);
        let v = row.named_values();
        assert_eq!(v[0].1, MetricValue::defined(0.0));
        for (_, x) in &v[1..5] {
            assert_eq!(*x, MetricValue::undefined(Note::EmptyPrediction));
        }
        assert_eq!(v[5].1, MetricValue::defined(-100.0));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let case = phantom();
        let nv = NvConfig::default();
        // TB on another grid.
        let g = negvol_volume::Geometry::from_spacing([4, 4, 4], [0.8; 3]).unwrap();
        let small = Volume::new(ndarray::Array3::from_elem([4, 4, 4], false), g).unwrap();
        assert!(matches!(
            nv_table_row(
                case.mc.clone(),
                small.clone(),
                &case.nv,
                &nv,
                &CleanupConfig::default(),
                &EvalOptions::default()
            ),
            Err(NvError::Geometry { .. })
        ));
        // Truth on another grid.
        assert!(matches!(
            nv_table_row(
                case.mc.clone(),
                case.tb.clone(),
                &small,
                &nv,
                &CleanupConfig::default(),
                &EvalOptions::default()
            ),
            Err(NvError::Geometry { .. })
        ));
        // An invalid percentile.
        let opts = EvalOptions {
            percentile: 150.0,
            ..Default::default()
        };
        assert!(matches!(
            nv_table_row(
                case.mc.clone(),
                case.tb.clone(),
                &case.nv,
                &nv,
                &CleanupConfig::default(),
                &opts
            ),
            Err(NvError::Metrics(_))
        ));
    }
}
