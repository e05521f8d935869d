//! Anatomical plausibility of predicted condyle components.
//!
//! A network trained on joint-sized crops can mark, elsewhere in a whole CT, bone that looks
//! like a condyle head: a bright cortical surface facing soft tissue. The top surface of the
//! temporal bone is such a place. A mandibular condyle sits *under* the glenoid fossa: below it
//! there is the condylar neck and the mandible, never temporal bone. [`drop_condyles_on_tb`]
//! removes the MC components that do have temporal bone directly underneath most of their
//! footprint.
//!
//! "Underneath" is along the world's inferior direction (`-superior`, RAS+ `-z` by default),
//! taken on the voxel axis closest to it; the test is skipped (nothing removed, reported) when
//! no voxel axis is within 30 degrees of it.

use std::collections::HashMap;

use negvol_metrics::components::label_components;
use negvol_metrics::Connectivity;
use negvol_volume::Volume;
use serde::{Deserialize, Serialize};

use crate::config::{bad, positive, unit};
use crate::error::Result;
use crate::grid::{check_same_grid, dot, norm, Lin};

/// Settings of [`drop_condyles_on_tb`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CondyleCheck {
    /// World superior direction (need not be unit length; default RAS+ `[0, 0, 1]`).
    pub superior: [f64; 3],
    /// How far below a component's lowest voxel in a column temporal bone is looked for (mm).
    pub reach_mm: f64,
    /// A component is dropped when more than this fraction of its columns has temporal bone
    /// underneath within `reach_mm`.
    pub max_fraction_on_tb: f64,
}

impl Default for CondyleCheck {
    /// Superior `+z`, 10 mm reach, dropped above one half.
    fn default() -> Self {
        Self {
            superior: [0.0, 0.0, 1.0],
            reach_mm: 10.0,
            max_fraction_on_tb: 0.5,
        }
    }
}

/// What [`drop_condyles_on_tb`] did.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CondyleCheckOutcome {
    /// 26-connected MC components examined.
    pub components: usize,
    /// Components removed, with their voxel count and fraction of columns on TB.
    pub removed: Vec<(usize, f64)>,
    /// The test did not run because no voxel axis is within 30 degrees of superior.
    pub skipped_oblique: bool,
}

