"""Is the data pipeline fast enough? Patches/s the DataGenerator delivers vs patches/s one training step
consumes.

    python scripts/benchmark_data.py                       # T91 + BSD200, x3, 17x17 LR, batch 64, 2 workers
    python scripts/benchmark_data.py --folders my/images --workers 4 --out benchmarks/data_throughput.md

Both numbers are measured in the same run on the same machine: (1) a DataLoader over
`DataGenerator.from_folder(..., mode="train")` (fork workers, default collate), (2) forward + backward + Adam
step of the seven-layer model `ESPCNForImageSuperResolution(ESPCNConfig(upscale_factor=scale))` on batches of
the same shape. The ratio data/train should be well above 1 (target >= 5), so the loader never starves
training.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution
from espcn_hf.data import DataGenerator, default_data_dir


def loader_throughput(dataset: DataGenerator, batch_size: int, workers: int, batches: int) -> float:
    """Patches/s over `batches` batches, after one warm-up batch (worker start-up excluded)."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=False,
        multiprocessing_context="fork" if workers else None,
    )
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            dataset.set_epoch(dataset.epoch + 1)
            iterator = iter(loader)
            batch = next(iterator)
        count += batch["pixel_values"].shape[0]
    return count / (time.perf_counter() - start)


def train_throughput(scale: int, batch_size: int, patch: int, steps: int) -> float:
    """Patches/s of forward + backward + Adam step of the seven-layer model on random batches."""
    torch.manual_seed(0)
    model = ESPCNForImageSuperResolution(ESPCNConfig(upscale_factor=scale)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch_size, 3, patch, patch)
    y = torch.rand(batch_size, 3, patch * scale, patch * scale)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(pixel_values=x, labels=y).loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = default_data_dir() / "train"
    parser.add_argument("--folders", nargs="+", type=Path, default=[data / "T91", data / "BSD200"])
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--patch-size", type=int, default=17)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=200, help="batches timed through the DataLoader")
    parser.add_argument("--steps", type=int, default=20, help="training steps timed")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/data_throughput.md"))
    args = parser.parse_args(argv)

    start = time.perf_counter()
    dataset = DataGenerator.from_folder(
        args.folders, scale=args.scale, mode="train", patch_size=args.patch_size, patches_per_image=32, seed=0
    )
    load_seconds = time.perf_counter() - start
    cache_mb = dataset.cache_bytes / 1e6
    print(f"loaded {dataset.num_images} images + LR in {load_seconds:.1f} s, cache {cache_mb:.1f} MB")

    data_rate = loader_throughput(dataset, args.batch_size, args.workers, args.batches)
    print(f"DataLoader ({args.workers} workers): {data_rate:,.0f} patches/s")
    # The training step at torch's default thread count and at one thread (on a busy shared machine one
    # OpenMP thread can be several times faster); the faster one is what training would use.
    default_threads = torch.get_num_threads()
    train_rates = {}
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        train_rates[threads] = train_throughput(args.scale, args.batch_size, args.patch_size, args.steps)
        rate = train_rates[threads]
        pixels = rate * args.patch_size**2
        print(f"training step, {threads} threads: {rate:,.0f} patches/s ({pixels:,.0f} LR px/s)")
    torch.set_num_threads(default_threads)
    train_threads = max(train_rates, key=train_rates.get)
    train_rate = train_rates[train_threads]
    ratio = data_rate / train_rate
    print(f"ratio data / training: {ratio:.1f}x")

    hr_mb = sum(a.nbytes for a in dataset.hr) / 1e6
    lr_mb = sum(a.nbytes for a in dataset.lr) / 1e6
    folders = ", ".join(f"`{Path(f).name}`" for f in args.folders)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    loader = (
        f"DataLoader, {args.workers} workers, batch {args.batch_size}, {args.patch_size}x{args.patch_size} LR"
    )
    steps = ", ".join(f"{r:,.0f} patches/s ({t} threads)" for t, r in train_rates.items())
    text = f"""# Data pipeline throughput

Measured by `python scripts/benchmark_data.py` (both numbers in the same run, same machine: {machine},
torch {torch.__version__}; load average at the end {load}: the machine is shared, absolute numbers are noisy).

| | value |
|---|---|
| data | {folders}: {dataset.num_images} images, x{args.scale} |
| start-up (decode + whole-image bicubic LR) | {load_seconds:.1f} s |
| in-memory cache (uint8 HR + LR) | {cache_mb:.1f} MB (HR {hr_mb:.1f} MB + LR {lr_mb:.1f} MB) |
| {loader} | {data_rate:,.0f} patches/s |
| training step, seven-layer x{args.scale}, Adam, forward + backward | {steps} |
| **ratio data / fastest training step** | **{ratio:.1f}x** ({train_rate * args.patch_size**2:,.0f} LR px/s) |

Each number was measured alone; in a real run the loader workers and the training step share the same cores.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
