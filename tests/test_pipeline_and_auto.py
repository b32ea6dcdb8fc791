"""Registration with the Auto classes, the image-super-resolution pipeline, and trust_remote_code loading."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, natural_image, save_checkpoint, tiny_model
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageToImage, pipeline

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, ESPCNImageProcessor
from espcn_hf.pipeline_espcn import ImageSuperResolutionPipeline


def test_auto_classes_know_espcn(tiny_checkpoint):
    assert isinstance(AutoConfig.from_pretrained(tiny_checkpoint), ESPCNConfig)
    assert isinstance(AutoConfig.for_model("espcn"), ESPCNConfig)
    assert isinstance(AutoModel.from_pretrained(tiny_checkpoint), ESPCNForImageSuperResolution)
    assert isinstance(AutoModelForImageToImage.from_pretrained(tiny_checkpoint), ESPCNForImageSuperResolution)
    assert isinstance(AutoImageProcessor.from_pretrained(tiny_checkpoint), ESPCNImageProcessor)


def test_saved_folder_carries_auto_map_custom_pipelines_and_code(tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_espcn.ESPCNConfig",
        "AutoModel": "modeling_espcn.ESPCNForImageSuperResolution",
        "AutoModelForImageToImage": "modeling_espcn.ESPCNForImageSuperResolution",
    }
    entry = {
        "impl": "pipeline_espcn.ImageSuperResolutionPipeline",
        "pt": ["AutoModelForImageToImage"],
        "type": "image",
    }
    # "image-to-image" is the Hub's pipeline_tag for SR models: the snippet the Hub generates must work. The
    # registered task "image-super-resolution" is not listed: transformers would run a listed task as remote code.
    assert config["custom_pipelines"] == {"image-to-image": entry}
    assert "loss" not in config
    processor = json.loads((tiny_checkpoint / "preprocessor_config.json").read_text())
    assert processor["auto_map"] == {"AutoImageProcessor": "image_processing_espcn.ESPCNImageProcessor"}
    for name in (
        "configuration_espcn.py",
        "modeling_espcn.py",
        "image_processing_espcn.py",
        "pipeline_espcn.py",
        "model.safetensors",
    ):
        assert (tiny_checkpoint / name).is_file(), name


def test_flat_code_files_import_only_each_other():
    """The files copied into model folders may import only the other copied files, never the package."""
    import ast

    import espcn_hf

    flat = {"configuration_espcn", "modeling_espcn", "image_processing_espcn", "pipeline_espcn"}
    for name in flat:
        tree = ast.parse((Path(espcn_hf.__file__).parent / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.module in flat, f"{name}.py imports .{node.module}"
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                assert not any(m.split(".")[0] == "espcn_hf" for m in modules), f"{name}.py imports {modules}"


def test_pipeline_returns_images_of_the_right_size(tiny_checkpoint):
    sr = pipeline("image-super-resolution", model=str(tiny_checkpoint))
    assert isinstance(sr, ImageSuperResolutionPipeline)
    image = Image.fromarray(natural_image(20, 30))
    out = sr(image)
    assert isinstance(out, Image.Image) and out.size == (90, 60)
    batch = sr([image, Image.fromarray(natural_image(11, 13))])
    assert [o.size for o in batch] == [(90, 60), (39, 33)]
    # The pipeline gives exactly what the model gives: both run the same forward on the same layout.
    model = ESPCNForImageSuperResolution.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        expected = ESPCNImageProcessor().post_process_super_resolution(
            model(ESPCNImageProcessor()(image)["pixel_values"])
        )
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected[0]))


def test_pipeline_batches_of_mixed_sizes_equal_one_by_one(tiny_checkpoint):
    sr = pipeline("image-super-resolution", model=str(tiny_checkpoint))
    images = [
        Image.fromarray(natural_image(20, 30, seed=1)),
        Image.fromarray(natural_image(11, 13, seed=2)),
        Image.fromarray(natural_image(20, 30, seed=3)),
        Image.fromarray(natural_image(17, 9, seed=4)),
    ]
    one_by_one = [np.asarray(sr(image)) for image in images]
    for batch_size in (2, 3):
        batched = sr(images, batch_size=batch_size)
        assert len(batched) == len(images)
        for got, want in zip(batched, one_by_one, strict=True):
            np.testing.assert_array_equal(np.asarray(got), want)


def test_pipeline_refuses_unknown_options(tiny_checkpoint):
    sr = pipeline("image-super-resolution", model=str(tiny_checkpoint))
    with pytest.raises(TypeError, match="tile_size"):
        sr(Image.fromarray(natural_image(8, 8)), tile_size=8)


def test_pipeline_needs_no_trust_remote_code_where_espcn_hf_is_installed(tiny_checkpoint):
    """config.json lists "image-to-image" for machines without the package; here the registered task serves."""
    sr = pipeline("image-super-resolution", model=str(tiny_checkpoint))
    assert type(sr) is ImageSuperResolutionPipeline
    assert type(sr.model) is ESPCNForImageSuperResolution


def test_pipeline_reads_paths_and_reports_bad_files(tiny_checkpoint, tmp_path):
    sr = pipeline("image-super-resolution", model=str(tiny_checkpoint))
    path = tmp_path / "in.png"
    Image.fromarray(natural_image(10, 10)).save(path)
    assert sr(str(path)).size == (30, 30)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not an image"):
        sr(str(tmp_path / "bad.png"))


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["espcn_hf"] = None  # make sure the package cannot be imported
    try:
        import espcn_hf  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("espcn_hf is importable; the test would prove nothing")
    import numpy as np, torch
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageToImage, pipeline
    image = np.load(sys.argv[1])
    results = {}
    for path in sys.argv[3:]:
        model = AutoModel.from_pretrained(path, trust_remote_code=True)
        model2 = AutoModelForImageToImage.from_pretrained(path, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=True)
        upscaler = pipeline("image-to-image", model=path, trust_remote_code=True)
        for loaded in (model, model2, processor, upscaler):
            assert type(loaded).__module__.startswith("transformers_modules"), type(loaded).__module__
        pixel_values = processor(image)["pixel_values"]
        with torch.no_grad():
            out = model(pixel_values).reconstruction
            # the same weights through both Auto classes: equal within float rounding, the tolerance of the
            # package comparison below (a full run once saw the last bits of the paper preset differ here, which
            # the kernels oneDNN picks for a call may do; wrong or missing weights differ by far more)
            torch.testing.assert_close(out, model2(pixel_values).reconstruction, rtol=0, atol=1e-6)
        results[f"{path}/model"] = out.numpy()
        results[f"{path}/pipeline"] = np.asarray(upscaler(image))
        print("REMOTE_OK", type(model).__name__, type(processor).__name__, type(upscaler).__name__)
    np.savez(sys.argv[2], **results)
    """
)


