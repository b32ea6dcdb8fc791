"""Image processor for ESPCN.

Like Swin2SR's, it never resizes the model input: it converts to RGB, rescales to [0, 1] and, only when a batch
mixes sizes, pads each image at the bottom/right (edge replication) to the largest size in the batch. The original
sizes and modes travel in the `BatchFeature`, and `post_process_super_resolution` crops the padding off the output
and gives each image back in its own kind: grayscale (L, LA, 16-bit) stays grayscale and untinted, alpha is kept.

It also owns what makes an image acceptable (numbers, finite, at least 2x2, at most `max_pixels`: `ValueError`
otherwise, for PIL images, numpy arrays and tensors alike) and the exact tile loop (`tile_windows`, `run_tiled`)
that `espcn_hf.upscale` and the pipeline both run, so a large image never needs a whole-image forward.

This file imports only numpy, PIL, torch and transformers because it is copied flat into Hub repositories for
`trust_remote_code=True` loading.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

# Decompression-bomb guard: the largest input (in pixels) the processor accepts unless told otherwise. The same
# value as `espcn_hf.image_io.DEFAULT_MAX_PIXELS` (this file is uploaded alone, so it cannot import it; a test
# keeps the two equal).
DEFAULT_MAX_PIXELS = 36_000_000

# Output modes: what `post_process_super_resolution` and `espcn_hf.upscale` give back for each input mode.
_GRAY_16_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_OUTPUT_MODES = {"1": "L", "L": "L", "LA": "LA", "La": "LA", "RGBA": "RGBA", "RGBa": "RGBA", "PA": "RGBA"}
_OUTPUT_MODES.update(dict.fromkeys(_GRAY_16_BIT_MODES, "I;16"))

# Luma of an RGB output for grayscale results: ITU-R BT.601 weights, the ones PIL's convert("L") uses.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# numpy dtype kinds an image may hold: bool, signed and unsigned integers, floating point. Complex numbers, dates,
# time spans, strings and objects are refused (numpy would turn many of them into floats without a word).
_NUMERIC_KINDS = "biuf"
_TORCH_INTEGER_DTYPES = tuple(
    getattr(torch, name)
    for name in ("bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64")
    if hasattr(torch, name)
)


def quantize(values: torch.Tensor, peak: int = 255) -> torch.Tensor:
    """Floats in [0, 1] -> integer levels 0..peak (float64): clamped, scaled, rounded half away from zero.

    The one rounding rule of the project (MATLAB's uint8 cast, BasicSR's tensor2img): the same arithmetic as
    `espcn_hf.metrics.quantize_uint8` (float64, so exact for float32/bf16 inputs; NaN -> 0), repeated here only
    because this file is uploaded alone to Hub repositories; tests/test_image_processing_espcn.py checks that
    the two agree.
    """
    levels = values.detach().to(torch.float64).nan_to_num(0.0).clamp_(0.0, 1.0)
    return levels.mul_(peak).add_(0.5).floor_()


# `quantize_to` looks for values to recompute in blocks of this many elements (a few per million need it).
_LEVEL_BLOCK = 4096


def quantize_to(values: torch.Tensor, dtype: torch.dtype = torch.uint8, peak: int = 255) -> torch.Tensor:
    """`quantize(values, peak).to(dtype)`, equal to it element for element, computed in float32 (fewer bytes per
    pass than the float64 rule: 1.3-2x faster on CPU) and laid out as `values` is in memory. `dtype` must hold
    0..peak (uint8 for 255, int32 for 65535).

    Why it is exact (float32, bfloat16 or float16 input, peak <= 65535): after the clamp, `c = fl(fl(peak * v) +
    0.5)` comes out of two rounded steps, both monotonic, and every integer and half-integer up to peak + 1 is a
    float32. So for the exact level n = floor(peak * v + 0.5), peak * v in [n - 0.5, n + 0.5) gives c in
    [n, n + 1], and c truncated is n unless c is exactly the integer n + 1. The values whose c is an integer (a
    few per million) and NaN are recomputed with `quantize` itself; float64 input goes to `quantize` directly.
    """
    values = values.detach()
    if values.dtype == torch.float64 or not values.is_floating_point() or peak > 65535 or values.ndim == 0:
        return quantize(values, peak).to(dtype)
    # Work in the order the values lie in memory (e.g. (H, W, C) for a channels-last tile), densely.
    order = sorted(range(values.ndim), key=lambda dim: (-values.stride(dim), dim))
    source = values.permute(order)
    levels = source.float().clamp(0.0, 1.0).contiguous()  # a new float32 tensor: the caller's values stay
    levels.mul_(peak).add_(0.5)
    floored = torch.floor(levels)
    suspect = torch.gt(levels, floored).logical_not_().view(-1)  # c is an integer, or NaN
    result = floored.to(dtype)
    size = suspect.numel() - suspect.numel() % _LEVEL_BLOCK
    blocks = torch.nonzero(suspect[:size].view(-1, _LEVEL_BLOCK).any(1)).flatten().tolist()
    if size < suspect.numel():
        blocks.append(size // _LEVEL_BLOCK)
    starts = [block * _LEVEL_BLOCK for block in blocks]
    found = [torch.nonzero(suspect[start : start + _LEVEL_BLOCK]).flatten() + start for start in starts]
    if found and sum(len(index) for index in found):
        index = torch.cat(found)
        coordinates = torch.unravel_index(index, result.shape)
        result.view(-1)[index] = quantize(source[coordinates], peak).to(dtype)
    inverse = sorted(range(values.ndim), key=lambda dim: order[dim])
    return result.permute(inverse)


# 8-bit output is rounded in slabs of rows of about this many values, in a float64 buffer that stays in a core's
# L2 cache and is reused from slab to slab (64 Ki values measured fastest at 1080p on one core, 1.8x faster than
# the float32 passes of `quantize_to` over 256 Ki-value slabs).
_SLAB_VALUES = 1 << 16


def _exact_in_float64(image: torch.Tensor) -> bool:
    """Whether `_quantize_uint8_into` applies: a CPU float tensor of at most 24 significant bits (float32,
    bfloat16, float16), for which 255 * v + 0.5 is exact in float64 (24 + 8 + 1 bits), so truncating it gives
    `quantize`'s level with no float32 tie to look for."""
    return image.device.type == "cpu" and image.dtype in (torch.float32, torch.bfloat16, torch.float16)


