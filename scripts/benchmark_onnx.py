"""ONNX on CPU: onnxruntime float32 and int8 vs torch vs OpenCV's ESPCN, same frames, same run; int8 PSNR cost.

    python scripts/benchmark_onnx.py --threads 1      # writes benchmarks/onnx_cpu.md and benchmarks/onnx_int8.json

The packaged models (espcn-x2, espcn-x3, espcn-x4: the seven-layer net; espcn-paper-x3: the paper's) are exported
with `espcn_hf.onnx_export.export_onnx` (opset 18, dynamic batch/height/width) and quantised with
`quantize_onnx` (int8 QDQ, per-channel weights rounded GPTQ-style, uint8 activations calibrated on 256 LR patches
of the training images, ReLUs fused into the output quantisation, first and last convolution in float32:
`INT8_RECIPE`), into a temporary folder. Other recipes: scripts/int8_recipes.py.

1. Speed, x3, both presets, on one frame per size (640x360 -> 1920x1080 and 320x180 -> 960x540): torch's
   `upscale_tensor` default path (fp32, channels-last, 256-px tiles) and whole frame, onnxruntime float32 and int8
   on the whole frame, OpenCV dnn_superres ESPCN x3 (`../shared/data/peers`; the paper's 3-layer Y-channel net),
   with the largest absolute difference between onnxruntime float32 and torch.
2. int8 per model: PSNR-Y on Set5 and Set14 of onnxruntime float32 and int8 (the evaluation protocol of
   `espcn_hf.evaluation.evaluate`), and the speed of both on the frame giving a 1920x1080 output at that scale,
   beside OpenCV's ESPCN at that scale. Whether the Hub upload ships the int8 file follows
   (`espcn_hf.hub.int8_verdict`: at most 0.1 dB lost on each set); the rows go to benchmarks/onnx_int8.json, the
   file the upload reads.

Timing: every method of a table runs once per round in turn (--repeats rounds after one warm-up), all with the same
thread count; medians of the process CPU time (the fair measure at one thread on a shared machine) and of the
wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from common import DATA_DIR, REPO, interleaved, opencv_espcn, test_frame

from espcn_hf.data import load_benchmark, training_folders
from espcn_hf.evaluation import evaluate
from espcn_hf.fileio import atomic_write_text
from espcn_hf.hub import INT8_MAX_LOSS_DB, int8_verdict
from espcn_hf.inference import upscale_tensor
from espcn_hf.onnx_export import (
    DEFAULT_OPSET,
    INT8_RECIPE,
    calibration_patches,
    export_onnx,
    quantize_onnx,
    weights_digest,
)
from espcn_hf.ort_backend import cpu_session
from espcn_hf.pretrained import load_model, packaged_weights

SIZES = [(360, 640), (180, 320)]  # LR (height, width) at x3
FRAMES = {2: (540, 960), 3: (360, 640), 4: (270, 480)}  # LR (height, width) giving a 1920x1080 output
MODELS = [
    ("espcn-x2", 2, "espcn"),
    ("espcn-x3", 3, "espcn"),
    ("espcn-x4", 4, "espcn"),
    ("espcn-paper-x3", 3, "espcn-paper"),
]
SETS = ("Set5", "Set14")


def onnx_upscaler(sess: ort.InferenceSession):
    """An `evaluate` method: LR (1, 3, h, w) in [0, 1] -> the graph's reconstruction."""
    return lambda lr: torch.from_numpy(sess.run(None, {"pixel_values": lr.numpy()})[0])


