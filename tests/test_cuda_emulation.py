"""Every CUDA kernel executed without a GPU: csrc/cuda/*.cu compiled as host C++ with
csrc/emulation/cuda_on_host.h (each block's threads real OS threads, __syncthreads() a barrier),
registered as the ops' CUDA kernels in a library of the tests' own (the user's _C is untouched), and
called on CPU tensors by redispatching to the CUDA key. Compared with the CPU kernels on the cases
they are tested on: bitwise where the arithmetic is the same, else within a stated bound.

Built by ``make check-cuda-emu`` three ways, CNNREPRO_CUDA_EMULATION=plain, asan (address and
undefined-behaviour sanitizers: no out-of-bounds access, no signed overflow) and tsan (thread
sanitizer: no race between __syncthreads() phases); skipped when that variable is unset."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension

import cnnrepro  # noqa: F401  (the ops' schemas and CPU kernels)

ROOT = Path(__file__).resolve().parent.parent
VARIANT = os.environ.get("CNNREPRO_CUDA_EMULATION")
SANITIZE = {
    "plain": [],
    "asan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"],
    "tsan": ["-fsanitize=thread"],
}

pytestmark = pytest.mark.skipif(
    VARIANT not in SANITIZE, reason="the CUDA kernels' host build runs under make check-cuda-emu"
)


# Bugs planted in a copy of one source, each of which a variant must catch (test_planted_bugs_are_caught):
# name -> (source, text, replaced by, variant, the test that must fail, what its output must say).
MUTANTS = {
    "out_of_bounds": (
        "lrn.cu",
        "if (i >= numel) return;",
        "if (i > numel) return;",
        "asan",
        "lrn",
        "AddressSanitizer",
    ),
    "missing_syncthreads": (
        "conv_bn_relu.cu",
        "    __syncthreads();\n    if (threadIdx.x < stride)",
        "    if (threadIdx.x < stride)",
        "tsan",
        "conv_bn_relu",
        "ThreadSanitizer: data race",
    ),
    "off_by_one_window": (
        "max_pool.cu",
        "(w.kh - 1) * w.dh + 1, g.H)",
        "(w.kh - 1) * w.dh, g.H)",
        "plain",
        "max_pool",
        "AssertionError",
    ),
}
MUTANT = os.environ.get("CNNREPRO_CUDA_EMULATION_MUTANT")


def host_sources(build: Path) -> list[str]:
    """A wrapper .cpp per .cu (the extension builder compiles .cu with nvcc), or with a MUTANT the
    mutated copy of its one source alone."""
    if MUTANT:
        name, text, replacement = MUTANTS[MUTANT][:3]
        original = (ROOT / "csrc" / "cuda" / name).read_text()
        assert original.count(text) >= 1, f"the mutant {MUTANT} no longer applies to {name}"
        mutated = build / f"mutated_{name}"
        mutated.write_text(
            original.replace(text, replacement, 1).replace('#include "', f'#include "{ROOT}/csrc/cuda/')
        )
        sources = {name: mutated}
    else:
        sources = {cu.name: cu for cu in sorted((ROOT / "csrc" / "cuda").glob("*.cu"))}
    wrappers = []
    for name, source in sources.items():
        wrapper = build / f"{Path(name).stem}_on_host.cpp"
        text = f'#include "{source}"\n'
        if not wrapper.exists() or wrapper.read_text() != text:
            wrapper.write_text(text)
        wrappers.append(str(wrapper))
    return wrappers


@pytest.fixture(scope="module", autouse=True)
def emulated_kernels():
    """Builds (or reuses) the host build of every .cu and loads it as the ops' CUDA kernels."""
    name = VARIANT + (f"-{MUTANT}" if MUTANT else "")
    build = ROOT / "build" / "cuda-emulation" / name
    build.mkdir(parents=True, exist_ok=True)
    flags = ["-std=c++20", "-O1", "-g", "-include", str(ROOT / "csrc" / "emulation" / "cuda_on_host.h")]
    with pytest.MonkeyPatch.context() as env:  # the sanitizer preloaded here must not be in the compiler
        env.delenv("LD_PRELOAD", raising=False)
        torch.utils.cpp_extension.load(
            name=f"cnnrepro_cuda_on_host_{name}".replace("-", "_"),
            sources=host_sources(build),
            extra_include_paths=[str(ROOT / "csrc" / "emulation" / "include")],
            extra_cflags=flags + SANITIZE[VARIANT],
            extra_ldflags=SANITIZE[VARIANT],
            build_directory=str(build),
            is_python_module=False,
        )


CUDA_KEY = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)  # torch's only way to pick a key


def on_cuda_kernel(op, *args):
    """``op`` (a torch.ops.cnnrepro overload) run by its CUDA kernel, here the host build."""
    return op.redispatch(CUDA_KEY, *args)


def layouts(x: torch.Tensor) -> list[torch.Tensor]:
    return [x.contiguous(), x.contiguous(memory_format=torch.channels_last), x.transpose(2, 3)]


