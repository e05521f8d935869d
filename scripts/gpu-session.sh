#!/usr/bin/env bash
# Every GPU check of negvol in one script, for the GPU machine (PyTorch 2.11, no Rust, no
# network). Stage the binaries first on the build machine with scripts/gpu-prepare.sh, then run
# this from the repository root with `.gpu` carried:
#
#   scripts/gpu-session.sh [STAGE ...]     stages: check infer throughput table1 (default: all);
#                                          planmem (optional, not in the default list)
#
# With 15 device minutes per session (start-up included; a machine started in about 30 s on
# 2026-11-27 and is handed back after 30 s idle), run it as two calls issued back to back:
#   SESSION_SECONDS=400 scripts/gpu-session.sh check infer throughput     (about 370 s)
#   SESSION_SECONDS=<device budget left - 40> scripts/gpu-session.sh table1
# The device tool returns at most 8 files from $OUT, so point OUT elsewhere and pack it, e.g.
#   O=$OUT; export OUT=/tmp/g1; SESSION_SECONDS=400 timeout 415 scripts/gpu-session.sh ...;
#   tar czf $O/out.tgz -C /tmp/g1 .; cp /tmp/g1/SUMMARY.md $O/
# (what the 2026-11-27 H200 session ran; results in benches/results/2026-11-27-h200).
#
# Results go to $OUT (the device tool's folder, else ./gpu-out): one log and one Markdown/JSON
# file per stage, written as each stage finishes, so a run cut short still returns what it did.
# The run is deadline-aware: SESSION_SECONDS (default 560) is the wall-clock budget; the table1
# stage shares what is left between its six trainings (at most TRAIN_MINUTES each).
#
# Knobs (environment): SESSION_SECONDS, TRAIN_MINUTES (default 2.0, a cap per model),
# TRAIN_CASES (40), TEST_CASES (10), ARCHS ("unet3d unet3d-att vnet"), TARGETS ("mc+tb": one
# model per architecture segments both, which fits the budget; "mc tb" trains the paper's
# separate MC and TB models), BIG_BATCH (2: the larger training batch, timed in bf16),
# PRECISIONS ("f32,bf16": batch 1), STEPS (10), INFER_SHAPE (686,686,686), INFER_BATCH (4),
# PATCH (112,144,64), FOV (48,60,28: the paper's 120x150x70 VOI at SPACING 0.4 mm), DEVICE (cuda),
# TRAIN_PRECISION (bf16), TRAIN_WORKERS (12 batch-making threads: one thread makes a paper-
# augmented 112x144x64 patch in about 0.1 s, see crates/negvol-train/benches/sampler.rs),
# F_MAPS (empty: the paper's widths), BIN (.gpu), PIPE_JOBS (5 pipeline cases at a time),
# RUN_TIMEOUT (120 s per throughput process), INFER_TIMEOUT (240 s per inference process).
# PLANMEM_SIZE (160: phantom grid edge at SPACING for planmem), PLANMEM_BUDGETS ("2,8" GiB).
# planmem (about a minute): `plan` for a few GPU budgets in f32 and bf16, a few training steps of
# each plan, the plan's memory estimate against the peak GPU memory the process held.
# With DEVICE=cpu and small sizes the same script runs here as a smoke test.
set -u
cd "$(dirname "$0")/.."
START=$(date +%s)
OUT=${OUT:-$PWD/gpu-out}
BIN=${BIN:-.gpu}
DEVICE=${DEVICE:-cuda}
SESSION_SECONDS=${SESSION_SECONDS:-560}
TRAIN_MINUTES=${TRAIN_MINUTES:-2.0}
TRAIN_CASES=${TRAIN_CASES:-40}
TEST_CASES=${TEST_CASES:-10}
ARCHS=${ARCHS:-unet3d unet3d-att vnet}
TARGETS=${TARGETS:-mc+tb}
BIG_BATCH=${BIG_BATCH:-2}
PRECISIONS=${PRECISIONS:-f32,bf16}
STEPS=${STEPS:-10}
INFER_SHAPE=${INFER_SHAPE:-686,686,686}
INFER_BATCH=${INFER_BATCH:-4}
PATCH=${PATCH:-112,144,64}
FOV=${FOV:-48,60,28}
SPACING=${SPACING:-0.4}
TRAIN_PRECISION=${TRAIN_PRECISION:-bf16}
TRAIN_WORKERS=${TRAIN_WORKERS:-12}
F_MAPS=${F_MAPS:-}
WORK=${WORK:-/tmp/negvol-gpu-work}
PIPE_JOBS=${PIPE_JOBS:-5}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}
INFER_TIMEOUT=${INFER_TIMEOUT:-240}
STAGES=${*:-check infer throughput table1}
mkdir -p "$OUT" "$WORK"

