//! Network configurations (serde, JSON), one variant per architecture.

use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};

/// Which network to build and its options. Serialised as JSON with an `arch` tag:
///
/// ```json
/// {"arch": "unet3d", "f_maps": [32, 64, 128, 256]}
/// {"arch": "unet3d-att"}
/// {"arch": "vnet", "skip_dropout": 0.5}
/// {"arch": "unet", "features": [32, 64, 128, 256, 320], "norm": {"type": "instance"}, "deep_supervision": true}
/// ```
///
/// Missing fields take the defaults documented on each option struct (the seed paper's values for
/// the three paper networks). Unknown fields are rejected, so a typo does not silently fall back
/// to a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch")]
#[non_exhaustive]
pub enum NetConfig {
    /// The paper's 3D U-Net (pytorch-3dunet family).
    #[serde(rename = "unet3d")]
    Unet3d(Unet3dConfig),
    /// The paper's 3D U-Net with additive attention gates on the skip connections.
    #[serde(rename = "unet3d-att")]
    Unet3dAtt(Unet3dAttConfig),
    /// The paper's V-Net (Milletari et al.).
    #[serde(rename = "vnet")]
    Vnet(VnetConfig),
    /// A modern configurable nnU-Net-style U-Net.
    #[serde(rename = "unet")]
    Unet(UnetConfig),
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig::Unet3d(Unet3dConfig::default())
    }
}

/// Options of the paper's 3D U-Net ([`NetConfig::Unet3d`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Unet3dConfig {
    /// Input channels (default 1).
    pub in_channels: i64,
    /// Output classes, i.e. logit channels (default 2).
    pub classes: i64,
    /// Feature maps per level, shallowest first (default `[32, 64, 128, 256]`: 4 levels, 3
    /// max-pools, so inputs must be divisible by 8).
    pub f_maps: Vec<i64>,
    /// GroupNorm groups (default 8; a layer with fewer channels uses one group per channel, as
    /// pytorch-3dunet does).
    pub num_groups: i64,
}

impl Default for Unet3dConfig {
    fn default() -> Self {
        Self {
            in_channels: 1,
            classes: 2,
            f_maps: vec![32, 64, 128, 256],
            num_groups: 8,
        }
    }
}

/// Options of the paper's 3D U-Net with attention gates ([`NetConfig::Unet3dAtt`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Unet3dAttConfig {
    /// Input channels (default 1).
    pub in_channels: i64,
    /// Output classes (default 2).
    pub classes: i64,
    /// Feature maps per level, shallowest first (default `[32, 64, 128, 256]`).
    pub f_maps: Vec<i64>,
    /// GroupNorm groups (default 8).
    pub num_groups: i64,
    /// Inner channels of each attention gate, deepest decoder level first. Default (`None`): half
    /// the skip connection's channels, which gives the paper's 64, 32, 16 for the default widths.
    pub attention_channels: Option<Vec<i64>>,
}

impl Default for Unet3dAttConfig {
    fn default() -> Self {
        Self {
            in_channels: 1,
            classes: 2,
            f_maps: vec![32, 64, 128, 256],
            num_groups: 8,
            attention_channels: None,
        }
    }
}

/// Options of the paper's V-Net ([`NetConfig::Vnet`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VnetConfig {
    /// Input channels (default 1); must divide `base_channels` (the input transition's residual
    /// repeats the input to `base_channels` channels).
    pub in_channels: i64,
    /// Output classes (default 2).
    pub classes: i64,
    /// Channels of the input transition (default 16); they double at each down transition
    /// (16, 32, 64, 128, 256).
    pub base_channels: i64,
    /// Number of 5x5x5 convolutions in each down transition, shallowest first (default
    /// `[2, 3, 3, 3]`); its length is the depth, so inputs must be divisible by `2^depth` (16).
    pub down_convs: Vec<usize>,
    /// Number of convolutions in each up transition, deepest first (default `[3, 3, 2, 1]`); same
    /// length as `down_convs`.
    pub up_convs: Vec<usize>,
    /// Convolution kernel size (default 5).
    pub kernel: i64,
    /// Dropout3d probability on the input of every down and up transition (default 0: off; the
    /// paper's code has none).
    pub dropout: f64,
    /// Dropout3d probability on the skip connection in every up transition (default 0: off; the
    /// paper's code always applies 0.5 in training).
    pub skip_dropout: f64,
    /// Use batch statistics in BatchNorm even in evaluation (the paper's `ContBatchNorm3d`).
    /// Default false: standard train/eval behaviour with running statistics.
    pub batch_stats_in_eval: bool,
}

