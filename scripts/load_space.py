"""Load test of the Space: N concurrent requests through gradio_client, none may be lost.

    # launch space/app.py in this process (bundled checkpoints, or random weights of the real architecture)
    python scripts/load_space.py --requests 30 [--random-weights] [--report benchmarks/load_space.md]
    # or hit a running app
    python scripts/load_space.py --url http://127.0.0.1:7860/

Each request upscales `space/examples/set5_bird.png` (288x288) x3. Reports completed / failed and the p50 / p95
latency (submit to result, queueing included), then checks that the app still answers, and writes the report.
Exit status 1 when a request was lost or failed or the app stopped answering.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shlex
import shutil
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "space" / "examples" / "set5_bird.png"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running app; default: launch space/app.py here on a free port")
    parser.add_argument("--requests", type=int, default=30, help="concurrent requests (default 30)")
    parser.add_argument("--scale", type=int, default=3, choices=(2, 3, 4))
    parser.add_argument("--image", type=Path, default=EXAMPLE)
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="serve models of the default seven-layer architecture with random weights (same compute as the "
        "trained ones; for timing when no checkpoints exist)",
    )
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "benchmarks" / "load_space.md")
    return parser.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _random_weight_checkpoints() -> Path:
    import torch

    from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, ESPCNImageProcessor

    root = Path(tempfile.mkdtemp(prefix="espcn-load-"))
    for scale in (2, 3, 4):
        torch.manual_seed(scale)
        folder = root / f"espcn-x{scale}"
        ESPCNForImageSuperResolution(ESPCNConfig.from_preset("espcn", upscale_factor=scale)).save_pretrained(
            folder
        )
        ESPCNImageProcessor(upscale_factor=scale).save_pretrained(folder)
    return root


def launch_local(random_weights: bool):
    """Start space/app.py's demo in this process; returns (url, demo, model note)."""
    if random_weights:
        root = _random_weight_checkpoints()
        for scale in (2, 3, 4):
            os.environ[f"ESPCN_HF_REPO_X{scale}"] = str(root / f"espcn-x{scale}")
        note = "random weights, default seven-layer architecture (same compute as the trained models)"
    else:
        note = (
            "the app's own choice (Hub repo or its cache, else the packaged weights), see the info line below"
        )
    # A private gradio cache folder (uploads and results): its size before and after the burst is the app's.
    temp = Path(tempfile.mkdtemp(prefix="espcn-load-temp-"))
    os.environ["GRADIO_TEMP_DIR"] = str(temp / "gradio-cache")
    spec = importlib.util.spec_from_file_location("espcn_space_app", REPO_ROOT / "space" / "app.py")
    app = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = app
    spec.loader.exec_module(app)
    demo = app.build_demo()
    port = _free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return f"http://127.0.0.1:{port}/", demo, note, app, temp


