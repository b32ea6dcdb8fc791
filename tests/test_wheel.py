"""The wheel is self-sufficient: built from the sources, installed with `pip install --target` into an empty
folder, and run from outside the checkout with HF_HUB_OFFLINE=1 (empty Hub cache), it upscales an image with the
default model, i.e. the packaged weights. Offline: no build isolation, no index."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, natural_image
from PIL import Image

# What a wheel is built from (the rest of the checkout must not be needed).
SOURCES = ("pyproject.toml", "README.md", "espcn_hf", "espcn_hf_cli")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    assert importlib.util.find_spec("setuptools"), "the build backend is missing: pip install -e '.[test]'"
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    result = subprocess.run(
        [*command, "-w", str(root / "dist"), str(source)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = (root / "dist").glob("espcn_hf-*.whl")
    return wheel


def test_wheel_holds_the_packaged_models(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for model in ("espcn-x2", "espcn-x3", "espcn-x4", "espcn-paper-x3"):
        for file in ("config.json", "model.safetensors", "preprocessor_config.json"):
            assert f"espcn_hf/weights/{model}/{file}" in names, (model, file)
    assert not any(name.startswith(("tests/", "scripts/", "benchmarks/", "checkpoints/")) for name in names)
    assert not any(
        name.startswith("espcn_hf/weights/") and name.endswith(".py") for name in names
    )  # generated
    assert "espcn_hf_cli/__init__.py" in names  # the console script's front door


@pytest.mark.slow
def test_installed_wheel_upscales_offline_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target)]
    result = subprocess.run([*install, str(wheel)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    work = tmp_path / "work"
    work.mkdir()
    Image.fromarray(natural_image(20, 24)).save(work / "in.png")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "ESPCN_HF_", "PYTHON"))
    }
    env.update(
        PYTHONPATH=str(target),  # the installed wheel, ahead of the editable checkout
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),  # an empty Hub cache
    )
    code = (
        "import sys, espcn_hf, espcn_hf_cli; "
        "print('PACKAGE', espcn_hf.__file__); "
        "sys.exit(espcn_hf_cli.main(['upscale', 'in.png', '-o', 'out.png']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"PACKAGE {target / 'espcn_hf' / '__init__.py'}" in result.stdout
    out = Image.open(work / "out.png")
    assert out.size == (72, 60)  # the default model is x3
    assert np.asarray(out).std() > 1  # an image, not a blank
