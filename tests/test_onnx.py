"""ONNX export (`espcn_hf.onnx_export`): onnxruntime equals torch (max abs diff <= 1e-4) at two sizes with a
dynamic batch, height and width, for the RGB net and a Y-channel (paper-style) net; the file is self-contained
and written atomically; the caller's model is untouched; the `export` command's errors are one line."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from conftest import tiny_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from espcn_hf import onnx_export  # noqa: E402
from espcn_hf.onnx_export import export_onnx  # noqa: E402


def run_both(path, model, shape):
    pixels = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(["reconstruction"], {"pixel_values": pixels.numpy()})
    with torch.inference_mode():
        expected = model(pixels).reconstruction.numpy()
    return output, expected


@pytest.mark.parametrize("num_channels", [3, 1], ids=["rgb", "y-channel"])
def test_onnxruntime_matches_torch_at_two_sizes(num_channels, tmp_path):
    model = tiny_model(3, num_channels=num_channels, activation="tanh")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = export_onnx(model, tmp_path / "onnx" / "model.onnx")
    assert path == tmp_path / "onnx" / "model.onnx"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # weights inside, no .data file
    for shape in [(1, 3, 20, 28), (3, 3, 33, 17)]:
        output, expected = run_both(path, model, shape)
        assert output.shape == (shape[0], 3, 3 * shape[2], 3 * shape[3])
        assert np.abs(output - expected).max() <= 1e-4
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["pixel_values"]
    assert [o.name for o in proto.graph.output] == ["reconstruction"]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert {p.key: p.value for p in proto.metadata_props}["upscale_factor"] == "3"
    # The caller's model keeps its weights, dtype and device.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_failed_check_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    monkeypatch.setattr(onnx_export, "check_onnx", lambda *args, **kwargs: 1.0)
    with pytest.raises(RuntimeError, match="differs from torch"):
        export_onnx(tiny_model(2), target)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_bad_opset_is_refused():
    with pytest.raises(ValueError, match="opset"):
        export_onnx(tiny_model(2), "unused.onnx", opset=11)


def _parse(argv):
    parser = argparse.ArgumentParser(prog="espcn-hf")
    onnx_export.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", *argv])
    assert args.func is onnx_export.run
    return args


def test_export_command(tiny_checkpoint, tmp_path, capsys):
    target = tmp_path / "x3.onnx"
    assert onnx_export.run(_parse([str(tiny_checkpoint), "-o", str(target)])) == 0
    assert target.is_file() and "opset 18" in capsys.readouterr().out
    assert onnx_export.run(_parse([str(tmp_path / "missing"), "-o", str(tmp_path / "y.onnx")])) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "\n" not in error and not (tmp_path / "y.onnx").exists()


def test_model_card_snippet_gives_the_package_output(tmp_path, rgb_image):
    """The onnxruntime usage shown on the model card (numpy only) reproduces `espcn_hf.upscale` to one level."""
    from espcn_hf import upscale

    model = tiny_model(3)
    path = export_onnx(model, tmp_path / "model.onnx")
    # --- the card's snippet ---
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = np.asarray(rgb_image.convert("RGB"), dtype=np.float32) / 255
    (out,) = session.run(None, {"pixel_values": image.transpose(2, 0, 1)[None]})
    sr = (np.clip(out[0], 0, 1).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    # ---
    expected = np.asarray(upscale(rgb_image, model))
    assert sr.shape == expected.shape
    assert np.abs(sr.astype(int) - expected.astype(int)).max() <= 1


def test_espcn_hf_export_on_the_cli(tiny_checkpoint, tmp_path, capsys):
    from espcn_hf.cli import main

    assert main(["export", str(tiny_checkpoint), "-o", str(tmp_path / "onnx" / "model.onnx")]) == 0
    assert (tmp_path / "onnx" / "model.onnx").is_file()
    assert main(["export", str(tmp_path / "nope"), "-o", str(tmp_path / "x.onnx")]) == 1
    assert capsys.readouterr().err.strip().startswith("error:")


def test_an_output_over_a_file_of_the_model_folder_is_refused(tmp_path, capsys):
    """`espcn-hf export MODEL -o MODEL/model.safetensors` wrote the graph over the model's own weights (issue "No
    wrong answers, no lost batches"): a file the model is loaded from is never an output, also through a link or
    for a model instance loaded from that folder. ONNX files in the folder and its sub-folders are outputs."""
    from conftest import save_checkpoint

    from espcn_hf.pretrained import load_model

    folder = save_checkpoint(tiny_model(3), tmp_path / "model")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    capsys.readouterr()  # save_pretrained's bar
    link = tmp_path / "config-link.json"
    link.symlink_to(folder / "config.json")
    for target in (folder / "model.safetensors", folder / "config.json", link):
        assert onnx_export.run(_parse([str(folder), "-o", str(target)])) == 1
        error = capsys.readouterr().err.strip()
        assert error.startswith("error:") and "\n" not in error and "refusing" in error, error
        assert target.name in error
    with pytest.raises(ValueError, match="preprocessor_config.json of the model folder"):
        export_onnx(load_model(folder), folder / "preprocessor_config.json")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    for target in (folder / "onnx" / "model.onnx", folder / "model.onnx", folder / "model.onnx"):  # twice
        assert onnx_export.run(_parse([str(folder), "-o", str(target), "--no-check"])) == 0
        assert onnx.load(str(target)).graph.output[0].name == "reconstruction"


def test_unsupported_opsets_are_refused_before_exporting(tiny_checkpoint, tmp_path, capfd, monkeypatch):
    """`--opset 100` printed a converter trace and reported success with a file of opset 18: an opset the exporter
    cannot write is one error line naming those it can, before anything is exported; a supported one is what
    the file holds, without the exporter's conversion notes."""
    supported = onnx_export.supported_opsets()
    assert supported.start == 17 and 18 in supported and supported.stop - 1 >= 18
    exported = []
    real_export = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: exported.append(1) or real_export(*a, **k))
    for opset in ("100", str(supported.stop), "16"):
        target = tmp_path / f"opset{opset}.onnx"
        assert onnx_export.run(_parse([str(tiny_checkpoint), "-o", str(target), "--opset", opset])) == 1
        out, err = capfd.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("error:"), err
        assert f"opsets 17 to {supported.stop - 1}" in err and not target.exists()
    assert exported == []
    target = tmp_path / "opset17.onnx"
    assert onnx_export.run(_parse([str(tiny_checkpoint), "-o", str(target), "--opset", "17"])) == 0
    out, err = capfd.readouterr()
    assert "opset 17" in out and err == ""
    assert max(o.version for o in onnx.load(str(target)).opset_import if o.domain in ("", "ai.onnx")) == 17


