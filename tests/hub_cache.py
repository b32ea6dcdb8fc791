"""Lay out a folder as a Hugging Face Hub cache snapshot, for offline rehearsals of Hub loading.

    snapshot = snapshot_repo(tmp_path / "hub", "espcn-hf/espcn-x3", upload_folder)
    env = offline_env(tmp_path / "hub")   # HF_HUB_CACHE=..., HF_HUB_OFFLINE=1, for a subprocess
    # from_pretrained("espcn-hf/espcn-x3") in that environment now reads the snapshot, as it would after a
    # download from the Hub.

The layout is huggingface_hub's own (https://huggingface.co/docs/huggingface_hub/guides/manage-cache):

    HF_HUB_CACHE/models--OWNER--NAME/
        blobs/<etag>                      file contents (sha256 for LFS files such as weights, git sha1 otherwise)
        refs/main                         the commit hash of the snapshot
        snapshots/<commit>/<file>         relative symlinks into blobs/

Used by tests/test_hub_cache.py (models) and the Space rehearsal (H4).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

# Files the Hub stores through Git LFS (its default .gitattributes): their etag is the sha256 of the content.
LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".onnx",
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
    ".parquet",
    ".arrow",
    ".zip",
)


def _etag(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix.lower() in LFS_SUFFIXES:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


def snapshot_repo(
    cache_dir: str | os.PathLike,
    repo_id: str,
    folder: str | os.PathLike,
    repo_type: str = "model",
    revision: str = "main",
) -> Path:
    """Copy every file under `folder` into the Hub cache `cache_dir` as the `revision` snapshot of `repo_id`;
    returns the snapshot folder. The commit hash is derived from the content, so the same files give the same
    snapshot."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"{folder}: no files to lay out")
    repo_dir = Path(cache_dir) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    etags = {p.relative_to(folder).as_posix(): _etag(p) for p in files}
    commit = hashlib.sha1("".join(f"{name}\0{tag}\n" for name, tag in etags.items()).encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    for path in files:
        name = path.relative_to(folder).as_posix()
        blob = repo_dir / "blobs" / etags[name]
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)
    return snapshot


def offline_env(cache_dir: str | os.PathLike, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a subprocess that may only read the Hub cache `cache_dir` (offline mode)."""
    env = dict(os.environ if base is None else base)
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_DATASETS_CACHE"):
        env.pop(key, None)
    env.update(
        HF_HUB_CACHE=str(cache_dir),
        HF_HUB_OFFLINE="1",
        HF_HOME=str(Path(cache_dir).parent / "hf_home"),  # modules cache for trust_remote_code, no token
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    return env
