"""Training ESPCN models with accelerate (`scripts/train.py` is the command line over it).

    from espcn_hf.training import RunOptions, TrainingConfig, train
    config = TrainingConfig.from_sources("configs/espcn-x3.yaml", {"max_steps": 500})
    train(config, RunOptions(output_dir="runs/x3"))

- `config.py`: `TrainingConfig` (every hyper-parameter, one typed dataclass, presets and overrides merged in one
  place) and `RunOptions` (where a run writes, what it resumes, tracking and the Hub);
- `loop.py`: `train(config, run)`, the loop read top to bottom;
- `checkpoints.py`: the training state on disk, atomic `step_N` checkpoints, resuming (falling back past damaged
  ones), best/ and final/ folders, the run lock, `init_from_pretrained`;
- `schedule.py` (learning rate), `losses.py`, `ema.py`, `records.py` (metrics.jsonl).
"""

from .config import RunOptions, TrainingConfig
from .loop import TrainingStopped, train

__all__ = ["RunOptions", "TrainingConfig", "TrainingStopped", "train"]
