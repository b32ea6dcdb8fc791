"""Image processor for ESPCN.

Like Swin2SR's, it never resizes the model input: it converts to RGB, rescales to [0, 1] and, only when a batch
mixes sizes, pads each image at the bottom/right (edge replication) to the largest size in the batch. The original
sizes travel in the `BatchFeature`, and `post_process_super_resolution` crops the padding off the output.

This file imports only numpy, PIL, torch and transformers because it is copied flat into Hub repositories for
`trust_remote_code=True` loading.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

# Decompression-bomb guard: the largest input (in pixels) the processor accepts unless told otherwise.
DEFAULT_MAX_PIXELS = 36_000_000


def pil_to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any PIL image -> float32 RGB array in [0, 1], shape (H, W, 3), EXIF orientation applied.

    Handles 1, L, P (palette, with or without transparency), LA, RGBA, CMYK, YCbCr, I;16 (16-bit) and I/F modes.
    Transparent pixels keep their colour values (the alpha channel is dropped here; `espcn_hf.upscale` upscales it
    separately and puts it back).
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        if image.mode == "F" and array.max(initial=0) <= 1.0:
            peak = 1.0
        gray = np.clip(array / peak, 0.0, 1.0).astype(np.float32)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.float32) / 255.0


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """A float (C, H, W) tensor in [0, 1] -> uint8 (H, W, C) numpy: clamped, rounded to 8-bit levels."""
    return image.detach().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _to_chw_float(image, rescale_factor: float, do_rescale: bool) -> torch.Tensor:
    """One image (PIL, numpy HWC/HW/CHW, or torch CHW/HW) -> float32 tensor (3, H, W)."""
    if isinstance(image, Image.Image):
        return torch.from_numpy(pil_to_rgb_array(image)).permute(2, 0, 1).contiguous()
    if isinstance(image, np.ndarray):
        is_int = np.issubdtype(image.dtype, np.integer)
        tensor = torch.from_numpy(np.ascontiguousarray(image).astype(np.float32))
        # numpy images are (H, W, C) as PIL and OpenCV make them; (C, H, W) only when the last axis cannot be C.
        channels_last = image.ndim == 3 and not (
            image.shape[-1] not in (1, 3, 4) and image.shape[0] in (1, 3, 4)
        )
        if image.ndim == 3 and channels_last:
            tensor = tensor.permute(2, 0, 1)
        if is_int and image.dtype == np.uint16:
            tensor = tensor / 65535.0
        elif is_int and do_rescale:
            tensor = tensor * rescale_factor
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().to("cpu")
        if tensor.dtype == torch.uint8 and do_rescale:
            tensor = tensor.float() * rescale_factor
        else:
            tensor = tensor.float()
    else:
        raise TypeError(
            f"Unsupported image type {type(image).__name__}: pass a PIL image, numpy array or tensor"
        )
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"An image array must be (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4; got shape {tuple(tensor.shape)}"
        )
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    return tensor[:3].contiguous()


class ESPCNImageProcessor(BaseImageProcessor):
    r"""
    Prepares images for [`ESPCNForImageSuperResolution`] and turns its output back into images.

    Args:
        do_rescale (`bool`, *optional*, defaults to `True`):
            Scale integer inputs by `rescale_factor` into [0, 1] (uint16 arrays are divided by 65535); float
            arrays and tensors are taken to be in [0, 1] already.
        rescale_factor (`float`, *optional*, defaults to `1/255`):
            The factor used by `do_rescale`.
        max_pixels (`int`, *optional*, defaults to 36_000_000):
            Refuse inputs with more pixels than this (a guard against decompression bombs); `None` disables it.
        upscale_factor (`int`, *optional*):
            Informational copy of the model's factor, used by `post_process_super_resolution` when the caller
            gives none.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        upscale_factor: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.max_pixels = max_pixels
        self.upscale_factor = upscale_factor

    def to_dict(self):
        output = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        output["image_processor_type"] = type(self).__name__
        return output

    def preprocess(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Images (one or a list: PIL, numpy, torch) -> `BatchFeature` with `pixel_values` (N, 3, H, W) in [0, 1]
        and `original_sizes` (N, 2)."""
        do_rescale = kwargs.pop("do_rescale", self.do_rescale)
        rescale_factor = kwargs.pop("rescale_factor", self.rescale_factor)
        max_pixels = kwargs.pop("max_pixels", self.max_pixels)
        if (
            isinstance(images, torch.Tensor)
            and images.ndim == 4
            or isinstance(images, np.ndarray)
            and images.ndim == 4
        ):
            images = list(images)
        elif not isinstance(images, Sequence) or isinstance(images, str):
            images = [images]
        if len(images) == 0:
            raise ValueError("No images were given")

        tensors = []
        for index, image in enumerate(images):
            if isinstance(image, (str, bytes)):
                raise TypeError(
                    "Pass decoded images (PIL, numpy, torch); load files with espcn_hf.load_image(path) first"
                )
            tensor = _to_chw_float(image, rescale_factor, do_rescale)
            height, width = tensor.shape[-2:]
            if height < 2 or width < 2:
                raise ValueError(
                    f"Image {index} is {width}x{height} pixels; super-resolution needs at least 2x2"
                )
            if max_pixels is not None and height * width > max_pixels:
                raise ValueError(
                    f"Image {index} has {width}x{height} = {height * width:,} pixels, over the limit of "
                    f"{max_pixels:,} (max_pixels)"
                )
            if not torch.isfinite(tensor).all():
                raise ValueError(f"Image {index} contains NaN or infinite values")
            tensors.append(tensor.clamp_(0.0, 1.0))

        sizes = [tuple(t.shape[-2:]) for t in tensors]
        max_h, max_w = max(s[0] for s in sizes), max(s[1] for s in sizes)
        if any(s != (max_h, max_w) for s in sizes):
            # Only a mixed batch is padded, by replicating the last row/column (no padding when sizes agree).
            tensors = [
                torch.nn.functional.pad(
                    t[None], (0, max_w - t.shape[-1], 0, max_h - t.shape[-2]), mode="replicate"
                )[0]
                for t in tensors
            ]
        data = {"pixel_values": torch.stack(tensors), "original_sizes": torch.tensor(sizes, dtype=torch.long)}
        if return_tensors in (None, "np"):
            data = {k: v.numpy() for k, v in data.items()}
        return BatchFeature(data=data)

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def post_process_super_resolution(
        self,
        outputs,
        original_sizes=None,
        upscale_factor: int | None = None,
        output_type: str = "pil",
    ):
        """Model output (`ImageSuperResolutionOutput` or a (N, 3, H, W) tensor) -> a list of images.

        Values are clamped to [0, 1] and rounded to 8 bits; with `original_sizes` (from `preprocess`) the padding
        of a mixed-size batch is cropped off. `output_type`: "pil", "np" (uint8 HWC) or "pt" (float CHW).
        """
        reconstruction = getattr(outputs, "reconstruction", outputs)
        if not isinstance(reconstruction, torch.Tensor) or reconstruction.ndim != 4:
            raise ValueError("Expected a model output with a (batch, channels, height, width) reconstruction")
        factor = upscale_factor or self.upscale_factor
        results = []
        for i, image in enumerate(reconstruction.detach().float().cpu()):
            if original_sizes is not None:
                if factor is None:
                    raise ValueError("upscale_factor is needed to crop padding off a mixed-size batch")
                height, width = (int(v) for v in original_sizes[i])
                image = image[:, : height * factor, : width * factor]
            image = image.clamp(0.0, 1.0)
            if output_type == "pt":
                results.append(image)
                continue
            array = to_uint8_hwc(image)
            results.append(array if output_type == "np" else Image.fromarray(array))
        return results


__all__ = ["ESPCNImageProcessor", "pil_to_rgb_array", "to_uint8_hwc", "DEFAULT_MAX_PIXELS"]
