"""Tests for PSNR / SSIM / colour conversion, including the proof that the evaluation protocol is the standard one:
MATLAB-bicubic x2/x3/x4 on Set5 must give the "Bicubic" numbers published in the SRCNN/VDSR papers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import psnr, psnr_per_image, ssim, ssim_per_image
from PIL import Image

from espcn_hf import metrics
from espcn_hf.degradation import bicubic_degrade, imresize, mod_crop, quantize
from espcn_hf.metrics import (
    Y_WEIGHTS,
    psnr_ssim,
    quantize_uint8,
    rgb_to_y,
    rgb_to_ycbcr,
    to_uint8_levels,
    ycbcr_to_rgb,
)

IMAGE_SUFFIXES = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff"}

# Bicubic baseline on Set5, Y channel, border = scale (VDSR, Kim et al. 2016, Table 3; same in SRCNN/EDSR).
PUBLISHED_SET5_BICUBIC = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}
PSNR_TOLERANCE_DB = 0.05
SSIM_TOLERANCE = 0.002


def _benchmarks_dir() -> Path:
    """``$ESPCN_HF_DATA_DIR/benchmarks`` if set, else ``shared/data/benchmarks`` next to the checkout."""
    env = os.environ.get("ESPCN_HF_DATA_DIR")
    if env:
        return Path(env) / "benchmarks"
    return Path(__file__).resolve().parents[2] / "shared/data/benchmarks"


@pytest.fixture(scope="module")
def set5_hr() -> list[torch.Tensor]:
    folder = _benchmarks_dir() / "Set5"
    if not folder.is_dir():
        pytest.skip(
            f"Set5 not found at {folder} (set ESPCN_HF_DATA_DIR to the folder that holds benchmarks/)"
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)  # skips SOURCE.txt
    if len(files) != 5:
        pytest.skip(f"expected the 5 Set5 images in {folder}, found {len(files)}")
    images = []
    for path in files:
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB"))
        images.append(torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).to(torch.float64) / 255.0)
    return images


# --------------------------------------------------------------------------------------------- the proof
@pytest.mark.parametrize("scale", sorted(PUBLISHED_SET5_BICUBIC))
def test_set5_bicubic_matches_published_numbers(set5_hr, scale):
    psnrs, ssims = [], []
    for hr in set5_hr:
        hr = mod_crop(hr, scale)
        lr = bicubic_degrade(hr, scale)
        sr = quantize(imresize(lr, scale=scale))  # the bicubic "SR", saved as uint8
        assert sr.shape == hr.shape
        psnrs += psnr_per_image(sr, hr, scale=scale)
        ssims += ssim_per_image(sr, hr, scale=scale)
    mean_psnr, mean_ssim = float(np.mean(psnrs)), float(np.mean(ssims))
    want_psnr, want_ssim = PUBLISHED_SET5_BICUBIC[scale]
    assert abs(mean_psnr - want_psnr) < PSNR_TOLERANCE_DB, f"x{scale}: PSNR_Y {mean_psnr:.4f} vs {want_psnr}"
    assert abs(mean_ssim - want_ssim) < SSIM_TOLERANCE, f"x{scale}: SSIM_Y {mean_ssim:.4f} vs {want_ssim}"


# --------------------------------------------------------------------------------------------- rounding
def test_quantize_uint8_rounds_half_away_from_zero_like_matlab():
    # torch.round and numpy.round round half to even (2.5 -> 2); MATLAB's uint8() and the SR papers give 3.
    halves = torch.tensor([0.5, 1.5, 2.5, 127.5, 254.5], dtype=torch.float64) / 255
    assert quantize_uint8(halves).tolist() == [1, 2, 3, 128, 255]
    assert quantize_uint8(halves.numpy()).tolist() == [1, 2, 3, 128, 255]
    # Clamped to [0, 1]; NaN becomes 0.
    wild = torch.tensor([-3.0, 1.7, float("nan"), 1.0, 0.0])
    assert quantize_uint8(wild).tolist() == [0, 255, 0, 255, 0]


def test_quantize_uint8_kinds_shapes_and_no_mutation():
    x = torch.rand(2, 3, 5, 4, dtype=torch.float64)
    before = x.clone()
    out = quantize_uint8(x)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(x, before), "the caller's float64 tensor must not be modified"
    arr = np.random.default_rng(0).random((5, 4, 3)).astype(np.float32)
    out_np = quantize_uint8(arr)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.uint8 and out_np.shape == arr.shape
    np.testing.assert_array_equal(out_np, quantize_uint8(torch.from_numpy(arr)).numpy())
    u8 = np.arange(256, dtype=np.uint8)
    assert quantize_uint8(u8) is u8
    with pytest.raises(TypeError):
        quantize_uint8(np.arange(4))
    with pytest.raises(TypeError):
        quantize_uint8(torch.arange(4))


def test_quantize_uint8_is_exact_for_float32_next_to_a_half():
    """float32 values just below (k + 0.5) / 255 must round down: float32 arithmetic (x * 255 in float32) rounds
    some of them up to k + 0.5 and then to k + 1; the rule is exact because it works in float64."""
    from fractions import Fraction

    values = []
    for k in range(0, 255, 7):
        centre = np.float32((k + 0.5) / 255)
        values += [np.nextafter(centre, np.float32(0)), centre, np.nextafter(centre, np.float32(1))]
    x = np.array(values, dtype=np.float32)
    expected = [int(Fraction(float(v)) * 255 + Fraction(1, 2)) for v in x]  # floor(x * 255 + 1/2), exactly
    assert quantize_uint8(torch.from_numpy(x)).tolist() == expected
    assert quantize_uint8(x).tolist() == expected


def test_quantize_of_degradation_uses_the_same_rule():
    x = torch.rand(3, 17, 13)
    torch.testing.assert_close(quantize(x) * 255, quantize_uint8(x).float(), rtol=0, atol=1e-4)
    assert quantize(x.double()).dtype == torch.float64


# --------------------------------------------------------------------------------------------- colour
def test_y_weights_are_the_models_colour_conversion():
    """The metric's Y (MATLAB rgb2ycbcr) and the model's Y-channel mode must use the same constants."""
    eye = torch.eye(3, dtype=torch.float64).view(3, 3, 1, 1)  # pure R, G, B
    y = (rgb_to_ycbcr(eye)[:, 0, 0, 0] * 255 - 16).tolist()
    assert y == pytest.approx(list(Y_WEIGHTS), abs=1e-9)


def test_y_of_white_and_black():
    white, black = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    torch.testing.assert_close(rgb_to_y(white), torch.full((1, 1, 2, 2), 235.0), rtol=0, atol=1e-4)
    torch.testing.assert_close(rgb_to_y(black), torch.full((1, 1, 2, 2), 16.0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(rgb_to_y(np.full((2, 2, 3), 255, np.uint8)), 235.0, atol=1e-10)
    np.testing.assert_allclose(rgb_to_y(np.zeros((2, 2, 3), np.uint8)), 16.0, atol=1e-10)
    y_uint8 = rgb_to_y(torch.full((3, 2, 2), 255, dtype=torch.uint8))
    assert y_uint8.dtype == torch.float64 and y_uint8.shape == (1, 2, 2)
    torch.testing.assert_close(y_uint8, torch.full((1, 2, 2), 235.0, dtype=torch.float64))


def test_ycbcr_reference_values_and_round_trip():
    white = torch.ones(1, 3, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(
        rgb_to_ycbcr(white).flatten() * 255, torch.tensor([235.0, 128, 128], dtype=torch.float64)
    )
    red = torch.tensor([1.0, 0, 0], dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(
        rgb_to_ycbcr(red).flatten() * 255, torch.tensor([81.481, 90.203, 240.0], dtype=torch.float64)
    )
    torch.manual_seed(0)
    rgb = torch.rand(2, 3, 8, 9, dtype=torch.float64)
    ycc = rgb_to_ycbcr(rgb)
    torch.testing.assert_close(ycbcr_to_rgb(ycc), rgb, rtol=0, atol=1e-12)
    torch.testing.assert_close(ycc[:, :1] * 255, rgb_to_y(rgb), rtol=0, atol=1e-10)
    rgb32 = rgb.float()
    assert rgb_to_ycbcr(rgb32).dtype == torch.float32
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(rgb32)), rgb32, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------- PSNR
def test_psnr_identical_is_inf():
    x = torch.rand(2, 3, 16, 16)
    assert psnr(x, x, scale=2) == math.inf
    assert psnr(x, x, scale=2, y_channel=False) == math.inf


def test_psnr_hand_computed():
    hr = torch.zeros(1, 3, 20, 20)
    sr = torch.full((1, 3, 20, 20), 10 / 255)
    # RGB: every sample differs by 10 levels -> MSE 100.
    assert psnr(sr, hr, scale=1, y_channel=False, crop_border=0) == pytest.approx(
        10 * math.log10(255**2 / 100)
    )
    # Y: the difference is 10 * (65.481 + 128.553 + 24.966) / 255 = 10 * 219 / 255.
    dy = 10 * 219 / 255
    assert psnr(sr, hr, scale=1, crop_border=0) == pytest.approx(10 * math.log10(255**2 / dy**2))
    # One of 4 * 4 * 3 RGB samples off by 255 -> MSE = 255^2 / 48 -> PSNR = 10 log10(48).
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[1, 2, 0] = 255
    assert psnr(a, b, scale=1, y_channel=False, crop_border=0) == pytest.approx(10 * math.log10(48))


def test_inputs_are_quantized_first():
    torch.manual_seed(0)
    hr = quantize(torch.rand(1, 3, 16, 16))
    # Less than half a level of error disappears once the output is rounded to uint8.
    assert psnr(hr + 0.4 / 255, hr, scale=2) == math.inf
    # Overshoot is clamped: a white image pushed to 1.3 is still white.
    assert psnr(torch.full((1, 3, 8, 8), 1.3), torch.ones(1, 3, 8, 8), scale=1) == math.inf


def test_border_crop_and_mod_crop():
    torch.manual_seed(0)
    hr = quantize(torch.rand(1, 3, 21, 23))
    sr = mod_crop(hr, 2).clone()
    sr[..., :2, :] = 1 - sr[..., :2, :]  # damage only the border the protocol ignores
    assert psnr(sr, hr, scale=2) == math.inf  # HR is mod-cropped to 20 x 22, border 2 cropped
    assert psnr(sr, hr, scale=2, crop_border=0) < 30
    with pytest.raises(ValueError):
        psnr(sr[..., :18, :], hr, scale=2)


def test_input_types_agree_and_batch_mean():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(2, 24, 24, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, size=a.shape), 0, 255).astype(np.uint8)
    ta = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255
    tb = torch.from_numpy(b).permute(0, 3, 1, 2).float() / 255
    per_image = psnr_per_image(ta, tb, scale=2)
    assert psnr(ta, tb, scale=2) == pytest.approx(np.mean(per_image))
    assert psnr(a, b, scale=2) == pytest.approx(np.mean(per_image))
    assert psnr(Image.fromarray(a[0]), Image.fromarray(b[0]), scale=2) == pytest.approx(per_image[0])
    assert psnr(ta[0], b[0], scale=2) == pytest.approx(per_image[0])  # (C, H, W) tensor vs numpy
    assert ssim(a, b, scale=2) == pytest.approx(ssim(ta, tb, scale=2))
    np.testing.assert_array_equal(to_uint8_levels(ta).numpy(), a.transpose(0, 3, 1, 2).astype(np.float64))


# --------------------------------------------------------------------------------------------- SSIM
def _reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. ssim_index.m with a dense 11x11 window and explicit 'valid' sliding windows."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    window = np.outer(g, g)
    window /= window.sum()

    def filt(img):
        patches = np.lib.stride_tricks.sliding_window_view(img, (11, 11))
        return np.einsum("ijkl,kl->ij", patches, window)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(ssim_map.mean())


def test_ssim_identical_is_one():
    x = torch.rand(2, 3, 32, 32)
    assert ssim(x, x, scale=2) == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, x, scale=2, y_channel=False) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_dense_reference():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, size=(30, 27, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, size=a.shape), 0, 255).astype(np.uint8)
    ya, yb = rgb_to_y(a)[3:-3, 3:-3], rgb_to_y(b)[3:-3, 3:-3]
    assert ssim(a, b, scale=3) == pytest.approx(_reference_ssim(ya, yb), abs=1e-12)
    rgb_ref = np.mean([_reference_ssim(a[..., c].astype(float), b[..., c].astype(float)) for c in range(3)])
    assert ssim(a, b, scale=1, y_channel=False, crop_border=0) == pytest.approx(rgb_ref, abs=1e-12)
    assert 0 < ssim(a, b, scale=3) < 1
    assert ssim(a, b, scale=3) == pytest.approx(ssim(b, a, scale=3), abs=1e-12)


def test_ssim_in_row_blocks_matches_dense_reference():
    """Images taller than one CPU block of SSIM rows (several blocks and a partial last one)."""
    rng = np.random.default_rng(4)
    height = 2 * metrics._SSIM_CPU_ROWS + 23
    a = rng.integers(0, 256, size=(height, 37), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-25, 26, size=a.shape), 0, 255).astype(np.uint8)
    reference = _reference_ssim(a.astype(float), b.astype(float))
    assert ssim(a, b, scale=1, crop_border=0) == pytest.approx(reference, abs=1e-12)


def test_ssim_too_small_raises():
    with pytest.raises(ValueError):
        ssim(torch.rand(1, 3, 12, 12), torch.rand(1, 3, 12, 12), scale=2)


def test_psnr_ssim_one_call_equals_the_separate_metrics():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, size=(3, 30, 33, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, size=a.shape), 0, 255).astype(np.uint8)
    scores = psnr_ssim(a, b, scale=3)
    assert scores.psnr.dtype == torch.float64 and scores.psnr.shape == (3,) and scores.ssim.shape == (3,)
    assert scores.psnr.tolist() == pytest.approx(psnr_per_image(a, b, scale=3), abs=1e-12)
    assert scores.ssim.tolist() == pytest.approx(ssim_per_image(a, b, scale=3), abs=1e-12)
    rgb = psnr_ssim(a, b, scale=3, y_channel=False, with_ssim=False)
    assert rgb.ssim is None
    assert rgb.psnr.tolist() == pytest.approx(psnr_per_image(a, b, scale=3, y_channel=False), abs=1e-12)
    assert float(psnr_ssim(a[0], b[0], scale=3).psnr) == pytest.approx(scores.psnr[0].item())


def test_ssim_conv_filter_equals_shifted_filter():
    """The conv2d path (used off the CPU) and the shifted-add path (CPU) are the same filter."""
    x = torch.rand(5, 2, 29, 31, dtype=torch.float64) * 255
    torch.testing.assert_close(
        metrics._filter_valid_conv(x), metrics._filter_valid_shifted(x), rtol=0, atol=1e-10
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x, y = torch.rand(2, 3, 40, 40), torch.rand(2, 3, 40, 40)
    assert psnr(x.cuda(), y.cuda(), scale=2) == pytest.approx(psnr(x, y, scale=2), abs=1e-9)
    assert ssim(x.cuda(), y.cuda(), scale=2) == pytest.approx(ssim(x, y, scale=2), abs=1e-9)


def test_to_unit_float_is_the_inverse_of_quantize_uint8_on_its_levels():
    """One uint8 -> float rule (a division, equal to `uint8 / 255` in the target dtype) for tensors and arrays."""
    from espcn_hf.metrics import quantize_uint8, to_unit_float

    levels = np.arange(256, dtype=np.uint8)
    for dtype in (np.float32, np.float64):
        assert np.array_equal(to_unit_float(levels, dtype), levels.astype(dtype) / dtype(255))
    tensor = torch.from_numpy(levels)
    assert torch.equal(to_unit_float(tensor), tensor.float() / 255)
    assert torch.equal(quantize_uint8(to_unit_float(tensor, torch.float64)), tensor)
    with pytest.raises(TypeError, match="uint8"):
        to_unit_float(np.zeros(3, dtype=np.float32))
