"""ESPCN super-resolution demo (Gradio Space).

    python space/app.py            # http://127.0.0.1:7860 ; works offline with the packaged weights

Two tabs: an image (x2/x3/x4, a bicubic-vs-ESPCN slider, optional "downscale first" with PSNR/SSIM against the
original) and a short video clip (espcn_hf.upscale_video: frame rate, timestamps and audio kept). Both start at x3,
the default model.

The app is a thin client of espcn_hf:
- models: `espcn_hf.resolve_model(None, scale, fallback_to_packaged=True)`, i.e. the published Hub repo, else its
  local Hub cache, else the weights packaged with espcn-hf (the library's ESPCN_HF_REPO_X2 / _X3 / _X4 name other
  repos). All three scales are resolved once, at start-up; the landing page says which weights serve each scale
  (or that one is not available), and each result repeats it in one neutral line;
- image maths: bicubic is `espcn_hf.degradation.imresize_np` (MATLAB's imresize), images are read by
  `espcn_hf.load_image`, arrays checked by `espcn_hf.ESPCNImageProcessor`, PSNR/SSIM come from `espcn_hf.metrics`;
- files: results are written straight into gradio's cache folder, so gradio serves them as they are and deletes
  them with its cache (`delete_cache`); the app keeps no folder of its own.

Resource bounds (a public demo on a small CPU machine):
- uploads over MAX_FILE_SIZE are refused by the server before they are stored;
- gradio's cache folder (uploads and results) is swept by gradio every DELETE_CACHE[0] s of files older than
  DELETE_CACHE[1] s, and after every upload or request its oldest files are deleted until it holds at most
  CACHE_MAX_BYTES (`trim_cache`), so a flood of uploads cannot fill the disk;
- an image whose header says it is over MAX_INPUT_PIXELS (or MAX_UPLOAD_PIXELS with "downscale first") is refused
  before its pixels are decoded;
- video clips over MAX_VIDEO_SECONDS, MAX_VIDEO_FRAMES or 480p are refused from the container's metadata, and then
  from their packets, counted up to the limits without decoding, so a header that understates the length costs at
  most MAX_VIDEO_FRAMES + 1 packets;
- two image requests and one video run at a time, at most QUEUE_SIZE wait.

Every refusal is one line in the server log and one clear message for the visitor (a gr.Error, printed without a
traceback); any other exception while an upload is processed ends the same way, never as a raw exception.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import re
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path

import anyio
import gradio as gr
import numpy as np
import torch
from gradio.utils import get_upload_folder
from PIL import Image, UnidentifiedImageError
from starlette.middleware import Middleware

from espcn_hf import ESPCNImageProcessor, ImageLoadError, load_image, upscale
from espcn_hf.degradation import (
    imresize_np,
)  # MATLAB-compatible bicubic, the degradation of the training data
from espcn_hf.fileio import atomic_save
from espcn_hf.image_processing_espcn import output_mode, pil_to_rgb_array, to_output_image
from espcn_hf.metrics import psnr_ssim, quantize_uint8
from espcn_hf.pretrained import DEFAULT_SCALE, hub_repo_id, is_repo_id, resolve_model
from espcn_hf.video import VideoError, is_video, probe_video, upscale_video

logger = logging.getLogger("espcn_space")

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"
SCALES = (2, 3, 4)
SCALE_CHOICES = [(f"x{s}", s) for s in SCALES]  # both tabs start at DEFAULT_SCALE (3), the default model
# The largest model input: 1 Mpx in, up to 16 Mpx out at x4, a few seconds on a 2-core CPU.
MAX_INPUT_PIXELS = 1_000_000
# The largest upload accepted with "downscale first" (reduced by the scale before the model sees it).
MAX_UPLOAD_PIXELS = 16_000_000
# The largest upload the server stores at all (a 16 Mpx photo is 3-10 MB as JPEG, up to ~20 MB as PNG).
MAX_FILE_SIZE = "20mb"
MAX_FILE_BYTES = 20 * 1024 * 1024
QUEUE_SIZE = 64
DELETE_CACHE = (60, 600)  # every minute, delete gradio's cached uploads and results older than 10 minutes
# The most gradio's cache folder may hold (uploads and results together); the oldest files go first. A request
# leaves at most ~100 MB there (a 16 Mpx result and its bicubic twin as PNG), so ten such stay side by side.
CACHE_MAX_BYTES = 1_000_000_000
RESULT_PREFIX = "espcn-"  # the per-request result folders in gradio's cache folder

# Video tab: short clips only (decode + ESPCN + H.264 encode of every frame runs on the CPU).
MAX_VIDEO_SECONDS = 10
MAX_VIDEO_FRAMES = 300
MAX_VIDEO_SIZE = (854, 480)  # 480p: long side <= 854, short side <= 480 (either orientation)
# 1080p out, the paper's real-time setting: x4 only up to 480x270, x3 up to 640x360
MAX_VIDEO_OUTPUT = (1920, 1080)

PAPER_URL = "https://arxiv.org/abs/1609.05158"
CODE_URL = "https://github.com/espcn-hf/espcn-hf"
# The same models in the visitor's browser, no server (a static Space built by `espcn-hf web`; espcn_hf.web.SPACE_URL)
BROWSER_URL = "https://huggingface.co/spaces/espcn-hf/espcn-web"

# Real photos from the standard benchmark sets (sources and licences in README.md), with readable labels.
EXAMPLES = [
    ("set5_bird.png", 3, True, "Bird (Set5) · x3 of a downscaled copy"),
    ("set5_butterfly.png", 4, True, "Butterfly (Set5) · x4 of a downscaled copy"),
    ("bsd100_3096.png", 3, True, "Airplane (BSD100) · x3 of a downscaled copy"),
    ("set14_comic.png", 2, False, "Comic (Set14) · x2 as it is"),
]
# The video tab's example, a pan across bsd100_3096.png (examples/make_examples.py makes it; see README.md).
VIDEO_EXAMPLES = [("bsd100_3096_pan.mp4", 3, "Airplane (BSD100), a 2 s pan · x3")]


# ----------------------------------------------------------------------------------------------------------------
# Messages and the log
# ----------------------------------------------------------------------------------------------------------------


_PATH = re.compile(r"(?:[A-Za-z]:)?[\\/](?:[^\s'\"\\/:]+[\\/])+([^\s'\"\\/:]*)")


def _public(message: str) -> str:
    """`message` without server paths (a path becomes its file name)."""
    return _PATH.sub(lambda m: m.group(1) or "the file", message)


def _describe(error: BaseException) -> str:
    """One log line for an exception: its type, the first line of its message and where it was raised."""
    text = str(error).strip().splitlines()
    frames = traceback.extract_tb(error.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {text[0] if text else ''}{where}"


def _refuse(message: str, cause: BaseException | None = None) -> gr.Error:
    """The visitor's message as a gr.Error that gradio shows without printing a traceback, logged here as one line
    (with the cause, when there is one)."""
    logger.info("refused: %s%s", message, f" [{_describe(cause)}]" if cause is not None else "")
    return gr.Error(message, print_exception=False)


@contextlib.contextmanager
def _errors_as_messages(kind: str):
    """Whatever goes wrong while one upload is processed ends as one log line and a clear message."""
    try:
        yield
    except gr.Error:
        raise
    except Exception as error:  # noqa: BLE001 (a damaged file can make any library raise anything)
        logger.warning("cannot process an uploaded %s: %s", kind, _describe(error))
        raise gr.Error(
            f"This {kind} cannot be processed (an unusual or damaged file). Please try another one.",
            print_exception=False,
        ) from None


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


def _source_markdown(scale: int, source: str) -> str:
    """espcn_hf's neutral source line as Markdown for visitors: the repo id linked, no server paths."""
    line = _public(source.removeprefix("model: "))
    repo = hub_repo_id(scale)
    if is_repo_id(repo):
        line = line.replace(repo, f"[{repo}](https://huggingface.co/{repo})", 1)
    return line


