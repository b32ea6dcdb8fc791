"""Reusable pieces of the training script (`scripts/train.py`): they keep the script short and are unit-tested.

- `TrainingConfig`: THE training configuration, one typed dataclass, read from a preset file (`configs/*.yaml`)
  and `--set KEY=VALUE` overrides in one place (`TrainingConfig.from_sources`); unknown keys and bad values raise.
- `LOSSES` / `get_loss` / `compute_loss`: the training losses, computed by the trainer from
  `outputs.reconstruction` (training-only settings are not part of the model config).
- `EMA`: an exponential moving average of the weights, checkpointed with `accelerator.register_for_checkpointing`.
- `TrainState`: step, data position (epoch, batch in epoch), training seconds and the best score, checkpointed too.
- `lr_lambda`: warmup + cosine or multistep learning-rate schedule for `torch.optim.lr_scheduler.LambdaLR`.
- `save_checkpoint` / `latest_checkpoint`: atomic `accelerator.save_state` folders `step_N` with rotation;
  `resume_from`: load the newest checkpoint that loads, falling back past damaged ones.
- `RunLock`: one training process per output folder (`filelock`).
- `choose_data_path`: device-resident data (`espcn_hf.data.DevicePatchSampler`) when it fits, else DataLoader.
- `save_model_folder`: atomic `save_pretrained` of a model and its image processor (`best`, `final`).
- `init_from_pretrained`: copy feature-layer weights from another checkpoint (e.g. x3 -> x2 / x4).
- `validate` / `bicubic_baseline`: validation scores through `espcn_hf.evaluation.evaluate` (sharded, gathered).
- `MetricsWriter`: one JSON line per evaluation in `metrics.jsonl` (read by `scripts/plot_training.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .fileio import atomic_write_text, replace_dir
from .image_processing_espcn import ESPCNImageProcessor
from .modeling_espcn import rgb_to_ycbcr

CHECKPOINT_PREFIX = "step_"
TMP_SUFFIX = ".tmp"


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


DATA_PATHS = ("auto", "device", "loader")
RECORD_ONLY_KEYS = ("commands",)  # written into training_config.json by the trainer, not hyper-parameters
MIXED_PRECISIONS = ("no", "fp16", "bf16")


@dataclass
class TrainingConfig:
    """Every hyper-parameter of a training run. Presets (`configs/*.yaml`) and `--set KEY=VALUE` set fields by
    name; `TrainingConfig.from_sources` is the one place they are merged, and an unknown name or a bad value
    raises `ValueError`. Steps are optimizer steps; `batch_size` is per process."""

    # model
    preset: str = "espcn"  # ESPCNConfig preset: "espcn" (seven layers, RGB) or "espcn-paper" (Y channel)
    upscale_factor: int = 3
    model: dict = field(default_factory=dict)  # extra ESPCNConfig arguments, e.g. {"hidden_channels": [8, 8]}
    # loss (computed by the trainer from outputs.reconstruction; names in LOSSES)
    loss: str = "l1"
    finetune_loss: str = "mse"
    finetune_fraction: float = 0.0  # last fraction of the schedule trained with finetune_loss
    # data: "all" = every folder under <data dir>/train; or names there / paths; or a Hub dataset
    train_dirs: typing.Any = "all"
    hub_dataset: str | None = None  # e.g. "goodfellowliu/DIV2K"; used instead of train_dirs when set
    hub_data_files: typing.Any = None
    hub_split: str = "train"
    max_train_images: int | None = None
    patch_size: int = 17  # LR patch side; HR patches are r times larger
    patches_per_image: int = 32  # DataLoader path: random patches per image per epoch
    augment: bool = True  # flips and 90-degree rotations
    num_workers: int = 0  # DataLoader path
    data_path: str = "auto"  # "device": crops cut on the training device; "loader": DataLoader; "auto": see
    #                          choose_data_path
    val_sets: list = field(default_factory=lambda: ["Set5", "Set14"])  # the first picks `best`
    val_dirs: list | None = None  # folders of HR images used instead of val_sets
    val_ssim: bool = True  # kept so older training_config.json files load; SSIM-Y is always recorded
    # optimisation
    seed: int = 0
    batch_size: int = 64
    gradient_accumulation_steps: int = 1
    max_steps: int = 10_000
    # wall-clock budget: the schedules follow max(step, time) (ScheduleClock), the run stops when it is spent
    max_train_minutes: float | None = None
    learning_rate: float = 1e-3
    output_lr_scale: float = 1.0  # learning-rate multiplier of the last convolution (the paper: 0.1)
    adam_betas: list = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"  # "cosine" (warmup, then cosine to min_lr_ratio), "multistep" or "constant"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    milestones: list = field(default_factory=list)
    gamma: float = 0.1
    max_grad_norm: float | None = None
    reparam: str | None = (
        None  # train each convolution as a richer linear block (espcn_hf.reparam.BRANCH_SETS:
    )
    #                            "rep", "ecb"), collapsed exactly into the plain network when saved
    ema_decay: float = 0.999  # 0 disables the EMA; with EMA, validation and `best` use the averaged weights
    # hardware
    mixed_precision: str | None = None  # "no", "fp16", "bf16"; None: accelerate's setting (launch flag, env)
    channels_last: bool = False  # model and batches in channels-last memory (faster convolutions on GPUs)
    deterministic: bool = False  # torch.use_deterministic_algorithms (reproducible resume tests)
    num_threads: int | None = None  # CPU threads per process (1 is best on a busy shared CPU)
    # bookkeeping
    eval_steps: int = 1000
    checkpointing_steps: int = 2000
    checkpoints_total_limit: int | None = 3
    log_steps: int = 20

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value, hint = getattr(self, f.name), hints[f.name]
            if value is None:
                if type(None) not in typing.get_args(hint) and hint is not typing.Any:
                    raise ValueError(f"{f.name} must not be null")
                continue
            kinds = tuple(k for k in (typing.get_args(hint) or (hint,)) if k is not type(None))
            if typing.Any in kinds:
                continue
            if float in kinds and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                names = " or ".join(k.__name__ for k in kinds)
                raise ValueError(f"{f.name} must be {names}, got {value!r}")
        for name in (self.loss, self.finetune_loss):
            get_loss(name)
        choices = {"data_path": DATA_PATHS, "lr_schedule": ("cosine", "multistep", "constant")}
        if self.mixed_precision is not None:
            choices["mixed_precision"] = MIXED_PRECISIONS
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        positive = (
            "upscale_factor",
            "patch_size",
            "patches_per_image",
            "batch_size",
            "max_steps",
            "log_steps",
        )
        for key in (*positive, "gradient_accumulation_steps", "eval_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)!r}")
        if not 0.0 <= self.finetune_fraction <= 1.0:
            raise ValueError(f"finetune_fraction must be in [0, 1], got {self.finetune_fraction!r}")
        if self.reparam is not None:
            from .reparam import BRANCH_SETS

            if self.reparam not in BRANCH_SETS:
                raise ValueError(f"reparam must be null or one of {tuple(BRANCH_SETS)}, got {self.reparam!r}")
        if not 0 < self.output_lr_scale < math.inf:
            raise ValueError(f"output_lr_scale must be > 0, got {self.output_lr_scale!r}")
        if self.max_train_minutes is not None and self.max_train_minutes <= 0:
            raise ValueError(f"max_train_minutes must be > 0, got {self.max_train_minutes!r}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_sources(
        cls, path: str | os.PathLike | None = None, *overrides: Mapping[str, object]
    ) -> TrainingConfig:
        """Defaults <- preset file `path` (yaml/json) <- each mapping of `overrides` in turn (e.g. `--set`
        items, then flags). Unknown names raise `ValueError` (a typo must not pass silently)."""
        values: dict = {}
        # a checkpoint's training_config.json is a valid preset: its record-only keys are dropped
        file = {k: v for k, v in load_config(path).items() if k not in RECORD_ONLY_KEYS} if path else None
        sources = ([file] if file is not None else []) + [dict(o) for o in overrides]
        for source in sources:
            values = apply_overrides(values, source, cls.field_names())
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ losses
def charbonnier_loss(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """A smooth L1: mean of sqrt((p - t)^2 + eps^2)."""
    return torch.sqrt((prediction - target) ** 2 + eps * eps).mean()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss,
    "mse": F.mse_loss,
    "charbonnier": charbonnier_loss,
}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function called `name`; an unknown name raises `ValueError`."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}") from None


def model_inputs(batch: Mapping[str, torch.Tensor], num_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel_values, labels) a model of `num_channels` trains on: RGB as it is; for a Y-channel model (the
    paper's preset) the BT.601 Y of both, as in the paper."""
    pixel_values, labels = batch["pixel_values"], batch["labels"]
    if num_channels == 1 and pixel_values.shape[1] == 3:
        pixel_values, labels = rgb_to_ycbcr(pixel_values)[:, :1], rgb_to_ycbcr(labels)[:, :1]
    return pixel_values, labels


