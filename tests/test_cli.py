import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, natural_image, save_checkpoint, tiny_model
from PIL import Image

from espcn_hf.cli import build_parser, main


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(natural_image(12, 16, seed=i)).save(folder / f"img{i}.png")
    (folder / "SOURCE.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def tiny_x2(tmp_path_factory):
    return save_checkpoint(tiny_model(2), tmp_path_factory.mktemp("tiny-x2"))


def test_upscale_a_folder(images, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["upscale", str(images), "-o", str(out), "--model", str(tiny_checkpoint), "-q"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["img0_x3.png", "img1_x3.png", "img2_x3.png"]
    assert Image.open(out / "img0_x3.png").size == (48, 36)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""  # -q: nothing but errors


def test_upscale_one_file_to_a_file(images, tiny_checkpoint, tmp_path, capsys):
    target = tmp_path / "big.png"
    assert (
        main(["upscale", str(images / "img0.png"), "-o", str(target), "--model", str(tiny_checkpoint)]) == 0
    )
    assert Image.open(target).size == (48, 36)
    out = capsys.readouterr().out
    assert "(local folder)" in out  # one neutral line says which model was used
    assert "Loading weights" not in out + capsys.readouterr().err


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


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_a_link_to_the_input_is_the_input(images, tiny_checkpoint, tmp_path, capsys, link):
    source = images / "img0.png"
    before = source.read_bytes()
    target = tmp_path / "linked.png"
    (os.link if link == "hard" else os.symlink)(source, target)
    assert main(["upscale", str(source), "-o", str(target), "--model", str(tiny_checkpoint)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_missing_model_is_a_clear_error(images, tmp_path, capsys):
    code = main(["upscale", str(images), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "nowhere")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and "Traceback" not in err


def test_scale_that_disagrees_with_the_model_is_an_error(images, tiny_x2, tmp_path, capsys):
    out = tmp_path / "o.png"
    code = main(
        ["upscale", str(images / "img0.png"), "-o", str(out), "--model", str(tiny_x2), "--scale", "4"]
    )
    assert code == 1 and not out.exists()
    assert "x2 model, but x4" in capsys.readouterr().err
    assert (
        main(["upscale", str(images / "img0.png"), "-o", str(out), "--model", str(tiny_x2), "--scale", "2"])
        == 0
    )


def test_scale_without_model_picks_the_packaged_model_of_that_scale(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("espcn_hf.pretrained.hub_reachable", lambda repo_id: False)  # offline, quickly
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "o.png"
    assert main(["upscale", str(images / "img0.png"), "-o", str(out), "--scale", "2"]) == 0
    assert Image.open(out).size == (32, 24)
    assert "espcn-x2" in capsys.readouterr().out


def test_several_inputs_need_an_output_folder(images, tiny_checkpoint, tmp_path, capsys):
    files = [str(images / "img0.png"), str(images / "img1.png")]
    target = tmp_path / "big2.png"
    assert main(["upscale", *files, "-o", str(target), "--model", str(tiny_checkpoint)]) == 2
    assert "looks like an image file name" in capsys.readouterr().err
    assert not target.exists()
    existing = tmp_path / "existing"
    existing.write_bytes(b"keep me")
    assert main(["upscale", *files, "-o", str(existing), "--model", str(tiny_checkpoint)]) == 2
    assert "not a folder" in capsys.readouterr().err and existing.read_bytes() == b"keep me"
    assert main(["upscale", str(images), "-o", str(target), "--model", str(tiny_checkpoint)]) == 2  # a folder


def test_one_input_to_an_image_name_or_an_existing_folder(images, tiny_checkpoint, tmp_path):
    gif = tmp_path / "out.gif"
    assert main(["upscale", str(images / "img0.png"), "-o", str(gif), "--model", str(tiny_checkpoint)]) == 0
    assert gif.is_file() and Image.open(gif).format == "GIF"
    folder = tmp_path / "existing_dir.png"
    folder.mkdir()
    assert (
        main(["upscale", str(images / "img0.png"), "-o", str(folder), "--model", str(tiny_checkpoint)]) == 0
    )
    assert Image.open(folder / "img0_x3.png").size == (48, 36)


def test_grayscale_and_alpha_survive_the_cli(tmp_path, tiny_checkpoint):
    gray = tmp_path / "gray.png"
    Image.fromarray(natural_image(12, 16)[..., 0]).convert("LA").save(gray)
    out = tmp_path / "out"
    assert main(["upscale", str(gray), "-o", str(out), "--model", str(tiny_checkpoint), "-q"]) == 0
    assert Image.open(out / "gray_x3.png").mode == "LA"
    jpeg = tmp_path / "gray.jpg"  # JPEG has no alpha: L
    assert main(["upscale", str(gray), "-o", str(jpeg), "--model", str(tiny_checkpoint), "-q"]) == 0
    assert Image.open(jpeg).mode == "L"


def test_help_lists_defaults_and_examples():
    upscale_help = build_parser()._subparsers._group_actions[0].choices["upscale"].format_help()
    assert "(default: auto)" in upscale_help and "(default: 36000000)" in upscale_help
    assert "examples:" in upscale_help and "espcn-hf upscale photos/" in upscale_help


def test_help_imports_neither_torch_nor_transformers():
    code = (
        "import sys\n"
        "from espcn_hf.cli import main\n"
        "for argv in (['--help'], ['upscale', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules)\n"
        "print('heavy:', heavy, file=sys.stderr)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr[-500:]


def test_bad_arguments_exit_2(images, tmp_path, capsys):
    for bad in (["--tile", "3"], ["--max-pixels", "lots"], ["--dtype", "int8"]):
        with pytest.raises(SystemExit) as info:
            main(["upscale", str(images), "-o", str(tmp_path), *bad])
        assert info.value.code == 2
    assert "--tile: takes 'auto'" in capsys.readouterr().err


def test_console_script_runs(images, tiny_checkpoint, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "espcn_hf.cli", "upscale", str(images / "img2.png"), "-o", str(tmp_path / "x.png"),
         "--model", str(tiny_checkpoint)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(48x36)" in result.stdout
    assert "Loading weights" not in result.stderr and "%|" not in result.stderr  # no weight-loading bar


def test_damaged_jpeg_is_a_warning_line(tmp_path, tiny_checkpoint, capsys):
    noise = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    out = tmp_path / "cut.png"
    assert main(["upscale", str(tmp_path / "cut.jpg"), "-o", str(out), "--model", str(tiny_checkpoint)]) == 0
    assert "warning: " in capsys.readouterr().err and out.exists()
    main(["upscale", str(tmp_path / "cut.jpg"), "-o", str(out), "--model", str(tiny_checkpoint), "-q"])
    assert capsys.readouterr().err == ""  # -q: errors only


def test_size_limits_are_per_file_errors_naming_the_file(images, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["upscale", str(images), "-o", str(out), "--model", str(tiny_checkpoint), "-q"]
    assert main([*args, "--max-output-pixels", "1000"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all("img" in line and "output limit" in line for line in err[:3])
    assert main([*args, "--max-pixels", "0", "--max-output-pixels", "0"]) == 0  # 0 = no limit


def test_outputs_get_normal_permissions(images, tiny_checkpoint, tmp_path):
    """Atomic writes must not make outputs private: a new file gets 0666 & ~umask, an overwritten one its mode."""
    previous = os.umask(0o022)
    try:
        new, kept = tmp_path / "new.png", tmp_path / "kept.png"
        kept.write_bytes(b"old")
        kept.chmod(0o640)
        for target in (new, kept):
            args = [
                "upscale",
                str(images / "img0.png"),
                "-o",
                str(target),
                "--model",
                str(tiny_checkpoint),
                "-q",
            ]
            assert main(args) == 0
    finally:
        os.umask(previous)
    assert oct(new.stat().st_mode & 0o777) == oct(0o644)
    assert oct(kept.stat().st_mode & 0o777) == oct(0o640)


def test_without_pyav_images_still_work_and_a_video_names_the_extra(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    """PyAV is the optional `video` extra: a core install (the README quick start) must still upscale images, and
    a video gets one line naming what to install (this crashed with ModuleNotFoundError)."""
    import espcn_hf.video
    from espcn_hf.cli import main

    monkeypatch.setattr(espcn_hf.video, "_have_pyav", lambda: False)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(natural_image(12, 16)).save(folder / "still.png")
    (folder / "clip.mp4").write_bytes(b"\0" * 64)
    out = tmp_path / "out"
    code = main(["upscale", str(folder), "-o", str(out), "--model", str(tiny_checkpoint), "-q"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and sorted(p.name for p in out.iterdir()) == ["still_x3.png"]
    assert len(errors) == 1 and "clip.mp4" in errors[0] and "espcn-hf[video]" in errors[0]
