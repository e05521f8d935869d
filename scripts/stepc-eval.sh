#!/usr/bin/env bash
# Does the paper's step C (TB refinement with Canny edges) help? Runs the pipeline example with
# and without --refine on unseen phantoms and prints mean Dice / HD95 / ASSD / volume error of
# MC, TB, TB refined and NV against the phantoms' truth.
#
#   scripts/stepc-eval.sh MODEL.json [CASES=8] [SPACING=0.8] [SEED=4242]
#
# MODEL must segment both mc and tb (e.g. demo-out/train/last.json from `make demo`).
# Needs the release examples (cargo build --release --examples) and LD_LIBRARY_PATH set to
# libtorch's lib/ (the Makefile does that; or .libtorch/lib).
set -euo pipefail
MODEL=$1
CASES=${2:-8}
SPACING=${3:-0.8}
SEED=${4:-4242}
BIN=${BIN:-target/release/examples}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
"$BIN/phantom" --out "$W/data" --cases "$CASES" --seed "$SEED" --spacing "$SPACING" >/dev/null 2>&1
for r in "" --refine; do
    for c in "$W"/data/case_*; do
        o="$W/out${r}/$(basename "$c")"
        "$BIN/pipeline" --image "$c/image.nii.gz" --mc-model "$MODEL" --tb-model "$MODEL" \
            --out "$o" --truth "$c" --no-pictures --device cpu $r >/dev/null
        echo "${r:-plain} $o/scores.json"
    done
done | python3 -c '
import collections, json, sys
acc = collections.defaultdict(list)
for line in sys.stdin:
    run, path = line.split()
    for s in json.load(open(path))["scores"]:
        e = 100 * (s["volume_mm3"] - s["truth_volume_mm3"]) / s["truth_volume_mm3"]
        acc[(run, s["structure"])].append([s["dice"], s["hd95_mm"], s["assd_mm"], e])
print("| run | structure | cases | Dice | HD95 mm | ASSD mm | volume error % |")
print("|---|---|---|---|---|---|---|")
for (run, st), v in sorted(acc.items()):
    n = len(v)
    d, h, a, e = (sum(x[i] for x in v) / n for i in range(4))
    print(f"| {run} | {st} | {n} | {d:.4f} | {h:.3f} | {a:.3f} | {e:+.1f} |")
'
