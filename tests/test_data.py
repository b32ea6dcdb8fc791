"""DataGenerator: pair alignment, augmentation, determinism, loaders (folder, Hub, datasets), bad data."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from espcn_hf.data import DataGenerator, default_data_dir, load_benchmark
from espcn_hf.degradation import bicubic_degrade, mod_crop

FIXTURES = Path(__file__).parent / "fixtures"
TINY_SET = FIXTURES / "tiny_set"
SCALE, PATCH = 3, 8


def to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).to(torch.float64) / 255.0


def pattern(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-but-detailed uint8 RGB image (random noise would make the bicubic checks trivial)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    channels = [128 + 100 * np.sin(xx / rng.uniform(2, 6) + yy / rng.uniform(3, 8) + c) for c in range(3)]
    return np.clip(np.rint(np.stack(channels, -1)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def train_ds() -> DataGenerator:
    return DataGenerator.from_folder(TINY_SET, scale=SCALE, patch_size=PATCH, patches_per_image=6, seed=1)


# ------------------------------------------------------------------------------------------------- alignment
def test_eval_mode_whole_images_lr_is_bicubic_of_modcropped_hr():
    ds = load_benchmark("tiny_set", root=FIXTURES, scale=SCALE)
    assert len(ds) == 3 and ds.mode == "eval"
    item = ds[0]
    assert item["name"] == "blocks"  # sorted by name
    hr = mod_crop(to_tensor(np.array(Image.open(TINY_SET / "blocks.png").convert("RGB"))), SCALE)
    assert torch.equal(item["labels"], hr.float())
    lr = bicubic_degrade(hr, SCALE)
    assert item["pixel_values"].dtype == torch.float32
    assert torch.allclose(item["pixel_values"].double(), lr, atol=1e-6)


def test_train_patch_is_aligned_crop_of_whole_lr(train_ds):
    assert len(train_ds) == 3 * 6
    r, p = SCALE, PATCH
    ds = DataGenerator([pattern(60, 75)], scale=r, patch_size=p, patches_per_image=20, augment=False)
    whole_lr = bicubic_degrade(to_tensor(ds.hr[0]), r).float()
    for i in range(len(ds)):
        item = ds[i]
        assert item["pixel_values"].shape == (3, p, p) and item["labels"].shape == (3, r * p, r * p)
        _, y, x, t = ds.draw(i)
        assert t == 0
        assert torch.allclose(item["pixel_values"], whole_lr[:, y : y + p, x : x + p], atol=1e-6)
        assert torch.equal(
            item["labels"], to_tensor(ds.hr[0][r * y : r * (y + p), r * x : r * (x + p)]).float()
        )


def pair_consistent(item: dict, scale: int, margin: int = 2) -> bool:
    """bicubic_degrade(HR patch) equals the LR patch away from the patch border (within one uint8 level)."""
    lr_of_hr = bicubic_degrade(item["labels"].double(), scale)
    inner = (slice(None), slice(margin, -margin), slice(margin, -margin))
    return bool((lr_of_hr[inner] - item["pixel_values"].double()[inner]).abs().max() <= 1.0 / 255 + 1e-6)


def test_pairs_consistent_and_augmentation_applied_to_both():
    ds = DataGenerator([pattern(66, 81, seed=3)], scale=SCALE, patch_size=12, patches_per_image=40, seed=5)
    transforms = set()
    for i in range(len(ds)):
        item = ds[i]
        transforms.add(ds.draw(i)[3])
        assert pair_consistent(item, SCALE), f"item {i} (transform {ds.draw(i)[3]})"
    assert len(transforms) >= 6  # flips and rotations do happen
    # The transformed pair is the transform of the plain pair.
    i = next(i for i in range(len(ds)) if ds.draw(i)[3] == 5)
    _, y, x, t = ds.draw(i)
    lr = ds.lr[0][y : y + 12, x : x + 12]
    assert torch.equal(ds[i]["pixel_values"], DataGenerator._to_tensor(DataGenerator._transform(lr, t)))


def test_rescale_adds_downscaled_copies_made_with_matlab_bicubic():
    from espcn_hf.degradation import imresize_np

    hr = pattern(90, 120, seed=4)
    ds = DataGenerator([hr], scale=SCALE, patch_size=8, patches_per_image=5, rescale=[0.9, 0.6], names=["p"])
    assert ds.names == ["p", "p@x0.9", "p@x0.6"] and len(ds) == 3 * 5
    for index, factor in ((1, 0.9), (2, 0.6)):
        expected = mod_crop(to_tensor(imresize_np(hr, factor)), SCALE)
        assert torch.equal(to_tensor(ds.hr[index]), expected)  # 81x108 and 54x72, mod-cropped
        assert torch.allclose(to_tensor(ds.lr[index]), bicubic_degrade(expected, SCALE), atol=1e-9)
    assert all(pair_consistent(ds[i], SCALE) for i in range(len(ds)))  # LR made from each rescaled HR
    for bad in ([1.0], [0.0], [-0.5], [1.5]):
        with pytest.raises(ValueError, match="rescale"):
            DataGenerator([hr], scale=SCALE, patch_size=8, rescale=bad)
    with pytest.raises(ValueError, match="rescale"):
        DataGenerator([hr], scale=SCALE, mode="eval", rescale=[0.8])
    with pytest.raises(ValueError, match="rescale"):
        DataGenerator([hr], scale=SCALE, patch_size=8, lr_images=[hr[::3, ::3]], rescale=[0.8])


def test_pair_consistency_check_would_catch_misalignment():
    ds = DataGenerator([pattern(66, 81)], scale=SCALE, patch_size=12, patches_per_image=4, augment=False)
    item = ds[0]
    assert not pair_consistent({**item, "labels": torch.roll(item["labels"], 1, dims=-1)}, SCALE)
    flipped = {**item, "labels": item["labels"].flip(-1)}
    assert not pair_consistent(flipped, SCALE)


def test_determinism_and_epochs(train_ds):
    again = DataGenerator.from_folder(TINY_SET, scale=SCALE, patch_size=PATCH, patches_per_image=6, seed=1)
    other_seed = DataGenerator.from_folder(
        TINY_SET, scale=SCALE, patch_size=PATCH, patches_per_image=6, seed=2
    )
    first = [train_ds[i]["labels"] for i in range(len(train_ds))]
    assert all(torch.equal(a, again[i]["labels"]) for i, a in enumerate(first))
    assert not all(torch.equal(a, other_seed[i]["labels"]) for i, a in enumerate(first))
    again.set_epoch(1)
    assert again.epoch == 1
    assert not all(torch.equal(a, again[i]["labels"]) for i, a in enumerate(first))
    again.set_epoch(0)
    assert all(torch.equal(a, again[i]["labels"]) for i, a in enumerate(first))


def test_dataloader_two_workers_match_and_see_set_epoch(train_ds):
    ds = DataGenerator.from_folder(TINY_SET, scale=SCALE, patch_size=PATCH, patches_per_image=6, seed=1)
    loader = DataLoader(
        ds, batch_size=4, num_workers=2, multiprocessing_context="fork", persistent_workers=True
    )
    for epoch in (0, 1):
        ds.set_epoch(epoch)  # before iter(): reaches the persistent workers through shared memory
        batches = list(loader)
        got = torch.cat([b["labels"] for b in batches])
        want = torch.stack([ds[i]["labels"] for i in range(len(ds))])
        assert got.shape == (len(ds), 3, SCALE * PATCH, SCALE * PATCH) and got.dtype == torch.float32
        assert torch.equal(got, want), f"epoch {epoch}"
        assert float(got.min()) >= 0.0 and float(got.max()) <= 1.0


# ------------------------------------------------------------------------------------------------- loaders
def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    image.save(path)


def test_bad_files_are_skipped_with_logged_counts(tmp_path, caplog):
    write_png(tmp_path / "good.png", pattern(30, 30))
    write_png(tmp_path / "gray.png", pattern(30, 33), mode="L")
    write_png(tmp_path / "rgba.png", pattern(33, 30), mode="RGBA")
    write_png(tmp_path / "palette.png", pattern(30, 30), mode="P")
    write_png(tmp_path / "tiny.png", pattern(10, 40))  # smaller than the 24-px HR patch
    (tmp_path / "empty.png").write_bytes(b"")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "corrupt.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.jpg").write_bytes(b"not a jpeg at all" * 10)
    (tmp_path / "SOURCE.txt").write_text("where these came from")
    with caplog.at_level(logging.INFO, logger="espcn_hf.data"):
        ds = DataGenerator.from_folder(tmp_path, scale=SCALE, patch_size=PATCH, patches_per_image=2)
    assert sorted(ds.names) == ["good", "gray", "palette", "rgba"]
    assert all(h.shape[2] == 3 and h.dtype == np.uint8 for h in ds.hr)
    assert len(ds.skipped["not_image"]) == 1
    assert len(ds.skipped["unreadable"]) == 3
    assert ds.skipped["too_small"] == ["tiny"]
    assert "skipped 4 images (unreadable: 3, too_small: 1)" in caplog.text
    assert "skipped 1 non-image files" in caplog.text
    gray = ds.hr[ds.names.index("gray")]
    assert np.array_equal(gray[..., 0], gray[..., 2])
    for i in range(len(ds)):  # never fails mid-epoch
        ds[i]


def make_div2k_like_repo(root: Path) -> Path:
    """A local folder laid out like the Hub repo goodfellowliu/DIV2K: zips of
    DIV2K_{train,valid}_HR/NNNN.png."""
    root.mkdir()
    for zip_name, folder, numbers in (
        ("DIV2K_train_HR.zip", "DIV2K_train_HR", range(1, 4)),
        ("DIV2K_valid_HR.zip", "DIV2K_valid_HR", range(801, 803)),
    ):
        with zipfile.ZipFile(root / zip_name, "w") as archive:
            for n in numbers:
                image = Image.fromarray(pattern(36, 45, seed=n))
                path = root / "tmp.png"
                image.save(path)
                archive.write(path, f"{folder}/{n:04d}.png")
            if folder.startswith("DIV2K_train"):
                archive.writestr(f"{folder}/0004.png", b"\x89PNG\r\n\x1a\n broken")
        (root / "tmp.png").unlink()
    return root


def test_from_hub_reads_a_local_folder_laid_out_like_the_hub_repo(tmp_path, caplog):
    repo = make_div2k_like_repo(tmp_path / "DIV2K")
    with caplog.at_level(logging.WARNING, logger="espcn_hf.data"):
        train = DataGenerator.from_hub(
            repo_id=str(repo), split="train", scale=SCALE, patch_size=PATCH, patches_per_image=4,
            cache_dir=str(tmp_path / "cache"),
        )  # fmt: skip
    assert train.names == ["0001", "0002", "0003"]
    assert len(train) == 12 and len(train.skipped["unreadable"]) == 1
    assert "unreadable: 1" in caplog.text
    assert np.array_equal(train.hr[1], mod_crop_np(pattern(36, 45, seed=2), SCALE))
    valid = DataGenerator.from_hub(
        repo_id=str(repo),
        data_files={"train": "DIV2K_train_HR.zip", "validation": "DIV2K_valid_HR.zip"},
        split="validation",
        scale=SCALE,
        mode="eval",
        cache_dir=str(tmp_path / "cache"),
    )
    assert valid.names == ["0801", "0802"] and valid[1]["name"] == "0802"
    assert pair_consistent(train[0], SCALE)


def mod_crop_np(array: np.ndarray, scale: int) -> np.ndarray:
    return array[: array.shape[0] // scale * scale, : array.shape[1] // scale * scale]


def test_from_dataset_uses_paired_lr_columns():
    datasets = pytest.importorskip("datasets")
    hr = [pattern(30, 36, seed=s) for s in range(2)]
    lr = [np.full((10, 12, 3), 7 * (s + 1), dtype=np.uint8) for s in range(2)]  # deliberately not bicubic
    table = datasets.Dataset.from_dict(
        {"hr": [Image.fromarray(a) for a in hr], "lr": [Image.fromarray(a) for a in lr]}
    ).cast_column("hr", datasets.Image())
    table = table.cast_column("lr", datasets.Image())
    ds = DataGenerator.from_dataset(table, scale=SCALE, mode="eval")
    assert len(ds) == 2
    assert torch.equal(ds[1]["pixel_values"], torch.full((3, 10, 12), 14 / 255.0))
    assert torch.equal(ds[1]["labels"], to_tensor(hr[1]).float())
    # An "image" column only: LR is made by bicubic_degrade.
    single = datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in hr]})
    ds = DataGenerator.from_dataset(single, scale=SCALE, mode="eval")
    assert torch.allclose(ds[0]["pixel_values"].double(), bicubic_degrade(to_tensor(hr[0]), SCALE), atol=1e-6)


def test_default_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ESPCN_HF_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="Set5"):
        load_benchmark("Set5", scale=2)
    monkeypatch.delenv("ESPCN_HF_DATA_DIR")
    assert default_data_dir().name == "data"


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        DataGenerator([pattern(30, 30)], mode="test")
    with pytest.raises(ValueError, match="patch_size"):
        DataGenerator([pattern(30, 30)], patch_size=0)
    ds = DataGenerator([pattern(30, 30)], scale=SCALE, patch_size=PATCH, patches_per_image=2)
    with pytest.raises(IndexError):
        ds[2]
    assert torch.equal(ds[-1]["labels"], ds[1]["labels"])
