"""Every CUDA kernel executed without a GPU: csrc/cuda/*.cu compiled as host C++ with
csrc/emulation/cuda_on_host.h (each block's threads real OS threads, __syncthreads() a barrier),
registered as the ops' CUDA kernels in a library of the tests' own (the user's _C is untouched), and
called on CPU tensors by redispatching to the CUDA key. Compared with the CPU kernels on the cases
they are tested on: bitwise where the arithmetic is the same, else within a stated bound; with
32-bit and with 64-bit indices, grid-stride loops walked more than once and reductions cut into
several chunks (the emulation's settings, csrc/emulation/cuda_on_host.h). The index helpers are
checked directly at sizes past 2^31, 2^32 and 2^40 elements, and every launch of the largest shapes
the suite uses and of tensors up to 2^60 elements against CUDA's limits, by calling the ops on meta
tensors with launches planned but not run: neither allocates.

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
        "item < numel; item += cuda::grid_stride()",
        "item <= numel; item += cuda::grid_stride()",
        "asan",
        "lrn",
        "AddressSanitizer",
    ),
    "missing_syncthreads": (
        "conv_bn_relu.cu",
        "    __syncthreads();\n    if (row < half",
        "    if (row < half",
        "tsan",
        "conv_bn_relu",
        "ThreadSanitizer: data race",
    ),
    "off_by_one_window": (
        "max_pool.cu",
        "(w.kh - 1) * w.dh + 1, g.in.H)",
        "(w.kh - 1) * w.dh, g.in.H)",
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
    for k, (name, source) in enumerate(sources.items()):
        wrapper = build / f"{Path(name).stem}_on_host.cpp"
        text = f'#include "{source}"\n'
        if k == 0:  # the test-only entry points, in a unit of their own they would parse ATen once more
            text += f'#include "{ROOT / "csrc" / "emulation" / "testing.cpp"}"\n'
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
    configure()


INT32_MAX = 2**31 - 1
GRID_X_MAX = 2**31 - 1


def configure(grid_cap=3, narrow_limit=INT32_MAX, reduce_items=1, plan_only=False):
    """The emulation's settings (cuda_on_host.h); the defaults exercise the loops on small tensors,
    a narrow_limit of -1 runs the 64-bit instantiations."""
    torch.ops.cnnrepro_emulation.configure(grid_cap, narrow_limit, reduce_items, plan_only)


def take_launches() -> list[dict]:
    """The launches since the last call."""
    flat = torch.ops.cnnrepro_emulation.take_launches()
    keys = ("grid", "block", "shared_bytes", "index_bits")
    return [
        dict(
            zip(
                keys,
                (tuple(flat[k : k + 3]), tuple(flat[k + 3 : k + 6]), flat[k + 6], flat[k + 7]),
                strict=True,
            )
        )
        for k in range(0, len(flat), 8)
    ]


@pytest.fixture(params=[32, 64])
def index_bits(request):
    """Runs a test with the 32-bit instantiations (what these small tensors get) and with the 64-bit
    ones (what tensors past 2^31 elements get), and checks every indexed launch had that width."""
    configure(narrow_limit=INT32_MAX if request.param == 32 else -1)
    take_launches()
    yield request.param
    widths = {launch["index_bits"] for launch in take_launches()} - {0}
    configure()
    assert widths == {request.param}, widths


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


# Every dtype with 32-bit indices; the 64-bit instantiations (the same code but for the index type)
# with float32 only, to keep the sanitized builds' time.
DTYPES_AND_WIDTHS = [(dtype, 32) for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)]
DTYPES_AND_WIDTHS.append((torch.float32, 64))


@pytest.mark.parametrize(("dtype", "index_bits"), DTYPES_AND_WIDTHS, indirect=["index_bits"])
def test_lrn_forward_and_backward(dtype, index_bits):
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


@pytest.mark.parametrize(("dtype", "index_bits"), DTYPES_AND_WIDTHS, indirect=["index_bits"])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_forward_and_backward(dtype, index_bits, ceil_mode):
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


def block_args(x, generator, bias=True, c_out=6):
    weight = torch.randn(c_out, x.shape[1], 3, 3, generator=generator).to(x.dtype)
    conv_bias = torch.randn(c_out, generator=generator).to(x.dtype) if bias else None
    gamma = torch.rand(c_out, generator=generator).to(x.dtype) + 0.5
    beta = torch.randn(c_out, generator=generator).to(x.dtype)
    return weight, conv_bias, gamma, beta


def conv_cases(dtype, generator, common=True) -> list[tuple[torch.Tensor, int]]:
    """Odd and even sizes in every layout with 6 output channels (unless not common: the 64-bit
    run), and two that the reductions split (the emulation's settings): 1,600 values a channel
    (several chunks in either layout), and 40 channels-last channels (a full tile of 32 channels and
    one of 8). (One value a channel is refused; empty and non-finite inputs are the conformance
    tests'.)"""
    chunked = torch.randn(4, 3, 20, 20, generator=generator)
    tiled = torch.randn(2, 3, 6, 6, generator=generator).contiguous(memory_format=torch.channels_last)
    plain = layouts(torch.randn(3, 7, 9, 8, generator=generator)) if common else []
    return [(x, 6) for x in plain] + [
        *((t, 2) for t in layouts(chunked)),
        (tiled, 40),
    ]


@pytest.mark.parametrize(
    ("dtype", "index_bits"),
    [(torch.float32, 32), (torch.float64, 32), (torch.float32, 64)],
    indirect=["index_bits"],
)
def test_conv_bn_relu_train_eval_and_backward(dtype, index_bits):
    generator = torch.Generator().manual_seed(2)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-11)
    for x, c_out in conv_cases(dtype, generator, common=index_bits == 32):  # 64-bit: the split cases
        x = x.to(dtype)
        if x.shape[0] * x.shape[2] * x.shape[3] < 2 or x.isnan().any() or x.isinf().any():
            continue  # one value per channel is refused; non-finite inputs are the conformance tests'
        weight, bias, gamma, beta = block_args(x, generator, c_out=c_out)
        conv = ([1, 1], [1, 1], [1, 1], 1, 1e-5)
        train = torch.ops.cnnrepro.conv_bn_relu_train.default
        expected = train(x, weight, bias, gamma, beta, *conv)
        got = on_cuda_kernel(train, x, weight, bias, gamma, beta, *conv)
        for a, b in zip(got, expected, strict=True):  # the sums run in another order (chunks, trees)
            torch.testing.assert_close(a, b, **tol)
        if c_out != 6:  # same input, same bits: the chunks' order is fixed (no atomics)
            for a, b in zip(on_cuda_kernel(train, x, weight, bias, gamma, beta, *conv), got, strict=True):
                assert torch.equal(a, b)
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


# --- The index helpers, directly (csrc/cuda/index.h, launch.h): no tensor is allocated. ---


def unravel(i: int, shape: tuple[int, int, int, int], channels_last: bool) -> tuple[int, int, int, int]:
    N, C, H, W = shape
    if channels_last:
        i, c = divmod(i, C)
        i, w = divmod(i, W)
        n, h = divmod(i, H)
    else:
        i, w = divmod(i, W)
        i, h = divmod(i, H)
        n, c = divmod(i, C)
    return n, c, h, w


def probe_offsets(numel: int, generator: torch.Generator) -> list[int]:
    """The first and last offsets, those around every power of two, and random ones, below numel."""
    around = {k + d for p in range(1, 63) for k in (2**p,) for d in (-1, 0, 1)}
    randoms = (torch.rand(200, generator=generator, dtype=torch.float64) * numel).long().tolist()
    return sorted({0, 1, numel - 2, numel - 1, *randoms} | {k for k in around if 0 <= k < numel})


# Shapes past 2^31, 2^32 and 2^40 elements (64-bit), and up to 2^31 (32-bit: the largest offset 2^31 - 1).
WIDE_SHAPES = [
    (2**20, 64, 8, 8),
    (2**17 + 1, 96, 55, 55),
    (2**21 + 3, 512, 33, 31),
    (3, 5, 2**16 + 1, 2**15 + 3),
]
NARROW_SHAPES = [(2, 2**10, 2**10, 2**10), (128, 96, 55, 55), (1, 3, 2**15 - 1, 2**14 + 1), (7, 1, 1, 2**28)]


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_positions_and_offsets_at_large_sizes(bits, channels_last):
    ops = torch.ops.cnnrepro_emulation
    generator = torch.Generator().manual_seed(4)
    for shape in NARROW_SHAPES + (WIDE_SHAPES if bits == 64 else []):
        N, C, H, W = shape
        numel = N * C * H * W
        assert bits == 64 or numel - 1 <= INT32_MAX
        offsets = probe_offsets(numel, generator)
        expected = [unravel(i, shape, channels_last) for i in offsets]
        got = ops.position(offsets, C, H, W, channels_last, bits)
        assert [tuple(got[k : k + 4]) for k in range(0, len(got), 4)] == expected, shape
        flat = [v for p in expected for v in p]
        assert ops.offset(flat, C, H, W, channels_last, bits) == offsets, shape
        # the channel of an [N, C, S] view, S = H * W
        assert ops.channel(offsets, N, C, H * W, channels_last, bits) == [p[1] for p in expected], shape


def test_32_bit_division_is_exact():
    """Divider<int32_t> (multiply-high, add, shift) against Python's // and % for divisors from 1 to
    2^31 - 1 and dividends at the edges and spread over [0, 2^31)."""
    ops = torch.ops.cnnrepro_emulation
    generator = torch.Generator().manual_seed(5)
    special = [1, 2, 3, 5, 6, 7, 55, 96, 3025, 50176, 2**16 - 1, 2**16 + 1, 2**30 - 1, 2**30, 2**30 + 1]
    special += [INT32_MAX - 1, INT32_MAX]
    randoms = torch.randint(1, INT32_MAX, (40,), generator=generator).tolist()
    for d in special + randoms + [2**p for p in range(31)]:
        edges = sorted(
            {n for k in (1, 2, 3, INT32_MAX // d - 1, INT32_MAX // d) for n in (k * d - 1, k * d, k * d + 1)}
            | {0, 1, d - 1, d, INT32_MAX - 1, INT32_MAX}
        )
        edges = [n for n in edges if 0 <= n <= INT32_MAX]
        got = ops.divmod32(d, edges)
        assert [tuple(got[k : k + 2]) for k in range(0, len(got), 2)] == [divmod(n, d) for n in edges], d
        # 20,011 dividends spread over [0, 2^31) (a prime step), and every one near the top
        assert ops.divmod32_mismatches(d, 12345, 20011, 107311) == 0, d
        assert ops.divmod32_mismatches(d, INT32_MAX - 4096, 4097, 1) == 0, d
    with pytest.raises(RuntimeError, match="32-bit divisor"):
        ops.divmod32(2**31, [1])


def test_blocks_for_covers_any_size_within_cuda_limits():
    blocks_for = torch.ops.cnnrepro_emulation.blocks_for
    assert blocks_for(0, 256, 1, GRID_X_MAX) == 1  # never an empty grid
    assert blocks_for(1, 256, 1, GRID_X_MAX) == 1
    assert blocks_for(256 * 1000 + 1, 256, 1, GRID_X_MAX) == 1001
    assert blocks_for(256 * 4 * 1000, 256, 4, GRID_X_MAX) == 1000
    # One thread per item up to 2^31 - 1 blocks of 256 (2^39 items), the grid-stride loops beyond:
    # blocks_for returned an unsigned int of n / 256 before, which wrapped past 2^40 items.
    assert blocks_for(GRID_X_MAX * 256, 256, 1, GRID_X_MAX) == GRID_X_MAX
    for n in (2**32, 2**40, 2**40 + 255, 2**62):
        assert blocks_for(n, 256, 1, GRID_X_MAX) == min(-(-n // 256), GRID_X_MAX)
    assert blocks_for(10**6, 256, 1, 3) == 3  # the emulation's cap
    with pytest.raises(RuntimeError, match="at most 2\\^62 elements"):
        blocks_for(2**62 + 1, 256, 1, GRID_X_MAX)


# --- Every launch of the largest shapes within CUDA's limits (ops on meta tensors, launches planned
# with the real settings and not run). ---

NETWORK_SHAPES = {
    # LRN and max-pool inputs: AlexNet (224 x 224, batch 128): conv1's and conv2's outputs
    "alexnet-conv1": (128, 96, 55, 55),
    "alexnet-conv2": (128, 256, 27, 27),
    # VGG-16 (224 x 224, batch 128): block 1's output, pooled 2/2
    "vgg16-block1": (128, 64, 224, 224),
    # Past 2^31 and 2^32 elements (64-bit indices) and at 2^60 (grid-stride loops: the grid is capped)
    "2^31+": (2**7 + 1, 2**6, 2**8, 2**9),
    "2^32": (2**20, 64, 8, 8),
    "2^60": (2**30, 2**10, 2**10, 2**10),
}


def check_launches(launches: list[dict], bits: int) -> None:
    assert launches
    for launch in launches:
        gx, gy, gz = launch["grid"]
        bx, by, bz = launch["block"]
        assert 1 <= gx <= GRID_X_MAX and 1 <= gy <= 65535 and 1 <= gz <= 65535, launch
        assert 1 <= bx * by * bz <= 1024, launch
        assert 0 <= launch["shared_bytes"] <= 48 * 1024, launch
        assert launch["index_bits"] in (0, bits), launch


def plan(shape, dtype=torch.float16):
    return torch.empty(shape, dtype=dtype, device="meta")


@pytest.fixture
def plan_only():
    configure(grid_cap=GRID_X_MAX, narrow_limit=INT32_MAX, reduce_items=16, plan_only=True)
    take_launches()
    yield
    configure()


@pytest.mark.parametrize("name", sorted(NETWORK_SHAPES))
@pytest.mark.parametrize("channels_last", [False, True])
def test_launch_shapes_of_lrn_and_max_pool(name, channels_last, plan_only):
    shape = NETWORK_SHAPES[name]
    x = plan(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    numel = x.numel()
    bits = 32 if numel - 1 <= INT32_MAX else 64
    on_cuda_kernel(torch.ops.cnnrepro.lrn.default, x, 5, 1e-4, 0.75, 2.0)
    on_cuda_kernel(torch.ops.cnnrepro.lrn_backward.default, x, x, 5, 1e-4, 0.75, 2.0)
    launches = take_launches()
    check_launches(launches, bits)
    assert all(launch["index_bits"] == bits for launch in launches)
    assert launches[0]["grid"][0] == min(-(-numel // 256), GRID_X_MAX) and launches[0]["block"][0] == 256
    window = ([3, 3], [2, 2], [0, 0], [1, 1], False)
    values, indices = on_cuda_kernel(torch.ops.cnnrepro.max_pool2d_with_argmax.default, x, *window)
    backward = torch.ops.cnnrepro.max_pool2d_with_argmax_backward.default
    on_cuda_kernel(backward, values, indices, list(shape), *window)
    launches = take_launches()
    check_launches(launches, bits)
    assert [launch["index_bits"] for launch in launches] == [bits, bits]


CONV_SHAPES = {
    # (input, out channels): VGG-16's first and last 3x3 convolutions at 224 x 224, batch 128;
    # ResNet-20's first (CIFAR, batch 128); one of 2^33 outputs; and one of 2^46.
    "vgg16-conv1_1": ((128, 3, 224, 224), 64),
    "vgg16-conv5_3": ((128, 512, 14, 14), 512),
    "resnet20-conv1": ((128, 3, 32, 32), 16),
    "2^33": ((2**11, 3, 64, 64), 512),
    "2^46": ((2**20, 3, 1024, 1024), 64),
}


@pytest.mark.parametrize("name", sorted(CONV_SHAPES))
@pytest.mark.parametrize("channels_last", [False, True])
def test_launch_shapes_of_conv_bn_relu(name, channels_last, plan_only):
    shape, c_out = CONV_SHAPES[name]
    x = plan(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight, gamma = plan((c_out, shape[1], 3, 3)), plan((c_out,))
    conv = ([1, 1], [1, 1], [1, 1], 1, 1e-5)
    y, z, mean, var = on_cuda_kernel(
        torch.ops.cnnrepro.conv_bn_relu_train.default, x, weight, gamma, gamma, gamma, *conv
    )
    backward = torch.ops.cnnrepro.conv_bn_relu_train_backward.default
    on_cuda_kernel(backward, y, x, weight, z, mean, var, gamma, gamma, *conv, [False, False, False])
    on_cuda_kernel(
        torch.ops.cnnrepro.conv_bn_relu_eval.default, x, weight, gamma, gamma, gamma, mean, var, *conv
    )
    launches = take_launches()
    bits = 32 if z.numel() + 2048 <= INT32_MAX else 64
    check_launches(launches, bits)
    # the reductions: enough blocks to fill an H100 (132 SMs) several times over, where there is work
    # for them (at least 16 values a thread)
    reductions = [launch for launch in launches if launch["block"][0] == 512]
    count = z.shape[0] * z.shape[2] * z.shape[3]
    for launch in reductions:
        assert launch["grid"][0] >= min(4096 // 2, c_out * count // (512 * 16)), launch


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
