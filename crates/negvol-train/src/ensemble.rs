//! Ensembles of trained models: the mean of several models' softmax probabilities, then the
//! argmax, as nnU-Net predicts with the five models of its cross-validation.
//!
//! An [`Ensemble`] holds one or more [`LoadedModel`]s that segment the same targets in the
//! same class order. Each member keeps its own preprocessing (normalisation, target spacing)
//! and sliding-window settings and returns probabilities in the input image's geometry
//! ([`LoadedModel::predict`]), so members may differ in architecture, normalisation, spacing
//! and patch size. [`Ensemble::predict`] averages the members' probabilities voxel by voxel
//! (equal weights by default, as nnU-Net; [`Ensemble::with_weights`] for a weighted mean) and
//! takes the argmax ([`Prediction::from_probabilities`]). Memory: one running sum plus one
//! member's prediction at a time, never all members' predictions.
//!
//! [`Ensemble::load`] accepts, for each path ([`resolve_checkpoints`]):
//! - a checkpoint file: its JSON record (`best.json`, `last.json`) or its weights
//!   (`best.safetensors`), as [`LoadedModel::load`] accepts;
//! - a cross-validation output folder (`train --folds K`, [`crate::run::cross_validate`]):
//!   one member per `fold_<N>/` sub-folder, ordered by `N` numerically (`fold_2` before
//!   `fold_10`), each fold's `best.json`, or its `last.json` when the fold has no `best.json`
//!   (a run trained without validation writes none);
//! - a training output folder without `fold_*/` sub-folders: its `best.json`, or its
//!   `last.json` when it has no `best.json`.
//!
//! A folder that holds `fold_*/` sub-folders is read as a cross-validation output even if it
//! also holds a checkpoint of its own. The same checkpoint given twice counts twice.
//!
//! ```no_run
//! use negvol_train::ensemble::Ensemble;
//! use negvol_train::tch::Device;
//!
//! // The five folds of `train --folds 5 --out runs/cv`, plus a separately trained model.
//! let ens = Ensemble::load(&["runs/cv", "runs/extra/best.json"], Device::Cpu)?;
//! for m in ens.members() {
//!     println!("member {} ({})", m.path.display(), m.model.net.arch());
//! }
//! let ct = negvol_volume::read_nifti::<f32>("ct.nii.gz")?;
//! let pred = ens.predict(&ct, None)?; // each member with its own saved settings
//! let mc = pred.mask(ens.class_of("mc")?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

use negvol_volume::Volume;
use tch::Device;

use crate::infer::{Activation, Prediction};
use crate::run::LoadedModel;
use crate::{InferenceConfig, Precision, Result, TrainError};

/// Changes to each member's own saved sliding-window settings
/// (`LoadedModel::train.validation.inference`); `None` keeps the member's value.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct InferenceOverrides {
    /// Flip test-time augmentation on (`Some(true)`) or off (`Some(false)`).
    pub flip_tta: Option<bool>,
    /// Fraction of a window shared with its neighbour, in `[0, 1)`.
    pub overlap: Option<f64>,
    /// Windows per forward pass.
    pub batch_size: Option<usize>,
    /// Forward-pass precision (autocast on CUDA only).
    pub precision: Option<Precision>,
}

impl InferenceOverrides {
    /// `base` with these overrides applied (checked when the members predict).
    pub fn apply(&self, base: &InferenceConfig) -> InferenceConfig {
        let mut cfg = base.clone();
        if let Some(t) = self.flip_tta {
            cfg.flip_tta = t;
        }
        if let Some(o) = self.overlap {
            cfg.overlap = o;
        }
        if let Some(b) = self.batch_size {
            cfg.batch_size = b;
        }
        if let Some(p) = self.precision {
            cfg.precision = p;
        }
        cfg
    }
}

/// Several trained models that segment the same targets, predicting together (see the
/// module documentation). Never empty.
#[derive(Debug)]
pub struct Ensemble {
    members: Vec<LoadedModel>,
    weights: Vec<f64>,
}

