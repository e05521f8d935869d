#!/usr/bin/env python3
"""Side-by-side training-step and sliding-window throughput: negvol-train vs PyTorch eager.

The driver runs, for every (architecture, batch, precision), the negvol example
`train-bench` and this file's own PyTorch worker as separate processes, one after the other
(alternating which goes first), and samples the GPU memory each process holds with
`nvidia-smi` every 50 ms. Both sides train the same network (the paper's 3D U-Net, 3D U-Net
with attention gates, V-Net, re-declared below in PyTorch with negvol-nets' parameter names;
the parameter counts are checked to be equal), the same loss (negvol-losses' default Dice + CE:
soft Dice over the foreground classes, smooth 1e-5, plus mean cross-entropy), the paper's Adam
(lr 1e-4, L2 weight decay 0.01) and precision (f32, or CUDA autocast to bf16/f16) on one
synthetic batch that stays on the device, and read the loss every step (`loss.item()`, as a
training loop that logs it does). PyTorch uses its defaults (Adam's `foreach` implementation,
`cudnn.benchmark` off unless `--cudnn-benchmark`, which is passed to both sides).

Usage (GPU machine; the negvol binary built on the build machine, see README "GPU"):

    python3 benches/peers/train_throughput.py --bin .gpu/train-bench --device cuda \
        --archs unet3d,unet3d-att,vnet --batches 1,2 --precisions f32,bf16 --out $OUT/train.json
    # and whole-volume sliding-window inference of a 686^3 volume:
    python3 benches/peers/train_throughput.py --bin .gpu/train-bench --device cuda \
        --infer-shape 686,686,686 --archs unet3d --batches 4 --precisions f32,bf16

CPU smoke test (tiny patch): add `--device cpu --patch 32,32,32 --steps 2 --warmup 1`.
Prints a Markdown table and writes every record (JSON lines of both sides) to --out.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time


# --------------------------------------------------------------------------------------------
# PyTorch re-declarations of the negvol-nets networks (same structure and parameter names).
# --------------------------------------------------------------------------------------------

def build_model(arch, classes):
    import torch
    from torch import nn
    import torch.nn.functional as F

    class SingleConv(nn.Module):
        # conv (no bias) -> ReLU -> GroupNorm(min(groups, cout))
        def __init__(self, cin, cout, groups=8):
            super().__init__()
            self.conv = nn.Conv3d(cin, cout, 3, padding=1, bias=False)
            self.groupnorm = nn.GroupNorm(cout if cout < groups else groups, cout)

        def forward(self, x):
            return self.groupnorm(F.relu(self.conv(x)))

    class DoubleConv(nn.Module):
        def __init__(self, cin, cout, encoder):
            super().__init__()
            mid = max(cout // 2, cin) if encoder else cout
            self.SingleConv1 = SingleConv(cin, mid)
            self.SingleConv2 = SingleConv(mid, cout)

        def forward(self, x):
            return self.SingleConv2(self.SingleConv1(x))

    class Level(nn.Module):
        def __init__(self, cin, cout, encoder):
            super().__init__()
            self.basic_module = DoubleConv(cin, cout, encoder)

    class Gate(nn.Module):
        def __init__(self, g_ch, x_ch, inner):
            super().__init__()
            self.W_g = nn.Sequential(nn.Conv3d(g_ch, inner, 1), nn.BatchNorm3d(inner))
            self.W_x = nn.Sequential(nn.Conv3d(x_ch, inner, 1), nn.BatchNorm3d(inner))
            self.psi = nn.Sequential(nn.Conv3d(inner, 1, 1), nn.BatchNorm3d(1))

        def forward(self, g, x):
            return x * torch.sigmoid(self.psi(F.relu(self.W_g(g) + self.W_x(x))))

    class UNet3D(nn.Module):
        def __init__(self, classes, attention, f_maps=(32, 64, 128, 256)):
            super().__init__()
            self.encoders = nn.ModuleList(
                Level(1 if i == 0 else f_maps[i - 1], f, True) for i, f in enumerate(f_maps))
            rev = list(reversed(f_maps))
            self.decoders = nn.ModuleList()
            for i in range(len(rev) - 1):
                d = Level(rev[i + 1] + rev[i], rev[i + 1], False)
                if attention:
                    d.attention = Gate(rev[i], rev[i + 1], rev[i + 1] // 2)
                self.decoders.append(d)
            self.final_conv = nn.Conv3d(f_maps[0], classes, 1)

        def forward(self, x):
            feats = []
            for i, e in enumerate(self.encoders):
                if i > 0:
                    x = F.max_pool3d(x, 2)
                x = e.basic_module(x)
                feats.append(x)
            for i, d in enumerate(self.decoders):
                skip = feats[-2 - i]
                up = F.interpolate(x, size=skip.shape[2:], mode="nearest")
                if hasattr(d, "attention"):
                    skip = d.attention(up, skip)
                x = d.basic_module(torch.cat([skip, up], 1))
            return self.final_conv(x)

    class LUConv(nn.Module):
        def __init__(self, c, k):
            super().__init__()
            self.conv1 = nn.Conv3d(c, c, k, padding=k // 2)
            self.bn1 = nn.BatchNorm3d(c)
            self.relu1 = nn.PReLU(c)

        def forward(self, x):
            return self.relu1(self.bn1(self.conv1(x)))

    class InTr(nn.Module):
        def __init__(self, cin, c, k):
            super().__init__()
            self.conv1 = nn.Conv3d(cin, c, k, padding=k // 2)
            self.bn1 = nn.BatchNorm3d(c)
            self.relu1 = nn.PReLU(c)
            self.reps = c // cin

        def forward(self, x):
            return self.relu1(self.bn1(self.conv1(x)) + x.repeat(1, self.reps, 1, 1, 1))

    class DownTr(nn.Module):
        def __init__(self, cin, c, n, k):
            super().__init__()
            self.down_conv = nn.Conv3d(cin, c, 2, stride=2)
            self.bn1 = nn.BatchNorm3d(c)
            self.relu1 = nn.PReLU(c)
            self.relu2 = nn.PReLU(c)
            self.ops = nn.Sequential(*[LUConv(c, k) for _ in range(n)])

        def forward(self, x):
            down = self.relu1(self.bn1(self.down_conv(x)))
            return self.relu2(self.ops(down) + down)

    class UpTr(nn.Module):
        def __init__(self, cin, c, n, k):
            super().__init__()
            self.up_conv = nn.ConvTranspose3d(cin, c, 2, stride=2)
            self.bn1 = nn.BatchNorm3d(c)
            self.relu1 = nn.PReLU(c)
            self.relu2 = nn.PReLU(2 * c)
            self.ops = nn.Sequential(*[LUConv(2 * c, k) for _ in range(n)])

        def forward(self, x, skip):
            cat = torch.cat([self.relu1(self.bn1(self.up_conv(x))), skip], 1)
            return self.relu2(self.ops(cat) + cat)

    class OutTr(nn.Module):
        def __init__(self, cin, classes, k):
            super().__init__()
            self.conv1 = nn.Conv3d(cin, classes, k, padding=k // 2)
            self.bn1 = nn.BatchNorm3d(classes)
            self.relu1 = nn.PReLU(classes)
            self.conv2 = nn.Conv3d(classes, classes, 1)

        def forward(self, x):
            return self.conv2(self.relu1(self.bn1(self.conv1(x))))

    class VNet(nn.Module):
        def __init__(self, classes, base=16, down=(2, 3, 3, 3), up=(3, 3, 2, 1), k=5):
            super().__init__()
            ch = [base << l for l in range(len(down) + 1)]
            self.in_tr = InTr(1, ch[0], k)
            for l in range(1, len(down) + 1):
                setattr(self, f"down_tr{16 << l}", DownTr(ch[l - 1], ch[l], down[l - 1], k))
            cin = ch[len(down)]
            for i, l in enumerate(reversed(range(len(down)))):
                setattr(self, f"up_tr{32 << l}", UpTr(cin, ch[l], up[i], k))
                cin = 2 * ch[l]
            self.out_tr = OutTr(cin, classes, k)
            self.depth = len(down)

        def forward(self, x):
            x = self.in_tr(x)
            skips = [x]
            for l in range(1, self.depth + 1):
                x = getattr(self, f"down_tr{16 << l}")(x)
                skips.append(x)
            for l in reversed(range(self.depth)):
                x = getattr(self, f"up_tr{32 << l}")(x, skips[l])
            return self.out_tr(x)

    if arch == "unet3d":
        return UNet3D(classes, False)
    if arch == "unet3d-att":
        return UNet3D(classes, True)
    if arch == "vnet":
        return VNet(classes)
    raise SystemExit(f"unknown arch {arch}")


def dice_ce(logits, y, classes, smooth=1e-5):
    """negvol-losses' default Dice + CE (alpha = beta = 1), in f32."""
    import torch
    import torch.nn.functional as F
    logits = logits.float()
    logp = F.log_softmax(logits, 1)
    p = logp.exp()
    g = F.one_hot(y, classes).movedim(-1, 1).to(p.dtype)
    dims = tuple(range(2, logits.dim()))
    inter = (p * g).sum(dims)
    den = (p.sum(dims) + g.sum(dims) + smooth).clamp_min(1e-8)
    dice = (2 * inter + smooth) / den
    dice_loss = 1 - dice[:, 1:].mean(1).mean()
    ce = -logp.gather(1, y.unsqueeze(1)).mean()
    return dice_loss + ce


