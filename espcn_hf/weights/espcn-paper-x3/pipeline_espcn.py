"""`pipeline("image-super-resolution", model=...)`: images in, upscaled PIL images out.

transformers 5 removed its "image-to-image" pipeline, so this task is our own (config.json also lists it under
"image-to-image", the Hub's tag for SR models, see `modeling_espcn.CUSTOM_PIPELINES`). Where `espcn_hf` is installed,
importing it registers the task with `PIPELINE_REGISTRY`. A saved folder or Hub repo carries this file and lists
it under `custom_pipelines` in config.json, so `pipeline("image-super-resolution", model=REPO,
trust_remote_code=True)` works with only transformers and torch installed.

This file is copied flat into model folders: it imports only numpy, PIL, torch, transformers and the sibling
`image_processing_espcn.py` and `modeling_espcn.py`.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers import AutoModelForImageToImage, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .image_processing_espcn import ESPCNImageProcessor
from .modeling_espcn import PIPELINE_TASK


def _open_image(source, max_pixels: int | None) -> Image.Image:
    """A path or encoded bytes -> a decoded PIL image; the size limit is checked from the header, before
    decoding. (URLs are not fetched: download them yourself.)"""
    name = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise ValueError(
                f"{name}: {image.width}x{image.height} = {image.width * image.height:,} pixels, over the limit "
                f"of {max_pixels:,} (max_pixels)"
            )
        image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as error:
        raise ValueError(f"{name}: not an image, or a damaged one ({error})") from None
    return image


class ImageSuperResolutionPipeline(Pipeline):
    """Super-resolves images (file paths, encoded bytes, PIL images, numpy arrays) with an ESPCN model.

    Returns one PIL image per input. The model runs on the whole image; `max_pixels` (call option, default the
    image processor's) bounds the input size. Batches (`batch_size=N`) may mix image sizes: each size runs on
    its own, so every result equals the one-image result. For exact tiled inference of very large images, and
    bf16, use `espcn_hf.upscale`.
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

    def _sanitize_parameters(self, max_pixels=None):
        preprocess_params = {} if max_pixels is None else {"max_pixels": max_pixels}
        return preprocess_params, {}, {}

    def preprocess(self, image, max_pixels=None):
        limit = max_pixels if max_pixels is not None else self.image_processor.max_pixels
        if isinstance(image, (str, bytes, os.PathLike)):
            image = _open_image(image, limit)
        inputs = dict(self.image_processor(image, max_pixels=limit, return_tensors="np"))
        # numpy, not a tensor: transformers' batch collation concatenates "pixel_values" tensors, which fails
        # for images of different sizes, while other values are collated into a list, which `_forward` takes.
        # The rest of the processor's output (original size, mode, alpha) waits for `postprocess`, as one item.
        pixel_values = inputs.pop("pixel_values")
        return {"pixel_values": pixel_values, "postprocess_kwargs": inputs}

    def _forward(self, model_inputs):
        batch, kwargs = model_inputs["pixel_values"], model_inputs["postprocess_kwargs"]
        if not isinstance(batch, list):  # batch_size=1: one (1, C, H, W) array
            return {"reconstruction": self._run(torch.from_numpy(batch)), "postprocess_kwargs": kwargs}
        # A batch: one forward per distinct size (images of one size are stacked), results in input order.
        outputs: list[torch.Tensor | None] = [None] * len(batch)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for index, array in enumerate(batch):
            by_size.setdefault(array.shape, []).append(index)
        for indices in by_size.values():
            stacked = torch.from_numpy(np.concatenate([batch[i] for i in indices]))
            for i, out in zip(indices, self._run(stacked), strict=True):
                outputs[i] = out
        return {"reconstruction": outputs, "postprocess_kwargs": kwargs}

    def _run(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(self.device)
        return self.model(pixel_values=pixel_values).reconstruction.float().cpu()

    def postprocess(self, model_outputs):
        reconstruction = model_outputs["reconstruction"]
        if reconstruction.ndim == 3:
            reconstruction = reconstruction[None]
        return self.image_processor.post_process_super_resolution(
            reconstruction,
            upscale_factor=self.model.config.upscale_factor,
            **model_outputs["postprocess_kwargs"],
        )[0]


def register_pipeline() -> None:
    """Register the "image-super-resolution" task with transformers' `PIPELINE_REGISTRY` (idempotent)."""
    if PIPELINE_TASK not in PIPELINE_REGISTRY.supported_tasks:
        PIPELINE_REGISTRY.register_pipeline(
            PIPELINE_TASK,
            pipeline_class=ImageSuperResolutionPipeline,
            pt_model=AutoModelForImageToImage,
            type="image",
        )


__all__ = ["ImageSuperResolutionPipeline", "PIPELINE_TASK", "register_pipeline"]