def _quantize_uint8_into(image: torch.Tensor, out: torch.Tensor, channels_last: bool) -> None:
    """Round a (C, H, W) float tensor (see `_exact_in_float64`) into the uint8 tensor `out`, (H, W, C) if
    `channels_last` else (C, H, W), by `quantize`'s rule: NaN -> 0, clamped to [0, 1], floor(255 v + 0.5)."""
    channels, height, width = image.shape
    rows = max(1, _SLAB_VALUES // (channels * width))
    buffer = torch.empty(
        (rows, width, channels) if channels_last else (channels, rows, width), dtype=torch.float64
    )
    half = torch.tensor(0.5, dtype=torch.float64)
    for top in range(0, height, rows):
        source = image[:, top : top + rows]
        count = source.shape[1]
        if channels_last:
            levels, target = buffer[:count], out[top : top + count]
            levels.copy_(source.permute(1, 2, 0))
        else:
            levels, target = buffer[:, :count], out[:, top : top + count]
            levels.copy_(source)
        levels.nan_to_num_(0.0).clamp_(0.0, 1.0)
        torch.add(half, levels, alpha=255, out=levels)  # exact: no rounding, whether fused or not
        target.copy_(levels)  # truncation is floor for these values in [0.5, 255.5]


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """A float (C, H, W) tensor in [0, 1] -> uint8 (H, W, C) numpy, contiguous (see `quantize` for the rounding)."""
    image = image.detach()
    channels, height, width = image.shape
    if not _exact_in_float64(image):  # float64 values, or another device: the rule itself
        return quantize_to(image, torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()
    out = np.empty((height, width, channels), np.uint8)
    _quantize_uint8_into(image, torch.from_numpy(out), channels_last=True)
    return out


def to_uint8_planes(image: torch.Tensor) -> np.ndarray:
    """A float (C, H, W) tensor in [0, 1] -> uint8 (C, H, W) numpy, contiguous (see `quantize` for the
    rounding): one plane per channel, which PIL interleaves (`Image.merge`) faster than numpy transposes."""
    image = image.detach()
    if not _exact_in_float64(image):
        return quantize_to(image, torch.uint8).contiguous().cpu().numpy()
    out = np.empty(tuple(image.shape), np.uint8)
    _quantize_uint8_into(image, torch.from_numpy(out), channels_last=False)
    return out


def output_mode(image) -> str:
    """The mode an upscaled copy of `image` gets: "L", "LA", "I;16" (16-bit grayscale), "RGBA" or "RGB".

    Grayscale stays grayscale and alpha is kept; everything else (palette without transparency, CMYK, YCbCr, ...)
    comes back RGB. Numpy arrays and tensors: (H, W) or one channel -> "L" ("I;16" for uint16), else "RGB".
    """
    if isinstance(image, Image.Image):
        if image.mode == "P" and "transparency" in image.info:
            return "RGBA"
        return _OUTPUT_MODES.get(image.mode, "RGB")
    shape = tuple(getattr(image, "shape", ()))
    gray = len(shape) == 2 or (
        len(shape) == 3 and 1 in (shape[0], shape[-1]) and not {3, 4} & {shape[0], shape[-1]}
    )
    if not gray:
        return "RGB"
    return "I;16" if getattr(image, "dtype", None) == np.uint16 else "L"


def exif_transpose(image: Image.Image) -> Image.Image:
    """`ImageOps.exif_transpose`, with damaged EXIF metadata (a broken byte-order mark, a truncated directory,
    ...) treated as absent: a warning, and the pixels as stored. Damaged metadata is not damaged pixel data."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as error:  # noqa: BLE001 -- Pillow's EXIF parser raises SyntaxError, struct.error, ...
        name = getattr(image, "filename", None) or "image"
        warnings.warn(
            f"{name}: damaged EXIF metadata ignored, orientation not applied ({type(error).__name__}: {error})",
            UserWarning,
            stacklevel=2,
        )
        return image


def split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """(the image with its EXIF orientation applied, its alpha channel as an "L" image or None).

    The orientation is applied first, so the alpha matches the rotated pixels.
    """
    image = exif_transpose(image)
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        image.mode == "P" and "transparency" in image.info
    ):
        return image, image.convert("RGBA").getchannel("A")
    return image, None


def pil_to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any PIL image -> float32 RGB array in [0, 1], shape (H, W, 3), EXIF orientation applied.

    Handles 1, L, P (palette, with or without transparency), LA, RGBA, CMYK, YCbCr, I;16 (16-bit) and I/F modes.
    Transparent pixels keep their colour values (the alpha channel is dropped here; see `split_alpha`).
    """
    image = exif_transpose(image)
    if image.mode in _GRAY_16_BIT_MODES:
        array = np.asarray(image, dtype=np.float64)
        if not np.isfinite(array).all():  # a 32-bit float (F) image: +inf would become white, NaN black
            raise ValueError(f"The {image.mode}-mode image contains NaN or infinite values")
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


def rgb_to_luma(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> (..., 1, H, W) BT.601 luma (PIL's convert("L") weights), clamped first."""
    weights = torch.tensor(_LUMA_WEIGHTS, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image.clamp(0.0, 1.0) * weights).sum(-3, keepdim=True)


def to_output_array(image: torch.Tensor, mode: str = "RGB") -> np.ndarray:
    """A float (3, H, W) model output in [0, 1] -> the numpy array of an image of `mode` (without alpha).

    "RGB"/"RGBA" -> uint8 (H, W, 3); "L"/"LA" -> uint8 (H, W), the BT.601 luma of the (clamped) RGB output, so
    a grayscale input comes back untinted; "I;16" -> uint16 (H, W) luma on 16-bit levels.
    """
    image = image.detach()
    if mode in ("RGB", "RGBA"):
        return to_uint8_hwc(image)
    if mode not in ("L", "LA", "I;16"):
        raise ValueError(f"Unknown output mode {mode!r}: expected RGB, RGBA, L, LA or I;16")
    luma = (rgb_to_luma(image) if image.shape[0] == 3 else image)[0]  # of the clamped RGB picture
    if mode == "I;16":
        return quantize_to(luma, torch.int32, 65535).cpu().numpy().astype(np.uint16)
    return quantize_to(luma, torch.uint8).contiguous().cpu().numpy()


def to_output_image(image: torch.Tensor, mode: str = "RGB") -> Image.Image:
    """A float (3, H, W) model output -> a PIL image of `mode` without alpha ("RGB", "L" or "I;16").

    RGB values laid out plane by plane (not channels-last) are rounded into uint8 planes that PIL interleaves
    (`Image.merge`): the same pixels as `to_output_array`, without a numpy transpose of the whole tile."""
    image = image.detach()
    if mode in ("RGB", "RGBA") and image.shape[0] == 3 and image.stride(0) != 1:
        planes = to_uint8_planes(image)
        size = (planes.shape[2], planes.shape[1])
        return Image.merge("RGB", [Image.frombuffer("L", size, plane, "raw", "L", 0, 1) for plane in planes])
    return Image.fromarray(to_output_array(image, mode))


def upscale_alpha(alpha: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The alpha channel ("L") resized to the output `size` (width, height) with bicubic interpolation."""
    return alpha.resize(size, Image.Resampling.BICUBIC)


def attach_alpha(image: Image.Image, alpha: Image.Image | None) -> Image.Image:
    """`image` ("RGB" or "L") with `alpha` upscaled to its size and put back ("RGBA" or "LA")."""
    if alpha is None:
        return image
    image.putalpha(upscale_alpha(alpha, image.size))
    return image


def tile_windows(
    height: int, width: int, tile: int, margin: int
) -> Iterator[tuple[int, int, int, int, int, int, int, int]]:
    """The tiles of an image of `height` x `width` pixels: for each `tile` x `tile` core, (top, left, bottom,
    right) of the core and (t0, l0, b1, r1) of its input window, the core with `margin` pixels of context on
    each side (clipped at the image border). The cores cover the image exactly once, in raster order."""
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            yield (
                top, left, bottom, right,
                max(top - margin, 0), max(left - margin, 0), min(bottom + margin, height), min(right + margin, width),
            )  # fmt: skip


def run_tiled(
    forward: Callable[[torch.Tensor], torch.Tensor],
    pixel_values: torch.Tensor,
    scale: int,
    tile: int | None,
    margin: int,
    write: Callable[[int, int, torch.Tensor], None],
) -> None:
    """Exact tiled super-resolution: the one tile loop of the project (`espcn_hf.upscale_tensor` and the
    pipeline run through it).

    `forward` maps (N, C, h, w) windows to their (N, C, scale*h, scale*w) outputs. Each `tile` x `tile` core of
    `pixel_values` (N, C, H, W) is run with `margin` pixels of real context around it (clipped at the image
    border, where the network pads exactly as on the whole image) and only the core's output is kept, passed as
    `write(top, left, output)` with coordinates in the output image. With `margin` at least the network's
    receptive-field radius the result equals the untiled one up to float rounding, while the memory of a forward
    is bounded by the tile size. `tile=None` runs the whole image at once.
    """
    height, width = pixel_values.shape[-2:]
    if tile is None:
        write(0, 0, forward(pixel_values))
        return
    for top, left, bottom, right, t0, l0, b1, r1 in tile_windows(height, width, tile, margin):
        out = forward(pixel_values[..., t0:b1, l0:r1])
        write(
            top * scale,
            left * scale,
            out[..., (top - t0) * scale : (bottom - t0) * scale, (left - l0) * scale : (right - l0) * scale],
        )


def check_pixel_values(values: np.ndarray | torch.Tensor, what: str = "The image") -> None:
    """Raise `ValueError` unless `values` (a numpy array or tensor) holds numbers (bool, integers or floating
    point) that are all finite. `what` names the image in the message."""
    if isinstance(values, torch.Tensor):
        floating = values.is_floating_point()
        numeric = floating or values.dtype in _TORCH_INTEGER_DTYPES
        dtype = str(values.dtype).removeprefix("torch.")
        finite = not floating or bool(torch.isfinite(values).all())
    else:
        floating = values.dtype.kind == "f"
        numeric = values.dtype.kind in _NUMERIC_KINDS
        dtype = str(values.dtype)
        finite = not floating or bool(np.isfinite(values).all())
    if not numeric:
        raise ValueError(
            f"{what} holds {dtype} values; images hold numbers (bool, integer or floating point)"
        )
    if not finite:
        raise ValueError(f"{what} contains NaN or infinite values")


def _to_chw_float(image, rescale_factor: float, do_rescale: bool, what: str = "The image") -> torch.Tensor:
    """One image (PIL, numpy HWC/HW/CHW, or torch CHW/HW) -> float32 tensor (3, H, W); `ValueError` for values
    that are not finite numbers (`check_pixel_values`)."""
    if isinstance(image, Image.Image):
        return torch.from_numpy(pil_to_rgb_array(image)).permute(2, 0, 1).contiguous()
    if isinstance(image, (np.ndarray, torch.Tensor)):
        check_pixel_values(image, what)
    if isinstance(image, np.ndarray):
        is_int = np.issubdtype(image.dtype, np.integer)
        if image.dtype.kind == "f":  # in [0, 1] by contract: clamped on the way to float32 (1e300 is no inf)
            values = np.clip(image, 0.0, 1.0, out=np.empty(image.shape, np.float32), casting="same_kind")
        else:
            values = np.ascontiguousarray(image).astype(np.float32)
        tensor = torch.from_numpy(values)
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

    Example:

    ```python
    >>> inputs = processor(Image.open("gray.png"))              # pixel_values, original_sizes, original_modes, alphas
    >>> outputs = model(pixel_values=inputs["pixel_values"])
    >>> (image,) = processor.post_process_super_resolution(outputs, **processor.post_process_kwargs(inputs))
    >>> image.mode                                                # "L": grayscale in, grayscale out
    ```
    """

    model_input_names = ["pixel_values"]
    # save_pretrained writes auto_map into preprocessor_config.json even where register() has not run
    _auto_class = "AutoImageProcessor"

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
        """Images (one or a list: PIL, numpy, torch) -> `BatchFeature` with

        - `pixel_values` (N, 3, H, W) in [0, 1], EXIF orientation applied;
        - `original_sizes` (N, 2): each image's (height, width) before batch padding;
        - `original_modes`: a list of N output modes ("RGB", "RGBA", "L", "LA", "I;16", see `output_mode`);
        - `alphas`: a list of N uint8 (H, W) alpha arrays, None for images without alpha.

        Pass the last three to `post_process_super_resolution` (`post_process_kwargs(inputs)` picks them).
        """
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

        tensors, modes, alphas = [], [], []
        for index, image in enumerate(images):
            if isinstance(image, (str, bytes)):
                raise TypeError(
                    "Pass decoded images (PIL, numpy, torch); load files with espcn_hf.load_image(path) first"
                )
            modes.append(output_mode(image))
            alpha = None
            if isinstance(image, Image.Image):
                image, alpha = split_alpha(image)
            alphas.append(None if alpha is None else np.asarray(alpha))
            tensor = _to_chw_float(image, rescale_factor, do_rescale, what=f"Image {index}")
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
        data.update(original_modes=modes, alphas=alphas)
        return BatchFeature(data=data)

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    @staticmethod
    def post_process_kwargs(inputs) -> dict:
        """The entries of a `preprocess` result that `post_process_super_resolution` takes."""
        keys = ("original_sizes", "original_modes", "alphas")
        return {key: inputs[key] for key in keys if key in inputs}

    def post_process_super_resolution(
        self,
        outputs,
        original_sizes=None,
        upscale_factor: int | None = None,
        output_type: str = "pil",
        original_modes: Sequence[str] | None = None,
        alphas: Sequence[np.ndarray | None] | None = None,
    ):
        """Model output (`ImageSuperResolutionOutput` or a (N, 3, H, W) tensor) -> a list of images.

        Values are clamped to [0, 1] and rounded (see `quantize`); with `original_sizes` (from `preprocess`) the
        padding of a mixed-size batch is cropped off. With `original_modes` and `alphas` each image comes back in
        its input's kind: grayscale as the luma of the output ("L", or 16-bit "I;16"), alpha upscaled with
        bicubic and put back ("LA", "RGBA"); without them every image is RGB.

        `output_type`: "pil"; "np" (uint8 (H, W, C) for RGB, (H, W) for grayscale, uint16 for "I;16", with the
        alpha as a last channel when there is one); or "pt" (float (C, H, W): 3 channels, or 1 for grayscale).
        """
        reconstruction = getattr(outputs, "reconstruction", outputs)
        if not isinstance(reconstruction, torch.Tensor) or reconstruction.ndim != 4:
            raise ValueError("Expected a model output with a (batch, channels, height, width) reconstruction")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        count = reconstruction.shape[0]
        for name, values in (("original_modes", original_modes), ("alphas", alphas)):
            if values is not None and len(values) != count:
                raise ValueError(f"{name} has {len(values)} entries for a batch of {count} images")
        factor = upscale_factor or self.upscale_factor
        if factor is None and original_sizes is not None:
            # the batch was padded to the largest original height, so the output is `factor` times that
            factor = reconstruction.shape[-2] // max(int(size[0]) for size in original_sizes)
        results = []
        for i, image in enumerate(reconstruction.detach().float().cpu()):
            if original_sizes is not None:
                height, width = (int(v) for v in original_sizes[i])
                image = image[:, : height * factor, : width * factor]
            mode = "RGB" if original_modes is None else original_modes[i]
            alpha = None if alphas is None or alphas[i] is None else Image.fromarray(np.asarray(alphas[i]))
            if output_type == "pt":
                image = image.clamp(0.0, 1.0)
                if mode in ("L", "LA", "I;16"):
                    image = rgb_to_luma(image)
                results.append(image)
                continue
            pil = attach_alpha(to_output_image(image, mode), alpha)
            results.append(np.asarray(pil) if output_type == "np" else pil)
        return results


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ESPCNImageProcessor",
    "attach_alpha",
    "check_pixel_values",
    "output_mode",
    "pil_to_rgb_array",
    "quantize",
    "quantize_to",
    "rgb_to_luma",
    "run_tiled",
    "split_alpha",
    "tile_windows",
    "to_output_array",
    "to_output_image",
    "to_uint8_hwc",
    "to_uint8_planes",
    "upscale_alpha",
]