# --- int8 (quantize_onnx) -----------------------------------------------------------------------------------------


def _patches(count=8, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((1, 3, size, size), dtype=np.float32) for _ in range(count)]


@pytest.mark.parametrize("num_channels", [3, 1], ids=["rgb", "y-channel"])
def test_quantize_onnx_writes_a_qdq_graph_close_to_float(num_channels, tmp_path):
    """int8 QDQ with per-channel weights; the first and last convolutions stay float32; it runs in onnxruntime
    with the float graph's inputs and outputs, close to it; the recipe is in the file's metadata."""
    model = tiny_model(3, num_channels=num_channels, hidden_channels=[8, 8, 8], kernel_sizes=[5, 3, 3, 3])
    path = onnx_export.quantize_onnx(
        model, tmp_path / "onnx" / "model_quantized.onnx", calibration=_patches()
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["model_quantized.onnx"]
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Conv") == 4 and "QuantizeLinear" in ops and "DequantizeLinear" in ops
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    dequantized = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert [n.input[1] in dequantized for n in convs] == [False, True, True, False]  # int8 weights in between
    axes = [
        a.i
        for n in proto.graph.node
        if n.op_type == "DequantizeLinear"
        for a in n.attribute
        if a.name == "axis"
    ]
    assert 0 in axes  # per output channel
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["upscale_factor"] == "3" and meta["int8_format"] == "QDQ"
    pixels = torch.rand(2, 3, 21, 17, generator=torch.Generator().manual_seed(1))
    (out,) = ort.InferenceSession(str(path)).run(["reconstruction"], {"pixel_values": pixels.numpy()})
    with torch.inference_mode():
        expected = model(pixels).reconstruction.numpy()
    assert out.shape == expected.shape == (2, 3, 63, 51)
    assert np.abs(out - expected).mean() < 0.02


def test_quantize_onnx_fuses_relu_and_gptq_rounding_beats_nearest(tmp_path):
    """The default recipe: no ReLU left between int8 convolutions (each output quantised with the ReLU's range,
    zero point 0); GPTQ rounding keeps onnxruntime's scales and lands closer to the float graph than rounding to
    the nearest level; the options are in the metadata; an unknown option is refused before anything is written."""
    model = tiny_model(2, hidden_channels=[16, 16, 16], kernel_sizes=[5, 3, 3, 3], activation="relu")
    fp32 = export_onnx(model, tmp_path / "model.onnx")
    patches = _patches(count=6)
    paths = {
        rounding: onnx_export.quantize_onnx(
            fp32, tmp_path / f"{rounding}.onnx", calibration=patches, weight_rounding=rounding
        )
        for rounding in ("gptq", "nearest")
    }
    protos = {k: onnx.load(str(p)) for k, p in paths.items()}
    gptq = protos["gptq"]
    assert [n.op_type for n in gptq.graph.node].count("Relu") == 1  # only the float first layer's
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in gptq.graph.initializer}
    nearest = {i.name: onnx.numpy_helper.to_array(i) for i in protos["nearest"].graph.initializer}
    points = [n.input[2] for n in gptq.graph.node if n.op_type == "QuantizeLinear"]
    assert points and all(int(initializers[p]) == 0 for p in points)
    weights = [name for name in initializers if name.endswith("weight_quantized")]
    assert len(weights) == 2
    for name in weights:
        scale = name.replace("_quantized", "_scale")
        assert np.array_equal(initializers[scale], nearest[scale])
        assert initializers[name].dtype == np.int8 and not np.array_equal(initializers[name], nearest[name])
    fp32_bytes = fp32.read_bytes()
    difference = {
        k: onnx_export._int8_difference(fp32_bytes, p.read_bytes(), patches) for k, p in paths.items()
    }
    assert difference["gptq"] < difference["nearest"]
    meta = {p.key: p.value for p in gptq.metadata_props}
    assert meta["int8_weight_rounding"].startswith("GPTQ") and "fused" in meta["int8_relu"]
    meta = {p.key: p.value for p in protos["nearest"].metadata_props}
    assert meta["int8_weight_rounding"] == "nearest level"
    with pytest.raises(ValueError, match="calibrate_method"):
        onnx_export.quantize_onnx(fp32, tmp_path / "x.onnx", calibration=patches, calibrate_method="mse")
    assert not (tmp_path / "x.onnx").exists()


