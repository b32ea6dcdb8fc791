"""Benchmark evaluation: PSNR/SSIM of a model (or any upscaler) on an eval-mode `DataGenerator`.

Every method sees the same uint8 LR image (`bicubic_degrade` of the mod-cropped HR, as stored by the
dataset) and is scored under the protocol of `espcn_hf.metrics`: output quantized to uint8, `scale`-pixel
border cropped, Y of BT.601 (`psnr_y`, `ssim_y`) and, for reference, all RGB channels (`psnr_rgb`; and
`ssim_rgb` with `rgb_ssim=True`, which triples the SSIM cost).
Scores are means over the images of the set.

Speed: `espcn_hf.metrics` works in float64 torch and re-prepares the pair for every metric (about 0.2-0.5 s
per Urban100 image and metric on 2 CPU cores). `image_scores` computes the same four numbers from one
preparation, with OpenCV's separable float64 filter for SSIM; tests check it against `metrics.psnr` /
`metrics.ssim` (agreement to 1e-9).

Methods:

* a model (`ESPCNForImageSuperResolution`), run through `espcn_hf.inference.upscale_tensor` (tiled "auto",
  inference mode);
* `bicubic_upscaler(scale)`: MATLAB bicubic upscaling of the LR (`degradation.imresize`), the "Bicubic"
  rows of SR papers;
* `opencv_upscaler(kind, scale, path)`: OpenCV `dnn_superres` (ESPCN / FSRCNN `.pb` models), fed BGR uint8;
* any callable `f(lr) -> sr`, `lr` a float (1, 3, h, w) tensor in [0, 1], `sr` a float (1, 3, rh, rw)
  tensor in [0, 1] or a uint8 (rh, rw, 3) numpy array.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from .degradation import imresize, quantize
from .image_processing_espcn import to_uint8_hwc
from .metrics import rgb_to_y

Upscaler = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]

# Peer models of OpenCV dnn_superres: method name -> (setModel algorithm, file pattern, sub-folder of peers/).
OPENCV_PEERS = {
    "opencv-espcn": ("espcn", "ESPCN_x{scale}.pb", "opencv_espcn"),
    "opencv-fsrcnn": ("fsrcnn", "FSRCNN_x{scale}.pb", "opencv_fsrcnn"),
    "opencv-fsrcnn-small": ("fsrcnn", "FSRCNN-small_x{scale}.pb", "opencv_fsrcnn"),
}


def bicubic_upscaler(scale: int) -> Upscaler:
    """MATLAB `imresize(lr, scale, 'bicubic')` in float64, rounded to uint8 levels."""

    def upscale(lr: torch.Tensor) -> torch.Tensor:
        return quantize(imresize(lr.to(torch.float64), scale=scale))

    return upscale


def opencv_upscaler(kind: str, scale: int, path: str | os.PathLike) -> Upscaler:
    """An OpenCV dnn_superres model (`kind` "espcn" or "fsrcnn", a `.pb` file) as an upscaler."""
    import cv2

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such OpenCV model file")
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    sr.readModel(str(path))
    sr.setModel(kind, scale)

    def upscale(lr: torch.Tensor) -> np.ndarray:
        rgb = to_uint8_hwc(lr[0])
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        return np.ascontiguousarray(sr.upsample(bgr)[..., ::-1])

    return upscale


def model_upscaler(model, tile_size: int | str | None = "auto") -> Upscaler:
    """An `ESPCNForImageSuperResolution` as an upscaler (exact tiling, inference mode, output clamped).

    The model goes through `inference.prepare_for_inference` when the package has it (channels-last fp32,
    exact; it changes the model's memory layout in place).
    """
    from . import inference
    from .inference import upscale_tensor

    if hasattr(inference, "prepare_for_inference"):
        model = inference.prepare_for_inference(model, "auto")

    def upscale(lr: torch.Tensor) -> torch.Tensor:
        return upscale_tensor(model, lr.float(), tile_size=tile_size).clamp_(0, 1).cpu()

    return upscale


def _as_upscaler(model_or_callable, tile_size) -> Upscaler:
    from .modeling_espcn import ESPCNForImageSuperResolution

    if isinstance(model_or_callable, ESPCNForImageSuperResolution):
        return model_upscaler(model_or_callable.eval(), tile_size)
    if callable(model_or_callable):
        return model_or_callable
    raise TypeError(f"expected a model or a callable, got {type(model_or_callable).__name__}")


def _to_uint8_hwc(sr) -> np.ndarray:
    """A float (1, 3, H, W) tensor in [0, 1] (rounded half up, as `metrics.to_uint8_levels`) -> uint8
    (H, W, 3); a uint8 array passes through."""
    if isinstance(sr, np.ndarray):
        if sr.dtype != np.uint8:
            raise TypeError(f"an upscaler returning numpy must return uint8 (H, W, 3), got {sr.dtype}")
        return sr
    levels = torch.floor(sr[0].detach().cpu().to(torch.float64).clamp(0, 1) * 255.0 + 0.5)
    return levels.to(torch.uint8).permute(1, 2, 0).numpy()


_SSIM_C1, _SSIM_C2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2


def _gaussian_window() -> np.ndarray:
    coords = np.arange(11, dtype=np.float64) - 5.0
    g = np.exp(-(coords**2) / (2.0 * 1.5**2))
    return g / g.sum()


_WINDOW = _gaussian_window()


def _ssim_plane(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two float64 (H, W) planes on [0, 255]: Wang et al. 2004, 11x11 Gaussian (1.5), 'valid' area."""
    import cv2

    def blur(a: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(a, cv2.CV_64F, _WINDOW, _WINDOW, borderType=cv2.BORDER_REFLECT)[5:-5, 5:-5]

    mu_x, mu_y = blur(x), blur(y)
    mu_x2, mu_y2, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    sigma_x2, sigma_y2, sigma_xy = blur(x * x) - mu_x2, blur(y * y) - mu_y2, blur(x * y) - mu_xy
    ssim_map = ((2 * mu_xy + _SSIM_C1) * (2 * sigma_xy + _SSIM_C2)) / (
        (mu_x2 + mu_y2 + _SSIM_C1) * (sigma_x2 + sigma_y2 + _SSIM_C2)
    )
    return float(ssim_map.mean())


def _psnr(x: np.ndarray, y: np.ndarray) -> float:
    mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def image_scores(sr: np.ndarray, hr: np.ndarray, scale: int, rgb_ssim: bool = False) -> dict[str, float]:
    """`psnr_y`, `ssim_y`, `psnr_rgb` (and `ssim_rgb` if `rgb_ssim`) of uint8 (H, W, 3) images under the standard protocol.

    HR mod-cropped, `scale`-pixel border cropped, Y of BT.601 not rounded; equal to `espcn_hf.metrics` up to
    float rounding.
    """
    h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
    sr, hr = sr[:h, :w], hr[:h, :w]
    if sr.shape != hr.shape:
        raise ValueError(f"sr {sr.shape} and mod-cropped hr {hr.shape} differ")
    b = scale
    sr, hr = sr[b : h - b, b : w - b], hr[b : h - b, b : w - b]
    sr_y, hr_y = rgb_to_y(sr), rgb_to_y(hr)  # float64 (H, W) on [0, 255]
    sr_f, hr_f = sr.astype(np.float64), hr.astype(np.float64)
    scores = {"psnr_y": _psnr(sr_y, hr_y), "ssim_y": _ssim_plane(sr_y, hr_y), "psnr_rgb": _psnr(sr_f, hr_f)}
    if rgb_ssim:
        scores["ssim_rgb"] = float(np.mean([_ssim_plane(sr_f[..., c], hr_f[..., c]) for c in range(3)]))
    return scores


def evaluate_model(
    model_or_callable,
    dataset,
    scale: int,
    tile_size: int | str | None = "auto",
    keep_outputs: Iterable[str] = (),
    rgb_ssim: bool = False,
) -> dict:
    """PSNR/SSIM (Y and RGB) of a model or upscaler over an eval-mode dataset.

    Args:
        model_or_callable: an `ESPCNForImageSuperResolution` or an upscaler callable (see module docstring).
        dataset: items `{"pixel_values": LR (3, h, w), "labels": HR (3, rh, rw), "name": str}` (e.g.
            `load_benchmark(...)`).
        scale: the SR factor (border crop and mod-crop of the metrics).
        tile_size: passed to `upscale_tensor` for models.
        keep_outputs: image names whose SR output (uint8 (H, W, 3)) is returned under `"outputs"`.

    Returns:
        `{"psnr_y", "ssim_y", "psnr_rgb", ["ssim_rgb",] "num_images", "seconds", "per_image": {name: {...}},
        "outputs": {name: array}}`; `seconds` is the time spent upscaling (metrics excluded).
    """
    upscale = _as_upscaler(model_or_callable, tile_size)
    keep = set(keep_outputs)
    per_image: dict[str, dict[str, float]] = {}
    outputs: dict[str, np.ndarray] = {}
    seconds = 0.0
    for i in range(len(dataset)):
        item = dataset[i]
        name = item.get("name", f"{i:04d}")
        lr, hr = item["pixel_values"][None], item["labels"][None]
        start = time.perf_counter()
        with torch.inference_mode():
            sr = upscale(lr)
        seconds += time.perf_counter() - start
        sr_u8, hr_u8 = _to_uint8_hwc(sr), _to_uint8_hwc(hr)
        if sr_u8.shape != hr_u8.shape:
            raise ValueError(f"{name}: the upscaler returned {sr_u8.shape[:2]}, expected {hr_u8.shape[:2]}")
        per_image[name] = image_scores(sr_u8, hr_u8, scale, rgb_ssim)
        if name in keep:
            outputs[name] = sr_u8
    keys = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb") if rgb_ssim else ("psnr_y", "ssim_y", "psnr_rgb")
    n = len(per_image)
    summary = {k: (math.fsum(v[k] for v in per_image.values()) / n if n else float("nan")) for k in keys}
    return {**summary, "num_images": n, "seconds": seconds, "per_image": per_image, "outputs": outputs}


def format_table(results: dict[str, dict[str, dict]], methods: list[str], scale: int) -> str:
    """Markdown table: one row per set, one `PSNR / SSIM` (Y) column per method."""
    header = "| Set | " + " | ".join(methods) + " |"
    rule = "|---|" + "---|" * len(methods)
    rows = [f"PSNR (dB) / SSIM on Y (BT.601), x{scale}, border {scale} px cropped", "", header, rule]
    for set_name, by_method in results.items():
        cells = []
        for method in methods:
            r = by_method.get(method)
            cells.append(f"{r['psnr_y']:.2f} / {r['ssim_y']:.4f}" if r else "-")
        rows.append(f"| {set_name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


__all__ = [
    "OPENCV_PEERS",
    "bicubic_upscaler",
    "evaluate_model",
    "format_table",
    "image_scores",
    "model_upscaler",
    "opencv_upscaler",
]
