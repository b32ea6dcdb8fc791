"""The training loop: `train(config, run)`, one function read top to bottom in the shape of accelerate's
`training_function` (examples/complete_cv_example.py, by_feature/checkpointing.py), with small named helpers
above it. `scripts/train.py` parses the command line and calls it.

What it guarantees:
- Checkpoints (`checkpoints/step_N`: model, optimizer, scheduler, EMA, RNG, step and data position) are written
  atomically; `--resume_from_checkpoint latest` continues bit-identically after a SIGKILL and falls back past a
  damaged or non-finite checkpoint (`checkpoints.resume_from`).
- `best/` (the best score on the first validation set) and `final/` are plain `save_pretrained` folders (the
  EMA weights when `ema_decay > 0`; re-parameterised blocks collapsed), written atomically.
- A loss or weights that become non-finite stop the run with one message and nothing new saved; SIGTERM/SIGINT
  stop it cleanly (state, best/ and final/ saved); the time budget (`max_train_minutes`) too.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from ..configuration_espcn import ESPCNConfig
from ..data import (
    DataGenerator,
    DevicePatchSampler,
    choose_data_path,
    default_data_dir,
    load_benchmark,
    training_folders,
)
from ..fileio import atomic_write_text
from ..modeling_espcn import ESPCNForImageSuperResolution
from ..reparam import collapsed, expand
from .checkpoints import (
    CheckpointSaveError,
    RunLock,
    TrainState,
    init_from_pretrained,
    parameter_groups,
    recover_folders,
    resume_from,
    save_checkpoint,
    save_model_folder,
)
from .config import RunOptions, TrainingConfig
from .ema import EMA
from .losses import compute_loss, loss_for_step, model_inputs
from .records import MetricsWriter, device_name
from .schedule import ScheduleClock, lr_lambda


class TrainingStopped(RuntimeError):
    """The run cannot go on (a non-finite loss or weights); the message says why, nothing new was saved."""


# ------------------------------------------------------------------------------------------------- helpers
def get_datasets(
    config: TrainingConfig, data_dir: Path
) -> tuple[DataGenerator, dict[str, DataGenerator], list[Path]]:
    """The training DataGenerator, a {name: eval DataGenerator} dict of validation sets, and the training folders
    (none for a Hub dataset), from `data_dir` (`train/`, `benchmarks/`) unless `train_dirs` / `val_dirs` name
    folders. Tests point this at tiny local data through `train_dirs` / `val_dirs`."""
    r = config.upscale_factor
    train_kwargs = {
        "scale": r,
        "mode": "train",
        "patch_size": config.patch_size,
        "patches_per_image": config.patches_per_image,
        "augment": config.augment,
        "rescale": config.rescale_augment,
        "seed": config.seed,
        "max_images": config.max_train_images,
    }
    folders = []
    if config.hub_dataset:
        train = DataGenerator.from_hub(
            repo_id=config.hub_dataset,
            data_files=config.hub_data_files,
            split=config.hub_split,
            **train_kwargs,
        )
    else:
        folders = training_folders(config.train_dirs, root=data_dir / "train")
        train = DataGenerator.from_folder(folders, **train_kwargs)
    if len(train) == 0:
        raise ValueError("No training images (check train_dirs / hub_dataset and patch_size)")
    if config.val_dirs:
        val = {Path(d).name: DataGenerator.from_folder(d, scale=r, mode="eval") for d in config.val_dirs}
    else:
        val = {name: load_benchmark(name, root=data_dir / "benchmarks", scale=r) for name in config.val_sets}
    return train, val, folders


def build_model(config: TrainingConfig) -> ESPCNForImageSuperResolution:
    model_config = ESPCNConfig.from_preset(
        config.preset, upscale_factor=config.upscale_factor, **config.model
    )
    return ESPCNForImageSuperResolution(model_config)


def build_accelerator(config: TrainingConfig, run: RunOptions):
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import ProjectConfiguration

    from ..batch import cpu_processes

    return Accelerator(
        cpu=run.cpu or cpu_processes(),
        mixed_precision=config.mixed_precision,  # None: accelerate's own setting (launch flag / env)
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with="tensorboard" if run.with_tracking else None,
        # Checkpoint rotation stays ours (save_checkpoint): accelerate's `total_limit` only applies to its
        # automatic naming, which writes checkpoint folders in place, not through an atomic rename.
        project_config=ProjectConfiguration(project_dir=str(run.output_dir)),
        step_scheduler_with_optimizer=False,  # one scheduler step per optimizer step, whatever the process count
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )


def validate(model, sets, accelerator, scale: int) -> dict[str, float]:
    """`{set}_psnr` / `{set}_ssim` / `{set}_images` (Y channel, `scale` border) of `model` on each validation set,
    through `espcn_hf.evaluation.evaluate`, the project's only evaluation loop (sharded over processes and
    gathered, so every process gets the whole-set means)."""
    from ..evaluation import evaluate

    return evaluate({"model": model}, sets, scale, accelerator).flat_metrics("model")


def bicubic_baseline(sets, accelerator, scale: int) -> dict[str, float]:
    """PSNR-Y of MATLAB-bicubic upsampling (the standard baseline) on the validation sets."""
    from ..evaluation import bicubic_upscaler, evaluate

    report = evaluate({"bicubic": bicubic_upscaler(scale)}, sets, scale, accelerator)
    return {key: value for key, value in report.flat_metrics("bicubic").items() if key.endswith("_psnr")}


def batches(state: TrainState, sampler, loader, dataset, accelerator) -> Iterator[dict]:
    """Training batches forever; the data position in `state` counts the batches handed out (so a resumed run
    continues with the next one)."""
    if sampler is not None:
        batch = None
        while True:
            batch = sampler.batch(state.data_step, out=batch)
            state.data_step += 1
            yield batch
    while True:
        dataset.set_epoch(state.epoch)  # the random crops of this epoch ...
        loader.set_epoch(state.epoch)  # ... and the shuffled order (seeded sampler)
        epoch = (
            accelerator.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch else loader
        )
        for batch in epoch:
            state.batch_in_epoch += 1
            yield batch
        state.epoch += 1
        state.batch_in_epoch = 0


class StopRequest:
    """SIGTERM / SIGINT ask for a clean stop (state, best/ and final/ are saved) instead of dying mid-step."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        if self.requested:  # a second signal: give up at once
            raise KeyboardInterrupt
        self.requested = True