/// The checkpoint record of a training output folder: `best.json`, else `last.json`.
fn checkpoint_in(dir: &Path) -> Option<PathBuf> {
    ["best.json", "last.json"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// The `fold_<N>` sub-folders of `dir`, ordered by `N` (numerically, then by name).
fn fold_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut folds: Vec<(u64, String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(n) = name
            .strip_prefix("fold_")
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if path.is_dir() {
            folds.push((n, name, path));
        }
    }
    folds.sort();
    Ok(folds.into_iter().map(|(_, _, p)| p).collect())
}

/// The checkpoints that `paths` name, in order (see the module documentation): a file is
/// taken as it is (it is read by [`LoadedModel::load`]), a folder with `fold_<N>/`
/// sub-folders gives each fold's `best.json` (else `last.json`) ordered by `N`, any other
/// folder its `best.json` (else `last.json`).
///
/// Errors: no path ([`TrainError::Config`]); a folder with neither `fold_*/` sub-folders nor a
/// checkpoint, or a fold sub-folder without a checkpoint ([`TrainError::Checkpoint`], naming
/// the folder); an unreadable folder ([`TrainError::Io`]).
pub fn resolve_checkpoints<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(TrainError::Config(
            "an ensemble needs at least one model (no checkpoint or folder given)".into(),
        ));
    }
    let mut out = Vec::new();
    for p in paths {
        let p = p.as_ref();
        if !p.is_dir() {
            out.push(p.to_path_buf());
            continue;
        }
        let folds = fold_dirs(p)?;
        if folds.is_empty() {
            out.push(checkpoint_in(p).ok_or_else(|| {
                TrainError::Checkpoint {
                    path: p.to_path_buf(),
                    message: "the folder holds neither fold_*/ sub-folders nor a best.json or \
                          last.json checkpoint"
                        .into(),
                }
            })?);
            continue;
        }
        for f in folds {
            out.push(checkpoint_in(&f).ok_or_else(|| TrainError::Checkpoint {
                path: f.clone(),
                message: "this fold holds neither best.json nor last.json".into(),
            })?);
        }
    }
    Ok(out)
}

impl Ensemble {
    /// Load every checkpoint that `paths` name ([`resolve_checkpoints`]) onto `device`, with
    /// equal weights. Errors: those of [`resolve_checkpoints`] and [`LoadedModel::load`], and
    /// members that do not agree ([`Ensemble::new`]).
    pub fn load<P: AsRef<Path>>(paths: &[P], device: Device) -> Result<Self> {
        let members = resolve_checkpoints(paths)?
            .iter()
            .map(|p| LoadedModel::load(p, device))
            .collect::<Result<Vec<_>>>()?;
        Self::new(members)
    }

    /// An ensemble of already loaded models, with equal weights. The members must segment the
    /// same targets in the same order with the same number of classes; otherwise a
    /// [`TrainError::Checkpoint`] names the disagreeing member's checkpoint, the first
    /// member's, and what differs. No model is a [`TrainError::Config`].
    pub fn new(members: Vec<LoadedModel>) -> Result<Self> {
        let Some(first) = members.first() else {
            return Err(TrainError::Config(
                "an ensemble needs at least one model (none given)".into(),
            ));
        };
        let classes = |m: &LoadedModel| (m.model.net.classes(), m.train.classes());
        for m in &members[1..] {
            if m.train.targets != first.train.targets {
                return Err(TrainError::Checkpoint {
                    path: m.path.clone(),
                    message: format!(
                        "its targets {:?} differ from the targets {:?} of {} (names and \
                         order must agree in an ensemble)",
                        m.train.targets,
                        first.train.targets,
                        first.path.display()
                    ),
                });
            }
            if classes(m) != classes(first) {
                return Err(TrainError::Checkpoint {
                    path: m.path.clone(),
                    message: format!(
                        "its network has {} classes, that of {} has {}",
                        m.model.net.classes(),
                        first.path.display(),
                        first.model.net.classes()
                    ),
                });
            }
        }
        let weights = vec![1.0; members.len()];
        Ok(Self { members, weights })
    }

