"""Training and evaluation data: `DataGenerator`, the map-style dataset of aligned LR/HR pairs.

Protocol (as in SRCNN/ESPCN/VDSR): every HR image is mod-cropped to a multiple of the scale `r`, and its LR
image is `bicubic_degrade(HR)` of the WHOLE image (MATLAB bicubic, rounded to uint8 levels). A training pair
is an aligned crop of both: LR patch `p x p` at `(y, x)` and HR patch `rp x rp` at `(r*y, r*x)`, with the same
random flip / 90-degree rotation applied to both. (Degrading each HR patch on its own would differ near the
patch border.)

Caching. Each HR image is decoded once into a uint8 numpy array (H, W, 3) and its LR once; both stay in memory
for the life of the dataset. Cost: `sum(H*W*3) * (1 + 1/r**2)` bytes: T91 + BSD200 + BSDS500test (490 images
usable at x3 with 32x32 patches) is 223 MB at x3, decoded in 2.6-7 s on the shared 2-core CPU (see
`benchmarks/data_throughput_cpu.md`). DataLoader workers started with `fork` share these pages (nothing writes to
them); with `spawn` each worker gets a copy. DIV2K train HR (800 images of about 2040x1356) needs about 7.4 GB
at x3 (8.3 GB at x2) and several minutes to decode; use `max_images` on small machines.

Determinism. The crop, flip and rotation of item `i` are a pure function of `(seed, epoch, i)`; `set_epoch`
writes the epoch into a shared-memory tensor, so it reaches DataLoader workers, persistent ones included (call
it before iterating the loader), and every DDP rank draws the same patch for the same index.

Device path. `DevicePatchSampler` (built from a train-mode DataGenerator) keeps the same uint8 HR and LR on the
training device (GPU or CPU) and cuts whole batches of the same aligned crops by index there, with no per-sample
Python; its batch `step` is a pure function of `(seed, step)`, each process taking its own slice. `scripts/train.py`
uses it when the decoded set fits on the device (`--data_path auto`); the DataLoader path stays for sets that do not.

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

import contextlib
import logging
import os
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .degradation import bicubic_degrade, imresize_np
from .image_io import ImageLoadError, is_image_file, load_image
from .image_processing_espcn import pil_to_rgb_array
from .metrics import quantize_uint8, to_unit_float

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


def default_data_dir(fallback: str | os.PathLike | None = None) -> Path:
    """Where benchmark and training images live (`benchmarks/<Set>/`, `train/<Set>/`, `peers/`): the one rule.

    `$ESPCN_HF_DATA_DIR`; else `fallback` when it is a folder (the scripts in `scripts/` pass the data folder
    beside the checkout, `scripts/common.py`: the package itself never guesses a path around it); else
    `$XDG_CACHE_HOME/espcn_hf/data` (`~/.cache/espcn_hf/data`), where `download_benchmark` unpacks sets.
    """
    env = os.environ.get("ESPCN_HF_DATA_DIR")
    if env:
        return Path(env)
    if fallback is not None and Path(fallback).is_dir():
        return Path(fallback)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "espcn_hf" / "data"


def training_folders(entries="all", root: str | os.PathLike | None = None) -> list[Path]:
    """The image folders a training run reads: `"all"` means every folder under `<data dir>/train` (sorted);
    otherwise existing paths as they are and bare names (T91, BSD200, ...) under `<data dir>/train`."""
    root = Path(root) if root is not None else default_data_dir() / "train"
    if entries == "all" or entries == ["all"]:
        folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        if not folders:
            raise FileNotFoundError(f"train_dirs: all, but {root} holds no folders (set ESPCN_HF_DATA_DIR)")
        return folders
    if isinstance(entries, (str, os.PathLike)):
        entries = [entries]
    return [Path(e).expanduser() if Path(e).expanduser().exists() else root / str(e) for e in entries]


def _available_host_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose_data_path(requested: str, nbytes: int, device: torch.device | str) -> tuple[str, str]:
    """("device" or "loader", why) for a decoded training set of `nbytes` (uint8 HR + LR) on `device`.

    "auto" takes the device path (`DevicePatchSampler`) when the set fits in half of what is free there (CUDA:
    `mem_get_info`; CPU: available host memory, since the packed copy comes on top of the decoded one), else the
    DataLoader. On CPU the device path is also the faster one: 4.2x the in-process DataLoader for 512 32x32 LR
    patches at x3 (`python scripts/benchmark_data.py --device cpu`, `benchmarks/data_throughput_cpu.json`).
    """
    if requested not in ("auto", "device", "loader"):
        raise ValueError(f"data_path must be one of ('auto', 'device', 'loader'), got {requested!r}")
    if requested != "auto":
        return requested, f"data_path={requested}"
    device = torch.device(device)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        where = f"{free / 1e9:.1f} GB free on {device}"
    else:
        free = _available_host_bytes()
        where = f"{free / 1e9:.1f} GB of host memory available"
    path = "device" if nbytes <= free // 2 else "loader"
    return path, f"auto: {nbytes / 1e6:.0f} MB of training images, {where} -> {path}"


# ------------------------------------------------------------------------------------------------- decoding
def _to_uint8_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL image -> contiguous uint8 RGB (H, W, 3)."""
    if image.mode == "RGB":
        return np.array(image, dtype=np.uint8)
    return quantize_uint8(pil_to_rgb_array(image))


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
            array = quantize_uint8(array.astype(np.float64))
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


