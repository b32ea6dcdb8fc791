"""Reusable pieces of the training script (`scripts/train.py`): they keep the script short and are unit-tested.

- `load_config` / `apply_overrides`: the hyper-parameter preset files (`configs/*.yaml` or `*.json`).
- `EMA`: an exponential moving average of the weights, checkpointed with `accelerator.register_for_checkpointing`.
- `TrainState`: step, data position (epoch, batch in epoch), training seconds and the best score, checkpointed too.
- `lr_lambda`: warmup + cosine or multistep learning-rate schedule for `torch.optim.lr_scheduler.LambdaLR`.
- `save_checkpoint` / `latest_checkpoint`: atomic `accelerator.save_state` folders `step_N` with rotation.
- `save_model_folder`: atomic `save_pretrained` of a model and its image processor (`best`, `final`).
- `init_from_pretrained`: copy feature-layer weights from another checkpoint (e.g. x3 -> x2 / x4).
- `evaluate`: PSNR / SSIM (Y channel, standard protocol) on whole validation images, gathered over processes.
- `MetricsWriter`: one JSON line per evaluation in `metrics.jsonl` (read by `scripts/plot_training.py`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .degradation import imresize
from .image_processing_espcn import ESPCNImageProcessor
from .inference import upscale_tensor
from .metrics import psnr_per_image, ssim_per_image

CHECKPOINT_PREFIX = "step_"
TMP_SUFFIX = ".tmp"
OLD_SUFFIX = ".old"


# ------------------------------------------------------------------------------------------------ config files
def _fix_yaml_floats(value):
    """PyYAML (YAML 1.1) reads `1e-3` as a string; turn such strings into floats, recursively."""
    if isinstance(value, str):
        try:
            return float(value) if any(c.isdigit() for c in value) and "e" in value.lower() else value
        except ValueError:
            return value
    if isinstance(value, list):
        return [_fix_yaml_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _fix_yaml_floats(v) for k, v in value.items()}
    return value


def load_config(path: str | os.PathLike) -> dict:
    """A preset file (`.yaml`, `.yml` or `.json`) -> a flat dict of hyper-parameters."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = _fix_yaml_floats(yaml.safe_load(text) or {})
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"--config must be a .yaml, .yml or .json file, got {path}")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the config file must hold a mapping of hyper-parameters")
    return data


def parse_override(item: str) -> tuple[str, object]:
    """`"key=value"` -> (key, value), the value parsed as YAML (so `1e-3`, `true`, `[8, 8]` and `null` work)."""
    import yaml

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
    return key.strip(), _fix_yaml_floats(yaml.safe_load(value))


def apply_overrides(config: dict, overrides: Mapping[str, object], known: Iterable[str]) -> dict:
    """Copy of `config` updated by `overrides`; unknown keys raise `ValueError` (typos must not pass silently)."""
    known = set(known)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"Unknown hyper-parameter(s) {unknown}; known: {sorted(known)}")
    return {**config, **overrides}


