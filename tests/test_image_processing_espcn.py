import io
import json
import struct
import warnings
import zlib

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


def _png(width: int, height: int, filtered_rows: bytes, bit_depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG written by hand: its header, one IDAT chunk holding `zlib.compress(filtered_rows)`, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(filtered_rows))
        + chunk(b"IEND", b"")
    )


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


# --- one rounding rule, one set of limits ---------------------------------------------------------------------


def test_quantize_is_the_rule_of_metrics():
    from espcn_hf.image_processing_espcn import quantize, to_uint8_hwc
    from espcn_hf.metrics import quantize_uint8

    ties = (torch.arange(256, dtype=torch.float64) + 0.5) / 255  # exact halves between levels
    values = torch.cat(
        [torch.rand(10_000, dtype=torch.float64), ties, torch.tensor([-1.0, 2.0, float("nan")])]
    )
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        x = values.to(dtype)
        assert torch.equal(quantize(x).to(torch.uint8), quantize_uint8(x)), dtype
    image = torch.rand(3, 7, 9)
    assert np.array_equal(to_uint8_hwc(image), quantize_uint8(image).permute(1, 2, 0).numpy())
    assert quantize(torch.tensor([0.5 / 255, 1.5 / 255])).tolist() == [1.0, 2.0]  # half away from zero


@pytest.mark.parametrize(("peak", "dtype"), [(255, torch.uint8), (65535, torch.int32)])
def test_quantize_to_is_quantize_at_every_near_tie(peak, dtype):
    """`quantize_to` rounds in float32: it must equal the float64 rule where float32 rounding could cross a
    level, i.e. within a few ulps of every (k + 0.5) / peak (exhaustively checked over all float32 in [0, 1]
    when written), and for NaN, infinities, values outside [0, 1], bfloat16 and float16."""
    from espcn_hf.image_processing_espcn import quantize, quantize_to

    centre = ((torch.arange(peak + 1, dtype=torch.float64) + 0.5) / peak).float()
    near = [centre]
    up, down = centre.clone(), centre.clone()
    for _ in range(4):
        up, down = torch.nextafter(up, torch.tensor(2.0)), torch.nextafter(down, torch.tensor(-1.0))
        near += [up, down]
    odd = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, -1e-8, 1.0, 1 + 1e-7, 3.0, 0.5])
    values = torch.cat([*near, odd, torch.rand(50_000)])
    for x in (values, values.to(torch.bfloat16), values.to(torch.float16)):
        assert torch.equal(quantize_to(x, dtype, peak), quantize(x, peak).to(dtype)), x.dtype


def test_uint8_images_in_any_layout_and_size_follow_the_rule():
    from espcn_hf.image_processing_espcn import to_output_image, to_uint8_hwc, to_uint8_planes
    from espcn_hf.metrics import quantize_uint8

    # a channels-last output, a crop of it (a tile's core), a (C, H, W) crop and a small image
    tile = torch.rand(1, 3, 700, 420).contiguous(memory_format=torch.channels_last)[0]
    for image in (tile, tile[:, 3:650, 5:400], torch.rand(3, 600, 500)[:, 1:, 2:], torch.rand(3, 5, 7)):
        expected = quantize_uint8(image).permute(1, 2, 0).numpy()
        out = to_uint8_hwc(image)  # large images are rounded in slabs of rows
        assert out.flags["C_CONTIGUOUS"] and out.dtype == np.uint8
        assert np.array_equal(out, expected)
        planes = to_uint8_planes(image)
        assert planes.flags["C_CONTIGUOUS"] and planes.dtype == np.uint8
        assert np.array_equal(planes.transpose(1, 2, 0), expected)
        pil = to_output_image(image)  # planes interleaved by PIL, or channels-last values directly
        assert pil.mode == "RGB" and np.array_equal(np.asarray(pil), expected)


def test_uint8_images_round_every_near_tie_and_odd_value_by_the_rule():
    """The 8-bit image paths round in float64 slabs (exact for float32, bfloat16 and float16): they must equal
    the rule within a few ulps of every level boundary, for NaN, infinities and values outside [0, 1]."""
    from espcn_hf.image_processing_espcn import to_output_image, to_uint8_hwc, to_uint8_planes
    from espcn_hf.metrics import quantize_uint8

    centre = ((torch.arange(256, dtype=torch.float64) + 0.5) / 255).float()
    near, up, down = [centre], centre.clone(), centre.clone()
    for _ in range(4):
        up, down = torch.nextafter(up, torch.tensor(2.0)), torch.nextafter(down, torch.tensor(-1.0))
        near += [up, down]
    odd = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, -1e-8, 1.0, 1 + 1e-7, 3.0, 0.5])
    values = torch.cat([*near, odd, torch.rand(3 * 90 * 400 - 9 * 256 - 9)])
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        image = values.to(dtype).view(3, 90, 400)  # 108,000 values: two slabs of rows
        expected = quantize_uint8(image).permute(1, 2, 0).numpy()
        assert np.array_equal(to_uint8_hwc(image), expected), dtype
        assert np.array_equal(to_uint8_planes(image).transpose(1, 2, 0), expected), dtype
        assert np.array_equal(np.asarray(to_output_image(image)), expected), dtype


