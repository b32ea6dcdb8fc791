"""Publishing a checkpoint to the Hugging Face Hub: the upload folder, its model card, and the push.

    folder = prepare_upload_folder("checkpoints/espcn-x3", "hub/espcn-x3")   # local, no network
    url = push_checkpoint("checkpoints/espcn-x3", "espcn-hf/espcn-x3")       # prepares, then uploads

The upload folder is what a Hub model repository holds: `config.json` (with `auto_map`), `model.safetensors`,
`preprocessor_config.json`, the three code files for `trust_remote_code=True`, a comparison picture and
`README.md`, the model card rendered from the template `model_card.md` at the top of the repository.

Numbers in the card are never typed by hand: they are read from the evaluation JSON files that
`scripts/evaluate.py` writes (`benchmarks/eval_<name>_x<scale>.json`), and the card quotes the command that
produced them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import yaml
from PIL import Image

from .configuration_espcn import ESPCNConfig
from .image_processing_espcn import ESPCNImageProcessor, to_uint8_hwc
from .modeling_espcn import ESPCNForImageSuperResolution

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_CARD_TEMPLATE = REPO_ROOT / "model_card.md"
BENCHMARK_DIR = REPO_ROOT / "benchmarks"

# The files every upload folder must contain (plus README.md and the comparison picture).
REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "configuration_espcn.py",
    "modeling_espcn.py",
    "image_processing_espcn.py",
)
MODEL_AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForImageToImage")
COMPARISON_FILE = "comparison.png"

# How the evaluation methods are called in the card's table; unknown methods keep their JSON name.
METHOD_LABELS = {
    "bicubic": "Bicubic",
    "opencv-espcn": "OpenCV ESPCN",
    "opencv-fsrcnn": "OpenCV FSRCNN",
}
PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


class HubError(RuntimeError):
    """Publishing failed (no token, no network, a bad checkpoint or evaluation file); the message says why."""


# ----------------------------------------------------------------------------------------------------------------
# Evaluation results
# ----------------------------------------------------------------------------------------------------------------


def load_eval_json(path: str | os.PathLike) -> dict:
    """Read one `scripts/evaluate.py` result file and check the fields the card uses."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise HubError(f"{path}: cannot read the evaluation file ({error})") from None
    missing = [key for key in ("name", "scale", "results") if key not in data]
    if missing:
        raise HubError(
            f"{path}: evaluation file lacks {missing} (expected the schema of scripts/evaluate.py)"
        )
    if not isinstance(data["results"], dict) or not data["results"]:
        raise HubError(f"{path}: 'results' must map benchmark names to per-method metrics")
    data.setdefault("methods", sorted({m for metrics in data["results"].values() for m in metrics}))
    data["_path"] = str(path)
    return data


