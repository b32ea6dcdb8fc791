"""Model resolution (espcn_hf.pretrained): local folder -> Hub repo id (via the cache) -> packaged weights."""

from __future__ import annotations

import json

import pytest
from conftest import save_checkpoint, tiny_model

import espcn_hf.pretrained as pretrained
from espcn_hf import ESPCNForImageSuperResolution
from espcn_hf.pretrained import (
    WEIGHTS_DIR,
    CheckpointError,
    hub_repo_id,
    is_repo_id,
    load_model,
    packaged_weights,
    resolve_model,
)


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """The Hub does not answer and the Hub cache is empty (whatever network the test machine has)."""
    monkeypatch.setattr(pretrained, "hub_reachable", lambda repo_id: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr("transformers.utils.hub.constants.HF_HUB_CACHE", str(tmp_path / "empty_cache"))


def test_packaged_weights_are_inside_the_package():
    import espcn_hf

    assert WEIGHTS_DIR.parent == pretrained.Path(espcn_hf.__file__).resolve().parent
    names = sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "config.json").is_file())
    assert names == ["espcn-paper-x3", "espcn-x2", "espcn-x3", "espcn-x4"]
    for name in names:  # no generated code in git: the installed classes load these (scripts/ship_model.py)
        folder = WEIGHTS_DIR / name
        assert sorted(p.name for p in folder.iterdir()) == [
            "config.json", "eval_results.json", "model.safetensors", "preprocessor_config.json",
            "training_config.json",
        ], name  # fmt: skip
        for file in ("config.json", "preprocessor_config.json"):
            config = json.loads((folder / file).read_text())
            assert not {"loss", "auto_map", "custom_pipelines"} & set(config), (name, file)


def test_default_model_falls_back_to_the_packaged_weights_with_one_neutral_line(no_hub):
    for scale in (2, 3, 4):
        model, source = resolve_model(None, scale)
        assert isinstance(model, ESPCNForImageSuperResolution) and not model.training
        assert model.config.upscale_factor == scale
        assert source == (
            f"model: packaged weights espcn-x{scale} (espcn-hf/espcn-x{scale} is not available from the Hub or "
            "the local Hub cache)"
        )
        assert "\n" not in source
    model, source = resolve_model(None, None, preset="espcn-paper")
    assert model.config.num_channels == 1 and "espcn-paper-x3" in source


def test_fallback_to_the_packaged_weights_is_the_callers_choice(no_hub):
    """`fallback_to_packaged=False`: the published model or an error naming it, never the packaged copy."""
    with pytest.raises(
        CheckpointError, match="espcn-hf/espcn-x2: not available from the Hub or the local Hub cache"
    ):
        resolve_model(None, 2, fallback_to_packaged=False)
    model, source = resolve_model(None, 2, fallback_to_packaged=True)
    assert model.config.upscale_factor == 2 and source.startswith("model: packaged weights espcn-x2 (")
    with pytest.raises(CheckpointError, match="someone/unknown"):  # an explicit model is never replaced
        resolve_model("someone/unknown", None, fallback_to_packaged=True)


def test_explicit_folder_is_used_as_is(tmp_path):
    folder = save_checkpoint(tiny_model(2), tmp_path / "mine")
    model, source = resolve_model(str(folder), None)
    assert source == f"model: {folder} (local folder)"
    assert model.config.hidden_channels == [8, 8]


def test_a_scale_that_disagrees_with_the_model_is_an_error(tmp_path):
    folder = save_checkpoint(tiny_model(2), tmp_path / "x2")
    with pytest.raises(CheckpointError, match="an x2 model, but x4 was asked for"):
        resolve_model(str(folder), 4)
    assert resolve_model(str(folder), 2)[0].config.upscale_factor == 2


def test_no_packaged_or_published_model_for_that_scale():
    with pytest.raises(CheckpointError, match="no published espcn-paper model for x2"):
        resolve_model(None, 2, preset="espcn-paper")
    with pytest.raises(CheckpointError, match="no packaged espcn model for x5"):
        packaged_weights(5)
    with pytest.raises(ValueError, match="preset must be"):
        hub_repo_id(3, preset="srcnn")


def test_repo_override_by_environment(monkeypatch):
    monkeypatch.setenv("ESPCN_HF_REPO_X3", "someone/espcn-x3-finetuned")
    assert hub_repo_id(3) == "someone/espcn-x3-finetuned"


def test_an_explicit_repo_id_does_not_fall_back_to_another_model(no_hub):
    with pytest.raises(
        CheckpointError, match="someone/unknown: no such local folder, and the Hub repo cannot"
    ):
        resolve_model("someone/unknown", None)


def test_names_that_are_neither_folders_nor_repo_ids(tmp_path):
    assert is_repo_id("owner/name") and not is_repo_id(str(tmp_path)) and not is_repo_id("./missing/folder/x")
    with pytest.raises(CheckpointError, match="no such folder, and not a Hub repo id"):
        load_model("./missing/folder/x")


def test_offline_mode_is_not_reachable_without_a_request(monkeypatch):
    monkeypatch.setattr(pretrained, "is_offline_mode", lambda: True)
    monkeypatch.setattr(pretrained, "get_hf_file_metadata", lambda *a, **k: pytest.fail("no request offline"))
    assert pretrained.hub_reachable("espcn-hf/espcn-x3") is False


def test_load_model_keeps_an_instance_and_sets_eval():
    model = tiny_model(3).train()
    assert load_model(model) is model and not model.training