def folder_bytes(folder: Path | None) -> int | None:
    if folder is None:
        return None
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main(argv=None) -> int:
    args = parse_args(argv)
    from gradio_client import Client, handle_file
    from PIL import Image

    demo, app, note, temp = None, None, "a running app at --url", None
    url = args.url
    if url is None:
        url, demo, note, app, temp = launch_local(args.random_weights)
    try:
        client = Client(
            url, verbose=False, download_files=str(Path(tempfile.mkdtemp(prefix="espcn-load-")) / "client")
        )
        temp_before = folder_bytes(temp)
        width, height = Image.open(args.image).size
        expected = (width * args.scale, height * args.scale)

        def one_request(index: int):
            start = time.perf_counter()
            try:
                slider, info, download = client.predict(
                    handle_file(str(args.image)), args.scale, False, api_name="/super_resolve"
                )
                size = Image.open(download).size
                if size != expected:
                    return index, time.perf_counter() - start, f"wrong size {size}", info
                return index, time.perf_counter() - start, None, info
            except Exception as error:  # counted and reported, never dropped
                return index, time.perf_counter() - start, f"{type(error).__name__}: {error}", ""

        print(f"{args.requests} concurrent requests to {url} ({args.image.name}, x{args.scale}) ...")
        wall_start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.requests) as pool:
            results = list(pool.map(one_request, range(args.requests)))
        wall = time.perf_counter() - wall_start

        completed = [r for r in results if r[2] is None]
        failed = [r for r in results if r[2] is not None]
        lost = args.requests - len(results)
        latencies = [r[1] for r in completed]
        p50 = statistics.median(latencies) if latencies else float("nan")
        p95 = percentile(latencies, 95) if latencies else float("nan")
        info_line = completed[0][3].split("\n\n")[:2] if completed else []
        temp_after = folder_bytes(temp)

        # The app must still answer after the burst.
        alive_start = time.perf_counter()
        try:
            client.predict(handle_file(str(args.image)), 2, False, api_name="/super_resolve")
            alive = f"yes ({(time.perf_counter() - alive_start) * 1000:.0f} ms for one x2 request)"
        except Exception as error:
            alive = f"NO: {type(error).__name__}: {error}"
    finally:
        if demo is not None:
            demo.close()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)

    summary = (
        f"completed {len(completed)}/{args.requests}, failed {len(failed)}, lost {lost}; "
        f"latency p50 {p50:.2f} s, p95 {p95:.2f} s, max {max(latencies, default=float('nan')):.2f} s; "
        f"wall {wall:.1f} s ({len(completed) / wall:.2f} req/s); still answering: {alive}"
    )
    print(summary)
    for index, _, error, _ in failed:
        print(f"  request {index}: {error}")

    import gradio
    import torch

    command = "python " + " ".join(
        shlex.quote(a) for a in [os.path.relpath(__file__, REPO_ROOT), *sys.argv[1:]]
    )
    queue = ""
    if demo is not None:
        queue = f"`demo.queue(default_concurrency_limit={demo._queue.default_concurrency_limit}, max_size={demo._queue.max_size})`"
    report = [
        "# Space load test",
        "",
        f"Command (from the repository root): `{command}`",
        "",
        f"- Requests: {args.requests} sent at once through `gradio_client` (one thread each), "
        f"`{args.image.name}` ({width}×{height}) x{args.scale} → {expected[0]}×{expected[1]}",
        f"- Models: {note}",
        f"- App info line: {' '.join(info_line) if info_line else '–'}",
        f"- Queue: {queue or 'as configured by the running app'}",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs; load average "
        f"{os.getloadavg()[0]:.1f} at the end), torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), gradio {gradio.__version__}, "
        f"Python {platform.python_version()}",
        "",
        "| completed | failed | lost | p50 latency | p95 latency | max | wall time | throughput |",
        "|---|---|---|---|---|---|---|---|",
        f"| {len(completed)}/{args.requests} | {len(failed)} | {lost} | {p50:.2f} s | {p95:.2f} s | "
        f"{max(latencies, default=float('nan')):.2f} s | {wall:.1f} s | {len(completed) / wall:.2f} req/s |",
        "",
        f"Still answering after the burst: {alive}.",
        "",
        (
            f"Gradio's cache folder (uploads and the app's results): {temp_before / 1e6:.2f} MB before the "
            f"burst (the examples), {temp_after / 1e6:.2f} MB right after it "
            f"({(temp_after - temp_before) / 1e6 / max(len(completed), 1):.2f} MB per request); gradio deletes "
            f"them after {app.DELETE_CACHE[1] // 60} minutes (`delete_cache={app.DELETE_CACHE}`), the app keeps "
            f"the folder under {app.CACHE_MAX_BYTES / 1e9:g} GB, and tests/test_space.py checks both."
        )
        if temp is not None
        else "Temp folders: not measured (a running app at --url).",
        "",
        "Latency is submit-to-result as the client sees it, so it includes waiting in the queue: with "
        "two requests served at a time, the last of a burst waits for all the others.",
        "",
    ]
    if failed:
        report += ["Failures:", ""] + [f"- request {i}: {e}" for i, _, e, _ in failed] + [""]
    from espcn_hf.fileio import atomic_write_text

    args.report.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.report, "\n".join(report))
    print(f"wrote {args.report}")
    return 0 if not failed and not lost and alive.startswith("yes") else 1


if __name__ == "__main__":
    sys.exit(main())
