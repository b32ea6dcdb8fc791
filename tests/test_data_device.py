"""DevicePatchSampler: the device-resident training data path (crops cut by index from tensors on a device).

Everything here runs on CPU tensors; the same code runs on CUDA (`scripts/train_gpu.sh` exercises it there).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script
from PIL import Image

from espcn_hf.data import DataGenerator, DevicePatchSampler

FIXTURES = Path(__file__).parent / "fixtures"

SCALE, PATCH = 3, 8


def images(count: int = 5, seed: int = 0) -> list[np.ndarray]:
    """Random uint8 images of different sizes (noise: any misplaced pixel shows)."""
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 256, (int(rng.integers(40, 70)), int(rng.integers(40, 70)), 3), dtype=np.uint8)
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def dataset() -> DataGenerator:
    return DataGenerator(images(), scale=SCALE, patch_size=PATCH, patches_per_image=4, seed=7)


def reference_item(
    ds: DataGenerator, image: int, y: int, x: int, t: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """What `DataGenerator.__getitem__` returns for these draws (its own crop, transform and conversion)."""
    p, r = ds.patch_size, ds.scale
    lr = ds.lr[image][y : y + p, x : x + p]
    hr = ds.hr[image][r * y : r * (y + p), r * x : r * (x + p)]
    if t:
        lr, hr = ds._transform(lr, t), ds._transform(hr, t)
    return ds._to_tensor(lr), ds._to_tensor(hr)


def test_crops_equal_the_dataset_items_for_the_same_draws(dataset):
    sampler = DevicePatchSampler(dataset, batch_size=96)
    seen = set()
    for step in range(3):
        batch = sampler.batch(step)
        assert batch["pixel_values"].shape == (96, 3, PATCH, PATCH)
        assert batch["labels"].shape == (96, 3, SCALE * PATCH, SCALE * PATCH)
        assert batch["labels"].dtype == torch.float32
        for k, draw in enumerate(zip(*sampler.indices(step), strict=True)):
            lr, hr = reference_item(dataset, *map(int, draw))
            assert torch.equal(batch["pixel_values"][k], lr), (step, k, draw)
            assert torch.equal(batch["labels"][k], hr), (step, k, draw)
            seen.add(int(draw[3]))
    assert seen == set(range(8))  # every dihedral transform was checked

    # The same draws through DataGenerator.__getitem__ itself (its draw() patched to return them).
    image, y, x, t = (int(v[5]) for v in sampler.indices(0))
    ds = DataGenerator(images(), scale=SCALE, patch_size=PATCH, patches_per_image=4, seed=7)
    ds.draw = lambda index: (image, y, x, t)
    item = ds[0]
    batch = sampler.batch(0)
    assert torch.equal(batch["pixel_values"][5], item["pixel_values"])
    assert torch.equal(batch["labels"][5], item["labels"])


def test_no_augmentation_means_identity_transform():
    ds = DataGenerator(images(2), scale=2, patch_size=6, augment=False)
    sampler = DevicePatchSampler(ds, batch_size=16)
    image, y, x, t = sampler.indices(4)
    assert not t.any()
    batch = sampler.batch(4)
    for k in range(16):
        lr, hr = reference_item(ds, int(image[k]), int(y[k]), int(x[k]), 0)
        assert torch.equal(batch["labels"][k], hr) and torch.equal(batch["pixel_values"][k], lr)


def test_deterministic_per_seed_and_step_so_resume_is_exact(dataset):
    a = DevicePatchSampler(dataset, batch_size=32)
    b = DevicePatchSampler(dataset, batch_size=32)  # a "restarted process": only the step is carried over
    run = [a.batch(step)["labels"] for step in range(5)]
    assert all(torch.equal(run[step], b.batch(step)["labels"]) for step in (3, 4))  # resumed at step 3
    assert not torch.equal(run[0], run[1])
    other = DevicePatchSampler(dataset, batch_size=32, seed=8)
    assert not torch.equal(run[0], other.batch(0)["labels"])
    # reusing the previous batch's tensors gives the same values
    previous = a.batch(0)
    again = a.batch(3, out=previous)
    assert again["labels"].data_ptr() == previous["labels"].data_ptr()
    assert torch.equal(again["labels"], run[3])


def test_each_rank_draws_its_own_share_of_the_global_batch(dataset):
    world = 3
    single = DevicePatchSampler(dataset, batch_size=12 * world)
    ranks = [DevicePatchSampler(dataset, batch_size=12, rank=r, world_size=world) for r in range(world)]
    for step in (0, 9):
        shares = [set(zip(*(v.tolist() for v in s.indices(step)), strict=True)) for s in ranks]
        assert all(len(share) == 12 for share in shares)
        assert not (shares[0] & shares[1]) and not (shares[1] & shares[2]) and not (shares[0] & shares[2])
        # together they are exactly the one-process batch of the same global size
        whole = set(zip(*(v.tolist() for v in single.indices(step)), strict=True))
        assert shares[0] | shares[1] | shares[2] == whole


def test_bad_arguments(dataset):
    with pytest.raises(ValueError, match="train-mode"):
        DevicePatchSampler(DataGenerator(images(1), scale=SCALE, mode="eval"), batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        DevicePatchSampler(dataset, batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        DevicePatchSampler(dataset, batch_size=4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="step"):
        DevicePatchSampler(dataset, batch_size=4).indices(-1)


# ------------------------------------------------------------------------------------------------- scripts
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name: str):
    return load_script(SCRIPTS / f"{name}.py", name)


def test_benchmark_data_writes_both_paths_side_by_side(tmp_path):
    out = tmp_path / "data_throughput_cpu.json"
    args = [
        "--device",
        "cpu",
        "--folders",
        str(FIXTURES / "tiny_set"),
        "--patch-size",
        "8",
        "--batch-size",
        "4",
    ]
    args += ["--batches", "1", "--steps", "1", "--repeats", "1", "--workers", "0", "--out", str(out)]
    assert _script("benchmark_data").main(args) == 0
    result = json.loads(out.read_text())
    assert result["patches_per_s"] == result["paths_patches_per_s"]["device"] > 0
    assert result["paths_patches_per_s"]["loader_0_workers"] > 0 and result["batch_size"] == 4
    assert "| device |" in out.with_suffix(".md").read_text()


def test_prepare_gpu_data_copies_images_only_and_stores_bmp_losslessly(tmp_path):
    source = tmp_path / "shared"
    for folder in ("train/T91", "train/NewSet", "benchmarks/Set5"):
        (source / folder).mkdir(parents=True)
        (source / folder / "SOURCE.txt").write_text("where these came from")
    pixels = images(1)[0]
    Image.fromarray(pixels).save(source / "train/T91/t1.bmp")
    Image.fromarray(pixels).save(source / "train/NewSet/a.jpg", quality=90)
    Image.fromarray(pixels).save(source / "benchmarks/Set5/baby.png")
    (source / "train/NewSet/Thumbs.db").write_bytes(b"junk")
    target = tmp_path / "gpu_data"
    assert (
        _script("prepare_gpu_data").main(
            ["--source", str(source), "--target", str(target), "--val-sets", "Set5"]
        )
        == 0
    )
    assert sorted(p.name for p in (target / "train" / "T91").iterdir()) == ["SOURCE.txt", "t1.png"]
    assert np.array_equal(np.asarray(Image.open(target / "train/T91/t1.png")), pixels)
    assert sorted(p.name for p in (target / "train" / "NewSet").iterdir()) == ["SOURCE.txt", "a.jpg"]
    assert (target / "train/NewSet/a.jpg").read_bytes() == (source / "train/NewSet/a.jpg").read_bytes()
    assert (target / "benchmarks/Set5/baby.png").is_file()
