"""Video super-resolution speed end to end (decode + SR + encode), split by stage, beside OpenCV's ESPCN.

    python scripts/benchmark_video.py                       # CPU; writes benchmarks/speed_video_cpu.md
    python scripts/benchmark_video.py --device cuda         # writes benchmarks/speed_video_cuda.md

For each case (x3 from 640x360 = 1080p out, and smaller inputs) a synthetic H.264 clip of --frames frames is made
in a temporary folder, then, each the median of --repeats passes over all frames:
  * decode: PyAV decode + conversion to RGB arrays (what `upscale_video` does per frame);
  * SR: `espcn_hf.upscale` on batches of --batch-size frames + quantisation to uint8 (the packaged espcn-x3 and
    espcn-paper-x3 weights); OpenCV dnn_superres ESPCN x3 (`../shared/data/peers`) on the same decoded frames;
  * encode: RGB -> yuv420p (BT.709) + libx264 crf 18 (FFmpeg's default preset) of the upscaled frames;
  * end to end: `espcn_hf.upscale_video` (same settings), where decoding and encoding overlap the model in their
    own threads, beside 1 / (1/decode + 1/SR + 1/encode), the rate of the stages run one after the other.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from common import REPO, median_ms, opencv_espcn

from espcn_hf.fileio import atomic_write_text
from espcn_hf.pretrained import load_model, packaged_weights
from espcn_hf.video import DEFAULT_CRF, ENCODER_PRESETS, upscale_frames, upscale_video

CASES = [(3, 640, 360), (3, 426, 240), (3, 320, 180)]  # (scale, LR width, LR height)
TIMED_PRESETS = ("medium", "veryfast", "ultrafast")  # timed on the first (largest) case


def synthetic_frame(index: int, height: int, width: int) -> np.ndarray:
    """A photo-like frame (smooth colour, texture, edges) that moves a little each frame."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    shift = index / 40
    base = np.stack([np.sin(9 * (x + shift)), np.cos(7 * y + shift), np.sin(5 * (x + y))], -1) * 0.35 + 0.5
    base[(x * 12 + shift * 10).astype(int) % 2 == 0] *= 0.85
    return (np.clip(base + rng.normal(0, 0.03, base.shape), 0, 1) * 255).astype(np.uint8)


def make_clip(path: Path, width: int, height: int, frames: int, rate: int = 30) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i, height, width), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls (after one warm-up call, `common.median_ms`), and the last result."""
    last = {}

    def run() -> None:
        last["result"] = fn()

    return median_ms(run, repeats, warmup=1) / 1000, last["result"]


def decode_all(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)]


def sr_all(frames: list[np.ndarray], model, batch_size: int) -> list[np.ndarray]:
    """What `upscale_video`'s SR stage does: `espcn_hf.upscale_frames` (uint8 frames in, uint8 frames out)."""
    out = []
    for start in range(0, len(frames), batch_size):
        out.extend(upscale_frames(np.stack(frames[start : start + batch_size]), model))
    return out


