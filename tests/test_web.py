"""The in-browser page (espcn_hf.web): `espcn-hf web SITE` builds it, Chromium runs it on WebAssembly, and its
output equals onnxruntime's CPU output of the same export; grayscale, alpha and bad files behave as in the library.

The browser tests need Debian's Chromium (`apt-get install chromium`) and onnxruntime-web (the build cache, else
npm and the registry); without either they are skipped with the reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from espcn_hf import web
from espcn_hf.cli import main as cli_main

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# The page against onnxruntime's CPU output of the same file: per pixel and on average, in uint8 levels.
MAX_LEVELS, MEAN_LEVELS = 2, 0.5
# ...and the share of values that differ at all: WebAssembly and native kernels round a rare value differently
# (0 or 0.005 % here), while tiles with one pixel of context too few change 0.25 % of them.
MAX_SHARE_DIFFERENT = 0.001
STATE_TIMEOUT_MS = 60_000


# ---------------------------------------------------------------------------------------------------------------
# The command without a browser
# ---------------------------------------------------------------------------------------------------------------


def test_npm_missing_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    status = cli_main(["web", str(tmp_path / "site"), "--npm-cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("error: npm is not installed") and err.count("\n") == 1
    assert not (tmp_path / "site").exists()


def test_npm_unreachable_is_one_line(tmp_path, monkeypatch, capsys):
    # an npm that fails as one without a registry does
    fake = tmp_path / "bin" / "npm"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho 'npm error code ENOTFOUND' >&2\necho 'npm error network request failed' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    status = cli_main(["web", str(tmp_path / "site"), "--npm-cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1
    assert (
        err.startswith(f"error: npm could not fetch {web.ORT_PACKAGE}@{web.ORT_VERSION}") and "network" in err
    )
    status = cli_main(["web", str(tmp_path / "site"), "--npm-cache", str(tmp_path / "cache"), "--offline"])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "not in the build cache" in err


def test_refuses_a_folder_that_is_not_a_build(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert cli_main(["web", str(tmp_path / "mine"), "--offline", "--npm-cache", str(tmp_path)]) == 1
    assert "is not a site built by 'espcn-hf web'" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_damaged_tarball_is_one_line(tmp_path, capsys):
    web.runtime_tarball(tmp_path).write_bytes(b"\x1f\x8b not really gzip")
    assert cli_main(["web", str(tmp_path / "site"), "--npm-cache", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged" in err and "delete it and build again" in err


@pytest.mark.slow
def test_models_option_builds_the_scales_it_names(tiny_checkpoint, tmp_path, capsys):
    try:
        web.runtime_files()  # the build cache, else npm once
    except web.WebBuildError as error:
        pytest.skip(f"{web.ORT_PACKAGE} is not available: {error}")
    site = tmp_path / "site"
    assert cli_main(["web", str(site), "--models", str(tiny_checkpoint), str(tiny_checkpoint)]) == 1
    assert "two models for x3" in capsys.readouterr().err and not site.exists()
    assert cli_main(["web", str(site), "-q", "--models", str(tiny_checkpoint)]) == 0
    manifest = json.loads((site / "site.json").read_text())
    assert list(manifest["models"]) == ["3"] and manifest["default_scale"] == 3
    entry = manifest["models"]["3"]
    assert entry["repo_id"] is None and entry["name"] == tiny_checkpoint.name
    assert entry["receptive_field_radius"] > 0 and (site / entry["file"]).is_file()
    assert "models:" not in (site / "README.md").read_text()  # no Hub repo behind a local folder
    listed = {name for name, _ in web.list_site(site)}
    assert {"index.html", "app.js", "style.css", "site.json", "README.md", "ort/NOTICE.md"} <= listed
    assert {f"ort/{name}" for name in web.ORT_FILES} <= listed


def test_space_card_front_matter():
    from huggingface_hub import SpaceCard

    entries = {
        scale: {"name": f"espcn-x{scale}", "repo_id": f"espcn-hf/espcn-x{scale}"}
        for scale in web.DEFAULT_SCALES
    }
    card = SpaceCard(web.render_readme(entries, {"name": web.ORT_PACKAGE, "version": web.ORT_VERSION}))
    data = card.data.to_dict()
    assert data["sdk"] == "static" and data["app_file"] == "index.html" and data["license"] == "apache-2.0"
    assert data["title"] and data["emoji"]
    assert data["models"] == ["espcn-hf/espcn-x2", "espcn-hf/espcn-x3", "espcn-hf/espcn-x4"]
    assert data["custom_headers"]["cross-origin-embedder-policy"] == "require-corp"
    assert f"{web.MAX_INPUT_PIXELS:,}" in card.text


def test_gradio_space_links_to_the_browser_page():
    assert web.SPACE_URL in (REPO_ROOT / "space" / "app.py").read_text()


def test_page_files_are_package_data():
    for name in web.PAGE_FILES:
        assert (web.TEMPLATE_DIR / name).is_file()
    assert '"templates/web/*"' in (REPO_ROOT / "pyproject.toml").read_text()


# ---------------------------------------------------------------------------------------------------------------
# The built site in Chromium
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if not CHROMIUM.is_file():
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        web.runtime_files()  # the build cache, else npm once
    except web.WebBuildError as error:
        pytest.skip(f"{web.ORT_PACKAGE} is not available: {error}")
    folder = tmp_path_factory.mktemp("web") / "site"
    assert cli_main(["web", str(folder), "-q"]) == 0
    return folder


@pytest.fixture(scope="module")
def browser_page(site):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (the test extra)"
    )
    sync_playwright = sync_api.sync_playwright

    with web.serve_site(site) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(accept_downloads=True)
        errors: list[str] = []
        requests: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(f"{url}index.html?backend=wasm")
        page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=STATE_TIMEOUT_MS)
        assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#status")
        yield page
        browser.close()
        assert not errors
        # offline once built: every request stays inside the folder (or is the page's own blob/data URLs)
        assert [r for r in requests if not r.startswith((url, "blob:", "data:"))] == []
        assert any(r.endswith(".wasm") for r in requests) and any(r.endswith(".onnx") for r in requests)


def _upscale_in_page(page, path: Path, scale: int) -> str:
    page.set_input_files("#file", str(path))
    page.select_option("#scale", str(scale))
    page.click("#run")
    page.wait_for_function(
        "['done', 'error'].includes(document.body.dataset.state)", timeout=STATE_TIMEOUT_MS
    )
    return page.evaluate("document.body.dataset.state")


def _result_canvas(page) -> np.ndarray:
    width, height, pixels = page.evaluate(
        """() => {
            const canvas = document.getElementById('result');
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            return [canvas.width, canvas.height, Array.from(data)];
        }"""
    )
    return np.asarray(pixels, np.uint8).reshape(height, width, 4)


def _onnxruntime_uint8(model_file: Path, image: Image.Image) -> np.ndarray:
    """onnxruntime's CPU output of the export for an RGB image, rounded as the library rounds (quantize_uint8)."""
    import onnxruntime as ort
    import torch

    from espcn_hf.metrics import quantize_uint8

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    pixels = (np.asarray(image, np.float32) / 255.0).transpose(2, 0, 1)[None]
    (output,) = session.run(["reconstruction"], {"pixel_values": pixels})
    return quantize_uint8(torch.from_numpy(output[0])).permute(1, 2, 0).numpy()


