"""What a training run leaves on disk and reads back: the training state (`step_N` checkpoints of
`accelerator.save_state`, with our own atomic naming and rotation), the saved model folders (`best/`, `final/`),
the one-run-per-folder lock, and weights copied from another model (`init_from_pretrained`).

A checkpoint is trusted only when every part of it loads and holds finite numbers: `resume_from("latest")` falls
back past a checkpoint with a truncated file, a damaged random-state file (which accelerate would only log) or
non-finite weights, optimizer or EMA state, saying so in one line each.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..fileio import recover_dir, replace_dir

CHECKPOINT_PREFIX = "step_"
TMP_SUFFIX = ".tmp"


class CheckpointSaveError(RuntimeError):
    """A checkpoint or model folder could not be written (full disk, read-only folder, ...); nothing was replaced."""


class DamagedCheckpointError(RuntimeError):
    """A checkpoint that loads but cannot be trusted (non-finite values, an unreadable random-state file)."""


@dataclass
class TrainState:
    """Everything about the run's position that `save_state` does not already cover.

    DataLoader path: `batch_in_epoch` counts the batches this process has consumed in `epoch`; resuming skips
    that many with `accelerator.skip_first_batches`. Device path: `data_step` is the index of the next batch
    of the `DevicePatchSampler` (a pure function of seed and index). `seconds` is training wall-clock time
    summed over every start of the run (the first and each resume).
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    data_step: int = 0
    seconds: float = 0.0
    commands: list = field(default_factory=list)  # the command line of each invocation (first run, resumes)
    best_score: float = -math.inf
    best_step: int = -1
    last_eval: dict = field(default_factory=dict)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


# ------------------------------------------------------------------------------------------- checkpoints
def _checkpoint_step(path: Path) -> int | None:
    name = path.name
    if not name.startswith(CHECKPOINT_PREFIX) or not path.is_dir():
        return None
    number = name[len(CHECKPOINT_PREFIX) :]
    return int(number) if number.isdigit() else None  # step_N.tmp / step_N.old are never complete


