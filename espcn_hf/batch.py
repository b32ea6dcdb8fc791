"""The `espcn-hf upscale` job end to end: its options (`add_parser`), the files it takes (`find_inputs`), their
output names (`plan_outputs`), the device of each process (`parse_device`, `process_device`), the loop
(`upscale_files`) and the run (`run`), on one process or many (CPUs, GPUs, nodes) with accelerate.

    espcn-hf upscale BIG_FOLDER -o OUT                                                  # one process
    accelerate launch -m espcn_hf.cli upscale BIG_FOLDER -o OUT                         # one process per GPU
    accelerate launch --multi_gpu --num_processes 2 -m espcn_hf.cli upscale BIG_FOLDER -o OUT   # 2 CPU processes

`upscale_files(files, outputs, model)` is the one batch loop, for the library and the command. Every process lists
the pairs whose output is missing, all wait at a barrier (so no process sees another's fresh outputs while
listing), then `PartialState().split_between_processes` hands each process a contiguous share of that list; each
process runs its share on its own device (`PartialState().device`: its GPU, or the CPU). Images are written with
`image_io.save_image` (atomic) and videos with `upscale_video` (also atomic), so a file at its final path is always
complete: re-running the same command with `skip_existing=True` (`--skip-existing`) skips those, so a killed job
resumes where it stopped. Any failure of one file (unreadable, damaged, refused, a failed write) is that file's
one error line; the others go on. The outcome of all processes is gathered, so every process returns the totals.
A script of your own that calls `upscale_files` under `accelerate launch` ends with
`PartialState().destroy_process_group()`, as the command does: a process that exits with the gloo group still up
can abort in its teardown (SIGABRT, "terminate called without an active exception") after its work is done.

Output names are a function of each input's path relative to what was named on the command line: a file named
directly gives `OUT/<stem>_x<r>.png`, a file found in a named folder `OUT/<its sub-folders>/<stem>_x<r>.png` (the
sub-folders mirrored, as rsync does), `.mp4` for a video. Two inputs that would get the same output name are a
usage error, so `--skip-existing` is always right. Files under the output folder are never taken as inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .fileio import is_partial_file
from .image_io import DEFAULT_MAX_OUTPUT_PIXELS, DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, is_image_file
from .video import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CODEC,
    DEFAULT_CRF,
    DEFAULT_PIX_FMT,
    ENCODER_PRESETS,
    VIDEO_EXTENSIONS,
    is_video,
    upscale_video,
)

if TYPE_CHECKING:
    import torch

    from .cli import Reporter
    from .modeling_espcn import ESPCNForImageSuperResolution

UPSCALE_EXAMPLES = """\
examples:
  espcn-hf upscale photo.jpg -o photo_x3.png                  # packaged x3 model (or the Hub's, when online)
  espcn-hf upscale photos/ extra.png -o out/ --scale 4        # a folder and a file into a folder
  espcn-hf upscale in.png -o big.png --model espcn-hf/espcn-x2 --tile 0 --device cuda
  espcn-hf upscale scans/ -o out/ --max-pixels 0              # no input size limit
  espcn-hf upscale clip.mp4 -o clip_x3.mp4 --crf 18           # a video (any format FFmpeg reads)
  espcn-hf upscale clip.mp4 -o clip_x3.mp4 --preset veryfast  # libx264 2.6x faster, same crf
  accelerate launch -m espcn_hf.cli upscale big/ -o out/ --skip-existing   # one process per GPU; resumable
  accelerate launch --multi_gpu --num_processes 2 -m espcn_hf.cli upscale big/ -o out/   # 2 processes on CPUs

With one input file, OUT is a file if its name ends in an image extension Pillow can write or a video extension,
otherwise a folder (an existing folder is always used as one): {extensions}. With several inputs OUT must be a
folder, created if needed: a file named directly gives OUT/<stem>_x<scale>.png, one found in a folder
OUT/<its sub-folders>/<stem>_x<scale>.png (.mp4 for videos); two inputs that would share an output name are
refused. JPEG/BMP outputs drop alpha (and 16-bit depth): use PNG or TIFF to keep them.

