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
import functools
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
from dataclasses import dataclass
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
    """Start space/app.py's demo in this process; returns (url, demo, model note, the app module, its private
    gradio temp folder)."""
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


@dataclass(frozen=True)
class Outcome:
    """One request: its index, seconds from submit to result, the error (None when it completed) and the app's
    info text."""

    index: int
    seconds: float
    error: str | None
    info: str


def one_request(client, image: Path, scale: int, expected: tuple[int, int], index: int) -> Outcome:
    """Upscale `image` x`scale` through the app's /super_resolve; a wrong output size or any error is the
    request's failure, never dropped."""
    from gradio_client import handle_file
    from PIL import Image

    start = time.perf_counter()
    try:
        slider, info, download = client.predict(
            handle_file(str(image)), scale, False, api_name="/super_resolve"
        )
        size = Image.open(download).size
        if size != expected:
            return Outcome(index, time.perf_counter() - start, f"wrong size {size}", info)
        return Outcome(index, time.perf_counter() - start, None, info)
    except Exception as error:  # counted and reported, never dropped
        return Outcome(index, time.perf_counter() - start, f"{type(error).__name__}: {error}", "")


@dataclass(frozen=True)
class Burst:
    """What a burst of `requests` concurrent requests gave: completed and failed requests, lost ones, latencies
    (seconds) of the completed ones, the wall time and the first completed request's info line."""

    requests: int
    completed: list[Outcome]
    failed: list[Outcome]
    lost: int
    wall: float
    p50: float
    p95: float
    max_latency: float
    throughput: float  # completed requests per second of wall time
    info_line: list[str]

    @classmethod
    def of(cls, outcomes: list[Outcome], requests: int, wall: float) -> Burst:
        completed = [r for r in outcomes if r.error is None]
        latencies = [r.seconds for r in completed]
        return cls(
            requests=requests,
            completed=completed,
            failed=[r for r in outcomes if r.error is not None],
            lost=requests - len(outcomes),
            wall=wall,
            p50=statistics.median(latencies) if latencies else float("nan"),
            p95=percentile(latencies, 95) if latencies else float("nan"),
            max_latency=max(latencies, default=float("nan")),
            throughput=len(completed) / wall,
            info_line=completed[0].info.split("\n\n")[:2] if completed else [],
        )


def send_burst(client, args: argparse.Namespace, expected: tuple[int, int]) -> Burst:
    """`args.requests` requests at once, one thread each."""
    request = functools.partial(one_request, client, args.image, args.scale, expected)
    wall_start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.requests) as pool:
        outcomes = list(pool.map(request, range(args.requests)))
    return Burst.of(outcomes, args.requests, time.perf_counter() - wall_start)


def still_answering(client, image: Path) -> str:
    """ "yes (... ms ...)" when the app answers one x2 request after the burst, else "NO: <error>"."""
    from gradio_client import handle_file

    alive_start = time.perf_counter()
    try:
        client.predict(handle_file(str(image)), 2, False, api_name="/super_resolve")
        return f"yes ({(time.perf_counter() - alive_start) * 1000:.0f} ms for one x2 request)"
    except Exception as error:
        return f"NO: {type(error).__name__}: {error}"


@dataclass(frozen=True)
class LoadRun:
    """A whole load test: the image's size and the expected output size, the burst, whether the app still
    answered, and the app's gradio cache folder's bytes before and after the burst (None for a running app)."""

    size: tuple[int, int]
    expected: tuple[int, int]
    burst: Burst
    alive: str
    temp_before: int | None
    temp_after: int | None


def load_test(url: str, args: argparse.Namespace, temp: Path | None) -> LoadRun:
    """The burst against the app at `url`, then one more request to see that it still answers."""
    from gradio_client import Client
    from PIL import Image

    client = Client(
        url, verbose=False, download_files=str(Path(tempfile.mkdtemp(prefix="espcn-load-")) / "client")
    )
    temp_before = folder_bytes(temp)
    width, height = Image.open(args.image).size
    expected = (width * args.scale, height * args.scale)
    print(f"{args.requests} concurrent requests to {url} ({args.image.name}, x{args.scale}) ...")
    burst = send_burst(client, args, expected)
    temp_after = folder_bytes(temp)
    alive = still_answering(client, args.image)  # the app must still answer after the burst
    return LoadRun((width, height), expected, burst, alive, temp_before, temp_after)


