#!/usr/bin/env bash
# Provision libtorch for the tch-based crates without anything installed by hand.
#
# libtorch comes from the PyPI wheel torch==$TORCH_VERSION (it ships libtorch with headers).
# It is installed once into a cache outside the clone ($NEGVOL_CACHE, default
# ~/.cache/negvol/torch-$TORCH_VERSION) and linked into the repository as `.libtorch`,
# which `.cargo/config.toml` points LIBTORCH and LD_LIBRARY_PATH at.
# The install is atomic: it goes into a temporary folder that is renamed when complete,
# so an interrupted download never leaves a half-installed cache behind.
set -euo pipefail

TORCH_VERSION="${TORCH_VERSION:-2.11.0}"   # must match tch =0.24.0 (see shared/GPU.md)
CACHE="${NEGVOL_CACHE:-$HOME/.cache/negvol}"
DEST="$CACHE/torch-$TORCH_VERSION"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"

if [ ! -f "$DEST/torch/lib/libtorch_cpu.so" ]; then
    mkdir -p "$CACHE"
    TMP="$(mktemp -d "$CACHE/torch-$TORCH_VERSION.XXXXXX.partial")"
    trap 'rm -rf "$TMP"' EXIT
    echo "libtorch: installing torch==$TORCH_VERSION from PyPI into $DEST (once; about 4.5 GB)" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
        --target "$TMP" "torch==$TORCH_VERSION" >&2
    test -f "$TMP/torch/lib/libtorch_cpu.so" || { echo "libtorch: torch wheel has no lib/libtorch_cpu.so" >&2; exit 1; }
    rm -rf "$DEST"
    mv "$TMP" "$DEST"
    trap - EXIT
fi

# (Re)point the repository's link at the cache.
if [ "$(readlink "$ROOT/.libtorch" 2>/dev/null || true)" != "$DEST" ]; then
    rm -rf "$ROOT/.libtorch"
    ln -s "$DEST" "$ROOT/.libtorch"
fi
echo "libtorch: $DEST" >&2