impl Default for VnetConfig {
    fn default() -> Self {
        Self {
            in_channels: 1,
            classes: 2,
            base_channels: 16,
            down_convs: vec![2, 3, 3, 3],
            up_convs: vec![3, 3, 2, 1],
            kernel: 5,
            dropout: 0.0,
            skip_dropout: 0.0,
            batch_stats_in_eval: false,
        }
    }
}

/// Normalisation layer of the modern U-Net.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum NormConfig {
    /// Instance normalisation with affine parameters (nnU-Net's default), eps 1e-5.
    Instance,
    /// Group normalisation with the given number of groups (must divide every width).
    Group {
        /// Number of groups.
        groups: i64,
    },
    /// Batch normalisation (momentum 0.1, eps 1e-5, running statistics in evaluation).
    Batch,
}

/// Options of the modern nnU-Net-style U-Net ([`NetConfig::Unet`]).
///
/// Stage `s` has `convs_per_stage` convolutions (conv with bias, norm, LeakyReLU) of kernel
/// `kernel_sizes[s]` (3x3x3 by default) with "same" padding `k / 2` per axis; the first conv of
/// every stage but the first down-samples by a strided convolution (`strides[s]`). The decoder
/// up-samples with a transposed convolution (kernel = stride), concatenates (skip, up-sampled)
/// and applies `convs_per_stage` convolutions with the kernel of the encoder stage of the same
/// resolution (as nnU-Net does); a 1x1x1 convolution gives the logits. With deep supervision,
/// every decoder stage has its own 1x1x1 output head.
///
/// ```json
/// {"arch": "unet", "features": [32, 64, 128], "strides": [[1, 1, 1], [2, 2, 1], [2, 2, 2]],
///  "kernel_sizes": [[3, 3, 1], [3, 3, 3], [3, 3, 3]]}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnetConfig {
    /// Input channels (default 1).
    pub in_channels: i64,
    /// Output classes (default 2).
    pub classes: i64,
    /// Channels per stage, shallowest first (default `[32, 64, 128, 256, 320]`, nnU-Net's widths
    /// capped at 320); the number of entries is the depth.
    pub features: Vec<i64>,
    /// Down-sampling stride per stage and axis (i, j, k). Default (`None`): `[1,1,1]` for the
    /// first stage and `[2,2,2]` for the others. Anisotropic strides (e.g. `[2,2,1]`) are allowed.
    pub strides: Option<Vec<[i64; 3]>>,
    /// Convolution kernel per stage and axis (i, j, k), shallowest first, one entry per stage;
    /// every size odd and >= 1 (1 on an axis: no mixing of voxels along it at that stage, as
    /// nnU-Net plans for an axis whose spacing is still more than 2x coarser than the finest).
    /// Decoder stages use the kernel of the encoder stage of the same resolution. Default
    /// (`None`): 3x3x3 everywhere. Left out of the JSON when `None`, so default configurations
    /// (and the checkpoints that carry them) read as before the option existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_sizes: Option<Vec<[i64; 3]>>,
    /// Convolutions per encoder and decoder stage (default 2).
    pub convs_per_stage: usize,
    /// Normalisation (default instance norm).
    pub norm: NormConfig,
    /// LeakyReLU negative slope (default 0.01).
    pub negative_slope: f64,
    /// Return one output per decoder stage from [`crate::SegmentationNet::forward_deep`]
    /// (default false).
    pub deep_supervision: bool,
}

impl Default for UnetConfig {
    fn default() -> Self {
        Self {
            in_channels: 1,
            classes: 2,
            features: vec![32, 64, 128, 256, 320],
            strides: None,
            kernel_sizes: None,
            convs_per_stage: 2,
            norm: NormConfig::Instance,
            negative_slope: 0.01,
            deep_supervision: false,
        }
    }
}

impl UnetConfig {
    /// Strides per stage, with the default filled in.
    pub fn resolved_strides(&self) -> Vec<[i64; 3]> {
        match &self.strides {
            Some(s) => s.clone(),
            None => (0..self.features.len())
                .map(|s| if s == 0 { [1, 1, 1] } else { [2, 2, 2] })
                .collect(),
        }
    }

