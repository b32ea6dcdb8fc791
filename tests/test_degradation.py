"""Tests for the MATLAB-compatible bicubic resize and the LR degradation.

PIL and OpenCV are deliberately not used as references: both differ from MATLAB (see the module docstring of
``espcn_hf.degradation``). The reference here is a plain-loop float64 port of MATLAB's ``imresize.m``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from espcn_hf.degradation import bicubic_degrade, imresize, imresize_np, mod_crop, quantize
from espcn_hf.metrics import quantize_uint8


# --------------------------------------------------------------------------------------------- reference
def _matlab_cubic(x: float) -> float:
    ax = abs(x)
    if ax <= 1:
        return 1.5 * ax**3 - 2.5 * ax**2 + 1
    if ax <= 2:
        return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
    return 0.0


def _reference_resize_1d(
    signal: np.ndarray, out_len: int, scale: float, antialiasing: bool = True
) -> np.ndarray:
    """MATLAB imresize along the first axis, one output sample at a time (1-based indices as in imresize.m)."""
    in_len = signal.shape[0]
    width = 4.0
    if scale < 1 and antialiasing:

        def kernel(t: float) -> float:
            return scale * _matlab_cubic(scale * t)

        width = width / scale
    else:
        kernel = _matlab_cubic
    out = np.zeros((out_len,) + signal.shape[1:], dtype=np.float64)
    for i in range(1, out_len + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = [left + p for p in range(math.ceil(width) + 2)]
        weights = np.array([kernel(u - j) for j in taps])
        weights /= weights.sum()
        for w, j in zip(weights, taps, strict=True):
            k = (j - 1) % (2 * in_len)  # symmetric mirroring: [1..n, n..1]
            src = k if k < in_len else 2 * in_len - 1 - k
            out[i - 1] += w * signal[src]
    return out


def _reference_resize(img: np.ndarray, out_hw: tuple[int, int], scale_hw: tuple[float, float], aa=True):
    rows = _reference_resize_1d(img, out_hw[0], scale_hw[0], aa)
    return _reference_resize_1d(rows.T, out_hw[1], scale_hw[1], aa).T


# --------------------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize(
    ("hw", "scale", "expected"),
    [
        ((7, 9), 0.5, (4, 5)),
        ((7, 9), 3, (21, 27)),
        ((288, 288), 1 / 3, (96, 96)),  # 288 * (1/3) is not exact in floating point
        ((10, 11), 1 / 4, (3, 3)),
        ((5, 5), 1.5, (8, 8)),
    ],
)
def test_output_size_is_ceil(hw, scale, expected):
    out = imresize(torch.zeros(1, 1, *hw, dtype=torch.float64), scale=scale)
    assert tuple(out.shape[-2:]) == expected


def test_output_size_argument_and_input_ranks():
    x = torch.rand(2, 3, 12, 10)
    assert imresize(x, output_size=(5, 7)).shape == (2, 3, 5, 7)
    assert imresize(x[0], scale=0.5).shape == (3, 6, 5)
    assert imresize(x[0, 0], scale=2).shape == (24, 20)


def test_rejects_bad_input():
    with pytest.raises(TypeError):
        imresize(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), scale=2)
    with pytest.raises(ValueError):
        imresize(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError):
        imresize(torch.zeros(4), scale=2)
    with pytest.raises(ValueError):
        bicubic_degrade(torch.zeros(1, 3, 9, 8), 2)


# --------------------------------------------------------------------------------------------- values
@pytest.mark.parametrize("scale", [0.5, 1 / 3, 0.25, 2, 3, 1.7])
@pytest.mark.parametrize("antialiasing", [True, False])
def test_constant_image_stays_constant(scale, antialiasing):
    x = torch.full((1, 3, 13, 9), 0.3, dtype=torch.float64)
    out = imresize(x, scale=scale, antialiasing=antialiasing)
    torch.testing.assert_close(out, torch.full_like(out, 0.3), rtol=0, atol=1e-12)


def test_linear_ramp_downscale_by_two():
    # A symmetric kernel centred at u = 2i - 0.5 (1-based) reproduces a linear ramp exactly away from the borders,
    # where the mirroring bends it. Output i (0-based) lands at input coordinate 2i + 0.5.
    ramp = torch.arange(32, dtype=torch.float64).expand(1, 1, 8, 32)
    out = imresize(ramp, scale=0.5)
    expected = 2 * torch.arange(16, dtype=torch.float64) + 0.5
    torch.testing.assert_close(out[0, 0, :, 2:-2], expected[2:-2].expand(4, 12), rtol=0, atol=1e-12)
    assert abs(out[0, 0, 0, 0].item() - 0.5) > 1e-3  # symmetric padding is not linear extrapolation


@pytest.mark.parametrize(
    ("hw", "scale", "output_size"),
    [
        ((9, 12), 0.5, None),
        ((9, 12), 1 / 3, None),
        ((7, 5), 2, None),
        ((7, 5), 3, None),
        ((11, 13), 0.37, None),
        ((6, 10), None, (9, 4)),  # different scale per axis
        ((2, 3), 4, None),  # image smaller than the kernel: mirroring wraps more than once
    ],
)
@pytest.mark.parametrize("antialiasing", [True, False])
def test_matches_loop_reference(hw, scale, output_size, antialiasing):
    rng = np.random.default_rng(0)
    img = rng.random(hw)
    out = imresize(torch.from_numpy(img), scale=scale, output_size=output_size, antialiasing=antialiasing)
    out_hw = tuple(out.shape)
    scale_hw = (scale, scale) if scale is not None else (out_hw[0] / hw[0], out_hw[1] / hw[1])
    ref = _reference_resize(img, out_hw, scale_hw, antialiasing)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)


def test_antialiasing_smooths_checkerboard():
    i = torch.arange(24)
    board = ((i[:, None] + i[None, :]) % 2).to(torch.float64)
    # At 1/3 the non-antialiased kernel samples single pixels, so the checkerboard survives untouched.
    # (At 1/2 both variants happen to give flat gray: the sample falls midway between two pixels.)
    smooth = imresize(board, scale=1 / 3)
    aliased = imresize(board, scale=1 / 3, antialiasing=False)
    assert (smooth - 0.5).abs().max() < 0.02
    assert aliased.std() > 0.45


# --------------------------------------------------------------------------------------------- batching, dtypes
def test_batched_equals_per_image():
    x = torch.rand(3, 2, 17, 11, dtype=torch.float64)
    batched = imresize(x, scale=1 / 3)
    for n in range(3):
        torch.testing.assert_close(batched[n], imresize(x[n], scale=1 / 3), rtol=0, atol=1e-12)
        for c in range(2):
            torch.testing.assert_close(batched[n, c], imresize(x[n, c], scale=1 / 3), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [0.5, 0.25, 3])
def test_float32_matches_float64_and_dtype_is_preserved(scale):
    x64 = torch.rand(2, 3, 15, 21, dtype=torch.float64)
    out64 = imresize(x64, scale=scale)
    out32 = imresize(x64.float(), scale=scale)
    assert out64.dtype == torch.float64 and out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out64, rtol=0, atol=1e-5)


def test_gradient_flows():
    x = torch.rand(1, 1, 8, 8, requires_grad=True)
    imresize(x, scale=0.5).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x = torch.rand(2, 3, 20, 16, dtype=torch.float64)
    out = imresize(x.cuda(), scale=0.25)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), imresize(x, scale=0.25), rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------------- helpers
def test_mod_crop():
    x = torch.zeros(2, 3, 13, 10)
    assert mod_crop(x, 4).shape == (2, 3, 12, 8)
    assert mod_crop(x, 1).shape == x.shape
    y = torch.arange(25.0).view(5, 5)
    torch.testing.assert_close(mod_crop(y, 2), y[:4, :4])  # top-left kept


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_degrade_is_quantized(scale):
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 12 * scale, 5 * scale)
    lr = bicubic_degrade(hr, scale)
    assert lr.shape == (2, 3, 12, 5) and lr.dtype == hr.dtype
    assert lr.min() >= 0 and lr.max() <= 1  # random HR overshoots [0, 1]; the LR is clamped
    levels = lr.double() * 255
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    expected = quantize(imresize(hr.double(), scale=1 / scale))
    torch.testing.assert_close(lr.double(), expected, rtol=0, atol=1e-6)


def test_quantize_rounds_half_up_like_matlab():
    x = torch.tensor([0.5, 1.5, 2.5, 254.5, 300.0, -3.0], dtype=torch.float64) / 255
    assert (quantize(x) * 255).round().tolist() == [1, 2, 3, 255, 255, 0]


def test_imresize_np_matches_torch():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(9, 14, 3), dtype=np.uint8)
    out = imresize_np(img, 0.5)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    ref = imresize(torch.from_numpy(img.astype(np.float64) / 255).permute(2, 0, 1), scale=0.5)
    ref = quantize_uint8(ref).numpy().transpose(1, 2, 0)
    np.testing.assert_array_equal(out, ref)
    gray = imresize_np(img[..., 0], 2)
    assert gray.shape == (18, 28) and gray.dtype == np.uint8
    with pytest.raises(TypeError):
        imresize_np(img.astype(np.float32), 2)