/// Remove from `mc` the 26-connected components that rest on temporal bone (see the module
/// docs). `mc` and `tb` must share a grid.
///
/// # Errors
/// [`crate::NvError::Geometry`] when the grids differ; [`crate::NvError::InvalidConfig`] for a zero or
/// non-finite superior direction, a reach that is not positive and finite, or a fraction
/// outside `[0, 1]`.
pub fn drop_condyles_on_tb(
    mc: &mut Volume<bool>,
    tb: &Volume<bool>,
    check: &CondyleCheck,
) -> Result<CondyleCheckOutcome> {
    check_same_grid(mc, tb, "MC vs TB")?;
    let g = mc.geometry().clone();
    let sup = unit("superior", check.superior)?;
    positive("reach_mm", check.reach_mm)?;
    if !(0.0..=1.0).contains(&check.max_fraction_on_tb) {
        return Err(bad(
            "max_fraction_on_tb",
            check.max_fraction_on_tb,
            "must be in [0, 1]",
        ));
    }
    // The voxel axis closest to superior, and which way along it is down.
    let lin = Lin::of(&g);
    let (axis, cos) = (0..3)
        .map(|a| {
            let mut e = [0.0; 3];
            e[a] = 1.0;
            let w = lin.apply(e);
            (a, dot(w, sup) / norm(w))
        })
        .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
        .expect("three axes");
    let labelling = label_components(mc.view(), Connectivity::TwentySix)?;
    let count = labelling.count();
    let mut out = CondyleCheckOutcome {
        components: count,
        ..Default::default()
    };
    let Some(bb) = labelling.bounding_box else {
        return Ok(out);
    };
    if cos.abs() < 30f64.to_radians().cos() {
        out.skipped_oblique = true;
        return Ok(out);
    }
    // Index step that goes down (inferior) along `axis`.
    let down: i64 = if cos > 0.0 { -1 } else { 1 };
    let sh = g.shape();
    let reach = (check.reach_mm / g.spacing()[axis]).ceil() as i64;
    // Per (component, column): the lowest voxel's index along `axis`.
    let mut lowest: HashMap<(u32, [usize; 2]), i64> = HashMap::new();
    let others: [usize; 2] = match axis {
        0 => [1, 2],
        1 => [0, 2],
        _ => [0, 1],
    };
    // Outside the foreground's box every label is 0.
    let labels = bb.crop(labelling.labels.view());
    for ((i, j, k), l) in labels.indexed_iter() {
        if *l == 0 {
            continue;
        }
        let p = [bb.min[0] + i, bb.min[1] + j, bb.min[2] + k];
        let col = [p[others[0]], p[others[1]]];
        let h = p[axis] as i64;
        lowest
            .entry((*l, col))
            .and_modify(|x| {
                if h * down > *x * down {
                    *x = h;
                }
            })
            .or_insert(h);
    }
    let mut cols = vec![0usize; count + 1];
    let mut on_tb = vec![0usize; count + 1];
    let tbd = tb.data();
    for ((l, col), h) in &lowest {
        cols[*l as usize] += 1;
        let hit = (1..=reach).any(|s| {
            let q = h + down * s;
            if q < 0 || q >= sh[axis] as i64 {
                return false;
            }
            let mut p = [0usize; 3];
            p[axis] = q as usize;
            p[others[0]] = col[0];
            p[others[1]] = col[1];
            tbd[p]
        });
        if hit {
            on_tb[*l as usize] += 1;
        }
    }
    let mut drop = vec![false; count + 1];
    for l in 1..=count {
        let f = on_tb[l] as f64 / cols[l].max(1) as f64;
        if f > check.max_fraction_on_tb {
            drop[l] = true;
            out.removed.push((labelling.sizes[l - 1], f));
        }
    }
    if !out.removed.is_empty() {
        let mut all = mc.view_mut();
        let inside = all.slice_mut(ndarray::s![
            bb.min[0]..bb.max[0],
            bb.min[1]..bb.max[1],
            bb.min[2]..bb.max[2]
        ]);
        ndarray::Zip::from(inside).and(&labels).for_each(|m, l| {
            if drop[*l as usize] {
                *m = false;
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array3};
    use negvol_volume::Geometry;

    /// A condyle (ball) under a TB slab, and a thin plate lying on top of the slab.
    fn scene(g: &Geometry) -> (Volume<bool>, Volume<bool>) {
        let sh = g.shape();
        let mut mc = Array3::from_elem((sh[0], sh[1], sh[2]), false);
        let mut tb = mc.clone();
        for ((i, j, k), v) in mc.indexed_iter_mut() {
            let d2 =
                (i as f64 - 10.0).powi(2) + (j as f64 - 10.0).powi(2) + (k as f64 - 8.0).powi(2);
            *v = d2 <= 16.0;
        }
        tb.slice_mut(s![.., .., 15..22]).fill(true);
        mc.slice_mut(s![2..28, 2..18, 22..24]).fill(true); // the plate, on top of TB
        (
            Volume::new(mc, g.clone()).unwrap(),
            Volume::new(tb, g.clone()).unwrap(),
        )
    }

    #[test]
    fn a_plate_on_the_temporal_bone_goes_and_the_condyle_stays() {
        let g = Geometry::from_spacing([30, 20, 28], [0.5; 3]).unwrap();
        let (mut mc, tb) = scene(&g);
        let ball: usize = mc
            .data()
            .slice(s![.., .., ..13])
            .iter()
            .filter(|v| **v)
            .count();
        let out = drop_condyles_on_tb(&mut mc, &tb, &CondyleCheck::default()).unwrap();
        assert_eq!(out.components, 2);
        assert_eq!(out.removed.len(), 1);
        assert_eq!(out.removed[0].0, 26 * 16 * 2);
        assert!(out.removed[0].1 > 0.99);
        assert_eq!(mc.data().iter().filter(|v| **v).count(), ball);
        assert!(!out.skipped_oblique);
    }

    #[test]
    fn direction_follows_the_affine_and_bad_settings_are_errors() {
        // The same scene stored with k pointing inferior: flip k and the affine's third column.
        let g = Geometry::from_spacing([30, 20, 28], [0.5; 3]).unwrap();
        let (mc, tb) = scene(&g);
        let mut a = g.affine();
        for row in a.iter_mut().take(3) {
            row[3] += row[2] * 27.0;
            row[2] = -row[2];
        }
        let gf = Geometry::new([30, 20, 28], a).unwrap();
        let flip = |v: &Volume<bool>| {
            Volume::new(v.data().slice(s![.., .., ..;-1]).to_owned(), gf.clone()).unwrap()
        };
        let (mut mcf, tbf) = (flip(&mc), flip(&tb));
        let out = drop_condyles_on_tb(&mut mcf, &tbf, &CondyleCheck::default()).unwrap();
        assert_eq!(out.removed.len(), 1);
        // Superior pointing along world x (no axis within 30 degrees of it is fine here: x is an
        // axis) finds no TB "under" the plate along x for most columns: nothing removed.
        let (mut mc2, tb2) = scene(&g);
        let sideways = CondyleCheck {
            superior: [1.0, 0.0, 0.0],
            ..Default::default()
        };
        let out = drop_condyles_on_tb(&mut mc2, &tb2, &sideways).unwrap();
        assert!(out.removed.is_empty(), "{out:?}");
        // An oblique superior (45 degrees between two axes) skips the test.
        let oblique = CondyleCheck {
            superior: [1.0, 0.0, 1.0],
            ..Default::default()
        };
        let out = drop_condyles_on_tb(&mut mc2, &tb2, &oblique).unwrap();
        assert!(out.skipped_oblique && out.removed.is_empty());
        for bad in [
            CondyleCheck {
                superior: [0.0; 3],
                ..Default::default()
            },
            CondyleCheck {
                reach_mm: f64::NAN,
                ..Default::default()
            },
            CondyleCheck {
                max_fraction_on_tb: 1.5,
                ..Default::default()
            },
        ] {
            assert!(drop_condyles_on_tb(&mut mc2, &tb2, &bad).is_err());
        }
        let small = Volume::new(
            Array3::from_elem((3, 3, 3), false),
            Geometry::from_spacing([3, 3, 3], [0.5; 3]).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            drop_condyles_on_tb(&mut mc2, &small, &CondyleCheck::default()),
            Err(crate::NvError::Geometry { .. })
        ));
    }
}
