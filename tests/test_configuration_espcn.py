import json

import pytest

from espcn_hf import PRESETS, ESPCNConfig


def test_defaults_are_the_seven_layer_network():
    config = ESPCNConfig()
    assert config.upscale_factor == 3
    assert config.num_channels == 3
    assert config.hidden_channels == [64, 64, 32, 32, 32]
    assert config.kernel_sizes == [5, 3, 3, 3, 3, 3]
    assert config.activation == "relu"
    assert not hasattr(config, "loss")  # a training setting: the trainer's, not the model's
    assert config.receptive_field_radius == 7
    assert config.color_mode == "rgb"


def test_paper_preset():
    config = ESPCNConfig.from_preset("espcn-paper", upscale_factor=4)
    assert (config.hidden_channels, config.kernel_sizes) == ([64, 32], [5, 3, 3])
    assert config.activation == "tanh" and config.num_channels == 1 and config.color_mode == "y"
    assert config.upscale_factor == 4 and config.preset == "espcn-paper"
    assert type(config) is ESPCNConfig  # a preset is data, not a second class


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(tmp_path, name):
    config = ESPCNConfig.from_preset(name, upscale_factor=2)
    config.save_pretrained(tmp_path)
    loaded = ESPCNConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "espcn"


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"upscale_factor": 1}, "upscale_factor"),
        ({"upscale_factor": 2.5}, "upscale_factor"),
        ({"upscale_factor": True}, "upscale_factor"),
        ({"upscale_factor": 16}, "upscale_factor"),
        ({"num_channels": 4}, "num_channels"),
        ({"hidden_channels": []}, "hidden_channels"),
        ({"hidden_channels": [64, -1, 32, 32, 32]}, "hidden_channels"),
        ({"kernel_sizes": [5, 3, 3, 3, 3, 4]}, "kernel_sizes"),
        ({"kernel_sizes": [5, 3, 3]}, "kernel_sizes"),
        ({"activation": "swishy"}, "activation"),
        ({"padding_mode": "circular"}, "padding_mode"),
        ({"initializer_range": -1.0}, "initializer_range"),
    ],
)
def test_bad_values_raise_naming_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        ESPCNConfig(**kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="preset must be one of"):
        ESPCNConfig.from_preset("srcnn")


def test_bad_value_in_a_saved_config_fails_on_load(tmp_path):
    ESPCNConfig().save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["activation"] = "sparkle"
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="activation"):
        ESPCNConfig.from_pretrained(tmp_path)


def test_config_is_a_transformers_5_pretrained_config():
    from transformers import PreTrainedConfig

    assert issubclass(ESPCNConfig, PreTrainedConfig)
