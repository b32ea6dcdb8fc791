"""Video super-resolution: decode with PyAV (the FFmpeg libraries in its wheel), upscale frames in batches, encode.

    from espcn_hf import upscale_video
    upscale_video("clip.mp4", "clip_x3.mp4", "espcn-hf/espcn-x3", crf=18)

Decisions, in the order a reader meets them:

* Detection by content. `is_video(path)` asks FFmpeg, not the extension: any container FFmpeg can demux with a
  video stream counts (.mp4, .mov, .mkv, .webm, .avi, .ts, ...), except still images (FFmpeg's image demuxers,
  `*_pipe` / `image2`) and cover art. An animated GIF or APNG counts as a video only with two or more frames; a
  one-frame GIF is an image (the image path upscales it). A file named like a video (`VIDEO_EXTENSIONS`) that
  FFmpeg cannot use as one (truncated, damaged, audio only) counts too, so that `upscale_video` says what is
  wrong with it instead of it being refused as a broken image.
* Three parts, each usable alone: `VideoDecoder` (stage 1: the input, its facts from the header, RGB frame
  batches and audio in file order), `upscale_frames` (stage 2: the model) and `VideoEncoder` (stage 3: the
  output file). `run_stages` overlaps them: decoding and encoding (PyAV/FFmpeg) run in their own threads while
  the model runs in the caller's thread (on a GPU the CPU work then hides behind the network, on a CPU behind
  torch's parallel sections), with bounded queues between them. `upscale_video` checks everything it can before
  the first frame is decoded, then runs the three.
* Limits, as for images: the frame size is checked from the header against `max_pixels` (input) and
  `max_output_pixels` (output, `image_io.DEFAULT_MAX_OUTPUT_PIXELS`), before any frame is decoded. `max_frames`
  and `max_seconds` are checked against the header and again while decoding, so a file whose header lies about
  its length stops at the limit.
* Memory. The frames per batch and the libx264 look-ahead come from `memory_budget` (`plan_memory`): what the
  frames in flight and the encoder need, beside the process itself (about 0.45 GB with torch). With the
  defaults small videos run as asked (`batch_size` frames, the encoder's own look-ahead), and a 1080p video at
  x3 (5760x3240 out) runs one frame per batch with a short look-ahead, under about 2 GB in all.
* Timing. Every output frame keeps its input frame's timestamp (pts in the input stream's time base), so the frame
  count, frame rate and variable frame timing carry over; the nominal rate is the input's.
* Audio streams are copied packet for packet when the output format stores them (tried before any work:
  FFmpeg's list of codecs says mp4 takes PCM, but stereo PCM in mp4 fails when the file is finished); otherwise
  they are transcoded to AAC, and when the format takes neither, that is an error before anything is written.
  Subtitle and data streams are not copied.
* Rotation is carried as metadata: the input's display matrix (the phone's "rotate 90") is written unchanged on
  the output stream, so players show the result the same way up as the input; the frames themselves are upscaled
  as stored. Pixel aspect ratio is copied too.
* Colour. Decoded frames become RGB with the input's own colour matrix (BT.601 when untagged, FFmpeg's rule); the
  output is converted with the input's matrix when tagged, BT.709 otherwise, and tagged with it, limited range.
* Encoding defaults to H.264 (libx264) yuv420p at `crf=18`. Formats with chroma subsampling need even sizes: an
  odd output width/height (odd input at x3) loses its last column/row.
* The output is written to a hidden temporary file beside `dst` and renamed at the end (`fileio.atomic_path`): an
  interrupted or failed run leaves no file at `dst`, and an earlier output there stays intact.
* Bad input (missing, empty, truncated, corrupt, not a media file, no video stream, over a limit) raises
  `VideoError` naming the file.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import queue
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .fileio import atomic_path
from .image_io import DEFAULT_MAX_OUTPUT_PIXELS, DEFAULT_MAX_PIXELS, ImageLoadError, check_output_size

if TYPE_CHECKING:  # torch and the model are imported when a video is upscaled: the CLI's parser stays light
    import torch

    from .modeling_espcn import ESPCNForImageSuperResolution

DEFAULT_CODEC = "libx264"
DEFAULT_PIX_FMT = "yuv420p"
DEFAULT_CRF = 18
DEFAULT_BATCH_SIZE = 4
# Batches waiting between the decode, SR and encode stages (each stage runs in its own thread): besides these,
# each stage holds one batch, so QUEUE_BATCHES + 2 batches of input and of output frames are alive at most.
QUEUE_BATCHES = 2
# Encoders that take a constant-quality `crf` option (lower = better; 0 = lossless for libx264 8-bit).
CRF_CODECS = {
    "libx264": {},
    "libx264rgb": {},
    "libx265": {},
    "libvpx-vp9": {"b": "0"},
    "libaom-av1": {"b": "0"},
}
# Encoders with x264-style speed presets (`preset`): faster presets keep the crf quality target and write larger files.
PRESET_CODECS = ("libx264", "libx264rgb", "libx265")
ENCODER_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
# File names a folder scan takes for videos (files named explicitly are probed by content whatever their name).
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg", ".mpeg", ".ts", ".mts", ".3gp", ".ogv",
    ".gif",
)  # fmt: skip
# Formats whose single-frame files are images, unless they hold two or more frames.
ANIMATION_FORMATS = ("gif", "apng", "webp")
# Audio the output format cannot store as it is becomes this (in FFmpeg's default layout for its number of
# channels when it has no channel order).
TRANSCODED_AUDIO_CODEC = "aac"
DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}

# Memory (`plan_memory`): bytes for the frames in flight and the encoder, beside the process itself (torch, the
# FFmpeg libraries and the model: about 0.45 GB), so that a default run stays under about 2 GB as for images.
DEFAULT_MEMORY_BUDGET = 1_500_000_000
# libx264's own memory per pixel of an output frame, measured at 5760x3240 (a 1080p video at x3) on the 2-core
# CPU with its default threads: about 1.0 GB without look-ahead (reference frames, B-frames, half-pel planes)
# and 2.5 bytes per pixel for each frame of look-ahead (3.1 GB in all at the default 40 frames). Other encoders
# are counted the same way.
ENCODER_BYTES_PER_PIXEL = 56
LOOKAHEAD_BYTES_PER_PIXEL = 3
# The writer's RGB frame and its conversion to the output pixel format (yuv444p at most).
WRITER_BYTES_PER_PIXEL = 6
# libx264's `rc-lookahead` (frames) for each preset; "medium" is its default.
X264_LOOKAHEAD = {
    "ultrafast": 0,
    "superfast": 0,
    "veryfast": 10,
    "faster": 20,
    "fast": 30,
    "medium": 40,
    "slow": 50,
    "slower": 60,
    "veryslow": 60,
}
X264_CODECS = ("libx264", "libx264rgb")


class VideoError(ValueError):
    """A video file is missing, unreadable, has no video stream, is over a limit, or cannot be written as
    asked."""


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` finds in a file (and `upscale_video` returns about its output)."""

    path: str
    format: str
    width: int
    height: int
    frames: int  # frames counted by the container; 0 when it does not say
    rate: Fraction | None  # nominal frame rate
    codec: str
    audio_codecs: tuple[str, ...]
    rotation: int  # degrees counter-clockwise from the display matrix, 0 when none
    duration: float | None = None  # seconds, from the container (None when it does not say)


