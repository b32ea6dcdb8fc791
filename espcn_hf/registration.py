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
    """Register "espcn" with AutoConfig / AutoModel / AutoModelForImageToImage / AutoImageProcessor, the
    `image-super-resolution` pipeline task, and the `auto_map` / `custom_pipelines` and code files written by
    `save_pretrained` for remote code."""
    global _registered
    if _registered:
        return
    AutoConfig.register(ESPCNConfig.model_type, ESPCNConfig, exist_ok=True)
    AutoModel.register(ESPCNConfig, ESPCNForImageSuperResolution, exist_ok=True)
    AutoModelForImageToImage.register(ESPCNConfig, ESPCNForImageSuperResolution, exist_ok=True)
    AutoImageProcessor.register(
        ESPCNConfig, image_processor_classes={"pil": ESPCNImageProcessor}, exist_ok=True
    )
    # save_pretrained() then writes `auto_map` and copies the code files, so a saved folder (or a Hub repo made
    # from it) loads with trust_remote_code=True where espcn_hf is not installed.
    ESPCNConfig.register_for_auto_class()
    ESPCNForImageSuperResolution.register_for_auto_class("AutoModel")
    ESPCNForImageSuperResolution.register_for_auto_class("AutoModelForImageToImage")
    ESPCNImageProcessor.register_for_auto_class("AutoImageProcessor")

    from .pipeline_espcn import register_pipeline

    register_pipeline()
    # The task is known here, so config.json's `custom_pipelines` (for machines without espcn_hf) is not read
    # by this installation's config class: pipeline() needs no trust_remote_code (see ESPCNConfig).
    ESPCNConfig._pipeline_task_registered = True
    _registered = True
