"""PyTorch ESPCN model (Shi et al., CVPR 2016, arXiv:1609.05158).

This file imports only torch, transformers and the sibling `configuration_espcn.py`, because both are copied flat
into Hub repositories for `trust_remote_code=True` loading.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageSuperResolutionOutput

from .configuration_espcn import ESPCNConfig

# ITU-R BT.601 "studio swing" YCbCr as MATLAB's rgb2ycbcr defines it, on values in [0, 1]:
# Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255, etc. The Y of this transform is the channel that SR papers
# (ESPCN included) train on and evaluate on.
_RGB_TO_YCBCR = (
    torch.tensor(
        [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=torch.float64
    )
    / 255.0
)
_YCBCR_OFFSET = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64) / 255.0
_YCBCR_TO_RGB = torch.linalg.inv(_RGB_TO_YCBCR)


def _color_transform(image: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    # (3, 3) @ (..., 3, H*W): one batched matmul, several times faster on CPU than an einsum over (H, W).
    matrix = matrix.to(image.device, image.dtype)
    return torch.matmul(matrix, image.flatten(-2)).unflatten(-1, image.shape[-2:])


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1], shape (..., 3, H, W) -> BT.601 YCbCr in [0, 1] (Y in [16/255, 235/255])."""
    if rgb.ndim < 3 or rgb.shape[-3] != 3:
        raise ValueError(f"rgb_to_ycbcr expects shape (..., 3, H, W), got {tuple(rgb.shape)}")
    return _color_transform(rgb, _RGB_TO_YCBCR) + _YCBCR_OFFSET.to(rgb.device, rgb.dtype)[:, None, None]


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """Inverse of [`rgb_to_ycbcr`]; no clamping."""
    if ycbcr.ndim < 3 or ycbcr.shape[-3] != 3:
        raise ValueError(f"ycbcr_to_rgb expects shape (..., 3, H, W), got {tuple(ycbcr.shape)}")
    offset = _YCBCR_OFFSET.to(ycbcr.device, ycbcr.dtype)[:, None, None]
    return _color_transform(ycbcr - offset, _YCBCR_TO_RGB)


def _activation(name: str, num_channels: int) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "tanh":
        return nn.Tanh()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2, inplace=True)
    if name == "prelu":
        return nn.PReLU(num_channels)
    if name == "gelu":
        return nn.GELU()
    if name == "silu":
        return nn.SiLU(inplace=True)
    return nn.Identity()


class ESPCNPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the loading checks shared by ESPCN models."""

    config_class = ESPCNConfig
    base_model_prefix = "espcn"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            if self.config.initializer_range > 0:
                nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            elif self.config.activation in ("tanh", "identity"):
                nn.init.xavier_normal_(module.weight)
            else:
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.PReLU):
            nn.init.constant_(module.weight, 0.25)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, but a checkpoint that does not fit its config is an error.

        transformers only warns about missing or unexpected weights and initialises the missing ones at random;
        an SR model with a random layer silently produces garbage, so here it raises `ValueError` instead.
        """
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        problems = {
            k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v
        }
        if problems:
            details = "; ".join(f"{k}: {sorted(map(str, v))[:6]}" for k, v in problems.items())
            raise ValueError(
                f"The checkpoint's weights do not match its config ({model.config.to_diff_dict()}): {details}"
            )
        return (model, info) if want_info else model


