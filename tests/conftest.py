"""Shared fixtures (the devices to test on: CUDA only when a GPU is present) and the markers:

- ``cuda``: the test runs on CUDA (make check-gpu selects them with ``-m cuda``);
- ``slow``: the test trains, writes a report, starts servers, processes or a browser, builds
  code, runs a seeded fuzz of hundreds of inputs, or is one model's case of a test run for every
  model, but for one model per family (the family's representative, below). ``make test-fast``
  (``pytest -m "not slow"``) leaves them out: the inner loop (docs/testing.md). ``make test`` runs
  everything.
"""

import functools
import inspect
import re

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Modules every test of which is slow, and why.
SLOW_MODULES = {
    "test_run": "trains through the runner",
    "test_runner_faults": "trains, kills and resumes the runner",
    "test_train": "trains (the engine: repeats, resumes, diverges)",
    "test_ray": "starts a Ray cluster",
    "test_torchrun": "starts torchrun's processes",
    "test_loopback": "starts servers in a network namespace",
    "test_check_gpu": "runs make check-gpu's plan on the CPU",
    "test_cuda_emulation": "builds the CUDA kernels as host code",
    "test_bench_harness": "runs the benchmarks' smallest cases",
    "test_inspect": "trains a store, renders in Chromium",
    "test_report": "writes reports of trained stores, renders in Chromium",
    "test_report_images": "trains, renders the report",
    "test_tensorboard": "trains through the runner",
    "test_keras_profile": "trains the Keras recipes",
    "test_identity": "trains the identity suite's report",
    "test_setup": "runs setup.py's configuration in subprocesses",
    "test_compile": "compiles models with inductor (C++ per graph)",
}
# A test that trains (through the runner or the engine), writes a report, or starts a process or a
# browser, in its body or in a fixture it uses.
SLOW_CALLS = re.compile(
    r"\b(run_main|main)\(\[|\btrain_run\(|\bwrite_report\(|subprocess\.|CHROMIUM\b|Popen\("
)


def pytest_ignore_collect(collection_path, config):
    """Under ``-m "not slow"`` (make test-fast), a module every test of which is slow is not even
    imported: importing test_compile alone loads inductor (about 3 s of the inner loop's time)."""
    if config.getoption("markexpr") == "not slow" and collection_path.stem in SLOW_MODULES:
        return True
    return None


def pytest_configure(config):
    # Keep CPU tests fast and repeatable on the 2-core CI machine.
    torch.set_num_threads(min(2, torch.get_num_threads()))
    config.addinivalue_line("markers", "slow: trains, starts servers or a browser, builds, or runs deep nets")


@functools.cache
def _models_but_representatives() -> frozenset:
    """Every registered model but one per family: the family's representative, its model with the
    shortest name among those not numbered 100 layers or more (lenet5, alexnet, vgg11, nin,
    googlenet, resnet18, resnet20, plain20, preresnet20, densenet-d2l)."""
    from cnnrepro import models  # at collection's end: the test modules have imported it already

    families = {}
    for name in models.list_models():
        families.setdefault(models.model_info(name).family, []).append(name)
    deep = re.compile(r"\d{3,}")
    representatives = {
        min(names, key=lambda n: (bool(deep.search(n)) and int(deep.search(n).group()) >= 100, len(n), n))
        for names in families.values()
    }
    return frozenset(models.list_models()) - representatives


@functools.cache
def _source_calls_slow_code(function) -> bool:
    try:
        return bool(SLOW_CALLS.search(inspect.getsource(function)))
    except (OSError, TypeError):
        return False


def _is_slow(item) -> bool:
    module = item.module.__name__.rpartition(".")[2] if getattr(item, "module", None) else ""
    if module in SLOW_MODULES or item.name.startswith("test_fuzz_"):
        return True
    params = getattr(item, "callspec", None)
    values = params.params.values() if params else ()
    if any(isinstance(value, str) and value in _models_but_representatives() for value in values):
        return True
    functions = [getattr(item, "function", None)]
    for name in getattr(item, "fixturenames", ()):  # every fixture it uses, and theirs
        functions += [fixturedef.func for fixturedef in item._fixtureinfo.name2fixturedefs.get(name, ())]
    ours = [f for f in functions if f is not None and not f.__module__.startswith(("_pytest", "pytest"))]
    return any(_source_calls_slow_code(f) for f in ours)


def pytest_collection_modifyitems(items):
    """Mark every test that runs on CUDA (the device fixture's cuda case, or the cuda fixture), so
    that ``pytest -m cuda`` selects them alone: make check-gpu's first test step; and every slow
    test (above), so that ``pytest -m "not slow"`` leaves them out."""
    for item in items:
        on_cuda = getattr(item, "callspec", None) is not None and item.callspec.params.get("device") == "cuda"
        if on_cuda or "cuda" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cuda)
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return "cuda"
