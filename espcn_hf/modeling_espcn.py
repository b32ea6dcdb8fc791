"""PyTorch ESPCN model (Shi et al., CVPR 2016, arXiv:1609.05158).

This file imports only torch, transformers and the sibling `configuration_espcn.py`, because both are copied flat
into Hub repositories for `trust_remote_code=True` loading.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from transformers import PreTrainedModel
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.modeling_outputs import ImageSuperResolutionOutput
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

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
# The weight of Y in every row of _YCBCR_TO_RGB, 255/219 (the Cb and Cr rows of _RGB_TO_YCBCR sum to zero).
_LUMA_TO_RGB = float(_YCBCR_TO_RGB[0, 0])


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


# Every name in configuration_espcn.ACTIVATIONS, and only those (a test keeps the two in step).
ACTIVATION_LAYERS = {
    "relu": lambda channels: nn.ReLU(inplace=True),
    "tanh": lambda channels: nn.Tanh(),
    "leaky_relu": lambda channels: nn.LeakyReLU(0.2, inplace=True),
    "prelu": lambda channels: nn.PReLU(channels),
    "gelu": lambda channels: nn.GELU(),
    "silu": lambda channels: nn.SiLU(inplace=True),
    "identity": lambda channels: nn.Identity(),
}

# Two names, one pipeline (`pipeline_espcn.ImageSuperResolutionPipeline`), each with one meaning:
# - PIPELINE_TASK, "image-super-resolution": the task the installed package registers with transformers
#   (`PIPELINE_REGISTRY`), so `pipeline("image-super-resolution", model=FOLDER_OR_REPO)` needs no remote code;
# - HUB_PIPELINE_TAG, "image-to-image": the Hub category of SR models (the card's `pipeline_tag`) and the only
#   entry of config.json's `custom_pipelines` in a saved folder, so the snippet the Hub shows,
#   `pipeline("image-to-image", model=REPO, trust_remote_code=True)`, loads `pipeline_espcn.py` from the folder where
#   espcn_hf is not installed (transformers looks up `custom_pipelines` before refusing a task it removed).
# transformers runs a task listed in `custom_pipelines` only as remote code, so the registered task is not listed.
PIPELINE_TASK = "image-super-resolution"
HUB_PIPELINE_TAG = "image-to-image"
CUSTOM_PIPELINES = {
    HUB_PIPELINE_TAG: {
        "impl": "pipeline_espcn.ImageSuperResolutionPipeline",
        "pt": ["AutoModelForImageToImage"],
        "type": "image",
    }
}
PIPELINE_CODE_FILE = "pipeline_espcn.py"
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors dtype names of floating-point tensors


class CheckpointError(ValueError):
    """A model checkpoint is missing, unreadable, or does not fit its config."""


def _activation(name: str, num_channels: int) -> nn.Module:
    try:
        factory = ACTIVATION_LAYERS[name]
    except KeyError:
        raise ValueError(f"activation must be one of {tuple(ACTIVATION_LAYERS)}, got {name!r}") from None
    return factory(num_channels)


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
            config = self.config
            body = getattr(self, "body", None)
            if body is not None and module is body[-1] and config.output_initializer_range > 0:
                nn.init.normal_(module.weight, mean=0.0, std=config.output_initializer_range)
            elif config.initializer_range > 0:
                nn.init.normal_(module.weight, mean=0.0, std=config.initializer_range)
            else:
                rule = config.hidden_init
                if rule == "auto":
                    rule = "xavier" if config.activation in ("tanh", "identity") else "kaiming_fan_in"
                if rule == "xavier":
                    nn.init.xavier_normal_(module.weight)
                else:
                    mode = "fan_in" if rule == "kaiming_fan_in" else "fan_out"
                    nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.PReLU):
            nn.init.constant_(module.weight, 0.25)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, strict: a checkpoint that cannot serve as this model raises
        `CheckpointError` naming it and the cause.

        transformers only warns about missing or unexpected weights and initialises the missing ones at random,
        and casts integer weights to float; an SR model with such weights silently produces garbage. Here these
        are errors, as are non-finite weights and corrupt files. A Hub repo that cannot be reached (and is not in
        the local cache) stays an `OSError`, as in transformers.
        """
        name = str(pretrained_model_name_or_path)
        want_info = kwargs.pop("output_loading_info", False)
        local = os.path.isdir(name)
        if local and not os.path.isfile(os.path.join(name, "config.json")):
            raise CheckpointError(
                f"{name}: no config.json there; expected a folder written by save_pretrained"
            )
        if local and not any(
            os.path.isfile(os.path.join(name, kwargs.get("subfolder", ""), f))
            for f in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)
        ):
            raise CheckpointError(f"{name}: no model.safetensors there (only safetensors weights are loaded)")
        kwargs.setdefault("use_safetensors", True)  # never unpickle a .bin
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
            )
        except CheckpointError:
            raise
        except OSError as error:
            if not local:
                raise  # the Hub cannot be reached, or no such repo: transformers' own message
            raise CheckpointError(f"{name}: cannot load the model ({error})") from error
        except Exception as error:  # safetensors raises its own SafetensorError for corrupt files
            what = "the checkpoint is corrupt or invalid" if local else "cannot load the model"
            raise CheckpointError(f"{name}: {what} ({error})") from error
        problems = {
            k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v
        }
        if problems:
            details = "; ".join(f"{k}: {sorted(map(str, v))[:6]}" for k, v in problems.items())
            raise CheckpointError(
                f"{name}: the checkpoint's weights do not match its config ({model.config.to_diff_dict()}): {details}"
            )
        cls._check_weights(model, name, pretrained_model_name_or_path, kwargs)
        return (model, info) if want_info else model

    @staticmethod
    def _check_weights(model, name: str, source, kwargs: dict) -> None:
        """Refuse non-floating-point tensors in the file (transformers casts them silently) and non-finite values."""
        hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "revision", "token") if k in kwargs}
        path = cached_file(  # the file from_pretrained has just read: local, or in the Hub cache
            source,
            SAFE_WEIGHTS_NAME,
            subfolder=kwargs.get("subfolder", ""),
            local_files_only=True,
            _raise_exceptions_for_missing_entries=False,
            **hub_kwargs,
        )
        if path is not None:
            with safe_open(path, framework="pt") as weights:
                for key in weights.keys():  # noqa: SIM118 (safe_open is not a dict)
                    dtype = weights.get_slice(key).get_dtype()
                    if dtype not in _FLOAT_DTYPES:
                        raise CheckpointError(
                            f"{name}: weight {key} is stored as {dtype}; ESPCN weights are floating point"
                        )
        for key, tensor in model.state_dict().items():  # parameters are floating point here (cast on load)
            if not torch.isfinite(tensor).all():
                raise CheckpointError(f"{name}: weight {key} holds NaN or infinite values")


