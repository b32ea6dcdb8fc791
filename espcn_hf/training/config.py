"""The hyper-parameters of a training run (`TrainingConfig`) and the options of one invocation (`RunOptions`).

`TrainingConfig` is THE training configuration, one typed dataclass: a preset file (`configs/*.yaml`) sets its
fields, `--set KEY=VALUE` overrides any of them, and so does one command-line flag per field, generated from the
dataclass (`add_config_arguments`), in that order of precedence. Unknown names and bad values raise `ValueError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import typing
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

DATA_PATHS = ("auto", "device", "loader")
LR_SCHEDULES = ("cosine", "multistep", "constant")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
RECORD_ONLY_KEYS = ("commands",)  # written into training_config.json by the trainer, not hyper-parameters


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


def parse_value(text: str):
    """A command-line value parsed as YAML (so `1e-3`, `true`, `[8, 8]`, `{a: 1}` and `null` work); text that is
    not valid YAML raises `ValueError` naming it."""
    import yaml

    try:
        return _fix_yaml_floats(yaml.safe_load(text))
    except yaml.YAMLError as error:
        raise ValueError(f"{text!r} is not a valid value ({str(error).splitlines()[0]})") from None


def load_config(path: str | os.PathLike) -> dict:
    """A preset file (`.yaml`, `.yml` or `.json`) -> a dict of hyper-parameters; a file that cannot be read or
    parsed raises `ValueError` in one line (naming the file and the line of the mistake)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"--config {path}: cannot read it ({error.strerror or error})") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = _fix_yaml_floats(yaml.safe_load(text) or {})
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise ValueError(
                f"--config {path}: not valid YAML{where}: {getattr(error, 'problem', error)}"
            ) from None
    elif path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--config {path}: not valid JSON ({error})") from None
    else:
        raise ValueError(f"--config must be a .yaml, .yml or .json file, got {path}")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the config file must hold a mapping of hyper-parameters")
    return data


def _is_text_field(name: str) -> tuple[bool, bool]:
    """(whether field `name` of TrainingConfig holds a string, whether it may be null)."""
    hint = typing.get_type_hints(TrainingConfig).get(name)
    kinds = typing.get_args(hint) or (hint,)
    return str in kinds and len([k for k in kinds if k is not type(None)]) == 1, type(None) in kinds


def parse_field_value(name: str, text: str):
    """A command-line value for field `name`: text as it is for a string field (YAML 1.1 would read `no` as
    false, and `--mixed_precision no` means the string), `null` for an empty optional one; YAML otherwise."""
    text_field, optional = _is_text_field(name)
    if text_field:
        return None if optional and text.strip().lower() in ("null", "none", "~", "") else text
    return parse_value(text)


