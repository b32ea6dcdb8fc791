"""`espcn-hf` command line: one sub-command per job, each with its own `add_<command>_parser` below.

    espcn-hf upscale INPUT... -o OUT [--model PATH_OR_REPO_ID] [--scale 3] [--tile N] [--device cpu|cuda]
    accelerate launch -m espcn_hf.cli upscale BIG_FOLDER -o OUT [--skip-existing]   # files split over processes
    espcn-hf export MODEL -o model.onnx

Building the parser imports nothing heavy (no torch, no transformers), so `espcn-hf --help` is instant; each
command imports what it needs when it runs. To add a command, write `add_<name>_parser(subparsers)` that
registers its arguments and `set_defaults(func=...)`, and list it in `COMMANDS`.

Guarantees of `upscale` (tests/test_cli.py, tests/test_faults.py):
- every output is written atomically (`espcn_hf.fileio.atomic_save`): an interrupt or a full disk never leaves a
  truncated image at the final path and never destroys an earlier good output;
- an input file is never overwritten, also not through a hard link or symlink (`os.path.samefile`);
- every unreadable input and every failed write is reported on one line, the other files are still done, and
  the exit status is 1; usage mistakes are reported before any work and exit with 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from .batch import add_arguments as add_batch_arguments
from .fileio import is_partial_file
from .image_io import (
    DEFAULT_MAX_OUTPUT_PIXELS,
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    is_image_file,
)
from .onnx_export import add_parser as add_export_parser
from .video import VIDEO_EXTENSIONS

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

UPSCALE_EXAMPLES = """\
examples:
  espcn-hf upscale photo.jpg -o photo_x3.png                  # packaged x3 model (or the Hub's, when online)
  espcn-hf upscale photos/ extra.png -o out/ --scale 4        # a folder and a file into a folder
  espcn-hf upscale in.png -o big.png --model espcn-hf/espcn-x2 --tile 0 --device cuda
  espcn-hf upscale scans/ -o out/ --max-pixels 0              # no input size limit
  espcn-hf upscale clip.mp4 -o clip_x3.mp4 --crf 18           # a video (any format FFmpeg reads)
  espcn-hf upscale clip.mp4 -o clip_x3.mp4 --preset veryfast  # libx264 2.6x faster, same crf
  accelerate launch -m espcn_hf.cli upscale big/ -o out/ --skip-existing   # split over processes; resumable

With one input file, OUT is a file if its name ends in an image extension, otherwise a folder (an existing
folder is always used as one): {extensions}. With several inputs OUT must be a folder, created if needed,
receiving <stem>_x<scale>.png per input. JPEG/BMP outputs drop alpha (and 16-bit depth): use PNG or TIFF to keep
them. Exit status: 0 all done, 1 some input could not be read or written (one line each), 2 usage error.
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; every option with a default shows it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


class UsageError(Exception):
    """A mistake in the command line found after parsing (reported as `error: ...`, exit status 2)."""


# --- input and output paths (no heavy imports) ---------------------------------------------------------------


