"""The one-call API: `upscale(image, model)`, with exact tiled inference for large images.

Tiling. Every output pixel of ESPCN depends only on low-resolution pixels within `config.receptive_field_radius`
(the sum of kernel_size // 2: 7 for the seven-layer net, 4 for the paper's). The image is cut into
`tile_size` x `tile_size` cores; each core is run with `tile_overlap >= radius` pixels of real context around it
(clipped at the image border, where the network pads exactly as it does on the whole image) and only the core's
output is kept. The result therefore equals the untiled output up to float rounding, while memory is bounded by
the tile size. PIL results are pasted tile by tile into the output image, so no full-size float buffer exists.
"""

from __future__ import annotations

import copy
import functools
import os
import weakref
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from .image_io import ImageLoadError, load_image
from .image_processing_espcn import DEFAULT_MAX_PIXELS, ESPCNImageProcessor, to_uint8_hwc
from .modeling_espcn import ESPCNForImageSuperResolution
from .pretrained import CheckpointError, load_model  # their home is pretrained.py; re-exported here

# tile_size="auto": tiles of 256 LR pixels whenever the image is larger. Measured on the 2-core AVX-512 CPU
# (benchmarks/speed_cpu.md): 256 px tiles run 20-35 % faster than a whole 640x360 frame (the working set
# stays in cache) and the output is the same, so tiling is the default, not only a memory guard.
AUTO_TILE_SIZE = 256

# Inference paths (see prepare_for_inference). "auto" = channels_last fp32: the fastest exact path on CPU.
INFERENCE_PATHS = ("eager", "channels_last", "bf16")


@functools.lru_cache(maxsize=8)
def _cached_model(name: str, device: str | None) -> ESPCNForImageSuperResolution:
    return load_model(name, device=device)


def _tiles(
    height: int, width: int, tile: int, margin: int
) -> Iterator[tuple[int, int, int, int, int, int, int, int]]:
    """(top, left, bottom, right) of each core and (t0, l0, b1, r1) of its input window with `margin` context."""
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            yield (
                top, left, bottom, right,
                max(top - margin, 0), max(left - margin, 0), min(bottom + margin, height), min(right + margin, width),
            )  # fmt: skip


def resolve_tiling(
    config, height: int, width: int, tile_size: int | str | None, tile_overlap: int | None
) -> tuple[int | None, int]:
    """Validate the tiling options; returns (tile or None for whole-image, overlap)."""
    radius = config.receptive_field_radius
    overlap = radius if tile_overlap is None else tile_overlap
    if not isinstance(overlap, int) or overlap < radius:
        raise ValueError(
            f"tile_overlap must be an integer >= the receptive-field radius ({radius} px) for exact tiling, got {overlap!r}"
        )
    if tile_size == "auto":
        tile = AUTO_TILE_SIZE
    elif tile_size is None or tile_size == 0:
        tile = None
    elif isinstance(tile_size, int) and tile_size >= 8:
        tile = tile_size
    else:
        raise ValueError(
            f"tile_size must be 'auto', None/0 (no tiling) or an integer >= 8, got {tile_size!r}"
        )
    if tile is not None and tile >= height and tile >= width:
        tile = None
    return tile, overlap


_prepared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prepare_for_inference(
    model: ESPCNForImageSuperResolution, precision: str = "auto"
) -> ESPCNForImageSuperResolution:
    """The model laid out for the fastest inference path; cached per model and path.

    - "eager": as it is (NCHW, its own dtype).
    - "channels_last" (what "auto" picks): fp32 weights and activations in NHWC, which oneDNN convolves about
      2x faster than NCHW on CPU; same numbers as eager up to float rounding. The model itself is converted
      (a layout change only: it still trains and saves as before).
    - "bf16": a bfloat16 NHWC copy. On CPUs with AMX/AVX512-BF16 and on GPUs it is several times faster again,
      but not exact: about 50-60 dB PSNR against fp32 (benchmarks/speed_cpu.md), so it is opt-in.
    """
    if precision == "auto":
        precision = "channels_last"
    if precision not in INFERENCE_PATHS:
        raise ValueError(f"precision must be 'auto' or one of {INFERENCE_PATHS}, got {precision!r}")
    cache = _prepared.setdefault(model, {})
    if precision not in cache:
        if precision == "eager":
            prepared = model
        elif precision == "channels_last":
            prepared = model.to(memory_format=torch.channels_last)
        else:
            prepared = copy.deepcopy(model).to(dtype=torch.bfloat16, memory_format=torch.channels_last)
        prepared._inference_memory_format = (
            torch.contiguous_format if precision == "eager" else torch.channels_last
        )
        cache[precision] = prepared.eval()
    return cache[precision]