    /// Convolution kernels per stage, with the default (3x3x3 for every stage) filled in.
    pub fn resolved_kernel_sizes(&self) -> Vec<[i64; 3]> {
        match &self.kernel_sizes {
            Some(k) => k.clone(),
            None => vec![[3, 3, 3]; self.features.len()],
        }
    }
}

fn check(cond: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(NetError::Config(msg()))
    }
}

fn check_common(in_channels: i64, classes: i64) -> Result<()> {
    check(in_channels >= 1, || {
        format!("in_channels must be >= 1, got {in_channels}")
    })?;
    check(classes >= 1, || {
        format!("classes must be >= 1, got {classes}")
    })
}

fn check_prob(name: &str, p: f64) -> Result<()> {
    check((0.0..1.0).contains(&p), || {
        format!("{name} must be in [0, 1), got {p}")
    })
}

fn check_fmaps(f_maps: &[i64], num_groups: i64) -> Result<()> {
    check(f_maps.len() >= 2, || {
        format!("f_maps needs at least 2 levels, got {f_maps:?}")
    })?;
    check(f_maps.iter().all(|&f| f >= 1), || {
        format!("f_maps must be positive, got {f_maps:?}")
    })?;
    check(num_groups >= 1, || {
        format!("num_groups must be >= 1, got {num_groups}")
    })
}

