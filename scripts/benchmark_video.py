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
import functools
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


class _Keeping:
    """`fn` as a callable that keeps its last result: what `median_ms` times and the next stage takes."""

    def __init__(self, fn) -> None:
        self.fn, self.result = fn, None

    def __call__(self) -> None:
        self.result = self.fn()


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls (after one warm-up call, `common.median_ms`), and the last result."""
    call = _Keeping(fn)
    return median_ms(call, repeats, warmup=1) / 1000, call.result


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    return parser.parse_args(argv)


def time_sr(frames: list[np.ndarray], models: dict, args: argparse.Namespace) -> tuple[dict, list]:
    """SR frames per second of each packaged model, and the frames the seven-layer one ("espcn") upscaled."""
    fps, sr_frames = {}, None
    for preset, model in models.items():
        t_sr, upscaled = timed(functools.partial(sr_all, frames, model, args.batch_size), args.repeats)
        fps[f"SR {preset}"] = args.frames / t_sr
        if preset == "espcn":
            sr_frames = upscaled
    return fps, sr_frames


def time_opencv(frames: list[np.ndarray], scale: int, threads: int, args: argparse.Namespace) -> dict:
    """OpenCV ESPCN's frames per second on the same frames (BGR), or nothing when OpenCV or its model is missing."""
    sr = opencv_espcn(scale, threads)
    if sr is None:
        return {}
    bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
    t_cv, _ = timed(lambda: [sr.upsample(f) for f in bgr], args.repeats)
    return {"SR OpenCV ESPCN": args.frames / t_cv}


def time_presets(
    sr_frames: list[np.ndarray], encoded: Path, encode_fps: float, args: argparse.Namespace
) -> list:
    """(preset, encode fps, file size) for each of `TIMED_PRESETS` on the same frames and crf; the preset of
    the run itself is the encode column just measured (`encode_fps`, the file `encoded`)."""
    preset_rows = []
    for preset in TIMED_PRESETS:
        if preset == (args.preset or "medium"):
            preset_rows.append((preset, encode_fps, encoded.stat().st_size))
            continue
        path = encoded.with_name("p.mp4")
        t_preset, _ = timed(functools.partial(encode_all, sr_frames, path, preset), args.repeats)
        preset_rows.append((preset, args.frames / t_preset, path.stat().st_size))
    return preset_rows


def measure_case(
    tmp: Path,
    case: tuple[int, int, int],
    models: dict,
    threads: int,
    args: argparse.Namespace,
    *,
    presets: bool,
) -> tuple[dict, list]:
    """One row of frames per second (decode, SR, OpenCV, encode, end to end, sum of stages) for a synthetic clip
    of the case (scale, LR width, LR height), and the encoder presets' rows when `presets` is set."""
    scale, width, height = case
    n = args.frames
    clip = tmp / f"clip_{width}x{height}.mp4"
    make_clip(clip, width, height, n)
    t_decode, frames = timed(functools.partial(decode_all, clip), args.repeats)
    row = {"case": f"x{scale} {width}x{height} -> {width * scale}x{height * scale}", "decode": n / t_decode}
    sr_fps, sr_frames = time_sr(frames, models, args)
    row.update(sr_fps)
    row.update(time_opencv(frames, scale, threads, args))
    encoded = tmp / "encoded.mp4"
    t_encode, _ = timed(functools.partial(encode_all, sr_frames, encoded, args.preset), args.repeats)
    row["encode"] = n / t_encode
    preset_rows = time_presets(sr_frames, encoded, row["encode"], args) if presets else []
    end_to_end = functools.partial(
        upscale_video, clip, tmp / "e2e.mp4", models["espcn"],
        device=args.device, batch_size=args.batch_size, preset=args.preset, progress=False,
    )  # fmt: skip
    t_e2e, _ = timed(end_to_end, args.repeats)
    row["end to end"] = n / t_e2e
    row["sum of stages"] = 1 / (1 / row["decode"] + 1 / row["SR espcn"] + 1 / row["encode"])
    return row, preset_rows


def format_row(row: dict) -> str:
    """The line printed after each case."""
    return " | ".join(f"{k}: {v:.1f}" if isinstance(v, float) else str(v) for k, v in row.items())


COLUMNS = ["decode", "SR espcn", "SR espcn-paper", "SR OpenCV ESPCN", "encode", "end to end", "sum of stages"]


def header_lines(
    args: argparse.Namespace, argv: list[str] | None, threads: int, load_before: float
) -> list[str]:
    """The title, the command and the conditions of the run."""
    command = "python scripts/benchmark_video.py" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])
    )
    return [
        f"# Video super-resolution speed ({args.device})",
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
    ]


def fps_table(rows: list[dict]) -> list[str]:
    """The frames-per-second table, one row per case, and what its last two columns mean."""
    return [
        "",
        "Frames per second (higher is better):",
        "",
        "| case | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
        *(
            f"| {row['case']} | " + " | ".join(f"{row[c]:.1f}" if c in row else "n/a" for c in COLUMNS) + " |"
            for row in rows
        ),
        "",
        "`end to end` is one `upscale_video` call, in which decoding and encoding run in their own threads while the "
        "model runs; `sum of stages` = 1 / (1/decode + 1/SR + 1/encode) is the rate of the same stages run one after "
        "the other, from the separate measurements. libx264 and the H.264 decoder use FFmpeg's own threads "
        "whatever the torch/OpenCV thread count.",
    ]


def preset_table(case: str, preset_rows: list) -> list[str]:
    """The encoder presets' speed and file size on the frames of `case` (nothing when none were timed)."""
    if not preset_rows:
        return []
    return [
        "",
        f"Encoder presets on the {case} frames (libx264 crf {DEFAULT_CRF}, same frames; `--preset` of "
        "`upscale_video` / `espcn-hf upscale`):",
        "",
        "| preset | encode fps | file size |",
        "|---|---:|---:|",
        *(f"| {name} | {fps:.1f} | {size / 1e6:.2f} MB |" for name, fps, size in preset_rows),
    ]


def gpu_note(device: str) -> list[str]:
    """On the CPU page, where the GPU numbers are."""
    if device != "cpu":
        return []
    return [
        "",
        "GPU: `benchmarks/speed_video_cuda.md`, from `scripts/bench_gpu.sh` on a GPU machine "
        "(`python scripts/benchmark_video.py --device cuda`).",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    models = {
        preset: load_model(packaged_weights(3, preset), device=args.device)
        for preset in ("espcn", "espcn-paper")
    }
    rows, preset_rows = [], []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            # the first (largest) case also times each libx264 speed preset
            row, case_presets = measure_case(Path(tmp), case, models, threads, args, presets=not rows)
            rows.append(row)
            preset_rows += case_presets
            print(format_row(row), flush=True)
    lines = [
        *header_lines(args, argv, threads, load_before),
        *fps_table(rows),
        *preset_table(rows[0]["case"], preset_rows),
        *gpu_note(args.device),
    ]
    output = args.output or REPO / "benchmarks" / f"speed_video_{args.device.split(':')[0]}.md"
    atomic_write_text(output, "\n".join(lines) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
