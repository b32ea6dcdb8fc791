"""Publishing a checkpoint to the Hugging Face Hub: the upload folder and the push.

    folder = prepare_upload_folder("espcn_hf/weights/espcn-x3", "hub/espcn-x3",
                                   eval_json_paths=["benchmarks/eval_espcn-x3_x3.json"],
                                   comparison_image="../shared/data/benchmarks/Set14/zebra.png")
    url = push_checkpoint("espcn_hf/weights/espcn-x3", "espcn-hf/espcn-x3", ...)   # prepares, then uploads

The upload folder is what a Hub model repository holds: the `save_pretrained` output of the model and its image
processor (weights, config with `auto_map` and `custom_pipelines`, the code files, so that it loads with
`trust_remote_code=True` where espcn_hf is not installed), the model card `README.md` (`espcn_hf.modelcard`), the
comparison picture (`espcn_hf.visualization`) and the benchmark crop pictures found beside the results files.
Nothing here looks for files on its own: the caller names the results files and the photo.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .evaluation import EvalReport, EvalReportError
from .fileio import atomic_write_text, replace_dir
from .image_processing_espcn import ESPCNImageProcessor
from .modelcard import COMPARISON_FILE, ModelCardError, render_model_card
from .modeling_espcn import HUB_PIPELINE_TAG, ESPCNForImageSuperResolution

if TYPE_CHECKING:
    from PIL.Image import Image

# The ONNX export inside an upload folder: the path onnxruntime and transformers.js users look for.
ONNX_FILE = "onnx/model.onnx"
# Its int8 version (transformers.js's name for it), shipped only where the measurement file says it loses at most
# INT8_MAX_LOSS_DB of PSNR-Y on each of INT8_SETS (`int8_verdict`).
QUANTIZED_ONNX_FILE = "onnx/model_quantized.onnx"
INT8_MAX_LOSS_DB = 0.1
INT8_SETS = ("Set5", "Set14")
# Files every upload folder holds besides the code files that config.json names.
REQUIRED_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "README.md")
MODEL_AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForImageToImage")
# The card's `pipeline_tag` is HUB_PIPELINE_TAG; the Hub's generated snippet calls `pipeline(HUB_PIPELINE_TAG, ...,
# trust_remote_code=True)`, which works because `save_pretrained` lists it under `custom_pipelines` of config.json
# (modeling_espcn.CUSTOM_PIPELINES; see the template). `check_upload_folder` insists on it.
# Files a training run leaves beside the weights that the card reads.
TRAINING_CONFIG_FILE = "training_config.json"
TRAINING_RUN_FILE = "eval_results.json"


class HubError(RuntimeError):
    """Publishing failed (no token, no network, a bad checkpoint or results file); the message says why."""


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _code_files(config: dict, processor_config: dict) -> set[str]:
    """The module files `auto_map` and `custom_pipelines` point at ("module.Class" -> module.py)."""
    refs = [*config.get("auto_map", {}).values(), *processor_config.get("auto_map", {}).values()]
    for task in config.get("custom_pipelines", {}).values():
        refs.append(task.get("impl", ""))
    names = set()
    for ref in refs:
        for item in ref if isinstance(ref, (list, tuple)) else [ref]:
            if item and "." in item:
                names.add(item.split("--")[-1].rsplit(".", 1)[0] + ".py")
    return names


def check_upload_folder(folder: str | os.PathLike) -> None:
    """Raise `HubError` unless `folder` is complete: weights, configs with `auto_map`, a custom pipeline for the
    card's `pipeline_tag`, every code file they name, and the card."""
    folder = Path(folder)
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise HubError(f"{folder}: the upload folder is incomplete, missing {missing}")
    config = _read_json(folder / "config.json") or {}
    processor = _read_json(folder / "preprocessor_config.json") or {}
    absent = [c for c in MODEL_AUTO_CLASSES if c not in config.get("auto_map", {})]
    if "AutoImageProcessor" not in processor.get("auto_map", {}):
        absent.append("AutoImageProcessor")
    if absent:
        raise HubError(f"{folder}: auto_map lacks {absent}; the repo would not load with trust_remote_code")
    tasks = config.get("custom_pipelines", {})
    if HUB_PIPELINE_TAG not in tasks:
        raise HubError(f"{folder}: config.json custom_pipelines must list {HUB_PIPELINE_TAG!r}")
    from huggingface_hub import ModelCard

    tag = ModelCard.load(folder / "README.md").data.pipeline_tag
    if tag is not None and tag not in tasks:
        raise HubError(f"{folder}: the card's pipeline_tag {tag!r} is not a custom pipeline of config.json")
    code = sorted(name for name in _code_files(config, processor) if not (folder / name).is_file())
    if code:
        raise HubError(f"{folder}: code files named by config.json are missing: {code}")


