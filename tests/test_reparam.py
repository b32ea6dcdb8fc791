"""Re-parameterised training (espcn_hf.reparam): the expanded blocks collapse exactly into the plain network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution
from espcn_hf.reparam import BRANCH_SETS, RepConv2d, collapsed, expand, extra_cost, is_expanded


def _randomise(block: nn.Module, seed: int) -> None:
    """Every parameter random (zero-initialised branches would hide a wrong collapse)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)


@pytest.mark.parametrize("kind", sorted(BRANCH_SETS))
@pytest.mark.parametrize("in_channels, out_channels, kernel", [(3, 64, 5), (64, 64, 3), (64, 32, 3), (32, 27, 3),
                                                               (32, 32, 3), (1, 64, 5), (32, 9, 3), (4, 4, 1)])  # fmt: skip
def test_every_layer_shape_collapses_exactly(kind, in_channels, out_channels, kernel):
    block = RepConv2d(in_channels, out_channels, kernel, BRANCH_SETS[kind]).double()
    _randomise(block, seed=kernel + in_channels)
    x = torch.randn(2, in_channels, 11, 13, dtype=torch.float64)
    weight, bias = block.kernel()
    plain = nn.functional.conv2d(x, weight, bias, padding=kernel // 2)
    assert (block(x) - plain).abs().max().item() <= 1e-10  # borders included (bias-padded branches)


@pytest.mark.parametrize("kind", sorted(BRANCH_SETS))
@pytest.mark.parametrize("preset", ["espcn", "espcn-paper"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_the_collapsed_model_is_the_expanded_model(kind, preset, scale):
    """For every preset and scale: collapsed == expanded within 1e-5 on random inputs (float32, the branches as
    initialised for training; exact to 1e-9 in float64 with every parameter random), and the collapsed model has
    the plain model's structure, parameter count and state-dict keys."""
    torch.manual_seed(scale)
    config = ESPCNConfig.from_preset(preset, upscale_factor=scale)
    model = ESPCNForImageSuperResolution(config).eval()
    plain_keys = {k: v.shape for k, v in model.state_dict().items()}
    expand(model, kind)
    assert is_expanded(model) and extra_cost(model) > 1
    saved = collapsed(model).eval()
    assert not is_expanded(saved) and is_expanded(model)  # a copy: training goes on with the branches
    assert {k: v.shape for k, v in saved.state_dict().items()} == plain_keys
    assert saved.num_parameters() == ESPCNForImageSuperResolution(config).num_parameters()
    x = torch.rand(2, 3, 17, 15)
    with torch.no_grad():
        assert (model(x).reconstruction - saved(x).reconstruction).abs().max().item() <= 1e-5
        model.double()
        for block in model.body:
            if isinstance(block, RepConv2d):
                _randomise(block, seed=block.out_channels)
        exact = collapsed(model)
        x = x.double()
        assert (model(x).reconstruction - exact(x).reconstruction).abs().max().item() <= 1e-9


def test_zero_extra_branches_start_from_the_plain_layer():
    """Starting from trained weights: the expanded model computes exactly what the plain one did."""
    torch.manual_seed(0)
    model = ESPCNForImageSuperResolution(ESPCNConfig(upscale_factor=3)).eval()
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        before = model(x).reconstruction
        expand(model, "ecb", zero_extra=True)
        assert (model(x).reconstruction - before).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="reparam"):
        expand(ESPCNForImageSuperResolution(ESPCNConfig()), "diamond")


def test_training_with_reparam_saves_the_plain_network(tmp_path):
    """A smoke run with `reparam: ecb`: the saved best/ and final/ are plain ESPCN folders (the config and
    state-dict keys of an ordinary model) whose outputs equal the expanded EMA weights'."""
    from conftest import REPO_ROOT, load_script, shared_data_dir

    if not (shared_data_dir() / "train" / "T91").is_dir():
        pytest.skip("shared training data not found")
    train = load_script(REPO_ROOT / "scripts" / "train.py", "train_script")
    out = tmp_path / "run"
    args = ["--config", str(REPO_ROOT / "configs" / "smoke-cpu.yaml"), "--output_dir", str(out)]
    args += ["--set", "reparam=ecb", "--set", "output_lr_scale=0.1"]
    assert train.main(args) == 0
    plain = ESPCNForImageSuperResolution(
        ESPCNConfig(upscale_factor=3, hidden_channels=[8, 8], kernel_sizes=[3, 3, 3])
    )
    for folder in ("best", "final"):
        model = ESPCNForImageSuperResolution.from_pretrained(out / folder)  # strict: plain keys and shapes
        assert model.state_dict().keys() == plain.state_dict().keys()
        assert not is_expanded(model)
