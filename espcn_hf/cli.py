"""`espcn-hf` command line.

    espcn-hf upscale INPUT... -o OUT [--model PATH_OR_REPO_ID] [--scale 3] [--tile N] [--device cpu|cuda]

INPUT is any mix of image files and folders (searched for images, non-images skipped). With one input file, OUT
may be a file name; otherwise it is a folder, created if needed, receiving `<stem>_x<r>.png` per input. An
input file is never overwritten. Unreadable inputs are reported one line each and make the exit status 1; the
other inputs are still processed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .image_io import ImageLoadError, is_image_file
from .image_processing_espcn import DEFAULT_MAX_PIXELS
from .inference import CheckpointError, load_model, upscale
from .pretrained import bundled_checkpoint

EXIT_OK, EXIT_INPUT_ERROR, EXIT_USAGE = 0, 1, 2


def _collect_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    files, errors = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not found:
                errors.append(f"{item}: folder has no image files")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            errors.append(f"{item}: no such file or folder")
    return files, errors


def _output_paths(files: list[Path], output: Path, factor: int) -> list[Path]:
    single_file_target = len(files) == 1 and output.suffix.lower() in (
        ".png",
        ".jpg",
        ".jpeg",
        ".webp",
        ".bmp",
        ".tif",
        ".tiff",
    )
    if single_file_target:
        return [output]
    names = [f"{f.stem}_x{factor}.png" for f in files]
    # Two inputs with the same stem in different folders must not overwrite each other's output.
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else name.replace(".png", f"_{count}.png"))
    return [output / n for n in unique]


def cmd_upscale(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    files, errors = _collect_inputs(args.inputs)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    if not files:
        print("error: nothing to upscale", file=sys.stderr)
        return EXIT_INPUT_ERROR

    model_ref = args.model or bundled_checkpoint(args.scale)
    try:
        model = load_model(model_ref, device=args.device)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    factor = model.config.upscale_factor
    output = Path(args.output)
    targets = _output_paths(files, output, factor)
    if len(targets) > 1 or targets[0].parent != Path("."):
        targets[0].parent.mkdir(parents=True, exist_ok=True)
    inputs_resolved = {f.resolve() for f in files}

    failures = len(errors)
    bar = tqdm(
        list(zip(files, targets, strict=True)),
        desc=f"x{factor}",
        unit="img",
        disable=len(files) < 2 or args.quiet,
    )
    for source, target in bar:
        if target.resolve() in inputs_resolved:
            print(f"error: {source}: refusing to overwrite an input file ({target})", file=sys.stderr)
            failures += 1
            continue
        try:
            result = upscale(str(source), model, tile_size=args.tile, max_pixels=args.max_pixels)
        except (ImageLoadError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            failures += 1
            continue
        if target.suffix.lower() in (".jpg", ".jpeg") and result.mode == "RGBA":
            result = result.convert("RGB")
        result.save(target)
        if not args.quiet and len(files) < 2:
            print(f"{source} -> {target} ({result.width}x{result.height})")
    if failures:
        print(f"{failures} input(s) failed, {len(files) - failures + len(errors)} written", file=sys.stderr)
        return EXIT_INPUT_ERROR
    return EXIT_OK


def _tile_arg(value: str):
    if value == "auto":
        return "auto"
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--tile takes 'auto', 0 (no tiling) or a size >= 8, got {value!r}"
        ) from None
    if number != 0 and number < 8:
        raise argparse.ArgumentTypeError(f"--tile must be 0 or >= 8, got {number}")
    return number or None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="espcn-hf", description="ESPCN super-resolution on transformers")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upscale", help="super-resolve image files or folders")
    up.add_argument("inputs", nargs="+", help="image files and/or folders")
    up.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    up.add_argument(
        "--model", help="folder written by save_pretrained or Hub repo id (default: bundled weights)"
    )
    up.add_argument(
        "--scale", type=int, choices=(2, 3, 4), default=3, help="bundled model to use without --model"
    )
    up.add_argument(
        "--tile", type=_tile_arg, default="auto", help="tile size in LR pixels, 'auto' or 0 (none)"
    )
    up.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")
    up.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger inputs")
    up.add_argument("-q", "--quiet", action="store_true")
    up.set_defaults(func=cmd_upscale)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device is not None and args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda requested but CUDA is not available", file=sys.stderr)
            return EXIT_USAGE
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