def _load(checkpoint) -> tuple[ESPCNForImageSuperResolution, Path | None]:
    if isinstance(checkpoint, ESPCNForImageSuperResolution):
        return checkpoint, None
    from .inference import CheckpointError, load_model

    try:
        return load_model(Path(checkpoint)), Path(checkpoint)
    except (CheckpointError, OSError, ValueError) as error:
        raise HubError(f"{checkpoint}: cannot load the checkpoint ({error})") from None


def int8_measurement(data: dict, model: ESPCNForImageSuperResolution) -> dict | None:
    """The row of the int8 measurement `data` (benchmarks/onnx_int8.json, read) for these very weights
    (`onnx_export.weights_digest`; the last one when measured twice), or None. Whether its recipe is the current
    one is `int8_verdict`'s question."""
    from .onnx_export import weights_digest

    digest = weights_digest(model)
    rows = [row for row in data.get("models", []) if row.get("weights_sha256") == digest]
    return rows[-1] if rows else None


def int8_verdict(results: str | os.PathLike | dict, model: ESPCNForImageSuperResolution) -> tuple[bool, str]:
    """(ship the int8 graph?, why) for `model`, from the measurement file `scripts/benchmark_onnx.py` writes
    (benchmarks/onnx_int8.json, or its dict): yes only when it holds a row for these very weights
    (`onnx_export.weights_digest`), measured with the recipe `quantize_onnx` uses now (`INT8_RECIPE`), that loses
    at most `INT8_MAX_LOSS_DB` of PSNR-Y on each of `INT8_SETS`. The measurement is not repeated at upload time
    (the evaluation takes minutes); the recipe and the calibration data are deterministic, so the file the upload
    quantises is the one measured."""
    from .onnx_export import INT8_RECIPE

    data = results if isinstance(results, dict) else _read_json(Path(results))
    if data is None:
        raise HubError(
            f"{results}: not a readable int8 measurement file (scripts/benchmark_onnx.py writes it)"
        )
    if data.get("recipe") != {key: value for key, value in INT8_RECIPE.items()}:
        return False, "the int8 measurement was made with another recipe than quantize_onnx's: measure again"
    row = int8_measurement(data, model)
    if row is None:
        return False, "no int8 measurement of these weights (scripts/benchmark_onnx.py)"
    lost = row.get("psnr_lost_db", {})
    missing = [name for name in INT8_SETS if not isinstance(lost.get(name), (int, float))]
    if missing:
        return False, f"the int8 measurement lacks {missing}"
    worst = max(lost[name] for name in INT8_SETS)
    summary = ", ".join(f"{lost[name]:.2f} dB on {name}" for name in INT8_SETS)
    if worst > INT8_MAX_LOSS_DB:
        return False, f"int8 loses {summary} (more than {INT8_MAX_LOSS_DB} dB)"
    return True, summary


@dataclass
class _Upload:
    """What an upload folder holds besides the `save_pretrained` output, computed without writing anything."""

    model: ESPCNForImageSuperResolution
    folder: Path | None  # the checkpoint folder (None for a model object)
    card: str  # README.md
    pictures: dict[Path, str]  # benchmark picture -> its name in the repository
    comparison_picture: Image | None  # comparison.png
    int8: tuple[bool, str] | None = None  # int8_verdict, when an int8 measurement file was named


