"""Inference speed and memory of ESPCN, side by side with PIL bicubic and OpenCV dnn_superres ESPCN, same run.

    python scripts/benchmark.py                      # CPU (and CUDA when present), writes benchmarks/speed_<device>.md
    python scripts/benchmark.py --repeats 15 --skip-memory

What it measures (medians over --repeats runs after warm-up, batch 1):
  * milliseconds per 1080p output frame: x3 from 640x360, x2 from 960x540, x4 from 480x270, for the seven-layer
    default and the paper preset (end to end: RGB in, Y through the net, CbCr bicubic, RGB out), for each inference
    mode of `espcn_hf.inference.INFERENCE_MODES` (dtype and memory format given to `upscale_tensor`), next to
    PIL bicubic and OpenCV's ESPCN (same frame);
  * achieved GFLOP/s of the network (2 * MACs / time) and its ratio to a 4096x4096 fp32 matmul measured here;
  * peak resident memory of a tiled x4 upscale of a 4000x3000 image (fresh subprocess), and that the tiled
    output equals the untiled one on an image that fits both ways.
Weights do not change the speed; the packaged weights are used where present, random init otherwise.
Every output file is written atomically (`espcn_hf.fileio`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from common import REPO, median_ms, opencv_espcn, test_frame
from PIL import Image

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution
from espcn_hf.cli import tile_size_type
from espcn_hf.fileio import atomic_write_text
from espcn_hf.inference import INFERENCE_MODES, upscale_tensor
from espcn_hf.metrics import to_unit_float
from espcn_hf.pretrained import CheckpointError, packaged_weights

FRAMES = {3: (360, 640), 2: (540, 960), 4: (270, 480)}  # LR (H, W) giving a 1920x1080 output


def matmul_gflops(device: str, repeats: int, dtype=torch.float32) -> float:
    a = torch.randn(4096, 4096, device=device, dtype=dtype)
    b = torch.randn(4096, 4096, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else None
    ms = median_ms(lambda: torch.mm(a, b), repeats, sync=sync)
    return 2 * 4096**3 / (ms / 1000) / 1e9


def load_net(preset: str, scale: int) -> ESPCNForImageSuperResolution:
    try:
        return ESPCNForImageSuperResolution.from_pretrained(packaged_weights(scale, preset)).eval()
    except CheckpointError:
        pass
    torch.manual_seed(0)
    return ESPCNForImageSuperResolution(ESPCNConfig.from_preset(preset, upscale_factor=scale)).eval()


def speed_rows(device: str, repeats: int, matmul: float, modes: list[str], tile) -> list[dict]:
    rows = []
    sync = torch.cuda.synchronize if device == "cuda" else None
    for scale, (height, width) in FRAMES.items():
        frame = test_frame(height, width)
        lr = torch.from_numpy(frame).permute(2, 0, 1)[None].float().div(255).to(device)
        pil = Image.fromarray(frame)
        peer_ms = {}
        if device == "cpu":
            peer_ms["PIL bicubic"] = median_ms(
                lambda pil=pil, size=(width * scale, height * scale): pil.resize(size, Image.BICUBIC), repeats
            )
            sr = opencv_espcn(scale, torch.get_num_threads())
            if sr is not None:
                bgr = np.ascontiguousarray(frame[..., ::-1])
                peer_ms["OpenCV ESPCN"] = median_ms(lambda sr=sr, bgr=bgr: sr.upsample(bgr), repeats)
        for label, ms in peer_ms.items():
            rows.append({"scale": scale, "lr": f"{width}x{height}", "method": label, "ms": ms})
        for preset in ("espcn", "espcn-paper"):
            model = load_net(preset, scale).to(device)
            macs = model.num_macs_per_pixel() * height * width
            for path in modes:
                if path == "bf16" and device == "cpu" and not torch.backends.mkldnn.is_available():
                    continue
                options = INFERENCE_MODES[path]
                with torch.inference_mode():
                    ms = median_ms(
                        lambda model=model, lr=lr, options=options: upscale_tensor(
                            model, lr, tile_size=tile, **options
                        ),
                        repeats,
                        sync=sync,
                    )
                gflops = 2 * macs / (ms / 1000) / 1e9
                row = {
                    "scale": scale, "lr": f"{width}x{height}", "method": f"{preset} [{path}]", "ms": ms,
                    "gflops": gflops, "matmul_ratio": gflops / matmul,
                }  # fmt: skip
                if "OpenCV ESPCN" in peer_ms:
                    row["vs_opencv"] = ms / peer_ms["OpenCV ESPCN"]
                rows.append(row)
    return rows


MEMORY_SCRIPT = """
import resource, sys, numpy as np, torch
from PIL import Image
from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, upscale
torch.set_num_threads(int(sys.argv[3]))
h, w, tile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4]
model = ESPCNForImageSuperResolution(ESPCNConfig(upscale_factor=4)).eval()
image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = upscale(image, model, tile_size=None if tile == "none" else int(tile), max_pixels=None)
assert out.size == (4 * w, 4 * h)
print(base / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_memory_mb(height: int, width: int, tile: str) -> tuple[float, float]:
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(height), str(width), str(torch.get_num_threads()), tile],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    before, peak = (float(v) for v in result.stdout.split()[-2:])
    return before, peak


