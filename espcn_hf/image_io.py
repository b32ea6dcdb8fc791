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
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

DEFAULT_MAX_PIXELS = 36_000_000
DEFAULT_MAX_OUTPUT_PIXELS = 200_000_000

# PNG: samples per pixel of each colour type, and the Adam7 passes (first column, first row, column step, row
# step), for the size of the filtered image data its header announces (see _check_png_size).
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_TIFF_PLANAR_CONFIGURATION = 284

# JPEG markers (see _check_jpeg_size): start-of-frame (arithmetic coding can spend under one bit on a block;
# progressive frames come in several scans), and the markers that may follow a scan's entropy-coded data.
_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_ARITHMETIC_SOF = frozenset((0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_PROGRESSIVE_SOF = frozenset((0xC2, 0xC6, 0xCA, 0xCE))
_AFTER_SCAN = frozenset((0xC4, 0xCC, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)))
_JPEG_MARKER = re.compile(rb"\xff[^\x00]")  # in entropy-coded data a 0xFF byte is followed by 0x00 (stuffing)
# Bytes after the end of a sequential JPEG's data handed to the decoder in small pieces, and the size of a piece:
# where it stops reading then tells, within a piece, how much of the data it used (see _JpegReadMeter).
_METERED_TAIL = 1 << 14
_METER_PIECE = 16
# Bytes inserted after a JPEG's last scan to prove that data is missing (see _check_jpeg_ending): no 0xFF in it.
_JPEG_PROBE = bytes((i * 73 + 11) % 255 for i in range(512))


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


@dataclass
class _JpegData:
    """What `_check_jpeg_size` learnt of a JPEG: its bytes, where each scan's entropy-coded data ends, and
    whether it is progressive (or otherwise has several scans)."""

    data: bytes
    scan_ends: list[int] = field(default_factory=list)
    progressive: bool = False


def _jpeg_units(frame: dict[int, tuple[int, int]], width: int, height: int, components: list[int]) -> int:
    """The MCUs of a scan of `components` (8x8 blocks of the component for a scan of one), for restart markers."""
    h_max = max(h for h, _ in frame.values()) or 1
    v_max = max(v for _, v in frame.values()) or 1
    if len(components) == 1:
        h, v = frame.get(components[0], (h_max, v_max))
        return math.ceil(math.ceil(width * h / h_max) / 8) * math.ceil(math.ceil(height * v / v_max) / 8)
    return math.ceil(width / (8 * h_max)) * math.ceil(height / (8 * v_max))


def _jpeg_scans(data: bytes, width: int, height: int, name: str) -> _JpegData:
    """Walk the markers and the entropy-coded data of each scan, as libjpeg reads them, and refuse what libjpeg
    would only warn about (Pillow does not pass its warnings on): a marker inside the image data that cannot be
    there (random bytes in the data make them, and libjpeg then fills the rest with grey), and restart markers out
    of sequence or in the wrong number (data lost or added). Junk between header segments is skipped, as Pillow
    and libjpeg skip it."""
    found = _JpegData(data)
    frame: dict[int, tuple[int, int]] = {}
    restart_interval, pos, size = 0, 2, len(data)

    def corrupt(what: str) -> ImageLoadError:
        return ImageLoadError(f"{name}: the JPEG data is corrupt ({what})")

    while pos + 1 < size:
        if data[pos] != 0xFF:  # junk between segments
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker in (0xFF, 0x01) or 0xD0 <= marker <= 0xD8:  # fill byte, TEM, RSTn or SOI outside a scan
            pos += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9:  # EOI
            break
        if pos + 4 > size:
            break
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos + 4 : end]
        if marker in _JPEG_SOF and len(segment) >= 6:
            found.progressive |= marker in _PROGRESSIVE_SOF
            count = segment[5]
            frame = {
                segment[6 + 3 * i]: divmod(segment[7 + 3 * i], 16)
                for i in range(count)
                if 8 + 3 * i <= len(segment)
            }
        elif marker == 0xDD and len(segment) >= 2:  # DRI
            restart_interval = int.from_bytes(segment[:2], "big")
        pos = end
        if marker != 0xDA or not segment:  # SOS
            continue
        components = [segment[1 + 2 * i] for i in range(segment[0]) if 2 + 2 * i <= len(segment)]
        restarts, scan_end = 0, size
        while True:  # the entropy-coded data: 0xFF 0x00 is a data byte, RSTn may come between intervals
            match = _JPEG_MARKER.search(data, pos)
            if match is None:
                pos = size
                break
            at, following = match.start(), data[match.start() + 1]
            if following == 0xFF:  # fill bytes before a marker
                pos = at + 1
                continue
            if 0xD0 <= following <= 0xD7:
                if following != 0xD0 + restarts % 8:
                    raise corrupt(
                        f"restart marker {following - 0xD0} where {restarts % 8} belongs, at byte {at:,}"
                    )
                restarts += 1
                pos = at + 2
                continue
            if following not in _AFTER_SCAN:
                raise corrupt(
                    f"a marker 0xFF{following:02X} that cannot be there inside the image data, at byte {at:,}"
                )
            scan_end = at
            while scan_end > pos and data[scan_end - 1] == 0xFF:
                scan_end -= 1
            pos = at
            break
        found.scan_ends.append(scan_end)
        if restart_interval and frame and width and height:
            expected = math.ceil(_jpeg_units(frame, width, height, components) / restart_interval) - 1
            if restarts != expected and pos < size:  # (data cut short is the decoder's to report)
                raise corrupt(
                    f"{restarts:,} restart markers in a scan that has {expected:,}: image data is missing or added"
                )
    if len(found.scan_ends) > 1:
        found.progressive = True  # several scans: the decoder buffers the whole image
    return found


