//! Post-processing of predicted masks: keep only the largest connected components.
//!
//! Thin wrappers over [`negvol_metrics::components`], where the labelling lives (run-based
//! union-find on the foreground, no label volume); [`ComponentFilter`] and [`FilterOutcome`]
//! are re-exported from there, and [`keep_largest_components`] takes any [`AsMaskMut`] and
//! returns a [`TrainError`].
//!
//! nnU-Net's post-processing removes every foreground region but the largest when that helps on
//! validation. A TMJ scan holds one or two joints, so negvol keeps up to `max_components`
//! 26-connected components, each at least `min_fraction` of the largest one: stray
//! condyle-like false positives far from the joints (which would each seed a negative volume)
//! go, both joints stay.
//!
//! ```
//! use ndarray::{Array3, ArrayViewMut3};
//! use negvol_train::postprocess::{keep_largest_components, ComponentFilter};
//!
//! // Two 27-voxel cubes and one stray voxel.
//! let mut m = Array3::from_elem((12, 12, 12), false);
//! m.slice_mut(ndarray::s![1..4, 1..4, 1..4]).fill(true);
//! m.slice_mut(ndarray::s![7..10, 7..10, 7..10]).fill(true);
//! m[[1, 10, 10]] = true;
//! let out = keep_largest_components(&mut m, &ComponentFilter { max_components: 2, min_fraction: 0.1 })?;
//! assert_eq!((out.components, out.kept, out.removed_voxels), (3, 2, 1));
//! assert!(!m[[1, 10, 10]]);
//! # Ok::<(), negvol_train::TrainError>(())
//! ```
//!
//! ## Post-processing determined on cross-validation
//!
//! nnU-Net decides *from the data* whether removing all but the largest component helps: it
//! post-processes the pooled cross-validation predictions and keeps a step only when it
//! raises the mean Dice. [`PostprocessingSearch`] does the same per target: it collects, case
//! by case, the Dice of each target's predicted mask as it is and after each candidate filter
//! (by default [`PostprocessingSearch::default_candidates`]: nnU-Net's "largest component only",
//! and negvol's "up to 2 components at >= 10 % of the largest" for two-joint scans), and
//! [`PostprocessingSearch::finish`] chooses, per target, the candidate with the highest mean
//! Dice if that mean is strictly higher than without post-processing (nnU-Net's rule; a tie
//! keeps every component), with the evidence (every candidate's mean Dice and how many cases
//! it improved or worsened) in the resulting [`PostprocessingPlan`].
//!
//! Unlike nnU-Net, there is no first step that treats all foreground classes as one: MC and TB
//! are separated by the joint space (the negative volume), so the largest foreground component
//! would be one bone and the other would be erased.
//!
//! The `eval --cross-validation RUN --determine-postprocessing` example writes the plan to
//! `RUN/postprocessing.json` ([`PLAN_FILE`]); `segment` and `eval --model-file RUN` apply it by
//! default ([`PostprocessingChoice`]). The whole-CT `pipeline` does not: its clean-up
//! (`negvol::clean_predicted_masks`) is designed for scans with one or two joints, while a
//! plan learnt on single-joint crops may say "keep one component".
//!
//! ```
//! use ndarray::{s, Array3};
//! use negvol_train::postprocess::PostprocessingSearch;
//!
//! // One target ("mc", class 1). Truth: a cube. Prediction: the cube and a stray voxel.
//! let mut truth = Array3::<u8>::zeros((12, 12, 12));
//! truth.slice_mut(s![2..6, 2..6, 2..6]).fill(1);
//! let mut pred = truth.clone();
//! pred[[10, 10, 10]] = 1;
//! let mut search = PostprocessingSearch::new(vec!["mc".into()], PostprocessingSearch::default_candidates())?;
//! search.add_case(truth.view(), pred.view())?;
//! let plan = search.finish("one case")?;
//! let mc = &plan.targets[0];
//! assert_eq!(mc.keep_largest.unwrap().max_components, 1); // the stray voxel goes
//! assert!(mc.candidates[1].mean_dice > mc.candidates[0].mean_dice);
//! # Ok::<(), negvol_train::TrainError>(())
//! ```

use std::path::{Path, PathBuf};

use ndarray::{Array3, ArrayView3, ArrayViewMut3};
use negvol_metrics::MetricsError;
use serde::{Deserialize, Serialize};

