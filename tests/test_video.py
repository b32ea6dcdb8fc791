"""Video files end to end (`espcn_hf.video`) on tiny clips generated here with PyAV: 32x24, 12 frames at 12 fps,
an AAC audio track and a 90-degree display rotation. Each test runs in well under a second."""

from __future__ import annotations

import os
import signal
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

    def failing_upscale(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        return upscale(*args, **kwargs)

    monkeypatch.setattr(espcn_hf.inference, "upscale", failing_upscale)
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
        from espcn_hf import upscale
        calls = []
        def slow(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                open({str(marker)!r}, "w").close()
                time.sleep(60)
            return upscale(*args, **kwargs)
        espcn_hf.inference.upscale = slow
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
    assert all(is_partial_file(p) for p in leftovers)
    upscale_video(clip, target, tiny_checkpoint, progress=False)  # a re-run completes
    assert len(decode(target)) == FRAMES


def test_encoder_failure_in_the_writer_thread_is_one_error_and_no_file(clip, model, tmp_path):
    with pytest.raises(VideoError, match="FFmpeg failed") as error:
        upscale_video(
            clip, tmp_path / "out.mp4", model, pix_fmt="gray16be", progress=False
        )  # libx264 refuses it
    assert str(clip) in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


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