def _plan_upload(
    checkpoint,
    eval_json_paths,
    repo_id,
    template,
    comparison,
    comparison_image,
    comparison_source,
    model_name,
    onnx,
    int8_results=None,
) -> _Upload:
    """The card and pictures of the upload folder of `checkpoint` (the arguments of `prepare_upload_folder`)."""
    model, folder = _load(checkpoint)
    int8 = int8_verdict(int8_results, model) if onnx and int8_results is not None else None
    model_name = model_name or (folder.resolve().name if folder is not None else "espcn")
    repo_id = repo_id or f"espcn-hf/{model_name}"
    try:
        reports = [EvalReport.from_json(path) for path in eval_json_paths]
    except EvalReportError as error:
        raise HubError(str(error)) from None
    pictures, names = {}, {}
    for index, path in enumerate(eval_json_paths):
        picture = Path(path).with_suffix(".png")
        if picture.is_file():
            names[index] = f"evaluation_{index}.png" if index else "evaluation.png"
            pictures[picture] = names[index]
    image = caption = None
    if comparison and comparison_image is not None:
        from PIL import Image

        from .visualization import render_comparison

        photo = Path(comparison_image)
        source = comparison_source or f"`{photo.stem}` of {photo.parent.name}"
        with Image.open(photo) as opened:  # render_comparison converts it to RGB
            result = render_comparison(model, opened, source=source)
        image, caption = result.image, result.caption(model.config.upscale_factor)
    try:
        card = render_model_card(
            model.config,
            repo_id=repo_id,
            model_name=model_name,
            reports=reports,
            template=template,
            num_parameters=sum(p.numel() for p in model.parameters()),
            training_config=_read_json(folder / TRAINING_CONFIG_FILE) if folder else None,
            training_run=_read_json(folder / TRAINING_RUN_FILE) if folder else None,
            comparison_caption=caption,
            evaluation_pictures=names,
            onnx_file=ONNX_FILE if onnx else None,
            onnx_int8=(QUANTIZED_ONNX_FILE, int8[1]) if int8 and int8[0] else None,
        )
    except ModelCardError as error:
        raise HubError(str(error)) from None
    return _Upload(model, folder, str(card), pictures, image, int8)


def render_upload_card(
    checkpoint: str | os.PathLike | ESPCNForImageSuperResolution,
    eval_json_paths: Sequence[str | os.PathLike] = (),
    repo_id: str | None = None,
    template: str | os.PathLike | None = None,
    comparison: bool = True,
    comparison_image: str | os.PathLike | None = None,
    comparison_source: str | None = None,
    model_name: str | None = None,
    onnx: bool = True,
    int8_results: str | os.PathLike | None = None,
) -> str:
    """The text of the model card (`README.md`) that `prepare_upload_folder` writes with the same arguments, without
    writing the folder: what the Hub repository shows (the repository's top-level `model_card.md` is this text for
    the default model). The comparison picture is rendered to compute its caption; no ONNX export is made."""
    return _plan_upload(
        checkpoint,
        eval_json_paths,
        repo_id,
        template,
        comparison,
        comparison_image,
        comparison_source,
        model_name,
        onnx,
        int8_results,
    ).card


