"""Max-pool with argmax, custom vs F.max_pool2d(return_indices=True), batch 32, float32:
AlexNet's overlapping 3x3/2 pool (96x55x55), VGG's 2x2/2 pool (64x112x112) and a CIFAR-sized
GoogLeNet's 3x3/2 pool on small maps (480x16x16), both layouts. Max-pool is memory-bound: every case
also says how many bytes its pass must move and times the copy yardstick (harness.time_copy) beside it."""

import pytest
import torch
import torch.nn.functional as F
from harness import Case, dims, time_copy, time_member

from cnnrepro import ops

CASES = {
    "alexnet-pool1": ((32, 96, 55, 55), 3, 2),
    "vgg-pool1": ((32, 64, 112, 112), 2, 2),
    "googlenet-cifar-pool3": ((32, 480, 16, 16), 3, 2),
}


def forward_fn(impl):
    if impl == "custom":
        return lambda x, k, s: ops.max_pool2d_with_argmax(x, k, s)
    return lambda x, k, s: F.max_pool2d(x, k, s, return_indices=True)


def backward_fn(impl, x, k, s):
    """The bare backward of one implementation, given what its forward saved."""
    values, indices = forward_fn(impl)(x, k, s)
    grad = torch.randn_like(values)
    if impl == "custom":
        window = ([k, k], [s, s], [0, 0], [1, 1])
        return lambda: torch.ops.cnnrepro.max_pool2d_with_argmax_backward(
            grad, indices, list(x.shape), *window, False
        )
    return lambda: torch.ops.aten.max_pool2d_with_indices_backward(
        grad, x, [k, k], [s, s], [0, 0], [1, 1], False, indices
    )


def pool_case(direction, case, layout, device) -> Case:
    shape, k, s = CASES[case]
    return Case("max_pool2d", direction, f"{case} {dims(shape)} {k}x{k}/{s}", layout, device,
                moved_bytes=moved_bytes(direction, shape, k, s))  # fmt: skip


def moved_bytes(direction, shape, k, s) -> int:
    """Float32 bytes each pass must move: the forward reads x and writes the values and int64
    indices; the backward reads the gradient and the indices and writes the input's gradient."""
    n, c, h, w = shape
    inputs, outputs = n * c * h * w, n * c * ((h - k) // s + 1) * ((w - k) // s + 1)
    per_pass = 4 * inputs + (4 + 8) * outputs
    return 2 * per_pass if direction == "forward+backward" else per_pass


def make_input(shape, layout, device):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


IMPLS = ["custom", "native"]
LAYOUTS = ["contiguous", "channels_last"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", list(CASES))
def test_forward(benchmark, device, case, layout, impl):
    shape, k, s = CASES[case]
    x = make_input(shape, layout, device)
    fn = forward_fn(impl)
    with torch.no_grad():
        time_member(benchmark, lambda: fn(x, k, s), pool_case("forward", case, layout, device), impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", list(CASES))
def test_backward(benchmark, device, case, layout, impl):
    shape, k, s = CASES[case]
    x = make_input(shape, layout, device)
    time_member(benchmark, backward_fn(impl, x, k, s), pool_case("backward", case, layout, device), impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", list(CASES))
def test_forward_backward(benchmark, device, case, layout, impl):
    shape, k, s = CASES[case]
    x = make_input(shape, layout, device).requires_grad_()
    fn = forward_fn(impl)
    grad = torch.randn_like(fn(x, k, s)[0])

    def step():
        x.grad = None
        fn(x, k, s)[0].backward(grad)

    time_member(benchmark, step, pool_case("forward+backward", case, layout, device), impl)


@pytest.mark.parametrize("direction", ["forward", "backward", "forward+backward"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", list(CASES))
def test_copy_yardstick(benchmark, device, case, layout, direction):
    x = make_input(CASES[case][0], layout, device)
    time_copy(benchmark, x, pool_case(direction, case, layout, device))
