"""Make transformers' Auto classes and `pipeline()` know ESPCN (idempotent)."""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageToImage,
)

from .configuration_espcn import ESPCNConfig
from .image_processing_espcn import ESPCNImageProcessor
from .modeling_espcn import ESPCNForImageSuperResolution

_registered = False


def register() -> None:
    """Register "espcn" with AutoConfig / AutoModel / AutoModelForImageToImage / AutoImageProcessor and the
    `image-super-resolution` pipeline task (`import espcn_hf` calls this). Saved folders need none of it: the
    classes' `_auto_class` makes `save_pretrained` write `auto_map`, `custom_pipelines` and the code files."""
    global _registered
    if _registered:
        return
    AutoConfig.register(ESPCNConfig.model_type, ESPCNConfig, exist_ok=True)
    AutoModel.register(ESPCNConfig, ESPCNForImageSuperResolution, exist_ok=True)
    AutoModelForImageToImage.register(ESPCNConfig, ESPCNForImageSuperResolution, exist_ok=True)
    AutoImageProcessor.register(
        ESPCNConfig, image_processor_classes={"pil": ESPCNImageProcessor}, exist_ok=True
    )
    from .pipeline_espcn import register_pipeline

    register_pipeline()
    _registered = True
