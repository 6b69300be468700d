"""Python API over ``torch.ops.cnnrepro.*``: autograd and fake-tensor registrations.

``reference`` holds the pure-PyTorch oracle of every op, used by the tests.
"""

from cnnrepro.ops import reference
from cnnrepro.ops.conv_bn_relu import conv_bn_relu, fold_bn
from cnnrepro.ops.lrn import lrn, lrn_backward
from cnnrepro.ops.max_pool import max_pool2d_with_argmax, max_pool2d_with_argmax_backward

__all__ = [
    "conv_bn_relu",
    "fold_bn",
    "lrn",
    "lrn_backward",
    "max_pool2d_with_argmax",
    "max_pool2d_with_argmax_backward",
    "reference",
]
