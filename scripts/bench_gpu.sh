#!/usr/bin/env bash
# Inference and video speed on a GPU, in one short command (about 1.5 minutes on 2026-11-26; 3 at most), on the
# machine that ran scripts/train_gpu.sh (DEVELOPERS.md, "Training on a GPU"). That machine's image has no PyAV, so
# copy its wheel in the git-ignored folder .whl/ along with the checkout; download it here with:
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 -d .whl av==18.1.0
# Then, on the machine with the GPU, from the checkout's root: bash scripts/bench_gpu.sh
# What it writes into $OUT (default runs/bench-gpu-out): auto/speed_cuda.{md,json} (scripts/benchmark.py, the
# default tile_size='auto'), whole/speed_cuda.{md,json} (--tile none: the whole-frame model time),
# speed_video_cuda.md (scripts/benchmark_video.py --device cuda --frames 48 --repeats 2: longer than the default
# 24-frame clip, on which libx264 medium managed only 13.8 fps at 1080p on a 16-core GPU machine), bench.log. Copy
# them back into benchmarks/ (speed_cuda.*, speed_cuda_whole_frame.*, speed_video_cuda.md) and run
# python scripts/summarize_results.py --write-readme.
# DEVICE=cpu runs the same path on a CPU with tiny settings (a check of the script, not a benchmark).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/bench-gpu-out}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT/auto" "$OUT/whole"
if ls .whl/av-*.whl > /dev/null 2>&1 && ! "$PYTHON" -c "import av" 2> /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/av-*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ "$DEVICE" = cpu ]; then REP=(--repeats 1); VREP=(--repeats 1 --frames 4); else REP=(--repeats 9); VREP=(--frames 48 --repeats 2); fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
    echo "== benchmark.py --device $DEVICE (tile auto) $(date -u +%T)"
    timeout -s KILL 60 "$PYTHON" scripts/benchmark.py --device "$DEVICE" --skip-memory "${REP[@]}" --out "$OUT/auto"
    echo "exit $? $(date -u +%T)"
    echo "== benchmark.py --device $DEVICE --tile none"
    timeout -s KILL 50 "$PYTHON" scripts/benchmark.py --device "$DEVICE" --skip-memory --tile none "${REP[@]}" \
        --out "$OUT/whole"
    echo "exit $? $(date -u +%T)"
    echo "== benchmark_video.py --device $DEVICE"
    timeout -s KILL 110 "$PYTHON" scripts/benchmark_video.py --device "$DEVICE" "${VREP[@]}" \
        --output "$OUT/speed_video_$DEVICE.md"
    echo "exit $? $(date -u +%T)"
} 2>&1 | tee "$OUT/bench.log"
