"""evaluate_model and scripts/evaluate.py on the tiny fixture set."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, metrics
from espcn_hf.data import load_benchmark
from espcn_hf.degradation import bicubic_degrade, imresize, mod_crop, quantize
from espcn_hf.evaluation import bicubic_upscaler, evaluate_model, image_scores

FIXTURES = Path(__file__).parent / "fixtures"
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py"
TINY = {"hidden_channels": [4, 4], "kernel_sizes": [3, 3, 3]}


def load_script():
    spec = importlib.util.spec_from_file_location("evaluate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("scale", [2, 3])
def test_bicubic_psnr_equals_direct_computation(scale):
    ds = load_benchmark("tiny_set", root=FIXTURES, scale=scale)
    result = evaluate_model(bicubic_upscaler(scale), ds, scale)
    psnrs, ssims = [], []
    for path in sorted((FIXTURES / "tiny_set").glob("*.png")):
        from PIL import Image

        hr = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].double() / 255
        hr = mod_crop(hr, scale)
        sr = quantize(imresize(bicubic_degrade(hr, scale), scale=scale))
        psnrs.append(metrics.psnr(sr, hr, scale=scale))
        ssims.append(metrics.ssim(sr, hr, scale=scale))
    assert result["num_images"] == 3
    assert result["psnr_y"] == pytest.approx(float(np.mean(psnrs)), abs=1e-9)
    assert result["ssim_y"] == pytest.approx(float(np.mean(ssims)), abs=1e-9)
    assert 15 < result["psnr_y"] < 60


def test_image_scores_equal_the_metrics_module():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-9, 10, hr.shape), 0, 255).astype(np.uint8)
    scores = image_scores(sr, hr, 2, rgb_ssim=True)
    assert scores["psnr_y"] == pytest.approx(metrics.psnr(sr, hr, 2), abs=1e-9)
    assert scores["ssim_y"] == pytest.approx(metrics.ssim(sr, hr, 2), abs=1e-9)
    assert scores["psnr_rgb"] == pytest.approx(metrics.psnr(sr, hr, 2, y_channel=False), abs=1e-9)
    assert scores["ssim_rgb"] == pytest.approx(metrics.ssim(sr, hr, 2, y_channel=False), abs=1e-9)


def test_model_gives_finite_scores_and_outputs():
    torch.manual_seed(0)
    model = ESPCNForImageSuperResolution(ESPCNConfig(upscale_factor=2, **TINY))
    ds = load_benchmark("tiny_set", root=FIXTURES, scale=2)
    result = evaluate_model(model, ds, 2, keep_outputs=["rings"], rgb_ssim=True)
    assert all(math.isfinite(result[k]) for k in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"))
    assert set(result["per_image"]) == {"blocks", "rings", "stripes"}
    assert result["outputs"]["rings"].shape == (60, 72, 3) and result["outputs"]["rings"].dtype == np.uint8


def test_cli_writes_json_with_the_schema(tmp_path):
    model_dir = tmp_path / "espcn-tiny-x2"
    ESPCNForImageSuperResolution(ESPCNConfig(upscale_factor=2, **TINY)).save_pretrained(model_dir)
    out, root = tmp_path / "out", tmp_path / "data"
    shutil.copytree(FIXTURES / "tiny_set", root / "tiny_set")
    (root / "other").mkdir()
    shutil.copy(FIXTURES / "tiny_set" / "rings.png", root / "other" / "a_rings.png")
    argv = ["--model", str(model_dir), "--scale", "2", "--sets", "tiny_set", "other", "--data-dir", str(root)]
    argv += ["--out", str(out), "--peers"]
    assert load_script().main(argv) == 0
    payload = json.loads((out / "eval_espcn-tiny-x2_x2.json").read_text())
    assert list(payload) == [
        "model",
        "name",
        "scale",
        "command",
        "results",
        "methods",
        "seconds",
        "environment",
    ]
    assert payload["name"] == "espcn-tiny-x2" and payload["scale"] == 2 and payload["model"] == str(model_dir)
    assert payload["methods"] == ["bicubic", "espcn-tiny-x2"]
    assert "--sets tiny_set other" in payload["command"]
    assert list(payload["results"]) == ["tiny_set", "other"]
    for method in payload["methods"]:
        scores = payload["results"]["tiny_set"][method]
        assert all(math.isfinite(scores[k]) for k in ("psnr_y", "ssim_y", "psnr_rgb"))
    assert payload["environment"]["device"] == "cpu" and "torch" in payload["environment"]
    assert "| tiny_set |" in (out / "eval_espcn-tiny-x2_x2.md").read_text()
    assert (out / "eval_espcn-tiny-x2_x2.png").stat().st_size > 1000


def test_cli_bicubic_only_with_opencv_peer(tmp_path):
    from espcn_hf.data import default_data_dir

    if not (default_data_dir() / "peers" / "opencv_espcn" / "ESPCN_x3.pb").is_file():
        pytest.skip("OpenCV peer models not found under the data dir")
    out = tmp_path / "out"
    argv = ["--model", "bicubic-only", "--scale", "3", "--sets", "tiny_set", "--data-dir", str(FIXTURES)]
    argv += ["--out", str(out), "--peers", "opencv-espcn", "--no-picture"]
    assert load_script().main(argv) == 0
    payload = json.loads((out / "eval_peers_x3.json").read_text())
    assert payload["name"] == "peers" and payload["methods"] == ["bicubic", "opencv-espcn"]
    assert math.isfinite(payload["results"]["tiny_set"]["opencv-espcn"]["psnr_y"])
