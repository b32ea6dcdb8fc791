"""Training-data throughput: the device path (`DevicePatchSampler`) and the DataLoader path, side by side.

    python scripts/benchmark_data.py --device cpu    # -> benchmarks/data_throughput_cpu.json (+ .md)
    python scripts/benchmark_data.py --device cuda   # -> benchmarks/data_throughput_cuda.json (+ .md)

Measured in the same run on the same machine, on every training set under `<data dir>/train` (or `--folders`),
x3, 32x32 LR patches, batch 512 (the issue-11 protocol):

1. device path: `DevicePatchSampler.batch(step)`, the crops cut by index from uint8 tensors on `--device` (the
   batch already where the model is). `patches_per_s` in the JSON is this number.
2. DataLoader path: `DataLoader(DataGenerator)` batches (shuffled, default collate) moved to `--device`, with
   `--workers` processes (fork) and in-process (0 workers, train.py's default `num_workers`).
3. the training step alone (forward, loss, backward, Adam) of the seven-layer model on such batches: fp32 on
   CPU (1 thread and torch's default), bf16 autocast on CUDA in contiguous and channels-last memory; and on
   CUDA the whole loop (device-path batch + step), what `scripts/train.py` does per step.

Rates are medians of `--repeats` timed runs after a warm-up; CUDA timings synchronise before reading the clock.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import DATA_DIR
from torch.utils.data import DataLoader

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution
from espcn_hf.data import DataGenerator, DevicePatchSampler
from espcn_hf.fileio import atomic_write_text


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rate(run: Callable[[], int], device: torch.device, repeats: int) -> float:
    """Median items/s of `run()` (which returns how many items it produced) over `repeats` runs, after one."""
    run()
    rates = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        count = run()
        _sync(device)
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


class _DeviceBatches:
    """`batches` batches of the device path per call, each step continuing from the last and reusing the last
    batch's memory (as the training loop does)."""

    def __init__(self, sampler: DevicePatchSampler, batches: int) -> None:
        self.sampler, self.batches = sampler, batches
        self.step, self.batch = 0, None

    def __call__(self) -> int:
        for _ in range(self.batches):
            self.batch = self.sampler.batch(self.step, out=self.batch)
            self.step += 1
        return self.batches * self.sampler.batch_size


def device_path_rate(sampler: DevicePatchSampler, batches: int, repeats: int) -> float:
    return timed_rate(_DeviceBatches(sampler, batches), sampler.device, repeats)


class _LoaderBatches:
    """`batches` batches of `loader` moved to `device` per call; at the end of the loader, the next epoch."""

    def __init__(
        self, loader: DataLoader, dataset: DataGenerator, device: torch.device, batches: int
    ) -> None:
        self.loader, self.dataset, self.device, self.batches = loader, dataset, device, batches
        self.iterator = iter(loader)

    def next_batch(self) -> dict:
        try:
            return next(self.iterator)
        except StopIteration:
            self.dataset.set_epoch(self.dataset.epoch + 1)
            self.iterator = iter(self.loader)
            return next(self.iterator)

    def __call__(self) -> int:
        for _ in range(self.batches):
            batch = self.next_batch()
            batch["pixel_values"].to(self.device, non_blocking=True)
            batch["labels"].to(self.device, non_blocking=True)
        return self.batches * self.loader.batch_size


def loader_rate(
    dataset: DataGenerator, batch_size: int, workers: int, device: torch.device, batches: int, repeats: int
) -> float:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        multiprocessing_context="fork" if workers else None,
    )
    return timed_rate(_LoaderBatches(loader, dataset, device, batches), device, repeats)


