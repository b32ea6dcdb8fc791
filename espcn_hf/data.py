"""Training and evaluation data: `DataGenerator`, the map-style dataset of aligned LR/HR pairs.

Protocol (as in SRCNN/ESPCN/VDSR): every HR image is mod-cropped to a multiple of the scale `r`, and its LR
image is `bicubic_degrade(HR)` of the WHOLE image (MATLAB bicubic, rounded to uint8 levels). A training pair
is an aligned crop of both: LR patch `p x p` at `(y, x)` and HR patch `rp x rp` at `(r*y, r*x)`, with the same
random flip / 90-degree rotation applied to both. (Degrading each HR patch on its own would differ near the
patch border.)

Caching. Each HR image is decoded once into a uint8 numpy array (H, W, 3) and its LR once; both stay in memory
for the life of the dataset. Cost: `sum(H*W*3) * (1 + 1/r**2)` bytes: T91 + BSD200 (291 images) at x3 is
120 MB (108 MB HR + 12 MB LR, measured; start-up 1.5 s on 2 CPU cores, see
`benchmarks/data_throughput.md`). DataLoader workers started with `fork` share these pages (nothing writes to
them); with `spawn` each worker gets a copy. DIV2K train HR (800 images of about 2040x1356) needs about 7.4 GB
at x3 (8.3 GB at x2) and several minutes to decode; use `max_images` on small machines.

Determinism. The crop, flip and rotation of item `i` are a pure function of `(seed, epoch, i)`; `set_epoch`
writes the epoch into a shared-memory tensor, so it reaches DataLoader workers, persistent ones included (call
it before iterating the loader), and every DDP rank draws the same patch for the same index.

Bad data is dropped while loading, never mid-epoch: files without an image extension (e.g. `SOURCE.txt`),
unreadable/corrupt/empty files, and images too small for one patch (train mode: mod-cropped HR smaller than `r
* patch_size` on a side; eval mode: smaller than `2 * r + 11`, the least size that leaves an 11x11 SSIM window
after the `r`-pixel border crop). The counts are logged (logger `espcn_hf.data`) and kept in
`DataGenerator.skipped`. Grayscale, RGBA, palette and 16-bit images become RGB (alpha dropped).

Hub data. `from_hub` calls `datasets.load_dataset(repo_id, data_files=...)`. The default is DIV2K HR
(`goodfellowliu/DIV2K`: `DIV2K_train_HR.zip`, 800 images; `DIV2K_valid_HR.zip`, 100 images). datasets 5.2
reads images inside *zip* data files as an image folder (with `drop_labels=True`, which this module passes,
because the folder names inside the zips would otherwise become class labels that differ between splits); it
does NOT read `.tar.gz` archives that way. A local folder laid out like the Hub repo goes through the same
call. The Hub is not reachable from the machine this was written on: the Hub path was tested only on such
local copies.
"""

from __future__ import annotations

import logging
import os
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .degradation import bicubic_degrade
from .image_io import ImageLoadError, is_image_file, load_image
from .image_processing_espcn import pil_to_rgb_array

logger = logging.getLogger(__name__)

# Default Hub source of training data: the original DIV2K HR archives (images inside zips, read as image
# folder).
DEFAULT_HUB_REPO = "goodfellowliu/DIV2K"
DEFAULT_DATA_FILES = {"train": "DIV2K_train_HR.zip", "validation": "DIV2K_valid_HR.zip"}

BENCHMARK_SETS = ("Set5", "Set14", "BSD100", "Urban100")
# Hub repositories holding the benchmark HR images (configurable: pass `repo_id`/`filename` to
# `download_benchmark`). They ship `data/<Name>_HR.tar.gz`; datasets 5.2 cannot read tar.gz as an image folder
# (and the repos' loading scripts are refused by datasets >= 4), so `download_benchmark` fetches the archive
# with huggingface_hub and unpacks it into the local layout `load_benchmark` reads. Untested here (no Hub
# access).
BENCHMARK_HUB_REPOS = {name: f"eugenesiow/{name}" for name in BENCHMARK_SETS}

# Smallest eval image (HR, after mod-crop) is 2 * scale + this: an 11x11 SSIM window after the border crop.
_SSIM_WINDOW = 11
_TRANSFORMS = 8  # the dihedral group: identity, 3 rotations, and each of those transposed


