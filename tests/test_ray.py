"""The runs of a suite as Ray tasks (--executor ray): the same weights as in-process, a worker killed
mid-run resumes to the same weights, and a killed driver's rerun records every run once.

Each runner command starts its own embedded cluster and shuts it down; the worker-kill test starts
a cluster with ``ray start`` and stops it after. Every command runs in the module's loopback-only
network namespace (tests/loopback.py: Ray binds every interface it is given) and is bounded in
time."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from loopback import interfaces, loopback_only

from cnnrepro.experiments import SUITES

pytest.importorskip("ray")

RAY = Path(sys.executable).parent / "ray"
TASK_TITLE = b"ray::_ray_task"  # the process title of a worker running a run (executors._ray_task)


# No usage reports (no network here); a cluster from `ray start` checks the token in ~/.ray.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}


@pytest.fixture(scope="module")
def inside():
    """The prefix that runs a command in this module's loopback-only network namespace."""
    with loopback_only() as prefix:
        yield prefix


def runner(inside: list[str], argv: list[str], **popen) -> subprocess.Popen:
    env = os.environ | RAY_ENV
    return subprocess.Popen(
        [*inside, sys.executable, "-m", "cnnrepro.run", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **popen,
    )


def finish(process: subprocess.Popen, timeout=300) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def hashes(out: Path) -> dict[str, str]:
    with open(out / "runs.csv", newline="") as f:
        return {row["key"]: row["weights_sha256"] for row in csv.DictReader(f)}


def recorded_keys(out: Path) -> list[str]:
    with open(out / "runs.csv", newline="") as f:
        return [row["key"] for row in csv.DictReader(f)]


def local_hashes(argv: list[str], out: Path) -> dict[str, str]:
    code, said = finish(runner([], [*argv, "--threads", "1", "--out", str(out)]))
    assert code == 0, said[-3000:]
    return hashes(out)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def task_workers() -> list[int]:
    """PIDs of Ray workers running a run now."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(TASK_TITLE):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_smoke_suite_under_ray_records_the_local_executors_hashes(inside, tmp_path):
    argv = ["--all", "--profile", "smoke", "--no-report"]
    code, said = finish(runner(inside, [*argv, "--executor", "ray", "--out", str(tmp_path / "ray")]))
    assert code == 0, said[-3000:]
    on_ray = hashes(tmp_path / "ray")
    assert len(on_ray) == sum(map(len, SUITES.values())) and on_ray == local_hashes(argv, tmp_path / "local")
    with open(tmp_path / "ray" / "runs.csv", newline="") as f:
        assert {row["threads"] for row in csv.DictReader(f)} == {"1"}


@pytest.fixture
def ray_cluster(inside):
    """A one-node cluster in the namespace (where Ray's default port is free), with 2 CPUs; its
    address. Stopped after the test."""
    start = [*inside, RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--num-cpus", "2"]
    env = os.environ | RAY_ENV
    subprocess.run(
        [*start, "--include-dashboard", "false"], check=True, timeout=120, env=env, capture_output=True
    )
    try:
        yield "127.0.0.1:6379"
    finally:
        subprocess.run([*inside, RAY, "stop", "--force"], timeout=120, capture_output=True, env=env)


def test_a_worker_killed_mid_run_is_retried_and_ends_with_the_uninterrupted_weights(
    inside, ray_cluster, tmp_path
):
    argv = ["--models", "resnet56", "--profile", "smoke", "--epochs", "8", "--no-report"]
    out = tmp_path / "ray"
    process = runner(inside, [*argv, "--executor", "ray", "--ray-address", ray_cluster, "--out", str(out)])
    try:
        wait_for(lambda: list((out / "checkpoints").glob("*.pt")), 120, "the run's first checkpoint")
        [worker] = wait_for(task_workers, 30, "the run's worker")
        assert interfaces(worker) == {"lo"}, "the cluster's workers see loopback alone"
        os.kill(worker, signal.SIGKILL)
        code, said = finish(process)
    finally:
        process.kill()
    assert code == 0, said[-3000:]
    assert "will be retried" in said  # Ray's own line: the task ran again, resuming its checkpoint
    assert worker not in task_workers()
    assert hashes(out) == local_hashes(argv, tmp_path / "local")


def test_a_killed_driver_rerun_records_every_run_once(inside, tmp_path):
    argv = ["--suite", "degradation", "--profile", "smoke", "--epochs", "3", "--no-report"]
    argv += ["--executor", "ray", "--out", str(tmp_path)]
    driver = runner(inside, argv, start_new_session=True)
    try:
        wait_for(lambda: list((tmp_path / "checkpoints").glob("*.pt")), 120, "a first checkpoint")
        os.kill(driver.pid, signal.SIGKILL)
        driver.communicate(timeout=60)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # what Ray left of its embedded cluster
    code, said = finish(runner(inside, argv))
    assert code == 0, said[-3000:]
    keys = recorded_keys(tmp_path)
    assert len(keys) == len(set(keys)) == len(SUITES["degradation"])


def test_cuda_on_a_cluster_without_gpus_is_one_clear_error(inside, tmp_path):
    """Its tasks would wait for a GPU forever."""
    argv = ["--models", "lenet5", "--executor", "ray", "--device", "cuda", "--out", str(tmp_path)]
    code, said = finish(runner(inside, argv))
    assert code == 2 and "error: --device cuda: the Ray cluster has no GPU" in said
    assert "Traceback" not in said and not (tmp_path / "runs.csv").exists()


# Two runs on an embedded cluster, one of which raises; prints each run's outcome as JSON.
TWO_RUNS_ONE_RAISES = """
import json, sys
from pathlib import Path
from cnnrepro.data import load_dataset
from cnnrepro.executors import Job, RayExecutor
from cnnrepro.train import RunConfig

broken = RunConfig("alexnet", "mnist5k", input_size=8, width=0.125, train_subset=64, test_subset=32)
fine = RunConfig("lenet5", "mnist5k", batch_size=32, width=0.125, train_subset=64, test_subset=32)
jobs = [Job("selected", config, Path(sys.argv[1]), "cpu", 1, False) for config in (broken, fine)]
executor = RayExecutor()
try:
    outcomes = executor.run(jobs, load_dataset("mnist5k"))
    said = {
        o.job.config.model: {
            "error": type(o.error).__name__ if o.error else None,
            "message": str(o.error),
            "status": o.run_row["status"] if o.run_row else None,
        }
        for o in outcomes
    }
finally:
    executor.close()
print(json.dumps(said))
"""


def test_a_run_that_raises_is_an_outcome_with_its_own_error_and_the_others_go_on(inside, tmp_path):
    done = subprocess.run(
        [*inside, sys.executable, "-c", TWO_RUNS_ONE_RAISES, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | RAY_ENV,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = json.loads(done.stdout.splitlines()[-1])
    assert outcomes["alexnet"]["error"] == "RuntimeError"  # the run's own exception, not Ray's
    assert "smaller than the dilated kernel" in outcomes["alexnet"]["message"]
    assert outcomes["lenet5"]["error"] is None and outcomes["lenet5"]["status"] == "finished"
