"""ONNX export of ESPCN models, for onnxruntime, OpenCV's dnn module and transformers.js users.

    espcn-hf export espcn-hf/espcn-x3 -o onnx/model.onnx
    from espcn_hf.onnx_export import export_onnx; export_onnx(model, "onnx/model.onnx")

The graph takes `pixel_values` (float32, (batch, 3, height, width), RGB in [0, 1]: what `ESPCNImageProcessor`
returns) and gives `reconstruction` (batch, 3, r*height, r*width), not clamped: the names and layout of the
transformers model, so transformers.js finds them in a Hub repo under `onnx/model.onnx`. Batch, height and width
are dynamic. The paper's Y-channel models export their whole RGB path (BT.601 YCbCr, the net on Y, bicubic
CbCr via ONNX `Resize` with antialias), which needs opset 18; 18 is the default for all models.

Exporter: torch.export + onnxscript (`torch.onnx.export(dynamo=True)`), which works offline. The weights are
stored inside the one .onnx file (no external `.data` file; the models are a few hundred kB). The file is written
atomically (`fileio.atomic_write_bytes`) and, by default, checked against the torch model with onnxruntime at
two sizes before `export_onnx` returns.

Refused before anything is exported: an opset the exporter cannot write (`supported_opsets`: 17 up to the newest
its version converter knows; it used to print a converter trace and write opset 18 anyway), and an output that is
one of the files the model is loaded from (`-o MODEL/model.safetensors` replaced the weights with the graph).

int8 (`quantize_onnx`, `espcn-hf export MODEL -o model_quantized.onnx --int8`): onnxruntime static quantisation of
the exported graph, QDQ format, per-channel int8 weights, uint8 activations calibrated (min/max) on low-resolution
training patches made as `espcn_hf.data.DataGenerator` makes them (`calibration_patches`), each ReLU fused into its
convolution's output quantisation, and the int8 weights rounded GPTQ-style against the calibration activations
(not to the nearest level). The first and the last convolutions stay float32: with a 3- (or 1-) channel input and
an r*r*C-channel output they are the layers int8 helps least and hurts most. What it costs in PSNR and gains in
speed per model is measured by `scripts/benchmark_onnx.py` (benchmarks/onnx_int8.json, onnx_cpu.md), the other
recipes by `scripts/int8_recipes.py` (benchmarks/onnx_int8_recipes.md); the Hub upload ships the int8 file only
where it loses at most 0.1 dB (`espcn_hf.hub.int8_verdict`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .fileio import atomic_write_bytes

if TYPE_CHECKING:  # torch is imported when a model is exported, so `espcn-hf --help` stays light
    import torch

    from .modeling_espcn import ESPCNForImageSuperResolution

DEFAULT_OPSET = 18
MIN_OPSET = 17
# The int8 recipe (`quantize_onnx`'s defaults, `calibration_patches`): written into each int8 file's metadata and
# into the measurement file, so the Hub upload quantises exactly what was measured. Where the seven-layer nets'
# loss came from (benchmarks/onnx_int8_recipes.md, scripts/int8_recipes.py): rounding each int8 weight to the
# nearest level cost about 0.2 dB on Set5 at x3 (GPTQ-style rounding against the calibration activations: 0.01),
# and quantising each convolution's output before its ReLU (a range wasting most of its 256 levels on negatives,
# then re-quantised after the ReLU) about 0.6 dB more; the calibration method and the calibration images were not
# the cause (calibrating on the test images themselves gave the same loss).
INT8_DEFAULTS = {
    "fuse_relu": True,
    "weight_rounding": "gptq",
    "calibrate_method": "minmax",
    "activation_type": "uint8",
    "per_channel": True,
}


def int8_recipe(
    fuse_relu: bool = INT8_DEFAULTS["fuse_relu"],
    weight_rounding: str = INT8_DEFAULTS["weight_rounding"],
    calibrate_method: str = INT8_DEFAULTS["calibrate_method"],
    activation_type: str = INT8_DEFAULTS["activation_type"],
    per_channel: bool = INT8_DEFAULTS["per_channel"],
) -> dict[str, object]:
    """The description of one `quantize_onnx` recipe (its options), as the metadata and measurement files hold it."""
    symmetric = " symmetric" if activation_type == "int8" else ""
    weights = "int8 per channel" if per_channel else "int8 per tensor"
    rounding = {
        "nearest": "nearest level",
        "gptq": "GPTQ-style, each layer against its calibration inputs in the int8 graph, compensating the "
        "layers before it; the float output convolution refitted to the int8 features (least squares)",
    }[weight_rounding]
    return {
        "format": "QDQ",
        "weights": weights,
        "weight_rounding": rounding,
        "activations": f"{activation_type}{symmetric} per tensor, {calibrate_method} calibration",
        "relu": "fused into the convolution's output quantisation" if fuse_relu else "quantised separately",
        "float_layers": "first and last convolution",
        "calibration_patches": 256,
        "calibration_patch_size": 32,
        "calibration_seed": 0,
        "calibration_images": "every training folder (espcn_hf.data.training_folders('all'))",
    }


INT8_RECIPE = int8_recipe()
# Mean absolute difference from the float32 graph on the calibration patches above which `quantize_onnx`
# refuses to write the int8 file: 0.05 (13 levels of 255) is a broken graph or calibration; the packaged models
# stay between 0.001 and 0.012 (their PSNR cost is measured, not checked here: benchmarks/onnx_cpu.md).
INT8_CHECK_MEAN_ABS = 0.05
# Batch and sizes of the checks: odd sizes and a batch of 2 catch a graph that specialised a dimension.
CHECK_SHAPES = ((1, 3, 24, 32), (2, 3, 37, 29))
CHECK_ATOL = 1e-4


def _fp32_cpu(model: ESPCNForImageSuperResolution) -> torch.nn.Module:
    """A float32 CPU copy with a tensor output (ONNX graphs return tensors, not ModelOutput objects); the
    caller's model (maybe bf16, channels_last or on a GPU) is left as it is."""
    import torch

    class Reconstruction(torch.nn.Module):
        def __init__(self, model: ESPCNForImageSuperResolution) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.model(pixel_values).reconstruction

    copied = copy.deepcopy(model).to("cpu", torch.float32).to(memory_format=torch.contiguous_format)
    return Reconstruction(copied).eval()


