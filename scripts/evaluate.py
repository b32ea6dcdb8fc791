"""Evaluate ESPCN models, MATLAB bicubic and OpenCV dnn_superres peers on the SR benchmarks (PSNR/SSIM on Y).

    python scripts/evaluate.py --model checkpoints/espcn-x3 --scale 3
    python scripts/evaluate.py --model bicubic-only --scale 2          # bicubic + OpenCV peers only
    python scripts/evaluate.py --model a/ --model b/ --scale 4 --sets Set5 Set14 --peers opencv-espcn

Writes, per model (or `peers` without a model), `<out>/eval_<name>_x<scale>.json` (schema below), the markdown
table beside it (`.md`) and a comparison picture (`.png`: one crop per set of HR / bicubic / model / OpenCV
ESPCN). JSON: {"model", "name", "scale", "command", "results": {set: {method: {"psnr_y", "ssim_y", "psnr_rgb",
["ssim_rgb" with --rgb-ssim,] "num_images", "seconds"}}}, "methods", "seconds", "environment"}.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from espcn_hf.data import BENCHMARK_SETS, default_data_dir, load_benchmark
from espcn_hf.evaluation import (
    OPENCV_PEERS,
    bicubic_upscaler,
    evaluate_model,
    format_table,
    opencv_upscaler,
)
from espcn_hf.inference import load_model

NO_MODEL = "bicubic-only"
CROP = 96  # HR pixels of the comparison crops


def model_name(model: str) -> str:
    """The name used in file names and tables: the folder name, or the part of a repo id after '/'."""
    return Path(model.rstrip("/")).name


def pick_crop(hr: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left of the `size` x `size` block with the most detail (largest gradient energy)."""
    gray = hr.astype(np.float32).mean(axis=2)
    energy = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1, :]
    h, w = energy.shape
    step = max(size // 2, 1)
    best, where = -1.0, (0, 0)
    for y in range(0, max(h - size, 0) + 1, step):
        for x in range(0, max(w - size, 0) + 1, step):
            value = float(energy[y : y + size, x : x + size].sum())
            if value > best:
                best, where = value, (y, x)
    return where


def save_picture(
    path: Path, panels: dict[str, dict[str, np.ndarray]], scores: dict, row_labels: dict, title: str
) -> None:
    """Rows = sets (one image each), columns = HR and the methods; each cell a labelled crop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(panels)
    columns = list(next(iter(panels.values())))
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(2.4 * len(columns), 2.6 * len(rows)), squeeze=False
    )
    for i, set_name in enumerate(rows):
        for j, method in enumerate(columns):
            ax = axes[i][j]
            ax.imshow(panels[set_name][method], interpolation="nearest")
            score = scores.get(set_name, {}).get(method)
            label = method if score is None else f"{method}\n{score:.2f} dB"
            ax.set_title(label, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(row_labels.get(set_name, set_name), fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
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
        "--data-dir", type=Path, default=None, help="benchmark root (default: <data>/benchmarks)"
    )
    parser.add_argument("--peers-dir", type=Path, default=None, help="OpenCV models (default: <data>/peers)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile-size", default="auto", help="'auto', 'none' or LR pixels")
    parser.add_argument("--no-picture", action="store_true", help="skip the comparison PNG")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch/OpenCV threads (default: torch's). On a busy shared machine 1 was ~5x faster than 2.",
    )
    parser.add_argument("--rgb-ssim", action="store_true", help="also SSIM over RGB (3x the SSIM time)")
    args = parser.parse_args(argv)
    command = shlex.join([Path(sys.argv[0]).as_posix(), *(sys.argv[1:] if argv is None else argv)])
    tile = (
        None
        if args.tile_size == "none"
        else (args.tile_size if args.tile_size == "auto" else int(args.tile_size))
    )
    scale = args.scale
    start_all = time.perf_counter()
    if args.threads:
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)

    # Methods: bicubic, the OpenCV peers, then each model.
    methods: dict[str, object] = {"bicubic": bicubic_upscaler(scale)}
    peers_dir = args.peers_dir or default_data_dir() / "peers"
    for peer in args.peers:
        if peer not in OPENCV_PEERS:
            parser.error(f"--peers: unknown {peer!r}; choose from {list(OPENCV_PEERS)}")
        kind, pattern, folder = OPENCV_PEERS[peer]
        path = peers_dir / folder / pattern.format(scale=scale)
        if not path.is_file():
            print(f"note: {peer} skipped, no {path}", file=sys.stderr)
            continue
        methods[peer] = opencv_upscaler(kind, scale, path)
    models = [m for m in args.model if m != NO_MODEL]
    for model in models:
        loaded = load_model(model, device=args.device)
        if loaded.config.upscale_factor != scale:
            parser.error(f"{model} is a x{loaded.config.upscale_factor} model, --scale is {scale}")
        methods[model_name(model)] = loaded

    results: dict[str, dict[str, dict]] = {}
    panels: dict[str, dict[str, np.ndarray]] = {}
    scores: dict[str, dict[str, float]] = {}
    row_labels: dict[str, str] = {}
    for set_name in args.sets:
        dataset = load_benchmark(set_name, root=args.data_dir, scale=scale)
        if len(dataset) == 0:
            print(f"note: {set_name} has no usable images, skipped", file=sys.stderr)
            continue
        shown = dataset.names[0]
        results[set_name] = {}
        outputs: dict[str, np.ndarray] = {}
        for method, upscaler in methods.items():
            result = evaluate_model(
                upscaler, dataset, scale, tile_size=tile, keep_outputs=[shown], rgb_ssim=args.rgb_ssim
            )
            outputs[method] = result.pop("outputs")[shown]
            scores.setdefault(set_name, {})[method] = result.pop("per_image")[shown]["psnr_y"]
            results[set_name][method] = result
            print(
                f"{set_name:9s} {method:22s} PSNR_Y {result['psnr_y']:6.2f}  SSIM_Y {result['ssim_y']:.4f}  "
                f"({result['seconds']:.1f} s)",
                flush=True,
            )
        # Comparison crops: HR, bicubic, the models, OpenCV ESPCN.
        hr = dataset.hr[0]
        y, x = pick_crop(hr, CROP)
        picture_methods = ["bicubic", *(model_name(m) for m in models)]
        if "opencv-espcn" in outputs:
            picture_methods.append("opencv-espcn")
        panels[set_name] = {"HR": hr[y : y + CROP, x : x + CROP]}
        row_labels[set_name] = f"{set_name}: {shown}"
        for method in picture_methods:
            panels[set_name][method] = outputs[method][y : y + CROP, x : x + CROP]
    seconds = time.perf_counter() - start_all

    args.out.mkdir(parents=True, exist_ok=True)
    environment = {
        "torch": torch.__version__,
        "device": args.device,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        import cv2

        environment["opencv"] = cv2.__version__
    except ImportError:
        pass
    common = ["bicubic", *(p for p in methods if p in OPENCV_PEERS)]
    targets = [(m, model_name(m)) for m in models] or [(NO_MODEL, "peers")]
    for model, name in targets:
        keep = common + ([name] if model != NO_MODEL else [])
        payload = {
            "model": model,
            "name": name,
            "scale": scale,
            "command": command,
            "results": {s: {m: r[m] for m in keep} for s, r in results.items()},
            "methods": keep,
            "seconds": round(seconds, 2),
            "environment": environment,
        }
        stem = args.out / f"eval_{name}_x{scale}"
        stem.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
        table = format_table(payload["results"], keep, scale)
        stem.with_suffix(".md").write_text(
            f"# Evaluation: {name}, x{scale}\n\n{table}\nCommand: `{command}`\n\n"
            f"Total time {seconds:.1f} s on {args.device} (torch {torch.__version__}).\n"
        )
        if panels and not args.no_picture:
            keep_panels = {
                s: {k: v for k, v in p.items() if k == "HR" or k in keep} for s, p in panels.items()
            }
            save_picture(
                stem.with_suffix(".png"),
                keep_panels,
                scores,
                row_labels,
                f"{name}, x{scale} (PSNR_Y of the whole image shown)",
            )
        print(f"wrote {stem}.json / .md" + ("" if args.no_picture else " / .png"))
    print()
    print(format_table(results, list(methods), scale))
    print(f"total {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
