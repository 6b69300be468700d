"""LocalResponseNorm: a drop-in for torch.nn.LocalResponseNorm on the custom kernel."""

import torch
import torch.nn.functional as F

from cnnrepro import ops
from cnnrepro.nn.backend import check_backend


class LocalResponseNorm(torch.nn.Module):
    """Same constructor and result as ``torch.nn.LocalResponseNorm(size, alpha, beta, k)``.

    ``alpha`` is divided by ``size`` (PyTorch's convention). For the AlexNet paper's constants,
    whose alpha is not divided by n, use :meth:`paper` (``LocalResponseNorm.paper(5, 1e-4, 0.75, 2)``
    is ``LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)``).
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, backend="custom"):
        super().__init__()
        self.size = ops.lrn_size(size, "LocalResponseNorm")
        self.alpha, self.beta, self.k = alpha, beta, k
        self.backend = check_backend(backend)

    @classmethod
    def paper(cls, n: int, alpha: float, beta: float, k: float, backend="custom") -> "LocalResponseNorm":
        """The module for constants written as in Krizhevsky et al. 2012 (no division by n)."""
        return cls(n, alpha=alpha * n, beta=beta, k=k, backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "native":
            return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        return ops.lrn(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, backend={self.backend!r}"
