"""The extension loads, registers its ops, and says what it was built with."""

import torch

import cnnrepro


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


def test_ops_are_registered_with_the_dispatcher():
    for name in ("lrn", "lrn_backward"):
        assert hasattr(torch.ops.cnnrepro, name)