def _collect_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Files named and image files found in folders (recursively, sorted; other files and our own temporary
    `.partial` files are skipped), plus one message per input that gave nothing."""
    files, errors = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and (is_image_file(p) or p.suffix.lower() in VIDEO_EXTENSIONS)
                and not is_partial_file(p)
            )
            if not found:
                errors.append(f"{item}: folder has no image or video files")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            errors.append(f"{item}: no such file or folder")
    return files, errors


def _looks_like_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _output_folder(output: Path, several: bool) -> Path | None:
    """The folder outputs go into, or None when `output` is the output file itself (one input). Raises
    `UsageError` for an `-o` that cannot work; probes no input, so it is cheap to call before loading a model."""
    if output.is_dir():
        return output
    if several:
        if output.exists():
            raise UsageError(
                f"-o {output}: exists and is not a folder; with several inputs -o must be a folder"
            )
        if _looks_like_image_name(output):
            raise UsageError(
                f"-o {output}: looks like an image file name, but several inputs need an output folder "
                f"(e.g. -o {output.with_suffix('')}/)"
            )
        return output
    if _looks_like_image_name(output) or output.suffix.lower() in VIDEO_EXTENSIONS:
        return None
    if output.exists():
        raise UsageError(
            f"-o {output}: exists and is neither a folder nor an image file name ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return output


def plan_outputs(files: list[Path], output: Path, several: bool, factor: int) -> list[Path]:
    """The output path of each input file. Raises `UsageError` for an `-o` that cannot work.

    `several` is True when more than one input was named or a folder was named: then `output` must be a folder
    (an existing non-folder, or a new name ending in an image extension, is refused instead of guessed at).
    """
    folder = _output_folder(output, several)
    if folder is None:
        return [output]
    from .batch import output_suffix  # .mp4 for a video (probed by content), .png for an image

    names = [f"{f.stem}_x{factor}{output_suffix(f)}" for f in files]
    # Two inputs with the same stem in different folders must not overwrite each other's output.
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        stem, suffix = os.path.splitext(name)
        unique.append(name if count == 0 else f"{stem}_{count}{suffix}")
    return [folder / n for n in unique]


# --- the upscale command ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _library_output(quiet: bool) -> Iterator[None]:
    """No weight-loading bars from transformers / huggingface_hub and, with -q, nothing but errors; the
    libraries' settings are restored afterwards (main() may run inside a longer-lived process)."""
    import huggingface_hub.utils
    import transformers.utils.logging as transformers_logging

    bars = transformers_logging.is_progress_bar_enabled()
    hub_bars = not huggingface_hub.utils.are_progress_bars_disabled()
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            if quiet:
                transformers_logging.set_verbosity_error()
                warnings.simplefilter("ignore")
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
        if hub_bars:
            huggingface_hub.utils.enable_progress_bars()


