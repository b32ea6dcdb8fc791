"""Batch upscaling of many files, on one process or many (CPUs, GPUs, nodes) with accelerate.

    espcn-hf upscale BIG_FOLDER -o OUT                                   # one process
    accelerate launch -m espcn_hf.cli upscale BIG_FOLDER -o OUT          # every process/GPU/node takes a share
    accelerate launch --multi_gpu --num_processes 2 -m espcn_hf.cli upscale BIG_FOLDER -o OUT   # 2 CPU processes (gloo)

`upscale_files(files, outputs, model)` is the one batch loop, for the library and for `espcn-hf upscale` (which
passes a `reporter` to print each file's line as it happens). Every process lists the pairs whose
output is missing, all wait at a barrier (so no process sees another's fresh outputs while listing), then
`PartialState().split_between_processes` hands each process a contiguous share of that list; each process runs
its share on its own device (`PartialState().device`: its GPU, or the CPU). Images are written with
`image_io.save_image` (atomic) and videos with `upscale_video` (also atomic), so a file at its final path is always
complete: re-running the same command with `skip_existing=True` (`--skip-existing` on the CLI) skips those, so a
killed job resumes where it stopped. A bad input is reported and skipped; the others go on. The outcome of all processes is gathered, so
every process returns the same totals.
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .image_io import DEFAULT_MAX_OUTPUT_PIXELS, DEFAULT_MAX_PIXELS
from .video import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CODEC,
    DEFAULT_CRF,
    DEFAULT_PIX_FMT,
    PRESETS,
    is_video,
    upscale_video,
)

if TYPE_CHECKING:  # torch and the model are imported when files are upscaled: the CLI's parser stays light
    import torch

    from .modeling_espcn import ESPCNForImageSuperResolution


@dataclass
class BatchResult:
    """What happened to each file, over all processes."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # inputs whose output was already there (skip_existing)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, one-line reason)
    num_processes: int = 1
    shares: list[int] = field(default_factory=list)  # files each process was given, by process index

    def summary(self) -> str:
        split = (
            f"{self.num_processes} processes: {'+'.join(map(str, self.shares))}"
            if self.num_processes > 1
            else "1 process"
        )
        return f"{len(self.written)} written, {len(self.skipped)} already there (skipped), {len(self.failed)} failed ({split})"


def distributed_state():
    """accelerate's `PartialState` for this process. Several processes without CUDA (`accelerate launch
    --multi_gpu` on CPUs) get MULTI_CPU over gloo: accelerate only picks it when told `cpu=True`, the rule the
    training script uses too."""
    import torch
    from accelerate import PartialState

    cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return PartialState(cpu=cpu)


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
    pairs: Sequence[tuple[Path, Path]], *, skip_existing: bool = False, state=None
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """This process's share of the (input, output) pairs to do, and the inputs skipped because their output is
    complete (with `skip_existing`; all of them, on every process).

    An output that is one of the inputs (same file, also through a link) stays pending, so the caller refuses it
    instead of calling it complete. Every process lists the pending pairs, all wait at a barrier (so no process
    sees another's fresh outputs while listing), then `split_between_processes` gives each a contiguous share.
    One process: all pending pairs.
    """
    state = state or distributed_state()
    inputs = _identities(f for f, _ in pairs)

    # An output that is one of the inputs is never "complete": callers refuse it.
    def complete(output) -> bool:
        identity = _identity(output)
        return skip_existing and identity is not None and identity not in inputs

    pending = [(f, o) for f, o in pairs if not complete(o)]
    skipped = [str(f) for f, o in pairs if complete(o)]
    state.wait_for_everyone()
    with state.split_between_processes(pending) as share:
        return list(share), skipped


class Reporter(Protocol):
    """Where `upscale_files` sends its lines as they happen (the CLI prints them above its progress bar)."""

    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def error(self, message: str) -> None: ...