def test_quantize_onnx_takes_an_exported_file_and_refuses_a_broken_result(tmp_path, monkeypatch):
    model = tiny_model(2)
    fp32 = export_onnx(model, tmp_path / "model.onnx")
    target = tmp_path / "model_quantized.onnx"
    assert onnx_export.quantize_onnx(fp32, target, calibration=_patches()) == target
    assert onnx.load(str(target)).graph.output[0].name == "reconstruction"
    target.write_bytes(b"old")
    monkeypatch.setattr(onnx_export, "_int8_difference", lambda *args: 1.0)
    with pytest.raises(RuntimeError, match="not written"):
        onnx_export.quantize_onnx(fp32, target, calibration=_patches())
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == [
        fp32.name,
        target.name,
    ]


def test_calibration_patches_are_training_lr_patches(data_dir):
    from espcn_hf.data import DataGenerator

    folder = data_dir / "train" / "T91"
    first = onnx_export.calibration_patches(3, folders=[folder], num_patches=20, patch_size=24)
    again = onnx_export.calibration_patches(3, folders=[folder], num_patches=20, patch_size=24)
    assert len(first) == 20 and all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(
        p.shape == (1, 3, 24, 24) and p.dtype == np.float32 and 0 <= p.min() <= p.max() <= 1 for p in first
    )
    # the DataGenerator's own training patches (MATLAB-bicubic LR of aligned crops), not another recipe
    generator = DataGenerator.from_folder(
        [folder], scale=3, mode="train", patch_size=24, patches_per_image=1, augment=False
    )
    items = {generator[i]["pixel_values"].numpy().tobytes() for i in range(len(generator))}
    assert all(p[0].tobytes() in items for p in first)


def test_export_command_writes_int8(tiny_checkpoint, tmp_path, data_dir, capsys):
    target = tmp_path / "onnx" / "model_quantized.onnx"
    argv = [
        str(tiny_checkpoint),
        "-o",
        str(target),
        "--int8",
        "--calibration",
        str(data_dir / "train" / "T91"),
    ]
    assert onnx_export.run(_parse(argv)) == 0
    assert "int8" in capsys.readouterr().out
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(target)).graph.node}
    assert (
        onnx_export.run(
            _parse([str(tiny_checkpoint), "-o", str(tmp_path / "x.onnx"), "--calibration", "T91"])
        )
        == 1
    )
    error = capsys.readouterr().err.strip()
    assert error == "error: --calibration goes with --int8" and not (tmp_path / "x.onnx").exists()


def test_benchmark_counts_a_runtime_only_where_it_matches_torch(tmp_path, monkeypatch):
    """scripts/benchmark.py's runtime rows: onnxruntime's whole-frame forward is counted when it equals torch
    within the tolerance, and named with its difference (not timed) when it does not."""
    from conftest import load_script

    bench = load_script("scripts/benchmark.py")
    model = tiny_model(3, num_channels=1, activation="tanh")
    lr = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    forwards, outside = bench.runtime_forwards(model, lr, tmp_path)
    assert "onnxruntime fp32, whole frame" in forwards and "onnxruntime fp32, whole frame" not in outside
    assert np.asarray(forwards["onnxruntime fp32, whole frame"]()).shape == (1, 3, 60, 72)

    shifted = bench.upscale_tensor
    monkeypatch.setattr(bench, "upscale_tensor", lambda *a, **k: shifted(*a, **k) + 1e-3)
    forwards, outside = bench.runtime_forwards(model, lr, tmp_path)
    assert forwards == {} and set(outside) >= {"onnxruntime fp32, whole frame"}
    assert abs(outside["onnxruntime fp32, whole frame"] - 1e-3) < 1e-4