def _check_jpeg_size(image: Image.Image, name: str) -> _JpegData | None:
    """Refuse a JPEG whose compressed data is too short to hold the size its header claims, or whose data is
    corrupt in a way the markers show (`_jpeg_scans`); return what was learnt for `_check_jpeg_ending`.

    libjpeg fills data that ends early (a premature end-of-image marker) with flat grey and only warns, which
    Pillow does not pass on, so such a file would otherwise decode "successfully". Every 8x8 block of a
    Huffman-coded JPEG costs at least one bit (its DC code), so fewer bits than blocks proves missing data.
    """
    if image.format not in ("JPEG", "MPO") or not getattr(image, "layer", None) or image.fp is None:
        return None
    fp = image.fp
    position = fp.tell()
    try:
        fp.seek(0)
        data = fp.read()
    finally:
        fp.seek(position)
    size = len(data)
    width, height = image.size
    h_max = max(h for _, h, _, _ in image.layer) or 1
    v_max = max(v for _, _, v, _ in image.layer) or 1
    blocks = sum(  # 8x8 blocks per component, whose size is the image's scaled by its sampling factors
        math.ceil(math.ceil(width * h / h_max) / 8) * math.ceil(math.ceil(height * v / v_max) / 8)
        for _, h, v, _ in image.layer
    )
    arithmetic = any(bytes((0xFF, marker)) in data[:65536] for marker in _ARITHMETIC_SOF)
    if size * 8 < blocks and not arithmetic:
        raise ImageLoadError(
            f"{name}: the JPEG data is truncated or corrupt ({size:,} bytes cannot hold the {width}x{height} "
            "image its header announces)"
        )
    return _jpeg_scans(data, width, height, name)


class _JpegReadMeter:
    """The file object Pillow's JPEG decoder reads through: the bytes from `slow_from` on are handed out
    `_METER_PIECE` at a time, so `furthest` tells (within a piece) where the decoder stopped needing data."""

    def __init__(self, raw, slow_from: int) -> None:
        self.raw, self.slow_from, self.furthest = raw, slow_from, 0

    def read(self, size: int = -1) -> bytes:
        start = self.raw.tell()
        if size is None or size < 0:
            size = 1 << 62
        size = min(size, _METER_PIECE) if start >= self.slow_from else min(size, self.slow_from - start)
        piece = self.raw.read(size)
        self.furthest = max(self.furthest, start + len(piece))
        return piece

    def __getattr__(self, attribute: str):  # seek, tell, close, ...
        return getattr(self.raw, attribute)


