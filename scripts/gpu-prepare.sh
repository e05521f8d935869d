#!/usr/bin/env bash
# Stage, on this (build) machine, what scripts/gpu-session.sh runs on the GPU machine, which has
# PyTorch 2.11 but no Rust toolchain and no network: stripped release example binaries (they
# link libtorch dynamically and find the machine's copy through LD_LIBRARY_PATH) and the MONAI
# wheel (pure Python; the PyTorch sliding-window peer). Everything goes to .gpu/ (git-ignored,
# a few MB); name `.gpu` in the device run's `carry`. See README "GPU".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/libtorch.sh
export LD_LIBRARY_PATH="$PWD/.libtorch/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
BINS="train-bench phantom train eval pipeline metrics plan"
cargo build --release $(for b in $BINS; do printf -- '--example %s ' "$b"; done)
rm -rf .gpu.tmp && mkdir -p .gpu.tmp
for b in $BINS; do
    strip -o ".gpu.tmp/$b" "target/release/examples/$b"
    # CUDA must survive linking (see GPU.md): refuse to stage a binary without libtorch_cuda.
    if ! readelf -d ".gpu.tmp/$b" | grep -q 'libtorch_cuda.so'; then
        case "$b" in phantom|metrics) ;; *) echo "$b does not need libtorch_cuda.so" >&2; exit 1 ;; esac
    fi
done
MONAI_VERSION=1.6.1
python3 -m pip download --quiet --no-deps --dest .gpu.tmp "monai==$MONAI_VERSION"
rm -rf .gpu && mv .gpu.tmp .gpu
du -sh .gpu
ls -l .gpu