Several processes: each takes a share of the files and shows its own progress bar. Killing the launcher stops the
workers within a second (outputs are atomic: re-run with --skip-existing to resume).
Exit status: 0 all done, 1 some input could not be read or written (one line each), 2 usage error.
"""


# ------------------------------------------------------------------------------------------------- results
@dataclass
class BatchResult:
    """What happened to each file, over all processes."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # inputs whose output was already there (skip_existing)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, one-line reason)
    num_processes: int = 1
    shares: list[int] = field(default_factory=list)  # files each process was given, by process index
    done: list[tuple[int, int]] = field(default_factory=list)  # (written, failed) by process index

    @classmethod
    def gathered(cls, local: BatchResult) -> BatchResult:
        """The result of every process (each calls this with its own; all get the same totals)."""
        from accelerate.utils import gather_object

        parts = gather_object([local])
        return cls(
            written=[w for r in parts for w in r.written],
            skipped=[s for r in parts for s in r.skipped],
            failed=[f for r in parts for f in r.failed],
            num_processes=local.num_processes,
            shares=[n for r in parts for n in r.shares],
            done=[d for r in parts for d in r.done],
        )

    def summary(self) -> str:
        """One line: totals, and with several processes what each did."""
        line = f"{len(self.written)} written, {len(self.skipped)} already there (skipped), {len(self.failed)} failed"
        if self.num_processes < 2:
            return line
        each = "; ".join(
            f"process {i}: {written} written, {failed} failed of {share}"
            for i, (share, (written, failed)) in enumerate(zip(self.shares, self.done, strict=True))
        )
        return f"{line} ({self.num_processes} processes: {each})"


# ------------------------------------------------------------------------------------------------- devices
def cpu_processes() -> bool:
    """Whether this is one of several processes on a machine without CUDA (`accelerate launch --multi_gpu` on
    CPUs): accelerate picks MULTI_CPU (DDP over gloo) only when told `cpu=True`. The trainer's rule too."""
    import torch

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def distributed_state():
    """accelerate's `PartialState` for this process (MULTI_CPU for several processes without CUDA)."""
    from accelerate import PartialState

    return PartialState(cpu=cpu_processes())


def parse_device(device: str | None) -> str | None:
    """`--device` checked before any work: a name torch knows, on a backend this machine has. Raises
    `cli.UsageError` with one line otherwise."""
    import torch

    from .cli import UsageError

    if device is None:
        return None
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise UsageError(
            f"--device {device!r}: not a device torch knows (cpu, cuda, cuda:1, mps, xpu, ...)"
        ) from None
    backend = getattr(torch, kind, None) if kind != "cpu" else None
    if backend is not None and hasattr(backend, "is_available") and not backend.is_available():
        raise UsageError(f"--device {device}: {kind.upper()} is not available on this machine")
    return device


def process_device(device: str | torch.device | None, state=None) -> str | torch.device | None:
    """The device this process runs on: under `accelerate launch` with several processes, its own
    (`PartialState().device`: one GPU per process) when `device` is None or names only the type ("cuda" alone
    would put every process on cuda:0); otherwise `device` as given."""
    import torch

    state = state or distributed_state()
    if state.num_processes > 1 and (
        device is None
        or (torch.device(device).type == state.device.type and torch.device(device).index is None)
    ):
        return state.device
    return device


# -------------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Input:
    """A file to upscale and its path relative to what was named (the output mirrors it)."""

    path: Path
    relative: Path


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and (path == folder or folder in path.parents)


