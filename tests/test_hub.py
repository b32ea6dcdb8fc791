"""Hub publishing: the upload folder, its model card, and a push that fails clearly without token or network.

Everything runs offline on a tiny random model. The real push + pull test only runs with HF_TOKEN set.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, ESPCNImageProcessor
from espcn_hf.hub import (
    COMPARISON_FILE,
    REQUIRED_FILES,
    HubError,
    prepare_upload_folder,
    push_checkpoint,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PUSH_SCRIPT = REPO_ROOT / "scripts" / "push_to_hub.py"
UPLOAD_FILES = {*REQUIRED_FILES, "README.md", COMPARISON_FILE}


def _tiny_checkpoint(folder: Path, scale: int = 3) -> Path:
    torch.manual_seed(0)
    model = ESPCNForImageSuperResolution(
        ESPCNConfig(upscale_factor=scale, hidden_channels=[8, 8], kernel_sizes=[3, 3, 3])
    )
    model.save_pretrained(folder)
    ESPCNImageProcessor(upscale_factor=scale).save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def _no_real_evaluations(tmp_path_factory, monkeypatch):
    """Cards in these tests use the fixture JSONs only, not whatever benchmarks/ holds in this checkout."""
    monkeypatch.setattr("espcn_hf.hub.BENCHMARK_DIR", tmp_path_factory.mktemp("empty-benchmarks"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    # Named like a real checkpoint so that the card's model name matches the evaluation file's "name".
    return _tiny_checkpoint(tmp_path_factory.mktemp("ckpts") / "espcn-x3")


@pytest.fixture(scope="module")
def eval_json(tmp_path_factory) -> Path:
    """An evaluation file in the schema of scripts/evaluate.py, with deliberately long decimals."""
    data = {
        "model": "checkpoints/espcn-x3",
        "name": "espcn-x3",
        "scale": 3,
        "command": "python scripts/evaluate.py --model checkpoints/espcn-x3 --scale 3 --benchmarks Set5 Set14",
        "results": {
            "Set5": {
                "bicubic": {"psnr_y": 30.391234, "ssim_y": 0.868211, "psnr_rgb": 28.4},
                "opencv-espcn": {"psnr_y": 32.551122, "ssim_y": 0.907654, "psnr_rgb": 30.1},
                "opencv-fsrcnn": {"psnr_y": 32.667701, "ssim_y": 0.909012, "psnr_rgb": 30.2},
                "espcn-x3": {"psnr_y": 32.716543, "ssim_y": 0.910987, "psnr_rgb": 30.3},
            },
            "Set14": {
                "bicubic": {"psnr_y": 27.548765, "ssim_y": 0.774212, "psnr_rgb": 26.0},
                "opencv-espcn": {"psnr_y": 29.081234, "ssim_y": 0.815432, "psnr_rgb": 27.0},
                "opencv-fsrcnn": {"psnr_y": 29.14321, "ssim_y": 0.817765, "psnr_rgb": 27.1},
                "espcn-x3": {"psnr_y": 29.2049, "ssim_y": 0.819954, "psnr_rgb": 27.2},
            },
        },
        "methods": ["bicubic", "opencv-espcn", "opencv-fsrcnn", "espcn-x3"],
        "seconds": 41.7,
        "environment": {"torch": "2.13.0+cpu", "device": "cpu"},
    }
    path = tmp_path_factory.mktemp("bench") / "eval_espcn-x3_x3.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def dry_run(checkpoint, eval_json, tmp_path_factory):
    """The folder written by `push_to_hub.py --dry-run`, and what the script printed."""
    spec = importlib.util.spec_from_file_location("push_to_hub", PUSH_SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path_factory.mktemp("dry") / "espcn-x3"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = script.main(
            [
                str(checkpoint),
                "--repo-id",
                "espcn-hf/espcn-x3",
                "--dry-run",
                str(out),
                "--eval",
                str(eval_json),
            ]
        )
    assert code == 0
    return out, printed.getvalue()


def _hub_free_env(tmp_path: Path) -> dict:
    """Environment for a subprocess that must not see a token, the network, or this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING")) and k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1")
    return env


