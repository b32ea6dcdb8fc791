"""The model card of a published checkpoint, rendered from the packaged template (no file or network access
beyond the template it is given).

    card = render_model_card(model.config, repo_id="espcn-hf/espcn-x3", model_name="espcn-x3",
                             reports=[EvalReport.from_json("benchmarks/eval_espcn-x3_x3.json")])
    card.save("README.md")          # or text = str(card)

The card is a `huggingface_hub.ModelCard` made with `ModelCard.from_template`: the template's own front matter
(license, library, pipeline tag, tags, datasets; see the comments in `templates/model_card.md`) plus the generated
`model_name` and `model-index` (`EvalResult` objects from the `EvalReport`s) form the `ModelCardData`; the body's
Jinja placeholders are filled from the config, the results and the training record. Numbers come only from the
reports, which quote the command that produced them. `ModelCard.validate()` needs the Hub; `hub.push_checkpoint`
calls it before uploading.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .evaluation import EvalReport

# The source code of the project (placeholder organisation until the repository is published under it).
SOURCE_URL = "https://github.com/espcn-hf/espcn-hf"
# The packaged template (package data, so that a wheel renders cards without the source checkout).
DEFAULT_TEMPLATE = "templates/model_card.md"
COMPARISON_FILE = "comparison.png"

# Benchmark set -> Hub dataset id (the ids super-image's cards use); sets not listed stay out of `model-index`.
BENCHMARK_DATASETS = {
    "Set5": "eugenesiow/Set5",
    "Set14": "eugenesiow/Set14",
    "BSD100": "eugenesiow/BSD100",
    "Urban100": "eugenesiow/Urban100",
}
# How the evaluation methods are called in the card's table; unknown methods keep their name.
METHOD_LABELS = {
    "bicubic": "Bicubic",
    "opencv-espcn": "OpenCV ESPCN",
    "opencv-fsrcnn": "OpenCV FSRCNN",
    "opencv-fsrcnn-small": "OpenCV FSRCNN-small",
}


@dataclass(frozen=True)
class TrainingSet:
    """A training folder of scripts/train.py (`train_dirs`) as the card names it."""

    label: str  # the set's usual name
    about: str  # what it is: size, authors, year
    source: str  # where its files were copied from (the data folder's SOURCE.txt gives the commit and checks)
    # A Hub dataset holding exactly these images, for the card's `datasets` metadata; None: none is known.
    hub_id: str | None = None


# Known training folders. None of them has a Hub dataset that could be verified to hold exactly these images (T91
# is spread as zip files and Drive links; the BSDS500 splits come from Berkeley's release), so the card names
# them in its Training section and leaves them out of the `datasets` metadata, which takes Hub ids only. Never
# guess an id: a wrong one links the model to someone else's data.
TRAINING_SETS = {
    "T91": TrainingSet(
        "T91",
        "91 images, Yang et al. 2010",
        "https://github.com/jiny2001/dcscn-super-resolution/tree/d382bc30d41c94ac72f8cb148d61cc4864b3b380/data/yang91",
    ),
    "BSD200": TrainingSet(
        "BSD200",
        "the 200 training images of BSDS300, Martin et al. 2001",
        "https://github.com/BIDS/BSDS500/tree/a04b7c6c3a9f0ace74bf205c72a43d32e1c72722/BSDS500/data/images/train",
    ),
    "BSDS500test": TrainingSet(
        "BSDS500 test split",
        "the 200 test images of BSDS500, Arbelaez et al. 2011; no overlap with BSD100",
        "https://github.com/BIDS/BSDS500/tree/a04b7c6c3a9f0ace74bf205c72a43d32e1c72722/BSDS500/data/images/test",
    ),
}


class ModelCardError(ValueError):
    """The card cannot be rendered (bad template, results of another scale); the message says why."""


# ----------------------------------------------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------------------------------------------


def read_template(template: str | os.PathLike | None = None) -> str:
    """The template text: `template` (a path) or the packaged default."""
    if template is None:
        return resources.files("espcn_hf").joinpath(DEFAULT_TEMPLATE).read_text(encoding="utf-8")
    try:
        return Path(template).read_text(encoding="utf-8")
    except OSError as error:
        raise ModelCardError(f"{template}: cannot read the model card template ({error})") from None


def _split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    match = re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL)
    if not match:
        raise ModelCardError("the model card template must start with YAML front matter between '---' lines")
    return yaml.safe_load(match.group(1)) or {}, text[match.end() :]


def eval_results(reports: Sequence[EvalReport], model_name: str) -> list:
    """`huggingface_hub.EvalResult`s (PSNR and SSIM on Y) of `model_name` per benchmark with a Hub dataset id;
    the first report that has a set wins."""
    from huggingface_hub import EvalResult

    results, seen = [], set()
    for report in reports:
        for set_name in report.sets:
            scores = report.scores(set_name, model_name)
            dataset_id = BENCHMARK_DATASETS.get(set_name)
            if scores is None or dataset_id is None or set_name in seen:
                continue
            seen.add(set_name)
            for metric_type, value, label in (
                ("psnr", scores.psnr_y, "PSNR (Y)"),
                ("ssim", scores.ssim_y, "SSIM (Y)"),
            ):
                results.append(
                    EvalResult(
                        task_type="image-super-resolution",
                        task_name="Image Super-Resolution",
                        dataset_type=dataset_id,
                        dataset_name=f"{set_name} - {report.scale}x upscaling",
                        dataset_config=f"bicubic_x{report.scale}",
                        dataset_split="validation",
                        metric_type=metric_type,
                        metric_name=label,
                        metric_value=round(value, 4),
                    )
                )
    return results


def architecture_table(config) -> str:
    """One row per layer: the convolutions and the sub-pixel convolution, computed from the config."""
    r, c = config.upscale_factor, config.num_channels
    widths = [c, *config.hidden_channels, r * r * c]
    rows = ["| # | Layer | Output | Activation |", "|---|---|---|---|"]
    for i, kernel in enumerate(config.kernel_sizes):
        last = i == len(config.kernel_sizes) - 1
        rows.append(
            f"| {i + 1} | conv {kernel}x{kernel}, {widths[i]} → {widths[i + 1]} | {widths[i + 1]} maps at LR size "
            f"| {'none' if last else config.activation} |"
        )
    rows.append(
        f"| {len(config.kernel_sizes) + 1} | sub-pixel convolution (pixel shuffle, r = {r}) | "
        f"{c} channel{'s' if c > 1 else ''} at {r}x size | – |"
    )
    return "\n".join(rows)


def training_section(training_config: Mapping[str, Any] | None, run: Mapping[str, Any] | None = None) -> str:
    """The training facts of a checkpoint: data, schedule and loss from its `training_config.json`, the step of
    the kept weights from its `eval_results.json` (`run`). Free-text notes of the record (such as the commands'
    comments) are not quoted."""
    if not training_config:
        return "The training configuration is not recorded with these weights; see the source repository."
    cfg = training_config
    rows = []
    data, unlisted = [], []
    for name in cfg.get("train_dirs") or []:
        known = TRAINING_SETS.get(name)
        data.append(f"[{known.label}]({known.source}) ({known.about})" if known else name)
        if known is None or known.hub_id is None:
            unlisted.append(known.label if known else name)
    if cfg.get("hub_dataset"):
        data.append(f"[`{cfg['hub_dataset']}`](https://huggingface.co/datasets/{cfg['hub_dataset']})")
    if data:
        rows.append(("Training images", "; ".join(data)))
    notes = [f"`{hub_id}`: in the card's `datasets` metadata" for hub_id in training_datasets(cfg)]
    if unlisted:
        notes.append(
            f"{', '.join(unlisted)}: no Hub dataset is known to hold exactly these images, so the card's "
            "`datasets` metadata (Hub ids only) does not name them"
        )
    if notes:
        rows.append(("On the Hub", "; ".join(notes)))
    if cfg.get("val_sets"):
        rows.append(("Validation (best checkpoint kept)", ", ".join(cfg["val_sets"])))
    if cfg.get("patch_size") and cfg.get("batch_size"):
        rows.append(
            ("Batches", f"{cfg['batch_size']} random {cfg['patch_size']}x{cfg['patch_size']} LR patches")
            if not cfg.get("augment")
            else (
                "Batches",
                f"{cfg['batch_size']} random {cfg['patch_size']}x{cfg['patch_size']} LR patches, flips and rotations",
            )
        )
    if cfg.get("loss"):
        loss = str(cfg["loss"]).upper()
        if cfg.get("finetune_loss") and cfg.get("finetune_fraction"):
            loss += f", then {str(cfg['finetune_loss']).upper()} for the last {cfg['finetune_fraction']:.0%} of the steps"
        rows.append(("Loss", loss))
    if cfg.get("learning_rate") is not None:
        schedule = f"Adam, learning rate {cfg['learning_rate']:g}"
        if cfg.get("lr_schedule"):
            schedule += f", {cfg['lr_schedule']} schedule"
        if cfg.get("warmup_steps"):
            schedule += f" after {cfg['warmup_steps']} warm-up steps"
        if cfg.get("ema_decay"):
            schedule += f"; weights are an exponential moving average (decay {cfg['ema_decay']:g})"
        rows.append(("Optimiser", schedule))
    if cfg.get("mixed_precision") in ("bf16", "fp16"):
        rows.append(("Precision", f"{cfg['mixed_precision']} autocast (weights and optimiser in fp32)"))
    commands = cfg.get("commands") or []
    if len(commands) > 1:
        rows.append(
            (
                "Runs",
                f"{len(commands)}, each after the first starting from the weights of the one before; the rows "
                "above describe the last (`training_config.json` lists every command)",
            )
        )
    if run and run.get("step"):
        rows.append(("Best checkpoint (on the validation sets)", f"step {int(run['step']):,}"))
    if not rows:
        return "The training configuration is not recorded with these weights; see the source repository."
    return "\n".join(["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows)])


def training_datasets(training_config: Mapping[str, Any] | None) -> list[str]:
    """The Hub dataset ids of a checkpoint's training data (`train_dirs` with a known Hub copy, then
    `hub_dataset`), for the card's `datasets` metadata."""
    cfg = training_config or {}
    ids = [TRAINING_SETS[name].hub_id for name in cfg.get("train_dirs") or [] if name in TRAINING_SETS]
    return list(dict.fromkeys(i for i in [*ids, cfg.get("hub_dataset")] if i))


