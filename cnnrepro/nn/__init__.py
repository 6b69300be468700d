"""Drop-in modules for torch.nn's, each with ``backend="custom"|"native"``."""

from cnnrepro.nn.backend import BACKENDS, check_backend
from cnnrepro.nn.conv_bn_relu import ConvBNReLU2d
from cnnrepro.nn.convert import ConversionReport, Converted, convert
from cnnrepro.nn.lrn import LocalResponseNorm
from cnnrepro.nn.max_pool import MaxPool2d

__all__ = [
    "BACKENDS",
    "ConversionReport",
    "ConvBNReLU2d",
    "Converted",
    "LocalResponseNorm",
    "MaxPool2d",
    "check_backend",
    "convert",
]
