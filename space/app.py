"""ESPCN super-resolution demo (Gradio Space).

    python space/app.py            # http://127.0.0.1:7860 ; works offline with the packaged weights

Two tabs: an image (x2/x3/x4, a bicubic-vs-ESPCN slider, optional "downscale first" with PSNR/SSIM against the
original) and a short video clip (espcn_hf.upscale_video: frame rate, timestamps and audio kept).

Models are loaded lazily, once per scale: the Hub repo (`espcn_hf.pretrained.HUB_REPO_IDS`, or the repo id or local
folder in ESPCN_HF_REPO_X2 / _X3 / _X4) through the normal `from_pretrained` cache, else the weights packaged with
espcn-hf. The result panel says which one ran, in one neutral line; the reason for a fallback goes to the log.

Resource bounds (a public demo on a small CPU machine):
- uploads over MAX_FILE_SIZE are refused by the server before they are stored;
- an image whose header says it is over MAX_INPUT_PIXELS (or MAX_UPLOAD_PIXELS with "downscale first") is refused
  before its pixels are decoded;
- video clips over MAX_VIDEO_SECONDS, MAX_VIDEO_FRAMES or 480p are refused from the container's metadata;
- two image requests and one video run at a time, at most QUEUE_SIZE wait;
- the per-request output folders live OUTPUT_MAX_AGE_S seconds (long enough for gradio to copy the results into its
  cache), and gradio's cache (uploads and results) is swept every DELETE_CACHE[0] s of files older than
  DELETE_CACHE[1] s, so the disk in use is bounded by the request rate times that age.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from espcn_hf import ImageLoadError, load_image, upscale
from espcn_hf.degradation import imresize  # MATLAB-compatible bicubic, the degradation of the training data
from espcn_hf.fileio import atomic_save
from espcn_hf.image_processing_espcn import output_mode, pil_to_rgb_array
from espcn_hf.metrics import psnr_ssim, quantize_uint8
from espcn_hf.pretrained import HUB_REPO_IDS, CheckpointError, load_model, packaged_weights, resolve_model
from espcn_hf.video import VideoError, is_video, probe_video, upscale_video

logger = logging.getLogger("espcn_space")

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"
SCALES = (2, 3, 4)
# The largest model input: 1 Mpx in, up to 16 Mpx out at x4, a few seconds on a 2-core CPU.
MAX_INPUT_PIXELS = 1_000_000
# The largest upload accepted with "downscale first" (reduced by the scale before the model sees it).
MAX_UPLOAD_PIXELS = 16_000_000
# The largest upload the server stores at all (a 16 Mpx photo is 3-10 MB as JPEG, up to ~20 MB as PNG).
MAX_FILE_SIZE = "20mb"
MAX_FILE_BYTES = 20 * 1024 * 1024
QUEUE_SIZE = 64
OUTPUT_MAX_AGE_S = 120
OUTPUT_ROOT = Path(
    os.environ.get("ESPCN_SPACE_OUTPUT_DIR") or Path(tempfile.gettempdir()) / "espcn-space-outputs"
)
DELETE_CACHE = (60, 600)  # every minute, delete gradio's cached uploads and results older than 10 minutes

# Video tab: short clips only (decode + ESPCN + H.264 encode of every frame runs on the CPU).
MAX_VIDEO_SECONDS = 10
MAX_VIDEO_FRAMES = 300
MAX_VIDEO_SIZE = (854, 480)  # 480p: long side <= 854, short side <= 480 (either orientation)
MAX_VIDEO_OUTPUT = (
    1920,
    1080,
)  # 1080p out, the paper's real-time setting: x4 only up to 480x270, x3 up to 640x360

PAPER_URL = "https://arxiv.org/abs/1609.05158"
CODE_URL = "https://github.com/espcn-hf/espcn-hf"

# Real photos from the standard benchmark sets (sources and licences in README.md), with readable labels.
EXAMPLES = [
    ("set5_bird.png", 3, True, "Bird (Set5) · x3 of a downscaled copy"),
    ("set5_butterfly.png", 4, True, "Butterfly (Set5) · x4 of a downscaled copy"),
    ("bsd100_3096.png", 3, True, "Airplane (BSD100) · x3 of a downscaled copy"),
    ("set14_comic.png", 2, False, "Comic (Set14) · x2 as it is"),
]


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


_REPO_ID = re.compile(r"\b(espcn-hf/[\w.-]+)")


def _model_line(source: str) -> str:
    """espcn_hf's neutral source line as Markdown for visitors: repo ids linked, no server paths."""
    line = _public(source.removeprefix("model: "))
    return "Model: " + _REPO_ID.sub(lambda m: f"[{m.group(1)}](https://huggingface.co/{m.group(1)})", line)


