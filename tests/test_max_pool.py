"""Max-pool with argmax: values bitwise, indices exactly, gradients equal to native's, every layout."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnrepro
from cnnrepro import ops
from cnnrepro.ops import reference
from cnnrepro.ops.max_pool import pool_args


def native(x, *window, ceil_mode=False):
    return F.max_pool2d(x, *window, ceil_mode=ceil_mode, return_indices=True)


def assert_same_pool(x, kernel, stride, padding, dilation, ceil_mode):
    """Values bitwise, indices exactly, and the input gradient equal to native's."""
    window = pool_args(kernel, stride, padding, dilation)
    x = x.detach().requires_grad_()
    values, indices = ops.max_pool2d_with_argmax(x, *window, ceil_mode=ceil_mode)
    expected_values, expected_indices = native(x, *window, ceil_mode=ceil_mode)
    torch.testing.assert_close(values, expected_values, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(indices, expected_indices)
    grad = torch.randn_like(values)
    (ours,) = torch.autograd.grad(values, x, grad)
    plane = x.shape[-1] * x.shape[-2]
    if (indices >= plane).any():
        # A window wholly in the padding: native's index points past the plane and its backward would
        # write out of bounds; ours routes no gradient from that output.
        kept = grad.double().where(indices < plane, 0.0).sum()
        torch.testing.assert_close(ours.double().sum(), kept)
        return values, indices
    (theirs,) = torch.autograd.grad(expected_values, x, grad)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    return values, indices


SWEEP = list(
    itertools.product(
        [2, 3, (3, 2)],  # kernel
        [1, 2, None, (2, 1)],  # stride
        [0, 1],  # padding
        [1, 2],  # dilation
        [False, True],  # ceil_mode
    )
)


@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil_mode", SWEEP)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_sweep_matches_native(device, kernel, stride, padding, dilation, ceil_mode, layout):
    x = torch.randn(2, 3, 9, 8, generator=torch.Generator().manual_seed(1)).to(device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    values, indices = assert_same_pool(x, kernel, stride, padding, dilation, ceil_mode)
    if layout == "channels_last":
        assert values.is_contiguous(memory_format=torch.channels_last)
        assert indices.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("channels", [8, 20, 44])
def test_channels_last_vector_groups(device, channels):
    """Channels-last float32 runs 32 channels at a time, then eight, then the rest one by one (44
    takes all three); its backward splits channels into blocks of 16 when the batch is small. Every
    path, with ties (a constant patch), NaN and overlapping windows, must match native."""
    x = torch.randn(2, channels, 11, 9, generator=torch.Generator().manual_seed(2))
    x[:, :, 2:5, 2:5] = 1.0
    x[0, 1, 4, 4] = float("nan")
    x = x.to(device).contiguous(memory_format=torch.channels_last)
    for kernel, stride, padding, dilation in ((3, 2, 1, 1), (2, 2, 0, 1), (3, 1, 1, 2)):
        assert_same_pool(x, kernel, stride, padding, dilation, False)


@pytest.mark.parametrize("channels", [8, 20, 44])
@pytest.mark.parametrize("size", [(2, 2), (4, 4), (7, 5)])
def test_contiguous_narrow_planes(device, channels, size):
    """Contiguous float32 maps with under eight output columns go through a channels-last transpose:
    ties, NaN, padding, dilation and ceil_mode there too must match native."""
    x = torch.randn(3, channels, *size, generator=torch.Generator().manual_seed(3))
    x[:, :, :2, :2] = 0.5
    x[1, 2, -1, -1] = float("nan")
    x = x.to(device)
    for kernel, stride, padding, dilation, ceil_mode in (
        (3, 1, 1, 1, True),
        (3, 2, 1, 1, False),
        (2, 2, 0, 1, True),
        (2, 1, 1, 2, False),
    ):
        if (size[0] + 2 * padding - dilation * (kernel - 1) - 1) < 0:
            continue  # the window does not fit
        assert_same_pool(x, kernel, stride, padding, dilation, ceil_mode)


@pytest.mark.parametrize("shape", [(0, 3, 6, 6), (1, 3, 6, 6), (2, 3, 7, 5), (3, 7, 7)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_batch_sizes_and_unbatched(device, shape, layout):
    x = torch.randn(shape, device=device)
    if layout == "channels_last" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    assert_same_pool(x, 3, 2, 1, 1, False)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_ties_first_maximum_wins(device, layout):
    x = torch.ones(2, 4, 6, 6, device=device)
    x[:, :, 2:4, 2:4] = 5.0
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    assert_same_pool(x, 3, 1, 1, 1, False)
    assert_same_pool(x, 3, 2, 0, 1, True)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_nan_inf_and_all_minus_inf_windows(device, layout):
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2)).to(device)
    x[0, 0, 1, 1] = float("nan")
    x[0, 0, 1, 2] = float("nan")  # two NaNs in one window: the last one is the argmax, as native
    x[0, 1, 4, 4] = float("inf")
    x[0, 1, 5, 5] = -float("inf")
    x[0, 2, :4, :4] = -float("inf")  # whole windows of -inf: the first in-bounds tap
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    for kernel, stride, padding in [(2, 2, 0), (3, 2, 1), (3, 1, 1)]:
        values, _ = assert_same_pool(x, kernel, stride, padding, 1, False)
        assert torch.isnan(values[0, 0]).any()


def test_wide_rows_take_the_vectorized_path(device):
    # Rows long enough that the interior columns run tap by tap; strides 1, 2 and 3 take different loops.
    x = torch.randn(2, 3, 11, 67, device=device)
    for stride in (1, 2, 3):
        assert_same_pool(x, 3, stride, 1, 1, False)
        assert_same_pool(x, (2, 3), stride, 1, 2, True)


@pytest.mark.parametrize("interior", [7, 8, 9, 15, 16, 17, 33])
def test_row_chunks_and_their_overlapping_tail(device, interior):
    # A contiguous row's interior outputs go through the taps together, vectorized: counts around
    # the vector widths (8 and 16 float32 lanes) exercise the vector loop's tails. Ties and NaN too.
    for stride in (1, 2, 3):
        width = (interior - 1) * stride + 3  # kernel 3, no padding: every output is interior
        x = torch.randint(-2, 3, (2, 3, 5, width), device=device).float()
        x[0, 1, 2, ::5] = float("nan")
        assert_same_pool(x, 3, stride, 0, 1, False)
        assert_same_pool(x, (2, 3), stride, (1, 0), 1, True)  # rows with padding, columns interior


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_window_wholly_in_the_padding(device, layout):
    # H=1, kernel 2 with dilation 2 and padding 1: the taps at rows -1 and +1 are both outside.
    x = torch.randn(1, 2, 1, 3, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    values, indices = assert_same_pool(x, (2, 1), 1, (1, 0), (2, 1), False)
    assert torch.isinf(values).all() and (indices >= 3).all()


def test_overlapping_windows_accumulate(device):
    # A single large value chosen by every window that covers it: its gradient is their sum.
    x = torch.zeros(1, 1, 5, 5, device=device)
    x[0, 0, 2, 2] = 1.0
    x.requires_grad_()
    values, _ = ops.max_pool2d_with_argmax(x, 3, 1, 1)
    values.sum().backward()
    assert x.grad[0, 0, 2, 2].item() == 9.0


def test_matches_reference(device):
    x = torch.randn(2, 2, 7, 6, dtype=torch.float64).to(device)
    for window in [((3, 3), (2, 2), (1, 1), (1, 1)), ((2, 3), (1, 2), (1, 0), (2, 1))]:
        for ceil_mode in (False, True):
            values, indices = ops.max_pool2d_with_argmax(x, *window, ceil_mode=ceil_mode)
            ref_values, ref_indices = reference.max_pool2d_with_argmax(x, *window, ceil_mode=ceil_mode)
            assert torch.equal(values, ref_values) and torch.equal(indices, ref_indices)
            grad = torch.randn_like(values)
            ours = ops.max_pool2d_with_argmax_backward(grad, indices, x.shape, *window, ceil_mode=ceil_mode)
            torch.testing.assert_close(
                ours, reference.max_pool2d_with_argmax_backward(grad, indices, x.shape)
            )


def test_gradcheck_and_gradgradcheck_on_tie_free_input(device):
    x = torch.randperm(2 * 3 * 7 * 7, dtype=torch.float64).view(2, 3, 7, 7).to(device).requires_grad_()

    def values(t):
        return ops.max_pool2d_with_argmax(t, 3, 2, 1)[0]

    assert torch.autograd.gradcheck(values, (x,))
    assert torch.autograd.gradgradcheck(values, (x,))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(device, layout):
    x = torch.randperm(2 * 3 * 6 * 7, dtype=torch.float32).view(2, 3, 6, 7).to(device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    window = ([3, 3], [2, 2], [1, 1], [1, 1])
    torch.library.opcheck(
        torch.ops.cnnrepro.max_pool2d_with_argmax.default, (x.requires_grad_(), *window, False)
    )
    values, indices = ops.max_pool2d_with_argmax(x.detach(), *window)
    torch.library.opcheck(
        torch.ops.cnnrepro.max_pool2d_with_argmax_backward.default,
        (torch.randn_like(values), indices, list(x.shape), *window, False),
    )


def test_torch_compile_traces_the_op():
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(
        lambda t: ops.max_pool2d_with_argmax(t, 2)[0] + 1, backend="aot_eager", fullgraph=True
    )
    torch.testing.assert_close(compiled(x), F.max_pool2d(x, 2) + 1)


def test_deterministic_bits(device):
    x = torch.randn(4, 8, 17, 17, device=device, requires_grad=True)
    grads = []
    for _ in range(2):
        values, _ = ops.max_pool2d_with_argmax(x, 3, 2)
        (grad,) = torch.autograd.grad(values, x, torch.ones_like(values))
        grads.append(grad)
    assert torch.equal(grads[0], grads[1])


@given(
    n=st.integers(0, 2),
    c=st.integers(1, 4),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pad_fraction=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    ceil_mode=st.booleans(),
    channels_last=st.booleans(),
)
@settings(max_examples=80, deadline=None)
def test_random_shapes_match_native(
    n, c, h, w, kernel, stride, dilation, pad_fraction, ceil_mode, channels_last
):
    padding = tuple(int(f * (k // 2)) for f, k in zip(pad_fraction, kernel, strict=True))
    x = torch.randn(n, c, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    try:
        native(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    except RuntimeError:
        with pytest.raises(RuntimeError):
            ops.max_pool2d_with_argmax(x, kernel, stride, padding, dilation, ceil_mode)
        return
    assert_same_pool(x, kernel, stride, padding, dilation, ceil_mode)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(device, dtype):
    x = torch.randn(2, 3, 9, 9, device=device).to(dtype)
    assert_same_pool(x, 3, 2, 1, 1, True)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ops.max_pool2d_with_argmax(torch.randn(4, 4), 2), "3-D .* or 4-D"),
        (lambda: ops.max_pool2d_with_argmax(torch.ones(1, 1, 4, 4, dtype=torch.int32), 2), "floating-point"),
        (lambda: ops.max_pool2d_with_argmax(torch.randn(1, 1, 4, 4), 0), "kernel_size must be >= 1"),
        (lambda: ops.max_pool2d_with_argmax(torch.randn(1, 1, 4, 4), 2, 0), "stride must be >= 1"),
        (lambda: ops.max_pool2d_with_argmax(torch.randn(1, 1, 4, 4), 2, 1, 0, 0), "dilation must be >= 1"),
        (lambda: ops.max_pool2d_with_argmax(torch.randn(1, 1, 4, 4), 2, 1, 2), "at most half the kernel"),
        (lambda: ops.max_pool2d_with_argmax(torch.randn(1, 1, 2, 2), 3), "output would be empty"),
        (lambda: ops.max_pool2d_with_argmax(torch.randn(1, 0, 4, 4), 2), "non-empty channel"),
        (
            lambda: ops.max_pool2d_with_argmax_backward(
                torch.randn(1, 1, 3, 3), torch.zeros(1, 1, 2, 2, dtype=torch.long), (1, 1, 4, 4), 2
            ),
            "grad_output has shape",
        ),
        (
            lambda: ops.max_pool2d_with_argmax_backward(
                torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int32), (1, 1, 4, 4), 2
            ),
            "indices must be int64",
        ),
        (
            lambda: ops.max_pool2d_with_argmax_backward(
                torch.randn(1, 1, 3, 3), torch.zeros(1, 1, 3, 3, dtype=torch.long), (1, 1, 4, 4), 2
            ),
            "not the pooled size",
        ),
        (
            lambda: ops.max_pool2d_with_argmax(torch.randn(1, 1, 4, 4), object()),
            "kernel_size must be an int or a tuple of one or two ints",
        ),
        (lambda: ops.max_pool2d_with_argmax(torch.randn(1, 1, 4, 4), 2.0), "kernel_size must be an int"),
        (lambda: cnnrepro.nn.MaxPool2d(2, padding=(1, 1, 1)), "padding must be an int or a tuple"),
    ],
)
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises((RuntimeError, ValueError), match=message):
        call()


def test_argument_forms_native_accepts(device):
    """1-tuples, numpy integers and 0-d integer tensors, as F.max_pool2d and nn.MaxPool2d take them."""
    import numpy as np

    x = torch.randn(2, 3, 9, 8, device=device)
    forms = [
        dict(kernel_size=(3,), stride=(2,), padding=(1,), dilation=(1,)),
        dict(kernel_size=np.int64(3), stride=np.int32(2), padding=np.int64(1), dilation=np.int64(2)),
        dict(kernel_size=torch.tensor(2), stride=torch.tensor(1), padding=torch.tensor(1)),
        dict(kernel_size=(np.int64(3), 2), stride=()),
    ]
    for form in forms:
        expected = F.max_pool2d(x, **form, return_indices=True)
        for values, indices in (
            ops.max_pool2d_with_argmax(x, **form),
            cnnrepro.nn.MaxPool2d(**form, return_indices=True)(x),
        ):
            assert torch.equal(values, expected[0]) and torch.equal(indices, expected[1]), form


def test_module_reads_its_window_at_call_time():
    """torch.nn.MaxPool2d reads kernel_size, stride, padding, dilation and ceil_mode when called."""
    x = torch.randn(2, 3, 10, 10)
    ours, theirs = cnnrepro.nn.MaxPool2d(2), torch.nn.MaxPool2d(2)
    assert ours.stride == theirs.stride == 2
    for name, value in [
        ("kernel_size", 3),
        ("padding", 1),
        ("stride", 1),
        ("dilation", 2),
        ("ceil_mode", True),
    ]:
        setattr(ours, name, value), setattr(theirs, name, value)
        assert torch.equal(ours(x), theirs(x)), name


def test_double_backward_through_a_window_wholly_in_the_padding(device):
    """Its index lies outside the plane (native's): the second derivative is 0 there, not an IndexError."""
    x = torch.randn(1, 2, 1, 3, dtype=torch.float64, device=device, requires_grad=True)
    values, indices = ops.max_pool2d_with_argmax(x, (2, 1), 1, (1, 0), (2, 1))
    assert (indices >= 3).all()
    grad_output = torch.randn_like(values, requires_grad=True)
    (grad_input,) = torch.autograd.grad(values, x, grad_output, create_graph=True)
    (grad_grad_output,) = torch.autograd.grad(grad_input.sum(), grad_output)
    assert torch.equal(grad_grad_output, torch.zeros_like(values))


def test_module_is_a_drop_in():
    x = torch.randn(2, 3, 10, 10)
    for kwargs in [dict(kernel_size=3, stride=2), dict(kernel_size=2, padding=1, ceil_mode=True)]:
        ours, theirs = cnnrepro.nn.MaxPool2d(**kwargs), torch.nn.MaxPool2d(**kwargs)
        assert torch.equal(ours(x), theirs(x))
        native_backend = cnnrepro.nn.MaxPool2d(**kwargs, backend="native")
        assert torch.equal(native_backend(x), theirs(x))
    values, indices = cnnrepro.nn.MaxPool2d(3, 2, return_indices=True)(x)
    assert torch.equal(indices, F.max_pool2d(x, 3, 2, return_indices=True)[1])
    with pytest.raises(ValueError, match="kernel_size"):
        cnnrepro.nn.MaxPool2d((2, 2, 2))


def test_outputs_of_their_own_mapping():
    """Outputs and gradients past 32 MB (own mappings, huge pages advised before the first write,
    cpu/output.h) equal native's: values and indices bit for bit, the gradient too (no overlap)."""
    x = torch.randn(2, 16, 520, 1040, generator=torch.Generator().manual_seed(0))
    values, indices = ops.max_pool2d_with_argmax(x, 2, 2)
    expected_values, expected_indices = F.max_pool2d(x, 2, 2, return_indices=True)
    assert torch.equal(values, expected_values) and torch.equal(indices, expected_indices)
    dy = torch.randn_like(values)
    grad = torch.ops.cnnrepro.max_pool2d_with_argmax_backward(
        dy, indices, list(x.shape), [2, 2], [2, 2], [0, 0], [1, 1], False
    )
    assert torch.equal(
        grad,
        torch.ops.aten.max_pool2d_with_indices_backward(
            dy, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        ),
    )
