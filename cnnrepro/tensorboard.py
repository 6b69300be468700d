"""TensorBoard event files of the runs' per-epoch scalars, where users already look at curves
(``tensorboard --logdir DIR``): one subdirectory per run, named by model, seed and config key.

The runner writes a run's files when it records the run (it is the only writer, whichever executor
trained it), replacing what an earlier recording of the same run left."""

import shutil
from pathlib import Path

from cnnrepro.train import RunConfig, lr_factor

SCALARS = {  # tag -> results.csv column
    "loss/train": "train_loss",
    "loss/test": "test_loss",
    "accuracy/train": "train_acc",
    "accuracy/test": "test_acc",
    "examples_per_s/train": "train_examples_per_s",
    "examples_per_s/test": "test_examples_per_s",
}
LR_TAG = "lr"  # at the end of each epoch


def run_directory(root: Path, config: RunConfig) -> Path:
    return Path(root) / f"{config.model}-seed{config.seed}-{config.key()}"


def write_run(root: Path, config: RunConfig, epoch_rows: list[dict], steps_per_epoch: int) -> Path:
    """Writes the run's scalars, one point per tag and epoch (step = epoch number), into a fresh
    directory that then replaces the run's; returns it."""
    from torch.utils.tensorboard import SummaryWriter  # tensorboard is an extra: imported when asked

    target = run_directory(root, config)
    staging = target.with_name(f".{target.name}.writing")
    shutil.rmtree(staging, ignore_errors=True)
    factor = lr_factor(config, steps_per_epoch * config.epochs)
    with SummaryWriter(str(staging)) as writer:
        for row in epoch_rows:
            epoch = int(row["epoch"])
            for tag, column in SCALARS.items():
                writer.add_scalar(tag, float(row[column]), epoch)
            writer.add_scalar(LR_TAG, config.lr * factor(epoch * steps_per_epoch), epoch)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