class _TrainingSteps:
    """`steps` training steps (forward, L1 loss, backward, Adam) per call, on one batch or, with a sampler, on
    a fresh device-path batch per step."""

    def __init__(
        self, model, optimizer, batch: dict, memory_format, bf16: bool, steps: int, sampler=None
    ) -> None:
        self.model, self.optimizer, self.batch = model, optimizer, batch
        self.memory_format, self.bf16, self.steps, self.sampler = memory_format, bf16, steps, sampler
        self.step_index = 0
        self.device_type = next(model.parameters()).device.type
        self.batch_size = batch["pixel_values"].shape[0]

    def step(self) -> None:
        if self.sampler is not None:
            self.batch = self.sampler.batch(self.step_index, out=self.batch)
            self.step_index += 1
        x = self.batch["pixel_values"].contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(pixel_values=x).reconstruction
        loss = torch.nn.functional.l1_loss(out.float(), self.batch["labels"])
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def __call__(self) -> int:
        for _ in range(self.steps):
            self.step()
        return self.steps * self.batch_size


def train_step_rate(
    scale: int,
    batch: dict,
    device: torch.device,
    steps: int,
    repeats: int,
    bf16: bool,
    channels_last: bool,
    sampler: DevicePatchSampler | None = None,
) -> float:
    """Patches/s of forward + L1 loss + backward + Adam on `batch` (or, with `sampler`, a fresh batch per
    step: the whole training loop)."""
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = ESPCNForImageSuperResolution(ESPCNConfig(upscale_factor=scale)).train()
    model.to(device, memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    run = _TrainingSteps(model, optimizer, batch, memory_format, bf16, steps, sampler)
    return timed_rate(run, device, repeats)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--folders", nargs="+", type=Path, default=None, help="default: <data dir>/train/*")
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument(
        "--workers", type=int, default=None, help="DataLoader workers (default: min(8, CPUs))"
    )
    parser.add_argument("--batches", type=int, default=None, help="batches per timed run of the data paths")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed run of the training step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=None, help="default: benchmarks/data_throughput_<device>.json"
    )
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    return args


def load_data(
    folders: list[Path], args: argparse.Namespace, device: torch.device
) -> tuple[DataGenerator, DevicePatchSampler, float, float]:
    """The training sets decoded (`DataGenerator`) and uploaded to `device` (`DevicePatchSampler`), with the
    seconds each took."""
    start = time.perf_counter()
    dataset = DataGenerator.from_folder(
        folders, scale=args.scale, mode="train", patch_size=args.patch_size, patches_per_image=64, seed=0
    )
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    sampler = DevicePatchSampler(dataset, args.batch_size, device, seed=0)
    _sync(device)
    upload_seconds = time.perf_counter() - start
    print(f"{dataset!r}: decoded in {load_seconds:.1f} s, {dataset.cache_bytes / 1e6:.1f} MB; {sampler!r}")
    return dataset, sampler, load_seconds, upload_seconds


def path_rates(
    dataset: DataGenerator, sampler: DevicePatchSampler, args: argparse.Namespace, workers: int, batches: int
) -> dict[str, float]:
    """Patches/s of the device path and of the DataLoader path in-process and with `workers` workers."""
    paths = {"device": device_path_rate(sampler, batches, args.repeats)}
    print(f"device path: {paths['device']:,.0f} patches/s")
    for n in sorted({0, workers}):
        key = f"loader_{n}_workers"
        paths[key] = loader_rate(
            dataset, args.batch_size, n, sampler.device, max(3, batches // 2), args.repeats
        )
        print(f"DataLoader path, {n} workers: {paths[key]:,.0f} patches/s")
    return paths


def step_rates(sampler: DevicePatchSampler, args: argparse.Namespace, steps: int) -> dict[str, float]:
    """Patches/s of the training step: on CUDA bf16 in both memory formats, alone and in the whole loop; on
    CPU fp32 with torch's default threads and with one."""
    device, batch = sampler.device, sampler.batch(0)
    rates = {}
    if device.type == "cuda":
        for channels_last in (False, True):
            key = f"bf16_{'channels_last' if channels_last else 'contiguous'}"
            rates[key] = train_step_rate(args.scale, batch, device, steps, args.repeats, True, channels_last)
            rates[f"loop_{key}"] = train_step_rate(
                args.scale, batch, device, steps, args.repeats, True, channels_last, sampler=sampler
            )
    else:
        default_threads = torch.get_num_threads()
        for threads in sorted({default_threads, 1}, reverse=True):
            torch.set_num_threads(threads)
            rates[f"fp32_{threads}_threads"] = train_step_rate(
                args.scale, batch, device, steps, max(1, args.repeats - 1), False, False
            )
        torch.set_num_threads(default_threads)
    for key, rate in rates.items():
        print(f"training step {key}: {rate:,.0f} patches/s")
    return rates


def result_dict(
    args: argparse.Namespace,
    device: torch.device,
    folders: list[Path],
    dataset: DataGenerator,
    seconds: tuple[float, float],
    paths: dict[str, float],
    steps: dict[str, float],
) -> dict:
    """The JSON results (`seconds`: decoding and upload)."""
    load_seconds, upload_seconds = seconds
    cuda = device.type == "cuda"
    best_loader = max(v for k, v in paths.items() if k != "device")
    return {
        "command": f"python scripts/benchmark_data.py --device {args.device}",
        "device": torch.cuda.get_device_name(device)
        if cuda
        else f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "data": [Path(f).name for f in folders],
        "images": dataset.num_images,
        "scale": args.scale,
        "patch_size": args.patch_size,
        "batch_size": args.batch_size,
        "decode_seconds": round(load_seconds, 2),
        "upload_seconds": round(upload_seconds, 2),
        "cache_mb": round(dataset.cache_bytes / 1e6, 1),
        "patches_per_s": round(paths["device"]),
        "paths_patches_per_s": {k: round(v) for k, v in paths.items()},
        "device_over_best_loader": round(paths["device"] / best_loader, 2),
        "train_step_patches_per_s": {k: round(v) for k, v in steps.items()},
    }


def markdown_page(
    result: dict,
    paths: dict[str, float],
    steps: dict[str, float],
    device_type: str,
    load_seconds: float,
    repeats: int,
) -> str:
    """The results as the Markdown page beside the JSON."""
    rows = "\n".join(f"| {k.replace('_', ' ')} | {v:,.0f} |" for k, v in paths.items())
    step_rows = "\n".join(f"| training step, {k.replace('_', ' ')} | {v:,.0f} |" for k, v in steps.items())
    return f"""# Training-data throughput ({device_type})

`{result["command"]}` on {result["device"]}, torch {torch.__version__}, load average {result["load_average"]} (shared
machine: absolute numbers are noisy; both paths measured in the same run). Data: {", ".join(result["data"])}
({result["images"]} images, x{result["scale"]}, decoded in {load_seconds:.1f} s, {result["cache_mb"]} MB uint8);
{result["patch_size"]}x{result["patch_size"]} LR patches, batch {result["batch_size"]}; medians of {repeats} runs.

| path | patches/s |
|---|---|
{rows}
| **device path / best DataLoader** | **{result["device_over_best_loader"]}x** |
{step_rows}
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # as scripts/train.py: one batch shape
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    batches = args.batches or (50 if cuda else 10)
    steps = args.steps or (50 if cuda else 3)
    out = args.out or Path(f"benchmarks/data_throughput_{device.type}.json")
    folders = args.folders or sorted(p for p in (DATA_DIR / "train").iterdir() if p.is_dir())

    dataset, sampler, load_seconds, upload_seconds = load_data(folders, args, device)
    paths = path_rates(dataset, sampler, args, workers, batches)
    steps_rates = step_rates(sampler, args, steps)

    result = result_dict(args, device, folders, dataset, (load_seconds, upload_seconds), paths, steps_rates)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    page = markdown_page(result, paths, steps_rates, device.type, load_seconds, args.repeats)
    atomic_write_text(out.with_suffix(".md"), page)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
