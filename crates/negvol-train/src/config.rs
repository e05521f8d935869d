//! [`TrainConfig`]: everything that defines a training run besides the network and loss
//! (which live in the run's model description), serde/JSON so that a run is reproduced from
//! its file alone.

use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::infer::InferenceConfig;
use crate::optim::{LrSchedule, OptimizerConfig};
use crate::preprocess::Normalization;
use crate::sampler::SamplerConfig;
use crate::{Result, TrainError};

/// Numeric precision of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// f32 throughout.
    #[default]
    F32,
    /// CUDA autocast to bfloat16 (no loss scaling needed). On CPU: f32.
    ///
    /// libtorch's CUDA autocast dtype is float16 unless told otherwise, so the trainer sets it
    /// with `at::autocast::set_autocast_dtype` (called by its C++ symbol, present in libtorch
    /// 2.x). Run on an NVIDIA H200 on 2026-11-27 (training, throughput and inference; README
    /// "Measured on a GPU").
    Bf16,
    /// CUDA autocast to float16 with dynamic loss scaling. On CPU: f32.
    F16,
}

impl Precision {
    /// Whether this precision autocasts on `device` (only CUDA does; CPU runs stay f32).
    pub fn autocasts_on(self, device: tch::Device) -> bool {
        self != Precision::F32 && device.is_cuda()
    }

    /// The name used on command lines and in JSON: `f32`, `bf16` or `f16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    /// `f32`, `bf16` or `f16` (any case), as on the examples' `--precision`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        [Precision::F32, Precision::Bf16, Precision::F16]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("precision {s:?}: expected f32, bf16 or f16"))
    }
}

/// Set libtorch's CUDA autocast dtype for `precision` (bf16 or f16) before a
/// [`autocast`]`(true, ..)` region.
pub(crate) fn set_autocast_dtype(precision: Precision) {
    // libtorch's CUDA autocast dtype is float16 unless told otherwise; tch does not expose
    // `at::autocast::set_autocast_dtype`, so call it by its (Itanium-mangled) name.
    extern "C" {
        #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
        fn at_set_autocast_dtype(device: i8, dtype: i8);
    }
    const CUDA: i8 = 1;
    const HALF: i8 = 5;
    const BFLOAT16: i8 = 15;
    if tch::Cuda::is_available() {
        let dtype = if precision == Precision::Bf16 {
            BFLOAT16
        } else {
            HALF
        };
        // SAFETY: plain C++ function taking two int8-backed enums, present in libtorch 2.x.
        unsafe { at_set_autocast_dtype(CUDA, dtype) };
    }
}

// libtorch's autocast state functions, called by their (Itanium-mangled) C++ names. tch's own
// `autocast` goes through `at::autocast::set_enabled`/`is_enabled`, which libtorch 2.11
// deprecates and which print a deprecation warning on every call: thousands of lines per epoch
// on a GPU (seen on the H200, 2026-11-27). These are the functions those wrappers forward to.
extern "C" {
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn at_is_autocast_enabled(device: i8) -> bool;
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn at_set_autocast_enabled(device: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast17increment_nestingEv"]
    fn at_autocast_increment_nesting() -> i32;
    #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
    fn at_autocast_decrement_nesting() -> i32;
    #[link_name = "_ZN2at8autocast11clear_cacheEv"]
    fn at_autocast_clear_cache();
}

/// `c10::DeviceType::CUDA`.
const DEVICE_TYPE_CUDA: i8 = 1;

/// Whether libtorch's CUDA autocast is on in this thread.
fn cuda_autocast_enabled() -> bool {
    // SAFETY: a plain C++ function of an int8-backed enum that reads a thread-local flag;
    // present in libtorch 2.x and callable without a GPU.
    unsafe { at_is_autocast_enabled(DEVICE_TYPE_CUDA) }
}

/// Restores the CUDA autocast state of the enclosing scope when dropped (also on a panic).
struct AutocastGuard {
    previous: bool,
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: as in `cuda_autocast_enabled`; these set thread-local state and free the
        // autocast cast cache, which is what leaving an autocast region does in PyTorch.
        unsafe {
            if at_autocast_decrement_nesting() == 0 {
                at_autocast_clear_cache();
            }
            at_set_autocast_enabled(DEVICE_TYPE_CUDA, self.previous);
        }
    }
}

/// Run `f` with libtorch's CUDA autocast on (`enabled`) or off, then restore the previous
/// state; what `tch::autocast` does, without libtorch's per-call deprecation warning. With
/// `enabled` false outside any autocast region it only runs `f`. The dtype is set separately
/// ([`set_autocast_dtype`]).
pub(crate) fn autocast<T>(enabled: bool, f: impl FnOnce() -> T) -> T {
    let previous = cuda_autocast_enabled();
    if !enabled && !previous {
        return f();
    }
    // SAFETY: as in `cuda_autocast_enabled`; the guard undoes both calls.
    unsafe {
        at_set_autocast_enabled(DEVICE_TYPE_CUDA, enabled);
        at_autocast_increment_nesting();
    }
    let _guard = AutocastGuard { previous };
    f()
}

