"""Python API over ``torch.ops.cnnrepro.*``: autograd and fake-tensor registrations.

``reference`` holds the pure-PyTorch oracle of every op, used by the tests.
"""

from cnnrepro.ops import reference
from cnnrepro.ops.conv_bn_relu import conv_bn_relu
from cnnrepro.ops.lrn import lrn, lrn_backward, lrn_size
from cnnrepro.ops.max_pool import max_pool2d_with_argmax, max_pool2d_with_argmax_backward

__all__ = [
    "conv_bn_relu",
    "lrn",
    "lrn_backward",
    "lrn_size",
    "max_pool2d_with_argmax",
    "max_pool2d_with_argmax_backward",
    "reference",
]
