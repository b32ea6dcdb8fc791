"""Train an ESPCN super-resolution model with Hugging Face accelerate.

Run from the repository root. Hyper-parameters come from a preset file (`configs/*.yaml`), `--set KEY=VALUE`
overrides any of them; infrastructure (precision, checkpoints, tracking, Hub) is set with flags.

    # CPU smoke run, a few seconds
    python scripts/train.py --config configs/smoke-cpu.yaml --output_dir runs/smoke

    # the seven-layer x3 model (T91 + BSD200, validation on Set5 / Set14), with TensorBoard logs
    accelerate launch scripts/train.py --config configs/espcn-x3.yaml --output_dir runs/espcn-x3 --with_tracking
    # the same on a shared 2-core CPU, in the background (1 thread: with other jobs on the cores, 2 OpenMP
    # threads spin-wait and ran 8x slower; setsid keeps the run alive when the launching shell goes away,
    # `kill -TERM <pid>` stops it cleanly: state, best/ and final/ are saved)
    mkdir -p runs/espcn-x3 && setsid nohup python scripts/train.py --config configs/espcn-x3.yaml \
        --output_dir runs/espcn-x3 --num_threads 1 --max_train_minutes 42 --checkpointing_steps 1500 \
        --with_tracking > runs/espcn-x3/log.txt 2>&1 < /dev/null &
    # all shipped models in a row (x3, x2 and x4 from x3, paper x3), best/ copied to checkpoints/
    bash scripts/train_all.sh

    # x2 / x4 started from the x3 model's feature layers (every conv but the last one)
    python scripts/train.py --config configs/espcn-x2.yaml --output_dir runs/espcn-x2 --init_from runs/espcn-x3/best

    # resume after a crash or a stop (same output_dir): the newest complete checkpoints/step_N
    python scripts/train.py --config configs/espcn-x3.yaml --output_dir runs/espcn-x3 --resume_from_checkpoint latest

    # real DDP with 2 processes on a machine without GPU (gloo; accelerate reports MULTI_CPU). The script selects
    # CPU itself when it is launched with WORLD_SIZE > 1 and no CUDA device. NOTE: `accelerate launch --cpu
    # --num_processes 2` starts ONE process; `--multi_gpu` is the launcher flag that starts several.
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py --config configs/smoke-cpu.yaml \
        --output_dir runs/smoke-ddp

    # GPU, bf16 autocast
    accelerate launch --mixed_precision bf16 scripts/train.py --config configs/espcn-x3.yaml --output_dir runs/x3

    # push the best model at the end (everything is saved locally first; a failed push exits with status 1)
    python scripts/train.py --config configs/espcn-x3.yaml --output_dir runs/x3 --push_to_hub --hub_model_id me/espcn-x3

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
import signal
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from espcn_hf import ESPCNConfig, ESPCNForImageSuperResolution, ESPCNImageProcessor
from espcn_hf.data import DataGenerator, default_data_dir, load_benchmark
from espcn_hf.training import (
    EMA,
    MetricsWriter,
    RunLock,
    ScheduleClock,
    TrainState,
    apply_overrides,
    bicubic_baseline,
    evaluate,
    init_from_pretrained,
    latest_checkpoint,
    load_config,
    loss_for_step,
    lr_lambda,
    parse_override,
    save_checkpoint,
    save_model_folder,
)

# ----------------------------------------------------------------------------------------------------------
# Default hyper-parameters; a preset file overrides them, `--set KEY=VALUE` and the flags below override both.
DEFAULTS = {
    # model
    "preset": "espcn",  # architecture preset of ESPCNConfig: "espcn" (seven layers, RGB) or "espcn-paper" (Y)
    "upscale_factor": 3,
    "model": {},  # extra ESPCNConfig arguments, e.g. {"hidden_channels": [8, 8], "kernel_sizes": [3, 3, 3]}
    "loss": "l1",  # "l1", "mse" or "charbonnier"; L1 first, then an MSE fine-tune, pays in PSNR
    "finetune_loss": "mse",
    "finetune_fraction": 0.0,  # last fraction of the steps trained with finetune_loss
    # data: T91 + BSD200 (folders under <data dir>/train, or paths), or a Hub dataset (DIV2K by default)
    "train_dirs": ["T91", "BSD200"],
    "hub_dataset": None,  # e.g. "goodfellowliu/DIV2K"; used instead of train_dirs when set
    "hub_data_files": None,
    "hub_split": "train",
    "max_train_images": None,  # use only the first N training images (smoke runs)
    "patch_size": 17,  # LR patch side; HR patches are r times larger
    "patches_per_image": 32,  # random patches per image per epoch
    "augment": True,  # flips and 90-degree rotations
    "num_workers": 0,
    "val_sets": ["Set5", "Set14"],  # benchmark names (<data dir>/benchmarks/<name>); the first picks `best`
    "val_dirs": None,  # or folders of HR images used instead of val_sets
    "val_ssim": True,
    # optimisation (steps are optimizer steps; batch_size is per process)
    "seed": 0,
    "batch_size": 64,
    "gradient_accumulation_steps": 1,
    "max_steps": 10_000,
    "learning_rate": 1e-3,
    "adam_betas": [0.9, 0.999],
    "weight_decay": 0.0,
    "lr_schedule": "cosine",  # "cosine" (warmup, then cosine to min_lr_ratio), "multistep" or "constant"
    "warmup_steps": 100,
    "min_lr_ratio": 0.01,
    "milestones": [],  # multistep: steps where the LR is multiplied by gamma
    "gamma": 0.1,
    "max_grad_norm": None,  # gradient clipping, off by default
    "ema_decay": 0.999,  # 0 disables the weight EMA; with EMA, validation and `best` use the averaged weights
    "deterministic": False,  # torch.use_deterministic_algorithms (reproducible resume tests)
    # CPU threads per process; None keeps torch's default. On a busy shared CPU 1 thread beats 2 by far
    # (OpenMP threads spin-wait for each other when a core is taken by another job).
    "num_threads": None,
    # bookkeeping
    "eval_steps": 1000,
    "checkpointing_steps": 2000,
    "checkpoints_total_limit": 3,
    "log_steps": 20,
}
# ----------------------------------------------------------------------------------------------------------


def resolve_train_dirs(entries: list[str]) -> list[Path]:
    """Existing paths as they are; bare names (T91, BSD200) under `<data dir>/train`."""
    folders = []
    for entry in entries:
        path = Path(entry).expanduser()
        folders.append(path if path.exists() else default_data_dir() / "train" / entry)
    return folders


def get_datasets(config: dict):
    """The training DataGenerator and a {name: eval DataGenerator} dict of validation sets."""
    r = config["upscale_factor"]
    train_kwargs = {
        "scale": r,
        "mode": "train",
        "patch_size": config["patch_size"],
        "patches_per_image": config["patches_per_image"],
        "augment": config["augment"],
        "seed": config["seed"],
    }
    if config["hub_dataset"]:
        train = DataGenerator.from_hub(
            repo_id=config["hub_dataset"],
            data_files=config["hub_data_files"],
            split=config["hub_split"],
            max_images=config["max_train_images"],
            **train_kwargs,
        )
    else:
        train = DataGenerator.from_folder(
            resolve_train_dirs(config["train_dirs"]), max_images=config["max_train_images"], **train_kwargs
        )
    if len(train) == 0:
        raise ValueError("No training images (check train_dirs / hub_dataset and patch_size)")
    if config["val_dirs"]:
        val = {Path(d).name: DataGenerator.from_folder(d, scale=r, mode="eval") for d in config["val_dirs"]}
    else:
        val = {name: load_benchmark(name, scale=r) for name in config["val_sets"]}
    return train, val


def get_dataloaders(config: dict, train, val: dict):
    train_dl = DataLoader(
        train,
        batch_size=config["batch_size"],
        shuffle=True,
        drop_last=True,
        num_workers=config["num_workers"],
    )
    val_dls = {name: DataLoader(ds, batch_size=1, shuffle=False) for name, ds in val.items()}
    return train_dl, val_dls


def build_model(config: dict) -> ESPCNForImageSuperResolution:
    model_config = ESPCNConfig.from_preset(
        config["preset"], upscale_factor=config["upscale_factor"], loss=config["loss"], **config["model"]
    )
    return ESPCNForImageSuperResolution(model_config)


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


def training_function(config: dict, args: argparse.Namespace) -> int:
    if config["num_threads"]:
        torch.set_num_threads(config["num_threads"])
    # Several processes on a machine without CUDA (`accelerate launch --multi_gpu`): DDP on CPU over gloo.
    cpu = args.cpu or (int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available())
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=config["gradient_accumulation_steps"],
        log_with="tensorboard" if args.with_tracking else None,
        project_dir=str(output_dir),
        step_scheduler_with_optimizer=False,  # one scheduler step per optimizer step, whatever the process count
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config["seed"]),
    )
    is_main = accelerator.is_main_process
    lock = RunLock(output_dir)
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    try:
        return run_training(config, args, accelerator, output_dir)
    finally:
        lock.release()


def run_training(config: dict, args: argparse.Namespace, accelerator: Accelerator, output_dir: Path) -> int:
    """Build model, data, optimizer; train; evaluate, checkpoint and save best/ and final/; push if asked."""
    is_main = accelerator.is_main_process
    if config["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    stop = StopRequest()
    r = config["upscale_factor"]

    set_seed(config["seed"])  # before the model is built: identical initial weights on every process
    model = build_model(config)
    if args.init_from:
        report = init_from_pretrained(model, args.init_from)
        accelerator.print(
            f"init_from {args.init_from}: copied {len(report['copied'])} tensors, "
            f"kept fresh {report['skipped'] or 'none'}"
        )
    ema = EMA(model, config["ema_decay"]) if config["ema_decay"] > 0 else None
    eval_model = copy.deepcopy(model).eval()  # validation copy: EMA (or current) weights are loaded into it

    train_ds, val_ds = get_datasets(config)
    train_dl, val_dls = get_dataloaders(config, train_ds, val_ds)
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=config["learning_rate"],
        betas=tuple(config["adam_betas"]),
        weight_decay=config["weight_decay"],
    )
    max_steps = config["max_steps"]
    time_limit = args.max_train_minutes * 60 if args.max_train_minutes else math.inf
    clock = ScheduleClock(max_steps, time_limit)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        clock.wrap(
            lr_lambda(
                config["lr_schedule"],
                max_steps,
                config["warmup_steps"],
                config["min_lr_ratio"],
                config["milestones"],
                config["gamma"],
            )
        ),
    )
    val_names = list(val_dls)
    model, optimizer, train_dl, scheduler, *prepared_val = accelerator.prepare(
        model, optimizer, train_dl, scheduler, *val_dls.values()
    )
    val_dls = dict(zip(val_names, prepared_val, strict=True))
    eval_model.to(accelerator.device)
    if ema is not None:
        ema.to(accelerator.device)
    if len(train_dl) == 0:
        raise ValueError(
            f"{len(train_ds)} training patches give no full batch of {config['batch_size']} per process; "
            "lower batch_size or raise patches_per_image"
        )
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    checkpoint_dir = output_dir / "checkpoints"
    metrics = MetricsWriter(output_dir / "metrics.jsonl", enabled=is_main)
    if args.resume_from_checkpoint:
        path = (
            latest_checkpoint(checkpoint_dir)
            if args.resume_from_checkpoint == "latest"
            else Path(args.resume_from_checkpoint)
        )
        if path is None or not path.is_dir():
            raise FileNotFoundError(
                f"--resume_from_checkpoint {args.resume_from_checkpoint}: no checkpoint found"
            )
        accelerator.load_state(str(path))
        metrics.truncate_after(state.step)
        accelerator.print(
            f"resumed from {path}: step {state.step}, epoch {state.epoch}, batch {state.batch_in_epoch}"
        )

    unwrapped = accelerator.unwrap_model(model)
    if args.with_tracking:
        flat = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in config.items()}
        accelerator.init_trackers("espcn", config=flat)
    baseline = bicubic_baseline(val_dls, accelerator, r)
    if is_main:
        run_info = {
            "config": config,
            "model_config": unwrapped.config.to_diff_dict(),
            "bicubic": baseline,
            "num_processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "mixed_precision": accelerator.mixed_precision,
            "train_images": train_ds.num_images,
            "train_patches": len(train_ds),
            "batches_per_epoch": len(train_dl),  # per process: each one iterates its own shard
            "args": vars(args),
        }
        (output_dir / "run.json").write_text(json.dumps(run_info, indent=2, default=str) + "\n")
    accelerator.print(
        f"{accelerator.distributed_type} x{accelerator.num_processes}, {train_ds!r}, "
        f"{unwrapped.num_parameters():,} parameters, bicubic: {baseline}"
    )
    patches_per_step = (
        config["batch_size"] * accelerator.num_processes * config["gradient_accumulation_steps"]
    )
    first_val = val_names[0].lower()

    def run_eval() -> dict:
        if ema is not None:
            ema.copy_to(eval_model)
        else:
            eval_model.load_state_dict(unwrapped.state_dict())
        results = evaluate(eval_model, val_dls, accelerator, r, with_ssim=config["val_ssim"])
        record = {"step": state.step, "seconds": round(state.seconds, 2), **results}
        state.last_eval = record
        metrics.write(record)
        accelerator.log(
            {f"val/{k}": v for k, v in results.items()} | {"time/seconds": state.seconds}, state.step
        )
        score = results[f"{first_val}_psnr"]
        if score > state.best_score:
            state.best_score, state.best_step = score, state.step
            if is_main:
                save_model_folder(eval_model, output_dir / "best", r, extra=record, training_config=config)
        accelerator.wait_for_everyone()
        return record

    def checkpoint() -> None:
        save_checkpoint(accelerator, checkpoint_dir, state.step, args.checkpoints_total_limit)

    progress = tqdm(
        total=max_steps,
        initial=state.step,
        disable=not is_main,
        dynamic_ncols=True,
        desc="train",
        mininterval=0.5 if sys.stderr.isatty() else 30,  # a log file gets a line every 30 s
    )
    window_time, window_steps, running_loss = 0.0, 0, 0.0
    tick = time.perf_counter()
    stopped_early = False
    model.train()
    while state.step < max_steps and not stopped_early:
        train_ds.set_epoch(state.epoch)  # the random crops of this epoch ...
        train_dl.set_epoch(state.epoch)  # ... and the shuffled order (seeded sampler)
        epoch_dl = (
            accelerator.skip_first_batches(train_dl, state.batch_in_epoch)
            if state.batch_in_epoch
            else train_dl
        )
        for batch in epoch_dl:
            unwrapped.config.loss = loss_for_step(
                clock.update(state.step, state.seconds),
                max_steps,
                config["loss"],
                config["finetune_loss"],
                config["finetune_fraction"],
            )
            with accelerator.accumulate(model):
                loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and config["max_grad_norm"]:
                    accelerator.clip_grad_norm_(model.parameters(), config["max_grad_norm"])
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state.batch_in_epoch += 1
            running_loss += loss.detach().float().item()
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

            if state.step % config["log_steps"] == 0 or state.step == max_steps:
                rate = window_steps * patches_per_step / max(window_time, 1e-9)
                mean_loss = running_loss / (window_steps * config["gradient_accumulation_steps"])
                lr = scheduler.get_last_lr()[0]
                accelerator.log(
                    {"train/loss": mean_loss, "train/lr": lr, "train/patches_per_s": rate}, state.step
                )
                val = state.last_eval.get(f"{first_val}_psnr")
                progress.set_postfix(
                    loss=f"{mean_loss:.4g}", val=f"{val:.2f}" if val else "-", patches_s=f"{rate:.0f}"
                )
                window_time, window_steps, running_loss = 0.0, 0, 0.0

            # Every process must take the same decision, or a collective call below would hang.
            local_stop = float(stop.requested or state.seconds >= time_limit)
            stopped_early = bool(
                accelerator.gather(torch.tensor([local_stop], device=accelerator.device)).max()
            )
            done = state.step >= max_steps or stopped_early
            if state.step % config["eval_steps"] == 0 or done:
                run_eval()
                tick = time.perf_counter()  # evaluation time is not training time
            if (args.checkpointing_steps and state.step % args.checkpointing_steps == 0) or done:
                checkpoint()
                tick = time.perf_counter()
            if done:
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0
    progress.close()
    if state.step == 0 or state.last_eval.get("step") != state.step:  # e.g. resumed from the last checkpoint
        run_eval()
    if is_main:
        if ema is not None:
            ema.copy_to(eval_model)
        else:
            eval_model.load_state_dict(unwrapped.state_dict())
        save_model_folder(eval_model, output_dir / "final", r, extra=state.last_eval, training_config=config)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    summary = (
        f"{'stopped' if stopped_early else 'finished'} at step {state.step}/{max_steps} after "
        f"{state.seconds / 60:.1f} min; last eval {state.last_eval}; best {first_val} PSNR "
        f"{state.best_score:.3f} dB at step {state.best_step} -> {output_dir / 'best'}"
    )
    accelerator.print(summary)

    if args.push_to_hub and is_main:
        try:
            url = push_best(output_dir / "best", args.hub_model_id, args.hub_private)
            print(f"pushed {output_dir / 'best'} to {url}")
        except Exception as error:  # network, auth, ...: the local files are complete, say so in one line
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            print(
                f"error: push to the Hub ({args.hub_model_id}) failed: {type(error).__name__}: {message[:200]} "
                f"-- nothing is lost, the model is saved in {output_dir / 'best'}",
                file=sys.stderr,
            )
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
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
    parser.add_argument("--cpu", action="store_true", help="train on CPU even if a GPU is present")
    parser.add_argument("--num_threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--checkpointing_steps", type=int, default=None, help="save_state every N steps")
    parser.add_argument("--checkpoints_total_limit", type=int, default=None, help="keep the newest K step_N")
    parser.add_argument(
        "--resume_from_checkpoint", default=None, help="'latest' or a checkpoints/step_N folder"
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
    parser.add_argument("--train_dirs", nargs="+", default=None, help="training image folders")
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
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")

    config = dict(DEFAULTS)
    if args.config:
        config = apply_overrides(config, load_config(args.config), DEFAULTS)
    config = apply_overrides(config, dict(parse_override(item) for item in args.set), DEFAULTS)
    flags = {
        "max_steps": args.max_steps,
        "eval_steps": args.eval_steps,
        "checkpointing_steps": args.checkpointing_steps,
        "checkpoints_total_limit": args.checkpoints_total_limit,
        "train_dirs": args.train_dirs,
        "hub_dataset": args.hub_dataset,
        "hub_data_files": args.hub_data_files,
        "hub_split": args.hub_split,
        "val_dirs": args.val_dirs,
        "num_threads": args.num_threads,
    }
    config = apply_overrides(config, {k: v for k, v in flags.items() if v is not None}, DEFAULTS)
    args.checkpointing_steps = config["checkpointing_steps"]
    args.checkpoints_total_limit = config["checkpoints_total_limit"]
    return training_function(config, args)


if __name__ == "__main__":
    sys.exit(main())
