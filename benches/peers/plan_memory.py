#!/usr/bin/env python3
"""Does `plan`'s memory estimate hold? Plan a phantom dataset for a few GPU budgets and
precisions, train each plan for a few steps, and compare the plan's estimate with the peak
memory the training process really held.

    python3 benches/peers/plan_memory.py --bin target/release/examples --data DIR \
        [--budgets 2,8] [--precisions f32,bf16] [--device cuda] [--steps 3] [--out F.jsonl]

DIR is a dataset folder with mc and tb masks (e.g. `phantom --out DIR --cases 2 --size 160`).
On a GPU the peak comes from nvidia-smi (per process, or device-wide above the level before the
run inside a container; see train_throughput.GpuMemorySampler); without nvidia-smi it is the
training process's peak resident set size (VmHWM), which on the CPU holds the same autograd
activations plus libtorch and the data. Prints a Markdown table; one JSON line per run to --out.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_throughput import GpuMemorySampler  # noqa: E402  (nvidia-smi sampling only)


def vm_hwm_mib(pid):
    """Peak resident set size (MiB) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def run_plan(bin_dir, data, budget, precision, device, steps, work):
    plan_path = os.path.join(work, f"plan-{budget}-{precision}.json")
    p = subprocess.run([os.path.join(bin_dir, "plan"), "--input-data", data, "--targets", "mc,tb",
                        "--gpu-memory-gib", str(budget), "--precision", precision,
                        "--out", plan_path], capture_output=True, text=True)
    if p.returncode != 0:
        return {"budget_gib": budget, "precision": precision, "error": p.stderr[-2000:]}
    plan = json.load(open(plan_path))
    cmd = [os.path.join(bin_dir, "train"), "--plan", plan_path, "--input-data", data,
           "--out", os.path.join(work, f"run-{budget}-{precision}"), "--epochs", "1",
           "--batches-per-epoch", str(steps), "--augment", "none", "--val-every", "0",
           "--workers", "0", "--device", device]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    gpu = GpuMemorySampler(proc.pid) if device != "cpu" else None
    rss = 0.0
    while proc.poll() is None:
        rss = max(rss, vm_hwm_mib(proc.pid) or 0.0)
        time.sleep(0.05)
    out, err = proc.communicate()
    peak, how = gpu.stop() if gpu else (None, None)
    if peak is None:
        peak, how = rss, "process peak RSS (VmHWM)"
    rec = {
        "budget_gib": budget,
        "precision": precision,
        "patch": plan.get("patch"),
        "batch_size": plan.get("batch_size"),
        "estimated_gib": plan.get("estimated_memory_gib"),
        "measured_gib": peak / 1024.0,
        "measure": how,
        "wall_s": time.time() - t0,
        "device": device,
    }
    if proc.returncode != 0:
        rec["error"] = f"train exit {proc.returncode}: {err[-2000:]}"
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="folder with the plan and train binaries")
    ap.add_argument("--data", required=True)
    ap.add_argument("--budgets", default="2,8")
    ap.add_argument("--precisions", default="f32,bf16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for b in [float(x) for x in a.budgets.split(",")]:
            for prec in a.precisions.split(","):
                r = run_plan(a.bin, a.data, b, prec, a.device, a.steps, work)
                rows.append(r)
                print(json.dumps(r), file=sys.stderr)
                if a.out:
                    with open(a.out, "a") as f:
                        f.write(json.dumps(r) + "\n")
    print("| budget GiB | precision | planned patch | batch | estimated GiB | measured GiB | measured / estimated | how |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r and "measured_gib" not in r:
            print(f"| {r['budget_gib']} | {r['precision']} | plan failed | - | - | - | - | - |")
            continue
        est, got = r.get("estimated_gib"), r.get("measured_gib")
        ratio = f"{got / est:.2f}" if est and got is not None else "-"
        patch = "x".join(str(x) for x in (r.get("patch") or []))
        flag = " (train failed)" if "error" in r else ""
        print(f"| {r['budget_gib']} | {r['precision']} | {patch} | {r.get('batch_size')} | "
              f"{est:.2f} | {got:.2f}{flag} | {ratio} | {r['measure']} |")


if __name__ == "__main__":
    main()
