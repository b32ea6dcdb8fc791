import io
import math

import numpy as np
import pytest
import torch
from conftest import natural_image, tiny_model
from PIL import Image, ImageOps

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, ESPCNImageProcessor, upscale
from espcn_hf.image_processing_espcn import tile_windows
from espcn_hf.inference import resolve_tiling, upscale_tensor


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
    for top, left, bottom, right, t0, l0, b1, r1 in tile_windows(50, 70, 16, 7):
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


# --- explicit options, validated alike for one image and a list; the caller's model is never changed ---------


@pytest.mark.parametrize(
    "options",
    [{"dtype": "nonsense"}, {"memory_format": "sideways"}, {"tile_size": 3}, {"tile_size": "big"}],
)
def test_a_list_validates_options_like_one_image(options):
    model, image = tiny_model(2), Image.fromarray(natural_image(10, 12))
    with pytest.raises(ValueError) as single:
        upscale(image, model, **options)
    with pytest.raises(ValueError) as listed:
        upscale([image], model, **options)
    assert str(single.value) == str(listed.value)


def test_the_callers_model_is_never_changed():
    import espcn_hf.inference as inference

    model = tiny_model(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attributes = set(vars(model))
    image = Image.fromarray(natural_image(20, 24))
    for options in ({}, {"dtype": torch.bfloat16}, {"memory_format": "contiguous"}, {"device": "cpu"}):
        upscale(image, model, **options)
        upscale_tensor(model, torch.rand(1, 3, 9, 9), **{k: v for k, v in options.items() if k != "device"})
    assert set(vars(model)) == attributes  # no private tags
    for name, value in model.state_dict().items():
        assert value.dtype == torch.float32 and value.is_contiguous(), name  # not converted to bf16/NHWC
        assert torch.equal(value, before[name])
    assert not hasattr(inference, "_prepared")  # no module-level cache of prepared models


def test_memory_format_and_dtype_options():
    model = tiny_model(3)
    x = torch.from_numpy(natural_image(30, 33)).permute(2, 0, 1)[None].float() / 255
    nchw = upscale_tensor(model, x, tile_size=None, memory_format="contiguous")
    nhwc = upscale_tensor(model, x, tile_size=None, memory_format=torch.channels_last)
    bf16 = upscale_tensor(model, x, tile_size=None, dtype="bf16")
    assert (nchw - nhwc).abs().max() <= 1e-5
    assert bf16.dtype == torch.float32 and 0 < (bf16 - nchw).abs().max() < 0.05


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("auto", "auto"),
        (None, None),
        (0, None),
        ("0", None),
        ("none", None),
        (64, 64),
        ("512", 512),
        (" 8", 8),
    ],
)
def test_parse_tile_size(value, expected):
    from espcn_hf.inference import parse_tile_size

    assert parse_tile_size(value) == expected


@pytest.mark.parametrize("value", [3, "7", -8, "big", 12.0, True, "auto-ish"])
def test_parse_tile_size_refuses(value):
    from espcn_hf.inference import parse_tile_size

    with pytest.raises(ValueError, match="tile_size"):
        parse_tile_size(value)


def test_auto_tiles_by_device_and_free_memory():
    from espcn_hf.inference import AUTO_TILE_SIZE, auto_tile_size

    config = ESPCNConfig()
    assert auto_tile_size(config, 1, 1080, 1920, "cpu") == AUTO_TILE_SIZE
    assert auto_tile_size(config, 1, 1080, 1920, "cuda", free_bytes=40 << 30) is None  # whole frame fits
    tile = auto_tile_size(config, 1, 1080, 1920, "cuda", free_bytes=200 << 20)  # 200 MB free: tiles
    assert tile is not None and tile % 64 == 0 and 64 <= tile < 1080
    assert auto_tile_size(config, 1, 1080, 1920, "cuda", free_bytes=1 << 20) == 64  # never below 64
    assert resolve_tiling(config, 2000, 2000, "auto", None)[0] == AUTO_TILE_SIZE  # a CPU model


# --- bad input -----------------------------------------------------------------------------------------------