def _front_matter(card: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", card, re.DOTALL)
    assert match, "the card has no YAML front matter"
    return yaml.safe_load(match.group(1))


def test_dry_run_writes_exactly_the_upload_folder(dry_run):
    folder, printed = dry_run
    files = {p.name for p in folder.iterdir()}
    assert files == UPLOAD_FILES
    for name in UPLOAD_FILES:
        assert name in printed, f"the dry run did not list {name}"
    config = json.loads((folder / "config.json").read_text())
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel", "AutoModelForImageToImage"}
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["auto_map"]["AutoImageProcessor"] == "image_processing_espcn.ESPCNImageProcessor"


def test_dry_run_folder_loads_in_process(dry_run, checkpoint):
    from transformers import AutoImageProcessor, AutoModelForImageToImage

    folder, _ = dry_run
    model = AutoModelForImageToImage.from_pretrained(folder)
    assert isinstance(model, ESPCNForImageSuperResolution)
    original = ESPCNForImageSuperResolution.from_pretrained(checkpoint)
    for (name, a), (_, b) in zip(model.state_dict().items(), original.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert isinstance(AutoImageProcessor.from_pretrained(folder), ESPCNImageProcessor)


def test_dry_run_folder_loads_with_remote_code_without_espcn_hf(dry_run, checkpoint, tmp_path):
    """Where espcn_hf is not importable, the code files in the folder are enough (trust_remote_code=True)."""
    folder, _ = dry_run
    image = (np.random.default_rng(0).random((12, 10, 3)) * 255).astype(np.uint8)
    np.save(tmp_path / "image.npy", image)
    model = ESPCNForImageSuperResolution.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        expected = model(ESPCNImageProcessor()(image)["pixel_values"]).reconstruction
    np.save(tmp_path / "expected.npy", expected.numpy())

    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["espcn_hf"] = None  # installed editable in this venv: make `import espcn_hf` fail
        try:
            import espcn_hf
        except ImportError:
            pass
        else:
            raise SystemExit("espcn_hf is still importable")
        import numpy as np, torch
        from transformers import AutoImageProcessor, AutoModel, AutoModelForImageToImage
        folder = {str(folder)!r}
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert type(AutoModelForImageToImage.from_pretrained(folder, trust_remote_code=True)) is type(model)
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        assert type(processor).__module__.startswith("transformers_modules."), type(processor).__module__
        inputs = processor(np.load("image.npy"))
        with torch.no_grad():
            out = model(pixel_values=inputs["pixel_values"]).reconstruction
        assert tuple(out.shape) == (1, 3, 36, 30), out.shape
        np.testing.assert_allclose(out.numpy(), np.load("expected.npy"), atol=1e-5)
        print("REMOTE-CODE-OK", type(model).__name__, type(processor).__name__)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_hub_free_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE-CODE-OK ESPCNForImageSuperResolution ESPCNImageProcessor" in result.stdout


def test_card_numbers_come_from_the_eval_json(dry_run, eval_json):
    folder, _ = dry_run
    card = (folder / "README.md").read_text()
    data = json.loads(eval_json.read_text())
    assert "{{" not in card and "}}" not in card, "an unfilled placeholder is left in the card"

    front = _front_matter(card)
    assert front["license"] == "apache-2.0"
    assert front["library_name"] == "transformers"
    assert front["pipeline_tag"] == "image-to-image"
    assert {"super-resolution", "image-to-image", "espcn", "pytorch"} <= set(front["tags"])
    [entry] = front["model-index"]
    assert entry["name"] == "espcn-x3"
    indexed = {}
    for result in entry["results"]:
        bench = result["dataset"]["type"]
        for metric in result["metrics"]:
            indexed[(bench, metric["type"])] = metric["value"]
    expected = {}
    for bench, methods in data["results"].items():
        expected[(bench.lower(), "psnr")] = round(methods["espcn-x3"]["psnr_y"], 4)
        expected[(bench.lower(), "ssim")] = round(methods["espcn-x3"]["ssim_y"], 4)
    assert indexed == expected

    # The table: one row per benchmark, "PSNR / SSIM" per method in the JSON's method order.
    rows = {line.split("|")[1].strip(): line for line in card.splitlines() if line.startswith("| Set")}
    assert set(rows) == set(data["results"])
    for bench, methods in data["results"].items():
        cells = [c.strip().strip("*") for c in rows[bench].strip().strip("|").split("|")[1:]]
        wanted = [f"{methods[m]['psnr_y']:.2f} / {methods[m]['ssim_y']:.4f}" for m in data["methods"]]
        assert cells == wanted, bench
    assert data["command"] in card, "the card must quote the command that produced its numbers"
    assert f"![HR crop, bicubic and ESPCN side by side]({COMPARISON_FILE})" in card
    assert "@inproceedings{shi2016real" in card
    assert "espcn-hf/espcn-x3" in card  # usage snippets point at the repo


def test_card_without_evaluation_says_so(checkpoint, tmp_path):
    folder = prepare_upload_folder(checkpoint, tmp_path / "up", eval_json_paths=[], comparison=False)
    card = (folder / "README.md").read_text()
    assert "model-index" not in _front_matter(card)
    assert "has not been evaluated yet" in card


def test_eval_json_of_another_scale_is_refused(checkpoint, eval_json, tmp_path):
    other = json.loads(eval_json.read_text()) | {"scale": 4}
    path = tmp_path / "eval_espcn-x3_x4.json"
    path.write_text(json.dumps(other))
    with pytest.raises(HubError, match="x4"):
        prepare_upload_folder(checkpoint, tmp_path / "up", eval_json_paths=[path], comparison=False)


def test_bad_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(HubError, match="config.json"):
        prepare_upload_folder(tmp_path / "empty", tmp_path / "up")


def test_push_without_token_fails_clearly_after_preparing_the_folder(checkpoint, eval_json, tmp_path):
    folder = tmp_path / "upload"
    result = subprocess.run(
        [
            sys.executable,
            str(PUSH_SCRIPT),
            str(checkpoint),
            "--repo-id",
            "espcn-hf/espcn-x3",
            "--folder",
            str(folder),
            "--eval",
            str(eval_json),
        ],
        env=_hub_free_env(tmp_path) | {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "no HF token" in result.stderr and "huggingface-cli login" in result.stderr
    assert str(folder) in result.stderr
    assert "Traceback" not in result.stderr
    assert {p.name for p in folder.iterdir()} == UPLOAD_FILES


@pytest.mark.parametrize("setting", ["unreachable-endpoint", "offline"])
def test_push_without_network_fails_clearly_after_preparing_the_folder(
    setting, checkpoint, eval_json, tmp_path, monkeypatch
):
    import huggingface_hub.constants as hub_constants

    if setting == "offline":
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    else:
        monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    folder = tmp_path / "upload"
    with pytest.raises(HubError, match="cannot reach the Hub") as error:
        push_checkpoint(checkpoint, "espcn-hf/espcn-x3", token="hf_not_a_real_token", folder=folder)
    assert f"the folder is ready at {folder.resolve()}" in str(error.value)
    assert {p.name for p in folder.iterdir()} == UPLOAD_FILES


@pytest.mark.skipif(
    not os.environ.get("HF_TOKEN"), reason="real Hub push: set HF_TOKEN (write access) to run it"
)
def test_real_push_and_pull(checkpoint, eval_json, tmp_path):
    from huggingface_hub import HfApi, snapshot_download
    from transformers import AutoModel

    api = HfApi()
    namespace = os.environ.get("ESPCN_HF_TEST_NAMESPACE") or api.whoami()["name"]
    repo_id = f"{namespace}/espcn-hf-test-{uuid.uuid4().hex[:8]}"
    try:
        url = push_checkpoint(
            checkpoint, repo_id, private=True, folder=tmp_path / "up", eval_json_paths=[eval_json]
        )
        assert repo_id in url
        local = snapshot_download(repo_id, cache_dir=tmp_path / "cache")
        assert {p.name for p in Path(local).iterdir()} >= UPLOAD_FILES
        model = AutoModel.from_pretrained(repo_id, trust_remote_code=True, cache_dir=tmp_path / "cache")
        assert model.config.upscale_factor == 3
    finally:
        api.delete_repo(repo_id, missing_ok=True)


def test_evaluation_picture_beside_the_json_is_uploaded(checkpoint, eval_json, tmp_path):
    data_dir = tmp_path / "bench"
    data_dir.mkdir()
    json_path = data_dir / eval_json.name
    json_path.write_text(eval_json.read_text())
    from PIL import Image

    Image.new("RGB", (30, 20), (200, 10, 10)).save(json_path.with_suffix(".png"))
    folder = prepare_upload_folder(checkpoint, tmp_path / "up", eval_json_paths=[json_path], comparison=False)
    assert (folder / "evaluation.png").is_file()
    assert "](evaluation.png)" in (folder / "README.md").read_text()
