"""Train an ESPCN super-resolution model with Hugging Face accelerate.

Run from the repository root. Hyper-parameters are the fields of `espcn_hf.training.TrainingConfig`: a preset
file (`configs/*.yaml`) sets them, `--set KEY=VALUE` overrides any of them, and the flags below are shortcuts for
a few (they override both). Infrastructure (checkpoint folder, resume, tracking, Hub) is set with flags only.

    # CPU smoke run, a few seconds
    python scripts/train.py --config configs/smoke-cpu.yaml --output_dir runs/smoke

    # the seven-layer x3 model (every set under <data dir>/train, validation on Set5 / Set14), TensorBoard logs
    accelerate launch scripts/train.py --config configs/espcn-x3.yaml --output_dir runs/espcn-x3 --with_tracking
    # the same on a shared 2-core CPU, in the background (1 thread: with other jobs on the cores, 2 OpenMP
    # threads spin-wait and ran 8x slower; setsid keeps the run alive when the launching shell goes away,
    # `kill -TERM <pid>` stops it cleanly: state, best/ and final/ are saved)
    mkdir -p runs/espcn-x3 && setsid nohup python scripts/train.py --config configs/espcn-x3.yaml \
        --output_dir runs/espcn-x3 --num_threads 1 --max_train_minutes 42 --checkpointing_steps 1500 \
        --with_tracking > runs/espcn-x3/log.txt 2>&1 < /dev/null &
    # all shipped models in a row on CPU (x3, x2 and x4 from x3, paper x3), best/ shipped as espcn_hf/weights/<name>/
    bash scripts/train_all.sh
    # all shipped models on one GPU within one 10-minute command (see its header)
    bash scripts/train_gpu.sh

    # x2 / x4 started from the x3 model's feature layers (every conv but the last one)
    python scripts/train.py --config configs/espcn-x2.yaml --output_dir runs/espcn-x2 --init_from runs/espcn-x3/best

    # resume after a crash or a stop (same output_dir): the newest checkpoints/step_N that loads
    python scripts/train.py --config configs/espcn-x3.yaml --output_dir runs/espcn-x3 --resume_from_checkpoint latest

    # real DDP with 2 processes on a machine without GPU (gloo; accelerate reports MULTI_CPU). The script selects
    # CPU itself when it is launched with WORLD_SIZE > 1 and no CUDA device. NOTE: `accelerate launch --cpu
    # --num_processes 2` starts ONE process; `--multi_gpu` is the launcher flag that starts several.
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py --config configs/smoke-cpu.yaml \
        --output_dir runs/smoke-ddp

    # GPU presets (bf16 through accelerate, large batches, time-based cosine schedule)
    accelerate launch scripts/train.py --config configs/espcn-x3-gpu.yaml --output_dir runs/x3-gpu
    # DIV2K from the Hub (needs `datasets`; 800 images, about 7.4 GB decoded at x3). Without a network it ends at
    # once in one line naming --train_dirs (accelerate adds its own traceback for any failed run; `accelerate
    # launch --quiet` leaves the one line)
    accelerate launch scripts/train.py --config configs/espcn-x3-div2k.yaml --output_dir runs/x3-div2k

    # push the best model at the end (everything is saved locally first; a failed push exits with status 1)
    python scripts/train.py --config configs/espcn-x3.yaml --output_dir runs/x3 --push_to_hub --hub_model_id me/espcn-x3

Data path (`--data_path`, config `data_path`): `device` keeps the decoded training images on the training device
and cuts batches there (`espcn_hf.data.DevicePatchSampler`); `loader` is a DataLoader over the DataGenerator (for
sets that do not fit); `auto` (default) takes `device` when the set fits in half the free device memory (host
memory on CPU, where it is also the faster path: `benchmarks/data_throughput_cpu.json`).

Outputs in --output_dir: `checkpoints/step_N` (accelerate state: model, optimizer, scheduler, EMA, RNG, step and
data position), `best/` and `final/` (`save_pretrained` folders with the image processor config, EMA weights
when `ema_decay > 0`), `metrics.jsonl` (one line per evaluation), `run.json` (config and bicubic baselines),
and TensorBoard event files with --with_tracking. Curves: `python scripts/plot_training.py runs/espcn-x3`.
"""

from __future__ import annotations

