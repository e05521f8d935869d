#!/usr/bin/env python3
"""negvol-metrics against the Python peers, on the same masks, in one run.

Writes a pair of realistic masks (a smooth blob and the same blob with a smooth boundary error
and a small shift) as NIfTI, runs the negvol `metrics` example (--json) and each Python peer in
its own process (timed around the metric calls only, after loading; peak RSS of the whole
process from /usr/bin/time), then prints every value side by side with its difference, the time
ratios and the peak memory.

Peers and the negvol value each one is compared with (same definition):
  DeepMind surface-distance  surfel variant (hd, hd95, directed means, nsd)  [areas differ by design]
  MONAI 1.x                  voxel surface, 6-conn (hd, hd95 = max of directed, assd pooled, nsd)
  MedPy >= 0.5               voxel surface, 6-conn (hd, hd95 pooled, assd pooled)
  SimpleITK                  solid-set HD and average HD (HausdorffDistanceImageFilter)

Usage (from the repository root, after
`cargo build --release --no-default-features --example metrics`):
  python benches/peers/metrics_peers.py --shape 256,256,256 --spacing 0.4,0.4,0.4 \
      --bin target/release/examples/metrics --workdir /tmp/negvol-peers

Needs: numpy, scipy, nibabel, SimpleITK, medpy, monai (+ torch), surface-distance.
A peer whose package is missing is reported as skipped.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


# ----------------------------------------------------------------------------- masks
def blob(shape, seed, shift=(0.0, 0.0, 0.0), error=0.0):
    """A smooth star-shaped blob: r(x) <= 1 + perturbation(direction)."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(1234)
    c = np.array(shape, float) / 2.0 + np.array(shift)
    a = np.array(shape, float) * 0.3
    # Low-frequency shape harmonics shared by both masks, plus an optional error term.
    fb = base.normal(size=(6, 3)) * 2.0
    pb = base.uniform(0, 2 * np.pi, 6)
    ab = base.uniform(0.03, 0.08, 6)
    fe = rng.normal(size=(6, 3)) * 3.0
    pe = rng.uniform(0, 2 * np.pi, 6)
    ae = rng.uniform(0.5, 1.0, 6) * error / 6.0
    out = np.zeros(shape, bool)
    j = (np.arange(shape[1], dtype=np.float32)[:, None] - c[1]) / a[1]
    k = (np.arange(shape[2], dtype=np.float32)[None, :] - c[2]) / a[2]
    for i in range(shape[0]):
        x = np.float32((i - c[0]) / a[0])
        r = np.sqrt(x * x + j * j + k * k) + np.float32(1e-6)
        u = (x / r, j / r, k / r)
        p = np.zeros_like(r)
        for f, ph, am in list(zip(fb, pb, ab)) + list(zip(fe, pe, ae)):
            p += np.float32(am) * np.sin(f[0] * u[0] + f[1] * u[1] + f[2] * u[2] + ph)
        out[i] = r <= 1.0 + p
    return out


def write_nii(path, mask, spacing):
    import nibabel as nib
    img = nib.Nifti1Image(mask.astype(np.uint8), np.diag(list(spacing) + [1.0]))
    nib.save(img, path)


def load(path):
    """The mask and its spacing as stored (NIfTI pixdim is float32, as negvol reads it)."""
    import nibabel as nib
    img = nib.load(path)
    return np.asarray(img.dataobj).astype(bool), tuple(float(z) for z in img.header.get_zooms())


# ----------------------------------------------------------------------------- peers
def peer_deepmind(r, p, sp, pct, tau):
    import surface_distance as sd
    t = time.perf_counter()
    d = sd.compute_surface_distances(r, p, sp)
    vals = {
        "surfel_hd": sd.compute_robust_hausdorff(d, 100),
        "surfel_hd_percentile": sd.compute_robust_hausdorff(d, pct),
        "surfel_nsd": sd.compute_surface_dice_at_tolerance(d, tau),
    }
    a, b = sd.compute_average_surface_distance(d)
    vals["surfel_mean_ref_to_pred"], vals["surfel_mean_pred_to_ref"] = a, b
    vals["dice"] = sd.compute_dice_coefficient(r, p)
    return time.perf_counter() - t, vals