def list_checkpoints(checkpoint_dir: str | os.PathLike) -> list[Path]:
    """Complete `step_N` folders, oldest first (files with such names are not checkpoints)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = [(step, p) for p in root.iterdir() if (step := _checkpoint_step(p)) is not None]
    return [p for _, p in sorted(found)]


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(checkpoint_dir)
    return found[-1] if found else None


def recover_folders(output_dir: str | os.PathLike) -> list[Path]:
    """Folders of `output_dir` (best/, final/, checkpoints/step_N) left half-swapped by a kill between the two
    renames of `fileio.replace_dir`, put back; returns them."""
    root = Path(output_dir)
    candidates = [root / "best", root / "final"]
    if (root / "checkpoints").is_dir():
        candidates += [p.with_name(p.name[: -len(".old")]) for p in (root / "checkpoints").glob("*.old")]
    return [path for path in candidates if recover_dir(path)]


def _save_error(what: str, error: BaseException, folder: Path) -> CheckpointSaveError:
    """One line for a failed save; a full disk says so (torch's zip writer reports it as 'unexpected pos')."""
    full = isinstance(error, OSError) and error.errno == errno.ENOSPC
    if not full:
        with contextlib.suppress(OSError):
            full = shutil.disk_usage(folder).free < 64 * 1024 * 1024
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    if full:
        return CheckpointSaveError(f"no space left on device while saving {what} in {folder} ({reason})")
    return CheckpointSaveError(f"cannot save {what} in {folder}: {reason}")


def save_checkpoint(
    accelerator, checkpoint_dir: str | os.PathLike, step: int, total_limit: int | None, log=print
):
    """`accelerator.save_state` into `checkpoint_dir/step_N`, atomically, keeping the newest `total_limit`.

    Every process writes (RNG states are per process) into `step_N.tmp`; the main process then renames it, so a
    crash mid-write leaves the previous checkpoints intact and no half-written `step_N`. A failed write (full disk)
    raises `CheckpointSaveError` in one line, with the temporary folder removed and nothing else changed.
    """
    root = Path(checkpoint_dir)
    final = root / f"{CHECKPOINT_PREFIX}{step}"
    tmp = root / f"{CHECKPOINT_PREFIX}{step}{TMP_SUFFIX}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{CHECKPOINT_PREFIX}*{TMP_SUFFIX}"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists() and not final.is_dir():
            log(f"{final} is a file, not a checkpoint; it is replaced by checkpoint step {step}")
            final.unlink()
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
    except (OSError, RuntimeError) as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _save_error(f"checkpoint {final.name}", error, root) from None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_dir(tmp, final)
        if total_limit is not None and total_limit > 0:
            for old in list_checkpoints(root)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _non_finite(named_tensors) -> str | None:
    for name, tensor in named_tensors:
        if torch.is_tensor(tensor) and tensor.dtype.is_floating_point and not torch.isfinite(tensor).all():
            return name
    return None


def check_finite(model: nn.Module, optimizer=None, ema=None) -> None:
    """Raise `DamagedCheckpointError` naming the first non-finite weight, optimizer state or EMA weight."""
    bad = _non_finite(model.state_dict().items())
    if bad is None and optimizer is not None:
        state = optimizer.state_dict()["state"]
        bad = _non_finite(
            (f"optimizer {key}.{k}", v) for key, entry in state.items() for k, v in entry.items()
        )
    if bad is None and ema is not None:
        bad = _non_finite((f"EMA {name}", value) for name, value in ema.shadow.items())
    if bad is not None:
        raise DamagedCheckpointError(f"{bad} holds NaN or infinite values")


def _check_random_states(path: Path, process_index: int) -> None:
    """accelerate only logs an unreadable random-state file and goes on: read it first."""
    states = path / f"random_states_{process_index}.pkl"
    if states.exists():
        try:
            torch.load(states, weights_only=False)
        except Exception as error:  # noqa: BLE001 -- a torn pickle raises EOFError, UnpicklingError, ...
            raise DamagedCheckpointError(f"{states.name} cannot be read ({type(error).__name__})") from None


def resume_from(accelerator, checkpoint, checkpoint_dir, *, model=None, optimizer=None, ema=None, log=print):
    """Load a training state: `checkpoint` is "latest" or a `step_N` folder. Returns the folder loaded, or None
    when "latest" finds no checkpoint (a fresh start, with a notice).

    "latest" tries the complete `step_N` folders newest first and falls back past any that does not load or
    cannot be trusted (truncated weights, a torn optimizer or random-state file, non-finite weights, optimizer
    or EMA state of the given `model`, `optimizer`, `ema`), saying in one line which one was skipped and why,
    and which one was loaded. An explicit folder that does not load raises `ValueError` naming it.
    """
    if str(checkpoint) != "latest":
        path = Path(checkpoint)
        if not path.is_dir():
            raise ValueError(f"--resume_from_checkpoint {checkpoint}: no such checkpoint folder")
        candidates = [path]
    else:
        candidates = list_checkpoints(checkpoint_dir)[::-1]
        if not candidates:
            log(f"--resume_from_checkpoint latest: no checkpoint in {checkpoint_dir}, starting fresh")
            return None
    failures = []
    for path in candidates:
        try:
            _check_random_states(path, accelerator.process_index)
            accelerator.load_state(str(path))
            if model is not None:
                check_finite(model, optimizer, ema)
        except Exception as error:  # noqa: BLE001 -- any damage in any file: try the previous checkpoint
            text = str(error).strip()
            reason = f"{type(error).__name__}: {text.splitlines()[0][:160] if text else ''}"
            failures.append(f"{path} ({reason})")
            if path is not candidates[-1]:
                log(f"checkpoint {path} cannot be used ({reason}); falling back to the previous one")
            continue
        if failures:
            log(f"resuming from {path}, the newest checkpoint that loads")
        return path
    raise ValueError("no checkpoint could be loaded: " + "; ".join(failures))


class RunLock:
    """`output_dir/.lock`, an OS file lock (`filelock`) held by the run writing there: a second run on the same
    folder (a resume started while the first one still runs) is refused instead of interleaving checkpoints.
    The OS drops the lock when its process dies, so a lock left by a SIGKILLed run is simply taken."""

    def __init__(self, output_dir: str | os.PathLike):
        from filelock import FileLock

        self.path = Path(output_dir) / ".lock"
        self._lock = FileLock(str(self.path), timeout=0)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def acquire(self) -> RunLock:
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise RuntimeError(
                f"{self.path.parent} is in use by a running training process; stop it first (kill -TERM stops "
                "it cleanly, saving its state) or use another --output_dir"
            ) from None
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)


