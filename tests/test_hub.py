"""Hub publishing: the upload folder, its model card, the comparison picture, and a push that fails clearly without
token or network.

Everything runs offline on a tiny random model. The real push + pull test only runs with HF_TOKEN set.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import load_script
from hub_cache import offline_env, snapshot_repo
from PIL import Image

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, ESPCNImageProcessor
from espcn_hf.evaluation import EvalReport
from espcn_hf.hub import (
    COMPARISON_FILE,
    HUB_PIPELINE_TAG,
    QUANTIZED_ONNX_FILE,
    REQUIRED_FILES,
    HubError,
    int8_verdict,
    prepare_upload_folder,
    push_checkpoint,
    render_upload_card,
)
from espcn_hf.metrics import psnr_ssim, quantize_uint8
from espcn_hf.modelcard import BENCHMARK_DATASETS, SOURCE_URL
from espcn_hf.visualization import render_comparison

REPO_ROOT = Path(__file__).resolve().parents[1]
PUSH_SCRIPT = REPO_ROOT / "scripts" / "push_to_hub.py"
RUN_NOTE = "stopped by the budget at step 30199"


def _natural_photo(height: int = 120, width: int = 132) -> np.ndarray:
    """Stripes and edges at several orientations: something a SR model can beat bicubic on."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    stripes = 0.5 + 0.45 * np.sign(np.sin((x + 0.6 * y) / 3.1))
    rings = 0.5 + 0.4 * np.cos(np.hypot(x - 40, y - 50) / 2.3)
    return quantize_uint8(np.stack([stripes, rings, 0.5 * (stripes + rings)], axis=-1))


def _tiny_checkpoint(folder: Path, scale: int = 3) -> Path:
    torch.manual_seed(0)
    model = ESPCNForImageSuperResolution(
        ESPCNConfig(upscale_factor=scale, hidden_channels=[8, 8], kernel_sizes=[3, 3, 3])
    )
    model.save_pretrained(folder)
    ESPCNImageProcessor(upscale_factor=scale).save_pretrained(folder)
    # The training record a run leaves beside the weights, with a free-text note the card must not quote.
    record = {"commands": [f"python scripts/train.py ...  ({RUN_NOTE})"], "train_dirs": ["T91", "BSD200"]}
    record |= {"loss": "l1", "batch_size": 16, "patch_size": 32, "augment": True, "learning_rate": 0.001}
    (folder / "training_config.json").write_text(json.dumps(record))
    (folder / "eval_results.json").write_text(json.dumps({"step": 1234, "set5_psnr": 30.0}))
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    # Named like a real checkpoint so that the card's model name matches the results file's method.
    return _tiny_checkpoint(tmp_path_factory.mktemp("ckpts") / "espcn-x3")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "stripes.png"
    Image.fromarray(_natural_photo()).save(path)
    return path