pub use negvol_metrics::components::{ComponentFilter, FilterOutcome};

use crate::infer::Prediction;
use crate::{Result, TrainError};

/// Keep the largest 26-connected components of `mask` (in place): at most
/// `filter.max_components`, each at least `filter.min_fraction` of the largest. Equal sizes are
/// ranked by the index order of their first voxel, so the result is deterministic. An empty
/// mask stays empty. See [`negvol_metrics::components::keep_largest_components`].
///
/// # Errors
/// [`TrainError::Config`] when `max_components` is 0 or `min_fraction` is outside `[0, 1]`
/// (or beyond the labelling's 32-bit limits).
pub fn keep_largest_components(
    mut mask: impl AsMaskMut,
    filter: &ComponentFilter,
) -> Result<FilterOutcome> {
    negvol_metrics::components::keep_largest_components(mask.mask_mut(), filter).map_err(
        |e| match e {
            MetricsError::InvalidParameter { .. } => {
                TrainError::Config(format!("component filter: {e}"))
            }
            e => TrainError::Config(format!("keeping the largest components: {e}")),
        },
    )
}

/// A mutable boolean 3D mask: an `Array3<bool>`, a view of one, or a
/// [`negvol_volume::Volume<bool>`].
pub trait AsMaskMut {
    /// The mask as a mutable view.
    fn mask_mut(&mut self) -> ArrayViewMut3<'_, bool>;
}

impl AsMaskMut for &mut Array3<bool> {
    fn mask_mut(&mut self) -> ArrayViewMut3<'_, bool> {
        self.view_mut()
    }
}

impl AsMaskMut for ArrayViewMut3<'_, bool> {
    fn mask_mut(&mut self) -> ArrayViewMut3<'_, bool> {
        self.view_mut()
    }
}

impl AsMaskMut for &mut negvol_volume::Volume<bool> {
    fn mask_mut(&mut self) -> ArrayViewMut3<'_, bool> {
        self.view_mut()
    }
}

/// The plan's file name in a training or cross-validation output folder.
pub const PLAN_FILE: &str = "postprocessing.json";

/// The post-processing of a model's predictions, per target, as determined on its
/// cross-validation by [`PostprocessingSearch`] (see the module docs). Serialised as
/// [`PLAN_FILE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostprocessingPlan {
    /// What it was determined on (e.g. `"5-fold cross-validation of runs/tmj, 40 cases"`).
    pub determined_on: String,
    /// One entry per target, in the model's class order (target `t` is class `t + 1`).
    pub targets: Vec<TargetPostprocessing>,
}

/// The chosen post-processing of one target, and the evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetPostprocessing {
    /// Target name (`mc`, `tb`, ...).
    pub target: String,
    /// The chosen filter; `None` keeps every component.
    pub keep_largest: Option<ComponentFilter>,
    /// Every candidate's score, the first being no post-processing.
    pub candidates: Vec<CandidateScore>,
}

/// One candidate's result on the cases of a [`PostprocessingSearch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    /// The filter (`None`: no post-processing).
    pub keep_largest: Option<ComponentFilter>,
    /// Mean Dice over the cases (both masks empty counts as 1, as
    /// [`negvol_metrics::dice`] defines it).
    pub mean_dice: f64,
    /// Cases scored.
    pub cases: usize,
    /// Cases whose Dice it raised, against no post-processing.
    pub improved: usize,
    /// Cases whose Dice it lowered.
    pub worsened: usize,
}

/// Short text of a filter: `keep 1` or `keep 2 at >= 10 %`, or `keep all`.
pub fn describe_filter(f: Option<&ComponentFilter>) -> String {
    match f {
        None => "keep all".into(),
        Some(f) if f.min_fraction > 0.0 => format!(
            "keep {} at >= {} % of the largest",
            f.max_components,
            f.min_fraction * 100.0
        ),
        Some(f) => format!("keep {}", f.max_components),
    }
}

impl PostprocessingPlan {
    /// Reads a plan ([`TrainError::Io`] / [`TrainError::Json`] naming the file).
    pub fn load(path: &Path) -> Result<Self> {
        let plan: Self = crate::checkpoint::read_json(path)?;
        plan.validate()
            .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
        Ok(plan)
    }

