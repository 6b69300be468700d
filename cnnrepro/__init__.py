"""cnnrepro: seeded, measured, checked reproductions of the classic CNNs, with custom kernels.

Importing the package loads the compiled extension ``cnnrepro._C``, which registers the ops
under ``torch.ops.cnnrepro``; the Python API lives in ``cnnrepro.ops`` and ``cnnrepro.nn``.
"""

from cnnrepro import nn, ops  # noqa: E402  (ops first: nn builds on it)
from cnnrepro._build import build_info

__all__ = ["build_info", "ops", "nn"]
__version__ = "0.1.0"