def default_data_dir() -> Path:
    """`$ESPCN_HF_DATA_DIR`, or `<repository>/../shared/data` in a source checkout."""
    env = os.environ.get("ESPCN_HF_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


# ------------------------------------------------------------------------------------------------- decoding
def _to_uint8_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL image -> contiguous uint8 RGB (H, W, 3)."""
    if image.mode == "RGB":
        return np.array(image, dtype=np.uint8)
    return np.rint(pil_to_rgb_array(image) * 255.0).astype(np.uint8)


def _read_bytes(path: str) -> bytes:
    if "://" in path:  # e.g. "zip://DIV2K_train_HR/0001.png::/cache/DIV2K_train_HR.zip" from datasets
        import fsspec

        with fsspec.open(path, "rb") as f:
            return f.read()
    return Path(path).read_bytes()


def _decode(value) -> np.ndarray:
    """A path, bytes, PIL image, numpy array or datasets `{"bytes", "path"}` dict -> uint8 RGB (H, W, 3).

    Raises `ImageLoadError` for anything that is not a readable image.
    """
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is None and value.get("path"):
            try:
                data = _read_bytes(value["path"])
            except (OSError, ValueError) as error:
                raise ImageLoadError(f"{value['path']}: cannot be read ({error})") from None
        if data is None:
            raise ImageLoadError("dataset row has neither bytes nor path")
        value = bytes(data)
    if isinstance(value, np.ndarray):
        array = value
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.ndim != 3 or array.shape[-1] not in (3, 4):
            raise ImageLoadError(f"array of shape {array.shape} is not an H x W (x 3|4) image")
        if array.dtype != np.uint8:
            array = np.rint(np.clip(array.astype(np.float64), 0, 1) * 255.0).astype(np.uint8)
        return np.ascontiguousarray(array[..., :3])
    image = load_image(value, max_pixels=None)
    return _to_uint8_rgb(image)


def _name_of(value, index: int) -> str:
    path = None
    if isinstance(value, (str, os.PathLike)):
        path = str(value)
    elif isinstance(value, dict):
        path = value.get("path")
    elif isinstance(value, Image.Image):
        path = getattr(value, "filename", None)
    if path:
        return Path(path.split("::")[0].split("://")[-1]).stem
    return f"{index:04d}"


def _lr_of(hr: np.ndarray, scale: int) -> np.ndarray:
    """`bicubic_degrade` of a whole uint8 HR image (mod-cropped) -> uint8 LR (float64 maths, rounded once)."""
    t = torch.from_numpy(hr).permute(2, 0, 1).to(torch.float64).div_(255.0)
    lr = bicubic_degrade(t, scale)
    return np.ascontiguousarray((lr * 255.0).round_().to(torch.uint8).permute(1, 2, 0).numpy())


# ------------------------------------------------------------------------------------------------- dataset
class DataGenerator(Dataset):
    """Aligned LR/HR pairs from in-memory uint8 images (see the module docstring for protocol and caching).

    Args:
        hr_images: HR images, uint8 (H, W, 3) numpy arrays (mod-cropped here).
        scale: the SR factor `r`.
        mode: `"train"` (random aligned patches, `patches_per_image` per image) or `"eval"` (whole images).
        patch_size: LR patch side `p` (train mode); HR patches are `r * p`.
        patches_per_image: items per image per epoch (train mode): `len(ds) = num_images * patches_per_image`.
        augment: random horizontal/vertical flips and 90-degree rotations (train mode).
        seed: base of the per-item random draws.
        names: one name per image (default `0000`, `0001`, ...).
        lr_images: the LR images of a paired dataset, used instead of `bicubic_degrade(HR)`; each must be
            at least `HR / r` (after mod-crop) and is cropped to it.
        skipped: counts of inputs dropped before this constructor (merged into `self.skipped` and the log).

    Items: `{"pixel_values": float32 (3, p, p), "labels": float32 (3, rp, rp)}` in [0, 1]; eval mode adds
    `"name"` and has whole images.
    """

    def __init__(
        self,
        hr_images: Sequence[np.ndarray],
        scale: int = 3,
        mode: str = "train",
        patch_size: int = 17,
        patches_per_image: int = 32,
        augment: bool = True,
        seed: int = 0,
        names: Sequence[str] | None = None,
        lr_images: Sequence[np.ndarray | None] | None = None,
        skipped: dict[str, list[str]] | None = None,
    ):
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
        if not isinstance(patches_per_image, int) or patches_per_image < 1:
            raise ValueError(f"patches_per_image must be a positive integer, got {patches_per_image!r}")
        self.scale, self.mode, self.patch_size = scale, mode, patch_size
        self.patches_per_image, self.augment, self.seed = patches_per_image, augment, seed
        names = list(names) if names is not None else [f"{i:04d}" for i in range(len(hr_images))]
        lr_images = list(lr_images) if lr_images is not None else [None] * len(hr_images)
        if len(names) != len(hr_images) or len(lr_images) != len(hr_images):
            raise ValueError("names and lr_images need one entry per HR image")
        self.skipped: dict[str, list[str]] = {
            "not_image": [],
            "unreadable": [],
            "too_small": [],
            "bad_pair": [],
        }
        for key, items in (skipped or {}).items():
            self.skipped.setdefault(key, []).extend(items)

        min_side = scale * patch_size if mode == "train" else 2 * scale + _SSIM_WINDOW
        # One torch thread for the LR precompute: these matrix products are small, and on a busy machine
        # two OpenMP threads were 5-25x slower than one (measured on the shared 2-core box).
        self.hr: list[np.ndarray] = []
        self.lr: list[np.ndarray] = []
        self.names: list[str] = []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self._add_images(hr_images, lr_images, names, min_side)
        finally:
            torch.set_num_threads(threads)
        # Shared memory, so set_epoch in the main process reaches forked and persistent workers.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._log_summary()

    def _add_images(self, hr_images, lr_images, names, min_side: int) -> None:
        scale = self.scale
        for hr, lr, name in zip(hr_images, lr_images, names, strict=True):
            h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
            if min(h, w) < min_side:
                self.skipped["too_small"].append(name)
                continue
            hr = np.ascontiguousarray(hr[:h, :w, :3])
            if lr is None:
                lr = _lr_of(hr, scale)
            elif lr.shape[0] < h // scale or lr.shape[1] < w // scale:
                self.skipped["bad_pair"].append(name)
                continue
            self.hr.append(hr)
            self.lr.append(np.ascontiguousarray(lr[: h // scale, : w // scale, :3]))
            self.names.append(name)

    def _log_summary(self) -> None:
        counts = {k: len(v) for k, v in self.skipped.items() if v}
        if counts.get("not_image"):
            logger.info(
                "skipped %d non-image files (e.g. %s)", counts["not_image"], self.skipped["not_image"][0]
            )
        bad = {k: v for k, v in counts.items() if k != "not_image"}
        if bad:
            logger.warning(
                "skipped %d images (%s); min HR side for mode=%s, scale=%d: %d px. First: %s",
                sum(bad.values()),
                ", ".join(f"{k}: {v}" for k, v in bad.items()),
                self.mode,
                self.scale,
                self.scale * self.patch_size if self.mode == "train" else 2 * self.scale + _SSIM_WINDOW,
                {k: self.skipped[k][:3] for k in bad},
            )
        logger.info(
            "DataGenerator: %d images, mode=%s, scale=%d, %d items, cache %.1f MB",
            len(self.hr),
            self.mode,
            self.scale,
            len(self),
            self.cache_bytes / 1e6,
        )

    # --------------------------------------------------------------------------------------------
    # constructors
    @classmethod
    def from_folder(
        cls,
        folders: str | os.PathLike | Iterable[str | os.PathLike],
        scale: int = 3,
        max_images=None,
        **kwargs,
    ) -> DataGenerator:
        """All images in one or more folders (not recursive; sorted by name). Other files are skipped."""
        if isinstance(folders, (str, os.PathLike)):
            folders = [folders]
        hr_images, names, skipped = [], [], {"not_image": [], "unreadable": []}
        for folder in folders:
            folder = Path(folder)
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: no such folder")
            for path in sorted(p for p in folder.iterdir() if p.is_file()):
                if max_images is not None and len(hr_images) >= max_images:
                    break
                if not is_image_file(path):
                    skipped["not_image"].append(str(path))
                    continue
                try:
                    hr_images.append(_decode(path))
                except ImageLoadError as error:
                    skipped["unreadable"].append(f"{path} ({error})")
                    continue
                names.append(path.stem)
        return cls(hr_images, scale=scale, names=names, skipped=skipped, **kwargs)

    @classmethod
    def from_dataset(
        cls,
        dataset,
        scale: int = 3,
        image_column: str = "image",
        lr_column: str | None = None,
        max_images: int | None = None,
        **kwargs,
    ) -> DataGenerator:
        """Any `datasets.Dataset` (or a sequence of dict rows).

        Cells may be PIL images, paths, bytes, numpy arrays or datasets' `{"bytes", "path"}` dicts. If
        `lr_column` is given, or the dataset has `hr` and `lr` columns and no `image_column`, its LR images
        are used as they are (paired data) instead of `bicubic_degrade(HR)`.
        """
        columns = list(getattr(dataset, "column_names", None) or (dataset[0].keys() if len(dataset) else []))
        if lr_column is None and image_column not in columns and {"hr", "lr"} <= set(columns):
            image_column, lr_column = "hr", "lr"
        if image_column not in columns:
            raise ValueError(f"image_column {image_column!r} is not a column of the dataset {columns}")
        if lr_column is not None and lr_column not in columns:
            raise ValueError(f"lr_column {lr_column!r} is not a column of the dataset {columns}")
        features = getattr(dataset, "features", None)
        if features is not None:  # decode ourselves, so a corrupt file is skipped, not raised mid-iteration
            from datasets import Image as ImageFeature

            for column in (image_column, lr_column):
                if column is not None and isinstance(features.get(column), ImageFeature):
                    dataset = dataset.cast_column(column, ImageFeature(decode=False))
        n = len(dataset) if max_images is None else min(max_images, len(dataset))
        hr_images, lr_images, names, skipped = [], [], [], {"unreadable": []}
        for i in range(n):
            row = dataset[i]
            name = _name_of(row[image_column], i)
            try:
                hr = _decode(row[image_column])
                lr = _decode(row[lr_column]) if lr_column is not None else None
            except ImageLoadError as error:
                skipped["unreadable"].append(f"{name} ({error})")
                continue
            hr_images.append(hr)
            lr_images.append(lr)
            names.append(name)
        return cls(hr_images, scale=scale, names=names, lr_images=lr_images, skipped=skipped, **kwargs)

    @classmethod
    def from_hub(
        cls,
        repo_id: str = DEFAULT_HUB_REPO,
        data_files=None,
        split: str = "train",
        scale: int = 3,
        image_column: str = "image",
        lr_column: str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        load_kwargs: dict | None = None,
        **kwargs,
    ) -> DataGenerator:
        """`datasets.load_dataset(repo_id, data_files=..., split=split)` -> DataGenerator (see
        `from_dataset`).

        `repo_id` is a Hub dataset id or a local folder laid out like one. `data_files` defaults to
        `DEFAULT_DATA_FILES` for `DEFAULT_HUB_REPO` and for a local folder holding those zips; of a dict, only
        the entry of `split` is loaded (so asking for "validation" does not download the training zip). When
        all data files are zips or images, `drop_labels=True` is passed (image-folder loading); `load_kwargs`
        adds or overrides arguments of `load_dataset`.
        """
        from datasets import load_dataset

        local_div2k = all((Path(str(repo_id)) / f).is_file() for f in DEFAULT_DATA_FILES.values())
        if data_files is None and (repo_id == DEFAULT_HUB_REPO or local_div2k):
            data_files = DEFAULT_DATA_FILES
        if isinstance(data_files, dict) and split in data_files:
            data_files = {split: data_files[split]}
        extra = {}
        if data_files is not None and _all_image_files(data_files):
            extra["drop_labels"] = True
        extra.update(load_kwargs or {})
        dataset = load_dataset(
            str(repo_id), data_files=data_files, split=split, revision=revision, cache_dir=cache_dir, **extra
        )
        return cls.from_dataset(
            dataset, scale=scale, image_column=image_column, lr_column=lr_column, **kwargs
        )

    # -------------------------------------------------------------------------------------------- dataset API
    @property
    def num_images(self) -> int:
        return len(self.hr)

    @property
    def cache_bytes(self) -> int:
        """Bytes held by the decoded HR and LR arrays."""
        return sum(a.nbytes for a in self.hr) + sum(a.nbytes for a in self.lr)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops/augmentations of `epoch` (visible to DataLoader workers)."""
        self._epoch[0] = int(epoch)

    def __len__(self) -> int:
        return len(self.hr) * (self.patches_per_image if self.mode == "train" else 1)

    def draw(self, index: int) -> tuple[int, int, int, int]:
        """(image index, LR top, LR left, transform 0-7) of train item `index` for the current epoch."""
        image = index // self.patches_per_image
        lr = self.lr[image]
        p = self.patch_size
        rng = np.random.Generator(np.random.Philox(key=[self.seed, self.epoch * (1 << 40) + index]))
        y, x, t = rng.integers(0, [lr.shape[0] - p + 1, lr.shape[1] - p + 1, _TRANSFORMS])
        return image, int(y), int(x), int(t) if self.augment else 0

    @staticmethod
    def _transform(patch: np.ndarray, t: int) -> np.ndarray:
        """Dihedral transform `t` (0-7) of an (H, W, C) patch: t & 3 quarter turns, then transpose if t &
        4."""
        patch = np.rot90(patch, t & 3)
        return patch.transpose(1, 0, 2) if t & 4 else patch

    @staticmethod
    def _to_tensor(patch: np.ndarray) -> torch.Tensor:
        chw = np.ascontiguousarray(patch.transpose(2, 0, 1), dtype=np.float32)
        chw /= 255.0  # division (not * 1/255) so values equal torch's uint8 / 255 exactly
        return torch.from_numpy(chw)

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        if self.mode == "eval":
            return {
                "pixel_values": self._to_tensor(self.lr[index]),
                "labels": self._to_tensor(self.hr[index]),
                "name": self.names[index],
            }
        image, y, x, t = self.draw(index)
        p, r = self.patch_size, self.scale
        lr = self.lr[image][y : y + p, x : x + p]
        hr = self.hr[image][r * y : r * (y + p), r * x : r * (x + p)]
        if t:
            lr, hr = self._transform(lr, t), self._transform(hr, t)
        return {"pixel_values": self._to_tensor(lr), "labels": self._to_tensor(hr)}

    def __repr__(self) -> str:
        return (
            f"DataGenerator(images={self.num_images}, mode={self.mode!r}, scale={self.scale}, "
            f"patch_size={self.patch_size}, patches_per_image={self.patches_per_image}, len={len(self)})"
        )


def _all_image_files(data_files) -> bool:
    if isinstance(data_files, (str, os.PathLike)):
        files = [str(data_files)]
    elif isinstance(data_files, dict):
        files = [f for v in data_files.values() for f in ([v] if isinstance(v, str) else v)]
    else:
        files = [str(f) for f in data_files]
    return all(f.lower().endswith(".zip") or is_image_file(f) for f in files)


# ------------------------------------------------------------------------------------------------- benchmarks
def load_benchmark(
    name: str, root: str | os.PathLike | None = None, scale: int = 3, **kwargs
) -> DataGenerator:
    """A benchmark set (`BENCHMARK_SETS`, or any folder under `root`) as an eval-mode DataGenerator.

    Reads the HR images in `<root>/<name>/` (root defaults to `default_data_dir() / "benchmarks"`); LR is
    `bicubic_degrade` of the mod-cropped HR. To fetch a set from the Hub first, see `download_benchmark`.
    """
    root = Path(root) if root is not None else default_data_dir() / "benchmarks"
    folder = root / name
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no such benchmark folder (sets: {BENCHMARK_SETS}; set ESPCN_HF_DATA_DIR or pass "
            "root=, or fetch one with espcn_hf.data.download_benchmark)"
        )
    kwargs.setdefault("mode", "eval")
    return DataGenerator.from_folder(folder, scale=scale, **kwargs)


def download_benchmark(
    name: str,
    root: str | os.PathLike | None = None,
    repo_id: str | None = None,
    filename: str | None = None,
    revision: str | None = None,
) -> Path:
    """Fetch `<repo_id>/<filename>` from the Hub and unpack its images flat into `<root>/<name>/`.

    Defaults: `BENCHMARK_HUB_REPOS[name]`, `data/<name>_HR.tar.gz`. Untested: written on a machine that cannot
    reach the Hub.
    """
    from huggingface_hub import hf_hub_download

    root = Path(root) if root is not None else default_data_dir() / "benchmarks"
    repo_id = repo_id or BENCHMARK_HUB_REPOS[name]
    filename = filename or f"data/{name}_HR.tar.gz"
    archive = hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision)
    target = root / name
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile() and is_image_file(member.name):
                data = tar.extractfile(member).read()
                (target / Path(member.name).name).write_bytes(data)
    return target


__all__ = [
    "BENCHMARK_HUB_REPOS",
    "BENCHMARK_SETS",
    "DEFAULT_DATA_FILES",
    "DEFAULT_HUB_REPO",
    "DataGenerator",
    "default_data_dir",
    "download_benchmark",
    "load_benchmark",
]
