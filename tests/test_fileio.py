"""espcn_hf.fileio: the final path holds the old file or the complete new one, never a partial file."""

from __future__ import annotations

import os
import stat

import pytest

from espcn_hf.fileio import atomic_path, atomic_save, atomic_write_text, is_partial_file


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