def ratio(value: float, peer: float | None) -> str:
    return f"{value / peer:.2f}x" if peer else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--threads", type=int, default=None, help="threads for every method (default: torch's)"
    )
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "onnx_cpu.md")
    parser.add_argument("--int8-output", type=Path, default=REPO / "benchmarks" / "onnx_int8.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    load_before = os.getloadavg()[0]
    command = "python scripts/benchmark_onnx.py " + " ".join(argv if argv is not None else sys.argv[1:])
    speed_rows, int8_rows, sizes_kb = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        models, fp32, int8, patches = {}, {}, {}, {}
        for name, scale, preset in MODELS:
            models[name] = load_model(packaged_weights(scale, preset), device="cpu")
            fp32[name] = export_onnx(models[name], Path(tmp) / f"{name}.onnx")
            if scale not in patches:
                patches[scale] = calibration_patches(
                    scale, folders=training_folders("all", DATA_DIR / "train")
                )
            int8[name] = quantize_onnx(
                fp32[name], Path(tmp) / f"{name}_int8.onnx", calibration=patches[scale]
            )
            sizes_kb[name] = (fp32[name].stat().st_size / 1024, int8[name].stat().st_size / 1024)
            print(f"{name}: exported and quantised", flush=True)
        sessions = {
            (name, kind): cpu_session(path[name], threads)
            for name in models
            for kind, path in (("fp32", fp32), ("int8", int8))
        }

        # 1. x3 speed, both presets, beside torch and OpenCV
        peer = opencv_espcn(3, threads)
        for height, width in SIZES:
            frame = test_frame(height, width)
            pixels = torch.from_numpy(frame).permute(2, 0, 1)[None].float().div(255)
            feed = {"pixel_values": pixels.numpy()}
            case = f"{width}x{height} -> {width * 3}x{height * 3}"
            methods, diffs = {}, {}
            if peer is not None:
                bgr = np.ascontiguousarray(frame[..., ::-1])
                methods["OpenCV ESPCN (dnn_superres)"] = lambda b=bgr: peer.upsample(b)
            for name in ("espcn-x3", "espcn-paper-x3"):
                model, preset = models[name], name.removesuffix("-x3")
                (onnx_out,) = sessions[name, "fp32"].run(None, feed)
                diffs[f"{preset}: onnxruntime fp32"] = float(
                    np.abs(onnx_out - upscale_tensor(model, pixels, None).numpy()).max()
                )
                methods[f"{preset}: torch, default path"] = lambda m=model, x=pixels: upscale_tensor(m, x)
                methods[f"{preset}: torch, whole frame"] = lambda m=model, x=pixels: upscale_tensor(
                    m, x, None
                )
                for kind in ("fp32", "int8"):
                    methods[f"{preset}: onnxruntime {kind}"] = lambda s=sessions[name, kind], f=feed: s.run(
                        None, f
                    )
            times = interleaved(methods, args.repeats)
            for method, measured in times.items():
                speed_rows.append({"case": case, "method": method, **measured, "diff": diffs.get(method)})
            print("\n".join(f"{case} | {m} | {t['cpu_ms']:.1f} ms" for m, t in times.items()), flush=True)

        # 2. int8 per model: PSNR cost and speed
        for name, scale, _ in MODELS:
            sets = {s: load_benchmark(s, root=DATA_DIR / "benchmarks", scale=scale) for s in SETS}
            methods = {kind: onnx_upscaler(sessions[name, kind]) for kind in ("fp32", "int8")}
            report = evaluate(methods, sets, scale)
            psnr = {kind: {s: report.scores(s, kind).psnr_y for s in SETS} for kind in methods}
            height, width = FRAMES[scale]
            frame = test_frame(height, width)
            feed = {"pixel_values": (frame.transpose(2, 0, 1)[None] / 255).astype(np.float32)}
            timed = {
                f"onnxruntime {kind}": lambda s=sessions[name, kind], f=feed: s.run(None, f)
                for kind in ("fp32", "int8")
            }
            peer = opencv_espcn(scale, threads)
            if peer is not None:
                bgr = np.ascontiguousarray(frame[..., ::-1])
                timed["OpenCV ESPCN"] = lambda p=peer, b=bgr: p.upsample(b)
            times = interleaved(timed, args.repeats)
            row = {
                "name": name,
                "scale": scale,
                "weights_sha256": weights_digest(models[name]),
                "psnr_fp32": psnr["fp32"],
                "psnr_int8": psnr["int8"],
                "psnr_lost_db": {s: psnr["fp32"][s] - psnr["int8"][s] for s in SETS},
                "frame": f"{width}x{height} -> {width * scale}x{height * scale}",
                "ms": {method: t for method, t in times.items()},
                "speedup_cpu": times["onnxruntime fp32"]["cpu_ms"] / times["onnxruntime int8"]["cpu_ms"],
                "size_kb": {"fp32": sizes_kb[name][0], "int8": sizes_kb[name][1]},
            }
            int8_rows.append(row)
            print(
                f"{name}: lost {row['psnr_lost_db']}, int8 {row['speedup_cpu']:.2f}x faster (CPU)", flush=True
            )

    measurement = {
        "command": command.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {threads} thread(s)",
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
        "recipe": dict(INT8_RECIPE),
        "max_loss_db": INT8_MAX_LOSS_DB,
        "models": int8_rows,
    }
    for row in int8_rows:
        row["ships"], row["why"] = int8_verdict(measurement, models[row["name"]])
    atomic_write_text(args.int8_output, json.dumps(measurement, indent=2) + "\n")

    recipe = ", ".join(f"{key.replace('_', ' ')}: {value}" for key, value in INT8_RECIPE.items())
    lines = [
        "# ONNX on CPU: onnxruntime float32 and int8 vs torch vs OpenCV ESPCN",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, threads for every method: {threads}; torch "
        f"{torch.__version__}, onnxruntime {ort.__version__}. Load average (1 min) before / after: "
        f"{load_before:.1f} / {os.getloadavg()[0]:.1f} (a shared machine: compare rows of one table, which ran "
        "in the same rounds).  ",
        f"Export: `espcn_hf.onnx_export.export_onnx`, opset {DEFAULT_OPSET}, dynamic batch/height/width, one file "
        f"({sizes_kb['espcn-x3'][0]:.0f} kB espcn-x3, {sizes_kb['espcn-paper-x3'][0]:.0f} kB espcn-paper-x3); int8: "
        f"`quantize_onnx` ({sizes_kb['espcn-x3'][1]:.0f} kB, {sizes_kb['espcn-paper-x3'][1]:.0f} kB). Batch 1, "
        f"milliseconds per frame, medians of {args.repeats} rounds (each method once per round in turn) after a "
        "warm-up. CPU = the process's CPU time, wall = elapsed time.",
        "",
        "## x3, both presets",
        "",
        "| frame | method | CPU ms | vs OpenCV (CPU) | wall ms | vs OpenCV (wall) | max abs diff onnxruntime vs torch |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    peers = {r["case"]: r for r in speed_rows if r["method"].startswith("OpenCV")}
    for r in speed_rows:
        peer = peers.get(r["case"], {})
        diff = "" if r["diff"] is None else f"{r['diff']:.1e}"
        lines.append(
            f"| {r['case']} | {r['method']} | {r['cpu_ms']:.1f} | {ratio(r['cpu_ms'], peer.get('cpu_ms'))} | "
            f"{r['wall_ms']:.1f} | {ratio(r['wall_ms'], peer.get('wall_ms'))} | {diff} |"
        )
    lines += [
        "",
        "OpenCV's ESPCN is the paper's small 3-convolution Y-channel net; espcn-x3 is the seven-layer RGB default "
        f"({models['espcn-x3'].num_macs_per_pixel():,} multiply-adds per LR pixel), espcn-paper-x3 the paper's net "
        f"in this package ({models['espcn-paper-x3'].num_macs_per_pixel():,}; Y through the net, CbCr bicubic, RGB in "
        "and out). The torch rows are the network only (`upscale_tensor`); `upscale()` end to end is in "
        "benchmarks/speed_cpu.md.",
        "",
        "## int8 (`quantize_onnx`): PSNR-Y lost and speed gained, per packaged model",
        "",
        f"Recipe: {recipe}. PSNR-Y of the "
        "onnxruntime graphs under the evaluation protocol (`espcn_hf.evaluation.evaluate`: uint8 outputs, Y of "
        "BT.601, `scale` pixels of border); speed on the frame giving a 1920x1080 output, whole frame. The Hub upload "
        f"ships `onnx/model_quantized.onnx` only where at most {INT8_MAX_LOSS_DB} dB is lost on each set "
        "(`espcn_hf.hub.int8_verdict`, reading benchmarks/onnx_int8.json).",
        "",
        "| model | Set5 fp32 -> int8 (lost) | Set14 fp32 -> int8 (lost) | frame | fp32 CPU ms | int8 CPU ms | "
        "int8 speed-up | int8 vs OpenCV (CPU) | ships |",
        "|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for row in int8_rows:
        cells = [
            f"{row['psnr_fp32'][s]:.2f} -> {row['psnr_int8'][s]:.2f} ({row['psnr_lost_db'][s]:.2f})"
            for s in SETS
        ]
        ms = row["ms"]
        peer = ms.get("OpenCV ESPCN", {}).get("cpu_ms")
        lines.append(
            f"| {row['name']} | {' | '.join(cells)} | {row['frame']} | {ms['onnxruntime fp32']['cpu_ms']:.1f} | "
            f"{ms['onnxruntime int8']['cpu_ms']:.1f} | {row['speedup_cpu']:.2f}x | "
            f"{ratio(ms['onnxruntime int8']['cpu_ms'], peer)} | {'yes' if row['ships'] else 'no'}: {row['why']} |"
        )
    lines += [
        "",
        "Targets of the issue: at most 0.1 dB lost and at least 1.5x faster than float32 onnxruntime on the same "
        "frames. Wall times and OpenCV's per scale are in benchmarks/onnx_int8.json.",
    ]
    atomic_write_text(args.output, "\n".join(lines) + "\n")
    print(f"wrote {args.output} and {args.int8_output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