def summary_line(run: LoadRun) -> str:
    burst = run.burst
    return (
        f"completed {len(burst.completed)}/{burst.requests}, failed {len(burst.failed)}, lost {burst.lost}; "
        f"latency p50 {burst.p50:.2f} s, p95 {burst.p95:.2f} s, max {burst.max_latency:.2f} s; "
        f"wall {burst.wall:.1f} s ({burst.throughput:.2f} req/s); still answering: {run.alive}"
    )


def cache_line(run: LoadRun, app) -> str:
    """The report's line on the gradio cache folder of an app launched here."""
    if run.temp_before is None or run.temp_after is None:
        return "Temp folders: not measured (a running app at --url)."
    per_request = (run.temp_after - run.temp_before) / 1e6 / max(len(run.burst.completed), 1)
    return (
        f"Gradio's cache folder (uploads and the app's results): {run.temp_before / 1e6:.2f} MB before the "
        f"burst (the examples), {run.temp_after / 1e6:.2f} MB right after it "
        f"({per_request:.2f} MB per request); gradio deletes "
        f"them after {app.DELETE_CACHE[1] // 60} minutes (`delete_cache={app.DELETE_CACHE}`), the app keeps "
        f"the folder under {app.CACHE_MAX_BYTES / 1e9:g} GB, and tests/test_space.py checks both."
    )


def report_lines(args: argparse.Namespace, run: LoadRun, note: str, demo, app) -> list[str]:
    """The Markdown report."""
    import gradio
    import torch

    burst, (width, height), expected = run.burst, run.size, run.expected
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
        f"- App info line: {' '.join(burst.info_line) if burst.info_line else '–'}",
        f"- Queue: {queue or 'as configured by the running app'}",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs; load average "
        f"{os.getloadavg()[0]:.1f} at the end), torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), gradio {gradio.__version__}, "
        f"Python {platform.python_version()}",
        "",
        "| completed | failed | lost | p50 latency | p95 latency | max | wall time | throughput |",
        "|---|---|---|---|---|---|---|---|",
        f"| {len(burst.completed)}/{args.requests} | {len(burst.failed)} | {burst.lost} | {burst.p50:.2f} s | "
        f"{burst.p95:.2f} s | {burst.max_latency:.2f} s | {burst.wall:.1f} s | {burst.throughput:.2f} req/s |",
        "",
        f"Still answering after the burst: {run.alive}.",
        "",
        cache_line(run, app),
        "",
        "Latency is submit-to-result as the client sees it, so it includes waiting in the queue: with "
        "two requests served at a time, the last of a burst waits for all the others.",
        "",
    ]
    if burst.failed:
        report += ["Failures:", ""] + [f"- request {r.index}: {r.error}" for r in burst.failed] + [""]
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    # gradio_client reads GRADIO_TEMP_DIR when imported: import it before launch_local sets it for the app.
    import gradio_client  # noqa: F401

    demo, app, note, temp = None, None, "a running app at --url", None
    url = args.url
    if url is None:
        url, demo, note, app, temp = launch_local(args.random_weights)
    try:
        run = load_test(url, args, temp)
    finally:
        if demo is not None:
            demo.close()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)

    print(summary_line(run))
    for outcome in run.burst.failed:
        print(f"  request {outcome.index}: {outcome.error}")
    from espcn_hf.fileio import atomic_write_text

    args.report.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.report, "\n".join(report_lines(args, run, note, demo, app)))
    print(f"wrote {args.report}")
    burst = run.burst
    return 0 if not burst.failed and not burst.lost and run.alive.startswith("yes") else 1


if __name__ == "__main__":
    sys.exit(main())
