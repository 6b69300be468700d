"""The extension loads, registers its ops, and says what it was built with."""

import re
from pathlib import Path

import torch

import cnnrepro

ROOT = Path(__file__).resolve().parent.parent


def test_build_info_describes_the_build():
    info = cnnrepro.build_info()
    assert info["torch_matches"], f"_C built for torch {info['torch_version']}, running {torch.__version__}"
    assert isinstance(info["with_cuda"], bool)
    assert info["build_type"] in ("release", "debug")
    if info["with_cuda"]:
        assert info["cuda_arch_list"], "a CUDA build names its architectures"
    else:
        assert info["cuda_arch_list"] == ""


def test_cpu_kernels_are_built_to_run_in_parallel():
    """at::parallel_for is a header template over an OpenMP pragma: built without -fopenmp, every
    CPU kernel would silently run on one thread while torch's own ops use them all."""
    if "parallel backend: OpenMP" in torch.__config__.parallel_info():
        assert cnnrepro.build_info()["openmp"], "cnnrepro._C was compiled without -fopenmp"


def defined_ops() -> list[str]:
    """Every op csrc/registration.cpp defines (its ``m.def`` schemas), by name."""
    return re.findall(r'm\.def\(\s*"(\w+)\(', (ROOT / "csrc" / "registration.cpp").read_text())


def test_ops_are_registered_with_the_dispatcher():
    assert {"lrn", "lrn_backward", "max_pool2d_with_argmax", "conv_bn_relu_train"} <= set(defined_ops())
    for name in defined_ops():
        assert hasattr(torch.ops.cnnrepro, name), f"{name}: defined in registration.cpp, not registered"


def test_every_op_with_cuda_kernels_has_the_tests_and_benchmarks_check_gpu_runs():
    """scripts/check_gpu.sh runs tests/test_<op>.py under compute-sanitizer and times
    benchmarks/test_bench_<op>.py for every csrc/cuda/<op>.cu."""
    ops = sorted(kernels.stem for kernels in (ROOT / "csrc" / "cuda").glob("*.cu"))
    assert ops, "no csrc/cuda/*.cu"
    for op in ops:
        assert (ROOT / "tests" / f"test_{op}.py").is_file(), f"csrc/cuda/{op}.cu: no tests/test_{op}.py"
        bench = ROOT / "benchmarks" / f"test_bench_{op}.py"
        assert bench.is_file(), f"csrc/cuda/{op}.cu: no benchmarks/test_bench_{op}.py"


def test_code_revision_names_the_commit_or_hashes_the_files(monkeypatch, tmp_path):
    import subprocess

    from cnnrepro import revision

    checkout = revision.PACKAGE.parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=checkout)
    if (checkout / ".git").exists() and head.returncode == 0:  # not a copy inside another checkout
        assert cnnrepro.code_revision().removesuffix("+dirty") == f"git:{head.stdout.strip()[:12]}"
    package = tmp_path / "cnnrepro"  # a copy outside any checkout: version + a hash of its files
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(revision, "PACKAGE", package)
    first = revision.code_revision()
    assert first.startswith(f"{cnnrepro.__version__}+")
    (package / "a.py").write_text("x = 2\n")
    assert revision.code_revision() != first, "another file, another revision"
