"""Space deploy rehearsal: the exact Space upload, installed from its own requirements.txt in a clean venv, served
offline from a Hub cache that holds the exact model push folders, driven by gradio_client and by Chromium.

    python scripts/rehearse_space.py [--work /tmp/espcn-space-rehearsal] [--screenshot benchmarks/space_screenshot.png]
                                     [--report benchmarks/space_rehearsal.md] [--reuse-venv]

Steps (each one printed, the whole run fails on the first problem):
1. `build_space_folder`: what `hf upload` of space/ plus espcn_hf/ would put in the Space repo (space/README.md,
   "Deploy"): app.py, README.md, requirements.txt, the example photos and clip, and the package folder beside
   app.py.
2. `hub_push_folder` for each default repo id (espcn-hf/espcn-x2/x3/x4): the folder the publishing code would push
   for the packaged weights, laid out by `lay_out_hub_cache` as HF_HUB_CACHE/models--OWNER--NAME/snapshots/<sha>/
   with refs/main, as `huggingface_hub` leaves it after a download.
3. A fresh `python -m venv` (no system site-packages) gets `pip install -r requirements.txt` and nothing else. torch
   is pinned to the release whose CPU wheel this machine holds; the CPU index in requirements.txt is unreachable
   here, so pip is run without retries and falls through to the wheel on disk.
4. `python app.py` in the Space folder, with HF_HUB_OFFLINE=1, the Hub cache above and no PYTHONPATH: it must
   serve the three default repo ids from the cache (its model line says "local Hub cache", not "packaged weights").
5. gradio_client: one request per scale on an example photo (each must report the Hub repo), a short clip with
   audio on the video tab, and a corrupt upload (a friendly error). Playwright in Debian's Chromium: click an example, run it, check the slider, screenshot.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SPACE_DIR = REPO_ROOT / "space"
PACKAGE_DIR = REPO_ROOT / "espcn_hf"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SPACE_FILES = ("app.py", "README.md", "requirements.txt")
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".mp4")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.egg-info", ".*")


# ----------------------------------------------------------------------------------------------------------------
# Building blocks (also used by tests/test_space.py)
# ----------------------------------------------------------------------------------------------------------------


def build_space_folder(
    dest: str | os.PathLike, space_dir: Path = SPACE_DIR, package_dir: Path = PACKAGE_DIR
) -> Path:
    """Write the Space repository's content into `dest` (replaced): space/'s app, README (front matter) and
    requirements, its example photos and clip, and the `espcn_hf` package folder beside app.py."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in SPACE_FILES:
        shutil.copy2(space_dir / name, dest / name)
    (dest / "examples").mkdir()
    for example in sorted((space_dir / "examples").iterdir()):
        if example.suffix.lower() in EXAMPLE_SUFFIXES:
            shutil.copy2(example, dest / "examples" / example.name)
    shutil.copytree(package_dir, dest / package_dir.name, ignore=_IGNORE)
    return dest


