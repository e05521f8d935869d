#!/usr/bin/env python3
"""negvol's connected components against scipy.ndimage.label, on the same masks, in one run.

Writes each mask as NIfTI, runs the negvol `components` example on it (--json, --repeat; the
fastest labelling after reading the file, all threads unless --threads) and
`scipy.ndimage.label` in this process with the structuring element of the same connectivity
(fastest of the same number of runs), checks that the two label maps are identical (same
partition and same numbering: both number components in index order of their first voxel), and
prints the times and their ratio.

Masks:
  sphere_pair_256  two balls of radius 48 voxels, 16 voxels apart, on 256^3 (long runs)
  random30_128     each voxel foreground with probability 0.3, on 128^3 (short runs)
  blob_686         a smooth blob inside a 686^3 grid (whole-CT size; --large)

Usage (from the repository root, after
`cargo build --release --no-default-features --example components`):
  python3 benches/peers/components_peers.py --bin target/release/examples/components \
      --workdir /tmp/negvol-components [--repeat 5] [--threads 1] [--large]

Needs: numpy, scipy, nibabel.
"""
import argparse
import json
import os
import subprocess
import time

import numpy as np


def sphere_pair():
    i, j, k = np.ogrid[:256, :256, :256]
    m = np.zeros((256, 256, 256), bool)
    for ci in (72.0, 184.0):
        m |= (i - ci) ** 2 + (j - 127.5) ** 2 + (k - 127.5) ** 2 <= 48.0 ** 2
    return m


def random30():
    return np.random.default_rng(30).random((128, 128, 128)) < 0.3


def blob686():
    n = 686
    m = np.zeros((n, n, n), bool)
    j = np.arange(n, dtype=np.float32)[:, None]
    k = np.arange(n, dtype=np.float32)[None, :]
    for i in range(250, 436):
        r2 = ((i - 343.0) / 90.0) ** 2 + ((j - 343.0) / 120.0) ** 2 + ((k - 343.0) / 70.0) ** 2
        m[i] = r2 + 0.05 * np.sin(j / 7.0) * np.cos(k / 5.0) <= 1.0
    return m


def write_nii(path, mask):
    import nibabel as nib
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.eye(4)), path)


def scipy_label(mask, conn, repeat):
    from scipy import ndimage
    rank = {6: 1, 18: 2, 26: 3}[conn]
    st = ndimage.generate_binary_structure(3, rank)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        lab, n = ndimage.label(mask, structure=st)
        best = min(best, time.perf_counter() - t)
    return lab, n, best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="target/release/examples/components")
    ap.add_argument("--workdir", default="/tmp/negvol-components")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--connectivity", default="6,26")
    ap.add_argument("--large", action="store_true", help="add the 686^3 blob")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    masks = [("sphere_pair_256", sphere_pair), ("random30_128", random30)]
    if a.large:
        masks.append(("blob_686", blob686))
    import scipy
    print(f"scipy {scipy.__version__}, numpy {np.__version__}; best of {a.repeat} runs each")
    print(f"{'mask':<16} {'conn':>4} {'components':>10} {'scipy s':>9} {'negvol s':>9} "
          f"{'ratio':>6}  labels")
    for name, make in masks:
        mask = make()
        path = os.path.join(a.workdir, name + ".nii")
        write_nii(path, mask)
        for conn in (int(c) for c in a.connectivity.split(",")):
            out = os.path.join(a.workdir, f"{name}_{conn}_labels.nii")
            cmd = [a.bin, "--mask", path, "--connectivity", str(conn), "--json",
                   "--repeat", str(a.repeat), "--labels-out", out]
            if a.threads:
                cmd += ["--threads", str(a.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            ours = json.loads(res.stdout)
            lab, n, t_scipy = scipy_label(mask, conn, a.repeat)
            import nibabel as nib
            ours_lab = np.asarray(nib.load(out).dataobj)
            same = ours["components"] == n and np.array_equal(ours_lab, lab)
            t_ours = ours["seconds_label"]
            print(f"{name:<16} {conn:>4} {n:>10} {t_scipy:>9.4f} {t_ours:>9.4f} "
                  f"{t_scipy / t_ours:>5.1f}x  {'identical' if same else 'DIFFERENT'}"
                  f" ({ours['threads']} thread(s))")
            os.remove(out)
            if not same:
                raise SystemExit(f"{name}, {conn}-connectivity: label maps differ")


if __name__ == "__main__":
    main()
