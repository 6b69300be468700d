"""Training: the recipe a config builds (model, optimizer, schedule), the train state that a
checkpoint holds, the loop with per-epoch atomic checkpoints and resume, evaluation, and the
weights hash that proves two runs equal. Everything a script reusing the engine needs is here."""

from cnnrepro.train.checkpoint import load_checkpoint, save_atomic
from cnnrepro.train.engine import (
    EpochResult,
    PassStats,
    RunResult,
    evaluate,
    loss_of,
    train_epoch,
    train_pass,
    train_run,
    weights_sha256,
)
from cnnrepro.train.replicas import GlobalBatchDropout, Replicas, TorchrunWorld, torchrun_world
from cnnrepro.train.run_config import (
    AMP_DTYPES,
    COMPILE_MODES,
    RunConfig,
    amp_dtype,
    build_model,
    compile_model,
    lr_factor,
    make_optimizer,
    make_scheduler,
    memory_format,
    naming_fields,
    train_examples,
)
from cnnrepro.train.seeding import derive_seed, numerics_settings, set_deterministic
from cnnrepro.train.state import TrainState

__all__ = [
    "AMP_DTYPES",
    "COMPILE_MODES",
    "EpochResult",
    "GlobalBatchDropout",
    "PassStats",
    "Replicas",
    "RunConfig",
    "RunResult",
    "TorchrunWorld",
    "TrainState",
    "amp_dtype",
    "build_model",
    "compile_model",
    "derive_seed",
    "evaluate",
    "load_checkpoint",
    "loss_of",
    "lr_factor",
    "make_optimizer",
    "make_scheduler",
    "memory_format",
    "naming_fields",
    "numerics_settings",
    "save_atomic",
    "set_deterministic",
    "train_epoch",
    "train_examples",
    "train_pass",
    "torchrun_world",
    "train_run",
    "weights_sha256",
]