@pytest.mark.slow
def test_trust_remote_code_without_the_package(tmp_path):
    """Saved folders of both presets and the Hub upload folders of the packaged models load with AutoModel,
    AutoModelForImageToImage, AutoImageProcessor and pipeline("image-to-image", trust_remote_code=True) where
    espcn_hf cannot be imported, and give what the package gives. (One process for all folders: each start costs
    seconds.)"""
    from espcn_hf.hub import prepare_upload_folder
    from espcn_hf.pretrained import packaged_weights

    folders = [
        prepare_upload_folder(
            packaged_weights(3, preset), tmp_path / f"upload-{preset}", comparison=False, onnx=False
        )
        for preset in ("espcn", "espcn-paper")
    ]
    for preset in ("espcn", "espcn-paper"):
        model = ESPCNForImageSuperResolution(
            ESPCNConfig.from_preset(preset, upscale_factor=2, hidden_channels=[8, 4], kernel_sizes=[5, 3, 3])
        ).eval()
        folders.append(save_checkpoint(model, tmp_path / f"tiny-{preset}"))
    image = natural_image(9, 11)
    np.save(tmp_path / "image.npy", image)
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "image.npy"),
            str(tmp_path / "out.npz"),
            *map(str, folders),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ok = "REMOTE_OK ESPCNForImageSuperResolution ESPCNImageProcessor ImageSuperResolutionPipeline"
    assert result.stdout.count(ok) == len(folders), result.stdout
    remote = np.load(tmp_path / "out.npz")
    for folder in folders:
        model = ESPCNForImageSuperResolution.from_pretrained(folder)
        with torch.no_grad():
            expected = model(ESPCNImageProcessor()(image)["pixel_values"]).reconstruction.numpy()
        np.testing.assert_allclose(remote[f"{folder}/model"], expected, atol=1e-6)
        local = pipeline("image-super-resolution", model=str(folder))(image)
        np.testing.assert_array_equal(remote[f"{folder}/pipeline"], np.asarray(local))


