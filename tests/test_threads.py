"""Every CPU kernel gives the same bits on one thread as on several: work is split across threads
by whole planes, channels or tiles, never inside a reduction."""

import contextlib

import pytest
import torch

from cnnrepro import nn, ops


@contextlib.contextmanager
def threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def lrn_step(x):
    y = ops.lrn(x, 5)
    return y, *torch.autograd.grad(y, x, torch.ones_like(y))


def pool_step(x):
    values, indices = ops.max_pool2d_with_argmax(x, 3, 2, 1)
    return values, indices, *torch.autograd.grad(values, x, torch.cos(values))


def conv_bn_relu_step(x):
    torch.manual_seed(0)
    block = nn.ConvBNReLU2d(x.shape[1], 32, 3, padding=1)
    y = block(x)
    grads = torch.autograd.grad(y.square().sum(), [x, *block.parameters()])
    return y, *grads, *block.state_dict().values()  # the running statistics among them


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs two CPU threads")
@pytest.mark.parametrize("step", [lrn_step, pool_step, conv_bn_relu_step])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("shape", [(8, 16, 33, 33), (1, 44, 17, 17)])  # one sample: split by channels
def test_one_thread_and_two_give_the_same_bits(step, layout, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=layout).requires_grad_()
    with threads(1):
        serial = step(x)
    with threads(2):
        parallel = step(x)
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a, b)
