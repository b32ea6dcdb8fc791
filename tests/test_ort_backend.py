"""The onnxruntime backend of `upscale` (`espcn_hf.ort_backend`): the same pixels as torch within float rounding,
tiled equal to untiled, what backend="auto" chooses, the graph cache in memory and on disk, and one clear error
without the `onnx` extra."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import natural_image, tiny_model
from PIL import Image

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, upscale
from espcn_hf import ort_backend as backend_module
from espcn_hf.inference import upscale_tensor


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test starts with no graph in memory, its own disk cache and "auto" unpinned."""
    monkeypatch.setenv("ESPCN_HF_ONNX_CACHE", str(tmp_path / "onnx-cache"))
    monkeypatch.delenv("ESPCN_HF_BACKEND", raising=False)
    backend_module.clear_cache()
    yield
    backend_module.clear_cache()


needs_onnxruntime = pytest.mark.skipif(
    not backend_module.onnxruntime_available(), reason="the onnx extra (onnxruntime, onnx, onnxscript)"
)


def count_exports(monkeypatch) -> list:
    calls = []
    real = backend_module._export
    monkeypatch.setattr(backend_module, "_export", lambda *a: calls.append(1) or real(*a))
    return calls


@needs_onnxruntime
@pytest.mark.parametrize("preset", ["espcn", "espcn-paper"])
def test_onnxruntime_equals_torch_tiled_and_whole(preset):
    torch.manual_seed(0)
    hidden = [16, 8] if preset == "espcn-paper" else [8, 8, 8, 8, 8]
    config = ESPCNConfig.from_preset(preset, upscale_factor=3, hidden_channels=hidden)
    model = ESPCNForImageSuperResolution(config).eval()
    x = torch.from_numpy(natural_image(61, 75)).permute(2, 0, 1)[None].float() / 255
    torch_whole = upscale_tensor(model, x, tile_size=None)
    ort_whole = upscale_tensor(model, x, tile_size=None, backend="onnxruntime")
    ort_tiled = upscale_tensor(model, x, tile_size=16, backend="onnxruntime")
    assert ort_whole.shape == ort_tiled.shape == torch_whole.shape == (1, 3, 183, 225)
    assert (ort_whole - torch_whole).abs().max().item() <= 1e-4
    assert (ort_tiled - ort_whole).abs().max().item() <= 1e-5
    # PIL in, PIL out: the same picture, a level apart at most where float rounding meets a tie
    image = Image.fromarray(natural_image(50, 70))
    a = np.asarray(upscale(image, model, backend="torch"), dtype=int)
    b = np.asarray(upscale(image, model, backend="onnxruntime", tile_size=24), dtype=int)
    assert np.abs(a - b).max() <= 1 and (a != b).mean() <= 1e-3


@needs_onnxruntime
def test_every_kind_of_input_goes_through_onnxruntime():
    model = tiny_model(2)
    gray = natural_image(20, 30)[..., 0]
    out = upscale(Image.fromarray(gray), model, backend="onnxruntime")
    assert out.mode == "L" and out.size == (60, 40)
    tensor = torch.rand(3, 12, 14)
    expected = upscale(tensor, model, backend="torch")
    assert (upscale(tensor, model, backend="onnxruntime") - expected).abs().max() <= 1e-4
    batch = np.stack([natural_image(9, 11, seed=s) for s in range(2)])
    assert upscale(batch, model, backend="onnxruntime").shape == (2, 18, 22, 3)


@needs_onnxruntime
def test_the_graph_is_exported_once_and_kept_on_disk(monkeypatch, tmp_path):
    exports = count_exports(monkeypatch)
    model = tiny_model(3)
    image = Image.fromarray(natural_image(20, 24))
    first = np.asarray(upscale(image, model, backend="onnxruntime"))
    np.testing.assert_array_equal(np.asarray(upscale(image, model, backend="onnxruntime")), first)
    assert len(exports) == 1
    files = list((tmp_path / "onnx-cache").glob("espcn-*.onnx"))
    assert len(files) == 1
    backend_module.clear_cache()  # as a new process: the file on disk serves
    np.testing.assert_array_equal(np.asarray(upscale(image, model, backend="onnxruntime")), first)
    assert len(exports) == 1
    files[0].write_bytes(b"damaged")  # a damaged cache file is exported again, not an error
    backend_module.clear_cache()
    np.testing.assert_array_equal(np.asarray(upscale(image, model, backend="onnxruntime")), first)
    assert len(exports) == 2
    with torch.no_grad():  # weights changed in place: another graph, never the stale one
        model.body[0].bias.add_(0.05)
    changed = upscale_tensor(model, torch.rand(1, 3, 10, 10), backend="onnxruntime")
    assert len(exports) == 3 and changed.shape == (1, 3, 30, 30)