def test_processor_and_loader_share_the_pixel_limit():
    from espcn_hf import image_io, image_processing_espcn

    assert image_processing_espcn.DEFAULT_MAX_PIXELS == image_io.DEFAULT_MAX_PIXELS


# --- grayscale and alpha through preprocess -> post-process ---------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected", "np_shape"),
    [("L", "L", (16, 20)), ("LA", "LA", (16, 20, 2)), ("I;16", "I;16", (16, 20))],
)
def test_post_process_keeps_grayscale(mode, expected, np_shape):
    gray = natural_image(8, 10)[..., 0]
    image = Image.fromarray(gray).convert("LA") if mode == "LA" else Image.fromarray(gray)
    if mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 257)
    processor = ESPCNImageProcessor(upscale_factor=2)
    inputs = processor(image)
    assert inputs["original_modes"] == [expected]
    # a fake "model" output with a colour cast: the result must still be one untinted grey plane
    output = torch.nn.functional.interpolate(inputs["pixel_values"], scale_factor=2)
    output[:, 0] += 0.1
    (result,) = processor.post_process_super_resolution(output, **processor.post_process_kwargs(inputs))
    assert result.mode == expected and result.size == (20, 16)
    (array,) = processor.post_process_super_resolution(
        output, output_type="np", **processor.post_process_kwargs(inputs)
    )
    assert array.shape == np_shape and array.dtype == (np.uint16 if mode == "I;16" else np.uint8)
    (plain,) = processor.post_process_super_resolution(output)
    assert plain.mode == "RGB"  # without the modes: RGB as before


def test_post_process_puts_alpha_back():
    rgba = np.dstack([natural_image(8, 10), np.tile(np.linspace(0, 255, 10).astype(np.uint8), (8, 1))])
    processor = ESPCNImageProcessor(upscale_factor=2)
    inputs = processor([Image.fromarray(rgba), Image.fromarray(natural_image(8, 10))])
    assert inputs["original_modes"] == ["RGBA", "RGB"] and inputs["alphas"][1] is None
    output = torch.nn.functional.interpolate(inputs["pixel_values"], scale_factor=2)
    first, second = processor.post_process_super_resolution(output, **processor.post_process_kwargs(inputs))
    assert first.mode == "RGBA" and second.mode == "RGB"
    alpha = np.asarray(first)[..., 3]
    assert alpha[:, 0].max() < 30 and alpha[:, -1].min() > 225


# --- loading: text streams, Pillow's bomb limit, JPEG data that ends early ---------------------------------------


def test_a_text_stream_is_an_image_load_error():
    with pytest.raises(ImageLoadError, match="binary"):
        load_image(io.StringIO("not an image"))