/// Validation during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ValidationConfig {
    /// Validate every this many epochs (and after the last one). 0 disables validation.
    pub every: usize,
    /// Stop after this many validations without a better mean Dice.
    pub patience: Option<usize>,
    /// Also compute HD95 (slower).
    pub hd95: bool,
    /// Sliding-window settings used for validation (and saved for inference).
    pub inference: InferenceConfig,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            every: 1,
            patience: None,
            hd95: true,
            inference: InferenceConfig::default(),
        }
    }
}

/// A training run's data handling, optimisation and bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Structures to segment, in class order (class `t + 1` is `targets[t]`), e.g. `["mc"]`.
    pub targets: Vec<String>,
    /// Intensity normalisation (fitted on the training cases when needed).
    pub normalization: Normalization,
    /// Reorient every case (training) and every image (inference) to this orientation code,
    /// e.g. `"RAS"`, before anything else: an exact permutation and flip of the voxel axes
    /// ([`negvol_volume::AxisTransform`], no interpolation), undone on the prediction, so the
    /// network sees the anatomy the same way whatever a scan's storage order (DICOM series
    /// are usually LPS, many NIfTI files RAS) and flip/rotation axes of the augmentation name
    /// anatomical axes. `None`: voxels in stored order. `"RAS"` for new runs
    /// ([`TrainConfig::default`]); a run configuration written before this field existed
    /// reads `None`, so older models predict as they were trained.
    #[serde(default)]
    pub orientation: Option<String>,
    /// Resample every case to this spacing (mm) before training and inference.
    pub target_spacing: Option<[f64; 3]>,
    /// Crop every training case to the bounding box of its labels grown by this margin (mm
    /// per side) before sampling: a volume of interest around the joint, as the seed paper
    /// trains on VOIs. Inference still covers the whole image. `None`: no crop.
    pub crop_margin_mm: Option<f64>,
    /// Label maps mark unannotated voxels with [`crate::IGNORE_LABEL`] (sparse annotation, as
    /// nnU-Net's `ignore` label): the loss leaves them out (its `ignore_index` is set to
    /// 255 by [`crate::run::build_trainer`]), patch centres, the crop and normalisation
    /// statistics come from annotated foreground only, and validation Dice counts annotated
    /// voxels only (HD95 is not computed on such cases). The `train` example sets it when the
    /// dataset has unannotated voxels. A configuration written before the field reads `false`.
    #[serde(default)]
    pub ignore_label: bool,
    /// Patch sampling.
    pub sampler: SamplerConfig,
    /// Augmentation.
    pub augment: AugmentConfig,
    /// Optimiser.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
    /// Number of epochs.
    pub epochs: usize,
    /// Wall-clock budget (minutes) of one [`crate::Trainer::fit`] call; `None`: no limit.
    ///
    /// Checked after the training batches of every epoch: when the time spent in this call
    /// plus the mean time of one epoch so far would pass the budget, that epoch is the last
    /// one (it is validated if validation is on, and checkpointed) and the run ends with
    /// [`crate::checkpoint::TrainState::stopped_by_time_budget`] set. At least one epoch
    /// always runs. The run stays deterministic only while the budget is not reached: where
    /// it stops depends on the machine's speed, so reproducible runs size `epochs` to end
    /// well within it and keep the budget as a safety limit.
    pub max_minutes: Option<f64>,
    /// Clip the global gradient norm to this value.
    pub grad_clip: Option<f64>,
    /// Forward precision.
    pub precision: Precision,
    /// Seed of every random choice (data, augmentation, initialisation, dropout).
    pub seed: u64,
    /// Validation and early stopping.
    pub validation: ValidationConfig,
}