class ESPCNForImageSuperResolution(ESPCNPreTrainedModel):
    """ESPCN: `len(config.kernel_sizes)` convolutions on the low-resolution image, then a sub-pixel convolution.

    `pixel_values` are images in [0, 1] of shape (batch, C, H, W); the output `reconstruction` has shape
    (batch, C, r*H, r*W), not clamped. For an RGB model C = 3. For a Y-channel model (`num_channels=1`, the
    paper's preset) C may be 1 (the Y channel, as in training) or 3: RGB input is converted to BT.601 YCbCr, the
    network upscales Y, CbCr are upscaled with bicubic interpolation, and RGB comes back, as in the paper.
    """

    # Saved folders always carry `auto_map` and the code files (what `register_for_auto_class()` would set), with
    # or without `espcn_hf.register()`; `save_pretrained` lists the model under AutoModel too.
    _auto_class = "AutoModelForImageToImage"

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

    def save_pretrained(self, save_directory, *args, push_to_hub: bool = False, **kwargs):
        """`PreTrainedModel.save_pretrained`; with the code files (this class sets `_auto_class`), the folder also
        gets the pipeline code and `custom_pipelines`, so that `AutoModel`, `AutoModelForImageToImage` and
        `pipeline(..., trust_remote_code=True)` load it without `espcn_hf`.

        With `push_to_hub=True` the complete folder is saved first and then pushed with `push_to_hub` (which
        saves it again in a temporary folder and uploads every file): transformers' own upload inside
        `save_pretrained` would run before the pipeline code is in the folder.
        """
        if push_to_hub:
            hub_keys = ("repo_id", "commit_message", "create_pr", "private", "token", "revision")
            hub_kwargs = {key: kwargs.pop(key) for key in hub_keys if key in kwargs}
            result = self.save_pretrained(save_directory, *args, **kwargs)
            if kwargs.get("is_main_process", True):
                repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
                self.push_to_hub(repo_id, **hub_kwargs)
            return result
        if self._auto_class is None:
            return super().save_pretrained(save_directory, *args, **kwargs)
        # A class has one `_auto_class`; list the model under AutoModel too, so both Auto classes resolve it.
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.setdefault("AutoModel", f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}")
        self.config.auto_map = auto_map
        pipeline_code = Path(__file__).with_name(PIPELINE_CODE_FILE)  # beside this file: package or repo copy
        if not pipeline_code.is_file():  # e.g. a remote copy loaded without the pipeline file
            return super().save_pretrained(save_directory, *args, **kwargs)
        had = self.config.__dict__.get("custom_pipelines")
        self.config.custom_pipelines = copy.deepcopy(CUSTOM_PIPELINES)
        try:
            result = super().save_pretrained(save_directory, *args, **kwargs)
        finally:  # the config in memory stays as it was
            if had is None:
                self.config.__dict__.pop("custom_pipelines", None)
            else:
                self.config.custom_pipelines = had
        if kwargs.get("is_main_process", True) and os.path.isdir(save_directory):
            # The pipeline module and the flat files it imports (the image processor's, too).
            for code in (pipeline_code, *map(Path, get_relative_import_files(pipeline_code))):
                shutil.copyfile(code, Path(save_directory) / code.name)
        return result

    def _upscale(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # The convolutions run in the weights' dtype (a bf16 model takes fp32 images); colour math stays fp32.
        return self.pixel_shuffle(self.body(pixel_values.to(next(self.body.parameters()).dtype)))

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
            High-resolution targets in [0, 1]. When given, `loss` is the mean squared error between them and the
            output (the paper's loss; training scripts may compute their own from `reconstruction`). For a
            Y-channel model given RGB labels, it is computed on their Y channel.
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
            # The paper's colour path: Y through the network, CbCr with bicubic, back to RGB. Every row of the
            # YCbCr -> RGB matrix weighs Y by k = 255/219, and bicubic interpolation is linear and keeps
            # constants, so this equals bicubic(RGB - k Y) + k Y_sr: no YCbCr image at the output resolution.
            y_lr = _color_transform(pixel_values, _RGB_TO_YCBCR[:1]) + _YCBCR_OFFSET[0].item()
            y = y_lr
            if pixel_values.is_contiguous(memory_format=torch.channels_last):
                # A 1-channel plane reads as NCHW (its channel stride is the plane's): copy it into channels-last
                # strides, the caller's layout, in which oneDNN runs the paper's 1-channel 5x5 convolution about
                # 5x faster (and the next layers in NHWC too).
                y = torch.empty_like(y, memory_format=torch.channels_last).copy_(y)
            y = self._upscale(y).to(y_lr.dtype)
            # Bicubic with a = -0.5 (MATLAB's and PIL's kernel; torch's antialias path, also the faster one on CPU,
            # on planes: 3x faster than on channels-last values).
            base = (pixel_values - _LUMA_TO_RGB * y_lr).contiguous()
            base = F.interpolate(base, size=y.shape[-2:], mode="bicubic", align_corners=False, antialias=True)
            reconstruction = base.add_(y, alpha=_LUMA_TO_RGB)
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
            loss = F.mse_loss(prediction, labels.to(prediction.dtype))

        if return_dict is False:
            return (loss, reconstruction) if loss is not None else (reconstruction,)
        return ImageSuperResolutionOutput(loss=loss, reconstruction=reconstruction)

    def num_macs_per_pixel(self) -> int:
        """Multiply-accumulates per low-resolution pixel of the convolutions (for GFLOP/s reporting)."""
        return sum(
            m.in_channels * m.out_channels * math.prod(m.kernel_size)
            for m in self.body
            if isinstance(m, nn.Conv2d)
        )


__all__ = [
    "CheckpointError",
    "ESPCNPreTrainedModel",
    "ESPCNForImageSuperResolution",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
]