@functools.lru_cache(maxsize=len(SCALES))
def get_model(scale: int):
    """(model, one neutral line saying which weights run) for `scale`, loaded once by `resolve_model`: the Hub repo
    (or a repo id / local folder from ESPCN_HF_REPO_X{scale}) through the normal `from_pretrained` cache, else the
    weights packaged with espcn_hf. Raises `gr.Error` when nothing loads; causes go to the log, not to visitors."""
    override = os.environ.get(f"ESPCN_HF_REPO_X{scale}")
    try:
        model, source = resolve_model(override, scale)
        return model, _model_line(source)
    except CheckpointError as error:
        logger.warning("x%d: %s", scale, error)
    if override is not None:  # an explicit model that does not load: the packaged one still serves visitors
        try:
            folder = packaged_weights(scale)
            return load_model(folder), f"Model: the weights packaged with espcn-hf ({folder.name})"
        except CheckpointError as error:
            logger.error("x%d: %s", scale, error)
    raise gr.Error(f"The x{scale} model is not available at the moment. Please try another scale.")


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------


def _to_8bit(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit L, LA, RGB or RGBA: grayscale stays grayscale (so ESPCN gives it back untinted),
    transparency is kept, 16-bit / float / palette / CMYK images are converted."""
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image
    mode = output_mode(image)  # the mode rule of espcn_hf.upscale: grayscale stays grayscale, alpha is kept
    values = quantize_uint8(pil_to_rgb_array(image))
    converted = Image.fromarray(values[..., 0] if mode in ("L", "LA", "I;16") else values)
    if mode in ("LA", "RGBA"):
        converted.putalpha(image.convert("RGBA").getchannel("A"))
    return converted


def _bicubic(image: Image.Image, factor: float, size: tuple[int, int] | None = None) -> Image.Image:
    """MATLAB-style bicubic resize (antialiased when reducing) of an 8-bit L/LA/RGB/RGBA image."""
    width, height = image.size
    out_w, out_h = size or (round(width * factor), round(height * factor))
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[..., None]
    resized = imresize(torch.from_numpy(array).permute(2, 0, 1), scale=factor, output_size=(out_h, out_w))
    values = quantize_uint8(resized.permute(1, 2, 0)).numpy()
    return Image.fromarray(np.ascontiguousarray(values[..., 0] if values.shape[-1] == 1 else values))


_PATH = re.compile(r"(?:[A-Za-z]:)?[\\/](?:[^\s'\"\\/:]+[\\/])+([^\s'\"\\/:]*)")


def _public(message: str) -> str:
    """`message` without server paths (a path becomes its file name)."""
    return _PATH.sub(lambda m: m.group(1) or "the file", message)


def _read_upload(image) -> bytes | Image.Image:
    """The upload as bytes (or the PIL image itself), with the file-size limit of the server applied."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    else:
        path = Path(image)
        if not path.is_file():
            raise gr.Error("The upload could not be found on the server; please upload it again.")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise gr.Error(f"The file is over the upload limit of {MAX_FILE_SIZE.upper()}.")
        data = path.read_bytes()
    if len(data) > MAX_FILE_BYTES:
        raise gr.Error(f"The file is over the upload limit of {MAX_FILE_SIZE.upper()}.")
    return data


def _header_size(data: bytes | Image.Image) -> tuple[int, int]:
    """Width and height from the image header alone (Pillow decodes no pixels in `Image.open`)."""
    if isinstance(data, Image.Image):
        return data.size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                return header.size
    except Image.DecompressionBombError:
        raise gr.Error(f"The image is far over the limit of {MAX_UPLOAD_PIXELS:,} pixels.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise gr.Error(
            "This file cannot be used as an image: not an image file, or a format Pillow cannot read."
        ) from None


def load_upload(image, scale: int, downscale_first: bool) -> Image.Image:
    """Check the upload's size from its header (refusing it before decoding), then decode it to 8-bit RGB(A)."""
    data = _read_upload(image)
    width, height = _header_size(data)
    pixels = width * height
    if downscale_first and pixels > MAX_UPLOAD_PIXELS:
        raise gr.Error(
            f"The image is {width}×{height} = {pixels:,} pixels, over the limit of {MAX_UPLOAD_PIXELS:,} pixels "
            "for “downscale first”. Please resize or crop it first."
        )
    if downscale_first and (width // scale) * (height // scale) > MAX_INPUT_PIXELS:
        raise gr.Error(
            f"Even downscaled by {scale}, the input would be {width // scale}×{height // scale} pixels, over the "
            f"limit of {MAX_INPUT_PIXELS:,} pixels. Please pick a larger scale or a smaller image."
        )
    if not downscale_first and pixels > MAX_INPUT_PIXELS:
        raise gr.Error(
            f"The input is {width}×{height} = {pixels:,} pixels; this demo upscales inputs of up to "
            f"{MAX_INPUT_PIXELS:,} pixels (about 1000×1000). Crop it, or tick “downscale first”."
        )
    try:
        # bytes, not the path: the loader's messages then name no server file
        return _to_8bit(load_image(data, max_pixels=MAX_UPLOAD_PIXELS))
    except ImageLoadError as error:
        reason = re.sub(r"^image: ", "", str(error))
        raise gr.Error(f"This file cannot be used as an image: {_public(reason)}") from None
    except Exception as error:  # anything else Pillow may raise while converting an odd file
        logger.warning("cannot convert an upload: %r", error)
        raise gr.Error("This image cannot be processed (an unusual or damaged file).") from None


def _output_dir() -> Path:
    """A fresh folder per request. Gradio copies the results into its own cache as soon as the handler returns, so
    folders older than OUTPUT_MAX_AGE_S are removed at each request."""
    root = OUTPUT_ROOT
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        try:
            if now - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(dir=root))


# ----------------------------------------------------------------------------------------------------------------
# The handler
# ----------------------------------------------------------------------------------------------------------------


def _parse_scale(scale) -> int:
    try:
        value = int(str(scale).lstrip("x"))
    except ValueError:
        raise gr.Error(f"Scale must be one of x2, x3, x4, got {str(scale)[:20]!r}.") from None
    if value not in SCALES:
        raise gr.Error(f"Scale must be one of x2, x3, x4, got x{value}.")
    return value


def super_resolve(image, scale, downscale_first: bool = False):
    """Upscale `image` (a path, bytes or PIL image) by `scale` with ESPCN.

    Returns ((bicubic_path, espcn_path), info_markdown, espcn_path): the pair for the slider (bicubic upscaling of
    the same input against ESPCN), a summary, and the full-resolution PNG to download. With `downscale_first`, the
    image is first reduced by `scale` with MATLAB-style bicubic, making a real low-resolution input, and the
    result is compared with the original. Problems raise `gr.Error` with a message for the visitor.
    """
    if image is None:
        raise gr.Error("Upload an image (or pick an example) first.")
    scale = _parse_scale(scale)
    original = load_upload(image, scale, downscale_first)

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

    model, source = get_model(scale)
    start = time.perf_counter()
    with torch.inference_mode():
        result = upscale(lr, model)
    model_ms = (time.perf_counter() - start) * 1000.0
    bicubic = _bicubic(lr, scale)

    folder = _output_dir()
    espcn_path, bicubic_path = folder / f"espcn_x{scale}.png", folder / f"bicubic_x{scale}.png"
    atomic_save(espcn_path, lambda tmp: result.save(tmp, format="PNG", compress_level=3))
    atomic_save(bicubic_path, lambda tmp: bicubic.save(tmp, format="PNG", compress_level=3))

    info = [
        f"**x{scale}**: {lr.width}×{lr.height} → **{result.width}×{result.height}** pixels, "
        f"model time **{model_ms:.0f} ms** (CPU, {torch.get_num_threads()} threads).",
        f"{source}.",
    ]
    if downscale_first:
        hr = original.convert("RGB")
        bic = psnr_ssim(bicubic.convert("RGB"), hr, scale)
        sr = psnr_ssim(result.convert("RGB"), hr, scale)
        info.append(
            f"PSNR-Y / SSIM-Y against the original: bicubic {float(bic.psnr):.2f} dB / {float(bic.ssim):.4f}, "
            f"ESPCN **{float(sr.psnr):.2f} dB / {float(sr.ssim):.4f}**."
        )
    info += notes
    info.append("Slider: left bicubic, right ESPCN.")
    return (str(bicubic_path), str(espcn_path)), "\n\n".join(info), str(espcn_path)


def _video_seconds(probe) -> float | None:
    """The clip's duration from its container (`probe_video`), else frames / rate; None when neither says."""
    if probe.duration:
        return probe.duration
    return probe.frames / float(probe.rate) if probe.frames and probe.rate else None


def super_resolve_video(video, scale, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (gradio's idiom)
    """Upscale a short clip (at most MAX_VIDEO_SECONDS, MAX_VIDEO_FRAMES frames, 480p) with ESPCN, frame by frame,
    keeping frame rate, timestamps and audio (espcn_hf.upscale_video). Returns (video_path, info_markdown)."""
    if video is None:
        raise gr.Error("Upload a video first.")
    scale = _parse_scale(scale)
    path = str(video)
    if not Path(path).is_file():
        raise gr.Error("The upload could not be found on the server; please upload it again.")
    try:
        probe = probe_video(path)
    except VideoError as error:
        reason = str(error).split(": ", 1)[-1]
        raise gr.Error(f"This file cannot be used as a video: {_public(reason)}.") from None
    if not is_video(path):
        raise gr.Error("This file cannot be used as a video: it is a still image. Use the Image tab for it.")
    short, long = sorted((probe.width, probe.height))
    if long > MAX_VIDEO_SIZE[0] or short > MAX_VIDEO_SIZE[1]:
        raise gr.Error(
            f"The video is {probe.width}×{probe.height}; this demo takes clips of up to 480p "
            f"({MAX_VIDEO_SIZE[0]}×{MAX_VIDEO_SIZE[1]}, either orientation). Please resize it first."
        )
    if long * scale > MAX_VIDEO_OUTPUT[0] or short * scale > MAX_VIDEO_OUTPUT[1]:
        fits = [
            f"x{s}" for s in SCALES if long * s <= MAX_VIDEO_OUTPUT[0] and short * s <= MAX_VIDEO_OUTPUT[1]
        ]
        raise gr.Error(
            f"x{scale} of {probe.width}×{probe.height} would be {probe.width * scale}×{probe.height * scale}; this "
            f"demo's video output is at most 1080p ({MAX_VIDEO_OUTPUT[0]}×{MAX_VIDEO_OUTPUT[1]}). "
            + (f"Pick {' or '.join(fits)}." if fits else "Please resize the clip first.")
        )
    seconds = _video_seconds(probe)
    if seconds is None or seconds > MAX_VIDEO_SECONDS + 0.05 or probe.frames > MAX_VIDEO_FRAMES:
        length = f"{seconds:.1f} s" if seconds is not None else "of unknown length"
        raise gr.Error(
            f"The clip is {length}"
            + (f" ({probe.frames} frames)" if probe.frames else "")
            + f"; this demo takes clips of up to {MAX_VIDEO_SECONDS} s and {MAX_VIDEO_FRAMES} frames. "
            "Please trim it first."
        )

    model, source = get_model(scale)
    folder = _output_dir()
    start = time.perf_counter()
    notes = []
    try:
        try:
            out = upscale_video(path, folder / f"espcn_x{scale}.mp4", model, scale=scale, progress=True)
        except VideoError as error:
            if "audio" not in str(error):
                raise
            # an audio codec MP4 cannot hold (e.g. Vorbis): Matroska keeps it unchanged
            out = upscale_video(path, folder / f"espcn_x{scale}.mkv", model, scale=scale, progress=True)
            notes.append(
                "The audio track needs a Matroska (.mkv) file; download it if your browser does not play it."
            )
    except VideoError as error:
        raise gr.Error(f"This video cannot be processed: {_public(str(error).split(': ', 1)[-1])}.") from None
    elapsed = time.perf_counter() - start
    frames = out.frames or probe.frames
    rate = f" at {float(probe.rate):.3g} fps" if probe.rate else ""
    info = [
        f"**x{scale}**: {probe.width}×{probe.height} → **{out.width}×{out.height}**, {frames} frames{rate}, "
        f"in **{elapsed:.1f} s** ({frames / elapsed:.1f} frames/s: decode, ESPCN and H.264 encode on the CPU, "
        f"{torch.get_num_threads()} threads).",
        f"{source}.",
        "Audio copied unchanged." if probe.audio_codecs else "No audio track.",
        *notes,
    ]
    return out.path, "\n\n".join(info)


# ----------------------------------------------------------------------------------------------------------------
# The UI
# ----------------------------------------------------------------------------------------------------------------


class _ImageInput(gr.Image):
    """gr.Image whose upload preprocessing turns an unreadable file into a friendly message, not an error 500.
    (With type="filepath" gradio only opens the header here; the pixels are decoded in the handler.)"""

    def get_block_name(self) -> str:
        return "image"

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Image.DecompressionBombError:
            raise gr.Error(f"The image is far over the limit of {MAX_UPLOAD_PIXELS:,} pixels.") from None
        except Exception as error:
            logger.info("unreadable upload: %r", error)
            raise gr.Error("This file cannot be used as an image.") from None


def _intro() -> str:
    models = " · ".join(f"[x{s}](https://huggingface.co/{HUB_REPO_IDS[s]})" for s in SCALES)
    return (
        "# ESPCN super-resolution\n"
        "Upscale an image x2, x3 or x4 with ESPCN (Shi et al. 2016), a small network whose convolutions all "
        "run at low resolution before a sub-pixel convolution. Drag the slider to compare with bicubic. "
        "Tick **downscale first** to turn a sharp photo into a real low-resolution input and see how much "
        f"of it comes back. Images up to {MAX_INPUT_PIXELS:,} pixels; short clips on the **Video** tab.\n\n"
        f"Models: {models} · Paper: [arXiv 1609.05158]({PAPER_URL}) · Code: [espcn-hf]({CODE_URL})"
    )


def build_demo() -> gr.Blocks:
    examples = [(EXAMPLES_DIR / name, s, d, label) for name, s, d, label in EXAMPLES]
    examples = [e for e in examples if e[0].is_file()]
    with gr.Blocks(title="ESPCN super-resolution", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(_intro(), elem_id="intro")
        with gr.Tabs():
            with gr.Tab("Image", id="image"), gr.Row():
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
                        info="Reduce the image by the scale (MATLAB-style bicubic) to make a real "
                        "low-resolution input",
                        elem_id="downscale",
                    )
                    run = gr.Button("Super-resolve", variant="primary", elem_id="run")
                    if examples:
                        gr.Examples(
                            examples=[[str(path), s, d] for path, s, d, _ in examples],
                            example_labels=[label for *_, label in examples],
                            inputs=[image_in, scale_in, downscale_in],
                            label="Examples (photos from Set5, Set14 and BSD100)",
                            cache_examples=False,
                        )
                with gr.Column():
                    slider = gr.ImageSlider(
                        label="Bicubic ↔ ESPCN", type="filepath", format="png", elem_id="result-slider"
                    )
                    info = gr.Markdown(elem_id="info")
                    download = gr.File(label="Full-resolution PNG", elem_id="download")
            with gr.Tab("Video", id="video"):
                gr.Markdown(
                    f"Short clips: up to {MAX_VIDEO_SECONDS} s, {MAX_VIDEO_FRAMES} frames and 480p in "
                    f"({MAX_VIDEO_SIZE[0]}×{MAX_VIDEO_SIZE[1]}), 1080p out (x4 up to 480×270, x3 up to 640×360). "
                    "Every frame goes through ESPCN; frame rate, timestamps and audio are kept; the result is "
                    "H.264 MP4. Everything runs on the CPU at a few frames per second: a 3 s clip takes about "
                    "half a minute."
                )
                with gr.Row():
                    with gr.Column():
                        video_in = gr.Video(label="Input video", sources=["upload"], elem_id="input-video")
                        video_scale_in = gr.Radio(
                            choices=[("x2", 2), ("x3", 3), ("x4", 4)],
                            value=2,
                            label="Scale",
                            elem_id="video-scale",
                        )
                        run_video = gr.Button("Super-resolve video", variant="primary", elem_id="run-video")
                    with gr.Column():
                        video_out = gr.Video(label="ESPCN", elem_id="output-video", interactive=False)
                        video_info = gr.Markdown(elem_id="video-info")
        run.click(
            super_resolve,
            inputs=[image_in, scale_in, downscale_in],
            outputs=[slider, info, download],
            api_name="super_resolve",
        )
        run_video.click(
            super_resolve_video,
            inputs=[video_in, video_scale_in],
            outputs=[video_out, video_info],
            api_name="super_resolve_video",
            concurrency_limit=1,  # one clip at a time, beside the image requests
            concurrency_id="video",
        )
    # CPU inference: two requests at a time on a 2-core machine, up to QUEUE_SIZE waiting, none dropped silently.
    demo.queue(default_concurrency_limit=2, max_size=QUEUE_SIZE)
    return demo


def launch(demo: gr.Blocks, **kwargs):
    """`demo.launch` with the demo's limits (upload size; examples folder readable)."""
    kwargs.setdefault("max_file_size", MAX_FILE_SIZE)
    kwargs.setdefault("allowed_paths", [str(EXAMPLES_DIR)])
    return demo.launch(**kwargs)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    launch(
        build_demo(),
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )


if __name__ == "__main__":
    main()