    /// Writes the plan atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::checkpoint::write_json(path, self)
    }

    fn validate(&self) -> Result<()> {
        for t in &self.targets {
            if let Some(f) = &t.keep_largest {
                f.validate().map_err(|e| {
                    TrainError::Config(format!("target {}: component filter: {e}", t.target))
                })?;
            }
        }
        Ok(())
    }

    /// One line: `mc: keep 1; tb: keep all`.
    pub fn describe(&self) -> String {
        self.targets
            .iter()
            .map(|t| format!("{}: {}", t.target, describe_filter(t.keep_largest.as_ref())))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// [`TrainError::Config`] unless the plan's targets are `targets`, in that order (a plan
    /// belongs to models that segment the same classes).
    pub fn check_targets(&self, targets: &[String]) -> Result<()> {
        let mine: Vec<&str> = self.targets.iter().map(|t| t.target.as_str()).collect();
        if mine != targets.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(TrainError::Config(format!(
                "the post-processing plan is for targets {mine:?}, the model segments {targets:?}"
            )));
        }
        Ok(())
    }

    /// Applies the plan to a prediction of a model segmenting the plan's targets (class
    /// `t + 1` for target `t`); removed voxels become background, probabilities are left as
    /// predicted. Returns what was done per target (`None` where it keeps every component).
    ///
    /// # Errors
    /// [`TrainError::Config`] when the prediction has fewer classes than the plan has targets.
    pub fn apply(&self, pred: &mut Prediction) -> Result<Vec<Option<FilterOutcome>>> {
        if pred.probabilities.len() != self.targets.len() + 1 {
            return Err(TrainError::Config(format!(
                "the post-processing plan has {} targets, the prediction {} classes",
                self.targets.len(),
                pred.probabilities.len()
            )));
        }
        self.targets
            .iter()
            .enumerate()
            .map(|(t, tp)| match &tp.keep_largest {
                Some(f) => pred.keep_largest_components_of((t + 1) as u8, f).map(Some),
                None => Ok(None),
            })
            .collect()
    }
}

/// Which post-processing plan a command applies: the one found beside the models (the
/// default), none, or a given file. Parsed from `auto`, `none` or a path.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum PostprocessingChoice {
    /// [`PLAN_FILE`] in the model folders given, if there is one ([`find_plan`]).
    #[default]
    Auto,
    /// No plan.
    None,
    /// This plan file.
    File(PathBuf),
}

impl std::str::FromStr for PostprocessingChoice {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "auto" => Self::Auto,
            "none" => Self::None,
            p => Self::File(PathBuf::from(p)),
        })
    }
}

impl PostprocessingChoice {
    /// The plan this choice names for models loaded from `model_paths`, and where it was
    /// read, checked against the models' `targets`.
    pub fn resolve<P: AsRef<Path>>(
        &self,
        model_paths: &[P],
        targets: &[String],
    ) -> Result<Option<(PathBuf, PostprocessingPlan)>> {
        let found = match self {
            Self::None => None,
            Self::File(p) => Some((p.clone(), PostprocessingPlan::load(p)?)),
            Self::Auto => find_plan(model_paths)?,
        };
        if let Some((p, plan)) = &found {
            plan.check_targets(targets)
                .map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))?;
        }
        Ok(found)
    }
}

/// The [`PLAN_FILE`] of the model folders among `model_paths` (a checkpoint file has none).
/// Several folders with plans must hold the same choices, else [`TrainError::Config`].
pub fn find_plan<P: AsRef<Path>>(
    model_paths: &[P],
) -> Result<Option<(PathBuf, PostprocessingPlan)>> {
    let mut found: Option<(PathBuf, PostprocessingPlan)> = None;
    for dir in model_paths.iter().map(AsRef::as_ref).filter(|p| p.is_dir()) {
        let path = dir.join(PLAN_FILE);
        if !path.is_file() {
            continue;
        }
        let plan = PostprocessingPlan::load(&path)?;
        match &found {
            None => found = Some((path, plan)),
            Some((first, p)) => {
                let choices = |p: &PostprocessingPlan| {
                    p.targets
                        .iter()
                        .map(|t| (t.target.clone(), t.keep_largest))
                        .collect::<Vec<_>>()
                };
                if choices(p) != choices(&plan) {
                    return Err(TrainError::Config(format!(
                        "{} and {} choose different post-processing ({} vs {}); pick one \
                         with --postprocessing FILE or none",
                        first.display(),
                        path.display(),
                        p.describe(),
                        plan.describe()
                    )));
                }
            }
        }
    }
    Ok(found)
}