def _have_pyav() -> bool:
    """PyAV (the `video` extra) is optional: without it no file is read as a video."""
    import importlib.util

    return importlib.util.find_spec("av") is not None


def _ffmpeg_reason(error) -> str:
    """FFmpeg's reason without the file name it carries (which may be a hidden temporary file)."""
    return getattr(error, "strerror", None) or str(error)


def _open_input(path: str | os.PathLike):
    name = str(path)
    try:
        import av
    except ImportError:
        raise VideoError(f"{name}: reading videos needs PyAV: pip install 'espcn-hf[video]'") from None
    if not Path(name).exists():
        raise VideoError(f"{name}: no such file")
    if Path(name).is_dir():
        raise VideoError(f"{name}: is a folder, not a video file")
    if Path(name).stat().st_size == 0:
        raise VideoError(f"{name}: the file is empty (0 bytes)")
    try:
        return av.open(name, "r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise VideoError(
            f"{name}: not a video file FFmpeg can read ({_ffmpeg_reason(error)}): damaged, truncated, or not a "
            "media file"
        ) from None


def _video_stream(container):
    import av

    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:  # skip cover art
            return stream
    return None


def _is_still_image_format(format_name: str) -> bool:
    return any(name == "image2" or name.endswith("_pipe") for name in format_name.split(","))


def _has_two_frames(container, stream) -> bool:
    count = 0
    for packet in container.demux(stream):
        if packet.size:
            count += 1
            if count >= 2:
                return True
    return False


def is_video(path: str | os.PathLike) -> bool:
    """True when `path` is for `upscale_video`: FFmpeg reads it as a video (see the module docstring for GIFs
    and still images), or it is named like one (`VIDEO_EXTENSIONS`, GIF aside) and FFmpeg cannot use it as one
    (truncated, damaged, audio only), so that `upscale_video` names the problem. A missing file is no video.

    Without PyAV a file counts as a video by its extension alone (GIFs excepted), so that `upscale_video` can say
    which extra to install instead of the file being refused as a broken image."""
    suffix = Path(path).suffix.lower()
    named_like_a_video = suffix in VIDEO_EXTENSIONS and suffix != ".gif"
    if not _have_pyav():
        return named_like_a_video
    if not Path(path).exists():
        return False
    try:
        container = _open_input(path)
    except VideoError:
        return named_like_a_video
    with container:
        if _is_still_image_format(container.format.name):
            return False
        stream = _video_stream(container)
        if stream is None:
            return named_like_a_video
        if container.format.name in ANIMATION_FORMATS or stream.codec_context.name in ANIMATION_FORMATS:
            return _has_two_frames(container, stream)
        return True


