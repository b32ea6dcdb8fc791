"""The Gradio Space: the handler on good and bad images, the launched app through gradio_client, and a real
browser (Chromium through Playwright) driving the page. A tiny random x3 model and the packaged x2/x4 weights serve.

    pytest tests/test_space.py
    # the deploy rehearsal (clean venv, offline Hub cache, Chromium) writes benchmarks/space_screenshot.png:
    python scripts/rehearse_space.py
"""

from __future__ import annotations

import io
import os
import re
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import load_script
from PIL import Image

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, ESPCNImageProcessor
from espcn_hf.pretrained import HUB_REPO_IDS

gr = pytest.importorskip("gradio")

REPO_ROOT = Path(__file__).resolve().parents[1]
SPACE_DIR = REPO_ROOT / "space"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _load_app():
    # registered in sys.modules: gradio inspects the source of the app's component subclass
    return load_script(SPACE_DIR / "app.py", "espcn_space_app", register=True)


@pytest.fixture(scope="module")
def local_x3(tmp_path_factory) -> Path:
    """A tiny random x3 model folder, served through ESPCN_HF_REPO_X3 (x2 and x4 use the packaged weights)."""
    folder = tmp_path_factory.mktemp("local") / "espcn-x3"
    torch.manual_seed(3)
    config = ESPCNConfig(upscale_factor=3, hidden_channels=[8, 8], kernel_sizes=[3, 3, 3])
    ESPCNForImageSuperResolution(config).save_pretrained(folder)
    ESPCNImageProcessor(upscale_factor=3).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def app(local_x3):
    """The app module, offline: x3 from a local folder given in ESPCN_HF_REPO_X3, x2/x4 from the packaged weights
    (the Hub cannot be reached and its cache does not hold them)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ESPCN_HF_REPO_X3", str(local_x3))
        patch.delenv("ESPCN_HF_REPO_X2", raising=False)
        patch.delenv("ESPCN_HF_REPO_X4", raising=False)
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # read at import, so set it too
        module = _load_app()
        module.get_model.cache_clear()
        yield module
        module.get_model.cache_clear()


def _png(tmp_path: Path, image: Image.Image, name: str = "in.png") -> str:
    path = tmp_path / name
    image.save(path)
    return str(path)


def _photo(width: int = 30, height: int = 24, mode: str = "RGB") -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x * y) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb).convert(mode)


def _check_result(result, scale: int, size: tuple[int, int]):
    (bicubic_path, espcn_path), info, download = result
    expected = (size[0] * scale, size[1] * scale)
    assert Image.open(bicubic_path).size == expected
    assert Image.open(espcn_path).size == expected
    assert download == espcn_path and Image.open(download).format == "PNG"
    assert f"**{expected[0]}×{expected[1]}**" in info
    assert re.search(r"model time \*\*\d+ ms\*\*", info)
    return info


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_handler_upscales_by_the_scale(app, tmp_path, scale):
    info = _check_result(app.super_resolve(_png(tmp_path, _photo()), scale, False), scale, (30, 24))
    if scale == 3:
        assert "Model: espcn-x3 (local folder)." in info  # the folder's name, not its server path
    else:  # offline and not in the Hub cache: the packaged copy, said neutrally, with a link to the repo
        assert (
            f"Model: packaged weights espcn-x{scale} ([espcn-hf/espcn-x{scale}](https://huggingface.co/"
            in info
        )
        assert "Error" not in info


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "P", "I;16", "CMYK"])
def test_handler_accepts_odd_modes(app, tmp_path, mode):
    if mode == "I;16":
        ramp = (np.arange(24 * 30, dtype=np.uint16).reshape(24, 30) * 90).astype(np.uint16)
        image = Image.fromarray(ramp)  # uint16 -> a 16-bit grayscale image
        assert image.mode == "I;16"
    else:
        image = _photo(mode=mode)
    path = _png(tmp_path, image, "odd.tif" if mode == "CMYK" else "odd.png")
    result = app.super_resolve(path, 3, False)
    _check_result(result, 3, (30, 24))
    (bicubic_path, espcn_path), _, _ = result
    expected = {"RGBA": "RGBA", "L": "L", "LA": "LA", "P": "RGB", "I;16": "L", "CMYK": "RGB"}[mode]
    assert (
        Image.open(espcn_path).mode == Image.open(bicubic_path).mode == expected
    )  # grayscale stays untinted


def test_handler_keeps_transparency(app, tmp_path):
    image = _photo(mode="RGBA")
    image.putalpha(Image.fromarray(np.full((24, 30), 77, dtype=np.uint8)))
    (_, espcn_path), _, _ = app.super_resolve(_png(tmp_path, image), 2, False)
    result = Image.open(espcn_path)
    assert result.mode == "RGBA" and result.getchannel("A").getextrema() == (77, 77)


def test_handler_accepts_bytes_and_pil(app):
    buffer = io.BytesIO()
    _photo().save(buffer, format="JPEG")
    _check_result(app.super_resolve(buffer.getvalue(), 2, False), 2, (30, 24))
    _check_result(app.super_resolve(_photo(), "x4", False), 4, (30, 24))


def test_downscale_first_makes_a_real_lr_input(app, tmp_path):
    path = _png(tmp_path, _photo(61, 47))  # not a multiple of 3: cropped to 60x45 first
    info = _check_result(app.super_resolve(path, 3, True), 3, (20, 15))
    assert "Downscaled first: 60×45 → 20×15" in info
    assert re.search(
        r"PSNR-Y / SSIM-Y against the original: bicubic [\d.]+ dB / 0\.\d{4}, ESPCN \*\*[\d.]+ dB / 0\.\d{4}\*\*",
        info,
    )


def test_each_request_gets_its_own_output_file(app, tmp_path):
    path = _png(tmp_path, _photo())
    first, second = app.super_resolve(path, 2, False)[2], app.super_resolve(path, 2, False)[2]
    assert first != second and Path(first).parent != Path(second).parent


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: None, "Upload an image"),
        (lambda tmp: b"\x89PNG\r\n\x1a\n" + os.urandom(200), "cannot be used as an image"),
        (lambda tmp: _text_file(tmp), "not an image file"),
        (lambda tmp: _truncated_png(tmp), "cannot be used as an image"),
        (lambda tmp: _png(tmp, Image.new("RGB", (1001, 1000))), "1,001,000 pixels"),
        (lambda tmp: _png(tmp, Image.new("L", (5000, 4000))), "20,000,000 pixels"),
        (lambda tmp: _png(tmp, Image.new("RGB", (1, 40))), "too small"),
    ],
    ids=["none", "corrupt-bytes", "text-file", "truncated", "over-input-limit", "huge", "tiny"],
)
def test_bad_inputs_give_a_friendly_error(app, tmp_path, make, message):
    with pytest.raises(gr.Error) as error:
        app.super_resolve(make(tmp_path), 3, False)
    text = str(error.value.message)
    assert message in text
    assert "Traceback" not in text and "Error" not in text  # no exception names
    assert str(tmp_path) not in text and "/tmp" not in text  # no server paths


def test_huge_upload_is_refused_from_the_header(app, tmp_path, monkeypatch):
    """A 16 Mpx image is refused (as is, and even downscaled x2) before a single pixel is decoded."""
    from PIL import ImageFile

    path = _png(tmp_path, Image.new("RGB", (4000, 4000), (90, 120, 150)))
    decoded = []
    original_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or original_load(self))
    with pytest.raises(gr.Error, match="16,000,000 pixels; this demo upscales inputs of up to 1,000,000"):
        app.super_resolve(path, 3, False)
    with pytest.raises(gr.Error, match="Even downscaled by 2, the input would be 2000×2000"):
        app.super_resolve(path, 2, True)
    assert decoded == []
    bomb = _png(tmp_path, Image.new("1", (20_000, 10_000)), "bomb.png")  # over Pillow's own bomb limit
    with pytest.raises(gr.Error, match="far over the limit"):
        app.super_resolve(bomb, 4, True)
    assert decoded == []


def test_upload_over_the_file_size_limit_is_refused(app, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * app.MAX_FILE_BYTES)
    with pytest.raises(gr.Error, match="over the upload limit of 20MB"):
        app.super_resolve(str(big), 3, False)


def test_big_image_is_accepted_after_downscale_first(app, tmp_path):
    path = _png(tmp_path, _photo(1200, 840))  # 1.008 Mpx: refused as is, 400x280 after x3 downscaling
    with pytest.raises(gr.Error, match="Crop it"):
        app.super_resolve(path, 3, False)
    _check_result(app.super_resolve(path, 3, True), 3, (400, 280))


def _text_file(tmp: Path) -> str:
    path = tmp / "notes.png"
    path.write_text("this is not an image\n")
    return str(path)


def _truncated_png(tmp: Path) -> str:
    buffer = io.BytesIO()
    _photo(64, 64).save(buffer, format="PNG")
    path = tmp / "truncated.png"
    path.write_bytes(buffer.getvalue()[:-120])
    return str(path)


def test_unreachable_hub_falls_back_to_the_packaged_weights(app, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    app.get_model.cache_clear()
    try:
        model, source = app.get_model(2)
    finally:
        app.get_model.cache_clear()
    assert model.config.upscale_factor == 2
    assert source.startswith("Model: packaged weights espcn-x2 (")  # neutral: no cause, no exception name
    assert "Error" not in source and "reach" not in source


def test_no_model_at_all_is_a_friendly_error(app, monkeypatch, tmp_path):
    monkeypatch.setenv("ESPCN_HF_REPO_X4", str(tmp_path / "no-such-model"))
    monkeypatch.setattr("espcn_hf.pretrained.WEIGHTS_DIR", tmp_path)  # and nothing packaged
    app.get_model.cache_clear()
    try:
        with pytest.raises(gr.Error, match="The x4 model is not available"):
            app.get_model(4)
    finally:
        app.get_model.cache_clear()


def test_space_readme_front_matter():
    text = (SPACE_DIR / "README.md").read_text()
    front = yaml.safe_load(re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL).group(1))
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py"
    assert front["sdk_version"] == gr.__version__
    assert front["models"] == [HUB_REPO_IDS[s] for s in sorted(HUB_REPO_IDS)]
    assert {"title", "emoji", "colorFrom", "colorTo", "license"} <= set(front)
    assert len(front["short_description"]) <= 60  # the Hub's limit
    requirements = (SPACE_DIR / "requirements.txt").read_text()
    assert f"gradio=={gr.__version__}" in requirements
    # espcn_hf is uploaded as a folder, not installed: its core dependencies must all be listed
    import tomllib

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    listed = {
        re.split(r"[<>=!~ \[]", line)[0].lower() for line in requirements.splitlines() if line[:1].isalpha()
    }
    needed = {re.split(r"[<>=!~ \[]", dep)[0].lower() for dep in pyproject["project"]["dependencies"]}
    assert needed <= listed, f"missing from space/requirements.txt: {needed - listed}"


def test_examples_are_real_photos_with_readable_labels_and_stated_sources(app):
    readme = (SPACE_DIR / "README.md").read_text()
    assert len(app.EXAMPLES) >= 3
    for name, scale, downscale_first, label in app.EXAMPLES:
        path = app.EXAMPLES_DIR / name
        assert path.stat().st_size < 200_000
        with Image.open(path) as image:
            assert image.mode == "RGB" and min(image.size) >= 200  # a photo, not a thumbnail
        assert scale in (2, 3, 4) and isinstance(downscale_first, bool)
        assert f"x{scale}" in label and not re.search(r"\b(true|false)\b", label, re.IGNORECASE)
        assert f"`{name}`" in readme  # each file's source is stated
    shipped = {p.name for p in app.EXAMPLES_DIR.iterdir() if p.suffix == ".png"}
    assert shipped == {name for name, *_ in app.EXAMPLES}  # no synthetic leftovers
    for source in ("Set5", "Set14", "BSD100", "Licence"):
        assert source in readme


def test_page_links_to_models_paper_and_code(app):
    demo = app.build_demo()
    config = demo.get_config_file()
    markdown = " ".join(
        str(c["props"].get("value", "")) for c in config["components"] if c["type"] == "markdown"
    )
    for repo in HUB_REPO_IDS.values():
        assert f"https://huggingface.co/{repo}" in markdown
    assert "https://arxiv.org/abs/1609.05158" in markdown and app.CODE_URL in markdown
    dataset = next(c for c in config["components"] if c["type"] == "dataset")
    assert dataset["props"]["sample_labels"] == [label for *_, label in app.EXAMPLES]


# ----------------------------------------------------------------------------------------------------------------
# The launched app
# ----------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(app):
    demo = app.build_demo()
    port = _free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def test_launched_app_through_gradio_client(server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False, download_files=str(tmp_path / "downloads"))
    image = _photo(40, 28)
    slider, info, download = client.predict(
        handle_file(_png(tmp_path, image)), 3, False, api_name="/super_resolve"
    )
    before, after = slider
    assert Image.open(before).size == Image.open(after).size == (120, 84)
    assert Image.open(download).size == (120, 84)
    assert "**120×84**" in info

    from gradio_client.exceptions import AppError

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(AppError, match="cannot be used as an image") as error:
        client.predict(handle_file(str(bad)), 3, False, api_name="/super_resolve")
    assert "/tmp" not in str(error.value) and "Error" not in str(error.value)


def _folder_bytes(*folders: Path) -> int:
    return sum(
        p.stat().st_size for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file()
    )


def test_burst_keeps_the_temp_folders_bounded(app, tmp_path, monkeypatch):
    """A bounded burst on 127.0.0.1: every request is served, an upload over max_file_size is refused before it is
    stored, and the temp folders (gradio's cache and the per-request outputs) shrink back once the results age out
    (here after 4 s instead of the Space's 10 minutes)."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    cache, outputs = tmp_path / "gradio-cache", tmp_path / "outputs"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    monkeypatch.setattr(app, "OUTPUT_ROOT", outputs)
    monkeypatch.setattr(app, "DELETE_CACHE", (1, 4))
    monkeypatch.setattr(app, "OUTPUT_MAX_AGE_S", 4)
    demo = app.build_demo()
    port = _free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(
            f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path / "downloads")
        )
        before = _folder_bytes(cache, outputs)
        photos = [_png(tmp_path, _photo(96 + i, 64), f"burst{i}.png") for i in range(8)]

        def one(path):
            _, _, download = client.predict(handle_file(path), 4, False, api_name="/super_resolve")
            return Image.open(download).size

        with ThreadPoolExecutor(max_workers=8) as pool:
            sizes = list(pool.map(one, photos))
        assert sizes == [((96 + i) * 4, 256) for i in range(8)]
        peak = _folder_bytes(cache, outputs)
        assert peak > before  # the results were there ...

        huge = tmp_path / "huge.png"
        huge.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (app.MAX_FILE_BYTES + 1024))
        with pytest.raises(Exception, match="(?i)file size|too large|exceeds"):
            client.predict(handle_file(str(huge)), 3, False, api_name="/super_resolve")
        assert not [p for p in cache.rglob("huge*")]  # ... the oversize upload was never stored

        time.sleep(4.5)  # the results age out ...
        last = _png(tmp_path, _photo(20, 20), "last.png")
        client.predict(
            handle_file(last), 2, False, api_name="/super_resolve"
        )  # this request sweeps old outputs
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _folder_bytes(cache, outputs) > before + 100_000:
            time.sleep(0.5)  # ... and gradio's sweep (every second) removes the cached copies
        after = _folder_bytes(cache, outputs)
        print(
            f"\nburst of 8 x4 requests: temp folders {before:,} B before, {peak:,} B after, {after:,} B later"
        )
        assert after <= before + 100_000 < peak
    finally:
        demo.close()


