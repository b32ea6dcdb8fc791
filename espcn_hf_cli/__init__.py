"""The `espcn-hf` command: a light front door that answers `espcn-hf --help` at once.

`import espcn_hf` registers the model with transformers (Auto classes, the pipeline task), which imports torch and
transformers: seconds, not milliseconds. This front door lives outside `espcn_hf` so that the list of commands,
`--version` and a mistyped command need neither; a command itself is parsed and run by `espcn_hf.cli`, with the
options that the module owning the job declares (`COMMANDS`).

    espcn-hf --help                      # the commands (imports nothing heavy)
    espcn-hf upscale photo.jpg -o big.png
    python -m espcn_hf_cli ...           # the same
"""

from __future__ import annotations

import argparse
import sys

# name -> (one-line summary, the module that owns the job: it defines `add_parser(subparsers)` and the run).
COMMANDS = {
    "upscale": ("super-resolve image and video files or folders", "espcn_hf.batch"),
    "export": ("export a model to ONNX (onnxruntime, transformers.js)", "espcn_hf.onnx_export"),
    "web": ("build the in-browser page (onnxruntime-web, a static Space)", "espcn_hf.web"),
}

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DESCRIPTION = "ESPCN super-resolution (Shi et al. 2016) on transformers."
EPILOG = "Run 'espcn-hf COMMAND --help' for the options and examples of a command."


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("espcn-hf")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def top_parser(sub_parser=None) -> tuple[argparse.ArgumentParser, object]:
    """The `espcn-hf` parser and its sub-parser action. `sub_parser(subparsers, name)` adds a command's full
    parser; without it each command is a placeholder that lists its summary (for `--help` and usage errors)."""
    parser = argparse.ArgumentParser(
        prog="espcn-hf",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, _) in COMMANDS.items():
        if sub_parser is None:
            subparsers.add_parser(name, help=summary, add_help=False)
        else:
            sub_parser(subparsers, name)
    return parser, subparsers


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        from espcn_hf.cli import main as run_command  # the package: torch, transformers, registration

        return run_command(argv)
    top_parser()[0].parse_args(argv)  # --help, --version or a usage error: exits here
    return EXIT_USAGE  # not reached: a known command went to espcn_hf.cli above


__all__ = ["COMMANDS", "EXIT_FAILURES", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "main", "top_parser"]
