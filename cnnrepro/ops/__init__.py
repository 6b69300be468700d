"""Python API over ``torch.ops.cnnrepro.*``: autograd and fake-tensor registrations.

``reference`` holds the pure-PyTorch oracle of every op, used by the tests.
"""

from cnnrepro.ops import reference
from cnnrepro.ops.lrn import lrn, lrn_backward

__all__ = ["lrn", "lrn_backward", "reference"]
