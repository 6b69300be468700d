"""Conv-BN-ReLU, the fused ConvBNReLU2d against nn.Sequential(Conv2d, BatchNorm2d, ReLU) eager, at
ResNet-18 (64x56x56) and CIFAR-ResNet (16x32x32) shapes, 3x3, batch 32, float32, both layouts:
a training step (forward + backward) and inference. torch.compile of the Sequential is timed as a
second reference where it works, and so is inference through torch.nn.utils.fusion.fuse_conv_bn_eval.
The convolution alone is timed too: the convolution is oneDNN's on both sides, so native's time over
conv_alone's is the most any fusion around it can gain."""

import copy

import pytest
import torch
from harness import Case, time_member
from torch.nn.utils.fusion import fuse_conv_bn_eval

from cnnrepro import nn

CASES = {"resnet18-layer1": (64, 56), "cifar-resnet-stage1": (16, 32)}
LAYOUTS = ["contiguous", "channels_last"]


def blocks(case, layout, device):
    """(input, {impl: block}) with identical weights."""
    channels, size = CASES[case]
    torch.manual_seed(0)
    fused = nn.ConvBNReLU2d(channels, channels, 3, padding=1).to(device)
    native = copy.deepcopy(fused)
    native.backend = "native"
    x = torch.randn(32, channels, size, size, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        fused, native = (m.to(memory_format=torch.channels_last) for m in (fused, native))
    return x, {"custom": fused, "native": native}


def block_case(direction, case, layout, device) -> Case:
    channels, size = CASES[case]
    return Case("conv_bn_relu", direction, f"{case} 32x{channels}x{size}x{size} 3x3", layout, device)


def compiled(module):
    try:
        block = torch.compile(module)
        block(torch.randn(2, module[0].in_channels, 8, 8, device=module[0].weight.device))
        return block
    except Exception as error:  # a missing compiler toolchain is not our benchmark's failure
        pytest.skip(f"torch.compile unavailable here: {error}")


def timed_block(impl, impls):
    """The module timed for ``impl``: ours, the native Sequential, or a reference built from the
    native one: torch.compile of it, fuse_conv_bn_eval + ReLU (eval mode), or its convolution
    alone, the floor any fusion around the convolution can reach (native / conv_alone is the ceiling)."""
    native = impls["native"]
    references = {
        "compiled": lambda: compiled(native),
        "fuse_conv_bn_eval": lambda: torch.nn.Sequential(
            fuse_conv_bn_eval(native[0], native[1]), torch.nn.ReLU(inplace=True)
        ),
        "conv_alone": lambda: native[0],
    }
    return references[impl]() if impl in references else impls[impl]


@pytest.mark.parametrize("impl", ["custom", "native", "compiled", "conv_alone"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", list(CASES))
def test_training_step(benchmark, device, case, layout, impl):
    x, impls = blocks(case, layout, device)
    block = timed_block(impl, impls)
    x.requires_grad_()
    grad = torch.randn_like(block(x))

    def step():
        x.grad = None
        for p in block.parameters():  # a compiled module's are the original's
            p.grad = None
        block(x).backward(grad)

    time_member(benchmark, step, block_case("train", case, layout, device), impl)


@pytest.mark.parametrize("impl", ["custom", "native", "fuse_conv_bn_eval", "conv_alone"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", list(CASES))
def test_inference(benchmark, device, case, layout, impl):
    x, impls = blocks(case, layout, device)
    for block in impls.values():
        block.eval()
    block = timed_block(impl, impls)
    with torch.no_grad():
        time_member(benchmark, lambda: block(x), block_case("inference", case, layout, device), impl)