def _scan_folder(folder: Path, exclude: Path | None, errors: list[str]) -> list[Input]:
    """Image and video files under `folder` (recursively, sorted), following links to folders once each. An
    unreadable sub-folder, a dangling link or a link loop is an error line; `exclude` (the output folder) and our
    own temporary `.partial` files are skipped."""
    found: list[Input] = []
    seen: set[tuple[int, int]] = set()

    def walk(current: Path) -> None:
        try:
            stat = current.stat()
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as error:
            errors.append(
                f"{current}: cannot read this folder ({error.strerror or error}); its files were skipped"
            )
            return
        if (stat.st_dev, stat.st_ino) in seen:
            errors.append(f"{current}: a link back to a folder already scanned (a loop); skipped")
            return
        seen.add((stat.st_dev, stat.st_ino))
        for entry in entries:
            path = Path(entry.path)
            if _inside(path.resolve(), exclude):
                continue
            if entry.is_symlink() and not path.exists():
                errors.append(f"{path}: a link to nothing (dangling); skipped")
            elif entry.is_dir():
                walk(path)
            elif (is_image_file(path) or path.suffix.lower() in VIDEO_EXTENSIONS) and not is_partial_file(
                path
            ):
                found.append(Input(path, path.relative_to(folder)))

    walk(folder)
    return found


def find_inputs(inputs: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None):
    """([Input, ...], [error line, ...]) for files and folders named on a command line.

    Files named directly are taken whatever their extension (they are probed by content); folders are scanned for
    image and video files (`_scan_folder`). Nothing under `exclude` (the output folder) is taken, so outputs
    written into the input folder are never upscaled again.
    """
    exclude = Path(exclude).resolve() if exclude is not None else None
    found: list[Input] = []
    errors: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = _scan_folder(path, exclude, errors)
            if not files:
                errors.append(f"{item}: folder has no image or video files")
            found.extend(files)
        elif path.exists():
            found.append(Input(path, Path(path.name)))
        else:
            errors.append(f"{item}: no such file or folder")
    return found, errors


# ------------------------------------------------------------------------------------------------- outputs
def _pillow_format(suffix: str) -> tuple[str | None, bool]:
    """(Pillow's format for a file extension or None, whether Pillow can write it)."""
    from PIL import Image

    fmt = Image.registered_extensions().get(suffix.lower())
    return fmt, fmt is not None and fmt in Image.SAVE