def _open(page, query: str) -> None:
    page.goto(page.url.split("?")[0] + query)
    page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=STATE_TIMEOUT_MS)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#status")


@pytest.mark.browser
@pytest.mark.slow
def test_page_equals_onnxruntime(site, browser_page, data_dir, tmp_path):
    photo = Image.open(sorted((data_dir / "benchmarks" / "Set5").glob("*.png"))[0]).convert("RGB")
    # a 64x64 crop in one window (the page's tiles are 512 px), and a 70x45 crop cut into 24-px tiles with 7 px
    # of context (?tile=24: six windows, clipped at every border): both must equal the untiled output
    for box, scale, query in (
        ((96, 96, 160, 160), 3, "?backend=wasm"),
        ((30, 200, 100, 245), 2, "?backend=wasm&tile=24"),
    ):
        _open(browser_page, query)
        crop = photo.crop(box)
        crop.save(tmp_path / "crop.png")
        assert _upscale_in_page(browser_page, tmp_path / "crop.png", scale) == "done", (
            browser_page.inner_text("#status")
        )
        page_rgba = _result_canvas(browser_page)
        expected = _onnxruntime_uint8(site / "models" / f"espcn-x{scale}.onnx", crop)
        assert page_rgba.shape == (*expected.shape[:2], 4)
        diff = np.abs(page_rgba[..., :3].astype(int) - expected.astype(int))
        assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, (box, diff.max(), diff.mean())
        assert (diff > 0).mean() <= MAX_SHARE_DIFFERENT, (box, (diff > 0).mean())
        assert (page_rgba[..., 3] == 255).all()
        dataset = browser_page.evaluate("({...document.body.dataset})")
        assert dataset["backend"] == "wasm" and float(dataset["ms"]) > 0
        assert "WebAssembly" in browser_page.inner_text("#backend") and " s " in browser_page.inner_text(
            "#time"
        )
    _open(browser_page, "?backend=wasm")