/// Collects, case by case, the Dice of every target with and without each candidate filter,
/// then chooses a [`PostprocessingPlan`] (module docs).
#[derive(Debug, Clone)]
pub struct PostprocessingSearch {
    targets: Vec<String>,
    candidates: Vec<ComponentFilter>,
    /// `dice[target][option][case]`, option 0 = no post-processing, `c + 1` = candidate `c`.
    dice: Vec<Vec<Vec<f64>>>,
}

impl PostprocessingSearch {
    /// nnU-Net's "largest component only" (`keep 1`), then negvol's two-joint filter
    /// (`keep 2 at >= 10 %`, [`ComponentFilter::default`]).
    pub fn default_candidates() -> Vec<ComponentFilter> {
        vec![
            ComponentFilter {
                max_components: 1,
                min_fraction: 0.0,
            },
            ComponentFilter::default(),
        ]
    }

    /// A search over `candidates` (earlier ones win ties) for a model segmenting `targets`
    /// (target `t` is class `t + 1` of the label maps given to [`Self::add_case`]).
    ///
    /// # Errors
    /// [`TrainError::Config`]: no target, more than 255, no candidate, or an invalid filter.
    pub fn new(targets: Vec<String>, candidates: Vec<ComponentFilter>) -> Result<Self> {
        if targets.is_empty() || targets.len() > 255 {
            return Err(TrainError::Config(format!(
                "post-processing search: {} targets (1 to 255)",
                targets.len()
            )));
        }
        if candidates.is_empty() {
            return Err(TrainError::Config(
                "post-processing search: no candidate filter".into(),
            ));
        }
        for f in &candidates {
            f.validate().map_err(|e| {
                TrainError::Config(format!("post-processing search: component filter: {e}"))
            })?;
        }
        let dice = vec![vec![Vec::new(); candidates.len() + 1]; targets.len()];
        Ok(Self {
            targets,
            candidates,
            dice,
        })
    }

    /// Cases added so far.
    pub fn cases(&self) -> usize {
        self.dice[0][0].len()
    }

    /// Scores one case: `truth` and `predicted` are label maps on the same grid (class
    /// `t + 1` = target `t`; other values are background). Voxels the truth leaves
    /// unannotated ([`crate::IGNORE_LABEL`]) are left out of every Dice, after the filters
    /// have seen the whole prediction.
    ///
    /// # Errors
    /// [`TrainError::Config`] when the shapes differ (nothing is recorded then).
    pub fn add_case(
        &mut self,
        truth: ArrayView3<'_, u8>,
        predicted: ArrayView3<'_, u8>,
    ) -> Result<()> {
        if truth.shape() != predicted.shape() {
            return Err(TrainError::Config(format!(
                "post-processing search: truth {:?} and prediction {:?} differ in shape",
                truth.shape(),
                predicted.shape()
            )));
        }
        // The voxels the truth annotates, when it leaves some out (sparse annotation).
        let annotated = truth
            .iter()
            .any(|v| *v == crate::IGNORE_LABEL)
            .then(|| truth.mapv(|v| v != crate::IGNORE_LABEL));
        let annotated = annotated.as_ref();
        let mut scores = Vec::with_capacity(self.targets.len());
        for t in 0..self.targets.len() {
            let class = (t + 1) as u8;
            let reference = truth.mapv(|v| v == class);
            let mask = predicted.mapv(|v| v == class);
            let mut row = vec![dice_of(&reference, &mask, annotated)?];
            for f in &self.candidates {
                let mut m = mask.clone();
                keep_largest_components(&mut m, f)?;
                row.push(dice_of(&reference, &m, annotated)?);
            }
            scores.push(row);
        }
        for (t, row) in scores.into_iter().enumerate() {
            for (o, d) in row.into_iter().enumerate() {
                self.dice[t][o].push(d);
            }
        }
        Ok(())
    }