def _with_rescaled_copies(
    hr_images: Sequence[np.ndarray], names: Sequence[str], factors: Sequence[float]
) -> tuple[list[np.ndarray], list[str]]:
    """Every image, each followed by its copies downscaled by `factors` (`imresize_np`, MATLAB bicubic)."""
    images, named = [], []
    for hr, name in zip(hr_images, names, strict=True):
        images.append(hr)
        named.append(name)
        for factor in factors:
            images.append(imresize_np(np.ascontiguousarray(hr[..., :3]), factor))
            named.append(f"{name}@x{factor:g}")
    return images, named


def _lr_of(hr: np.ndarray, scale: int) -> np.ndarray:
    """`bicubic_degrade` of a whole uint8 HR image (mod-cropped) -> uint8 LR (float64 maths, rounded once)."""
    t = to_unit_float(torch.from_numpy(hr), torch.float64).permute(2, 0, 1)
    lr = bicubic_degrade(t, scale)
    return np.ascontiguousarray(quantize_uint8(lr).permute(1, 2, 0).numpy())


class DatasetUnavailableError(ValueError):
    """A Hub dataset that can be neither downloaded (no network) nor read from the local cache."""


def _hub_answers(repo_id: str) -> bool:
    from .pretrained import hub_reachable

    return hub_reachable(repo_id, repo_type="dataset")


@contextlib.contextmanager
def _hub_offline():
    """`datasets` and `huggingface_hub` in offline mode for the block (they read HF_HUB_OFFLINE once, at import,
    so their module settings are switched and restored): the local cache answers at once, with no ~20 s of
    retries against a network that is not there."""
    import datasets.config
    import huggingface_hub.constants

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


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
        rescale: factors in (0, 1): each HR image is also added downscaled by each of them (MATLAB bicubic, before
            the LR images are made from it), named `NAME@xF`: the scale augmentation of FSRCNN (Dong et al.
            2016: 0.9, 0.8, 0.7, 0.6), more and sharper detail per pixel from the same photos. Train mode with
            synthetic LR images only.

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
        rescale: Sequence[float] = (),
    ):
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
        if not isinstance(patches_per_image, int) or patches_per_image < 1:
            raise ValueError(f"patches_per_image must be a positive integer, got {patches_per_image!r}")
        rescale = [float(f) for f in rescale]
        if any(not 0.0 < f < 1.0 for f in rescale):
            raise ValueError(f"rescale factors must be in (0, 1), got {rescale}")
        if rescale and (mode != "train" or lr_images is not None):
            raise ValueError(
                "rescale applies to training images with synthetic LR (mode='train', no lr_images)"
            )
        self.scale, self.mode, self.patch_size = scale, mode, patch_size
        self.patches_per_image, self.augment, self.seed = patches_per_image, augment, seed
        self.rescale = rescale
        names = list(names) if names is not None else [f"{i:04d}" for i in range(len(hr_images))]
        lr_images = list(lr_images) if lr_images is not None else [None] * len(hr_images)
        if len(names) != len(hr_images) or len(lr_images) != len(hr_images):
            raise ValueError("names and lr_images need one entry per HR image")
        if rescale:
            hr_images, names = _with_rescaled_copies(hr_images, names, rescale)
            lr_images = [None] * len(hr_images)
        self.skipped: dict[str, list[str]] = {
            "not_image": [],
            "unreadable": [],
            "too_small": [],
            "bad_pair": [],
        }
        for key, items in (skipped or {}).items():
            self.skipped.setdefault(key, []).extend(items)

        min_side = scale * patch_size if mode == "train" else 2 * scale + _SSIM_WINDOW
        self.hr: list[np.ndarray] = []
        self.lr: list[np.ndarray] = []
        self.names: list[str] = []
        # The LR precompute runs on the caller's torch threads (the trainer's --num_threads): one is best on a
        # busy shared CPU, where two OpenMP threads were 5-25x slower.
        self._add_images(hr_images, lr_images, names, min_side)
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
        local = Path(str(repo_id)).exists()
        online = local or _hub_answers(str(repo_id))
        try:
            with contextlib.nullcontext() if online else _hub_offline():
                dataset = load_dataset(
                    str(repo_id),
                    data_files=data_files,
                    split=split,
                    revision=revision,
                    cache_dir=cache_dir,
                    **extra,
                )
        except Exception as error:  # noqa: BLE001 -- datasets raises many kinds; the cause goes in the one line
            if online:
                raise
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise DatasetUnavailableError(
                f"{repo_id}: the Hub cannot be reached and the dataset is not in the local cache ({reason}); to "
                "train offline, use local image folders: --train_dirs all (or folder names/paths)"
            ) from None
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
        return torch.from_numpy(to_unit_float(np.ascontiguousarray(patch.transpose(2, 0, 1))))

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


