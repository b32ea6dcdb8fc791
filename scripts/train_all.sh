#!/usr/bin/env bash
# Train the shipped ESPCN models one after another, each within a time budget, and ship each best/ model as the
# packaged weights espcn_hf/weights/<name>/ (scripts/ship_model.py): x3 (seven-layer) first, then x2 and x4 started from the x3 feature layers, then the paper's x3 net.
#
#   bash scripts/train_all.sh                 # from the repository root; logs in runs/<name>/log.txt
#   MIN_X3=42 MIN_X2=25 MIN_X4=25 MIN_PAPER=25 THREADS=1 bash scripts/train_all.sh
#   mkdir -p runs; setsid nohup bash scripts/train_all.sh > runs/train_all.log 2>&1 < /dev/null &
#
# A run whose final/ folder exists is not trained again (delete runs/<name> to retrain); a run with checkpoints
# but no final/ (crashed, killed) is resumed from its newest checkpoint that loads. THREADS=1 is right on a busy shared CPU
# (measured: 2 threads were 8x slower there, OpenMP threads spin-waiting); use 2+ on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
RUNS=${RUNS:-runs}
THREADS=${THREADS:-1}
MIN_X3=${MIN_X3:-42}
MIN_X2=${MIN_X2:-25}
MIN_X4=${MIN_X4:-25}
MIN_PAPER=${MIN_PAPER:-25}

train() {  # train NAME MINUTES [extra train.py flags...]
    local name=$1 minutes=$2
    shift 2
    local out="$RUNS/$name"
    if [ -d "$out/final" ]; then
        echo "$(date +%T) $name: already trained ($out/final), skipping"
    else
        mkdir -p "$out"
        echo "$(date +%T) $name: training for up to $minutes min -> $out (log: $out/log.txt)"
        # latest: the newest checkpoint that loads, or a fresh start when there is none
        "$PYTHON" scripts/train.py --config "configs/$name.yaml" --output_dir "$out" --num_threads "$THREADS" \
            --max_train_minutes "$minutes" --checkpointing_steps 1500 --with_tracking \
            --resume_from_checkpoint latest "$@" >> "$out/log.txt" 2>&1
        tail -n 1 "$out/log.txt"
    fi
    "$PYTHON" scripts/ship_model.py "$out/best" "$name"
    echo "$(date +%T) $name: best model shipped as espcn_hf/weights/$name ($(tr -d '\n ' < "$out/best/eval_results.json"))"
}

train espcn-x3 "$MIN_X3"
train espcn-x2 "$MIN_X2" --init_from "$RUNS/espcn-x3/best"
train espcn-x4 "$MIN_X4" --init_from "$RUNS/espcn-x3/best"
train espcn-paper-x3 "$MIN_PAPER"
echo "$(date +%T) all done"
