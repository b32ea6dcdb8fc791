"""Fault injection for the CLI: kill -9 and SIGINT in the middle of a batch, a full disk, unwritable targets.

The guarantee under test (espcn_hf.fileio, espcn_hf.cli): at every instant each final output path holds either
its previous file or a complete new image, never a truncated one; a failed write is one error line, the rest of
the batch is still done, and the exit status is 1.
"""

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

from espcn_hf.cli import main
from espcn_hf.fileio import is_partial_file


def _noise(height: int, width: int, seed: int) -> Image.Image:
    # noise: PNG cannot compress it, so writing an output takes long enough to be interrupted
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _old_output(path: Path, seed: int) -> bytes:
    _noise(20, 30, seed + 100).save(path)
    return path.read_bytes()


def _complete(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError):
        return False
    return True


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "espcn_hf.cli", "upscale", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO_ROOT,
    )


def _wait_for_writing(folder: Path, process: subprocess.Popen, old: dict[str, bytes], timeout: float = 90):
    """Return once an output is being (or has been) written: a .partial file or a changed output exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for path in folder.iterdir() if folder.exists() else ():
            if is_partial_file(path) or (path.name in old and path.read_bytes() != old[path.name]):
                return
            if path.name not in old and not is_partial_file(path):
                return
        time.sleep(0.005)


def test_kill_9_during_a_batch_never_leaves_an_incomplete_output(tmp_path, tiny_checkpoint):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    for i in range(8):
        _noise(200, 300, i).save(inputs / f"img{i}.png")
    rng = random.Random(0)
    killed = 0
    for round_ in range(2):  # two kills at random moments of the writing phase
        old = {f"img{i}_x3.png": _old_output(out / f"img{i}_x3.png", 10 * round_ + i) for i in range(8)}
        process = _cli(str(inputs), "-o", str(out), "--model", str(tiny_checkpoint), "-q")
        _wait_for_writing(out, process, old)
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        killed += process.wait(timeout=30) == -signal.SIGKILL
        for path in out.iterdir():
            if is_partial_file(path):  # a hidden leftover that no reader takes for an output
                continue
            assert _complete(path), f"{path.name} is incomplete after kill -9"
            if path.read_bytes() != old[path.name]:
                assert Image.open(path).size == (900, 600)
    assert killed, "the batch always finished before the kill: nothing was tested"


def test_sigint_leaves_no_truncated_file(tmp_path, tiny_checkpoint):
    """Issue 10 item 1: SIGINT as soon as the output is being written used to leave a truncated PNG."""
    source, target = tmp_path / "noise.png", tmp_path / "big.png"
    _noise(300, 400, 1).save(source)
    process = _cli(str(source), "-o", str(target), "--model", str(tiny_checkpoint), "-q")
    _wait_for_writing(tmp_path, process, {"noise.png": source.read_bytes()})
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=60)
    assert code in (0, 130), process.stderr.read().decode()
    assert not target.exists() or _complete(target)
    assert not [p for p in tmp_path.iterdir() if is_partial_file(p)]  # cleaned up on the way out
    if code == 130:
        assert "interrupted" in process.stderr.read().decode()


def test_full_disk_keeps_the_old_output_and_the_batch_goes_on(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    for i in range(3):
        _noise(12, 16, i).save(inputs / f"img{i}.png")
    old = {i: _old_output(out / f"img{i}_x3.png", i) for i in range(3)}
    real_save = Image.Image.save

    def save_on_a_full_disk(image, fp, *args, **kwargs):
        if "img1_x3" in str(fp):  # the disk fills up half-way through this file
            Path(fp).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 300)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(image, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_on_a_full_disk)
    assert main(["upscale", str(inputs), "-o", str(out), "--model", str(tiny_checkpoint), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and "img1_x3.png" in err[0] and "No space left on device" in err[0]
    assert err[1] == "1 input(s) failed, 2 written"
    assert (out / "img1_x3.png").read_bytes() == old[1]  # the earlier good output survives
    for i in (0, 2):
        assert Image.open(out / f"img{i}_x3.png").size == (48, 36)
    assert not [p for p in out.iterdir() if is_partial_file(p)]


def test_an_unwritable_target_is_one_error_line(tmp_path, tiny_checkpoint, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for i in range(3):
        _noise(12, 16, i).save(inputs / f"img{i}.png")
    (out / "img0_x3.png").mkdir(parents=True)  # a folder where the output should go
    assert main(["upscale", str(inputs), "-o", str(out), "--model", str(tiny_checkpoint), "-q"]) == 1
    err = capsys.readouterr().err
    assert "img0_x3.png: cannot write" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["img0_x3.png", "img1_x3.png", "img2_x3.png"]
    assert (out / "img0_x3.png").is_dir() and _complete(out / "img2_x3.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_a_read_only_output_folder(tmp_path, tiny_checkpoint, capsys):
    source, out = tmp_path / "a.png", tmp_path / "ro"
    _noise(12, 16, 0).save(source)
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["upscale", str(source), "-o", str(out), "--model", str(tiny_checkpoint), "-q"]) == 1
        assert "cannot write" in capsys.readouterr().err
    finally:
        out.chmod(0o755)


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB tmpfs (needs root and mount rights: skipped elsewhere; the injected ENOSPC test runs always)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_a_really_full_disk(small_disk, tmp_path, tiny_checkpoint, capsys):
    source = tmp_path / "noise.png"
    _noise(300, 400, 3).save(source)  # output 1200x900 noise: about 3 MB as PNG, more than the disk holds
    target = small_disk / "big.png"
    old = _old_output(target, 3)
    assert main(["upscale", str(source), "-o", str(target), "--model", str(tiny_checkpoint), "-q"]) == 1
    err = capsys.readouterr().err
    assert "big.png: cannot write" in err and "No space left on device" in err and "Traceback" not in err
    assert target.read_bytes() == old
    assert sorted(p.name for p in small_disk.iterdir()) == ["big.png"]  # no leftover filling the disk


def test_damaged_inputs_are_one_line_each_and_never_an_output(tmp_path, tiny_checkpoint, capsys):
    """Issue "No wrong answers, no lost batches": a PNG whose data holds half its rows and a JPEG cut at 70%
    with an end marker appended were upscaled (black or grey lower part, exit status 0); a 250-byte output name
    failed. Now each damaged input is one error line and no output, and the rest of the batch is written."""
    import struct
    import zlib

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\0" + bytes(range(60)) * 3) * 30  # 30 of the 60 rows the header announces
    header = struct.pack(">IIBBBBB", 60, 60, 8, 2, 0, 0, 0)
    (inputs / "half.png").write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    _noise(40, 60, 1).save(inputs / "noise.jpg", quality=90)
    data = (inputs / "noise.jpg").read_bytes()
    (inputs / "noise.jpg").write_bytes(data[: int(len(data) * 0.7)] + b"\xff\xd9")
    _noise(12, 16, 2).save(inputs / f"{'n' * 240}.png")  # its output name is 245 bytes long
    assert main(["upscale", str(inputs), "-o", str(out), "--model", str(tiny_checkpoint), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and err[-1] == "2 input(s) failed, 1 written", err
    assert any("half.png" in line and "holds 30 of the 60 rows" in line for line in err)
    assert any("noise.jpg" in line and "JPEG data is truncated" in line for line in err)
    assert [p.name for p in out.iterdir()] == [f"{'n' * 240}_x3.png"]
