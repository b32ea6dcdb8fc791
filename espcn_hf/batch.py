"""Batch upscaling of many files, on one process or many (CPUs, GPUs, nodes) with accelerate.

    espcn-hf upscale BIG_FOLDER -o OUT                                   # one process
    accelerate launch -m espcn_hf.cli upscale BIG_FOLDER -o OUT          # every process/GPU/node takes a share
    accelerate launch --multi_gpu --num_processes 2 -m espcn_hf.cli upscale BIG_FOLDER -o OUT   # 2 CPU processes (gloo)

`upscale_files(files, outputs, model)` is the library's batch loop (`espcn-hf upscale` runs its own loop, in
cli.py, over the same `share_of_work` and `process_device`). Every process lists the pairs whose
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .image_io import DEFAULT_MAX_PIXELS
from .video import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CODEC,
    DEFAULT_CRF,
    DEFAULT_PIX_FMT,
    VideoError,
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
        split = f"{self.num_processes} processes: {'+'.join(map(str, self.shares))}" if self.num_processes > 1 else "1 process"
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
        device is None or (torch.device(device).type == state.device.type and torch.device(device).index is None)
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


def share_of_work(
    pairs: Sequence[tuple[Path, Path]], *, skip_existing: bool = False, state=None
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """This process's share of the (input, output) pairs to do, and the inputs skipped because their output is
    complete (with `skip_existing`; all of them, on every process).

    An output that is one of the inputs (same file, also through a link) stays pending, so the caller refuses it
    instead of calling it complete. Every process lists the pending pairs, all wait at a barrier (so no process sees another's fresh outputs
    while listing), then `split_between_processes` gives each a contiguous share. One process: all pending pairs.
    """
    state = state or distributed_state()
    inputs = {_identity(f) for f, _ in pairs} - {None}

    def complete(output) -> bool:  # an output that is one of the inputs is never "complete": callers refuse it
        identity = _identity(output)
        return skip_existing and identity is not None and identity not in inputs

    pending = [(f, o) for f, o in pairs if not complete(o)]
    skipped = [str(f) for f, o in pairs if complete(o)]
    state.wait_for_everyone()
    with state.split_between_processes(pending) as share:
        return list(share), skipped


def upscale_files(
    files: Sequence[str | os.PathLike],
    outputs: Sequence[str | os.PathLike],
    model: str | os.PathLike | ESPCNForImageSuperResolution,
    *,
    skip_existing: bool = False,
    device: str | torch.device | None = None,
    tile_size: int | str | None = "auto",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    video_options: dict | None = None,
    progress: bool = True,
) -> BatchResult:
    """Upscale `files[i]` into `outputs[i]` (images or videos, told apart by content), split across processes.

    Args:
        files, outputs: inputs and their output paths, the same length, in the same order on every process.
        model: an `ESPCNForImageSuperResolution`, a `save_pretrained` folder or a Hub repo id.
        skip_existing: leave outputs that exist as they are (how a killed job resumes: atomic writes guarantee
            that a file at its final path is complete); default: write every output.
        device: where to run; default: this process's accelerate device (its GPU under `accelerate launch` on
            GPUs), else the model's.
        tile_size, max_pixels: passed to `upscale` for images.
        video_options: keyword arguments for `upscale_video` (crf, codec, pix_fmt, batch_size).
        progress: a tqdm bar on the main process.
    """
    import torch
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from .image_io import ImageLoadError, save_image
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
    bar = tqdm(
        share,
        unit="file",
        desc=f"x{model.config.upscale_factor}",
        disable=not (progress and state.is_main_process and len(share) > 1),
    )
    inputs = {_identity(f) for f, _ in pairs} - {None}
    for source, target in bar:
        if _identity(target) in inputs:  # share_of_work leaves these pending for us to refuse (as the CLI does)
            result.failed.append((str(source), f"refusing to overwrite an input file ({target} is one)"))
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if is_video(source):
                upscale_video(
                    source, target, model, device=device, progress=progress and len(pairs) == 1,
                    **(video_options or {}),
                )  # fmt: skip
            else:
                image = upscale(str(source), model, tile_size=tile_size, device=device, max_pixels=max_pixels)
                save_image(image, target)
        except (ImageLoadError, VideoError, ValueError, OSError, torch.OutOfMemoryError) as error:
            result.failed.append((str(source), str(error).splitlines()[0] if str(error) else type(error).__name__))
            continue
        result.written.append(str(target))
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
    group.add_argument("--crf", type=int, default=DEFAULT_CRF, help="video quality, lower is better (0 = lossless)")
    group.add_argument("--codec", default=DEFAULT_CODEC, help="FFmpeg video encoder (default libx264)")
    group.add_argument("--pix-fmt", default=DEFAULT_PIX_FMT, help="output pixel format (default yuv420p)")
    group.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="video frames per forward pass")


def video_options(args: argparse.Namespace) -> dict:
    """`upscale_video` keyword arguments from options parsed with `add_arguments` (defaults when absent)."""
    return {
        "crf": getattr(args, "crf", DEFAULT_CRF),
        "codec": getattr(args, "codec", DEFAULT_CODEC),
        "pix_fmt": getattr(args, "pix_fmt", DEFAULT_PIX_FMT),
        "batch_size": getattr(args, "batch_size", DEFAULT_BATCH_SIZE),
    }


def output_suffix(source: str | os.PathLike) -> str:
    """Extension of a default output name: `.mp4` (H.264) for a video input, `.png` for an image."""
    return ".mp4" if is_video(source) else ".png"


__all__ = [
    "BatchResult",
    "add_arguments",
    "distributed_state",
    "output_suffix",
    "process_device",
    "share_of_work",
    "upscale_files",
    "video_options",
]