def prepare_output_dir(output_dir: Path) -> None:
    """Create `output_dir`, or say in one line why it cannot be (a file there, no permission, ...)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir}: is a file, not a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"--output_dir {output_dir}: cannot write there ({error.strerror or error})"
        ) from None


def command_line(run: RunOptions, num_processes: int) -> str:
    launcher = f"accelerate launch --num_processes {num_processes}" if num_processes > 1 else "python"
    return f"{launcher} scripts/train.py {shlex.join(run.argv)}"


def _run_record(run) -> dict:
    """The run's options for run.json, without argv (the commands are in the config record) and with the data
    folder relative to the working directory, so a record committed beside its metrics names no machine's path."""
    record = {k: v for k, v in vars(run).items() if k != "argv"}
    if record.get("data_dir"):
        record["data_dir"] = os.path.relpath(record["data_dir"])
    return record


def training_record(config: TrainingConfig, state: TrainState, folders: list[Path], data_dir: Path) -> dict:
    """The run's record (`training_config.json` of best/ and final/, `run.json`): the config, with the training
    folders resolved (`all` -> the set names) and the command line of every invocation."""
    record = {"commands": list(state.commands), **config.to_dict()}
    if folders:
        root = data_dir / "train"
        record["train_dirs"] = [p.name if p.parent == root else str(p) for p in folders]
    return record


