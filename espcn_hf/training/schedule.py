"""The learning-rate schedule: warmup, then cosine to a floor, step decay or constant, following a clock that
is the optimizer step or, with a time budget, the fraction of the budget spent.

transformers' `get_cosine_with_min_lr_schedule_with_warmup` is the same cosine, but as a function of the step
only; a run with `max_train_minutes` on a busy CPU must still reach the end of its decay when the time is up, so
the schedule here follows `ScheduleClock`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable


def lr_lambda(
    schedule: str,
    max_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    milestones: Iterable[int] = (),
    gamma: float = 0.1,
) -> Callable[[int], float]:
    """Multiplier of the base learning rate at step `step`, for `LambdaLR`.

    `cosine`: linear warmup over `warmup_steps`, then cosine decay to `min_lr_ratio` at `max_steps`.
    `multistep`: linear warmup, then multiplied by `gamma` at every milestone. `constant`: warmup, then 1.
    """
    if schedule not in ("cosine", "multistep", "constant"):
        raise ValueError(f"lr_schedule must be 'cosine', 'multistep' or 'constant', got {schedule!r}")
    milestones = sorted(int(m) for m in milestones)

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine":
            progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
            return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "multistep":
            return gamma ** sum(step >= m for m in milestones)
        return 1.0

    return factor


class ScheduleClock:
    """The step the schedules follow: the optimizer step, or further along when a time budget runs out first.

    With `time_limit_s` (from `--max_train_minutes`) the learning-rate schedule and the loss phase follow
    `max(step, seconds / time_limit_s * max_steps)`, so a run that is slower than planned (a busy CPU) still
    finishes its cosine decay and its fine-tune phase when the time is up. Without one it is the step itself,
    and a run is exactly reproducible.
    """

    def __init__(self, max_steps: int, time_limit_s: float = math.inf):
        self.max_steps = max_steps
        self.time_limit_s = time_limit_s
        self.step = 0

    def update(self, step: int, seconds: float) -> int:
        by_time = 0
        if math.isfinite(self.time_limit_s) and self.time_limit_s > 0:
            by_time = int(min(1.0, seconds / self.time_limit_s) * self.max_steps)
        self.step = max(step, by_time)
        return self.step

    def wrap(self, factor: Callable[[int], float], warmup_steps: int = 0) -> Callable[[int], float]:
        """`factor` at the clock's step, times a linear warmup over the first `warmup_steps` OPTIMIZER steps
        (give `factor` no warmup of its own: with a time budget the clock's step runs far ahead of the real
        one in the first seconds of a fast GPU run, and a warmup measured on it would last milliseconds)."""

        def wrapped(step: int) -> float:
            warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
            return warm * factor(max(step, self.step))

        return wrapped


__all__ = ["ScheduleClock", "lr_lambda"]
