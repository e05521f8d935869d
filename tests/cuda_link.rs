//! The suite's binaries must keep `libtorch_cuda.so` as a NEEDED library, or
//! `tch::Cuda::is_available()` is false even on a GPU machine (see `build.rs`, `shared/GPU.md`).
//!
//! Checks this test's own executable (linked by the same package, with the same link
//! arguments as the examples) and every example binary already built beside it.
//! Skips, saying why, where libtorch has no CUDA library or `readelf` is missing.
#![cfg(feature = "torch")]

use std::path::{Path, PathBuf};
use std::process::Command;

fn needed_libs(binary: &Path) -> Option<Vec<String>> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "readelf -d {} failed: {}",
        binary.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| {
                l.split('[')
                    .nth(1)
                    .map(|s| s.trim_end_matches(']').to_string())
            })
            .collect(),
    )
}

fn examples_dir() -> Option<PathBuf> {
    // target/<profile>/deps/cuda_link-HASH -> target/<profile>/examples
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("examples"))
}

#[test]
fn binaries_keep_libtorch_cuda() {
    if !cfg!(negvol_torch_cuda) {
        eprintln!("skipped: the libtorch in LIBTORCH has no libtorch_cuda.so (CPU-only build)");
        return;
    }
    let me = std::env::current_exe().expect("current_exe");
    let Some(needed) = needed_libs(&me) else {
        eprintln!("skipped: `readelf` is not installed");
        return;
    };
    assert!(
        needed.iter().any(|l| l == "libtorch_cuda.so"),
        "{} does not list libtorch_cuda.so as NEEDED: {needed:?}",
        me.display()
    );
    let mut checked = 0;
    if let Some(dir) = examples_dir().filter(|d| d.is_dir()) {
        for entry in std::fs::read_dir(&dir)
            .expect("read examples dir")
            .flatten()
        {
            let p = entry.path();
            // Executables have no extension (skip `.d` dep-info files and libraries).
            if p.extension().is_some() || !p.is_file() {
                continue;
            }
            let libs = needed_libs(&p).unwrap_or_default();
            if libs.iter().any(|l| l.starts_with("libtorch")) {
                assert!(
                    libs.iter().any(|l| l == "libtorch_cuda.so"),
                    "example {} links libtorch but not libtorch_cuda.so: {libs:?}",
                    p.display()
                );
                checked += 1;
            }
        }
    }
    eprintln!("libtorch_cuda.so is NEEDED by this test binary and by {checked} torch example(s)");
}
