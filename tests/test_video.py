"""Video files end to end (`espcn_hf.video`) on tiny clips generated here with PyAV: 32x24, 12 frames at 12 fps,
an AAC audio track and a 90-degree display rotation (and a few made for one case: an 8K frame, a clip whose header
lies about its length, PCM audio). Each test runs in a second or two; the ones with a child process in about ten."""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import natural_image, tiny_model
from PIL import Image

av = pytest.importorskip("av")

from espcn_hf import upscale  # noqa: E402
from espcn_hf.fileio import is_partial_file  # noqa: E402
from espcn_hf.metrics import quantize_uint8  # noqa: E402
from espcn_hf.video import (  # noqa: E402
    VideoError,
    _even_size,
    is_video,
    probe_video,
    upscale_frames,
    upscale_video,
)

WIDTH, HEIGHT, FRAMES, RATE, SAMPLE_RATE = 32, 24, 12, 12, 16000
ROOT = Path(__file__).resolve().parents[1]


def clip_frame(index: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A photo-like frame with a square moving right, so consecutive frames differ."""
    frame = natural_image(height, width, seed=index % 3)
    frame[4:10, 2 + 2 * index : 8 + 2 * index] = (250, 40, 40)
    return frame


def write_audio(container, stream, seconds: float = FRAMES / RATE) -> None:
    samples = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE)).astype(
        np.float32
    )
    for start in range(0, len(samples), 1024):
        frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, start, Fraction(1, SAMPLE_RATE)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def make_clip(
    path: Path,
    frames: int = FRAMES,
    audio: bool = True,
    rotation: int | None = 90,
    size=(WIDTH, HEIGHT),
    codec: str = "libx264",
) -> Path:
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=RATE)
        video.width, video.height, video.pix_fmt = *size, "yuv420p"
        video.options = {"crf": "10", **({"b": "0"} if codec == "libvpx-vp9" else {})}
        if rotation is not None:
            video.set_display_rotation(rotation)
        sound = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono") if audio else None
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(clip_frame(i, size[1], size[0]), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, RATE)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            write_audio(container, sound, frames / RATE)
    return path


def decode(path: Path) -> list:
    with av.open(str(path)) as container:
        return [
            (f.pts * f.time_base, f.to_ndarray(format="rgb24"), f.rotation) for f in container.decode(video=0)
        ]


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.fixture(scope="module")
def model():
    return tiny_model(3)


def test_lossless_output_matches_upscale_of_each_frame(clip, model, tmp_path):
    out = tmp_path / "clip_x3.mp4"
    info = upscale_video(clip, out, model, crf=0, pix_fmt="yuv444p", batch_size=5, progress=False)
    assert (info.width, info.height, info.frames, info.rotation) == (3 * WIDTH, 3 * HEIGHT, FRAMES, 90)

    source, result = decode(clip), decode(out)
    assert len(result) == len(source) == FRAMES
    assert [t for t, _, _ in result] == [t for t, _, _ in source]  # timestamps, hence frame rate, kept
    assert probe_video(out).rate == Fraction(RATE)
    assert probe_video(clip).duration == pytest.approx(
        FRAMES / RATE, abs=0.1
    )  # what the Space checks (<= 10 s)
    assert all(rotation == 90 for _, _, rotation in result)  # display matrix carried over
    assert audio_packets(out) == audio_packets(clip)  # audio copied packet for packet
    for (_, lr, _), (_, sr, _) in zip(source, result, strict=True):
        expected = upscale(lr, model)
        assert sr.shape == expected.shape == (3 * HEIGHT, 3 * WIDTH, 3)
        # Lossless H.264 in yuv444p: only the RGB <-> YCbCr rounding differs (a few levels at most).
        assert np.abs(sr.astype(int) - expected.astype(int)).max() <= 3


def test_default_encoding_is_h264_yuv420p_close_to_upscale(clip, model, tmp_path):
    out = tmp_path / "default.mp4"
    upscale_video(clip, out, model, progress=False)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert len(container.streams.audio) == 1
    for (_, lr, _), (_, sr, _) in zip(decode(clip), decode(out), strict=True):
        # The reference is the image path's output with the format's 4:2:0 chroma (BT.709) applied; what is left
        # is H.264 at crf 18 on the random tiny net's noise-like output: about 31-33 dB, colour or frame-order
        # mistakes give < 15 dB.
        expected = av.VideoFrame.from_ndarray(upscale(lr, model), format="rgb24")
        expected = expected.reformat(format="yuv420p", dst_colorspace=1).to_ndarray(format="rgb24")
        error = sr.astype(float) - expected.astype(float)
        assert 10 * np.log10(255**2 / np.mean(error**2)) > 28


def test_upscale_frames_is_the_image_path_on_uint8_batches(model):
    frames = np.stack([clip_frame(i) for i in range(3)])
    out = upscale_frames(frames, model)
    assert out.dtype == np.uint8 and out.shape == (3, 3 * HEIGHT, 3 * WIDTH, 3)
    floats = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    expected = quantize_uint8(upscale(floats, model)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(out, expected)  # the tensor path, the package's rounding rule
    for frame, result in zip(
        frames, out, strict=True
    ):  # the image path rescales by 1/255 (the processor): 1 level
        assert np.abs(result.astype(int) - upscale(frame, model).astype(int)).max() <= 1
    cropped = upscale_frames(torch.from_numpy(frames), model, size=(70, 95))  # a tensor works too
    np.testing.assert_array_equal(cropped, out[:, :70, :95])
    with pytest.raises(ValueError, match="uint8 \\(N, H, W, 3\\)"):
        upscale_frames(frames.astype(np.float32) / 255, model)
    with pytest.raises(ValueError, match="uint8 \\(N, H, W, 3\\)"):
        upscale_frames(frames[0], model)


def test_encoder_preset_is_passed_to_libx264_and_checked(clip, model, tmp_path):
    fast, slow = tmp_path / "ultrafast.mp4", tmp_path / "medium.mp4"
    upscale_video(clip, fast, model, preset="ultrafast", progress=False)
    upscale_video(clip, slow, model, progress=False)
    assert len(decode(fast)) == FRAMES
    # ultrafast turns CABAC off (CAVLC): the H.264 stream says so in its SPS/PPS, whose x264 SEI names the options
    with av.open(str(fast)) as container:
        packet = next(p for p in container.demux(video=0) if p.size)
        assert b"cabac=0" in bytes(packet)
    with av.open(str(slow)) as container:
        packet = next(p for p in container.demux(video=0) if p.size)
        assert b"cabac=1" in bytes(packet)
    for bad in ({"preset": "warp"}, {"preset": "fast", "codec": "libvpx-vp9"}):
        with pytest.raises(ValueError, match="preset="):
            upscale_video(clip, tmp_path / "bad.mkv", model, progress=False, **bad)
    assert not (tmp_path / "bad.mkv").exists()


def test_odd_sizes_lose_one_row_or_column_only_where_chroma_needs_it():
    assert _even_size(99, 75, "yuv420p") == (98, 74)
    assert _even_size(99, 75, "yuv422p") == (98, 75)
    assert _even_size(99, 75, "yuv444p") == (99, 75)


def test_clip_without_audio_and_rotation(model, tmp_path):
    clip = make_clip(tmp_path / "silent.mov", frames=3, audio=False, rotation=None)
    info = upscale_video(clip, tmp_path / "silent_x3.mkv", model, progress=False)
    assert (info.frames, info.rotation, info.audio_codecs) == (3, 0, ())
    assert len(decode(tmp_path / "silent_x3.mkv")) == 3


def test_detection_by_content(clip, tmp_path):
    renamed = tmp_path / "clip.bin"
    renamed.write_bytes(clip.read_bytes())
    assert is_video(renamed)
    frames = [Image.fromarray(clip_frame(i)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(tmp_path / "still.gif")
    frames[0].save(tmp_path / "still.png")
    (tmp_path / "notes.txt").write_text("not a video\n")
    assert is_video(tmp_path / "anim.gif")  # an animated GIF is a video
    assert not is_video(tmp_path / "still.gif")  # a one-frame GIF is an image
    assert not is_video(tmp_path / "still.png")
    assert not is_video(tmp_path / "notes.txt")
    assert not is_video(tmp_path / "missing.mp4")


def test_the_upscale_command_probes_each_input_once(clip, tmp_path, tiny_checkpoint, monkeypatch):
    """`espcn-hf upscale` asks "is it a video?" once per input (for its output name and for the job): batch.py
    owns both, so no process-wide cache is needed."""
    import espcn_hf.batch as batch
    from espcn_hf.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(clip.read_bytes())
    Image.fromarray(clip_frame(0)).save(folder / "still.png")
    probed = []
    real = batch.is_video
    monkeypatch.setattr(batch, "is_video", lambda path: probed.append(Path(path).name) or real(path))
    assert (
        main(["upscale", str(folder), "-o", str(tmp_path / "out"), "--model", str(tiny_checkpoint), "-q"])
        == 0
    )
    assert sorted(probed) == ["clip.mp4", "still.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip_x3.mp4", "still_x3.png"]


def test_webm_vp9_input_detected_by_content(model, tmp_path):
    clip = make_clip(tmp_path / "clip.webm", frames=3, audio=False, rotation=None, codec="libvpx-vp9")
    renamed = tmp_path / "clip.video"
    clip.rename(renamed)
    assert is_video(renamed)
    info = upscale_video(renamed, tmp_path / "clip_x3.mp4", model, progress=False)
    assert (info.width, info.height, info.frames) == (3 * WIDTH, 3 * HEIGHT, 3)


def test_animated_gif_to_mp4(model, tmp_path):
    frames = [Image.fromarray(clip_frame(i)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    info = upscale_video(tmp_path / "anim.gif", tmp_path / "anim.mp4", model, progress=False)
    assert (info.width, info.height, info.frames) == (3 * WIDTH, 3 * HEIGHT, 3)
    assert [t for t, _, _ in decode(tmp_path / "anim.mp4")] == [Fraction(0), Fraction(1, 10), Fraction(1, 5)]


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "missing", "audio-only"])
def test_bad_inputs_raise_one_clear_error(kind, clip, model, tmp_path):
    source = tmp_path / f"{kind}.mp4"
    if kind == "garbage":
        source.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "truncated":  # the mp4 index (moov) is at the end: cut it off
        source.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    elif kind == "empty":
        source.write_bytes(b"")
    elif kind == "audio-only":
        source = tmp_path / "audio.m4a"
        with av.open(str(source), "w") as container:
            write_audio(container, container.add_stream("aac", rate=SAMPLE_RATE, layout="mono"))
    target = tmp_path / "out.mp4"
    with pytest.raises(VideoError) as error:
        upscale_video(source, target, model, progress=False)
    assert str(source) in str(error.value)
    assert "\n" not in str(error.value)
    if kind == "audio-only":
        assert "no video stream" in str(error.value)
        assert not is_video(source)
    assert not target.exists() and not list(tmp_path.glob(".*partial"))


def test_audio_the_container_cannot_hold_is_refused_before_writing(clip, model, tmp_path):
    with pytest.raises(VideoError, match="cannot store"):
        upscale_video(clip, tmp_path / "out.webm", model, codec="libvpx-vp9", progress=False)
    assert not list(tmp_path.iterdir())


def test_exception_mid_stream_leaves_no_file_and_keeps_an_old_output(clip, model, tmp_path, monkeypatch):
    import espcn_hf.inference

    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous good output")
    calls = []
    upscale_tensor = espcn_hf.inference.upscale_tensor  # what the SR stage runs once per batch

    def failing_upscale(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        return upscale_tensor(*args, **kwargs)

    monkeypatch.setattr(espcn_hf.inference, "upscale_tensor", failing_upscale)
    with pytest.raises(RuntimeError, match="injected"):
        upscale_video(clip, target, model, batch_size=4, progress=False)
    assert target.read_bytes() == b"previous good output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_killed_process_leaves_no_file_at_the_output_path(clip, tiny_checkpoint, tmp_path):
    """SIGKILL after the first encoded batch: at most a hidden .partial file remains, never `out.mp4`."""
    target, marker = tmp_path / "out.mp4", tmp_path / "started"
    script = textwrap.dedent(
        f"""
        import time
        import espcn_hf.inference
        import espcn_hf.video as video
        upscale_tensor = espcn_hf.inference.upscale_tensor
        calls = []
        def slow(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                open({str(marker)!r}, "w").close()
                time.sleep(60)
            return upscale_tensor(*args, **kwargs)
        espcn_hf.inference.upscale_tensor = slow
        video.upscale_video({str(clip)!r}, {str(target)!r}, {str(tiny_checkpoint)!r}, batch_size=2, progress=False)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never reached the second batch"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not target.exists()
    leftovers = [p for p in tmp_path.iterdir() if p != marker]
    assert leftovers and all(is_partial_file(p) for p in leftovers)
    for leftover in leftovers:  # the re-run comes a minute later
        os.utime(leftover, (time.time() - 60, time.time() - 60))
    upscale_video(clip, target, tiny_checkpoint, progress=False)  # a re-run completes
    assert len(decode(target)) == FRAMES
    assert not [p for p in tmp_path.iterdir() if is_partial_file(p)]  # and removes what the killed run left


def test_encoder_failure_in_the_writer_thread_is_one_error_and_no_file(clip, model, tmp_path):
    with pytest.raises(VideoError, match="FFmpeg failed") as error:
        upscale_video(
            clip, tmp_path / "out.mp4", model, pix_fmt="gray16be", progress=False
        )  # libx264 refuses it
    assert str(clip) in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_cli_size_limits_apply_to_videos_too(clip, tiny_checkpoint, tmp_path, capsys):
    """--max-output-pixels bounds every frame of a video as it bounds an image (the CLI passed only the encoder
    options to videos, so the library's default limits applied whatever the command line said)."""
    from espcn_hf.cli import main

    target = tmp_path / "clip_x3.mp4"
    argv = [
        "upscale",
        str(clip),
        "-o",
        str(target),
        "--model",
        str(tiny_checkpoint),
        "--max-output-pixels",
        "1000",
    ]
    assert main(argv) == 1 and not target.exists()
    err = capsys.readouterr().err
    assert str(clip) in err and "1,000" in err and "Traceback" not in err


def test_cli_upscales_a_video_and_a_folder_with_videos_and_images(clip, tiny_checkpoint, tmp_path, capsys):
    from espcn_hf.cli import main

    target = tmp_path / "clip_x3.mp4"
    argv = ["upscale", str(clip), "-o", str(target), "--model", str(tiny_checkpoint), "--crf", "23"]
    assert main([*argv, "--preset", "veryfast"]) == 0
    assert len(decode(target)) == FRAMES and "12 frames" in capsys.readouterr().out
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "clip.mov").write_bytes(clip.read_bytes())
    Image.fromarray(clip_frame(0)).save(folder / "still.png")
    (folder / "notes.txt").write_text("skipped\n")
    out = tmp_path / "out"
    assert main(["upscale", str(folder), "-o", str(out), "--model", str(tiny_checkpoint), "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip_x3.mp4", "still_x3.png"]
    assert len(decode(out / "clip_x3.mp4")) == FRAMES
    assert Image.open(out / "still_x3.png").size == (3 * WIDTH, 3 * HEIGHT)
    # --skip-existing leaves complete outputs alone; a bad video is one error line, exit 1
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    capsys.readouterr()
    code = main(["upscale", str(folder), "-o", str(out), "--model", str(tiny_checkpoint), "--skip-existing"])
    captured = capsys.readouterr()
    assert code == 1 and "2 output(s) already there" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.mp4" in errors[0]


def test_a_hard_link_to_the_input_is_the_input(clip, model, tmp_path):
    """Issue 10 item 4 for videos: files are compared by identity (os.path.samefile), not by resolved path."""
    source = tmp_path / "in.mp4"
    source.write_bytes(clip.read_bytes())
    link = tmp_path / "link.mp4"
    os.link(source, link)
    before = source.read_bytes()
    with pytest.raises(VideoError, match="overwrite the input"):
        upscale_video(source, link, model, progress=False)
    assert source.read_bytes() == before


# --- the decoder, the encoder and the runner alone ("One home for each thing") --------------------------------


def test_run_stages_keeps_the_order_and_bounds_what_is_in_flight():
    import threading

    from espcn_hf.video import run_stages

    drawn, seen, threads = [], [], set()

    def items():
        for i in range(40):
            drawn.append(i)
            yield i

    def transform(item):
        threads.add(("transform", threading.current_thread() is threading.main_thread()))
        return item * 2

    def consume(item):
        threads.add(("consume", threading.current_thread() is threading.main_thread()))
        if not seen:
            time.sleep(0.3)  # a slow first write: the other stages fill their queues and wait
            assert len(drawn) <= 2 * 2 + 3  # two queues of 2, one item in each stage
        seen.append(item)

    run_stages(items(), transform, consume, size=2)
    assert seen == [2 * i for i in range(40)]
    assert threads == {("transform", True), ("consume", False)}  # the model runs in the caller's thread


@pytest.mark.parametrize("stage", ["items", "transform", "consume"])
def test_run_stages_raises_the_first_error_of_any_stage_and_stops_the_others(stage):
    import threading

    from espcn_hf.video import run_stages

    drawn = []

    def fails(where, i):
        if stage == where and i == 3:
            raise KeyError(f"failed in {where}")

    def items():
        for i in range(1000):
            drawn.append(i)
            fails("items", i)
            yield i

    def transform(item):
        fails("transform", item)
        return item

    with pytest.raises(KeyError, match=f"failed in {stage}"):
        run_stages(items(), transform, lambda item: fails("consume", item))
    assert len(drawn) < 20  # stopped, not drawn to the end
    assert not [t for t in threading.enumerate() if t.name.startswith("espcn-")]


def test_the_decoder_and_the_encoder_alone_copy_a_clip(clip, tmp_path):
    """Stage 1 and stage 3 without the model: the clip's frames through `VideoDecoder` and `VideoEncoder`
    (lossless) give the same frames, timestamps, rotation and audio packets back."""
    from espcn_hf.video import AudioPiece, FrameBatch, VideoDecoder, VideoEncoder, encoder_options

    target = tmp_path / "copy.mp4"
    with VideoDecoder(clip) as source:
        assert (source.width, source.height, source.rate, source.frames) == (WIDTH, HEIGHT, RATE, FRAMES)
        assert [a.codec_context.name for a in source.audio] == ["aac"]
        items = list(source.items(5))
        batches = [item for item in items if isinstance(item, FrameBatch)]
        assert [len(b) for b in batches] == [5, 5, 2]
        assert batches[0].pixels.dtype == torch.uint8 and batches[0].pixels.shape == (5, HEIGHT, WIDTH, 3)
        assert batches[0].look.rotation == 90
        assert sum(isinstance(item, AudioPiece) for item in items) == len(audio_packets(clip))
        with VideoEncoder(
            target,
            "mp4",
            source,
            size=(WIDTH, HEIGHT),
            pix_fmt="yuv444p",
            options=encoder_options("libx264", 0, None),
        ) as encoder:
            for item in items:
                encoder.write(item)
            encoder.finish()
        assert (encoder.frames, encoder.rotation) == (FRAMES, 90)
    source_frames, copied = decode(clip), decode(target)
    assert [t for t, _, _ in copied] == [t for t, _, _ in source_frames]
    assert all(rotation == 90 for _, _, rotation in copied)
    for (_, a, _), (_, b, _) in zip(source_frames, copied, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 3  # RGB <-> YCbCr rounding only
    assert audio_packets(target) == audio_packets(clip)


# --- limits and memory ("No wrong answers, no lost batches") ---------------------------------------------------


def _count_sr_calls(monkeypatch) -> list:
    import espcn_hf.inference

    calls, real = [], espcn_hf.inference.upscale_tensor
    monkeypatch.setattr(
        espcn_hf.inference, "upscale_tensor", lambda *a, **k: calls.append(a[1].shape[0]) or real(*a, **k)
    )
    return calls


def test_frames_over_the_size_limits_are_refused_from_the_header_before_decoding(
    model, tmp_path, monkeypatch
):
    """A 7680x4320 video at x3 (299 Mpx frames out, over the 200 Mpx output limit) was refused only after a
    batch of frames was decoded (5.8 GB peak, 15 s); the header decides now, before any frame is decoded."""
    from espcn_hf.video import VideoDecoder

    big = tmp_path / "8k.mp4"
    with av.open(str(big), "w") as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = 7680, 4320, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        frame = av.VideoFrame.from_ndarray(np.zeros((4320, 7680, 3), np.uint8), format="rgb24")
        frame.pts, frame.time_base = 0, Fraction(1, RATE)
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))

    def never(*args, **kwargs):
        raise AssertionError("a frame was decoded")

    monkeypatch.setattr(VideoDecoder, "items", never)
    started = time.monotonic()
    with pytest.raises(VideoError, match="output limit of 200,000,000") as error:
        upscale_video(big, tmp_path / "out.mp4", model, progress=False)
    assert str(big) in str(error.value) and "23040x12960" in str(error.value)
    assert time.monotonic() - started < 5
    small = make_clip(tmp_path / "small.mp4", frames=2, audio=False)
    with pytest.raises(VideoError, match="max_pixels"):
        upscale_video(small, tmp_path / "out.mp4", model, progress=False, max_pixels=WIDTH * HEIGHT - 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["8k.mp4", "small.mp4"]


def test_batches_and_the_encoder_look_ahead_follow_the_memory_budget(clip, model, tmp_path, monkeypatch):
    """A 1080p video at x3 peaked at 4.1 GB with the default options (batches of 4 frames of 5760x3240, and
    libx264's 40 frames of look-ahead at that size): the batch and the look-ahead now come from a memory budget
    that keeps a default run under about 2 GB; small videos run as asked."""
    from espcn_hf.video import (
        DEFAULT_MEMORY_BUDGET,
        ENCODER_BYTES_PER_PIXEL,
        LOOKAHEAD_BYTES_PER_PIXEL,
        WRITER_BYTES_PER_PIXEL,
        MemoryPlan,
        plan_memory,
    )

    full_hd = plan_memory(1920, 1080, 3)
    assert full_hd.batch_size == 1 and full_hd.lookahead is not None and full_hd.lookahead < 40
    out = 5760 * 3240
    estimate = (
        ENCODER_BYTES_PER_PIXEL + WRITER_BYTES_PER_PIXEL + full_hd.lookahead * LOOKAHEAD_BYTES_PER_PIXEL
    ) * out + 4 * 3 * (1920 * 1080 + out)
    assert estimate <= DEFAULT_MEMORY_BUDGET <= 1.5e9
    assert plan_memory(640, 360, 3) == MemoryPlan(4)  # 1080p out: as asked
    assert plan_memory(640, 360, 3, batch_size=16) == MemoryPlan(16)
    assert plan_memory(1920, 1080, 3, codec="libvpx-vp9") == MemoryPlan(
        1
    )  # other encoders keep their options
    assert plan_memory(1920, 1080, 3, batch_size=8, memory_budget=None) == MemoryPlan(8)

    calls = _count_sr_calls(monkeypatch)
    upscale_video(clip, tmp_path / "small.mp4", model, progress=False, batch_size=5)
    assert calls == [5, 5, 2]
    calls.clear()
    target = tmp_path / "tight.mp4"
    upscale_video(clip, target, model, progress=False, batch_size=5, memory_budget=0)
    assert calls == [1] * FRAMES and len(decode(target)) == FRAMES
    for path, setting in ((tmp_path / "small.mp4", b"rc_lookahead=40"), (target, b"mbtree=0")):
        with av.open(str(path)) as container:
            assert setting in bytes(
                next(p for p in container.demux(video=0) if p.size)
            )  # x264's settings SEI


def test_upscale_frames_never_holds_a_float_copy_of_the_frames(tiny_checkpoint):
    """The SR stage kept a float32 copy of the upscaled batch and a float64 one for the rounding (a 1080p frame
    at x3: 56 MB as bytes, 224 MB and 448 MB as floats); tiles are rounded into the uint8 result now. Peak RSS
    growth for one 720p frame at x3 (3840x2160, 25 MB out), one thread, in a child process: 353 MB before."""
    script = textwrap.dedent(
        f"""
        import resource, numpy as np, torch
        torch.set_num_threads(1)
        from espcn_hf.pretrained import load_model
        from espcn_hf.video import upscale_frames
        model = load_model({str(tiny_checkpoint)!r})
        frames = np.zeros((1, 720, 1280, 3), np.uint8)
        upscale_frames(frames[:, :64, :64], model)  # warm-up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert upscale_frames(frames, model).shape == (1, 2160, 3840, 3)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    growth_mb = int(result.stdout.split()[-1])
    assert growth_mb < 150, (
        growth_mb
    )  # the output (25 MB), the input as floats (11 MB) and 256-px tiles: 87 MB


def _lying_clip(path: Path, frames: int = 1800) -> Path:
    """A Matroska clip of `frames` frames at 30 fps (60 s) whose header says it lasts 1 s."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), i % 200, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = path.read_bytes()
    duration = b"\x44\x89\x88" + struct.pack(">d", frames / 30 * 1000)  # Segment Duration, milliseconds
    assert data.count(duration) == 1
    data = data.replace(duration, b"\x44\x89\x88" + struct.pack(">d", 1000.0))
    data = data.replace(b"00:01:00.000000000", b"00:00:01.000000000")  # the stream's DURATION tag
    path.write_bytes(data)
    return path


def test_a_header_that_lies_about_the_length_stops_at_the_limit_while_decoding(model, tmp_path, monkeypatch):
    """A clip that declares 1 s and holds 1,800 frames passed the length checks and was processed in full:
    `max_seconds` and `max_frames` are enforced while decoding, with one error naming the file and the limit,
    and no output file."""
    liar = _lying_clip(tmp_path / "liar.mkv")
    info = probe_video(liar)
    assert info.duration == pytest.approx(1.0) and info.frames == 0  # what a pre-check sees
    calls = _count_sr_calls(monkeypatch)
    target = tmp_path / "out.mp4"
    with pytest.raises(
        VideoError, match=r"max_seconds; a frame at 10\.000 s\); stopped while decoding"
    ) as error:
        upscale_video(liar, target, model, progress=False, max_seconds=10)
    assert str(liar) in str(error.value) and "past 10 s" in str(error.value)
    assert sum(calls) <= 300  # the first 10 s at most, not 1,800 frames
    calls.clear()
    with pytest.raises(VideoError, match="holds more than 50 frames") as error:
        upscale_video(liar, target, model, progress=False, max_frames=50)
    assert str(liar) in str(error.value) and sum(calls) <= 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["liar.mkv"]
    # An honest header is refused before anything is decoded.
    honest = make_clip(tmp_path / "honest.mp4", audio=False)
    calls.clear()
    with pytest.raises(VideoError, match=f"{FRAMES} frames, over the limit of 5"):
        upscale_video(honest, target, model, progress=False, max_frames=5)
    with pytest.raises(VideoError, match="over the limit of 0.5 s"):
        upscale_video(honest, target, model, progress=False, max_seconds=0.5)
    assert calls == [] and not target.exists()
    assert (
        upscale_video(honest, target, model, progress=False, max_frames=FRAMES, max_seconds=1).frames
        == FRAMES
    )
    for bad in ({"max_frames": 0}, {"max_seconds": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            upscale_video(honest, target, model, progress=False, **bad)


# --- audio and bad files --------------------------------------------------------------------------------------


def _clip_with_pcm(path: Path, layout: str = "stereo", rate: int = 48000) -> Path:
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=rate, layout=layout)
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(clip_frame(i), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, RATE)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = (0.2 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
        channels = 2 if layout == "stereo" else 1
        for start in range(0, rate, 1000):
            chunk = np.repeat(samples[None, start : start + 1000], channels, axis=0)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return path


def test_audio_the_output_cannot_store_is_transcoded_to_aac(model, tmp_path):
    """Stereo PCM in .mp4 passed the codec check and failed at the trailer with av.error.ArgumentError naming
    the hidden temporary file, after all the work. It is transcoded to AAC now (same rate and channels, same
    length); PCM goes on being copied where the format stores it."""
    source = _clip_with_pcm(tmp_path / "pcm.mkv")
    target = tmp_path / "out.mp4"
    info = upscale_video(source, target, model, progress=False)
    assert info.audio_codecs == ("aac",) and info.frames == FRAMES
    with av.open(str(target)) as container:
        audio = container.streams.audio[0]
        assert (audio.codec_context.name, audio.codec_context.channels, audio.codec_context.sample_rate) == (
            "aac",
            2,
            48000,
        )
        samples = sum(frame.samples for frame in container.decode(audio))
    assert 48000 <= samples <= 48000 + 1024  # one AAC frame of padding at most
    assert len(decode(target)) == FRAMES
    kept = upscale_video(source, tmp_path / "out.mov", model, progress=False)
    assert kept.audio_codecs == ("pcm_s16le",)
    assert b"".join(audio_packets(tmp_path / "out.mov")) == b"".join(
        audio_packets(source)
    )  # mov re-chunks PCM


def test_a_truncated_or_audio_only_mp4_is_one_clear_video_error_on_the_cli(
    clip, tiny_checkpoint, tmp_path, capsys
):
    """The command asks `is_video` first: a truncated .mp4 or an audio-only .mp4 was taken for an image and
    refused with "a video file name, but the input is an image" (exit 2). They are broken videos: `upscale_video`
    says what is wrong, on one line naming the file (exit 1)."""
    from espcn_hf.cli import main

    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    sound = tmp_path / "sound.mp4"
    with av.open(str(sound), "w") as container:
        write_audio(container, container.add_stream("aac", rate=SAMPLE_RATE, layout="mono"))
    expected = {
        truncated: "not a video file FFmpeg can read (Invalid data found when processing input): damaged, truncated",
        sound: "has no video stream (audio only: aac)",
    }
    for source, message in expected.items():
        assert is_video(source)
        with pytest.raises(VideoError, match=re.escape(message)):
            upscale_video(source, tmp_path / "out.mp4", tiny_checkpoint, progress=False)
        target = tmp_path / f"{source.stem}_x3.mp4"
        capsys.readouterr()
        assert main(["upscale", str(source), "-o", str(target), "--model", str(tiny_checkpoint), "-q"]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and str(source) in errors[0] and message in errors[0], errors
        assert not target.exists()
    assert not is_video(tmp_path / "missing.mp4")
