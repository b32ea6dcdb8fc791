"""The Gradio Space: the handler on good and bad images, the launched app through gradio_client, and a real
browser (Chromium through Playwright) driving the page. A tiny random x3 model in a local Hub cache (as
espcn-hf/espcn-x3, offline) and the packaged x2/x4 weights serve.

    pytest tests/test_space.py
    # the deploy rehearsal (clean venv, offline Hub cache, Chromium) writes benchmarks/space_screenshot.png:
    python scripts/rehearse_space.py
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import socket
import struct
import sys
import time
from pathlib import Path
from stat import S_ISREG

import numpy as np
import pytest
import torch
import yaml
from conftest import load_script
from hub_cache import snapshot_repo
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


def _tiny_folder(folder: Path, scale: int) -> Path:
    torch.manual_seed(scale)
    config = ESPCNConfig(upscale_factor=scale, hidden_channels=[8, 8], kernel_sizes=[3, 3, 3])
    ESPCNForImageSuperResolution(config).save_pretrained(folder)
    ESPCNImageProcessor(upscale_factor=scale).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """A local Hub cache holding a tiny random x3 model as espcn-hf/espcn-x3 (and nothing for x2 and x4)."""
    root = tmp_path_factory.mktemp("hub")
    snapshot_repo(root / "cache", HUB_REPO_IDS[3], _tiny_folder(root / "espcn-x3", 3))
    return root / "cache"


@pytest.fixture(scope="module")
def app(hub_cache, tmp_path_factory):
    """The app module, offline: x3 from the local Hub cache, x2/x4 from the packaged weights (the Hub cannot be
    reached and its cache does not hold them); gradio's cache folder in a temporary folder."""
    with pytest.MonkeyPatch.context() as patch:
        for scale in (2, 3, 4):
            patch.delenv(f"ESPCN_HF_REPO_X{scale}", raising=False)
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # read at import, so set it too
        patch.setenv("HF_HUB_CACHE", str(hub_cache))
        patch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub_cache))
        patch.setattr("transformers.utils.hub.constants.HF_HUB_CACHE", str(hub_cache))
        patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio-cache")))
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
        assert (
            f"Model: [{HUB_REPO_IDS[3]}](https://huggingface.co/{HUB_REPO_IDS[3]}) (local Hub cache)." in info
        )
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
    # in gradio's own cache folder, which serves and deletes them: no output folder of the app's own
    cache = Path(os.environ["GRADIO_TEMP_DIR"])
    assert Path(first).parent.parent == Path(second).parent.parent == cache


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


@pytest.mark.slow
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
    monkeypatch.setattr(
        "espcn_hf.pretrained.WEIGHTS_DIR", tmp_path
    )  # not in the Hub cache, and nothing packaged
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


def _markdown(demo) -> str:
    config = demo.get_config_file()
    return " ".join(str(c["props"].get("value", "")) for c in config["components"] if c["type"] == "markdown")


def test_landing_page_says_which_model_serves_each_scale(app, hub_cache, monkeypatch, tmp_path):
    """Resolved at start-up through espcn_hf.resolve_model: the local Hub cache, the packaged weights, a repo named
    through the library's ESPCN_HF_REPO_X{r}, and a scale that cannot be served, which the page says instead of
    failing to start."""
    app.get_model.cache_clear()
    try:
        page = _markdown(app.build_demo())  # the fixture: x3 from the Hub cache, x2/x4 packaged
        assert (
            f"- **x3**: [{HUB_REPO_IDS[3]}](https://huggingface.co/{HUB_REPO_IDS[3]}) (local Hub cache)"
            in page
        )
        for scale in (2, 4):
            repo = HUB_REPO_IDS[scale]
            assert (
                f"- **x{scale}**: packaged weights espcn-x{scale} ([{repo}](https://huggingface.co/{repo}) "
                in page
            )

        app.get_model.cache_clear()
        snapshot_repo(hub_cache, "someone/espcn-x2-tiny", _tiny_folder(tmp_path / "x2", 2))
        monkeypatch.setenv(
            "ESPCN_HF_REPO_X2", "someone/espcn-x2-tiny"
        )  # the library's override, not the app's
        monkeypatch.setattr("espcn_hf.pretrained.WEIGHTS_DIR", tmp_path / "nothing-packaged")
        page = _markdown(app.build_demo())
        assert (
            "- **x2**: [someone/espcn-x2-tiny](https://huggingface.co/someone/espcn-x2-tiny) (local Hub cache)"
            in page
        )
        assert f"- **x4**: not available at the moment ([{HUB_REPO_IDS[4]}](https://huggingface.co/" in page
        info = app.super_resolve(_png(tmp_path, _photo()), 2, False)[1]
        assert (
            "Model: [someone/espcn-x2-tiny](https://huggingface.co/someone/espcn-x2-tiny) (local Hub cache)."
            in info
        )
        with pytest.raises(gr.Error, match="The x4 model is not available"):
            app.super_resolve(_png(tmp_path, _photo()), 4, False)
    finally:
        app.get_model.cache_clear()


