"""Tests of the training pieces (`espcn_hf.training`) and of `scripts/train.py` end to end on tiny fixture data.

The end-to-end runs use `configs/smoke-cpu.yaml` (a 3-layer 8-channel net, 1 CPU thread) pointed at a few
small PNGs generated in `tmp_path`, so the whole file takes well under a minute on a 2-core CPU.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script
from PIL import Image

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, ESPCNImageProcessor
from espcn_hf.data import choose_data_path, training_folders
from espcn_hf.training import TrainingConfig
from espcn_hf.training.checkpoints import (
    RunLock,
    TrainState,
    init_from_pretrained,
    latest_checkpoint,
    list_checkpoints,
    save_checkpoint,
    save_model_folder,
)
from espcn_hf.training.config import load_config, parse_override
from espcn_hf.training.ema import EMA
from espcn_hf.training.losses import LOSSES, compute_loss, get_loss, loss_for_step, model_inputs
from espcn_hf.training.records import MetricsWriter, read_metrics
from espcn_hf.training.schedule import ScheduleClock, lr_lambda

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = ROOT / "scripts" / "train.py"
PLOT_SCRIPT = ROOT / "scripts" / "plot_training.py"
SMOKE = ROOT / "configs" / "smoke-cpu.yaml"
ACCELERATE = Path(sys.executable).with_name("accelerate")

train = load_script(TRAIN_SCRIPT, "train_script")  # the command line; the loop is espcn_hf.training


def _smooth_image(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """Random low-frequency colour image with a few edges: something an SR net can learn a little on."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 2 * np.pi)
        wave = 0.5 + 0.35 * np.sin(2 * np.pi * (fx * x + fy * y) + phase)
        wave += 0.15 * (x > rng.uniform(0.2, 0.8))
        channels.append(wave)
    array = np.clip(np.stack(channels, -1), 0, 1)
    return Image.fromarray((array * 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    train_dir, val_dir = root / "train", root / "val"
    train_dir.mkdir()
    val_dir.mkdir()
    for i in range(6):
        _smooth_image(rng, 60 + 3 * i, 66).save(train_dir / f"img{i}.png")
    for i in range(3):  # an odd count: the 2-process evaluation must drop accelerate's padding duplicate
        _smooth_image(rng, 36 + 6 * i, 45).save(val_dir / f"val{i}.png")
    (train_dir / "SOURCE.txt").write_text("not an image\n")
    return train_dir, val_dir


def _args(out: Path, data_dirs, *extra: str) -> list[str]:
    train_dir, val_dir = data_dirs
    return [
        "--config",
        str(SMOKE),
        "--output_dir",
        str(out),
        "--train_dirs",
        str(train_dir),
        "--val_dirs",
        str(val_dir),
        *extra,
    ]


def _subprocess_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    return env


def _single_process_psnr(folder: Path, val_dir: Path) -> float:
    """Set PSNR of a saved model, computed here in one process without accelerate."""
    from conftest import psnr_per_image

    from espcn_hf.data import DataGenerator
    from espcn_hf.inference import upscale_tensor

    model = ESPCNForImageSuperResolution.from_pretrained(folder).eval()
    dataset = DataGenerator.from_folder(val_dir, scale=model.config.upscale_factor, mode="eval")
    scores = []
    for i in range(len(dataset)):
        item = dataset[i]
        sr = upscale_tensor(model, item["pixel_values"][None])
        scores += psnr_per_image(sr, item["labels"][None], scale=model.config.upscale_factor)
    return float(np.mean(scores))


# -------------------------------------------------------------------------------------------- unit tests
def test_output_layer_learning_rate_multiplier():
    """`output_lr_scale` (the paper's slower output layer) scales the last convolution's learning rate only, and
    the scheduler keeps the ratio."""
    from espcn_hf.training.checkpoints import parameter_groups

    model = ESPCNForImageSuperResolution(ESPCNConfig(hidden_channels=[8, 8], kernel_sizes=[5, 3, 3]))
    groups = parameter_groups(model, 0.1)
    last = {id(p) for p in model.body[-1].parameters()}
    assert [g["lr_scale"] for g in groups] == [1.0, 0.1]
    assert {id(p) for p in groups[1]["params"]} == last and not last & {id(p) for p in groups[0]["params"]}
    for group in groups:
        group["lr"] = 1e-3 * group["lr_scale"]
    optimizer = torch.optim.Adam(groups, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    assert scheduler.get_last_lr() == pytest.approx([5e-4, 5e-5])
    with pytest.raises(ValueError, match="output_lr_scale"):
        TrainingConfig(output_lr_scale=0.0)


def test_lr_schedules():
    cosine = lr_lambda("cosine", max_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert cosine(0) == pytest.approx(0.1)
    assert cosine(9) == pytest.approx(1.0)
    assert cosine(10) == pytest.approx(1.0)
    assert cosine(55) == pytest.approx(0.55)
    assert cosine(100) == pytest.approx(0.1) and cosine(500) == pytest.approx(0.1)
    multistep = lr_lambda("multistep", max_steps=100, milestones=[50, 80], gamma=0.5)
    assert [multistep(s) for s in (0, 49, 50, 79, 80)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_lambda("linear", 10)


def test_schedule_clock_follows_time_budget():
    clock = ScheduleClock(max_steps=1000, time_limit_s=100.0)
    assert clock.update(step=10, seconds=50.0) == 500  # half the time spent: half-way through the schedule
    assert clock.update(step=900, seconds=50.0) == 900
    assert clock.update(step=10, seconds=500.0) == 1000
    factor = clock.wrap(lr_lambda("cosine", 1000, min_lr_ratio=0.0))
    assert factor(10) == pytest.approx(0.0, abs=1e-9)
    assert ScheduleClock(1000).update(step=7, seconds=1e9) == 7  # no budget: the step itself
    # the warmup follows optimizer steps even when the clock has run ahead (a fast GPU's first second)
    fast = ScheduleClock(max_steps=1_000_000, time_limit_s=240.0)
    fast.update(step=50, seconds=1.0)  # the clock is at step 4166
    warm = fast.wrap(lr_lambda("cosine", 1_000_000, min_lr_ratio=0.01), warmup_steps=200)
    assert warm(50) == pytest.approx(51 / 200 * lr_lambda("cosine", 1_000_000, min_lr_ratio=0.01)(4166))
    assert warm(500) == pytest.approx(lr_lambda("cosine", 1_000_000, min_lr_ratio=0.01)(4166))
    assert loss_for_step(799, 1000, "l1", "mse", 0.2) == "l1"
    assert loss_for_step(800, 1000, "l1", "mse", 0.2) == "mse"
    assert loss_for_step(999, 1000, "l1", "mse", 0.0) == "l1"


def test_ema_average_and_state_round_trip():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(50):
        ema.update(model)
    assert torch.allclose(ema.shadow["weight"], torch.ones(2, 2), atol=1e-6)
    clone = EMA(torch.nn.Linear(2, 2), decay=0.9)
    clone.load_state_dict(ema.state_dict())
    assert clone.num_updates == 50 and clone.decay == 0.5
    target = torch.nn.Linear(2, 2)
    clone.copy_to(target)
    assert torch.equal(target.weight, torch.ones(2, 2))
    with pytest.raises(ValueError, match="ema_decay"):
        EMA(model, decay=1.0)


def test_config_overrides_and_unknown_keys(tmp_path):
    assert parse_override("learning_rate=1e-3") == ("learning_rate", 1e-3)
    assert parse_override("model={hidden_channels: [4, 4]}") == ("model", {"hidden_channels": [4, 4]})
    for path in (ROOT / "configs").glob("*.yaml"):  # every preset is a valid TrainingConfig
        TrainingConfig.from_sources(path)
    config = TrainingConfig.from_sources(SMOKE, {"learning_rate": 1}, {"max_steps": 7})
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float) and config.max_steps == 7
    assert config.model == {"hidden_channels": [8, 8], "kernel_sizes": [3, 3, 3]}
    assert TrainingConfig.from_sources(
        None, dict([parse_override("rescale_augment=[0.9, 0.6]")])
    ).rescale_augment == [
        0.9,
        0.6,
    ]
    with pytest.raises(ValueError, match="Unknown hyper-parameter"):
        TrainingConfig.from_sources(SMOKE, {"learnig_rate": 1.0})
    for bad, message in (
        ({"loss": "l3"}, "unknown loss 'l3'"),
        ({"finetune_loss": "ssim"}, "unknown loss"),
        ({"batch_size": "64"}, "batch_size must be int"),
        ({"augment": 1}, "augment must be bool"),
        ({"data_path": "gpu"}, "data_path must be one of"),
        ({"mixed_precision": "fp8"}, "mixed_precision must be one of"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"rescale_augment": [0.8, 1.0]}, "rescale_augment factors must be numbers in"),
        ({"rescale_augment": ["x"]}, "rescale_augment factors must be numbers in"),
        ({"rescale_augment": 0.8}, "rescale_augment must be list"),
    ):
        with pytest.raises(ValueError, match=message):
            TrainingConfig.from_sources(None, bad)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_override("oops")
    (tmp_path / "c.json").write_text(json.dumps({"batch_size": 3}))
    assert load_config(tmp_path / "c.json") == {"batch_size": 3}
    assert TrainingConfig.from_sources(tmp_path / "c.json").batch_size == 3
    with pytest.raises(SystemExit):  # the command line reports a bad value as a usage error, no traceback
        train.main(["--set", "loss=l3"])


def test_losses_are_looked_up_by_name_and_computed_from_the_reconstruction():
    assert set(LOSSES) == {"l1", "mse", "charbonnier"}
    with pytest.raises(ValueError, match="unknown loss 'huber'"):
        get_loss("huber")
    prediction, target = torch.full((1, 1, 2, 2), 0.5), torch.zeros(1, 1, 2, 2)
    outputs = type("Out", (), {"reconstruction": prediction})()
    assert float(compute_loss(outputs, target, "l1")) == pytest.approx(0.5)
    assert float(compute_loss(outputs, target, "mse")) == pytest.approx(0.25)
    assert float(compute_loss(outputs, target, "charbonnier")) == pytest.approx(math.sqrt(0.25 + 1e-6))
    # A Y-channel model trains on the Y of the RGB pair (what the model's own loss path used to compute).
    rgb = torch.rand(2, 3, 4, 4)
    y_in, y_labels = model_inputs({"pixel_values": rgb, "labels": rgb}, num_channels=1)
    assert y_in.shape == (2, 1, 4, 4) and torch.equal(y_in, y_labels)
    assert model_inputs({"pixel_values": rgb, "labels": rgb}, num_channels=3)[0] is rgb


class _FakeAccelerator:
    """What save_checkpoint needs from an Accelerator, in one process; can crash inside save_state."""

    is_main_process = True

    def __init__(self):
        self.crash = False

    def wait_for_everyone(self):
        pass

    def save_state(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.safetensors").write_bytes(b"x")
        if self.crash:
            raise RuntimeError("killed mid-write")


def test_checkpoints_are_atomic_and_rotated(tmp_path):
    accelerator = _FakeAccelerator()
    for step in (10, 20, 30):
        save_checkpoint(accelerator, tmp_path, step, total_limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_20", "step_30"]
    accelerator.crash = True
    with pytest.raises(RuntimeError, match="cannot save checkpoint step_40"):  # one line, cleaned up
        save_checkpoint(accelerator, tmp_path, 40, total_limit=2)
    assert not (tmp_path / "step_40.tmp").exists() and latest_checkpoint(tmp_path).name == "step_30"
    (tmp_path / "step_40.tmp").mkdir()  # what a kill mid-write leaves: never taken for a checkpoint
    (tmp_path / "step_40.tmp" / "model.safetensors").write_bytes(b"x")
    assert latest_checkpoint(tmp_path).name == "step_30"
    accelerator.crash = False
    save_checkpoint(accelerator, tmp_path, 30, total_limit=2)  # re-saving a step replaces it
    assert latest_checkpoint(tmp_path).name == "step_30" and not (tmp_path / "step_40.tmp").exists()
    assert latest_checkpoint(tmp_path / "missing") is None


def test_init_from_copies_feature_layers(tmp_path):
    tiny = {"hidden_channels": [4, 4], "kernel_sizes": [3, 3, 3]}
    source = ESPCNForImageSuperResolution(ESPCNConfig(upscale_factor=3, **tiny))
    save_model_folder(source, tmp_path / "x3", 3, extra={"step": 1})
    assert (tmp_path / "x3" / "model.safetensors").is_file() and not (tmp_path / "x3.tmp").exists()
    assert ESPCNImageProcessor.from_pretrained(tmp_path / "x3").upscale_factor == 3
    target = ESPCNForImageSuperResolution(ESPCNConfig(upscale_factor=2, **tiny))
    report = init_from_pretrained(target, tmp_path / "x3")
    assert report["skipped"] == ["body.4.weight", "body.4.bias"]
    assert torch.equal(target.body[0].weight, source.body[0].weight)
    assert torch.equal(target.body[2].bias, source.body[2].bias)
    wider = ESPCNForImageSuperResolution(
        ESPCNConfig(upscale_factor=2, hidden_channels=[8, 4], kernel_sizes=[3, 3, 3])
    )
    with pytest.raises(ValueError, match="feature layers"):
        init_from_pretrained(wider, tmp_path / "x3")


def test_metrics_writer_truncates_after_resume_point(tmp_path):
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    for step in (10, 20, 30):
        writer.write({"step": step, "seconds": step / 10, "set5_psnr": 20.0 + step})
    writer.truncate_after(20)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [10, 20]
    state = TrainState(step=5, epoch=1, batch_in_epoch=3)
    restored = TrainState()
    restored.load_state_dict(state.state_dict())
    assert restored == state


def test_truncate_after_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10, "val_psnr": 30.0}\n{"step": 20, "val_psnr": 31.0}\n{"step": 30, "val_ps')
    MetricsWriter(path).truncate_after(20)  # main raised JSONDecodeError here
    assert [r["step"] for r in read_metrics(path)] == [10, 20]
    assert path.read_text().endswith("}\n")
    path.write_text('{"step": 10}\n12')  # a torn line that still parses (as a number)
    MetricsWriter(path).truncate_after(20)
    assert read_metrics(path) == [{"step": 10}]


def test_run_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    holder = subprocess.Popen(
        # another process holding output_dir/.lock the way RunLock takes it (filelock; importing only that
        # keeps the test fast)
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; "
         "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(60)",
         str(tmp_path / ".lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match="in use by a running training process"):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)  # dies without releasing: the OS drops its lock
        holder.wait()
    lock = RunLock(tmp_path).acquire()
    assert lock.held
    lock.release()
    assert not lock.held


# --------------------------------------------------------------------------------------- end-to-end runs
def test_smoke_run_one_process(tmp_path, data_dirs, capsys):
    out = tmp_path / "run"
    # the DataLoader path here (the device path is the default on CPU: the DDP and resume tests run it)
    args = _args(out, data_dirs, "--max_steps", "24", "--eval_steps", "12", "--data_path", "loader")
    assert train.main(args) == 0
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [12, 24]
    assert all(math.isfinite(r["val_psnr"]) and r["val_images"] == 3 and r["seconds"] > 0 for r in records)
    info = json.loads((out / "run.json").read_text())
    assert info["num_processes"] == 1 and info["bicubic"]["val_psnr"] > 20
    assert info["data_path"] == "loader" and info["batches_per_epoch"] == info["train_patches"] // 8
    assert {p.name for p in (out / "checkpoints").iterdir()} == {"step_20", "step_24"}  # limit 2, every 10

    # best/ and final/ load with from_pretrained; safetensors only; the processor knows the factor
    for name in ("best", "final"):
        folder = out / name
        assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
        model = ESPCNForImageSuperResolution.from_pretrained(folder)
        assert model.config.upscale_factor == 3 and model.config.hidden_channels == [8, 8]
        assert ESPCNImageProcessor.from_pretrained(folder).upscale_factor == 3
    best = json.loads((out / "best" / "eval_results.json").read_text())
    assert best["val_psnr"] == max(r["val_psnr"] for r in records)
    assert _single_process_psnr(out / "best", data_dirs[1]) == pytest.approx(best["val_psnr"], abs=1e-6)

    # the plot script reads the run
    plot_main = load_script(PLOT_SCRIPT, "plot_training_script").main

    capsys.readouterr()
    assert plot_main([str(out), "--metric", "val_psnr", "-o", str(tmp_path / "curve.png")]) == 0
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert "minutes until val_psnr passes bicubic + 2 dB" in capsys.readouterr().out


@pytest.mark.slow
def test_two_processes_ddp_on_cpu(tmp_path, data_dirs):
    """`accelerate launch --multi_gpu --num_processes 2` runs real DDP over gloo on a machine without GPU."""
    out = tmp_path / "ddp"
    command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29531"]
    command += [
        str(TRAIN_SCRIPT),
        *_args(out, data_dirs, "--max_steps", "12", "--eval_steps", "6", "--set", "patches_per_image=8"),
    ]
    result = subprocess.run(
        command, cwd=ROOT, env=_subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((out / "run.json").read_text())
    assert info["num_processes"] == 2 and info["distributed_type"] == "DistributedType.MULTI_CPU"
    # the device path (auto on CPU): each process cuts its own share of every batch (tests/test_data_device.py)
    assert info["data_path"] == "device" and info["data_path_reason"].startswith("auto:")
    final = json.loads((out / "final" / "eval_results.json").read_text())
    assert final["step"] == 12 and final["val_images"] == 3  # the padding duplicate was dropped
    assert _single_process_psnr(out / "final", data_dirs[1]) == pytest.approx(final["val_psnr"], abs=1e-6)


@pytest.mark.slow
def test_sigkill_and_resume_matches_uninterrupted_run(tmp_path, data_dirs):
    steps = ["--max_steps", "300", "--eval_steps", "100", "--set", "batch_size=16", "--set", "patch_size=12"]
    steps += ["--set", "patches_per_image=8"]
    # 1. a run killed with SIGKILL mid-training
    killed = tmp_path / "killed"
    command = [sys.executable, str(TRAIN_SCRIPT), *_args(killed, data_dirs, *steps)]
    process = subprocess.Popen(
        command, cwd=ROOT, env=_subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        latest = latest_checkpoint(killed / "checkpoints")
        if latest is not None and int(latest.name.split("_")[1]) >= 30:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "final").exists()
    killed_at = int(latest_checkpoint(killed / "checkpoints").name.split("_")[1])
    assert killed_at < 300

    # 2. resumed from the newest complete checkpoint
    assert train.main(_args(killed, data_dirs, *steps, "--resume_from_checkpoint", "latest")) == 0
    # 3. the same run without interruption
    reference = tmp_path / "reference"
    assert train.main(_args(reference, data_dirs, *steps)) == 0

    assert json.loads((killed / "run.json").read_text())["data_path"] == "device"
    resumed = json.loads((killed / "final" / "eval_results.json").read_text())
    uninterrupted = json.loads((reference / "final" / "eval_results.json").read_text())
    assert resumed["step"] == uninterrupted["step"] == 300
    assert resumed["val_psnr"] == uninterrupted["val_psnr"]  # bit-identical: data is a function of the step
    assert [r["step"] for r in read_metrics(killed / "metrics.jsonl")] == [100, 200, 300]


def test_push_to_hub_without_network_fails_after_saving(tmp_path, data_dirs, capsys, monkeypatch):
    import espcn_hf.hub

    def offline(*args, **kwargs):
        raise espcn_hf.hub.HubError("cannot reach https://huggingface.co (offline)")

    monkeypatch.setattr(espcn_hf.hub, "push_checkpoint", offline)
    out = tmp_path / "push"
    args = _args(
        out, data_dirs, "--max_steps", "6", "--eval_steps", "6", "--push_to_hub", "--hub_model_id", "me/x"
    )
    capsys.readouterr()
    assert train.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: push to the Hub (me/x) failed") and str(out / "best") in err[-1]
    assert (out / "best" / "model.safetensors").is_file() and (out / "final" / "model.safetensors").is_file()
    assert latest_checkpoint(out / "checkpoints").name == "step_6"


def test_resume_falls_back_past_a_damaged_checkpoint(tmp_path, data_dirs, capsys):
    out = tmp_path / "damaged"
    common = ["--eval_steps", "10", "--checkpointing_steps", "10"]
    assert train.main(_args(out, data_dirs, "--max_steps", "20", *common)) == 0
    newest = latest_checkpoint(out / "checkpoints")
    assert newest.name == "step_20"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated by a full disk, say
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 25, "val_ps')  # torn by a kill mid-write
    capsys.readouterr()
    resume = ["--max_steps", "30", *common, "--resume_from_checkpoint", "latest"]
    assert train.main(_args(out, data_dirs, *resume)) == 0
    printed = capsys.readouterr().out
    assert f"checkpoint {newest} cannot be used (" in printed  # names the folder, says why
    assert f"resuming from {out / 'checkpoints' / 'step_10'}, the newest checkpoint that loads" in printed
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [10, 20, 30]
    assert json.loads((out / "final" / "eval_results.json").read_text())["step"] == 30
    # the record of the weights lists each session's command (the first run's came back with step_10)
    record = json.loads((out / "final" / "training_config.json").read_text())
    assert len(record["commands"]) == 2 and record["commands"][1].endswith("--resume_from_checkpoint latest")
    assert record["commands"][0].startswith("python scripts/train.py --config ")
    assert record["train_dirs"] == [str(data_dirs[0])]
    again = TrainingConfig.from_sources(out / "final" / "training_config.json")  # a record is a preset too
    assert again.to_dict() == {k: v for k, v in record.items() if k != "commands"}

    # an explicit folder that does not load: one line naming it, exit 1, no traceback
    (out / "checkpoints" / "step_30" / "model.safetensors").write_bytes(b"")
    explicit = ["--max_steps", "40", "--resume_from_checkpoint", str(out / "checkpoints" / "step_30")]
    assert train.main(_args(out, data_dirs, *explicit)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no checkpoint could be loaded: ") and "step_30" in err[-1]


def test_resume_latest_without_checkpoint_starts_fresh(tmp_path, data_dirs, capsys):
    out = tmp_path / "fresh"
    args = _args(
        out, data_dirs, "--max_steps", "4", "--eval_steps", "4", "--resume_from_checkpoint", "latest"
    )
    capsys.readouterr()
    assert train.main(args) == 0  # main raised FileNotFoundError here
    assert f"--resume_from_checkpoint latest: no checkpoint in {out / 'checkpoints'}, starting fresh" in (
        capsys.readouterr().out
    )
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [4]


def test_div2k_preset_trains_from_a_local_copy_of_the_hub_repo(tmp_path, data_dirs, monkeypatch):
    """configs/espcn-x3-div2k.yaml through --hub_dataset -> DataGenerator.from_hub -> datasets.load_dataset, on
    a folder laid out like goodfellowliu/DIV2K (zips of DIV2K_{train,valid}_HR/NNNN.png); the Hub itself is
    not reachable here."""
    datasets = pytest.importorskip("datasets")
    import zipfile

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    repo = tmp_path / "DIV2K"
    repo.mkdir()
    rng = np.random.default_rng(1)
    for zip_name, numbers in (("DIV2K_train_HR.zip", range(1, 4)), ("DIV2K_valid_HR.zip", range(801, 803))):
        folder = zip_name.removesuffix(".zip")
        with zipfile.ZipFile(repo / zip_name, "w") as archive:
            for n in numbers:
                png = tmp_path / f"{n:04d}.png"
                _smooth_image(rng, 60 + n % 7, 72).save(png)
                archive.write(png, f"{folder}/{n:04d}.png")
    assert (
        TrainingConfig.from_sources(ROOT / "configs" / "espcn-x3-div2k.yaml").hub_dataset
        == "goodfellowliu/DIV2K"
    )
    out = tmp_path / "div2k"
    args = ["--config", str(ROOT / "configs" / "espcn-x3-div2k.yaml"), "--hub_dataset", str(repo)]
    args += ["--output_dir", str(out), "--val_dirs", str(data_dirs[1]), "--mixed_precision", "no"]
    args += ["--max_steps", "4", "--eval_steps", "4", "--num_threads", "1", "--set", "patch_size=8"]
    args += ["--set", "batch_size=4", "--set", "model={hidden_channels: [8, 8], kernel_sizes: [3, 3, 3]}"]
    assert train.main(args) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["hub_dataset"] == str(repo) and info["config"]["upscale_factor"] == 3
    assert info["train_images"] == 3  # the train split only, read from DIV2K_train_HR.zip
    assert info["config"]["patch_size"] == 8 and info["config"]["lr_schedule"] == "cosine"
    assert (out / "best" / "model.safetensors").is_file()


def test_an_unreachable_hub_dataset_is_one_line_naming_train_dirs(tmp_path, data_dirs, monkeypatch, capsys):
    """Without a network the DIV2K presets ended after ~24 s of retries in ~97 lines of tracebacks; now the
    Hub's offline mode is used as soon as no network answers, and the run ends in one line."""
    datasets = pytest.importorskip("datasets")
    import espcn_hf.data

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.setattr(espcn_hf.data, "_hub_answers", lambda repo_id: False)  # no network, at once
    args = ["--config", str(ROOT / "configs" / "espcn-x3-div2k.yaml"), "--output_dir", str(tmp_path / "run")]
    args += ["--val_dirs", str(data_dirs[1]), "--mixed_precision", "no", "--num_threads", "1"]
    start = time.monotonic()
    assert train.main(args) == 1
    seconds = time.monotonic() - start
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: goodfellowliu/DIV2K: the Hub cannot be reached")
    assert "--train_dirs" in err and "Traceback" not in err
    assert datasets.config.HF_HUB_OFFLINE is False or os.environ.get("HF_HUB_OFFLINE")  # restored afterwards
    print(f"failed in {seconds:.1f} s")


def test_data_path_choice_and_every_training_set(tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    assert choose_data_path("auto", 10_000_000, cpu)[0] == "device"
    path, why = choose_data_path("auto", 10**15, cpu)  # a petabyte does not fit: the DataLoader path
    assert path == "loader" and why.startswith("auto: 1000000000 MB of training images")
    assert choose_data_path("loader", 1, cpu) == ("loader", "data_path=loader")
    assert choose_data_path("device", 10**15, cpu)[0] == "device"  # forced
    with pytest.raises(ValueError, match="data_path"):
        choose_data_path("gpu", 1, cpu)
    # train_dirs: all = every folder under <data dir>/train (a set added later is picked up too)
    for name in ("T91", "BSD200", "NewSet"):
        (tmp_path / "train" / name).mkdir(parents=True)
    (tmp_path / "train" / "README.txt").write_text("not a set")
    monkeypatch.setenv("ESPCN_HF_DATA_DIR", str(tmp_path))
    assert [p.name for p in training_folders("all")] == ["BSD200", "NewSet", "T91"]
    assert training_folders(["T91"]) == [tmp_path / "train" / "T91"]
    for preset in ("espcn-x2", "espcn-x3", "espcn-x4", "espcn-paper-x3"):
        for suffix in ("", "-gpu"):
            assert (
                TrainingConfig.from_sources(ROOT / "configs" / f"{preset}{suffix}.yaml").train_dirs == "all"
            )


@pytest.mark.slow
def test_bf16_channels_last_and_accumulation_on_the_device_path(tmp_path, data_dirs):
    """The GPU presets' settings (bf16 autocast through accelerate, channels-last memory) with gradient
    accumulation, on CPU tensors: each optimizer step takes two device-path batches."""
    out = tmp_path / "amp"
    extra = [
        "--max_steps",
        "4",
        "--eval_steps",
        "4",
        "--mixed_precision",
        "bf16",
        "--set",
        "channels_last=true",
    ]
    extra += ["--set", "gradient_accumulation_steps=2", "--data_path", "device"]
    # its own process: accelerate's state (mixed precision included) is one per process
    command = [sys.executable, str(TRAIN_SCRIPT), *_args(out, data_dirs, *extra)]
    result = subprocess.run(
        command, cwd=ROOT, env=_subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((out / "run.json").read_text())
    assert info["mixed_precision"] == "bf16" and info["data_path"] == "device"
    record = read_metrics(out / "metrics.jsonl")[-1]
    assert record["step"] == 4 and math.isfinite(record["val_psnr"])
    model = ESPCNForImageSuperResolution.from_pretrained(out / "final")
    assert next(model.parameters()).dtype == torch.float32  # the saved weights stay fp32
    # the data position saved in the checkpoint: 2 batches per optimizer step
    state = torch.load(out / "checkpoints" / "step_4" / "custom_checkpoint_0.pkl", weights_only=False)
    assert state["step"] == 4 and state["data_step"] == 8


def test_device_name_says_what_a_run_was_measured_on():
    from espcn_hf.training.records import device_name

    name = device_name("cpu")
    assert name.startswith("cpu: ") and f"{os.cpu_count()} CPUs" in name and "torch threads" in name


def test_saving_a_model_folder_prints_no_progress_bar_and_restores_the_switch(tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution
    from espcn_hf.training.checkpoints import save_model_folder

    model = ESPCNForImageSuperResolution(
        ESPCNConfig(upscale_factor=2, hidden_channels=[4, 4], kernel_sizes=[3, 3, 3])
    )
    assert hf_logging.is_progress_bar_enabled()
    save_model_folder(model, tmp_path / "best", 2, extra={"step": 1})
    assert "Writing model shards" not in capsys.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
    assert (tmp_path / "best" / "model.safetensors").is_file()


def _nan_weights(checkpoint: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(checkpoint / "model.safetensors")
    name = next(iter(weights))
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, checkpoint / "model.safetensors")


@pytest.mark.parametrize("damage", ["nan_weights", "torn_random_states"])
def test_resume_never_continues_on_garbage(tmp_path, data_dirs, capsys, damage):
    """A checkpoint with NaN weights was resumed as "latest" (loss=nan, NaN checkpoints and final/, exit 0); a torn
    random_states_0.pkl was loaded without notice (accelerate only logs it). Both are now damaged checkpoints:
    the run falls back to the previous one, saying so."""
    out = tmp_path / damage
    common = ["--eval_steps", "10", "--checkpointing_steps", "10"]
    assert train.main(_args(out, data_dirs, "--max_steps", "20", *common)) == 0
    newest = latest_checkpoint(out / "checkpoints")
    if damage == "nan_weights":
        _nan_weights(newest)
    else:
        states = newest / "random_states_0.pkl"
        states.write_bytes(states.read_bytes()[:40])
    capsys.readouterr()
    assert (
        train.main(_args(out, data_dirs, "--max_steps", "30", *common, "--resume_from_checkpoint", "latest"))
        == 0
    )
    printed = capsys.readouterr().out
    assert f"checkpoint {newest} cannot be used (DamagedCheckpointError: " in printed
    assert "resuming from" in printed and "step_10" in printed
    final = ESPCNForImageSuperResolution.from_pretrained(out / "final")  # refuses non-finite weights
    assert all(torch.isfinite(p).all() for p in final.parameters())


def test_a_loss_that_becomes_non_finite_stops_the_run_saving_nothing(
    tmp_path, data_dirs, capsys, monkeypatch
):
    import espcn_hf.training.loop as loop

    real, calls = loop.compute_loss, []

    def diverging(outputs, labels, name):
        calls.append(1)
        loss = real(outputs, labels, name)
        return loss * float("nan") if len(calls) > 12 else loss

    monkeypatch.setattr(loop, "compute_loss", diverging)
    out = tmp_path / "nan"
    args = _args(out, data_dirs, "--max_steps", "30", "--eval_steps", "10", "--checkpointing_steps", "10")
    assert train.main([*args, "--log_steps", "5"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: the training loss became non-finite by step 15")
    assert "Traceback" not in err
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_10"]  # nothing after step 10
    assert not (out / "final").exists()
    assert json.loads((out / "best" / "eval_results.json").read_text())["step"] == 10


def test_checkpoint_saving_faults_are_one_line_or_recovered(tmp_path, capsys):
    """A full disk while saving (torch says "unexpected pos 4608 vs 4500"), a stray file named like the next
    checkpoint, and a folder left half-swapped by a kill between replace_dir's two renames."""
    import errno

    from espcn_hf.fileio import recover_dir
    from espcn_hf.training.checkpoints import CheckpointSaveError, recover_folders

    accelerator = _FakeAccelerator()
    save_checkpoint(accelerator, tmp_path / "ckpt", 10, total_limit=2)

    def full_disk(path):
        Path(path).mkdir(parents=True, exist_ok=True)
        raise OSError(errno.ENOSPC, "No space left on device")

    accelerator.save_state = full_disk
    with pytest.raises(CheckpointSaveError, match="no space left on device while saving checkpoint step_20"):
        save_checkpoint(accelerator, tmp_path / "ckpt", 20, total_limit=2)
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["step_10"]

    accelerator = _FakeAccelerator()
    (tmp_path / "ckpt" / "step_30").write_text("stray")
    lines = []
    save_checkpoint(accelerator, tmp_path / "ckpt", 30, total_limit=2, log=lines.append)
    assert (tmp_path / "ckpt" / "step_30").is_dir() and len(lines) == 1 and "is a file" in lines[0]

    run = tmp_path / "run"
    (run / "best.old").mkdir(parents=True)  # killed between the renames: best.old and best.tmp, no best/
    (run / "best.old" / "model.safetensors").write_bytes(b"old complete")
    (run / "best.tmp").mkdir()
    assert recover_folders(run) == [run / "best"]
    assert (run / "best" / "model.safetensors").read_bytes() == b"old complete" and not (
        run / "best.old"
    ).exists()
    assert not recover_dir(run / "best")  # nothing to do the second time


def test_bad_yaml_and_an_unusable_output_dir_are_one_line(tmp_path, data_dirs, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_steps: 10\nlearning_rate: [1e-3\n")
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--config", str(bad), "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "not valid YAML (line 3" in err and "Traceback" not in err
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert train.main(_args(a_file, data_dirs, "--max_steps", "2")) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: --output_dir {a_file}: is a file, not a folder"
