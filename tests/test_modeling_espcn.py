import json

import pytest
import torch
from conftest import save_checkpoint, tiny_model
from safetensors.torch import load_file, save_file

from espcn_hf import PRESETS, ESPCNConfig, ESPCNForImageSuperResolution
from espcn_hf.configuration_espcn import ACTIVATIONS
from espcn_hf.modeling_espcn import ACTIVATION_LAYERS, rgb_to_ycbcr, ycbcr_to_rgb
from espcn_hf.pretrained import CheckpointError, load_model


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape_no_nan_and_every_parameter_learns(preset, scale):
    torch.manual_seed(0)
    model = ESPCNForImageSuperResolution(ESPCNConfig.from_preset(preset, upscale_factor=scale))
    c = model.config.num_channels
    x = torch.rand(2, c, 13, 17)
    labels = torch.rand(2, c, 13 * scale, 17 * scale)
    out = model(x, labels=labels)
    assert out.reconstruction.shape == (2, c, 13 * scale, 17 * scale)
    assert torch.isfinite(out.reconstruction).all()
    out.loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_layers_match_the_architecture():
    model = ESPCNForImageSuperResolution(ESPCNConfig(upscale_factor=3))
    convs = [m for m in model.body if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size[0]) for m in convs] == [
        (3, 64, 5), (64, 64, 3), (64, 32, 3), (32, 32, 3), (32, 32, 3), (32, 27, 3),
    ]  # fmt: skip
    assert not isinstance(model.body[-1], (torch.nn.ReLU, torch.nn.Tanh))  # no activation after the last conv
    assert (
        model.num_macs_per_pixel() == 3 * 64 * 25 + 64 * 64 * 9 + 64 * 32 * 9 + 2 * 32 * 32 * 9 + 32 * 27 * 9
    )


def test_sub_pixel_layer_rearranges_channels():
    # With an identity-like last layer, output pixel (r*i + a, r*j + b) of channel c is map c*r*r + a*r + b at (i, j).
    model = tiny_model(2)
    feature = torch.arange(12 * 2 * 3, dtype=torch.float32).reshape(1, 12, 2, 3)
    out = model.pixel_shuffle(feature)
    assert out.shape == (1, 3, 4, 6)
    assert out[0, 1, 3, 5] == feature[0, 1 * 4 + 1 * 2 + 1, 1, 2]


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (31, 7)])
def test_any_input_size(size):
    model = tiny_model(3)
    assert model(torch.rand(1, 3, *size)).reconstruction.shape[-2:] == (3 * size[0], 3 * size[1])


def test_output_is_pinned():
    """A slice of the output of a seeded tiny model: catches unintended numeric changes."""
    torch.manual_seed(0)
    model = ESPCNForImageSuperResolution(
        ESPCNConfig(upscale_factor=2, hidden_channels=[4], kernel_sizes=[3, 3], output_initializer_range=0.0)
    ).eval()  # every layer drawn by the same rule, so the slice is large enough to pin
    x = torch.linspace(0, 1, 3 * 4 * 4).reshape(1, 3, 4, 4)
    with torch.no_grad():
        out = model(x).reconstruction
    expected = torch.tensor(EXPECTED_SLICE)
    torch.testing.assert_close(out[0, 0, :2, :4], expected, atol=1e-4, rtol=0)


EXPECTED_SLICE = [[-0.1156, -0.2843, 0.0372, -0.1110], [0.3161, -0.0571, 0.5161, -0.0119]]


def test_y_model_accepts_y_and_rgb_and_keeps_chroma():
    torch.manual_seed(0)
    model = ESPCNForImageSuperResolution(ESPCNConfig.from_preset("espcn-paper", upscale_factor=3)).eval()
    rgb = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        y_only = model(rgb_to_ycbcr(rgb)[:, :1]).reconstruction
        from_rgb = model(rgb).reconstruction
    assert y_only.shape == (1, 1, 30, 36) and from_rgb.shape == (1, 3, 30, 36)
    torch.testing.assert_close(rgb_to_ycbcr(from_rgb)[:, :1], y_only, atol=1e-5, rtol=0)
    # A flat grey image keeps its colour: CbCr bicubic of a constant is the constant.
    grey = torch.full((1, 3, 8, 8), 0.5)
    with torch.no_grad():
        out_cbcr = rgb_to_ycbcr(model(grey).reconstruction)[:, 1:]
    torch.testing.assert_close(out_cbcr, torch.full_like(out_cbcr, 128 / 255), atol=1e-5, rtol=0)


def test_ycbcr_round_trip_and_matlab_values():
    rgb = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb)
    white = rgb_to_ycbcr(torch.ones(1, 3, 1, 1, dtype=torch.float64)).flatten() * 255
    torch.testing.assert_close(
        white, torch.tensor([235.0, 128.0, 128.0], dtype=torch.float64), atol=1e-3, rtol=0
    )


def test_labels_give_the_mean_squared_error():
    model = tiny_model(2)
    x = torch.rand(1, 3, 6, 6)
    labels = torch.rand(1, 3, 12, 12)
    out = model(x, labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.reconstruction, labels))


def test_activation_names_are_one_list():
    assert set(ACTIVATION_LAYERS) == set(ACTIVATIONS)
    for name in ACTIVATIONS:  # every configurable activation builds its own layer, none falls through
        model = ESPCNForImageSuperResolution(
            ESPCNConfig(upscale_factor=2, hidden_channels=[4], kernel_sizes=[3, 3], activation=name)
        )
        layer = model.body[1]
        assert (name == "identity") == isinstance(layer, torch.nn.Identity), name