def prepare_upload_folder(
    checkpoint: str | os.PathLike | ESPCNForImageSuperResolution,
    out_dir: str | os.PathLike,
    eval_json_paths: Sequence[str | os.PathLike] = (),
    repo_id: str | None = None,
    template: str | os.PathLike | None = None,
    comparison: bool = True,
    comparison_image: str | os.PathLike | None = None,
    comparison_source: str | None = None,
    model_name: str | None = None,
    onnx: bool = True,
    int8_results: str | os.PathLike | None = None,
) -> Path:
    """Write the folder that is uploaded for `checkpoint` into `out_dir` and return it.

    The folder is built beside `out_dir` and renamed into place when complete (its old content is replaced), so
    an interrupted run never leaves a half folder under `out_dir`; the card and pictures go through
    `espcn_hf.fileio`, and every file gets the mode a plain `open()` gives (`fileio.replace_dir`). Tests that need
    the exact Hub repository (e.g. laid out as a Hub cache snapshot) call this with a tiny checkpoint.

    Args:
        checkpoint: a `save_pretrained` folder or a loaded `ESPCNForImageSuperResolution`.
        out_dir: the folder to write.
        eval_json_paths: results files (`EvalReport` JSON) of this model; a `.png` beside one is uploaded as
            its benchmark picture.
        repo_id: the repository the card's snippets load (default `espcn-hf/<model_name>`).
        template: a card template (default: the packaged one).
        comparison: draw `comparison.png` from `comparison_image` (False: no picture).
        comparison_image: a real HR photo for the before/after picture (e.g. a benchmark image).
        comparison_source: how the caption names the photo (default: `<file stem>` of `<parent folder>`).
        model_name: this model's method name in the results (default: the checkpoint folder name).
        onnx: also export `onnx/model.onnx` (dynamic batch/height/width, checked against torch with
            onnxruntime; the layout onnxruntime and transformers.js users look for). Needs the `onnx` extra.
        int8_results: the int8 measurement file (benchmarks/onnx_int8.json); with `onnx`, the folder also holds
            `onnx/model_quantized.onnx` (`onnx_export.quantize_onnx`, calibrated on the training images under the
            data folder) where `int8_verdict` says these weights lose at most 0.1 dB, and the card names it.
    """
    plan = _plan_upload(
        checkpoint,
        eval_json_paths,
        repo_id,
        template,
        comparison,
        comparison_image,
        comparison_source,
        model_name,
        onnx,
        int8_results,
    )
    model, folder = plan.model, plan.folder
    out_dir = Path(out_dir)
    if folder is not None and out_dir.resolve() == folder.resolve():
        raise HubError("the upload folder must not be the checkpoint folder itself")
    processor = (
        ESPCNImageProcessor.from_pretrained(folder)
        if folder is not None and (folder / "preprocessor_config.json").is_file()
        else ESPCNImageProcessor(upscale_factor=model.config.upscale_factor)
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        if onnx:
            from .onnx_export import export_onnx

            export_onnx(model, staging / ONNX_FILE)
            if plan.int8 is not None and plan.int8[0]:
                from .onnx_export import quantize_onnx

                quantize_onnx(staging / ONNX_FILE, staging / QUANTIZED_ONNX_FILE)
        for picture, name in plan.pictures.items():
            shutil.copyfile(picture, staging / name)
        if plan.comparison_picture is not None:
            from .image_io import save_image

            save_image(plan.comparison_picture, staging / COMPARISON_FILE)
        atomic_write_text(staging / "README.md", plan.card)
        check_upload_folder(staging)
        replace_dir(staging, out_dir)  # the old folder (if any) is moved aside first, then removed
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


# ----------------------------------------------------------------------------------------------------------------
# The push
# ----------------------------------------------------------------------------------------------------------------


def _network_error(error: BaseException) -> bool:
    from huggingface_hub.errors import OfflineModeIsEnabled

    if isinstance(error, (OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        return True
    names = {type(e).__name__ for e in (error, error.__cause__, error.__context__) if e is not None}
    return bool(names & {"ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError"})


def push_checkpoint(
    checkpoint: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    folder: str | os.PathLike | None = None,
    eval_json_paths: Sequence[str | os.PathLike] = (),
    commit_message: str | None = None,
    comparison_image: str | os.PathLike | None = None,
    int8_results: str | os.PathLike | None = None,
) -> str:
    """Prepare the upload folder (in `folder`, default a fresh temporary folder), validate its card with the
    Hub, create the repo `repo_id` (if needed) and upload the folder to `revision` (a branch, created if needed).
    Returns the URL of the commit.

    The folder is complete locally before any network access, so when the push fails with `HubError` (no token,
    Hub unreachable, card or push refused) the message names the folder, ready to upload by other means.
    """
    from huggingface_hub import HfApi, ModelCard, get_token
    from huggingface_hub.errors import HfHubHTTPError

    if folder is None:
        folder = tempfile.mkdtemp(prefix=f"espcn-hf-upload-{Path(checkpoint).name}-")
    folder = prepare_upload_folder(
        checkpoint,
        folder,
        eval_json_paths=eval_json_paths,
        repo_id=repo_id,
        comparison_image=comparison_image,
        int8_results=int8_results,
    ).resolve()

    token = token or get_token()
    if not token:
        raise HubError(
            f"no HF token: run `huggingface-cli login` (or `hf auth login`) or set HF_TOKEN. "
            f"The folder is ready at {folder}"
        )
    api = HfApi(token=token)
    try:
        ModelCard.load(folder / "README.md").validate()
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=commit_message or f"Upload {Path(checkpoint).name} with espcn_hf.hub",
        )
    except ValueError as error:  # ModelCard.validate: the Hub refused the card's metadata
        if _network_error(error):
            raise HubError(f"cannot reach the Hub ({error}); the folder is ready at {folder}") from None
        raise HubError(f"the Hub refused the model card: {error}. The folder is ready at {folder}") from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        hint = " (is the token valid and allowed to write to this namespace?)" if status in (401, 403) else ""
        raise HubError(
            f"the Hub refused the push of {repo_id}{hint}: {error}. The folder is ready at {folder}"
        ) from None
    except Exception as error:
        if _network_error(error):
            raise HubError(
                f"cannot reach the Hub ({type(error).__name__}: {error}); the folder is ready at {folder}"
            ) from None
        raise
    return commit.commit_url


__all__ = [
    "COMPARISON_FILE",
    "INT8_MAX_LOSS_DB",
    "ONNX_FILE",
    "QUANTIZED_ONNX_FILE",
    "REQUIRED_FILES",
    "HubError",
    "check_upload_folder",
    "int8_measurement",
    "int8_verdict",
    "prepare_upload_folder",
    "push_checkpoint",
    "render_upload_card",
]