def compute_loss(outputs, labels: torch.Tensor, name: str) -> torch.Tensor:
    """Loss `name` between `outputs.reconstruction` and `labels`, in float32 (also under bf16 autocast)."""
    return get_loss(name)(outputs.reconstruction.float(), labels.float())


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
        # The live tensors by name (Parameter objects survive `.to(device)`, so they are looked up once).
        if getattr(self, "_live", None) is None or self._live[0] is not model:
            named = dict(model.named_parameters()) | dict(model.named_buffers())
            self._live = (model, [named[name] for name in self.shadow])
        live = self._live[1]
        shadows = list(self.shadow.values())
        if all(v.dtype == torch.float32 and v.device == s.device for v, s in zip(live, shadows, strict=True)):
            torch._foreach_lerp_(shadows, live, 1.0 - decay)  # one fused launch per step on CUDA
        else:
            for shadow, value in zip(shadows, live, strict=True):
                shadow.lerp_(value.detach().float(), 1.0 - decay)

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

    DataLoader path: `batch_in_epoch` counts the batches this process has consumed in `epoch`; resuming skips
    that many with `accelerator.skip_first_batches`. Device path: `data_step` is the index of the next batch
    of the `DevicePatchSampler` (a pure function of seed and index). `seconds` is training wall-clock time
    summed over all sessions.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    data_step: int = 0
    seconds: float = 0.0
    commands: list = field(default_factory=list)  # the command line of each session (first run, resumes)
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

    def wrap(self, factor: Callable[[int], float], warmup_steps: int = 0) -> Callable[[int], float]:
        """`factor` at the clock's step, times a linear warmup over the first `warmup_steps` OPTIMIZER steps
        (give `factor` no warmup of its own: with a time budget the clock's step runs far ahead of the real
        one in the first seconds of a fast GPU run, and a warmup measured on it would last milliseconds)."""

        def wrapped(step: int) -> float:
            warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
            return warm * factor(max(step, self.step))

        return wrapped


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
        replace_dir(tmp, final)
        if total_limit is not None and total_limit > 0:
            for old in list_checkpoints(root)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resume_from(accelerator, checkpoint: str | os.PathLike, checkpoint_dir: str | os.PathLike, log=print):
    """Load a training state: `checkpoint` is "latest" or a `step_N` folder. Returns the folder loaded, or
    None when "latest" finds no checkpoint (a fresh start, with a notice).

    "latest" tries the complete `step_N` folders newest first and falls back past any that does not load
    (truncated weights, a torn optimizer file, ...), saying in one line which one was skipped and why, and
    which one was loaded. An explicit folder that does not load raises `ValueError` naming it.
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
            accelerator.load_state(str(path))
        except Exception as error:  # noqa: BLE001 -- any damage in any file: try the previous checkpoint
            reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:160] if str(error).strip() else ''}"
            failures.append(f"{path} ({reason})")
            if path is not candidates[-1]:
                log(f"checkpoint {path} cannot be loaded ({reason}); falling back to the previous one")
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


@contextlib.contextmanager
def _quiet_progress_bars():
    """transformers' own progress bars off for the block (a process-wide switch, restored afterwards)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


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
    with _quiet_progress_bars():  # a save every evaluation: no "Writing model shards" bar in the training log
        model.save_pretrained(tmp, safe_serialization=True)
    ESPCNImageProcessor(upscale_factor=upscale_factor).save_pretrained(tmp)
    if extra is not None:
        (tmp / "eval_results.json").write_text(json.dumps(dict(extra), indent=2, sort_keys=True) + "\n")
    if training_config is not None:
        (tmp / "training_config.json").write_text(format_training_record(training_config))
    replace_dir(tmp, folder)
    return folder