def test_tiny_model_helper_is_deterministic():
    x = torch.rand(1, 3, 5, 5)
    with torch.no_grad():
        assert torch.equal(tiny_model(2)(x).reconstruction, tiny_model(2)(x).reconstruction)


def test_pipeline_gives_each_image_back_in_its_own_mode(tiny_checkpoint):
    """Grayscale stays grayscale and alpha is kept, also in a batch of mixed sizes and modes."""
    sr = pipeline("image-super-resolution", model=str(tiny_checkpoint))
    gray = Image.fromarray(natural_image(12, 14)).convert("L")
    images = [gray, Image.fromarray(natural_image(9, 7)), gray.convert("LA"), gray.convert("RGBA")]
    one_by_one = [sr(image) for image in images]
    assert [o.mode for o in one_by_one] == ["L", "RGB", "LA", "RGBA"]
    for got, want in zip(sr(images, batch_size=3), one_by_one, strict=True):
        assert got.mode == want.mode
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.slow
def test_import_registers_and_configs_do_not_depend_on_it():
    """`import espcn_hf` registers "espcn" with transformers (nothing waits for a first name), and a config
    parses the same whatever was imported before: no process-wide switch changes what it keeps."""
    code = (
        "import json, sys, tempfile\n"
        "from espcn_hf.configuration_espcn import ESPCNConfig\n"  # imports the package: registers
        "from transformers import AutoConfig\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "assert type(AutoConfig.for_model('espcn')) is ESPCNConfig\n"
        "assert 'image-super-resolution' in PIPELINE_REGISTRY.supported_tasks\n"
        "entry = {'image-to-image': {'impl': 'pipeline_espcn.ImageSuperResolutionPipeline'}}\n"
        "assert ESPCNConfig(custom_pipelines=entry).custom_pipelines == entry\n"
        "print('REGISTERED_OK')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "REGISTERED_OK" in result.stdout, result.stderr[-2000:]


def test_folders_saved_without_registration_are_self_sufficient(tmp_path):
    """The code files, auto_map and custom_pipelines do not depend on `espcn_hf.register()` having run."""
    from espcn_hf.configuration_espcn import ESPCNConfig as Config
    from espcn_hf.modeling_espcn import ESPCNForImageSuperResolution as Model

    assert Model._auto_class == "AutoModelForImageToImage" and Config._auto_class == "AutoConfig"
    Model(Config(upscale_factor=2, hidden_channels=[4], kernel_sizes=[3, 3])).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForImageToImage"}
    assert set(config["custom_pipelines"]) == {"image-to-image"}
    for name in (
        "configuration_espcn.py",
        "modeling_espcn.py",
        "pipeline_espcn.py",
        "image_processing_espcn.py",
    ):
        assert (tmp_path / name).is_file(), name


def test_push_to_hub_uploads_the_pipeline_code(tmp_path, monkeypatch):
    """save_pretrained(push_to_hub=True) and push_to_hub() upload a folder that already holds pipeline_espcn.py
    (transformers' upload inside save_pretrained would run before it is copied). No network: the Hub calls are
    replaced by recorders."""
    import transformers.utils.hub as transformers_hub

    uploaded = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            return type("Repo", (), {"repo_id": repo_id})()

    def fake_upload(self, folder, repo_id, files_timestamps=None, **kwargs):
        uploaded.append((repo_id, sorted(os.listdir(folder))))

    monkeypatch.setattr(transformers_hub, "hf_api", lambda: FakeApi())
    monkeypatch.setattr(transformers_hub, "create_and_tag_model_card", lambda *a, **k: _FakeCard())
    monkeypatch.setattr(ESPCNForImageSuperResolution, "_upload_modified_files", fake_upload)
    model = tiny_model(2)
    model.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="owner/tiny")
    assert (tmp_path / "local" / "pipeline_espcn.py").is_file()
    ((repo_id, files),) = uploaded
    assert repo_id == "owner/tiny"
    assert {"config.json", "model.safetensors", "pipeline_espcn.py", "modeling_espcn.py"} <= set(files)
    assert "image_processing_espcn.py" in files and "configuration_espcn.py" in files


