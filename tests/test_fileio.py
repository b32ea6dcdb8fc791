"""espcn_hf.fileio: the final path holds the old file or the complete new one, never a partial file."""

from __future__ import annotations

import os
import stat
import tempfile
import time
from pathlib import Path

import pytest

from espcn_hf import fileio as fileio_module
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


# fileio alone in a child process (it needs nothing but the standard library; the package would import torch)
_LOAD_FILEIO = (
    "import importlib.util, sys\n"
    f"spec = importlib.util.spec_from_file_location('fileio', {fileio_module.__file__!r})\n"
    "fileio = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(fileio)\n"
)


def _make_leftover(target: Path, age: float, name: str | None = None) -> Path:
    """A temporary file as a killed write of `target` leaves it: named by `atomic_path`, unlocked, `age` s
    old."""
    from espcn_hf.fileio import _temporary_name_parts

    prefix, suffix = _temporary_name_parts(target)
    leftover = target.parent / (name or f"{prefix}k1ll3d_x{suffix}")
    leftover.write_bytes(b"half an output")
    stamp = time.time() - age
    os.utime(leftover, (stamp, stamp))
    return leftover


def test_leftovers_of_a_killed_write_are_removed_at_the_next_write_of_that_target_only(tmp_path):
    """A SIGKILL mid-write leaves a hidden .partial file (up to 356 MB beside one video); they were never
    removed (issue "No wrong answers, no lost batches"). The next write of the same output removes them, and
    nothing else."""
    target, other = tmp_path / "clip_x3.mp4", tmp_path / "clip_x3.mkv"
    ours = _make_leftover(target, age=60)
    earlier_name = _make_leftover(target, age=60, name=".clip_x3.a1b2c3d4.mp4.partial")  # before short names
    of_other_target = _make_leftover(other, age=60)
    of_a_longer_name = _make_leftover(tmp_path / "clip_x3_v2.mp4", age=60)
    fresh = _make_leftover(target, age=0, name=ours.name.replace("k1ll3d_x", "fr3sh000"))  # being created now
    unrelated = tmp_path / ".clip_x3.mp4.notes"  # hidden, but not a temporary file of ours
    unrelated.write_text("keep")
    atomic_write_text(target, "new output")
    assert target.read_text() == "new output"
    assert not ours.exists() and not earlier_name.exists()
    assert of_other_target.exists() and of_a_longer_name.exists() and fresh.exists() and unrelated.exists()


def test_a_temporary_file_a_live_writer_holds_is_never_removed(tmp_path):
    """However old its modification time, the temporary file of a write in progress is kept: the writer holds a
    lock on it, seen from this process and from another one."""
    import subprocess
    import sys

    from espcn_hf.fileio import remove_stale_partials

    target = tmp_path / "big.png"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"being written")
        os.utime(tmp, (time.time() - 7200, time.time() - 7200))  # a slow writer: no write for two hours
        assert remove_stale_partials(target) == []
        script = f"{_LOAD_FILEIO}print(len(fileio.remove_stale_partials(sys.argv[1])))"
        other = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True)
        assert other.stdout.strip() == "0", other.stderr
        assert tmp.exists()
    assert target.read_bytes() == b"being written" and _leftovers(tmp_path) == []


def test_a_write_killed_with_sigkill_leaves_a_leftover_that_the_rerun_removes(tmp_path, monkeypatch):
    import signal
    import subprocess
    import sys

    import espcn_hf.fileio as fileio

    target = tmp_path / "out.json"
    script = (
        f"{_LOAD_FILEIO}import time\n"
        "with fileio.atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half'); print('writing', flush=True); time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "writing"
        assert fileio.remove_stale_partials(target) == []  # alive: locked
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    (leftover,) = _leftovers(tmp_path)
    monkeypatch.setattr(fileio, "STALE_PARTIAL_SECONDS", 0.0)  # the rerun comes at once, not 5 s later
    atomic_write_text(target, "complete")
    assert target.read_text() == "complete" and not leftover.exists() and _leftovers(tmp_path) == []


def test_without_locks_only_old_leftovers_are_removed(tmp_path, monkeypatch):
    import espcn_hf.fileio as fileio

    monkeypatch.setattr(fileio, "fcntl", None)
    target = tmp_path / "out.png"
    recent = _make_leftover(target, age=600)
    old_name = recent.name.replace("k1ll3d_x", "0ld00000")
    old = _make_leftover(target, age=2 * fileio.STALE_PARTIAL_SECONDS_WITHOUT_LOCKS, name=old_name)
    atomic_write_text(target, "x")
    assert recent.exists() and not old.exists()