class Reporter:
    """Messages of a command, printed above any progress bar (`tqdm.write`): information on stdout and
    warnings on stderr (both silent with -q), errors on stderr always."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def write(self, message: str, file=sys.stderr) -> None:
        from tqdm.auto import tqdm

        tqdm.write(message, file=file)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.write(message, sys.stdout)

    def warning(self, message: str) -> None:
        if not self.quiet:
            self.write(f"warning: {message}", sys.stderr)

    def error(self, message: str) -> None:
        self.write(f"error: {message}", sys.stderr)


def cmd_upscale(args: argparse.Namespace) -> int:
    report = Reporter(args.quiet)
    files, errors = _collect_inputs(args.inputs)
    for message in errors:
        report.error(message)
    if not files:
        report.error("nothing to upscale")
        return EXIT_FAILURES
    several = len(args.inputs) > 1 or any(Path(i).is_dir() for i in args.inputs)
    output = Path(args.output)
    try:  # usage errors of -o before the model is loaded (and before any input is probed)
        _output_folder(output, several)
    except UsageError as error:
        report.error(str(error))
        return EXIT_USAGE
    with _library_output(args.quiet):
        return _upscale_files(args, files, len(errors), several, output, report)


def _upscale_files(
    args: argparse.Namespace, files: list[Path], failures: int, several: bool, output: Path, report: Reporter
) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .batch import distributed_state, process_device, upscale_files, video_options
    from .pretrained import CheckpointError, resolve_model

    state = distributed_state()  # under `accelerate launch`: this process's rank and device
    device = process_device(args.device, state)
    try:
        model, source = resolve_model(args.model, args.scale, device=device)
    except CheckpointError as error:
        report.error(str(error))
        return EXIT_FAILURES
    report.info(source)
    targets = plan_outputs(files, output, several, model.config.upscale_factor)
    try:
        targets[0].parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        report.error(f"{targets[0].parent}: cannot create the output folder ({error.strerror or error})")
        return EXIT_FAILURES
    # Under `accelerate launch` each process takes its share; --skip-existing leaves complete outputs (resume).
    with logging_redirect_tqdm():  # library log lines print above the progress bar, as the reporter's do
        result = upscale_files(
            files,
            targets,
            model,
            skip_existing=args.skip_existing,
            device=device,
            tile_size=args.tile,
            dtype=args.dtype,
            max_pixels=args.max_pixels or None,
            max_output_pixels=args.max_output_pixels or None,
            video_options=video_options(args),
            progress=not args.quiet,
            reporter=report,
        )
    # This process owns the group: shut gloo/NCCL down before exit (an abort otherwise).
    if state.num_processes > 1:
        state.destroy_process_group()
    failures += len(result.failed)
    if failures:
        if state.is_main_process:
            report.write(f"{failures} input(s) failed, {len(result.written)} written", sys.stderr)
        return EXIT_FAILURES
    return EXIT_OK


def tile_size_type(value: str):
    """argparse type of a tile-size option (`--tile` here, `--tile-size` in scripts/): `inference.parse_tile_size`,
    whose ValueError becomes a usage error."""
    from .inference import parse_tile_size  # imported only when the option is given: --help stays light

    try:
        return parse_tile_size(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes 'auto', 0 (whole image) or a size >= 8 in input pixels, got {value!r}"
        ) from None


def _pixel_count(value: str) -> int:
    try:
        number = int(value.replace("_", "").replace(",", ""))
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"takes a number of pixels (0 = no limit), got {value!r}")
    return number


def add_upscale_parser(subparsers) -> None:
    extensions = ", ".join(IMAGE_EXTENSIONS)
    up = subparsers.add_parser(
        "upscale",
        help="super-resolve image files or folders",
        description="Super-resolve images with an ESPCN model.",
        epilog=UPSCALE_EXAMPLES.format(extensions=extensions),
        formatter_class=_HelpFormatter,
    )
    up.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files and/or folders (searched recursively)"
    )
    up.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="output image file (one input) or folder"
    )
    up.add_argument(
        "--model",
        default=None,
        help="a folder written by save_pretrained or a Hub repo id (default: the published model of --scale, "
        "or its packaged copy offline)",
    )
    up.add_argument(
        "--scale",
        type=int,
        choices=(2, 3, 4),
        default=None,
        help="upscale factor: picks the model without --model (then 3 if not given); with --model it must match",
    )
    up.add_argument(
        "--tile",
        type=tile_size_type,
        default="auto",
        help="tile size in input pixels; 'auto' = whole frames on a GPU when they fit, 256 on CPU; 0 = none "
        "(tiled output equals untiled)",
    )
    up.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu, or where the model is)"
    )
    up.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="compute dtype (default: the model's, float32, exact); bfloat16 is faster on GPUs and AMX CPUs",
    )
    up.add_argument(
        "--max-pixels",
        type=_pixel_count,
        default=DEFAULT_MAX_PIXELS,
        help="refuse larger inputs (checked before decoding); 0 = no limit",
    )
    up.add_argument(
        "--max-output-pixels",
        type=_pixel_count,
        default=DEFAULT_MAX_OUTPUT_PIXELS,
        help="refuse inputs whose output would be larger (the default keeps memory under 2 GB); 0 = no limit",
    )
    up.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    add_batch_arguments(up)  # --skip-existing, and --crf/--codec/--pix-fmt/--batch-size for videos
    up.set_defaults(func=cmd_upscale)


# One entry per sub-command, in the order `--help` lists them.
COMMANDS = (add_upscale_parser, add_export_parser)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="espcn-hf",
        description="ESPCN super-resolution (Shi et al. 2016) on transformers.",
        epilog="Run 'espcn-hf COMMAND --help' for the options and examples of a command.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in COMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "device", None) and args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda requested but CUDA is not available", file=sys.stderr)
            return EXIT_USAGE
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: no partial file was left at any output path", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