impl NetConfig {
    /// Parses a JSON configuration.
    pub fn from_json(json: &str) -> Result<Self> {
        let cfg: NetConfig = serde_json::from_str(json).map_err(|source| NetError::Json {
            origin: "string".into(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a JSON configuration file.
    pub fn from_json_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| NetError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: NetConfig = serde_json::from_str(&text).map_err(|source| NetError::Json {
            origin: path.display().to_string(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain data structs with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The default configuration of an architecture by its `arch` name
    /// (`unet3d`, `unet3d-att`, `vnet`, `unet`).
    pub fn default_for(arch: &str) -> Result<Self> {
        match arch {
            "unet3d" => Ok(NetConfig::Unet3d(Unet3dConfig::default())),
            "unet3d-att" => Ok(NetConfig::Unet3dAtt(Unet3dAttConfig::default())),
            "vnet" => Ok(NetConfig::Vnet(VnetConfig::default())),
            "unet" => Ok(NetConfig::Unet(UnetConfig::default())),
            other => Err(NetError::Config(format!(
                "unknown arch {other:?}; expected unet3d, unet3d-att, vnet or unet"
            ))),
        }
    }

    /// The `arch` tag of this configuration.
    pub fn arch(&self) -> &'static str {
        match self {
            NetConfig::Unet3d(_) => "unet3d",
            NetConfig::Unet3dAtt(_) => "unet3d-att",
            NetConfig::Vnet(_) => "vnet",
            NetConfig::Unet(_) => "unet",
        }
    }

    /// Input channels.
    pub fn in_channels(&self) -> i64 {
        match self {
            NetConfig::Unet3d(c) => c.in_channels,
            NetConfig::Unet3dAtt(c) => c.in_channels,
            NetConfig::Vnet(c) => c.in_channels,
            NetConfig::Unet(c) => c.in_channels,
        }
    }

    /// Output classes (logit channels).
    pub fn classes(&self) -> i64 {
        match self {
            NetConfig::Unet3d(c) => c.classes,
            NetConfig::Unet3dAtt(c) => c.classes,
            NetConfig::Vnet(c) => c.classes,
            NetConfig::Unet(c) => c.classes,
        }
    }

    /// The total down-sampling factor per spatial axis: inputs must be divisible by it.
    pub fn size_divisor(&self) -> [i64; 3] {
        match self {
            NetConfig::Unet3d(c) => {
                let d = 1i64 << (c.f_maps.len().saturating_sub(1)).min(62);
                [d; 3]
            }
            NetConfig::Unet3dAtt(c) => {
                let d = 1i64 << (c.f_maps.len().saturating_sub(1)).min(62);
                [d; 3]
            }
            NetConfig::Vnet(c) => {
                let d = 1i64 << c.down_convs.len().min(62);
                [d; 3]
            }
            NetConfig::Unet(c) => {
                let mut d = [1i64; 3];
                for s in c.resolved_strides() {
                    for a in 0..3 {
                        d[a] = d[a].saturating_mul(s[a].max(1));
                    }
                }
                d
            }
        }
    }

    /// Checks the options for consistency (called by [`crate::build`]).
    pub fn validate(&self) -> Result<()> {
        match self {
            NetConfig::Unet3d(c) => {
                check_common(c.in_channels, c.classes)?;
                check_fmaps(&c.f_maps, c.num_groups)
            }
            NetConfig::Unet3dAtt(c) => {
                check_common(c.in_channels, c.classes)?;
                check_fmaps(&c.f_maps, c.num_groups)?;
                if let Some(a) = &c.attention_channels {
                    check(a.len() + 1 == c.f_maps.len(), || {
                        format!(
                            "attention_channels needs {} entries (one per decoder level), got {a:?}",
                            c.f_maps.len() - 1
                        )
                    })?;
                    check(a.iter().all(|&x| x >= 1), || {
                        format!("attention_channels must be positive, got {a:?}")
                    })?;
                } else {
                    check(c.f_maps.iter().all(|&f| f >= 2), || {
                        format!(
                            "default attention channels (half the skip's) need f_maps >= 2, got {:?}",
                            c.f_maps
                        )
                    })?;
                }
                Ok(())
            }
            NetConfig::Vnet(c) => {
                check_common(c.in_channels, c.classes)?;
                check(c.base_channels >= 1, || {
                    format!("base_channels must be >= 1, got {}", c.base_channels)
                })?;
                check(c.base_channels % c.in_channels == 0, || {
                    format!(
                        "base_channels {} must be a multiple of in_channels {} (input residual)",
                        c.base_channels, c.in_channels
                    )
                })?;
                check(!c.down_convs.is_empty() && c.down_convs.len() <= 8, || {
                    format!("down_convs needs 1 to 8 entries, got {:?}", c.down_convs)
                })?;
                check(c.up_convs.len() == c.down_convs.len(), || {
                    format!(
                        "up_convs {:?} must have as many entries as down_convs {:?}",
                        c.up_convs, c.down_convs
                    )
                })?;
                check(c.kernel >= 1 && c.kernel % 2 == 1, || {
                    format!("kernel must be odd and >= 1, got {}", c.kernel)
                })?;
                check_prob("dropout", c.dropout)?;
                check_prob("skip_dropout", c.skip_dropout)
            }
            NetConfig::Unet(c) => {
                check_common(c.in_channels, c.classes)?;
                check(c.features.len() >= 2 && c.features.len() <= 10, || {
                    format!("features needs 2 to 10 stages, got {:?}", c.features)
                })?;
                check(c.features.iter().all(|&f| f >= 1), || {
                    format!("features must be positive, got {:?}", c.features)
                })?;
                check(c.convs_per_stage >= 1, || {
                    "convs_per_stage must be >= 1".to_string()
                })?;
                check(
                    c.negative_slope.is_finite() && c.negative_slope >= 0.0,
                    || {
                        format!(
                            "negative_slope must be finite and >= 0, got {}",
                            c.negative_slope
                        )
                    },
                )?;
                let strides = c.resolved_strides();
                check(strides.len() == c.features.len(), || {
                    format!(
                        "strides needs one entry per stage ({}), got {}",
                        c.features.len(),
                        strides.len()
                    )
                })?;
                check(
                    strides.iter().flatten().all(|&s| (1..=4).contains(&s)),
                    || format!("strides must be in 1..=4, got {strides:?}"),
                )?;
                if let Some(kernels) = &c.kernel_sizes {
                    check(kernels.len() == c.features.len(), || {
                        format!(
                            "kernel_sizes needs one entry per stage ({}), got {}",
                            c.features.len(),
                            kernels.len()
                        )
                    })?;
                    if let Some((s, k)) = kernels
                        .iter()
                        .enumerate()
                        .find(|(_, k)| k.iter().any(|&x| x < 1 || x % 2 == 0))
                    {
                        return Err(NetError::Config(format!(
                            "kernel_sizes[{s}] = {k:?}: every size must be odd and >= 1 \
                             (padding k / 2 keeps the shape)"
                        )));
                    }
                }
                if let NormConfig::Group { groups } = c.norm {
                    check(
                        groups >= 1 && c.features.iter().all(|f| f % groups == 0),
                        || {
                            format!(
                                "norm groups {groups} must divide every width {:?}",
                                c.features
                            )
                        },
                    )?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unet(json: &str) -> Result<UnetConfig> {
        match NetConfig::from_json(json)? {
            NetConfig::Unet(c) => Ok(c),
            other => panic!("not a unet: {other:?}"),
        }
    }

    #[test]
    fn kernel_sizes_round_trip_through_json() {
        let cfg = NetConfig::Unet(UnetConfig {
            features: vec![4, 8, 16],
            strides: Some(vec![[1, 1, 1], [1, 2, 2], [2, 2, 2]]),
            kernel_sizes: Some(vec![[1, 3, 3], [3, 5, 1], [3, 3, 3]]),
            ..Default::default()
        });
        let json = cfg.to_json();
        assert!(json.contains("kernel_sizes"), "{json}");
        assert_eq!(NetConfig::from_json(&json).unwrap(), cfg);
        let c =
            unet(r#"{"arch": "unet", "features": [4, 8], "kernel_sizes": [[1, 3, 3], [3, 3, 3]]}"#)
                .unwrap();
        assert_eq!(c.resolved_kernel_sizes(), vec![[1, 3, 3], [3, 3, 3]]);
    }

    #[test]
    fn json_without_kernel_sizes_means_three_everywhere_and_is_written_as_before() {
        // The JSON a configuration serialised to before the option existed (as stored in the
        // header of older checkpoints).
        let old = r#"{"arch": "unet", "in_channels": 1, "classes": 3, "features": [4, 8, 16],
            "strides": null, "convs_per_stage": 2, "norm": {"type": "instance"},
            "negative_slope": 0.01, "deep_supervision": true}"#;
        let c = unet(old).unwrap();
        assert_eq!(c.kernel_sizes, None);
        assert_eq!(c.resolved_kernel_sizes(), vec![[3, 3, 3]; 3]);
        // The default is left out, so older readers (deny_unknown_fields) still accept it.
        let json = NetConfig::Unet(c.clone()).to_json();
        assert!(!json.contains("kernel_sizes"), "{json}");
        assert_eq!(unet(&json).unwrap(), c);
        // Unknown fields are still rejected.
        let e = unet(r#"{"arch": "unet", "kernel_size": [[3, 3, 3], [3, 3, 3]]}"#).unwrap_err();
        assert!(matches!(e, NetError::Json { .. }), "{e}");
    }

    #[test]
    fn bad_kernel_sizes_are_config_errors() {
        let cases = [
            // one entry per stage
            (r#"[[3, 3, 3]]"#, "one entry per stage (2), got 1"),
            (
                r#"[[3, 3, 3], [3, 3, 3], [3, 3, 3]]"#,
                "one entry per stage (2), got 3",
            ),
            (r#"[]"#, "one entry per stage (2), got 0"),
            // odd and positive
            (r#"[[3, 3, 3], [3, 2, 3]]"#, "kernel_sizes[1] = [3, 2, 3]"),
            (r#"[[0, 3, 3], [3, 3, 3]]"#, "kernel_sizes[0] = [0, 3, 3]"),
            (r#"[[3, 3, -1], [3, 3, 3]]"#, "kernel_sizes[0] = [3, 3, -1]"),
            (r#"[[3, 3, 3], [4, 4, 4]]"#, "kernel_sizes[1] = [4, 4, 4]"),
        ];
        for (k, want) in cases {
            let json = format!(r#"{{"arch": "unet", "features": [4, 8], "kernel_sizes": {k}}}"#);
            let e = unet(&json).unwrap_err();
            assert!(
                matches!(&e, NetError::Config(m) if m.contains(want)),
                "{k}: {e}"
            );
        }
        // Not three sizes per stage: rejected by the parser.
        let e = unet(r#"{"arch": "unet", "features": [4, 8], "kernel_sizes": [[3, 3], [3, 3]]}"#)
            .unwrap_err();
        assert!(matches!(e, NetError::Json { .. }), "{e}");
        // Valid: 1 and odd sizes up to any size.
        unet(r#"{"arch": "unet", "features": [4, 8], "kernel_sizes": [[1, 1, 1], [5, 7, 3]]}"#)
            .unwrap();
    }
}
