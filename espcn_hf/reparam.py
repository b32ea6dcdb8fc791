"""Re-parameterised training: each convolution is trained as a richer linear block and collapsed exactly into one
plain convolution when the model is saved (the idea of ECBSR, Zhang et al. 2021, "Edge-oriented Convolution Block
for Real-time Super Resolution on Mobile Devices", and of RepVGG). The saved model has today's config, graph,
parameter count, speed and file format; only the optimisation sees the extra branches.

    model = ESPCNForImageSuperResolution(config)
    expand(model, "ecb")            # every nn.Conv2d of model.body becomes a RepConv2d, in place
    ... train ...
    plain = collapsed(model)        # a plain ESPCNForImageSuperResolution with the summed kernels

A `RepConv2d` of kernel k (odd) sums these branches, all linear in the input, so their sum is one k x k kernel:
- `conv`: the k x k convolution itself (the plain layer);
- `conv1x1`: a 1 x 1 convolution (a k x k kernel that is zero but in its centre);
- `expand`: a 1 x 1 convolution to `expand_ratio * out_channels` maps, then a k x k convolution back (ECBSR's
  conv1x1-conv3x3; two linear maps compose into one);
- `sobel_x`, `sobel_y`, `laplacian`: a 1 x 1 convolution, then a fixed 3 x 3 edge filter per channel with a learned
  scale per channel (ECBSR's edge branches; k >= 3);
- `identity`: the input itself, when in and out channels are equal (a centred identity kernel).

Borders: a branch that starts with a 1 x 1 convolution pads its intermediate maps with that convolution's bias (not
zeros), so that at the image border it sees what the collapsed kernel sees on the zero-padded input; the collapse
is then exact everywhere, borders included (`tests/test_reparam.py`, max abs difference <= 1e-5).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

# Branch sets by name (TrainingConfig.reparam).
BRANCH_SETS = {
    "rep": ("conv", "conv1x1", "identity"),
    "ecb": ("conv", "conv1x1", "expand", "sobel_x", "sobel_y", "laplacian", "identity"),
}

_EDGE_FILTERS = {
    "sobel_x": [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]],
    "sobel_y": [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]],
    "laplacian": [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]],
}


def _pad_with_bias(x: torch.Tensor, bias: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad `x` by `pad` on each side, then set the padded border to `bias` (per channel)."""
    if pad == 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad))
    border = bias.view(1, -1, 1, 1)
    padded[:, :, :pad, :] = border
    padded[:, :, -pad:, :] = border
    padded[:, :, :, :pad] = border
    padded[:, :, :, -pad:] = border
    return padded


