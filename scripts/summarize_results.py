"""The README's results section, built from the measured files in benchmarks/ (never typed by hand), and the
repository's model_card.md.

    python scripts/summarize_results.py                 # print the section
    python scripts/summarize_results.py --write-readme  # replace it in README.md (between the results markers)
                                                        # and write model_card.md

Sources: `benchmarks/eval_<model>_x<r>.json` (`espcn_hf.evaluation.EvalReport` files of scripts/evaluate.py),
`benchmarks/speed_cpu.json` (scripts/benchmark.py) and, from a GPU slot (scripts/train_gpu.sh, scripts/bench_gpu.sh):
`benchmarks/data_throughput_cuda.json`, `benchmarks/runs/espcn-x3-{cpu,gpu}/metrics.jsonl`,
`benchmarks/speed_cuda{,_whole_frame}.json` and `benchmarks/speed_video_cuda.md`. Each target of the project's
issues is printed with the measured figure and met / NOT met.

model_card.md is the card of the default model (espcn-x3, the packaged weights) exactly as its Hub repository
shows it: the README.md of `python scripts/push_to_hub.py espcn_hf/weights/espcn-x3 --repo-id espcn-hf/espcn-x3
--dry-run DIR` (the same template, results file and comparison photo; `push_to_hub.default_card`). It needs the
photo under $ESPCN_HF_DATA_DIR. tests/test_results_summary.py checks that README.md holds exactly what this
script prints and that model_card.md is what it renders now.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from push_to_hub import default_card  # a sibling script (scripts/ is on sys.path when one runs)

from espcn_hf.evaluation import EvalReport, format_scores
from espcn_hf.fileio import atomic_write_text
from espcn_hf.training.records import read_metrics

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
START, END = "<!-- results:start -->", "<!-- results:end -->"
MODEL_CARD = "model_card.md"  # in the repository root

# (model, scale) -> {benchmark set: minimum PSNR-Y}, as the training issue states them.
QUALITY_TARGETS = {
    ("espcn-x2", 2): {"Set5": 37.0, "Set14": 32.6},
    ("espcn-x3", 3): {"Set5": 33.2, "Set14": 29.5},
    ("espcn-x4", 4): {"Set5": 30.9, "Set14": 27.8},
    ("espcn-paper-x3", 3): {"Set5": 32.6},
}
SETS = ("Set5", "Set14", "BSD100", "Urban100")
# The training issue's GPU targets: 32x32 LR patches/s of the device data path, and the x3 curve of scripts/train.py
# on one GPU (Set5 PSNR-Y by these training seconds). The video issue's: the default tile path within 1.2x of the
# whole-frame model time, and 360p -> 1080p x3 video end to end at 120 fps or more.
CUDA_PATCHES_PER_S = 90_000
GPU_CURVE_TARGETS = ((90, 32.6), (240, 33.0))
TILE_OVERHEAD = 1.2
VIDEO_FPS = 120.0


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _load_report(path: Path) -> EvalReport | None:
    return EvalReport.from_json(path) if path.is_file() else None


def quality_section(benchmarks: Path) -> tuple[list[str], list[str]]:
    lines = [
        "### Quality: PSNR-Y (dB) / SSIM-Y, standard protocol (MATLAB bicubic LR, border = scale)",
        "",
        "| model | scale | " + " | ".join(SETS) + " | bicubic Set5 | OpenCV ESPCN Set5 |",
        "|---|---|" + "---|" * len(SETS) + "---|---|",
    ]
    targets = []
    commands = []
    for (name, scale), wanted in QUALITY_TARGETS.items():
        report = _load_report(benchmarks / f"eval_{name}_x{scale}.json")
        if report is None:
            lines.append(f"| {name} | x{scale} | " + " | ".join("not evaluated" for _ in SETS) + " | | |")
            targets += [f"| {name} {s} >= {v} | not evaluated | NOT met |" for s, v in wanted.items()]
            continue
        cells = [format_scores(report.scores(s, name)) for s in SETS]
        baselines = [report.scores("Set5", m) for m in ("bicubic", "opencv-espcn")]
        baseline_cells = [f"{b.psnr_y:.2f}" if b else "–" for b in baselines]
        lines.append(f"| {name} | x{scale} | " + " | ".join(cells + baseline_cells) + " |")
        for s, minimum in wanted.items():
            scores = report.scores(s, name)
            if scores is None:
                targets.append(f"| {name} {s} PSNR-Y >= {minimum} | not evaluated | NOT met |")
                continue
            got = scores.psnr_y
            verdict = "met" if got >= minimum else f"**NOT met** ({got - minimum:+.2f} dB)"
            targets.append(f"| {name} {s} PSNR-Y >= {minimum} | {got:.2f} | {verdict} |")
        seconds = f" ({report.seconds:.0f} s)" if report.seconds is not None else ""
        commands.append(f"`{report.command}`{seconds}")
    if commands:
        lines += ["", "Commands: " + "; ".join(commands) + "."]
    return lines, targets


def speed_section(benchmarks: Path) -> tuple[list[str], list[str]]:
    data = _load(benchmarks / "speed_cpu.json")
    if data is None:
        return ["### Speed", "", "Not measured yet (`python scripts/benchmark.py`)."], []
    rows = {(r["scale"], r["method"]): r for r in data["rows"]}
    lines = [
        "### Speed on this 2-core CPU (ms per 1920x1080 output frame, median; same run)",
        "",
        f"4096x4096 fp32 matmul: {data['matmul_gflops']:.0f} GFLOP/s. Command: `{data['command']}`.",
        "",
        "| scale | PIL bicubic | OpenCV ESPCN | seven-layer fp32 | seven-layer bf16 | paper fp32 | paper bf16 |",
        "|---|---|---|---|---|---|---|",
    ]
    for scale in (2, 3, 4):

        def ms(method, scale=scale):
            row = rows.get((scale, method))
            return f"{row['ms']:.0f}" if row else "–"

        lines.append(
            f"| x{scale} | {ms('PIL bicubic')} | {ms('OpenCV ESPCN')} | {ms('espcn [channels_last]')} | "
            f"{ms('espcn [bf16]')} | {ms('espcn-paper [channels_last]')} | {ms('espcn-paper [bf16]')} |"
        )
    targets = []
    for path in ("channels_last", "bf16"):
        paper = rows.get((3, f"espcn-paper [{path}]"))
        if paper and "vs_opencv" in paper:
            ok = "met" if paper["vs_opencv"] <= 0.4 else "**NOT met**"
            targets.append(
                f"| paper preset x3, {path}: time <= 0.4x OpenCV ESPCN | {paper['vs_opencv']:.2f}x | {ok} |"
            )
    for path in ("channels_last", "bf16"):
        default = rows.get((3, f"espcn [{path}]"))
        if default:
            ratio = default["matmul_ratio"]
            if path == "bf16":  # bf16 convolutions against an fp32 matmul cannot judge the target
                ok = "not like-for-like (bf16 vs an fp32 matmul); the fp32 row decides"
            else:
                ok = "met" if ratio >= 0.85 else "**NOT met**"
            targets.append(
                f"| seven-layer x3, {path}: >= 85% of fp32 matmul GFLOP/s | {100 * ratio:.0f}% | {ok} |"
            )
    memory = data.get("memory")
    if memory:
        ok = "met" if memory["tiled_peak_mb"] < 2000 else "**NOT met**"
        targets.append(
            f"| tiled x4 of 4000x3000: peak RSS < 2 GB | {memory['tiled_peak_mb']:.0f} MB | {ok} |"
        )
    if "tiling_max_diff" in data:
        ok = "met" if data["tiling_max_diff"] <= 1e-5 else "**NOT met**"
        targets.append(f"| tiled == untiled (max abs diff <= 1e-5) | {data['tiling_max_diff']:.1e} | {ok} |")
    timing = _load_report(benchmarks / "eval_time" / "eval_espcn-x3_x3.json")
    if timing is not None and timing.seconds is not None:
        ok = "met" if timing.seconds < 120 else "**NOT met**"
        targets.append(
            f"| one model on the four sets in < 2 min: `{timing.command}` | {timing.seconds:.0f} s | {ok} |"
        )
    return lines, targets


def _markdown_rows(path: Path) -> list[dict]:
    """The rows of the first markdown table in `path` as {header: cell} (the video benchmark writes markdown)."""
    rows, header = [], None
    for line in path.read_text().splitlines() if path.is_file() else []:
        if not line.startswith("|"):
            if header:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set("".join(cells)) <= set("-: "):
            rows.append(dict(zip(header, cells, strict=False)))
    return rows


def _curve(benchmarks: Path, name: str) -> list[dict]:
    path = benchmarks / "runs" / name / "metrics.jsonl"
    return [r for r in read_metrics(path) if "set5_psnr" in r] if path.is_file() else []


def _run_device(benchmarks: Path, info: dict, name: str) -> str:
    """A run's device as run.json names it (`device_name`, newer runs), else its device type, with the GPU's name
    from the slot's timing log (`gpu: NAME, ...`), and its mixed precision."""
    label = info.get("device_name") or info.get("device", name)
    timing = benchmarks / "runs" / "gpu_slot_timing.txt"
    if "device_name" not in info and label.startswith("cuda") and timing.is_file():
        gpus = [
            line[5:].split(",")[0] for line in timing.read_text().splitlines() if line.startswith("gpu: ")
        ]
        label = f"{label} ({gpus[0]})" if gpus else label
    precision = info.get("mixed_precision")
    return f"{label}, {'fp32' if precision in (None, 'no') else precision}"