def test_max_pixels_overrides_pillows_global_bomb_limit(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    Image.new("L", (200, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)  # stands in for Pillow's 89.5 Mpx (20,000 px: > 2x)
    assert load_image(path, max_pixels=None).size == (200, 100)
    assert load_image(path, max_pixels=50_000).size == (200, 100)
    assert Image.MAX_IMAGE_PIXELS == 5_000  # restored
    with pytest.raises(ImageLoadError, match="over the limit"):
        load_image(path, max_pixels=10_000)
    with pytest.raises(Image.DecompressionBombError):  # Pillow's own limit still guards other callers
        Image.open(path)


def test_jpeg_data_that_ends_early_is_refused():
    data = _png_bytes(Image.new("RGB", (4000, 300), (10, 200, 30)), format="JPEG")
    with pytest.raises(ImageLoadError, match="truncated or corrupt"):
        load_image(data[:2000] + b"\xff\xd9")  # libjpeg would fill the rest with grey and only warn
    assert load_image(data).size == (4000, 300)
    flat = _png_bytes(Image.new("RGB", (2000, 1500), (90, 140, 200)), format="JPEG", quality=1)
    assert load_image(flat).size == (2000, 1500)  # a legitimately tiny file is not refused


def test_jpeg_that_ends_in_decoder_grey_is_refused():
    """It was a warning ("may be truncated"); a second decode now proves the data missing (issue "No wrong
    answers, no lost batches")."""
    noise = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    data = _png_bytes(Image.fromarray(noise), format="JPEG")
    cut = data[: len(data) // 2] + b"\xff\xd9"  # long enough for the size check, half the blocks missing
    with pytest.raises(ImageLoadError, match="JPEG data is truncated"):
        load_image(cut)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(data)  # the intact file: no warning


def test_post_process_infers_the_factor_from_the_padded_batch():
    processor = ESPCNImageProcessor()  # no upscale_factor given
    images = [Image.fromarray(natural_image(10, 12)), Image.fromarray(natural_image(7, 15, seed=1))]
    inputs = processor(images)
    output = torch.nn.functional.interpolate(inputs["pixel_values"], scale_factor=3)
    results = processor.post_process_super_resolution(output, **processor.post_process_kwargs(inputs))
    assert [r.size for r in results] == [(36, 30), (45, 21)]


def test_saved_processor_carries_auto_map_and_its_code(tmp_path):
    ESPCNImageProcessor(upscale_factor=3).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert config["auto_map"] == {"AutoImageProcessor": "image_processing_espcn.ESPCNImageProcessor"}
    assert (tmp_path / "image_processing_espcn.py").is_file()


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif", ".webp", ".gif", ".ppm"])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "I;16"])
def test_save_image_writes_every_mode_to_every_format(tmp_path, suffix, mode):
    from espcn_hf.image_io import save_image

    gray = natural_image(8, 10)[..., 0]
    image = (
        Image.fromarray(gray.astype(np.uint16) * 257)
        if mode == "I;16"
        else Image.fromarray(gray).convert(mode)
    )
    target = tmp_path / f"out{suffix}"
    save_image(image, target)
    reopened = load_image(target)
    assert reopened.size == (10, 8)
    if suffix in (".png", ".tif"):
        assert reopened.mode == mode  # lossless formats keep alpha and 16-bit depth
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left


# --- issue "No wrong answers, no lost batches": conversions that lose data say so -------------------------------


@pytest.mark.parametrize(
    ("mode", "suffix", "message"),
    [
        ("RGBA", ".gif", "partial transparency"),  # was silent: GIF keeps on/off transparency only
        ("RGBA", ".jpg", "alpha channel is dropped"),
        ("LA", ".bmp", "alpha channel is dropped"),
        ("I;16", ".webp", "16-bit depth"),
        ("I;16", ".jpg", "16-bit depth"),
        ("RGB", ".gif", "more than 256 colours"),
    ],
)
def test_save_image_warns_when_the_format_loses_data(tmp_path, mode, suffix, message):
    from espcn_hf.image_io import ImageFormatWarning, save_image

    rgb = natural_image(8, 40)
    alpha = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (8, 1))
    image = {
        "RGBA": Image.fromarray(np.dstack([rgb, alpha])),
        "LA": Image.fromarray(np.dstack([rgb[..., 0], alpha])),
        "I;16": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257 + 1),
        "RGB": Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)),
    }[mode]
    target = tmp_path / f"out{suffix}"
    with pytest.warns(ImageFormatWarning, match=message) as caught:
        save_image(image, target)
    assert str(target) in str(caught[0].message)
    assert load_image(target).size == image.size


@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp", ".jpg"])
def test_save_image_is_silent_when_nothing_is_lost(tmp_path, suffix):
    from espcn_hf.image_io import save_image

    image = Image.fromarray(natural_image(8, 10))  # RGB: every format holds it (JPEG lossily, as asked)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_image(image, tmp_path / f"out{suffix}")
        if suffix in (".png", ".tif"):
            save_image(
                Image.fromarray(natural_image(8, 10)[..., 0].astype(np.uint16) * 257),
                tmp_path / f"deep{suffix}",
            )


def test_16_bit_colour_read_as_8_bit_is_a_warning():
    from espcn_hf.image_io import ImageFormatWarning

    raw = b"".join(b"\0" + np.arange(12, dtype=">u2").tobytes() for _ in range(3))  # 4x3 RGB, 16 bits
    with pytest.warns(ImageFormatWarning, match="16-bit colour is read as 8 bits"):
        assert load_image(_png(4, 3, raw, bit_depth=16)).mode == "RGB"


# --- issue "No wrong answers, no lost batches": image data shorter than its header says, corrupt JPEG data ------


def test_png_whose_data_holds_fewer_rows_than_its_header_is_refused():
    """IHDR 200x200 RGB, one IDAT with zlib.compress of only 100 filtered rows, IEND: Pillow decoded it without
    a word, the lower half black, and it was upscaled with exit status 0."""
    row = b"\0" + bytes(range(200)) * 3  # filter byte 0, then 200 RGB pixels
    assert load_image(_png(200, 200, row * 200)).size == (200, 200)
    with pytest.raises(
        ImageLoadError, match="PNG image data is truncated or corrupt: it holds 100 of the 200 rows"
    ):
        load_image(_png(200, 200, row * 100))
    with pytest.raises(ImageLoadError, match="199 of the 200 rows"):
        load_image(_png(200, 200, row * 199 + row[:-1]))


