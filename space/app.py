"""ESPCN super-resolution demo (Gradio Space).

    python space/app.py            # http://127.0.0.1:7860 ; works offline with the bundled checkpoints

Models are loaded lazily, once per scale: from the Hub repo (`espcn_hf.pretrained.HUB_REPO_IDS`, or the repo id
or local folder in ESPCN_HF_REPO_X2 / _X3 / _X4), else, when the Hub cannot be reached, from the bundled
`checkpoints/espcn-x{r}` (ESPCN_HF_CHECKPOINTS points elsewhere). The result panel says which one ran.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

from espcn_hf import ImageLoadError, load_image, upscale
from espcn_hf.degradation import imresize  # MATLAB-compatible bicubic, the degradation of the training data
from espcn_hf.image_processing_espcn import pil_to_rgb_array
from espcn_hf.inference import CheckpointError, load_model
from espcn_hf.pretrained import CHECKPOINT_DIR, HUB_REPO_IDS

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"
SCALES = (2, 3, 4)
# The largest model input: 1 Mpx in, up to 16 Mpx out at x4, a few seconds on a 2-core CPU.
MAX_INPUT_PIXELS = 1_000_000
# The largest upload decoded at all (with "downscale first" it is reduced before the model sees it).
MAX_UPLOAD_PIXELS = 16_000_000
HUB_TIMEOUT_S = 5.0
OUTPUT_MAX_AGE_S = 3600  # per-request output folders older than this are removed


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _bundled_folder(scale: int) -> Path:
    return Path(os.environ.get("ESPCN_HF_CHECKPOINTS", CHECKPOINT_DIR)) / f"espcn-x{scale}"


@functools.lru_cache(maxsize=len(SCALES))
def get_model(scale: int):
    """(model, description) for `scale`, loaded once: the Hub repo (or a local folder from the env var), else
    the bundled checkpoint. Raises `gr.Error` when neither is available."""
    source = os.environ.get(f"ESPCN_HF_REPO_X{scale}", HUB_REPO_IDS[scale])
    problems = []
    if Path(source).is_dir():
        try:
            return load_model(source), f"local folder `{source}`"
        except CheckpointError as error:
            problems.append(str(error))
    elif _hub_offline():
        problems.append("HF_HUB_OFFLINE is set")
    else:
        try:
            from huggingface_hub import HfApi

            HfApi().model_info(source, timeout=HUB_TIMEOUT_S)  # a quick reachability check
            return load_model(source), f"Hub repo [`{source}`](https://huggingface.co/{source})"
        except Exception as error:  # no network, DNS failure, 404, ...: fall back to the bundled weights
            problems.append(f"the Hub repo `{source}` cannot be reached ({type(error).__name__})")
    bundled = _bundled_folder(scale)
    if (bundled / "config.json").is_file():
        try:
            return load_model(bundled), f"bundled checkpoint `{bundled.name}` ({'; '.join(problems)})"
        except CheckpointError as error:
            problems.append(str(error))
    else:
        problems.append(f"no bundled checkpoint at {bundled}")
    raise gr.Error(f"No x{scale} model is available: {'; '.join(problems) or 'no bundled checkpoint'}.")


# ----------------------------------------------------------------------------------------------------------------
# The handler
# ----------------------------------------------------------------------------------------------------------------


def _to_8bit(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, or RGBA when the image has transparency (16-bit, float, palette, CMYK...)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    rgb = Image.fromarray((pil_to_rgb_array(image) * 255.0).round().astype(np.uint8))
    if has_alpha:
        rgb.putalpha(image.convert("RGBA").getchannel("A"))
    return rgb


def _bicubic(image: Image.Image, factor: float, size: tuple[int, int] | None = None) -> Image.Image:
    """MATLAB-style bicubic resize (antialiased when reducing) of an 8-bit RGB/RGBA image."""
    width, height = image.size
    out_w, out_h = size or (round(width * factor), round(height * factor))
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    resized = imresize(array, scale=factor, output_size=(out_h, out_w))
    values = (resized.clamp(0, 1) * 255.0 + 0.5).floor().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(values))


def _output_dir() -> Path:
    """A fresh folder per request under the system temp dir (old ones are removed)."""
    root = Path(tempfile.gettempdir()) / "espcn-space-outputs"
    root.mkdir(exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        try:
            if now - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(dir=root))


def _psnr_y(a: Image.Image, b: Image.Image, scale: int) -> float | None:
    try:
        from espcn_hf.metrics import psnr
    except ImportError:  # pragma: no cover
        return None
    return psnr(a.convert("RGB"), b.convert("RGB"), scale=scale)


def super_resolve(image, scale, downscale_first: bool = False):
    """Upscale `image` (a path, bytes or PIL image) by `scale` with ESPCN.

    Returns ((bicubic_path, espcn_path), info_markdown, espcn_path): the pair for the slider (bicubic upscaling of
    the same input against ESPCN), a summary, and the full-resolution PNG to download. With `downscale_first`, the
    image is first reduced by `scale` with MATLAB-style bicubic, making a real low-resolution input, and the
    result is compared with the original. Problems raise `gr.Error` with a message for the user.
    """
    if image is None:
        raise gr.Error("Upload an image (or pick an example) first.")
    try:
        scale = int(str(scale).lstrip("x"))
    except ValueError:
        raise gr.Error(f"Scale must be one of x2, x3, x4, got {scale!r}.") from None
    if scale not in SCALES:
        raise gr.Error(f"Scale must be one of x2, x3, x4, got x{scale}.")
    try:
        original = load_image(image, max_pixels=MAX_UPLOAD_PIXELS)
        original = _to_8bit(original)
    except ImageLoadError as error:
        raise gr.Error(f"This file cannot be used as an image: {error}") from None
    except Exception as error:  # anything else Pillow may raise while converting an odd file
        raise gr.Error(f"This image cannot be processed ({type(error).__name__}: {error}).") from None

    notes = []
    if downscale_first:
        width, height = original.size
        width, height = width - width % scale, height - height % scale
        if width < 2 * scale or height < 2 * scale:
            raise gr.Error(f"The image is too small to downscale by {scale} first.")
        original = original.crop((0, 0, width, height))  # a multiple of the scale, as in the benchmarks
        lr = _bicubic(original, 1 / scale, (width // scale, height // scale))
        notes.append(
            f"Downscaled first: {width}×{height} → {lr.width}×{lr.height} (MATLAB-style bicubic), "
            "so the result can be compared with the original."
        )
    else:
        lr = original
    pixels = lr.width * lr.height
    if pixels > MAX_INPUT_PIXELS:
        raise gr.Error(
            f"The input is {lr.width}×{lr.height} = {pixels:,} pixels; this demo upscales inputs of up to "
            f"{MAX_INPUT_PIXELS:,} pixels (about 1000×1000). Crop it, or tick “downscale first”."
        )

    model, source = get_model(scale)
    start = time.perf_counter()
    with torch.inference_mode():
        result = upscale(lr, model)
    model_ms = (time.perf_counter() - start) * 1000.0
    bicubic = _bicubic(lr, scale)

    folder = _output_dir()
    espcn_path, bicubic_path = folder / f"espcn_x{scale}.png", folder / f"bicubic_x{scale}.png"
    result.save(espcn_path, compress_level=3)
    bicubic.save(bicubic_path, compress_level=3)

    info = [
        f"**x{scale}**: {lr.width}×{lr.height} → **{result.width}×{result.height}** pixels, "
        f"model time **{model_ms:.0f} ms** (CPU, {torch.get_num_threads()} threads).",
        f"Model: {source}.",
    ]
    if downscale_first:
        p_bic, p_sr = _psnr_y(bicubic, original, scale), _psnr_y(result, original, scale)
        if p_bic is not None:
            info.append(f"PSNR-Y against the original: bicubic {p_bic:.2f} dB, ESPCN {p_sr:.2f} dB.")
    info += notes
    info.append("Slider: left bicubic, right ESPCN.")
    return (str(bicubic_path), str(espcn_path)), "\n\n".join(info), str(espcn_path)


# ----------------------------------------------------------------------------------------------------------------
# The UI
# ----------------------------------------------------------------------------------------------------------------


class _ImageInput(gr.Image):
    """gr.Image whose upload preprocessing turns an unreadable file into a friendly message, not an error 500."""

    def get_block_name(self) -> str:
        return "image"

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception as error:
            raise gr.Error(f"This file cannot be used as an image ({type(error).__name__}).") from None


def build_demo() -> gr.Blocks:
    examples = [
        [str(EXAMPLES_DIR / "test_chart.png"), 3, True],
        [str(EXAMPLES_DIR / "julia.png"), 2, True],
        [str(EXAMPLES_DIR / "landscape.png"), 4, False],
    ]
    examples = [e for e in examples if Path(e[0]).is_file()]
    with gr.Blocks(title="ESPCN super-resolution") as demo:
        gr.Markdown(
            "# ESPCN super-resolution\n"
            "Upscale an image x2, x3 or x4 with ESPCN (Shi et al. 2016), a small network whose convolutions all "
            "run at low resolution before a sub-pixel convolution. Drag the slider to compare with bicubic. "
            "Tick **downscale first** to turn a sharp photo into a real low-resolution input and see how much "
            f"of it comes back. Inputs up to {MAX_INPUT_PIXELS:,} pixels."
        )
        with gr.Row():
            with gr.Column():
                image_in = _ImageInput(
                    label="Input image",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    elem_id="input-image",
                )
                scale_in = gr.Radio(
                    choices=[("x2", 2), ("x3", 3), ("x4", 4)], value=3, label="Scale", elem_id="scale"
                )
                downscale_in = gr.Checkbox(
                    value=False,
                    label="Downscale first",
                    info="Reduce the image by the scale (MATLAB-style bicubic) to make a real low-resolution input",
                )
                run = gr.Button("Super-resolve", variant="primary", elem_id="run")
                if examples:
                    gr.Examples(examples=examples, inputs=[image_in, scale_in, downscale_in])
            with gr.Column():
                slider = gr.ImageSlider(
                    label="Bicubic ↔ ESPCN", type="filepath", format="png", elem_id="result-slider"
                )
                info = gr.Markdown(elem_id="info")
                download = gr.File(label="Full-resolution PNG", elem_id="download")
        run.click(
            super_resolve,
            inputs=[image_in, scale_in, downscale_in],
            outputs=[slider, info, download],
            api_name="super_resolve",
        )
    # CPU inference: two requests at a time on a 2-core machine, up to 64 waiting, none dropped silently.
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


def main() -> None:
    demo = build_demo()
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        allowed_paths=[str(EXAMPLES_DIR)],
    )


if __name__ == "__main__":
    main()
