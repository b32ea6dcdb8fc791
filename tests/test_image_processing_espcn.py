import io

import numpy as np
import pytest
import torch
from conftest import natural_image
from PIL import Image

from espcn_hf import ESPCNImageProcessor, ImageLoadError, load_image
from espcn_hf.image_processing_espcn import pil_to_rgb_array


def _png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kwargs.pop("format", "PNG"), **kwargs)
    return buffer.getvalue()


def test_rescales_and_never_resizes():
    array = natural_image(21, 34)
    features = ESPCNImageProcessor()(Image.fromarray(array))
    pixel_values = features["pixel_values"]
    assert isinstance(pixel_values, torch.Tensor) and pixel_values.shape == (1, 3, 21, 34)
    torch.testing.assert_close(pixel_values[0].permute(1, 2, 0), torch.from_numpy(array).float() / 255)
    assert features["original_sizes"].tolist() == [[21, 34]]


@pytest.mark.parametrize(
    "make",
    [
        lambda a: Image.fromarray(a),
        lambda a: a,  # numpy HWC uint8
        lambda a: torch.from_numpy(a).permute(2, 0, 1).float() / 255,  # tensor CHW float
        lambda a: torch.from_numpy(a).permute(2, 0, 1).contiguous(),  # tensor CHW uint8
    ],
)
def test_input_types_agree(make):
    array = natural_image(12, 15)
    expected = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    got = ESPCNImageProcessor()(make(array))["pixel_values"][0]
    torch.testing.assert_close(got, expected)


def test_same_size_batch_is_not_padded():
    images = [Image.fromarray(natural_image(16, 16, seed=s)) for s in range(3)]
    assert ESPCNImageProcessor()(images)["pixel_values"].shape == (3, 3, 16, 16)


def test_mixed_batch_is_padded_and_cropped_back():
    processor = ESPCNImageProcessor(upscale_factor=2)
    images = [Image.fromarray(natural_image(10, 12)), Image.fromarray(natural_image(7, 15, seed=1))]
    features = processor(images)
    assert features["pixel_values"].shape == (2, 3, 10, 15)
    fake_output = torch.nn.functional.interpolate(features["pixel_values"], scale_factor=2)
    results = processor.post_process_super_resolution(fake_output, original_sizes=features["original_sizes"])
    assert [r.size for r in results] == [(24, 20), (30, 14)]


def test_post_process_clamps_and_rounds():
    out = torch.tensor([[[[-0.2, 0.5, 1.7, 0.999]]]]).expand(1, 3, 1, 4)
    (image,) = ESPCNImageProcessor().post_process_super_resolution(out)
    assert image.mode == "RGB" and image.size == (4, 1)
    assert np.asarray(image)[0, :, 0].tolist() == [0, 128, 255, 255]
    (array,) = ESPCNImageProcessor().post_process_super_resolution(out, output_type="np")
    assert array.dtype == np.uint8


MODES = {
    "L": lambda a: Image.fromarray(a[..., 0]),
    "RGBA": lambda a: Image.fromarray(np.dstack([a, np.full(a.shape[:2], 128, np.uint8)])),
    "P": lambda a: Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE),
    "CMYK": lambda a: Image.fromarray(a).convert("CMYK"),
    "I;16": lambda a: Image.fromarray(a[..., 0].astype(np.uint16) * 257),
    "1": lambda a: Image.fromarray(a[..., 0]).convert("1"),
    "LA": lambda a: Image.fromarray(a[..., 0]).convert("LA"),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_becomes_rgb(mode):
    array = natural_image(9, 11)
    image = MODES[mode](array)
    rgb = pil_to_rgb_array(image)
    assert rgb.shape == (9, 11, 3) and rgb.dtype == np.float32
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    if mode in ("L", "I;16"):  # grey levels survive exactly (16-bit: v*257/65535 == v/255)
        np.testing.assert_allclose(rgb[..., 0], array[..., 0] / 255, atol=1e-6)
        np.testing.assert_allclose(rgb[..., 1], rgb[..., 0])
    if mode == "RGBA":
        np.testing.assert_allclose(rgb, array / 255, atol=1e-6)


def test_16_bit_png_file_round_trip(tmp_path):
    array = (np.arange(64 * 8).reshape(8, 64) * 100).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    rgb = pil_to_rgb_array(load_image(path))
    np.testing.assert_allclose(rgb[..., 0], array / 65535, atol=1e-6)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.fromarray(natural_image(10, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes())
    loaded = load_image(path)
    assert loaded.size == (10, 20)
    assert ESPCNImageProcessor()(loaded)["pixel_values"].shape[-2:] == (20, 10)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not an image"),
        ("truncated", "truncated or corrupt"),
        ("one_pixel", "too small"),
    ],
)
def test_bad_files_get_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.png"
    if content == "truncated":
        data = _png_bytes(Image.fromarray(natural_image(64, 64)))
        content = data[: len(data) // 2]
    elif content == "one_pixel":
        content = _png_bytes(Image.new("RGB", (1, 1)))
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=message):
        load_image(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(path)
    with pytest.raises(ImageLoadError, match="over the limit"):
        load_image(path, max_pixels=1_000_000)
    with pytest.raises(ValueError, match="max_pixels"):
        ESPCNImageProcessor(max_pixels=1000)(Image.new("RGB", (100, 100)))


def test_processor_rejects_bad_arrays():
    processor = ESPCNImageProcessor()
    with pytest.raises(ValueError, match="shape"):
        processor(np.zeros((5, 5, 2), np.uint8))
    with pytest.raises(ValueError, match="at least 2x2"):
        processor(np.zeros((1, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        processor(torch.full((3, 4, 4), float("nan")))
    with pytest.raises(TypeError, match="load_image"):
        processor("image.png")
    with pytest.raises(ValueError, match="No images"):
        processor([])


def test_save_and_load(tmp_path):
    ESPCNImageProcessor(upscale_factor=4, max_pixels=123).save_pretrained(tmp_path)
    loaded = ESPCNImageProcessor.from_pretrained(tmp_path)
    assert loaded.upscale_factor == 4 and loaded.max_pixels == 123
