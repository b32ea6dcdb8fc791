"""The Gradio Space: the handler on good and bad images, the launched app through gradio_client, and a real
browser (Chromium through Playwright) driving the page. Tiny random models stand in for the checkpoints.

    pytest tests/test_space.py
    # the browser test also writes benchmarks/space_screenshot.png, here with the trained checkpoints:
    ESPCN_HF_SAVE_SCREENSHOT=1 ESPCN_HF_TEST_REAL_CHECKPOINTS=1 pytest tests/test_space.py -m browser
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
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
    spec = importlib.util.spec_from_file_location("espcn_space_app", SPACE_DIR / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # gradio inspects the source of the app's component subclass
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """Tiny random models, or the trained ones in checkpoints/ with ESPCN_HF_TEST_REAL_CHECKPOINTS=1 (for a
    screenshot that shows real results)."""
    real = REPO_ROOT / "checkpoints"
    if os.environ.get("ESPCN_HF_TEST_REAL_CHECKPOINTS") and all(
        (real / f"espcn-x{s}" / "config.json").is_file() for s in (2, 3, 4)
    ):
        return real
    root = tmp_path_factory.mktemp("bundled")
    for scale in (2, 3, 4):
        torch.manual_seed(scale)
        config = ESPCNConfig(upscale_factor=scale, hidden_channels=[8, 8], kernel_sizes=[3, 3, 3])
        ESPCNForImageSuperResolution(config).save_pretrained(root / f"espcn-x{scale}")
        ESPCNImageProcessor(upscale_factor=scale).save_pretrained(root / f"espcn-x{scale}")
    return root


@pytest.fixture(scope="module")
def app(checkpoints):
    """The app module, offline: x3 from a local folder given in ESPCN_HF_REPO_X3, x2/x4 from the bundled dir."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ESPCN_HF_CHECKPOINTS", str(checkpoints))
        patch.setenv("ESPCN_HF_REPO_X3", str(checkpoints / "espcn-x3"))
        patch.setenv("HF_HUB_OFFLINE", "1")
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
    expected_source = "local folder" if scale == 3 else "bundled checkpoint"
    assert expected_source in info


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "P", "I;16", "CMYK"])
def test_handler_accepts_odd_modes(app, tmp_path, mode):
    if mode == "I;16":
        ramp = (np.arange(24 * 30, dtype=np.uint16).reshape(24, 30) * 90).astype(np.uint16)
        image = Image.fromarray(ramp)  # uint16 -> a 16-bit grayscale image
        assert image.mode == "I;16"
    else:
        image = _photo(mode=mode)
    path = _png(tmp_path, image, "odd.tif" if mode == "CMYK" else "odd.png")
    _check_result(app.super_resolve(path, 3, False), 3, (30, 24))


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
    assert re.search(r"PSNR-Y against the original: bicubic [\d.]+ dB, ESPCN [\d.]+ dB", info)


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
        (lambda tmp: _png(tmp, Image.new("L", (5000, 4000))), "over the limit of 16,000,000"),
        (lambda tmp: _png(tmp, Image.new("RGB", (1, 40))), "too small"),
    ],
    ids=["none", "corrupt-bytes", "text-file", "truncated", "over-input-limit", "huge", "tiny"],
)
def test_bad_inputs_give_a_friendly_error(app, tmp_path, make, message):
    with pytest.raises(gr.Error) as error:
        app.super_resolve(make(tmp_path), 3, False)
    assert message in str(error.value.message)
    assert "Traceback" not in str(error.value.message)


def test_big_image_is_accepted_after_downscale_first(app, tmp_path):
    path = _png(tmp_path, _photo(1800, 1200))  # 2.16 Mpx: refused as is, 600x400 after x3 downscaling
    with pytest.raises(gr.Error, match="Crop it"):
        app.super_resolve(path, 3, False)
    _check_result(app.super_resolve(path, 3, True), 3, (600, 400))


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


def test_unreachable_hub_falls_back_to_the_bundled_checkpoint(app, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("ESPCN_HF_REPO_X2", "espcn-hf/espcn-x2")
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    app.get_model.cache_clear()
    try:
        model, source = app.get_model(2)
    finally:
        app.get_model.cache_clear()
    assert model.config.upscale_factor == 2
    assert "bundled checkpoint `espcn-x2`" in source and "cannot be reached" in source


def test_no_model_at_all_is_a_friendly_error(app, monkeypatch, tmp_path):
    monkeypatch.setenv("ESPCN_HF_CHECKPOINTS", str(tmp_path))
    app.get_model.cache_clear()
    try:
        with pytest.raises(gr.Error, match="No x4 model is available"):
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
    requirements = (SPACE_DIR / "requirements.txt").read_text()
    assert (
        f"gradio=={gr.__version__}" in requirements
        and "transformers" in requirements
        and "torch" in requirements
    )


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
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def test_launched_app_through_gradio_client(server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
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
    with pytest.raises(AppError, match="cannot be used as an image"):
        client.predict(handle_file(str(bad)), 3, False, api_name="/super_resolve")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: `apt-get install -y chromium`")
def test_real_browser_upload_and_slider(server, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")

    path = str(SPACE_DIR / "examples" / "test_chart.png")  # 288x216 -> 864x648 at x3
    if os.environ.get("ESPCN_HF_SAVE_SCREENSHOT"):
        shot = REPO_ROOT / "benchmarks" / "space_screenshot.png"
    else:
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
            page.get_by_text("864×648", exact=False).first.wait_for(timeout=30_000)
            slider_images = page.locator("#result-slider img")
            slider_images.first.wait_for(timeout=20_000)
            assert slider_images.count() >= 2
            size = page.evaluate(
                "() => { const i = document.querySelector('#result-slider img'); "
                "return [i.naturalWidth, i.naturalHeight]; }"
            )
            assert size == [864, 648]
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
