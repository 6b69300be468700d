"""make check-gpu's script, dry-run on the CPU as CI can: the whole plan end to end in a small form
(every step runs, time-boxed, and its line reaches summary.md), and a budget too small for the plan,
which ends cleanly with the steps it did not start named."""

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_gpu.sh"
STEPS = [
    "build",
    "build-info",
    "cuda-tests",
    "memcheck",
    "racecheck",
    "smoke-determinism",
    "kill-resume",
    "kernel-bench",
    "model-bench",
    "throughput",
]


def dry_run(out: Path, budget_s: int, **narrow) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """The script on the CPU; returns the process and each step's result from summary.md."""
    env = os.environ | {
        "PYTHON": sys.executable,
        "CHECK_GPU_DEVICE": "cpu",
        "CHECK_GPU_OUT": str(out),
        "CHECK_GPU_BUDGET_S": str(budget_s),
        **narrow,
    }
    run = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=budget_s + 120
    )
    rows = re.findall(r"^\| ([\w-]+) \| ([^|]+) \|", (out / "summary.md").read_text(), re.M)
    return run, {step: result.strip() for step, result in rows if step != "step"}


@pytest.mark.skipif(sys.platform != "linux", reason="a bash script with GNU timeout")
def test_the_dry_run_runs_every_step_time_boxed(tmp_path):
    run, results = dry_run(
        tmp_path / "gpu",
        budget_s=900,
        CHECK_GPU_SMOKE_ARGS="--models lenet5 --epochs 1",
        CHECK_GPU_KERNEL_BENCH_SELECT="cpu and lrn2 and test_forward and contiguous",
        CHECK_GPU_MODEL_BENCH_SELECT="test_model and cpu and lenet5 and train",
        CHECK_GPU_THROUGHPUT_MODEL="resnet20",
        CHECK_GPU_THROUGHPUT_S="1",
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert list(results) == STEPS, "the plan's steps, in order"
    for step, result in results.items():
        assert result == "pass" or result.startswith("skipped:"), f"{step}: {result}"
    assert results["memcheck"] == "skipped: needs a GPU and compute-sanitizer"
    summary = (tmp_path / "gpu" / "summary.md").read_text()
    assert "Every step ran" in summary
    assert (tmp_path / "gpu" / "throughput.csv").exists() and (
        tmp_path / "gpu" / "smoke" / "runs.csv"
    ).exists()
    assert (tmp_path / "gpu" / "bench" / "kernels" / "benchmarks.json").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="a bash script with GNU timeout")
def test_a_budget_too_small_ends_cleanly_naming_the_steps_not_run(tmp_path):
    archive = tmp_path / "out" / "check-gpu.tgz"  # as the device tool's $OUT would get it
    run, results = dry_run(
        tmp_path / "gpu", budget_s=25, CHECK_GPU_MIN_STEP_S="20", CHECK_GPU_ARCHIVE=str(archive)
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    not_run = [step for step, result in results.items() if result.startswith("not run")]
    assert not_run and not_run == STEPS[len(STEPS) - len(not_run) :], "the last steps, in order"
    summary = (tmp_path / "gpu" / "summary.md").read_text()
    assert f"Not run for lack of time: {' '.join(not_run)}" in summary
    assert (tmp_path / "out" / "summary.md").read_text() == summary
    with tarfile.open(archive) as tar:
        assert "./summary.md" in tar.getnames() and "./build-info.log" in tar.getnames()
