"""Shared fixtures: the devices to test on (CUDA only when a GPU is present)."""

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_configure(config):
    # Keep CPU tests fast and repeatable on the 2-core CI machine.
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return "cuda"