def test_models_come_from_the_library_with_its_fallback(app, monkeypatch):
    """The app asks espcn_hf.resolve_model for "Hub, else cache, else packaged weights" and reads no environment
    variable of its own (no model override, no output folder)."""
    calls = []
    real = app.resolve_model
    monkeypatch.setattr(app, "resolve_model", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    app.get_model.cache_clear()
    try:
        app.get_model(2)
    finally:
        app.get_model.cache_clear()
    assert calls == [((None, 2), {"fallback_to_packaged": True})]
    source = (SPACE_DIR / "app.py").read_text()
    assert "environ" not in source and "gettempdir" not in source


def test_both_tabs_start_at_the_default_scale(app):
    from espcn_hf.pretrained import DEFAULT_SCALE

    config = app.build_demo().get_config_file()
    radios = {
        c["props"]["elem_id"]: c["props"]["value"] for c in config["components"] if c["type"] == "radio"
    }
    assert radios == {"scale": DEFAULT_SCALE, "video-scale": DEFAULT_SCALE} and DEFAULT_SCALE == 3


def test_bicubic_is_the_librarys(app, tmp_path, monkeypatch):
    """The "downscale first" input and the slider's bicubic image are espcn_hf.degradation.imresize_np (MATLAB's
    imresize), called by the app, not re-implemented beside it."""
    from espcn_hf.degradation import imresize_np

    calls = []
    monkeypatch.setattr(
        app, "imresize_np", lambda image, scale: calls.append(scale) or imresize_np(image, scale)
    )
    rng = np.random.default_rng(5)
    photo = Image.fromarray(rng.integers(0, 256, (27, 33, 3), dtype=np.uint8))
    (bicubic, _), _, _ = app.super_resolve(_png(tmp_path, photo), 3, True)  # 33x27 -> 11x9 -> 33x27
    assert calls == [1 / 3, 3]
    lr = imresize_np(np.array(photo), 1 / 3)
    assert np.array_equal(np.asarray(Image.open(bicubic)), imresize_np(lr, 3))


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((12, 10, 3), np.nan, dtype=np.float32), "contains NaN or infinite values"),
        (np.full((12, 10), np.inf), "contains NaN or infinite values"),
        (np.full((12, 10, 3), "0.5"), "must hold numbers"),
        (np.zeros((12, 10, 3), dtype=object), "must hold numbers"),
        (np.zeros((12, 10, 3), dtype=np.complex64), "must hold numbers"),
        (np.zeros((12, 10, 5), dtype=np.uint8), "cannot be used as an image"),
    ],
    ids=["nan", "inf", "strings", "objects", "complex", "five-channels"],
)
def test_arrays_with_nan_inf_or_no_numbers_are_refused(app, array, message):
    with pytest.raises(gr.Error) as error:
        app.super_resolve(array, 2, False)
    assert message in str(error.value.message) and "Error" not in str(error.value.message)


def test_numeric_arrays_are_upscaled(app):
    _check_result(app.super_resolve(np.asarray(_photo()), 2, False), 2, (30, 24))
    _check_result(app.super_resolve(np.asarray(_photo(), dtype=np.float32) / 255, 3, False), 3, (30, 24))
    (_, espcn), _, _ = app.super_resolve(np.full((24, 30), 40_000, dtype=np.uint16), 2, False)
    assert Image.open(espcn).mode == "L"


def _jpeg_with_damaged_exif() -> bytes:
    """A JPEG whose EXIF byte-order mark is damaged ("MM" -> "M2"): Pillow's EXIF reader raises SyntaxError."""
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    _photo().save(buffer, format="JPEG", exif=exif.tobytes())
    data = buffer.getvalue()
    start = data.index(b"Exif\0\0") + 6
    assert data[start : start + 2] == b"MM"
    return data[:start] + b"M2" + data[start + 2 :]


