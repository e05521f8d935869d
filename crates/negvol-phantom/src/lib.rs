//! # negvol-phantom
//!
//! Seeded synthetic temporomandibular-joint phantoms: a CT-like image, the mandibular condyle
//! (MC) and temporal bone (TB) masks and the negative volume (NV) known analytically.