def _rehearsal_module():
    return load_script("scripts/rehearse_space.py", "rehearse_space")


def test_space_upload_starts_offline_on_the_hub_cache_with_its_default_repo_ids(tmp_path):
    """The Space folder as uploaded (app.py, README, requirements, examples, espcn_hf/ beside app.py) started with
    `python app.py` and HF_HUB_OFFLINE=1 serves espcn-hf/espcn-x2/x3/x4 from a Hub cache holding their push folders
    (tiny models here; scripts/rehearse_space.py does the same with the real ones in a clean venv)."""
    from gradio_client import Client, handle_file

    rehearse = _rehearsal_module()
    space = rehearse.build_space_folder(tmp_path / "space")
    assert {p.name for p in space.iterdir()} == {
        "app.py",
        "README.md",
        "requirements.txt",
        "examples",
        "espcn_hf",
    }
    assert not list(space.rglob("__pycache__")) and not list(space.rglob("*.py[io]"))
    assert {p.name for p in (space / "examples").iterdir()} == {name for name, *_ in _load_app().EXAMPLES}

    cache, runtime, log = tmp_path / "hub-cache", tmp_path / "runtime", tmp_path / "app.log"
    runtime.mkdir()
    port = rehearse.free_port()
    # The app loads its models on the first request, so the cache is laid out while it starts.
    process = rehearse.start_space(sys.executable, space, rehearse.space_env(cache, port, runtime), log)
    try:
        for scale, repo_id in HUB_REPO_IDS.items():
            torch.manual_seed(scale)
            tiny = tmp_path / "tiny" / f"espcn-x{scale}"
            config = ESPCNConfig(upscale_factor=scale, hidden_channels=[8, 8], kernel_sizes=[3, 3, 3])
            ESPCNForImageSuperResolution(config).save_pretrained(tiny)
            ESPCNImageProcessor(upscale_factor=scale).save_pretrained(tiny)
            push = rehearse.hub_push_folder(tiny, tmp_path / "push" / f"espcn-x{scale}", repo_id)
            snapshot = rehearse.lay_out_hub_cache(cache, repo_id, push)
            assert (snapshot / "model.safetensors").is_file() and (snapshot / "README.md").is_file()
        rehearse.wait_for_port(port, process, log, timeout=90)
        client = Client(
            f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path / "downloads")
        )
        photo = _png(tmp_path, _photo(24, 18))
        for scale, repo_id in HUB_REPO_IDS.items():
            _, info, download = client.predict(handle_file(photo), scale, False, api_name="/super_resolve")
            assert Image.open(download).size == (24 * scale, 18 * scale)
            assert f"Model: [{repo_id}](https://huggingface.co/{repo_id}) (local Hub cache)." in info
    finally:
        rehearse.stop(process)
    assert "Traceback" not in log.read_text()


