"""`espcn-hf` commands: the parser of each command and what the commands share (exit codes, usage errors, the one
`Reporter`, argument types, quiet library output).

    espcn-hf upscale INPUT... -o OUT [--model PATH_OR_REPO_ID] [--scale 3] [--tile N] [--device cpu|cuda]
    accelerate launch -m espcn_hf.cli upscale BIG_FOLDER -o OUT [--skip-existing]   # files split over processes
    espcn-hf export MODEL -o model.onnx

The console script is the light front door `espcn_hf_cli` (it lists the commands without importing torch); a
command is parsed and run here. Each command belongs to the module that owns its job (`espcn_hf_cli.COMMANDS`:
`espcn_hf.batch` for `upscale`, `espcn_hf.onnx_export` for `export`), which defines `add_parser(subparsers)`
(its options, with `set_defaults(func=run)`) and `run(args) -> exit status`.

Exit status everywhere: 0 done, 1 some input, model or output failed (one `error:` line each), 2 usage error
(reported before any work), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from collections.abc import Iterator

from espcn_hf_cli import COMMANDS, EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, top_parser

__all__ = [
    "EXIT_FAILURES",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "HelpFormatter",
    "Reporter",
    "UsageError",
    "build_parser",
    "library_output",
    "main",
    "missing_extra",
    "pixel_count",
    "tile_size_type",
]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; every option with a default shows it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


class UsageError(Exception):
    """A mistake in the command line found after parsing (reported as `error: ...`, exit status 2)."""


def missing_extra(error: ImportError, extra: str) -> str:
    """One line for an optional dependency that is not installed, naming the extra that brings it."""
    return f"{error.name or 'a dependency'} is not installed: pip install 'espcn-hf[{extra}]'"


def _printable(message: str) -> str:
    """`message` with control characters escaped (a file name holding a newline cannot forge another line)."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)


class Reporter:
    """The messages of a command, one line each, printed above any progress bar (`tqdm.write`): information on
    stdout and warnings on stderr (both silent with -q), errors on stderr always. Control characters in a
    message (from a file name) are escaped, so one message is always one line.

    `main_only`: information is printed by the main process only (several processes under `accelerate launch`
    would say the same thing each); warnings and errors concern one process's own files and always print."""

    def __init__(self, quiet: bool = False, main_only: bool = False, is_main: bool = True) -> None:
        self.quiet = quiet
        self.silent_info = quiet or (main_only and not is_main)

    def write(self, message: str, file=sys.stderr) -> None:
        from tqdm.auto import tqdm

        tqdm.write(_printable(message), file=file)

    def info(self, message: str) -> None:
        if not self.silent_info:
            self.write(message, sys.stdout)

    def warning(self, message: str) -> None:
        if not self.quiet:
            self.write(f"warning: {message}", sys.stderr)

    def error(self, message: str) -> None:
        self.write(f"error: {message}", sys.stderr)


@contextlib.contextmanager
def library_output(quiet: bool = False) -> Iterator[None]:
    """No progress bars from transformers / huggingface_hub (a model of a few hundred kB needs none) and, with
    `quiet`, no warnings or library log lines but errors; the libraries' settings are restored afterwards."""
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


def tile_size_type(value: str):
    """argparse type of a tile-size option (`--tile` here, `--tile-size` in scripts/): `inference.parse_tile_size`,
    whose ValueError becomes a usage error."""
    from .inference import parse_tile_size

    try:
        return parse_tile_size(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes 'auto', 0 (whole image) or a size >= 8 in input pixels, got {value!r}"
        ) from None


def pixel_count(value: str) -> int:
    """argparse type of a pixel limit: a non-negative integer (`_` and `,` allowed as separators; 0 = no limit)."""
    try:
        number = int(value.replace("_", "").replace(",", ""))
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"takes a number of pixels (0 = no limit), got {value!r}")
    return number


def _add_command(subparsers, name: str) -> None:
    importlib.import_module(COMMANDS[name][1]).add_parser(subparsers)


def build_parser() -> argparse.ArgumentParser:
    """The whole `espcn-hf` parser: the front door's, with every command's own parser."""
    return top_parser(_add_command)[0]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: no partial file was left at any output path", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