def encode_all(frames: list[np.ndarray], path: Path, preset: str | None, rate: int = 30) -> None:
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.colorspace = 1
        stream.options = {"crf": str(DEFAULT_CRF), **({"preset": preset} if preset else {})}
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=1
            )
            frame.pts, frame.time_base = i, Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch and OpenCV threads (default: torch's)"
    )
    parser.add_argument(
        "--preset", choices=ENCODER_PRESETS, default=None, help="libx264 speed preset (default: medium)"
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="default: benchmarks/speed_video_<device>.md"
    )
    args = parser.parse_args(argv)
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    models = {
        preset: load_model(packaged_weights(3, preset), device=device) for preset in ("espcn", "espcn-paper")
    }
    rows, preset_rows = [], []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for scale, width, height in CASES:
            clip = tmp / f"clip_{width}x{height}.mp4"
            make_clip(clip, width, height, args.frames)
            n = args.frames
            t_decode, frames = timed(lambda clip=clip: decode_all(clip), args.repeats)
            row = {
                "case": f"x{scale} {width}x{height} -> {width * scale}x{height * scale}",
                "decode": n / t_decode,
            }
            for preset, model in models.items():
                t_sr, upscaled = timed(
                    lambda model=model, frames=frames: sr_all(frames, model, args.batch_size), args.repeats
                )
                row[f"SR {preset}"] = n / t_sr
                if preset == "espcn":
                    sr_frames = upscaled
            sr = opencv_espcn(scale, threads)
            if sr is not None:
                bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
                t_cv, _ = timed(lambda sr=sr, bgr=bgr: [sr.upsample(f) for f in bgr], args.repeats)
                row["SR OpenCV ESPCN"] = n / t_cv
            t_encode, _ = timed(
                lambda sr_frames=sr_frames: encode_all(sr_frames, tmp / "encoded.mp4", args.preset),
                args.repeats,
            )
            row["encode"] = n / t_encode
            if not rows:  # the largest case: what each libx264 speed preset costs (same frames, same crf)
                for preset in TIMED_PRESETS:
                    if preset == (args.preset or "medium"):  # the encode column just measured it
                        preset_rows.append((preset, row["encode"], (tmp / "encoded.mp4").stat().st_size))
                        continue
                    t_preset, _ = timed(
                        lambda sr_frames=sr_frames, preset=preset: encode_all(
                            sr_frames, tmp / "p.mp4", preset
                        ),
                        args.repeats,
                    )
                    preset_rows.append((preset, n / t_preset, (tmp / "p.mp4").stat().st_size))
            t_e2e, _ = timed(
                lambda clip=clip: upscale_video(
                    clip,
                    tmp / "e2e.mp4",
                    models["espcn"],
                    device=device,
                    batch_size=args.batch_size,
                    preset=args.preset,
                    progress=False,
                ),
                args.repeats,
            )
            row["end to end"] = n / t_e2e
            row["sum of stages"] = 1 / (1 / row["decode"] + 1 / row["SR espcn"] + 1 / row["encode"])
            rows.append(row)
            print(
                " | ".join(f"{k}: {v:.1f}" if isinstance(v, float) else str(v) for k, v in row.items()),
                flush=True,
            )

    columns = [
        "decode",
        "SR espcn",
        "SR espcn-paper",
        "SR OpenCV ESPCN",
        "encode",
        "end to end",
        "sum of stages",
    ]
    command = "python scripts/benchmark_video.py" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])
    )
    lines = [
        f"# Video super-resolution speed ({device})",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, torch and OpenCV threads: {threads}, torch {torch.__version__}, "
        f"PyAV {av.__version__} (FFmpeg libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}).  ",
        f"Load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs (a shared machine: compare columns of one row, not runs).  ",
        f"Clip: {args.frames} synthetic frames at 30 fps (H.264), batches of {args.batch_size} frames; "
        f"medians of {args.repeats} passes after a warm-up pass. Encoder: libx264 crf {DEFAULT_CRF}, yuv420p, "
        f"preset {args.preset or 'medium (FFmpeg default)'}. SR = `espcn_hf.upscale_frames` (uint8 frames in and "
        "out; the default path: fp32, channels-last, 256-px tiles on CPU, whole frames on CUDA) with the packaged "
        "x3 weights, OpenCV = dnn_superres ESPCN x3 on the same decoded frames.",
        "",
        "Frames per second (higher is better):",
        "",
        "| case | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | " + " | ".join(f"{row[c]:.1f}" if c in row else "n/a" for c in columns) + " |"
        )
    lines += [
        "",
        "`end to end` is one `upscale_video` call, in which decoding and encoding run in their own threads while the "
        "model runs; `sum of stages` = 1 / (1/decode + 1/SR + 1/encode) is the rate of the same stages run one after "
        "the other, from the separate measurements. libx264 and the H.264 decoder use FFmpeg's own threads "
        "whatever the torch/OpenCV thread count.",
    ]
    if preset_rows:
        lines += [
            "",
            f"Encoder presets on the {rows[0]['case']} frames (libx264 crf {DEFAULT_CRF}, same frames; `--preset` of "
            "`upscale_video` / `espcn-hf upscale`):",
            "",
            "| preset | encode fps | file size |",
            "|---|---:|---:|",
            *(f"| {name} | {fps:.1f} | {size / 1e6:.2f} MB |" for name, fps, size in preset_rows),
        ]
    if device == "cpu":
        lines += [
            "",
            "GPU: `benchmarks/speed_video_cuda.md`, from `scripts/bench_gpu.sh` on a GPU machine "
            "(`python scripts/benchmark_video.py --device cuda`).",
        ]
    output = args.output or REPO / "benchmarks" / f"speed_video_{device.split(':')[0]}.md"
    atomic_write_text(output, "\n".join(lines) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
