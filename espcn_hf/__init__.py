"""espcn-hf: ESPCN image super-resolution (Shi et al. 2016) as a Hugging Face transformers model.

`import espcn_hf` registers the "espcn" model type with transformers' Auto classes (AutoConfig, AutoModel,
AutoModelForImageToImage, AutoImageProcessor) and the "image-super-resolution" pipeline task, so the
transformers-style calls work right after the import:

    import espcn_hf
    from transformers import AutoModel, pipeline
    model = AutoModel.from_pretrained("espcn-hf/espcn-x3")
    sr = pipeline("image-super-resolution", model="espcn-hf/espcn-x3")

This imports torch and transformers (seconds); the `espcn-hf` command's front door (`espcn_hf_cli`) lives outside
this package so that `espcn-hf --help` does not pay for them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .registration import register

register()

from .configuration_espcn import PRESETS, ESPCNConfig  # noqa: E402
from .image_io import ImageLoadError, load_image  # noqa: E402
from .image_processing_espcn import ESPCNImageProcessor  # noqa: E402
from .inference import upscale  # noqa: E402
from .modeling_espcn import CheckpointError, ESPCNForImageSuperResolution, ESPCNPreTrainedModel  # noqa: E402
from .onnx_export import export_onnx  # noqa: E402
from .pretrained import load_model, resolve_model  # noqa: E402
from .video import VideoError, is_video, upscale_frames, upscale_video  # noqa: E402

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