@pytest.fixture(scope="module")
def eval_json(tmp_path_factory) -> Path:
    """A results file (EvalReport JSON), with deliberately long decimals."""
    data = {
        "model": "checkpoints/espcn-x3",
        "name": "espcn-x3",
        "scale": 3,
        "command": "python scripts/evaluate.py --model checkpoints/espcn-x3 --scale 3 --sets Set5 Set14",
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


def _push_script():
    return load_script(PUSH_SCRIPT, "push_to_hub")


@pytest.fixture(scope="module")
def dry_run(checkpoint, eval_json, photo, tmp_path_factory):
    """The folder written by `push_to_hub.py --dry-run`, and what the script printed."""
    out = tmp_path_factory.mktemp("dry") / "espcn-x3"
    printed = io.StringIO()
    argv = [str(checkpoint), "--repo-id", "espcn-hf/espcn-x3", "--dry-run", str(out)]
    argv += ["--eval", str(eval_json), "--comparison-image", str(photo)]
    with contextlib.redirect_stdout(printed):
        assert _push_script().main(argv) == 0
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


def _listed_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ----------------------------------------------------------------------------------------------------------------
# The folder
# ----------------------------------------------------------------------------------------------------------------


def test_dry_run_writes_exactly_the_upload_folder(dry_run):
    folder, printed = dry_run
    files = _listed_files(folder)
    code = {"configuration_espcn.py", "modeling_espcn.py", "image_processing_espcn.py", "pipeline_espcn.py"}
    assert files >= {*REQUIRED_FILES, COMPARISON_FILE, *code}
    assert not {f for f in files if not f.endswith((".py", ".json", ".md", ".png", ".safetensors", "onnx"))}
    # the layout onnxruntime and transformers.js users look for, checked on export
    assert (folder / "onnx" / "model.onnx").is_file()
    for name in files:
        assert name in printed, f"the dry run did not list {name}"
    config = json.loads((folder / "config.json").read_text())
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel", "AutoModelForImageToImage"}
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["auto_map"]["AutoImageProcessor"] == "image_processing_espcn.ESPCNImageProcessor"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "staging folder left behind"


def test_the_hub_snippet_task_is_a_custom_pipeline_of_the_folder(dry_run):
    """The Hub shows `pipeline(<pipeline_tag>, model=REPO, trust_remote_code=True)`; transformers 5 removed the
    image-to-image task, so the tag must be served by the folder's own custom pipeline (issue 8, item 2)."""
    folder, _ = dry_run
    front = _front_matter((folder / "README.md").read_text())
    tasks = json.loads((folder / "config.json").read_text())["custom_pipelines"]
    assert front["pipeline_tag"] == HUB_PIPELINE_TAG and front["library_name"] == "transformers"
    assert set(tasks) == {
        front["pipeline_tag"]
    }  # not the registered task: transformers would run it remotely
    assert tasks[front["pipeline_tag"]]["impl"] == "pipeline_espcn.ImageSuperResolutionPipeline"


def test_dry_run_folder_loads_in_process(dry_run, checkpoint):
    from transformers import AutoImageProcessor, AutoModelForImageToImage

    folder, _ = dry_run
    model = AutoModelForImageToImage.from_pretrained(folder)
    assert isinstance(model, ESPCNForImageSuperResolution)
    original = ESPCNForImageSuperResolution.from_pretrained(checkpoint)
    for (name, a), (_, b) in zip(model.state_dict().items(), original.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert isinstance(AutoImageProcessor.from_pretrained(folder), ESPCNImageProcessor)


@pytest.mark.slow
def test_card_snippets_run_by_repo_id_offline_without_espcn_hf(dry_run, checkpoint, tmp_path):
    """The card's transformers snippets and the one the Hub generates from `pipeline_tag` run as a visitor would
    copy them: by repo id (from the Hub cache, offline), in a process where espcn_hf cannot be imported."""
    folder, _ = dry_run
    card = (folder / "README.md").read_text()
    snippets = [s for s in re.findall(r"```python\n(.*?)```", card, re.DOTALL) if "espcn_hf" not in s]
    assert len(snippets) == 3  # pipeline, Auto classes, onnxruntime
    hub_snippet = (
        "from PIL import Image\nfrom transformers import pipeline\n"
        f'pipe = pipeline("{HUB_PIPELINE_TAG}", model="espcn-hf/espcn-x3", trust_remote_code=True)\n'
        'assert pipe(Image.open("photo.png")).size == (3 * 20, 3 * 16)\n'
    )
    checks = [
        'assert Image.open("photo_x3.png").size == (3 * 20, 3 * 16)\n'
        'import shutil\nshutil.copyfile("photo_x3.png", "pipeline_x3.png")',
        # the remote code computes what the package computes
        "assert image.size == (3 * 20, 3 * 16)\n"
        'assert type(model).__module__.startswith("transformers_modules."), type(model).__module__\n'
        "import numpy as np\n"
        'np.testing.assert_allclose(outputs.reconstruction.numpy(), np.load("expected.npy"), atol=1e-5)',
        # the ONNX export gives the pipeline's image, within one level
        "onnx_sr = np.asarray(Image.open('photo_x3.png'), dtype=int)\n"
        "assert np.abs(onnx_sr - np.asarray(Image.open('pipeline_x3.png'), dtype=int)).max() <= 1",
    ]
    program = ['import sys\nsys.modules["espcn_hf"] = None\n']
    for snippet, check in zip(snippets, checks, strict=True):
        program.append(f"{snippet}\n{check}\n")
    program.append(hub_snippet + 'print("SNIPPETS-OK")\n')
    Image.fromarray(_natural_photo(16, 20)).save(tmp_path / "photo.png")
    model = ESPCNForImageSuperResolution.from_pretrained(checkpoint).eval()
    with torch.inference_mode():
        pixels = ESPCNImageProcessor()(Image.open(tmp_path / "photo.png"))["pixel_values"]
        np.save(tmp_path / "expected.npy", model(pixels).reconstruction.numpy())
    cache = tmp_path / "hub-cache"
    snapshot_repo(cache, "espcn-hf/espcn-x3", folder)  # the layout of a download (tests/hub_cache.py)
    env = offline_env(cache, base=_hub_free_env(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(program)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SNIPPETS-OK" in result.stdout


def test_every_file_of_the_upload_folder_has_the_mode_of_a_plain_open(dry_run):
    """Issue "A fresh machine passes": model.safetensors was 0600 (safetensors writes through a private
    temporary file); every file gets what open() gives, every folder what mkdir() gives."""
    from espcn_hf.fileio import current_umask

    folder, _ = dry_run
    umask = current_umask()
    modes = {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*")}
    assert "model.safetensors" in modes and "onnx/model.onnx" in modes
    wanted = {name: (0o777 if (folder / name).is_dir() else 0o666) & ~umask for name in modes}
    assert modes == wanted
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask


def test_the_card_alone_is_the_card_of_the_folder(dry_run, checkpoint, eval_json, photo):
    """`render_upload_card` (the repository's model_card.md) gives the README.md of the upload folder."""
    folder, _ = dry_run
    card = render_upload_card(
        checkpoint, eval_json_paths=[eval_json], repo_id="espcn-hf/espcn-x3", comparison_image=photo
    )
    assert card == (folder / "README.md").read_text()


def test_a_failed_prepare_keeps_the_old_folder(checkpoint, eval_json, tmp_path):
    """The folder is swapped in only when complete: a refused results file leaves the previous folder as it was."""
    out = prepare_upload_folder(checkpoint, tmp_path / "up", comparison=False, onnx=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = json.loads(eval_json.read_text()) | {"scale": 4}
    bad = tmp_path / "eval_espcn-x3_x4.json"
    bad.write_text(json.dumps(other))
    with pytest.raises(HubError, match="x4"):
        prepare_upload_folder(checkpoint, out, eval_json_paths=[bad])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval_espcn-x3_x4.json", "up"]


def test_bad_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(HubError, match="empty"):
        prepare_upload_folder(tmp_path / "empty", tmp_path / "up")
    assert not (tmp_path / "up").exists()


def test_a_loaded_model_makes_the_same_folder(checkpoint, tmp_path):
    """For tests that lay the repository out as a Hub snapshot: a model object is enough."""
    model = ESPCNForImageSuperResolution.from_pretrained(checkpoint)
    folder = prepare_upload_folder(model, tmp_path / "snap", repo_id="me/tiny", comparison=False, onnx=False)
    assert {*REQUIRED_FILES} <= _listed_files(folder)
    assert "me/tiny" in (folder / "README.md").read_text()


# ----------------------------------------------------------------------------------------------------------------
# int8: onnx/model_quantized.onnx only where the measurement file says it loses at most 0.1 dB
# ----------------------------------------------------------------------------------------------------------------


def _int8_measurement(model, lost: dict, recipe: dict | None = None) -> dict:
    """An int8 measurement file (what scripts/benchmark_onnx.py writes) with one row for `model`."""
    from espcn_hf.onnx_export import INT8_RECIPE, weights_digest

    row = {"name": "espcn-x3", "scale": 3, "weights_sha256": weights_digest(model), "psnr_lost_db": lost}
    return {"recipe": dict(INT8_RECIPE) if recipe is None else recipe, "models": [row]}


def test_int8_ships_only_at_most_a_tenth_of_a_db_lost_on_set5_and_set14(checkpoint):
    model = ESPCNForImageSuperResolution.from_pretrained(checkpoint)
    ships, why = int8_verdict(_int8_measurement(model, {"Set5": 0.04, "Set14": 0.1}), model)
    assert ships and why == "0.04 dB on Set5, 0.10 dB on Set14"
    for lost in ({"Set5": 0.04, "Set14": 0.11}, {"Set5": 0.5, "Set14": -0.01}, {"Set5": 0.01}):
        assert not int8_verdict(_int8_measurement(model, lost), model)[0], lost
    other = ESPCNForImageSuperResolution.from_pretrained(checkpoint)
    with torch.no_grad():
        other.body[0].bias.add_(1e-3)  # other weights: the measurement is not theirs
    good = _int8_measurement(model, {"Set5": 0.0, "Set14": 0.0})
    assert int8_verdict(good, other) == (
        False,
        "no int8 measurement of these weights (scripts/benchmark_onnx.py)",
    )
    stale = _int8_measurement(model, {"Set5": 0.0, "Set14": 0.0}, recipe={"format": "QOperator"})
    assert not int8_verdict(stale, model)[0]


def test_the_upload_folder_holds_the_int8_graph_only_where_the_rule_says(checkpoint, tmp_path, monkeypatch):
    from espcn_hf import onnx_export

    rng = np.random.default_rng(0)  # calibration data without reading the training images
    patches = [rng.random((1, 3, 16, 16), dtype=np.float32) for _ in range(4)]
    monkeypatch.setattr(onnx_export, "calibration_patches", lambda scale, **kwargs: patches)
    model = ESPCNForImageSuperResolution.from_pretrained(checkpoint)
    for lost, shipped in (({"Set5": 0.03, "Set14": 0.05}, True), ({"Set5": 0.03, "Set14": 0.2}, False)):
        results = tmp_path / f"onnx_int8_{shipped}.json"
        results.write_text(json.dumps(_int8_measurement(model, lost)))
        folder = prepare_upload_folder(
            checkpoint, tmp_path / f"up{shipped}", comparison=False, int8_results=results
        )
        assert (folder / QUANTIZED_ONNX_FILE).is_file() == shipped
        assert (QUANTIZED_ONNX_FILE in (folder / "README.md").read_text()) == shipped
        assert (folder / "onnx" / "model.onnx").is_file()


def test_the_committed_int8_measurement_is_of_the_packaged_weights():
    """benchmarks/onnx_int8.json decides what the uploads of the packaged models ship: it must measure the weights
    the package holds now, with the recipe quantize_onnx uses, and its "ships" column must be the rule's."""
    from espcn_hf.hub import INT8_MAX_LOSS_DB
    from espcn_hf.onnx_export import INT8_RECIPE, weights_digest
    from espcn_hf.pretrained import load_model, packaged_weights

    data = json.loads((REPO_ROOT / "benchmarks" / "onnx_int8.json").read_text())
    assert data["recipe"] == INT8_RECIPE, "re-run python scripts/benchmark_onnx.py --threads 1"
    assert {row["name"] for row in data["models"]} >= {"espcn-x2", "espcn-x3", "espcn-x4", "espcn-paper-x3"}
    for row in data["models"]:
        preset = "espcn-paper" if row["name"].startswith("espcn-paper") else "espcn"
        model = load_model(packaged_weights(row["scale"], preset), device="cpu")
        assert row["weights_sha256"] == weights_digest(model), (
            f"{row['name']}: the packaged weights changed since benchmarks/onnx_int8.json was written; re-run "
            "python scripts/benchmark_onnx.py --threads 1"
        )
        within = all(row["psnr_lost_db"][name] <= INT8_MAX_LOSS_DB for name in ("Set5", "Set14"))
        assert int8_verdict(data, model)[0] == row["ships"] == within


# ----------------------------------------------------------------------------------------------------------------
# The card
# ----------------------------------------------------------------------------------------------------------------


def test_card_numbers_come_from_the_results_file(dry_run, eval_json):
    from huggingface_hub import ModelCard

    folder, _ = dry_run
    card = (folder / "README.md").read_text()
    report = EvalReport.from_json(eval_json)
    assert "{{" not in card and "}}" not in card, "an unfilled placeholder is left in the card"

    front = _front_matter(card)
    assert front["license"] == "apache-2.0"
    assert {"super-resolution", "image-to-image", "espcn", "pytorch"} <= set(front["tags"])
    # The model-index, parsed back by huggingface_hub, holds this model's numbers per benchmark Hub dataset.
    results = ModelCard.load(folder / "README.md").data.eval_results
    indexed = {(r.dataset_type, r.metric_type): r.metric_value for r in results}
    expected = {}
    for set_name in report.sets:
        scores = report.scores(set_name, "espcn-x3")
        expected[(BENCHMARK_DATASETS[set_name], "psnr")] = round(scores.psnr_y, 4)
        expected[(BENCHMARK_DATASETS[set_name], "ssim")] = round(scores.ssim_y, 4)
    assert indexed == expected

    # The table: one row per benchmark, "PSNR / SSIM" per method, this model last.
    rows = {
        line.split("|")[1].strip(): line
        for line in card.splitlines()
        if line.startswith("| Set") and not line.startswith("| Set |")
    }
    assert set(rows) == set(report.sets)
    for set_name in report.sets:
        cells = [c.strip().strip("*") for c in rows[set_name].strip().strip("|").split("|")[1:]]
        wanted = [
            f"{report.scores(set_name, m).psnr_y:.2f} / {report.scores(set_name, m).ssim_y:.4f}"
            for m in report.methods
        ]
        assert cells == wanted, set_name
    assert report.command in card, "the card must quote the command that produced its numbers"
    assert "@inproceedings{shi2016real" in card
    assert 'pipeline("image-to-image", model="espcn-hf/espcn-x3", trust_remote_code=True)' in card


def test_card_metadata_is_what_the_hub_expects(dry_run):
    """Issue 8 item 6: datasets are Hub ids (benchmarks listed), a link to the code, no internal run notes."""
    folder, _ = dry_run
    card = (folder / "README.md").read_text()
    front = _front_matter(card)
    assert set(BENCHMARK_DATASETS.values()) <= set(front["datasets"])
    assert all("/" in dataset for dataset in front["datasets"]), front["datasets"]
    for entry in front["model-index"][0]["results"]:
        assert entry["dataset"]["type"] in BENCHMARK_DATASETS.values()
    assert SOURCE_URL in card
    assert RUN_NOTE not in card and '"commands"' not in card
    assert "T91" in card and "step 1,234" in card  # the training facts are there, in prose


def _card_with_training(training_config: dict) -> tuple[dict, str]:
    """The front matter and the text of a card rendered with this training record."""
    from espcn_hf.modelcard import render_model_card

    card = str(
        render_model_card(
            ESPCNConfig(upscale_factor=3),
            repo_id="espcn-hf/espcn-x3",
            model_name="espcn-x3",
            training_config=training_config,
        )
    )
    return _front_matter(card), card


@pytest.mark.parametrize("name", ["espcn-x2", "espcn-x3", "espcn-x4", "espcn-paper-x3"])
def test_card_names_the_training_data_of_the_shipped_models(name):
    """Issue "A fresh machine passes": the training data is named honestly. Every training folder of a
    shipped model is a known set, described with where its files come from; `datasets` lists the Hub ids of the
    training data that has one (none of T91, BSD200 and the BSDS500 test split has one we can vouch for) and
    the card says which sets it leaves out and why, so no id is invented."""
    from espcn_hf.modelcard import TRAINING_SETS, training_datasets

    record = json.loads((REPO_ROOT / "espcn_hf" / "weights" / name / "training_config.json").read_text())
    assert record["train_dirs"] and set(record["train_dirs"]) <= set(TRAINING_SETS)
    front, card = _card_with_training(record)
    assert set(BENCHMARK_DATASETS.values()) <= set(front["datasets"])
    assert set(training_datasets(record)) <= set(front["datasets"])
    unlisted = []
    for folder in record["train_dirs"]:
        known = TRAINING_SETS[folder]
        assert f"[{known.label}]({known.source}) ({known.about})" in card
        if known.hub_id is None:
            unlisted.append(known.label)
        else:
            assert known.hub_id in front["datasets"]
    if unlisted:
        row = next(line for line in card.splitlines() if line.startswith("| On the Hub |"))
        assert ", ".join(unlisted) + ": no Hub dataset is known to hold exactly these images" in row
        assert "`datasets` metadata (Hub ids only) does not name them" in row
    assert "The card's `datasets` metadata holds Hub ids only" in card


def test_card_datasets_take_the_hub_ids_of_the_training_data(monkeypatch):
    """A training folder with a known Hub copy and a Hub training dataset (`hub_dataset`) go into `datasets`,
    once each, after the benchmark sets; an unknown folder is named as it is, with no id made up for it."""
    import dataclasses

    from espcn_hf import modelcard

    t91 = dataclasses.replace(modelcard.TRAINING_SETS["T91"], hub_id="someone/T91")
    monkeypatch.setitem(modelcard.TRAINING_SETS, "T91", t91)
    record = {"train_dirs": ["T91", "NewSet"], "hub_dataset": "goodfellowliu/DIV2K"}
    front, card = _card_with_training(record)
    assert front["datasets"] == [*BENCHMARK_DATASETS.values(), "someone/T91", "goodfellowliu/DIV2K"]
    row = next(line for line in card.splitlines() if line.startswith("| On the Hub |"))
    assert "`someone/T91`: in the card's `datasets` metadata" in row
    assert "`goodfellowliu/DIV2K`: in the card's `datasets` metadata" in row
    assert "NewSet: no Hub dataset is known" in row and "T91: no Hub" not in row
    assert modelcard.training_datasets({"hub_dataset": "goodfellowliu/DIV2K", "train_dirs": ["NewSet"]}) == [
        "goodfellowliu/DIV2K"
    ]


def test_card_without_evaluation_says_so(checkpoint, tmp_path):
    folder = prepare_upload_folder(checkpoint, tmp_path / "up", comparison=False)
    card = (folder / "README.md").read_text()
    assert "model-index" not in _front_matter(card)
    assert "has not been evaluated yet" in card
    assert COMPARISON_FILE not in card and not (folder / COMPARISON_FILE).exists()


def test_evaluation_picture_beside_the_json_is_uploaded(checkpoint, eval_json, tmp_path):
    data_dir = tmp_path / "bench"
    data_dir.mkdir()
    json_path = data_dir / eval_json.name
    json_path.write_text(eval_json.read_text())
    Image.new("RGB", (30, 20), (200, 10, 10)).save(json_path.with_suffix(".png"))
    folder = prepare_upload_folder(
        checkpoint, tmp_path / "up", eval_json_paths=[json_path], comparison=False, onnx=False
    )
    assert (folder / "evaluation.png").is_file()
    assert "](evaluation.png)" in (folder / "README.md").read_text()


def test_unknown_template_placeholder_is_refused(checkpoint, tmp_path):
    template = tmp_path / "card.md"
    template.write_text("---\nlicense: apache-2.0\n---\n# {{ model_name }} {{ not_a_field }}\n")
    with pytest.raises(HubError, match="not_a_field"):
        prepare_upload_folder(checkpoint, tmp_path / "up", template=template, comparison=False, onnx=False)


def test_package_code_does_not_read_the_checkout():
    """Issue 8: nothing in espcn_hf/ reaches into the repository around it: the card template is package data
    (in the wheel), the results files and the photo are passed in by the scripts."""
    import importlib.resources

    import espcn_hf
    from espcn_hf import evaluation, hub, modelcard, visualization

    package = Path(espcn_hf.__file__).resolve().parent
    assert importlib.resources.files("espcn_hf").joinpath(modelcard.DEFAULT_TEMPLATE).is_file()
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert "templates/*.md" in pyproject, "the template must be package data of the wheel"
    # one template, inside the package: model_card.md at the top is a rendered card (tests/test_results_summary.py)
    assert "{{" not in (REPO_ROOT / "model_card.md").read_text()
    for module in (hub, modelcard, evaluation, visualization):
        for name, value in vars(module).items():
            if isinstance(value, Path):
                assert package in value.resolve().parents, f"{module.__name__}.{name} = {value}"


# ----------------------------------------------------------------------------------------------------------------
# The comparison picture
# ----------------------------------------------------------------------------------------------------------------


def test_comparison_is_the_crop_where_the_model_gains_most(checkpoint, photo):
    """A real photo crop (not a chart), scored under the protocol, chosen where ESPCN beats bicubic most."""
    from espcn_hf.degradation import bicubic_degrade, imresize
    from espcn_hf.inference import upscale_tensor

    model = ESPCNForImageSuperResolution.from_pretrained(checkpoint).eval()
    hr = _natural_photo()
    result = render_comparison(model, hr, source="stripes", crop=48)
    left, top, right, bottom = result.box
    assert (right - left, bottom - top) == (48, 48)
    assert result.image.size == (3 * 96 + 8, 96 + 18)

    hr_t = torch.from_numpy(hr.astype(np.float64) / 255).permute(2, 0, 1)[None]
    lr = bicubic_degrade(hr_t, 3)
    bicubic = quantize_uint8(imresize(lr, scale=3))
    sr = quantize_uint8(upscale_tensor(model, lr.float()))
    hr_u8 = quantize_uint8(hr_t)

    def gain(y: int, x: int) -> float:
        window = (..., slice(y, y + 48), slice(x, x + 48))
        ref = hr_u8[window]
        p_sr = psnr_ssim(sr[window], ref, 3, crop_border=0, with_ssim=False).psnr
        p_bic = psnr_ssim(bicubic[window], ref, 3, crop_border=0, with_ssim=False).psnr
        return float(p_sr - p_bic)

    grid = [(y, x) for y in range(0, 120 - 48 + 1, 24) for x in range(0, 132 - 48 + 1, 24)]
    assert gain(top, left) == pytest.approx(max(gain(y, x) for y, x in grid), abs=1e-9)
    window = (..., slice(top, bottom), slice(left, right))
    assert result.psnr_model == pytest.approx(float(psnr_ssim(sr[window], hr_u8[window], 3).psnr))
    assert result.psnr_bicubic == pytest.approx(float(psnr_ssim(bicubic[window], hr_u8[window], 3).psnr))
    caption = result.caption(3)
    assert f"{result.psnr_bicubic:.2f} dB (bicubic)" in caption and "stripes" in caption


def test_card_shows_the_comparison_of_the_photo(dry_run):
    folder, _ = dry_run
    card = (folder / "README.md").read_text()
    assert f"![HR crop, bicubic and ESPCN side by side]({COMPARISON_FILE})" in card
    assert "`stripes` of photo" in card and "dB (ESPCN) on this crop" in card
    with Image.open(folder / COMPARISON_FILE) as image:
        assert image.format == "PNG" and image.width > 3 * image.height // 2


# ----------------------------------------------------------------------------------------------------------------
# The push
# ----------------------------------------------------------------------------------------------------------------


def test_push_without_token_fails_clearly_after_preparing_the_folder(
    checkpoint, eval_json, tmp_path, monkeypatch, capsys
):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)  # no login on this machine
    folder = tmp_path / "upload"
    argv = [str(checkpoint), "--repo-id", "espcn-hf/espcn-x3", "--folder", str(folder)]
    argv += ["--eval", str(eval_json), "--comparison-image", "none"]
    assert _push_script().main(argv) == 1
    err = capsys.readouterr().err
    assert "no HF token" in err and "huggingface-cli login" in err
    assert str(folder) in err
    assert "Traceback" not in err
    assert set(REQUIRED_FILES) <= _listed_files(folder)


@pytest.mark.parametrize("setting", ["unreachable-endpoint", "offline"])
def test_push_without_network_fails_clearly_after_preparing_the_folder(
    setting, checkpoint, tmp_path, monkeypatch
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
    assert set(REQUIRED_FILES) <= _listed_files(folder)


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
        assert {p.name for p in Path(local).iterdir()} >= set(REQUIRED_FILES)
        model = AutoModel.from_pretrained(repo_id, trust_remote_code=True, cache_dir=tmp_path / "cache")
        assert model.config.upscale_factor == 3
    finally:
        api.delete_repo(repo_id, missing_ok=True)


def test_card_training_table_names_the_lineage_and_the_precision():
    from espcn_hf.modelcard import training_section

    config = {
        "train_dirs": ["T91"],
        "learning_rate": 2e-4,
        "commands": ["a", "b", "c"],
        "mixed_precision": "bf16",
    }
    table = training_section(config, {"step": 4000})
    assert "| Runs | 3, each after the first starting from the weights of the one before;" in table
    assert (
        "| Precision | bf16 autocast" in table
        and "| Best checkpoint (on the validation sets) | step 4,000 |" in table
    )
    single = training_section({"train_dirs": ["T91"], "commands": ["a"], "mixed_precision": "no"})
    assert "Runs" not in single and "Precision" not in single
