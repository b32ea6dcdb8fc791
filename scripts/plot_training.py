"""Validation curves of training runs: Set5 PSNR-Y against step and against wall-clock training time.

    python scripts/plot_training.py runs/espcn-x3 -o benchmarks/training_curve.png
    python scripts/plot_training.py runs/espcn-x3 runs/espcn-paper-x3 --metric set14_psnr -o curves.png
    python scripts/plot_training.py benchmarks/runs/espcn-x3-cpu benchmarks/runs/espcn-x3-gpu --log-time \
        --baseline-json benchmarks/eval_peers_x3.json -o benchmarks/time_to_quality.png   # both devices

Each RUN_DIR holds the `metrics.jsonl` and `run.json` written by `scripts/train.py`. The dashed line is the
bicubic PSNR of the same validation set + `--margin` dB: from `--baseline-json` (an evaluation JSON of
`scripts/evaluate.py`, e.g. benchmarks/eval_peers_x3.json) when given, else as recorded by the run, else the
published MATLAB value. Also prints, per run, the training minutes until the curve first passes that line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from espcn_hf.evaluation import EvalReport
from espcn_hf.fileio import atomic_save
from espcn_hf.training.records import read_metrics

# Published bicubic (MATLAB imresize) PSNR-Y on Set5, used when a run does not record its own baseline.
BICUBIC_SET5 = {2: 33.66, 3: 30.39, 4: 28.42}


def baseline_from_eval_json(path: Path, metric: str) -> tuple[int, float]:
    """(scale, bicubic PSNR-Y) of the validation set named by `metric` (e.g. set5_psnr) in a results file."""
    report = EvalReport.from_json(path)
    wanted = metric.split("_")[0]
    set_name = next((s for s in report.sets if s.lower() == wanted), None)
    scores = report.scores(set_name, "bicubic") if set_name else None
    if scores is None:
        raise SystemExit(f"error: {path} has no bicubic result for {wanted} (sets: {report.sets})")
    return report.scale, scores.psnr_y


def load_run(run_dir: Path, metric: str) -> dict:
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (is it an output_dir of scripts/train.py?)")
    records = [r for r in read_metrics(metrics_path) if metric in r]
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    scale = info.get("config", {}).get("upscale_factor")
    bicubic = info.get("bicubic", {}).get(metric)
    if bicubic is None and metric == "set5_psnr":
        bicubic = BICUBIC_SET5.get(scale)
    device = info.get("device")
    return {"name": run_dir.name, "records": records, "bicubic": bicubic, "scale": scale, "device": device}


def minutes_to_pass(records: list[dict], metric: str, threshold: float) -> float | None:
    """Training minutes at the first evaluation whose `metric` is >= `threshold`; None if never."""
    for record in records:
        if record[metric] >= threshold:
            return record["seconds"] / 60.0
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("-o", "--output", type=Path, default=Path("benchmarks/training_curve.png"))
    parser.add_argument("--metric", default="set5_psnr", help="a key of metrics.jsonl (default set5_psnr)")
    parser.add_argument("--margin", type=float, default=2.0, help="dB above bicubic for the target line")
    parser.add_argument(
        "--baseline-json", type=Path, nargs="*", default=[], help="evaluation JSONs for bicubic"
    )
    parser.add_argument(
        "--log-time",
        action="store_true",
        help="logarithmic minutes axis (runs of a few GPU minutes beside CPU runs of an hour)",
    )
    args = parser.parse_args(argv)
    baselines = dict(baseline_from_eval_json(path, args.metric) for path in args.baseline_json)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for index, run_dir in enumerate(args.run_dirs):
        run = load_run(run_dir, args.metric)
        run["bicubic"] = baselines.get(run["scale"], run["bicubic"])
        records = run["records"]
        color = f"C{index}"
        facts = [f"x{run['scale']}" if run["scale"] else "", run["device"] or ""]
        label = run["name"] + (f" ({', '.join(f for f in facts if f)})" if any(facts) else "")
        steps = [r["step"] for r in records]
        minutes = [r["seconds"] / 60.0 for r in records]
        values = [r[args.metric] for r in records]
        by_step.plot(steps, values, "-o", color=color, markersize=3, label=label)
        by_time.plot(minutes, values, "-o", color=color, markersize=3, label=label)
        if run["bicubic"] is None:
            print(f"{run['name']}: no bicubic baseline for {args.metric}; no target line")
            continue
        target = run["bicubic"] + args.margin
        for axis in (by_step, by_time):
            axis.axhline(target, color=color, linestyle="--", linewidth=1)
        reached = minutes_to_pass(records, args.metric, target)
        best = max(values) if values else float("nan")
        when = f"{reached:.1f}" if reached is not None else "not reached"
        print(
            f"{run['name']}: minutes until {args.metric} passes bicubic + {args.margin:g} dB "
            f"({run['bicubic']:.2f} + {args.margin:g} = {target:.2f} dB): {when}; best {best:.2f} dB "
            f"after {len(records)} evaluations"
        )
    metric_label = args.metric.replace("_psnr", " PSNR-Y (dB)").replace("_ssim", " SSIM-Y")
    by_step.set(xlabel="optimizer step", ylabel=metric_label, title=f"{metric_label} vs step")
    by_time.set(
        xlabel="training wall-clock (minutes)", title=f"{metric_label} vs time (dashed: bicubic + margin)"
    )
    if args.log_time:
        by_time.set_xscale("log")
    for axis in (by_step, by_time):
        axis.grid(alpha=0.3)
    by_step.legend(loc="lower right")
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(args.output, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
