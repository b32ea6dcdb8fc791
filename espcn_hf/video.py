"""Video super-resolution: decode with PyAV (the FFmpeg libraries in its wheel), upscale frames in batches, encode.

    from espcn_hf import upscale_video
    upscale_video("clip.mp4", "clip_x3.mp4", "espcn-hf/espcn-x3", crf=18)

Decisions, in the order a reader meets them:

* Detection by content. `is_video(path)` asks FFmpeg, not the extension: any container FFmpeg can demux with a
  video stream counts (.mp4, .mov, .mkv, .webm, .avi, .ts, ...), except still images (FFmpeg's image demuxers,
  `*_pipe` / `image2`) and cover art. An animated GIF or APNG counts as a video only with two or more frames; a
  one-frame GIF is an image (the image path upscales it).
* Streaming. Frames are decoded, batched (`batch_size`), upscaled and encoded as they come, in three stages that
  overlap: decoding and encoding (PyAV/FFmpeg) run in their own threads while the model runs in the caller's
  thread (on a GPU the CPU work then hides behind the network, on a CPU behind torch's parallel sections). Bounded
  queues between the stages keep memory at a few batches plus the encoder's look-ahead, whatever the length.
* Timing. Every output frame keeps its input frame's timestamp (pts in the input stream's time base), so the frame
  count, frame rate and variable frame timing carry over; the nominal rate is the input's.
* Audio streams are copied packet for packet (no re-encoding). Subtitle and data streams are not copied. An audio
  codec the output container cannot store is an error before anything is written (pick another extension).
* Rotation is carried as metadata: the input's display matrix (the phone's "rotate 90") is written unchanged on
  the output stream, so players show the result the same way up as the input; the frames themselves are upscaled
  as stored. Pixel aspect ratio is copied too.
* Colour. Decoded frames become RGB with the input's own colour matrix (BT.601 when untagged, FFmpeg's rule); the
  output is converted with the input's matrix when tagged, BT.709 otherwise, and tagged with it, limited range.
* Encoding defaults to H.264 (libx264) yuv420p at `crf=18`. Formats with chroma subsampling need even sizes: an
  odd output width/height (odd input at x3) loses its last column/row.
* The output is written to a hidden temporary file beside `dst` and renamed at the end (`fileio.atomic_path`): an
  interrupted or failed run leaves no file at `dst`, and an earlier output there stays intact.
* Bad input (missing, empty, corrupt, not a media file, no video stream) raises `VideoError` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import struct
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from .fileio import atomic_path

if TYPE_CHECKING:  # torch and the model are imported when a video is upscaled: the CLI's parser stays light
    import torch

    from .modeling_espcn import ESPCNForImageSuperResolution

DEFAULT_CODEC = "libx264"
DEFAULT_PIX_FMT = "yuv420p"
DEFAULT_CRF = 18
DEFAULT_BATCH_SIZE = 4
# Batches waiting between the decode, SR and encode stages (each stage runs in its own thread): memory is bounded
# by about 2 * QUEUE_BATCHES + 3 batches of frames whatever the video length.
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


class VideoError(ValueError):
    """A video file is missing, unreadable, has no video stream, or cannot be written as asked."""


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
        raise VideoError(f"{name}: not a video file FFmpeg can read ({error})") from None


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
    """True when FFmpeg can read `path` as a video (see the module docstring for GIFs and still images).

    Without PyAV a file counts as a video by its extension alone (GIFs excepted), so that `upscale_video` can say
    which extra to install instead of the file being refused as a broken image."""
    if not _have_pyav():
        suffix = Path(path).suffix.lower()
        return suffix in VIDEO_EXTENSIONS and suffix != ".gif"
    try:
        container = _open_input(path)
    except VideoError:
        return False
    with container:
        stream = _video_stream(container)
        if stream is None or _is_still_image_format(container.format.name):
            return False
        if container.format.name in ANIMATION_FORMATS or stream.codec_context.name in ANIMATION_FORMATS:
            return _has_two_frames(container, stream)
        return True


def _display_matrix(frame) -> list[int] | None:
    for side_data in frame.side_data:
        if "DISPLAYMATRIX" in str(side_data.type):
            return list(struct.unpack("<9i", bytes(side_data)[:36]))
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
            raise VideoError(f"{name}: the video stream cannot be decoded ({error})") from None
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


def _rgb_batch(frames: list, width: int, height: int) -> torch.Tensor:
    """The decoded frames as one uint8 (N, H, W, 3) RGB tensor: it travels to the model's device as bytes (4x less
    than float32) and becomes float there (`upscale_frames`)."""
    import numpy as np
    import torch

    arrays = [f.to_ndarray(format="rgb24", width=width, height=height) for f in frames]
    return torch.from_numpy(np.stack(arrays))


def upscale_frames(
    frames,
    model: str | os.PathLike | ESPCNForImageSuperResolution,
    *,
    size: tuple[int, int] | None = None,
    device: str | torch.device | None = None,
):
    """Super-resolve a batch of video frames: uint8 (N, H, W, 3) RGB (numpy array or tensor) -> uint8 numpy
    (N, rH, rW, 3), cropped to `size` = (height, width) when given. The stage 2 of `upscale_video`, public for
    pipelines of one's own (e.g. frames from OpenCV or a camera: convert BGR to RGB first). `model` and `device`
    as in `upscale` (load a model once with `load_model` to reuse it across batches).

    Everything between the two byte arrays runs on the model's device: on a GPU only bytes cross the bus, and the
    float64 rounding of `quantize_uint8` runs there, not on the host. (Measured before: on an H100 whose network
    takes 1.2 ms per 1080p frame, the SR stage with float frames and host-side rounding ran at 31.6 fps:
    benchmarks/speed_video_cuda.md.)
    """
    import numpy as np
    import torch

    from .inference import placed_model, upscale
    from .metrics import quantize_uint8

    model = placed_model(model, device)
    pixels = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (N, H, W, 3) RGB, got {pixels.dtype} {tuple(pixels.shape)}")
    device = next(model.parameters()).device
    batch = pixels.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    result = upscale(batch, model)
    if size is not None:
        result = result[..., : size[0], : size[1]]
    return quantize_uint8(result).permute(0, 2, 3, 1).contiguous().cpu().numpy()


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
) -> VideoInfo:
    """Super-resolve every frame of the video `src` into `dst` (container chosen by `dst`'s extension).

    Args:
        src: a video file FFmpeg can read (see `is_video`).
        dst: the output file; written atomically, never equal to `src`.
        model: an `ESPCNForImageSuperResolution`, a folder written by `save_pretrained`, or a Hub repo id.
        scale: when given, must equal the model's upscale factor (a guard against the wrong checkpoint).
        batch_size: frames per forward pass.
        device: where the model runs ("cpu", "cuda", ...); default: where the model is.
        crf: constant-quality setting for libx264/libx265/libvpx-vp9/libaom-av1 (0 = lossless with libx264,
            18 = visually lossless, 23 = FFmpeg's default); None leaves the encoder's default.
        codec, pix_fmt: the FFmpeg encoder and pixel format of the output (default H.264, yuv420p).
        preset: the speed preset of libx264/libx265 (`ENCODER_PRESETS`, "ultrafast" ... "veryslow"); None = the encoder's
            default ("medium"). At 1080p the encoder is the slowest stage after the network: on the 2-core CPU
            "veryfast" encoded 2.6x and "ultrafast" 8.9x as many frames per second as "medium", at the same crf,
            in files 1% smaller and 22% larger (benchmarks/speed_video_cpu.md).
        progress: show a tqdm bar (frames, frames per second).

    Returns: `VideoInfo` of the output. Raises `VideoError` for unreadable input or an impossible output.
    """
    if not _have_pyav():
        raise VideoError(f"{src}: reading videos needs PyAV: pip install 'espcn-hf[video]'")
    import av
    from tqdm.auto import tqdm

    from .inference import placed_model

    src_path, dst_path = Path(src), Path(dst)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if preset is not None and (preset not in ENCODER_PRESETS or codec not in PRESET_CODECS):
        raise ValueError(
            f"preset={preset!r}: must be one of {ENCODER_PRESETS}, with one of the encoders {PRESET_CODECS} (codec={codec!r})"
        )
    if dst_path.exists() and src_path.exists() and os.path.samefile(dst_path, src_path):  # links too
        raise VideoError(f"{dst}: refusing to overwrite the input video")
    if codec not in av.codecs_available:
        raise VideoError(f"unknown video encoder {codec!r} in this FFmpeg build")
    model = placed_model(model, device)
    r = model.config.upscale_factor
    if scale is not None and scale != r:
        raise ValueError(f"scale={scale} but the model upscales x{r}")
    format_name, supported = _output_format(dst_path)

    container = _open_input(src_path)
    with container:
        stream = _video_stream(container)
        if stream is None:
            raise VideoError(f"{src}: has no video stream (audio only?)")
        if supported and av.codec.Codec(codec, "w").canonical_name not in supported:
            raise VideoError(
                f"{dst}: the {format_name} format cannot store {codec} video; pick another extension"
            )
        audio_in = list(container.streams.audio)
        audio_codecs = tuple(a.codec_context.name for a in audio_in)
        for audio in audio_in:
            if supported and audio.codec_context.name not in supported:
                raise VideoError(
                    f"{dst}: the {format_name} format cannot store the input's {audio.codec_context.name} audio "
                    "(copied unchanged); write to .mkv instead"
                )
        stream.thread_type = "AUTO"
        in_width, in_height = stream.codec_context.width, stream.codec_context.height
        if not in_width or not in_height:
            raise VideoError(f"{src}: the video stream has no frame size")
        out_width, out_height = _even_size(in_width * r, in_height * r, pix_fmt)
        rate, duration = stream.average_rate or stream.guessed_rate, _duration(container, stream)
        bar = tqdm(total=stream.frames or None, unit="frame", desc=src_path.name, disable=not progress)
        stop = threading.Event()
        # decoded: ("video", frames, uint8 pixels) | ("audio", packet); upscaled: the same with the uint8 SR frames
        decoded: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        upscaled: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        written = {"frames": 0, "rotation": 0}
        try:
            with atomic_path(dst_path) as tmp, av.open(str(tmp), "w", format=format_name) as output:

                def read() -> None:  # stage 1 (thread): demux, decode, convert to RGB, batch
                    batch: list = []
                    for packet in container.demux(stream, *audio_in):
                        if packet.stream.type == "audio":
                            if packet.dts is not None:  # skip the demuxer's empty flush packets
                                _put(decoded, ("audio", packet), stop)
                            continue
                        for frame in packet.decode():
                            batch.append(frame)
                            if len(batch) == batch_size:
                                _put(decoded, ("video", batch, _rgb_batch(batch, in_width, in_height)), stop)
                                batch = []
                    if batch:
                        _put(decoded, ("video", batch, _rgb_batch(batch, in_width, in_height)), stop)
                    _put(decoded, None, stop)

                def start(first) -> av.video.stream.VideoStream:
                    rate = stream.average_rate or stream.guessed_rate
                    video = output.add_stream(codec, rate=rate)
                    video.width, video.height, video.pix_fmt = out_width, out_height, pix_fmt
                    video.time_base = stream.time_base
                    video.codec_context.time_base = stream.time_base
                    # the input's colour matrix, BT.709 (1) when unknown
                    video.codec_context.colorspace = first.colorspace if first.colorspace not in (0, 2) else 1
                    video.codec_context.color_range = 1  # limited ("tv") range
                    if first.color_primaries not in (0, 2):
                        video.codec_context.color_primaries = first.color_primaries
                    if first.color_trc not in (0, 2):
                        video.codec_context.color_trc = first.color_trc
                    if stream.sample_aspect_ratio:
                        video.codec_context.sample_aspect_ratio = stream.sample_aspect_ratio
                    options = (
                        {"crf": str(crf), **CRF_CODECS[codec]}
                        if crf is not None and codec in CRF_CODECS
                        else {}
                    )
                    if preset is not None:
                        options["preset"] = preset
                    if options:
                        video.options = options
                    matrix = _display_matrix(first)
                    if matrix is not None:
                        video.set_display_matrix(matrix)
                        written["rotation"] = int(first.rotation or 0)
                    return video

                def write() -> None:  # stage 3 (thread): RGB -> pix_fmt, encode, mux video and audio in order
                    video, audio_out, pending = None, {}, []  # pending: audio before the first video frame
                    while (item := _get(upscaled, stop)) is not None:
                        if item[0] == "audio":
                            pending.append(item[1])
                        else:
                            _, frames, rgb = item
                            if video is None:
                                video = start(frames[0])
                                # The video stream first, then the audio streams in their input order.
                                audio_out = {a: output.add_stream_from_template(a) for a in audio_in}
                            for frame, array in zip(frames, rgb, strict=True):
                                out = av.VideoFrame.from_ndarray(array, format="rgb24")
                                out = out.reformat(
                                    format=pix_fmt, dst_colorspace=video.codec_context.colorspace
                                )
                                out.pts, out.time_base = frame.pts, frame.time_base
                                output.mux(video.encode(out))
                            written["frames"] += len(frames)
                            bar.update(len(frames))
                        if video is not None:
                            for packet in pending:
                                packet.stream = audio_out[packet.stream]
                                output.mux(packet)
                            pending.clear()
                    if video is None:
                        raise VideoError(f"{src}: the video stream has no decodable frames")
                    output.mux(video.encode(None))

                reader, writer = _Stage("espcn-decode", read, stop), _Stage("espcn-encode", write, stop)
                reader.start()
                writer.start()
                try:  # stage 2 (this thread): super-resolution
                    while (item := _get(decoded, stop)) is not None:
                        if item[0] == "video":
                            _, frames, pixels = item
                            item = (
                                "video",
                                frames,
                                upscale_frames(pixels, model, size=(out_height, out_width)),
                            )
                        _put(upscaled, item, stop)
                    _put(upscaled, None, stop)
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
                    if isinstance(stage.error, av.error.FFmpegError):
                        raise VideoError(f"{src} -> {dst}: FFmpeg failed ({stage.error})") from None
                    if stage.error is not None:
                        raise stage.error
        finally:
            bar.close()
    return VideoInfo(
        path=str(dst_path),
        format=format_name,
        width=out_width,
        height=out_height,
        frames=written["frames"],
        rate=rate,
        codec=codec,
        audio_codecs=audio_codecs,
        rotation=written["rotation"],
        duration=duration,
    )


__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoError",
    "VideoInfo",
    "ENCODER_PRESETS",
    "is_video",
    "probe_video",
    "upscale_frames",
    "upscale_video",
]
