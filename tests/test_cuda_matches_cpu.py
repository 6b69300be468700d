"""The CUDA kernels against the CPU kernels on the same inputs, forward and backward, both layouts
(skipped without a GPU; make check-gpu runs them first). Max-pool's values and indices are exact
on both; LRN and conv-BN-ReLU sum in other orders (and the GPU contracts to FMA), so they agree to a
few float32 ulps, and in float64 to 1e-12."""

import pytest
import torch

from cnnrepro import nn, ops

LAYOUTS = [torch.contiguous_format, torch.channels_last]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def on_both(x: torch.Tensor, layout, cuda: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The same values, laid out alike, on the CPU and on the GPU, each a leaf needing its gradient."""
    cpu = x.contiguous(memory_format=layout)
    return cpu.clone().requires_grad_(), cpu.to(cuda).requires_grad_()


def forward_backward(fn, x: torch.Tensor) -> list[torch.Tensor]:
    """fn's outputs and x's gradient under a fixed upstream gradient, all on the CPU."""
    outputs = fn(x)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    upstream = torch.cos(torch.arange(outputs[0].numel(), dtype=outputs[0].dtype)).view_as(outputs[0])
    outputs[0].backward(upstream.to(outputs[0].device))
    return [o.detach().cpu() for o in outputs] + [x.grad.cpu()]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lrn(cuda, layout, dtype):
    x = torch.randn(4, 16, 13, 11, dtype=dtype, generator=torch.Generator().manual_seed(0))
    cpu, gpu = on_both(x, layout, cuda)
    results = [forward_backward(lambda t: ops.lrn(t, 5, 1e-2, 0.75, 2.0), t) for t in (cpu, gpu)]
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a, **TOL[dtype])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_is_exact(cuda, layout, dtype, ceil_mode):
    x = torch.randn(4, 8, 17, 14, dtype=dtype, generator=torch.Generator().manual_seed(1)).round()  # ties
    cpu, gpu = on_both(x, layout, cuda)
    pooled = [
        forward_backward(lambda t: ops.max_pool2d_with_argmax(t, 3, 2, 1, ceil_mode=ceil_mode), t)
        for t in (cpu, gpu)
    ]
    for a, b in zip(*pooled, strict=True):
        assert torch.equal(a, b)


@pytest.fixture
def no_tf32(monkeypatch):
    """cuDNN's float32 convolutions default to TF32 (10-bit mantissas): off, to compare with the CPU."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def random_block(dtype) -> nn.ConvBNReLU2d:
    """A block whose every parameter and running statistic matters: conv bias, BN affine, stats."""
    torch.manual_seed(0)
    block = nn.ConvBNReLU2d(8, 16, 3, padding=1, bias=True, dtype=dtype)
    with torch.no_grad():
        block.bn.weight.uniform_(0.5, 1.5), block.bn.bias.uniform_(-0.5, 0.5)
        block.bn.running_mean.uniform_(-0.5, 0.5), block.bn.running_var.uniform_(0.5, 2)
    return block


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv_bn_relu_training(cuda, no_tf32, layout, dtype):
    blocks = (random_block(dtype), random_block(dtype).to(cuda))
    x = torch.randn(4, 8, 15, 13, dtype=dtype, generator=torch.Generator().manual_seed(2))
    cpu, gpu = on_both(x, layout, cuda)
    for a, b in zip(*(forward_backward(m, t) for m, t in zip(blocks, (cpu, gpu), strict=True)), strict=True):
        torch.testing.assert_close(b, a, **TOL[dtype])
    for (name, a), (_, b) in zip(blocks[0].state_dict().items(), blocks[1].state_dict().items(), strict=True):
        torch.testing.assert_close(b.cpu(), a, **TOL[dtype], msg=name)  # running statistics alike
    for p, q in zip(blocks[0].parameters(), blocks[1].parameters(), strict=True):
        torch.testing.assert_close(q.grad.cpu(), p.grad, **TOL[dtype])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@torch.no_grad()  # with autograd recording, eval mode runs the unfused ops: here the eval kernel runs
def test_conv_bn_relu_eval(cuda, no_tf32, layout, dtype):
    blocks = (random_block(dtype).eval(), random_block(dtype).eval().to(cuda))
    x = torch.randn(4, 8, 15, 13, dtype=dtype, generator=torch.Generator().manual_seed(3))
    x = x.contiguous(memory_format=layout)
    torch.testing.assert_close(blocks[1](x.to(cuda)).cpu(), blocks[0](x), **TOL[dtype])