def gpu_section(benchmarks: Path) -> tuple[list[str], list[str]]:
    lines, targets = [], []
    data = _load(benchmarks / "data_throughput_cuda.json")
    if data is not None:
        got = data["patches_per_s"]
        ok = "met" if got >= CUDA_PATCHES_PER_S else "**NOT met**"
        targets.append(
            f"| device data path on {data['device']}: >= {CUDA_PATCHES_PER_S:,} 32x32 patches/s | {got:,} | {ok} |"
        )
    gpu_curve = _curve(benchmarks, "espcn-x3-gpu")
    for seconds, minimum in GPU_CURVE_TARGETS if gpu_curve else ():
        by_then = [r["set5_psnr"] for r in gpu_curve if r["seconds"] <= seconds]
        got = max(by_then) if by_then else float("nan")
        first = next((r["seconds"] for r in gpu_curve if r["set5_psnr"] >= minimum), None)
        when = f"; first at {first:.0f} s" if first is not None else "; never in the run"
        ok = "met" if got >= minimum else f"**NOT met** ({got - minimum:+.2f} dB{when})"
        targets.append(
            f"| x3 on one GPU (scripts/train.py): Set5 >= {minimum} dB by {seconds} s | {got:.2f} | {ok} |"
        )
    peers = _load_report(benchmarks / "eval_peers_x3.json")
    bicubic = peers.scores("Set5", "bicubic") if peers else None
    if bicubic is not None and gpu_curve:
        threshold = bicubic.psnr_y + 2.0
        lines += [
            f"### Time to quality: x3 from scratch until Set5 passes bicubic + 2 dB ({threshold:.2f} dB)",
            "",
            "| device, precision | minutes | best Set5 in the run | steps | batch x LR patch |",
            "|---|---|---|---|---|",
        ]
        for name in ("espcn-x3-cpu", "espcn-x3-gpu"):
            curve = _curve(benchmarks, name)
            info = _load(benchmarks / "runs" / name / "run.json") or {}
            if not curve:
                continue
            first = next((r["seconds"] / 60 for r in curve if r["set5_psnr"] >= threshold), None)
            config = info.get("config", {})
            lines.append(
                f"| {_run_device(benchmarks, info, name)} | {'not reached' if first is None else f'{first:.1f}'} | "
                f"{max(r['set5_psnr'] for r in curve):.2f} | {curve[-1]['step']:,} | "
                f"{config.get('batch_size', '?')} x {config.get('patch_size', '?')}px |"
            )
        lines += ["", "Picture: [benchmarks/time_to_quality.png](benchmarks/time_to_quality.png).", ""]
    auto, whole = _load(benchmarks / "speed_cuda.json"), _load(benchmarks / "speed_cuda_whole_frame.json")
    if auto and whole:
        ms, whole_ms = ({(r["scale"], r["method"]): r["ms"] for r in data["rows"]} for data in (auto, whole))
        default = "espcn [channels_last]"  # upscale_tensor's default path
        ratios = [(ms[key] / whole_ms[key], key[0]) for key in ms if key[1] == default and key in whole_ms]
        lines += [
            f"### Speed on {auto['device']} (ms per 1920x1080 output frame, median)",
            "",
            "| scale | seven-layer, default path | whole frame | bf16 | paper, default path |",
            "|---|---|---|---|---|",
        ]
        for scale in (2, 3, 4):
            cells = [
                ms.get((scale, default)),
                whole_ms.get((scale, default)),
                ms.get((scale, "espcn [bf16]")),
                ms.get((scale, "espcn-paper [channels_last]")),
            ]
            lines.append(
                f"| x{scale} | " + " | ".join("–" if c is None else f"{c:.2f}" for c in cells) + " |"
            )
        lines += ["", f"Commands: `{auto['command']}`; `{whole['command']}`.", ""]
        if ratios:
            worst, scale = max(ratios)
            ok = "met" if worst <= TILE_OVERHEAD else "**NOT met**"
            targets.append(
                f"| CUDA: default upscale_tensor path within {TILE_OVERHEAD}x of the whole-frame model "
                f"(worst scale) | {worst:.2f}x (x{scale}) | {ok} |"
            )
    video = [
        r for r in _markdown_rows(benchmarks / "speed_video_cuda.md") if "1920x1080" in r.get("case", "")
    ]
    if video:
        row = video[0]
        got = float(row["end to end"])
        ok = "met" if got >= VIDEO_FPS else "**NOT met**"
        split = f"decode {row['decode']}, SR {row['SR espcn']}, encode {row['encode']} fps"
        targets.append(
            f"| CUDA machine: video 640x360 -> 1920x1080 x3 end to end >= {VIDEO_FPS:.0f} fps | {got:.1f} fps "
            f"({split}) | {ok} |"
        )
    return lines, targets


