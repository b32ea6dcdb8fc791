"""espcn-hf: ESPCN image super-resolution (Shi et al. 2016) as a Hugging Face transformers model.

`import espcn_hf` is instant: the public names below are loaded on first use (PEP 562), so that `espcn-hf --help`
does not pay for torch and transformers. The first use of any of them, e.g. `from espcn_hf import upscale`, also
registers the "espcn" model type with transformers' Auto classes and the "image-super-resolution" pipeline task
(`register()`, idempotent; loading a model through `espcn_hf.pretrained` does too). Saved folders need no
registration: they always carry the code files, `auto_map` and `custom_pipelines`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the submodule that defines it.
_EXPORTS = {
    "PRESETS": "configuration_espcn",
    "ESPCNConfig": "configuration_espcn",
    "CheckpointError": "modeling_espcn",
    "ESPCNForImageSuperResolution": "modeling_espcn",
    "ESPCNPreTrainedModel": "modeling_espcn",
    "ESPCNImageProcessor": "image_processing_espcn",
    "ImageLoadError": "image_io",
    "load_image": "image_io",
    "load_model": "pretrained",
    "resolve_model": "pretrained",
    "upscale": "inference",
    "upscale_frames": "video",
    "upscale_video": "video",
    "VideoError": "video",
    "is_video": "video",
    "export_onnx": "onnx_export",
    "register": "registration",
}

if TYPE_CHECKING:
    from .configuration_espcn import PRESETS, ESPCNConfig
    from .image_io import ImageLoadError, load_image
    from .image_processing_espcn import ESPCNImageProcessor
    from .inference import upscale
    from .modeling_espcn import CheckpointError, ESPCNForImageSuperResolution, ESPCNPreTrainedModel
    from .onnx_export import export_onnx
    from .pretrained import load_model, resolve_model
    from .registration import register
    from .video import VideoError, is_video, upscale_frames, upscale_video


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .registration import register

    register()
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "PRESETS",
    "CheckpointError",
    "ESPCNConfig",
    "ESPCNForImageSuperResolution",
    "ESPCNImageProcessor",
    "ESPCNPreTrainedModel",
    "ImageLoadError",
    "VideoError",
    "export_onnx",
    "is_video",
    "load_image",
    "load_model",
    "register",
    "resolve_model",
    "upscale",
    "upscale_frames",
    "upscale_video",
]