# ----------------------------------------------------------------------------------------------------------------
# The video tab
# ----------------------------------------------------------------------------------------------------------------


def _clip(path: Path, frames: int = 6, rate: int = 10, size=(32, 24), audio: bool = True) -> str:
    """A small H.264 MP4 (moving square), with a 440 Hz AAC track when `audio`."""
    from fractions import Fraction

    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = *size, "yuv420p"
        sound = container.add_stream("aac", rate=16000, layout="mono") if audio else None
        for i in range(frames):
            rgb = np.asarray(_photo(*size))
            rgb = rgb.copy()
            rgb[2:8, i % size[0] : i % size[0] + 6] = (250, 40, 40)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            samples = np.sin(np.arange(16000 * frames // rate) * 2 * np.pi * 440 / 16000).astype(np.float32)
            for start in range(0, len(samples), 1024):
                chunk = av.AudioFrame.from_ndarray(
                    0.2 * samples[None, start : start + 1024], format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts, chunk.time_base = 16000, start, Fraction(1, 16000)
                container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
    return str(path)


def test_video_tab_upscales_a_short_clip_with_its_audio(app, tmp_path):
    from espcn_hf.video import probe_video

    path, info = app.super_resolve_video(_clip(tmp_path / "clip.mp4"), "x2")
    out = probe_video(path)
    assert (out.width, out.height) == (64, 48) and out.frames == 6 and out.codec == "h264"
    assert out.rate == 10 and out.audio_codecs == ("aac",)
    assert "**64×48**, 6 frames at 10 fps" in info and "Audio copied unchanged." in info
    assert "packaged weights espcn-x2" in info


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: None, "Upload a video first"),
        (lambda tmp: _png(tmp, _photo()), "cannot be used as a video"),
        (lambda tmp: _text_file(tmp), "cannot be used as a video"),
        (
            lambda tmp: _clip(tmp / "long.mp4", frames=11, rate=1, audio=False),
            "11.0 s (11 frames); this demo takes clips of up to 10 s",
        ),
        (lambda tmp: _clip(tmp / "many.mp4", frames=301, rate=60, size=(8, 8), audio=False), "301 frames"),
        (lambda tmp: _clip(tmp / "big.mp4", frames=2, size=(640, 482), audio=False), "up to 480p"),
        (
            lambda tmp: _clip(tmp / "x3.mp4", frames=2, size=(642, 360), audio=False),
            "at most 1080p (1920×1080). Pick x2.",
        ),
    ],
    ids=["none", "image", "text", "too-long", "too-many-frames", "too-large", "output-over-1080p"],
)
def test_video_tab_refuses_what_is_past_the_limits_clearly(app, tmp_path, make, message):
    with pytest.raises(gr.Error) as error:
        app.super_resolve_video(make(tmp_path), 3)
    text = str(error.value.message)
    assert message in text
    assert str(tmp_path) not in text and "Error" not in text