def test_any_exception_while_processing_an_upload_is_a_clear_message(app, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="espcn_space")
    path = tmp_path / "exif.jpg"
    path.write_bytes(_jpeg_with_damaged_exif())
    try:  # upscaled with the orientation left out, or refused clearly: never a SyntaxError
        _check_result(app.super_resolve(str(path), 2, False), 2, (30, 24))
    except gr.Error as error:
        assert "cannot be" in str(error.message)

    def broken(*args, **kwargs):
        raise SyntaxError("not a TIFF file (header b'M2' not valid)")

    monkeypatch.setattr(app, "upscale", broken)
    caplog.clear()
    with pytest.raises(gr.Error) as error:
        app.super_resolve(str(path), 2, False)
    assert str(error.value.message) == (
        "This image cannot be processed (an unusual or damaged file). Please try another one."
    )
    assert [r.getMessage() for r in caplog.records] == [
        "cannot process an uploaded image: SyntaxError: not a TIFF file (header b'M2' not valid) "
        "(test_space.py:" + str(broken.__code__.co_firstlineno + 1) + ")"
    ]


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
    """Bytes of the files under `folders`, each file once: a walk is not atomic, and gradio renames an upload
    from its temporary name into the cache while the walk may pass both folders (counted by inode), or deletes it
    (skipped)."""
    sizes = {}
    for folder in folders:
        for root, _, names in os.walk(folder):
            for name in names:
                with contextlib.suppress(OSError):
                    stat = os.stat(os.path.join(root, name), follow_symlinks=False)
                    if S_ISREG(stat.st_mode):
                        sizes[stat.st_dev, stat.st_ino] = stat.st_size
    return sum(sizes.values())


