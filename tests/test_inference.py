import numpy as np
import pytest
import torch
from conftest import natural_image, tiny_model
from PIL import Image

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, upscale
from espcn_hf.inference import _tiles, resolve_tiling, upscale_tensor


@pytest.mark.parametrize("preset", ["espcn", "espcn-paper"])
@pytest.mark.parametrize(("tile", "overlap"), [(16, None), (23, None), (40, 12)])
def test_tiled_output_equals_untiled(preset, tile, overlap):
    torch.manual_seed(0)
    model = ESPCNForImageSuperResolution(ESPCNConfig.from_preset(preset, upscale_factor=3)).eval()
    x = torch.from_numpy(natural_image(61, 75)).permute(2, 0, 1)[None].float() / 255
    whole = upscale_tensor(model, x, tile_size=None)
    tiled = upscale_tensor(model, x, tile_size=tile, tile_overlap=overlap)
    assert tiled.shape == whole.shape == (1, 3, 183, 225)
    assert (tiled - whole).abs().max().item() <= 1e-5


def test_tiles_cover_the_image_exactly_once():
    covered = np.zeros((50, 70), int)
    for top, left, bottom, right, t0, l0, b1, r1 in _tiles(50, 70, 16, 7):
        covered[top:bottom, left:right] += 1
        assert t0 == max(top - 7, 0) and b1 == min(bottom + 7, 50) and l0 <= left and r1 >= right
    assert (covered == 1).all()


def test_tiling_options_are_validated():
    config = ESPCNConfig()
    with pytest.raises(ValueError, match="receptive-field radius"):
        resolve_tiling(config, 100, 100, 32, 3)
    with pytest.raises(ValueError, match="tile_size"):
        resolve_tiling(config, 100, 100, 4, None)
    with pytest.raises(ValueError, match="tile_size"):
        resolve_tiling(config, 100, 100, "big", None)
    assert resolve_tiling(config, 100, 100, "auto", None) == (None, 7)  # small image: whole
    assert resolve_tiling(config, 2000, 2000, "auto", None)[0] is not None  # large image: tiled
    assert resolve_tiling(config, 100, 100, 256, None) == (None, 7)  # tile bigger than the image


def test_upscale_pil_numpy_tensor_and_lists():
    model = tiny_model(2)
    array = natural_image(20, 30)
    pil_out = upscale(Image.fromarray(array), model)
    np_out = upscale(array, model)
    tensor_out = upscale(torch.from_numpy(array).permute(2, 0, 1).float() / 255, model)
    assert pil_out.size == (60, 40) and pil_out.mode == "RGB"
    assert np_out.shape == (40, 60, 3) and np_out.dtype == np.uint8
    assert tensor_out.shape == (3, 40, 60) and tensor_out.min() >= 0 and tensor_out.max() <= 1
    np.testing.assert_array_equal(np.asarray(pil_out), np_out)
    expected = (tensor_out * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(np_out, expected)
    assert [i.size for i in upscale([Image.fromarray(array)] * 2, model)] == [(60, 40)] * 2


def test_tiled_pil_output_equals_whole_pil_output():
    model = tiny_model(3)
    image = Image.fromarray(natural_image(45, 37))
    whole = np.asarray(upscale(image, model, tile_size=None))
    tiled = np.asarray(upscale(image, model, tile_size=8))
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1  # identical up to a rounding tie


def test_alpha_is_kept(tmp_path):
    rgba = np.dstack([natural_image(10, 12), np.linspace(0, 255, 120).reshape(10, 12).astype(np.uint8)])
    out = upscale(Image.fromarray(rgba), tiny_model(2))
    assert out.mode == "RGBA" and out.size == (24, 20)
    alpha = np.asarray(out)[..., 3]
    assert alpha.min() < 30 and alpha.max() > 225


def test_upscale_from_a_saved_folder(tiny_checkpoint):
    out = upscale(Image.fromarray(natural_image(8, 9)), str(tiny_checkpoint))
    assert out.size == (27, 24)


def test_bad_tensor_shape():
    with pytest.raises(ValueError, match="tensor image"):
        upscale(torch.rand(2, 2, 3, 4, 5), tiny_model(2))