def synthetic(patch, classes, batch, device):
    import torch
    c = [(n - 1) / 2 for n in patch]
    r = 0.25 * min(patch)
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in patch], indexing="ij")
    d = sum((g - ci) ** 2 for g, ci in zip(grids, c)).sqrt()
    lab = torch.zeros(patch, dtype=torch.int64)
    if classes > 2:
        lab[d <= 1.5 * r] = 2
    lab[d <= r] = 1
    y = lab.unsqueeze(0).repeat(batch, 1, 1, 1).to(device)
    x = torch.randn([batch, 1] + list(patch), device=device)
    return x, y


def peak_rss_mib():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def worker(a):
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device("cuda" if a.device in ("cuda", "auto") and torch.cuda.is_available() else "cpu")
    if a.device == "cuda" and dev.type != "cuda":
        raise SystemExit("CUDA requested but torch.cuda.is_available() is False")
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    torch.manual_seed(a.seed)
    model = build_model(a.arch, a.classes).to(dev)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    patch = [int(v) for v in a.patch.split(",")]
    amp = a.precision != "f32" and dev.type == "cuda"
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float16
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    rec = {"impl": "pytorch", "arch": a.arch, "classes": a.classes, "batch": a.batch,
           "precision": a.precision, "params": params, "patch": patch,
           "device": str(dev), "torch": torch.__version__, "cudnn_benchmark": a.cudnn_benchmark}
    if a.mode == "train":
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=0.01)
        scaler = torch.amp.GradScaler("cuda", enabled=amp and a.precision == "f16")
        x, y = synthetic(patch, a.classes, a.batch, dev)
        model.train()

        def step(times=None):
            t = [time.perf_counter()]

            def mark(phase):
                if times is not None:
                    sync()
                    now = time.perf_counter()
                    times[phase] = times.get(phase, 0.0) + now - t[0]
                    t[0] = now

            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type=dev.type, dtype=dtype, enabled=amp):
                logits = model(x)
            mark("forward")
            loss = dice_ce(logits, y, a.classes)
            value = loss.item()
            mark("loss")
            scaler.scale(loss).backward()
            mark("backward")
            scaler.step(opt)
            scaler.update()
            mark("optimizer")
            return value

        for _ in range(a.warmup):
            step()
        sync()
        t0 = time.perf_counter()
        steps, last = 0, float("nan")
        while steps < max(a.steps, 1):
            last = step()
            steps += 1
            if time.perf_counter() - t0 > a.max_seconds:
                break
        sync()
        secs = time.perf_counter() - t0
        phases = {}
        for _ in range(a.profile_steps):
            step(phases)
        phases = {k: v / max(a.profile_steps, 1) for k, v in phases.items()} or None
        rec.update(mode="train", loss="dice-ce", steps=steps, seconds=secs,
                   steps_per_s=steps / secs, samples_per_s=steps * a.batch / secs, last_loss=last,
                   phases=phases)
    else:
        shape = [int(v) for v in a.shape.split(",")]
        model.eval()
        i, j, k = [torch.arange(n) for n in shape]
        img = ((i[:, None, None] * 7 + j[None, :, None] * 13 + k[None, None, :] * 29) % 101)
        img = (img.float() / 50.0 - 1.0)[None, None]
        predictor = lambda t: model(t)

        def run(volume):
            with torch.no_grad(), torch.autocast(device_type=dev.type, dtype=dtype, enabled=amp):
                if a.infer_impl == "monai":
                    from monai.inferers import sliding_window_inference
                    out = sliding_window_inference(
                        volume.to(dev), patch, a.batch, predictor, overlap=a.overlap,
                        mode="gaussian", sigma_scale=0.125, sw_device=dev, device=dev)
                else:
                    out = plain_sliding_window(predictor, volume.to(dev), patch, a.batch, a.overlap)
                out = torch.softmax(out.float(), 1)
            return out.cpu()

        run(torch.zeros([1, 1] + patch))
        sync()
        t0 = time.perf_counter()
        out = run(img)
        sync()
        secs = time.perf_counter() - t0
        rec.update(mode="infer", shape=shape, overlap=a.overlap, seconds=secs,
                   infer_impl=a.infer_impl, output=list(out.shape))
    if dev.type == "cuda":
        rec["torch_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        rec["torch_max_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    rec["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(rec), flush=True)


def window_starts(size, patch, overlap):
    if size <= patch:
        return [0]
    step = max(patch * (1 - overlap), 1)
    n = math.ceil((size - patch) / step) + 1
    actual = (size - patch) / (n - 1)
    return [round(actual * i) for i in range(n)]


def plain_sliding_window(predictor, vol, patch, batch, overlap, sigma_scale=0.125):
    """Gaussian-weighted sliding window (nnU-Net's window rule), for when MONAI is absent."""
    import torch
    shape = vol.shape[2:]
    axes = [torch.arange(p, dtype=torch.float64, device=vol.device) for p in patch]
    g = [torch.exp(-((t - (p - 1) / 2) ** 2) / (2 * (p * sigma_scale) ** 2)) for t, p in zip(axes, patch)]
    gauss = (g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]).float()
    gauss = (gauss / gauss.max()).clamp_min(1e-6)
    starts = [(a, b, c) for a in window_starts(shape[0], patch[0], overlap)
              for b in window_starts(shape[1], patch[1], overlap)
              for c in window_starts(shape[2], patch[2], overlap)]
    acc, weight = None, torch.zeros(shape, device=vol.device)
    for s in range(0, len(starts), batch):
        chunk = starts[s:s + batch]
        x = torch.cat([vol[:, :, a:a + patch[0], b:b + patch[1], c:c + patch[2]] for a, b, c in chunk])
        y = torch.softmax(predictor(x).float(), 1) * gauss
        if acc is None:
            acc = torch.zeros((y.shape[1],) + tuple(shape), device=vol.device)
        for n, (a, b, c) in enumerate(chunk):
            acc[:, a:a + patch[0], b:b + patch[1], c:c + patch[2]] += y[n]
            weight[a:a + patch[0], b:b + patch[1], c:c + patch[2]] += gauss
    return torch.log((acc / weight).clamp_min(1e-12))[None]


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------

def _smi(query):
    out = subprocess.run(["nvidia-smi", query, "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=5).stdout
    return [[p.strip() for p in line.split(",")] for line in out.splitlines() if line.strip()]


class GpuMemorySampler:
    """Largest GPU memory (MiB) that process `pid` held, sampled with nvidia-smi every 50 ms.

    Per process when nvidia-smi lists the pid (`--query-compute-apps`); inside a container whose
    pid namespace differs it never does, and the device-wide `memory.used` above the level
    before the process started is used instead (the runs are sequential, so it is the same
    quantity plus any other tenant's growth)."""

    def __init__(self, pid, period=0.05):
        self.pid, self.period, self._stop = pid, period, False
        self.peak_pid, self.peak_device, self.baseline = None, None, None
        self.available = subprocess.run(["which", "nvidia-smi"], capture_output=True).returncode == 0
        if self.available:
            try:
                self.baseline = sum(int(r[0]) for r in _smi("--query-gpu=memory.used"))
            except (subprocess.SubprocessError, OSError, ValueError):
                self.available = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        if self.available:
            self.thread.start()

    def _run(self):
        while not self._stop:
            try:
                for r in _smi("--query-compute-apps=pid,used_memory"):
                    if len(r) == 2 and r[0] == str(self.pid) and r[1].isdigit():
                        self.peak_pid = max(self.peak_pid or 0, int(r[1]))
                used = sum(int(r[0]) for r in _smi("--query-gpu=memory.used"))
                self.peak_device = max(self.peak_device or 0, used - self.baseline)
            except (subprocess.SubprocessError, OSError, ValueError):
                pass
            time.sleep(self.period)

    def stop(self):
        """(peak MiB, how it was measured) or (None, None) without nvidia-smi."""
        self._stop = True
        if not self.available:
            return None, None
        self.thread.join()
        if self.peak_pid is not None:
            return self.peak_pid, "per-process"
        return self.peak_device, "device-wide above baseline"


def run_one(cmd, env, timeout):
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampler = GpuMemorySampler(p.pid)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        sampler.stop()
        return {"error": f"timeout after {timeout} s", "cmd": cmd, "stderr": err[-2000:]}
    peak, how = sampler.stop()
    lines = [l for l in out.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": f"exit {p.returncode}", "cmd": cmd, "stderr": err[-2000:]}
    rec = json.loads(lines[-1])
    rec["gpu_peak_mib"] = peak
    rec["gpu_memory_measure"] = how
    rec["wall_s"] = time.time() - t0
    return rec


def fmt(v, f="{:.3f}"):
    return "-" if v is None else f.format(v)


def mem(r):
    """GPU memory the process held (nvidia-smi), else its peak resident set size."""
    return r.get("gpu_peak_mib") if r.get("gpu_peak_mib") is not None else r.get("peak_rss_mib")


def driver(a):
    archs, batches, precs = a.archs.split(","), [int(b) for b in a.batches.split(",")], a.precisions.split(",")
    mode = "infer" if a.infer_shape else "train"
    common = ["--classes", str(a.classes), "--patch", a.patch, "--steps", str(a.steps),
              "--warmup", str(a.warmup), "--max-seconds", str(a.max_seconds), "--device", a.device,
              "--seed", str(a.seed)]
    if mode == "train":
        common += ["--profile-steps", str(a.profile_steps)]
    if a.cudnn_benchmark:
        common.append("--cudnn-benchmark")
    if a.threads:
        common += ["--threads", str(a.threads)]
    if mode == "infer":
        common += ["--shape", a.infer_shape, "--overlap", str(a.overlap)]
    env = dict(os.environ)
    records, rows = [], []
    n = 0
    for arch in archs:
        for batch in batches:
            for prec in precs:
                args = common + ["--batch", str(batch), "--precision", prec]
                ours = [a.bin, "--mode", mode, "--model", arch] + args
                theirs = [sys.executable, os.path.abspath(__file__), "--worker", "--mode", mode,
                          "--arch", arch, "--infer-impl", a.infer_impl] + args
                pair = {}
                order = [("negvol", ours), ("pytorch", theirs)]
                if n % 2:
                    order.reverse()
                n += 1
                for name, cmd in order:
                    rec = run_one(cmd, env, a.timeout)
                    rec.setdefault("impl", name)
                    rec.update(arch=arch, batch=batch, precision=prec)
                    pair[name] = rec
                    records.append(rec)
                    print(json.dumps(rec), file=sys.stderr, flush=True)
                ours_r, theirs_r = pair["negvol"], pair["pytorch"]
                if "params" in ours_r and "params" in theirs_r and ours_r["params"] != theirs_r["params"]:
                    print(f"WARNING: parameter counts differ for {arch}: negvol {ours_r['params']} "
                          f"vs pytorch {theirs_r['params']}", file=sys.stderr)
                rows.append((arch, batch, prec, ours_r, theirs_r))
    if a.out:
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, a.out)
    dev = next((r.get("device") for r in records if "device" in r), a.device)
    kind = "GPU" if any(r.get("gpu_peak_mib") is not None for r in records) else "RSS"
    print(f"\n{mode} throughput, patch {a.patch}, {a.classes} classes, device {dev}"
          + (f", volume {a.infer_shape}, overlap {a.overlap}" if mode == "infer" else ""))
    if mode == "train":
        print("| network | batch | precision | negvol steps/s | PyTorch steps/s | negvol / PyTorch "
              f"| negvol {kind} MiB | PyTorch {kind} MiB | params |")
        print("|---|---|---|---|---|---|---|---|---|")
        for arch, batch, prec, o, t in rows:
            ratio = o.get("steps_per_s") / t["steps_per_s"] if o.get("steps_per_s") and t.get("steps_per_s") else None
            print(f"| {arch} | {batch} | {prec} | {fmt(o.get('steps_per_s'))} | {fmt(t.get('steps_per_s'))} "
                  f"| {fmt(ratio, '{:.2f}')} | {fmt(mem(o), '{:.0f}')} "
                  f"| {fmt(mem(t), '{:.0f}')} | {o.get('params', o.get('error'))} |")
        if any(o.get("phases") or t.get("phases") for *_, o, t in rows):
            print("\nwhere a step's time goes (ms per phase, device synchronised after each phase; "
                  "negvol's 'loss' includes reading the value, 'norm' is its gradient norm)")
            print("| network | batch | precision | negvol fwd / loss / bwd / norm / opt | "
                  "PyTorch fwd / loss / bwd / opt |")
            print("|---|---|---|---|---|")
            for arch, batch, prec, o, t in rows:
                def ms(p, keys):
                    p = p or {}
                    return " / ".join(fmt(1e3 * p[k], "{:.1f}") if k in p else "-" for k in keys)
                print(f"| {arch} | {batch} | {prec} "
                      f"| {ms(o.get('phases'), ['forward', 'loss', 'backward', 'grad_norm', 'optimizer'])} "
                      f"| {ms(t.get('phases'), ['forward', 'loss', 'backward', 'optimizer'])} |")
    else:
        print(f"| network | windows/pass | precision | negvol s | PyTorch ({a.infer_impl}) s | PyTorch / negvol "
              f"| negvol {kind} MiB | PyTorch {kind} MiB |")
        print("|---|---|---|---|---|---|---|---|")
        for arch, batch, prec, o, t in rows:
            ratio = t["seconds"] / o["seconds"] if "seconds" in o and "seconds" in t else None
            print(f"| {arch} | {batch} | {prec} | {fmt(o.get('seconds'), '{:.1f}')} | "
                  f"{fmt(t.get('seconds'), '{:.1f}')} | {fmt(ratio, '{:.2f}')} "
                  f"| {fmt(mem(o), '{:.0f}')} | {fmt(mem(t), '{:.0f}')} |")
    errors = [r for r in records if "error" in r]
    for r in errors:
        print(f"ERROR {r.get('impl')} {r.get('arch')} b{r.get('batch')} {r.get('precision')}: "
              f"{r['error']}\n{r.get('stderr', '')}", file=sys.stderr)
    return 1 if errors else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help="run one PyTorch measurement (internal)")
    p.add_argument("--mode", default="train", choices=["train", "infer"])
    p.add_argument("--arch", default="unet3d")
    p.add_argument("--bin", default="target/release/examples/train-bench")
    p.add_argument("--archs", default="unet3d,unet3d-att,vnet")
    p.add_argument("--batches", default="1,2")
    p.add_argument("--precisions", default="f32,bf16")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--precision", default="f32")
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--patch", default="112,144,64")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--profile-steps", type=int, default=3,
                   help="profiled steps after the timed ones (device synchronised per phase)")
    p.add_argument("--infer-shape", "--shape", dest="infer_shape", default=None)
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--infer-impl", default=None, choices=["monai", "plain"],
                   help="PyTorch sliding window: MONAI's sliding_window_inference (default when "
                        "importable) or this file's plain loop")
    p.add_argument("--cudnn-benchmark", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.infer_impl is None:
        try:
            import monai  # noqa: F401
            a.infer_impl = "monai"
        except ImportError:
            a.infer_impl = "plain"
    if a.worker:
        if a.mode == "infer" and a.infer_shape:
            a.shape = a.infer_shape
        worker(a)
        return 0
    return driver(a)


if __name__ == "__main__":
    sys.exit(main())