class RepConv2d(nn.Module):
    """A training-time block equal to one `nn.Conv2d(in_channels, out_channels, kernel_size, padding=k // 2)`
    (see the module docstring). `kernel()` gives the collapsed (weight, bias)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        branches: tuple[str, ...] = BRANCH_SETS["ecb"],
        expand_ratio: int = 2,
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        unknown = set(branches) - {"conv", "conv1x1", "expand", "identity", *_EDGE_FILTERS}
        if unknown or "conv" not in branches:
            raise ValueError(f"branches must include 'conv' and be known, got {branches}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.pad = kernel_size // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=self.pad)
        self.conv1x1 = nn.Conv2d(in_channels, out_channels, 1) if "conv1x1" in branches else None
        self.expand = None
        if "expand" in branches:
            middle = expand_ratio * out_channels
            self.expand = nn.ModuleDict(
                {
                    "squeeze": nn.Conv2d(in_channels, middle, 1),
                    "conv": nn.Conv2d(middle, out_channels, kernel_size),
                }
            )
        self.edges = nn.ModuleDict()
        for name in _EDGE_FILTERS:
            if name in branches and kernel_size >= 3:
                self.edges[name] = nn.Conv2d(in_channels, out_channels, 1)
        self.edge_scales = nn.ParameterDict(
            {name: nn.Parameter(torch.randn(out_channels) * 1e-3) for name in self.edges}
        )
        self.edge_biases = nn.ParameterDict(
            {name: nn.Parameter(torch.zeros(out_channels)) for name in self.edges}
        )
        for name, values in _EDGE_FILTERS.items():
            self.register_buffer(f"filter_{name}", torch.tensor(values), persistent=False)
        self.identity = "identity" in branches and in_channels == out_channels

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d, branches, expand_ratio: int = 2, zero_extra: bool = False
    ) -> RepConv2d:
        """A block whose `conv` branch is a copy of `conv`. With `zero_extra`, every other branch starts at zero
        (the block then equals `conv` exactly: for starting from trained weights, or keeping a layer's small
        initialisation)."""
        block = cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], branches, expand_ratio)
        block.to(conv.weight.device, conv.weight.dtype)
        with torch.no_grad():
            block.conv.weight.copy_(conv.weight)
            block.conv.bias.copy_(conv.bias if conv.bias is not None else torch.zeros_like(block.conv.bias))
            if zero_extra:
                block.zero_extra_()
        return block

    @torch.no_grad()
    def zero_extra_(self) -> RepConv2d:
        """Zero every branch but `conv` (the block's output becomes that of `conv` alone)."""
        if self.conv1x1 is not None:
            nn.init.zeros_(self.conv1x1.weight)
            nn.init.zeros_(self.conv1x1.bias)
        if self.expand is not None:
            nn.init.zeros_(self.expand["conv"].weight)
            nn.init.zeros_(self.expand["conv"].bias)
        for name in self.edges:
            nn.init.zeros_(self.edge_scales[name])
            nn.init.zeros_(self.edge_biases[name])
        if self.identity:  # the identity has no parameters: the conv branch gives it back
            centre = self.pad
            self.conv.weight[:, :, centre, centre] -= torch.eye(
                self.out_channels, device=self.conv.weight.device
            )
        return self

    def _edge_filter(self, name: str) -> torch.Tensor:
        """(out, 1, 3, 3): the fixed filter times each channel's learned scale, for a depthwise convolution."""
        return getattr(self, f"filter_{name}")[None, None] * self.edge_scales[name].view(-1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.conv1x1 is not None:
            out = out + self.conv1x1(x)
        if self.expand is not None:
            squeeze, conv = self.expand["squeeze"], self.expand["conv"]
            out = out + conv(_pad_with_bias(squeeze(x), squeeze.bias, self.pad))
        for name, conv1x1 in self.edges.items():
            middle = _pad_with_bias(conv1x1(x), conv1x1.bias, 1)
            out = out + F.conv2d(
                middle, self._edge_filter(name), self.edge_biases[name], groups=self.out_channels
            )
        if self.identity:
            out = out + x
        return out

    @torch.no_grad()
    def kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (weight, bias) of the one `nn.Conv2d` this block equals."""
        c = self.pad
        weight = self.conv.weight.detach().clone()
        bias = self.conv.bias.detach().clone()
        if self.conv1x1 is not None:
            weight[:, :, c, c] += self.conv1x1.weight[:, :, 0, 0]
            bias += self.conv1x1.bias
        if self.expand is not None:
            squeeze, conv = self.expand["squeeze"], self.expand["conv"]
            # conv(squeeze(x)): W[o, i] = sum_m conv[o, m] * squeeze[m, i]; b = conv_b + sum conv[o, m, :, :] * sq_b
            weight += torch.einsum("omhw,mi->oihw", conv.weight, squeeze.weight[:, :, 0, 0])
            bias += conv.bias + torch.einsum("omhw,m->o", conv.weight, squeeze.bias)
        for name, conv1x1 in self.edges.items():
            depthwise = self._edge_filter(name)[:, 0]  # (out, 3, 3)
            full = depthwise[:, None] * conv1x1.weight  # (out, in, 3, 3) since the 1x1 is (out, in, 1, 1)
            weight[:, :, c - 1 : c + 2, c - 1 : c + 2] += full
            bias += self.edge_biases[name] + depthwise.sum(dim=(1, 2)) * conv1x1.bias
        if self.identity:
            weight[:, :, c, c] += torch.eye(self.out_channels, device=weight.device)
        return weight, bias

    def extra_repr(self) -> str:
        branches = ["conv"] + (["conv1x1"] if self.conv1x1 is not None else [])
        branches += (["expand"] if self.expand is not None else []) + list(self.edges)
        branches += ["identity"] if self.identity else []
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, branches={branches}"


def expand(model: nn.Module, kind: str, expand_ratio: int = 2, zero_extra: bool = False) -> nn.Module:
    """Replace every `nn.Conv2d` of `model.body` by a `RepConv2d` with the branches of `BRANCH_SETS[kind]`, in
    place; returns `model`. The `conv` branch keeps each layer's weights. The last convolution's extra branches
    start at zero (a near-zero output initialisation stays near zero); with `zero_extra`, every layer's do (the
    model then computes exactly what it did: for starting from trained weights)."""
    if kind not in BRANCH_SETS:
        raise ValueError(f"reparam must be one of {tuple(BRANCH_SETS)}, got {kind!r}")
    convs = [i for i, module in enumerate(model.body) if isinstance(module, nn.Conv2d)]
    for i in convs:
        conv = model.body[i]
        if conv.padding_mode != "zeros":
            raise ValueError("re-parameterised training needs zero padding (padding_mode='zeros')")
        model.body[i] = RepConv2d.from_conv(
            conv, BRANCH_SETS[kind], expand_ratio, zero_extra or i == convs[-1]
        )
    return model


def is_expanded(model: nn.Module) -> bool:
    return any(isinstance(module, RepConv2d) for module in model.modules())


@torch.no_grad()
def collapsed(model: nn.Module) -> nn.Module:
    """A copy of `model` with every `RepConv2d` collapsed into the plain `nn.Conv2d` it equals (the saved form);
    a model without them is copied as it is."""
    plain = copy.deepcopy(model)
    for i, module in enumerate(plain.body):
        if isinstance(module, RepConv2d):
            conv = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, padding=module.pad)
            weight, bias = module.kernel()
            conv.to(weight.device, weight.dtype)
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
            plain.body[i] = conv
    return plain


def extra_cost(model: nn.Module) -> float:
    """Multiply-accumulates per pixel of the expanded body over those of its collapsed form (training cost)."""

    def macs(module: nn.Module) -> int:
        return sum(
            m.in_channels * m.out_channels * math.prod(m.kernel_size) // m.groups
            for m in module.modules()
            if isinstance(m, nn.Conv2d)
        )

    plain = collapsed(model)
    edge = sum(
        9 * block.out_channels * len(block.edges) for block in model.body if isinstance(block, RepConv2d)
    )
    return (macs(model.body) + edge) / macs(plain.body)


__all__ = ["BRANCH_SETS", "RepConv2d", "collapsed", "expand", "extra_cost", "is_expanded"]
