"""LRN: equal to F.local_response_norm and to the reference, forward and backward, on every layout."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnrepro
from cnnrepro import ops
from cnnrepro.ops import reference

# float32: our window sum and pow run in another order than native's avg_pool + pow, a few ulp apart.
TOL = {torch.float32: dict(rtol=2e-6, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-12)}
LOW_PRECISION_TOL = dict(rtol=1e-2, atol=1e-2)  # half/bfloat16 outputs, fp32 math inside


def native_grad(x, dy, *args):
    x = x.detach().requires_grad_()
    F.local_response_norm(x, *args).backward(dy)
    return x.grad


def custom_grad(x, dy, *args):
    x = x.detach().requires_grad_()
    ops.lrn(x, *args).backward(dy)
    return x.grad


SIZES = [1, 2, 3, 4, 5, 6, 9]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", [(2, 7, 5, 6), (3, 4, 9), (2, 6, 3, 4, 5), (1, 3, 1, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_native_forward_and_backward(device, size, shape, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=dtype).to(device) * 3
    dy = torch.randn(shape, generator=g, dtype=dtype).to(device)
    args = (size, 2e-2, 0.75, 1.0)
    torch.testing.assert_close(ops.lrn(x, *args), F.local_response_norm(x, *args), **TOL[dtype])
    torch.testing.assert_close(custom_grad(x, dy, *args), native_grad(x, dy, *args), **TOL[dtype])


@pytest.mark.parametrize("beta", [0.75, 0.5, 1.0, 0.3, 2.0])
@pytest.mark.parametrize("k", [0.5, 1.0, 2.0])
def test_every_beta_path_matches_reference(device, beta, k):
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64, device=device)
    dy = torch.randn_like(x)
    args = (5, 0.1, beta, k)
    torch.testing.assert_close(ops.lrn(x, *args), reference.lrn(x, *args), **TOL[torch.float64])
    torch.testing.assert_close(
        ops.lrn_backward(dy, x, *args),
        reference.lrn_backward(dy, x, *args),
        **TOL[torch.float64],
    )


def test_reference_backward_is_the_derivative_of_native():
    x = torch.randn(2, 7, 3, 3, dtype=torch.float64)
    dy = torch.randn_like(x)
    for size in (1, 2, 5, 6):
        args = (size, 0.3, 0.75, 1.0)
        torch.testing.assert_close(reference.lrn_backward(dy, x, *args), native_grad(x, dy, *args))
        torch.testing.assert_close(reference.lrn(x, *args), F.local_response_norm(x, *args))


def test_size_larger_than_channels(device):
    x = torch.randn(2, 3, 4, 4, device=device)
    torch.testing.assert_close(ops.lrn(x, 11, 1.0), F.local_response_norm(x, 11, 1.0), **TOL[torch.float32])


@pytest.mark.parametrize("shape", [(0, 5, 3, 3), (2, 0, 3, 3), (2, 5, 0, 3)])
def test_empty_inputs(device, shape):
    x = torch.randn(shape, device=device, requires_grad=True)
    y = ops.lrn(x, 3)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("size", [2, 5])
def test_channels_last_stays_channels_last_and_matches(device, size):
    x = torch.randn(3, 10, 7, 9, device=device).contiguous(memory_format=torch.channels_last)
    dy = torch.randn_like(x)
    y = ops.lrn(x, size, 0.05)
    assert y.is_contiguous(memory_format=torch.channels_last)
    # Same summation order in both layouts: bit-for-bit equal to the contiguous result.
    assert torch.equal(y, ops.lrn(x.contiguous(), size, 0.05))
    torch.testing.assert_close(y, F.local_response_norm(x, size, 0.05), **TOL[torch.float32])
    torch.testing.assert_close(
        custom_grad(x, dy, size, 0.05), native_grad(x, dy, size, 0.05), **TOL[torch.float32]
    )


def test_channels_last_3d(device):
    x = torch.randn(2, 6, 3, 4, 5, device=device).contiguous(memory_format=torch.channels_last_3d)
    y = ops.lrn(x, 3, 0.05)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(y, F.local_response_norm(x, 3, 0.05), **TOL[torch.float32])


def test_non_contiguous_input(device):
    base = torch.randn(2, 9, 8, 12, device=device)
    for x in (base[:, ::2], base.transpose(2, 3), base[..., ::3]):
        dy = torch.randn_like(x)
        torch.testing.assert_close(ops.lrn(x, 3, 0.1), F.local_response_norm(x, 3, 0.1), **TOL[torch.float32])
        torch.testing.assert_close(
            custom_grad(x, dy, 3, 0.1), native_grad(x, dy, 3, 0.1), **TOL[torch.float32]
        )


def test_nan_and_inf_touch_only_their_windows(device):
    x = torch.randn(1, 12, 2, 2, dtype=torch.float64, device=device)
    x[0, 2, 0, 0] = float("nan")
    x[0, 9, 1, 1] = float("inf")
    y, expected = ops.lrn(x, 3), F.local_response_norm(x, 3)
    torch.testing.assert_close(y, expected, equal_nan=True)
    assert torch.isfinite(y[0, 5:, 0, 0]).all(), "a NaN must not leak past its windows"


def test_gradcheck_and_gradgradcheck_in_float64(device):
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, device=device, requires_grad=True)
    for size in (2, 5):
        assert torch.autograd.gradcheck(ops.lrn, (x, size, 0.5, 0.75, 1.0))
        assert torch.autograd.gradgradcheck(ops.lrn, (x, size, 0.5, 0.75, 1.0))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(device, layout):
    x = torch.randn(2, 5, 4, 3, device=device, requires_grad=True)
    if layout == "channels_last":
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(torch.ops.cnnrepro.lrn.default, (x, 3, 1e-2, 0.75, 1.0))
    dy = torch.randn_like(x)
    torch.library.opcheck(torch.ops.cnnrepro.lrn_backward.default, (dy, x.detach(), 3, 1e-2, 0.75, 1.0))


def test_torch_compile_traces_the_op():
    x = torch.randn(2, 5, 4, 4)
    compiled = torch.compile(lambda t: ops.lrn(t, 5) * 2, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), F.local_response_norm(x, 5) * 2, **TOL[torch.float32])


def test_deterministic_bits(device):
    x = torch.randn(4, 16, 13, 13, device=device, requires_grad=True)
    dy = torch.randn_like(x)
    runs = []
    for _ in range(2):
        x.grad = None
        y = ops.lrn(x, 5)
        y.backward(dy)
        runs.append((y.detach().clone(), x.grad.clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@given(
    n=st.integers(0, 3),
    c=st.integers(1, 12),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    size=st.integers(1, 8),
    alpha=st.floats(0, 1),
    beta=st.floats(0.1, 2),
    k=st.floats(0.1, 3),
    channels_last=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_random_shapes_match_native(n, c, h, w, size, alpha, beta, k, channels_last):
    x = torch.randn(n, c, h, w, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dy = torch.randn_like(x)
    args = (size, alpha, beta, k)
    torch.testing.assert_close(ops.lrn(x, *args), F.local_response_norm(x, *args), **TOL[torch.float64])
    torch.testing.assert_close(custom_grad(x, dy, *args), native_grad(x, dy, *args), **TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_uses_fp32_math(device, dtype):
    x = torch.randn(2, 8, 5, 5, device=device)
    dy = torch.randn_like(x)
    y = ops.lrn(x.to(dtype), 5, 0.1)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), F.local_response_norm(x, 5, 0.1), **LOW_PRECISION_TOL)
    grad = ops.lrn_backward(dy.to(dtype), x.to(dtype), 5, 0.1, 0.75, 1.0)
    torch.testing.assert_close(grad.float(), native_grad(x, dy, 5, 0.1, 0.75, 1.0), **LOW_PRECISION_TOL)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ops.lrn(torch.randn(3, 4), 3), "3 or more dims"),
        (lambda: ops.lrn(torch.randn(2, 3, 4), 0), "size must be >= 1"),
        (lambda: ops.lrn(torch.ones(2, 3, 4, dtype=torch.int64), 3), "floating-point dtype"),
        (lambda: ops.lrn(torch.randn(2, 3, 4), 3, k=-1.0), "k must be finite and >= 0"),
        (lambda: ops.lrn(torch.randn(2, 3, 4), 3, alpha=float("nan")), "alpha must be finite"),
        (lambda: ops.lrn_backward(torch.randn(2, 3, 5), torch.randn(2, 3, 4), 3, 1e-4, 0.75, 1.0), "shape"),
        (
            lambda: ops.lrn_backward(torch.randn(2, 3, 4).double(), torch.randn(2, 3, 4), 3, 1e-4, 0.75, 1.0),
            "dtype",
        ),
    ],
)
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(RuntimeError, match=message):
        call()


def test_module_is_a_drop_in_and_has_the_paper_convention():
    x = torch.randn(2, 8, 6, 6)
    ours, theirs = (
        cnnrepro.nn.LocalResponseNorm(5, 1e-3, 0.75, 2.0),
        torch.nn.LocalResponseNorm(5, 1e-3, 0.75, 2.0),
    )
    torch.testing.assert_close(ours(x), theirs(x), **TOL[torch.float32])
    native = cnnrepro.nn.LocalResponseNorm(5, 1e-3, 0.75, 2.0, backend="native")
    torch.testing.assert_close(native(x), theirs(x), rtol=0, atol=0)
    paper = cnnrepro.nn.LocalResponseNorm.paper(5, 1e-4, 0.75, 2.0)
    assert (paper.size, paper.alpha, paper.k) == (5, pytest.approx(5e-4), 2.0)
    with pytest.raises(ValueError, match="backend"):
        cnnrepro.nn.LocalResponseNorm(5, backend="fast")
    with pytest.raises(ValueError, match="size"):
        cnnrepro.nn.LocalResponseNorm(0)
    with pytest.raises(ValueError, match="size must be an int"):
        cnnrepro.nn.LocalResponseNorm(2.5)


def test_size_forms_native_accepts():
    """numpy integers and 0-d integer tensors, as torch.nn.LocalResponseNorm takes them."""
    import numpy as np

    x = torch.randn(2, 8, 5, 5)
    for size in (np.int64(3), np.int32(4), torch.tensor(3)):
        expected = torch.nn.LocalResponseNorm(size)(x)
        torch.testing.assert_close(cnnrepro.nn.LocalResponseNorm(size)(x), expected, **TOL[torch.float32])
        torch.testing.assert_close(ops.lrn(x, size), expected, **TOL[torch.float32])


def test_outputs_of_their_own_mapping():
    """A 34 MB output is an mmap of its own under glibc's defaults, and the CPU kernels ask for huge
    pages before writing it (cpu/output.h): the values are those of the same input in pieces."""
    x = torch.randn(2, 16, 512, 520, generator=torch.Generator().manual_seed(0))
    dy = torch.randn_like(x)
    y, dx = ops.lrn(x, 5), ops.lrn_backward(dy, x, 5, 1e-4, 0.75, 1.0)
    for rows in (slice(0, 200), slice(200, 512)):  # a window spans channels, never rows: pieces are exact
        piece = x[:, :, rows].contiguous()
        assert torch.equal(y[:, :, rows], ops.lrn(piece, 5))
        assert torch.equal(
            dx[:, :, rows], ops.lrn_backward(dy[:, :, rows].contiguous(), piece, 5, 1e-4, 0.75, 1.0)
        )
