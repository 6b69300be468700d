"""--tensorboard DIR: every run's per-epoch scalars as TensorBoard event files, one subdirectory per
run, read back with tensorboard's own reader; a rerun replaces them instead of appending."""

import csv
import math

import pytest

from cnnrepro.experiments import PROFILES, plan_runs
from cnnrepro.run import main
from cnnrepro.tensorboard import LR_TAG, SCALARS, run_directory

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

ARGV = ["--profile", "smoke", "--models", "lenet5", "resnet20", "--epochs", "3", "--no-report"]


def scalars(directory):
    events = event_accumulator.EventAccumulator(str(directory))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_every_epoch_of_every_run_loads_with_tensorboards_reader(tmp_path):
    out, board = tmp_path / "out", tmp_path / "board"
    assert main([*ARGV, "--out", str(out), "--tensorboard", str(board)]) == 0
    with open(out / "results.csv", newline="") as f:
        epochs = list(csv.DictReader(f))
    configs = plan_runs(["lenet5", "resnet20"], PROFILES["smoke"], [0], epochs=3)
    assert sorted(p.name for p in board.iterdir()) == sorted(run_directory(board, c).name for c in configs)
    for config in configs:
        read = scalars(run_directory(board, config))
        assert set(read) == {*SCALARS, LR_TAG}
        rows = [r for r in epochs if r["key"] == config.key()]
        for tag, column in SCALARS.items():
            assert [step for step, _ in read[tag]] == [1, 2, 3]
            assert [v for _, v in read[tag]] == pytest.approx([float(r[column]) for r in rows], rel=1e-6)
        # cosine over 3 epochs of 4 steps (128 examples, batches of 32), read at each epoch's end
        expected_lr = [config.lr * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in (1, 2, 3)]
        assert [v for _, v in read[LR_TAG]] == pytest.approx(expected_lr, abs=1e-7)

    assert main([*ARGV, "--out", str(out), "--tensorboard", str(board), "--force"]) == 0
    again = scalars(run_directory(board, configs[0]))
    assert [step for step, _ in again["loss/train"]] == [1, 2, 3], "replaced, not appended"