impl Default for TrainConfig {
    /// The seed paper's settings: Adam 1e-4, weight decay 0.01, StepLR(30, 0.1), 100 epochs
    /// of 80 patches of 112x144x64, batch 1, its augmentations, min-max normalisation.
    fn default() -> Self {
        Self {
            targets: vec!["mc".into()],
            normalization: Normalization::DatasetMinMax {
                min: None,
                max: None,
            },
            orientation: Some("RAS".into()),
            target_spacing: None,
            crop_margin_mm: None,
            ignore_label: false,
            sampler: SamplerConfig::default(),
            augment: AugmentConfig::paper(),
            optimizer: OptimizerConfig::default(),
            schedule: LrSchedule::default(),
            epochs: 100,
            max_minutes: None,
            grad_clip: None,
            precision: Precision::F32,
            seed: 0,
            validation: ValidationConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Check every part.
    pub fn validate(&self) -> Result<()> {
        if self.targets.is_empty() {
            return Err(TrainError::Config("no target structure".into()));
        }
        if let Some(m) = self.crop_margin_mm {
            if !(m >= 0.0 && m.is_finite()) {
                return Err(TrainError::Config(format!(
                    "crop margin {m} mm must be finite and >= 0"
                )));
            }
        }
        if let Some(code) = &self.orientation {
            negvol_volume::parse_orientation_code(code)
                .map_err(|e| TrainError::Config(format!("orientation: {e}")))?;
        }
        if self.epochs == 0 {
            return Err(TrainError::Config("epochs must be > 0".into()));
        }
        if let Some(m) = self.max_minutes {
            if !(m > 0.0 && m.is_finite()) {
                return Err(TrainError::Config(format!(
                    "time budget max_minutes = {m} must be finite and > 0"
                )));
            }
        }
        if let Some(c) = self.grad_clip {
            if !(c > 0.0) {
                return Err(TrainError::Config(format!("gradient clip {c} must be > 0")));
            }
        }
        self.sampler.validate()?;
        self.augment.validate()?;
        self.optimizer.validate()?;
        self.validation.inference.validate()
    }

    /// Number of classes including background.
    pub fn classes(&self) -> usize {
        self.targets.len() + 1
    }

    /// The class index of a target structure (`targets[t]` is class `t + 1`), e.g. for
    /// [`crate::Prediction::mask`].
    pub fn class_of(&self, target: &str) -> Result<u8> {
        self.targets
            .iter()
            .position(|t| t == target)
            .and_then(|t| u8::try_from(t + 1).ok())
            .ok_or_else(|| {
                TrainError::Config(format!(
                    "the model does not segment {target:?}; its targets are {:?}",
                    self.targets
                ))
            })
    }

    /// Read from a JSON file.
    pub fn from_json_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| TrainError::Json {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocast_regions_nest_and_restore_the_previous_state() {
        // CUDA autocast is a thread-local flag: settable and readable without a GPU.
        assert!(!cuda_autocast_enabled());
        let seen = autocast(true, || {
            let outer = cuda_autocast_enabled();
            let inner = autocast(false, cuda_autocast_enabled);
            (outer, inner, cuda_autocast_enabled())
        });
        assert_eq!(seen, (true, false, true));
        assert!(!cuda_autocast_enabled());
        // Off outside any region runs the closure and touches nothing.
        assert_eq!(autocast(false, || 7), 7);
        // A panic inside the region still restores the state.
        let r = std::panic::catch_unwind(|| autocast(true, || -> u8 { panic!("inside") }));
        assert!(r.is_err());
        assert!(!cuda_autocast_enabled());
    }

    #[test]
    fn precision_names_parse_print_and_match_json() {
        for p in [Precision::F32, Precision::Bf16, Precision::F16] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.name());
        }
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert!("fp16"
            .parse::<Precision>()
            .unwrap_err()
            .contains("expected f32"));
    }

    #[test]
    fn orientation_defaults_to_ras_but_older_configs_read_none() {
        assert_eq!(TrainConfig::default().orientation.as_deref(), Some("RAS"));
        let old: TrainConfig = serde_json::from_str(r#"{"targets": ["mc"]}"#).unwrap();
        assert_eq!(old.orientation, None);
        let c = TrainConfig {
            orientation: Some("XYZ".into()),
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("orientation"), "{e}");
    }

    #[test]
    fn round_trips_through_json() {
        let c = TrainConfig {
            normalization: Normalization::default(),
            precision: Precision::Bf16,
            ..Default::default()
        };
        let s = serde_json::to_string(&c).unwrap();
        let d: TrainConfig = serde_json::from_str(&s).unwrap();
        assert_eq!(c, d);
        assert!(c.validate().is_ok());
        // Missing fields take defaults.
        let e: TrainConfig = serde_json::from_str(r#"{"epochs": 3}"#).unwrap();
        assert_eq!(e.epochs, 3);
        assert_eq!(e.sampler, SamplerConfig::default());
        assert_eq!(e.max_minutes, None);
        let b: TrainConfig = serde_json::from_str(r#"{"max_minutes": 1.5}"#).unwrap();
        assert_eq!(b.max_minutes, Some(1.5));
    }

    #[test]
    fn class_of_follows_the_target_order() {
        let c = TrainConfig {
            targets: vec!["mc".into(), "tb".into()],
            ..Default::default()
        };
        assert_eq!(c.class_of("mc").unwrap(), 1);
        assert_eq!(c.class_of("tb").unwrap(), 2);
        let e = c.class_of("nv").unwrap_err().to_string();
        assert!(
            e.contains("\"nv\"") && e.contains("[\"mc\", \"tb\"]"),
            "{e}"
        );
    }

    #[test]
    fn time_budget_must_be_positive_and_finite() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let c = TrainConfig {
                max_minutes: Some(bad),
                ..Default::default()
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("max_minutes"), "{bad}: {e}");
        }
        let ok = TrainConfig {
            max_minutes: Some(0.01),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
    }
}