def tiling_max_diff() -> float:
    torch.manual_seed(0)
    model = ESPCNForImageSuperResolution(ESPCNConfig(upscale_factor=4)).eval()
    x = to_unit_float(torch.from_numpy(test_frame(300, 400))).permute(2, 0, 1)[None]
    whole = upscale_tensor(model, x, tile_size=None)
    tiled = upscale_tensor(model, x, tile_size=96)
    return (whole - tiled).abs().max().item()


def to_markdown(report: dict) -> str:
    lines = [
        f"# Inference speed ({report['device']})",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}, torch {report['torch']}, {report['threads']} threads.  ",
        f"Reference: 4096x4096 fp32 matmul **{report['matmul_gflops']:.1f} GFLOP/s** (median of {report['repeats']}).",
        "",
        f"Milliseconds per frame (median), output 1920x1080, tile_size={report['tile']!r}. GFLOP/s counts the "
        "network's convolutions on the frame (not the tile overlap), so it is the useful rate.",
        "",
        "| scale | LR input | method | ms | GFLOP/s | vs fp32 matmul | time vs OpenCV ESPCN |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        gflops = f"{row['gflops']:.1f}" if "gflops" in row else ""
        ratio = f"{100 * row['matmul_ratio']:.0f}%" if "matmul_ratio" in row else ""
        vs = f"{row['vs_opencv']:.2f}x" if "vs_opencv" in row else ""
        lines.append(
            f"| x{row['scale']} | {row['lr']} | {row['method']} | {row['ms']:.1f} | {gflops} | {ratio} | {vs} |"
        )
    if "memory" in report:
        mem = report["memory"]
        lines += [
            "",
            "## Tiled x4 upscale of a 4000x3000 image (output 16000x12000)",
            "",
            f"Peak resident memory of the whole process: **{mem['tiled_peak_mb']:.0f} MB** with tile {mem['tile']} "
            f"(after imports: {mem['baseline_mb']:.0f} MB).  ",
            f"Tiled vs untiled output on a 400x300 input (x4, tile 96): max abs difference {report['tiling_max_diff']:.2e}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument(
        "--paths",
        nargs="+",
        default=list(INFERENCE_MODES),
        choices=list(INFERENCE_MODES),
        help="inference modes",
    )
    parser.add_argument(
        "--tile",
        type=tile_size_type,
        default="auto",
        help="tile_size for the network rows: 'auto' (what upscale() does), 0 or 'none' = whole frame",
    )
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--out", default=str(REPO / "benchmarks"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    command = "python scripts/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for device in devices:
        matmul = matmul_gflops(device, args.repeats)
        report = {
            "device": device if device == "cpu" else torch.cuda.get_device_name(),
            "command": command.strip(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "matmul_gflops": matmul,
            "tile": args.tile,
            "rows": speed_rows(device, args.repeats, matmul, args.paths, args.tile),
        }
        if device == "cpu" and not args.skip_memory:
            baseline, peak = peak_memory_mb(3000, 4000, "512")
            report["memory"] = {"tile": 512, "tiled_peak_mb": peak, "baseline_mb": baseline}
            report["tiling_max_diff"] = tiling_max_diff()
        markdown = to_markdown(report)
        print(markdown)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / f"speed_{device}.md", markdown)
        atomic_write_text(out / f"speed_{device}.json", json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