def _png_data_size(width: int, height: int, bit_depth: int, color_type: int, interlaced: bool) -> int | None:
    """Bytes of filtered image data (a filter byte per row, then the packed samples) a PNG header announces."""
    channels = _PNG_CHANNELS.get(color_type)
    if channels is None:
        return None

    def size(w: int, h: int) -> int:
        return h * (1 + (w * channels * bit_depth + 7) // 8) if w and h else 0

    if not interlaced:
        return size(width, height)
    return sum(size(max(0, -(-(width - x) // dx)), max(0, -(-(height - y) // dy))) for x, y, dx, dy in _ADAM7)


def _check_png_size(image: Image.Image, name: str) -> None:
    """Refuse a PNG whose compressed data holds fewer rows than its header announces.

    Pillow's decoder stops without a word when the zlib stream ends early (a stream compressed from half the
    rows, then IEND) and leaves the missing rows black. The IDAT stream is inflated here (its output counted,
    not kept, so memory stays small) and compared with the size the header announces.
    """
    if image.format != "PNG" or image.fp is None:
        return
    fp = image.fp
    position = fp.tell()
    inflater, produced, expected, height, row_bytes = zlib.decompressobj(), 0, None, 0, 0
    try:
        fp.seek(0)
        if fp.read(8) != _PNG_SIGNATURE:
            return
        seen_data = False
        while True:
            head = fp.read(8)
            if len(head) < 8:
                break
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IHDR":
                width, height, bit_depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", fp.read(13))
                expected = _png_data_size(width, height, bit_depth, color_type, interlace == 1)
                row_bytes = (
                    0 if interlace else 1 + (width * _PNG_CHANNELS.get(color_type, 1) * bit_depth + 7) // 8
                )
                fp.seek(length - 13 + 4, io.SEEK_CUR)
            elif kind == b"IDAT":
                seen_data = True
                remaining = length
                while remaining and not inflater.eof:
                    piece = fp.read(min(remaining, 1 << 20))
                    if not piece:
                        break
                    remaining -= len(piece)
                    while piece and not inflater.eof:
                        produced += len(inflater.decompress(piece, 1 << 22))
                        piece = inflater.unconsumed_tail
                fp.seek(remaining + 4, io.SEEK_CUR)
            elif seen_data or kind == b"IEND":
                break  # the image data is one run of IDAT chunks
            else:
                fp.seek(length + 4, io.SEEK_CUR)
    except zlib.error as error:
        raise ImageLoadError(f"{name}: the image data is truncated or corrupt ({error})") from None
    finally:
        fp.seek(position)
    if expected is None or produced >= expected:
        return
    held = (
        f"{produced // row_bytes:,} of the {height:,} rows"
        if row_bytes
        else f"{produced:,} of {expected:,} bytes"
    )
    raise ImageLoadError(
        f"{name}: the PNG image data is truncated or corrupt: it holds {held} its header announces (the rest would "
        "be black)"
    )


def _check_tiff_size(image: Image.Image, name: str) -> None:
    """Refuse a TIFF whose strips or tiles do not cover the image (a damaged strip count or rows-per-strip):
    Pillow decodes the strips it is given and leaves the rest black."""
    if image.format != "TIFF" or not getattr(image, "tile", None):
        return
    width, height = image.size
    layers = len(image.getbands()) if image.tag_v2.get(_TIFF_PLANAR_CONFIGURATION, 1) == 2 else 1
    covered = sum(
        max(0, min(x1, width) - max(x0, 0)) * max(0, min(y1, height) - max(y0, 0))
        for x0, y0, x1, y1 in (tile.extents for tile in image.tile)
    )
    if covered < width * height * layers:
        raise ImageLoadError(
            f"{name}: the TIFF image data is truncated or corrupt: its strips cover {covered // layers:,} of the "
            f"{width * height:,} pixels its header announces (the rest would be black)"
        )


class ImageDataWarning(UserWarning):
    """An image decoded, but its data looks damaged (the message says how)."""


class ImageFormatWarning(UserWarning):
    """A format conversion loses data: an image saved in a format that cannot hold all of it (alpha, 16-bit
    depth, its colours), or 16-bit colour read as 8-bit. The message names the file and what was lost."""


def _jpeg_decodes_alike(image: Image.Image, data: bytes) -> bool:
    """True when `data` decodes to exactly `image`'s pixels."""
    with Image.open(io.BytesIO(data)) as other:
        other.load()
        return other.mode == image.mode and ImageChops.difference(other, image).getbbox() is None


def _check_jpeg_ending(
    image: Image.Image, name: str, jpeg: _JpegData | None, meter: _JpegReadMeter | None
) -> None:
    """Refuse a decoded JPEG whose image data ends before its last block, or goes on after it.

    libjpeg fills blocks whose data is missing (data cut short, then an end-of-image marker) with zero
    coefficients, flat mid-grey (128, 128, 128), and only warns, which Pillow does not pass on; `_check_jpeg_size`
    proves only gross losses. Proof of a smaller one: decode again with bytes inserted after the last scan. A
    complete scan never reaches them (the result is the same); a scan that ends early decodes them into its
    missing blocks. That second decode runs when the image ends in mid-grey (its last pixel, or a whole row of
    blocks) and for every progressive or multi-scan JPEG, whose damage shows no grey.

    The other way round, a sequential JPEG whose decoder finished the image well before the end of its data
    (`meter`) has more data than blocks: its data is out of step with its blocks, the mark of corrupt bytes in
    the middle, which leave the rest of the image garbage (zero padding there is only a warning).
    """
    if jpeg is None or not jpeg.scan_ends:
        return
    end = jpeg.scan_ends[-1]
    if meter is not None and not jpeg.progressive and meter.furthest < end:
        unused = jpeg.data[meter.furthest : end]
        if unused.strip(b"\x00"):
            raise ImageLoadError(
                f"{name}: the JPEG data is corrupt (the image was complete {len(unused):,} bytes before the end of "
                "its data: the data is out of step with the image, whose lower part would be garbage)"
            )
        warnings.warn(
            f"{name}: {len(unused):,} zero bytes after the JPEG image data (padding, or damage)",
            ImageDataWarning,
            stacklevel=3,
        )
    grey_corner = image.mode in ("L", "RGB") and image.getpixel((image.width - 1, image.height - 1)) in (
        128,
        (128, 128, 128),
    )
    if not (jpeg.progressive or grey_corner or _grey_tail_rows(image)):
        return
    if not _jpeg_decodes_alike(image, jpeg.data[:end] + _JPEG_PROBE + jpeg.data[end:]):
        raise ImageLoadError(
            f"{name}: the JPEG data is truncated (the image data ends before its last blocks, which a decoder "
            "fills with flat grey)"
        )


def _grey_tail_rows(image: Image.Image) -> int:
    """The rows of the last row of blocks of a baseline JPEG when they are all exact mid-grey (128, 128, 128),
    what libjpeg puts where data is missing; else 0."""
    if image.format not in ("JPEG", "MPO") or image.info.get("progressive") or image.mode not in ("L", "RGB"):
        return 0
    rows = 8 * max((v for _, _, v, _ in getattr(image, "layer", ())), default=1)
    if image.height <= rows:
        return 0
    tail = image.crop((0, image.height - rows, image.width, image.height)).getextrema()
    bands = (tail,) if image.mode == "L" else tail
    return rows if all(band == (128, 128) for band in bands) else 0


def _warn_if_16_bit_colour(image: Image.Image, name: str) -> None:
    """Pillow has no 16-bit RGB mode: a 16-bit RGB(A) PNG or TIFF is read with 8 bits per channel. Say so."""
    tile = image.tile[0] if getattr(image, "tile", None) else None
    args = getattr(tile, "args", None)
    rawmode = args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else None
    if image.mode in ("RGB", "RGBA") and isinstance(rawmode, str) and ";16" in rawmode:
        warnings.warn(
            f"{name}: 16-bit colour is read as 8 bits per channel (Pillow has no 16-bit RGB mode)",
            ImageFormatWarning,
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
        jpeg = _check_jpeg_size(image, name)
        _check_png_size(image, name)
        _check_tiff_size(image, name)
        _warn_if_16_bit_colour(image, name)
        meter = None
        if (
            jpeg is not None and jpeg.scan_ends and not jpeg.progressive and image is not source
        ):  # measure reads
            meter = image.fp = _JpegReadMeter(image.fp, max(jpeg.scan_ends[-1] - _METERED_TAIL, 0))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
            _check_jpeg_ending(image, name, jpeg, meter)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                decoded, image = image, ImageOps.exif_transpose(image)  # a copy: ours to change below
            if isinstance(source, (str, os.PathLike, bytes, bytearray)):
                decoded.close()  # our file: a multi-frame one (MPO, GIF, TIFF) stays open until this
            _drop_damaged_exif(image, name)
        except ImageLoadError:
            raise
        except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data
            raise ImageLoadError(f"{name}: the image data is truncated or corrupt ({error})") from None
        except Image.DecompressionBombError as error:
            raise ImageLoadError(f"{name}: refused as a possible decompression bomb ({error})") from None
    return image


def _warn_format(target: Path, fmt: str, lost: str, keep: str) -> None:
    warnings.warn(
        f"{target}: {fmt} cannot hold {lost}; save as {keep} to keep it", ImageFormatWarning, stacklevel=4
    )


def _image_for_format(image: Image.Image, fmt: str, target: Path) -> Image.Image:
    """`image` converted to what format `fmt` can hold: PNG and TIFF take every mode `upscale` makes (RGB, RGBA,
    L, LA, 16-bit I;16); JPEG, BMP and PPM drop alpha, GIF keeps only on/off transparency and 256 colours, and
    formats without 16-bit grayscale get 8-bit levels. Each loss is an `ImageFormatWarning` naming `target`."""
    if fmt in ("PNG", "TIFF"):
        return image
    if image.mode == "I;16":
        import numpy as np

        from .metrics import quantize_uint8  # the package's one rounding rule

        _warn_format(target, fmt, "16-bit depth: the levels are rounded to 8 bits", ".png or .tif")
        image = Image.fromarray(quantize_uint8(np.asarray(image, dtype=np.float64) / 65535.0))
    if fmt in ("JPEG", "BMP", "PPM") and image.mode in ("RGBA", "LA"):
        _warn_format(target, fmt, "transparency: the alpha channel is dropped", ".png, .tif or .webp")
        image = image.convert(image.mode[:-1])
    if fmt == "GIF":
        gray = image.mode in ("L", "LA")  # at most 256 levels: a grey palette holds them all
        if image.mode in ("RGBA", "LA"):
            image = image.convert("RGBA")  # Pillow keeps on/off transparency of RGBA (none of LA)...
            alpha = image.getchannel("A")
            if alpha.getcolors(2) is None or set(alpha.getextrema()) - {0, 255}:
                # ...and none at all where alpha has other levels: made on/off here (opaque from 50 %)
                image.putalpha(alpha.point(lambda level: 255 if level >= 128 else 0))
                _warn_format(target, fmt, "partial transparency: alpha is made on/off", ".png, .tif or .webp")
        if not gray and image.getcolors(256) is None and image.convert("RGB").getcolors(256) is None:
            _warn_format(target, fmt, "more than 256 colours: they are quantised", ".png, .tif or .webp")
    return image


def save_image(image: Image.Image, target: str | os.PathLike) -> Path:
    """Save `image` to `target` atomically (`espcn_hf.fileio.atomic_save`: a temporary file beside it, fsync,
    rename), in the format its extension names (PNG when it names none), converted to what that format holds.
    A conversion that loses data (alpha in JPEG/BMP/PPM, 16-bit depth outside PNG/TIFF, partial transparency
    or more than 256 colours in GIF) is an `ImageFormatWarning` naming the file.

    An interrupt or a full disk never leaves a truncated file at `target` and never destroys the file that was
    there; errors (OSError: full disk, read-only folder, ...) propagate with the target unchanged.
    """
    from .fileio import atomic_save

    target = Path(target)
    fmt = Image.registered_extensions().get(target.suffix.lower(), "PNG")
    image = _image_for_format(image, fmt, target)
    # the temporary name ends in .partial, so Pillow is told the format
    return atomic_save(target, lambda tmp: image.save(tmp, format=fmt))


__all__ = [
    "DEFAULT_MAX_OUTPUT_PIXELS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageDataWarning",
    "ImageFormatWarning",
    "ImageLoadError",
    "check_output_size",
    "is_image_file",
    "load_image",
    "save_image",
]
