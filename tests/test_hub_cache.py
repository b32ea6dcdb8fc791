"""Offline Hub rehearsal: the exact folder `espcn_hf.hub.prepare_upload_folder` would push, laid out as a Hub
cache snapshot (tests/hub_cache.py), loaded by repo id with HF_HUB_OFFLINE=1 in fresh processes:

- with espcn_hf: `from_pretrained`, `resolve_model` (and its fallback to the packaged weights),
  `pipeline("image-super-resolution")` and the CLI's `--model`;
- without it (the import is blocked): `AutoModel`, `AutoModelForImageToImage`, `AutoImageProcessor` and
  `pipeline(..., trust_remote_code=True)`, which run the code files of the snapshot.

Each process checks its result against the packaged model's own output on the same image.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import natural_image
from hub_cache import offline_env, snapshot_repo
from PIL import Image

from espcn_hf import ESPCNImageProcessor
from espcn_hf.hub import prepare_upload_folder
from espcn_hf.pretrained import load_model, packaged_weights

REPO_ID = "rehearsal-owner/espcn-x3"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The upload folder of the packaged x3 model as the snapshot of REPO_ID, an input image and the expected
    output (the packaged model run in this process)."""
    root = tmp_path_factory.mktemp("hub_rehearsal")
    upload = prepare_upload_folder(
        packaged_weights(3), root / "upload", eval_json_paths=[], repo_id=REPO_ID, comparison=False
    )
    snapshot = snapshot_repo(root / "cache", REPO_ID, upload)
    image_path = root / "in.png"
    Image.fromarray(natural_image(24, 32)).save(image_path)
    model = load_model(packaged_weights(3))
    processor = ESPCNImageProcessor()
    with torch.no_grad():
        reconstruction = model(processor(Image.open(image_path))["pixel_values"]).reconstruction
    expected = np.asarray(processor.post_process_super_resolution(reconstruction)[0])
    np.save(root / "expected.npy", expected)
    return {
        "root": root,
        "cache": root / "cache",
        "snapshot": snapshot,
        "upload": upload,
        "image": image_path,
    }


