"""espcn-hf: ESPCN image super-resolution (Shi et al. 2016) as a Hugging Face transformers model.

Importing the package registers the "espcn" model type with the Auto classes and the "image-super-resolution"
pipeline task.
"""

from .configuration_espcn import PRESETS, ESPCNConfig
from .image_io import ImageLoadError, load_image
from .image_processing_espcn import ESPCNImageProcessor
from .inference import upscale
from .modeling_espcn import CheckpointError, ESPCNForImageSuperResolution, ESPCNPreTrainedModel
from .pretrained import load_model, resolve_model
from .registration import register

__version__ = "0.1.0"

register()

__all__ = [
    "PRESETS",
    "CheckpointError",
    "ESPCNConfig",
    "ESPCNForImageSuperResolution",
    "ESPCNImageProcessor",
    "ESPCNPreTrainedModel",
    "ImageLoadError",
    "load_image",
    "load_model",
    "register",
    "resolve_model",
    "upscale",
]