# ------------------------------------------------------------------------------------------------- device path
class DevicePatchSampler:
    """Batches of aligned LR/HR training crops cut by index from the whole training set held on one device.

    Built from a train-mode `DataGenerator`: its decoded uint8 HR images and their whole-image MATLAB-bicubic
    LR are packed into two flat uint8 tensors on `device` (a GPU, or the CPU), so a batch costs a handful of
    tensor ops and no per-sample Python: one `index_select` of patch rows from a strided window view of each
    flat tensor, then the dihedral transforms applied per group of equal transform (at most 8 ops), then one
    conversion to float in [0, 1]. Crops and transforms are exactly those of `DataGenerator.__getitem__` for
    the same (image, LR top, LR left, transform): same alignment (`HR = r * LR` offsets), same transform
    definition (`DataGenerator._transform`), same `uint8 / 255` float32 values (tested).

    Draws. Batch `step` is a pure function of `(seed, step)`: the global batch of `batch_size * world_size`
    draws comes from `numpy.random.default_rng([seed, step])` (image uniform over images, as the DataGenerator
    path; top-left uniform over the image's valid positions; transform uniform over the 8 if `augment`), and
    process `rank` takes its own slice of it. So the data seen is the same for any number of processes, the
    ranks' shares are disjoint draws, and a resumed run continues bit-identically from the saved `step` (the
    trainer keeps it in `TrainState.data_step`, saved in every checkpoint). Within a share the draws are
    ordered by transform (stable), which lets each transform run once on a contiguous slice. Draws are made on
    the CPU and sent in one small pinned copy, so CUDA never waits for them and they are the same on every
    device.

    Memory: `dataset.cache_bytes` on `device` (T91 + BSD200 + BSDS500test at x3: about 0.2 GB).
    """

    def __init__(
        self,
        dataset: DataGenerator,
        batch_size: int,
        device: torch.device | str | None = None,
        *,
        seed: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        if dataset.mode != "train":
            raise ValueError("DevicePatchSampler needs a train-mode DataGenerator")
        if dataset.num_images == 0:
            raise ValueError("DevicePatchSampler needs at least one training image")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.device = torch.device(device if device is not None else "cpu")
        self.scale, self.patch_size, self.augment = dataset.scale, dataset.patch_size, dataset.augment
        self.seed = dataset.seed if seed is None else int(seed)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.num_images = dataset.num_images
        r, p = self.scale, self.patch_size
        # LR sizes and valid top-left ranges (numpy, CPU: the draws are made there)
        self._lr_h = np.array([a.shape[0] for a in dataset.lr], dtype=np.int64)
        self._lr_w = np.array([a.shape[1] for a in dataset.lr], dtype=np.int64)
        self._high_y, self._high_x = self._lr_h - p + 1, self._lr_w - p + 1
        self.hr, self._hr_rows = self._pack(dataset.hr, r * p)
        self.lr, self._lr_rows = self._pack(dataset.lr, p)
        # Per-image offset (in pixels) into the flat tensors and row width, on the device.
        hr_pixels = [a.shape[0] * a.shape[1] for a in dataset.hr]
        lr_pixels = [a.shape[0] * a.shape[1] for a in dataset.lr]
        self._hr_offset = torch.tensor(np.cumsum([0, *hr_pixels[:-1]]), dtype=torch.int64, device=self.device)
        self._lr_offset = torch.tensor(np.cumsum([0, *lr_pixels[:-1]]), dtype=torch.int64, device=self.device)
        self._hr_width = torch.tensor([a.shape[1] for a in dataset.hr], dtype=torch.int64, device=self.device)
        self._lr_width = torch.from_numpy(self._lr_w).to(self.device)
        self._hr_arange = torch.arange(r * p, device=self.device)
        self._lr_arange = torch.arange(p, device=self.device)

    def _pack(self, images: Sequence[np.ndarray], side: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as one flat uint8 tensor on the device, and its view of `side`-pixel rows: row k of the
        view is the `side * 3` bytes starting at pixel k (a strided window view, no copy)."""
        flat = torch.from_numpy(np.concatenate([a.reshape(-1) for a in images])).to(self.device)
        return flat, flat.unfold(0, side * 3, 3)

    @property
    def nbytes(self) -> int:
        return self.hr.numel() + self.lr.numel()

    @property
    def patches_per_step(self) -> int:
        return self.batch_size * self.world_size

    def indices(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(image, LR top, LR left, transform) of this process's share of batch `step`, as int64 arrays."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        rng = np.random.default_rng([self.seed, int(step)])
        n = self.patches_per_step
        image = rng.integers(0, self.num_images, n)
        y = rng.integers(0, self._high_y[image])
        x = rng.integers(0, self._high_x[image])
        t = rng.integers(0, _TRANSFORMS, n) if self.augment else np.zeros(n, dtype=np.int64)
        share = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        image, y, x, t = image[share], y[share], x[share], t[share]
        order = np.argsort(t, kind="stable")  # contiguous groups of equal transform
        return image[order], y[order], x[order], t[order]

    def _crop(self, rows_view, offset, width, arange, image, y, x) -> torch.Tensor:
        """(B, side, side, 3) uint8 crops: row i of crop b starts at pixel offset + (y + i) * width + x."""
        start = offset[image] + y * width[image] + x
        rows = start[:, None] + arange[None, :] * width[image][:, None]
        side = arange.numel()
        return rows_view.index_select(0, rows.reshape(-1)).view(-1, side, side, 3)

    def _to_float(
        self, crops: torch.Tensor, transforms: np.ndarray, out: torch.Tensor | None
    ) -> torch.Tensor:
        """Dihedral transform per group of equal `t` (as `DataGenerator._transform`), then (B, 3, s, s) float
        in [0, 1] (channels-last memory, the layout the crops come in). `out`, a tensor this method returned
        before, is overwritten instead of allocating a new one."""
        if out is not None and out.shape == crops.permute(0, 3, 1, 2).shape:
            buffer = out.permute(0, 2, 3, 1)  # back to the (B, s, s, 3) memory it views
        else:
            buffer = torch.empty(crops.shape, dtype=torch.float32, device=self.device)
        bounds = np.searchsorted(transforms, np.arange(_TRANSFORMS + 1))
        for t in range(_TRANSFORMS):
            lo, hi = int(bounds[t]), int(bounds[t + 1])
            if lo == hi:
                continue
            group = torch.rot90(crops[lo:hi], t & 3, dims=(1, 2))
            buffer[lo:hi] = group.transpose(1, 2) if t & 4 else group
        # metrics.to_unit_float's rule, in place in the reused buffer (a division: equal to DataGenerator's).
        return buffer.div_(255.0).permute(0, 3, 1, 2)

    def batch(self, step: int, out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """`{"pixel_values": (B, 3, p, p), "labels": (B, 3, rp, rp)}` float32 on the device, for `step`.

        `out`: a batch this sampler returned before, whose tensors are overwritten (the training loop passes
        its previous batch: on CPU a fresh 60 MB float tensor costs more in page faults than the crops
        themselves; measured 22 ms vs 2 ms for a 512 x 96 x 96 x 3 conversion on one core).
        """
        return self._batch(step, out)

    def _batch(self, step: int, out: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        image, y, x, t = self.indices(step)
        draws = torch.from_numpy(np.stack([image, y, x]))
        if self.device.type == "cuda":
            draws = draws.pin_memory().to(self.device, non_blocking=True)
        else:
            draws = draws.to(self.device)
        image_d, y_d, x_d = draws
        r = self.scale
        out = out or {}
        lr = self._crop(self._lr_rows, self._lr_offset, self._lr_width, self._lr_arange, image_d, y_d, x_d)
        hr = self._crop(
            self._hr_rows, self._hr_offset, self._hr_width, self._hr_arange, image_d, r * y_d, r * x_d
        )
        return {
            "pixel_values": self._to_float(lr, t, out.get("pixel_values")),
            "labels": self._to_float(hr, t, out.get("labels")),
        }

    def __repr__(self) -> str:
        return (
            f"DevicePatchSampler(images={self.num_images}, scale={self.scale}, patch_size={self.patch_size}, "
            f"batch_size={self.batch_size}, rank={self.rank}/{self.world_size}, device={self.device}, "
            f"{self.nbytes / 1e6:.1f} MB)"
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
    "DatasetUnavailableError",
    "DevicePatchSampler",
    "choose_data_path",
    "default_data_dir",
    "download_benchmark",
    "load_benchmark",
    "training_folders",
]
