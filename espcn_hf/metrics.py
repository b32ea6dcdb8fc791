"""The super-resolution evaluation protocol in one place: uint8 rounding, mod-crop, border crop, Y, PSNR, SSIM.

Every float -> uint8 step of the package goes through :func:`quantize_uint8` and every PSNR/SSIM through
:func:`psnr_ssim` (training validation, `espcn_hf.evaluation`, the model card, the Space). The protocol is the
one of the SRCNN / ESPCN / VDSR / EDSR MATLAB evaluation code:

1. both images are quantized to uint8 levels (:func:`quantize_uint8`: clamp to [0, 1], ``* 255``, round half
   away from zero, MATLAB's ``uint8()``) - a model output is only a picture once it is saved as one;
2. HR is mod-cropped to a multiple of ``scale`` (:func:`mod_crop`; an SR image of the full size is cropped too);
3. ``scale`` pixels are cropped from every border (``crop_border``);
4. metrics are computed on the Y channel of MATLAB's ``rgb2ycbcr`` (BT.601 "studio swing", Y in [16, 235]) in
   float64 on the [0, 255] scale, not rounded, or on all RGB channels;
5. PSNR uses ``MAX = 255``; SSIM is Wang et al. (2004): 11x11 Gaussian window (sigma 1.5, normalised to sum 1),
   K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering, mean of the SSIM map (``ssim_index.m``; no automatic
   downsampling). For RGB, SSIM is the mean over channels.

Hand-written on purpose: the rounding rule, the Y formula and the SSIM constants must match MATLAB's exactly
(published tables are computed that way, and 0.01 dB matters); the general-purpose libraries (torchmetrics,
skimage, OpenCV) use other Y weights, full-range Y, or 'same' SSIM filtering. ``tests/test_metrics.py`` checks
the protocol against the published Set5 bicubic numbers.

Everything runs in torch float64 on the images' device (CPU or CUDA). SSIM filters separably: on CPU as 11
shifted multiply-adds per axis (about 10x faster than ``F.conv2d``, which has no fast float64 CPU kernel), on
other devices as two ``conv2d`` calls.

Accepted images: torch float tensors in [0, 1] of shape ``(N, C, H, W)`` or ``(C, H, W)``; torch uint8
tensors of the same shapes (0-255); numpy uint8 ``H x W x C``, ``H x W`` or ``N x H x W x C``; PIL images.
Numpy float arrays are read as [0, 1], channels last. C is 3 (RGB) or 1 (already a luminance/Y plane, used
as is).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .modeling_espcn import rgb_to_ycbcr, ycbcr_to_rgb

__all__ = [
    "PSNRSSIM",
    "mod_crop",
    "psnr_ssim",
    "quantize_uint8",
    "rgb_to_y",
    "rgb_to_ycbcr",
    "to_uint8_levels",
    "ycbcr_to_rgb",
]

# MATLAB rgb2ycbcr, row Y (BT.601 studio swing): Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 for R, G, B
# in [0, 255]. Written out (not taken from a library) because the protocol needs exactly these constants;
# tests/test_metrics.py checks that the model's own colour conversion (modeling_espcn) uses the same ones.
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0

_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1, _SSIM_K2 = 0.01, 0.03
_MAX_VALUE = 255.0


# --------------------------------------------------------------------------------------------- rounding
def to_unit_float(x: Any, dtype: torch.dtype | np.dtype | None = None) -> torch.Tensor | np.ndarray:
    """THE uint8 -> float rule of the package, the inverse of `quantize_uint8` on its levels: ``x / 255``.

    A division, not a multiplication by ``1 / 255``, so the values equal ``uint8 / 255`` in the target dtype
    exactly (DataGenerator, the device sampler and the processor agree bit for bit). Tensors keep their device.

    Args:
        x: a uint8 torch tensor or numpy array (any shape).
        dtype: the float dtype of the result (default float32; torch or numpy dtype to match `x`).
    """
    if torch.is_tensor(x):
        if x.dtype != torch.uint8:
            raise TypeError(f"to_unit_float expects a uint8 tensor, got {x.dtype}")
        return x.to(dtype or torch.float32).div_(_MAX_VALUE)
    arr = np.asarray(x)
    if arr.dtype != np.uint8:
        raise TypeError(f"to_unit_float expects a uint8 array, got {arr.dtype}")
    out = arr.astype(dtype or np.float32)
    out /= _MAX_VALUE
    return out


def quantize_uint8(x: Any) -> torch.Tensor | np.ndarray:
    """THE float -> uint8 rule of the package: clamp to [0, 1], ``* 255``, round half away from zero.

    This is MATLAB's ``uint8(255 * x)`` (saturating, half away from zero), the rule of the published SR
    evaluation code. ``round()`` in torch and numpy rounds half to even and must not be used for images.
    The arithmetic is float64, so the rule is exact for float16/bfloat16/float32 inputs (``x * 255`` and
    ``+ 0.5`` are exact in float64 for them).

    Args:
        x: a torch tensor or a numpy array (any shape) of floats in [0, 1]; uint8 input is returned as is.

    Returns:
        the same kind of object, same shape (and device for tensors), dtype uint8. NaN maps to 0.
    """
    if torch.is_tensor(x):
        if x.dtype == torch.uint8:
            return x
        if not x.is_floating_point():
            raise TypeError(f"quantize_uint8 expects a float or uint8 tensor, got {x.dtype}")
        levels = x.detach().to(torch.float64, copy=True).nan_to_num_(0.0).clamp_(0.0, 1.0)
        return levels.mul_(_MAX_VALUE).add_(0.5).floor_().to(torch.uint8)
    arr = np.asarray(x)
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"quantize_uint8 expects a float or uint8 array, got {arr.dtype}")
    levels = np.clip(np.nan_to_num(arr.astype(np.float64), nan=0.0), 0.0, 1.0)
    return np.floor(levels * _MAX_VALUE + 0.5).astype(np.uint8)


def mod_crop(x: Any, scale: int) -> Any:
    """Crop the last two dims (H, W) of a tensor (or the first two of an H x W (x C) numpy array) to multiples
    of ``scale``, keeping the top-left corner."""
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    scale = int(scale)
    if isinstance(x, np.ndarray):
        h, w = x.shape[:2]
        return x[: h - h % scale, : w - w % scale]
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


# --------------------------------------------------------------------------------------------- colour spaces
def _y_from_levels(rgb: torch.Tensor) -> torch.Tensor:
    """Y on [0, 255] from a float ``(..., 3, H, W)`` tensor already on the [0, 255] scale."""
    w = torch.tensor(Y_WEIGHTS, dtype=rgb.dtype, device=rgb.device) / _MAX_VALUE
    return Y_OFFSET + torch.einsum("c,...chw->...hw", w, rgb).unsqueeze(-3)


def rgb_to_y(img: Any) -> torch.Tensor | np.ndarray:
    """Luma Y of MATLAB ``rgb2ycbcr``: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``, R, G, B in [0, 255].

    The result is always on the [0, 255] scale (white -> 235, black -> 16) and is not rounded.

    * torch float tensor ``(..., 3, H, W)`` in [0, 1] -> same dtype, shape ``(..., 1, H, W)``;
    * torch uint8 tensor ``(..., 3, H, W)`` -> float64, shape ``(..., 1, H, W)``;
    * numpy uint8 (or [0, 1] float) ``H x W x 3`` (or ``... x 3``) -> float64 numpy, shape ``H x W``.
    """
    if torch.is_tensor(img):
        if img.dim() < 3 or img.shape[-3] != 3:
            raise ValueError(f"rgb_to_y expects shape (..., 3, H, W), got {tuple(img.shape)}")
        return _y_from_levels(img.to(torch.float64) if not img.is_floating_point() else img * _MAX_VALUE)
    arr = np.asarray(img)
    if arr.ndim < 3 or arr.shape[-1] != 3:
        raise ValueError(f"rgb_to_y expects a channels-last ... x 3 array, got shape {arr.shape}")
    rgb = arr.astype(np.float64) if arr.dtype == np.uint8 else arr.astype(np.float64) * _MAX_VALUE
    return Y_OFFSET + rgb @ (np.asarray(Y_WEIGHTS) / _MAX_VALUE)


# --------------------------------------------------------------------------------------------- input handling
def to_uint8_levels(img: Any, device: torch.device | str | None = None) -> torch.Tensor:
    """Any accepted image (see the module docstring) as a float64 ``(N, C, H, W)`` tensor of uint8 levels
    (integers in [0, 255], floats quantized by :func:`quantize_uint8`)."""
    if torch.is_tensor(img):
        t = img.unsqueeze(0) if img.dim() == 3 else img
        if t.dim() != 4:
            raise ValueError(f"expected a (N, C, H, W) or (C, H, W) tensor, got {tuple(img.shape)}")
        t = quantize_uint8(t).to(torch.float64)
        return t if device is None else t.to(device)
    if hasattr(img, "mode") and hasattr(img, "size") and not isinstance(img, np.ndarray):  # PIL image
        img = img.convert("RGB") if img.mode not in ("RGB", "L") else img
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected an H x W (x C) or N x H x W x C array, got shape {arr.shape}")
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"expected a uint8 or float array, got {arr.dtype}")
    # astype copies (arrays of PIL images are read-only)
    t = torch.from_numpy(quantize_uint8(arr).astype(np.float64)).permute(0, 3, 1, 2)
    return t if device is None else t.to(device)


def _prepare(
    sr: Any, hr: Any, scale: int, y_channel: bool, crop_border: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-4 of the protocol. Returns float64 (N, C, H, W) on [0, 255], on the device of the tensor input."""
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    scale = int(scale)
    device = sr.device if torch.is_tensor(sr) else (hr.device if torch.is_tensor(hr) else None)
    sr_t, hr_t = to_uint8_levels(sr, device), to_uint8_levels(hr, device)
    hr_t, sr_t = mod_crop(hr_t, scale), mod_crop(sr_t, scale)
    if sr_t.shape != hr_t.shape:
        raise ValueError(
            f"sr {tuple(sr_t.shape)} and mod-cropped hr {tuple(hr_t.shape)} must have the same shape (N, C, H, W)"
        )
    if sr_t.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {sr_t.shape[1]}")
    border = scale if crop_border is None else int(crop_border)
    if border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if border:
        if 2 * border >= min(sr_t.shape[-2:]):
            raise ValueError(f"crop_border={border} leaves nothing of a {tuple(sr_t.shape[-2:])} image")
        sr_t = sr_t[..., border:-border, border:-border]
        hr_t = hr_t[..., border:-border, border:-border]
    if y_channel and sr_t.shape[1] == 3:
        sr_t, hr_t = _y_from_levels(sr_t), _y_from_levels(hr_t)  # -> Y in [16, 235], not rounded
    return sr_t, hr_t


