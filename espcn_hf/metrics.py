"""PSNR / SSIM following the standard super-resolution evaluation protocol, and BT.601 colour conversion.

The protocol (SRCNN, ESPCN, VDSR, EDSR, ... MATLAB evaluation code):

1. both images are quantized to uint8 levels (clamp to [0, 1], round) - a model output is only a picture once
   it is saved as one;
2. HR is mod-cropped to a multiple of ``scale`` (the SR output should already have that size);
3. ``scale`` pixels are cropped from every border (``crop_border``);
4. metrics are computed on the Y channel of MATLAB's ``rgb2ycbcr`` (BT.601 "studio swing",
   Y in [16, 235]) as float64 on the [0, 255] scale, or on all RGB channels;
5. PSNR uses ``MAX = 255``; SSIM is Wang et al. (2004): 11x11 Gaussian window (sigma 1.5, normalised to sum 1),
   K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering, mean of the SSIM map (like ``ssim_index.m``; no
   automatic downsampling). For RGB, SSIM is the mean over channels.

Everything is computed with torch in float64, so it runs on the tensors' device (CPU or CUDA).

Accepted images: torch float tensors in [0, 1] of shape ``(N, C, H, W)`` or ``(C, H, W)``; torch uint8
tensors of the same shapes (0-255); numpy uint8 ``H x W x C``, ``H x W`` or ``N x H x W x C``; PIL images.
Numpy float arrays are read as [0, 1], channels last. C is 3 (RGB) or 1 (already a luminance/Y plane, used
as is).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .degradation import mod_crop
from .modeling_espcn import _RGB_TO_YCBCR, rgb_to_ycbcr, ycbcr_to_rgb

__all__ = [
    "psnr",
    "psnr_per_image",
    "rgb_to_y",
    "rgb_to_ycbcr",
    "ssim",
    "ssim_per_image",
    "to_uint8_levels",
    "ycbcr_to_rgb",
]

# One definition of MATLAB's rgb2ycbcr (BT.601 studio swing) for the package: the model's Y-channel mode and
# the metrics must agree, so both use the matrix in modeling_espcn.py (row 0 = Y weights / 255).
_Y_WEIGHTS = (_RGB_TO_YCBCR[0] * 255.0).numpy()  # 65.481, 128.553, 24.966

_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1, _SSIM_K2 = 0.01, 0.03
_MAX_VALUE = 255.0


# --------------------------------------------------------------------------------------------- colour spaces
def _y_from_levels(rgb: torch.Tensor) -> torch.Tensor:
    """Y on [0, 255] from a float ``(..., 3, H, W)`` tensor already on the [0, 255] scale."""
    w = torch.as_tensor(_Y_WEIGHTS / _MAX_VALUE, dtype=rgb.dtype, device=rgb.device)
    return 16.0 + torch.einsum("c,...chw->...hw", w, rgb).unsqueeze(-3)


def rgb_to_y(img: Any) -> torch.Tensor | np.ndarray:
    """Luma Y of MATLAB ``rgb2ycbcr``: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``, R, G, B in [0, 255].

    The result is always on the [0, 255] scale (white -> 235, black -> 16) and is not rounded.

    * torch float tensor ``(..., 3, H, W)`` in [0, 1] -> same dtype, shape ``(..., 1, H, W)``;
    * torch uint8 tensor ``(..., 3, H, W)`` -> float64, shape ``(..., 1, H, W)``;
    * numpy uint8 (or [0, 1] float) ``H x W x 3`` (or ``... x 3``) -> float64 numpy, shape ``H x W``.
    """
    weights = _Y_WEIGHTS / _MAX_VALUE
    if torch.is_tensor(img):
        if img.dim() < 3 or img.shape[-3] != 3:
            raise ValueError(f"rgb_to_y expects shape (..., 3, H, W), got {tuple(img.shape)}")
        return _y_from_levels(img.to(torch.float64) if not img.is_floating_point() else img * _MAX_VALUE)
    arr = np.asarray(img)
    if arr.ndim < 3 or arr.shape[-1] != 3:
        raise ValueError(f"rgb_to_y expects a channels-last ... x 3 array, got shape {arr.shape}")
    rgb = arr.astype(np.float64) if arr.dtype == np.uint8 else arr.astype(np.float64) * _MAX_VALUE
    return 16.0 + rgb @ weights


# --------------------------------------------------------------------------------------------- input handling
def to_uint8_levels(img: Any, device: torch.device | None = None) -> torch.Tensor:
    """Convert any accepted image (see module docstring) to a float64 ``(N, C, H, W)`` tensor of integer
    values in [0, 255]: floats in [0, 1] are clamped and rounded half away from zero (like MATLAB's uint8 cast).
    """
    if torch.is_tensor(img):
        t = img
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.dim() != 4:
            raise ValueError(f"expected a (N, C, H, W) or (C, H, W) tensor, got {tuple(img.shape)}")
        if t.is_floating_point():
            t = torch.floor(t.detach().to(torch.float64).clamp(0.0, 1.0) * _MAX_VALUE + 0.5)
        elif t.dtype == torch.uint8:
            t = t.to(torch.float64)
        else:
            raise TypeError(f"expected a float or uint8 tensor, got {t.dtype}")
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
    if arr.dtype == np.uint8:
        t = torch.from_numpy(arr.astype(np.float64))  # copies (PIL arrays are read-only)
    elif np.issubdtype(arr.dtype, np.floating):
        t = torch.floor(torch.from_numpy(np.clip(arr.astype(np.float64), 0.0, 1.0)) * _MAX_VALUE + 0.5)
    else:
        raise TypeError(f"expected a uint8 or float array, got {arr.dtype}")
    t = t.permute(0, 3, 1, 2)
    return t if device is None else t.to(device)


def _prepare(
    sr: Any, hr: Any, scale: int, y_channel: bool, crop_border: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize, mod-crop, border-crop and (optionally) take Y. Returns float64 (N, C, H, W) on [0, 255]."""
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    scale = int(scale)
    device = sr.device if torch.is_tensor(sr) else (hr.device if torch.is_tensor(hr) else None)
    sr_t, hr_t = to_uint8_levels(sr, device), to_uint8_levels(hr, device)
    # HR is mod-cropped; an SR image given at the full original size is cropped the same way.
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


# --------------------------------------------------------------------------------------------- PSNR
def psnr_per_image(
    sr: Any, hr: Any, scale: int, y_channel: bool = True, crop_border: int | None = None
) -> list[float]:
    """PSNR in dB of each image of the batch (see :func:`psnr`). Identical images give ``float('inf')``."""
    sr_t, hr_t = _prepare(sr, hr, scale, y_channel, crop_border)
    mse = ((sr_t - hr_t) ** 2).mean(dim=(1, 2, 3))
    values = 10.0 * torch.log10(_MAX_VALUE**2 / mse)  # mse == 0 -> +inf
    return [float(v) for v in values.cpu()]


def psnr(sr: Any, hr: Any, scale: int, y_channel: bool = True, crop_border: int | None = None) -> float:
    """PSNR (dB) of ``sr`` against ``hr`` with the standard SR protocol, averaged over the batch.

    Args:
        sr, hr: images as described in the module docstring (same number of images).
        scale (`int`): SR factor; HR is mod-cropped to it and it is the default border crop.
        y_channel (`bool`, defaults to `True`): evaluate on MATLAB's Y (BT.601), else on RGB.
        crop_border (`int`, *optional*): pixels removed from each side; defaults to ``scale``.

    Returns:
        `float`: mean PSNR in dB; ``inf`` if any pair is identical (no cap is applied).
    """
    values = psnr_per_image(sr, hr, scale, y_channel, crop_border)
    return math.fsum(values) / len(values)


# --------------------------------------------------------------------------------------------- SSIM
def _gaussian_1d() -> tuple[float, ...]:
    # fspecial('gaussian', 11, 1.5) is the outer product of this normalised 1-D kernel.
    coords = np.arange(_SSIM_WINDOW, dtype=np.float64) - (_SSIM_WINDOW - 1) / 2.0
    g = np.exp(-(coords**2) / (2.0 * _SSIM_SIGMA**2))
    return tuple(float(v) for v in g / g.sum())


_GAUSSIAN = _gaussian_1d()


def _filter_valid(x: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering over the last two dims (== MATLAB filter2(window, x, 'valid')).

    Written as 11 shifted in-place multiply-adds per axis: for float64 this is about 10x faster than
    ``F.conv2d`` on CPU (which has no optimised float64 path) and runs unchanged on CUDA.
    """
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


def ssim_per_image(
    sr: Any, hr: Any, scale: int, y_channel: bool = True, crop_border: int | None = None
) -> list[float]:
    """SSIM of each image of the batch (see :func:`ssim`)."""
    sr_t, hr_t = _prepare(sr, hr, scale, y_channel, crop_border)
    n, c, h, w = sr_t.shape
    if min(h, w) < _SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} after cropping, got {h}x{w}"
        )
    # Filter all five statistics of all channels in one batched call.
    x, y = sr_t.reshape(n * c, h, w), hr_t.reshape(n * c, h, w)
    stats = _filter_valid(torch.stack([x, y, x * x, y * y, x * y])).unbind(0)
    mu_x, mu_y, xx, yy, xy = stats
    mu_x2, mu_y2, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    sigma_x2, sigma_y2, sigma_xy = xx - mu_x2, yy - mu_y2, xy - mu_xy
    c1, c2 = (_SSIM_K1 * _MAX_VALUE) ** 2, (_SSIM_K2 * _MAX_VALUE) ** 2
    ssim_map = ((2 * mu_xy + c1) * (2 * sigma_xy + c2)) / ((mu_x2 + mu_y2 + c1) * (sigma_x2 + sigma_y2 + c2))
    values = ssim_map.reshape(n, -1).mean(dim=1)  # channel mean for RGB == mean over all channel maps
    return [float(v) for v in values.cpu()]


def ssim(sr: Any, hr: Any, scale: int, y_channel: bool = True, crop_border: int | None = None) -> float:
    """SSIM (Wang et al. 2004) of ``sr`` against ``hr`` with the standard SR protocol, averaged over the batch.

    Same arguments and preprocessing as :func:`psnr`. 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
    L = 255, 'valid' filtering; on RGB the per-channel SSIMs are averaged.
    """
    values = ssim_per_image(sr, hr, scale, y_channel, crop_border)
    return math.fsum(values) / len(values)
