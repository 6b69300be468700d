"""Build cnnrepro._C: the C++ ops always, the CUDA ops when they can be built.

Environment knobs (all optional):
  CNNREPRO_CUDA           "auto" (default: CUDA when torch is a CUDA build and a CUDA toolkit with
                          nvcc and libcudart is found), "on" (fail if it cannot be built), "off"
  FORCE_CUDA=1            the same as CNNREPRO_CUDA=on (torch's convention)
  CUDA_HOME               the CUDA toolkit to use (default: found, see cuda_toolkit())
  TORCH_CUDA_ARCH_LIST    e.g. "9.0" or "8.0;9.0+PTX" (default: the visible GPU, else DEFAULT_ARCHS)
  MAX_JOBS                parallel compile jobs for ninja
  DEBUG=1                 -O0 -g, no NDEBUG
  CNNREPRO_CPU_ARCH       "auto" (the default for editable installs, which run where they are built:
                          x86-64-v4 when the build machine has AVX-512, else x86-64-v3 when it
                          has AVX2 and FMA), "portable" (the
                          compiler's baseline; the default for wheels and other non-editable
                          installs, which may be copied to another machine), or any -march value
"""

import glob
import os
import platform
import shutil
import sys
from pathlib import Path

import torch
from setuptools import setup
from torch.utils import cpp_extension
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

ROOT = Path(__file__).resolve().parent
GENERATED = ROOT / "build" / "generated"
DEFAULT_ARCHS = "7.5;8.0;8.6;9.0+PTX"


def env_flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


CUDA_MODES = ("auto", "on", "off")


def cuda_mode() -> str:
    mode = "on" if env_flag("FORCE_CUDA") else os.environ.get("CNNREPRO_CUDA", "auto").lower()
    if mode not in CUDA_MODES:
        sys.exit(f"cnnrepro build: CNNREPRO_CUDA must be one of {', '.join(CUDA_MODES)}, got {mode!r}")
    return mode


def is_cuda_toolkit(root: Path) -> bool:
    """A toolkit we can build and link with: nvcc and libcudart under one root."""
    libs = ("lib64", "lib", "targets/x86_64-linux/lib")
    has_cudart = any(next((root / lib).glob("libcudart.so*"), None) for lib in libs)
    return (root / "bin" / "nvcc").exists() and has_cudart


def cuda_toolkit() -> Path | None:
    """$CUDA_HOME (or $CUDA_PATH) if set, else the first real toolkit among: where nvcc on the PATH
    resolves to (symlinks followed: a wrapper in /usr/local/bin is not a toolkit root), then
    /usr/local/cuda and /usr/local/cuda-*. None when there is none."""
    given = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if given:
        return Path(given)
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent.parent)
    candidates += [Path("/usr/local/cuda"), *sorted(Path("/usr/local").glob("cuda-*"), reverse=True)]
    return next((root for root in candidates if is_cuda_toolkit(root)), None)


def cuda_wanted() -> bool:
    """Whether to build the CUDA sources (see CNNREPRO_CUDA). Points torch's extension helper at the
    toolkit found: on its own it takes the directory above the first nvcc on the PATH, which for a
    wrapper in /usr/local/bin is /usr/local, with no libcudart to link."""
    mode = cuda_mode()
    if mode == "off":
        return False
    toolkit = cuda_toolkit()
    problem = None
    if torch.version.cuda is None:
        problem = f"torch {torch.__version__} is a CPU build"
    elif toolkit is None:
        problem = "no CUDA toolkit (nvcc and libcudart) found; set CUDA_HOME"
    elif not is_cuda_toolkit(toolkit):
        problem = f"CUDA_HOME={toolkit} has no bin/nvcc or no libcudart"
    if problem:
        if mode == "on":
            sys.exit(f"cnnrepro build: CUDA was asked for (CNNREPRO_CUDA=on or FORCE_CUDA=1), but {problem}")
        return False
    cpp_extension.CUDA_HOME = os.environ["CUDA_HOME"] = str(toolkit)
    return True


def resolve_arch_list() -> str:
    """TORCH_CUDA_ARCH_LIST if set; else the visible GPU's; else a portable default."""
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if not archs and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        archs = f"{major}.{minor}"
    archs = archs or DEFAULT_ARCHS
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs  # cpp_extension reads it from here
    return archs


def cpu_arch_flags(editable: bool) -> list[str]:
    """-march for the CPU kernels. An editable install runs where it is built, so by default it
    uses AVX-512, or else AVX2/FMA, when the build machine has them (the same bits either way: no
    fused multiply-add, no reassociation, and square roots and divisions are exact); any other
    build may run elsewhere (a wheel copied to an older CPU would die of SIGILL), so it targets the
    compiler's baseline."""
    arch = os.environ.get("CNNREPRO_CPU_ARCH", "auto" if editable else "portable")
    if arch == "portable":
        return []
    if arch != "auto":
        return [f"-march={arch}"]
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    is_x86 = platform.machine() in ("x86_64", "AMD64")
    if not is_x86:
        return []
    if {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} <= set(flags):
        return ["-march=x86-64-v4"]  # twice v3's square roots and divisions per cycle: LRN's bound
    return ["-march=x86-64-v3"] if {"avx2", "fma"} <= set(flags) else []


