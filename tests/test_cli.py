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
    assert code == 2 and not out.exists()  # a usage error, as the help says
    assert "x2 model, but --scale is 4" in capsys.readouterr().err
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
    """`espcn-hf --help` (the front door, espcn_hf_cli) answers without importing torch, transformers or even
    espcn_hf, which registers with transformers at import; so do --version and a mistyped command."""
    code = (
        "import sys\n"
        "from espcn_hf_cli import main\n"
        "for argv in (['--help'], ['--version'], ['upscal'], []):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'numpy', 'espcn_hf') if m in sys.modules)\n"
        "print('heavy:', heavy, file=sys.stderr)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr[-500:]
    assert "upscale" in result.stdout and "export" in result.stdout


@pytest.mark.slow
def test_import_registers_with_transformers_for_packaged_folders():
    """`import espcn_hf` alone makes AutoModel and pipeline("image-super-resolution") load a packaged folder
    without trust_remote_code (they asked "run the custom code? [y/N]" when registration waited for a name)."""
    code = (
        "import espcn_hf\n"
        "from transformers import AutoModel, pipeline\n"
        "from espcn_hf.pretrained import packaged_weights\n"
        "folder = packaged_weights(3)\n"
        "model = AutoModel.from_pretrained(folder)\n"
        "sr = pipeline('image-super-resolution', model=str(folder))\n"
        "from PIL import Image\n"
        "out = sr(Image.new('RGB', (8, 6)))\n"
        "print(type(model).__name__, out.size)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-1500:]
    assert "ESPCNForImageSuperResolution (24, 18)" in result.stdout


def test_bad_arguments_exit_2(images, tmp_path, capsys):
    for bad in (["--tile", "3"], ["--max-pixels", "lots"], ["--dtype", "int8"]):
        with pytest.raises(SystemExit) as info:
            main(["upscale", str(images), "-o", str(tmp_path), *bad])
        assert info.value.code == 2
    assert "--tile: takes 'auto'" in capsys.readouterr().err


@pytest.mark.slow
def test_console_script_runs(images, tiny_checkpoint, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "espcn_hf.cli", "upscale", str(images / "img2.png"), "-o", str(tmp_path / "x.png"),
         "--model", str(tiny_checkpoint)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(48x36)" in result.stdout
    assert "Loading weights" not in result.stderr and "%|" not in result.stderr  # no weight-loading bar


def test_a_cut_jpeg_is_an_error_line_and_a_lossy_output_a_warning_line(tmp_path, tiny_checkpoint, capsys):
    """A JPEG cut in half (an end marker appended) was upscaled with a grey lower half and only a warning: the
    damage is certain, so it is one error line. What an output format drops (GIF: partial alpha, colours) is one
    warning line naming the output, also for the CLI (it was a raw Python warning); -q keeps only errors."""
    noise = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    out = tmp_path / "cut.png"
    assert main(["upscale", str(tmp_path / "cut.jpg"), "-o", str(out), "--model", str(tiny_checkpoint)]) == 1
    err = capsys.readouterr().err
    assert "error: " in err and "cut.jpg" in err and not out.exists()
    Image.fromarray(noise).convert("RGBA").save(tmp_path / "rgba.png")
    gif = tmp_path / "out.gif"
    assert main(["upscale", str(tmp_path / "rgba.png"), "-o", str(gif), "--model", str(tiny_checkpoint)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert warnings and all(line.startswith(f"warning: {gif}: GIF") for line in warnings)
    assert (
        main(["upscale", str(tmp_path / "rgba.png"), "-o", str(gif), "--model", str(tiny_checkpoint), "-q"])
        == 0
    )
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


def test_without_pyav_images_still_work_and_a_video_names_the_extra(
    tmp_path, tiny_checkpoint, monkeypatch, capsys
):
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


def _run(*args, model):
    return main(["upscale", *map(str, args), "--model", str(model), "-q"])


def test_bad_device_and_a_model_file_are_one_line(images, tiny_checkpoint, tmp_path, capsys):
    """A device torch does not know is a usage error (exit 2) in one line; a --model that is a file is one
    line too (both ended in tracebacks)."""
    out = tmp_path / "o.png"
    assert _run(images / "img0.png", "-o", out, "--device", "tpu", model=tiny_checkpoint) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device 'tpu': not a device torch knows") and err.count("\n") == 1
    weights = tiny_checkpoint / "model.safetensors"
    assert main(["upscale", str(images / "img0.png"), "-o", str(out), "--model", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "is a file" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_same_name_in_two_sub_folders_mirrors_the_folders(tmp_path, tiny_checkpoint, capsys):
    """Output names are a function of the path relative to what was named, so --skip-existing is always right
    (both outputs once held b/x.png's result)."""
    folder = tmp_path / "in"
    for sub, seed in (("b", 1), ("a", 2)):
        (folder / sub).mkdir(parents=True)
        Image.fromarray(natural_image(12, 16, seed=seed)).save(folder / sub / "x.png")
    out = tmp_path / "out"
    (folder / "a" / "x.png").rename(tmp_path / "later.png")  # b/x.png first, a/x.png added later
    assert _run(folder, "-o", out, model=tiny_checkpoint) == 0
    (tmp_path / "later.png").rename(folder / "a" / "x.png")
    assert _run(folder, "-o", out, "--skip-existing", model=tiny_checkpoint) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["a/x_x3.png", "b/x_x3.png"]
    a, b = (np.asarray(Image.open(out / s / "x_x3.png")) for s in ("a", "b"))
    assert not np.array_equal(a, b)
    # two files named directly that would share an output name are a usage error, before any work
    code = main(["upscale", str(folder / "a" / "x.png"), str(folder / "b" / "x.png"), "-o", str(tmp_path / "o2"),
                 "--model", str(tiny_checkpoint)])  # fmt: skip
    assert code == 2 and "would both be written to" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_an_output_folder_inside_the_input_folder_is_never_an_input(images, tiny_checkpoint):
    out = images / "out"
    for _ in range(2):  # the re-run used to upscale p_x3.png into p_x3_x3.png, and exit 1
        assert _run(images, "-o", out, model=tiny_checkpoint) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img0_x3.png", "img1_x3.png", "img2_x3.png"]


@pytest.mark.parametrize(
    "name, message",
    [("out.mp4", "a video file name, but the input is an image"), ("out.psd", "Pillow cannot write .psd")],
)
def test_an_output_name_that_cannot_hold_the_result_is_a_usage_error(images, tiny_checkpoint, tmp_path, capsys,
                                                                      name, message):  # fmt: skip
    target = tmp_path / name
    assert _run(images / "img0.png", "-o", target, model=tiny_checkpoint) == 2
    assert message in capsys.readouterr().err and not target.exists()


def test_damaged_exif_is_a_warning_and_the_batch_goes_on(images, tiny_checkpoint, tmp_path, capsys):
    """A JPEG whose EXIF byte-order mark is damaged (MM -> M2) is upscaled as stored, with one warning; it used to
    raise SyntaxError in the image processor and stop the batch."""
    import io

    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the orientation cannot be read once the EXIF block is damaged
    buffer = io.BytesIO()
    Image.fromarray(natural_image(12, 16)).save(buffer, "JPEG", exif=exif.tobytes())
    data = buffer.getvalue()
    at = data.index(b"Exif\0\0") + 6
    (images / "bad_exif.jpg").write_bytes(
        data[:at] + (b"M2" if data[at : at + 2] == b"MM" else b"I2") + data[at + 2 :]
    )
    out = tmp_path / "out"
    assert main(["upscale", str(images), "-o", str(out), "--model", str(tiny_checkpoint)]) == 0
    err = capsys.readouterr().err
    assert "bad_exif.jpg: damaged EXIF metadata ignored" in err and "Traceback" not in err
    assert Image.open(out / "bad_exif_x3.png").size == (48, 36)
    assert len(list(out.glob("img*_x3.png"))) == 3


def test_any_failure_of_one_file_is_its_line_and_the_batch_goes_on(images, tiny_checkpoint, tmp_path, capsys,
                                                                   monkeypatch):  # fmt: skip
    import espcn_hf.inference

    real = espcn_hf.inference.upscale

    def flaky(source, *args, **kwargs):
        if "img1" in str(source):
            raise KeyError("something nobody expected")
        return real(source, *args, **kwargs)

    monkeypatch.setattr(espcn_hf.inference, "upscale", flaky)
    out = tmp_path / "out"
    assert _run(images, "-o", out, model=tiny_checkpoint) == 1
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("error: ") and "img1.png: KeyError" in line for line in err)
    assert sorted(p.name for p in out.iterdir()) == ["img0_x3.png", "img2_x3.png"]


def test_dangling_and_looping_links_in_a_folder_are_reported(images, tiny_checkpoint, tmp_path, capsys):
    """Skipped silently with exit 0 before; now one line each and exit 1 (the other files are done)."""
    (images / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (images / "sub").mkdir()
    (images / "sub" / "loop").symlink_to(images, target_is_directory=True)
    out = tmp_path / "out"
    assert _run(images, "-o", out, model=tiny_checkpoint) == 1
    err = capsys.readouterr().err
    assert "gone.png: a link to nothing" in err and "a loop" in err
    assert sorted(p.name for p in out.iterdir()) == ["img0_x3.png", "img1_x3.png", "img2_x3.png"]


def test_a_file_name_with_a_newline_cannot_forge_a_line(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a\nerror: forged.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert _run(folder, "-o", tmp_path / "out", model=tiny_checkpoint) == 1
    err = capsys.readouterr().err.splitlines()
    assert not any(line.startswith("error: forged") for line in err)
    assert any("a\\nerror: forged.png" in line for line in err)


def test_export_without_the_onnx_extra_is_one_line(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    assert main(["export", str(tiny_checkpoint), "-o", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert err == "error: onnx is not installed: pip install 'espcn-hf[onnx]'\n"