def build(benchmarks: Path = BENCHMARKS) -> str:
    quality, quality_targets = quality_section(benchmarks)
    speed, speed_targets = speed_section(benchmarks)
    gpu, gpu_targets = gpu_section(benchmarks)
    lines = [
        "_Generated by `python scripts/summarize_results.py --write-readme` from the files in benchmarks/._",
        "",
        *quality,
        "",
        *speed,
        "",
        *gpu,
        "### Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
        *quality_targets,
        *speed_targets,
        *gpu_targets,
    ]
    return "\n".join(lines).rstrip() + "\n"


def model_card() -> str:
    """The text of model_card.md: the Hub card of the default model (see the module docstring)."""
    from espcn_hf.pretrained import DEFAULT_SCALE, HUB_REPO_IDS, packaged_weights

    return default_card(packaged_weights(DEFAULT_SCALE), HUB_REPO_IDS[DEFAULT_SCALE])


def replace_section(readme: str, section: str) -> str:
    if START not in readme or END not in readme:
        raise ValueError(f"README.md has no {START} ... {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{section}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--write-readme",
        action="store_true",
        help=f"update README.md's results section and write {MODEL_CARD}",
    )
    args = parser.parse_args(argv)
    section = build()
    if not args.write_readme:
        print(section)
        return 0
    try:
        card = model_card()  # rendered before any write: a missing photo leaves both files as they were
    except FileNotFoundError as error:
        print(f"error: {error}; nothing written", file=sys.stderr)
        return 1
    readme = REPO / "README.md"
    atomic_write_text(readme, replace_section(readme.read_text(), section))
    atomic_write_text(REPO / MODEL_CARD, card)
    print(f"updated {readme} and {REPO / MODEL_CARD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
