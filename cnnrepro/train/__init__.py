"""Training: seeding and determinism, the training loop with per-epoch atomic checkpoints and
resume, evaluation, and the weights hash that proves two runs equal."""

from cnnrepro.train.checkpoint import load_checkpoint, save_atomic
from cnnrepro.train.engine import EpochResult, RunConfig, RunResult, evaluate, train_run, weights_sha256
from cnnrepro.train.seeding import derive_seed, set_deterministic

__all__ = [
    "EpochResult",
    "RunConfig",
    "RunResult",
    "derive_seed",
    "evaluate",
    "load_checkpoint",
    "save_atomic",
    "set_deterministic",
    "train_run",
    "weights_sha256",
]
