"""Whole suites: the quick profile's degradation suite (seed 0: 8 runs) under ``--executor ray``
with one-thread workers (as many as the machine has cores) against ``--executor local`` with every
core in one run; and Ray's per-run overhead, one small run as a Ray task on a warm cluster against
the same run in this process (from submitting it to its rows; 5 rounds after a warm-up). The suites
are whole commands, one round each (minutes). suite.csv gets both (conftest).
"""

import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch
from harness import Case

from cnnrepro.data import load_dataset
from cnnrepro.executors import Job, LocalExecutor, RayExecutor
from cnnrepro.experiments import PROFILES, plan_runs

pytest.importorskip("ray")

CORES = os.cpu_count()
SUITE = Case(
    "degradation (quick)",
    "8 runs (seed 0) x 6 epochs",
    f"{CORES} cores",
    f"local: 1 run x {CORES} threads; ray: {CORES} runs x 1 thread",
    "cpu",
    kind="suite",
)
COMMANDS = {
    "local": ["--executor", "local", "--threads", str(CORES)],
    "ray": ["--executor", "ray", "--threads", "1"],
}


def time_rounds(benchmark, case: Case, impl: str, fn, setup, rounds: int, warmup_rounds: int = 0) -> None:
    """Times ``fn`` (``setup`` before each round, not timed) as implementation ``impl`` of ``case``."""
    benchmark.group = case.group
    benchmark.extra_info.update(asdict(case), impl=impl)
    benchmark.pedantic(fn, setup=setup, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)


@pytest.mark.parametrize("impl", ["local", "ray"])
def test_degradation_suite(benchmark, tmp_path, impl):
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0"}
    argv = ["--suite", "degradation", "--profile", "quick", "--seeds", "0", "--no-report", *COMMANDS[impl]]
    outs = iter(range(10**6))

    def fresh_store():
        return ([*argv, "--out", str(tmp_path / str(next(outs)))],), {}

    def suite(arguments):
        subprocess.run([sys.executable, "-m", "cnnrepro.run", *arguments], check=True, env=env)

    time_rounds(benchmark, SUITE, impl, suite, fresh_store, rounds=1)


OVERHEAD = Case(
    "lenet5 (smoke, 1 epoch)", "one run", "1 thread", "in process vs a warm Ray task", "cpu", kind="suite"
)


@pytest.fixture(scope="module")
def small_job(tmp_path_factory):
    (config,) = plan_runs(["lenet5"], PROFILES["smoke"], [0])
    return Job("bench", config, tmp_path_factory.mktemp("checkpoints"), "cpu", 1, False)


@pytest.mark.parametrize("impl", ["local", "ray"])
def test_per_run_overhead(benchmark, small_job, impl):
    dataset = load_dataset("mnist5k")
    threads = torch.get_num_threads()
    executor = RayExecutor() if impl == "ray" else LocalExecutor()

    def from_scratch():
        for checkpoint in small_job.checkpoint_dir.glob("*.pt"):
            checkpoint.unlink()

    def one_run():
        [outcome] = executor.run([small_job], dataset)
        assert outcome.error is None, outcome.error

    try:  # the warm-up round is Ray's worker importing torch, once per worker
        time_rounds(benchmark, OVERHEAD, impl, one_run, from_scratch, rounds=5, warmup_rounds=1)
    finally:
        executor.close()
        torch.set_num_threads(threads)
