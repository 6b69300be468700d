"""The benchmark harness runs (on the smallest cases) and writes what the report reads. Benchmarks
themselves never run in the test suite: this only proves the plumbing, never a speed."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from loopback import loopback_only

ROOT = Path(__file__).resolve().parents[1]


def run_benchmarks(tmp_path, selection: str, *files: str, inside: tuple[str, ...] = ()):
    """Runs the selected cases (``inside``: a prefix for the command, such as a namespace's)."""
    command = [
        *inside, sys.executable, "-m", "pytest", *(f"benchmarks/{f}" for f in files), "-k", selection,
        "--benchmark-only", f"--bench-out={tmp_path / 'bench'}", f"--benchmark-json={tmp_path / 'run.json'}",
        "-p", "no:cacheprovider", "-q",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("bench")
    output = run_benchmarks(
        tmp_path,
        "(test_model and lenet5 and inference) or "
        "((test_forward or test_copy_yardstick) and not backward and lrn1 and contiguous)",
        "test_bench_models.py",
        "test_bench_lrn.py",
    )
    return tmp_path, output


def test_kernel_cases_pair_custom_with_native(bench):
    tmp_path, output = bench
    (row,) = pd.read_csv(tmp_path / "bench" / "speedups.csv").to_dict("records")
    assert (row["op"], row["direction"], row["layout"], row["device"]) == (
        "lrn",
        "forward",
        "contiguous",
        "cpu",
    )
    assert row["shape"] == "alexnet-lrn1 32x96x55x55"
    assert row["native_median_s"] > 0 and row["custom_median_s"] > 0
    assert row["speedup"] == pytest.approx(row["native_median_s"] / row["custom_median_s"])
    assert "custom vs native, ops" in output, "the terminal table"


def test_memory_bound_cases_give_bandwidth_against_the_copy(bench):
    tmp_path, _ = bench
    (row,) = pd.read_csv(tmp_path / "bench" / "speedups.csv").to_dict("records")
    moved = 2 * 32 * 96 * 55 * 55 * 4  # the forward reads x and writes y, float32
    assert row["moved_bytes"] == moved
    assert row["custom_gb_per_s"] == pytest.approx(moved / row["custom_median_s"] / 1e9)
    assert row["copy_gb_per_s"] > 0
    assert row["percent_of_copy"] == pytest.approx(100 * row["custom_gb_per_s"] / row["copy_gb_per_s"])
    assert row["others"].startswith("copy="), "the copy is also a reference of the case"


def test_model_cases_give_examples_per_second(bench):
    tmp_path, _ = bench
    (row,) = pd.read_csv(tmp_path / "bench" / "models.csv").to_dict("records")
    assert (row["op"], row["direction"], row["shape"]) == ("lenet5", "inference", "64x1x28x28")
    assert row["custom_examples_per_s"] == pytest.approx(64 / row["custom_median_s"])


def test_json_and_environment_are_written(bench):
    tmp_path, _ = bench
    saved = json.loads((tmp_path / "run.json").read_text())
    impls = sorted(b["extra_info"]["impl"] for b in saved["benchmarks"])
    assert impls == ["copy", "custom", "custom", "native", "native"]
    env = json.loads((tmp_path / "bench" / "env.json").read_text())
    assert env["machine"] and env["torch"] and env["threads"] >= 1


def test_a_partial_run_updates_its_cases_and_keeps_the_others(bench):
    tmp_path, _ = bench
    run_benchmarks(tmp_path, "test_model and lenet5 and train", "test_bench_models.py")
    models = pd.read_csv(tmp_path / "bench" / "models.csv")
    assert sorted(models["direction"]) == ["inference", "train"]
    assert len(pd.read_csv(tmp_path / "bench" / "speedups.csv")) == 1


def test_the_executor_overhead_case_pairs_local_with_ray(tmp_path):
    pytest.importorskip("ray")
    with loopback_only() as inside:  # Ray binds every interface it is given
        run_benchmarks(tmp_path, "test_per_run_overhead", "test_bench_suite.py", inside=inside)
    (row,) = pd.read_csv(tmp_path / "bench" / "suite.csv").to_dict("records")
    assert row["op"].startswith("lenet5") and row["local_median_s"] > 0 and row["ray_median_s"] > 0
    assert row["speedup"] == pytest.approx(row["local_median_s"] / row["ray_median_s"])