def test_video_tab_through_gradio_client(server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False, download_files=str(tmp_path / "downloads"))
    video, info = client.predict(
        handle_file(_clip(tmp_path / "clip.mp4", audio=False)), 3, api_name="/super_resolve_video"
    )
    from espcn_hf.video import probe_video

    out = probe_video(video["video"] if isinstance(video, dict) else video)
    assert (out.width, out.height, out.frames) == (96, 72, 6)
    assert "No audio track." in info


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: `apt-get install -y chromium`")
def test_real_browser_upload_and_slider(server, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")

    path = str(SPACE_DIR / "examples" / "set5_bird.png")  # 288x288 -> 864x864 at x3
    shot = tmp_path / "space_screenshot.png"

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server, wait_until="domcontentloaded", timeout=30_000)
            page.locator("#input-image input[type=file]").set_input_files(path)
            page.locator("#input-image img").first.wait_for(timeout=20_000)  # the upload is shown
            page.get_by_label("x3").check()
            page.locator("#run").click()
            page.get_by_text("864×864", exact=False).first.wait_for(timeout=30_000)
            slider_images = page.locator("#result-slider img")
            slider_images.first.wait_for(timeout=20_000)
            assert slider_images.count() >= 2
            size = page.evaluate(
                "() => { const i = document.querySelector('#result-slider img'); "
                "return [i.naturalWidth, i.naturalHeight]; }"
            )
            assert size == [864, 864]
            assert "Bird (Set5)" in page.content()  # the examples show their labels
            assert page.get_by_role("tab", name="Video").count() == 1
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
