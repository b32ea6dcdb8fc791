"""The table of training experiments in benchmarks/runs/README.md, one row per run folder, from the files the
trainer wrote (`run.json`: the config, device and threads; `metrics.jsonl`: every evaluation).

    python scripts/runs_table.py                  # rewrite the table between the markers of benchmarks/runs/README.md
    python scripts/runs_table.py --check          # exit 1 when the committed table is stale (what the tests check)

Columns: the run (its folder), the model, the recipe (what differs from the defaults of `TrainingConfig` that
matters for quality), optimizer steps, patches seen (steps x batch x processes x accumulation), training minutes
(evaluation time excluded), where it ran, the best Set5 PSNR-Y with the Set14 of the same evaluation (the way
best/ is picked), and the last evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from espcn_hf.fileio import atomic_write_text
from espcn_hf.training.records import read_metrics

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "runs"
START, END = "<!-- runs:start -->", "<!-- runs:end -->"


def _recipe(config: dict, model_config: dict) -> str:
    parts = [f"{config.get('loss', 'l1')}"]
    if config.get("finetune_fraction"):
        parts[-1] += f"->{config.get('finetune_loss', 'mse')} last {config['finetune_fraction']:.0%}"
    schedule = config.get("lr_schedule", "cosine")
    if schedule == "multistep":
        schedule = (
            f"x{config.get('gamma', 0.1):g} at {','.join(str(m) for m in config.get('milestones', []))}"
        )
    parts.append(f"Adam {config.get('learning_rate', 1e-3):g} {schedule}")
    out_init = model_config.get("output_initializer_range") or (config.get("model") or {}).get(
        "output_initializer_range"
    )
    if out_init:
        parts.append(f"out-init {out_init:g}")
    hidden = model_config.get("hidden_init") or (config.get("model") or {}).get("hidden_init")
    if hidden and hidden != "auto":
        parts.append(hidden)
    if config.get("output_lr_scale", 1.0) != 1.0:
        parts.append(f"out-lr x{config['output_lr_scale']:g}")
    parts.append(f"{config.get('batch_size')}x{config.get('patch_size')}px")
    dirs = config.get("train_dirs")
    parts.append("+".join(dirs) if isinstance(dirs, list) else str(dirs))
    if not config.get("augment", True):
        parts.append("no aug")
    if config.get("rescale_augment"):
        parts.append("rescaled x" + "/".join(f"{f:g}" for f in config["rescale_augment"]))
    if config.get("ema_decay"):
        parts.append(f"EMA {config['ema_decay']:g}")
    if config.get("reparam"):
        parts.append(f"reparam {config['reparam']}")
    commands = " ".join(config.get("commands") or [])
    if "--init_from" in commands:
        source = commands.split("--init_from", 1)[1].split()[0]
        parts.append(f"from {source}")
    return ", ".join(parts)


def row(folder: Path) -> str | None:
    run_file, metrics_file = folder / "run.json", folder / "metrics.jsonl"
    if not (run_file.is_file() and metrics_file.is_file()):
        return None
    info = json.loads(run_file.read_text())
    records = [r for r in read_metrics(metrics_file) if "set5_psnr" in r]
    if not records:
        return None
    config, model_config = info.get("config", {}), info.get("model_config", {})
    preset = model_config.get("preset") or config.get("preset", "espcn")
    model = f"{preset} x{config.get('upscale_factor')}"
    last = records[-1]
    best = max(records, key=lambda r: r["set5_psnr"])
    processes = info.get("num_processes", 1)
    patches = (
        last["step"] * config.get("batch_size", 0) * processes * config.get("gradient_accumulation_steps", 1)
    )
    where = info.get("device_name") or info.get("device", "?")
    if where.startswith("cpu"):
        threads = where.split(",")[-1].strip().split()[0] if "torch threads" in where else "?"
        where = f"CPU, {threads} thr"
    precision = info.get("mixed_precision")
    if precision and precision != "no":
        where += f", {precision}"

    def scores(record: dict) -> str:
        set14 = record.get("set14_psnr")
        return (
            f"{record['set5_psnr']:.2f} / {set14:.2f}" if set14 is not None else f"{record['set5_psnr']:.2f}"
        )

    return (
        f"| {folder.name} | {model} | {_recipe(config, model_config)} | {last['step']:,} | {patches / 1e6:.2f}M | "
        f"{last.get('seconds', 0) / 60:.1f} | {where} | **{scores(best)}** ({best['step']:,}) | {scores(last)} |"
    )


def table() -> str:
    header = (
        "| run | model | recipe | steps | patches | train min | where | best Set5 / Set14 (step) | last |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = [r for folder in sorted(p for p in RUNS.iterdir() if p.is_dir()) if (r := row(folder))]
    return header + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed table is stale")
    args = parser.parse_args(argv)
    readme = RUNS / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"error: {readme} has no {START} ... {END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    new = f"{head}{START}\n{table()}{END}{rest.split(END, 1)[1]}"
    if args.check:
        if new != text:
            print(f"{readme}: the table is stale; run python scripts/runs_table.py", file=sys.stderr)
            return 1
        return 0
    atomic_write_text(readme, new)
    print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
