"""What the scripts share: the data folder, median timing (wall, and CPU beside wall in interleaved rounds), a
process's peak memory, the synthetic test frame and the OpenCV ESPCN peer (onnxruntime sessions:
`espcn_hf.ort_backend.cpu_session`).

Imported by the scripts in this folder (run as `python scripts/<name>.py`, so this folder is on `sys.path`).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from espcn_hf.data import default_data_dir
from espcn_hf.metrics import quantize_uint8

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """The read-only data beside the checkout (benchmarks/, train/, peers/), unless $ESPCN_HF_DATA_DIR names
    another: `espcn_hf.data.default_data_dir` owns the rule, the scripts name the folder."""
    return default_data_dir(fallback=REPO.parent / "shared" / "data")


DATA_DIR = data_dir()
PEERS = DATA_DIR / "peers"


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2, sync: Callable | None = None) -> float:
    """Median wall time of `fn()` in ms over `repeats` runs after `warmup` runs (`sync`: e.g.
    `torch.cuda.synchronize`, called around each run)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def interleaved(
    methods: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, dict[str, float]]:
    """Median process CPU time and wall time (ms) of each callable, run once per round in turn (after `warmup`
    runs of each): {name: {"cpu_ms": ..., "wall_ms": ...}}."""
    for fn in methods.values():
        for _ in range(warmup):
            fn()
    cpu = {name: [] for name in methods}
    wall = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            c, w = time.process_time(), time.perf_counter()
            fn()
            cpu[name].append((time.process_time() - c) * 1000)
            wall[name].append((time.perf_counter() - w) * 1000)
    return {n: {"cpu_ms": statistics.median(cpu[n]), "wall_ms": statistics.median(wall[n])} for n in methods}


def peak_rss_mb() -> float:
    """The peak resident set of this process image, in MB: VmHWM on Linux, which starts afresh at exec
    (`ru_maxrss` would keep the forking parent's peak across exec, so a child started by a large process would
    report the parent's size); `ru_maxrss` elsewhere."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB elsewhere
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1024**2


def test_frame(height: int, width: int) -> np.ndarray:
    """A smooth-plus-noise uint8 RGB frame, the same for every benchmark (seed 0)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([np.sin(9 * x), np.cos(7 * y), np.sin(5 * (x + y))], -1) * 0.35 + 0.5
    return quantize_uint8(base + rng.normal(0, 0.05, base.shape))


def opencv_espcn(scale: int, threads: int | None = None):
    """OpenCV's dnn_superres ESPCN x`scale` (its `upsample(bgr)` is the peer), or None when OpenCV or the model
    file is missing (the benchmark then prints no peer column rather than failing)."""
    try:
        import cv2

        from espcn_hf.evaluation import PeerModelError, opencv_sr
    except ImportError:
        return None
    path = PEERS / "opencv_espcn" / f"ESPCN_x{scale}.pb"
    if not path.is_file():
        return None
    try:
        return opencv_sr(
            "espcn", scale, path, threads=threads if threads is not None else cv2.getNumThreads()
        )
    except PeerModelError as error:
        print(f"warning: OpenCV ESPCN x{scale} left out of this run: {error}", file=sys.stderr)
        return None