left() { echo $((START + SESSION_SECONDS - $(date +%s))); }
log() { echo "[$(date +%H:%M:%S) +$(($(date +%s) - START))s] $*" | tee -a "$OUT/session.log" >&2; }

# The machine's libtorch (its PyTorch), or the build machine's when smoke-testing here.
if [ -z "${NEGVOL_KEEP_LD:-}" ]; then
    TORCH_LIB=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
    export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if ls "$BIN"/monai-*.whl >/dev/null 2>&1 && ! python3 -c 'import monai' 2>/dev/null; then
    python3 -m pip install --quiet --no-deps --no-index --target "$WORK/py" "$BIN"/monai-*.whl \
        && export PYTHONPATH="$WORK/py${PYTHONPATH:+:$PYTHONPATH}"
fi

stage_check() {
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
        python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
        python3 -c 'import monai; print("monai", monai.__version__)' 2>&1 | tail -1
        # A binary built on the build machine runs here on CUDA: parse_device("cuda") refuses
        # to start without a GPU, and the bf16 step exercises the autocast-dtype symbol.
        for p in f32 bf16 f16; do
            "$BIN/train-bench" --device "$DEVICE" --model unet3d --patch 32,32,32 --steps 2 \
                --warmup 1 --precision "$p" || echo "FAILED: train-bench --precision $p"
        done
    } >"$OUT/check.log" 2>&1
    cat "$OUT/check.log" >&2
}

stage_throughput() {
    # Batch 1 in every precision, then the larger batch in bf16 (what one would train with).
    local common=(--bin "$BIN/train-bench" --device "$DEVICE" --archs "${ARCHS// /,}"
        --patch "$PATCH" --steps "$STEPS" --warmup 2 --max-seconds 5 --timeout "$RUN_TIMEOUT")
    python3 benches/peers/train_throughput.py "${common[@]}" --batches 1 \
        --precisions "$PRECISIONS" --out "$OUT/train_throughput_b1.jsonl" \
        >"$OUT/train_throughput.md" 2>"$OUT/train_throughput.log"
    python3 benches/peers/train_throughput.py "${common[@]}" --batches "$BIG_BATCH" \
        --precisions bf16 --out "$OUT/train_throughput_b$BIG_BATCH.jsonl" \
        >>"$OUT/train_throughput.md" 2>>"$OUT/train_throughput.log"
    cat "$OUT/train_throughput.md" >&2
}

stage_infer() {
    python3 benches/peers/train_throughput.py --bin "$BIN/train-bench" --device "$DEVICE" \
        --infer-shape "$INFER_SHAPE" --archs unet3d --batches "$INFER_BATCH" \
        --precisions "$PRECISIONS" --patch "$PATCH" --timeout "$INFER_TIMEOUT" --out "$OUT/infer.jsonl" \
        >"$OUT/infer.md" 2>"$OUT/infer.log"
    cat "$OUT/infer.md" >&2
}

