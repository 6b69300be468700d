"""The memory format a kernel runs in, mirrored from csrc/common.h for the fake kernels."""

import torch


def kernel_memory_format(x: torch.Tensor) -> torch.memory_format:
    """Channels-last inputs stay channels-last; anything else runs (and returns) contiguous."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def empty_in_kernel_layout(x: torch.Tensor, shape=None, dtype=None) -> torch.Tensor:
    """An uninitialised tensor shaped like ``x`` (or ``shape``) in the layout the kernel returns."""
    return torch.empty(
        x.shape if shape is None else shape,
        dtype=x.dtype if dtype is None else dtype,
        device=x.device,
    ).contiguous(memory_format=kernel_memory_format(x))