def test_nan_tensor_input_is_refused():
    image = torch.rand(3, 8, 8)
    image[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        upscale(image, tiny_model(2))
    with pytest.raises(ValueError, match="NaN"):
        upscale(torch.full((1, 3, 4, 4), float("inf")), tiny_model(2))


def test_output_size_limit():
    from espcn_hf import ImageLoadError

    image = Image.fromarray(natural_image(20, 30))
    with pytest.raises(ImageLoadError, match="output limit"):
        upscale(image, tiny_model(4), max_output_pixels=20 * 30 * 16 - 1)
    assert upscale(image, tiny_model(4), max_output_pixels=None).size == (120, 80)


# --- grayscale stays grayscale, alpha follows the EXIF rotation -----------------------------------------------


def _gray(height=16, width=20) -> np.ndarray:
    return natural_image(height, width)[..., 1]


@pytest.mark.parametrize("scale", [2, 3])
def test_grayscale_comes_back_grayscale(scale):
    model = tiny_model(scale)
    gray = Image.fromarray(_gray())
    out = upscale(gray, model)
    assert out.mode == "L" and out.size == (20 * scale, 16 * scale)
    # the luma of the RGB result: what the model makes of the grey, without its colour fringes
    rgb = upscale(gray.convert("RGB"), model)
    assert np.abs(np.asarray(out).astype(int) - np.asarray(rgb.convert("L")).astype(int)).max() <= 1
    la = upscale(gray.convert("LA"), model)
    assert la.mode == "LA" and np.array_equal(np.asarray(la)[..., 0], np.asarray(out))
    assert np.asarray(upscale(_gray(), model)).shape == (16 * scale, 20 * scale)  # numpy (H, W) -> (rH, rW)
    one = upscale(torch.from_numpy(_gray()).float()[None] / 255, model)  # a 1-channel tensor -> 1 channel
    assert one.shape == (1, 16 * scale, 20 * scale)


def test_16_bit_grayscale_stays_16_bit_and_untinted(tmp_path):
    array = (_gray().astype(np.uint16) * 257 + 3).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    model = tiny_model(2)
    out = upscale(str(path), model)
    assert out.mode == "I;16" and out.size == (40, 32)
    eight_bit = np.asarray(upscale(Image.fromarray(_gray()), model)).astype(int)
    assert np.abs(np.asarray(out).astype(int) / 257 - eight_bit).max() <= 1.5
    assert upscale(array, model).dtype == np.uint16


def test_exif_rotated_rgba_takes_alpha_after_rotation():
    rgba = np.dstack([natural_image(30, 60), np.zeros((30, 60), np.uint8)])
    rgba[:, :30, 3] = 255  # left half opaque
    image = Image.fromarray(rgba)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: the opaque half ends up on top
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif.tobytes())
    opened = Image.open(io.BytesIO(buffer.getvalue()))
    out = upscale(opened, tiny_model(2))
    assert out.mode == "RGBA" and out.size == (60, 120)
    alpha = np.asarray(out)[..., 3].astype(int)
    expected = np.asarray(ImageOps.exif_transpose(opened).getchannel("A").resize((60, 120), Image.BICUBIC))
    assert np.abs(alpha - expected).max() <= 1
    assert alpha[:50].min() > 200 and alpha[70:].max() < 50


def test_default_limits_bound_the_output_before_any_work():
    from espcn_hf import ImageLoadError
    from espcn_hf.image_io import DEFAULT_MAX_OUTPUT_PIXELS, DEFAULT_MAX_PIXELS

    # the largest default input (36 Mpx) at x4 would make a 576 Mpx image (1.7 GB as RGB): refused up front
    big = Image.new("L", (6000, 6000))
    assert 6000 * 6000 <= DEFAULT_MAX_PIXELS < 6000 * 6000 * 16
    with pytest.raises(ImageLoadError, match="output limit"):
        upscale(big, tiny_model(4))
    assert DEFAULT_MAX_OUTPUT_PIXELS >= 4000 * 3000 * 16  # the benchmarked 4000x3000 x4 case stays allowed


def test_grayscale_photo_with_the_shipped_x3_model_is_untinted():
    """Issue 8 item 4: the shipped x3 model made colour fringes of up to 37 levels on a grayscale input."""
    from espcn_hf.pretrained import SAMPLE_DIR, load_model, packaged_weights

    gray, model = Image.open(SAMPLE_DIR / "bricks.png").convert("L"), load_model(packaged_weights(3))
    out = upscale(gray, model)
    assert out.mode == "L" and out.size == (720, 540)
    rgb = np.asarray(upscale(gray.convert("RGB"), model)).astype(int)
    luma = np.asarray(Image.fromarray(rgb.astype(np.uint8)).convert("L")).astype(int)
    assert np.abs(np.asarray(out).astype(int) - luma).max() <= 1  # the untinted luma of the RGB result


