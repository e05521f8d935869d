//! # negvol-suite
//!
//! Facade over the negvol crates, for programs that want the whole toolkit through one
//! dependency. Each crate is also usable on its own:
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`volume`] | `negvol-volume` | volumes with geometry, NIfTI/STL I/O |
//! | [`metrics`] | `negvol-metrics` | Dice, exact EDT, Hausdorff, ASSD, NSD, CE score |
//! | [`nv`] | `negvol` | the negative-volume pipeline |
//! | [`phantom`] | `negvol-phantom` | synthetic TMJ phantoms with analytic truth |
//! | `nets` | `negvol-nets` | 3D U-Net, attention U-Net, V-Net (feature `torch`) |
//! | `losses` | `negvol-losses` | CE, Dice, Dice+CE, ... (feature `torch`) |
//! | `train` | `negvol-train` | training, evaluation, inference (feature `torch`) |
//!
//! The tch-based crates are behind the default feature `torch`; build with
//! `--no-default-features` on a machine without libtorch.

pub use negvol as nv;
pub use negvol_metrics as metrics;
pub use negvol_phantom as phantom;
pub use negvol_volume as volume;

#[cfg(feature = "torch")]
pub use negvol_losses as losses;
#[cfg(feature = "torch")]
pub use negvol_nets as nets;
#[cfg(feature = "torch")]
pub use negvol_train as train;