def _run(code: str, hub: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    script = hub["root"] / "script.py"
    script.write_text(textwrap.dedent(code))
    result = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=hub["root"],  # outside the checkout
        env=offline_env(hub["cache"]),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_snapshot_layout_is_the_hub_cache_layout(hub):
    repo_dir = hub["cache"] / "models--rehearsal-owner--espcn-x3"
    commit = (repo_dir / "refs" / "main").read_text()
    assert hub["snapshot"] == repo_dir / "snapshots" / commit
    names = sorted(p.name for p in hub["snapshot"].iterdir())
    assert names == sorted(p.name for p in hub["upload"].iterdir())
    weights = hub["snapshot"] / "model.safetensors"
    assert weights.is_symlink() and weights.resolve().parent == repo_dir / "blobs"
    assert weights.read_bytes() == (packaged_weights(3) / "model.safetensors").read_bytes()
    config = json.loads((hub["snapshot"] / "config.json").read_text())
    assert "custom_pipelines" in config and "AutoModel" in config["auto_map"]
    assert (hub["snapshot"] / "onnx" / "model.onnx").resolve().parent == repo_dir / "blobs"
    assert "onnx/model.onnx" in (hub["snapshot"] / "README.md").read_text()


WITH_PACKAGE = """
    import sys
    import numpy as np
    from PIL import Image
    from transformers import pipeline
    from espcn_hf import ESPCNForImageSuperResolution, upscale
    from espcn_hf.pretrained import CheckpointError, resolve_model

    repo_id, image_path, expected = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
    image = Image.open(image_path)
    model = ESPCNForImageSuperResolution.from_pretrained(repo_id)
    assert "/snapshots/" in model.name_or_path or model.name_or_path == repo_id, model.name_or_path
    resolved, source = resolve_model(repo_id, 3)
    assert source == f"model: {repo_id} (local Hub cache)", source
    out = pipeline("image-super-resolution", model=repo_id)(image)
    np.testing.assert_array_equal(np.asarray(out), expected)
    # upscale() runs a channels_last input (another float summation order than the plain forward above): equal
    # up to one uint8 level where a value sits on a rounding boundary.
    diff = np.abs(np.asarray(upscale(image, resolved, tile_size=None), dtype=int) - expected.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())
    # The default model of a scale: its repo is not in this cache, so the packaged copy is used, said neutrally.
    _, source = resolve_model(None, 3)
    assert source.startswith("model: packaged weights espcn-x3 ("), source
    assert "Error" not in source and "Exception" not in source, source
    # A repo id that is neither reachable nor cached is a clear error, not a fallback to another model.
    try:
        resolve_model("rehearsal-owner/not-uploaded", None)
    except CheckpointError as error:
        message = str(error)
    assert message.startswith(
        "rehearsal-owner/not-uploaded: no such local folder, and the Hub repo cannot be loaded"
    ), message
    print("WITH_PACKAGE_OK")
"""


@pytest.mark.slow
def test_repo_id_offline_with_the_package(hub):
    result = _run(WITH_PACKAGE, hub, REPO_ID, str(hub["image"]), str(hub["root"] / "expected.npy"))
    assert "WITH_PACKAGE_OK" in result.stdout


WITHOUT_PACKAGE = """
    import sys
    sys.modules["espcn_hf"] = None  # the package cannot be imported: only the snapshot's code files can serve
    try:
        import espcn_hf  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("espcn_hf is importable; the test would prove nothing")
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageToImage, pipeline

    repo_id, image_path, expected = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
    image = Image.open(image_path)
    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True)
    image_to_image = AutoModelForImageToImage.from_pretrained(repo_id, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(repo_id, trust_remote_code=True)
    for loaded in (model, image_to_image, processor):
        assert type(loaded).__module__.startswith("transformers_modules."), type(loaded).__module__
    with torch.no_grad():
        out = processor.post_process_super_resolution(model(**processor(image)))[0]
    np.testing.assert_array_equal(np.asarray(out), expected)
    # The snippet the Hub shows for `pipeline_tag: image-to-image` (a task transformers 5 removed), as the card.
    upscaler = pipeline("image-to-image", model=repo_id, trust_remote_code=True)
    assert type(upscaler).__name__ == "ImageSuperResolutionPipeline", type(upscaler)
    assert type(upscaler).__module__.startswith("transformers_modules."), type(upscaler).__module__
    np.testing.assert_array_equal(np.asarray(upscaler(image)), expected)
    # The card's ONNX snippet: onnx/model.onnx by repo id through the Hub cache, run by onnxruntime.
    import onnxruntime as ort
    from huggingface_hub import hf_hub_download

    session = ort.InferenceSession(hf_hub_download(repo_id, "onnx/model.onnx"), providers=["CPUExecutionProvider"])
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    (onnx_out,) = session.run(None, {"pixel_values": rgb.transpose(2, 0, 1)[None]})
    onnx_sr = (np.clip(onnx_out[0], 0, 1).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    assert np.abs(onnx_sr.astype(int) - expected.astype(int)).max() <= 1
    # The pipeline reads files and takes batches of mixed sizes.
    small = image.crop((0, 0, 10, 7))
    batch = upscaler([image_path, small, image], batch_size=2)
    assert [b.size for b in batch] == [(96, 72), (30, 21), (96, 72)]
    np.testing.assert_array_equal(np.asarray(batch[0]), expected)
    print("WITHOUT_PACKAGE_OK")
"""


@pytest.mark.slow
def test_repo_id_offline_without_the_package(hub):
    result = _run(WITHOUT_PACKAGE, hub, REPO_ID, str(hub["image"]), str(hub["root"] / "expected.npy"))
    assert "WITHOUT_PACKAGE_OK" in result.stdout


@pytest.mark.slow
def test_cli_model_repo_id_offline(hub):
    out = hub["root"] / "cli_out.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "espcn_hf.cli",
            "upscale",
            str(hub["image"]),
            "-o",
            str(out),
            "--model",
            REPO_ID,
        ],
        cwd=hub["root"],
        env=offline_env(hub["cache"]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The CLI goes through upscale() (channels_last input): equal to the plain forward up to one uint8 level.
    diff = np.abs(np.asarray(Image.open(out), dtype=int) - np.load(hub["root"] / "expected.npy").astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


def test_helper_refuses_an_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files"):
        snapshot_repo(tmp_path / "cache", "a/b", tmp_path / "empty")


def test_helper_is_deterministic(tmp_path):
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    first = snapshot_repo(tmp_path / "cache", "a/b", folder)
    assert snapshot_repo(tmp_path / "cache", "a/b", folder) == first
    assert Path(first, "config.json").read_text() == "{}"