class _FakeCard:
    def save(self, path):
        Path(path).write_text("card")


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    """The README's Python section runs as written, with the Hub repo id served by a save_pretrained folder of the
    packaged x3 model (the Hub cannot be reached here; tests/test_hub_cache.py covers loading by repo id)."""
    import re

    from espcn_hf.pretrained import packaged_weights

    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Python") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) >= 2, "the README's Python section has lost its snippets"
    monkeypatch.chdir(tmp_path)
    for name, size in (("photo.png", (24, 20)), ("a.png", (24, 20)), ("b.jpg", (13, 9))):
        Image.fromarray(natural_image(size[1], size[0])).save(name)
    # what the Hub repo holds: the packaged x3 model as save_pretrained writes it (code files, custom_pipelines)
    repo = save_checkpoint(
        ESPCNForImageSuperResolution.from_pretrained(packaged_weights(3)), tmp_path / "repo"
    )
    for block in blocks[:2]:
        code = block.replace('"espcn-hf/espcn-x3"', repr(str(repo)))
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 (our own README)


def test_the_pipeline_tiles_large_images_like_upscale(tiny_checkpoint):
    """pipeline("image-super-resolution") ran whole images (a 9 Mpx input peaked at 7.4 GB, 35.9 Mpx did not
    finish in 500 s; issue "No wrong answers, no lost batches"): it now runs upscale()'s exact tiles, written
    straight into the output image, and gives upscale()'s result."""
    from espcn_hf import upscale
    from espcn_hf.inference import AUTO_TILE_SIZE
    from espcn_hf.pipeline_espcn import TILE_SIZE

    assert TILE_SIZE == AUTO_TILE_SIZE  # the flat file's copy of the number
    sr = pipeline("image-super-resolution", model=str(tiny_checkpoint))
    windows = []

    def record(module, args, kwargs):
        windows.append(tuple(kwargs.get("pixel_values", args[0] if args else None).shape[-2:]))

    sr.model.register_forward_pre_hook(record, with_kwargs=True)
    rgb = Image.fromarray(natural_image(300, 280, seed=5))
    gray_alpha = Image.fromarray(natural_image(270, 290, seed=6)).convert("LA")
    out = sr(rgb)
    assert out.size == (840, 900)
    radius = sr.model.config.receptive_field_radius
    assert len(windows) == 4 and max(max(w) for w in windows) <= TILE_SIZE + 2 * radius
    model = sr.model
    np.testing.assert_array_equal(
        np.asarray(out), np.asarray(upscale(rgb, model, memory_format="contiguous"))
    )
    with torch.no_grad():  # and the whole-image forward, up to a rounding tie
        whole = ESPCNImageProcessor().post_process_super_resolution(
            model(ESPCNImageProcessor()(rgb)["pixel_values"])
        )
    assert np.abs(np.asarray(out).astype(int) - np.asarray(whole[0]).astype(int)).max() <= 1
    # a batch stacks the two RGB images (one forward of two: the convolution may round differently)
    for got, image in zip(sr([rgb, gray_alpha, rgb], batch_size=3), [rgb, gray_alpha, rgb], strict=True):
        want = upscale(image, model, memory_format="contiguous")
        assert got.mode == want.mode and got.size == want.size
        assert np.abs(np.asarray(got).astype(int) - np.asarray(want).astype(int)).max() <= 1
