"""Atomic file output: the one place where espcn-hf writes a file the user keeps.

Every output (upscaled images, videos, evaluation JSON, model cards, pictures, exported models) is written to a
temporary file in the same folder, flushed and fsync'ed, then renamed over the final path with `os.replace`. At
every instant the final path holds either the previous file or the complete new one: an interrupt (SIGINT,
SIGKILL), a full disk or an encoder error never leaves a truncated file under the final name and never destroys
an earlier good output. The temporary name starts with `.` and ends with `.partial`, so folder scans (and the
CLI's input collection) can skip it; it is short whatever the target's name (the start of the stem, a hash of the
whole name, a random part and the extension), so any name the file system takes can be written this way. A
process killed mid-write (SIGKILL, power loss) leaves at worst such a hidden leftover beside the target, never a
damaged target. The next write of the same target removes such leftovers (`remove_stale_partials`): each writer
holds a lock on its temporary file while it writes, so only files that no live process is writing are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

PARTIAL_SUFFIX = ".partial"
# Bytes of the target's stem and extension kept in a temporary name: with the hash, the random part and the
# suffix it stays under 80 bytes, far below the 255 that file systems allow for one name.
_STEM_BYTES = 24
_EXTENSION_BYTES = 16
# A temporary file that no writer holds a lock on is a leftover once it has not changed for this long: the age
# only covers the instant between creating a file and locking it. Where files cannot be locked (no fcntl, or a
# file system that refuses locks) the age alone decides, and then it must be much longer.
STALE_PARTIAL_SECONDS = 5.0
STALE_PARTIAL_SECONDS_WITHOUT_LOCKS = 3600.0

try:  # advisory locks (POSIX); elsewhere the age rule alone decides what is stale
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def is_partial_file(path: str | os.PathLike) -> bool:
    """True for the temporary files `atomic_path` creates (hidden, `.partial` suffix)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX)


def _head(text: str, limit: int) -> str:
    """The longest start of `text` whose UTF-8 encoding fits in `limit` bytes (whole characters only)."""
    return text.encode("utf-8", "surrogateescape")[:limit].decode("utf-8", "ignore")


