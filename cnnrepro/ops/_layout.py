"""Shared argument helpers of the ops: the memory format a kernel runs in (mirrored from
csrc/common.h for the fake kernels), and int-or-pair arguments."""

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


def int_pair(value, what: str) -> list[int]:
    """An int or a pair of ints (torch.nn style) as two ints; anything else is an error naming ``what``."""
    values = [value, value] if isinstance(value, int) else list(value)
    if len(values) != 2 or not all(isinstance(v, int) for v in values):
        raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
    return values
