"""MaxPool2d: a drop-in for torch.nn.MaxPool2d on the custom argmax kernel."""

import torch
import torch.nn.functional as F

from cnnrepro import ops
from cnnrepro.nn.backend import check_backend


class MaxPool2d(torch.nn.Module):
    """Same constructor and results as ``torch.nn.MaxPool2d``, plus ``backend="custom"|"native"``.

    The custom backend keeps only the argmax for the backward (not the input), and its backward
    is deterministic on every device.
    """

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        dilation=1,
        return_indices=False,
        ceil_mode=False,
        backend="custom",
    ):
        super().__init__()
        ops.max_pool.pool_args(kernel_size, stride, padding, dilation)  # a bad argument fails here already
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size  # as torch.nn.MaxPool2d
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode
        self.backend = check_backend(backend)

    def forward(self, x: torch.Tensor):
        # The window is read at call time, as native does: attributes changed after construction count.
        window = ops.max_pool.pool_args(self.kernel_size, self.stride, self.padding, self.dilation)
        if self.backend == "native":
            return F.max_pool2d(x, *window, ceil_mode=self.ceil_mode, return_indices=self.return_indices)
        values, indices = ops.max_pool2d_with_argmax(x, *window, ceil_mode=self.ceil_mode)
        return (values, indices) if self.return_indices else values

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}, backend={self.backend!r}"
        )
