"""Copy the images a GPU slot needs into a git-ignored folder of the checkout, which the `run` call carries.

    python scripts/prepare_gpu_data.py            # -> gpu_data/{train/<every set>,benchmarks/{Set5,Set14}}

`../shared/data` does not travel to the GPU machine; the checkout does, with at most 64 MiB in all (tracked and
untracked files plus carried folders). So this copies every training set under `<data dir>/train` and the
validation sets, each set's SOURCE.txt too, and skips everything that is not an image. BMP files (T91) are
stored as PNG, losslessly (each one decoded again and compared pixel by pixel): 16 MB of BMP become about half
that. JPEG and PNG files are copied byte for byte. It refuses when the checkout plus the folder would pass
the limit. `scripts/train_gpu.sh` reads the folder through `ESPCN_HF_DATA_DIR`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import DATA_DIR
from PIL import Image

from espcn_hf.image_io import is_image_file

LIMIT_BYTES = 64 * 2**20
ROOT = Path(__file__).resolve().parents[1]


def checkout_bytes() -> int:
    """Bytes of the files that travel without being carried: tracked, and untracked but not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return sum(
        (ROOT / name).stat().st_size
        for name in listed.decode().split("\0")
        if name and (ROOT / name).is_file()
    )


def copy_set(source: Path, target: Path) -> int:
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.name == "SOURCE.txt":
            shutil.copyfile(path, target / path.name)
        elif path.is_file() and is_image_file(path):
            if path.suffix.lower() == ".bmp":
                out = target / (path.stem + ".png")
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
                Image.fromarray(pixels).save(out, optimize=True)
                with Image.open(out) as check:
                    if not np.array_equal(np.asarray(check.convert("RGB")), pixels):
                        raise RuntimeError(f"{out}: PNG differs from {path}")
            else:
                shutil.copyfile(path, target / path.name)
    return sum(p.stat().st_size for p in target.iterdir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=DATA_DIR, help="default: ../shared/data")
    parser.add_argument("--target", type=Path, default=ROOT / "gpu_data")
    parser.add_argument("--val-sets", nargs="+", default=["Set5", "Set14"])
    args = parser.parse_args(argv)

    if args.target.exists():
        shutil.rmtree(args.target)
    train_sets = sorted(p for p in (args.source / "train").iterdir() if p.is_dir())
    total = 0
    for folder in train_sets:
        size = copy_set(folder, args.target / "train" / folder.name)
        total += size
        print(f"train/{folder.name}: {size / 2**20:.1f} MiB")
    for name in args.val_sets:
        size = copy_set(args.source / "benchmarks" / name, args.target / "benchmarks" / name)
        total += size
        print(f"benchmarks/{name}: {size / 2**20:.1f} MiB")
    checkout = checkout_bytes()
    print(
        f"{args.target}: {total / 2**20:.1f} MiB; with the checkout ({checkout / 2**20:.1f} MiB): "
        f"{(total + checkout) / 2**20:.1f} MiB of the {LIMIT_BYTES / 2**20:.0f} MiB that may travel"
    )
    if total + checkout > LIMIT_BYTES:
        print(
            "error: too large to travel; leave out a set (edit --source) or clean untracked files",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