def output_folder(output: str | os.PathLike, several: bool, single_is_video: bool = False) -> Path | None:
    """The folder outputs go into, or None when `output` is the output file itself (one input). Raises
    `cli.UsageError` for an `-o` that cannot work: several inputs into a file name, an image extension Pillow
    cannot write, a video extension for an image (or an image extension for a video). Probes nothing but `-o`."""
    from .cli import UsageError

    output = Path(output)
    if output.is_dir():
        return output
    suffix = output.suffix.lower()
    fmt, writable = _pillow_format(suffix)
    video_name = (
        suffix in VIDEO_EXTENSIONS and suffix != ".gif"
    )  # .gif: an image (or an animation) either way
    if several:
        if output.exists():
            raise UsageError(
                f"-o {output}: exists and is not a folder; with several inputs -o must be a folder"
            )
        if fmt is not None or video_name:
            raise UsageError(
                f"-o {output}: looks like {'a video' if video_name else 'an image'} file name, but several inputs "
                "need an output folder "
                f"(e.g. -o {output.with_suffix('')}/)"
            )
        return output
    if video_name or (single_is_video and fmt is not None):
        if not single_is_video:
            raise UsageError(
                f"-o {output}: a video file name, but the input is an image (use .png, .tif, ...)"
            )
        if fmt is not None and not video_name:
            raise UsageError(
                f"-o {output}: an image file name, but the input is a video (use .mp4, .mkv, ...)"
            )
        return None
    if fmt is not None:
        if not writable:
            raise UsageError(
                f"-o {output}: Pillow cannot write {suffix} ({fmt}) images; use .png, .tif, .jpg, ..."
            )
        return None
    if output.exists():
        raise UsageError(
            f"-o {output}: exists and is neither a folder nor an image file name ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return output


def plan_outputs(
    inputs: Sequence[Input], output: str | os.PathLike, several: bool, factor: int, videos: Sequence[bool]
) -> list[Path]:
    """The output path of each input (see the module docstring); `cli.UsageError` for an `-o` that cannot work
    or for two inputs that would share an output."""
    from .cli import UsageError

    folder = output_folder(output, several, single_is_video=bool(videos and videos[0]))
    if folder is None:
        return [Path(output)]
    targets = [
        folder / item.relative.parent / f"{item.relative.stem}_x{factor}{'.mp4' if video else '.png'}"
        for item, video in zip(inputs, videos, strict=True)
    ]
    owner: dict[Path, Path] = {}
    for item, target in zip(inputs, targets, strict=True):
        other = owner.setdefault(target, item.path)
        if other != item.path:
            raise UsageError(
                f"{other} and {item.path} would both be written to {target}; name their folders instead of the "
                "files (sub-folders are kept), or upscale them in two runs"
            )
    return targets


# ---------------------------------------------------------------------------------------------------- loop
def _identity(path) -> tuple[int, int] | None:
    """(device, inode) of an existing file, None when there is none: hard links and symlinks compare equal."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _identities(paths) -> dict[tuple[int, int], Path]:
    """(device, inode) -> path of each file that exists: what `os.path.samefile` compares, gathered once so that
    checking an output against every input costs one stat, not one per input."""
    found: dict[tuple[int, int], Path] = {}
    for path in paths:
        identity = _identity(path)
        if identity is not None:
            found.setdefault(identity, Path(path))
    return found


def share_of_work(
    pairs: Sequence[tuple], *, skip_existing: bool = False, state=None
) -> tuple[list[tuple], list[str]]:
    """This process's share of the (input, output, ...) tuples to do, and the inputs skipped because their output
    is complete (with `skip_existing`; all of them, on every process).

    An output that is one of the inputs (same file, also through a link) stays pending, so the caller refuses it
    instead of calling it complete. Every process lists the pending pairs, all wait at a barrier (so no process
    sees another's fresh outputs while listing), then `split_between_processes` gives each a contiguous share.
    One process: all pending pairs.
    """
    state = state or distributed_state()
    inputs = _identities(pair[0] for pair in pairs)

    def complete(
        output,
    ) -> bool:  # an output that is one of the inputs is never "complete": callers refuse it
        identity = _identity(output)
        return skip_existing and identity is not None and identity not in inputs

    pending = [pair for pair in pairs if not complete(pair[1])]
    skipped = [str(pair[0]) for pair in pairs if complete(pair[1])]
    state.wait_for_everyone()
    with state.split_between_processes(pending) as share:
        return list(share), skipped


def _named(message: str, path) -> str:
    """`message` as a line that starts with `path` (library messages usually name the file already)."""
    return message if message.startswith(str(path)) else f"{path}: {message}"


@contextlib.contextmanager
def _warnings_to(reporter: Reporter | None, path):
    """Warnings raised in the block become the reporter's `warning` lines naming `path` (the `warnings` module
    prints them as usual without a reporter)."""
    if reporter is None:
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for warning in caught:
                reporter.warning(_named(str(warning.message), path))


def _one_line(error: BaseException, path) -> str:
    """An exception as one line that starts with `path` (load and video errors usually name it already); an
    unexpected exception also names its type."""
    message = (str(error).strip().splitlines() or [""])[0]
    if not isinstance(error, (ValueError, OSError)) or not message:
        message = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return _named(message, path)


def upscale_files(
    files: Sequence[str | os.PathLike],
    outputs: Sequence[str | os.PathLike],
    model: str | os.PathLike | ESPCNForImageSuperResolution,
    *,
    skip_existing: bool = False,
    device: str | torch.device | None = None,
    tile_size: int | str | None = "auto",
    dtype: torch.dtype | str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
    video_options: dict | None = None,
    videos: Sequence[bool] | None = None,
    progress: bool = True,
    reporter: Reporter | None = None,
) -> BatchResult:
    """Upscale `files[i]` into `outputs[i]` (images or videos, told apart by content), split across processes.

    Args:
        files, outputs: inputs and their output paths, the same length, in the same order on every process.
        model: an `ESPCNForImageSuperResolution`, a `save_pretrained` folder or a Hub repo id.
        skip_existing: leave outputs that exist as they are (how a killed job resumes: atomic writes guarantee
            that a file at its final path is complete); default: write every output.
        device: where to run; default: this process's accelerate device (its GPU under `accelerate launch` on
            GPUs), else the model's.
        tile_size, dtype, max_pixels, max_output_pixels: passed to `upscale` for images.
        video_options: keyword arguments for `upscale_video` (crf, codec, pix_fmt, batch_size, preset).
        videos: whether each file is a video (`is_video`), when the caller has probed them already.
        progress: a tqdm bar per process (labelled with its rank when there are several).
        reporter: a `cli.Reporter`: one line per failed file (`error`), per warning raised while upscaling an
            image (`warning`, instead of the `warnings` module) and per video or lone image written (`info`), as
            they happen. `BatchResult.failed` holds the same error lines.

    Never raises for one bad file: whatever goes wrong with one input (unreadable, damaged metadata, an output
    that is one of the inputs, a failed write, ...) is recorded in `failed` and the other files go on.
    """
    from tqdm.auto import tqdm

    from .inference import placed_model

    if len(files) != len(outputs) or (videos is not None and len(videos) != len(files)):
        raise ValueError(f"{len(files)} inputs but {len(outputs)} output paths")
    state = distributed_state()
    device = process_device(device, state)
    model = placed_model(model, device)
    videos = list(videos) if videos is not None else [None] * len(files)
    tasks = [(Path(f), Path(o), v) for f, o, v in zip(files, outputs, videos, strict=True)]
    share, skipped = share_of_work(tasks, skip_existing=skip_existing, state=state)
    result = BatchResult(skipped=skipped if state.is_main_process else [], num_processes=state.num_processes)
    if reporter is not None and skipped and state.is_main_process:
        reporter.info(f"{len(skipped)} output(s) already there, left as they are (skip existing)")
    several = state.num_processes > 1
    label = f"x{model.config.upscale_factor}" + (
        f" [{state.process_index}/{state.num_processes}]" if several else ""
    )
    show = progress and (several or state.is_local_main_process)
    bar = tqdm(
        share, unit="file", desc=label, disable=not show or (len(share) < 2 and not several),
        position=state.process_index if several else None, leave=True,
    )  # fmt: skip
    inputs = _identities(task[0] for task in tasks)
    image_options = {
        "tile_size": tile_size, "dtype": dtype, "max_pixels": max_pixels, "max_output_pixels": max_output_pixels
    }  # fmt: skip
    for source, target, video in bar:
        try:
            written = _upscale_one_file(
                source,
                target,
                video,
                model,
                inputs,
                device,
                image_options,
                video_options or {},
                show,
                reporter,
            )
        except _FileFailed as failure:
            result.failed.append((str(source), str(failure)))
            if reporter is not None:
                reporter.error(str(failure))
            continue
        result.written.append(str(target))
        if reporter is not None and (len(tasks) < 2 or "frames" in written):
            reporter.info(f"{source} -> {target} ({written})")
    bar.close()
    result.shares = [len(share)]
    result.done = [(len(result.written), len(result.failed))]
    return BatchResult.gathered(result) if several else result


class _FileFailed(Exception):
    """What went wrong with one file, as the one line reported for it."""


def _upscale_one_file(
    source: Path, target: Path, video: bool | None, model, inputs, device, image_options, video_options, show,
    reporter,
) -> str:  # fmt: skip
    """Upscale one input into `target`; returns what was written ("WxH" or "WxH, N frames"). Whatever goes
    wrong raises `_FileFailed` with the file's one line (the batch goes on)."""
    from .image_io import save_image
    from .inference import upscale

    same = inputs.get(_identity(target))
    if same is not None:  # share_of_work leaves these pending for us to refuse
        raise _FileFailed(f"{source}: refusing to overwrite the input file {same} (-o {target} is that file)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _FileFailed(
            f"{target.parent}: cannot create the output folder ({error.strerror or error})"
        ) from None
    if video if video is not None else is_video(source):
        try:
            info = upscale_video(source, target, model, device=device, progress=show, **video_options)
        except Exception as error:  # noqa: BLE001 -- one file's failure is that file's line (VideoError, ...)
            raise _FileFailed(_one_line(error, source)) from None
        return f"{info.width}x{info.height}, {info.frames} frames"
    try:
        with _warnings_to(reporter, source):
            image = upscale(str(source), model, device=device, **image_options)
    except Exception as error:  # noqa: BLE001 -- ImageLoadError, damaged EXIF, out of memory, ...
        raise _FileFailed(_one_line(error, source)) from None
    try:
        with _warnings_to(reporter, target):  # what the output format drops (alpha, 16-bit, colours)
            save_image(image, target)
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise _FileFailed(f"{target}: cannot write ({reason}); {source} not saved") from None
    return f"{image.width}x{image.height}"


