"""espcn_hf.fileio: the final path holds the old file or the complete new one, never a partial file."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from espcn_hf.fileio import (
    atomic_path,
    atomic_save,
    atomic_write_text,
    is_partial_file,
    plain_file_mode,
    replace_dir,
)


def _leftovers(folder):
    return [p for p in folder.iterdir() if is_partial_file(p)]


def test_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_failed_write_keeps_the_previous_file(tmp_path, error):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous complete file")
    with pytest.raises(type(error)), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise error
    assert target.read_bytes() == b"previous complete file"
    assert _leftovers(tmp_path) == []


def test_temporary_keeps_the_extension_and_is_hidden(tmp_path):
    seen = []
    atomic_save(tmp_path / "clip.mp4", lambda p: (seen.append(p), p.write_bytes(b"x")))
    assert seen[0].name.startswith(".") and ".mp4" in seen[0].name and is_partial_file(seen[0])


def test_new_files_get_the_usual_mode_and_replacements_keep_theirs(tmp_path):
    fresh = tmp_path / "fresh.txt"
    atomic_write_text(fresh, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
    kept = tmp_path / "kept.txt"
    kept.write_text("x")
    kept.chmod(0o640)
    atomic_write_text(kept, "y")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640


def test_interrupt_while_the_temporary_file_is_prepared_leaves_nothing(tmp_path, monkeypatch):
    """A SIGINT right after the temporary file appears (while its mode is set) used to leave it behind: the
    fault test sends its signal exactly then."""
    import espcn_hf.fileio as fileio

    def interrupted(path, mode):
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "chmod", interrupted)
    with pytest.raises(KeyboardInterrupt), fileio.atomic_path(tmp_path / "out.png"):
        pass
    assert list(tmp_path.iterdir()) == []


def _private_writer(path):
    """Writes like safetensors' `save_file`: a 0600 temporary file of its own, renamed over the path it is given."""
    fd, own = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"weights")
    os.replace(own, path)


@pytest.fixture
def umask_027():
    """An unusual umask, so that a hard-coded 0644 would not pass."""
    previous = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(previous)


def test_a_writer_that_replaces_the_temporary_file_still_gets_the_usual_mode(tmp_path, umask_027):
    target = tmp_path / "model.safetensors"
    atomic_save(target, _private_writer)
    assert target.read_bytes() == b"weights"
    assert stat.S_IMODE(target.stat().st_mode) == plain_file_mode() == 0o640
    target.chmod(0o604)  # a replaced file keeps its mode, as with open()
    atomic_save(target, _private_writer)
    assert stat.S_IMODE(target.stat().st_mode) == 0o604
    assert _leftovers(tmp_path) == []


def test_a_real_safetensors_save_gets_the_usual_mode(tmp_path, umask_027):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    target = tmp_path / "model.safetensors"
    atomic_save(target, lambda p: save_file({"w": torch.zeros(2)}, str(p)))
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_folder_swapped_in_gets_the_modes_of_open_and_mkdir(tmp_path, umask_027):
    """Upload folders and checkpoints: whatever mode the writers left (mkdtemp's 0700 folder, 0600 weights), the
    final folder is an ordinary one. A symlink's target outside the folder is left alone."""
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    outside.chmod(0o600)
    staging = Path(tempfile.mkdtemp(dir=tmp_path))
    (staging / "onnx").mkdir(mode=0o700)
    _private_writer(staging / "model.safetensors")
    _private_writer(staging / "onnx" / "model.onnx")
    (staging / "link.txt").symlink_to(outside)
    final = replace_dir(staging, tmp_path / "upload")
    modes = {
        p.relative_to(final).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in [final, *final.rglob("*")]
    }
    link = modes.pop("link.txt")
    assert modes == {".": 0o750, "onnx": 0o750, "model.safetensors": 0o640, "onnx/model.onnx": 0o640}
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600 and (final / "link.txt").is_symlink(), link


@pytest.mark.parametrize("stem", ["a" * 246, "é" * 123])
def test_a_name_at_the_file_system_limit_can_be_written(tmp_path, stem):
    """A legal 250-byte output name failed (issue "No wrong answers, no lost batches"): the temporary name
    (`.<name>.<random>.png.partial`) was longer than the 255 bytes a file system allows for a name."""
    target = tmp_path / f"{stem}.png"
    assert len(os.fsencode(target.name)) == 250
    seen = []
    atomic_save(target, lambda p: (seen.append(p), p.write_bytes(b"image")))
    assert target.read_bytes() == b"image" and _leftovers(tmp_path) == []
    name = seen[0].name
    assert is_partial_file(seen[0]) and name.endswith(".png.partial") and len(os.fsencode(name)) < 80
    assert name.startswith("." + stem[:8])  # a leftover still tells which output it belongs to


def test_temporary_names_of_different_targets_differ_even_with_a_common_start(tmp_path):
    names = []
    for i in range(2):
        atomic_save(tmp_path / f"{'x' * 60}{i}.png", lambda p: (names.append(p.name), p.write_bytes(b"x")))
    prefixes = [name.rsplit(".", 3)[0] for name in names]  # without the random part and the suffix
    assert prefixes[0] != prefixes[1]