@pytest.mark.browser
@pytest.mark.slow
def test_page_keeps_grayscale_and_alpha_like_the_library(site, browser_page, tmp_path):
    """Each file's output kind and pixels are upscale()'s: grayscale PNG and JPEG give L, alpha (LA, RGBA, lossless
    WebP, a palette with a transparent entry) is kept and equals Pillow's bicubic exactly."""
    from espcn_hf import upscale
    from espcn_hf.pretrained import load_model, packaged_weights

    model = load_model(packaged_weights(2), device="cpu")
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 24), dtype=np.uint8)
    alpha = np.tile(np.linspace(0, 255, 24).astype(np.uint8), (20, 1))  # fully transparent to opaque
    colour = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    rgba = Image.fromarray(np.dstack([colour, alpha]), "RGBA")
    palette = Image.fromarray(colour).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    cases = {  # file name: (image, save options, the library's output mode)
        "la.png": (Image.fromarray(np.dstack([gray, alpha]), "LA"), {}, "LA"),
        "l.png": (Image.fromarray(gray, "L"), {}, "L"),
        "rgba.png": (rgba, {}, "RGBA"),
        "l.jpg": (Image.fromarray(gray, "L"), {"quality": 95}, "L"),
        "rgba.webp": (rgba, {"lossless": True}, "RGBA"),
        "p.png": (palette, {"transparency": 0}, "RGBA"),
    }
    for name, (image, options, mode) in cases.items():
        path = tmp_path / name
        image.save(path, **options)
        assert _upscale_in_page(browser_page, path, 2) == "done", browser_page.inner_text("#status")
        with browser_page.expect_download() as download:
            browser_page.click("#download")
        assert download.value.suggested_filename == f"{path.stem}_x2.png"
        result = Image.open(download.value.path())
        expected = upscale(path, model)
        assert result.mode == expected.mode == mode and result.size == expected.size == (48, 40), name
        got, want = np.asarray(result).astype(int), np.asarray(expected).astype(int)
        if mode in ("LA", "RGBA"):  # alpha: Pillow's bicubic, reproduced exactly
            assert (got[..., -1] == want[..., -1]).all(), name
            got, want = got[..., :-1], want[..., :-1]
        diff = np.abs(got - want)  # colour under alpha too: transparent pixels keep their hidden colour
        assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, (name, diff.max(), diff.mean())


@pytest.mark.browser
@pytest.mark.slow
def test_page_refuses_bad_files_with_a_message(browser_page, data_dir, tmp_path):
    limit = f"{web.MAX_INPUT_PIXELS:,}"
    assert limit in browser_page.inner_text("#limits")  # the limit is shown before anything is picked

    (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    photo = sorted((data_dir / "benchmarks" / "Set5").glob("*.png"))[0]
    data = photo.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (2100, 2000), (90, 120, 150)).save(tmp_path / "huge.png")  # 4.2 Mpx, a few kB
    Image.new("RGB", (1800, 1300), (90, 120, 150)).save(tmp_path / "wide.png")  # 2.3 Mpx: 37.4 Mpx at x4
    cases = {
        "noise.png": (3, "cannot be read as an image"),
        "cut.png": (3, "truncated"),
        "huge.png": (2, f"over the limit of {limit} pixels"),
        "wide.png": (4, f"over the limit of {web.MAX_OUTPUT_PIXELS:,} pixels after upscaling"),
    }
    for name, (scale, message) in cases.items():
        assert _upscale_in_page(browser_page, tmp_path / name, scale) == "error", name
        status = browser_page.locator("#status")
        assert status.is_visible() and message in status.inner_text(), (name, status.inner_text())
    # the page is still usable after errors
    Image.open(photo).convert("RGB").crop((0, 0, 16, 16)).save(tmp_path / "small.png")
    assert _upscale_in_page(browser_page, tmp_path / "small.png", 2) == "done"
