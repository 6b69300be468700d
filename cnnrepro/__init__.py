"""cnnrepro: seeded, measured, checked reproductions of the classic CNNs, with custom kernels.

Importing the package loads the compiled extension ``cnnrepro._C``, which registers the ops
under ``torch.ops.cnnrepro``. The ops' Python API is ``cnnrepro.ops`` (functions) and
``cnnrepro.nn`` (modules); ``cnnrepro.models``, ``.data``, ``.train``, ``.experiments``, ``.store``
and ``.report`` are imported on demand, as the runner (``python -m cnnrepro.run``) does.
"""

from cnnrepro import nn, ops
from cnnrepro._build import build_info
from cnnrepro.revision import code_revision

__all__ = ["build_info", "code_revision", "nn", "ops"]
__version__ = "0.1.0"
