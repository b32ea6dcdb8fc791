"""Where models come from: a local folder, a Hub repo id (through the normal `from_pretrained` cache), or the
weights packaged inside this package.

    model, source = resolve_model(None, scale=3)              # the published x3 model, else the packaged copy
    model, source = resolve_model("espcn-hf/espcn-x4", None)  # a Hub repo id (or the local Hub cache)
    model, source = resolve_model("runs/espcn-x3/best", 3)    # a folder written by save_pretrained
    print(source)  # one neutral line saying which of these was used

The packaged weights (`espcn_hf/weights/espcn-x{2,3,4}`, `espcn_hf/weights/espcn-paper-x3`) are the same models
as the published repos, so a wheel works offline. Nothing here reads files outside the package.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from huggingface_hub import get_hf_file_metadata, hf_hub_url, is_offline_mode
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from .modeling_espcn import CheckpointError, ESPCNForImageSuperResolution

# Hub repositories the publishing script pushes to and the Space loads from (override with ESPCN_HF_REPO_X{r}).
HUB_REPO_IDS = {2: "espcn-hf/espcn-x2", 3: "espcn-hf/espcn-x3", 4: "espcn-hf/espcn-x4"}
PAPER_HUB_REPO_ID = "espcn-hf/espcn-paper-x3"
DEFAULT_SCALE = 3

# Package data: one save_pretrained folder per shipped model (config, safetensors weights, code files).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SAMPLE_DIR = Path(__file__).resolve().parent / "assets"

# One HEAD request decides whether the Hub answers at all; without it, huggingface_hub retries a network error
# for about 20 s before transformers falls back to the cache.
HUB_PROBE_TIMEOUT_S = 3.0


def _model_name(scale: int, preset: str) -> str:
    if preset == "espcn":
        return f"espcn-x{scale}"
    if preset == "espcn-paper":
        return f"espcn-paper-x{scale}"
    raise ValueError(f"preset must be 'espcn' or 'espcn-paper', got {preset!r}")


def packaged_weights(scale: int, preset: str = "espcn") -> Path:
    """The folder of the packaged model for `scale` and `preset`; `CheckpointError` if none is packaged."""
    folder = WEIGHTS_DIR / _model_name(scale, preset)
    if not (folder / "config.json").is_file():
        packaged = sorted(p.name for p in WEIGHTS_DIR.glob("*") if (p / "config.json").is_file())
        raise CheckpointError(f"no packaged {preset} model for x{scale} (packaged: {', '.join(packaged)})")
    return folder


def hub_repo_id(scale: int, preset: str = "espcn") -> str:
    """The Hub repo id of the published model for `scale` and `preset` (ESPCN_HF_REPO_X{r} overrides it)."""
    _model_name(scale, preset)
    if preset == "espcn" and scale in HUB_REPO_IDS:
        return os.environ.get(f"ESPCN_HF_REPO_X{scale}", HUB_REPO_IDS[scale])
    if preset == "espcn-paper" and scale == 3:
        return PAPER_HUB_REPO_ID
    raise CheckpointError(f"no published {preset} model for x{scale}")


def sample_images() -> list[Path]:
    """The small sample images shipped with the package (made for this project, no third-party content)."""
    return sorted(p for p in SAMPLE_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg"))


def is_repo_id(name: str) -> bool:
    """Whether `name` can only mean a Hub repo id: valid as one, and no such local path."""
    if Path(name).exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_reachable(repo_id: str, repo_type: str | None = None) -> bool:
    """False in offline mode (HF_HUB_OFFLINE=1) or when the Hub does not answer within a few seconds. An
    answer of any kind (even "no such repo") counts as reachable: `from_pretrained` then says what is wrong.
    `repo_type`: None (a model) or "dataset"."""
    if is_offline_mode():
        return False
    filename = "README.md" if repo_type == "dataset" else "config.json"
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, repo_type=repo_type), timeout=HUB_PROBE_TIMEOUT_S)
    except HfHubHTTPError:
        return True
    except Exception:  # noqa: BLE001 (any connection failure means "not reachable"; the cache is tried next)
        return False
    return True


def _from_pretrained(name, **kwargs) -> ESPCNForImageSuperResolution:
    from .cli import library_output

    with library_output():  # a model of a few hundred kB needs no progress bar (the switch is restored after)
        return ESPCNForImageSuperResolution.from_pretrained(name, **kwargs)


def _from_hub(repo_id: str, **kwargs) -> tuple[ESPCNForImageSuperResolution, str]:
    """Load a Hub repo through the normal cache; `OSError` when it is neither reachable nor cached."""
    online = not kwargs.pop("local_files_only", False) and hub_reachable(repo_id)
    model = _from_pretrained(repo_id, local_files_only=not online, **kwargs)
    return model, f"model: {repo_id} ({'Hub' if online else 'local Hub cache'})"


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _load(model, **kwargs) -> tuple[ESPCNForImageSuperResolution, str]:
    name = str(model)
    if Path(name).is_file():
        raise CheckpointError(
            f"{name}: is a file; a model is a folder written by save_pretrained (config.json, model.safetensors) "
            "or a Hub repo id"
        )
    if Path(name).exists():
        return _from_pretrained(name, **kwargs), f"model: {name} (local folder)"
    if not is_repo_id(name):
        raise CheckpointError(f"{name}: no such folder, and not a Hub repo id")
    try:
        return _from_hub(name, **kwargs)
    except OSError as error:
        raise CheckpointError(
            f"{name}: no such local folder, and the Hub repo cannot be loaded ({_first_line(error)})"
        ) from error


def load_model(
    model: str | os.PathLike | ESPCNForImageSuperResolution,
    device: str | torch.device | None = None,
    **kwargs,
) -> ESPCNForImageSuperResolution:
    """A model instance, a local folder or a Hub repo id -> an `ESPCNForImageSuperResolution` in eval mode.

    Problems end in `CheckpointError` with a message naming the checkpoint and the cause. `kwargs` go to
    `from_pretrained` (e.g. `revision`, `cache_dir`).
    """
    loaded = model if isinstance(model, ESPCNForImageSuperResolution) else _load(model, **kwargs)[0]
    if device is not None:
        loaded = loaded.to(device)
    return loaded.eval()


def resolve_model(
    model: str | os.PathLike | None,
    scale: int | None,
    preset: str = "espcn",
    *,
    device: str | torch.device | None = None,
    fallback_to_packaged: bool = True,
) -> tuple[ESPCNForImageSuperResolution, str]:
    """The model to use and one neutral line saying where it came from.

    - `model` given: that local folder, else that Hub repo id (from the Hub, or from the local Hub cache when
      the Hub cannot be reached). Failing that: `CheckpointError`; an explicit model is never replaced.
    - `model` None: the published model for `scale` (default 3) and `preset` (`hub_repo_id`), from the Hub or
      the local Hub cache; when neither has it, the copy packaged with espcn_hf if `fallback_to_packaged`
      (the default), else `CheckpointError`.

    A `scale` that disagrees with the model's upscale factor is a `CheckpointError`.
    """
    what = str(model)
    if model is not None:
        loaded, source = _load(model)
    else:
        scale = DEFAULT_SCALE if scale is None else scale
        repo_id = what = hub_repo_id(scale, preset)
        try:
            loaded, source = _from_hub(repo_id)
        except OSError as error:
            if not fallback_to_packaged:
                raise CheckpointError(
                    f"{repo_id}: not available from the Hub or the local Hub cache ({_first_line(error)})"
                ) from error
            folder = packaged_weights(scale, preset)
            loaded = _from_pretrained(folder)
            source = (
                f"model: packaged weights {folder.name} ({repo_id} is not available from the Hub or the "
                "local Hub cache)"
            )
    factor = loaded.config.upscale_factor
    if scale is not None and factor != scale:
        raise CheckpointError(f"{what}: an x{factor} model, but x{scale} was asked for")
    if device is not None:
        loaded = loaded.to(device)
    return loaded.eval(), source


__all__ = [
    "CheckpointError",
    "HUB_REPO_IDS",
    "PAPER_HUB_REPO_ID",
    "WEIGHTS_DIR",
    "hub_repo_id",
    "hub_reachable",
    "is_repo_id",
    "load_model",
    "packaged_weights",
    "resolve_model",
    "sample_images",
]
