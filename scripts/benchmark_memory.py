"""Peak memory (RSS) of the jobs whose size the library bounds, each in a fresh child process with one thread.

    python scripts/benchmark_memory.py                     # -> benchmarks/memory_cpu.md
    python scripts/benchmark_memory.py --quick             # smaller cases, a check of the script

Cases:
- `pipeline("image-super-resolution")` on a 9 Mpx photo-like image at x3 with the packaged x3 model (the
  pipeline runs `upscale()`'s tiles, so its memory does not grow with the image);
- `upscale_video` of an 8K clip (7680x4320) at x3: refused by the output limit from the header, before decoding;
- `upscale_video` of a 1080p clip at x3 (5760x3240 out) with the default options (`memory_budget` sizes the frame
  batches and libx264's look-ahead). The network is a tiny one (4 channels): the frames and the encoder dominate
  the memory, and the full network would take many minutes per run on a CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from common import REPO

from espcn_hf.fileio import atomic_write_text

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import torch
    torch.set_num_threads(1)
    case, arg = sys.argv[1], sys.argv[2]
    start = time.perf_counter()
    result = {}
    if case == "pipeline":
        import numpy as np
        from PIL import Image
        from transformers import pipeline
        import espcn_hf
        from espcn_hf.pretrained import packaged_weights
        side = int(arg)
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:side, 0:side] / side
        base = np.stack([np.sin(9 * x), np.cos(7 * y), np.sin(5 * (x + y))], -1) * 0.35 + 0.5
        image = Image.fromarray((np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1) * 255).astype(np.uint8))
        out = pipeline("image-super-resolution", model=str(packaged_weights(3)))(image)
        result["output"] = f"{out.width}x{out.height}"
    else:
        from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, VideoError, upscale_video
        torch.manual_seed(0)
        model = ESPCNForImageSuperResolution(ESPCNConfig(upscale_factor=3, hidden_channels=[4, 4], kernel_sizes=[3, 3, 3]))
        try:
            info = upscale_video(arg, arg + ".out.mp4", model.eval(), progress=False)
            result["output"] = f"{info.width}x{info.height}, {info.frames} frames"
        except VideoError as error:
            result["output"] = "refused: " + str(error).split(": ", 1)[-1][:120]
    result["seconds"] = round(time.perf_counter() - start, 1)
    sys.path.insert(0, "scripts")
    from common import peak_rss_mb
    result["peak_rss_mb"] = round(peak_rss_mb())
    print(json.dumps(result))
    """
)


def make_clip(path: Path, width: int, height: int, frames: int) -> Path:
    """A clip of moving gradients, H.264 (libx264 ultrafast), written once."""
    if path.is_file():
        return path
    import av
    import numpy as np

    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = np.stack([(x + 8 * i) % 256, (y + 4 * i) % 256, (x + y) % 256], -1).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def run_case(case: str, arg: str) -> dict:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, case, arg], capture_output=True, text=True, timeout=3600, cwd=REPO
    )
    if child.returncode != 0:
        return {
            "output": f"failed: {child.stderr.strip().splitlines()[-1][:160]}",
            "seconds": 0,
            "peak_rss_mb": 0,
        }
    return json.loads(child.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "memory_cpu.md")
    parser.add_argument(
        "--work", type=Path, default=REPO / "runs" / "memory-benchmark", help="clips made here"
    )
    parser.add_argument("--quick", action="store_true", help="small cases (a check of the script)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    side, frames, (hd_w, hd_h), (uhd_w, uhd_h) = (
        (600, 4, (320, 180), (1280, 720)) if args.quick else (3000, 72, (1920, 1080), (7680, 4320))
    )
    cases = [
        (f"pipeline, {side}x{side} at x3 (packaged x3)", "pipeline", str(side)),
        (
            f"upscale_video, {uhd_w}x{uhd_h}, 8 frames at x3",
            "video",
            str(make_clip(args.work / f"clip_{uhd_w}x{uhd_h}.mp4", uhd_w, uhd_h, 8)),
        ),
        (
            f"upscale_video, {hd_w}x{hd_h}, {frames} frames at x3, default options",
            "video",
            str(make_clip(args.work / f"clip_{hd_w}x{hd_h}_{frames}.mp4", hd_w, hd_h, frames)),
        ),
    ]
    rows = []
    for label, case, arg in cases:
        start = time.perf_counter()
        result = run_case(case, arg)
        rows.append((label, result))
        print(f"{label}: {result} ({time.perf_counter() - start:.0f} s)", flush=True)
    command = "python scripts/benchmark_memory.py" + (" --quick" if args.quick else "")
    lines = [
        "# Peak memory of bounded jobs (CPU, one thread, a fresh process each)",
        "",
        f"Command: `{command}` on {platform.machine()}, Python {platform.python_version()}. Peak RSS of the whole",
        "process (torch, transformers and FFmpeg included).",
        "",
        "| case | result | seconds | peak RSS (MB) |",
        "|---|---|---|---|",
        *(f"| {label} | {r['output']} | {r['seconds']} | {r['peak_rss_mb']:,} |" for label, r in rows),
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
