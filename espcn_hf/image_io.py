"""Safe image loading: every way a file can be bad ends in one `ImageLoadError` that names the problem."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .image_processing_espcn import DEFAULT_MAX_PIXELS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


class ImageLoadError(ValueError):
    """An input could not be used as an image; the message says why and which input."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def load_image(source, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_size: int = 2) -> Image.Image:
    """Open and fully decode an image from a path, bytes, a binary file object or a PIL image.

    The EXIF orientation is applied. Raises `ImageLoadError` for a missing, empty, truncated, corrupt or
    non-image file, an image smaller than `min_size` pixels on a side, or one with more than `max_pixels`
    pixels (checked from the header, before decoding, so a decompression bomb costs nothing).
    """
    name = "image"
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
        except OSError as error:
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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data
        raise ImageLoadError(f"{name}: the image data is truncated or corrupt ({error})") from None
    except Image.DecompressionBombError as error:
        raise ImageLoadError(f"{name}: refused as a possible decompression bomb ({error})") from None
    return image


__all__ = ["IMAGE_EXTENSIONS", "ImageLoadError", "is_image_file", "load_image"]