stage_planmem() {
    rm -rf "$WORK/planmem"
    "$BIN/phantom" --out "$WORK/planmem" --cases 2 --seed 7 --size "${PLANMEM_SIZE:-160}" \
        --spacing "$SPACING" >"$OUT/planmem.log" 2>&1
    python3 benches/peers/plan_memory.py --bin "$BIN" --data "$WORK/planmem" \
        --budgets "${PLANMEM_BUDGETS:-2,8}" --precisions f32,bf16 --device "$DEVICE" \
        --out "$OUT/planmem.jsonl" >"$OUT/planmem.md" 2>>"$OUT/planmem.log"
    cat "$OUT/planmem.md" >&2
}

stage_table1() {
    local T="$OUT/table1"
    mkdir -p "$T"
    rm -rf "$WORK/train" "$WORK/test"
    if ! "$BIN/phantom" --out "$WORK/train" --cases "$TRAIN_CASES" --seed 100 --fov "$FOV" \
        --spacing "$SPACING" >"$T/phantoms.log" 2>&1 \
        || ! "$BIN/phantom" --out "$WORK/test" --cases "$TEST_CASES" --seed 900 --fov "$FOV" \
            --spacing "$SPACING" >>"$T/phantoms.log" 2>&1; then
        log "phantom generation failed"
        tail -3 "$T/phantoms.log" >&2
        return 1
    fi
    local n_models=0
    for _ in $ARCHS; do for _ in $TARGETS; do n_models=$((n_models + 1)); done; done
    local extra=()
    [ -n "$F_MAPS" ] && extra+=(--f-maps "$F_MAPS")
    for arch in $ARCHS; do
        for t in $TARGETS; do
            # Share what is left (keeping ~45 s per model for start-up, evaluation and the NV pipeline).
            local budget
            budget=$(python3 -c "print(max(0.1, min($TRAIN_MINUTES, ($(left) - 45 * $n_models) / 60 / $n_models)))")
            n_models=$((n_models - 1))
            local run="$WORK/runs/$arch-$t"
            local targets=()
            for x in ${t//+/ }; do targets+=(--target "$x"); done
            rm -rf "$run"
            log "train $arch $t for at most $budget min"
            "$BIN/train" --input-data "$WORK/train" "${targets[@]}" --model "$arch" --loss dice-ce \
                --alpha 1 --beta 1 --epochs 100 --max-minutes "$budget" --val-fraction 0 \
                --val-every 0 --precision "$TRAIN_PRECISION" --patch "$PATCH" --device "$DEVICE" \
                --workers "$TRAIN_WORKERS" --quiet --out "$run" "${extra[@]}" >"$T/train-$arch-$t.log" 2>&1 \
                || { log "training $arch $t failed"; tail -5 "$T/train-$arch-$t.log" >&2; continue; }
            cp "$run/log.jsonl" "$T/log-$arch-$t.jsonl"
            "$BIN/eval" --model-file "$run/last.json" --input-data "$WORK/test" --device "$DEVICE" \
                --json "$T/eval-$arch-$t.json" --csv "$T/eval-$arch-$t.csv" \
                >"$T/eval-$arch-$t.md" 2>&1 || log "eval $arch $t failed"
            cat "$T/eval-$arch-$t.md" >&2
        done
        # The NV pipeline (CT -> MC, TB -> NV) with this architecture's two models, scored
        # against the analytic NV masks of the unseen cases.
        local mc_model="$WORK/runs/$arch-mc/last.json" tb_model="$WORK/runs/$arch-tb/last.json"
        if [ -f "$WORK/runs/$arch-mc+tb/last.json" ]; then
            mc_model="$WORK/runs/$arch-mc+tb/last.json"
            tb_model="$mc_model"
        fi
        if [ -f "$mc_model" ] && [ -f "$tb_model" ]; then
            local P="$WORK/pipe/$arch"
            rm -rf "$P" && mkdir -p "$P/pred" "$P/ref"
            # PIPE_JOBS cases at a time: each process spends most of its few seconds starting CUDA.
            local running=0
            for c in "$WORK"/test/case_*; do
                local id
                id=$(basename "$c")
                (
                    "$BIN/pipeline" --image "$c/image.nii.gz" --mc-model "$mc_model" \
                        --tb-model "$tb_model" --out "$P/$id" --truth "$c" \
                        --no-pictures --device "$DEVICE" >"$P/$id.log" 2>&1 || exit 0
                    cp "$P/$id/nv.nii.gz" "$P/pred/$id.nii.gz"
                    cp "$c/nv.nii.gz" "$P/ref/$id.nii.gz"
                ) &
                running=$((running + 1))
                if [ "$running" -ge "$PIPE_JOBS" ]; then
                    wait -n
                    running=$((running - 1))
                fi
            done
            wait
            cat "$P"/case_*.log >>"$T/pipeline-$arch.log"
            "$BIN/metrics" --reference-dir "$P/ref" --prediction-dir "$P/pred" \
                --csv "$T/nv-$arch.csv" --summary "$T/nv-$arch.json" >"$T/nv-$arch.md" 2>&1 \
                || log "NV metrics $arch failed"
        fi
    done
    python3 - "$T" "$ARCHS" "$TARGETS" >"$T/table1.md" <<'PY'
import json, os, sys
d, archs, targets = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
rows = ["DICE %", "CE", "HD (paper, voxels)", "HD95 mm", "ASSD mm"]
print("| Obj | Score | " + " | ".join(archs) + " |")
print("|---|---|" + "---|" * len(archs))
structures = [s for t in targets for s in t.split("+")]
for t in structures:
    for r in rows:
        cells = []
        for a in archs:
            cell = "-"
            for run in targets:
                if t not in run.split("+"):
                    continue
                try:
                    m = json.load(open(os.path.join(d, f"eval-{a}-{run}.json")))[t]["metrics"][r]
                    cell = f"{m['mean']:.3f}+-{m['std']:.3f}"
                except (OSError, KeyError, ValueError, TypeError):
                    pass
            cells.append(cell)
        print(f"| {t.upper()} | {r} | " + " | ".join(cells) + " |")
# NV: derived by the pipeline from each architecture's MC and TB models, vs the analytic NV.
nv_rows = [("DICE %", "dice", 100.0), ("HD (paper, voxels)", "seed_paper_hd_voxels", 1.0),
           ("HD95 mm", "hd_percentile", 1.0), ("ASSD mm", "assd", 1.0),
           ("volume error %", "relative_volume_difference", 100.0)]
for r, key, scale in nv_rows:
    cells = []
    for a in archs:
        try:
            m = json.load(open(os.path.join(d, f"nv-{a}.json")))["mask"]["metrics"][key]
            cells.append(f"{scale * m['mean']:.3f}+-{scale * m['std']:.3f}")
        except (OSError, KeyError, ValueError, TypeError):
            cells.append("-")
    print(f"| NV (pipeline) | {r} | " + " | ".join(cells) + " |")
PY
    cat "$T/table1.md" >&2
}

log "stages: $STAGES; out: $OUT; budget ${SESSION_SECONDS}s"
for s in $STAGES; do
    if [ "$(left)" -lt 20 ]; then
        log "skip $s: out of time"
        continue
    fi
    log "stage $s"
    "stage_$s"
    log "stage $s done"
done
# One file with everything the README needs: the machine, then each stage's tables.
{
    echo "# negvol GPU session, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
        || echo "no nvidia-smi (device $DEVICE)"
    python3 -c 'import torch; print("torch", torch.__version__)' 2>/dev/null
    for f in train_throughput.md infer.md table1/table1.md planmem.md; do
        [ -f "$OUT/$f" ] && { echo; echo "## $f"; cat "$OUT/$f"; }
    done
} >"$OUT/SUMMARY.md" 2>&1
log "finished; summary in $OUT/SUMMARY.md"
