"""Train an ESPCN super-resolution model with Hugging Face accelerate: the command line of
`espcn_hf.training.train`. Run from the repository root.

Hyper-parameters are the fields of `espcn_hf.training.TrainingConfig`: a preset file (`--config configs/*.yaml`)
sets them, `--set KEY=VALUE` overrides any of them, and so does one flag per field (`--max_steps 500`,
`--train_dirs T91 BSD200`, see --help). The other flags say where the run writes, what it resumes and where it
publishes.

    # CPU smoke run, a few seconds
    python scripts/train.py --config configs/smoke-cpu.yaml --output_dir runs/smoke

    # the seven-layer x3 model, TensorBoard logs; on a shared 2-core CPU in the background with one thread
    # (setsid keeps it alive when the shell goes away; `kill -TERM <pid>` stops it cleanly, saving its state)
    accelerate launch scripts/train.py --config configs/espcn-x3.yaml --output_dir runs/espcn-x3 --with_tracking
    mkdir -p runs/espcn-x3 && setsid nohup python scripts/train.py --config configs/espcn-x3.yaml \
        --output_dir runs/espcn-x3 --num_threads 1 --resume_from_checkpoint latest > runs/espcn-x3/log.txt 2>&1 &

    # resume after a crash or a stop (same output_dir): the newest checkpoints/step_N that can be used
    python scripts/train.py --config configs/espcn-x3.yaml --output_dir runs/espcn-x3 --resume_from_checkpoint latest

    # x2 / x4 started from the x3 model's feature layers (every conv but the last one)
    python scripts/train.py --config configs/espcn-x2.yaml --output_dir runs/espcn-x2 --init_from runs/espcn-x3/best

    # DDP with 2 processes on a machine without GPU (gloo): accelerate starts several CPU processes only with
    # --multi_gpu (`--cpu --num_processes 2` starts ONE)
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py --config configs/smoke-cpu.yaml \
        --output_dir runs/smoke-ddp

    # one GPU (bf16, large batches, time-based cosine schedule); DIV2K from the Hub (needs `datasets`). Without a
    # network the DIV2K presets end at once in one line naming --train_dirs (accelerate adds its own traceback to
    # any failed run; `accelerate launch --quiet` leaves the one line)
    accelerate launch scripts/train.py --config configs/espcn-x3-gpu.yaml --output_dir runs/x3-gpu
    accelerate launch scripts/train.py --config configs/espcn-x3-div2k.yaml --output_dir runs/x3-div2k

    # push the best model at the end (everything is saved locally first; a failed push exits with status 1)
    python scripts/train.py --config configs/espcn-x3.yaml --output_dir runs/x3 --push_to_hub --hub_model_id me/x3

Outputs in --output_dir: `checkpoints/step_N` (accelerate state: model, optimizer, scheduler, EMA, RNG, step and
data position), `best/` and `final/` (`save_pretrained` folders with the image processor config; EMA weights when
`ema_decay > 0`), `metrics.jsonl` (one line per evaluation), `run.json` (config and bicubic baselines), and
TensorBoard event files with --with_tracking. Curves: `python scripts/plot_training.py runs/espcn-x3`.
All shipped models in a row: `bash scripts/train_all.sh` (CPU) or `bash scripts/train_gpu.sh` (one GPU).
"""

from __future__ import annotations

import argparse
import sys

from common import DATA_DIR

from espcn_hf.training import RunOptions, TrainingStopped, train
from espcn_hf.training.checkpoints import CheckpointSaveError
from espcn_hf.training.config import add_config_arguments, config_from_arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", help="hyper-parameter preset file (.yaml or .json), e.g. configs/espcn-x3.yaml"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyper-parameter"
    )
    run = parser.add_argument_group("the run")
    run.add_argument(
        "--output_dir", default=RunOptions.output_dir, help="checkpoints, best/, final/, metrics, logs"
    )
    run.add_argument(
        "--data_dir", default=str(DATA_DIR), help="train/ and benchmarks/ (or $ESPCN_HF_DATA_DIR)"
    )
    run.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="'latest' (the newest step_N that can be used; none: start fresh) or a checkpoints/step_N folder",
    )
    run.add_argument("--init_from", default=None, help="copy all convs but the last from this model folder")
    run.add_argument("--with_tracking", action="store_true", help="TensorBoard logs in output_dir")
    run.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    run.add_argument("--push_to_hub", action="store_true", help="push best/ to --hub_model_id at the end")
    run.add_argument("--hub_model_id", default=None)
    run.add_argument("--hub_private", action="store_true")
    add_config_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")
    try:
        config = config_from_arguments(args)
    except (ValueError, OSError) as error:  # bad preset file, unknown name, bad value: a usage error
        parser.error(str(error))
    options = {name: getattr(args, name) for name in RunOptions.__dataclass_fields__ if hasattr(args, name)}
    try:
        return train(config, RunOptions(**options, argv=argv))
    except (ValueError, FileNotFoundError, RuntimeError, TrainingStopped, CheckpointSaveError) as error:
        if not str(error):
            raise
        print(
            f"error: {str(error).strip()}", file=sys.stderr
        )  # bad data, checkpoint, busy folder, divergence
        return 1


if __name__ == "__main__":
    sys.exit(main())