class ESPCNForImageSuperResolution(ESPCNPreTrainedModel):
    """ESPCN: `len(config.kernel_sizes)` convolutions on the low-resolution image, then a sub-pixel convolution.

    `pixel_values` are images in [0, 1] of shape (batch, C, H, W); the output `reconstruction` has shape
    (batch, C, r*H, r*W), not clamped. For an RGB model C = 3. For a Y-channel model (`num_channels=1`, the
    paper's preset) C may be 1 (the Y channel, as in training) or 3: RGB input is converted to BT.601 YCbCr, the
    network upscales Y, CbCr are upscaled with bicubic interpolation, and RGB comes back, as in the paper.
    """

    def __init__(self, config: ESPCNConfig):
        super().__init__(config)
        r, c = config.upscale_factor, config.num_channels
        widths = [c, *config.hidden_channels, r * r * c]
        layers: list[nn.Module] = []
        for i, kernel in enumerate(config.kernel_sizes):
            layers.append(
                nn.Conv2d(
                    widths[i], widths[i + 1], kernel, padding=kernel // 2, padding_mode=config.padding_mode
                )
            )
            if i < len(config.kernel_sizes) - 1:
                layers.append(_activation(config.activation, widths[i + 1]))
        self.body = nn.Sequential(*layers)
        # The efficient sub-pixel convolution layer: (B, r*r*C, H, W) -> (B, C, r*H, r*W).
        self.pixel_shuffle = nn.PixelShuffle(r)
        self.post_init()

    def save_pretrained(self, *args, **kwargs):
        # A class has one `_auto_class`; list the model under AutoModel too, so both Auto classes resolve it
        # from a Hub repo with trust_remote_code=True.
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault("AutoModel", f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}")
            self.config.auto_map = auto_map
        return super().save_pretrained(*args, **kwargs)

    def _upscale(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # The convolutions run in the weights' dtype (a bf16 model takes fp32 images); colour math stays fp32.
        return self.pixel_shuffle(self.body(pixel_values.to(self.body[0].weight.dtype)))

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageSuperResolutionOutput | tuple:
        r"""
        pixel_values (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            Low-resolution images in [0, 1]; for a Y-channel model either Y (1 channel) or RGB (3 channels).
        labels (`torch.Tensor` of shape `(batch_size, num_channels, r * height, r * width)`, *optional*):
            High-resolution targets in [0, 1]. When given, `loss` is `config.loss` between them and the output.
            For a Y-channel model given RGB labels, the loss is computed on their Y channel.
        """
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = (
                tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            )
            raise ValueError(
                f"pixel_values must be a 4-D tensor (batch, channels, height, width), got {shape}"
            )
        channels = pixel_values.shape[1]
        c, r = self.config.num_channels, self.config.upscale_factor
        if channels != c and not (c == 1 and channels == 3):
            allowed = "3 (RGB)" if c == 3 else "1 (Y) or 3 (RGB)"
            raise ValueError(f"pixel_values has {channels} channels; this model takes {allowed}")
        if pixel_values.shape[-2] < 1 or pixel_values.shape[-1] < 1:
            raise ValueError(f"pixel_values has an empty spatial size {tuple(pixel_values.shape[-2:])}")

        if c == 1 and channels == 3:
            ycbcr = rgb_to_ycbcr(pixel_values)
            y = self._upscale(ycbcr[:, :1]).to(ycbcr.dtype)
            # Bicubic with a = -0.5 (MATLAB's and PIL's kernel; torch's antialias path, also the faster one on CPU).
            size = (y.shape[-2], y.shape[-1])
            cbcr = F.interpolate(ycbcr[:, 1:], size=size, mode="bicubic", align_corners=False, antialias=True)
            reconstruction = ycbcr_to_rgb(torch.cat([y, cbcr], dim=1))
        else:
            reconstruction = self._upscale(pixel_values)

        loss = None
        if labels is not None:
            if labels.shape[-2:] != reconstruction.shape[-2:]:
                raise ValueError(
                    f"labels must be {r}x the input size {tuple(reconstruction.shape[-2:])}, got {tuple(labels.shape[-2:])}"
                )
            prediction = reconstruction
            if c == 1 and channels == 3:  # train a Y model on RGB pairs: compare Y only
                prediction = y
                labels = rgb_to_ycbcr(labels)[:, :1]
            loss = self.loss_fn(prediction, labels.to(prediction.dtype))

        if return_dict is False:
            return (loss, reconstruction) if loss is not None else (reconstruction,)
        return ImageSuperResolutionOutput(loss=loss, reconstruction=reconstruction)

    def loss_fn(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "l1":
            return F.l1_loss(prediction, target)
        if self.config.loss == "charbonnier":
            return torch.sqrt((prediction - target) ** 2 + 1e-6).mean()
        return F.mse_loss(prediction, target)

    def num_macs_per_pixel(self) -> int:
        """Multiply-accumulates per low-resolution pixel of the convolutions (for GFLOP/s reporting)."""
        return sum(
            m.in_channels * m.out_channels * math.prod(m.kernel_size)
            for m in self.body
            if isinstance(m, nn.Conv2d)
        )


__all__ = ["ESPCNPreTrainedModel", "ESPCNForImageSuperResolution", "rgb_to_ycbcr", "ycbcr_to_rgb"]