def _hub_cache_helper():
    """tests/hub_cache.py, the project's one implementation of the Hub cache layout (blobs, refs/main, snapshots)."""
    spec = importlib.util.spec_from_file_location("hub_cache", REPO_ROOT / "tests" / "hub_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lay_out_hub_cache(cache_dir: str | os.PathLike, repo_id: str, folder: str | os.PathLike) -> Path:
    """Put `folder` into `cache_dir` (an HF_HUB_CACHE) as the `main` revision of the model repo `repo_id`, as
    huggingface_hub leaves it after a download; returns the snapshot folder. With HF_HUB_OFFLINE=1,
    `from_pretrained(repo_id)` then reads exactly these files."""
    return _hub_cache_helper().snapshot_repo(cache_dir, repo_id, folder)


def hub_push_folder(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, repo_id: str) -> Path:
    """The folder the publishing code uploads for `checkpoint` to `repo_id` (no evaluation tables, no picture)."""
    from espcn_hf.hub import prepare_upload_folder

    return prepare_upload_folder(checkpoint, out_dir, eval_json_paths=[], repo_id=repo_id, comparison=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def space_env(hub_cache: Path, port: int, empty_dir: Path) -> dict[str, str]:
    """The environment of the Space process: offline Hub with our cache, nothing of ours on PYTHONPATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ESPCN_HF_", "HF_", "HUGGINGFACE_", "GRADIO_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(hub_cache),
        HF_HOME=str(empty_dir / "hf-home"),
        GRADIO_SERVER_PORT=str(port),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(empty_dir / "gradio-cache"),
        PYTHONUNBUFFERED="1",
    )
    return env


def start_space(python: str, space: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """`python app.py` in the Space folder, as the Space runtime starts it; output to `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [python, "app.py"],
            cwd=space,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 120.0) -> float:
    """Seconds until the app accepts connections; raises with the app's log if it dies or times out."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the Space exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return time.perf_counter() - start
        time.sleep(0.2)
    raise RuntimeError(
        f"the Space did not listen on port {port} within {timeout:.0f} s:\n{log.read_text()[-4000:]}"
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ----------------------------------------------------------------------------------------------------------------
# The rehearsal
# ----------------------------------------------------------------------------------------------------------------


def _step(message: str) -> None:
    print(f"== {message}", flush=True)


def make_venv(venv: Path, requirements: Path, log: Path, reuse: bool) -> tuple[str, float]:
    """A clean venv with only `requirements` installed; returns (its python, install seconds)."""
    python = venv / "bin" / "python"
    if reuse and python.is_file():
        return str(python), 0.0
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIP_RETRIES"] = "0"  # the CPU index in requirements.txt is unreachable offline: fail over at once
    start = time.perf_counter()
    with open(log, "wb") as out:
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "--no-input", "-r", str(requirements)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"pip install -r requirements.txt failed:\n{log.read_text()[-4000:]}")
    return str(python), seconds


def make_clip(path: Path, size=(480, 270), rate: int = 25, seconds: int = 3) -> Path:
    """A synthetic H.264 clip with an AAC tone (moving gradient), for the video tab."""
    from fractions import Fraction

    import av
    import numpy as np

    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=16000, layout="mono")
        for i in range(rate * seconds):
            rgb = np.stack([(x + 4 * i) % 256, y * 255 // height, (x * y // 64 + i) % 256], axis=-1).astype(
                np.uint8
            )
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        tone = (0.2 * np.sin(np.arange(16000 * seconds) * 2 * np.pi * 440 / 16000)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = 16000, start, Fraction(1, 16000)
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    return path


def drive_with_client(url: str, space: Path, download_dir: Path) -> list[str]:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from PIL import Image

    client = Client(url, verbose=False, download_files=str(download_dir))
    lines = []
    examples = {2: "set14_comic.png", 3: "set5_bird.png", 4: "set5_butterfly.png"}
    for scale, name in examples.items():
        image = space / "examples" / name
        width, height = Image.open(image).size
        start = time.perf_counter()
        (before, after), info, download = client.predict(
            handle_file(str(image)), scale, False, api_name="/super_resolve"
        )
        seconds = time.perf_counter() - start
        expected = (width * scale, height * scale)
        sizes = {Image.open(before).size, Image.open(after).size, Image.open(download).size}
        if sizes != {expected}:
            raise RuntimeError(f"x{scale}: sizes {sizes}, expected {expected}")
        repo = f"espcn-hf/espcn-x{scale}"
        if f"Model: [{repo}](https://huggingface.co/{repo}) (local Hub cache)" not in info:
            raise RuntimeError(f"x{scale}: the app did not serve the Hub repo {repo}:\n{info}")
        model_line = next(line for line in info.split("\n\n") if line.startswith("Model:"))
        lines.append(
            f"x{scale} `{name}` {width}×{height} → {expected[0]}×{expected[1]} in {seconds:.2f} s; {model_line}"
        )
    clip = make_clip(download_dir / "clip.mp4")
    start = time.perf_counter()
    video, info = client.predict(handle_file(str(clip)), 2, api_name="/super_resolve_video")
    seconds = time.perf_counter() - start
    if "Audio copied unchanged." not in info or "**960×540**" not in info:
        raise RuntimeError(f"video: unexpected result:\n{info}")
    first = info.split("\n\n")[0].replace("**", "")
    lines.append(f"video x2 (480×270, 3 s at 25 fps, AAC audio), {seconds:.1f} s round trip; {first}")
    bad = download_dir / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(256))
    try:
        client.predict(handle_file(str(bad)), 3, False, api_name="/super_resolve")
    except AppError as error:
        message = str(error)
        if "cannot be used as an image" not in message or str(download_dir) in message:
            raise RuntimeError(f"unexpected error for a corrupt upload: {message}") from None
        lines.append(f"corrupt upload: “{message.strip()}”")
    else:
        raise RuntimeError("a corrupt upload was accepted")
    return lines


def drive_with_browser(url: str, screenshot: Path, clip: Path, video_screenshot: Path) -> tuple[str, str]:
    """Click the first example (Set5 bird, x3 of a downscaled copy), run it, check the slider, take the screenshot;
    then upload `clip` on the Video tab, run it x2 and check that the page plays back a video of twice the size."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.get_by_text("Bird (Set5)").first.click(timeout=30_000)
            page.locator("#input-image img").first.wait_for(timeout=30_000)
            page.locator("#run").click()
            page.get_by_text("PSNR-Y / SSIM-Y against the original", exact=False).first.wait_for(
                timeout=60_000
            )
            page.locator("#result-slider img").first.wait_for(timeout=30_000)
            size = page.evaluate(
                "() => { const i = document.querySelector('#result-slider img'); "
                "return [i.naturalWidth, i.naturalHeight]; }"
            )
            if size != [288, 288]:
                raise RuntimeError(f"the slider shows {size}, expected 288×288 (96×96 upscaled x3)")
            info = page.locator("#info").inner_text()
            page.wait_for_timeout(500)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)

            page.get_by_role("tab", name="Video").click()
            page.locator("#input-video input[type=file]").set_input_files(str(clip))
            page.locator("#input-video video").first.wait_for(timeout=30_000)
            page.locator("#video-scale").get_by_label("x2").check()
            page.locator("#run-video").click()
            page.get_by_text("Audio copied unchanged", exact=False).first.wait_for(timeout=300_000)
            page.locator("#output-video video").first.wait_for(timeout=30_000)
            page.wait_for_function(
                "() => { const v = document.querySelector('#output-video video'); return v && v.videoWidth > 0; }",
                timeout=30_000,
            )
            video_size = page.evaluate(
                "() => { const v = document.querySelector('#output-video video'); return [v.videoWidth, v.videoHeight]; }"
            )
            if video_size != [960, 540]:
                raise RuntimeError(f"the page plays a {video_size} video, expected 960×540")
            video_info = page.locator("#video-info").inner_text()
            page.screenshot(path=str(video_screenshot), full_page=True)
        finally:
            browser.close()
    return " ".join(info.split()), " ".join(video_info.split())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "espcn-space-rehearsal")
    parser.add_argument("--screenshot", type=Path, default=REPO_ROOT / "benchmarks" / "space_screenshot.png")
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "benchmarks" / "space_rehearsal.md")
    parser.add_argument("--reuse-venv", action="store_true", help="keep the venv of an earlier run in --work")
    return parser.parse_args(argv)


def upload_folder_step(work: Path) -> tuple[Path, str]:
    """Step 1: the Space upload folder; returns it and its report line."""
    _step("1. the Space upload folder")
    space = build_space_folder(work / "space-upload")
    files = sorted(str(p.relative_to(space)) for p in space.rglob("*") if p.is_file())
    size = sum((space / f).stat().st_size for f in files)
    top = sorted({f.split("/")[0] + ("/" if "/" in f else "") for f in files})
    return space, f"1. Space folder: {len(files)} files, {size / 1e6:.2f} MB: {', '.join(top)}"


def hub_cache_step(work: Path) -> tuple[Path, str]:
    """Step 2: the Hub cache holding the push folder of each default repo id; returns it and its report line."""
    _step("2. the Hub cache with the push folders of espcn-hf/espcn-x2/x3/x4")
    from espcn_hf.pretrained import HUB_REPO_IDS, packaged_weights

    hub_cache = work / "hub-cache"
    if hub_cache.exists():
        shutil.rmtree(hub_cache)
    for scale, repo_id in sorted(HUB_REPO_IDS.items()):
        push = hub_push_folder(packaged_weights(scale), work / "push" / repo_id.split("/")[-1], repo_id)
        snapshot = lay_out_hub_cache(hub_cache, repo_id, push)
        print(f"   {repo_id}: {sorted(p.name for p in snapshot.iterdir())}")
    return hub_cache, (
        f"2. Hub cache: {', '.join(sorted(HUB_REPO_IDS.values()))} as `models--OWNER--NAME/snapshots/<sha>/` + "
        "`refs/main`, each the push folder of the packaged weights"
    )


def venv_step(work: Path, space: Path, reuse: bool) -> tuple[str, str]:
    """Step 3: a clean venv with only requirements.txt, in which `espcn_hf` must not be importable outside the
    Space folder; returns its python and the report line."""
    _step("3. a clean venv with only requirements.txt")
    python, install_s = make_venv(work / "venv", space / "requirements.txt", work / "pip.log", reuse)
    version = subprocess.run(
        [
            python,
            "-c",
            "import torch, gradio, transformers; print(torch.__version__, gradio.__version__, transformers.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=work,
    ).stdout.split()
    importable = (
        subprocess.run([python, "-c", "import espcn_hf"], cwd=work, capture_output=True).returncode == 0
    )
    if importable:
        raise RuntimeError(
            "espcn_hf is importable in the venv outside the Space folder: the venv is not clean"
        )
    return python, (
        f"3. Fresh venv (`python -m venv`, no system packages), `pip install -r requirements.txt` "
        f"({'reused' if install_s == 0 else f'{install_s:.0f} s'}): torch {version[0]}, gradio {version[1]}, "
        f"transformers {version[2]}; `import espcn_hf` fails outside the Space folder"
    )


def client_step(url: str, space: Path, downloads: Path) -> list[str]:
    """Step 5: the app driven by gradio_client; its report lines."""
    _step("5. gradio_client")
    downloads.mkdir(exist_ok=True)
    lines = drive_with_client(url, space, downloads)
    return ["5. gradio_client:", *(f"   - {line}" for line in lines)]


def browser_step(url: str, work: Path, downloads: Path, screenshot: Path) -> list[str]:
    """Step 6: the app driven in Chromium (skipped when it is not installed); its report lines."""
    if not CHROMIUM.exists():
        return [f"6. Chromium: skipped ({CHROMIUM} not found)"]
    _step("6. Chromium (Playwright)")
    screenshot = screenshot.resolve()
    info, video_info = drive_with_browser(
        url, screenshot, downloads / "clip.mp4", work / "space_video_screenshot.png"
    )
    return [
        f"6. Chromium (Playwright): example “Bird (Set5)” clicked and run; panel: {info}",
        f"   Video tab: the 480×270 clip uploaded and run x2, the page plays it back at 960×540; panel: "
        f"{video_info}",
        f"   Screenshot: `{os.path.relpath(screenshot, REPO_ROOT)}`",
    ]


def serve_step(python: str, space: Path, hub_cache: Path, work: Path, screenshot: Path) -> list[str]:
    """Step 4: `python app.py` offline in a fresh runtime folder, then steps 5 and 6 against it; the app is
    stopped at the end whatever happens. Returns the report lines of steps 4 to 6."""
    _step("4. python app.py, offline")
    port = free_port()
    empty = work / "runtime"
    if empty.exists():
        shutil.rmtree(empty)
    empty.mkdir()
    log = work / "app.log"
    process = start_space(python, space, space_env(hub_cache, port, empty), log)
    try:
        startup = wait_for_port(port, process, log)
        url = f"http://127.0.0.1:{port}/"
        lines = [
            f"4. `python app.py` in the Space folder with HF_HUB_OFFLINE=1: listening after {startup:.1f} s"
        ]
        downloads = work / "client-downloads"
        lines += client_step(url, space, downloads)
        lines += browser_step(url, work, downloads, screenshot)
    finally:
        stop(process)
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    space, space_line = upload_folder_step(work)
    hub_cache, hub_line = hub_cache_step(work)
    python, venv_line = venv_step(work, space, args.reuse_venv)
    serve_lines = serve_step(python, space, hub_cache, work, args.screenshot)
    report = [
        "# Space deploy rehearsal",
        "",
        "Command (from the repository root): `python scripts/rehearse_space.py`",
        "",
        space_line,
        hub_line,
        venv_line,
        *serve_lines,
        "",
        f"Machine: {os.cpu_count()} CPU cores shared with other jobs (load average {os.getloadavg()[0]:.1f} at the "
        "end), so the times above are those of a busy machine.",
        "",
        "Result: all steps passed.",
        "",
    ]
    text = "\n".join(report)
    print(text)
    from espcn_hf.fileio import atomic_write_text

    args.report.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.report, text)
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
