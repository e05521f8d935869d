//! Keeps `libtorch_cuda.so` linked into the suite's binaries (examples, tests, benches) when
//! the `torch` feature is on and libtorch has CUDA.
//!
//! Nothing references `libtorch_cuda.so` directly, so the linker's `--as-needed` would drop
//! it and `tch::Cuda::is_available()` would be false even on a GPU machine. See
//! `shared/GPU.md` and `tests/cuda_link.rs`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        return;
    };
    let lib = libtorch.join("lib");
    // So the binaries also run outside `cargo run`/`make` (cargo's `[env]` LD_LIBRARY_PATH does
    // not reach test processes); LD_LIBRARY_PATH, when set, still wins, e.g. on the GPU
    // machine whose own libtorch is used.
    if lib.is_dir() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
        println!("cargo:rustc-cfg=negvol_torch_cuda");
    }
    println!("cargo::rustc-check-cfg=cfg(negvol_torch_cuda)");
}