def peer_monai(r, p, sp, pct, tau):
    import torch
    from monai.metrics import (compute_average_surface_distance,
                               compute_hausdorff_distance, compute_surface_dice)
    t = time.perf_counter()
    y = torch.from_numpy(r)[None, None]
    yp = torch.from_numpy(p)[None, None]
    kw = dict(include_background=True, spacing=list(sp))
    vals = {
        "hd": float(compute_hausdorff_distance(yp, y, **kw)),
        "hd_percentile": float(compute_hausdorff_distance(yp, y, percentile=pct, **kw)),
        "assd": float(compute_average_surface_distance(yp, y, symmetric=True, **kw)),
        "nsd": float(compute_surface_dice(yp, y, class_thresholds=[tau], **kw)),
    }
    return time.perf_counter() - t, vals


def peer_medpy(r, p, sp, pct, tau):
    from medpy.metric import binary as mb
    assert pct == 95, "medpy only has hd95"
    t = time.perf_counter()
    vals = {
        "hd": mb.hd(p, r, voxelspacing=sp),
        "hd_percentile_pooled": mb.hd95(p, r, voxelspacing=sp),
        # MedPy >= 0.5: assd is the mean of both directed lists pooled (negvol's assd).
        "assd": mb.assd(p, r, voxelspacing=sp),
        "dice": mb.dc(p, r),
    }
    return time.perf_counter() - t, vals


def peer_sitk(r, p, sp, pct, tau):
    import SimpleITK as sitk
    t = time.perf_counter()
    # SimpleITK reads numpy arrays as (z, y, x): reverse the spacing accordingly.
    ir = sitk.GetImageFromArray(r.astype(np.uint8))
    ip = sitk.GetImageFromArray(p.astype(np.uint8))
    for im in (ir, ip):
        im.SetSpacing([float(s) for s in sp[::-1]])
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(ir, ip)
    o = sitk.LabelOverlapMeasuresImageFilter()
    o.Execute(ir, ip)
    vals = {
        "sitk_solid_hd": f.GetHausdorffDistance(),
        "sitk_solid_average_hd": f.GetAverageHausdorffDistance(),
        "dice": o.GetDiceCoefficient(),
    }
    return time.perf_counter() - t, vals


PEERS = {"deepmind": peer_deepmind, "monai": peer_monai, "medpy": peer_medpy, "sitk": peer_sitk}
# Which negvol variant run is the fair time comparison for each peer.
NEGVOL_VARIANT = {"deepmind": "surfel", "monai": "voxel", "medpy": "voxel", "sitk": "sitk-solid"}
# Values whose definitions match exactly (others differ by design; see the crate docs).
EXACT = {"surfel_hd", "hd", "hd_percentile", "hd_percentile_pooled", "assd", "nsd",
         "sitk_solid_hd", "sitk_solid_average_hd", "dice"}