    /// The same members with weights for a weighted mean of their probabilities, one per
    /// member in [`Ensemble::members`] order. Each must be finite and `>= 0` and their sum
    /// `> 0` (a [`TrainError::Config`] otherwise); only the ratios matter, and a member of
    /// weight 0 is not run.
    pub fn with_weights(mut self, weights: Vec<f64>) -> Result<Self> {
        if weights.len() != self.members.len() {
            return Err(TrainError::Config(format!(
                "{} ensemble weights for {} members",
                weights.len(),
                self.members.len()
            )));
        }
        if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(TrainError::Config(format!(
                "ensemble weight {w} must be finite and >= 0"
            )));
        }
        let sum: f64 = weights.iter().sum();
        if !(sum > 0.0 && sum.is_finite()) {
            return Err(TrainError::Config(format!(
                "the ensemble weights {weights:?} must have a finite sum > 0"
            )));
        }
        self.weights = weights;
        Ok(self)
    }

    /// The members, in load order (never empty).
    pub fn members(&self) -> &[LoadedModel] {
        &self.members
    }

    /// `ensemble of N models:` then one line per member, `  <checkpoint> (<architecture>)`,
    /// for programs to print (no final newline).
    pub fn describe_members(&self) -> String {
        let mut s = format!("ensemble of {} models:", self.members.len());
        for m in &self.members {
            s.push_str(&format!(
                "\n  {} ({})",
                m.path.display(),
                m.model.net.arch()
            ));
        }
        s
    }

    /// The members' weights (all 1 unless set by [`Ensemble::with_weights`]).
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The targets every member segments, in class order (class `t + 1` is target `t`).
    pub fn targets(&self) -> &[String] {
        &self.members[0].train.targets
    }

    /// The class index of a target (as [`crate::TrainConfig::class_of`]).
    pub fn class_of(&self, target: &str) -> Result<u8> {
        self.members[0].train.class_of(target)
    }

    /// Predict a whole image (in its own geometry): the weighted mean of the members'
    /// softmax probabilities and its argmax. `inference`: `None` runs every member with its
    /// own saved sliding-window settings, `Some` runs every member with these (the patch must
    /// then suit every member's network). One member gives exactly that member's
    /// [`LoadedModel::predict`].
    ///
    /// Errors: a member whose settings do not use the softmax activation
    /// ([`TrainError::Config`], naming its checkpoint), members that return different class
    /// counts or geometries, and whatever a member's prediction returns.
    pub fn predict(
        &self,
        image: &Volume<f32>,
        inference: Option<&InferenceConfig>,
    ) -> Result<Prediction> {
        self.predict_each(image, |m| {
            inference.unwrap_or(&m.train.validation.inference).clone()
        })
    }

    /// As [`Ensemble::predict`], every member with its own saved settings changed by
    /// `overrides` (e.g. flip TTA on for all, whatever their patch sizes).
    pub fn predict_overriding(
        &self,
        image: &Volume<f32>,
        overrides: &InferenceOverrides,
    ) -> Result<Prediction> {
        self.predict_each(image, |m| overrides.apply(&m.train.validation.inference))
    }

    fn predict_each(
        &self,
        image: &Volume<f32>,
        settings: impl Fn(&LoadedModel) -> InferenceConfig,
    ) -> Result<Prediction> {
        let mut sum: Option<Vec<Volume<f32>>> = None;
        let mut total = 0.0f64;
        for (m, &w) in self.members.iter().zip(&self.weights) {
            if w == 0.0 {
                continue;
            }
            let inf = settings(m);
            if inf.activation != Activation::Softmax {
                return Err(TrainError::Config(format!(
                    "ensemble member {}: activation {:?}; an ensemble averages softmax \
                     probabilities",
                    m.path.display(),
                    inf.activation
                )));
            }
            // The member's label map is dropped at once: only its probabilities are added.
            let probs = m.predict(image, Some(&inf))?.probabilities;
            let wf = w as f32;
            match sum.as_mut() {
                None => {
                    let mut probs = probs;
                    if wf != 1.0 {
                        for p in &mut probs {
                            p.view_mut().mapv_inplace(|v| v * wf);
                        }
                    }
                    sum = Some(probs);
                }
                Some(acc) => {
                    if acc.len() != probs.len() {
                        return Err(TrainError::Network(format!(
                            "ensemble member {} predicted {} classes, the members before it {}",
                            m.path.display(),
                            probs.len(),
                            acc.len()
                        )));
                    }
                    for (a, p) in acc.iter_mut().zip(&probs) {
                        if a.geometry() != p.geometry() {
                            return Err(TrainError::Network(format!(
                                "ensemble member {} predicted on another grid than the members \
                                 before it",
                                m.path.display()
                            )));
                        }
                        let mut av = a.view_mut();
                        if wf == 1.0 {
                            av += &p.view();
                        } else {
                            av.scaled_add(wf, &p.view());
                        }
                    }
                }
            }
            total += w;
        }
        let mut sum =
            sum.ok_or_else(|| TrainError::Config("no ensemble member has a weight > 0".into()))?;
        if total != 1.0 {
            let t = total as f32;
            for p in &mut sum {
                p.view_mut().mapv_inplace(|v| v / t);
            }
        }
        Prediction::from_probabilities(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "{}").unwrap();
    }

    #[test]
    fn folders_resolve_to_fold_checkpoints_in_numeric_order() {
        let d = tempfile::tempdir().unwrap();
        let cv = d.path().join("cv");
        for f in [10, 2, 0, 1] {
            touch(&cv.join(format!("fold_{f}/best.json")));
            touch(&cv.join(format!("fold_{f}/last.json")));
        }
        // Not folds: ignored.
        touch(&cv.join("fold_x/best.json"));
        touch(&cv.join("fold_3")); // a file, not a folder
        std::fs::create_dir_all(cv.join("fold_")).unwrap();
        // A fold without validation has only last.json.
        touch(&cv.join("fold_5/last.json"));
        // A plain training folder, and a checkpoint file given directly.
        let single = d.path().join("single");
        touch(&single.join("best.json"));
        touch(&single.join("last.json"));
        let only_last = d.path().join("only_last");
        touch(&only_last.join("last.json"));
        let file = d.path().join("m/last.safetensors");
        let got = resolve_checkpoints(&[&cv, &single, &only_last, &file]).unwrap();
        let want: Vec<PathBuf> = vec![
            cv.join("fold_0/best.json"),
            cv.join("fold_1/best.json"),
            cv.join("fold_2/best.json"),
            cv.join("fold_5/last.json"),
            cv.join("fold_10/best.json"),
            single.join("best.json"),
            only_last.join("last.json"),
            file,
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let none: [&Path; 0] = [];
        assert!(matches!(
            resolve_checkpoints(&none),
            Err(TrainError::Config(m)) if m.contains("at least one model")
        ));
        assert!(matches!(
            Ensemble::new(Vec::new()),
            Err(TrainError::Config(m)) if m.contains("at least one model")
        ));
        let d = tempfile::tempdir().unwrap();
        // A folder with neither folds nor a checkpoint.
        touch(&d.path().join("empty/notes.txt"));
        match resolve_checkpoints(&[d.path().join("empty")]) {
            Err(TrainError::Checkpoint { path, message }) => {
                assert_eq!(path, d.path().join("empty"));
                assert!(message.contains("neither"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // A fold without a checkpoint names the fold.
        touch(&d.path().join("cv/fold_0/best.json"));
        std::fs::create_dir_all(d.path().join("cv/fold_1")).unwrap();
        match resolve_checkpoints(&[d.path().join("cv")]) {
            Err(TrainError::Checkpoint { path, .. }) => {
                assert_eq!(path, d.path().join("cv/fold_1"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn overrides_change_only_what_they_name() {
        let base = InferenceConfig {
            patch: [16, 24, 8],
            overlap: 0.25,
            ..Default::default()
        };
        assert_eq!(InferenceOverrides::default().apply(&base), base);
        let o = InferenceOverrides {
            flip_tta: Some(true),
            overlap: Some(0.5),
            batch_size: Some(7),
            precision: Some(Precision::Bf16),
        };
        let got = o.apply(&base);
        assert_eq!(
            got,
            InferenceConfig {
                flip_tta: true,
                overlap: 0.5,
                batch_size: 7,
                precision: Precision::Bf16,
                ..base
            }
        );
    }
}
