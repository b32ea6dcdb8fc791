"""The one-call API: `upscale(image, model)`, with exact tiled inference for large images.

Tiling. Every output pixel of ESPCN depends only on low-resolution pixels within `config.receptive_field_radius`
(the sum of kernel_size // 2: 7 for the seven-layer net, 4 for the paper's). The image is cut into
`tile_size` x `tile_size` cores; each core is run with `tile_overlap >= radius` pixels of real context around it
(clipped at the image border, where the network pads exactly as it does on the whole image) and only the core's
output is kept. The result therefore equals the untiled output up to float rounding, while memory is bounded by
the tile size. PIL results are pasted tile by tile into the output image, so no full-size float buffer exists.

Options are explicit and never change the caller's model: `dtype` is the dtype the convolutions compute in
(bfloat16/float16 through `torch.autocast`, the model's weights stay as they are), `memory_format` the layout of
the activations (the input is laid out channels-last; oneDNN and cuDNN then convolve in NHWC), and a `device`
other than the model's runs a temporary copy there. `backend` picks who runs the network: torch, or onnxruntime
on the model's exported graph (`espcn_hf.ort_backend`: the same tiles, within float rounding of torch); `upscale`'s
default "auto" takes onnxruntime on the CPU where it is installed and pays off, torch everywhere else.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from .image_io import (
    DEFAULT_MAX_OUTPUT_PIXELS,
    DEFAULT_MAX_PIXELS,
    ImageLoadError,
    check_output_size,
    load_image,
)
from .image_processing_espcn import (
    ESPCNImageProcessor,
    attach_alpha,
    check_pixel_values,
    rgb_to_luma,
    run_tiled,
    to_output_array,
    to_output_image,
)
from .modeling_espcn import ESPCNForImageSuperResolution
from .ort_backend import BACKENDS, OnnxRuntimeForward, check_backend, resolve_backend
from .pretrained import CheckpointError, load_model  # their home is pretrained.py; re-exported here

# tile_size="auto" on CPU (and other non-CUDA devices): tiles of 256 LR pixels whenever the image is larger.
# On the 2-core AVX-512 CPU 256 px tiles ran 20-35 % faster than a whole 640x360 frame when this default was
# chosen (the working set stays in cache; `scripts/benchmark.py --tile 0` times whole frames), same output. On CUDA "auto" runs whole frames
# when they fit in free memory (tiles only cost launches there), see `auto_tile_size`.
AUTO_TILE_SIZE = 256
# tile_size="auto" with the onnxruntime backend: whole frames up to this many LR pixels (batch included), 256-px
# tiles beyond. onnxruntime ran a whole 640x360 frame (a 1080p x3 output) 15-18 % faster than its 256-px tiles
# at one and two threads, a 320x180 one 0-30 % faster, and gained only 0-6 % from larger tiles on a 1280x720
# frame, while a tiled 4000x3000 x4 job stays at 1.6 GB (2.2 GB with 640-px tiles); the working set of a whole
# frame this large is at most about 220 MB (`_bytes_per_lr_pixel`).
ONNXRUNTIME_WHOLE_FRAME_PIXELS = 512 * 512
MIN_TILE_SIZE = 8
# Fraction of the free CUDA memory a whole-frame run may plan to use (the rest covers cuDNN workspaces and the
# allocator's rounding).
CUDA_MEMORY_FRACTION = 0.5

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}

# Named inference modes, for the benchmarks: keyword arguments of `upscale`.
INFERENCE_MODES = {
    "eager": {"dtype": None, "memory_format": "contiguous"},
    "channels_last": {"dtype": None, "memory_format": "channels_last"},
    "bf16": {"dtype": torch.bfloat16, "memory_format": "channels_last"},
}


def parse_tile_size(value) -> int | str | None:
    """A tile size from Python or the command line -> "auto", None (whole image) or an int >= 8.

    Accepts "auto"; None, 0, "0" and "none" (no tiling); an int or a decimal string >= 8. Anything else raises
    `ValueError` with the accepted forms.
    """
    if value is None or value == "auto":
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", "none"):
            return None if text == "none" else "auto"
        if text.isdigit():
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool):
        if value == 0:
            return None
        if value >= MIN_TILE_SIZE:
            return value
    raise ValueError(
        f"tile_size must be 'auto', None/0/'none' (no tiling) or an integer >= {MIN_TILE_SIZE}, got {value!r}"
    )


def _bytes_per_lr_pixel(config, element_size: int) -> int:
    """Peak bytes per low-resolution pixel of one image in a whole-frame forward (an upper estimate)."""
    r, c = config.upscale_factor, config.num_channels
    channels = [3, *config.hidden_channels, r * r * c]
    activations = max(a + b for a, b in zip(channels, channels[1:], strict=False)) * element_size
    return activations + 3 * r * r * 4 * 3  # + the fp32 output, the pixel-shuffled copy and colour conversion


def auto_tile_size(
    config,
    batch: int,
    height: int,
    width: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    free_bytes: int | None = None,
    backend: str = "torch",
) -> int | None:
    """What tile_size="auto" means for this input on this device and backend: None (whole frame) or a tile size.

    - CUDA: the whole frame when its estimated working set fits in `CUDA_MEMORY_FRACTION` of the free memory
      (`torch.cuda.mem_get_info`, or `free_bytes`), otherwise the largest multiple of 64 that fits.
    - onnxruntime (CPU): the whole frame up to `ONNXRUNTIME_WHOLE_FRAME_PIXELS` LR pixels (batch included),
      `AUTO_TILE_SIZE` beyond.
    - torch on CPU and other devices: `AUTO_TILE_SIZE` (256), measured faster than whole frames on CPU.
    """
    device = torch.device(device)
    if backend == "onnxruntime":
        return None if batch * height * width <= ONNXRUNTIME_WHOLE_FRAME_PIXELS else AUTO_TILE_SIZE
    if device.type != "cuda":
        return AUTO_TILE_SIZE
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    per_pixel = batch * _bytes_per_lr_pixel(config, torch.finfo(dtype).bits // 8)
    budget = free_bytes * CUDA_MEMORY_FRACTION
    if height * width * per_pixel <= budget:
        return None
    side = math.isqrt(int(budget // per_pixel)) - 2 * config.receptive_field_radius
    return max(64, side // 64 * 64)


def resolve_tiling(
    config,
    height: int,
    width: int,
    tile_size: int | str | None,
    tile_overlap: int | None,
    *,
    batch: int = 1,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    backend: str = "torch",
) -> tuple[int | None, int]:
    """Validate the tiling options; returns (tile or None for the whole image, overlap). `backend` is the resolved
    one ("torch" or "onnxruntime"), which "auto" tiles for."""
    radius = config.receptive_field_radius
    overlap = radius if tile_overlap is None else tile_overlap
    if not isinstance(overlap, int) or isinstance(overlap, bool) or overlap < radius:
        raise ValueError(
            f"tile_overlap must be an integer >= the receptive-field radius ({radius} px) for exact tiling, got {overlap!r}"
        )
    tile = parse_tile_size(tile_size)
    if tile == "auto":
        tile = auto_tile_size(config, batch, height, width, device, dtype, backend=backend)
    if tile is not None and tile >= height and tile >= width:
        tile = None
    return tile, overlap


def resolve_options(
    dtype: torch.dtype | str | None = None,
    memory_format: torch.memory_format | str = "channels_last",
) -> tuple[torch.dtype | None, torch.memory_format]:
    """Validate the inference options; returns (dtype or None for the model's own, memory format)."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be None, a torch dtype or one of {tuple(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    if dtype is not None and dtype not in DTYPES.values():
        raise ValueError(f"dtype must be None, torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    if isinstance(memory_format, str):
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(
                f"memory_format must be one of {tuple(MEMORY_FORMATS)} (or the torch object), got {memory_format!r}"
            )
        memory_format = MEMORY_FORMATS[memory_format]
    if memory_format not in MEMORY_FORMATS.values():
        raise ValueError(
            f"memory_format must be torch.channels_last or torch.contiguous_format, got {memory_format!r}"
        )
    return dtype, memory_format


def _dtype_context(model: torch.nn.Module, dtype: torch.dtype | None):
    """(model to run, context): the model itself under autocast for a lower dtype, a temporary copy for a
    higher one; the caller's model is never converted."""
    param = next(model.parameters())
    if dtype is None or dtype == param.dtype:
        return model, contextlib.nullcontext()
    if torch.finfo(dtype).bits < torch.finfo(param.dtype).bits:
        return model, torch.autocast(param.device.type, dtype=dtype)
    return copy.deepcopy(model).to(dtype=dtype), contextlib.nullcontext()


@torch.inference_mode()
def upscale_tensor(
    model: ESPCNForImageSuperResolution,
    pixel_values: torch.Tensor,
    tile_size: int | str | None = "auto",
    tile_overlap: int | None = None,
    *,
    dtype: torch.dtype | str | None = None,
    memory_format: torch.memory_format | str = "channels_last",
    write: Callable[[int, int, torch.Tensor], None] | None = None,
    backend: str = "torch",
) -> torch.Tensor | None:
    """Run the model on (N, C, H, W) values in [0, 1], whole or tiled, on the model's device.

    Args:
        tile_size: "auto" (see `auto_tile_size`), None/0 (whole image) or the core size in LR pixels (>= 8).
        tile_overlap: context pixels around each tile; at least (and by default) the receptive-field radius.
        dtype: the dtype the convolutions compute in; None = the model's own (fp32: exact). torch.bfloat16 is
            several times faster on AMX CPUs and GPUs, about 50-60 dB PSNR from fp32 (benchmarks/speed_cpu.md).
        memory_format: "channels_last" (default: the input is laid out NHWC, about 1.7x faster than NCHW on CPU,
            same numbers) or "contiguous".
        write: if given, called as `write(top, left, tile_output)` for each output tile (coordinates in the
            output) and None is returned, so the caller can store tiles in any format without a full-size float
            buffer.
        backend: "torch" (default here), "onnxruntime" (the model's exported graph on the CPU, float32, within
            1e-4 of torch; needs the `onnx` extra) or "auto" (`espcn_hf.ort_backend.resolve_backend`: onnxruntime
            where it is the faster one). `memory_format` is torch's option only.

    Returns the (N, C, rH, rW) float32 output (not clamped), or None with `write`.
    """
    dtype, memory_format = resolve_options(dtype, memory_format)
    config = model.config
    r = config.upscale_factor
    height, width = pixel_values.shape[-2:]
    param = next(model.parameters())
    backend, key = resolve_backend(backend, model, dtype, pixel_values.shape[0] * height * width)
    tile, margin = resolve_tiling(
        config, height, width, tile_size, tile_overlap,
        batch=pixel_values.shape[0], device=param.device, dtype=dtype or param.dtype, backend=backend,
    )  # fmt: skip
    pixel_values = pixel_values.to(param.device)
    if backend == "onnxruntime":
        run = OnnxRuntimeForward(model, key)
    else:
        runner, context = _dtype_context(model, dtype)

        def run(window: torch.Tensor) -> torch.Tensor:
            window = window.contiguous(memory_format=memory_format)  # the model casts to its own dtype
            with context:
                return runner(window).reconstruction.float()

    if tile is None and write is None:
        return run(pixel_values)
    result = None
    if write is None:
        result = torch.empty(
            (*pixel_values.shape[:-3], pixel_values.shape[-3], height * r, width * r), device=param.device
        )

        def write(top: int, left: int, out: torch.Tensor) -> None:
            result[..., top : top + out.shape[-2], left : left + out.shape[-1]] = out

    run_tiled(run, pixel_values, r, tile, margin, write)  # the tile loop of image_processing_espcn
    return result


def placed_model(
    model: str | os.PathLike | ESPCNForImageSuperResolution, device: str | torch.device | None = None
) -> ESPCNForImageSuperResolution:
    """The model to run on `device`, placed once per call or job: loaded from a path/repo id (`load_model`), or
    the caller's own instance, as it is, or a copy when it lives on another device (the caller's model is never
    moved or converted)."""
    if not isinstance(model, ESPCNForImageSuperResolution):
        return load_model(model, device=device)
    if device is None:
        return model
    current, wanted = next(model.parameters()).device, torch.device(device)
    if current.type == wanted.type and (wanted.index is None or wanted.index == current.index):
        return model
    return copy.deepcopy(model).to(wanted)


def upscale(
    image,
    model: str | os.PathLike | ESPCNForImageSuperResolution,
    *,
    tile_size: int | str | None = "auto",
    tile_overlap: int | None = None,
    dtype: torch.dtype | str | None = None,
    memory_format: torch.memory_format | str = "channels_last",
    device: str | torch.device | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
    backend: str = "auto",
):
    """Super-resolve one image (or a list of images) with an ESPCN model.

    Args:
        image: a path, PIL image, numpy array ((H, W[, C]), or a batch (N, H, W, C)) or tensor ((C, H, W) or
            (N, C, H, W), floats in [0, 1]). A list of those gives a list back.
        model: an `ESPCNForImageSuperResolution` (used as it is, never modified), a folder written by
            `save_pretrained`, or a Hub repo id (loaded on each call: load it once with `load_model` to reuse).
        tile_size: "auto" (whole frames on CUDA when they fit, 256-px tiles on CPU, whole frames up to 512x512 LR
            pixels with onnxruntime), None (whole image) or the core size in LR pixels; the tiled result equals
            the untiled one.
        tile_overlap: context pixels around each tile; at least (and by default) the receptive-field radius.
        dtype: compute dtype; None = the model's own (fp32, exact), torch.bfloat16 (or "bf16") is faster on AMX
            CPUs and GPUs but about 50-60 dB from fp32. See `upscale_tensor`.
        memory_format: "channels_last" (default, faster, same numbers) or "contiguous".
        device: where to run ("cpu", "cuda", ...); default: where the model is. A model elsewhere is copied there
            for the call.
        max_pixels: refuse larger inputs (decompression-bomb guard, checked before decoding); None disables.
        max_output_pixels: refuse inputs whose output would be larger (default 200 Mpx keeps a tiled run under
            2 GB of memory); None disables.
        backend: "auto" (default: onnxruntime on the CPU in float32 where it is installed and its exported graph
            is at hand or worth exporting, torch otherwise; see `espcn_hf.ort_backend`), "torch", or
            "onnxruntime" (the `onnx` extra; the same pixels as torch within float rounding).

    Returns, in the input's kind:
        - path or PIL image: a PIL image. Grayscale stays grayscale ("L", "LA", 16-bit "I;16": the luma of the
          output, so no tint); alpha is upscaled with bicubic and kept ("RGBA", "LA"); everything else is "RGB".
        - numpy array: uint8 (rH, rW, 3), or (rH, rW) for a grayscale (H, W) array (uint16 for uint16 input); a
          batch (N, H, W, C) gives every image back, (N, rH, rW, 3).
        - tensor: float in [0, 1], same layout; a 1-channel tensor gives 1 channel (luma) back.

    Raises `ImageLoadError` (a `ValueError`) for unreadable or oversized images (a file's sizes are checked from
    its header, before decoding), `ValueError` for bad options, NaN/infinite values or values that are not
    numbers (complex, dates, strings, objects).
    """
    dtype, memory_format = resolve_options(dtype, memory_format)
    tile_size = parse_tile_size(tile_size)
    options = dict(
        tile_size=tile_size, tile_overlap=tile_overlap, dtype=dtype, memory_format=memory_format,
        max_pixels=max_pixels, max_output_pixels=max_output_pixels, backend=check_backend(backend),
    )  # fmt: skip
    model = placed_model(model, device)
    if isinstance(image, (list, tuple)):
        return [_upscale_one(item, model, **options) for item in image]
    return _upscale_one(image, model, **options)


def _upscale_one(image, model, *, max_pixels, max_output_pixels, **run_options):
    r = model.config.upscale_factor
    if isinstance(image, torch.Tensor):
        batch = image if image.ndim == 4 else image[None]
        if batch.ndim != 4 or batch.shape[1] not in (1, 3):
            raise ValueError(
                f"A tensor image must be (C, H, W) or (N, C, H, W) with C = 1 or 3, got {tuple(image.shape)}"
            )
        check_pixel_values(batch, "The tensor image")  # numbers, finite: the image processor's rule
        if not batch.is_floating_point():
            raise ValueError(f"A tensor image must hold floats in [0, 1], got {batch.dtype}")
        height, width = batch.shape[-2:]
        if max_pixels is not None and height * width > max_pixels:
            raise ImageLoadError(
                f"{width}x{height} = {height * width:,} pixels is over the limit of {max_pixels:,}"
            )
        check_output_size(width, height, r, max_output_pixels)
        gray = batch.shape[1] == 1 and model.config.num_channels == 3
        if gray:  # a grayscale tensor through an RGB model: grey in, its luma out (1 channel)
            batch = batch.expand(-1, 3, -1, -1)
        out = upscale_tensor(model, batch.float(), **run_options).clamp(0, 1)
        if gray:
            out = rgb_to_luma(out).clamp(0, 1)
        out = out.to(image.device)
        return out if image.ndim == 4 else out[0]

    if isinstance(image, (str, os.PathLike, bytes)) or hasattr(image, "read"):
        # both limits are checked from the header, before the image is decoded
        image = load_image(image, max_pixels=max_pixels, scale=r, max_output_pixels=max_output_pixels)
    if not isinstance(image, (Image.Image, np.ndarray)):
        raise ImageLoadError(
            f"Cannot upscale a {type(image).__name__}: pass a path, PIL image, numpy array or tensor"
        )
    if isinstance(image, np.ndarray) and image.ndim == 4:  # a batch (N, H, W, C): every image, stacked
        if len(image) == 0:
            raise ValueError("The numpy batch holds no images")
        results = None
        for index, item in enumerate(image):
            result = _upscale_one(
                item, model, max_pixels=max_pixels, max_output_pixels=max_output_pixels, **run_options
            )
            if results is None:
                results = np.empty((len(image), *result.shape), result.dtype)
            results[index] = result
        return results
    if isinstance(image, Image.Image):  # before any conversion: the size alone decides
        check_output_size(image.width, image.height, r, max_output_pixels)
    features = ESPCNImageProcessor(max_pixels=max_pixels)(image)
    pixel_values = features["pixel_values"]
    mode, alpha = features["original_modes"][0], features["alphas"][0]
    height, width = pixel_values.shape[-2:]
    check_output_size(width, height, r, max_output_pixels)

    if isinstance(image, Image.Image):
        # not initialised (color=None): the tiles' cores cover every pixel exactly once
        result = Image.new({"RGBA": "RGB", "LA": "L"}.get(mode, mode), (width * r, height * r), None)

        def paste(top: int, left: int, tile: torch.Tensor) -> None:
            result.paste(to_output_image(tile[0], mode), (left, top))

        upscale_tensor(model, pixel_values, write=paste, **run_options)
        return attach_alpha(result, None if alpha is None else Image.fromarray(alpha))

    shape = (height * r, width * r) if mode in ("L", "I;16") else (height * r, width * r, 3)
    array = np.empty(shape, dtype=np.uint16 if mode == "I;16" else np.uint8)

    def store(top: int, left: int, tile: torch.Tensor) -> None:
        h, w = tile.shape[-2:]
        array[top : top + h, left : left + w] = to_output_array(tile[0], mode)

    upscale_tensor(model, pixel_values, write=store, **run_options)
    return array[..., None] if image.ndim == 3 and array.ndim == 2 else array


__all__ = [
    "AUTO_TILE_SIZE",
    "BACKENDS",
    "ONNXRUNTIME_WHOLE_FRAME_PIXELS",
    "INFERENCE_MODES",
    "CheckpointError",
    "auto_tile_size",
    "load_model",
    "parse_tile_size",
    "placed_model",
    "resolve_options",
    "resolve_tiling",
    "upscale",
    "upscale_tensor",
]
