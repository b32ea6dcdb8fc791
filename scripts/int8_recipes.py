"""int8 recipes for the seven-layer nets: PSNR-Y lost and CPU speed-up of each `quantize_onnx` option set.

    python scripts/int8_recipes.py --threads 1 --scales 3      # writes benchmarks/onnx_int8_recipes.md

Each packaged seven-layer model (espcn-x{scale}) is exported with `export_onnx` and quantised with `quantize_onnx`
under each recipe of RECIPES, all calibrated on the same 256 LR training patches (`calibration_patches`). PSNR-Y
on Set5 and Set14 under the evaluation protocol (`espcn_hf.evaluation.evaluate`, as scripts/benchmark_onnx.py
scores the int8 table), and the process CPU time of onnxruntime on the frame giving a 1920x1080 output, float32 and
every recipe once per round in turn (--repeats rounds after a warm-up), all at --threads. The issue's target: at
most 0.1 dB lost on each set and at least 1.5x faster than float32 onnxruntime.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from common import DATA_DIR, REPO, interleaved, test_frame

from espcn_hf.data import load_benchmark, training_folders
from espcn_hf.evaluation import evaluate
from espcn_hf.fileio import atomic_write_text
from espcn_hf.onnx_export import INT8_DEFAULTS, calibration_patches, export_onnx, quantize_onnx
from espcn_hf.ort_backend import cpu_session
from espcn_hf.pretrained import load_model, packaged_weights

FRAMES = {2: (540, 960), 3: (360, 640), 4: (270, 480)}  # LR (height, width) giving a 1920x1080 output
SETS = ("Set5", "Set14")
# (name, quantize_onnx options); the last is quantize_onnx's default.
RECIPES = [
    (
        "first recipe: ReLU quantised apart, nearest rounding",
        {"fuse_relu": False, "weight_rounding": "nearest"},
    ),
    (
        "first recipe, int8 symmetric activations",
        {"fuse_relu": False, "weight_rounding": "nearest", "activation_type": "int8"},
    ),
    ("ReLU fused, nearest rounding", {"fuse_relu": True, "weight_rounding": "nearest"}),
    (
        "ReLU fused, nearest rounding, percentile calibration",
        {"fuse_relu": True, "weight_rounding": "nearest", "calibrate_method": "percentile"},
    ),
    ("ReLU fused, GPTQ rounding (default)", dict(INT8_DEFAULTS)),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[3, 2, 4], choices=[2, 3, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "onnx_int8_recipes.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python scripts/int8_recipes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            name = f"espcn-x{scale}"
            model = load_model(packaged_weights(scale, "espcn"), device="cpu")
            fp32 = export_onnx(model, Path(tmp) / f"{name}.onnx")
            patches = calibration_patches(scale, folders=training_folders("all", DATA_DIR / "train"))
            sets = {s: load_benchmark(s, root=DATA_DIR / "benchmarks", scale=scale) for s in SETS}
            paths = {"fp32": fp32}
            for i, (recipe, options) in enumerate(RECIPES):
                paths[recipe] = quantize_onnx(
                    fp32, Path(tmp) / f"{name}_{i}.onnx", calibration=patches, **options
                )
            sessions = {recipe: cpu_session(path, args.threads, quiet=True) for recipe, path in paths.items()}
            methods = {
                recipe: (lambda lr, s=s: torch.from_numpy(s.run(None, {"pixel_values": lr.numpy()})[0]))
                for recipe, s in sessions.items()
            }
            report = evaluate(methods, sets, scale)
            height, width = FRAMES[scale]
            feed = {
                "pixel_values": (test_frame(height, width).transpose(2, 0, 1)[None] / 255).astype(np.float32)
            }
            runs = {recipe: (lambda s=s, f=feed: s.run(None, f)) for recipe, s in sessions.items()}
            ms = {recipe: t["cpu_ms"] for recipe, t in interleaved(runs, args.repeats).items()}
            base = {s: report.scores(s, "fp32").psnr_y for s in SETS}
            for recipe, _ in RECIPES:
                lost = {s: base[s] - report.scores(s, recipe).psnr_y for s in SETS}
                speedup = ms["fp32"] / ms[recipe]
                meets = max(lost.values()) <= 0.1 and speedup >= 1.5
                rows.append((name, recipe, lost, ms["fp32"], ms[recipe], speedup, meets))
                print(f"{name} | {recipe} | lost {lost} | {speedup:.2f}x", flush=True)
    lines = [
        "# int8 recipes for the seven-layer nets (`quantize_onnx` options)",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} thread(s); torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}; a shared machine (compare rows of one model, timed in the same rounds).  ",
        "Every recipe: QDQ, int8 weights per output channel, the first and last convolution float32, calibrated "
        "on the same 256 LR training patches (32x32). PSNR-Y lost vs the float32 onnxruntime graph on Set5 and "
        "Set14 (`espcn_hf.evaluation.evaluate`); speed-up = float32 / int8 process CPU time, onnxruntime, frame "
        f"giving a 1920x1080 output, median of {args.repeats} interleaved rounds. Target: at most 0.1 dB lost on "
        "each set and at least 1.5x.",
        "",
        "| model | recipe | Set5 lost dB | Set14 lost dB | fp32 CPU ms | int8 CPU ms | speed-up | meets target |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, recipe, lost, fp32_ms, int8_ms, speedup, meets in rows:
        lines.append(
            f"| {name} | {recipe} | {lost['Set5']:.3f} | {lost['Set14']:.3f} | {fp32_ms:.1f} | {int8_ms:.1f} | "
            f"{speedup:.2f}x | {'yes' if meets else 'no'} |"
        )
    lines += [
        "",
        "Where the loss came from (espcn-x3): quantising each convolution's output before its ReLU spends most "
        "of the 256 levels on negatives the ReLU then drops, and the result is quantised a second time after the "
        "ReLU; fusing the ReLU into the output quantisation (onnxruntime drops the ReLU, zero point 0) removes "
        "most of the loss and a quantise/dequantise pair per layer. Most of what is left is the rounding of the "
        "int8 weights to the nearest level: GPTQ-style rounding against the calibration activations "
        "(`weight_rounding='gptq'`) takes it back with the same scales and graph. Exploratory measurements at x3, "
        "ReLU fused, nearest rounding, not repeated by this script: int8 weights alone (activations float) lost "
        "0.20 / 0.11 dB on Set5 / Set14, 0.01 / 0.01 with GPTQ rounding; entropy calibration and calibrating on "
        "the Set5 and Set14 LR images themselves changed the loss by under 0.01 dB (the calibration images are "
        "not the cause); per-tensor weights lost 0.60 / 0.36, reduce_range 0.79 / 0.48, onnxruntime's "
        "'distribution' calibration broke the graph (25 dB lost).",
    ]
    atomic_write_text(args.output, "\n".join(lines) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
