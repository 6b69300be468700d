"""Benchmark fixtures; at the end of a run, the custom-vs-native table, and with --bench-out DIR
the results files the report reads: speedups.csv (ops), models.csv, loops.csv, suite.csv and env.json."""

import json
from pathlib import Path

import pytest
import torch
from harness import CASE_FIELDS, environment, merge_csv, paired_rows

from cnnrepro.files import write_atomic

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# kind -> (results file, baseline impl, candidate impl)
RESULT_FILES = {
    "op": ("speedups.csv", "native", "custom"),
    "model": ("models.csv", "native", "custom"),
    "loop": ("loops.csv", "dataloader", "runner"),
    "suite": ("suite.csv", "local", "ray"),
}


def pytest_addoption(parser):
    parser.addoption("--bench-out", type=Path, help="write the report's results files into this directory")


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def _benchmarks(config):
    session = getattr(config, "_benchmarksession", None)
    return session.benchmarks if session else []


def pytest_terminal_summary(terminalreporter, config):
    for kind, (_, baseline, candidate) in RESULT_FILES.items():
        rows = paired_rows(_benchmarks(config), kind, baseline, candidate)
        if not rows:
            continue
        title = f"{candidate} vs {baseline}, {kind}s (medians; speedup = {baseline} / {candidate})"
        terminalreporter.section(title)
        width = max(len(" ".join(str(row[f]) for f in CASE_FIELDS)) for row in rows)
        for row in rows:
            case = " ".join(str(row[f]) for f in CASE_FIELDS)
            terminalreporter.write_line(
                f"{case:<{width}}  {baseline} {row[f'{baseline}_median_s'] * 1e3:9.3f} ms  "
                f"{candidate} {row[f'{candidate}_median_s'] * 1e3:9.3f} ms  speedup {row['speedup']:5.2f}x  "
                f"{row['others']}"
            )


def pytest_sessionfinish(session):
    out = session.config.getoption("--bench-out")
    benchmarks = _benchmarks(session.config)
    if out is None or not benchmarks:
        return
    out.mkdir(parents=True, exist_ok=True)
    for kind, (file_name, baseline, candidate) in RESULT_FILES.items():
        rows = paired_rows(benchmarks, kind, baseline, candidate)
        if rows:
            merge_csv(out / file_name, rows, CASE_FIELDS)
    write_atomic(out / "env.json", json.dumps(environment(), indent=2, sort_keys=True) + "\n")
