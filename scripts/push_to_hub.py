"""Publish a checkpoint to the Hugging Face Hub (a thin command line over `espcn_hf.hub`).

    # write exactly the folder that would be uploaded, print its files; no network
    python scripts/push_to_hub.py espcn_hf/weights/espcn-x3 --repo-id espcn-hf/espcn-x3 --dry-run hub/espcn-x3

    # prepare the folder, then create the repo (if needed) and upload it (needs `hf auth login` or HF_TOKEN)
    python scripts/push_to_hub.py espcn_hf/weights/espcn-x3 --repo-id espcn-hf/espcn-x3 [--private] [--revision BRANCH]

The model card (README.md) is rendered from the package's template with the numbers of the results files
`benchmarks/eval_<name>_x<scale>.json` of this repository (or those given with --eval), and the comparison picture
is drawn on a benchmark photo (--comparison-image). `onnx/model_quantized.onnx` (int8) is added where the int8
measurement file `benchmarks/onnx_int8.json` (scripts/benchmark_onnx.py; --int8-results) says these weights lose
at most 0.1 dB on Set5 and Set14 (`espcn_hf.hub.int8_verdict`); it is calibrated on the training images under the
data folder. Re-running the dry run re-renders both. The default model's
card with these defaults is also the repository's `model_card.md` (`default_card`, written by
`python scripts/summarize_results.py --write-readme`).
Exit status: 0 done, 1 the push failed (the message names the ready folder), 2 bad checkpoint or arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import data_dir

from espcn_hf.hub import HubError, prepare_upload_folder, push_checkpoint, render_upload_card

EXIT_OK, EXIT_PUSH_FAILED, EXIT_USAGE = 0, 1, 2
REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
INT8_RESULTS = BENCHMARKS / "onnx_int8.json"
# A Set14 photo where ESPCN's gain over bicubic is plain to see (zebra stripes: about +6 dB on the chosen crop).
COMPARISON_PHOTO = Path("benchmarks") / "Set14" / "zebra.png"  # under the data folder (scripts/common.py)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, help="folder written by save_pretrained")
    parser.add_argument("--repo-id", required=True, help="Hub repository, e.g. espcn-hf/espcn-x3")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="branch to push to (created if needed); default: main")
    parser.add_argument(
        "--eval",
        dest="eval_json",
        action="append",
        type=Path,
        help=f"results file for the card (repeatable); default: {BENCHMARKS}/eval_<name>_x<scale>.json",
    )
    parser.add_argument(
        "--comparison-image",
        type=Path,
        default=None,
        help="HR photo for the card's before/after picture (default: Set14's zebra under the data folder; 'none': no "
        "picture)",
    )
    parser.add_argument(
        "--int8-results",
        type=Path,
        default=INT8_RESULTS,
        help="the int8 measurement file that decides whether onnx/model_quantized.onnx is shipped ('none': never)",
    )
    parser.add_argument(
        "--dry-run",
        metavar="DIR",
        type=Path,
        help="only write the upload folder to DIR (replacing its content) and list it; no network",
    )
    parser.add_argument(
        "--folder", type=Path, help="where to prepare the folder before a push (default: a temp dir)"
    )
    return parser.parse_args(argv)


def default_eval_files(checkpoint: Path) -> list[Path]:
    """`benchmarks/eval_<folder name>_x<scale>.json` when it exists."""
    config = json.loads((checkpoint / "config.json").read_text())
    path = BENCHMARKS / f"eval_{checkpoint.resolve().name}_x{config.get('upscale_factor')}.json"
    return [path] if path.is_file() else []


def default_card(checkpoint: Path, repo_id: str) -> str:
    """The card (README.md) that `--dry-run` writes for `checkpoint` with the default results files and photo.

    Raises:
        FileNotFoundError: the comparison photo is missing (a card without its picture would differ).
    """
    photo = data_dir() / COMPARISON_PHOTO
    if not photo.is_file():
        raise FileNotFoundError(f"{photo}: the card's comparison photo is missing (set ESPCN_HF_DATA_DIR)")
    return render_upload_card(
        checkpoint,
        default_eval_files(checkpoint),
        repo_id=repo_id,
        comparison_image=photo,
        int8_results=INT8_RESULTS if INT8_RESULTS.is_file() else None,
    )


def list_folder(folder: Path) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        print(f"  {path.relative_to(folder)}  ({path.stat().st_size:,} bytes)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.checkpoint / "config.json").is_file():
        print(f"error: {args.checkpoint}: not a checkpoint folder (no config.json)", file=sys.stderr)
        return EXIT_USAGE
    eval_files = args.eval_json if args.eval_json is not None else default_eval_files(args.checkpoint)
    if args.comparison_image is None:
        photo = data_dir() / COMPARISON_PHOTO
    else:
        photo = None if str(args.comparison_image) == "none" else args.comparison_image
    if photo is not None and not photo.is_file():
        print(f"note: no comparison picture, {photo} does not exist", file=sys.stderr)
        photo = None
    int8_results = None if str(args.int8_results) == "none" else args.int8_results
    if int8_results is not None and not int8_results.is_file():
        print(f"note: no int8 graph, {int8_results} does not exist", file=sys.stderr)
        int8_results = None
    try:
        if args.dry_run is not None:
            folder = prepare_upload_folder(
                args.checkpoint,
                args.dry_run,
                eval_json_paths=eval_files,
                repo_id=args.repo_id,
                comparison_image=photo,
                int8_results=int8_results,
            )
            print(f"dry run: the upload folder for {args.repo_id} is {folder}")
            list_folder(folder)
            return EXIT_OK
        url = push_checkpoint(
            args.checkpoint,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            folder=args.folder,
            eval_json_paths=eval_files,
            comparison_image=photo,
            int8_results=int8_results,
        )
    except HubError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_PUSH_FAILED if "folder is ready" in str(error) else EXIT_USAGE
    print(f"pushed {args.checkpoint} to {url}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