import argparse
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
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, ESPCNImageProcessor
from espcn_hf.data import DataGenerator, DevicePatchSampler, default_data_dir, load_benchmark
from espcn_hf.fileio import atomic_write_text
from espcn_hf.reparam import collapsed, expand
from espcn_hf.training import (
    EMA,
    MetricsWriter,
    RunLock,
    ScheduleClock,
    TrainingConfig,
    TrainState,
    bicubic_baseline,
    choose_data_path,
    compute_loss,
    device_name,
    init_from_pretrained,
    loss_for_step,
    lr_lambda,
    model_inputs,
    parameter_groups,
    parse_override,
    resume_from,
    save_checkpoint,
    save_model_folder,
    validate,
)

# The read-only data beside the checkout (benchmarks/, train/): the scripts name it, the package never guesses it.
os.environ.setdefault("ESPCN_HF_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

# Flags that are shortcuts for config fields (they override the preset and --set).
FLAG_FIELDS = (
    "max_steps",
    "eval_steps",
    "max_train_minutes",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "train_dirs",
    "hub_dataset",
    "hub_data_files",
    "hub_split",
    "val_dirs",
    "num_threads",
    "mixed_precision",
    "data_path",
)


# ------------------------------------------------------------------------------------------------- building
def resolve_train_dirs(entries) -> list[Path]:
    """`"all"`: every folder under `<data dir>/train` (sorted); else existing paths as they are, and bare names
    (T91, BSD200, ...) under `<data dir>/train`."""
    root = default_data_dir() / "train"
    if entries == "all" or entries == ["all"]:
        folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        if not folders:
            raise FileNotFoundError(f"train_dirs: all, but {root} holds no folders (set ESPCN_HF_DATA_DIR)")
        return folders
    if isinstance(entries, str):
        entries = [entries]
    folders = []
    for entry in entries:
        path = Path(entry).expanduser()
        folders.append(path if path.exists() else root / entry)
    return folders


def get_datasets(config: TrainingConfig) -> tuple[DataGenerator, dict[str, DataGenerator], list[Path]]:
    """The training DataGenerator, a {name: eval DataGenerator} dict of validation sets, and the training
    folders (none for a Hub dataset)."""
    r = config.upscale_factor
    train_kwargs = {
        "scale": r,
        "mode": "train",
        "patch_size": config.patch_size,
        "patches_per_image": config.patches_per_image,
        "augment": config.augment,
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
        folders = resolve_train_dirs(config.train_dirs)
        train = DataGenerator.from_folder(folders, **train_kwargs)
    if len(train) == 0:
        raise ValueError("No training images (check train_dirs / hub_dataset and patch_size)")
    if config.val_dirs:
        val = {Path(d).name: DataGenerator.from_folder(d, scale=r, mode="eval") for d in config.val_dirs}
    else:
        val = {name: load_benchmark(name, scale=r) for name in config.val_sets}
    return train, val, folders


def build_model(config: TrainingConfig) -> ESPCNForImageSuperResolution:
    model_config = ESPCNConfig.from_preset(
        config.preset, upscale_factor=config.upscale_factor, **config.model
    )
    return ESPCNForImageSuperResolution(model_config)


def build_accelerator(config: TrainingConfig, args: argparse.Namespace) -> Accelerator:
    # Several processes on a machine without CUDA (`accelerate launch --multi_gpu`): DDP on CPU over gloo.
    cpu = args.cpu or (int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available())
    return Accelerator(
        cpu=cpu,
        mixed_precision=config.mixed_precision,  # None: accelerate's own setting (launch flag / env)
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with="tensorboard" if args.with_tracking else None,
        # Checkpoint rotation stays ours (save_checkpoint): accelerate's `total_limit` only applies to its
        # automatic naming, which writes checkpoint folders in place, not through an atomic rename.
        project_config=ProjectConfiguration(project_dir=str(args.output_dir)),
        step_scheduler_with_optimizer=False,  # one scheduler step per optimizer step, whatever the process count
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )


def push_best(folder: Path, repo_id: str, private: bool) -> str:
    """Push a save_pretrained folder with espcn_hf.hub.push_checkpoint when present, else push_to_hub."""
    try:
        from espcn_hf.hub import push_checkpoint
    except ImportError:
        push_checkpoint = None
    if push_checkpoint is not None:
        return str(push_checkpoint(str(folder), repo_id, private=private))
    model = ESPCNForImageSuperResolution.from_pretrained(folder)
    url = model.push_to_hub(repo_id, private=private)
    ESPCNImageProcessor.from_pretrained(folder).push_to_hub(repo_id, private=private)
    return str(url)


class StopRequest:
    """SIGTERM / SIGINT ask for a clean stop (state, best and final are saved) instead of dying mid-step."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        if self.requested:  # a second signal: give up at once
            raise KeyboardInterrupt
        self.requested = True


# ------------------------------------------------------------------------------------------------- trainer
class Trainer:
    """One training run: `setup()` builds everything, `resume()`, `fit()` trains, `finish()` saves `final/`."""

    def __init__(self, config: TrainingConfig, args: argparse.Namespace, accelerator: Accelerator):
        self.config, self.args, self.accelerator = config, args, accelerator
        self.output_dir = Path(args.output_dir)
        self.is_main = accelerator.is_main_process
        self.state = TrainState()
        self.stop = StopRequest()
        self.metrics = MetricsWriter(self.output_dir / "metrics.jsonl", enabled=self.is_main)
        self.time_limit = config.max_train_minutes * 60 if config.max_train_minutes else math.inf
        self.clock = ScheduleClock(config.max_steps, self.time_limit)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format

    # -- setup
    def setup(self) -> None:
        config, accelerator = self.config, self.accelerator
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        elif accelerator.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # training batches all have one shape
        set_seed(config.seed)  # before the model is built: identical initial weights on every process
        model = build_model(config)
        if self.args.init_from:
            report = init_from_pretrained(model, self.args.init_from)
            accelerator.print(
                f"init_from {self.args.init_from}: copied {len(report['copied'])} tensors, "
                f"kept fresh {report['skipped'] or 'none'}"
            )
        if config.reparam:  # each convolution trained as a richer linear block, collapsed when saved
            expand(model, config.reparam, zero_extra=bool(self.args.init_from))
        self.eval_model = copy.deepcopy(model).eval()  # validation copy: EMA (or current) weights go into it
        model.to(accelerator.device, memory_format=self.memory_format)
        # after the move: the shadow weights share the live ones' device and memory layout (one fused update)
        self.ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
        self.build_data()
        groups = parameter_groups(model, config.output_lr_scale)
        for group in groups:
            group["lr"] = config.learning_rate * group["lr_scale"]
        optimizer = torch.optim.Adam(
            groups,
            lr=config.learning_rate,
            betas=tuple(config.adam_betas),
            weight_decay=config.weight_decay,
            fused=accelerator.device.type == "cuda",  # one kernel for the whole update
        )
        # the warmup counts optimizer steps, the decay follows the clock (steps, or time with a budget)
        schedule = lr_lambda(
            config.lr_schedule, config.max_steps, 0, config.min_lr_ratio, config.milestones, config.gamma
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, self.clock.wrap(schedule, warmup_steps=config.warmup_steps)
        )
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        if self.train_dl is not None:
            self.train_dl = accelerator.prepare(self.train_dl)
            if len(self.train_dl) == 0:
                raise ValueError(
                    f"{len(self.train_ds)} training patches give no full batch of {config.batch_size} per "
                    "process; lower batch_size or raise patches_per_image"
                )
        self.unwrapped = accelerator.unwrap_model(self.model)
        self.eval_model.to(accelerator.device)
        accelerator.register_for_checkpointing(self.state)
        if self.ema is not None:
            accelerator.register_for_checkpointing(self.ema)

    def build_data(self) -> None:
        config, accelerator = self.config, self.accelerator
        self.train_ds, self.val_sets, self.train_folders = get_datasets(config)
        self.first_val = next(iter(self.val_sets)).lower()  # its PSNR picks `best`
        self.data_path, self.data_path_reason = choose_data_path(
            config.data_path, self.train_ds.cache_bytes, accelerator.device
        )
        self.sampler, self.train_dl = None, None
        if self.data_path == "device":
            self.sampler = DevicePatchSampler(
                self.train_ds,
                config.batch_size,
                accelerator.device,
                seed=config.seed,
                rank=accelerator.process_index,
                world_size=accelerator.num_processes,
            )
        else:
            self.train_dl = DataLoader(
                self.train_ds,
                batch_size=config.batch_size,
                shuffle=True,
                drop_last=True,
                num_workers=config.num_workers,
            )

    def record(self) -> dict:
        """The run's record (`training_config.json` of best/ and final/, `run.json`): the config, with the
        training folders resolved (`all` -> the set names) and every session's command line."""
        record = {"commands": list(self.state.commands), **self.config.to_dict()}
        if self.train_folders:
            root = default_data_dir() / "train"
            record["train_dirs"] = [p.name if p.parent == root else str(p) for p in self.train_folders]
        return record

    def command(self) -> str:
        argv = shlex.join(self.args.argv)
        n = self.accelerator.num_processes
        launcher = f"accelerate launch --num_processes {n}" if n > 1 else "python"
        return f"{launcher} scripts/train.py {argv}"

    def resume(self) -> None:
        self._resume()
        self.state.commands.append(self.command())

    def _resume(self) -> None:
        if not self.args.resume_from_checkpoint:
            return
        path = resume_from(
            self.accelerator,
            self.args.resume_from_checkpoint,
            self.output_dir / "checkpoints",
            log=self.accelerator.print,
        )
        if path is not None:
            self.metrics.truncate_after(self.state.step)
            s = self.state
            where = (
                f"data step {s.data_step}" if self.sampler else f"epoch {s.epoch}, batch {s.batch_in_epoch}"
            )
            self.accelerator.print(f"resumed from {path}: step {s.step}, {where}")

    def write_run_info(self) -> None:
        accelerator, config = self.accelerator, self.config
        if self.args.with_tracking:
            flat = {
                k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                for k, v in config.to_dict().items()
            }
            accelerator.init_trackers("espcn", config=flat)
        self.baseline = bicubic_baseline(self.val_sets, accelerator, config.upscale_factor)
        if self.is_main:
            info = {
                "config": self.record(),
                "model_config": self.unwrapped.config.to_diff_dict(),
                "bicubic": self.baseline,
                "num_processes": accelerator.num_processes,
                "distributed_type": str(accelerator.distributed_type),
                "mixed_precision": accelerator.mixed_precision,
                "device": str(accelerator.device),
                "device_name": device_name(accelerator.device),
                "data_path": self.data_path,
                "data_path_reason": self.data_path_reason,
                "train_images": self.train_ds.num_images,
                "train_patches": len(self.train_ds),
                "args": vars(self.args),
            }
            if self.train_dl is not None:
                info["batches_per_epoch"] = len(self.train_dl)  # per process: each iterates its own shard
            atomic_write_text(self.output_dir / "run.json", json.dumps(info, indent=2, default=str) + "\n")
        data = repr(self.sampler) if self.sampler else f"DataLoader over {self.train_ds!r}"
        accelerator.print(
            f"{accelerator.distributed_type} x{accelerator.num_processes}, {self.data_path_reason}; {data}; "
            f"{self.unwrapped.num_parameters():,} parameters, bicubic: {self.baseline}"
        )

    # -- data
    def batches(self) -> Iterator[dict]:
        """Training batches forever; the data position in `self.state` counts the batches handed out."""
        state = self.state
        if self.sampler is not None:
            batch = None
            while True:
                batch = self.sampler.batch(state.data_step, out=batch)
                state.data_step += 1
                yield batch
        while True:
            self.train_ds.set_epoch(state.epoch)  # the random crops of this epoch ...
            self.train_dl.set_epoch(state.epoch)  # ... and the shuffled order (seeded sampler)
            loader = self.train_dl
            if state.batch_in_epoch:
                loader = self.accelerator.skip_first_batches(self.train_dl, state.batch_in_epoch)
            for batch in loader:
                state.batch_in_epoch += 1
                yield batch
            state.epoch += 1
            state.batch_in_epoch = 0

    # -- steps
    def train_step(self, batch: dict) -> torch.Tensor:
        """Forward, loss (the phase's loss of `outputs.reconstruction`), backward, optimizer step."""
        config, accelerator = self.config, self.accelerator
        loss_name = loss_for_step(
            self.clock.update(self.state.step, self.state.seconds),
            config.max_steps,
            config.loss,
            config.finetune_loss,
            config.finetune_fraction,
        )
        pixel_values, labels = model_inputs(batch, self.unwrapped.config.num_channels)
        pixel_values = pixel_values.contiguous(memory_format=self.memory_format)
        with accelerator.accumulate(self.model):
            outputs = self.model(pixel_values=pixel_values)
            loss = compute_loss(outputs, labels, loss_name)
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm:
                accelerator.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def load_eval_weights(self) -> ESPCNForImageSuperResolution:
        """The weights validated and saved (EMA, or the current ones) into `eval_model`; returns the plain model
        they make (re-parameterised blocks collapsed), the one validated and saved."""
        if self.ema is not None:
            self.ema.copy_to(self.eval_model)
        else:
            self.eval_model.load_state_dict(self.unwrapped.state_dict())
        return collapsed(self.eval_model) if self.config.reparam else self.eval_model

    def run_eval(self) -> dict:
        config, state = self.config, self.state
        plain = self.load_eval_weights()
        results = validate(plain, self.val_sets, self.accelerator, config.upscale_factor)
        record = {"step": state.step, "seconds": round(state.seconds, 2), **results}
        state.last_eval = record
        self.metrics.write(record)
        self.accelerator.log(
            {f"val/{k}": v for k, v in results.items()} | {"time/seconds": state.seconds}, state.step
        )
        score = results[f"{self.first_val}_psnr"]
        if score > state.best_score:
            state.best_score, state.best_step = score, state.step
            if self.is_main:
                save_model_folder(
                    plain,
                    self.output_dir / "best",
                    config.upscale_factor,
                    extra=record,
                    training_config=self.record(),
                )
        self.accelerator.wait_for_everyone()
        return record

    def checkpoint(self) -> None:
        save_checkpoint(
            self.accelerator,
            self.output_dir / "checkpoints",
            self.state.step,
            self.config.checkpoints_total_limit,
        )

    def should_stop(self) -> bool:
        """The time budget is spent or a stop was asked for; every process takes the same decision (it is
        gathered every `log_steps` steps with several processes, so one process does not sync every step)."""
        local = self.stop.requested or self.state.seconds >= self.time_limit
        if self.accelerator.num_processes == 1:
            return local
        if self.state.step % self.config.log_steps:
            return False
        flag = torch.tensor([float(local)], device=self.accelerator.device)
        return bool(self.accelerator.gather(flag).max())

    # -- loop
    def fit(self) -> bool:
        """Train until max_steps or the time budget; returns True when stopped early."""
        config, state, accelerator = self.config, self.state, self.accelerator
        patches_per_step = config.batch_size * accelerator.num_processes * config.gradient_accumulation_steps
        progress = tqdm(
            total=config.max_steps,
            initial=state.step,
            disable=not self.is_main,
            dynamic_ncols=True,
            desc="train",
            mininterval=0.5 if sys.stderr.isatty() else 30,  # a log file gets a line every 30 s
        )
        window_time, window_steps = 0.0, 0
        running_loss = torch.zeros((), device=accelerator.device)  # summed on the device: no sync per step
        stopped = False
        batches = self.batches()
        self.model.train()
        tick = time.perf_counter()
        while state.step < config.max_steps and not stopped:
            running_loss += self.train_step(next(batches))
            if not accelerator.sync_gradients:
                continue
            self.clock.update(state.step + 1, state.seconds)
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.unwrapped)
            state.step += 1
            window_steps += 1
            now = time.perf_counter()
            state.seconds += now - tick
            window_time += now - tick
            tick = now
            progress.update(1)

            if state.step % config.log_steps == 0 or state.step == config.max_steps:
                rate = window_steps * patches_per_step / max(window_time, 1e-9)
                mean_loss = float(running_loss) / (window_steps * config.gradient_accumulation_steps)
                lr = self.scheduler.get_last_lr()[0]
                accelerator.log(
                    {"train/loss": mean_loss, "train/lr": lr, "train/patches_per_s": rate}, state.step
                )
                val = state.last_eval.get(f"{self.first_val}_psnr")
                progress.set_postfix(
                    loss=f"{mean_loss:.4g}",
                    val=f"{val:.2f}" if val else "-",
                    patches_s=f"{rate:.0f}",
                    refresh=False,  # the bar's own interval decides when a line is printed
                )
                window_time, window_steps = 0.0, 0
                running_loss.zero_()

            stopped = self.should_stop()
            done = state.step >= config.max_steps or stopped
            if state.step % config.eval_steps == 0 or done:
                self.run_eval()
                tick = time.perf_counter()  # evaluation time is not training time
            if (config.checkpointing_steps and state.step % config.checkpointing_steps == 0) or done:
                self.checkpoint()
                tick = time.perf_counter()
        progress.close()
        return stopped

    def finish(self, stopped: bool) -> None:
        state, config = self.state, self.config
        # no evaluation at the current step yet (e.g. resumed from the last checkpoint)
        if state.step == 0 or state.last_eval.get("step") != state.step:
            self.run_eval()
        if self.is_main:
            plain = self.load_eval_weights()
            save_model_folder(
                plain,
                self.output_dir / "final",
                config.upscale_factor,
                extra=state.last_eval,
                training_config=self.record(),
            )
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        self.accelerator.print(
            f"{'stopped' if stopped else 'finished'} at step {state.step}/{config.max_steps} after "
            f"{state.seconds / 60:.1f} min; last eval {state.last_eval}; best {self.first_val} PSNR "
            f"{state.best_score:.3f} dB at step {state.best_step} -> {self.output_dir / 'best'}"
        )


def run_training(config: TrainingConfig, args: argparse.Namespace, accelerator: Accelerator) -> int:
    """Build, resume, train, save `final/`; push `best/` if asked."""
    trainer = Trainer(config, args, accelerator)
    trainer.setup()
    trainer.resume()
    trainer.write_run_info()
    stopped = trainer.fit()
    trainer.finish(stopped)
    if args.push_to_hub and trainer.is_main:
        best = trainer.output_dir / "best"
        try:
            url = push_best(best, args.hub_model_id, args.hub_private)
            print(f"pushed {best} to {url}")
        except Exception as error:  # network, auth, ...: the local files are complete, say so in one line
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            print(
                f"error: push to the Hub ({args.hub_model_id}) failed: {type(error).__name__}: {message[:200]} "
                f"-- nothing is lost, the model is saved in {best}",
                file=sys.stderr,
            )
            return 1
    return 0


def training_function(config: TrainingConfig, args: argparse.Namespace) -> int:
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    accelerator = build_accelerator(config, args)
    output_dir = Path(args.output_dir)
    lock = RunLock(output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    try:
        return run_training(config, args, accelerator)
    finally:
        lock.release()


# ------------------------------------------------------------------------------------------------ command line
def parse_args(argv: list[str] | None = None) -> tuple[TrainingConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description="Train ESPCN (see the module docstring for run commands).")
    parser.add_argument(
        "--config", help="hyper-parameter preset file (.yaml or .json), e.g. configs/espcn-x3.yaml"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyper-parameter"
    )
    parser.add_argument(
        "--output_dir", default="runs/espcn", help="checkpoints, best/, final/, metrics, logs"
    )
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None)
    parser.add_argument("--data_path", choices=["auto", "device", "loader"], default=None)
    parser.add_argument("--cpu", action="store_true", help="train on CPU even if a GPU is present")
    parser.add_argument("--num_threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--checkpointing_steps", type=int, default=None, help="save_state every N steps")
    parser.add_argument("--checkpoints_total_limit", type=int, default=None, help="keep the newest K step_N")
    parser.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="'latest' (the newest step_N that loads; none: start fresh) or a checkpoints/step_N folder",
    )
    parser.add_argument("--with_tracking", action="store_true", help="TensorBoard logs in output_dir")
    parser.add_argument("--max_steps", type=int, default=None)
    parser.add_argument("--eval_steps", type=int, default=None)
    parser.add_argument(
        "--max_train_minutes",
        type=float,
        default=None,
        help="training-time budget (summed over resumes): the LR schedule and loss phase follow "
        "max(step / max_steps, time / budget), and the run stops cleanly (state, best, final) when it is spent",
    )
    parser.add_argument(
        "--init_from", default=None, help="copy all convs but the last from this model folder"
    )
    parser.add_argument("--train_dirs", nargs="+", default=None, help="training image folders, or 'all'")
    parser.add_argument("--hub_dataset", default=None, help="train on a Hub dataset instead of folders")
    parser.add_argument("--hub_data_files", default=None)
    parser.add_argument("--hub_split", default=None)
    parser.add_argument(
        "--val_dirs", nargs="+", default=None, help="validation folders instead of Set5/Set14"
    )
    parser.add_argument("--push_to_hub", action="store_true", help="push best/ to --hub_model_id at the end")
    parser.add_argument("--hub_model_id", default=None)
    parser.add_argument("--hub_private", action="store_true")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in training_config.json
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")
    try:
        overrides = dict(parse_override(item) for item in args.set)
        flags = {name: getattr(args, name) for name in FLAG_FIELDS if getattr(args, name) is not None}
        config = TrainingConfig.from_sources(args.config, overrides, flags)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    return config, args


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    try:
        return training_function(config, args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:  # bad data, checkpoint, busy folder
        if not str(error):
            raise
        print(f"error: {str(error).strip()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