def nvidia_wheel_includes() -> list[str]:
    """Headers of the CUDA libraries that pip's CUDA builds of torch bring as nvidia-* wheels
    (ATen's CUDA headers include cusparse.h, cublas_v2.h, ...: not every toolkit install has them)."""
    site_packages = Path(torch.__file__).resolve().parent.parent
    return sorted(str(p) for p in site_packages.glob("nvidia/*/include") if p.is_dir())


def compiler_version() -> str:
    cxx = os.environ.get("CXX", "c++")
    out = os.popen(f"{cxx} --version 2>/dev/null").readline().strip()
    return out or cxx


def write_build_config(with_cuda: bool, archs: str, debug: bool, cpu_flags: list[str]) -> None:
    """Write the header that build_info() reports from, so _C says what it was built with."""
    GENERATED.mkdir(parents=True, exist_ok=True)
    fields = {
        "CNNREPRO_BUILD_TORCH_VERSION": torch.__version__,
        "CNNREPRO_BUILD_CUDA_VERSION": (torch.version.cuda or "") if with_cuda else "",
        "CNNREPRO_BUILD_ARCH_LIST": archs if with_cuda else "",
        "CNNREPRO_BUILD_COMPILER": compiler_version(),
        "CNNREPRO_BUILD_PLATFORM": f"{platform.system()}-{platform.machine()}",
        "CNNREPRO_BUILD_TYPE": "debug" if debug else "release",
        "CNNREPRO_BUILD_CPU_FLAGS": " ".join(cpu_flags),
    }
    lines = ["// Generated by setup.py: what cnnrepro._C was built with.", "#pragma once"]
    lines += [f'#define {key} "{value.replace(chr(34), "")}"' for key, value in fields.items()]
    lines.append(f"#define CNNREPRO_BUILD_WITH_CUDA {int(with_cuda)}")
    text = "\n".join(lines) + "\n"
    header = GENERATED / "cnnrepro_build_config.h"
    if not header.exists() or header.read_text() != text:  # keep ninja's rebuilds incremental
        header.write_text(text)


class PersistentBuildExt(BuildExtension):
    """BuildExtension with a fixed build_temp, so ninja rebuilds only what changed, also under
    pip's editable installs (which otherwise build in a fresh temp dir). Picks the CPU flags here,
    where it is known whether the install is editable (see cpu_arch_flags)."""

    def finalize_options(self):
        super().finalize_options()
        self.build_temp = str(ROOT / "build" / "temp")

    def build_extensions(self):
        cpu_flags = cpu_arch_flags(editable=self.editable_mode)
        for ext in self.extensions:
            ext.extra_compile_args["cxx"] += cpu_flags
            with_cuda = "nvcc" in ext.extra_compile_args
            archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "") if with_cuda else ""
            write_build_config(with_cuda, archs, env_flag("DEBUG"), cpu_flags)
        print(f"cnnrepro build: cpu flags {cpu_flags or 'baseline'}", file=sys.stderr)
        super().build_extensions()


def make_extension():
    with_cuda = cuda_wanted()
    debug = env_flag("DEBUG")
    archs = resolve_arch_list() if with_cuda else ""

    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # No FMA contraction: keeps our float arithmetic in the order we wrote (and as native's).
    cxx_flags = opt + ["-std=c++20", "-fno-math-errno", "-ffp-contract=off", "-fdiagnostics-color=always"]
    # at::parallel_for is a header template over `#pragma omp parallel`: without -fopenmp it
    # compiles to a serial loop. Linking libgomp.so.1 reuses the copy torch has already loaded.
    cxx_flags += ["-fopenmp"]
    macros = [] if debug else [("NDEBUG", None)]
    extra = {"cxx": cxx_flags}
    ext_class = CppExtension
    include_dirs = [str(ROOT / "csrc"), str(GENERATED)]
    if with_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        extra["nvcc"] = opt + ["-std=c++20", "--expt-relaxed-constexpr"]
        macros.append(("CNNREPRO_WITH_CUDA", None))
        include_dirs += nvidia_wheel_includes()
        ext_class = CUDAExtension

    print(
        f"cnnrepro build: torch {torch.__version__}, cuda={'yes' if with_cuda else 'no'}"
        f"{f' (CUDA_HOME {cpp_extension.CUDA_HOME}, archs {archs})' if with_cuda else ''}, "
        f"{'debug' if debug else 'release'}, "
        f"MAX_JOBS={os.environ.get('MAX_JOBS', 'auto')}, {len(sources)} sources",
        file=sys.stderr,
    )
    return ext_class(
        name="cnnrepro._C",
        sources=sources,
        include_dirs=include_dirs,
        define_macros=macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )


if __name__ == "__main__":  # pip's build backend runs this file as __main__; tests import it
    setup(ext_modules=[make_extension()], cmdclass={"build_ext": PersistentBuildExt})
