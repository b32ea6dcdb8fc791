"""ESPCN in the browser: a static page that runs the exported models with onnxruntime-web.

    espcn-hf web outputs/web                 # build the folder: the page, the ONNX models, the runtime
    espcn-hf web outputs/web --serve 8000    # build, then serve it on http://127.0.0.1:8000/
    espcn-hf web outputs/web --int8-results benchmarks/onnx_int8.json   # also the int8 models that pass
    hf upload --repo-type space espcn-hf/espcn-web outputs/web .   # the folder is a static Hugging Face Space

The folder needs nothing but static hosting (any web server; browsers do not run module scripts from file://) and
makes no request outside itself, so it works offline once built: the page (`index.html`, `app.js`,
`style.css`, package data under `templates/web/`), `site.json` (the models, the tile size and the limits the page
enforces, all written from here), `models/espcn-x{2,3,4}.onnx` (`onnx_export.export_onnx`, each checked against
torch with onnxruntime) and `ort/`: the onnxruntime-web bundles and WebAssembly binaries, taken from the npm package
`onnxruntime-web` (`ORT_VERSION`), which `npm pack` fetches once into a build cache (`default_cache_dir`; a cached
tarball is reused without npm). `README.md` is the Space's card: `sdk: static`, the model repos, and the
cross-origin isolation headers (`ISOLATION_HEADERS`) that let WebAssembly run on several threads.

int8 (opt-in, `int8_results`: the measurement file `scripts/benchmark_onnx.py` writes, benchmarks/onnx_int8.json):
the page offers `models/espcn-x{r}_quantized.onnx` (`onnx_export.quantize_onnx`, its default recipe, calibrated on
the training images under the data folder; about a minute per model on a 2-core CPU) for each model that
`hub.int8_verdict` lets the Hub upload ship, the same rule (at most 0.1 dB of PSNR-Y lost on Set5 and on Set14, for
these very weights), and names the measured loss and CPU speed-up in its label; float32 stays the default.

The page mirrors `espcn_hf.upscale`: exact tiles (`image_processing_espcn.tile_windows`, cores of `TILE_SIZE`
with `receptive_field_radius` pixels of context, so tiled equals untiled), the same uint8 rounding, grayscale in
-> grayscale out (the BT.601 luma of the RGB output) and alpha upscaled with Pillow's bicubic and put back. Its
DOM is a contract (`index.html`): `#scale`, `#file`, `#run`, `#precision` ("fp32", the default, or "int8", enabled
only for a scale whose build has its int8 model), the result in `canvas#result` at full resolution, and
`document.body.dataset.state` "done" or "error" (with the message in `#status`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path

ORT_PACKAGE = "onnxruntime-web"
ORT_VERSION = "1.31.1"
# What the page loads from the package's dist/ folder: the WebAssembly-only bundle with its loader and binary, and
# the WebGPU bundle (which also runs the WebAssembly CPU provider, its fallback) with its own.
ORT_FILES = (
    "ort.wasm.min.mjs",
    "ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm",
    "ort.webgpu.min.mjs",
    "ort-wasm-simd-threaded.asyncify.mjs",
    "ort-wasm-simd-threaded.asyncify.wasm",
)
PAGE_FILES = ("index.html", "app.js", "style.css")
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates" / "web"
MANIFEST = "site.json"
DEFAULT_SCALES = (2, 3, 4)
DEFAULT_SCALE = 3
# The page refuses larger images, from the file's header before decoding where it can read the format (PNG, JPEG,
# GIF, WebP, BMP). They bound the page's memory: at 36 Mpx out the RGBA result alone is 144 MB, and the bicubic
# twin and the PNG hold as much again each; 4 Mpx in at x3, and a 1920x1080 input at x4, still fit.
MAX_INPUT_PIXELS = 4_000_000
MAX_OUTPUT_PIXELS = 36_000_000
# Tile cores in LR pixels, on WebAssembly and WebGPU. Any size gives the untiled result (the context is the
# receptive-field radius, as in upscale()); 512 keeps a window's activations near 70 MB. On WebAssembly upscale()'s
# CPU tile (inference.AUTO_TILE_SIZE, 256) was 1.2-1.6x slower for a 1080p x3 output (benchmarks/web_wasm.md,
# its 256-px row).
TILE_SIZE = 512
# The static Space this folder is published as, and the headers it is served with: with them the page is
# cross-origin isolated and onnxruntime-web runs WebAssembly on several threads (without them: one thread).
SPACE_ID = "espcn-hf/espcn-web"
SPACE_URL = f"https://huggingface.co/spaces/{SPACE_ID}"
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "cross-origin",
}
NPM_TIMEOUT_S = 600


class WebBuildError(RuntimeError):
    """The site cannot be built: npm missing or failing, a damaged cache, a bad model or output folder."""


def default_cache_dir() -> Path:
    """Where the npm tarball is kept between builds: $ESPCN_HF_WEB_CACHE, else $XDG_CACHE_HOME/espcn-hf/web, else
    ~/.cache/espcn-hf/web."""
    if os.environ.get("ESPCN_HF_WEB_CACHE"):
        return Path(os.environ["ESPCN_HF_WEB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "espcn-hf" / "web"


def runtime_tarball(cache_dir: str | os.PathLike | None = None, version: str = ORT_VERSION) -> Path:
    """The path of the onnxruntime-web tarball in the build cache (present or not)."""
    return Path(cache_dir or default_cache_dir()) / f"{ORT_PACKAGE}-{version}.tgz"


def fetch_runtime(
    cache_dir: str | os.PathLike | None = None, version: str = ORT_VERSION, offline: bool = False
) -> Path:
    """The onnxruntime-web tarball: from the build cache, else fetched with `npm pack` (from npm's own cache when
    it holds it, else the registry) into the cache. `WebBuildError` when npm is missing or fails, or when
    `offline` and the cache lacks it."""
    tarball = runtime_tarball(cache_dir, version)
    if tarball.is_file():
        return tarball
    spec = f"{ORT_PACKAGE}@{version}"
    if offline:
        raise WebBuildError(
            f"{tarball} is not in the build cache, and --offline does not run npm to fetch {spec}"
        )
    npm = shutil.which("npm")
    if npm is None:
        raise WebBuildError(
            f"npm is not installed: it fetches {spec} once into {tarball.parent} (install Node.js with npm, or "
            f"put the tarball that 'npm pack {spec}' writes there)"
        )
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".npm-pack.", dir=tarball.parent) as tmp:
        command = [npm, "pack", spec, "--pack-destination", tmp, "--prefer-offline", "--fetch-retries=1"]
        command += ["--no-fund", "--no-audit", "--loglevel=error"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise WebBuildError(f"npm could not fetch {spec} within {NPM_TIMEOUT_S} s") from None
        except OSError as error:
            raise WebBuildError(f"npm could not be run: {error}") from None
        packed = sorted(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or len(packed) != 1:
            reason = _npm_reason(done.stderr or done.stdout or "")
            raise WebBuildError(f"npm could not fetch {spec} (exit {done.returncode}): {reason}")
        os.replace(packed[0], tarball)
    return tarball


def _npm_reason(output: str) -> str:
    """The line of npm's error output that says what failed (not its code, errno or stack lines)."""
    lines = [re.sub(r"^npm (error|ERR!)\s*", "", line.strip()) for line in output.splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        if not re.match(r"(code|syscall|errno|at) ", line):
            return line
    return lines[0] if lines else "no tarball was written"


def extract_runtime(tarball: str | os.PathLike, dest: str | os.PathLike) -> dict[str, str]:
    """Copy `ORT_FILES` from the package's dist/ folder into `dest` (one pass over the tarball) and write the
    package's name, version and licence to `dest/package.json`; returns them. `WebBuildError` for a damaged
    tarball or one without those files."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    found, package = set(), None
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                name = member.name.removeprefix("package/")
                if name == "package.json" and member.isfile():
                    package = json.loads(archive.extractfile(member).read())
                elif name.startswith("dist/") and name[5:] in ORT_FILES and member.isfile():
                    with archive.extractfile(member) as source, open(dest / name[5:], "wb") as target:
                        shutil.copyfileobj(source, target, 1 << 20)
                    found.add(name[5:])
    except (tarfile.TarError, EOFError, OSError, zlib.error, json.JSONDecodeError) as error:
        raise WebBuildError(f"{tarball}: damaged ({error}); delete it and build again") from None
    missing = [name for name in ORT_FILES if name not in found] + (
        ["package.json"] if package is None else []
    )
    if missing:
        raise WebBuildError(f"{tarball}: not an {ORT_PACKAGE} package with {', '.join(missing)}")
    info = {key: str(package.get(key, "")) for key in ("name", "version", "license")}
    # npm's integrity string of the tarball, to compare with `npm view onnxruntime-web@VERSION dist.integrity`
    info["integrity"] = "sha512-" + base64.b64encode(_digest(Path(tarball), "sha512")).decode()
    (dest / "package.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def runtime_files(
    cache_dir: str | os.PathLike | None = None, version: str = ORT_VERSION, offline: bool = False
) -> tuple[Path, dict[str, str]]:
    """(the build cache's folder holding `ORT_FILES` of onnxruntime-web `version`, the package's name, version and
    licence). Unpacked once from the tarball (`fetch_runtime`); the folder appears complete or not at all."""
    from .fileio import replace_dir

    cache = Path(cache_dir or default_cache_dir())
    folder = cache / f"{ORT_PACKAGE}-{version}"
    with contextlib.suppress(OSError, ValueError):
        info = json.loads((folder / "package.json").read_text())
        if info.get("version") == version and all((folder / name).is_file() for name in ORT_FILES):
            return folder, info
    tarball = fetch_runtime(cache, version, offline=offline)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=cache))
    try:
        info = extract_runtime(tarball, staging)
        replace_dir(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder, info


def _digest(path: Path, algorithm: str = "sha256") -> bytes:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def _load(model):
    """(the loaded model, its name, its Hub repo id or None) for a scale (the packaged model), folder or repo id."""
    from .pretrained import hub_repo_id, is_repo_id, load_model, packaged_weights

    if isinstance(model, int):
        return load_model(packaged_weights(model), device="cpu"), f"espcn-x{model}", hub_repo_id(model)
    name = str(model)
    return load_model(name, device="cpu"), Path(name).name or name, name if is_repo_id(name) else None


def read_int8_results(path: str | os.PathLike) -> dict:
    """The int8 measurement file (benchmarks/onnx_int8.json, written by scripts/benchmark_onnx.py) as a dict;
    `WebBuildError` when it cannot be read."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WebBuildError(f"{path}: not a readable int8 measurement file ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise WebBuildError(f"{path}: not an int8 measurement file (scripts/benchmark_onnx.py writes it)")
    return data


def int8_offer(results: dict, model) -> dict:
    """site.json's `int8` entry of `model`, by `hub.int8_verdict` (the Hub upload's rule): offered,
    {"offered": True, "psnr_lost_db", "speedup_cpu", "label"} with the label the page shows, e.g. "int8 (loses
    0.09 dB on Set5, 1.6x faster on CPU)" (the worst of `hub.INT8_SETS`; the speed-up is onnxruntime's on one CPU
    thread, from the measurement); else {"offered": False, "why"}."""
    from .hub import INT8_SETS, int8_measurement, int8_verdict

    ships, why = int8_verdict(results, model)
    if not ships:
        return {"offered": False, "why": why}
    row = int8_measurement(results, model)
    lost = {name: round(float(row["psnr_lost_db"][name]), 4) for name in INT8_SETS}
    worst = max(INT8_SETS, key=lambda name: lost[name])
    speedup = row.get("speedup_cpu")
    speed = f", {speedup:.1f}x faster on CPU" if isinstance(speedup, (int, float)) else ""
    return {
        "offered": True,
        "psnr_lost_db": lost,
        "speedup_cpu": round(float(speedup), 3) if speed else None,
        "label": f"int8 (loses {lost[worst]:.2f} dB on {worst}{speed})",
    }


def _export_models(models: Sequence, folder: Path, int8_results: dict | None = None) -> dict[int, dict]:
    """Export each model to `folder/espcn-x<scale>.onnx` (checked against torch with onnxruntime), and with
    `int8_results` its int8 graph to `folder/espcn-x<scale>_quantized.onnx` where `int8_offer` offers it; their
    entries in site.json by scale. `WebBuildError` for two models of one scale."""
    from .onnx_export import export_onnx, quantize_onnx

    entries: dict[int, dict] = {}
    for model in models:
        loaded, name, repo_id = _load(model)
        config = loaded.config
        scale = config.upscale_factor
        if scale not in DEFAULT_SCALES:
            raise WebBuildError(f"{name}: an x{scale} model; the page offers x2, x3 and x4")
        if scale in entries:
            raise WebBuildError(f"two models for x{scale}: {entries[scale]['name']} and {name}")
        path = export_onnx(loaded, folder / f"espcn-x{scale}.onnx")
        entries[scale] = {
            "name": name,
            "repo_id": repo_id,
            "file": f"{folder.name}/{path.name}",
            "sha256": _digest(path).hex(),
            "upscale_factor": scale,
            "receptive_field_radius": config.receptive_field_radius,
            "int8": None,  # no measurement file named: the page offers float32 only
        }
        if int8_results is not None:
            offer = int8_offer(int8_results, loaded)
            if offer["offered"]:
                quantized = quantize_onnx(path, folder / f"espcn-x{scale}_quantized.onnx")
                offer = {
                    "file": f"{folder.name}/{quantized.name}",
                    "sha256": _digest(quantized).hex(),
                    **offer,
                }
            entries[scale]["int8"] = offer
    return entries


def render_readme(models: dict[int, dict], runtime: dict[str, str]) -> str:
    """The folder's README.md: the static Space's card (front matter) and what the page does."""
    from huggingface_hub import SpaceCardData

    repos = [entry["repo_id"] for _, entry in sorted(models.items()) if entry["repo_id"]]
    data = SpaceCardData(
        title="ESPCN in the browser",
        emoji="🔍",
        colorFrom="indigo",
        colorTo="green",
        sdk="static",
        app_file="index.html",
        pinned=False,
        license="apache-2.0",
        short_description="ESPCN x2/x3/x4 super-resolution that runs in your browser",
        models=repos or None,
        custom_headers={name.lower(): value for name, value in ISOLATION_HEADERS.items()},
    )
    scales = ", ".join(f"x{scale}" for scale in sorted(models))
    links = ", ".join(
        f"[{entry['repo_id']}](https://huggingface.co/{entry['repo_id']})"
        if entry["repo_id"]
        else entry["name"]
        for _, entry in sorted(models.items())
    )
    int8 = "".join(
        f"- x{scale} can also run its int8 model (pick int8), which loses "
        + ", ".join(f"{lost:.2f} dB on {name}" for name, lost in entry["int8"]["psnr_lost_db"].items())
        + " of PSNR-Y against float32.\n"
        for scale, entry in sorted(models.items())
        if (entry.get("int8") or {}).get("offered")
    )
    return (
        f"---\n{data.to_yaml()}\n---\n\n"
        "# ESPCN super-resolution in the browser\n\n"
        f"Upscale an image {scales} with ESPCN (Shi et al., CVPR 2016, "
        "[arXiv 1609.05158](https://arxiv.org/abs/1609.05158)) without a server: the model runs in your browser "
        f"with [onnxruntime-web](https://www.npmjs.com/package/{runtime['name']}) {runtime['version']} "
        "(WebGPU where the browser has it, WebAssembly otherwise), so the image never leaves your machine. "
        f"Models: {links}, exported to ONNX by [espcn-hf](https://github.com/espcn-hf/espcn-hf).\n\n"
        "- Pick an image and a scale; the result is compared with the browser's bicubic upscaling on a slider "
        "and can be downloaded as a PNG. The page shows the time taken and the backend used.\n"
        "- The result equals the espcn-hf library's (`espcn_hf.upscale`): the same exact tiles, the same "
        "rounding, grayscale in gives grayscale out, and alpha is upscaled with bicubic and put back.\n"
        f"- Images up to {MAX_INPUT_PIXELS:,} pixels in and {MAX_OUTPUT_PIXELS:,} pixels out.\n"
        f"{int8}"
        "- Built by `espcn-hf web SITE_DIR`; every file is static. Served with the cross-origin isolation "
        "headers above, WebAssembly runs on several threads (on one without them).\n"
    )


def build_site(
    site_dir: str | os.PathLike,
    models: Sequence[str | os.PathLike] | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    offline: bool = False,
    int8_results: str | os.PathLike | dict | None = None,
) -> Path:
    """Build the static site into `site_dir` (replaced when it holds an earlier build) and return it.

    Args:
        models: model folders or Hub repo ids, at most one per scale; default: the packaged espcn-x2/x3/x4 (the
            models of the Hub repos espcn-hf/espcn-x2/-x3/-x4).
        cache_dir: the build cache for the npm tarball (default `default_cache_dir()`).
        offline: never run npm; the tarball must be in the cache.
        int8_results: the int8 measurement file (benchmarks/onnx_int8.json) or its dict: the site also holds the
            int8 graph (`quantize_onnx`, calibrated on the training images under the data folder) of each model
            that `hub.int8_verdict` passes, and the page offers it (`int8_offer`). Default: float32 only.

    Raises `WebBuildError` (npm missing or failing, an existing folder that is not a build, two models of one
    scale, an unreadable measurement file), `CheckpointError` (a model that cannot be loaded), `RuntimeError` (an
    export that differs from torch, an int8 graph too far from float32), `ValueError` (no calibration images).
    The folder is built beside `site_dir` and moved into place when complete (`fileio.replace_dir`).
    """
    from . import __version__
    from .fileio import atomic_write_text, replace_dir

    site_dir = Path(site_dir)
    if site_dir.exists() and (
        not site_dir.is_dir() or (any(site_dir.iterdir()) and not (site_dir / MANIFEST).is_file())
    ):
        raise WebBuildError(
            f"{site_dir}: exists and is not a site built by 'espcn-hf web'; refusing to replace it"
        )
    if int8_results is not None and not isinstance(int8_results, dict):
        int8_results = read_int8_results(int8_results)
    runtime_dir, runtime = runtime_files(
        cache_dir, offline=offline
    )  # first: a missing npm fails before the work
    chosen = list(DEFAULT_SCALES) if not models else list(models)
    site_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{site_dir.name}.", suffix=".partial", dir=site_dir.parent))
    try:
        # first: a bad model fails before any copying
        entries = _export_models(chosen, staging / "models", int8_results)
        (staging / "ort").mkdir()
        for name in ORT_FILES:
            shutil.copyfile(runtime_dir / name, staging / "ort" / name)
        atomic_write_text(
            staging / "ort" / "NOTICE.md",
            f"{runtime['name']} {runtime['version']} ({runtime['license']} licence, Copyright (c) Microsoft "
            f"Corporation), files {', '.join(ORT_FILES)} of its npm package (https://www.npmjs.com/package/"
            f"{runtime['name']}, integrity {runtime.get('integrity', 'unknown')}), unmodified.\n",
        )
        for name in PAGE_FILES:
            shutil.copyfile(TEMPLATE_DIR / name, staging / name)
        manifest = {
            "generator": f"espcn-hf {__version__}",
            "onnxruntime_web": runtime["version"],
            "default_scale": DEFAULT_SCALE if DEFAULT_SCALE in entries else min(entries),
            "limits": {"max_input_pixels": MAX_INPUT_PIXELS, "max_output_pixels": MAX_OUTPUT_PIXELS},
            "tile_size": TILE_SIZE,
            "models": {str(scale): entry for scale, entry in sorted(entries.items())},
        }
        atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        atomic_write_text(staging / "README.md", render_readme(entries, runtime))
        replace_dir(staging, site_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return site_dir


class SiteRequestHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with the cross-origin isolation headers of the Space (`ISOLATION_HEADERS`), quietly."""

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
        ".onnx": "application/octet-stream",
    }

    def end_headers(self) -> None:
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass


@contextlib.contextmanager
def serve_site(site_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 0):
    """Serve `site_dir` in a background thread as the Space does (with `ISOLATION_HEADERS`); yields the URL of
    the folder (port 0: a free port). For previews, tests and benchmarks."""
    handler = functools.partial(SiteRequestHandler, directory=str(site_dir))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def list_site(site_dir: str | os.PathLike) -> list[tuple[str, int]]:
    """(relative path, size in bytes) of every file of the folder, sorted."""
    root = Path(site_dir)
    return [
        (p.relative_to(root).as_posix(), p.stat().st_size) for p in sorted(root.rglob("*")) if p.is_file()
    ]


def add_parser(subparsers) -> None:
    """`espcn-hf web` (espcn_hf_cli.COMMANDS)."""
    from espcn_hf_cli import COMMANDS

    from .cli import HelpFormatter

    parser = subparsers.add_parser(
        "web",
        help=COMMANDS["web"][0],
        description="Build a static page that super-resolves images in the browser with onnxruntime-web "
        "(WebGPU where available, WebAssembly otherwise): index.html, its script, the ONNX models (checked "
        "against torch) and the runtime, fetched once with npm into a build cache. The folder needs only static "
        "hosting (any web server, not file://), makes no request outside itself, and is a static Hugging Face "
        "Space as it is (README.md front matter). An "
        "earlier build in SITE_DIR is replaced; any other non-empty folder is refused.",
        epilog="examples:\n"
        "  espcn-hf web outputs/web\n"
        "  espcn-hf web outputs/web --serve 8000            # then open http://127.0.0.1:8000/\n"
        "  espcn-hf web outputs/web --models runs/x3/best   # another x3 model only\n"
        "  espcn-hf web outputs/web --int8-results benchmarks/onnx_int8.json   # int8 where it loses <= 0.1 dB\n"
        f"  hf upload --repo-type space {SPACE_ID} outputs/web .   # publish (after hf auth login)",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("site_dir", metavar="SITE_DIR", type=Path, help="the folder to write")
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        help="model folders or Hub repo ids, one per scale (default: the packaged espcn-x2, espcn-x3, espcn-x4)",
    )
    parser.add_argument(
        "--npm-cache",
        metavar="DIR",
        type=Path,
        default=None,
        help=f"build cache for the {ORT_PACKAGE} tarball (default: $ESPCN_HF_WEB_CACHE or ~/.cache/espcn-hf/web)",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help=f"never run npm: use the {ORT_PACKAGE} tarball in the build cache",
    )
    parser.add_argument(
        "--int8-results",
        metavar="FILE",
        type=Path,
        default=None,
        help="the int8 measurement file (benchmarks/onnx_int8.json, scripts/benchmark_onnx.py): the page also offers "
        "the int8 model of each scale whose model it says loses at most 0.1 dB (the Hub upload's rule), quantised "
        "on the training images under the data folder (about a minute per model on a small CPU); default: "
        "float32 only",
    )
    parser.add_argument(
        "--serve",
        metavar="PORT",
        type=int,
        help="after building, serve the folder on 127.0.0.1:PORT with the Space's headers until Ctrl-C",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`espcn-hf web SITE_DIR`: 0 when built (and served until Ctrl-C with --serve), 1 with one error line."""
    from .cli import EXIT_FAILURES, EXIT_OK, library_output, missing_extra
    from .pretrained import CheckpointError

    try:
        with library_output(quiet=args.quiet):
            site = build_site(
                args.site_dir,
                args.models,
                cache_dir=args.npm_cache,
                offline=args.offline,
                int8_results=args.int8_results,
            )
    except ImportError as error:  # onnx / onnxruntime / onnxscript: the optional `onnx` extra
        print(f"error: {missing_extra(error, 'onnx')}", file=sys.stderr)
        return EXIT_FAILURES
    except (WebBuildError, CheckpointError, ValueError, RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURES
    if not args.quiet:
        files = list_site(site)
        print(f"built {site}: {len(files)} files, {sum(size for _, size in files) / 2**20:.1f} MiB")
        for name, size in files:
            print(f"  {name}  ({size:,} bytes)")
        manifest = json.loads((site / MANIFEST).read_text())
        for scale, entry in manifest["models"].items():
            if entry.get("int8") is not None:
                offer = entry["int8"]
                print(
                    f"x{scale} int8: "
                    + (offer["label"] if offer["offered"] else f"not offered, {offer['why']}")
                )
    if args.serve is not None:
        try:
            with serve_site(site, port=args.serve) as url:
                print(f"serving {site} on {url} (Ctrl-C to stop)", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait()
        except OSError as error:  # the port is taken or not ours to open
            print(f"error: cannot serve on port {args.serve}: {error}", file=sys.stderr)
            return EXIT_FAILURES
    return EXIT_OK


__all__ = [
    "ISOLATION_HEADERS",
    "MAX_INPUT_PIXELS",
    "MAX_OUTPUT_PIXELS",
    "ORT_VERSION",
    "SPACE_ID",
    "WebBuildError",
    "add_parser",
    "build_site",
    "default_cache_dir",
    "extract_runtime",
    "fetch_runtime",
    "int8_offer",
    "list_site",
    "read_int8_results",
    "render_readme",
    "run",
    "runtime_files",
    "serve_site",
]