# ------------------------------------------------------------------------------------------------- command
def add_parser(subparsers) -> None:
    """`espcn-hf upscale` (espcn_hf_cli.COMMANDS)."""
    from espcn_hf_cli import COMMANDS

    from .cli import HelpFormatter, pixel_count, tile_size_type

    up = subparsers.add_parser(
        "upscale",
        help=COMMANDS["upscale"][0],
        description="Super-resolve images and videos with an ESPCN model.",
        epilog=UPSCALE_EXAMPLES.format(extensions=", ".join(IMAGE_EXTENSIONS)),
        formatter_class=HelpFormatter,
    )
    up.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image/video files and/or folders (searched recursively)"
    )
    up.add_argument("-o", "--output", required=True, metavar="OUT", help="output file (one input) or folder")
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
        type=pixel_count,
        default=DEFAULT_MAX_PIXELS,
        help="refuse larger inputs (checked before decoding); 0 = no limit",
    )
    up.add_argument(
        "--max-output-pixels",
        type=pixel_count,
        default=DEFAULT_MAX_OUTPUT_PIXELS,
        help="refuse inputs whose output would be larger (the default keeps memory under 2 GB); 0 = no limit",
    )
    up.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    up.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave outputs that exist as they are: re-run a killed job with it to resume (outputs are written "
        "atomically, so an output at its final path is complete)",
    )
    video = up.add_argument_group("video inputs")
    video.add_argument(
        "--crf", type=int, default=DEFAULT_CRF, help="video quality, lower is better (0 = lossless)"
    )
    video.add_argument("--codec", default=DEFAULT_CODEC, help="FFmpeg video encoder")
    video.add_argument("--pix-fmt", default=DEFAULT_PIX_FMT, help="output pixel format")
    video.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="video frames per forward pass"
    )
    video.add_argument(
        "--preset",
        choices=ENCODER_PRESETS,
        default=None,
        help="libx264/libx265 speed preset (default: the encoder's, medium); faster ones write larger files",
    )
    up.set_defaults(func=run)