def test_raw_tiff_whose_strips_do_not_cover_the_image_is_refused(tmp_path):
    """A fuzzed raw TIFF (rows per strip damaged from 8 to 4) was decoded from too little data: its eight strips
    cover half the rows, the rest black."""
    path = tmp_path / "strips.tif"
    Image.fromarray(natural_image(64, 48)).save(path, tiffinfo={278: 8})  # RowsPerStrip 8: eight strips
    assert load_image(path).size == (48, 64)
    data = bytearray(path.read_bytes())
    (count,) = struct.unpack("<H", data[8:10])  # the first IFD (Pillow writes it at offset 8)
    entry = next(
        10 + 12 * i for i in range(count) if struct.unpack("<H", data[10 + 12 * i : 12 + 12 * i])[0] == 278
    )
    data[entry + 8 : entry + 12] = struct.pack("<I", 4)
    path.write_bytes(bytes(data))
    with pytest.raises(ImageLoadError, match="strips cover 1,536 of the 3,072 pixels"):
        load_image(path)


def _photo_jpeg(**options) -> bytes:
    return _png_bytes(Image.fromarray(natural_image(240, 320, seed=3)), format="JPEG", quality=90, **options)


def _scan_data(data: bytes) -> tuple[int, int]:
    """(start, end) of the entropy-coded data of a single-scan JPEG (after SOS, before EOI)."""
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    return start, data.rindex(b"\xff\xd9")


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"restart_marker_blocks": 4}])
def test_jpeg_cut_short_with_an_end_marker_is_refused(options):
    """A JPEG cut at 70% with an end marker appended gave a warning at most (libjpeg fills the missing blocks
    with grey and only warns, and Pillow does not pass that on); a second decode now proves the loss."""
    data = _photo_jpeg(**options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(data).size == (320, 240)
    with pytest.raises(ImageLoadError, match="JPEG data is (truncated|corrupt)"):
        load_image(data[: int(len(data) * 0.7)] + b"\xff\xd9")


def test_jpeg_with_random_bytes_in_its_scan_data_is_refused():
    """Random bytes in the scan data were upscaled into a garbage lower part without a message."""
    data = bytearray(_photo_jpeg())
    start, end = _scan_data(bytes(data))
    middle = (start + end) // 2
    data[middle : middle + 2048] = np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    with pytest.raises(ImageLoadError, match="JPEG data is corrupt"):
        load_image(bytes(data))


def test_jpeg_whose_data_goes_on_after_its_last_block_is_refused():
    """More data than blocks: libjpeg warns of extraneous bytes; the data is out of step with the image, the mark
    of corrupt bytes before it. Zero padding after the data (some encoders write it) is only a warning."""
    from espcn_hf.image_io import ImageDataWarning

    data = _photo_jpeg()
    start, end = _scan_data(data)
    with pytest.raises(ImageLoadError, match=r"complete 1\d\d bytes before the end of its data"):
        load_image(data[:end] + bytes(range(1, 201)) + data[end:])
    with pytest.warns(ImageDataWarning, match="zero bytes after the JPEG image data"):
        assert load_image(data[:end] + bytes(200) + data[end:]).size == (320, 240)


def test_a_restart_marker_out_of_sequence_is_refused():
    data = _photo_jpeg(restart_marker_blocks=2)
    first = data.index(b"\xff\xd0")
    with pytest.raises(ImageLoadError, match="restart marker"):
        load_image(data[:first] + b"\xff\xd3" + data[first + 2 :])


def test_a_truly_mid_grey_jpeg_is_not_taken_for_a_truncated_one():
    for image in (Image.new("RGB", (64, 48), (128, 128, 128)), Image.new("L", (33, 17), 128)):
        for options in ({}, {"progressive": True}):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                assert load_image(_png_bytes(image, format="JPEG", **options)).size == image.size


def test_gif_keeps_on_off_transparency_of_partial_alpha(tmp_path):
    """Pillow writes an RGBA image whose alpha has levels other than 0 and 255 to GIF fully opaque; it is made
    on/off first (opaque from 50 %), so the transparent half stays transparent."""
    from espcn_hf.image_io import ImageFormatWarning, save_image

    alpha = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (8, 1))
    with pytest.warns(ImageFormatWarning, match="alpha is made on/off"):
        save_image(Image.fromarray(np.dstack([natural_image(8, 40), alpha])), tmp_path / "out.gif")
    with Image.open(tmp_path / "out.gif") as reopened:
        kept = np.asarray(reopened.convert("RGBA"))[..., 3]
    np.testing.assert_array_equal(kept, np.where(alpha >= 128, 255, 0))
