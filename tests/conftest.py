"""Shared fixtures: tiny models (a few channels) and the location of the read-only shared data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`../shared/data` beside the checkout, or $ESPCN_HF_DATA_DIR (`espcn_hf.data.default_data_dir`'s rule)."""
    from espcn_hf.data import default_data_dir

    return default_data_dir(fallback=REPO_ROOT.parent / "shared" / "data")


# The package never guesses where data lives (espcn_hf.data.default_data_dir): the tests name ../shared/data.
os.environ.setdefault("ESPCN_HF_DATA_DIR", str(shared_data_dir()))
# upscale()'s backend="auto" moves a model to onnxruntime once enough of its pixels went through torch (the
# results are then a rounding tie apart from torch's): the suite pins "auto" to torch, so every test sees the same
# backend whatever ran before it; tests/test_ort_backend.py unpins it.
os.environ.setdefault("ESPCN_HF_BACKEND", "torch")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not (path / "benchmarks").is_dir():
        pytest.skip(f"shared data not found at {path} (set ESPCN_HF_DATA_DIR)")
    return path


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def load_script(path: str | Path, name: str | None = None, register: bool = False):
    """Import a file that is not in a package (a script under scripts/, the Space's app.py) as a module.
    `register` puts it in sys.modules (gradio inspects the source of classes defined there)."""
    import importlib.util
    import sys

    path = Path(path) if Path(path).is_absolute() else REPO_ROOT / path
    spec = importlib.util.spec_from_file_location(name or f"{path.stem}_script", path)
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[spec.name] = module
    # as `python scripts/<name>.py` does: its own folder first on sys.path while it loads (scripts/common.py)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def psnr_per_image(sr, hr, scale: int, **kwargs) -> list[float]:
    """PSNR-Y (dB) of each image, from the protocol's one function `espcn_hf.metrics.psnr_ssim`."""
    from espcn_hf.metrics import psnr_ssim

    return [float(v) for v in psnr_ssim(sr, hr, scale, with_ssim=False, **kwargs).psnr.cpu()]


def ssim_per_image(sr, hr, scale: int, **kwargs) -> list[float]:
    from espcn_hf.metrics import psnr_ssim

    return [float(v) for v in psnr_ssim(sr, hr, scale, **kwargs).ssim.cpu()]


def psnr(sr, hr, scale: int, **kwargs) -> float:
    """Mean PSNR over a batch (``inf`` if any pair is identical)."""
    import math

    values = psnr_per_image(sr, hr, scale, **kwargs)
    return math.fsum(values) / len(values)


def ssim(sr, hr, scale: int, **kwargs) -> float:
    import math

    values = ssim_per_image(sr, hr, scale, **kwargs)
    return math.fsum(values) / len(values)


def tiny_config(upscale_factor: int = 3, **kwargs):
    from espcn_hf import ESPCNConfig

    # every layer drawn by one rule: an untrained net whose output varies (the default starts it near zero)
    defaults = {"hidden_channels": [8, 8], "kernel_sizes": [5, 3, 3], "output_initializer_range": 0.0}
    return ESPCNConfig(upscale_factor=upscale_factor, **{**defaults, **kwargs})


def tiny_model(upscale_factor: int = 3, **kwargs):
    from espcn_hf import ESPCNForImageSuperResolution

    torch.manual_seed(0)
    return ESPCNForImageSuperResolution(tiny_config(upscale_factor, **kwargs)).eval()


def save_checkpoint(model, folder: Path) -> Path:
    from espcn_hf import ESPCNImageProcessor

    model.save_pretrained(folder)
    ESPCNImageProcessor(upscale_factor=model.config.upscale_factor).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A saved tiny x3 RGB model (config.json, model.safetensors, preprocessor_config.json, code files)."""
    return save_checkpoint(tiny_model(3), tmp_path_factory.mktemp("tiny-x3"))


def natural_image(height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    """A smooth-plus-texture uint8 RGB image, a stand-in for a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([np.sin(6 * x + 1), np.cos(5 * y), np.sin(4 * (x + y))], axis=-1) * 0.35 + 0.5
    noise = rng.normal(0, 0.05, (height, width, 3))
    return (np.clip(base + noise, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture
def rgb_image() -> Image.Image:
    return Image.fromarray(natural_image())
