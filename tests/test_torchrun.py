"""One run on many processes: the runner under torchrun (gloo on the CPU, a rendezvous started and
stopped by each command, in a loopback-only network namespace: tests/loopback.py). Same world size
and seed give the same bits; without BatchNorm two processes take the steps one process takes; rank 0
alone writes. (--sync-bn needs CUDA: torch's SyncBatchNorm runs on GPUs only.)"""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from loopback import loopback_only

from cnnrepro.run import main, parse_args

SMOKE = ["--profile", "smoke", "--epochs", "2", "--no-report"]


def torchrun(nproc: int, argv: list[str]) -> subprocess.CompletedProcess:
    """The runner under torchrun, in a loopback-only namespace of its own (its rendezvous store binds
    every interface), where torchrun's default port is free."""
    with loopback_only() as inside:
        command = [
            *inside,
            *(sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc)),
            *("--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:29500"),
            *("-m", "cnnrepro.run", *argv),
        ]
        env = os.environ | {"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
        return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """lenet5, alexnet (no BatchNorm) and resnet20 (BatchNorm) on 2 processes, twice, and on one."""
    root = tmp_path_factory.mktemp("torchrun")
    models = ["--models", "lenet5", "alexnet", "resnet20"]
    for name in ("a", "b"):
        done = torchrun(2, [*SMOKE, *models, "--out", str(root / name)])
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    threads = torch.get_num_threads()
    try:
        assert main([*SMOKE, *models, "--threads", "1", "--out", str(root / "one")]) == 0
    finally:
        torch.set_num_threads(threads)  # main set them for this test process
    return root


def by_model(path) -> dict[str, dict]:
    return {row["model"]: row for row in rows(path)}


def test_same_world_size_same_seed_same_bits_and_rank0_writes_once(two_process_runs):
    a, b = (by_model(two_process_runs / name / "runs.csv") for name in ("a", "b"))
    assert len(rows(two_process_runs / "a" / "runs.csv")) == 3  # one row per run: rank 0 alone writes
    assert {m: r["weights_sha256"] for m, r in a.items()} == {m: r["weights_sha256"] for m, r in b.items()}
    assert all(json.loads(r["config"])["world_size"] == 2 for r in a.values())
    one = by_model(two_process_runs / "one" / "runs.csv")
    assert {r["key"] for r in a.values()}.isdisjoint(r["key"] for r in one.values())  # another run
    env = json.loads((two_process_runs / "a" / "env.json").read_text())
    assert env["world_size"] == 2 and env["executor"] == "local"


def epochs(path, model) -> list[dict]:
    return [row for row in rows(path) if row["model"] == model]


@pytest.mark.parametrize("model", ["lenet5", "alexnet"])
def test_without_batchnorm_two_processes_take_the_steps_of_one(two_process_runs, model):
    """Dropout is drawn over the global batch, so the per-epoch losses of 2 processes equal 1
    process's to float-sum accuracy."""
    two = epochs(two_process_runs / "a" / "results.csv", model)
    one = epochs(two_process_runs / "one" / "results.csv", model)
    assert len(two) == len(one) == 2
    for a, b in zip(two, one, strict=True):
        for field in ("train_loss", "test_loss"):
            assert float(a[field]) == pytest.approx(float(b[field]), rel=1e-5), (model, field)


def test_per_rank_batchnorm_differs_from_one_process(two_process_runs):
    """Each rank normalizes its share by the share's statistics: another computation, another run."""
    two = epochs(two_process_runs / "a" / "results.csv", "resnet20")
    one = epochs(two_process_runs / "one" / "results.csv", "resnet20")
    assert float(two[0]["train_loss"]) != pytest.approx(float(one[0]["train_loss"]), rel=1e-5)


def test_a_rerun_resumes_every_rank_from_rank0s_checkpoints(two_process_runs, tmp_path):
    """The store is gone, the checkpoints remain: every rank loads them and records the same run."""
    out = tmp_path / "again"
    shutil.copytree(two_process_runs / "a" / "checkpoints", out / "checkpoints")
    done = torchrun(2, [*SMOKE, "--models", "lenet5", "alexnet", "resnet20", "--out", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    before = by_model(two_process_runs / "a" / "runs.csv")
    assert {m: r["weights_sha256"] for m, r in by_model(out / "runs.csv").items()} == {
        m: r["weights_sha256"] for m, r in before.items()
    }


def test_a_world_size_that_does_not_divide_the_batch_is_one_clear_error(tmp_path):
    done = torchrun(3, [*SMOKE, "--models", "lenet5", "--out", str(tmp_path)])
    assert done.returncode != 0
    assert "error: lenet5 under torchrun: batch size 32 is not divisible by the world size 3" in done.stderr
    assert "cnnrepro/" not in done.stderr  # one line per rank, no traceback of ours (torchrun adds its own)
    assert not (tmp_path / "runs.csv").exists()


@pytest.fixture
def torchrun_env(monkeypatch):
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)


def test_ray_under_torchrun_is_refused(torchrun_env, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--all", "--executor", "ray"])
    assert "--executor ray under torchrun" in capsys.readouterr().err


def test_more_ranks_than_gpus_is_refused(torchrun_env, monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    with pytest.raises(SystemExit):
        parse_args(["--all", "--device", "cuda"])
    assert "starts 2 processes on this node, but it has 1 CUDA devices" in capsys.readouterr().err


def test_sync_bn_without_torchrun_or_without_cuda_is_refused(torchrun_env, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--all", "--sync-bn", "--device", "cpu"])
    assert "--sync-bn needs CUDA" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(SystemExit):
        parse_args(["--all", "--sync-bn"])
    assert "--sync-bn needs torchrun" in capsys.readouterr().err