def parse_override(item: str) -> tuple[str, object]:
    """`"key=value"` -> (key, value), the value parsed for the field `key` (`parse_field_value`)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
    return key.strip(), parse_field_value(key.strip(), value)


def apply_overrides(config: dict, overrides: Mapping[str, object], known: Iterable[str]) -> dict:
    """Copy of `config` updated by `overrides`; unknown keys raise `ValueError` (typos must not pass silently)."""
    known = set(known)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"Unknown hyper-parameter(s) {unknown}; known: {sorted(known)}")
    return {**config, **overrides}


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class TrainingConfig:
    """Every hyper-parameter of a training run. Steps are optimizer steps; `batch_size` is per process."""

    # model
    preset: str = field(
        default="espcn", metadata=_help("ESPCNConfig preset: espcn (seven layers, RGB) or espcn-paper")
    )
    upscale_factor: int = field(default=3, metadata=_help("the SR factor r"))
    model: dict = field(
        default_factory=dict, metadata=_help("extra ESPCNConfig arguments, e.g. {hidden_channels: [8, 8]}")
    )
    reparam: str | None = field(
        default=None,
        metadata=_help(
            "train each convolution as a richer linear block collapsed when saved: rep or ecb (reparam.py)"
        ),
    )
    # loss (computed by the trainer from outputs.reconstruction; names in losses.LOSSES)
    loss: str = field(default="l1", metadata=_help("loss of the first phase: l1, mse or charbonnier"))
    finetune_loss: str = field(
        default="mse", metadata=_help("loss of the last finetune_fraction of the steps")
    )
    finetune_fraction: float = field(
        default=0.0, metadata=_help("last fraction of the schedule with finetune_loss")
    )
    # data
    train_dirs: typing.Any = field(
        default="all", metadata=_help("'all' (every folder under <data dir>/train), or folder names or paths")
    )
    hub_dataset: str | None = field(
        default=None, metadata=_help("a Hub dataset id used instead of train_dirs")
    )
    hub_data_files: typing.Any = field(default=None, metadata=_help("data_files of the Hub dataset"))
    hub_split: str = field(default="train", metadata=_help("split of the Hub dataset"))
    max_train_images: int | None = field(
        default=None, metadata=_help("use at most this many training images")
    )
    patch_size: int = field(default=17, metadata=_help("LR patch side; HR patches are r times larger"))
    patches_per_image: int = field(
        default=32, metadata=_help("DataLoader path: random patches per image per epoch")
    )
    augment: bool = field(default=True, metadata=_help("flips and 90-degree rotations"))
    rescale_augment: list = field(
        default_factory=list,
        metadata=_help(
            "also train on each image downscaled by these factors in (0, 1) (FSRCNN: 0.9 0.8 0.7 0.6)"
        ),
    )
    num_workers: int = field(default=0, metadata=_help("DataLoader workers"))
    data_path: str = field(
        default="auto",
        metadata=_help("device (crops cut on the training device), loader (DataLoader) or auto"),
    )
    val_sets: list = field(
        default_factory=lambda: ["Set5", "Set14"], metadata=_help("benchmark sets; the first picks best/")
    )
    val_dirs: list | None = field(
        default=None, metadata=_help("folders of HR images used instead of val_sets")
    )
    # optimisation
    seed: int = field(default=0, metadata=_help("random seed (weights, crops, order)"))
    batch_size: int = field(default=64, metadata=_help("patches per step and process"))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("batches per optimizer step"))
    max_steps: int = field(default=10_000, metadata=_help("optimizer steps"))
    max_train_minutes: float | None = field(
        default=None,
        metadata=_help("training-time budget: the schedules follow max(step, time), the run stops"),
    )
    learning_rate: float = field(default=1e-3, metadata=_help("Adam learning rate"))
    output_lr_scale: float = field(
        default=1.0, metadata=_help("learning-rate multiplier of the last convolution")
    )
    adam_betas: list = field(default_factory=lambda: [0.9, 0.999], metadata=_help("Adam betas"))
    weight_decay: float = field(default=0.0, metadata=_help("Adam weight decay"))
    lr_schedule: str = field(
        default="cosine", metadata=_help("cosine (to min_lr_ratio), multistep or constant")
    )
    warmup_steps: int = field(default=100, metadata=_help("linear warmup, in optimizer steps"))
    min_lr_ratio: float = field(default=0.01, metadata=_help("cosine: the last learning rate over the first"))
    milestones: list = field(
        default_factory=list, metadata=_help("multistep: steps where the rate is multiplied by gamma")
    )
    gamma: float = field(default=0.1, metadata=_help("multistep factor"))
    max_grad_norm: float | None = field(default=None, metadata=_help("gradient clipping"))
    ema_decay: float = field(
        default=0.999, metadata=_help("EMA of the weights (validated and saved); 0: none")
    )
    # hardware
    mixed_precision: str | None = field(
        default=None, metadata=_help("no, fp16 or bf16 (default: accelerate's)")
    )
    channels_last: bool = field(default=False, metadata=_help("channels-last memory (faster convolutions)"))
    deterministic: bool = field(default=False, metadata=_help("torch.use_deterministic_algorithms"))
    num_threads: int | None = field(default=None, metadata=_help("CPU threads per process"))
    # bookkeeping
    eval_steps: int = field(default=1000, metadata=_help("validate (and maybe save best/) every N steps"))
    checkpointing_steps: int = field(default=2000, metadata=_help("save the training state every N steps"))
    checkpoints_total_limit: int | None = field(default=3, metadata=_help("keep the newest K checkpoints"))
    log_steps: int = field(default=20, metadata=_help("log the loss every N steps"))

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
        from .losses import get_loss

        for name in (self.loss, self.finetune_loss):
            get_loss(name)
        choices = {"data_path": DATA_PATHS, "lr_schedule": LR_SCHEDULES}
        if self.mixed_precision is not None:
            choices["mixed_precision"] = MIXED_PRECISIONS
        if self.reparam is not None:
            from ..reparam import BRANCH_SETS

            choices["reparam"] = tuple(BRANCH_SETS)
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
        if not 0 < self.output_lr_scale < math.inf:
            raise ValueError(f"output_lr_scale must be > 0, got {self.output_lr_scale!r}")
        if self.max_train_minutes is not None and not 0 < self.max_train_minutes < math.inf:
            raise ValueError(f"max_train_minutes must be > 0, got {self.max_train_minutes!r}")
        if any(
            isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1
            for f in self.rescale_augment
        ):
            raise ValueError(
                f"rescale_augment factors must be numbers in (0, 1), got {self.rescale_augment!r}"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")

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
        for source in ([file] if file is not None else []) + [dict(o) for o in overrides]:
            values = apply_overrides(values, source, cls.field_names())
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainingConfig` field (`--max_steps 500`, `--train_dirs T91 BSD200`), generated from the
    dataclass: values are parsed as YAML (`parse_value`), list fields take several values. A flag given on the
    command line overrides the preset file and `--set`; flags not given are absent from the namespace."""
    group = parser.add_argument_group("hyper-parameters (TrainingConfig fields; override --config and --set)")
    hints = typing.get_type_hints(TrainingConfig)
    for f in dataclasses.fields(TrainingConfig):
        listy = list in (typing.get_args(hints[f.name]) or (hints[f.name],)) or f.name == "train_dirs"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        group.add_argument(
            f"--{f.name}",
            type=_argument_type(f.name),
            nargs="+" if listy else None,
            default=argparse.SUPPRESS,
            metavar=f.name.upper(),
            help=f"{f.metadata.get('help', '')} (default: {default!r})",
        )