    /// The plan: per target, the candidate with the highest mean Dice if it beats no
    /// post-processing strictly, else none; every candidate's score kept as evidence.
    ///
    /// # Errors
    /// [`TrainError::Config`] when no case was added.
    pub fn finish(&self, determined_on: impl Into<String>) -> Result<PostprocessingPlan> {
        let n = self.cases();
        if n == 0 {
            return Err(TrainError::Config(
                "post-processing search: no case was scored".into(),
            ));
        }
        let targets = self
            .targets
            .iter()
            .zip(&self.dice)
            .map(|(name, options)| {
                let base = &options[0];
                let mean = |d: &[f64]| d.iter().sum::<f64>() / d.len() as f64;
                let candidates: Vec<CandidateScore> = options
                    .iter()
                    .enumerate()
                    .map(|(o, d)| CandidateScore {
                        keep_largest: (o > 0).then(|| self.candidates[o - 1]),
                        mean_dice: mean(d),
                        cases: d.len(),
                        improved: d.iter().zip(base).filter(|(a, b)| a > b).count(),
                        worsened: d.iter().zip(base).filter(|(a, b)| a < b).count(),
                    })
                    .collect();
                let mut best = 0;
                for (o, c) in candidates.iter().enumerate().skip(1) {
                    if c.mean_dice > candidates[best].mean_dice {
                        best = o;
                    }
                }
                TargetPostprocessing {
                    target: name.clone(),
                    keep_largest: candidates[best].keep_largest,
                    candidates,
                }
            })
            .collect();
        Ok(PostprocessingPlan {
            determined_on: determined_on.into(),
            targets,
        })
    }
}

