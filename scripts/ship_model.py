"""Ship a trained model as packaged weights, `espcn_hf/weights/<name>/` (what the wheel carries and
`resolve_model` falls back to offline).

    python scripts/ship_model.py runs/espcn-x3/best espcn-x3
    python scripts/evaluate.py --model espcn_hf/weights/espcn-x3 --scale 3 --threads 1 --out benchmarks
    python scripts/summarize_results.py --write-readme       # README results and model_card.md

The folder gets the checkpoint's `model.safetensors` (its bytes), `config.json` and `preprocessor_config.json`
without the remote-code entries (`auto_map`, `custom_pipelines`: inside the package the installed classes load
it, and no code file is copied), and the run's `eval_results.json` and `training_config.json`. The model must load
strictly from the new folder before it replaces the old one (atomically). Code files are written only where a
folder leaves the package: `save_pretrained`, the Hub upload (`scripts/push_to_hub.py`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from espcn_hf import CheckpointError, ESPCNForImageSuperResolution
from espcn_hf.fileio import atomic_write_text, replace_dir
from espcn_hf.pretrained import WEIGHTS_DIR

REMOTE_CODE_KEYS = ("auto_map", "custom_pipelines")
COPIED = ("model.safetensors", "eval_results.json", "training_config.json")


def without_remote_code(path: Path) -> str:
    """A config file's JSON without the entries that point at code files."""
    data = json.loads(path.read_text())
    for key in REMOTE_CODE_KEYS:
        data.pop(key, None)
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def ship(source: Path, name: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    final = weights_dir / name
    tmp = weights_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for config in ("config.json", "preprocessor_config.json"):
        atomic_write_text(tmp / config, without_remote_code(source / config))
    for file in COPIED:
        if (source / file).is_file():
            shutil.copyfile(source / file, tmp / file)
    ESPCNForImageSuperResolution.from_pretrained(tmp)  # strict: CheckpointError before anything is replaced
    return replace_dir(tmp, final)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="a folder written by save_pretrained (e.g. runs/x3/best)")
    parser.add_argument(
        "name", help="the packaged model's name: espcn-x2, espcn-x3, espcn-x4, espcn-paper-x3"
    )
    args = parser.parse_args(argv)
    try:
        folder = ship(args.source, args.name)
    except (CheckpointError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.source} -> {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
