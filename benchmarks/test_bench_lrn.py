"""LRN, custom vs F.local_response_norm, at AlexNet's two LRN shapes (size 5, batch 32, float32).

A plain clone of the same tensor is timed too: the memory-bandwidth floor for the forward.
"""

import pytest
import torch
import torch.nn.functional as F
from harness import time_pair_member

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
    group = f"lrn forward {shape_name} {layout} {device}"
    with torch.no_grad():
        time_pair_member(benchmark, lambda: fn(x, 5), group=group, impl=impl, device=device)


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

    group = f"lrn forward+backward {shape_name} {layout} {device}"
    time_pair_member(benchmark, step, group=group, impl=impl, device=device)


@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_clone_floor(benchmark, device, shape_name):
    x = make_input(SHAPES[shape_name], "contiguous", device)
    group = f"lrn forward {shape_name} contiguous {device}"
    time_pair_member(benchmark, x.clone, group=group, impl="clone", device=device)