def _temporary_name_parts(target: Path, suffix: str | None = None) -> tuple[str, str]:
    """(prefix, suffix) for `tempfile.mkstemp` in `atomic_path`: `.<start of the stem>.<hash of the name>.` and
    `<extension>.partial`, so the temporary name is short (under 80 bytes) for any target name, hidden, still
    tells which target it belongs to, and keeps the extension (`suffix`, default the target's own; a default
    extension longer than 16 bytes is left out) for writers that pick a format by it."""
    digest = hashlib.sha1(os.fsencode(target.name)).hexdigest()[:8]
    if suffix is None:
        suffix = target.suffix if len(os.fsencode(target.suffix)) <= _EXTENSION_BYTES else ""
    return f".{_head(target.stem, _STEM_BYTES)}.{digest}.", f"{suffix}{PARTIAL_SUFFIX}"


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder, so a rename inside it survives a crash (best effort: some systems cannot)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows, or a folder we may not open: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def plain_file_mode() -> int:
    """The mode a plain `open(path, "w")` gives a new file: 0666 less the umask (0644 with the usual 022)."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on a clean exit it is fsync'ed and renamed onto `target`.

    For writers that want a file name (PIL's `save`, PyAV, `torch.onnx.export`, matplotlib's `savefig`).
    `suffix` (default: the target's own) keeps extension-based format detection working. The temporary name is
    short whatever the target's (`_temporary_name_parts`), so a target name at the file system's limit works.
    On any exception the temporary file is removed and `target` is left as it was. The final file has the mode a
    plain `open()` gives (`plain_file_mode`), or that of the file it replaces, whatever mode the writer left.
    The temporary file is locked while it is written, and temporary files that killed writes of the same target
    left behind are removed first (`remove_stale_partials`).
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    prefix, tmp_suffix = _temporary_name_parts(target, suffix)
    try:
        mode = target.stat().st_mode & 0o7777  # open() on an existing file keeps its mode
    except OSError:
        mode = plain_file_mode()
    remove_stale_partials(target)
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=tmp_suffix, dir=folder)
    tmp = Path(tmp_name)
    try:  # from here on, any exception (also a SIGINT while the mode is set) removes the temporary file
        if not _lock(fd):  # the open descriptor holds the lock until the end (closed in `finally`)
            os.close(fd)
            fd = None
        yield tmp
        # The mode is set after the writer: mkstemp makes the file 0600, and a writer may replace it with a file of
        # its own (safetensors' `save_file` writes a 0600 temporary file and renames it over the path it is given).
        with contextlib.suppress(OSError):
            os.chmod(tmp, mode)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        if fd is not None:
            os.close(fd)
    fsync_dir(folder)


def _lock(fd: int) -> bool:
    """Take an exclusive advisory lock on the open file `fd` (held until it is closed, or the process ends
    however it ends); False where files cannot be locked."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _is_locked(path: Path) -> bool | None:
    """True when a process holds `_lock` on `path`, False when none does, None when it cannot be told."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # the file system refuses locks
        return None
    finally:
        os.close(fd)  # also releases the shared lock taken just now
    return False


def _partial_name_test(target: Path) -> Callable[[str], bool]:
    """A test of file names: True for the temporary files `atomic_path` makes for `target` (`is_partial_file`,
    and named with the prefix of this target, `_temporary_name_parts`), or made by earlier versions, whose names
    were `.<stem>.<8 random characters><extension>.partial`."""
    prefix, earlier_start = _temporary_name_parts(target)[0], f".{target.stem}."
    earlier = re.compile(
        rf"{re.escape(earlier_start)}[a-z0-9_]{{8}}{re.escape(target.suffix)}{re.escape(PARTIAL_SUFFIX)}"
    )

    def test(name: str) -> bool:  # cheap string tests first: a folder may hold many thousand files
        if name.startswith(prefix):
            return is_partial_file(name)
        return (
            name.startswith(earlier_start) and earlier.fullmatch(name) is not None and is_partial_file(name)
        )

    return test


def remove_stale_partials(target: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that earlier writes of `target` left beside it (a process killed mid-write:
    SIGKILL, power loss) and return them. `atomic_path` calls it before each write, so a leftover lasts only
    until the next write of its target.

    A file is removed only when all of this holds:

    - it is ours and belongs to `target`: `is_partial_file`, and named as `atomic_path` names the temporary
      files of this very target (the start of its stem and a hash of its whole name; earlier versions' names
      too). Temporary files of other targets and every other file in the folder are never touched;
    - no live writer is using it: every writer holds an exclusive lock (`flock`) on its temporary file until
      it is renamed, and the system releases the lock when the process ends, however it ends. A locked file
      belongs to a write in progress (in this process or another) and is kept;
    - it has not been modified for `STALE_PARTIAL_SECONDS` (the instant between creating a file and locking
      it). Where locks cannot be told (no `fcntl`, a file system without locks) only files unmodified for
      `STALE_PARTIAL_SECONDS_WITHOUT_LOCKS` are removed.

    A writer that replaces its temporary file with a file of its own (safetensors' `save_file` renames over
    the path it is given) holds no lock on the new file; a concurrent write of the same target may then remove
    it, and that write fails with an error (the target itself is never damaged). Files that cannot be examined
    or removed are left as they are.
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    removed = []
    ours = _partial_name_test(target)
    try:  # one listing of the folder per write (16 ms for 10,000 files on the 2-core CPU)
        with os.scandir(folder) as entries:
            candidates = [Path(entry.path) for entry in entries if ours(entry.name)]
    except OSError:
        return removed
    now = time.time()
    for path in candidates:
        try:
            info = path.lstat()
        except OSError:
            continue
        if not path.is_file() or path.is_symlink():
            continue
        locked = _is_locked(path)
        age = now - info.st_mtime
        if locked or age < (STALE_PARTIAL_SECONDS_WITHOUT_LOCKS if locked is None else STALE_PARTIAL_SECONDS):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move the complete folder `tmp` onto `final` (for outputs that are folders: checkpoints, upload folders).

    The files in `tmp` are fsync'ed first; an existing `final` is moved aside to `<final>.old` and removed only
    after the rename succeeded, so `final` is always either the old folder or the complete new one (a crash
    between the two renames leaves `<final>.old` and no `<final>`: `recover_dir`, run by every call and at the
    trainer's start, puts it back). Every file and folder in it gets the mode a plain `open()` / `mkdir()` gives
    (0666 / 0777 less the umask), whatever its writer left: `mkdtemp`
    makes private folders, and safetensors' `save_file` (so `save_pretrained`) writes 0600 weights.
    """
    tmp, final = Path(tmp), Path(final)
    file_mode = plain_file_mode()
    dir_mode = 0o777 & ~current_umask()
    for root, _, files in os.walk(tmp):  # symlinked folders are listed, never entered
        with contextlib.suppress(OSError):  # a file system without modes still gets the folder
            os.chmod(root, dir_mode)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):  # never change the mode of a file outside the folder
                with contextlib.suppress(OSError):
                    os.chmod(path, file_mode)
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())
    recover_dir(final)
    old = final.with_name(final.name + ".old")
    _remove(old)
    if final.exists() or final.is_symlink():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    _remove(old)
    return final


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def recover_dir(final: str | os.PathLike) -> bool:
    """Put back a folder that a kill between the two renames of `replace_dir` left as `<final>.old` with no
    `<final>` (the old complete folder; the new one, `*.tmp`, was never complete). True when one was put back."""
    final = Path(final)
    old = final.with_name(final.name + ".old")
    if old.is_dir() and not (final.exists() or final.is_symlink()):
        os.replace(old, final)
        fsync_dir(final.parent)
        return True
    return False


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `target` atomically (see the module docstring)."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `target` atomically (see the module docstring)."""
    return atomic_write_bytes(target, text.encode(encoding))


def atomic_save(target: str | os.PathLike, save: Callable[[Path], object], suffix: str | None = None) -> Path:
    """Call `save(tmp_path)` and move the result onto `target` atomically, e.g.
    `atomic_save("out.png", lambda p: image.save(p, format="PNG"))`."""
    with atomic_path(target, suffix=suffix) as tmp:
        save(tmp)
    return Path(target)


__all__ = [
    "PARTIAL_SUFFIX",
    "atomic_path",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "current_umask",
    "fsync_dir",
    "is_partial_file",
    "plain_file_mode",
    "remove_stale_partials",
    "replace_dir",
]
