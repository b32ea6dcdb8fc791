"""The in-browser page (espcn_hf.web): `espcn-hf web SITE` builds it, Chromium runs it on WebAssembly, and its
output equals onnxruntime's CPU output of the same export; grayscale, alpha and bad files behave as in the library.

The browser tests need Debian's Chromium (`apt-get install chromium`) and onnxruntime-web (the build cache, else
npm and the registry); without either they are skipped with the reason. Their site offers int8 at x3 only (a
measurement file written here; calibrated on a few synthetic patches, so that quantising takes seconds, not a
minute); what benchmarks/onnx_int8.json offers for the packaged models is checked without building.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import natural_image
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
# int8: onnxruntime's x86 kernels (VNNI/AMX here) and its WebAssembly ones accumulate and requantise differently, so
# values near a quantisation step come out a level or two apart in patches: under 0.1 % of the Set5 crop with the
# former x3 weights, 0.8 % with those of step 192,000 (one patch of the crop, 1-2 levels, not at tile seams); the
# issue's bounds (MAX_LEVELS, MEAN_LEVELS) hold. Tiling itself is held to MAX_SHARE_DIFFERENT by the fp32 test.
MAX_SHARE_DIFFERENT_INT8 = 0.02
STATE_TIMEOUT_MS = 60_000
INT8_RESULTS = REPO_ROOT / "benchmarks" / "onnx_int8.json"


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


def test_unreadable_int8_results_is_one_line(tmp_path, capsys):
    (tmp_path / "int8.json").write_text("{not json")
    for name in ("int8.json", "missing.json"):
        argv = ["web", str(tmp_path / "site"), "--int8-results", str(tmp_path / name), "--offline"]
        assert cli_main([*argv, "--npm-cache", str(tmp_path / "cache")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not a readable int8 measurement file" in err, err
    assert not (tmp_path / "site").exists()


def test_int8_offer_follows_the_upload_rule():
    """benchmarks/onnx_int8.json decides the page's int8 models as it decides the uploads' (`hub.int8_verdict`):
    x3 and x4 lose at most 0.1 dB today, x2 does not; the label names the worst loss and the CPU speed-up."""
    from espcn_hf.hub import INT8_MAX_LOSS_DB, INT8_SETS, int8_verdict
    from espcn_hf.pretrained import load_model, packaged_weights

    results = web.read_int8_results(INT8_RESULTS)
    for scale in web.DEFAULT_SCALES:
        model = load_model(packaged_weights(scale), device="cpu")
        offer = web.int8_offer(results, model)
        ships, why = int8_verdict(results, model)
        assert offer["offered"] == ships == (scale != 2), (scale, why)
        if not ships:
            assert offer == {"offered": False, "why": why}
            continue
        lost = offer["psnr_lost_db"]
        assert set(lost) == set(INT8_SETS) and max(lost.values()) <= INT8_MAX_LOSS_DB
        worst = max(INT8_SETS, key=lost.get)
        assert (
            offer["label"]
            == f"int8 (loses {lost[worst]:.2f} dB on {worst}, {offer['speedup_cpu']:.1f}x faster on CPU)"
        )
    no_speed = {
        **results,
        "models": [{k: v for k, v in row.items() if k != "speedup_cpu"} for row in results["models"]],
    }
    offer = web.int8_offer(no_speed, load_model(packaged_weights(3), device="cpu"))
    assert offer["speedup_cpu"] is None and offer["label"].endswith(" dB on Set5)")


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
    assert f"{web.MAX_INPUT_PIXELS:,}" in card.text and "int8" not in card.text
    entries[3]["int8"] = {
        "offered": True,
        "psnr_lost_db": {"Set5": 0.09, "Set14": 0.06},
        "label": "int8 (...)",
    }
    entries[2]["int8"] = {"offered": False, "why": "int8 loses 0.17 dB on Set5"}
    text = web.render_readme(entries, {"name": web.ORT_PACKAGE, "version": web.ORT_VERSION})
    assert (
        "- x3 can also run its int8 model (pick int8), which loses 0.09 dB on Set5, 0.06 dB on Set14" in text
    )
    assert "x2 can also" not in text


def test_gradio_space_links_to_the_browser_page():
    assert web.SPACE_URL in (REPO_ROOT / "space" / "app.py").read_text()


def test_page_files_are_package_data():
    for name in web.PAGE_FILES:
        assert (web.TEMPLATE_DIR / name).is_file()
    assert '"templates/web/*"' in (REPO_ROOT / "pyproject.toml").read_text()


# ---------------------------------------------------------------------------------------------------------------
# The built site in Chromium
# ---------------------------------------------------------------------------------------------------------------


def _int8_results(folder: Path) -> Path:
    """A measurement file that passes the packaged x3 model (0.05 dB), fails x2 (0.2 dB) and lacks x4."""
    from espcn_hf.onnx_export import INT8_RECIPE, weights_digest
    from espcn_hf.pretrained import load_model, packaged_weights

    rows = [
        {
            "name": f"espcn-x{scale}",
            "weights_sha256": weights_digest(load_model(packaged_weights(scale), device="cpu")),
            "psnr_lost_db": {"Set5": lost, "Set14": lost / 2},
            "speedup_cpu": 1.5,
        }
        for scale, lost in ((2, 0.2), (3, 0.05))
    ]
    path = folder / "onnx_int8.json"
    path.write_text(json.dumps({"recipe": INT8_RECIPE, "models": rows}))
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if not CHROMIUM.is_file():
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        web.runtime_files()  # the build cache, else npm once
    except web.WebBuildError as error:
        pytest.skip(f"{web.ORT_PACKAGE} is not available: {error}")
    from espcn_hf import onnx_export

    folder = tmp_path_factory.mktemp("web") / "site"
    results = _int8_results(folder.parent)
    patches = [(natural_image(24, 24, seed)[None] / 255.0).transpose(0, 3, 1, 2) for seed in range(8)]
    with pytest.MonkeyPatch.context() as patch:  # a few patches, not the recipe's 256 training patches
        patch.setattr(onnx_export, "calibration_patches", lambda scale, *args, **kwargs: patches)
        assert cli_main(["web", str(folder), "-q", "--int8-results", str(results)]) == 0
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


def _upscale_in_page(page, path: Path, scale: int, precision: str | None = None) -> str:
    page.set_input_files("#file", str(path))
    page.select_option("#scale", str(scale))
    if precision is not None:
        page.select_option("#precision", precision)
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
        assert dataset["backend"] == "wasm" and float(dataset["ms"]) > 0 and dataset["precision"] == "fp32"
        assert "WebAssembly" in browser_page.inner_text("#backend") and " s " in browser_page.inner_text(
            "#time"
        )
    _open(browser_page, "?backend=wasm")


@pytest.mark.browser
@pytest.mark.slow
def test_page_int8_equals_onnxruntime_where_the_build_offers_it(site, browser_page, data_dir, tmp_path):
    """x3 offers its int8 model with the measured loss in the label and runs it (tiled) as onnxruntime's CPU
    provider runs the same file; x2 (measured over 0.1 dB) and x4 (not measured) cannot select it; fp32 stays the
    default, and a scale without int8 falls back to it."""
    manifest = json.loads((site / "site.json").read_text())
    assert (
        manifest["models"]["3"]["int8"]["offered"]
        and (site / manifest["models"]["3"]["int8"]["file"]).is_file()
    )
    assert [name for name, _ in web.list_site(site) if "quantized" in name] == [
        "models/espcn-x3_quantized.onnx"
    ]
    assert browser_page.input_value("#precision") == "fp32"
    option = browser_page.locator('#precision option[value="int8"]')
    for scale, reason in (("2", "more than 0.1 dB"), ("4", "no int8 measurement")):
        browser_page.select_option("#scale", scale)
        assert option.is_disabled() and reason in option.get_attribute("title"), scale
        with pytest.raises(Exception, match="disabled|not enabled"):
            browser_page.select_option("#precision", "int8", timeout=1000)
        assert browser_page.input_value("#precision") == "fp32"
    browser_page.select_option("#scale", "3")
    assert option.is_enabled() and option.inner_text() == "int8 (loses 0.05 dB on Set5, 1.5x faster on CPU)"

    photo = Image.open(sorted((data_dir / "benchmarks" / "Set5").glob("*.png"))[0]).convert("RGB")
    crop = photo.crop((30, 200, 100, 245))
    crop.save(tmp_path / "crop.png")
    _open(browser_page, "?backend=wasm&tile=24")  # six windows, clipped at every border
    assert _upscale_in_page(browser_page, tmp_path / "crop.png", 3, "int8") == "done", (
        browser_page.inner_text("#status")
    )
    page_rgba = _result_canvas(browser_page)
    expected = _onnxruntime_uint8(site / "models" / "espcn-x3_quantized.onnx", crop)
    assert page_rgba.shape == (*expected.shape[:2], 4)
    diff = np.abs(page_rgba[..., :3].astype(int) - expected.astype(int))
    assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, (diff.max(), diff.mean())
    assert (diff > 0).mean() <= MAX_SHARE_DIFFERENT_INT8, (diff > 0).mean()
    float32 = _onnxruntime_uint8(site / "models" / "espcn-x3.onnx", crop)
    assert np.abs(page_rgba[..., :3].astype(int) - float32.astype(int)).max() > 0  # int8 really ran
    assert browser_page.evaluate("document.body.dataset.precision") == "int8"
    assert "(int8)" in browser_page.inner_text("#model")
    browser_page.select_option("#scale", "2")  # no int8 at x2: back to float32
    assert browser_page.input_value("#precision") == "fp32"
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