def find_eval_jsons(name: str, scale: int, benchmark_dir: str | os.PathLike | None = None) -> list[Path]:
    """The evaluation files of checkpoint `name` at `scale` in `benchmarks/` (`eval_*_x<scale>.json` whose
    `name` is `name`), newest first."""
    folder = Path(benchmark_dir) if benchmark_dir is not None else BENCHMARK_DIR
    found = []
    for path in folder.glob(f"eval_*_x{scale}.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if data.get("name") == name and data.get("scale") == scale:
            found.append(path)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _metric(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def eval_results(evals: Sequence[dict], model_name: str) -> dict[str, dict[str, dict[str, float]]]:
    """{benchmark: {method: {"psnr_y": .., "ssim_y": ..}}} merged over the evaluation files (the first file that
    has a (benchmark, method) pair wins), benchmarks in first-seen order."""
    merged: dict[str, dict[str, dict]] = {}
    for data in evals:
        for bench, methods in data["results"].items():
            for method, metrics in methods.items():
                merged.setdefault(bench, {}).setdefault(method, metrics)
    return merged


def _method_order(evals: Sequence[dict], model_name: str) -> list[str]:
    order: list[str] = []
    for data in evals:
        for method in data.get("methods", []):
            if method not in order:
                order.append(method)
    for data in evals:
        for methods in data["results"].values():
            for method in methods:
                if method not in order:
                    order.append(method)
    # Baselines first, this model last (bold in the table).
    if model_name in order:
        order.remove(model_name)
        order.append(model_name)
    return order


def format_psnr(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def format_ssim(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def render_eval_table(evals: Sequence[dict], model_name: str) -> str:
    """Markdown table: one row per benchmark, one column per method, cells `PSNR / SSIM` (Y channel)."""
    results = eval_results(evals, model_name)
    # A method without a single number (e.g. a peer that has no x{scale} model) gets no column.
    methods = [
        m for m in _method_order(evals, model_name) if any(m in by_method for by_method in results.values())
    ]
    header = ["Benchmark"] + [
        f"**{m} (this model)**" if m == model_name else METHOD_LABELS.get(m, m) for m in methods
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for bench, by_method in results.items():
        cells = []
        for method in methods:
            metrics = by_method.get(method)
            if metrics is None:
                cells.append("–")
                continue
            cell = f"{format_psnr(_metric(metrics, 'psnr_y'))} / {format_ssim(_metric(metrics, 'ssim_y'))}"
            cells.append(f"**{cell}**" if method == model_name else cell)
        lines.append(f"| {bench} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_index(evals: Sequence[dict], model_name: str, scale: int) -> list[dict]:
    """The `model-index` front matter (Papers-with-Code style) with this model's PSNR/SSIM per benchmark."""
    from huggingface_hub import EvalResult, ModelCardData

    results = []
    for bench, by_method in eval_results(evals, model_name).items():
        metrics = by_method.get(model_name)
        if not metrics:
            continue
        for key, metric_type, label in (("psnr_y", "psnr", "PSNR (Y)"), ("ssim_y", "ssim", "SSIM (Y)")):
            value = _metric(metrics, key)
            if value is None:
                continue
            results.append(
                EvalResult(
                    task_type="image-to-image",
                    task_name=f"Image Super-Resolution x{scale}",
                    dataset_type=bench.lower(),
                    dataset_name=f"{bench} - {scale}x upscaling",
                    dataset_split="test",
                    metric_type=metric_type,
                    metric_name=label,
                    metric_value=round(value, 4),
                )
            )
    if not results:
        return []
    card_data = ModelCardData(model_name=model_name, eval_results=results)
    return card_data.to_dict()["model-index"]


# ----------------------------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------------------------


def _split_front_matter(text: str) -> tuple[dict, str]:
    match = re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL)
    if not match:
        raise HubError("the model card template must start with YAML front matter between '---' lines")
    return yaml.safe_load(match.group(1)) or {}, text[match.end() :]


def architecture_table(config: ESPCNConfig) -> str:
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


def _eval_section(evals: Sequence[dict], model_name: str) -> str:
    if not evals:
        return (
            "_This checkpoint has not been evaluated yet: no `benchmarks/eval_*.json` was found when this card "
            "was rendered. Run `scripts/evaluate.py` and render the card again._"
        )
    parts = [
        "PSNR (dB) / SSIM on the luminance channel Y of BT.601 YCbCr, the border of `scale` pixels cropped, "
        "HR images cropped to a multiple of the scale, LR inputs made with MATLAB-style bicubic downscaling "
        "(higher is better; the best method per row is not necessarily this one).",
        "",
        render_eval_table(evals, model_name),
        "",
    ]
    for data in evals:
        if data.get("_picture"):
            parts += [
                f"![Benchmark crops: HR, bicubic, this model, OpenCV ESPCN]({data['_picture']})",
                "",
                "_One crop per benchmark set, picked by `scripts/evaluate.py` where the detail is densest._",
                "",
            ]
    parts += ["Produced by:", ""]
    for data in evals:
        command = data.get("command") or "(the evaluation file does not record its command)"
        extra = []
        if data.get("seconds") is not None:
            extra.append(f"{float(data['seconds']):.0f} s")
        env = data.get("environment") or {}
        if isinstance(env, dict):
            extra += [f"{k} {v}" for k, v in env.items() if k in ("torch", "transformers", "device", "cpu")]
        parts.append("```bash\n" + command + "\n```")
        parts.append(f"→ `{Path(data['_path']).name}`" + (f" ({', '.join(extra)})" if extra else ""))
        parts.append("")
    return "\n".join(parts).rstrip()


# Files a training run may leave in the checkpoint folder; the first one found is quoted in the card.
TRAINING_RECORD_FILES = (
    "training_config.yaml",
    "training_config.json",
    "train_config.yaml",
    "training_args.json",
)


def training_details(checkpoint: str | os.PathLike | None) -> str:
    """The training record saved next to the weights (quoted verbatim when small), or a pointer to the repo."""
    if checkpoint is not None:
        for name in TRAINING_RECORD_FILES:
            path = Path(checkpoint) / name
            if path.is_file() and path.stat().st_size < 4000:
                language = "yaml" if path.suffix == ".yaml" else "json"
                return f"The training record saved with the weights (`{name}`):\n\n```{language}\n{path.read_text().strip()}\n```"
    return (
        "The exact training command and hyper-parameters are recorded in the source repository (`configs/`)."
    )


def render_model_card(
    config: ESPCNConfig,
    repo_id: str,
    model_name: str,
    evals: Sequence[dict] = (),
    template: str | os.PathLike | None = None,
    comparison_caption: str | None = None,
    num_parameters: int | None = None,
    training: str | None = None,
) -> str:
    """Fill the template `model_card.md` for one checkpoint: front matter (model-index from `evals`) and body
    placeholders `{{ name }}`. Raises `HubError` on an unknown placeholder or an evaluation at another scale."""
    scale = config.upscale_factor
    for data in evals:
        if int(data["scale"]) != scale:
            raise HubError(
                f"{data['_path']}: evaluated at x{data['scale']}, but {model_name} is a x{scale} model"
            )
    text = Path(template or MODEL_CARD_TEMPLATE).read_text()
    front, body = _split_front_matter(text)
    index = model_index(evals, model_name, scale)
    if index:
        front["model-index"] = index
    else:
        front.pop("model-index", None)

    values = {
        "model_name": model_name,
        "repo_id": repo_id,
        "scale": str(scale),
        "num_layers": str(len(config.kernel_sizes) + 1),
        "num_convolutions": str(len(config.kernel_sizes)),
        "color_mode": (
            "RGB (the network sees and predicts all three colour channels)"
            if config.num_channels == 3
            else "luminance only, as in the paper (the network upscales the Y channel of YCbCr; CbCr are "
            "upscaled with bicubic)"
        ),
        "activation": config.activation,
        "loss": config.loss,
        "training_details": training or training_details(None),
        "architecture_table": architecture_table(config),
        "num_parameters": f"{num_parameters:,}" if num_parameters is not None else "–",
        "receptive_field": str(2 * config.receptive_field_radius + 1),
        "evaluation": _eval_section(evals, model_name),
        "comparison": (
            f"![HR crop, bicubic and ESPCN side by side]({COMPARISON_FILE})\n\n_{comparison_caption}_"
            if comparison_caption
            else ""
        ),
    }

    def fill(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise HubError(f"model card template: unknown placeholder {{{{ {key} }}}}")
        return values[key]

    body = PLACEHOLDER.sub(fill, body)
    front_yaml = yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip()
    return f"---\n{front_yaml}\n---\n{body}"


# ----------------------------------------------------------------------------------------------------------------
# The upload folder
# ----------------------------------------------------------------------------------------------------------------


def _sample_for_comparison() -> Path | None:
    from .pretrained import sample_images

    samples = sample_images()
    preferred = [p for p in samples if p.stem == "chart"]
    return (preferred or samples or [None])[0]


def render_comparison(model: ESPCNForImageSuperResolution, out_path: Path, crop: int = 96) -> str | None:
    """HR crop | bicubic | ESPCN on a bundled sample (LR made by MATLAB-style bicubic downscaling), side by side
    and enlarged 2x with nearest neighbour; returns the caption (with the PSNR of both on this crop)."""
    import numpy as np
    import torch

    from .degradation import bicubic_degrade, imresize, quantize
    from .inference import upscale
    from .metrics import psnr

    sample = _sample_for_comparison()
    if sample is None:
        return None
    r = model.config.upscale_factor
    hr_full = Image.open(sample).convert("RGB")
    size = crop - crop % r
    left, top = (hr_full.width - size) // 2, (hr_full.height - size) // 2
    left, top = max(left, 0), max(top, 0)
    hr = hr_full.crop((left, top, left + size, top + size))
    hr_t = torch.from_numpy(np.asarray(hr, dtype=np.float64) / 255.0).permute(2, 0, 1)
    lr_t = bicubic_degrade(hr_t, r)
    lr = Image.fromarray(to_uint8_hwc(lr_t))
    bicubic_t = quantize(imresize(lr_t, scale=r))
    bicubic = Image.fromarray(to_uint8_hwc(bicubic_t))
    espcn = upscale(lr, model, tile_size=None)
    panels = [("HR (ground truth)", hr), (f"Bicubic x{r}", bicubic), (f"ESPCN x{r}", espcn)]
    zoom, label_h = 2, 18
    canvas = Image.new("RGB", (3 * size * zoom + 8, size * zoom + label_h), "white")
    from PIL import ImageDraw

    draw = ImageDraw.Draw(canvas)
    for i, (label, image) in enumerate(panels):
        x = i * (size * zoom + 4)
        canvas.paste(image.resize((size * zoom, size * zoom), Image.Resampling.NEAREST), (x, label_h))
        draw.text((x + 4, 3), label, fill=(0, 0, 0))
    canvas.save(out_path, optimize=True)
    p_bic = psnr(np.asarray(bicubic), np.asarray(hr), scale=r)
    p_sr = psnr(np.asarray(espcn), np.asarray(hr), scale=r)
    return (
        f"{size}x{size} crop of the bundled sample `{sample.name}` (drawn procedurally for this project), "
        f"downscaled x{r} with MATLAB-style bicubic, then upscaled: PSNR-Y {p_bic:.2f} dB (bicubic) vs "
        f"{p_sr:.2f} dB (ESPCN) on this crop. Shown 2x with nearest-neighbour enlargement."
    )


def _check_folder(folder: Path) -> None:
    missing = [f for f in (*REQUIRED_FILES, "README.md") if not (folder / f).is_file()]
    if missing:
        raise HubError(f"{folder}: the upload folder is incomplete, missing {missing}")
    auto_map = json.loads((folder / "config.json").read_text()).get("auto_map", {})
    absent = [c for c in MODEL_AUTO_CLASSES if c not in auto_map]
    processor_map = json.loads((folder / "preprocessor_config.json").read_text()).get("auto_map", {})
    if "AutoImageProcessor" not in processor_map:
        absent.append("AutoImageProcessor")
    if absent:
        raise HubError(f"{folder}: auto_map lacks {absent}; the repo would not load with trust_remote_code")


def prepare_upload_folder(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    eval_json_paths: Sequence[str | os.PathLike] | None = None,
    repo_id: str | None = None,
    template: str | os.PathLike | None = None,
    comparison: bool = True,
) -> Path:
    """Write the folder that is uploaded for `checkpoint` into `out_dir` (created; its old content replaced).

    The model and image processor are loaded and saved again with `save_pretrained`, so the config carries the
    `auto_map` for AutoConfig / AutoModel / AutoModelForImageToImage / AutoImageProcessor and the three code files
    are always there, whatever wrote the checkpoint. `eval_json_paths` default to the evaluation files of this
    checkpoint in `benchmarks/` (see `find_eval_jsons`). `repo_id` only appears in the card's usage examples.
    """
    import espcn_hf  # noqa: F401  (registration: save_pretrained writes auto_map and copies the code files)

    from .inference import CheckpointError, load_model
    from .pretrained import HUB_REPO_IDS, PAPER_HUB_REPO_ID

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    try:
        model = load_model(checkpoint)
    except CheckpointError as error:
        raise HubError(str(error)) from None
    config = model.config
    scale = config.upscale_factor
    model_name = checkpoint.resolve().name
    if repo_id is None:
        repo_id = (
            PAPER_HUB_REPO_ID
            if config.num_channels == 1
            else HUB_REPO_IDS.get(scale, f"espcn-hf/{model_name}")
        )
    if (checkpoint / "preprocessor_config.json").is_file():
        processor = ESPCNImageProcessor.from_pretrained(checkpoint)
    else:
        processor = ESPCNImageProcessor(upscale_factor=scale)
    if eval_json_paths is None:
        eval_json_paths = find_eval_jsons(model_name, scale)[:1]
    evals = [load_eval_json(p) for p in eval_json_paths]

    if out_dir.resolve() == checkpoint.resolve():
        raise HubError("the upload folder must not be the checkpoint folder itself")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)

    # The picture scripts/evaluate.py writes beside its JSON (benchmark crops), when there is one.
    for index, data in enumerate(evals):
        picture = Path(data["_path"]).with_suffix(".png")
        if picture.is_file():
            data["_picture"] = f"evaluation_{index}.png" if index else "evaluation.png"
            shutil.copyfile(picture, out_dir / data["_picture"])
    caption = render_comparison(model, out_dir / COMPARISON_FILE) if comparison else None
    card = render_model_card(
        config,
        repo_id=repo_id,
        model_name=model_name,
        evals=evals,
        template=template,
        comparison_caption=caption,
        num_parameters=sum(p.numel() for p in model.parameters()),
        training=training_details(checkpoint),
    )
    (out_dir / "README.md").write_text(card)
    _check_folder(out_dir)
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
    eval_json_paths: Sequence[str | os.PathLike] | None = None,
    commit_message: str | None = None,
) -> str:
    """Prepare the upload folder (in `folder`, default a fresh temporary folder), then create the Hub repo
    `repo_id` (if needed) and upload the folder to `revision` (a branch, created if needed). Returns the URL of
    the commit.

    The folder is always complete locally before any network access, so when the push fails with `HubError`
    (no token, Hub unreachable, refused) the message names the folder, ready to upload by other means.
    """
    import tempfile

    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    if folder is None:
        folder = tempfile.mkdtemp(prefix=f"espcn-hf-upload-{Path(checkpoint).name}-")
    folder = prepare_upload_folder(
        checkpoint, folder, eval_json_paths=eval_json_paths, repo_id=repo_id
    ).resolve()

    token = token or get_token()
    if not token:
        raise HubError(
            f"no HF token: run `huggingface-cli login` (or `hf auth login`) or set HF_TOKEN. "
            f"The folder is ready at {folder}"
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=commit_message or f"Upload {Path(checkpoint).name} with espcn_hf.hub",
        )
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
    "HubError",
    "REQUIRED_FILES",
    "find_eval_jsons",
    "load_eval_json",
    "model_index",
    "prepare_upload_folder",
    "push_checkpoint",
    "render_eval_table",
    "render_model_card",
]
