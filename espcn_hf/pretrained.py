"""Where the pretrained models live: Hub repo ids and the checkpoints bundled in this repository."""

from __future__ import annotations

import os
from pathlib import Path

# Hub repositories the publishing script pushes to and the Space loads from (override with ESPCN_HF_REPO_X{r}).
HUB_REPO_IDS = {2: "espcn-hf/espcn-x2", 3: "espcn-hf/espcn-x3", 4: "espcn-hf/espcn-x4"}
PAPER_HUB_REPO_ID = "espcn-hf/espcn-paper-x3"

# `checkpoints/` next to the package in a source checkout; ESPCN_HF_CHECKPOINTS points elsewhere.
CHECKPOINT_DIR = Path(
    os.environ.get("ESPCN_HF_CHECKPOINTS", Path(__file__).resolve().parents[1] / "checkpoints")
)
SAMPLE_DIR = Path(__file__).resolve().parent / "assets"


def bundled_checkpoint(scale: int, preset: str = "espcn") -> str:
    """Path of the bundled checkpoint for `scale` (a folder for from_pretrained), or its Hub repo id if this
    installation has no bundled weights."""
    folder = CHECKPOINT_DIR / (f"espcn-x{scale}" if preset == "espcn" else f"espcn-paper-x{scale}")
    if (folder / "config.json").is_file():
        return str(folder)
    hub = HUB_REPO_IDS.get(scale) if preset == "espcn" else PAPER_HUB_REPO_ID
    return os.environ.get(f"ESPCN_HF_REPO_X{scale}", hub or str(folder))


def sample_images() -> list[Path]:
    """The small sample images shipped with the package (made for this project, no third-party content)."""
    return sorted(p for p in SAMPLE_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg"))