/// Dice of `mask` against `reference` over the `annotated` voxels (all when `None`).
fn dice_of(
    reference: &Array3<bool>,
    mask: &Array3<bool>,
    annotated: Option<&Array3<bool>>,
) -> Result<f64> {
    let kept;
    let mask = match annotated {
        Some(a) => {
            kept = mask & a;
            &kept
        }
        None => mask,
    };
    let d = negvol_metrics::dice(reference.view(), mask.view())
        .map_err(|e| TrainError::Config(format!("post-processing search: {e}")))?;
    // Dice is always defined (both empty: 1 by convention).
    Ok(d.get().unwrap_or(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use ndarray::s;

    // The filter itself is tested in negvol-metrics (tests/components.rs); here the wrapper:
    // every mask type, and errors mapped to TrainError::Config.
    #[test]
    fn every_mask_type_and_errors_as_train_errors() {
        let mut m = Array3::from_elem((10, 10, 10), false);
        m.slice_mut(s![6..8, 6..8, 6..8]).fill(true);
        m.slice_mut(s![0..2, 0..2, 0..2]).fill(true);
        let one = ComponentFilter {
            max_components: 1,
            min_fraction: 0.0,
        };
        let mut a = m.clone();
        let out = keep_largest_components(&mut a, &one).unwrap();
        assert_eq!((out.components, out.kept, out.removed_voxels), (2, 1, 8));
        assert!(
            a[[0, 0, 0]] && !a[[6, 6, 6]],
            "the first in index order wins a tie"
        );
        let mut b = m.clone();
        keep_largest_components(b.view_mut(), &one).unwrap();
        assert_eq!(a, b);
        let g = negvol_volume::Geometry::from_spacing([10, 10, 10], [1.0; 3]).unwrap();
        let mut v = negvol_volume::Volume::new(m.clone(), g).unwrap();
        keep_largest_components(&mut v, &one).unwrap();
        assert_eq!(v.data(), &a);
        let bad = ComponentFilter {
            max_components: 0,
            min_fraction: 0.1,
        };
        match keep_largest_components(&mut m, &bad) {
            Err(TrainError::Config(msg)) => assert!(msg.contains("max_components"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    /// A label map (shape 16^3) with cubes of `class` at the given corners (side 3 or 1).
    fn scene(cubes: &[([usize; 3], usize, u8)]) -> Array3<u8> {
        let mut m = Array3::<u8>::zeros((16, 16, 16));
        for &([i, j, k], side, class) in cubes {
            m.slice_mut(s![i..i + side, j..j + side, k..k + side])
                .fill(class);
        }
        m
    }

    fn search(targets: &[&str]) -> PostprocessingSearch {
        PostprocessingSearch::new(
            targets.iter().map(|t| t.to_string()).collect(),
            PostprocessingSearch::default_candidates(),
        )
        .unwrap()
    }

    #[test]
    fn a_stray_component_is_removed_and_a_true_second_one_is_kept() {
        // mc (class 1): truth one cube, prediction the cube plus a stray voxel -> keep 1.
        // tb (class 2): truth two cubes of 27 and 8 voxels, predicted exactly -> keep 1 would
        // erase the second (worse), keep 2 at >= 10 % changes nothing (a tie): keep all.
        let truth = scene(&[([1, 1, 1], 3, 1), ([8, 8, 8], 3, 2), ([12, 1, 1], 2, 2)]);
        let mut pred = truth.clone();
        pred[[14, 14, 14]] = 1;
        let mut s = search(&["mc", "tb"]);
        s.add_case(truth.view(), pred.view()).unwrap();
        assert_eq!(s.cases(), 1);
        let plan = s.finish("test").unwrap();
        let (mc, tb) = (&plan.targets[0], &plan.targets[1]);
        assert_eq!(
            mc.keep_largest,
            Some(PostprocessingSearch::default_candidates()[0])
        );
        assert_relative_eq!(mc.candidates[0].mean_dice, 54.0 / 55.0);
        assert_relative_eq!(mc.candidates[1].mean_dice, 1.0);
        assert_eq!(
            (mc.candidates[1].improved, mc.candidates[1].worsened),
            (1, 0)
        );
        // keep 2 at >= 10 %: the stray voxel is 1/27 < 10 % of the cube, so it goes too, but
        // the earlier candidate wins the tie.
        assert_relative_eq!(mc.candidates[2].mean_dice, 1.0);
        assert_eq!(tb.keep_largest, None);
        assert_relative_eq!(tb.candidates[1].mean_dice, 2.0 * 27.0 / (35.0 + 27.0));
        assert_eq!(
            (tb.candidates[1].improved, tb.candidates[1].worsened),
            (0, 1)
        );
        assert_relative_eq!(tb.candidates[2].mean_dice, 1.0);
        assert_eq!(plan.describe(), "mc: keep 1; tb: keep all");
    }

    #[test]
    fn the_mean_over_cases_decides() {
        // Case A: a stray voxel next to the true cube (keep 1 helps a little).
        // Case B: the truth has two cubes, predicted exactly (keep 1 hurts a lot).
        let a_truth = scene(&[([1, 1, 1], 3, 1)]);
        let mut a_pred = a_truth.clone();
        a_pred[[14, 14, 14]] = 1;
        let b_truth = scene(&[([1, 1, 1], 3, 1), ([10, 10, 10], 3, 1)]);
        let mut s = PostprocessingSearch::new(
            vec!["mc".into()],
            vec![ComponentFilter {
                max_components: 1,
                min_fraction: 0.0,
            }],
        )
        .unwrap();
        s.add_case(a_truth.view(), a_pred.view()).unwrap();
        s.add_case(b_truth.view(), b_truth.view()).unwrap();
        let plan = s.finish("two cases").unwrap();
        let mc = &plan.targets[0];
        assert_eq!(mc.keep_largest, None);
        let (base, keep1) = (&mc.candidates[0], &mc.candidates[1]);
        assert_relative_eq!(base.mean_dice, (54.0 / 55.0 + 1.0) / 2.0);
        assert_relative_eq!(keep1.mean_dice, (1.0 + 2.0 * 27.0 / 81.0) / 2.0);
        assert_eq!((keep1.cases, keep1.improved, keep1.worsened), (2, 1, 1));
    }

    #[test]
    fn plans_apply_round_trip_and_are_found_beside_the_models() {
        let truth = scene(&[([1, 1, 1], 3, 1), ([8, 8, 8], 3, 2)]);
        let mut labels = truth.clone();
        labels[[14, 14, 14]] = 1;
        labels[[0, 15, 0]] = 2;
        let mut s = search(&["mc", "tb"]);
        s.add_case(truth.view(), labels.view()).unwrap();
        let plan = s.finish("test").unwrap();
        assert_eq!(plan.describe(), "mc: keep 1; tb: keep 1");

        let g = negvol_volume::Geometry::from_spacing([16, 16, 16], [1.0; 3]).unwrap();
        let prob =
            negvol_volume::Volume::new(Array3::<f32>::zeros((16, 16, 16)), g.clone()).unwrap();
        let mut pred = Prediction {
            probabilities: vec![prob.clone(), prob.clone(), prob.clone()],
            labels: negvol_volume::Volume::new(labels, g).unwrap(),
        };
        let done = plan.apply(&mut pred).unwrap();
        assert_eq!(done[0].unwrap().removed_voxels, 1);
        assert_eq!(done[1].unwrap().removed_voxels, 1);
        assert_eq!(pred.labels.data(), &truth);
        // A prediction with another number of classes is refused.
        let mut two = Prediction {
            probabilities: vec![prob.clone(), prob],
            labels: pred.labels.clone(),
        };
        assert!(matches!(plan.apply(&mut two), Err(TrainError::Config(_))));

        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let targets = vec!["mc".to_string(), "tb".to_string()];
        // No plan anywhere, and a checkpoint file has none.
        let ckpt = a.join("best.json");
        std::fs::write(&ckpt, "{}").unwrap();
        assert!(find_plan(&[&a, &ckpt]).unwrap().is_none());
        plan.save(&a.join(PLAN_FILE)).unwrap();
        let (path, back) = PostprocessingChoice::Auto
            .resolve(&[&a, &b], &targets)
            .unwrap()
            .unwrap();
        assert_eq!((path, &back), (a.join(PLAN_FILE), &plan));
        assert!(PostprocessingChoice::None
            .resolve(&[&a], &targets)
            .unwrap()
            .is_none());
        // Another model's targets, and two folders that disagree, are refused.
        let other = vec!["tb".to_string(), "mc".to_string()];
        assert!(matches!(
            PostprocessingChoice::Auto.resolve(&[&a], &other),
            Err(TrainError::Config(m)) if m.contains("targets")
        ));
        let mut keep_all = plan.clone();
        keep_all.targets[1].keep_largest = None;
        keep_all.save(&b.join(PLAN_FILE)).unwrap();
        assert!(
            matches!(find_plan(&[&a, &b]), Err(TrainError::Config(m)) if m.contains("different"))
        );
        // An explicit file wins.
        let chosen: PostprocessingChoice = b.join(PLAN_FILE).to_str().unwrap().parse().unwrap();
        let (_, p) = chosen.resolve(&[&a], &targets).unwrap().unwrap();
        assert_eq!(p.describe(), "mc: keep 1; tb: keep all");
        assert_eq!(
            "auto".parse::<PostprocessingChoice>().unwrap(),
            PostprocessingChoice::Auto
        );
        assert_eq!(
            "none".parse::<PostprocessingChoice>().unwrap(),
            PostprocessingChoice::None
        );
        // A plan file with an invalid filter is refused on load.
        let mut bad = plan.clone();
        bad.targets[0].keep_largest = Some(ComponentFilter {
            max_components: 0,
            min_fraction: 0.0,
        });
        bad.save(&b.join(PLAN_FILE)).unwrap();
        assert!(matches!(
            PostprocessingPlan::load(&b.join(PLAN_FILE)),
            Err(TrainError::Config(m)) if m.contains("max_components")
        ));
    }

    #[test]
    fn unannotated_voxels_do_not_count() {
        // The stray voxel lies where nobody annotated: no false positive, nothing to gain.
        let mut truth = scene(&[([1, 1, 1], 3, 1)]);
        truth.slice_mut(s![12.., .., ..]).fill(crate::IGNORE_LABEL);
        let mut pred = scene(&[([1, 1, 1], 3, 1)]);
        pred[[14, 14, 14]] = 1;
        let mut s = search(&["mc"]);
        s.add_case(truth.view(), pred.view()).unwrap();
        let mc = &s.finish("sparse").unwrap().targets[0];
        assert!(mc.candidates.iter().all(|c| c.mean_dice == 1.0));
        assert_eq!(mc.keep_largest, None);
    }

    #[test]
    fn bad_searches_are_typed_errors() {
        let f = PostprocessingSearch::default_candidates();
        assert!(PostprocessingSearch::new(vec![], f.clone()).is_err());
        assert!(PostprocessingSearch::new(vec!["mc".into()], vec![]).is_err());
        let bad = ComponentFilter {
            max_components: 1,
            min_fraction: 2.0,
        };
        assert!(PostprocessingSearch::new(vec!["mc".into()], vec![bad]).is_err());
        let mut s = search(&["mc"]);
        assert!(matches!(s.finish("nothing"), Err(TrainError::Config(_))));
        let a = Array3::<u8>::zeros((4, 4, 4));
        let b = Array3::<u8>::zeros((4, 4, 5));
        assert!(s.add_case(a.view(), b.view()).is_err());
        assert_eq!(s.cases(), 0);
        // Both empty: Dice 1 by convention, for every option.
        s.add_case(a.view(), a.view()).unwrap();
        let plan = s.finish("empty").unwrap();
        assert!(plan.targets[0]
            .candidates
            .iter()
            .all(|c| c.mean_dice == 1.0));
        assert_eq!(plan.targets[0].keep_largest, None);
    }
}
