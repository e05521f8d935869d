//! # negvol
//!
//! Derives the negative volume (NV) of the temporomandibular joint, the empty space between
//! the mandibular condyle (MC) and the temporal bone (TB), from their masks, and measures it.
