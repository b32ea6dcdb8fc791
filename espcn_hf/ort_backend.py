"""The onnxruntime backend of `upscale`: the model's ONNX graph (`export_onnx`) run by onnxruntime on the CPU.

    upscale(image, model, backend="onnxruntime")   # needs the `onnx` extra: pip install "espcn-hf[onnx]"
    upscale(image, model)                           # backend="auto": onnxruntime where it is the faster one

Why: on CPUs onnxruntime runs the same float32 network faster than torch's eager operators (convolutions with
the activation fused, the paper preset's colour path and bicubic chroma in one graph), most for the paper preset:
`benchmarks/speed_cpu.md` measures both through `upscale(PIL image, model)` beside OpenCV's ESPCN.

Exactness: the graph is the one `export_onnx` writes and checks (onnxruntime within 1e-4 of torch), and the tiles
are cut by the same loop as torch's (`image_processing_espcn.run_tiled`, with `receptive_field_radius` pixels of
context), so the tiled result equals the untiled one and the torch path within float rounding (tested).

The graph of a model is exported once per process and weights, kept in memory (`session_for`), and also on disk
under `cache_dir()` (`$ESPCN_HF_ONNX_CACHE`, else `$XDG_CACHE_HOME/espcn_hf/onnx`; `ESPCN_HF_ONNX_CACHE=off`
turns it off): one file per weights (the name is a digest of the config and the weights), written atomically, so
the next process starts at once. An export takes 1-5 s of CPU.

What "auto" means (`resolve_backend`): onnxruntime when the model runs on the CPU in float32 with no lower
`dtype` asked, the `onnx` extra is installed and the graph is at hand (in memory or on disk) or worth exporting:
this process has sent `AUTO_EXPORT_PIXELS` (10 M) low-resolution pixels of that model through torch (a single
image that large counts at once), where the export about pays for itself at the measured gain. Torch otherwise
(also on CUDA, and for bf16/fp16). `$ESPCN_HF_BACKEND` (`torch` or `onnxruntime`) pins what "auto" means.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import torch

BACKENDS = ("auto", "torch", "onnxruntime")
ONNX_EXTRA = "onnx"
# Low-resolution pixels of one model that "auto" first runs through torch before it exports the graph (about 45
# frames of 640x360; a 10-Mpx photo counts at once). Measured at one thread (benchmarks/speed_cpu.md): the first
# export of a process costs 2-3 s of CPU, onnxruntime saves about 0.18 ms per 1,000 LR pixels of upscale() for
# either preset, so the export has paid for itself after 12-16 Mpx in the same process, and at once in every
# later process (the graph is then on disk).
AUTO_EXPORT_PIXELS = 10_000_000
# Sessions kept in memory (one per weights and thread count; each holds a graph of a few hundred kB).
MAX_SESSIONS = 8

_LOCK = threading.Lock()
_GRAPHS: OrderedDict[str, bytes] = OrderedDict()  # model key -> the exported graph (this process)
_SESSIONS: OrderedDict[tuple[str, int], object] = OrderedDict()  # (model key, threads) -> session
_TORCH_PIXELS: dict[str, int] = {}  # model key -> LR pixels "auto" sent through torch so far (this process)


def onnxruntime_available() -> bool:
    """Whether the `onnx` extra (onnxruntime, onnx, onnxscript) is installed; nothing is imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx", "onnxscript"))


def missing_onnxruntime_error() -> ImportError:
    """The one error of backend="onnxruntime" without the `onnx` extra."""
    missing = [n for n in ("onnxruntime", "onnx", "onnxscript") if importlib.util.find_spec(n) is None]
    error = ImportError(
        f'backend="onnxruntime" needs {", ".join(missing)}: pip install "espcn-hf[{ONNX_EXTRA}]"',
        name=missing[0] if missing else None,
    )
    return error


def cache_dir() -> Path | None:
    """Where exported graphs are kept between processes, or None when `ESPCN_HF_ONNX_CACHE` is `off`/`0`."""
    value = os.environ.get("ESPCN_HF_ONNX_CACHE", "")
    if value.strip().lower() in ("off", "0", "false", "no", "none"):
        return None
    if value:
        return Path(value).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "espcn_hf" / "onnx"


def model_key(model) -> str:
    """The name of the model's graph: its `weights_digest` (architecture and every weight), the opset and this
    package's version. Computed per call (about 1 ms for the seven-layer net), so weights changed in place are
    seen."""
    from . import __version__
    from .onnx_export import DEFAULT_OPSET, weights_digest

    text = f"espcn-hf {__version__} opset {DEFAULT_OPSET} {weights_digest(model)}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _disk_path(key: str) -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / f"espcn-{key}.onnx"


def _bounded(cache: OrderedDict, key, value) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > MAX_SESSIONS:
        cache.popitem(last=False)


def is_cached(key: str) -> bool:
    """Whether the graph of the model with this `model_key` is at hand (in memory, or in the disk cache)."""
    path = _disk_path(key)
    return key in _GRAPHS or (path is not None and path.is_file())


