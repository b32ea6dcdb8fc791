"""`pipeline("image-super-resolution", model=...)`: images in, upscaled PIL images out.

transformers 5 removed its "image-to-image" pipeline, so this task is our own (config.json also lists it under
"image-to-image", the Hub's tag for SR models, see `modeling_espcn.CUSTOM_PIPELINES`). Where `espcn_hf` is installed,
importing it registers the task with `PIPELINE_REGISTRY`. A saved folder or Hub repo carries this file and lists
it under `custom_pipelines` in config.json, so `pipeline("image-super-resolution", model=REPO,
trust_remote_code=True)` works with only transformers and torch installed.

Large images are run in tiles with the exact tile loop of `image_processing_espcn.run_tiled` (the one
`espcn_hf.upscale` runs), each tile's output going straight into the output image, so memory is bounded by the
input, the output image and one tile, never by a whole-image forward (a 9 Mpx input at x3 peaked at 7.4 GB).

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

from .image_processing_espcn import ESPCNImageProcessor, attach_alpha, run_tiled, to_output_image
from .modeling_espcn import PIPELINE_TASK

# Tile size in input pixels: what `espcn_hf.upscale`'s tile_size="auto" uses on CPU (`inference.AUTO_TILE_SIZE`;
# this file cannot import it, a test keeps the two equal), so the pipeline's result is upscale()'s.
TILE_SIZE = 256


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

    Returns one PIL image per input, in its input's kind (grayscale stays grayscale, alpha is kept). The model
    runs on `TILE_SIZE` x `TILE_SIZE` tiles with the receptive-field radius of context (exact: the result equals
    the whole-image one up to float rounding, and `espcn_hf.upscale`'s), written straight into the output image,
    so memory stays bounded for large inputs; `max_pixels` (call option, default the image processor's) bounds
    the input size. Batches (`batch_size=N`) may mix image sizes: each size runs on its own, so every result
    equals the one-image result. For other tile sizes, output limits and bf16, use `espcn_hf.upscale`.
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
            (image,) = self._run(torch.from_numpy(batch), kwargs["original_modes"])
            return {"images": image, "postprocess_kwargs": kwargs}
        # A batch: one tiled run per distinct size (images of one size are stacked), results in input order.
        outputs: list[Image.Image | None] = [None] * len(batch)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for index, array in enumerate(batch):
            by_size.setdefault(array.shape, []).append(index)
        for indices in by_size.values():
            stacked = torch.from_numpy(np.concatenate([batch[i] for i in indices]))
            modes = [kwargs[i]["original_modes"][0] for i in indices]
            for i, image in zip(indices, self._run(stacked, modes), strict=True):
                outputs[i] = image
        return {"images": outputs, "postprocess_kwargs": kwargs}

    def _run(self, pixel_values: torch.Tensor, modes: list[str]) -> list[Image.Image]:
        """The (N, C, H, W) images upscaled, tile by tile, into N PIL images of `modes` (without alpha)."""
        config = self.model.config
        r = config.upscale_factor
        height, width = pixel_values.shape[-2:]
        images = [
            Image.new({"RGBA": "RGB", "LA": "L"}.get(mode, mode), (width * r, height * r)) for mode in modes
        ]

        def forward(window: torch.Tensor) -> torch.Tensor:
            return self.model(pixel_values=window).reconstruction.float()

        def paste(top: int, left: int, tiles: torch.Tensor) -> None:
            for image, mode, tile in zip(images, modes, tiles, strict=True):
                image.paste(to_output_image(tile, mode), (left, top))

        tile = TILE_SIZE if max(height, width) > TILE_SIZE else None
        run_tiled(forward, pixel_values.to(self.device), r, tile, config.receptive_field_radius, paste)
        return images

    def postprocess(self, model_outputs):
        alpha = model_outputs["postprocess_kwargs"]["alphas"][0]
        return attach_alpha(model_outputs["images"], None if alpha is None else Image.fromarray(alpha))


def register_pipeline() -> None:
    """Register the "image-super-resolution" task with transformers' `PIPELINE_REGISTRY` (idempotent)."""
    if PIPELINE_TASK not in PIPELINE_REGISTRY.supported_tasks:
        PIPELINE_REGISTRY.register_pipeline(
            PIPELINE_TASK,
            pipeline_class=ImageSuperResolutionPipeline,
            pt_model=AutoModelForImageToImage,
            type="image",
        )


__all__ = ["ImageSuperResolutionPipeline", "PIPELINE_TASK", "TILE_SIZE", "register_pipeline"]
