"""The build's switches (setup.py): CUDA on, off or auto; a CUDA toolkit found where nvcc really
lives, not where a wrapper sits; portable CPU code unless the install is editable."""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def build(monkeypatch):
    for name in ("CNNREPRO_CUDA", "FORCE_CUDA", "CUDA_HOME", "CUDA_PATH", "CNNREPRO_CPU_ARCH"):
        monkeypatch.delenv(name, raising=False)
    spec = importlib.util.spec_from_file_location("cnnrepro_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_toolkit(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "lib64").mkdir()
    (root / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (root / "bin" / "nvcc").chmod(0o755)
    (root / "lib64" / "libcudart.so.13").write_text("")
    return root


def test_cuda_off_builds_cpu_only_whatever_is_installed(build, monkeypatch, tmp_path):
    monkeypatch.setenv("CNNREPRO_CUDA", "off")
    monkeypatch.setenv("CUDA_HOME", str(fake_toolkit(tmp_path / "cuda")))
    assert build.cuda_wanted() is False


def test_cuda_on_fails_loudly_when_it_cannot_be_built(build, monkeypatch, tmp_path):
    monkeypatch.setenv("CNNREPRO_CUDA", "on")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))  # not a toolkit
    if torch.version.cuda is None:
        match = "CPU build"
    else:
        match = f"CUDA_HOME={tmp_path} has no bin/nvcc or no libcudart"
    with pytest.raises(SystemExit, match=match):
        build.cuda_wanted()
    monkeypatch.setenv("CNNREPRO_CUDA", "sometimes")
    with pytest.raises(SystemExit, match="CNNREPRO_CUDA must be one of auto, on, off"):
        build.cuda_mode()


def test_force_cuda_means_on(build, monkeypatch):
    monkeypatch.setenv("FORCE_CUDA", "1")
    assert build.cuda_mode() == "on"


def test_auto_builds_cuda_only_with_a_cuda_torch_and_a_toolkit(build, monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_HOME", str(fake_toolkit(tmp_path / "cuda")))
    assert build.cuda_wanted() is (torch.version.cuda is not None)
    if torch.version.cuda is not None:
        assert build.cpp_extension.CUDA_HOME == str(tmp_path / "cuda"), "torch's helper links from here"


def test_the_toolkit_is_where_nvcc_resolves_not_where_a_wrapper_sits(build, monkeypatch, tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda-13.0")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "nvcc").symlink_to(toolkit / "bin" / "nvcc")
    monkeypatch.setenv("PATH", f"{linked}{os.pathsep}{os.environ['PATH']}")
    assert build.cuda_toolkit() == toolkit

    wrapper = tmp_path / "wrapper" / "bin"  # a script named nvcc, as in /usr/local/bin here
    wrapper.mkdir(parents=True)
    (wrapper / "nvcc").write_text('#!/bin/sh\nexec /somewhere/nvcc "$@"\n')
    (wrapper / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper}{os.pathsep}{os.environ['PATH']}")
    found = build.cuda_toolkit()
    assert found != wrapper.parent and (found is None or build.is_cuda_toolkit(found))


def test_cpu_code_is_portable_unless_the_install_is_editable(build, monkeypatch):
    assert build.cpu_arch_flags(editable=False) == []
    flags = set(Path("/proc/cpuinfo").read_text().split())
    has_avx512 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} <= flags
    expected = "x86-64-v4" if has_avx512 else "x86-64-v3" if {"avx2", "fma"} <= flags else None
    assert build.cpu_arch_flags(editable=True) == ([f"-march={expected}"] if expected else [])
    monkeypatch.setenv("CNNREPRO_CPU_ARCH", "skylake")
    assert build.cpu_arch_flags(editable=False) == ["-march=skylake"]