@needs_onnxruntime
def test_the_disk_cache_can_be_turned_off(monkeypatch, tmp_path):
    monkeypatch.setenv("ESPCN_HF_ONNX_CACHE", "off")
    assert backend_module.cache_dir() is None
    upscale(Image.fromarray(natural_image(10, 12)), tiny_model(2), backend="onnxruntime")
    assert not (tmp_path / "onnx-cache").exists()


@needs_onnxruntime
def test_auto_exports_once_the_work_pays_for_it(monkeypatch):
    exports = count_exports(monkeypatch)
    monkeypatch.setattr(backend_module, "AUTO_EXPORT_PIXELS", 1000)
    model = tiny_model(3)
    resolve = backend_module.resolve_backend
    assert resolve("auto", model, None, 600)[0] == "torch"  # 600 LR pixels so far: torch
    assert resolve("auto", model, None, 600)[0] == "onnxruntime"  # 1200: worth exporting
    upscale(Image.fromarray(natural_image(30, 40)), model)  # one image of 1200 pixels: exported once
    assert len(exports) == 1
    assert resolve("auto", model, None, 1)[0] == "onnxruntime"  # from now on, at any size
    other = tiny_model(3, hidden_channels=[4, 4])
    assert resolve("auto", other, None, 10)[0] == "torch"  # another model counts on its own
    # torch where onnxruntime is not the backend: a lower dtype, a pinned backend
    assert resolve("auto", model, torch.bfloat16, 10**9)[0] == "torch"
    monkeypatch.setenv("ESPCN_HF_BACKEND", "torch")
    assert resolve("auto", model, None, 10**9)[0] == "torch"
    monkeypatch.setenv("ESPCN_HF_BACKEND", "onnxruntime")
    assert resolve("auto", other, None, 1)[0] == "onnxruntime"


def test_without_the_onnx_extra_auto_is_torch_and_onnxruntime_one_error(monkeypatch):
    monkeypatch.setattr(backend_module, "onnxruntime_available", lambda: False)
    monkeypatch.setattr(
        backend_module,
        "missing_onnxruntime_error",
        lambda: ImportError(
            'backend="onnxruntime" needs onnxruntime: pip install "espcn-hf[onnx]"', name="onnxruntime"
        ),
    )
    model = tiny_model(2)
    image = Image.fromarray(natural_image(10, 12))
    assert backend_module.resolve_backend("auto", model, None, 10**9) == ("torch", None)
    assert upscale(image, model).size == (24, 20)
    with pytest.raises(ImportError, match=r"pip install \"espcn-hf\[onnx\]\""):
        upscale(image, model, backend="onnxruntime")


def test_the_missing_extra_is_named():
    error = backend_module.missing_onnxruntime_error()
    assert 'pip install "espcn-hf[onnx]"' in str(error) and "\n" not in str(error)


def test_bad_backends_are_refused():
    model = tiny_model(2)
    image = Image.fromarray(natural_image(10, 12))
    with pytest.raises(ValueError, match="backend must be one of"):
        upscale(image, model, backend="tensorrt")
    with pytest.raises(ValueError, match="float32 models on the CPU"):
        upscale(image, model, backend="onnxruntime", dtype=torch.bfloat16)


@needs_onnxruntime
def test_sessions_do_not_spin_between_runs_and_auto_runs_small_frames_whole():
    """The session's workers do not busy-wait after a run (the tile conversion and torch get the cores), and
    upscale_tensor's tile_size="auto" runs a frame under ONNXRUNTIME_WHOLE_FRAME_PIXELS in one onnxruntime call
    (torch keeps its 256-px tiles), with the same output as torch."""
    from espcn_hf.inference import AUTO_TILE_SIZE

    model = tiny_model(3)
    session = backend_module.session_for(model, threads=2)
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    pixels = torch.rand(
        1, 3, AUTO_TILE_SIZE + 20, AUTO_TILE_SIZE + 30, generator=torch.Generator().manual_seed(0)
    )
    calls = []
    real = backend_module.OnnxRuntimeForward.__call__
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            backend_module.OnnxRuntimeForward,
            "__call__",
            lambda self, w: calls.append(w.shape) or real(self, w),
        )
        onnx_out = upscale_tensor(model, pixels, backend="onnxruntime")
    assert calls == [pixels.shape]
    torch_out = upscale_tensor(model, pixels, backend="torch")
    assert (onnx_out - torch_out).abs().max() <= 1e-4