# --------------------------------------------------------------------------------------------- SSIM filter
def _gaussian_1d() -> tuple[float, ...]:
    # fspecial('gaussian', 11, 1.5) is the outer product of this normalised 1-D kernel.
    coords = np.arange(_SSIM_WINDOW, dtype=np.float64) - (_SSIM_WINDOW - 1) / 2.0
    g = np.exp(-(coords**2) / (2.0 * _SSIM_SIGMA**2))
    return tuple(float(v) for v in g / g.sum())


_GAUSSIAN = _gaussian_1d()


def _filter_valid_shifted(x: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of the last two dims as 11 shifted multiply-adds per axis."""
    taps = len(_GAUSSIAN)
    h = x.shape[-2] - taps + 1
    rows = x[..., 0:h, :] * _GAUSSIAN[0]
    for k in range(1, taps):
        rows.add_(x[..., k : k + h, :], alpha=_GAUSSIAN[k])
    w = x.shape[-1] - taps + 1
    out = rows[..., 0:w] * _GAUSSIAN[0]
    for k in range(1, taps):
        out.add_(rows[..., k : k + w], alpha=_GAUSSIAN[k])
    return out


def _filter_valid_conv(x: torch.Tensor) -> torch.Tensor:
    """The same filtering as two ``conv2d`` calls (column kernel, then row kernel)."""
    g = torch.tensor(_GAUSSIAN, dtype=x.dtype, device=x.device)
    shape = x.shape
    flat = x.reshape(-1, 1, *shape[-2:])
    flat = F.conv2d(F.conv2d(flat, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))
    return flat.reshape(*shape[:-2], *flat.shape[-2:])


def _filter_valid(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``filter2(fspecial('gaussian', 11, 1.5), x, 'valid')`` over the last two dims."""
    return _filter_valid_shifted(x) if x.device.type == "cpu" else _filter_valid_conv(x)


# Output rows per block of the CPU SSIM: the five statistics of a block stay in cache while they are filtered
# (about 3.5x faster than filtering whole Urban100 images at once, measured on one core).
_SSIM_CPU_ROWS = 32


def _ssim_map_sum(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over rows and columns of the SSIM map of float64 (B, H, W) planes on [0, 255] -> (B,)."""
    # All five statistics in one batched filtering.
    mu_x, mu_y, xx, yy, xy = _filter_valid(torch.stack([x, y, x * x, y * y, x * y])).unbind(0)
    mu_x2, mu_y2, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    sigma_x2, sigma_y2, sigma_xy = xx - mu_x2, yy - mu_y2, xy - mu_xy
    c1, c2 = (_SSIM_K1 * _MAX_VALUE) ** 2, (_SSIM_K2 * _MAX_VALUE) ** 2
    ssim_map = ((2 * mu_xy + c1) * (2 * sigma_xy + c2)) / ((mu_x2 + mu_y2 + c1) * (sigma_x2 + sigma_y2 + c2))
    return ssim_map.sum(dim=(-2, -1))


def _ssim_levels(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of float64 (N, C, H, W) tensors on [0, 255] (mean of the map over all channels)."""
    n, c, h, w = x.shape
    if min(h, w) < _SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} after cropping, got {h}x{w}"
        )
    x, y = x.reshape(n * c, h, w), y.reshape(n * c, h, w)
    out_h, out_w = h - _SSIM_WINDOW + 1, w - _SSIM_WINDOW + 1
    if x.device.type != "cpu":
        total = _ssim_map_sum(x, y)
    else:  # in blocks of output rows (with their 10-row halo), see _SSIM_CPU_ROWS
        total = torch.zeros(n * c, dtype=x.dtype)
        for top in range(0, out_h, _SSIM_CPU_ROWS):
            bottom = min(top + _SSIM_CPU_ROWS, out_h) + _SSIM_WINDOW - 1
            total += _ssim_map_sum(x[:, top:bottom], y[:, top:bottom])
    # Channel mean for RGB == mean over all channel maps.
    return (total / (out_h * out_w)).reshape(n, c).mean(dim=1)