def test_burst_keeps_the_temp_folders_bounded(app, tmp_path, monkeypatch):
    """A bounded burst on 127.0.0.1: every request is served, an upload over max_file_size is refused before it is
    stored, and gradio's cache folder (uploads and the results the app writes there) shrinks back once the results
    age out (here after 4 s instead of the Space's 10 minutes)."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    monkeypatch.setattr(app, "DELETE_CACHE", (1, 4))
    demo = app.build_demo()
    port = _free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(
            f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path / "downloads")
        )
        before = _folder_bytes(cache)
        photos = [_png(tmp_path, _photo(96 + i, 64), f"burst{i}.png") for i in range(8)]

        def one(path):
            _, _, download = client.predict(handle_file(path), 4, False, api_name="/super_resolve")
            return Image.open(download).size

        with ThreadPoolExecutor(max_workers=8) as pool:
            sizes = list(pool.map(one, photos))
        assert sizes == [((96 + i) * 4, 256) for i in range(8)]
        peak = _folder_bytes(cache)
        assert peak > before  # the results were there ...

        huge = tmp_path / "huge.png"
        huge.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (app.MAX_FILE_BYTES + 1024))
        with pytest.raises(Exception, match="(?i)file size|too large|exceeds"):
            client.predict(handle_file(str(huge)), 3, False, api_name="/super_resolve")
        assert not [p for p in cache.rglob("huge*")]  # ... the oversize upload was never stored

        time.sleep(4.5)  # the results age out ...
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _folder_bytes(cache) > before + 100_000:
            time.sleep(0.5)  # ... and gradio's sweep (every second) removes them
        after = _folder_bytes(cache)
        print(
            f"\nburst of 8 x4 requests: temp folders {before:,} B before, {peak:,} B after, {after:,} B later"
        )
        assert after <= before + 100_000 < peak
    finally:
        demo.close()


def test_scale_is_taken_as_int_or_str_through_gradio_client(server, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False, download_files=str(tmp_path / "downloads"))
    api = client.view_api(return_format="str", print_info=False)
    assert api.count("scale: int | str") == 2  # both endpoints, as the API says
    photo = handle_file(_png(tmp_path, _photo(20, 14)))
    for scale in (3, "3", "x3"):
        _, info, download = client.predict(photo, scale, False, api_name="/super_resolve")
        assert Image.open(download).size == (60, 42) and "**x3**" in info
    clip = handle_file(_clip(tmp_path / "clip.mp4", frames=2, audio=False))
    for scale in (2, "2"):
        _, info = client.predict(clip, scale, api_name="/super_resolve_video")
        assert "**64×48**" in info
    with pytest.raises(AppError, match="Scale must be one of x2, x3, x4, got x5"):
        client.predict(photo, "5", False, api_name="/super_resolve")


def test_a_refused_upload_is_one_log_line_without_traceback(server, tmp_path, caplog, capfd):
    """Corrupt, too large (refused by the upload route, 413) and over the pixel limit: each is one line in the
    server's log, the visitor gets the clear message, and nothing prints a traceback."""
    import httpx
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    caplog.set_level(logging.INFO, logger="espcn_space")
    client = Client(server, verbose=False, download_files=str(tmp_path / "downloads"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(AppError, match="cannot be used as an image"):
        client.predict(handle_file(str(bad)), 3, False, api_name="/super_resolve")
    big = _png(tmp_path, Image.new("RGB", (1001, 1000)), "big.png")
    with pytest.raises(AppError, match="1,001,000 pixels"):
        client.predict(handle_file(big), 3, False, api_name="/super_resolve")
    huge = b"\x89PNG\r\n\x1a\n" + b"\0" * 21 * 1024 * 1024  # over the 20 MB limit: the client would refuse it
    response = httpx.post(f"{server}gradio_api/upload", files={"files": ("huge.png", huge)}, timeout=60)
    assert response.status_code == 413
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(caplog.records) < 3:
        time.sleep(0.1)
    lines = [r.getMessage() for r in caplog.records if r.name == "espcn_space"]
    assert len(lines) == 3 and all(line.startswith("refused: ") and "\n" not in line for line in lines), lines
    assert "cannot be used as an image" in lines[0] and "1,001,000 pixels" in lines[1] and "20MB" in lines[2]
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


def _flood(url: str, count: int, size: int, workers: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    def upload(index: int) -> int:
        data = np.random.default_rng(index).integers(0, 256, size, dtype=np.uint8).tobytes()
        return httpx.post(
            f"{url}gradio_api/upload", files={"files": (f"f{index}.png", data)}, timeout=60
        ).status_code

    with ThreadPoolExecutor(max_workers=workers) as pool:
        assert set(pool.map(upload, range(count))) == {200}


def test_upload_flood_keeps_the_cache_folder_under_its_cap(app, tmp_path, monkeypatch):
    """Uploads stored without ever being used (the cheapest flood): gradio keeps them for DELETE_CACHE[1] (10
    minutes); the app's byte cap deletes the oldest once the cache folder holds more than CACHE_MAX_BYTES (here
    1 MB, flooded with 6 MB from 8 connections at once), so the disk in use stays bounded, and the app still
    works."""
    import threading

    from gradio_client import Client, handle_file

    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    monkeypatch.setattr(app, "CACHE_MAX_BYTES", 1_000_000)
    count, size, workers = 96, 64 * 1024, 8
    demo = app.build_demo()
    port = _free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    samples, done = [], threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(_folder_bytes(cache))
            time.sleep(0.005)

    try:
        examples = _folder_bytes(cache)  # gradio's copies of the examples, kept by the cap
        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.perf_counter()
        try:
            _flood(url, count, size, workers)
        finally:
            done.set()
            sampler.join()
        seconds = time.perf_counter() - start
        deadline = time.monotonic() + 5  # the last trim runs after the last response
        while time.monotonic() < deadline and _folder_bytes(cache) > examples + app.CACHE_MAX_BYTES:
            time.sleep(0.1)
        after, peak = _folder_bytes(cache), max(samples)
        print(
            f"\nflood of {count} uploads x {size // 1024} kB ({count * size / 1e6:.1f} MB) in {seconds:.1f} s: "
            f"cache folder {examples:,} B before (examples), peak {peak:,} B, after {after:,} B "
            f"(cap {app.CACHE_MAX_BYTES:,} B)"
        )
        assert after <= app.CACHE_MAX_BYTES  # the whole folder, the examples included
        # at most one upload per connection over it: each upload's response waits for its trim (_CacheGuard)
        assert peak <= app.CACHE_MAX_BYTES + workers * size, f"peak {peak:,} B"
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        _, _, download = client.predict(
            handle_file(_png(tmp_path, _photo())), 2, False, api_name="/super_resolve"
        )
        assert Image.open(download).size == (60, 48)
    finally:
        demo.close()


def _rehearsal_module():
    return load_script("scripts/rehearse_space.py", "rehearse_space")


@pytest.mark.slow
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
    app = _load_app()
    shipped = {name for name, *_ in app.EXAMPLES} | {name for name, *_ in app.VIDEO_EXAMPLES}
    assert {p.name for p in (space / "examples").iterdir()} == shipped

    cache, runtime, log = tmp_path / "hub-cache", tmp_path / "runtime", tmp_path / "app.log"
    runtime.mkdir()
    for scale, repo_id in HUB_REPO_IDS.items():  # the app resolves its models at start-up
        tiny = _tiny_folder(tmp_path / "tiny" / f"espcn-x{scale}", scale)
        push = rehearse.hub_push_folder(tiny, tmp_path / "push" / f"espcn-x{scale}", repo_id)
        snapshot = rehearse.lay_out_hub_cache(cache, repo_id, push)
        assert (snapshot / "model.safetensors").is_file() and (snapshot / "README.md").is_file()
    port = rehearse.free_port()
    process = rehearse.start_space(sys.executable, space, rehearse.space_env(cache, port, runtime), log)
    try:
        rehearse.wait_for_port(port, process, log, timeout=90)
        client = Client(
            f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path / "downloads")
        )
        intro = next(c for c in client.config["components"] if c["props"].get("elem_id") == "intro")
        for scale, repo_id in HUB_REPO_IDS.items():  # the landing page names the model of each scale
            line = f"- **x{scale}**: [{repo_id}](https://huggingface.co/{repo_id}) (local Hub cache)"
            assert line in intro["props"]["value"]
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


def test_video_tab_has_an_example_clip_made_from_a_photo_of_the_repo(app, tmp_path):
    """space/examples/bsd100_3096_pan.mp4: made by space/examples/make_examples.py from bsd100_3096.png (every
    frame a crop of the photo), small, stated in the Space README, shown as the video tab's example, upscaled."""
    from conftest import psnr

    from espcn_hf.video import probe_video

    ((name, scale, label),) = app.VIDEO_EXAMPLES
    clip = app.EXAMPLES_DIR / name
    assert clip.stat().st_size < 300_000
    info = probe_video(clip)
    assert (info.width, info.height, info.frames, info.rate, info.codec) == (160, 120, 30, 15, "h264")
    readme = (SPACE_DIR / "README.md").read_text()
    assert f"`{name}`" in readme and "make_examples.py clip" in readme  # where it comes from

    make = load_script(SPACE_DIR / "examples" / "make_examples.py", "make_examples")
    rebuilt = make.pan_clip(tmp_path / name)
    assert dataclasses.replace(probe_video(rebuilt), path="") == dataclasses.replace(info, path="")
    import av

    with av.open(str(clip)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    photo = np.asarray(Image.open(app.EXAMPLES_DIR / "bsd100_3096.png").convert("RGB"))
    left, top = make.CLIP_START
    assert psnr(first, photo[top : top + 120, left : left + 160], 1, y_channel=False, crop_border=0) > 30

    config = app.build_demo().get_config_file()
    datasets = [c["props"] for c in config["components"] if c["type"] == "dataset"]
    assert [d["sample_labels"] for d in datasets][-1] == [label] and scale == 3
    path, text = app.super_resolve_video(str(clip), scale)
    out = probe_video(path)
    assert (out.width, out.height, out.frames) == (
        480,
        360,
        30,
    ) and "**480×360**, 30 frames at 15 fps" in text


def _lying_clip(path: Path, frames: int, rate: int, claimed_ms: float) -> str:
    """A Matroska clip of `frames` 16x16 frames at `rate` fps whose header claims `claimed_ms` milliseconds
    (the Segment Duration element rewritten); Matroska stores no frame count."""
    _clip(path, frames=frames, rate=rate, size=(16, 16), audio=False)
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89")  # Duration, a float in TimecodeScale units (ms)
    assert data[at + 2] == 0x88
    data[at + 3 : at + 11] = struct.pack(">d", claimed_ms)
    path.write_bytes(bytes(data))
    return str(path)


@pytest.mark.parametrize(
    "frames, rate, message",
    [
        (1800, 30, "The clip holds more than 300 frames (its header says 1.0 s)"),
        (40, 2, "The clip runs past 10 s (its header says 1.0 s)"),
    ],
    ids=["1800-frames", "20-seconds"],
)
def test_a_clip_whose_header_understates_its_length_is_stopped_at_the_limit(
    app, tmp_path, monkeypatch, frames, rate, message
):
    from espcn_hf.video import probe_video

    path = _lying_clip(tmp_path / "lie.mkv", frames, rate, 1000.0)
    probe = probe_video(path)
    assert (probe.duration, probe.frames) == (1.0, 0)  # the header passes the limits
    monkeypatch.setattr(app, "upscale_video", lambda *a, **k: pytest.fail("the clip was processed"))
    start = time.perf_counter()
    with pytest.raises(gr.Error) as error:
        app.super_resolve_video(path, 2)
    assert message in str(error.value.message) and "up to 10 s and 300 frames" in str(error.value.message)
    assert time.perf_counter() - start < 5


def test_an_exception_while_processing_a_clip_is_a_clear_message(app, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(app, "upscale_video", broken)
    with pytest.raises(gr.Error) as error:
        app.super_resolve_video(_clip(tmp_path / "clip.mp4", frames=2, audio=False), 2)
    assert (
        str(error.value.message)
        == "This video cannot be processed (an unusual or damaged file). Please try another one."
    )


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