def cpu_session(source: bytes | str | os.PathLike, threads: int | None = None, quiet: bool = False):
    """An onnxruntime session on the CPU provider, on a serialised graph or a file: `threads` intra-op threads
    (None: onnxruntime's default) that do not spin between runs, one inter-op thread, sequential execution;
    `quiet` keeps onnxruntime's own warnings (about QDQ graphs, for one) out of the output. The one session
    factory of the package and scripts."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # no busy-waiting of the worker threads after a run: spinning workers keep the cores from whatever runs next
    # (at two threads torch's upscale() right after an onnxruntime one ran 1.5-1.9x slower); a whole-frame run,
    # what tile_size="auto" gives frames up to `inference.ONNXRUNTIME_WHOLE_FRAME_PIXELS`, is as fast without it
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if quiet:
        options.log_severity_level = 3
    source = source if isinstance(source, bytes) else str(source)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def session_for(model, key: str | None = None, threads: int | None = None):
    """The onnxruntime session of `model`'s graph on `threads` intra-op threads (default: torch's count, so both
    backends use what the caller allowed). The graph comes from memory, else from the disk cache, else from an
    export made now (and kept in both)."""
    if not onnxruntime_available():
        raise missing_onnxruntime_error()
    key = key or model_key(model)
    threads = threads or torch.get_num_threads()
    with _LOCK:
        session = _SESSIONS.get((key, threads))
        if session is not None:
            _SESSIONS.move_to_end((key, threads))
            return session
        graph, path = _GRAPHS.get(key), _disk_path(key)
        if graph is None and path is not None and path.is_file():
            try:
                graph = path.read_bytes()
                session = cpu_session(graph, threads)
            except Exception:  # noqa: BLE001 -- an unreadable or damaged cache file: export again
                graph = session = None
        if graph is None:
            graph = _export(model, path)
        if session is None:
            session = cpu_session(graph, threads)
        _bounded(_GRAPHS, key, graph)
        _bounded(_SESSIONS, (key, threads), session)
        return session


def _export(model, path: Path | None) -> bytes:
    """The checked graph of `model` (`export_onnx`), also written to `path` (the disk cache) unless None."""
    from .fileio import atomic_write_bytes
    from .onnx_export import export_onnx

    with tempfile.TemporaryDirectory(prefix="espcn-hf-onnx-") as tmp:
        graph = export_onnx(model, Path(tmp) / "model.onnx").read_bytes()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, graph)
        except OSError:  # a read-only or full cache: the graph still serves this process
            pass
    return graph


def clear_cache() -> None:
    """Forget the sessions in memory and the pixel counts of "auto" (the disk cache stays)."""
    with _LOCK:
        _GRAPHS.clear()
        _SESSIONS.clear()
        _TORCH_PIXELS.clear()


def check_backend(backend: str) -> str:
    """`ValueError` unless `backend` is one of `BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def resolve_backend(backend: str, model, dtype: torch.dtype | None, pixels: int) -> tuple[str, str | None]:
    """("torch" or "onnxruntime", the model key when onnxruntime runs) for a call on `pixels` LR pixels.

    backend="onnxruntime" on a model that cannot run there (not on the CPU, not float32, a `dtype` other than
    float32) is a `ValueError`; without the `onnx` extra an `ImportError` naming it. "auto": see the module
    docstring.
    """
    check_backend(backend)
    if backend == "torch":
        return "torch", None
    param = next(model.parameters())
    runs_there = (
        param.device.type == "cpu" and param.dtype == torch.float32 and dtype in (None, torch.float32)
    )
    if backend == "onnxruntime":
        if not runs_there:
            raise ValueError(
                'backend="onnxruntime" runs float32 models on the CPU; this call asks for '
                f"{dtype or param.dtype} on {param.device} (use backend='torch')"
            )
        if not onnxruntime_available():
            raise missing_onnxruntime_error()
        return "onnxruntime", model_key(model)
    pinned = os.environ.get("ESPCN_HF_BACKEND", "").strip().lower()
    if pinned == "torch" or not runs_there or not onnxruntime_available():
        return "torch", None
    key = model_key(model)
    if pinned == "onnxruntime" or is_cached(key):
        return "onnxruntime", key
    with _LOCK:
        _TORCH_PIXELS[key] = _TORCH_PIXELS.get(key, 0) + pixels
        worth_it = _TORCH_PIXELS[key] >= AUTO_EXPORT_PIXELS
    return ("onnxruntime", key) if worth_it else ("torch", None)


class OnnxRuntimeForward:
    """`forward(window) -> output` for `run_tiled`: (N, 3, h, w) float tensors in [0, 1] to the (N, 3, rh, rw)
    float32 reconstruction (not clamped), through the model's onnxruntime session."""

    def __init__(self, model, key: str | None = None) -> None:
        self.session = session_for(model, key)

    def __call__(self, window: torch.Tensor) -> torch.Tensor:
        pixels = window.detach().to("cpu", torch.float32).contiguous().numpy()
        (output,) = self.session.run(["reconstruction"], {"pixel_values": pixels})
        return torch.from_numpy(output)


__all__ = [
    "AUTO_EXPORT_PIXELS",
    "BACKENDS",
    "OnnxRuntimeForward",
    "cache_dir",
    "check_backend",
    "clear_cache",
    "cpu_session",
    "is_cached",
    "model_key",
    "onnxruntime_available",
    "resolve_backend",
    "session_for",
]
