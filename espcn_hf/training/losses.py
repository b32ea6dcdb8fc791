"""Training losses, computed by the trainer from `outputs.reconstruction` (training-only settings are not part of
the model config), and the phase rule that switches from one to the other."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from ..modeling_espcn import rgb_to_ycbcr


def charbonnier_loss(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """A smooth L1: mean of sqrt((p - t)^2 + eps^2)."""
    return torch.sqrt((prediction - target) ** 2 + eps * eps).mean()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss,
    "mse": F.mse_loss,
    "charbonnier": charbonnier_loss,
}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function called `name`; an unknown name raises `ValueError`."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}") from None


def loss_for_step(step: int, max_steps: int, loss: str, finetune_loss: str, finetune_fraction: float) -> str:
    """The loss of phase 1 (`loss`) until the last `finetune_fraction` of the steps, then `finetune_loss`."""
    if finetune_fraction > 0 and step >= round(max_steps * (1.0 - finetune_fraction)):
        return finetune_loss
    return loss


def model_inputs(batch: Mapping[str, torch.Tensor], num_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel_values, labels) a model of `num_channels` trains on: RGB as it is; for a Y-channel model (the
    paper's preset) the BT.601 Y of both, as in the paper."""
    pixel_values, labels = batch["pixel_values"], batch["labels"]
    if num_channels == 1 and pixel_values.shape[1] == 3:
        pixel_values, labels = rgb_to_ycbcr(pixel_values)[:, :1], rgb_to_ycbcr(labels)[:, :1]
    return pixel_values, labels


def compute_loss(outputs, labels: torch.Tensor, name: str) -> torch.Tensor:
    """Loss `name` between `outputs.reconstruction` and `labels`, in float32 (also under bf16 autocast)."""
    return get_loss(name)(outputs.reconstruction.float(), labels.float())


__all__ = ["LOSSES", "charbonnier_loss", "compute_loss", "get_loss", "loss_for_step", "model_inputs"]
