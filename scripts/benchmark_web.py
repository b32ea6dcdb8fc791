"""The in-browser page on WebAssembly vs onnxruntime's CPU provider in Python, same ONNX files, same run.

    python scripts/benchmark_web.py                  # writes benchmarks/web_wasm.md

Builds the site with `espcn_hf.web.build_site` into a temporary folder (or takes `--site`), serves it with the
Space's cross-origin isolation headers (`espcn_hf.web.serve_site`), and drives Debian's Chromium (headless,
Playwright) through the page's DOM contract with `?backend=wasm&threads=N[&tile=N]`: each run clicks #run and
waits for body[data-state="done"]. Reported per run by the page: body[data-ms], the network over all tiles
(packing the floats, onnxruntime-web, rounding into the RGBA result), and body[data-total-ms], click to result
(decoding, the bicubic twin and the PNG included). The same ONNX file runs in Python with onnxruntime
(CPUExecutionProvider, the same thread count) on the page's tiles, packing and rounding included, and on the
whole frame (session.run alone). Every case runs once per round, in turn; round 0 (sessions created) is a
warm-up. Inputs: the benchmarks' synthetic frame (`common.test_frame`), 640x360 (x3 -> 1920x1080) and 512x512
(x3 -> 1536x1536).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from common import REPO, test_frame
from PIL import Image

from espcn_hf.fileio import atomic_write_text
from espcn_hf.image_processing_espcn import tile_windows
from espcn_hf.ort_backend import cpu_session
from espcn_hf.web import ORT_VERSION, build_site, serve_site

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCALE = 3
FRAMES = {"1080p": (360, 640), "512px": (512, 512)}  # LR (height, width)
TARGET_512_S = 5.0
# Page cases: (frame, threads (None: --threads), tile (None: the page's default)). 256 is upscale()'s CPU tile.
PAGE_CASES = [("1080p", None, None), ("1080p", None, 256), ("1080p", 1, None), ("512px", None, None)]


class PageCase:
    """One page, opened with its URL options and its file picked: `run()` clicks #run and returns (network ms,
    click-to-result ms) as the page reports them."""

    def __init__(self, browser, url: str, query: str, path: Path) -> None:
        self.page = browser.new_page()
        self.page.goto(f"{url}index.html?{query}")
        self.page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=120_000)
        if self.page.evaluate("document.body.dataset.state") != "ready":
            raise RuntimeError(f"the page did not start: {self.page.inner_text('#status')}")
        self.page.set_input_files("#file", str(path))
        self.page.select_option("#scale", str(SCALE))

    def run(self) -> tuple[float, float]:
        self.page.click("#run")
        self.page.wait_for_function(
            "['done', 'error'].includes(document.body.dataset.state)", timeout=600_000
        )
        dataset = self.page.evaluate("({...document.body.dataset})")
        if dataset["state"] != "done":
            raise RuntimeError(f"the page failed: {self.page.inner_text('#status')}")
        self.threads = int(dataset["threads"])
        return float(dataset["ms"]), float(dataset["totalMs"])


def python_tiled(session: ort.InferenceSession, frame: np.ndarray, tile: int, margin: int) -> np.ndarray:
    """The page's work in Python: the same windows, float packing, onnxruntime, rounding into an RGB result."""
    height, width = frame.shape[:2]
    pixels = (frame.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    out = np.empty((height * SCALE, width * SCALE, 3), np.uint8)
    if tile >= height and tile >= width:
        tile = max(height, width)
    for top, left, bottom, right, t0, l0, b1, r1 in tile_windows(height, width, tile, margin):
        (result,) = session.run(
            ["reconstruction"], {"pixel_values": np.ascontiguousarray(pixels[..., t0:b1, l0:r1])}
        )
        core = result[
            0, :, (top - t0) * SCALE : (bottom - t0) * SCALE, (left - l0) * SCALE : (right - l0) * SCALE
        ]
        levels = np.floor(np.clip(core.astype(np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
        out[top * SCALE : bottom * SCALE, left * SCALE : right * SCALE] = levels.transpose(1, 2, 0)
    return out


def chromium_version() -> str:
    try:
        text = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return "unknown"
    return text.split(" built")[0].strip() or "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--site", type=Path, help="an existing build (default: build into a temporary folder)"
    )
    parser.add_argument("--threads", type=int, default=2, help="WebAssembly and onnxruntime threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case, after one warm-up")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "web_wasm.md")
    return parser.parse_args(argv)


def built_site(site: Path | None, tmp: Path) -> Path:
    """`site`, or the site built into `tmp`."""
    if site is not None:
        return site
    started = time.perf_counter()
    site = build_site(tmp / "site")
    print(f"built the site in {time.perf_counter() - started:.0f} s")
    return site


def write_frames(tmp: Path) -> dict[str, np.ndarray]:
    """The input frames (`FRAMES`), also saved as `<name>.png` in `tmp` for the page to open."""
    frames = {name: test_frame(*size) for name, size in FRAMES.items()}
    for name, frame in frames.items():
        Image.fromarray(frame).save(tmp / f"{name}.png")
    return frames


def open_pages(browser, url: str, tmp: Path, threads: int, tile: int) -> dict[tuple, PageCase]:
    """A page per `PAGE_CASES` entry, keyed by (frame, threads, tile) with the defaults filled in."""
    pages = {}
    for name, case_threads, page_tile in PAGE_CASES:
        query = f"backend=wasm&threads={case_threads or threads}" + (
            f"&tile={page_tile}" if page_tile else ""
        )
        pages[(name, case_threads or threads, page_tile or tile)] = PageCase(
            browser, url, query, tmp / f"{name}.png"
        )
    return pages


def elapsed_ms(work: Callable[[], object]) -> float:
    """Wall time of `work()` in ms."""
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) * 1000


def python_round(
    session: ort.InferenceSession, frames: dict, inputs: dict, tile: int, margin: int
) -> dict[tuple, float]:
    """One round of the Python cases: ms of the page's tiled work and of the whole frame, for each frame."""
    ms = {}
    for name, frame in frames.items():
        tiled = functools.partial(python_tiled, session, frame, tile, margin)
        whole = functools.partial(session.run, ["reconstruction"], {"pixel_values": inputs[name]})
        ms[("python", name, "tiled")] = elapsed_ms(tiled)
        ms[("python", name, "whole")] = elapsed_ms(whole)
    return ms


def run_rounds(
    pages: dict[tuple, PageCase], python_cases: Callable[[], dict], repeats: int
) -> dict[tuple, list]:
    """Every case once per round, in turn, so a change of the machine's load touches all of them alike;
    round 0 (sessions created) is the warm-up. The results of the timed rounds by case."""
    times: dict[tuple, list] = {}
    for round_index in range(repeats + 1):
        results = {("page", *key): case.run() for key, case in pages.items()}
        results.update(python_cases())
        if round_index:
            for key, result in results.items():
                times.setdefault(key, []).append(result)
        print(f"round {round_index} done", flush=True)
    return times


def measure(
    site: Path, tmp: Path, frames: dict, session: ort.InferenceSession, tile: int, margin: int, args
) -> tuple[dict[tuple, list], dict[tuple, int]]:
    """The rounds with the site served and Chromium driving its pages; returns the times by case and the
    thread count each page reported."""
    from playwright.sync_api import sync_playwright

    inputs = {
        name: (frame.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()
        for name, frame in frames.items()
    }
    python_cases = functools.partial(python_round, session, frames, inputs, tile, margin)
    with serve_site(site) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        pages = open_pages(browser, url, tmp, args.threads, tile)
        times = run_rounds(pages, python_cases, args.repeats)
        reported_threads = {key: case.threads for key, case in pages.items()}
        browser.close()
    return times, reported_threads


def median_of(times: dict[tuple, list], key: tuple, index: int | None = None) -> float:
    """The median of a case's times (of item `index` of each result when given)."""
    values = times[key] if index is None else [t[index] for t in times[key]]
    return statistics.median(values)


def header_lines(args, load_before: float, load_after: float) -> list[str]:
    """The title, the command, the machine and the method."""
    return [
        "# The in-browser page on WebAssembly vs onnxruntime CPU (Python)",
        "",
        "Command: `python scripts/benchmark_web.py"
        + ("" if args.threads == 2 else f" --threads {args.threads}")
        + "`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; {chromium_version()} headless "
        f"(`--disable-gpu`, so no WebGPU), onnxruntime-web {ORT_VERSION} (WebAssembly, SIMD, threads through the "
        f"page's cross-origin isolation); onnxruntime {ort.__version__} (CPUExecutionProvider). Load average (1 min) "
        f"before / after: {load_before:.1f} / {load_after:.1f} (a shared machine: compare rows of one run).  ",
        f"Model: espcn-x{SCALE} (seven layers), the same .onnx file (built by `espcn_hf.web`) in both; input: the "
        "benchmarks' synthetic frame (`scripts/common.py` test_frame). Milliseconds, median of "
        f"{args.repeats} rounds after one warm-up round (which creates the sessions); each round runs every case "
        "once, in turn. The page's tile is set with `?tile=`; every tile size gives the same pixels.",
        "",
    ]


def table_lines(
    times: dict[tuple, list], reported_threads: dict[tuple, int], threads: int, tile: int
) -> list[str]:
    """The table: for each frame, the page's rows (network, click to result) and the two Python rows."""
    r = SCALE
    lines = [
        "| input -> output | method | threads | tile | ms |",
        "|---|---|---:|---:|---:|",
    ]
    for name, (height, width) in FRAMES.items():
        size = f"{width}x{height} -> {width * r}x{height * r}"
        for key in times:
            if key[0] != "page" or key[1] != name:
                continue
            page_tile = key[3]
            shown = reported_threads[key[1:]]
            lines.append(
                f"| {size} | page, WebAssembly: the network over the tiles | {shown} | {page_tile} | {median_of(times, key, 0):.0f} |"
            )
            lines.append(f"| {size} | page, WebAssembly: click to result (decode, bicubic, PNG too) | {shown} | {page_tile} | {median_of(times, key, 1):.0f} |")  # fmt: skip
        lines.append(f"| {size} | onnxruntime CPU, Python: the same tiles, packing and rounding | {threads} | {tile} | {median_of(times, ('python', name, 'tiled')):.0f} |")  # fmt: skip
        lines.append(f"| {size} | onnxruntime CPU, Python: whole frame, session.run alone | {threads} | - | {median_of(times, ('python', name, 'whole')):.0f} |")  # fmt: skip
    return lines


def verdict_lines(times: dict[tuple, list], threads: int, tile: int) -> list[str]:
    """The page against Python at 1080p, and the 512x512 target."""
    page_1080 = median_of(times, ("page", "1080p", threads, tile), 0)
    python_1080 = median_of(times, ("python", "1080p", "tiled"))
    page_512 = median_of(times, ("page", "512px", threads, tile), 1)
    network_512 = median_of(times, ("page", "512px", threads, tile), 0)
    verdict = "met" if page_512 / 1000 < TARGET_512_S else "**NOT met**"
    return [
        "",
        f"- 1080p x3 output ({threads} threads, the page's default tile): the page takes {page_1080 / python_1080:.1f}x "
        f"the time of onnxruntime in Python on the same tiles ({page_1080:.0f} vs {python_1080:.0f} ms).",
        f"- 512x512 x3 on WebAssembly: {page_512 / 1000:.2f} s click to result ({network_512 / 1000:.2f} s "
        f"the network); target under {TARGET_512_S:.0f} s: {verdict}.",
        "- The 1-thread row shows what the other threads bought on this machine at this load; the 256-px row "
        "(upscale()'s CPU tile) why the page's tile is larger.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not CHROMIUM.is_file():
        print(
            f"error: Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)",
            file=sys.stderr,
        )
        return 1
    import playwright.sync_api  # noqa: F401  (a missing Playwright fails here, before the site is built)

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        site = built_site(args.site, tmp)
        manifest = json.loads((site / "site.json").read_text())
        tile = manifest["tile_size"]
        margin = manifest["models"][str(SCALE)]["receptive_field_radius"]
        frames = write_frames(tmp)
        session = cpu_session(site / "models" / f"espcn-x{SCALE}.onnx", args.threads)
        times, reported_threads = measure(site, tmp, frames, session, tile, margin, args)
    load_after = os.getloadavg()[0]

    lines = [
        *header_lines(args, load_before, load_after),
        *table_lines(times, reported_threads, args.threads, tile),
        *verdict_lines(times, args.threads, tile),
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