def evaluation_section(
    reports: Sequence[EvalReport], model_name: str, pictures: Mapping[int, str] | None = None
) -> str:
    """The results tables (this model last, in bold), the pictures and the commands that produced them."""
    if not reports:
        return (
            "_This checkpoint has not been evaluated yet: no evaluation results were given when this card was "
            "rendered. Run `scripts/evaluate.py` and render the card again._"
        )
    pictures = pictures or {}
    parts = [
        "PSNR (dB) / SSIM on the luminance channel Y of BT.601 YCbCr, the border of `scale` pixels cropped, "
        "HR images cropped to a multiple of the scale, LR inputs made with MATLAB-style bicubic downscaling "
        "(higher is better).",
        "",
    ]
    for index, report in enumerate(reports):
        order = [m for m in report.methods if m != model_name] + [model_name]
        labels = {**METHOD_LABELS, model_name: f"{model_name} (this model)"}
        parts += [report.to_markdown(order, labels=labels, highlight=model_name, full=False).rstrip(), ""]
        if index in pictures:
            parts += [
                f"![Benchmark crops: HR, bicubic, this model, OpenCV ESPCN]({pictures[index]})",
                "",
                "_One crop per benchmark set, picked by `scripts/evaluate.py` where the detail is densest._",
                "",
            ]
        extra = []
        if report.seconds is not None:
            extra.append(f"{report.seconds:.0f} s")
        extra += [f"{k} {v}" for k, v in report.environment.items() if k in ("torch", "device")]
        command = report.command or "(the results file does not record its command)"
        parts += [
            "Produced by" + (f" ({', '.join(extra)})" if extra else "") + ":",
            "",
            f"```bash\n{command}\n```",
            "",
        ]
    return "\n".join(parts).rstrip()