def video_options(args: argparse.Namespace) -> dict:
    """`upscale_video` keyword arguments from the parsed options (the size limits apply to every frame)."""
    return {
        "crf": args.crf,
        "codec": args.codec,
        "pix_fmt": args.pix_fmt,
        "batch_size": args.batch_size,
        "preset": args.preset,
        "max_pixels": args.max_pixels or None,
        "max_output_pixels": args.max_output_pixels or None,
    }


def _stop_with_the_launcher(reporter: Reporter) -> None:
    """Under `accelerate launch` each worker runs in its own process session, so killing the launcher does not
    reach it: a daemon thread ends this worker within a second once its parent (the launcher) is gone. Outputs
    are atomic, so nothing half-written is left at an output path."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        reporter.error(
            "the launcher is gone: stopping (outputs written so far are complete; --skip-existing resumes)"
        )
        os._exit(130)

    threading.Thread(target=watch, name="espcn-hf-launcher-watch", daemon=True).start()


def run(args: argparse.Namespace) -> int:
    """`espcn-hf upscale`: 0 all done, 1 some input failed (one line each), 2 usage error (before any work)."""
    state = distributed_state()  # under `accelerate launch`: this process's rank and device
    try:
        return _run(args, state)
    finally:
        if state.num_processes > 1:  # on every path out: a process that exits with the gloo/NCCL group up can
            state.destroy_process_group()  # abort in its teardown (SIGABRT) after its work is done


def _run(args: argparse.Namespace, state) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .cli import EXIT_FAILURES, EXIT_OK, EXIT_USAGE, Reporter, UsageError, library_output
    from .pretrained import CheckpointError, resolve_model

    report = Reporter(args.quiet, main_only=True, is_main=state.is_main_process)
    if state.num_processes > 1:
        _stop_with_the_launcher(report)
    elif "ACCELERATE_MIXED_PRECISION" in os.environ and state.device.type == "cpu":
        report.info(
            "note: accelerate started one process; on CPUs `accelerate launch --multi_gpu --num_processes N` starts N"
        )
    output = Path(args.output)
    try:
        device = process_device(parse_device(args.device), state)
        found, errors = find_inputs(
            args.inputs, exclude=output if output.is_dir() or not output.suffix else None
        )
        several = len(args.inputs) > 1 or any(Path(i).is_dir() for i in args.inputs)
        videos = [is_video(item.path) for item in found]
        if found:  # usage errors of -o before the model is loaded
            output_folder(output, several, single_is_video=videos[0])
    except UsageError as error:
        report.error(str(error))
        return EXIT_USAGE
    for message in errors if state.is_main_process else ():
        report.error(message)
    if not found:
        report.error("nothing to upscale")
        return EXIT_FAILURES
    with library_output(args.quiet):
        try:
            model, source = resolve_model(args.model, None if args.model else args.scale, device=device)
        except CheckpointError as error:
            report.error(str(error))
            return EXIT_FAILURES
        factor = model.config.upscale_factor
        try:
            if args.scale is not None and factor != args.scale:
                raise UsageError(f"--model {args.model} is an x{factor} model, but --scale is {args.scale}")
            targets = plan_outputs(found, output, several, factor, videos)
        except UsageError as error:
            report.error(str(error))
            return EXIT_USAGE
        report.info(source)
        with logging_redirect_tqdm():  # library log lines print above the progress bars, as the reporter's do
            result = upscale_files(
                [item.path for item in found],
                targets,
                model,
                skip_existing=args.skip_existing,
                device=device,
                tile_size=args.tile,
                dtype=args.dtype,
                max_pixels=args.max_pixels or None,
                max_output_pixels=args.max_output_pixels or None,
                video_options=video_options(args),
                videos=videos,
                progress=not args.quiet,
                reporter=report,
            )
    if state.num_processes > 1:
        report.info(result.summary())
    failures = len(errors) + len(result.failed)
    if failures:
        if state.is_main_process:
            report.write(f"{failures} input(s) failed, {len(result.written)} written", sys.stderr)
        return EXIT_FAILURES
    return EXIT_OK


__all__ = [
    "BatchResult",
    "Input",
    "add_parser",
    "cpu_processes",
    "distributed_state",
    "find_inputs",
    "output_folder",
    "parse_device",
    "plan_outputs",
    "process_device",
    "run",
    "share_of_work",
    "upscale_files",
    "video_options",
]