@functools.lru_cache(maxsize=len(SCALES))
def get_model(scale: int):
    """(model, a "Model: ..." Markdown line saying which weights serve `scale`), resolved once per scale by
    espcn_hf: the Hub repo, else its local Hub cache, else the weights packaged with espcn-hf. Raises gr.Error when
    none loads (the cause goes to the log, not to visitors); a later call tries again."""
    try:
        model, source = resolve_model(None, scale, fallback_to_packaged=True)
    except Exception as error:  # noqa: BLE001 (CheckpointError, or anything a damaged download raises)
        logger.error("x%d: no model: %s", scale, _describe(error))
        raise gr.Error(
            f"The x{scale} model is not available at the moment. Please try another scale.",
            print_exception=False,
        ) from None
    return model, f"Model: {_source_markdown(scale, source)}"


def model_lines() -> dict[int, str]:
    """For the landing page: one Markdown line per scale saying which weights serve it, or that none does."""
    lines = {}
    for scale in SCALES:
        try:
            lines[scale] = get_model(scale)[1].removeprefix("Model: ")
        except gr.Error:
            repo = hub_repo_id(scale)
            named = f"[{repo}](https://huggingface.co/{repo})" if is_repo_id(repo) else f"x{scale}"
            lines[scale] = f"not available at the moment ({named} could not be loaded); the other scales work"
    return lines


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


