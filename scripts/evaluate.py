"""Evaluate ESPCN models, MATLAB bicubic and OpenCV dnn_superres peers on the SR benchmarks (PSNR/SSIM on Y).

    python scripts/evaluate.py --model espcn_hf/weights/espcn-x3 --scale 3                   # -> runs/eval/
    python scripts/evaluate.py --model espcn_hf/weights/espcn-x3 --scale 3 --out benchmarks  # refresh the repo's
    python scripts/evaluate.py --model bicubic-only --scale 2          # bicubic + OpenCV peers only
    python scripts/evaluate.py --model a/ --model b/ --scale 4 --sets Set5 Set14 --peers opencv-espcn

Writes, per model (or `peers` without a model), `<out>/eval_<name>_x<scale>.json` (an `espcn_hf.evaluation.
EvalReport`), its markdown table beside it (`.md`) and a comparison picture (`.png`: one crop per set of HR /
bicubic / model / OpenCV ESPCN), each file atomically. The loop and the metrics are `espcn_hf.evaluation.evaluate`.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from common import DATA_DIR

from espcn_hf.cli import tile_size_type
from espcn_hf.data import BENCHMARK_SETS, load_benchmark
from espcn_hf.evaluation import (
    OPENCV_PEERS,
    PeerModelError,
    bicubic_upscaler,
    evaluate,
    opencv_upscaler,
)
from espcn_hf.fileio import atomic_write_text
from espcn_hf.inference import load_model
from espcn_hf.visualization import save_evaluation_picture

NO_MODEL = "bicubic-only"
CROP = 96  # HR pixels of the comparison crops


def model_name(model: str) -> str:
    """The name used in file names and tables: the folder name, or the part of a repo id after '/'."""
    return Path(model.rstrip("/")).name


def environment(device: str) -> dict:
    env = {
        "torch": torch.__version__,
        "device": device,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        import cv2

        env["opencv"] = cv2.__version__
    except ImportError:
        pass
    return env


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", action="append", default=[], help=f"model folder or Hub id; '{NO_MODEL}': none"
    )
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--sets", nargs="+", default=list(BENCHMARK_SETS))
    parser.add_argument(
        "--peers", nargs="*", default=["opencv-espcn", "opencv-fsrcnn"], help=f"any of {list(OPENCV_PEERS)}"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help=f"benchmark root (default: {DATA_DIR}/benchmarks)"
    )
    parser.add_argument(
        "--peers-dir", type=Path, default=None, help=f"OpenCV models (default: {DATA_DIR}/peers)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/eval"),
        help="results folder (default: runs/eval, untracked; `--out benchmarks` refreshes the committed results)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--tile-size", type=tile_size_type, default="auto", help="'auto', 'none' or LR pixels"
    )
    parser.add_argument("--no-picture", action="store_true", help="skip the comparison PNG")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch/OpenCV threads (default: torch's). On a busy shared machine 1 was ~5x faster than 2.",
    )
    parser.add_argument("--rgb-ssim", action="store_true", help="also SSIM over RGB (3x the SSIM time)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = shlex.join([Path(sys.argv[0]).as_posix(), *(sys.argv[1:] if argv is None else argv)])
    scale = args.scale
    data_dir = args.data_dir or DATA_DIR / "benchmarks"
    peers_dir = args.peers_dir or DATA_DIR / "peers"
    start_all = time.perf_counter()
    if args.threads:
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)

    # Methods: bicubic, the OpenCV peers, then each model.
    methods: dict[str, object] = {"bicubic": bicubic_upscaler(scale)}
    for peer in args.peers:
        if peer not in OPENCV_PEERS:
            parser.error(f"--peers: unknown {peer!r}; choose from {list(OPENCV_PEERS)}")
        kind, pattern, folder = OPENCV_PEERS[peer]
        path = peers_dir / folder / pattern.format(scale=scale)
        if not path.is_file():
            print(f"note: {peer} skipped, no {path}", file=sys.stderr)
            continue
        try:
            methods[peer] = opencv_upscaler(kind, scale, path)
        except PeerModelError as error:
            print(f"warning: {peer} left out of this run: {error}", file=sys.stderr)
    models = [m for m in args.model if m != NO_MODEL]
    for model in models:
        loaded = load_model(model, device=args.device)
        if loaded.config.upscale_factor != scale:
            parser.error(f"{model} is a x{loaded.config.upscale_factor} model, --scale is {scale}")
        methods[model_name(model)] = loaded

    sets, shown, hr_images = {}, {}, {}
    for set_name in args.sets:
        dataset = load_benchmark(set_name, root=data_dir, scale=scale)
        if len(dataset) == 0:
            print(f"note: {set_name} has no usable images, skipped", file=sys.stderr)
            continue
        sets[set_name], shown[set_name], hr_images[set_name] = dataset, dataset.names[0], dataset.hr[0]

    def report_line(set_name, method, scores):
        print(
            f"{set_name:9s} {method:22s} PSNR_Y {scores.psnr_y:6.2f}  SSIM_Y {scores.ssim_y:.4f}  "
            f"({scores.seconds:.1f} s)",
            flush=True,
        )

    report = evaluate(
        methods,
        sets,
        scale,
        tile_size=args.tile_size,
        rgb_ssim=args.rgb_ssim,
        keep_outputs={s: [name] for s, name in shown.items()},
        on_result=report_line,
    )
    report.command = command
    report.seconds = round(time.perf_counter() - start_all, 2)
    report.environment = environment(args.device)

    args.out.mkdir(parents=True, exist_ok=True)
    baselines = [m for m in methods if m == "bicubic" or m in OPENCV_PEERS]
    targets = [(m, model_name(m)) for m in models] or [(None, "peers")]
    for model, name in targets:
        keep = baselines + ([name] if model is not None else [])
        one = report.select(keep, name=name, model=model or NO_MODEL)
        stem = args.out / f"eval_{name}_x{scale}"
        one.to_json(stem.with_suffix(".json"))
        atomic_write_text(stem.with_suffix(".md"), one.to_markdown())
        if sets and not args.no_picture:
            picture_methods = ["bicubic", *([name] if model is not None else [])]
            picture_methods += [m for m in ("opencv-espcn",) if m in keep]
            save_evaluation_picture(
                stem.with_suffix(".png"), one, hr_images, shown, picture_methods, crop=CROP
            )
        print(f"wrote {stem}.json / .md" + ("" if args.no_picture else " / .png"))
    print()
    print(report.to_markdown(full=False))
    print(f"total {report.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