# ------------------------------------------------------------------------------------------------- EMA
class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

    `decay` is ramped up as `min(decay, (1 + n) / (10 + n))` after `n` updates, so early averages are not stuck
    at the random initialisation. The shadow weights live on the model's device in float32.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self.num_updates = 0
        self.shadow = {
            name: value.detach().float().clone()
            for name, value in model.state_dict().items()
            if value.dtype.is_floating_point
        }

    def to(self, device) -> EMA:
        self.shadow = {name: value.to(device) for name, value in self.shadow.items()}
        return self

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for name, value in model.state_dict().items():
            if name in self.shadow:
                self.shadow[name].lerp_(value.detach().float(), 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into `model` (a separate evaluation copy, not the one being trained)."""
        state = model.state_dict()
        for name, value in self.shadow.items():
            state[name].copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)


# ------------------------------------------------------------------------------------------- train state
@dataclass
class TrainState:
    """Everything about the run's position that `save_state` does not already cover.

    `batch_in_epoch` counts the batches this process has consumed in `epoch`; resuming skips that many with
    `accelerator.skip_first_batches`. `seconds` is training wall-clock time summed over all sessions.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    seconds: float = 0.0
    best_score: float = -math.inf
    best_step: int = -1
    last_eval: dict = field(default_factory=dict)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


# --------------------------------------------------------------------------------------------- schedule
def lr_lambda(
    schedule: str,
    max_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    milestones: Iterable[int] = (),
    gamma: float = 0.1,
) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step `step`, for `LambdaLR`.

    `cosine`: linear warmup over `warmup_steps`, then cosine decay to `min_lr_ratio` at `max_steps`.
    `multistep`: linear warmup, then multiplied by `gamma` at every milestone. `constant`: warmup, then 1.
    """
    if schedule not in ("cosine", "multistep", "constant"):
        raise ValueError(f"lr_schedule must be 'cosine', 'multistep' or 'constant', got {schedule!r}")
    milestones = sorted(int(m) for m in milestones)

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine":
            progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
            return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "multistep":
            return gamma ** sum(step >= m for m in milestones)
        return 1.0

    return factor


class ScheduleClock:
    """The step the schedules follow: the optimizer step, or further along when a time budget runs out first.

    With `time_limit_s` (from `--max_train_minutes`) the learning-rate schedule and the loss phase follow
    `max(step, seconds / time_limit_s * max_steps)`, so a run that is slower than planned (a busy CPU) still
    finishes its cosine decay and its fine-tune phase when the time is up. Without one it is the step itself,
    and a run is exactly reproducible.
    """

    def __init__(self, max_steps: int, time_limit_s: float = math.inf):
        self.max_steps = max_steps
        self.time_limit_s = time_limit_s
        self.step = 0

    def update(self, step: int, seconds: float) -> int:
        by_time = 0
        if math.isfinite(self.time_limit_s) and self.time_limit_s > 0:
            by_time = int(min(1.0, seconds / self.time_limit_s) * self.max_steps)
        self.step = max(step, by_time)
        return self.step

    def wrap(self, factor: Callable[[int], float]) -> Callable[[int], float]:
        return lambda step: factor(max(step, self.step))


def loss_for_step(step: int, max_steps: int, loss: str, finetune_loss: str, finetune_fraction: float) -> str:
    """The loss of phase 1 (`loss`) until the last `finetune_fraction` of the steps, then `finetune_loss`."""
    if finetune_fraction > 0 and step >= round(max_steps * (1.0 - finetune_fraction)):
        return finetune_loss
    return loss


# ------------------------------------------------------------------------------------------- checkpoints
def _checkpoint_step(path: Path) -> int | None:
    name = path.name
    if not name.startswith(CHECKPOINT_PREFIX) or not path.is_dir():
        return None
    number = name[len(CHECKPOINT_PREFIX) :]
    return int(number) if number.isdigit() else None  # step_N.tmp / step_N.old are never complete


def list_checkpoints(checkpoint_dir: str | os.PathLike) -> list[Path]:
    """Complete `step_N` folders, oldest first."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = [(step, p) for p in root.iterdir() if (step := _checkpoint_step(p)) is not None]
    return [p for _, p in sorted(found)]


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(checkpoint_dir)
    return found[-1] if found else None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Rename the complete folder `tmp` to `final`; an existing `final` is replaced only after that succeeds."""
    for root, _, files in os.walk(tmp):
        for name in files:
            with open(os.path.join(root, name), "rb+") as handle:
                os.fsync(handle.fileno())
    old = final.with_name(final.name + OLD_SUFFIX)
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


def save_checkpoint(
    accelerator, checkpoint_dir: str | os.PathLike, step: int, total_limit: int | None
) -> Path:
    """`accelerator.save_state` into `checkpoint_dir/step_N`, atomically, keeping the newest `total_limit`.

    Every process writes (RNG states are per process) into `step_N.tmp`; the main process then renames it, so a
    crash mid-write leaves the previous checkpoints intact and no half-written `step_N`.
    """
    root = Path(checkpoint_dir)
    final = root / f"{CHECKPOINT_PREFIX}{step}"
    tmp = root / f"{CHECKPOINT_PREFIX}{step}{TMP_SUFFIX}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{CHECKPOINT_PREFIX}*{TMP_SUFFIX}"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _swap_into_place(tmp, final)
        if total_limit is not None and total_limit > 0:
            for old in list_checkpoints(root)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


class RunLock:
    """`output_dir/.lock` holding the PID of the run writing there: a second run on the same folder (a resume
    started while the first one still runs) is refused instead of interleaving checkpoints. A lock left by a
    dead process (SIGKILL) is taken over."""

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / ".lock"
        self.held = False

    def acquire(self) -> RunLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise RuntimeError(
                        f"{self.path.parent} is in use by a running training process (pid {pid}); stop it first "
                        f"(kill -TERM {pid} stops it cleanly) or use another --output_dir"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise RuntimeError(f"could not take {self.path}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def save_model_folder(
    model,
    folder: str | os.PathLike,
    upscale_factor: int,
    extra: Mapping | None = None,
    training_config: Mapping | None = None,
) -> Path:
    """`save_pretrained` (safetensors) + `ESPCNImageProcessor(upscale_factor=r).save_pretrained`, atomically.

    `extra` (metrics, step, ...) goes to `eval_results.json` and `training_config` (the run's hyper-parameters)
    to `training_config.json` next to the weights; the model card quotes the latter. Main process only.
    """
    folder = Path(folder)
    tmp = folder.with_name(folder.name + TMP_SUFFIX)
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    ESPCNImageProcessor(upscale_factor=upscale_factor).save_pretrained(tmp)
    if extra is not None:
        (tmp / "eval_results.json").write_text(json.dumps(dict(extra), indent=2, sort_keys=True) + "\n")
    if training_config is not None:
        (tmp / "training_config.json").write_text(format_training_record(training_config))
    _swap_into_place(tmp, folder)
    return folder


def format_training_record(record: Mapping) -> str:
    """JSON with one top-level key per line (lists and dicts inline): short enough to quote in a model card."""
    lines = [f"  {json.dumps(str(key))}: {json.dumps(value)}" for key, value in record.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _last_conv_prefix(model: nn.Module) -> str:
    convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    return convs[-1] + "."


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
    last = _last_conv_prefix(model)
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


# -------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: nn.Module, dataloaders: Mapping[str, Iterable], accelerator, scale: int, with_ssim: bool = True
) -> dict[str, float]:
    """Mean PSNR / SSIM (Y channel, `scale` border, uint8 levels) of `model` on each validation set.

    The dataloaders are prepared by accelerate (batch size 1, whole images); each process scores its shard and
    `gather_for_metrics` collects the per-image numbers (dropping the duplicates added to even out the shards),
    so the result equals a single-process evaluation. Keys: `{set}_psnr`, `{set}_ssim` with `set` lower-cased.
    """
    model.eval()
    results: dict[str, float] = {}
    for name, dataloader in dataloaders.items():
        scores = []
        for batch in dataloader:
            sr = upscale_tensor(model, batch["pixel_values"])
            hr = batch["labels"]
            per_image = [psnr_per_image(sr, hr, scale=scale)]
            if with_ssim:
                per_image.append(ssim_per_image(sr, hr, scale=scale))
            local = torch.tensor(per_image, dtype=torch.float64, device=accelerator.device).T  # (batch, k)
            scores.append(accelerator.gather_for_metrics(local))
        table = torch.cat(scores).cpu()
        key = name.lower()
        results[f"{key}_psnr"] = float(table[:, 0].mean())
        if with_ssim:
            results[f"{key}_ssim"] = float(table[:, 1].mean())
        results[f"{key}_images"] = int(table.shape[0])
    return results


@torch.no_grad()
def bicubic_baseline(dataloaders: Mapping[str, Iterable], accelerator, scale: int) -> dict[str, float]:
    """PSNR-Y of MATLAB-bicubic upsampling (`degradation.imresize`, the standard baseline) on the validation sets."""
    results = {}
    for name, dataloader in dataloaders.items():
        scores = []
        for batch in dataloader:
            lr = batch["pixel_values"].float()
            sr = imresize(lr, scale=scale)
            local = torch.tensor(psnr_per_image(sr, batch["labels"], scale=scale), device=accelerator.device)
            scores.append(accelerator.gather_for_metrics(local.double()))
        results[f"{name.lower()}_psnr"] = float(torch.cat(scores).mean())
    return results


class MetricsWriter:
    """Appends one JSON object per line to `metrics.jsonl` (main process only; flushed at once)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: Mapping) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(dict(record), sort_keys=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written after the checkpoint a resumed run restarts from)."""
        if not self.enabled or not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a `metrics.jsonl` file (blank or truncated last lines are skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


__all__ = [
    "EMA",
    "MetricsWriter",
    "RunLock",
    "ScheduleClock",
    "TrainState",
    "apply_overrides",
    "bicubic_baseline",
    "evaluate",
    "init_from_pretrained",
    "latest_checkpoint",
    "list_checkpoints",
    "load_config",
    "loss_for_step",
    "lr_lambda",
    "parse_override",
    "read_metrics",
    "save_checkpoint",
    "format_training_record",
    "save_model_folder",
]