def run_measured(cmd, env=None):
    """Runs cmd under /usr/bin/time; returns (stdout, peak RSS in MiB, wall seconds)."""
    t = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB %M"] + cmd, capture_output=True,
                         text=True, env=env)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {res.stderr[-2000:]}")
    kb = [l for l in res.stderr.splitlines() if l.startswith("MAXRSS_KB")][-1].split()[1]
    return res.stdout, int(kb) / 1024.0, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shape", default="128,128,128")
    ap.add_argument("--spacing", default="0.4,0.4,0.4")
    ap.add_argument("--percentile", type=float, default=95.0)
    ap.add_argument("--tolerance-mm", type=float, default=1.0)
    ap.add_argument("--bin", default="target/release/examples/metrics")
    ap.add_argument("--workdir", default="/tmp/negvol-peers")
    ap.add_argument("--peers", default="deepmind,monai,medpy,sitk")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json-out", default=None, help="also write the results here")
    # Internal: run one peer in this process.
    ap.add_argument("--run-peer", default=None)
    ap.add_argument("--ref")
    ap.add_argument("--pred")
    a = ap.parse_args()
    sp = tuple(float(x) for x in a.spacing.split(","))
    if a.run_peer:  # spacing comes from the file
        (r, sp), (p, _) = load(a.ref), load(a.pred)
        secs, vals = PEERS[a.run_peer](r, p, sp, a.percentile, a.tolerance_mm)
        print(json.dumps({"seconds": secs, "values": {k: float(v) for k, v in vals.items()}}))
        return
    shape = tuple(int(x) for x in a.shape.split(","))
    os.makedirs(a.workdir, exist_ok=True)
    ref_path = os.path.join(a.workdir, "ref.nii")
    pred_path = os.path.join(a.workdir, "pred.nii")
    t = time.perf_counter()
    r = blob(shape, seed=1)
    p = blob(shape, seed=2, shift=(1.5, -1.0, 0.5), error=0.06)
    write_nii(ref_path, r, sp)
    write_nii(pred_path, p, sp)
    mask_mib = 2 * r.size / 2**20
    print(f"masks {shape} spacing {sp}: ref {r.sum()} voxels, pred {p.sum()} voxels, "
          f"Dice {2 * (r & p).sum() / (r.sum() + p.sum()):.4f}; two bool masks = {mask_mib:.0f} MiB "
          f"(made in {time.perf_counter() - t:.1f} s)")
    del r, p
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    common = ["--reference", ref_path, "--prediction", pred_path, "--json",
              "--percentile", str(a.percentile), "--tolerance-mm", str(a.tolerance_mm)]
    negvol = {}
    for variant in ["voxel", "surfel", "sitk-solid", "all"]:
        out, rss, wall = run_measured([a.bin] + common + ["--variant", variant], env)
        j = json.loads(out)
        negvol[variant] = {"seconds": j["seconds_metrics"], "wall": wall, "rss_mib": rss,
                           "values": {k: v["value"] for k, v in j["results"][0]["values"].items()}}
        print(f"negvol --variant {variant:<10} metrics {j['seconds_metrics']:.3f} s, "
              f"process {wall:.3f} s, peak RSS {rss:.0f} MiB")
    values = negvol["all"]["values"]
    results = {"shape": shape, "spacing": sp, "threads": a.threads, "negvol": negvol, "peers": {}}
    for name in a.peers.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "--run-peer", name, "--ref", ref_path,
               "--pred", pred_path, "--spacing", a.spacing, "--percentile", str(a.percentile),
               "--tolerance-mm", str(a.tolerance_mm)]
        try:
            out, rss, wall = run_measured(cmd)
        except Exception as e:  # a missing package or a peer failure
            print(f"\n{name}: skipped ({str(e).strip().splitlines()[-1]})")
            continue
        j = json.loads(out.strip().splitlines()[-1])
        nv = negvol[NEGVOL_VARIANT[name]]
        ratio = j["seconds"] / nv["seconds"]
        results["peers"][name] = {"seconds": j["seconds"], "rss_mib": rss, "values": j["values"],
                                  "negvol_variant": NEGVOL_VARIANT[name], "speedup": ratio}
        print(f"\n{name}: {j['seconds']:.3f} s (negvol --variant {NEGVOL_VARIANT[name]}: "
              f"{nv['seconds']:.3f} s, {ratio:.1f}x faster), peak RSS {rss:.0f} MiB "
              f"(negvol {nv['rss_mib']:.0f} MiB)")
        for k, v in j["values"].items():
            mine = values.get(k)
            diff = abs(v - mine) if mine is not None else float("nan")
            tag = "same definition" if k in EXACT else "differs by design (surfel areas)"
            print(f"  {k:<26} peer {v:14.6f}  negvol {mine if mine is None else f'{mine:14.6f}'}"
                  f"  |diff| {diff:.2e}  [{tag}]")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