# ------------------------------------------------------------------------------------------- model folders
def format_training_record(record: Mapping) -> str:
    """JSON with one top-level key per line (lists and dicts inline): short enough to quote in a model card."""
    lines = [f"  {json.dumps(str(key))}: {json.dumps(value)}" for key, value in record.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def save_model_folder(
    model,
    folder: str | os.PathLike,
    upscale_factor: int,
    extra: Mapping | None = None,
    training_config: Mapping | None = None,
) -> Path:
    """`save_pretrained` (safetensors) + `ESPCNImageProcessor(upscale_factor=r).save_pretrained`, atomically.

    `extra` (metrics, step, ...) goes to `eval_results.json` and `training_config` (the run's hyper-parameters)
    to `training_config.json` next to the weights; the model card quotes the latter. Main process only. A failed
    write raises `CheckpointSaveError` in one line and leaves the previous folder as it was.
    """
    from ..cli import library_output
    from ..image_processing_espcn import ESPCNImageProcessor

    folder = Path(folder)
    tmp = folder.with_name(folder.name + TMP_SUFFIX)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with library_output():  # a save every evaluation: no "Writing model shards" bar in the training log
            model.save_pretrained(tmp, safe_serialization=True)
        ESPCNImageProcessor(upscale_factor=upscale_factor).save_pretrained(tmp)
        if extra is not None:
            (tmp / "eval_results.json").write_text(json.dumps(dict(extra), indent=2, sort_keys=True) + "\n")
        if training_config is not None:
            (tmp / "training_config.json").write_text(format_training_record(training_config))
        return replace_dir(tmp, folder)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _save_error(f"{folder.name}/", error, folder.parent) from None


# ------------------------------------------------------------------------------------------- initialisation
def _last_layer_prefix(model: nn.Module) -> str:
    """The parameter-name prefix of the last layer of `model.body` (the output convolution, plain or a
    re-parameterised block; no activation follows it)."""
    return f"body.{len(model.body) - 1}."


def parameter_groups(model: nn.Module, output_lr_scale: float = 1.0) -> list[dict]:
    """Optimizer parameter groups: every parameter, with the last convolution's learning rate scaled by
    `output_lr_scale` (a `lr_scale` key that the trainer multiplies into the group's learning rate)."""
    last = _last_layer_prefix(model)
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if not n.startswith(last)], "lr_scale": 1.0},
        {"params": [p for n, p in named if n.startswith(last)], "lr_scale": output_lr_scale},
    ]
    return [g for g in groups if g["params"]]


def init_from_pretrained(model: nn.Module, source: str | os.PathLike) -> dict:
    """Copy weights from another ESPCN checkpoint into `model`; returns {"copied": [...], "skipped": [...]}.

    `source` is a folder holding `model.safetensors` (a `save_pretrained` folder such as `best`, or a
    `checkpoints/step_N` folder). Every weight except the last convolution's must exist with the same shape
    (same feature layers); the last convolution (width r*r*C) is copied only when its shape matches, i.e. when
    the upscale factor is the same, and is otherwise left at its fresh initialisation.
    """
    from safetensors.torch import load_file

    path = Path(source)
    weights = path / "model.safetensors" if path.is_dir() else path
    if not weights.is_file():
        raise ValueError(f"--init_from {source}: no model.safetensors there")
    loaded = load_file(str(weights))
    last = _last_layer_prefix(model)
    state = model.state_dict()
    copied, skipped = [], []
    with torch.no_grad():
        for name, value in state.items():
            other = loaded.get(name)
            if other is not None and other.shape == value.shape:
                value.copy_(other.to(value.dtype))
                copied.append(name)
            elif name.startswith(last):
                skipped.append(name)
            else:
                found = "missing" if other is None else f"shape {tuple(other.shape)}"
                raise ValueError(
                    f"--init_from {source}: weight {name} {tuple(value.shape)} does not fit ({found}); the "
                    f"feature layers (hidden_channels, kernel_sizes, num_channels) must be the same"
                )
    return {"copied": copied, "skipped": skipped}


__all__ = [
    "CHECKPOINT_PREFIX",
    "CheckpointSaveError",
    "DamagedCheckpointError",
    "RunLock",
    "TrainState",
    "check_finite",
    "format_training_record",
    "init_from_pretrained",
    "latest_checkpoint",
    "list_checkpoints",
    "parameter_groups",
    "recover_folders",
    "resume_from",
    "save_checkpoint",
    "save_model_folder",
]