def comparison_section(caption: str | None, file_name: str = COMPARISON_FILE) -> str:
    if not caption:
        return ""
    return f"![HR crop, bicubic and ESPCN side by side]({file_name})\n\n_{caption}_"


# ----------------------------------------------------------------------------------------------------------------
# The card
# ----------------------------------------------------------------------------------------------------------------


def render_model_card(
    config,
    *,
    repo_id: str,
    model_name: str,
    reports: Sequence[EvalReport] = (),
    template: str | os.PathLike | None = None,
    num_parameters: int | None = None,
    training_config: Mapping[str, Any] | None = None,
    training_run: Mapping[str, Any] | None = None,
    comparison_caption: str | None = None,
    evaluation_pictures: Mapping[int, str] | None = None,
    source_url: str = SOURCE_URL,
    onnx_file: str | None = None,
    onnx_int8: tuple[str, str] | None = None,
):
    """The `huggingface_hub.ModelCard` of one checkpoint.

    Args:
        config: the model's `ESPCNConfig`.
        repo_id: the Hub repository the usage snippets load.
        model_name: the method name of this model in `reports` (its row in the results).
        reports: `EvalReport`s of this model (at its scale), e.g. read from `benchmarks/eval_*.json`.
        template: a template file (default: the packaged `templates/model_card.md`).
        num_parameters: shown in the text.
        training_config / training_run: the checkpoint's `training_config.json` / `eval_results.json`.
        comparison_caption: the caption of `comparison.png` (no picture when None).
        evaluation_pictures: report index -> file name of its benchmark crop picture in the repository.
        source_url: the project's source code.
        onnx_file: the repository path of the ONNX export (e.g. `onnx/model.onnx`), shown with an onnxruntime
            snippet; None: no ONNX section.
        onnx_int8: (repository path of the int8 graph, what it costs: e.g. "0.04 dB on Set5") when the folder
            ships one; named in the ONNX section.

    Raises:
        ModelCardError: results of another scale, an unknown placeholder or a template without front matter.
    """
    import jinja2
    import jinja2.meta
    from huggingface_hub import ModelCard, ModelCardData

    scale = config.upscale_factor
    for report in reports:
        if report.scale != scale:
            raise ModelCardError(
                f"results of {report.name or 'a report'} are at x{report.scale}, but {model_name} is a x{scale} model"
            )
    front, body = _split_front_matter(read_template(template))
    front.pop("model-index", None)
    data = ModelCardData(
        **front, model_name=model_name, eval_results=eval_results(reports, model_name) or None
    )
    data.datasets = list(dict.fromkeys([*(data.datasets or []), *training_datasets(training_config)])) or None

    values = {
        "model_name": model_name,
        "repo_id": repo_id,
        "source_url": source_url,
        "scale": scale,
        "num_layers": len(config.kernel_sizes) + 1,
        "num_convolutions": len(config.kernel_sizes),
        "color_mode": (
            "RGB (the network sees and predicts all three colour channels)"
            if config.num_channels == 3
            else "luminance only, as in the paper (the network upscales the Y channel of YCbCr; CbCr are "
            "upscaled with bicubic)"
        ),
        "activation": config.activation,
        "architecture_table": architecture_table(config),
        "num_parameters": f"{num_parameters:,}" if num_parameters is not None else "–",
        "receptive_field": 2 * config.receptive_field_radius + 1,
        "training_details": training_section(training_config, training_run),
        "evaluation": evaluation_section(reports, model_name, evaluation_pictures),
        "comparison": comparison_section(comparison_caption),
        "onnx": onnx_section(repo_id, onnx_file, scale, onnx_int8),
    }
    unknown = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(body)) - set(values)
    if unknown:
        raise ModelCardError(f"model card template: unknown placeholders {sorted(unknown)}")
    card = ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body, **values)
    return card


