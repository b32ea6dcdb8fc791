"""Inference speed and memory of ESPCN, side by side with PIL bicubic and OpenCV dnn_superres ESPCN, same run.

    python scripts/benchmark.py                      # CPU (and CUDA when present), writes benchmarks/speed_<device>.md
    python scripts/benchmark.py --repeats 15 --skip-memory
    python scripts/benchmark.py --device cpu --threads 1 --upscale-only --out /tmp/bench   # upscale() rows only

What it measures (medians over --repeats runs after warm-up, batch 1):
  * what a user calls, `upscale(PIL image, model)` (PIL in, PIL out: colour conversion, tiles, rounding and
    pasting included), x3 to 960x540 and 1920x1080 outputs, for both presets and each backend (torch,
    onnxruntime, and what "auto" chose), beside OpenCV's ESPCN on the same frame; every method runs once per round
    in turn (--repeats rounds), so a busy machine slows all alike; both the process CPU time (the fair measure
    at one thread on a shared machine) and the wall time are reported;
  * milliseconds per 1080p output frame: x3 from 640x360, x2 from 960x540, x4 from 480x270, for the seven-layer
    default and the paper preset (end to end: RGB in, Y through the net, CbCr bicubic, RGB out), for each inference
    mode of `espcn_hf.inference.INFERENCE_MODES` (dtype and memory format given to `upscale_tensor`), next to
    PIL bicubic and OpenCV's ESPCN (same frame);
  * achieved GFLOP/s of the network (2 * MACs / time) and its ratio to a 4096x4096 fp32 matmul measured here;
  * on CPU, the same network exported to ONNX (`espcn_hf.onnx_export.export_onnx`) and run on the whole frame by
    the other fp32 runtimes installed: onnxruntime (the `onnx` extra) and OpenVINO (`pip install openvino`,
    precision hint f32), each where its output equals torch's within 1e-4 (the others are named, with their
    difference): how fast the fp32 network can run here, whatever the runtime;
  * peak resident memory of a tiled x4 upscale of a 4000x3000 image (fresh subprocess; torch, and onnxruntime at
    that tile and at the default one where the `onnx` extra is installed), and that the tiled
    output equals the untiled one on an image that fits both ways.
Weights do not change the speed; the packaged weights are used where present, random init otherwise.
Every output file is written atomically (`espcn_hf.fileio`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import REPO, interleaved, median_ms, opencv_espcn, test_frame
from PIL import Image

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, upscale
from espcn_hf.cli import tile_size_type
from espcn_hf.fileio import atomic_write_text
from espcn_hf.inference import AUTO_TILE_SIZE, INFERENCE_MODES, upscale_tensor
from espcn_hf.metrics import to_unit_float
from espcn_hf.pretrained import CheckpointError, packaged_weights

try:  # the whole-frame rule of onnxruntime's "auto" tiles (absent from older versions of the package)
    from espcn_hf.inference import ONNXRUNTIME_WHOLE_FRAME_PIXELS as WHOLE_FRAME_PIXELS
except ImportError:
    WHOLE_FRAME_PIXELS = None

RUNTIME_TOLERANCE = 1e-4  # a runtime row counts only where its output is torch's within this

FRAMES = {3: (360, 640), 2: (540, 960), 4: (270, 480)}  # LR (H, W) giving a 1920x1080 output
UPSCALE_FRAMES = [(180, 320), (360, 640)]  # x3 LR (H, W): 960x540 and 1920x1080 outputs


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


def runtime_forwards(model, lr: torch.Tensor, folder: Path) -> tuple[dict, dict]:
    """The model exported to ONNX and run on the whole frame by each other fp32 runtime installed:
    ({label: forward}, {label: max abs difference from torch} for those outside `RUNTIME_TOLERANCE`)."""
    try:
        from espcn_hf.onnx_export import export_onnx
        from espcn_hf.ort_backend import cpu_session, onnxruntime_available
    except ImportError:  # an older checkout
        return {}, {}
    if not onnxruntime_available():
        return {}, {}
    threads = torch.get_num_threads()
    path = export_onnx(
        model, folder / f"{model.config.upscale_factor}-{len(model.config.hidden_channels)}.onnx"
    )
    feed = lr.numpy()
    session = cpu_session(path, threads)
    forwards = {"onnxruntime fp32, whole frame": lambda: session.run(None, {"pixel_values": feed})[0]}
    try:
        import openvino
    except ImportError:
        openvino = None
    if openvino is not None:
        options = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1}
        request = openvino.Core().compile_model(str(path), "CPU", options).create_infer_request()
        forwards["OpenVINO fp32, whole frame"] = lambda: request.infer({0: feed})[0]
    with torch.inference_mode():
        reference = upscale_tensor(model, lr, tile_size=None).numpy()
    outside = {}
    for label, forward in list(forwards.items()):
        diff = float(np.abs(np.asarray(forward()) - reference).max())
        if not diff <= RUNTIME_TOLERANCE:
            outside[label] = diff
            del forwards[label]
    return forwards, outside


def network_row(
    scale: int, lr: torch.Tensor, method: str, ms: float, macs: int, matmul: float, peer_ms: dict
) -> dict:
    """One measured row of the network table: its time, useful GFLOP/s (the network's `macs` on the frame), the
    ratio to the fp32 matmul rate and, where OpenCV's ESPCN ran, the time against it."""
    gflops = 2 * macs / (ms / 1000) / 1e9
    row = {
        "scale": scale, "lr": f"{lr.shape[-1]}x{lr.shape[-2]}", "method": method, "ms": ms,
        "gflops": gflops, "matmul_ratio": gflops / matmul,
    }  # fmt: skip
    if "OpenCV ESPCN" in peer_ms:
        row["vs_opencv"] = ms / peer_ms["OpenCV ESPCN"]
    return row


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
            # what the network's multiply-adds alone would take at the fp32 matmul rate measured above: a bound
            # that direct fp32 convolution does not beat (none of the measured rows comes near it)
            bound = {
                "scale": scale,
                "lr": f"{width}x{height}",
                "method": f"{preset}: fp32 at the matmul rate",
            }
            bound["ms"] = 2 * macs / (matmul * 1e9) * 1000
            if "OpenCV ESPCN" in peer_ms:
                bound["vs_opencv"] = bound["ms"] / peer_ms["OpenCV ESPCN"]
            rows.append(bound)
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
                rows.append(network_row(scale, lr, f"{preset} [{path}]", ms, macs, matmul, peer_ms))
            if device != "cpu":
                continue
            with tempfile.TemporaryDirectory() as folder:
                forwards, outside = runtime_forwards(model, lr, Path(folder))
                for label, forward in forwards.items():
                    ms = median_ms(forward, repeats)
                    rows.append(network_row(scale, lr, f"{preset} [{label}]", ms, macs, matmul, peer_ms))
                for label, diff in outside.items():
                    rows.append({
                        "scale": scale, "lr": f"{width}x{height}", "method": f"{preset} [{label}]",
                        "not_counted": f"output {diff:.1e} from torch's (over {RUNTIME_TOLERANCE:g})",
                    })  # fmt: skip
    return rows


def upscale_rows(repeats: int) -> list[dict]:
    """`upscale(PIL image, model)` for both presets (x3) and each backend, beside OpenCV's ESPCN, same rounds."""
    backends = ["torch"]
    if "backend" in inspect.signature(upscale).parameters:  # a version of the package with the option
        from espcn_hf.ort_backend import onnxruntime_available

        backends += ["onnxruntime", "auto"] if onnxruntime_available() else ["auto"]
    models = {preset: load_net(preset, 3) for preset in ("espcn", "espcn-paper")}
    rows = []
    for height, width in UPSCALE_FRAMES:
        frame = test_frame(height, width)
        pil = Image.fromarray(frame)
        methods = {}
        peer = opencv_espcn(3, torch.get_num_threads())
        if peer is not None:
            bgr = np.ascontiguousarray(frame[..., ::-1])
            methods["OpenCV ESPCN"] = lambda peer=peer, bgr=bgr: peer.upsample(bgr)
        for preset, model in models.items():
            for backend in backends:
                options = {} if len(backends) == 1 else {"backend": backend}
                methods[f"{preset}: upscale(), backend={backend}"] = (
                    lambda model=model, options=options, pil=pil: upscale(pil, model, **options)
                )
                if backend == "onnxruntime" and WHOLE_FRAME_PIXELS is not None:
                    # what tile_size="auto" buys onnxruntime: the same call in the tiles torch cuts
                    tiled = {**options, "tile_size": AUTO_TILE_SIZE}
                    methods[f"{preset}: upscale(), backend=onnxruntime, {AUTO_TILE_SIZE}-px tiles"] = (
                        lambda model=model, options=tiled, pil=pil: upscale(pil, model, **options)
                    )
        times = interleaved(methods, repeats)
        chosen = {}
        if "auto" in backends:  # what "auto" ran: the onnxruntime rows before it left the graph in memory
            from espcn_hf.ort_backend import resolve_backend

            chosen = {preset: resolve_backend("auto", model, None, 0)[0] for preset, model in models.items()}
        peer_time = times.get("OpenCV ESPCN")
        for name, measured in times.items():
            row = {
                "output": f"{width * 3}x{height * 3}",
                "lr": f"{width}x{height}",
                "method": name,
                **measured,
            }
            preset = name.split(":")[0]
            if name.endswith("backend=auto") and preset in chosen:
                row["method"] += f" ({chosen[preset]})"
            if peer_time is not None:
                row["cpu_vs_opencv"] = measured["cpu_ms"] / peer_time["cpu_ms"]
                row["wall_vs_opencv"] = measured["wall_ms"] / peer_time["wall_ms"]
            rows.append(row)
        print("\n".join(f"{r['output']} | {r['method']} | {r['cpu_ms']:.0f} ms" for r in rows[-len(times) :]))
    return rows


MEMORY_SCRIPT = """
import sys, numpy as np, torch
from PIL import Image
sys.path.insert(0, sys.argv[6])
from common import peak_rss_mb
from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, upscale
torch.set_num_threads(int(sys.argv[3]))
h, w, tile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4]
options = {"backend": sys.argv[5]} if sys.argv[5] != "default" else {}
model = ESPCNForImageSuperResolution(ESPCNConfig(upscale_factor=4)).eval()
image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))
base = peak_rss_mb()
tile = None if tile == "none" else tile if tile == "auto" else int(tile)
out = upscale(image, model, tile_size=tile, max_pixels=None, **options)
assert out.size == (4 * w, 4 * h)
print(base, peak_rss_mb())
"""


def peak_memory_mb(height: int, width: int, tile: str, backend: str | None = None) -> tuple[float, float]:
    """(MB after imports, peak MB) of a fresh process upscaling a random image (`common.peak_rss_mb`)."""
    argv = [sys.executable, "-c", MEMORY_SCRIPT, str(height), str(width), str(torch.get_num_threads()), tile]
    argv += [backend or "default", str(Path(__file__).resolve().parent)]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    before, peak = (float(v) for v in result.stdout.split()[-2:])
    return before, peak


def tiling_max_diff() -> float:
    torch.manual_seed(0)
    model = ESPCNForImageSuperResolution(ESPCNConfig(upscale_factor=4)).eval()
    x = to_unit_float(torch.from_numpy(test_frame(300, 400))).permute(2, 0, 1)[None]
    whole = upscale_tensor(model, x, tile_size=None)
    tiled = upscale_tensor(model, x, tile_size=96)
    return (whole - tiled).abs().max().item()


def upscale_markdown(report: dict) -> list[str]:
    lines = [
        "## `upscale(PIL image, model)`: what a user calls",
        "",
        f"x3, PIL RGB in and out, default options (fp32, exact), {report['threads']} thread(s) for every method "
        f"(torch, onnxruntime, OpenCV). Median of {report['repeats']} rounds, each method once per round in turn. "
        "CPU = the process's CPU time (at one thread the fair measure on a shared machine: time spent waiting "
        "for the core is not counted), wall = elapsed time. Load average (1 min) before / after: "
        f"{report['load'][0]:.1f} / {report['load'][1]:.1f}.",
        "",
        "| output | method | CPU ms | vs OpenCV (CPU) | wall ms | vs OpenCV (wall) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in report["upscale_rows"]:
        cpu_vs = f"{row['cpu_vs_opencv']:.2f}x" if "cpu_vs_opencv" in row else ""
        wall_vs = f"{row['wall_vs_opencv']:.2f}x" if "wall_vs_opencv" in row else ""
        lines.append(
            f"| {row['output']} | {row['method']} | {row['cpu_ms']:.0f} | {cpu_vs} | {row['wall_ms']:.0f} | "
            f"{wall_vs} |"
        )
    lines += [
        "",
        "backend=auto names in brackets what it chose (`espcn_hf.ort_backend.resolve_backend`: onnxruntime here "
        "because the graph was already exported by the onnxruntime rows). The rows 'backend=onnxruntime, "
        f"{AUTO_TILE_SIZE}-px tiles' make the same call in the tiles torch cuts: what onnxruntime's "
        '`tile_size="auto"` (whole frames up to `espcn_hf.inference.ONNXRUNTIME_WHOLE_FRAME_PIXELS` LR pixels) '
        "buys, in the same rounds.",
    ]
    return lines


def to_markdown(report: dict) -> str:
    lines = [
        f"# Inference speed ({report['device']})",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}, torch {report['torch']}, {report['threads']} threads.  ",
    ]
    if "upscale_rows" in report:
        lines += ["", *upscale_markdown(report), ""]
    if "rows" not in report:
        return "\n".join(lines) + "\n"
    lines += [
        "## The network through `upscale_tensor`, per inference mode",
        "",
        f"Reference: 4096x4096 fp32 matmul **{report['matmul_gflops']:.1f} GFLOP/s** (median of {report['repeats']}).",
        "",
        f"Milliseconds per frame (median), output 1920x1080, tile_size={report['tile']!r}. GFLOP/s counts the "
        "network's convolutions on the frame (not the tile overlap), so it is the useful rate. The rows "
        "'fp32 at the matmul rate' are computed, not run: the network's multiply-adds at the matmul rate above, "
        "the time fp32 direct convolution would need at 100% of it. The rows in brackets after the inference modes "
        "are the same network exported to ONNX and run on the whole frame by the other fp32 runtimes installed "
        "(onnxruntime, OpenVINO), counted only where their output is torch's within "
        f"{RUNTIME_TOLERANCE:g}.",
        "",
        "| scale | LR input | method | ms | GFLOP/s | vs fp32 matmul | time vs OpenCV ESPCN |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        if "not_counted" in row:
            lines.append(
                f"| x{row['scale']} | {row['lr']} | {row['method']} | not counted: {row['not_counted']} | | | |"
            )
            continue
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
            f"(after imports: {mem['baseline_mb']:.0f} MB), backend torch.  ",
            f"Tiled vs untiled output on a 400x300 input (x4, tile 96): max abs difference {report['tiling_max_diff']:.2e}.",
        ]
        for backend, peak in mem.get("other_backends", {}).items():
            lines[-1:-1] = [
                f'With backend {backend} (what `upscale()`\'s "auto" runs on a job this large where the `onnx` '
                f"extra is installed): **{peak['tile']:.0f} MB** with tile {mem['tile']}, {peak['auto']:.0f} MB with "
                "the default tile (256 on CPU).  "
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
    parser.add_argument(
        "--upscale-only", action="store_true", help="only the upscale(PIL image, model) rows (CPU)"
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    command = "python scripts/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.upscale_only:
        devices = ["cpu"]
    has_backends = "backend" in inspect.signature(upscale).parameters
    if has_backends:
        from espcn_hf.ort_backend import onnxruntime_available
    for device in devices:
        report = {
            "device": device if device == "cpu" else torch.cuda.get_device_name(),
            "command": command.strip(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
        }
        if device == "cpu":
            load_before = os.getloadavg()[0]
            report["upscale_rows"] = upscale_rows(args.repeats)
            report["load"] = [load_before, os.getloadavg()[0]]
        if args.upscale_only:
            args.skip_memory = True
        else:
            matmul = matmul_gflops(device, args.repeats)
            report["matmul_gflops"] = matmul
            report["tile"] = args.tile
            report["rows"] = speed_rows(device, args.repeats, matmul, args.paths, args.tile)
        if device == "cpu" and not args.skip_memory:
            baseline, peak = peak_memory_mb(3000, 4000, "512", "torch" if has_backends else None)
            report["memory"] = {"tile": 512, "tiled_peak_mb": peak, "baseline_mb": baseline}
            if has_backends and onnxruntime_available():
                report["memory"]["other_backends"] = {
                    "onnxruntime": {
                        "tile": peak_memory_mb(3000, 4000, "512", "onnxruntime")[1],
                        "auto": peak_memory_mb(3000, 4000, "auto", "onnxruntime")[1],
                    }
                }
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
