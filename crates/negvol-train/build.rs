//! Adds libtorch's library folder to the run path of this crate's own test binaries (and doc
//! tests), so `cargo test -p <crate>` runs without `LD_LIBRARY_PATH` (cargo's `[env]` table
//! does not reach the test processes' dynamic loader). `LD_LIBRARY_PATH`, when set, still wins
//! for libraries it lists first, e.g. on the GPU machine with its own libtorch.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) {
        let lib = libtorch.join("lib");
        if lib.is_dir() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        }
    }
}