def _display_matrix(frame) -> tuple[int, ...] | None:
    for side_data in frame.side_data:
        if "DISPLAYMATRIX" in str(side_data.type):
            return struct.unpack("<9i", bytes(side_data)[:36])
    return None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Container facts about a video file (decodes one frame for the rotation); `VideoError` when unreadable."""
    import av

    name = str(path)
    with _open_input(path) as container:
        stream = _video_stream(container)
        if stream is None:
            raise VideoError(f"{name}: has no video stream")
        rotation = 0
        try:
            for frame in container.decode(stream):
                rotation = int(frame.rotation or 0)
                break
        except av.error.FFmpegError as error:
            raise VideoError(
                f"{name}: the video stream cannot be decoded ({_ffmpeg_reason(error)})"
            ) from None
        return VideoInfo(
            path=name,
            format=container.format.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            frames=stream.frames,
            rate=stream.average_rate or stream.guessed_rate,
            codec=stream.codec_context.name,
            audio_codecs=tuple(s.codec_context.name for s in container.streams.audio),
            rotation=rotation,
            duration=_duration(container, stream),
        )


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _output_format(dst: Path):
    """The FFmpeg muxer FFmpeg would pick for `dst`'s extension (the temporary file's name ends in .partial)."""
    import av

    probe = io.BytesIO()
    probe.name = dst.name
    try:
        container = av.open(probe, "w")
    except ValueError:
        raise VideoError(
            f"{dst}: cannot tell the video format from the extension {dst.suffix!r} (use .mp4, .mkv, .mov, ...)"
        ) from None
    try:
        return container.format.name, set(container.supported_codecs)
    finally:
        container.close()


def _even_size(width: int, height: int, pix_fmt: str) -> tuple[int, int]:
    """Largest size <= (width, height) that `pix_fmt`'s chroma subsampling allows."""
    import av

    try:
        components = av.VideoFormat(pix_fmt, 64, 64).components
    except (ValueError, av.error.FFmpegError):
        raise VideoError(f"unknown pixel format {pix_fmt!r}") from None
    step_x = max(64 // c.width for c in components)
    step_y = max(64 // c.height for c in components)
    return width - width % step_x, height - height % step_y


def check_frame_size(
    name: str,
    width: int,
    height: int,
    scale: int,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
) -> None:
    """`VideoError` naming `name` when `width` x `height` frames are over `max_pixels`, or their upscaled
    frames over `max_output_pixels` (the image limits, `image_io`; None disables either)."""
    if max_pixels is not None and width * height > max_pixels:
        raise VideoError(
            f"{name}: {width}x{height} = {width * height:,}-pixel frames are over the limit of {max_pixels:,} "
            "pixels (max_pixels; None disables it)"
        )
    try:
        check_output_size(width, height, scale, max_output_pixels, name)
    except ImageLoadError as error:  # the image rule and its message, as a video error
        raise VideoError(str(error)) from None


# --- memory -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryPlan:
    """Frames per batch, and libx264's look-ahead in frames (None: the encoder's own)."""

    batch_size: int
    lookahead: int | None = None


def plan_memory(
    width: int,
    height: int,
    scale: int,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    codec: str = DEFAULT_CODEC,
    preset: str | None = None,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
) -> MemoryPlan:
    """How to upscale `width` x `height` frames by `scale` within `memory_budget` bytes (None: as asked).

    The estimate, per pixel of an output frame: the encoder (`ENCODER_BYTES_PER_PIXEL`, and
    `LOOKAHEAD_BYTES_PER_PIXEL` per frame of look-ahead), the writer's conversion (`WRITER_BYTES_PER_PIXEL`),
    and per frame of a batch, 3 bytes (uint8 RGB) of input and of output frames in each of the
    `QUEUE_BATCHES` + 2 batches alive. Batches get as many frames as fit (1 to `batch_size`) beside the
    encoder's own look-ahead; when even one frame does not fit, libx264's look-ahead (`rc-lookahead`) is
    shortened to what does, down to none. Other encoders keep theirs (the batch is still sized).
    """
    if memory_budget is None:
        return MemoryPlan(batch_size)
    out_pixels = width * height * scale * scale
    per_frame = (QUEUE_BATCHES + 2) * 3 * (width * height + out_pixels)
    fixed = (ENCODER_BYTES_PER_PIXEL + WRITER_BYTES_PER_PIXEL) * out_pixels
    x264 = codec in X264_CODECS
    lookahead = X264_LOOKAHEAD[preset or "medium"] if x264 else 0
    room = memory_budget - fixed - lookahead * LOOKAHEAD_BYTES_PER_PIXEL * out_pixels
    frames = max(1, min(batch_size, room // per_frame))
    if not x264 or room >= per_frame:
        return MemoryPlan(frames)
    fits = (memory_budget - fixed - per_frame) // (LOOKAHEAD_BYTES_PER_PIXEL * out_pixels)
    return MemoryPlan(frames, max(0, min(lookahead, fits)))


# --- stage 1: the input -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameLook:
    """What the output takes from the first frame: colour tags and orientation (display matrix)."""

    colorspace: int
    color_primaries: int
    color_trc: int
    display_matrix: tuple[int, ...] | None
    rotation: int

    @classmethod
    def of(cls, frame) -> FrameLook:
        matrix = _display_matrix(frame)
        return cls(
            colorspace=frame.colorspace,
            color_primaries=frame.color_primaries,
            color_trc=frame.color_trc,
            display_matrix=matrix,
            rotation=int(frame.rotation or 0) if matrix is not None else 0,
        )


@dataclass(frozen=True)
class FrameBatch:
    """Consecutive video frames between the stages: their timestamps (`pts` in `time_base`) and pixels, uint8
    (N, H, W, 3) RGB (a tensor from the decoder, a numpy array once upscaled); `look` is the first frame's."""

    pts: tuple[int | None, ...]
    time_base: Fraction | None
    pixels: Any
    look: FrameLook

    def __len__(self) -> int:
        return len(self.pts)


@dataclass(frozen=True)
class AudioPiece:
    """Audio of the input stream `stream` between the stages: a packet to copy, or frames decoded to
    transcode."""

    stream: Any
    packet: Any = None
    frames: tuple = ()


class VideoDecoder:
    """Stage 1: the input video. Opening it checks that it is a readable file with a video stream of known size
    (`VideoError` otherwise); `check` tests the limits against the header; `items` decodes.

    Attributes: `name`, `container`, `stream` (the video stream), `audio` (the audio streams), `width`,
    `height`, `rate` (nominal frame rate), `duration` (seconds, None when the container does not say), `frames`
    (as the header says, 0 when it does not).
    """

    def __init__(
        self, path: str | os.PathLike, *, max_frames: int | None = None, max_seconds: float | None = None
    ) -> None:
        self.name = str(path)
        self.max_frames, self.max_seconds = max_frames, max_seconds
        self.container = _open_input(path)
        try:
            self.stream = _video_stream(self.container)
            if self.stream is None:
                audio = ", ".join(s.codec_context.name for s in self.container.streams.audio)
                raise VideoError(
                    f"{self.name}: has no video stream" + (f" (audio only: {audio})" if audio else "")
                )
            self.audio = list(self.container.streams.audio)
            self.width, self.height = self.stream.codec_context.width, self.stream.codec_context.height
            if not self.width or not self.height:
                raise VideoError(f"{self.name}: the video stream has no frame size")
        except BaseException:
            self.container.close()
            raise
        self.stream.thread_type = "AUTO"
        self.rate = self.stream.average_rate or self.stream.guessed_rate
        self.duration = _duration(self.container, self.stream)
        self.frames = self.stream.frames

    def __enter__(self) -> VideoDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    def check(
        self,
        scale: int,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
    ) -> None:
        """The limits against what the header says, before any frame is decoded (`VideoError`): frame size
        (`check_frame_size`), frame count and the video stream's duration."""
        check_frame_size(self.name, self.width, self.height, scale, max_pixels, max_output_pixels)
        if self.max_frames is not None and self.frames > self.max_frames:
            raise VideoError(
                f"{self.name}: {self.frames} frames, over the limit of {self.max_frames} (max_frames)"
            )
        stream_seconds = (
            float(self.stream.duration * self.stream.time_base)
            if self.stream.duration is not None and self.stream.time_base
            else None
        )
        if self.max_seconds is not None and stream_seconds is not None and stream_seconds > self.max_seconds:
            raise VideoError(
                f"{self.name}: {stream_seconds:.3g} s long, over the limit of {self.max_seconds:g} s "
                "(max_seconds)"
            )

    def _check_length(self, count: int, seconds: float | None) -> None:
        """The limits while decoding: the header may say less than the file holds."""
        if self.max_frames is not None and count > self.max_frames:
            raise VideoError(
                f"{self.name}: holds more than {self.max_frames} frames (max_frames; the header said "
                f"{self.frames or 'nothing'}); stopped while decoding"
            )
        if self.max_seconds is not None and seconds is not None and seconds >= self.max_seconds:
            raise VideoError(
                f"{self.name}: runs past {self.max_seconds:g} s (max_seconds; a frame at {seconds:.3f} s); "
                "stopped while decoding"
            )

    def items(self, batch_size: int, transcode: Iterable = ()) -> Iterator[FrameBatch | AudioPiece]:
        """Video frames as `FrameBatch`es of `batch_size` RGB frames (the last may be shorter) and audio as
        `AudioPiece`s, in file order: packets to copy, or decoded frames for the streams in `transcode`."""
        import numpy as np
        import torch

        transcode = set(transcode)
        arrays, pts, look, time_base = [], [], None, None
        count, start = 0, None

        def batch() -> FrameBatch:
            return FrameBatch(tuple(pts), time_base, torch.from_numpy(np.stack(arrays)), look)

        for packet in self.container.demux(self.stream, *self.audio):
            if packet.stream.type == "audio":
                if packet.stream in transcode:  # also the empty packet at the end, which flushes the decoder
                    yield AudioPiece(packet.stream, frames=tuple(packet.decode()))
                elif packet.dts is not None:  # skip the demuxer's empty flush packets
                    yield AudioPiece(packet.stream, packet=packet)
                continue
            for frame in packet.decode():
                count += 1
                if frame.pts is not None and frame.time_base:
                    start = frame.pts if start is None else start
                    seconds = float((frame.pts - start) * frame.time_base)
                else:
                    seconds = (count - 1) / self.rate if self.rate else None
                self._check_length(count, seconds)
                if not arrays:
                    look, time_base = FrameLook.of(frame), frame.time_base
                # The frames become RGB at once (the decoder's own buffers are released), at the stream's size.
                arrays.append(frame.to_ndarray(format="rgb24", width=self.width, height=self.height))
                pts.append(frame.pts)
                if len(arrays) == batch_size:
                    yield batch()
                    arrays, pts = [], []
        if arrays:
            yield batch()


# --- stage 2: the model -------------------------------------------------------------------------------------


def upscale_frames(
    frames,
    model: str | os.PathLike | ESPCNForImageSuperResolution,
    *,
    size: tuple[int, int] | None = None,
    device: str | torch.device | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
):
    """Super-resolve a batch of video frames: uint8 (N, H, W, 3) RGB (numpy array or tensor) -> uint8 numpy
    (N, rH, rW, 3), cropped to `size` = (height, width) when given. The stage 2 of `upscale_video`, public for
    pipelines of one's own (e.g. frames from OpenCV or a camera: convert BGR to RGB first). `model` and `device`
    as in `upscale` (load a model once with `load_model` to reuse it across batches); `max_pixels` and
    `max_output_pixels` as for images (`VideoError`).

    Everything between the two byte arrays runs on the model's device: on a GPU only bytes cross the bus, and
    the float64 rounding of `quantize_uint8` runs there, not on the host. The output is rounded tile by tile
    into the uint8 result (`upscale_tensor`'s tiles: 256 px on a CPU, whole frames on a GPU when they fit), so
    no full-size float copy of the batch is ever made: a 5760x3240 output frame is 56 MB, its float32 copy was
    224 MB and the float64 rounding 448 MB. (Measured before the byte path: on an H100 whose network takes
    1.2 ms per 1080p frame, the SR stage with float frames and host-side rounding ran at 31.6 fps:
    benchmarks/speed_video_cuda.md.)
    """
    import numpy as np
    import torch

    from . import inference
    from .metrics import quantize_uint8, to_unit_float

    model = inference.placed_model(model, device)
    pixels = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (N, H, W, 3) RGB, got {pixels.dtype} {tuple(pixels.shape)}")
    r = model.config.upscale_factor
    count, height, width = pixels.shape[:3]
    check_frame_size("frames", width, height, r, max_pixels, max_output_pixels)
    out_height, out_width = (height * r, width * r) if size is None else size
    device = next(model.parameters()).device
    result = torch.empty((count, out_height, out_width, 3), dtype=torch.uint8, device=device)

    def write(top: int, left: int, tile: torch.Tensor) -> None:
        rows, cols = min(tile.shape[-2], out_height - top), min(tile.shape[-1], out_width - left)
        if rows > 0 and cols > 0:
            part = quantize_uint8(tile[..., :rows, :cols])  # clamps to [0, 1] first
            result[:, top : top + rows, left : left + cols] = part.permute(0, 2, 3, 1)

    batch = to_unit_float(pixels.to(device)).permute(0, 3, 1, 2)
    inference.upscale_tensor(model, batch, write=write)
    return result.cpu().numpy()


# --- stage 3: the output ------------------------------------------------------------------------------------


def _try_mux(format_name: str, add_stream: Callable, packets: Callable) -> bool:
    """True when FFmpeg's `format_name` muxer writes a whole file (trailer included, in memory) with one stream,
    `add_stream(container)`, holding `packets(stream)`."""
    import av

    try:
        with av.open(io.BytesIO(), "w", format=format_name) as output:
            stream = add_stream(output)
            for packet in packets(stream):
                output.mux(packet)
    except (
        av.error.FFmpegError,
        ValueError,
        TypeError,
        NotImplementedError,
    ):  # what PyAV raises for "cannot"
        return False
    return True


def _first_packets(path: str, index: int, count: int = 4) -> list:
    """The first `count` packets of the audio stream `index` (in the file's audio streams) of `path`."""
    found = []
    with _open_input(path) as container:
        for packet in container.demux(container.streams.audio[index]):
            if packet.dts is not None and packet.size:
                found.append(packet)
                if len(found) == count:
                    break
    return found


def _aac_packets(stream) -> list:
    import av
    import numpy as np

    layout = stream.codec_context.layout
    frame = av.AudioFrame.from_ndarray(
        np.zeros((layout.nb_channels, 2048), np.float32), format="fltp", layout=layout
    )
    rate = stream.codec_context.sample_rate
    frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
    return [*stream.encode(frame), *stream.encode(None)]


def plan_audio(source: VideoDecoder, format_name: str, dst: str | os.PathLike) -> dict:
    """How each audio stream of `source` goes into a `format_name` file: "copy" (packet for packet) when the
    format stores it as it is, else `TRANSCODED_AUDIO_CODEC` ("aac"), else `VideoError` naming `dst`. Both are
    tried on a few packets in memory (`_try_mux`), not looked up: FFmpeg's list says mp4 stores PCM, but stereo
    PCM in mp4 fails when the file is finished, after all the work."""
    plan = {}
    for index, stream in enumerate(source.audio):
        packets = _first_packets(source.name, index)

        def copied(out, packets=packets):
            for packet in packets:
                packet.stream = out
            return packets

        if _try_mux(format_name, lambda out, s=stream: out.add_stream_from_template(s), copied):
            plan[stream] = "copy"
        elif _try_mux(format_name, lambda out, s=stream: _audio_encoder(out, s), _aac_packets):
            plan[stream] = TRANSCODED_AUDIO_CODEC
        else:
            raise VideoError(
                f"{dst}: the {format_name} format cannot store the input's {stream.codec_context.name} audio, "
                f"copied or as {TRANSCODED_AUDIO_CODEC}; write to .mkv instead"
            )
    return plan


def _audio_encoder(output, stream):
    """An AAC stream in `output` for the input audio `stream`: same rate and number of channels (in the default
    layout for that number: AAC takes no unnamed channel order, e.g. PCM from Matroska's "2 channels")."""
    context = stream.codec_context
    layout = context.layout.name
    if layout.endswith("channels"):  # "2 channels": no channel order
        layout = DEFAULT_LAYOUTS.get(context.layout.nb_channels, layout)
    return output.add_stream(TRANSCODED_AUDIO_CODEC, rate=context.sample_rate, layout=layout)


def encoder_options(codec: str, crf: int | None, preset: str | None, lookahead: int | None = None) -> dict:
    """The FFmpeg options of the video encoder."""
    options = {"crf": str(crf), **CRF_CODECS[codec]} if crf is not None and codec in CRF_CODECS else {}
    if preset is not None:
        options["preset"] = preset
    if lookahead is not None:
        options["rc-lookahead"] = str(lookahead)
    return options


class VideoEncoder:
    """Stage 3: the output file `path` (`format_name`, e.g. "mp4"). `write` takes the items of
    `VideoDecoder.items` once upscaled: the video stream is added at the first `FrameBatch` (it takes the
    first frame's colour tags and display matrix and `source`'s time base, frame rate and pixel aspect ratio),
    the audio streams after it in input order, copied or transcoded as `audio` says (`plan_audio`); audio that
    comes first waits for it. `finish` flushes the encoders; leaving the `with` block closes the file.

    Attributes: `frames` (written so far), `rotation` (degrees, from the display matrix written).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        format_name: str,
        source: VideoDecoder,
        *,
        size: tuple[int, int],
        codec: str = DEFAULT_CODEC,
        pix_fmt: str = DEFAULT_PIX_FMT,
        options: dict | None = None,
        audio: dict | None = None,
    ) -> None:
        import av

        self.source, self.size, self.codec, self.pix_fmt = source, size, codec, pix_fmt
        self.options, self.audio = options or {}, audio or {}
        self.output = av.open(str(path), "w", format=format_name)
        self.video = None
        self._audio_out: dict = {}
        self._pending: list[AudioPiece] = []
        self.frames = self.rotation = 0

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.output.close()

    def _start(self, look: FrameLook) -> None:
        stream = self.source.stream
        video = self.output.add_stream(self.codec, rate=self.source.rate)
        video.width, video.height = self.size
        video.pix_fmt = self.pix_fmt
        video.time_base = stream.time_base
        video.codec_context.time_base = stream.time_base
        context = video.codec_context
        context.colorspace = (
            look.colorspace if look.colorspace not in (0, 2) else 1
        )  # the input's, else BT.709
        context.color_range = 1  # limited ("tv") range
        if look.color_primaries not in (0, 2):
            context.color_primaries = look.color_primaries
        if look.color_trc not in (0, 2):
            context.color_trc = look.color_trc
        if stream.sample_aspect_ratio:
            context.sample_aspect_ratio = stream.sample_aspect_ratio
        if self.options:
            video.options = self.options
        if look.display_matrix is not None:
            video.set_display_matrix(list(look.display_matrix))
            self.rotation = look.rotation
        self.video = video
        # The video stream first, then the audio streams in their input order.
        for audio in self.source.audio:
            how = self.audio.get(audio, "copy")
            self._audio_out[audio] = (
                self.output.add_stream_from_template(audio)
                if how == "copy"
                else _audio_encoder(self.output, audio)
            )

    def _mux_audio(self, piece: AudioPiece) -> None:
        out = self._audio_out[piece.stream]
        if piece.packet is not None:
            piece.packet.stream = out
            self.output.mux(piece.packet)
        for frame in piece.frames:
            self.output.mux(out.encode(frame))

    def write(self, item: FrameBatch | AudioPiece) -> None:
        import av
        import numpy as np

        if isinstance(item, AudioPiece):
            self._pending.append(item)
        else:
            if self.video is None:
                self._start(item.look)
            colorspace = self.video.codec_context.colorspace
            for pts, array in zip(item.pts, np.asarray(item.pixels), strict=True):  # numpy, or a CPU tensor
                frame = av.VideoFrame.from_ndarray(array, format="rgb24")
                frame = frame.reformat(format=self.pix_fmt, dst_colorspace=colorspace)
                frame.pts, frame.time_base = pts, item.time_base
                self.output.mux(self.video.encode(frame))
            self.frames += len(item)
        if self.video is not None:
            for piece in self._pending:
                self._mux_audio(piece)
            self._pending.clear()

    def finish(self) -> None:
        """Flush the encoders (`VideoError` when no frame was written)."""
        if self.video is None:
            raise VideoError(f"{self.source.name}: the video stream has no decodable frames")
        self.output.mux(self.video.encode(None))
        for audio, out in self._audio_out.items():
            if self.audio.get(audio, "copy") != "copy":
                self.output.mux(out.encode(None))


# --- the three stages together ------------------------------------------------------------------------------


class _Stopped(Exception):
    """Another stage of the pipeline stopped (its error, if any, is raised by the caller)."""


class _Stage(threading.Thread):
    """A pipeline stage in a thread: keeps its exception and stops the other stages when it fails."""

    def __init__(self, name: str, target, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._run, self._stop_event, self.error = target, stop, None

    def run(self) -> None:
        try:
            self._run()
        except _Stopped:
            pass
        except BaseException as error:  # handed to the calling thread, which raises it
            self.error = error
            self._stop_event.set()


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        with contextlib.suppress(queue.Full):
            q.put(item, timeout=0.05)
            return


def _get(q: queue.Queue, stop: threading.Event):
    while True:
        with contextlib.suppress(queue.Empty):
            return q.get(timeout=0.05)
        if stop.is_set():
            raise _Stopped


_END = object()


def run_stages(
    items: Iterable,
    transform: Callable[[Any], Any],
    consume: Callable[[Any], None],
    *,
    size: int = QUEUE_BATCHES,
) -> None:
    """`consume(transform(item))` for every item of `items`, in order, in three overlapping stages: `items` is
    drawn in a thread of its own, `transform` runs in the calling thread and `consume` in another thread, with
    queues of `size` items between them (so at most `size` + 2 items are alive between two stages). The first
    exception of any stage stops the other two and is raised here."""
    stop = threading.Event()
    drawn: queue.Queue = queue.Queue(maxsize=size)
    done: queue.Queue = queue.Queue(maxsize=size)

    def draw() -> None:
        for item in items:
            _put(drawn, item, stop)
        _put(drawn, _END, stop)

    def give() -> None:
        while (item := _get(done, stop)) is not _END:
            consume(item)

    reader, writer = _Stage("espcn-decode", draw, stop), _Stage("espcn-encode", give, stop)
    reader.start()
    writer.start()
    try:
        while (item := _get(drawn, stop)) is not _END:
            _put(done, transform(item), stop)
        _put(done, _END, stop)
    except _Stopped:
        pass
    except BaseException:
        stop.set()
        raise
    finally:
        writer.join()
        stop.set()  # the writer is done: a reader still blocked on a full queue may leave
        reader.join()
    for stage in (reader, writer):
        if stage.error is not None:
            raise stage.error


def _check_options(batch_size, codec, preset, max_frames, max_seconds, memory_budget) -> None:
    import av

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if preset is not None and (preset not in ENCODER_PRESETS or codec not in PRESET_CODECS):
        raise ValueError(
            f"preset={preset!r}: must be one of {ENCODER_PRESETS}, with one of the encoders {PRESET_CODECS} (codec={codec!r})"
        )
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds}")
    if memory_budget is not None and memory_budget < 0:
        raise ValueError(f"memory_budget must be >= 0 bytes or None, got {memory_budget}")
    if codec not in av.codecs_available:
        raise VideoError(f"unknown video encoder {codec!r} in this FFmpeg build")


def _check_not_input(src, dst) -> None:
    """`VideoError` when `dst` is the file `src` (the same path, or a link to it)."""
    src_path, dst_path = Path(src), Path(dst)
    if dst_path.exists() and src_path.exists() and os.path.samefile(dst_path, src_path):
        raise VideoError(f"{dst}: refusing to overwrite the input video")


def _model_scale(model: ESPCNForImageSuperResolution, scale: int | None) -> int:
    """The model's upscale factor; `ValueError` when `scale` is given and differs."""
    r = model.config.upscale_factor
    if scale is not None and scale != r:
        raise ValueError(f"scale={scale} but the model upscales x{r}")
    return r


def _check_storable(dst, format_name: str, supported: set, codec: str) -> None:
    """`VideoError` when the `format_name` muxer lists its codecs (`supported`) and `codec` is not among them."""
    import av

    if supported and av.codec.Codec(codec, "w").canonical_name not in supported:
        raise VideoError(
            f"{dst}: the {format_name} format cannot store {codec} video; pick another extension"
        )


def _upscale_item(
    item: FrameBatch | AudioPiece,
    model: ESPCNForImageSuperResolution,
    size: tuple[int, int],
    max_pixels: int | None,
    max_output_pixels: int | None,
) -> FrameBatch | AudioPiece:
    """Stage 2 of `upscale_video` for one item of `VideoDecoder.items`: a `FrameBatch` upscaled and cropped to
    `size` = (width, height); audio passes as it is."""
    if not isinstance(item, FrameBatch):
        return item
    width, height = size
    pixels = upscale_frames(
        item.pixels, model, size=(height, width), max_pixels=max_pixels, max_output_pixels=max_output_pixels
    )
    return FrameBatch(item.pts, item.time_base, pixels, item.look)


def _write_counted(encoder: VideoEncoder, bar, item: FrameBatch | AudioPiece) -> None:
    """Stage 3 of `upscale_video` for one item: written, and its frames counted on the progress bar."""
    encoder.write(item)
    if isinstance(item, FrameBatch):
        bar.update(len(item))


def _encode_video(
    source: VideoDecoder,
    transform: Callable[[Any], Any],
    src,
    dst,
    format_name: str,
    *,
    batch_size: int,
    audio: dict,
    progress: bool,
    **encoder_args,
) -> VideoEncoder:
    """Run the three stages from `source` through `transform` into `dst` (written atomically, the
    `VideoEncoder` given `encoder_args`), with a progress bar; FFmpeg's errors become `VideoError` naming
    `src` and `dst`. Returns the finished encoder."""
    import av
    from tqdm.auto import tqdm

    transcode = [stream for stream, how in audio.items() if how != "copy"]
    with tqdm(total=source.frames or None, unit="frame", desc=Path(src).name, disable=not progress) as bar:
        try:
            with (
                atomic_path(Path(dst)) as tmp,
                VideoEncoder(tmp, format_name, source, audio=audio, **encoder_args) as encoder,
            ):
                write = functools.partial(_write_counted, encoder, bar)
                run_stages(source.items(batch_size, transcode), transform, write)
                encoder.finish()
        except av.error.FFmpegError as error:
            # named by the files the caller knows, not by the hidden temporary file
            raise VideoError(f"{src} -> {dst}: FFmpeg failed ({_ffmpeg_reason(error)})") from None
    return encoder


def _output_info(
    dst: Path, format_name: str, codec: str, audio: dict, source: VideoDecoder, encoder: VideoEncoder
) -> VideoInfo:
    """What `upscale_video` wrote: `encoder`'s frames, size and rotation, `source`'s rate and duration, and the
    audio codecs as `plan_audio`'s plan `audio` made them."""
    width, height = encoder.size
    return VideoInfo(
        path=str(dst),
        format=format_name,
        width=width,
        height=height,
        frames=encoder.frames,
        rate=source.rate,
        codec=codec,
        audio_codecs=tuple(
            stream.codec_context.name if how == "copy" else how for stream, how in audio.items()
        ),
        rotation=encoder.rotation,
        duration=source.duration,
    )


def upscale_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    model: str | os.PathLike | ESPCNForImageSuperResolution,
    *,
    scale: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    crf: int | None = DEFAULT_CRF,
    codec: str = DEFAULT_CODEC,
    pix_fmt: str = DEFAULT_PIX_FMT,
    preset: str | None = None,
    progress: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS,
    max_frames: int | None = None,
    max_seconds: float | None = None,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
) -> VideoInfo:
    """Super-resolve every frame of the video `src` into `dst` (container chosen by `dst`'s extension).

    Args:
        src: a video file FFmpeg can read (see `is_video`).
        dst: the output file; written atomically, never equal to `src`.
        model: an `ESPCNForImageSuperResolution`, a folder written by `save_pretrained`, or a Hub repo id.
        scale: when given, must equal the model's upscale factor (a guard against the wrong checkpoint).
        batch_size: frames per forward pass, at most (fewer when `memory_budget` needs it).
        device: where the model runs ("cpu", "cuda", ...); default: where the model is.
        crf: constant-quality setting for libx264/libx265/libvpx-vp9/libaom-av1 (0 = lossless with libx264,
            18 = visually lossless, 23 = FFmpeg's default); None leaves the encoder's default.
        codec, pix_fmt: the FFmpeg encoder and pixel format of the output (default H.264, yuv420p).
        preset: the speed preset of libx264/libx265 (`ENCODER_PRESETS`, "ultrafast" ... "veryslow"); None = the
            encoder's default ("medium"). At 1080p the encoder is the slowest stage after the network: on the
            2-core CPU "veryfast" encoded 2.6x and "ultrafast" 8.9x as many frames per second as "medium", at the
            same crf, in files 1% smaller and 22% larger (benchmarks/speed_video_cpu.md).
        progress: show a tqdm bar (frames, frames per second).
        max_pixels, max_output_pixels: refuse frames over these sizes (input, upscaled output; the image
            limits, 36 and 200 Mpx by default), checked from the header before any frame is decoded. None
            disables either.
        max_frames, max_seconds: refuse longer videos (None: no limit), checked against the header and again
            while decoding, so a file that holds more than its header says stops at the limit.
        memory_budget: bytes for the frames in flight and the encoder, beside the process itself; sizes the
            batches and, for libx264, the look-ahead (`plan_memory`). None: `batch_size` and the encoder's
            options as they are.

    Returns: `VideoInfo` of the output. Raises `VideoError` for unreadable input, a limit, or an impossible
    output (all before any frame is decoded, except what only decoding can tell); nothing is left at `dst`
    then.
    """
    if not _have_pyav():
        raise VideoError(f"{src}: reading videos needs PyAV: pip install 'espcn-hf[video]'")
    from .inference import placed_model

    src_path, dst_path = Path(src), Path(dst)
    _check_options(batch_size, codec, preset, max_frames, max_seconds, memory_budget)
    _check_not_input(src, dst)
    model = placed_model(model, device)
    r = _model_scale(model, scale)
    format_name, supported = _output_format(dst_path)

    with VideoDecoder(src_path, max_frames=max_frames, max_seconds=max_seconds) as source:
        source.check(r, max_pixels, max_output_pixels)
        _check_storable(dst, format_name, supported, codec)
        audio = plan_audio(source, format_name, dst_path)
        size = _even_size(source.width * r, source.height * r, pix_fmt)
        plan = plan_memory(
            source.width, source.height, r,
            batch_size=batch_size, codec=codec, preset=preset, memory_budget=memory_budget,
        )  # fmt: skip
        upscale = functools.partial(
            _upscale_item, model=model, size=size, max_pixels=max_pixels, max_output_pixels=max_output_pixels
        )
        encoder = _encode_video(
            source, upscale, src, dst, format_name,
            batch_size=plan.batch_size, audio=audio, progress=progress,
            size=size, codec=codec, pix_fmt=pix_fmt, options=encoder_options(codec, crf, preset, plan.lookahead),
        )  # fmt: skip
    return _output_info(dst_path, format_name, codec, audio, source, encoder)


__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "ENCODER_PRESETS",
    "VIDEO_EXTENSIONS",
    "AudioPiece",
    "FrameBatch",
    "MemoryPlan",
    "VideoDecoder",
    "VideoEncoder",
    "VideoError",
    "VideoInfo",
    "check_frame_size",
    "encoder_options",
    "is_video",
    "plan_audio",
    "plan_memory",
    "probe_video",
    "run_stages",
    "upscale_frames",
    "upscale_video",
]
