"""Re-save the config files and code files of the packaged models (`espcn_hf/weights/*`) with the current code.

    python scripts/refresh_weights.py          # rewrite config.json, preprocessor_config.json and the code files
    python scripts/refresh_weights.py --check  # exit 1 if any of them is out of date (what the tests check)

The weights are never rewritten: `model.safetensors` keeps its bytes. Run this after changing
`configuration_espcn.py`, `modeling_espcn.py`, `image_processing_espcn.py` or `pipeline_espcn.py`, so that the
packaged folders (and Hub repos made from them) load with `trust_remote_code=True` where espcn_hf is not
installed.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import sys
import tempfile
from pathlib import Path

from espcn_hf import ESPCNForImageSuperResolution, ESPCNImageProcessor
from espcn_hf.pretrained import WEIGHTS_DIR

WEIGHTS_FILE = "model.safetensors"


def _same(old: Path, new: Path) -> bool:
    if not old.is_file():
        return False
    if old.suffix == ".json":  # the same settings; the transformers version that wrote them does not matter
        versionless = [json.loads(p.read_text()) for p in (old, new)]
        for data in versionless:
            data.pop("transformers_version", None)
        return versionless[0] == versionless[1]
    return filecmp.cmp(old, new, shallow=False)


def stale_files(folder: Path, fresh: Path) -> list[str]:
    """Names of the files save_pretrained writes (all but the weights) that differ in `folder` from `fresh`."""
    written = sorted(p.name for p in fresh.iterdir() if p.name != WEIGHTS_FILE)
    return [name for name in written if not _same(folder / name, fresh / name)]


def refreshed_copy(folder: Path, out: Path) -> Path:
    """Load the packaged model and processor in `folder` and save them into `out` with the current code."""
    ESPCNForImageSuperResolution.from_pretrained(folder).save_pretrained(out)
    ESPCNImageProcessor.from_pretrained(folder).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = parser.parse_args(argv)
    status = 0
    for folder in sorted(p for p in WEIGHTS_DIR.iterdir() if (p / "config.json").is_file()):
        with tempfile.TemporaryDirectory() as tmp:
            fresh = refreshed_copy(folder, Path(tmp))
            stale = stale_files(folder, fresh)
            if args.check:
                if stale:
                    print(f"{folder}: out of date: {', '.join(stale)}", file=sys.stderr)
                    status = 1
                continue
            for name in stale:
                shutil.copyfile(fresh / name, folder / name)
            print(f"{folder.name}: {', '.join(stale) or 'up to date'}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