def _with_path(message: str, path) -> str:
    """`message` as one line that starts with `path` (load and video errors usually name it already)."""
    message = message.splitlines()[0] if message else ""
    return message if message.startswith(str(path)) else f"{path}: {message}"


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
        progress: a tqdm bar on the local main process (files, and frames of a video).
        reporter: receives one line per failed file (`error`), per warning raised while upscaling an image
            (`warning`, instead of the `warnings` module) and per video or lone image written (`info`), as they
            happen. `BatchResult.failed` holds the same error lines.

    Never raises for one bad file: an unreadable input, an output that is one of the inputs (also through a
    link) or a failed write is recorded in `failed` and the other files go on.
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from .image_io import save_image
    from .inference import placed_model, upscale

    if len(files) != len(outputs):
        raise ValueError(f"{len(files)} inputs but {len(outputs)} output paths")
    state = distributed_state()
    device = process_device(device, state)
    model = placed_model(model, device)

    pairs = [(Path(f), Path(o)) for f, o in zip(files, outputs, strict=True)]
    share, skipped = share_of_work(pairs, skip_existing=skip_existing, state=state)
    result = BatchResult(skipped=skipped if state.is_main_process else [], num_processes=state.num_processes)
    result.shares = [len(share)]
    if reporter is not None and skipped and state.is_main_process:
        reporter.info(f"{len(skipped)} output(s) already there, left as they are (skip existing)")
    show = progress and state.is_local_main_process
    bar = tqdm(share, unit="file", desc=f"x{model.config.upscale_factor}", disable=not show or len(share) < 2)
    inputs = _identities(f for f, _ in pairs)

    def fail(source: Path, message: str) -> None:
        result.failed.append((str(source), message))
        if reporter is not None:
            reporter.error(message)

    for source, target in bar:
        same = inputs.get(_identity(target))
        if same is not None:  # share_of_work leaves these pending for us to refuse
            fail(source, f"{source}: refusing to overwrite the input file {same} (-o {target} is that file)")
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            fail(source, f"{target.parent}: cannot create the output folder ({error.strerror or error})")
            continue
        if is_video(source):
            try:
                info = upscale_video(
                    source, target, model, device=device, progress=show, **(video_options or {})
                )  # fmt: skip
            except (ValueError, RuntimeError, MemoryError, OSError) as error:  # VideoError is a ValueError
                fail(source, _with_path(str(error) or type(error).__name__, source))
                continue
            result.written.append(str(target))
            if reporter is not None:
                reporter.info(f"{source} -> {target} ({info.width}x{info.height}, {info.frames} frames)")
            continue
        try:
            with warnings.catch_warnings(record=reporter is not None) as caught:
                if reporter is not None:
                    warnings.simplefilter("always")
                image = upscale(
                    str(source),
                    model,
                    tile_size=tile_size,
                    device=device,
                    dtype=dtype,
                    max_pixels=max_pixels,
                    max_output_pixels=max_output_pixels,
                )
            for warning in caught or ():
                reporter.warning(f"{source}: {warning.message}")
        except (ValueError, RuntimeError, MemoryError, OSError) as error:  # ImageLoadError is a ValueError
            fail(source, _with_path(str(error) or type(error).__name__, source))
            continue
        try:
            save_image(image, target)
        except (OSError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            fail(source, f"{target}: cannot write ({reason}); {source} not saved")
            continue
        result.written.append(str(target))
        if reporter is not None and len(pairs) < 2:
            reporter.info(f"{source} -> {target} ({image.width}x{image.height})")
    if state.num_processes > 1:
        gathered = gather_object([result])
        result = BatchResult(
            written=[w for r in gathered for w in r.written],
            skipped=[s for r in gathered for s in r.skipped],
            failed=[f for r in gathered for f in r.failed],
            num_processes=state.num_processes,
            shares=[n for r in gathered for n in r.shares],
        )
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `espcn-hf upscale` that this module adds: --skip-existing (resume) and the video encoder
    settings."""
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave outputs that exist as they are: re-run a killed job with it to resume (outputs are written "
        "atomically, so an output at its final path is complete)",
    )
    group = parser.add_argument_group("video inputs")
    group.add_argument(
        "--crf", type=int, default=DEFAULT_CRF, help="video quality, lower is better (0 = lossless)"
    )
    group.add_argument("--codec", default=DEFAULT_CODEC, help="FFmpeg video encoder (default libx264)")
    group.add_argument("--pix-fmt", default=DEFAULT_PIX_FMT, help="output pixel format (default yuv420p)")
    group.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="video frames per forward pass"
    )
    group.add_argument(
        "--preset",
        choices=PRESETS,
        default=None,
        help="libx264/libx265 speed preset (default: the encoder's, medium); faster ones write larger files",
    )


def video_options(args: argparse.Namespace) -> dict:
    """`upscale_video` keyword arguments from options parsed with `add_arguments` (defaults when absent)."""
    return {
        "crf": getattr(args, "crf", DEFAULT_CRF),
        "codec": getattr(args, "codec", DEFAULT_CODEC),
        "pix_fmt": getattr(args, "pix_fmt", DEFAULT_PIX_FMT),
        "batch_size": getattr(args, "batch_size", DEFAULT_BATCH_SIZE),
        "preset": getattr(args, "preset", None),
    }


def output_suffix(source: str | os.PathLike) -> str:
    """Extension of a default output name: `.mp4` (H.264) for a video input, `.png` for an image."""
    return ".mp4" if is_video(source) else ".png"


__all__ = [
    "BatchResult",
    "Reporter",
    "add_arguments",
    "distributed_state",
    "output_suffix",
    "process_device",
    "share_of_work",
    "upscale_files",
    "video_options",
]
