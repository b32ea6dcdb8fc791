"""Pictures of evaluation results: the benchmark crop grid of `scripts/evaluate.py` and the model card's
before/after comparison. Every file is written atomically (`espcn_hf.fileio`).

* `save_evaluation_picture`: rows = benchmark sets (one image each), columns = HR and the methods, each cell
  the crop with the densest detail, titled with the method's PSNR-Y on the whole image (matplotlib).
* `render_comparison`: HR | bicubic | ESPCN on a real photo, the crop where the model gains most over bicubic,
  with the PSNR-Y of both on that crop (Pillow only), for the model card.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .degradation import bicubic_degrade, imresize
from .evaluation import EvalReport
from .fileio import atomic_save
from .metrics import mod_crop, psnr_ssim, quantize_uint8, rgb_to_y, to_unit_float

# ----------------------------------------------------------------------------------------------------------------
# Evaluation grid
# ----------------------------------------------------------------------------------------------------------------


def pick_detail_crop(hr: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left (y, x) of the `size` x `size` block of a uint8 (H, W, 3) image with the largest gradient energy
    (searched on a grid of half-block steps)."""
    gray = hr.astype(np.float32).mean(axis=2)
    energy = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1, :]
    h, w = energy.shape
    step = max(size // 2, 1)
    best, where = -1.0, (0, 0)
    for y in range(0, max(h - size, 0) + 1, step):
        for x in range(0, max(w - size, 0) + 1, step):
            value = float(energy[y : y + size, x : x + size].sum())
            if value > best:
                best, where = value, (y, x)
    return where


def save_evaluation_picture(
    path: str | os.PathLike,
    report: EvalReport,
    hr_images: Mapping[str, np.ndarray],
    shown: Mapping[str, str],
    methods: Sequence[str],
    crop: int = 96,
    title: str | None = None,
) -> Path:
    """One row per set: the HR crop, then each method's output crop with its PSNR-Y on the whole image.

    Args:
        path: the PNG to write (atomically).
        report: an `EvalReport` holding `outputs[set][method][shown[set]]` and per-image scores.
        hr_images: set -> the HR image shown (uint8 H x W x 3, mod-cropped like the outputs).
        shown: set -> the name of the image shown.
        methods: the columns after HR (methods without an output are skipped).
        crop: HR pixels of each crop side.
        title: the figure title (default: name, scale).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [s for s in hr_images if s in report.outputs]
    columns = ["HR", *(m for m in methods if any(m in report.outputs[s] for s in rows))]
    if not rows:
        raise ValueError("save_evaluation_picture: the report keeps no outputs to show")
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(2.4 * len(columns), 2.6 * len(rows)), squeeze=False
    )
    for i, set_name in enumerate(rows):
        hr = hr_images[set_name]
        y, x = pick_detail_crop(hr, crop)
        for j, method in enumerate(columns):
            ax = axes[i][j]
            if method == "HR":
                image, label = hr, "HR"
            else:
                image = report.outputs[set_name].get(method, {}).get(shown[set_name])
                scores = report.scores(set_name, method)
                value = scores.per_image.get(shown[set_name], {}).get("psnr_y") if scores else None
                label = method if value is None else f"{method}\n{value:.2f} dB"
            if image is not None:
                ax.imshow(image[y : y + crop, x : x + crop], interpolation="nearest")
            ax.set_title(label, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{set_name}: {shown[set_name]}", fontsize=9)
    fig.suptitle(
        title or f"{report.name or 'methods'}, x{report.scale} (PSNR_Y of the whole image shown)", fontsize=10
    )
    fig.tight_layout()
    try:
        atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return Path(path)


# ----------------------------------------------------------------------------------------------------------------
# The model card's comparison
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """The card's before/after picture and the numbers its caption quotes."""

    image: Image.Image
    box: tuple[int, int, int, int]  # (left, top, right, bottom) of the crop in the HR image
    psnr_bicubic: float  # PSNR-Y (dB) of bicubic on the crop, border = scale
    psnr_model: float  # PSNR-Y (dB) of the model on the crop
    source: str

    def caption(self, scale: int) -> str:
        left, top, right, bottom = self.box
        return (
            f"{right - left}x{bottom - top} crop of {self.source}, downscaled x{scale} with MATLAB-style bicubic, "
            f"then upscaled: PSNR-Y {self.psnr_bicubic:.2f} dB (bicubic) vs {self.psnr_model:.2f} dB (ESPCN) on "
            "this crop, the one of the photo where ESPCN gains most over bicubic. Shown 2x with "
            "nearest-neighbour enlargement."
        )


def _best_gain_crop(sr: torch.Tensor, bicubic: torch.Tensor, hr: torch.Tensor, size: int) -> tuple[int, int]:
    """Top-left (y, x) of the `size` block (half-block grid) where the model's Y error is lowest relative to
    bicubic's (largest PSNR gain)."""
    y_hr = rgb_to_y(hr.double())
    err_sr = (rgb_to_y(sr.double()) - y_hr) ** 2
    err_bic = (rgb_to_y(bicubic.double()) - y_hr) ** 2
    stride = max(size // 2, 1)
    mse_sr = F.avg_pool2d(err_sr, size, stride=stride)[0, 0]
    mse_bic = F.avg_pool2d(err_bic, size, stride=stride)[0, 0]
    gain = torch.log10(mse_bic.clamp_min(1e-12)) - torch.log10(mse_sr.clamp_min(1e-12))
    flat = int(torch.argmax(gain))
    row, col = divmod(flat, gain.shape[1])
    return row * stride, col * stride


def render_comparison(
    model, hr: np.ndarray | Image.Image, source: str, crop: int = 96, zoom: int = 2
) -> Comparison:
    """HR crop | bicubic | model side by side, each enlarged `zoom` times (nearest neighbour) and labelled.

    The LR image is `bicubic_degrade` of the (mod-cropped) HR photo, the benchmark degradation; the crop is the
    `crop`-pixel block where the model's PSNR-Y gain over bicubic is largest.

    Args:
        model: an `ESPCNForImageSuperResolution` (not modified).
        hr: the HR photo (uint8 H x W x 3 or a PIL image); a smaller photo than `crop` gives a smaller crop.
        source: what the photo is, for the caption (e.g. "`img_004` of Urban100").
    """
    from .inference import upscale_tensor

    r = model.config.upscale_factor
    array = np.array(hr.convert("RGB") if isinstance(hr, Image.Image) else hr)  # a writable copy for torch
    hr_t = mod_crop(to_unit_float(torch.from_numpy(array), torch.float64).permute(2, 0, 1)[None], r)
    size = min(crop, *hr_t.shape[-2:])
    size -= size % r
    if size < 2 * r + 11:  # the protocol's border crop and an 11x11 SSIM window must fit
        raise ValueError(f"the comparison photo is too small: {tuple(hr_t.shape[-2:])}")
    lr = bicubic_degrade(hr_t, r)
    bicubic = quantize_uint8(imresize(lr, scale=r))
    was_training = model.training
    try:
        with torch.inference_mode():
            sr = quantize_uint8(upscale_tensor(model.eval(), lr.float(), tile_size="auto")).cpu()
    finally:
        model.train(was_training)
    hr_u8 = quantize_uint8(hr_t)
    top, left = _best_gain_crop(sr, bicubic, hr_u8, size)
    window = (slice(None), slice(None), slice(top, top + size), slice(left, left + size))
    p_bic = float(psnr_ssim(bicubic[window], hr_u8[window], r, with_ssim=False).psnr[0])
    p_sr = float(psnr_ssim(sr[window], hr_u8[window], r, with_ssim=False).psnr[0])

    def pil(t: torch.Tensor) -> Image.Image:
        return Image.fromarray(t[window][0].permute(1, 2, 0).numpy())

    panels = [
        ("HR (ground truth)", pil(hr_u8)),
        (f"Bicubic x{r}: {p_bic:.2f} dB", pil(bicubic)),
        (f"ESPCN x{r}: {p_sr:.2f} dB", pil(sr)),
    ]
    label_h, gap = 18, 4
    side = size * zoom
    canvas = Image.new("RGB", (3 * side + 2 * gap, side + label_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, image) in enumerate(panels):
        x = i * (side + gap)
        canvas.paste(image.resize((side, side), Image.Resampling.NEAREST), (x, label_h))
        draw.text((x + 4, 3), label, fill=(0, 0, 0))
    return Comparison(
        image=canvas,
        box=(left, top, left + size, top + size),
        psnr_bicubic=p_bic,
        psnr_model=p_sr,
        source=source,
    )


__all__ = [
    "Comparison",
    "pick_detail_crop",
    "render_comparison",
    "save_evaluation_picture",
]
