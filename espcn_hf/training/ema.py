"""An exponential moving average of the weights, checkpointed with `accelerator.register_for_checkpointing`.

`torch.optim.swa_utils.AveragedModel` with `get_ema_multi_avg_fn` averages with a fixed decay from the first
step, which leaves the early averages stuck near the random initialisation for ~1/(1 - decay) steps; this one
ramps the decay up as in timm's ModelEmaV2 / BasicSR, and keeps the shadow in float32 beside weights that may
train under bf16 autocast.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

    `decay` is ramped up as `min(decay, (1 + n) / (10 + n))` after `n` updates, so early averages are not stuck
    at the random initialisation. The shadow weights live on the model's device in float32.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self.num_updates = 0
        self.shadow = {
            name: value.detach().float().clone()
            for name, value in model.state_dict().items()
            if value.dtype.is_floating_point
        }
        self._live: tuple[nn.Module, list[torch.Tensor]] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        # The live tensors by name (Parameter objects survive `.to(device)`, so they are looked up once).
        if self._live is None or self._live[0] is not model:
            named = dict(model.named_parameters()) | dict(model.named_buffers())
            self._live = (model, [named[name] for name in self.shadow])
        live = self._live[1]
        shadows = list(self.shadow.values())
        if all(v.dtype == torch.float32 and v.device == s.device for v, s in zip(live, shadows, strict=True)):
            torch._foreach_lerp_(shadows, live, 1.0 - decay)  # one fused launch per step on CUDA
        else:
            for shadow, value in zip(shadows, live, strict=True):
                shadow.lerp_(value.detach().float(), 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into `model` (a separate evaluation copy, not the one being trained)."""
        state = model.state_dict()
        for name, value in self.shadow.items():
            state[name].copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)


__all__ = ["EMA"]