def test_unknown_activation_raises_instead_of_falling_through():
    config = ESPCNConfig(upscale_factor=2, hidden_channels=[4], kernel_sizes=[3, 3])
    config.activation = "sparkle"  # past the config's own check
    with pytest.raises(ValueError, match="activation must be one of"):
        ESPCNForImageSuperResolution(config)


def test_y_model_trained_on_rgb_pairs_uses_the_y_loss():
    model = ESPCNForImageSuperResolution(ESPCNConfig.from_preset("espcn-paper", upscale_factor=2))
    out = model(torch.rand(2, 3, 6, 6), labels=torch.rand(2, 3, 12, 12))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)


@pytest.mark.parametrize(
    ("pixel_values", "message"),
    [
        (torch.rand(3, 8, 8), "4-D tensor"),
        (torch.rand(1, 4, 8, 8), "channels"),
        ("not a tensor", "4-D tensor"),
    ],
)
def test_bad_inputs(pixel_values, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(2)(pixel_values)


def test_labels_of_the_wrong_size():
    with pytest.raises(ValueError, match="labels must be"):
        tiny_model(2)(torch.rand(1, 3, 4, 4), labels=torch.rand(1, 3, 4, 4))


def test_save_load_round_trip(tmp_path):
    model = tiny_model(4)
    save_checkpoint(model, tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    loaded = ESPCNForImageSuperResolution.from_pretrained(tmp_path)
    x = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).reconstruction, model(x).reconstruction)


def test_weights_that_do_not_match_the_config_fail(tmp_path):
    save_checkpoint(tiny_model(3), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hidden_channels"] = [16, 8]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match|mismatch|size"):
        load_model(tmp_path)


def test_missing_weights_fail_instead_of_random_init(tmp_path):
    save_checkpoint(tiny_model(3), tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights.pop("body.0.weight")
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="do not match its config"):
        ESPCNForImageSuperResolution.from_pretrained(tmp_path)


def test_corrupt_and_missing_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path)
    save_checkpoint(tiny_model(3), tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt|truncated|cannot load"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(tmp_path)


def test_from_pretrained_of_a_bad_folder_raises_checkpoint_error(tmp_path):
    """What the README promises: `from_pretrained` itself, not only `load_model`, raises CheckpointError."""
    with pytest.raises(CheckpointError, match="no config.json"):
        ESPCNForImageSuperResolution.from_pretrained(tmp_path)
    save_checkpoint(tiny_model(3), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        ESPCNForImageSuperResolution.from_pretrained(tmp_path)
    assert issubclass(CheckpointError, ValueError)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda w: w.__setitem__(
                "body.0.weight", w["body.0.weight"].index_fill(0, torch.tensor([1]), float("nan"))
            ),
            "NaN",
        ),
        (lambda w: w.__setitem__("body.2.bias", torch.full_like(w["body.2.bias"], float("inf"))), "infinite"),
        (lambda w: w.__setitem__("body.0.weight", (w["body.0.weight"] * 100).to(torch.int32)), "I32"),
        (lambda w: w.__setitem__("body.0.bias", w["body.0.bias"] > 0), "BOOL"),
    ],
    ids=["nan", "inf", "int32", "bool"],
)
def test_non_finite_or_non_float_weights_are_refused(tmp_path, damage, message):
    """transformers casts integer weights to float without a word; NaN weights give a black image."""
    save_checkpoint(tiny_model(3), tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    damage(weights)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path)


def test_half_precision_weights_load(tmp_path):
    save_checkpoint(tiny_model(3).to(torch.bfloat16), tmp_path)
    assert load_model(tmp_path).body[0].weight.is_floating_point()


def test_initialisation_rules():
    """`output_initializer_range` starts the last convolution near zero; `hidden_init` picks the rule of the
    hidden layers (kaiming_fan_out: std sqrt(2 / (out_channels * k * k)), the public ESPCN recipe)."""
    torch.manual_seed(0)
    config = ESPCNConfig(
        hidden_channels=[64, 64],
        kernel_sizes=[5, 3, 3],
        hidden_init="kaiming_fan_out",
        output_initializer_range=1e-3,
    )
    model = ESPCNForImageSuperResolution(config)
    first, last = model.body[0], model.body[-1]
    assert first.weight.std().item() == pytest.approx((2 / (64 * 25)) ** 0.5, rel=0.05)
    assert last.weight.std().item() == pytest.approx(1e-3, rel=0.05)
    assert all(float(m.bias.abs().max()) == 0 for m in (first, last))
    # the default starts the output layer near zero (the ablation's winner); 0 gives it the hidden layers' rule
    default = ESPCNForImageSuperResolution(ESPCNConfig(hidden_channels=[64, 64], kernel_sizes=[5, 3, 3]))
    assert default.body[-1].weight.std().item() == pytest.approx(1e-3, rel=0.05)
    plain = ESPCNForImageSuperResolution(
        ESPCNConfig(hidden_channels=[64, 64], kernel_sizes=[5, 3, 3], output_initializer_range=0.0)
    )
    assert plain.body[-1].weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"hidden_init": "orthogonal"}, "hidden_init"),
        ({"output_initializer_range": -1.0}, "output_initializer_range"),
        ({"output_initializer_range": float("nan")}, "output_initializer_range"),
        ({"initializer_range": True}, "initializer_range"),
    ],
)
def test_bad_initialisation_values_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ESPCNConfig(**kwargs)
