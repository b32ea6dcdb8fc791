"""`pipeline("image-super-resolution", model=...)`: images in, upscaled PIL images out.

transformers 5 removed its "image-to-image" pipeline, so this task is registered with `PIPELINE_REGISTRY` when
`espcn_hf` is imported. The Hub tag of the models stays `pipeline_tag: image-to-image`.
"""

from __future__ import annotations

from transformers import AutoModelForImageToImage, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .image_io import load_image
from .image_processing_espcn import ESPCNImageProcessor
from .inference import prepare_for_inference, upscale_tensor

PIPELINE_TASK = "image-super-resolution"


class ImageSuperResolutionPipeline(Pipeline):
    """Super-resolves images (paths, URLs are not fetched, PIL images, numpy arrays) with an ESPCN model.

    Call options: `tile_size` ("auto", None or an int), `tile_overlap` (int) and `precision` ("auto", "bf16")
    are passed to the tiled inference of `espcn_hf.upscale`; `max_pixels` bounds the input size. Returns one PIL
    image per input.
    """

    _load_processor = False
    _load_image_processor = True
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.image_processor is None:
            self.image_processor = ESPCNImageProcessor(upscale_factor=self.model.config.upscale_factor)

    def _sanitize_parameters(
        self, tile_size=None, tile_overlap=None, max_pixels=None, precision=None, **kwargs
    ):
        preprocess_params = {} if max_pixels is None else {"max_pixels": max_pixels}
        forward_params = {} if precision is None else {"precision": precision}
        if tile_size is not None:
            forward_params["tile_size"] = tile_size
        if tile_overlap is not None:
            forward_params["tile_overlap"] = tile_overlap
        return preprocess_params, forward_params, {}

    def preprocess(self, image, max_pixels=None):
        limit = max_pixels if max_pixels is not None else self.image_processor.max_pixels
        if isinstance(image, str) or hasattr(image, "__fspath__") or isinstance(image, bytes):
            image = load_image(image, max_pixels=limit)
        return self.image_processor(image, max_pixels=limit)

    def _forward(self, model_inputs, tile_size="auto", tile_overlap=None, precision="auto"):
        model = prepare_for_inference(self.model, precision)
        reconstruction = upscale_tensor(model, model_inputs["pixel_values"], tile_size, tile_overlap)
        return {"reconstruction": reconstruction, "original_sizes": model_inputs["original_sizes"]}

    def postprocess(self, model_outputs):
        images = self.image_processor.post_process_super_resolution(
            model_outputs["reconstruction"],
            original_sizes=model_outputs["original_sizes"],
            upscale_factor=self.model.config.upscale_factor,
        )
        return images[0] if len(images) == 1 else images


def register_pipeline() -> None:
    if PIPELINE_TASK not in PIPELINE_REGISTRY.supported_tasks:
        PIPELINE_REGISTRY.register_pipeline(
            PIPELINE_TASK,
            pipeline_class=ImageSuperResolutionPipeline,
            pt_model=AutoModelForImageToImage,
            type="image",
        )


__all__ = ["ImageSuperResolutionPipeline", "PIPELINE_TASK", "register_pipeline"]
