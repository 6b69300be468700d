"""Drop-in modules for torch.nn's, each with ``backend="custom"|"native"``."""

from cnnrepro.nn.lrn import LocalResponseNorm

__all__ = ["LocalResponseNorm"]