# --------------------------------------------------------------------------------------------- the metrics
class PSNRSSIM(NamedTuple):
    """Per-image scores: float64 tensors of shape (N,) on the images' device (`float()` of a one-image one)."""

    psnr: torch.Tensor
    ssim: torch.Tensor | None


def psnr_ssim(
    sr: Any,
    hr: Any,
    scale: int,
    *,
    y_channel: bool = True,
    crop_border: int | None = None,
    with_ssim: bool = True,
) -> PSNRSSIM:
    """PSNR (dB) and SSIM of each image of ``sr`` against ``hr`` under the standard SR protocol, in one call.

    Args:
        sr, hr: images as described in the module docstring (same number of images). Floats are quantized
            with :func:`quantize_uint8`; ``hr`` is mod-cropped to ``scale``.
        scale (`int`): SR factor; HR is mod-cropped to it and it is the default border crop.
        y_channel (`bool`, defaults to `True`): evaluate on MATLAB's Y (BT.601 studio swing), else on RGB.
        crop_border (`int`, *optional*): pixels removed from each side; defaults to ``scale``.
        with_ssim (`bool`, defaults to `True`): also compute SSIM (the expensive part); else ``ssim`` is None.

    Returns:
        `PSNRSSIM(psnr, ssim)`: float64 tensors of shape (N,). Identical images give PSNR ``inf`` (no cap).
    """
    sr_t, hr_t = _prepare(sr, hr, scale, y_channel, crop_border)
    mse = ((sr_t - hr_t) ** 2).mean(dim=(1, 2, 3))
    psnr_values = 10.0 * torch.log10(_MAX_VALUE**2 / mse)  # mse == 0 -> +inf
    return PSNRSSIM(psnr_values, _ssim_levels(sr_t, hr_t) if with_ssim else None)