def _argument_type(name: str):
    def convert(text: str):
        try:
            return parse_field_value(name, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = name  # argparse names the type in its error messages
    return convert


def config_from_arguments(args: argparse.Namespace) -> TrainingConfig:
    """The `TrainingConfig` of parsed arguments: `--config` file <- `--set` items <- flags given."""
    flags = {}
    for name in TrainingConfig.field_names():
        if hasattr(args, name):
            value = getattr(args, name)
            # one value given to a list-like flag: `--train_dirs all` is "all", `--val_sets Set5` is ["Set5"]
            if (
                isinstance(value, list)
                and len(value) == 1
                and (name == "train_dirs" or isinstance(value[0], list))
            ):
                value = value[0]
            flags[name] = value
    overrides = dict(parse_override(item) for item in getattr(args, "set", []) or [])
    return TrainingConfig.from_sources(getattr(args, "config", None), overrides, flags)


@dataclass
class RunOptions:
    """What one invocation of the trainer does besides the hyper-parameters: where it writes, what it resumes,
    tracking and publishing."""

    output_dir: str = "runs/espcn"
    data_dir: str | None = None  # benchmarks/ and train/ (default: espcn_hf.data.default_data_dir())
    resume_from_checkpoint: str | None = None  # "latest" or a checkpoints/step_N folder
    init_from: str | None = None  # copy all convolutions but the last from this model folder
    with_tracking: bool = False  # TensorBoard logs in output_dir
    cpu: bool = False  # train on the CPU even if a GPU is present
    push_to_hub: bool = False  # push best/ to hub_model_id at the end
    hub_model_id: str | None = None
    hub_private: bool = False
    argv: list = field(default_factory=list)  # the command line, recorded in training_config.json


__all__ = [
    "DATA_PATHS",
    "LR_SCHEDULES",
    "MIXED_PRECISIONS",
    "RunOptions",
    "TrainingConfig",
    "add_config_arguments",
    "apply_overrides",
    "config_from_arguments",
    "load_config",
    "parse_override",
    "parse_value",
]