def onnx_section(
    repo_id: str, onnx_file: str | None, scale: int, onnx_int8: tuple[str, str] | None = None
) -> str:
    """The card's ONNX usage (onnxruntime in Python; the same file serves transformers.js / onnxruntime-web).
    The snippet is the one `tests/test_onnx.py` runs against `espcn_hf.upscale`."""
    if not onnx_file:
        return ""
    int8 = ""
    if onnx_int8:
        int8 = (
            f"\n`{onnx_int8[0]}` is its int8 version (onnxruntime static quantisation, QDQ, per-channel weights; "
            f"PSNR-Y lost: {onnx_int8[1]}), same input and output.\n"
        )
    return f"""### ONNX (onnxruntime, transformers.js)

`{onnx_file}` takes `pixel_values` (batch, 3, height, width), RGB in [0, 1], and returns `reconstruction`,
{scale}x larger; batch, height and width are dynamic (opset 18).
{int8}
```python
import numpy as np, onnxruntime as ort
from huggingface_hub import hf_hub_download
from PIL import Image

session = ort.InferenceSession(hf_hub_download("{repo_id}", "{onnx_file}"), providers=["CPUExecutionProvider"])
image = np.asarray(Image.open("photo.png").convert("RGB"), dtype=np.float32) / 255
(out,) = session.run(None, {{"pixel_values": image.transpose(2, 0, 1)[None]}})
sr = (np.clip(out[0], 0, 1).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
Image.fromarray(sr).save("photo_x{scale}.png")
```
"""


__all__ = [
    "BENCHMARK_DATASETS",
    "COMPARISON_FILE",
    "METHOD_LABELS",
    "SOURCE_URL",
    "TRAINING_SETS",
    "ModelCardError",
    "TrainingSet",
    "architecture_table",
    "eval_results",
    "evaluation_section",
    "onnx_section",
    "read_template",
    "render_model_card",
    "training_datasets",
    "training_section",
]