@contextlib.contextmanager
def _quiet_exporter():
    """Hide the exporter's notes that do not concern ESPCN (torchvision ops not registered, pytree deprecations)."""
    # _compat announces the conversion of opset 17 from 18, which `export_onnx` verifies on the result itself
    loggers = [
        logging.getLogger(f"torch.onnx._internal.exporter.{name}") for name in ("_registration", "_compat")
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def supported_opsets() -> range:
    """The opsets `export_onnx` writes: `MIN_OPSET` up to the newest that both the exporter's version
    converter (onnxscript) and the installed onnx know (25 with onnxscript 0.7). Asked for a newer one, the
    exporter prints a conversion trace and silently writes opset 18."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    try:
        from onnxscript.version_converter._version_converter import SUPPORTED_MAX_ONNX_OPSET
    except ImportError:  # another onnxscript layout: the model's own opset is still checked after the export
        pass
    else:
        newest = min(newest, SUPPORTED_MAX_ONNX_OPSET)
    return range(MIN_OPSET, newest + 1)


def check_opset(opset: int) -> None:
    """`ValueError` naming the supported opsets unless `export_onnx` can write `opset`."""
    supported = supported_opsets()
    if not isinstance(opset, int) or isinstance(opset, bool) or opset not in supported:
        raise ValueError(
            f"opset {opset!r} is not supported: the exporter writes opsets {supported.start} to "
            f"{supported.stop - 1} (default {DEFAULT_OPSET})"
        )


def _opset_of(proto) -> int:
    return max(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))


def check_output_path(path: str | os.PathLike, model_folder: str | os.PathLike | None) -> None:
    """`ValueError` when `path` is one of the files the model is loaded from: a file directly in
    `model_folder` (config, weights, processor config, code, card), by identity, so also through a link. ONNX
    files there are outputs and may be replaced; files in sub-folders (`MODEL/onnx/model.onnx`) are not read
    when the model loads."""
    if model_folder is None or not Path(model_folder).is_dir() or not Path(path).exists():
        return
    for entry in sorted(Path(model_folder).iterdir()):
        if entry.suffix.lower() == ".onnx" or not entry.is_file():
            continue
        with contextlib.suppress(OSError):
            if os.path.samefile(entry, path):
                suggestion = Path(model_folder) / "onnx" / "model.onnx"
                raise ValueError(
                    f"{path}: is {entry.name} of the model folder {model_folder}; refusing to write the ONNX "
                    f"graph over a file the model is loaded from (write e.g. {suggestion})"
                )


def _model_folder(model) -> Path | None:
    """The local folder a model comes from (a path given, or the folder an instance was loaded from)."""
    name = getattr(model, "name_or_path", model)
    if isinstance(name, (str, os.PathLike)) and str(name) and Path(name).is_dir():
        return Path(name)
    return None


def _onnx_metadata(model: ESPCNForImageSuperResolution) -> dict[str, str]:
    from . import __version__

    config = model.config
    return {
        "model_type": "espcn",
        "upscale_factor": str(config.upscale_factor),
        "num_channels": str(config.num_channels),
        "input": "pixel_values: float32 (batch, 3, height, width), RGB in [0, 1]",
        "output": "reconstruction: float32 (batch, 3, r*height, r*width), clamp to [0, 1]",
        "producer": f"espcn-hf {__version__}",
    }


def export_onnx(
    model: str | os.PathLike | ESPCNForImageSuperResolution,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
) -> Path:
    """Export `model` (instance, `save_pretrained` folder or Hub repo id) to the ONNX file `path`.

    Dynamic batch, height and width; opset `opset` (one of `supported_opsets()`, 17 to 25; the paper's
    Y-channel models need 18 or newer). With `check`, onnxruntime must match torch within 1e-4 at two sizes
    (`check_onnx`), else `RuntimeError` and no file is left at `path`. Returns `path`.

    `ValueError` before any work for an unsupported opset and for a `path` that is one of the files of the
    model's folder (`check_output_path`).
    """
    import onnx
    import torch

    from .modeling_espcn import ESPCNForImageSuperResolution
    from .pretrained import load_model

    check_opset(opset)
    check_output_path(path, _model_folder(model))
    model = model if isinstance(model, ESPCNForImageSuperResolution) else load_model(model, device="cpu")
    check_output_path(path, _model_folder(model))
    if model.config.num_channels == 1 and opset < 18:
        raise ValueError("Y-channel models need opset >= 18 (bicubic chroma uses Resize with antialias)")
    wrapper = _fp32_cpu(model)
    example = torch.rand(2, 3, 32, 40)  # not 1: torch.export specialises dimensions of size 0 and 1
    batch, height, width = (torch.export.Dim(n) for n in ("batch", "height", "width"))
    with _quiet_exporter():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["pixel_values"],
            output_names=["reconstruction"],
            dynamic_shapes={"pixel_values": {0: batch, 2: height, 3: width}},
            external_data=False,
            verbose=False,
        )
    proto = program.model_proto
    if _opset_of(proto) != opset:  # the exporter falls back to its own opset when a conversion fails
        raise RuntimeError(f"the exporter wrote opset {_opset_of(proto)}, not {opset}; not written")
    onnx.helper.set_model_props(proto, _onnx_metadata(model))
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    if check:
        error = check_onnx(data, model)
        if error > CHECK_ATOL:
            raise RuntimeError(f"ONNX export differs from torch by {error:.2e} > {CHECK_ATOL:g}; not written")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, data)


def check_onnx(
    onnx_model: str | os.PathLike | bytes,
    model: ESPCNForImageSuperResolution,
    shapes: Sequence[tuple[int, int, int, int]] = CHECK_SHAPES,
    seed: int = 0,
) -> float:
    """Largest absolute difference between onnxruntime (CPU) and the torch model (fp32) on random inputs."""
    import numpy as np
    import onnxruntime as ort
    import torch

    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    reference = _fp32_cpu(model)
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for shape in shapes:
        pixels = torch.rand(shape, generator=generator)
        (output,) = session.run(["reconstruction"], {"pixel_values": pixels.numpy()})
        with torch.inference_mode():
            expected = reference(pixels).numpy()
        if output.shape != expected.shape:
            return float("inf")
        worst = max(worst, float(np.abs(output - expected).max()))
    return worst


def weights_digest(model: ESPCNForImageSuperResolution) -> str:
    """sha256 of the architecture and every weight of `model` (float32 bytes): which model a measurement is of.
    The same weights give the same digest wherever they are loaded from."""
    import hashlib

    import torch

    config = model.config
    names = (
        "upscale_factor",
        "num_channels",
        "hidden_channels",
        "kernel_sizes",
        "activation",
        "padding_mode",
    )
    digest = hashlib.sha256(repr([getattr(config, name) for name in names]).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def calibration_patches(
    scale: int,
    folders: str | os.PathLike | Sequence[str | os.PathLike] = "all",
    num_patches: int = INT8_RECIPE["calibration_patches"],
    patch_size: int = INT8_RECIPE["calibration_patch_size"],
    seed: int = INT8_RECIPE["calibration_seed"],
) -> list:
    """`num_patches` low-resolution patches, float32 (1, 3, p, p) in [0, 1], from the training images of
    `folders` ("all": every folder under the data folder's `train/`, `espcn_hf.data.training_folders`), made as
    `DataGenerator` makes training pairs (MATLAB-bicubic LR of the mod-cropped HR, one random aligned crop per
    image, no augmentation); the images are drawn without replacement with `seed`. Deterministic."""
    import numpy as np

    from .data import DataGenerator, training_folders

    generator = DataGenerator.from_folder(
        training_folders(folders),
        scale=scale,
        mode="train",
        patch_size=patch_size,
        patches_per_image=1,
        augment=False,
        seed=seed,
    )
    if len(generator) == 0:
        raise ValueError(
            f"no training image of {folders!r} is large enough for {patch_size}-px patches at x{scale}"
        )
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(generator), size=min(num_patches, len(generator)), replace=False)
    return [generator[int(i)]["pixel_values"][None].numpy() for i in sorted(picks)]


def quantize_onnx(
    model: str | os.PathLike | ESPCNForImageSuperResolution,
    path: str | os.PathLike,
    *,
    calibration: Sequence | None = None,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    fuse_relu: bool = INT8_DEFAULTS["fuse_relu"],
    weight_rounding: str = INT8_DEFAULTS["weight_rounding"],
    calibrate_method: str = INT8_DEFAULTS["calibrate_method"],
    activation_type: str = INT8_DEFAULTS["activation_type"],
    per_channel: bool = INT8_DEFAULTS["per_channel"],
) -> Path:
    """Write the int8 version of `model` to the ONNX file `path` (onnxruntime static quantisation, `INT8_RECIPE`).

    `model` is a model instance, a `save_pretrained` folder or Hub repo id (exported with `export_onnx` first), or
    a float32 `.onnx` file `export_onnx` wrote. `calibration`: float32 arrays (N, 3, h, w) in [0, 1]; default
    `calibration_patches(scale)` from the training images under the data folder. With `check`, the int8 graph
    must run in onnxruntime and stay within `INT8_CHECK_MEAN_ABS` of the float32 graph on the calibration data,
    else `RuntimeError` and nothing is written. Needs the `onnx` extra. Returns `path`.

    The recipe (defaults = `INT8_DEFAULTS`, the one measured in benchmarks/onnx_int8.json; the others are there
    to measure alternatives, scripts/int8_recipes.py): QDQ format; the first and last convolutions stay float32;
    the others get int8 weights and activations, per tensor, calibrated over the calibration data.

    * `fuse_relu` (True): a ReLU after a quantised convolution is quantised with it (onnxruntime drops the ReLU
      and the convolution's output takes the ReLU's range, zero point 0); False quantises the convolution's output
      before the ReLU and again after it (the first recipe: about 0.6 dB of the x3 net's loss on Set5).
    * `weight_rounding`: "gptq" (default) rounds each int8 convolution's weights column by column, pushing each
      rounding error onto the columns not yet rounded (GPTQ, Frantar et al. 2022) so that the layer's output on
      its calibration inputs, taken from the int8 graph with the layers before it already quantised, stays close
      to the float layer's output on the float graph's inputs (the bias absorbs the rest); the float output
      convolution is then refitted by least squares to the int8 graph's features. Same scales, same graph, only
      other integers (and float output weights). "nearest": onnxruntime's rounding to the nearest level.
    * `calibrate_method`: "minmax" (default), "percentile", "entropy" (onnxruntime's CalibrationMethod).
    * `activation_type`: "uint8" (default; asymmetric) or "int8" (symmetric, ActivationSymmetric).
    * `per_channel`: int8 weights per output channel (default) or per tensor.
    """
    import tempfile

    import numpy as np
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    activations = {"uint8": (QuantType.QUInt8, False), "int8": (QuantType.QInt8, True)}
    if calibrate_method not in methods:
        raise ValueError(f"calibrate_method must be one of {sorted(methods)}, not {calibrate_method!r}")
    if activation_type not in activations:
        raise ValueError(f"activation_type must be one of {sorted(activations)}, not {activation_type!r}")
    if weight_rounding not in ("gptq", "nearest"):
        raise ValueError(f"weight_rounding must be 'gptq' or 'nearest', not {weight_rounding!r}")
    recipe = int8_recipe(fuse_relu, weight_rounding, calibrate_method, activation_type, per_channel)
    with tempfile.TemporaryDirectory(prefix="espcn-hf-int8-") as tmp:
        fp32 = Path(tmp) / "model.onnx"
        if isinstance(model, (str, os.PathLike)) and str(model).endswith(".onnx") and Path(model).is_file():
            fp32.write_bytes(Path(model).read_bytes())
        else:
            check_output_path(path, _model_folder(model))
            export_onnx(model, fp32, opset=opset)
        proto = onnx.load(str(fp32))
        metadata = {p.key: p.value for p in proto.metadata_props}
        if calibration is None:
            calibration = calibration_patches(int(metadata.get("upscale_factor", 3)))
        calibration = [np.ascontiguousarray(x, dtype=np.float32) for x in calibration]
        if not calibration:
            raise ValueError("quantize_onnx: no calibration data")
        convolutions = [node.name for node in proto.graph.node if node.op_type == "Conv"]

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter(calibration)

            def get_next(self):
                batch = next(self.batches, None)
                return None if batch is None else {"pixel_values": batch}

        int8 = Path(tmp) / "model_quantized.onnx"
        activation, symmetric = activations[activation_type]
        with _quiet_quantizer():
            quantize_static(
                str(fp32),
                str(int8),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                op_types_to_quantize=["Conv", "Relu"] if fuse_relu else ["Conv"],
                activation_type=activation,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=[convolutions[0], convolutions[-1]] if len(convolutions) > 2 else [],
                calibrate_method=methods[calibrate_method],
                extra_options={"ActivationSymmetric": symmetric},
            )
        quantized = onnx.load(str(int8))
        if weight_rounding == "gptq":
            _gptq_rounding(proto, quantized, calibration)
        onnx.helper.set_model_props(
            quantized, {**metadata, **{f"int8_{key}": str(value) for key, value in recipe.items()}}
        )
        data = quantized.SerializeToString()
        if check:
            difference = _int8_difference(fp32.read_bytes(), data, calibration[:16])
            if not difference <= INT8_CHECK_MEAN_ABS:
                raise RuntimeError(
                    f"the int8 graph differs from float32 by {difference:.3g} on average (more than "
                    f"{INT8_CHECK_MEAN_ABS:g}); not written"
                )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, data)


def _graph_tensors(proto, names: Sequence[str], batches: Sequence) -> dict[str, list]:
    """The values of the tensors `names` of the graph `proto` (onnxruntime, CPU) for each batch."""
    import onnx

    from .ort_backend import cpu_session

    graph = copy.deepcopy(proto)
    outputs = {o.name for o in graph.graph.output}
    wanted = [n for n in dict.fromkeys(names) if n != "pixel_values"]
    for name in wanted:
        if name not in outputs:
            graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = cpu_session(graph.SerializeToString(), quiet=True)
    values: dict[str, list] = {name: [] for name in names}
    for batch in batches:
        found = dict(zip(wanted, session.run(wanted, {"pixel_values": batch}), strict=True))
        found["pixel_values"] = batch
        for name in names:
            values[name].append(found[name])
    return values


def _least_squares_statistics(inputs: Sequence, targets: Sequence, kernel: int, padding: int):
    """E[x x^T] and E[t x^T] of the im2col columns of a convolution's inputs `x` (here the int8 graph's) and
    `t` (the float graph's), a row of ones appended to both (the bias); float64 (K+1, K+1)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    hessian = cross = None
    count = 0
    for x, t in zip(inputs, targets, strict=True):
        a = F.unfold(torch.from_numpy(np.asarray(x)), kernel, padding=padding)  # (N, K, L)
        b = F.unfold(torch.from_numpy(np.asarray(t)), kernel, padding=padding)
        a = torch.cat([a, torch.ones_like(a[:, :1])], 1).transpose(0, 1).reshape(a.shape[1] + 1, -1)
        b = torch.cat([b, torch.ones_like(b[:, :1])], 1).transpose(0, 1).reshape(b.shape[1] + 1, -1)
        h, c = (a @ a.T).double(), (b @ a.T).double()
        hessian = h if hessian is None else hessian + h
        cross = c if cross is None else cross + c
        count += a.shape[1]
    return hessian / count, cross / count


def _gptq_solve(weights, hessian, cross, scale=None, damp: float = 0.01, bias: bool = True):
    """Weights and bias (O, K+1; without `bias`, weights (O, K) and statistics without the ones) minimising E|w' x - w t|^2 over the statistics: the least-squares fit, then, with
    `scale` (O,), its first K columns rounded to integers in [-127, 127] (units of `scale`) one at a time, largest
    input energy first, each rounding error pushed onto the columns left (GPTQ's update, with `damp` of the mean
    diagonal added for stability); the bias column stays float and is rounded last by the caller."""
    import torch

    size = weights.shape[1] - int(bias)
    hessian = hessian.clone()
    dead = torch.diagonal(hessian) == 0  # input channels that are always zero
    hessian[dead, dead] = 1.0
    ridge = torch.mean(torch.diagonal(hessian)[:size]) * torch.eye(weights.shape[1], dtype=hessian.dtype)
    fitted = weights @ cross @ torch.linalg.inv(hessian + 1e-8 * ridge)
    if scale is None:
        return fitted
    order = torch.argsort(torch.diagonal(hessian)[:size], descending=True)
    if bias:
        order = torch.cat([order, torch.tensor([size])])
    w = fitted[:, order].clone()
    h = (hessian + damp * ridge)[order][:, order]
    inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    result = w.clone()
    for i in range(size):
        q = torch.clamp(torch.round(w[:, i] / scale), -127, 127)
        result[:, i] = q
        error = (w[:, i] - q * scale) / inverse[i, i]
        w[:, i + 1 :] -= error[:, None] * inverse[i, i + 1 :][None, :]
    if bias:
        result[:, size] = w[:, size]
    out = torch.empty_like(result)
    out[:, order] = result
    return out


def _gptq_rounding(float_proto, quantized, calibration: Sequence) -> None:
    """`quantize_onnx`'s weight_rounding="gptq", in place on the QDQ graph `quantized`: each int8 convolution in
    turn gets new int8 weights and int32 bias (`_gptq_solve`, onnxruntime's scales kept) fitted on its inputs in
    the int8 graph as quantised so far against the float graph's; the last convolution, float, is refitted the
    same way without rounding."""
    import numpy as np
    import onnx
    import torch

    initializers = {i.name: i for i in quantized.graph.initializer}
    produced = {o: n for n in quantized.graph.node for o in n.output}
    float_weights = {i.name: onnx.numpy_helper.to_array(i) for i in float_proto.graph.initializer}
    float_convs = [n for n in float_proto.graph.node if n.op_type == "Conv"]
    float_inputs = _graph_tensors(float_proto, [c.input[0] for c in float_convs], calibration)

    def source(name: str):
        """(float initializer name, int8 initializer, scale initializer) of a conv input, or (name, None, None)."""
        node = produced.get(name)
        if node is not None and node.op_type == "DequantizeLinear":
            quantized_name = node.input[0]
            return (
                quantized_name.removesuffix("_quantized"),
                initializers[quantized_name],
                initializers[node.input[1]],
            )
        return name, None, None

    convs = [n for n in quantized.graph.node if n.op_type == "Conv"]
    for position, conv in enumerate(convs):
        weight_name, weight_q, weight_scale = source(conv.input[1])
        bias_name, bias_q, bias_scale = source(conv.input[2]) if len(conv.input) > 2 else (None, None, None)
        last = position == len(convs) - 1
        if weight_q is None and not last:
            continue
        match = [c for c in float_convs if c.input[1] == weight_name]
        if len(match) != 1:
            continue
        has_bias = bias_name is not None and bias_name in float_weights
        w = float_weights[weight_name].astype(np.float64)
        b = float_weights[bias_name].astype(np.float64) if has_bias else np.zeros(w.shape[0])
        kernel = w.shape[-1]
        inputs = _graph_tensors(quantized, [conv.input[0]], calibration)[conv.input[0]]
        hessian, cross = _least_squares_statistics(
            inputs, float_inputs[match[0].input[0]], kernel, kernel // 2
        )
        flat = torch.from_numpy(np.concatenate([w.reshape(w.shape[0], -1), b[:, None]], 1))
        if not has_bias:  # no bias to fit: drop the ones
            flat, hessian, cross = flat[:, :-1], hessian[:-1, :-1], cross[:-1, :-1]
        columns = w[0].size
        if weight_q is not None:
            scale = onnx.numpy_helper.to_array(weight_scale).astype(np.float64)
            scale = torch.from_numpy(np.array(np.broadcast_to(scale, (w.shape[0],))))
            fitted = _gptq_solve(flat, hessian, cross, scale, bias=has_bias).numpy()
            weight_q.CopyFrom(
                onnx.numpy_helper.from_array(
                    fitted[:, :columns].reshape(w.shape).astype(np.int8), weight_q.name
                )
            )
            if has_bias and bias_q is not None:
                unit = onnx.numpy_helper.to_array(bias_scale).astype(np.float64)
                bias = np.clip(np.round(fitted[:, -1] / unit), -(2**31), 2**31 - 1).astype(np.int32)
                bias_q.CopyFrom(onnx.numpy_helper.from_array(bias, bias_q.name))
        else:
            fitted = _gptq_solve(flat, hessian, cross, bias=has_bias).numpy()
            initializers[weight_name].CopyFrom(
                onnx.numpy_helper.from_array(
                    fitted[:, :columns].reshape(w.shape).astype(np.float32), weight_name
                )
            )
            if has_bias:
                initializers[bias_name].CopyFrom(
                    onnx.numpy_helper.from_array(fitted[:, -1].astype(np.float32), bias_name)
                )


def _int8_difference(fp32: bytes, int8: bytes, batches: Sequence) -> float:
    """Mean absolute difference of the two graphs' outputs over `batches` (NaN if one is not finite)."""
    import numpy as np

    from .ort_backend import cpu_session

    sessions = [cpu_session(g, quiet=True) for g in (fp32, int8)]
    total, count = 0.0, 0
    for batch in batches:
        a, b = (s.run(["reconstruction"], {"pixel_values": batch})[0] for s in sessions)
        if not np.isfinite(b).all() or a.shape != b.shape:
            return float("nan")
        total += float(np.abs(a - b).sum())
        count += a.size
    return total / count


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime's quantiser logs advice at WARNING through the root logger (pre-processing, opset notes)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `espcn-hf export`."""
    parser.add_argument("model", help="folder written by save_pretrained, or a Hub repo id")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {MIN_OPSET} to the newest the exporter supports (25 with onnxscript 0.7); "
        "another is refused before exporting",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-torch check")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="write the int8 graph instead (QDQ, per-channel; transformers.js's onnx/model_quantized.onnx), "
        "calibrated on LR patches of the training images under the data folder ($ESPCN_HF_DATA_DIR/train)",
    )
    parser.add_argument(
        "--calibration",
        nargs="+",
        metavar="DIR",
        help="with --int8: image folders to calibrate on instead of every training folder",
    )


def add_parser(subparsers) -> None:
    """`espcn-hf export` (espcn_hf_cli.COMMANDS)."""
    from espcn_hf_cli import COMMANDS

    parser = subparsers.add_parser(
        "export",
        help=COMMANDS["export"][0],
        description="Export an ESPCN model to one ONNX file: input pixel_values (batch, 3, height, width) RGB in "
        "[0, 1], output reconstruction (batch, 3, r*height, r*width); dynamic batch/height/width. The file is "
        "checked against torch with onnxruntime (max abs diff <= 1e-4) before it is written. Needs the `onnx` "
        "extra: pip install 'espcn-hf[onnx]'.",
        epilog="examples:\n  espcn-hf export espcn-hf/espcn-x3 -o onnx/model.onnx\n"
        "  espcn-hf export espcn-hf/espcn-x3 -o onnx/model_quantized.onnx --int8",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`espcn-hf export MODEL -o model.onnx`: 0 on success, 1 with one error line otherwise."""
    from .cli import EXIT_FAILURES, EXIT_OK, missing_extra
    from .pretrained import CheckpointError

    int8 = getattr(args, "int8", False)
    if getattr(args, "calibration", None) and not int8:
        print("error: --calibration goes with --int8", file=sys.stderr)
        return EXIT_FAILURES
    try:
        if int8:
            check_opset(args.opset)
            from .pretrained import load_model

            model = load_model(args.model, device="cpu")
            calibration = None
            if args.calibration:
                calibration = calibration_patches(model.config.upscale_factor, folders=args.calibration)
            path = quantize_onnx(
                model, args.output, calibration=calibration, opset=args.opset, check=not args.no_check
            )
        else:
            path = export_onnx(args.model, args.output, opset=args.opset, check=not args.no_check)
    except ImportError as error:  # onnx / onnxruntime / onnxscript: the optional `onnx` extra
        print(f"error: {missing_extra(error, 'onnx')}", file=sys.stderr)
        return EXIT_FAILURES
    except (CheckpointError, ValueError, RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURES
    kind = ", int8" if int8 else ""
    print(f"{args.model} -> {path} ({path.stat().st_size / 1024:.0f} kB, opset {args.opset}{kind})")
    return EXIT_OK


__all__ = [
    "DEFAULT_OPSET",
    "INT8_RECIPE",
    "add_arguments",
    "add_parser",
    "calibration_patches",
    "check_onnx",
    "check_opset",
    "check_output_path",
    "export_onnx",
    "quantize_onnx",
    "run",
    "supported_opsets",
    "weights_digest",
]