@torch.inference_mode()
def upscale_tensor(
    model: ESPCNForImageSuperResolution,
    pixel_values: torch.Tensor,
    tile_size: int | str | None = "auto",
    tile_overlap: int | None = None,
    write: Callable[[int, int, torch.Tensor], None] | None = None,
) -> torch.Tensor | None:
    """Run the model on (N, C, H, W) values in [0, 1], whole or tiled.

    Without `write`, returns the (N, C, rH, rW) float output (not clamped). With `write`, calls
    `write(top, left, tile_output)` for each output tile (coordinates in the output) and returns None, so the
    caller can store tiles in any format without a full-size float buffer.
    """
    config = model.config
    r = config.upscale_factor
    height, width = pixel_values.shape[-2:]
    tile, margin = resolve_tiling(config, height, width, tile_size, tile_overlap)
    param = next(model.parameters())
    memory_format = getattr(model, "_inference_memory_format", torch.contiguous_format)
    pixel_values = pixel_values.to(param.device)

    def run(window: torch.Tensor) -> torch.Tensor:
        window = window.contiguous(memory_format=memory_format)  # the model casts to its own dtype
        return model(window).reconstruction.float()

    if tile is None:
        out = run(pixel_values)
        if write is None:
            return out
        write(0, 0, out)
        return None
    result = None
    if write is None:
        result = torch.empty(
            (*pixel_values.shape[:-3], pixel_values.shape[-3], height * r, width * r), device=param.device
        )

        def write(top: int, left: int, out: torch.Tensor) -> None:
            result[..., top : top + out.shape[-2], left : left + out.shape[-1]] = out

    for top, left, bottom, right, t0, l0, b1, r1 in _tiles(height, width, tile, margin):
        out = run(pixel_values[..., t0:b1, l0:r1])
        write(
            top * r,
            left * r,
            out[..., (top - t0) * r : (bottom - t0) * r, (left - l0) * r : (right - l0) * r],
        )
    return result


def _alpha_channel(image: Image.Image) -> Image.Image | None:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").getchannel("A")
    return None


def upscale(
    image,
    model: str | os.PathLike | ESPCNForImageSuperResolution,
    *,
    tile_size: int | str | None = "auto",
    tile_overlap: int | None = None,
    device: str | torch.device | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    precision: str = "auto",
):
    """Super-resolve one image (or a list of images) with an ESPCN model.

    Args:
        image: a path, PIL image, numpy array (H, W[, C]) or tensor ((C, H, W) or (N, C, H, W), floats in [0, 1]).
            A list of those gives a list back.
        model: an `ESPCNForImageSuperResolution`, a folder written by `save_pretrained`, or a Hub repo id.
        tile_size: "auto" (256 px tiles: faster and exact), None (whole image) or the core size in LR pixels.
        tile_overlap: context pixels around each tile; at least (and by default) the receptive-field radius,
            which makes the tiled result equal the untiled one.
        device: where to run ("cpu", "cuda", ...); default: where the model is.
        max_pixels: refuse larger inputs (decompression-bomb guard); None disables.
        precision: "auto" (= "channels_last", fp32, exact), "eager", or "bf16" (faster on AMX CPUs and GPUs,
            about 50-60 dB from fp32); see `prepare_for_inference`.

    Returns: a PIL image for a path or PIL input (RGBA inputs keep their alpha, upscaled with bicubic), a uint8
    numpy array (H, W, 3) for numpy input, a float tensor for tensor input.
    """
    if isinstance(image, list):
        return [
            upscale(
                i, model, tile_size=tile_size, tile_overlap=tile_overlap, device=device, max_pixels=max_pixels
            )
            for i in image
        ]
    if isinstance(model, ESPCNForImageSuperResolution):
        model = load_model(model, device=device)
    else:
        model = _cached_model(str(model), None if device is None else str(device))
    model = prepare_for_inference(model, precision)
    r = model.config.upscale_factor
    processor = ESPCNImageProcessor(max_pixels=max_pixels)

    if isinstance(image, torch.Tensor):
        batch = image if image.ndim == 4 else image[None]
        if batch.ndim != 4 or batch.shape[1] not in (1, 3):
            raise ValueError(
                f"A tensor image must be (C, H, W) or (N, C, H, W) with C = 1 or 3, got {tuple(image.shape)}"
            )
        out = upscale_tensor(model, batch.float(), tile_size, tile_overlap).clamp(0, 1)
        return out if image.ndim == 4 else out[0]

    if isinstance(image, (str, os.PathLike, bytes)):
        image = load_image(image, max_pixels=max_pixels)
    if isinstance(image, Image.Image):
        alpha = _alpha_channel(image)
        pixel_values = processor(image)["pixel_values"]
        height, width = pixel_values.shape[-2:]
        result = Image.new("RGB", (width * r, height * r))

        def paste(top: int, left: int, tile: torch.Tensor) -> None:
            result.paste(Image.fromarray(to_uint8_hwc(tile[0])), (left, top))

        upscale_tensor(model, pixel_values, tile_size, tile_overlap, write=paste)
        if alpha is not None:
            result.putalpha(alpha.resize(result.size, Image.Resampling.BICUBIC))
        return result

    if isinstance(image, np.ndarray):
        pixel_values = processor(image)["pixel_values"]
        height, width = pixel_values.shape[-2:]
        array = np.empty((height * r, width * r, 3), dtype=np.uint8)

        def store(top: int, left: int, tile: torch.Tensor) -> None:
            h, w = tile.shape[-2:]
            array[top : top + h, left : left + w] = to_uint8_hwc(tile[0])

        upscale_tensor(model, pixel_values, tile_size, tile_overlap, write=store)
        return array
    raise ImageLoadError(
        f"Cannot upscale a {type(image).__name__}: pass a path, PIL image, numpy array or tensor"
    )


__all__ = [
    "AUTO_TILE_SIZE",
    "prepare_for_inference",
    "INFERENCE_PATHS",
    "CheckpointError",
    "load_model",
    "upscale",
    "upscale_tensor",
]
