"""LRN, custom vs F.local_response_norm, at AlexNet's two LRN shapes (size 5, batch 32, float32).

A plain clone of the same tensor is timed too: the memory-bandwidth floor for the forward.
"""

import pytest
import torch
import torch.nn.functional as F
from harness import Case, dims, time_member

from cnnrepro import ops

SHAPES = {"alexnet-lrn1": (32, 96, 55, 55), "alexnet-lrn2": (32, 256, 27, 27)}
IMPLS = {"custom": ops.lrn, "native": F.local_response_norm}


def make_input(shape, layout, device, requires_grad=False):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_forward(benchmark, device, shape_name, layout, impl):
    x = make_input(SHAPES[shape_name], layout, device)
    fn = IMPLS[impl]
    case = Case("lrn", "forward", f"{shape_name} {dims(x.shape)}", layout, device)
    with torch.no_grad():
        time_member(benchmark, lambda: fn(x, 5), case, impl)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_forward_backward(benchmark, device, shape_name, layout, impl):
    x = make_input(SHAPES[shape_name], layout, device, requires_grad=True)
    grad = torch.randn_like(x)
    fn = IMPLS[impl]

    def step():
        x.grad = None
        fn(x, 5).backward(grad)

    case = Case("lrn", "forward+backward", f"{shape_name} {dims(x.shape)}", layout, device)
    time_member(benchmark, step, case, impl)


@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_clone_floor(benchmark, device, shape_name):
    x = make_input(SHAPES[shape_name], "contiguous", device)
    case = Case("lrn", "forward", f"{shape_name} {dims(x.shape)}", "contiguous", device)
    time_member(benchmark, x.clone, case, "clone")