def cases(dtype, generator) -> list[torch.Tensor]:
    """Odd and even sizes, one element, empty, ties (rounded values), NaN and inf."""
    x = torch.randn(3, 7, 9, 8, generator=generator)
    special = torch.randn(2, 5, 6, 5, generator=generator)
    special[0, 1, 2, 3], special[1, 2, 0, 0], special[1, 4, 5, 4] = float("nan"), float("inf"), -float("inf")
    return [
        t.to(dtype)
        for base in (
            x,
            x.round(),
            special,
            torch.randn(1, 1, 1, 1, generator=generator),
            torch.randn(0, 4, 5, 5),
        )
        for t in layouts(base)
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_lrn_forward_and_backward(dtype):
    generator = torch.Generator().manual_seed(0)
    for x in cases(dtype, generator):
        for size in (1, 4, 5):
            args = (x, size, 1e-2, 0.75, 2.0)
            expected = torch.ops.cnnrepro.lrn.default(*args)
            got = on_cuda_kernel(torch.ops.cnnrepro.lrn.default, *args)
            assert torch.equal(got.isnan(), expected.isnan())
            torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)  # the same arithmetic
            dy = torch.randn(x.shape, generator=generator).to(dtype)
            expected = torch.ops.cnnrepro.lrn_backward.default(dy, *args)
            got = on_cuda_kernel(torch.ops.cnnrepro.lrn_backward.default, dy, *args)
            # The CPU sums the mirrored window's terms in another order, and bfloat16's in float.
            tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}[
                dtype
            ]
            torch.testing.assert_close(got, expected, rtol=tol, atol=tol, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_forward_and_backward(dtype, ceil_mode):
    generator = torch.Generator().manual_seed(1)
    for x in cases(dtype, generator):
        if min(x.shape[2:]) < 3:
            continue
        window = ([3, 3], [2, 2], [1, 1], [1, 1], ceil_mode)
        values, indices = torch.ops.cnnrepro.max_pool2d_with_argmax.default(x, *window)
        got_values, got_indices = on_cuda_kernel(
            torch.ops.cnnrepro.max_pool2d_with_argmax.default, x, *window
        )
        assert torch.equal(got_indices, indices)
        torch.testing.assert_close(got_values, values, rtol=0, atol=0, equal_nan=True)
        dy = torch.randn(values.shape, generator=generator).to(dtype)
        backward = torch.ops.cnnrepro.max_pool2d_with_argmax_backward.default
        expected = backward(dy, indices, list(x.shape), *window)
        got = on_cuda_kernel(backward, dy, indices, list(x.shape), *window)
        # Half types: the GPU accumulates a window's gradients in float, the CPU in the type (as native).
        tol = {torch.bfloat16: 1.6e-2, torch.float16: 2e-3}.get(dtype, 0)
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def block_args(x, generator, bias=True):
    c_out = 6
    weight = torch.randn(c_out, x.shape[1], 3, 3, generator=generator).to(x.dtype)
    conv_bias = torch.randn(c_out, generator=generator).to(x.dtype) if bias else None
    gamma = torch.rand(c_out, generator=generator).to(x.dtype) + 0.5
    beta = torch.randn(c_out, generator=generator).to(x.dtype)
    return weight, conv_bias, gamma, beta


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv_bn_relu_train_eval_and_backward(dtype):
    generator = torch.Generator().manual_seed(2)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-11)
    for x in cases(dtype, generator):
        if x.shape[0] * x.shape[2] * x.shape[3] < 2 or x.isnan().any() or x.isinf().any():
            continue  # one value per channel is refused; non-finite inputs are the conformance tests'
        weight, bias, gamma, beta = block_args(x, generator)
        conv = ([1, 1], [1, 1], [1, 1], 1, 1e-5)
        train = torch.ops.cnnrepro.conv_bn_relu_train.default
        expected = train(x, weight, bias, gamma, beta, *conv)
        got = on_cuda_kernel(train, x, weight, bias, gamma, beta, *conv)
        for a, b in zip(got, expected, strict=True):  # the sums run in another order (a tree per block)
            torch.testing.assert_close(a, b, **tol)
        _, z, mean, var = expected
        dy = torch.randn(z.shape, generator=generator).to(dtype)
        backward = torch.ops.cnnrepro.conv_bn_relu_train_backward.default
        args = (dy, x, weight, z, mean, var, gamma, beta, *conv, [True, True, True])
        for a, b in zip(on_cuda_kernel(backward, *args), backward(*args), strict=True):
            torch.testing.assert_close(a, b, **tol)
        running = (mean + 0.1, var + 0.5)
        evaluate = torch.ops.cnnrepro.conv_bn_relu_eval.default
        eval_args = (x, weight, bias, gamma, beta, *running, *conv)
        torch.testing.assert_close(on_cuda_kernel(evaluate, *eval_args), evaluate(*eval_args), **tol)


@pytest.mark.skipif(bool(MUTANT), reason="a mutant's own run")
@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_planted_bugs_are_caught(mutant):
    """The harness bites: each planted bug makes its test fail under its variant, in a process of
    its own (its kernels replace the good ones)."""
    *_, variant, target, signature = MUTANTS[mutant]
    if variant != VARIANT:
        pytest.skip(f"caught by the {variant} build")
    env = os.environ | {"CNNREPRO_CUDA_EMULATION_MUTANT": mutant}
    run = subprocess.run(
        # -s: a sanitizer's report goes to stderr as the process dies, past pytest's capture
        [sys.executable, "-m", "pytest", "-q", "-x", "-s", "-p", "no:cacheprovider", __file__, "-k", target],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode != 0, f"the planted {mutant} went unnoticed:\n{run.stdout[-2000:]}"
    assert signature in run.stdout + run.stderr, (run.stdout + run.stderr)[-3000:]
