"""Bring the results of `scripts/train_gpu.sh` on a GPU machine into the checkout (DEVELOPERS.md).

    python scripts/collect_gpu_runs.py runs/gpu-slot-out      # the $OUT folder of train_gpu.sh, copied back here

- unpacks `runs.tar.gz` into `runs/gpu-slot/` (git-ignored): each `<name>/best/` is a `save_pretrained` folder;
- copies each run's `metrics.jsonl` and `run.json` to `benchmarks/runs/<name>/` (committed: the GPU evidence),
  and `data_throughput_cuda.json` / `.md` and `timing.txt` (as `benchmarks/runs/gpu_slot_timing.txt`);
- prints each run's best validation score and the folder to ship.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, help="the folder holding runs.tar.gz, timing.txt, ...")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "gpu-slot")
    parser.add_argument("--benchmarks", type=Path, default=ROOT / "benchmarks")
    args = parser.parse_args(argv)

    archive = args.folder / "runs.tar.gz"
    if not archive.is_file():
        parser.error(f"{archive}: not found")
    args.runs.mkdir(parents=True, exist_ok=True)
    args.benchmarks.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(args.runs, filter="data")  # "data": no absolute paths, links out, devices
    for name in ("data_throughput_cuda.json", "data_throughput_cuda.md"):
        if (args.folder / name).is_file():
            shutil.copyfile(args.folder / name, args.benchmarks / name)
            print(f"benchmarks/{name}")
    target_root = args.benchmarks / "runs"
    target_root.mkdir(parents=True, exist_ok=True)
    if (args.folder / "timing.txt").is_file():
        shutil.copyfile(args.folder / "timing.txt", target_root / "gpu_slot_timing.txt")
    for run in sorted(p for p in args.runs.iterdir() if (p / "metrics.jsonl").is_file()):
        target = target_root / run.name
        target.mkdir(exist_ok=True)
        for name in ("metrics.jsonl", "run.json"):
            if (run / name).is_file():
                shutil.copyfile(run / name, target / name)
        best = run / "best" / "eval_results.json"
        scores = json.loads(best.read_text()) if best.is_file() else {}
        shown = {k: round(v, 3) for k, v in scores.items() if k.endswith("_psnr")}
        print(
            f"{run.name}: best {shown} at step {scores.get('step')} ({scores.get('seconds')} s) -> {run / 'best'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