def _bicubic(image: Image.Image, factor: float) -> Image.Image:
    """MATLAB-style bicubic resize (antialiased when reducing) of an 8-bit L/LA/RGB/RGBA image, by espcn_hf."""
    return Image.fromarray(imresize_np(np.array(image), factor))


def _image_from_array(array: np.ndarray) -> Image.Image:
    """A numpy image ((H, W) or (H, W, C): uint8, uint16, or floats in [0, 1]) as a PIL image, through the checks
    of espcn_hf's image processor (shape, size, NaN and infinite values raise ValueError there)."""
    if array.dtype.kind not in "biuf":  # the processor would coerce strings and objects to floats
        raise _refuse(
            f"An image array must hold numbers (uint8, uint16 or floats in [0, 1]), not {array.dtype}."
        )
    try:
        features = ESPCNImageProcessor(max_pixels=MAX_UPLOAD_PIXELS)(array)
    except (ValueError, TypeError) as error:
        reason = re.sub(r"^Image 0 ", "it ", str(error))
        raise _refuse(f"This array cannot be used as an image: {reason}.", error) from None
    return to_output_image(features["pixel_values"][0], features["original_modes"][0])


def _read_upload(image) -> bytes | Image.Image:
    """The upload as bytes (or the PIL image itself), with the file-size limit of the server applied."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    else:
        path = Path(image)
        if not path.is_file():
            raise _refuse("The upload could not be found on the server; please upload it again.")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise _refuse(f"The file is over the upload limit of {MAX_FILE_SIZE.upper()}.")
        data = path.read_bytes()
    if len(data) > MAX_FILE_BYTES:
        raise _refuse(f"The file is over the upload limit of {MAX_FILE_SIZE.upper()}.")
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
    except Image.DecompressionBombError as error:
        raise _refuse(f"The image is far over the limit of {MAX_UPLOAD_PIXELS:,} pixels.", error) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise _refuse(
            "This file cannot be used as an image: not an image file, or a format Pillow cannot read.", error
        ) from None


def load_upload(image, scale: int, downscale_first: bool) -> Image.Image:
    """Check the upload's size from its header (refusing it before decoding), then decode it to 8-bit L/LA/RGB(A).
    `image` is a path, bytes, a PIL image or a numpy array."""
    data = _image_from_array(image) if isinstance(image, np.ndarray) else _read_upload(image)
    width, height = _header_size(data)
    pixels = width * height
    if downscale_first and pixels > MAX_UPLOAD_PIXELS:
        raise _refuse(
            f"The image is {width}×{height} = {pixels:,} pixels, over the limit of {MAX_UPLOAD_PIXELS:,} pixels "
            "for “downscale first”. Please resize or crop it first."
        )
    if downscale_first and (width // scale) * (height // scale) > MAX_INPUT_PIXELS:
        raise _refuse(
            f"Even downscaled by {scale}, the input would be {width // scale}×{height // scale} pixels, over the "
            f"limit of {MAX_INPUT_PIXELS:,} pixels. Please pick a larger scale or a smaller image."
        )
    if not downscale_first and pixels > MAX_INPUT_PIXELS:
        raise _refuse(
            f"The input is {width}×{height} = {pixels:,} pixels; this demo upscales inputs of up to "
            f"{MAX_INPUT_PIXELS:,} pixels (about 1000×1000). Crop it, or tick “downscale first”."
        )
    try:
        # bytes, not the path: the loader's messages then name no server file
        return _to_8bit(load_image(data, max_pixels=MAX_UPLOAD_PIXELS))
    except ImageLoadError as error:
        reason = re.sub(r"^image: ", "", str(error))
        raise _refuse(f"This file cannot be used as an image: {_public(reason)}", error) from None


def _result_folder() -> Path:
    """A fresh folder for one request's results, inside gradio's cache folder: gradio serves the files from there
    as they are, and deletes them with the rest of its cache (`delete_cache`, `trim_cache`)."""
    cache = Path(get_upload_folder())
    cache.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=RESULT_PREFIX, dir=cache))


# ----------------------------------------------------------------------------------------------------------------
# The handlers
# ----------------------------------------------------------------------------------------------------------------


def _parse_scale(scale) -> int:
    """2, 3 or 4 from an int or a str ("3", "x3")."""
    try:
        value = int(str(scale).strip().lstrip("x"))
    except ValueError:
        raise _refuse(f"Scale must be one of x2, x3, x4, got {str(scale)[:20]!r}.") from None
    if value not in SCALES:
        raise _refuse(f"Scale must be one of x2, x3, x4, got x{value}.")
    return value


def super_resolve(image, scale=DEFAULT_SCALE, downscale_first: bool = False):
    """Upscale `image` (a path, bytes, PIL image or numpy array) by `scale` (2, 3 or 4; int or str) with ESPCN.

    Returns ((bicubic_path, espcn_path), info_markdown, espcn_path): the pair for the slider (bicubic upscaling of
    the same input against ESPCN), a summary, and the full-resolution PNG to download. With `downscale_first`, the
    image is first reduced by `scale` with MATLAB-style bicubic, making a real low-resolution input, and the
    result is compared with the original. Problems raise `gr.Error` with a message for the visitor.
    """
    if image is None:
        raise _refuse("Upload an image (or pick an example) first.")
    scale = _parse_scale(scale)
    with _errors_as_messages("image"):
        return _super_resolve(image, scale, downscale_first)


def _super_resolve(image, scale: int, downscale_first: bool):
    original = load_upload(image, scale, downscale_first)
    notes = []
    if downscale_first:
        width, height = original.size
        width, height = width - width % scale, height - height % scale
        if width < 2 * scale or height < 2 * scale:
            raise _refuse(f"The image is too small to downscale by {scale} first.")
        original = original.crop((0, 0, width, height))  # a multiple of the scale, as in the benchmarks
        lr = _bicubic(original, 1 / scale)
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

    folder = _result_folder()
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


def _scan_length(path: str) -> tuple[int, float]:
    """(video packets, seconds between the first and the last timestamp), read by demuxing without decoding and
    stopped as soon as either is past the demo's limits: the container's header may understate the length."""
    import av  # PyAV, a dependency of the video tab

    with av.open(path) as container:
        stream = next(
            s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
        )
        count, first, last = 0, None, None
        for packet in container.demux(stream):
            if not packet.size:
                continue
            count += 1
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is not None and stream.time_base:
                seconds = float(stamp * stream.time_base)
                first = seconds if first is None else min(first, seconds)
                last = seconds if last is None else max(last, seconds)
            if count > MAX_VIDEO_FRAMES or (first is not None and last - first > MAX_VIDEO_SECONDS):
                break
    return count, (last - first) if first is not None else 0.0


def super_resolve_video(video, scale=DEFAULT_SCALE, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
    """Upscale a short clip (at most MAX_VIDEO_SECONDS, MAX_VIDEO_FRAMES frames, 480p) with ESPCN, frame by frame,
    keeping frame rate, timestamps and audio (espcn_hf.upscale_video). Returns (video_path, info_markdown)."""
    if video is None:
        raise _refuse("Upload a video first.")
    scale = _parse_scale(scale)
    with _errors_as_messages("video"):
        return _super_resolve_video(str(video), scale)


def _super_resolve_video(path: str, scale: int):
    if not Path(path).is_file():
        raise _refuse("The upload could not be found on the server; please upload it again.")
    try:
        probe = probe_video(path)
    except VideoError as error:
        reason = str(error).split(": ", 1)[-1]
        raise _refuse(f"This file cannot be used as a video: {_public(reason)}.", error) from None
    if not is_video(path):
        raise _refuse("This file cannot be used as a video: it is a still image. Use the Image tab for it.")
    short, long = sorted((probe.width, probe.height))
    if long > MAX_VIDEO_SIZE[0] or short > MAX_VIDEO_SIZE[1]:
        raise _refuse(
            f"The video is {probe.width}×{probe.height}; this demo takes clips of up to 480p "
            f"({MAX_VIDEO_SIZE[0]}×{MAX_VIDEO_SIZE[1]}, either orientation). Please resize it first."
        )
    if long * scale > MAX_VIDEO_OUTPUT[0] or short * scale > MAX_VIDEO_OUTPUT[1]:
        fits = [
            f"x{s}" for s in SCALES if long * s <= MAX_VIDEO_OUTPUT[0] and short * s <= MAX_VIDEO_OUTPUT[1]
        ]
        raise _refuse(
            f"x{scale} of {probe.width}×{probe.height} would be {probe.width * scale}×{probe.height * scale}; this "
            f"demo's video output is at most 1080p ({MAX_VIDEO_OUTPUT[0]}×{MAX_VIDEO_OUTPUT[1]}). "
            + (f"Pick {' or '.join(fits)}." if fits else "Please resize the clip first.")
        )
    seconds = _video_seconds(probe)
    limits = f"this demo takes clips of up to {MAX_VIDEO_SECONDS} s and {MAX_VIDEO_FRAMES} frames. Please trim it first."
    if seconds is None or seconds > MAX_VIDEO_SECONDS + 0.05 or probe.frames > MAX_VIDEO_FRAMES:
        length = f"{seconds:.1f} s" if seconds is not None else "of unknown length"
        raise _refuse(
            f"The clip is {length}" + (f" ({probe.frames} frames)" if probe.frames else "") + f"; {limits}"
        )
    packets, span = _scan_length(path)
    header = f"{seconds:.1f} s" + (f", {probe.frames} frames" if probe.frames else "")
    if packets > MAX_VIDEO_FRAMES:
        raise _refuse(
            f"The clip holds more than {MAX_VIDEO_FRAMES} frames (its header says {header}); {limits}"
        )
    if span > MAX_VIDEO_SECONDS + 0.05:
        raise _refuse(f"The clip runs past {MAX_VIDEO_SECONDS} s (its header says {header}); {limits}")

    model, source = get_model(scale)
    folder = _result_folder()
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
        raise _refuse(
            f"This video cannot be processed: {_public(str(error).split(': ', 1)[-1])}.", error
        ) from None
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
# Gradio's cache folder: a byte cap
# ----------------------------------------------------------------------------------------------------------------


_TRIM_LOCK = threading.Lock()


def trim_cache(folder: str | os.PathLike, max_bytes: int, keep=()) -> tuple[int, int]:
    """Delete the oldest files under `folder` (by modification time) until the files there hold at most
    `max_bytes`, never one of `keep` (paths of gradio's example and default files). Returns (bytes held after,
    files deleted); one log line when files were deleted. Result folders of this app left empty for over a minute
    (gradio deletes files, not folders) are removed too."""
    kept = set()
    for path in keep:
        with contextlib.suppress(OSError):
            stat = os.stat(path)
            kept.add((stat.st_dev, stat.st_ino))
    with _TRIM_LOCK:
        total, candidates = 0, []
        now = time.time()
        for root, folders, names in os.walk(folder):
            if not names and not folders and os.path.basename(root).startswith(RESULT_PREFIX):
                with contextlib.suppress(OSError):
                    if now - os.stat(root).st_mtime > 60:
                        os.rmdir(root)
            for name in names:
                path = os.path.join(root, name)
                try:
                    stat = os.stat(path)
                except OSError:  # deleted meanwhile
                    continue
                total += stat.st_size
                if (stat.st_dev, stat.st_ino) not in kept:
                    candidates.append((stat.st_mtime, stat.st_size, path))
        deleted, freed = 0, 0
        for _, size, path in sorted(candidates):
            if total <= max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                deleted, freed = deleted + 1, freed + size
            total -= size
    if deleted:
        logger.warning(
            "temporary files over the cap of %.0f MB: deleted the %d oldest (%.1f MB)",
            max_bytes / 1e6,
            deleted,
            freed / 1e6,
        )
    return total, deleted


class _CacheGuard:
    """ASGI middleware of the app: after each POST (an upload, a queued request) it trims gradio's cache folder to
    `max_bytes` (`trim_cache`, in a worker thread), and logs an upload refused for its size in one line.

    An upload's response is held back until its file is in the cache folder (gradio moves it there in a background
    task that runs after the response is written) and the trim after it is done: a client that sends its uploads
    one after another (a browser, `gradio_client`) has at most one upload over the cap at any time."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        status = None
        held = [] if scope.get("path", "").rstrip("/").endswith("/upload") else None

        async def watched_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            if held is None:
                await send(message)
            else:
                held.append(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            if status == 413:
                logger.info("refused: an upload over the limit of %s", MAX_FILE_SIZE.upper())
            blocks = scope["app"].get_blocks() if hasattr(scope.get("app"), "get_blocks") else None
            if blocks is not None:
                keep = set().union(*(getattr(b, "keep_in_cache", set()) for b in blocks.blocks.values()))
                await anyio.to_thread.run_sync(trim_cache, blocks.GRADIO_CACHE, self.max_bytes, keep)
        for message in held or ():
            await send(message)


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
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return super().preprocess(payload)
        except Image.DecompressionBombError as error:
            raise _refuse(
                f"The image is far over the limit of {MAX_UPLOAD_PIXELS:,} pixels.", error
            ) from None
        except Exception as error:  # noqa: BLE001 (whatever Pillow makes of a bad file)
            raise _refuse("This file cannot be used as an image.", error) from None


class _ScaleInput(gr.Radio):
    """The x2/x3/x4 radio, whose API takes the scale as an int or a str (2, "2", "x2"; gradio's Radio takes only
    the exact value of a choice, and its API description lists the values as strings)."""

    def get_block_name(self) -> str:
        return "radio"

    def preprocess(self, payload):
        return None if payload is None else _parse_scale(payload)

    def api_info(self) -> dict:
        return {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "title": "Scale",
            "description": "the scale, 2, 3 or 4, as an int or a str ('3' or 'x3')",
        }


def _intro(lines: dict[int, str]) -> str:
    models = "\n".join(f"- **x{scale}**: {line}" for scale, line in sorted(lines.items()))
    return (
        "# ESPCN super-resolution\n"
        "Upscale an image x2, x3 or x4 with ESPCN (Shi et al. 2016), a small network whose convolutions all "
        "run at low resolution before a sub-pixel convolution. Drag the slider to compare with bicubic. "
        "Tick **downscale first** to turn a sharp photo into a real low-resolution input and see how much "
        f"of it comes back. Images up to {MAX_INPUT_PIXELS:,} pixels; short clips on the **Video** tab.\n\n"
        f"Models serving each scale:\n\n{models}\n\n"
        f"Prefer to keep your image on your machine? [Run ESPCN in your browser]({BROWSER_URL}) (no upload).\n\n"
        f"Paper: [arXiv 1609.05158]({PAPER_URL}) · Code: [espcn-hf]({CODE_URL})"
    )


def build_demo() -> gr.Blocks:
    """The app. Resolves the models of all three scales first (the landing page names them)."""
    lines = model_lines()
    examples = [(EXAMPLES_DIR / name, s, d, label) for name, s, d, label in EXAMPLES]
    examples = [e for e in examples if e[0].is_file()]
    clips = [(EXAMPLES_DIR / name, s, label) for name, s, label in VIDEO_EXAMPLES]
    clips = [c for c in clips if c[0].is_file()]
    with gr.Blocks(title="ESPCN super-resolution", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(_intro(lines), elem_id="intro")
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
                    scale_in = _ScaleInput(SCALE_CHOICES, value=DEFAULT_SCALE, label="Scale", elem_id="scale")
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
                        video_scale_in = _ScaleInput(
                            SCALE_CHOICES, value=DEFAULT_SCALE, label="Scale", elem_id="video-scale"
                        )
                        run_video = gr.Button("Super-resolve video", variant="primary", elem_id="run-video")
                        if clips:
                            gr.Examples(
                                examples=[[str(path), s] for path, s, _ in clips],
                                example_labels=[label for *_, label in clips],
                                inputs=[video_in, video_scale_in],
                                label="Example (a pan across a BSD100 photo)",
                                cache_examples=False,
                            )
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
    """`demo.launch` with the demo's limits: upload size, the byte cap of gradio's cache folder (CACHE_MAX_BYTES at
    launch time), the examples folder readable."""
    kwargs.setdefault("max_file_size", MAX_FILE_SIZE)
    kwargs.setdefault("allowed_paths", [str(EXAMPLES_DIR)])
    app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
    app_kwargs["middleware"] = [
        *app_kwargs.get("middleware", []),
        Middleware(_CacheGuard, max_bytes=CACHE_MAX_BYTES),
    ]
    return demo.launch(app_kwargs=app_kwargs, **kwargs)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    launch(build_demo())  # gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (default 127.0.0.1:7860)


if __name__ == "__main__":
    main()
