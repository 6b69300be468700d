"""Benchmark fixtures, and the custom-vs-native speedup table printed at the end of a run."""

import pytest
import torch
from harness import speedup_rows

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    rows = speedup_rows(session.benchmarks) if session else []
    if not rows:
        return
    terminalreporter.section(
        "custom vs native (medians; speedup = native / custom; others: their time / custom's)"
    )
    width = max(len(row[0]) for row in rows)
    for group, native, custom, speedup, others in rows:
        extra = "".join(f"  {impl} {ratio:5.2f}" for impl, ratio in sorted(others.items()))
        terminalreporter.write_line(
            f"{group:<{width}}  native {native * 1e3:9.3f} ms  custom {custom * 1e3:9.3f} ms"
            f"  speedup {speedup:5.2f}x{extra}"
        )
