"""Safe image loading: every way a file can be bad ends in one `ImageLoadError` that names the problem.

Loading (`load_image`) and saving (`save_image`: atomic, in the format the file name asks for) of image files.
This module imports only Pillow at import time (the CLI reads its limits while building `--help`), and it owns the
size limits:

- `DEFAULT_MAX_PIXELS` (36 Mpx) bounds the *input*, checked from the header before decoding, so a
  decompression bomb costs nothing. Pillow's own process-wide bomb limit (`Image.MAX_IMAGE_PIXELS`, 89.5 Mpx)
  is lifted to ours while we open a file, so `max_pixels=None` or a larger limit is honoured.
- `DEFAULT_MAX_OUTPUT_PIXELS` (200 Mpx) bounds the *output* of `espcn_hf.upscale` (input pixels x scale²), so
  the default limits keep a tiled run under 2 GB of memory: a 4000x3000 input at x4 (192 Mpx out) peaks at
  1.7 GB (benchmarks/speed_cpu.md). The largest default inputs are 36 Mpx at x2, 22 Mpx at x3 and 12.5 Mpx at x4.
  Reading such an output back needs `load_image(path, max_pixels=None)`.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

DEFAULT_MAX_PIXELS = 36_000_000
DEFAULT_MAX_OUTPUT_PIXELS = 200_000_000

# JPEG start-of-frame markers of arithmetic coding, which can spend under one bit on a block (see _check_jpeg_size).
_ARITHMETIC_SOF = tuple(bytes((0xFF, m)) for m in (0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


class ImageLoadError(ValueError):
    """An input could not be used as an image; the message says why and which input."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_bomb_limit(max_pixels: int | None) -> Iterator[None]:
    """Let `max_pixels` (our limit, checked from the header) decide instead of Pillow's global bomb limit.

    Pillow warns above `Image.MAX_IMAGE_PIXELS` and refuses above twice that, whatever the caller asked for.
    Where our limit is higher (or None), Pillow's check is switched off for the duration of the open/decode
    (ours runs from the header right after opening) and restored afterwards, under a lock so that concurrent
    loads restore it correctly; otherwise nothing changes.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is None or (max_pixels is not None and max_pixels <= current):
        yield
        return
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_jpeg_size(image: Image.Image, name: str) -> None:
    """Refuse a JPEG whose compressed data is too short to hold the size its header claims.

    libjpeg fills data that ends early (a premature end-of-image marker) with flat grey and only warns, which
    Pillow does not pass on, so such a file would otherwise decode "successfully". Every 8x8 block of a
    Huffman-coded JPEG costs at least one bit (its DC code), so fewer bits than blocks proves missing data.
    """
    if image.format not in ("JPEG", "MPO") or not getattr(image, "layer", None) or image.fp is None:
        return
    fp = image.fp
    position = fp.tell()
    try:
        fp.seek(0, io.SEEK_END)
        size = fp.tell()
        fp.seek(0)
        head = fp.read(65536)
    finally:
        fp.seek(position)
    width, height = image.size
    h_max = max(h for _, h, _, _ in image.layer) or 1
    v_max = max(v for _, _, v, _ in image.layer) or 1
    blocks = sum(  # 8x8 blocks per component, whose size is the image's scaled by its sampling factors
        math.ceil(math.ceil(width * h / h_max) / 8) * math.ceil(math.ceil(height * v / v_max) / 8)
        for _, h, v, _ in image.layer
    )
    if size * 8 < blocks and not any(marker in head for marker in _ARITHMETIC_SOF):
        raise ImageLoadError(
            f"{name}: the JPEG data is truncated or corrupt ({size:,} bytes cannot hold the {width}x{height} "
            "image its header announces)"
        )


class ImageDataWarning(UserWarning):
    """An image decoded, but its data looks damaged (the message says how)."""


def _warn_if_grey_tail(image: Image.Image, name: str) -> None:
    """Warn when a baseline JPEG ends in a whole row of blocks of exact mid-grey (128, 128, 128).

    That is what libjpeg makes of blocks whose data is missing (data cut short, then an end-of-image marker):
    it fills them with zero coefficients and only warns, which Pillow does not pass on. Shorter losses than
    `_check_jpeg_size` can prove end up here; a real photo rarely ends in exactly flat 128 grey, and if one
    does this is only a warning.
    """
    if image.format not in ("JPEG", "MPO") or image.info.get("progressive") or image.mode not in ("L", "RGB"):
        return
    rows = 8 * max((v for _, _, v, _ in getattr(image, "layer", ())), default=1)
    if image.height <= rows:
        return
    tail = image.crop((0, image.height - rows, image.width, image.height)).getextrema()
    bands = (tail,) if image.mode == "L" else tail
    if all(band == (128, 128) for band in bands):
        warnings.warn(
            f"{name}: the last {rows} rows are flat mid-grey, which is what a JPEG decoder puts where data is "
            "missing: the file may be truncated",
            ImageDataWarning,
            stacklevel=3,
        )


def _drop_damaged_exif(image: Image.Image, name: str) -> None:
    """Damaged EXIF metadata (a broken byte-order mark, a truncated directory) is treated as absent: Pillow's
    JPEG reader then applies no orientation, but a copy of the image would raise when its EXIF is read again, so
    the metadata is dropped from `image` (our own copy) with a warning naming the file."""
    raw = image.info.get("exif")
    if not raw:
        return
    try:
        Image.Exif().load(raw)
    except Exception as error:  # noqa: BLE001 -- Pillow's EXIF parser raises SyntaxError, struct.error, ...
        del image.info["exif"]
        warnings.warn(
            f"{name}: damaged EXIF metadata ignored, orientation not applied ({type(error).__name__}: {error})",
            ImageDataWarning,
            stacklevel=3,
        )


def check_output_size(
    width: int, height: int, scale: int, max_output_pixels: int | None, name: str | None = None
) -> None:
    """Raise `ImageLoadError` when a `width` x `height` image upscaled by `scale` has more than
    `max_output_pixels` pixels (`None`: no limit)."""
    pixels = width * height * scale * scale
    if max_output_pixels is not None and pixels > max_output_pixels:
        raise ImageLoadError(
            f"{f'{name}: ' if name else ''}{width}x{height} at x{scale} makes a {width * scale}x{height * scale} = "
            f"{pixels:,}-pixel image, over the output limit of {max_output_pixels:,} pixels (max_output_pixels; "
            "None disables it)"
        )


def load_image(
    source,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_size: int = 2,
    *,
    scale: int = 1,
    max_output_pixels: int | None = None,
) -> Image.Image:
    """Open and fully decode an image from a path, bytes, a binary file object or a PIL image.

    The EXIF orientation is applied. Raises `ImageLoadError` for a missing, empty, truncated, corrupt or
    non-image file, a text stream, an image smaller than `min_size` pixels on a side, or one with more than
    `max_pixels` pixels, or (for an image about to be upscaled by `scale`) one whose output would have more than
    `max_output_pixels` pixels. Both limits are checked from the header, before decoding, so a decompression
    bomb or an image too large to upscale costs nothing; `None` disables a limit (`max_pixels=None`, Pillow's
    own included).
    """
    name = "image"
    with _pillow_bomb_limit(max_pixels):
        if isinstance(source, Image.Image):
            image = source
        else:
            if isinstance(source, (str, os.PathLike)):
                name = str(source)
                path = Path(source)
                if not path.exists():
                    raise ImageLoadError(f"{name}: no such file")
                if path.is_dir():
                    raise ImageLoadError(f"{name}: is a folder, not an image file")
                if path.stat().st_size == 0:
                    raise ImageLoadError(f"{name}: the file is empty (0 bytes)")
                opener = path
            elif isinstance(source, (bytes, bytearray)):
                if not source:
                    raise ImageLoadError("image: no data (0 bytes)")
                opener = io.BytesIO(source)
            elif isinstance(source, io.TextIOBase):
                name = getattr(source, "name", name)
                raise ImageLoadError(f"{name}: a text stream; open image files in binary mode ('rb')")
            elif hasattr(source, "read"):
                name = getattr(source, "name", name)
                opener = source
            else:
                raise ImageLoadError(f"Cannot read an image from a {type(source).__name__}")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    image = Image.open(opener)
            except UnidentifiedImageError:
                raise ImageLoadError(f"{name}: not an image file, or a format Pillow cannot read") from None
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
                raise ImageLoadError(f"{name}: refused as a possible decompression bomb ({error})") from None
            except (OSError, ValueError, SyntaxError) as error:
                raise ImageLoadError(f"{name}: cannot be read ({error})") from None

        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageLoadError(
                f"{name}: {width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} pixels"
            )
        if width < min_size or height < min_size:
            raise ImageLoadError(
                f"{name}: {width}x{height} pixels is too small (at least {min_size}x{min_size} needed)"
            )
        check_output_size(width, height, scale, max_output_pixels, name)
        _check_jpeg_size(image, name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
            _warn_if_grey_tail(image, name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = ImageOps.exif_transpose(image)  # a copy: ours to change below
            _drop_damaged_exif(image, name)
        except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data
            raise ImageLoadError(f"{name}: the image data is truncated or corrupt ({error})") from None
        except Image.DecompressionBombError as error:
            raise ImageLoadError(f"{name}: refused as a possible decompression bomb ({error})") from None
    return image


def _image_for_format(image: Image.Image, fmt: str) -> Image.Image:
    """`image` converted to what format `fmt` can hold: PNG and TIFF take every mode `upscale` makes (RGB, RGBA,
    L, LA, 16-bit I;16); JPEG, BMP and PPM drop alpha, and formats without 16-bit grayscale get 8-bit levels."""
    if fmt in ("PNG", "TIFF"):
        return image
    if image.mode == "I;16":
        import numpy as np

        from .metrics import quantize_uint8  # the package's one rounding rule

        image = Image.fromarray(quantize_uint8(np.asarray(image, dtype=np.float64) / 65535.0))
    if fmt in ("JPEG", "BMP", "PPM") and image.mode in ("RGBA", "LA"):
        image = image.convert(image.mode[:-1])
    return image


def save_image(image: Image.Image, target: str | os.PathLike) -> Path:
    """Save `image` to `target` atomically (`espcn_hf.fileio.atomic_save`: a temporary file beside it, fsync,
    rename), in the format its extension names (PNG when it names none), converted to what that format holds.

    An interrupt or a full disk never leaves a truncated file at `target` and never destroys the file that was
    there; errors (OSError: full disk, read-only folder, ...) propagate with the target unchanged.
    """
    from .fileio import atomic_save

    target = Path(target)
    fmt = Image.registered_extensions().get(target.suffix.lower(), "PNG")
    image = _image_for_format(image, fmt)
    # the temporary name ends in .partial, so Pillow is told the format
    return atomic_save(target, lambda tmp: image.save(tmp, format=fmt))


__all__ = [
    "DEFAULT_MAX_OUTPUT_PIXELS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageDataWarning",
    "ImageLoadError",
    "check_output_size",
    "is_image_file",
    "load_image",
    "save_image",
]
