"""The evaluation loop of the package and its results type.

    report = evaluate({"bicubic": bicubic_upscaler(3), "espcn-x3": model}, {"Set5": set5, "Set14": set14}, 3)
    print(report.to_markdown())
    report.to_json("benchmarks/eval_espcn-x3_x3.json")        # written atomically

`evaluate` is the only loop that scores super-resolution methods: `scripts/evaluate.py` (benchmarks), training
validation (sharded over the processes of an `accelerate.Accelerator` and gathered) and the Space go through it,
and every number goes through `espcn_hf.metrics.psnr_ssim` (uint8 levels, mod-crop, `scale`-pixel border, Y of
BT.601). `EvalReport` is the results file format: `scripts/evaluate.py` writes it, the model card, the README
summary and the training plots read it with `EvalReport.from_json`, and `EvalReport.to_markdown` is the one
table renderer.

Every method sees the same uint8 LR image (`bicubic_degrade` of the mod-cropped HR, as a `DataGenerator` in eval
mode stores it). Methods:

* a model (`ESPCNForImageSuperResolution`), run through `espcn_hf.inference.upscale_tensor` (exact tiling);
* `bicubic_upscaler(scale)`: MATLAB bicubic upscaling of the LR (`degradation.imresize`), the "Bicubic" rows of
  SR papers;
* `opencv_upscaler(kind, scale, path)`: OpenCV `dnn_superres` (ESPCN / FSRCNN `.pb` models), fed BGR uint8;
* any callable `f(lr) -> sr`, `lr` a float (1, 3, h, w) tensor in [0, 1], `sr` a float (1, 3, rh, rw) tensor in
  [0, 1] (quantized by the protocol) or a uint8 (rh, rw, 3) numpy array.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .degradation import imresize
from .fileio import atomic_write_text
from .metrics import psnr_ssim, quantize_uint8

Upscaler = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]

# Peer models of OpenCV dnn_superres: method name -> (setModel algorithm, file pattern, sub-folder of peers/).
OPENCV_PEERS = {
    "opencv-espcn": ("espcn", "ESPCN_x{scale}.pb", "opencv_espcn"),
    "opencv-fsrcnn": ("fsrcnn", "FSRCNN_x{scale}.pb", "opencv_fsrcnn"),
    "opencv-fsrcnn-small": ("fsrcnn", "FSRCNN-small_x{scale}.pb", "opencv_fsrcnn"),
}


class PeerModelError(ValueError):
    """An OpenCV peer model that the installed OpenCV cannot read: that peer is left out of a run."""


class EvalReportError(ValueError):
    """A results file (or dict) that is not an `EvalReport`; the message says what is wrong."""


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SetScores:
    """Mean scores of one method on one set (PSNR in dB, Y of BT.601 and RGB; `seconds` spent upscaling).

    `per_image` (image name -> scores) is kept in memory for pictures and tests; it is not written to JSON.
    """

    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    num_images: int
    seconds: float
    ssim_rgb: float | None = None
    per_image: dict[str, dict[str, float]] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "psnr_y": self.psnr_y,
            "ssim_y": self.ssim_y,
            "psnr_rgb": self.psnr_rgb,
        }
        if self.ssim_rgb is not None:
            out["ssim_rgb"] = self.ssim_rgb
        out["num_images"] = self.num_images
        out["seconds"] = self.seconds
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "") -> SetScores:
        missing = [k for k in ("psnr_y", "ssim_y") if k not in data]
        if missing:
            raise EvalReportError(f"{where}: scores lack {missing}")
        nan = float("nan")
        return cls(
            psnr_y=float(data["psnr_y"]),
            ssim_y=float(data["ssim_y"]),
            psnr_rgb=float(data.get("psnr_rgb", nan)),
            num_images=int(data.get("num_images", 0)),
            seconds=float(data.get("seconds", nan)),
            ssim_rgb=None if data.get("ssim_rgb") is None else float(data["ssim_rgb"]),
        )


def format_scores(scores: SetScores | None) -> str:
    """The table cell of one method on one set: `PSNR / SSIM` on Y, or an en dash when there is none."""
    return "–" if scores is None else f"{scores.psnr_y:.2f} / {scores.ssim_y:.4f}"


@dataclass
class EvalReport:
    """PSNR/SSIM of methods on benchmark sets at one scale; the results file of the project.

    JSON (`to_json` / `from_json`): `{"model", "name", "scale", "command", "results": {set: {method: {"psnr_y",
    "ssim_y", "psnr_rgb", ["ssim_rgb",] "num_images", "seconds"}}}, "methods", "seconds", "environment"}`.

    Attributes:
        scale: the SR factor.
        results: set name -> method name -> `SetScores`, in evaluation order.
        name: the evaluated model's name (the method that is "this model"), e.g. `espcn-x3`; `peers` for a
            file of baselines only.
        model: where the model came from (a folder or a Hub id), as given on the command line.
        command: the command that produced the numbers.
        methods: method names in column order (default: first-seen order in `results`).
        seconds: wall-clock time of the whole evaluation.
        environment: versions and device (free-form strings).
        outputs: set -> method -> image name -> SR image (uint8 H x W x 3) kept for pictures; not serialized.
    """

    scale: int
    results: dict[str, dict[str, SetScores]]
    name: str | None = None
    model: str | None = None
    command: str | None = None
    methods: list[str] = field(default_factory=list)
    seconds: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict[str, dict[str, np.ndarray]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        seen = list(self.methods)
        for by_method in self.results.values():
            seen += [m for m in by_method if m not in seen]
        self.methods = seen

    # -------------------------------------------------------------------------------------------- access
    @property
    def sets(self) -> list[str]:
        return list(self.results)

    def scores(self, set_name: str, method: str) -> SetScores | None:
        """The scores of `method` on `set_name`, or None when that pair was not evaluated."""
        return self.results.get(set_name, {}).get(method)

    def select(self, methods: Sequence[str], name: str | None = None, model: str | None = None) -> EvalReport:
        """A report with only `methods` (in that order), e.g. one file per model of a multi-model run."""
        return EvalReport(
            scale=self.scale,
            results={s: {m: r[m] for m in methods if m in r} for s, r in self.results.items()},
            name=self.name if name is None else name,
            model=self.model if model is None else model,
            command=self.command,
            methods=[m for m in methods if m in self.methods],
            seconds=self.seconds,
            environment=dict(self.environment),
            outputs={s: {m: o[m] for m in methods if m in o} for s, o in self.outputs.items()},
        )

    def flat_metrics(self, method: str) -> dict[str, float]:
        """`{"set5_psnr": .., "set5_ssim": .., "set5_images": .., ...}` of one method (Y channel): one line of
        training's `metrics.jsonl`."""
        out = {}
        for set_name, by_method in self.results.items():
            scores = by_method.get(method)
            if scores is not None:
                out[f"{set_name.lower()}_psnr"] = scores.psnr_y
                out[f"{set_name.lower()}_ssim"] = scores.ssim_y
                out[f"{set_name.lower()}_images"] = scores.num_images
        return out

    # -------------------------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "name": self.name,
            "scale": self.scale,
            "command": self.command,
            "results": {s: {m: r.to_dict() for m, r in by.items()} for s, by in self.results.items()},
            "methods": list(self.methods),
            "seconds": self.seconds,
            "environment": dict(self.environment),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "evaluation results") -> EvalReport:
        if not isinstance(data, Mapping):
            raise EvalReportError(f"{where}: expected a JSON object, got {type(data).__name__}")
        missing = [key for key in ("scale", "results") if key not in data]
        if missing:
            raise EvalReportError(f"{where}: lacks {missing} (not a results file of scripts/evaluate.py)")
        results = data["results"]
        if not isinstance(results, Mapping) or not all(isinstance(v, Mapping) for v in results.values()):
            raise EvalReportError(f"{where}: 'results' must map set names to {{method: scores}}")
        return cls(
            scale=int(data["scale"]),
            results={
                s: {m: SetScores.from_dict(r, f"{where}: {s}/{m}") for m, r in by.items()}
                for s, by in results.items()
            },
            name=data.get("name"),
            model=data.get("model"),
            command=data.get("command"),
            methods=list(data.get("methods") or []),
            seconds=None if data.get("seconds") is None else float(data["seconds"]),
            environment=dict(data.get("environment") or {}),
        )

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The JSON text; with `path`, also written there atomically (`espcn_hf.fileio`)."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> EvalReport:
        """Read a results file (a path), or parse JSON text (a string that starts with `{`)."""
        if isinstance(source, str) and source.lstrip().startswith("{"):
            where, text = "evaluation results", source
        else:
            where = str(source)
            try:
                text = Path(source).read_text(encoding="utf-8")
            except OSError as error:
                raise EvalReportError(f"{where}: cannot read the results file ({error})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise EvalReportError(f"{where}: not valid JSON ({error})") from None
        return cls.from_dict(data, where)

    # -------------------------------------------------------------------------------------------- markdown
    def to_markdown(
        self,
        methods: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        highlight: str | None = None,
        full: bool = True,
    ) -> str:
        """The results table: one row per set, one `PSNR / SSIM` (Y) column per method.

        Args:
            methods: columns, in order (default `self.methods`); methods without any number are left out.
            labels: column titles for method names (default: the names).
            highlight: a method shown in bold (the card's "this model").
            full: a whole document (title, protocol line, table, command, time) instead of the table alone.
        """
        labels = labels or {}
        columns = [m for m in (methods or self.methods) if any(m in by for by in self.results.values())]
        header = ["Set"] + [
            f"**{labels.get(m, m)}**" if m == highlight else labels.get(m, m) for m in columns
        ]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for set_name, by_method in self.results.items():
            cells = []
            for method in columns:
                cell = format_scores(by_method.get(method))
                cells.append(f"**{cell}**" if method == highlight and method in by_method else cell)
            lines.append(f"| {set_name} | " + " | ".join(cells) + " |")
        table = "\n".join(lines) + "\n"
        if not full:
            return table
        title = f"# Evaluation: {self.name or 'methods'}, x{self.scale}\n\n"
        protocol = f"PSNR (dB) / SSIM on Y (BT.601), x{self.scale}, border {self.scale} px cropped\n\n"
        tail = []
        if self.command:
            tail.append(f"Command: `{self.command}`")
        if self.seconds is not None:
            env = self.environment
            where = f" on {env['device']}" if env.get("device") else ""
            torch_version = f" (torch {env['torch']})" if env.get("torch") else ""
            tail.append(f"Total time {self.seconds:.1f} s{where}{torch_version}.")
        return title + protocol + table + ("\n" + "\n\n".join(tail) + "\n" if tail else "")


# ----------------------------------------------------------------------------------------------------------------
# Methods
# ----------------------------------------------------------------------------------------------------------------


def bicubic_upscaler(scale: int) -> Upscaler:
    """MATLAB `imresize(lr, scale, 'bicubic')` in float64 (the protocol rounds it to uint8 levels)."""

    def upscale(lr: torch.Tensor) -> torch.Tensor:
        return imresize(lr.to(torch.float64), scale=scale)

    return upscale


def opencv_sr(kind: str, scale: int, path: str | os.PathLike, threads: int | None = None):
    """OpenCV's `dnn_superres` model (`kind` "espcn" or "fsrcnn", a `.pb` file): `upsample(bgr_uint8)`.
    `threads` sets OpenCV's thread count (a process-wide setting) when given."""
    import cv2

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such OpenCV model file")
    if threads is not None:
        cv2.setNumThreads(threads)
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    try:
        sr.readModel(str(path))
    except cv2.error as error:  # e.g. OpenCV 5.1 reads no TensorFlow .pb through dnn_superres
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        raise PeerModelError(
            f"OpenCV {cv2.__version__} cannot read {Path(path).name} ({reason[:160]}); OpenCV < 5.1 can"
        ) from None
    sr.setModel(kind, scale)
    return sr


def opencv_upscaler(kind: str, scale: int, path: str | os.PathLike) -> Upscaler:
    """An OpenCV dnn_superres model (`kind` "espcn" or "fsrcnn", a `.pb` file) as an upscaler."""
    sr = opencv_sr(kind, scale, path)

    def upscale(lr: torch.Tensor) -> np.ndarray:
        rgb = quantize_uint8(lr[0]).permute(1, 2, 0).cpu().numpy()
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        return np.ascontiguousarray(sr.upsample(bgr)[..., ::-1])

    return upscale


def model_upscaler(model, tile_size: int | str | None = "auto") -> Upscaler:
    """An `ESPCNForImageSuperResolution` (in eval mode) as an upscaler: `inference.upscale_tensor`, exact
    tiling, the inference path's defaults."""
    from .inference import upscale_tensor

    def upscale(lr: torch.Tensor) -> torch.Tensor:
        return upscale_tensor(model, lr, tile_size=tile_size)

    return upscale


def _is_model(obj) -> bool:
    return isinstance(obj, torch.nn.Module)


def _sync(value) -> None:
    if torch.is_tensor(value) and value.device.type == "cuda":
        torch.cuda.synchronize(value.device)


def _to_uint8_hwc(sr) -> np.ndarray:
    if isinstance(sr, np.ndarray):
        if sr.dtype != np.uint8 or sr.ndim != 3:
            raise TypeError(
                f"an upscaler returning numpy must return uint8 (H, W, 3), got {sr.dtype} {sr.shape}"
            )
        return sr
    return quantize_uint8(sr[0]).permute(1, 2, 0).cpu().numpy()


# ----------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------


def _score_image(sr, hr: torch.Tensor, scale: int, rgb_ssim: bool) -> dict[str, float]:
    # Quantize each image once for both the Y and the RGB scores (psnr_ssim takes uint8 levels as they are).
    sr = torch.from_numpy(sr).permute(2, 0, 1)[None] if isinstance(sr, np.ndarray) else quantize_uint8(sr)
    hr = quantize_uint8(hr.to(sr.device))
    if sr.shape[-2:] != hr.shape[-2:]:
        raise ValueError(f"the upscaler returned {tuple(sr.shape[-2:])}, expected {tuple(hr.shape[-2:])}")
    y = psnr_ssim(sr, hr, scale)
    rgb = psnr_ssim(sr, hr, scale, y_channel=False, with_ssim=rgb_ssim)
    scores = {"psnr_y": float(y.psnr[0]), "ssim_y": float(y.ssim[0]), "psnr_rgb": float(rgb.psnr[0])}
    if rgb_ssim:
        scores["ssim_rgb"] = float(rgb.ssim[0])
    return scores


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return math.fsum(values) / len(values) if values else float("nan")


class _ImageRun(NamedTuple):
    """One image scored by one method (what the processes gather)."""

    index: int
    name: str
    scores: dict[str, float]
    seconds: float
    output: np.ndarray | None  # the uint8 SR image when kept (`keep_outputs`)


def _upscalers(
    methods: Mapping[str, Any], accelerator, tile_size: int | str | None
) -> tuple[dict[str, Upscaler], list[tuple[torch.nn.Module, bool]]]:
    """Each method as an upscaler (models unwrapped and put in eval mode), and the models with the training
    mode to restore afterwards."""
    upscalers: dict[str, Upscaler] = {}
    restore: list[tuple[torch.nn.Module, bool]] = []
    for name, method in methods.items():
        if _is_model(method):
            model = accelerator.unwrap_model(method) if accelerator is not None else method
            restore.append((model, model.training))
            upscalers[name] = model_upscaler(model.eval(), tile_size)
        elif callable(method):
            upscalers[name] = method
        else:
            raise TypeError(f"evaluate: method {name!r} is neither a model nor a callable")
    return upscalers, restore


def _run_image(
    upscale: Upscaler,
    dataset,
    index: int,
    *,
    set_name: str,
    method: str,
    scale: int,
    rgb_ssim: bool,
    keep: set[str],
) -> _ImageRun:
    """Upscale the item `index` of `dataset` (timed) and score it; its output is kept when its name is in
    `keep`. `set_name` and `method` name the image in errors."""
    item = dataset[index]
    image_name = item.get("name", f"{index:04d}")
    lr, hr = item["pixel_values"][None], item["labels"][None]
    start = time.perf_counter()
    with torch.inference_mode():
        sr = upscale(lr)
        _sync(sr)
    seconds = time.perf_counter() - start
    try:
        scores = _score_image(sr, hr, scale, rgb_ssim)
    except ValueError as error:
        raise ValueError(f"{set_name}/{image_name}, {method}: {error}") from None
    kept = _to_uint8_hwc(sr) if image_name in keep else None
    return _ImageRun(index, image_name, scores, seconds, kept)


def _gathered(local: list[_ImageRun], world: int) -> list[_ImageRun]:
    """The runs of every process (of this one alone when `world` is 1), in dataset order."""
    if world > 1:
        from accelerate.utils import gather_object

        local = gather_object(local)
    return sorted(local, key=lambda run: run.index)


def _set_scores(runs: list[_ImageRun], rgb_ssim: bool) -> SetScores:
    """The mean scores of one method on one set, from its image runs in dataset order."""
    per_image = {run.name: run.scores for run in runs}
    return SetScores(
        psnr_y=_mean(s["psnr_y"] for s in per_image.values()),
        ssim_y=_mean(s["ssim_y"] for s in per_image.values()),
        psnr_rgb=_mean(s["psnr_rgb"] for s in per_image.values()),
        ssim_rgb=_mean(s["ssim_rgb"] for s in per_image.values()) if rgb_ssim else None,
        num_images=len(per_image),
        seconds=math.fsum(run.seconds for run in runs),
        per_image=per_image,
    )


def evaluate(
    methods: Mapping[str, Any] | Any,
    sets: Mapping[str, Any],
    scale: int,
    accelerator=None,
    *,
    tile_size: int | str | None = "auto",
    rgb_ssim: bool = False,
    keep_outputs: Mapping[str, Iterable[str]] | None = None,
    on_result: Callable[[str, str, SetScores], None] | None = None,
) -> EvalReport:
    """PSNR/SSIM of each method on each set, under the protocol of `espcn_hf.metrics`.

    Args:
        methods: method name -> a model (`ESPCNForImageSuperResolution`, possibly wrapped by accelerate) or an
            upscaler callable (see the module docstring); a single model or callable is named "model".
        sets: set name -> a dataset of whole images: items `{"pixel_values": LR (3, h, w), "labels": HR
            (3, rh, rw)[, "name": str]}` in [0, 1], e.g. `data.load_benchmark(name, scale=scale)`.
        scale: the SR factor (mod-crop and border crop of the metrics).
        accelerator: an `accelerate.Accelerator`: each process scores every `num_processes`-th image and the
            scores are gathered, so every process gets the report of the whole sets. Models must already sit
            on the process's device. Without it, one process scores everything.
        tile_size: passed to `upscale_tensor` for models.
        rgb_ssim: also SSIM over RGB (`ssim_rgb`; triples the SSIM cost).
        keep_outputs: set name -> image names whose SR outputs (uint8 H x W x 3) are kept in `report.outputs`.
        on_result: called as `on_result(set_name, method, scores)` after each (set, method), e.g. to print.

    Returns:
        `EvalReport` (scale, results, methods; `seconds` is the wall-clock time of this call). A model's
        training/eval mode is restored afterwards.
    """
    if not isinstance(methods, Mapping):
        methods = {"model": methods}
    if not methods:
        raise ValueError("evaluate: no methods given")
    rank, world = (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
    keep = {s: set(names) for s, names in (keep_outputs or {}).items()}
    upscalers, restore = _upscalers(methods, accelerator, tile_size)

    start = time.perf_counter()
    results: dict[str, dict[str, SetScores]] = {}
    outputs: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    try:
        for set_name, dataset in sets.items():
            results[set_name], kept_names = {}, keep.get(set_name, set())
            for method, upscale in upscalers.items():
                local = [
                    _run_image(upscale, dataset, index, set_name=set_name, method=method, scale=scale,
                               rgb_ssim=rgb_ssim, keep=kept_names)
                    for index in range(rank, len(dataset), world)
                ]  # fmt: skip
                runs = _gathered(local, world)
                results[set_name][method] = scores = _set_scores(runs, rgb_ssim)
                kept = {run.name: run.output for run in runs if run.output is not None}
                if kept:
                    outputs.setdefault(set_name, {})[method] = kept
                if on_result is not None:
                    on_result(set_name, method, scores)
    finally:
        for model, training in restore:
            model.train(training)
    return EvalReport(
        scale=scale,
        results=results,
        methods=list(upscalers),
        seconds=time.perf_counter() - start,
        outputs=outputs,
    )


__all__ = [
    "OPENCV_PEERS",
    "EvalReport",
    "EvalReportError",
    "SetScores",
    "Upscaler",
    "bicubic_upscaler",
    "evaluate",
    "format_scores",
    "model_upscaler",
    "opencv_sr",
    "opencv_upscaler",
]
