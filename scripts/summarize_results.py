"""The README's results section, built from the measured files in benchmarks/ (never typed by hand).

    python scripts/summarize_results.py                 # print the section
    python scripts/summarize_results.py --write-readme  # replace it in README.md (between the results markers)

Sources: `benchmarks/eval_<model>_x<r>.json` (`espcn_hf.evaluation.EvalReport` files of scripts/evaluate.py) and
`benchmarks/speed_cpu.json` (scripts/benchmark.py). Each target of the project's issues is printed with the measured figure and met / NOT met.
tests/test_results_summary.py checks that README.md holds exactly what this script prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from espcn_hf.evaluation import EvalReport, format_scores
from espcn_hf.fileio import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
START, END = "<!-- results:start -->", "<!-- results:end -->"

# (model, scale) -> {benchmark set: minimum PSNR-Y}, as the training issue states them.
QUALITY_TARGETS = {
    ("espcn-x2", 2): {"Set5": 37.0, "Set14": 32.6},
    ("espcn-x3", 3): {"Set5": 33.2, "Set14": 29.5},
    ("espcn-x4", 4): {"Set5": 30.9, "Set14": 27.8},
    ("espcn-paper-x3", 3): {"Set5": 32.6},
}
SETS = ("Set5", "Set14", "BSD100", "Urban100")


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


def build(benchmarks: Path = BENCHMARKS) -> str:
    quality, quality_targets = quality_section(benchmarks)
    speed, speed_targets = speed_section(benchmarks)
    lines = [
        "_Generated by `python scripts/summarize_results.py --write-readme` from the files in benchmarks/._",
        "",
        *quality,
        "",
        *speed,
        "",
        "### Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
        *quality_targets,
        *speed_targets,
    ]
    return "\n".join(lines).rstrip() + "\n"


def replace_section(readme: str, section: str) -> str:
    if START not in readme or END not in readme:
        raise ValueError(f"README.md has no {START} ... {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{section}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args(argv)
    section = build()
    if args.write_readme:
        readme = REPO / "README.md"
        atomic_write_text(readme, replace_section(readme.read_text(), section))
        print(f"updated {readme}")
    else:
        print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
