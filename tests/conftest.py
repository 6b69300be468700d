"""Shared fixtures: the devices to test on (CUDA only when a GPU is present)."""

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_configure(config):
    # Keep CPU tests fast and repeatable on the 2-core CI machine.
    torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(items):
    """Mark every test that runs on CUDA (the device fixture's cuda case, or the cuda fixture), so
    that ``pytest -m cuda`` selects them alone: make check-gpu's first test step."""
    for item in items:
        on_cuda = getattr(item, "callspec", None) is not None and item.callspec.params.get("device") == "cuda"
        if on_cuda or "cuda" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cuda)


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return "cuda"