# ---------------------------------------------------------------------------------------------------- train
def train(config: TrainingConfig, run: RunOptions) -> int:
    """Train one model as `config` says; returns 0, or 1 when the push to the Hub failed (all saved locally).
    Raises `ValueError` / `RuntimeError` / `FileNotFoundError` with a one-line message for bad data, a busy or
    unwritable output folder, unusable checkpoints and a run that diverged."""
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    accelerator = build_accelerator(config, run)
    is_main = accelerator.is_main_process
    output_dir = Path(run.output_dir)
    lock = RunLock(output_dir)
    if is_main:
        prepare_output_dir(output_dir)
        lock.acquire()
        for folder in recover_folders(output_dir):
            accelerator.print(
                f"{folder}: put back from {folder.name}.old (a run was killed while replacing it)"
            )
    try:
        # -- model, data, optimizer (set_seed first: identical initial weights on every process)
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        elif accelerator.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # training batches all have one shape
        set_seed(config.seed)
        model = build_model(config)
        if run.init_from:
            report = init_from_pretrained(model, run.init_from)
            accelerator.print(
                f"init_from {run.init_from}: copied {len(report['copied'])} tensors, kept fresh "
                f"{report['skipped'] or 'none'}"
            )
        if config.reparam:  # each convolution trained as a richer linear block, collapsed when saved
            expand(model, config.reparam, zero_extra=bool(run.init_from))
        eval_model = copy.deepcopy(model).eval()  # EMA (or current) weights go into it for validation
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        model.to(accelerator.device, memory_format=memory_format)
        ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None  # after the move: same device
        data_dir = Path(run.data_dir) if run.data_dir else default_data_dir()
        train_set, val_sets, folders = get_datasets(config, data_dir)
        first_val = next(iter(val_sets)).lower()  # its PSNR picks best/
        data_path, data_path_reason = choose_data_path(
            config.data_path, train_set.cache_bytes, accelerator.device
        )
        sampler = loader = None
        if data_path == "device":
            sampler = DevicePatchSampler(
                train_set, config.batch_size, accelerator.device, seed=config.seed,
                rank=accelerator.process_index, world_size=accelerator.num_processes,
            )  # fmt: skip
        else:
            loader = DataLoader(
                train_set,
                batch_size=config.batch_size,
                shuffle=True,
                drop_last=True,
                num_workers=config.num_workers,
            )
        groups = parameter_groups(model, config.output_lr_scale)
        for group in groups:
            group["lr"] = config.learning_rate * group["lr_scale"]
        optimizer = torch.optim.Adam(
            groups, lr=config.learning_rate, betas=tuple(config.adam_betas), weight_decay=config.weight_decay,
            fused=accelerator.device.type == "cuda",  # one kernel for the whole update
        )  # fmt: skip
        time_limit = config.max_train_minutes * 60 if config.max_train_minutes else math.inf
        clock = ScheduleClock(config.max_steps, time_limit)  # the step the schedules follow (or time spent)
        decay = lr_lambda(
            config.lr_schedule, config.max_steps, 0, config.min_lr_ratio, config.milestones, config.gamma
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, clock.wrap(decay, warmup_steps=config.warmup_steps)
        )
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        if loader is not None:
            loader = accelerator.prepare(loader)
            if len(loader) == 0:
                raise ValueError(
                    f"{len(train_set)} training patches give no full batch of {config.batch_size} per process; "
                    "lower batch_size or raise patches_per_image"
                )
        unwrapped = accelerator.unwrap_model(model)
        eval_model.to(accelerator.device)
        state = TrainState()
        accelerator.register_for_checkpointing(state)
        if ema is not None:
            accelerator.register_for_checkpointing(ema)

        # -- resume, then record the run
        metrics = MetricsWriter(output_dir / "metrics.jsonl", enabled=is_main)
        if run.resume_from_checkpoint:
            path = resume_from(
                accelerator, run.resume_from_checkpoint, output_dir / "checkpoints",
                model=unwrapped, optimizer=optimizer, ema=ema, log=accelerator.print,
            )  # fmt: skip
            if path is not None:
                metrics.truncate_after(state.step)
                where = (
                    f"data step {state.data_step}"
                    if sampler
                    else f"epoch {state.epoch}, batch {state.batch_in_epoch}"
                )
                accelerator.print(f"resumed from {path}: step {state.step}, {where}")
        state.commands.append(command_line(run, accelerator.num_processes))
        record = training_record(config, state, folders, data_dir)
        baseline = bicubic_baseline(val_sets, accelerator, config.upscale_factor)
        if run.with_tracking:
            flat = {
                k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                for k, v in config.to_dict().items()
            }
            accelerator.init_trackers("espcn", config=flat)
        if is_main:
            info = {
                "config": record, "model_config": unwrapped.config.to_diff_dict(), "bicubic": baseline,
                "num_processes": accelerator.num_processes, "distributed_type": str(accelerator.distributed_type),
                "mixed_precision": accelerator.mixed_precision, "device": str(accelerator.device),
                "device_name": device_name(accelerator.device), "data_path": data_path,
                "data_path_reason": data_path_reason, "train_images": train_set.num_images,
                "train_patches": len(train_set), "run": _run_record(run),
            }  # fmt: skip
            if loader is not None:
                info["batches_per_epoch"] = len(loader)  # per process: each iterates its own shard
            atomic_write_text(output_dir / "run.json", json.dumps(info, indent=2, default=str) + "\n")
        data = repr(sampler) if sampler else f"DataLoader over {train_set!r}"
        accelerator.print(
            f"{accelerator.distributed_type} x{accelerator.num_processes}, {data_path_reason}; {data}; "
            f"{unwrapped.num_parameters():,} parameters, bicubic: {baseline}"
        )

        def evaluate_and_save() -> dict:
            """Validate the EMA (or current) weights; save best/ when the first set's PSNR improves."""
            if ema is not None:
                ema.copy_to(eval_model)
            else:
                eval_model.load_state_dict(unwrapped.state_dict())
            plain = collapsed(eval_model) if config.reparam else eval_model
            results = validate(plain, val_sets, accelerator, config.upscale_factor)
            evaluation = {"step": state.step, "seconds": round(state.seconds, 2), **results}
            state.last_eval = evaluation
            metrics.write(evaluation)
            accelerator.log(
                {f"val/{k}": v for k, v in results.items()} | {"time/seconds": state.seconds}, state.step
            )
            if results[f"{first_val}_psnr"] > state.best_score:
                state.best_score, state.best_step = results[f"{first_val}_psnr"], state.step
                if is_main:
                    save_model_folder(plain, output_dir / "best", config.upscale_factor, evaluation, record)
            accelerator.wait_for_everyone()
            return plain

        def ensure_finite(loss_sum: torch.Tensor) -> None:
            if not math.isfinite(float(loss_sum)) or not all(
                torch.isfinite(p).all() for p in unwrapped.parameters()
            ):
                raise TrainingStopped(
                    f"the training loss became non-finite by step {state.step} (learning rate "
                    f"{scheduler.get_last_lr()[0]:.3g}); stopped, nothing new saved: resume from the last "
                    "checkpoint with a lower learning_rate or max_grad_norm"
                )

        # -- the loop
        stop = StopRequest()
        patches_per_step = config.batch_size * accelerator.num_processes * config.gradient_accumulation_steps
        progress = tqdm(
            total=config.max_steps, initial=state.step, disable=not is_main, dynamic_ncols=True, desc="train",
            mininterval=0.5 if sys.stderr.isatty() else 30,  # a log file gets a line every 30 s
        )  # fmt: skip
        running_loss = torch.zeros((), device=accelerator.device)  # summed on the device: no sync per step
        window_time, window_steps, stopped = 0.0, 0, False
        stream = batches(state, sampler, loader, train_set, accelerator)
        model.train()
        tick = time.perf_counter()
        try:
            while state.step < config.max_steps and not stopped:
                loss_name = loss_for_step(
                    clock.update(state.step, state.seconds), config.max_steps, config.loss, config.finetune_loss,
                    config.finetune_fraction,
                )  # fmt: skip
                pixel_values, labels = model_inputs(next(stream), unwrapped.config.num_channels)
                with accelerator.accumulate(model):
                    outputs = model(pixel_values=pixel_values.contiguous(memory_format=memory_format))
                    loss = compute_loss(outputs, labels, loss_name)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                running_loss += loss.detach()
                if not accelerator.sync_gradients:
                    continue
                clock.update(state.step + 1, state.seconds)
                scheduler.step()
                if ema is not None:
                    ema.update(unwrapped)
                state.step += 1
                window_steps += 1
                now = time.perf_counter()
                state.seconds += now - tick
                window_time += now - tick
                tick = now
                progress.update(1)

                # any process asked to stop (signal) or the time is spent: all take the same decision
                local = stop.requested or state.seconds >= time_limit
                if accelerator.num_processes == 1:
                    stopped = local
                elif state.step % config.log_steps == 0:
                    stopped = bool(
                        accelerator.gather(torch.tensor([float(local)], device=accelerator.device)).max()
                    )
                done = state.step >= config.max_steps or stopped
                evaluate_now = state.step % config.eval_steps == 0 or done
                checkpoint_now = (
                    config.checkpointing_steps and state.step % config.checkpointing_steps == 0
                ) or done
                if state.step % config.log_steps == 0 or done or evaluate_now or checkpoint_now:
                    ensure_finite(running_loss)  # before anything is saved
                if state.step % config.log_steps == 0 or done:
                    rate = window_steps * patches_per_step / max(window_time, 1e-9)
                    mean_loss = float(running_loss) / (window_steps * config.gradient_accumulation_steps)
                    lr = scheduler.get_last_lr()[0]
                    accelerator.log(
                        {"train/loss": mean_loss, "train/lr": lr, "train/patches_per_s": rate}, state.step
                    )
                    val = state.last_eval.get(f"{first_val}_psnr")
                    progress.set_postfix(
                        loss=f"{mean_loss:.4g}",
                        val=f"{val:.2f}" if val else "-",
                        patches_s=f"{rate:.0f}",
                        refresh=False,
                    )
                    window_time, window_steps = 0.0, 0
                    running_loss.zero_()
                if evaluate_now:
                    evaluate_and_save()
                    tick = time.perf_counter()  # evaluation time is not training time
                if checkpoint_now:
                    save_checkpoint(
                        accelerator, output_dir / "checkpoints", state.step, config.checkpoints_total_limit,
                        log=accelerator.print,
                    )  # fmt: skip
                    tick = time.perf_counter()
        finally:
            progress.close()  # before any message, so the bar does not swallow it

        # -- the end: final/ (evaluated at its step), a summary line, the Hub if asked
        plain = evaluate_and_save() if state.step == 0 or state.last_eval.get("step") != state.step else None
        if is_main:
            if plain is None:
                if ema is not None:
                    ema.copy_to(eval_model)
                else:
                    eval_model.load_state_dict(unwrapped.state_dict())
                plain = collapsed(eval_model) if config.reparam else eval_model
            save_model_folder(plain, output_dir / "final", config.upscale_factor, state.last_eval, record)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        accelerator.print(
            f"{'stopped' if stopped else 'finished'} at step {state.step}/{config.max_steps} after "
            f"{state.seconds / 60:.1f} min; last eval {state.last_eval}; best {first_val} PSNR "
            f"{state.best_score:.3f} dB at step {state.best_step} -> {output_dir / 'best'}"
        )
        if run.push_to_hub and is_main:
            return push_best(output_dir / "best", run)
        return 0
    finally:
        lock.release()


def push_best(best: Path, run: RunOptions) -> int:
    """Push best/ with `espcn_hf.hub.push_checkpoint`; a failure is one line (the local files are complete)."""
    from ..hub import push_checkpoint

    try:
        url = push_checkpoint(str(best), run.hub_model_id, private=run.hub_private)
    except Exception as error:  # noqa: BLE001 -- network, auth, ...: say so in one line, nothing is lost
        message = (str(error).strip().splitlines() or [""])[0]
        print(
            f"error: push to the Hub ({run.hub_model_id}) failed: {type(error).__name__}: {message[:200]} -- nothing "
            f"is lost, the model is saved in {best}",
            file=sys.stderr,
        )
        return 1
    print(f"pushed {best} to {url}")
    return 0


__all__ = [
    "CheckpointSaveError",
    "TrainingStopped",
    "bicubic_baseline",
    "build_model",
    "get_datasets",
    "train",
    "validate",
]
