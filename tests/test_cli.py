import subprocess
import sys

import numpy as np
import pytest
from conftest import natural_image
from PIL import Image

from espcn_hf.cli import main


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(natural_image(12, 16, seed=i)).save(folder / f"img{i}.png")
    (folder / "SOURCE.txt").write_text("not an image")
    return folder


def test_upscale_a_folder(images, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["upscale", str(images), "-o", str(out), "--model", str(tiny_checkpoint), "-q"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["img0_x3.png", "img1_x3.png", "img2_x3.png"]
    assert Image.open(out / "img0_x3.png").size == (48, 36)


def test_upscale_one_file_to_a_file(images, tiny_checkpoint, tmp_path):
    target = tmp_path / "big.png"
    assert (
        main(["upscale", str(images / "img0.png"), "-o", str(target), "--model", str(tiny_checkpoint)]) == 0
    )
    assert Image.open(target).size == (48, 36)


def test_tiled_cli_equals_untiled(images, tiny_checkpoint, tmp_path):
    for tile in ("0", "8"):
        main(
            [
                "upscale",
                str(images / "img1.png"),
                "-o",
                str(tmp_path / f"t{tile}.png"),
                "--model",
                str(tiny_checkpoint),
                "--tile",
                tile,
            ]
        )
    a, b = (np.asarray(Image.open(tmp_path / f"t{t}.png")).astype(int) for t in ("0", "8"))
    assert np.abs(a - b).max() <= 1


def test_bad_inputs_are_reported_and_the_rest_is_done(images, tiny_checkpoint, tmp_path, capsys):
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (images / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    code = main(
        [
            "upscale",
            str(images),
            str(tmp_path / "missing.png"),
            "-o",
            str(out),
            "--model",
            str(tiny_checkpoint),
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert (
        "broken.png" in err and "empty.jpg: the file is empty" in err and "missing.png: no such file" in err
    )
    assert "Traceback" not in err
    assert len(list(out.glob("img*_x3.png"))) == 3


def test_never_overwrites_an_input(images, tiny_checkpoint, capsys):
    source = images / "img0.png"
    before = source.read_bytes()
    assert main(["upscale", str(source), "-o", str(source), "--model", str(tiny_checkpoint)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_missing_model_is_a_clear_error(images, tmp_path, capsys):
    assert (
        main(["upscale", str(images), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "nowhere")]) == 1
    )
    err = capsys.readouterr().err
    assert "cannot load the model" in err or "no config.json" in err


def test_bad_arguments_exit_2(images, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["upscale", str(images), "-o", str(tmp_path), "--tile", "3"])
    assert info.value.code == 2


def test_console_script_runs(images, tiny_checkpoint, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "espcn_hf.cli", "upscale", str(images / "img2.png"), "-o", str(tmp_path / "x.png"),
         "--model", str(tiny_checkpoint)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(48x36)" in result.stdout