# --- issue "No wrong answers, no lost batches" -----------------------------------------------------------------


def test_a_numpy_batch_gives_every_image_back():
    """A (2, H, W, 3) array returned one (rH, rW, 3) array, image 0 only (a 4-D tensor returned both)."""
    model = tiny_model(2)
    batch = np.stack([natural_image(10, 12, seed=1), natural_image(10, 12, seed=2)])
    out = upscale(batch, model)
    assert out.shape == (2, 20, 24, 3) and out.dtype == np.uint8
    for image, result in zip(batch, out, strict=True):
        np.testing.assert_array_equal(result, upscale(image, model))
    gray = upscale(batch[..., :1], model)  # (N, H, W, 1) grayscale
    assert gray.shape == (2, 20, 24, 1)
    with pytest.raises(ValueError, match="no images"):
        upscale(batch[:0], model)


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(np.array([[0.2, np.inf], [0.5, 0.1]], np.float32)),  # +inf became white
        Image.fromarray(np.array([[0.2, np.nan], [0.5, 0.1]], np.float32)),
        np.zeros((4, 4, 3), "datetime64[s]"),
        np.full((4, 4, 3), 0.5 + 0.5j),
        np.full((4, 4, 3), "0.5"),
        np.full((4, 4, 3), 0.5, dtype=object),
        np.full((4, 4, 3), -np.inf),
        torch.full((3, 4, 4), 0.5 + 0j),
    ],
    ids=["F-inf", "F-nan", "datetime64", "complex", "str", "object", "numpy-inf", "complex-tensor"],
)
def test_values_that_are_not_finite_numbers_are_refused(image):
    """Non-finite values and non-numeric dtypes are a ValueError in the image processor, so `upscale`, the
    pipeline and the Space refuse them alike (they were white, or silently turned into floats)."""
    with pytest.raises(ValueError, match="NaN or infinite|images hold numbers"):
        ESPCNImageProcessor()(image)
    with pytest.raises(ValueError, match="NaN or infinite|images hold numbers"):
        upscale(image, tiny_model(2))


def test_the_output_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    """With no input limit (`--max-pixels 0`) a 1.6 Gpx PNG was decoded (3.5 GB, 12 s) before the output limit
    refused it: the output limit is now checked from the header too."""
    from PIL import ImageFile

    from espcn_hf import ImageLoadError

    path = tmp_path / "wide.png"
    Image.new("RGB", (300, 200)).save(path)

    def decoded(*args, **kwargs):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)
    with pytest.raises(ImageLoadError, match=r"wide\.png: 300x200 at x4 .* over the output limit"):
        upscale(str(path), tiny_model(4), max_pixels=None, max_output_pixels=300 * 200 * 16 - 1)


def test_auto_tiles_for_the_backend_that_runs():
    """tile_size="auto" with onnxruntime: whole frames up to ONNXRUNTIME_WHOLE_FRAME_PIXELS LR pixels (batch
    included), 256-px tiles beyond; torch on CPU keeps 256-px tiles."""
    from espcn_hf.inference import AUTO_TILE_SIZE, ONNXRUNTIME_WHOLE_FRAME_PIXELS, auto_tile_size

    config = ESPCNConfig(upscale_factor=3)
    assert auto_tile_size(config, 1, 360, 640, "cpu", backend="onnxruntime") is None
    assert auto_tile_size(config, 4, 360, 640, "cpu", backend="onnxruntime") == AUTO_TILE_SIZE
    assert auto_tile_size(config, 1, 1080, 1920, "cpu", backend="onnxruntime") == AUTO_TILE_SIZE
    side = math.isqrt(ONNXRUNTIME_WHOLE_FRAME_PIXELS)
    assert auto_tile_size(config, 1, side, side, "cpu", backend="onnxruntime") is None
    assert auto_tile_size(config, 1, side, side + 1, "cpu", backend="onnxruntime") == AUTO_TILE_SIZE
    assert auto_tile_size(config, 1, 360, 640, "cpu") == AUTO_TILE_SIZE
    assert resolve_tiling(config, 360, 640, "auto", None, backend="onnxruntime") == (None, 7)
    assert resolve_tiling(config, 360, 640, "auto", None) == (AUTO_TILE_SIZE, 7)
