"""LRN, custom vs F.local_response_norm, at AlexNet's two LRN shapes (size 5, batch 32, float32), both
layouts: the forward, the bare backward (ours: the op; native's: autograd through its composite)
and a training step's forward + backward. LRN is memory-bound: every case also says how many bytes
its pass must move and times the copy yardstick (harness.time_copy) beside it."""

import pytest
import torch
import torch.nn.functional as F
from harness import Case, dims, time_copy, time_member

from cnnrepro import ops

SHAPES = {"alexnet-lrn1": (32, 96, 55, 55), "alexnet-lrn2": (32, 256, 27, 27)}
IMPLS = {"custom": ops.lrn, "native": F.local_response_norm}
LAYOUTS = ["contiguous", "channels_last"]
# Tensors of the input's size each pass reads and writes: forward x -> y; backward dy, x -> dx.
TENSORS_MOVED = {"forward": 2, "backward": 3, "forward+backward": 5}


def make_input(shape, layout, device, requires_grad=False):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


def lrn_case(direction, x, shape_name, layout, device) -> Case:
    return Case("lrn", direction, f"{shape_name} {dims(x.shape)}", layout, device,
                moved_bytes=TENSORS_MOVED[direction] * x.nbytes)  # fmt: skip


def backward_fn(impl, x):
    """The bare backward of one implementation, its forward done beforehand."""
    dy = torch.randn_like(x)
    if impl == "custom":
        return lambda: ops.lrn_backward(dy, x, 5, 1e-4, 0.75, 1.0)
    x = x.detach().requires_grad_()
    y = F.local_response_norm(x, 5)
    return lambda: torch.autograd.grad(y, x, dy, retain_graph=True)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_forward(benchmark, device, shape_name, layout, impl):
    x = make_input(SHAPES[shape_name], layout, device)
    fn = IMPLS[impl]
    with torch.no_grad():
        time_member(benchmark, lambda: fn(x, 5), lrn_case("forward", x, shape_name, layout, device), impl)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_backward(benchmark, device, shape_name, layout, impl):
    x = make_input(SHAPES[shape_name], layout, device)
    time_member(benchmark, backward_fn(impl, x), lrn_case("backward", x, shape_name, layout, device), impl)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_forward_backward(benchmark, device, shape_name, layout, impl):
    x = make_input(SHAPES[shape_name], layout, device, requires_grad=True)
    grad = torch.randn_like(x)
    fn = IMPLS[impl]

    def step():
        x.grad = None
        fn(x, 5).backward(grad)

    time_member(benchmark, step, lrn_case("forward+backward", x, shape_name, layout, device), impl)


@pytest.mark.parametrize("direction", list(TENSORS_MOVED))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_copy_yardstick(benchmark, device, shape_name, layout, direction):
    x = make_input(SHAPES[shape_name], layout, device)
    time_copy(benchmark, x, lrn_case(direction, x, shape_name, layout, device))