def format_training_record(record: Mapping) -> str:
    """JSON with one top-level key per line (lists and dicts inline): short enough to quote in a model card."""
    lines = [f"  {json.dumps(str(key))}: {json.dumps(value)}" for key, value in record.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _last_conv_prefix(model: nn.Module) -> str:
    """The parameter-name prefix of the last layer of `model.body` (the output convolution, plain or a
    re-parameterised block; no activation follows it)."""
    return f"body.{len(model.body) - 1}."


def parameter_groups(model: nn.Module, output_lr_scale: float = 1.0) -> list[dict]:
    """Optimizer parameter groups: every parameter, with the last convolution's learning rate scaled by
    `output_lr_scale` (a `lr_scale` key that the trainer multiplies into the group's learning rate)."""
    last = _last_conv_prefix(model)
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


def device_name(device: torch.device | str) -> str:
    """What a run's metrics were measured on, for run.json: the GPU's name, or the CPU count and torch threads."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type}: {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"


# ------------------------------------------------------------------------------------------- data path
def _available_host_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose_data_path(requested: str, nbytes: int, device: torch.device) -> tuple[str, str]:
    """("device" or "loader", why) for a decoded training set of `nbytes` (uint8 HR + LR) on `device`.

    "auto" takes the device path when the set fits in half of what is free there (CUDA: `mem_get_info`; CPU:
    MemAvailable, since the packed copy comes on top of the decoded one), else the DataLoader. On CPU the
    device path is also the faster one: 4.2x the in-process DataLoader for 512 32x32 LR patches at x3
    (`python scripts/benchmark_data.py --device cpu`, `benchmarks/data_throughput_cpu.json`).
    """
    if requested not in DATA_PATHS:
        raise ValueError(f"data_path must be one of {DATA_PATHS}, got {requested!r}")
    if requested != "auto":
        return requested, f"data_path={requested}"
    device = torch.device(device)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        where = f"{free / 1e9:.1f} GB free on {device}"
    else:
        free = _available_host_bytes()
        where = f"{free / 1e9:.1f} GB of host memory available"
    path = "device" if nbytes <= free // 2 else "loader"
    return path, f"auto: {nbytes / 1e6:.0f} MB of training images, {where} -> {path}"


# -------------------------------------------------------------------------------------------- validation
def validate(model: nn.Module, sets: Mapping[str, object], accelerator, scale: int) -> dict[str, float]:
    """PSNR / SSIM (Y channel, `scale` border, uint8 levels) of `model` on each validation set.

    Goes through `espcn_hf.evaluation.evaluate`, the project's only evaluation loop: with several processes each
    scores its share of the images and the scores are gathered, so every process gets the whole-set means
    (equal to a single-process evaluation). `sets`: name -> eval-mode `DataGenerator`. Keys: `{set}_psnr`,
    `{set}_ssim`, `{set}_images` with `set` lower-cased (the `metrics.jsonl` record).
    """
    from .evaluation import evaluate

    report = evaluate({"model": model}, sets, scale, accelerator)
    results: dict[str, float] = {}
    for name, methods in report.results.items():
        scores, key = methods["model"], name.lower()
        results[f"{key}_psnr"] = scores.psnr_y
        results[f"{key}_ssim"] = scores.ssim_y
        results[f"{key}_images"] = scores.num_images
    return results


def bicubic_baseline(sets: Mapping[str, object], accelerator, scale: int) -> dict[str, float]:
    """PSNR-Y of MATLAB-bicubic upsampling (`evaluation.bicubic_upscaler`, the standard baseline) on the
    validation sets, through `evaluation.evaluate` (sharded and gathered like `validate`)."""
    from .evaluation import bicubic_upscaler, evaluate

    report = evaluate({"bicubic": bicubic_upscaler(scale)}, sets, scale, accelerator)
    return {f"{name.lower()}_psnr": methods["bicubic"].psnr_y for name, methods in report.results.items()}


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
        kept = [record for record in read_metrics(self.path) if record.get("step", 0) <= step]
        # A torn last line (a kill mid-write) is dropped with the records past `step`. Atomic rewrite.
        atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a `metrics.jsonl` file (blank or truncated last lines are skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):  # a torn line can still parse, e.g. as a number
            records.append(record)
    return records


__all__ = [
    "DATA_PATHS",
    "EMA",
    "LOSSES",
    "TrainingConfig",
    "charbonnier_loss",
    "choose_data_path",
    "compute_loss",
    "get_loss",
    "model_inputs",
    "parameter_groups",
    "resume_from",
    "MetricsWriter",
    "RunLock",
    "ScheduleClock",
    "TrainState",
    "apply_overrides",
    "bicubic_baseline",
    "validate",
    "device_name",
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
