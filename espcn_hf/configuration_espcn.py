"""ESPCN model configuration.

This file is self-contained (it imports only `transformers`) because it is copied into Hub repositories next to
`modeling_espcn.py` for `trust_remote_code=True` loading.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

# Architectures as data: each preset is a set of ESPCNConfig keyword arguments.
#  - "espcn": the seven-layer network of this package: six convolutions 64@5x5, 64@3x3, 32@3x3, 32@3x3, 32@3x3,
#    (r*r*C)@3x3, then the sub-pixel convolution (pixel shuffle). RGB in, RGB out.
#  - "espcn-paper": the network of Shi et al. 2016 (Sec. 3.2): (f1, n1) = (5, 64), (f2, n2) = (3, 32), f3 = 3,
#    tanh, trained and applied on the luminance (Y) channel only; CbCr is upsampled with bicubic.
PRESETS: dict[str, dict] = {
    "espcn": {
        "num_channels": 3,
        "hidden_channels": [64, 64, 32, 32, 32],
        "kernel_sizes": [5, 3, 3, 3, 3, 3],
        "activation": "relu",
    },
    "espcn-paper": {
        "num_channels": 1,
        "hidden_channels": [64, 32],
        "kernel_sizes": [5, 3, 3],
        "activation": "tanh",
    },
}

HIDDEN_INITS = ("auto", "kaiming_fan_in", "kaiming_fan_out", "xavier")
ACTIVATIONS = ("relu", "tanh", "leaky_relu", "prelu", "gelu", "silu", "identity")
PADDING_MODES = ("zeros", "reflect", "replicate")
UPSCALE_FACTORS_TRAINED = (2, 3, 4)
MAX_UPSCALE_FACTOR = 8


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ESPCNConfig(PreTrainedConfig):
    r"""
    Configuration of an [`ESPCNForImageSuperResolution`] model: the ESPCN network of "Real-Time Single Image and
    Video Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network" (Shi et al., CVPR 2016).

    The low-resolution image goes straight into `len(kernel_sizes)` convolutions. All but the last are followed by
    `activation` and have `hidden_channels[i]` output maps; the last one has `upscale_factor**2 * num_channels`
    maps and no activation. The sub-pixel convolution layer (pixel shuffle) then rearranges them into the
    `upscale_factor`-times larger image.

    Args:
        upscale_factor (`int`, *optional*, defaults to 3):
            The factor `r` by which height and width grow. An integer from 2 to 8 (2, 3 and 4 are trained).
        num_channels (`int`, *optional*, defaults to 3):
            Colour channels the network sees: 3 for RGB, 1 for the paper's luminance-only (Y) mode, in which the
            image processor feeds the Y channel of BT.601 YCbCr and upsamples CbCr with bicubic.
        hidden_channels (`list[int]`, *optional*, defaults to `[64, 64, 32, 32, 32]`):
            Output channels of every convolution except the last one (whose width is `r*r*num_channels`).
        kernel_sizes (`list[int]`, *optional*, defaults to `[5, 3, 3, 3, 3, 3]`):
            Odd kernel size of every convolution, the last one included: `len(hidden_channels) + 1` entries.
        activation (`str`, *optional*, defaults to `"relu"`):
            Non-linearity after every convolution but the last. One of `relu`, `tanh`, `leaky_relu`, `prelu`,
            `gelu`, `silu`, `identity`.
        padding_mode (`str`, *optional*, defaults to `"zeros"`):
            Padding of every convolution ("same" size): `zeros`, `reflect` or `replicate`.
        initializer_range (`float`, *optional*, defaults to 0.0):
            Standard deviation of the normal init of the hidden convolutions' weights; 0 selects `hidden_init`.
        hidden_init (`str`, *optional*, defaults to `"auto"`):
            Rule for the hidden convolutions when `initializer_range` is 0: `kaiming_fan_in` (He normal over the
            inputs), `kaiming_fan_out` (normal with std sqrt(2 / (out_channels * k * k)), as in the public ESPCN
            re-implementations), `xavier` (Glorot normal), or `auto`: Kaiming fan-in for ReLU-like activations,
            Xavier for `tanh`/`identity`.
        output_initializer_range (`float`, *optional*, defaults to 0.001):
            Standard deviation of the normal init of the last convolution (the one before the pixel shuffle);
            0 uses the rule of the hidden layers. The default starts the network near a zero output, which is worth
            0.9 dB to the paper's net and 0.2 dB to the seven-layer net at equal steps
            (benchmarks/runs/README.md).
        preset (`str`, *optional*):
            Informational name of the preset this config came from (see [`ESPCNConfig.from_preset`]).

    Example:

    ```python
    >>> from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution

    >>> config = ESPCNConfig(upscale_factor=3)  # the seven-layer network, RGB
    >>> paper = ESPCNConfig.from_preset("espcn-paper", upscale_factor=3)  # 5-3-3, 64-32, tanh, Y channel
    >>> model = ESPCNForImageSuperResolution(config)
    ```
    """

    model_type = "espcn"
    # Saved configs always carry `auto_map` (what `register_for_auto_class()` would set), with or without
    # `espcn_hf.register()`, so every saved folder loads with `trust_remote_code=True`.
    _auto_class = "AutoConfig"

    def __init__(
        self,
        upscale_factor: int = 3,
        num_channels: int = 3,
        hidden_channels: list[int] | tuple[int, ...] = (64, 64, 32, 32, 32),
        kernel_sizes: list[int] | tuple[int, ...] = (5, 3, 3, 3, 3, 3),
        activation: str = "relu",
        padding_mode: str = "zeros",
        initializer_range: float = 0.0,
        hidden_init: str = "auto",
        output_initializer_range: float = 1e-3,
        preset: str | None = None,
        **kwargs,
    ):
        self.upscale_factor = upscale_factor
        self.num_channels = num_channels
        self.hidden_channels = (
            list(hidden_channels) if isinstance(hidden_channels, (list, tuple)) else hidden_channels
        )
        self.kernel_sizes = list(kernel_sizes) if isinstance(kernel_sizes, (list, tuple)) else kernel_sizes
        self.activation = activation
        self.padding_mode = padding_mode
        self.initializer_range = initializer_range
        self.hidden_init = hidden_init
        self.output_initializer_range = output_initializer_range
        self.preset = preset
        self.validate_espcn()
        super().__init__(**kwargs)

    def validate_espcn(self) -> None:
        """Raise `ValueError` naming the argument when a value is not allowed."""
        r = self.upscale_factor
        if not _is_int(r) or not 2 <= r <= MAX_UPSCALE_FACTOR:
            raise ValueError(f"upscale_factor must be an integer from 2 to {MAX_UPSCALE_FACTOR}, got {r!r}")
        if not _is_int(self.num_channels) or self.num_channels not in (1, 3):
            raise ValueError(
                f"num_channels must be 3 (RGB) or 1 (the paper's Y-channel mode), got {self.num_channels!r}"
            )
        hidden = self.hidden_channels
        if not isinstance(hidden, list) or not hidden or not all(_is_int(c) and c > 0 for c in hidden):
            raise ValueError(f"hidden_channels must be a non-empty list of positive integers, got {hidden!r}")
        kernels = self.kernel_sizes
        if not isinstance(kernels, list) or not all(_is_int(k) and k > 0 and k % 2 == 1 for k in kernels):
            raise ValueError(f"kernel_sizes must be a list of positive odd integers, got {kernels!r}")
        if len(kernels) != len(hidden) + 1:
            raise ValueError(
                f"kernel_sizes needs one entry per convolution, len(hidden_channels) + 1 = {len(hidden) + 1}, "
                f"got {len(kernels)} ({kernels!r})"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {self.padding_mode!r}")
        for name in ("initializer_range", "output_initializer_range"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value < float("inf")
            ):
                raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
        if self.hidden_init not in HIDDEN_INITS:
            raise ValueError(f"hidden_init must be one of {HIDDEN_INITS}, got {self.hidden_init!r}")

    @property
    def receptive_field_radius(self) -> int:
        """How many low-resolution pixels on each side influence one output pixel (sum of kernel_size // 2)."""
        return sum(k // 2 for k in self.kernel_sizes)

    @property
    def color_mode(self) -> str:
        """`"rgb"` or `"y"` (luminance only), derived from `num_channels`."""
        return "rgb" if self.num_channels == 3 else "y"

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> ESPCNConfig:
        """Build the config of a named architecture preset (`espcn`, `espcn-paper`); kwargs override it."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {name!r}")
        return cls(**{**PRESETS[name], "preset": name, **kwargs})


__all__ = ["ESPCNConfig", "PRESETS"]
