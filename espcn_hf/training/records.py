"""The run's log on disk: one JSON line per evaluation in `metrics.jsonl` (read by `scripts/plot_training.py`),
and what a run was measured on."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..fileio import atomic_write_text


class MetricsWriter:
    """Appends one JSON object per line to `metrics.jsonl` (main process only; flushed at once)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def write(self, record: Mapping) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(dict(record), sort_keys=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written after the checkpoint a resumed run restarts from)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [record for record in read_metrics(self.path) if record.get("step", 0) <= step]
        # A torn last line (a kill mid-write) is dropped with the records past `step`. Atomic rewrite.
        atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a `metrics.jsonl` file (blank or truncated last lines are skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):  # a torn line can still parse, e.g. as a number
            records.append(record)
    return records


def device_name(device: torch.device | str) -> str:
    """What a run's metrics were measured on, for run.json: the GPU's name, or the CPU count and torch threads."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type}: {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"


__all__ = ["MetricsWriter", "device_name", "read_metrics"]
