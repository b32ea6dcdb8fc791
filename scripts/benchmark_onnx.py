"""ONNX export speed and equality on CPU: onnxruntime vs torch vs OpenCV's ESPCN, same frames, same run.

    python scripts/benchmark_onnx.py                 # writes benchmarks/onnx_cpu.md

The packaged espcn-x3 and espcn-paper-x3 weights are exported with `espcn_hf.onnx_export.export_onnx` (opset 18,
dynamic batch/height/width) to a temporary folder. On one frame per size (batch 1; 640x360 -> 1920x1080 and
320x180 -> 960x540), medians of --repeats runs after 2 warm-up runs, all with the same thread count:
  * torch, `upscale_tensor` default path (fp32, channels-last, 256-px tiles on CPU);
  * torch, whole frame (`tile_size=None`);
  * onnxruntime CPUExecutionProvider, whole frame (default graph optimisations);
  * OpenCV dnn_superres ESPCN x3 (`../shared/data/peers`; its own, smaller network: 3 layers, Y channel);
and the largest absolute difference between onnxruntime and torch on that frame.
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
from common import REPO, median_ms, opencv_espcn, test_frame

from espcn_hf.fileio import atomic_write_text
from espcn_hf.inference import upscale_tensor
from espcn_hf.onnx_export import DEFAULT_OPSET, export_onnx
from espcn_hf.pretrained import load_model, packaged_weights

SIZES = [(360, 640), (180, 320)]  # LR (height, width)
SCALE = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--threads", type=int, default=None, help="threads for every method (default: torch's)"
    )
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "onnx_cpu.md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    load_before = os.getloadavg()[0]
    rows, sizes_kb, macs = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        sessions, models = {}, {}
        for preset in ("espcn", "espcn-paper"):
            models[preset] = load_model(packaged_weights(SCALE, preset), device="cpu")
            path = export_onnx(models[preset], Path(tmp) / f"{preset}.onnx")
            sizes_kb[preset] = path.stat().st_size / 1024
            macs[preset] = models[preset].num_macs_per_pixel()
            sessions[preset] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        peer = opencv_espcn(SCALE, threads)
        for height, width in SIZES:
            frame = test_frame(height, width)
            pixels = torch.from_numpy(frame).permute(2, 0, 1)[None].float().div(255)
            case = f"{width}x{height} -> {width * SCALE}x{height * SCALE}"
            if peer is not None:
                bgr = np.ascontiguousarray(frame[..., ::-1])
                rows.append(
                    (
                        case,
                        "OpenCV ESPCN (dnn_superres)",
                        median_ms(lambda b=bgr: peer.upsample(b), args.repeats),
                        None,
                    )
                )
            for preset, model in models.items():
                session, feed = sessions[preset], {"pixel_values": pixels.numpy()}
                (onnx_out,) = session.run(None, feed)
                torch_out = upscale_tensor(model, pixels, None)
                diff = float(np.abs(onnx_out - torch_out.numpy()).max())
                rows.append(
                    (
                        case,
                        f"{preset}: torch, default path",
                        median_ms(lambda m=model, x=pixels: upscale_tensor(m, x), args.repeats),
                        None,
                    )
                )
                rows.append(
                    (
                        case,
                        f"{preset}: torch, whole frame",
                        median_ms(lambda m=model, x=pixels: upscale_tensor(m, x, None), args.repeats),
                        None,
                    )
                )
                rows.append(
                    (
                        case,
                        f"{preset}: onnxruntime",
                        median_ms(lambda s=session, f=feed: s.run(None, f), args.repeats),
                        diff,
                    )
                )
            print("\n".join(f"{r[0]} | {r[1]} | {r[2]:.1f} ms" for r in rows[-7:]), flush=True)

    command = "python scripts/benchmark_onnx.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# ONNX export on CPU: onnxruntime vs torch vs OpenCV ESPCN",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, threads for every method: {threads}; torch "
        f"{torch.__version__}, onnxruntime {ort.__version__}. Load average (1 min) before / after: "
        f"{load_before:.1f} / {os.getloadavg()[0]:.1f} (a shared machine: compare rows of one run).  ",
        f"Export: `espcn_hf.onnx_export.export_onnx`, opset {DEFAULT_OPSET}, dynamic batch/height/width, one file "
        f"({sizes_kb['espcn']:.0f} kB espcn-x3, {sizes_kb['espcn-paper']:.0f} kB espcn-paper-x3). Batch 1, "
        f"milliseconds per frame, median of {args.repeats} after 2 warm-up runs.",
        "",
        "| frame | method | ms | vs OpenCV | max abs diff onnxruntime vs torch |",
        "|---|---|---:|---:|---:|",
    ]
    peer_ms = {r[0]: r[2] for r in rows if r[1].startswith("OpenCV")}
    for case, method, ms, diff in rows:
        ratio = f"{ms / peer_ms[case]:.2f}x" if case in peer_ms else ""
        lines.append(f"| {case} | {method} | {ms:.1f} | {ratio} | {'' if diff is None else f'{diff:.1e}'} |")
    lines += [
        "",
        "`vs OpenCV` is time relative to OpenCV's ESPCN on the same frame (below 1 = faster). OpenCV's ESPCN is "
        "the paper's small 3-convolution Y-channel net; espcn-x3 is the seven-layer RGB default "
        f"({macs['espcn']:,} multiply-adds per LR pixel), espcn-paper-x3 the paper's net in this package "
        f"({macs['espcn-paper']:,}; Y through the net, CbCr bicubic, RGB in and out).",
    ]
    atomic_write_text(args.output, "\n".join(lines) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
