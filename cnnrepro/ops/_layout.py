"""Shared argument helpers of the ops: the memory format a kernel runs in (mirrored from
csrc/common.h for the fake kernels), one device for every tensor, and integer and int-or-pair
arguments."""

import operator

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
    """An uninitialised tensor shaped like ``x`` (or ``shape``) in the layout the kernel returns,
    stride for stride: allocated in that memory format, as the kernels allocate theirs (so even a
    size-1 dimension's stride is theirs; torch.compile's inductor takes a fake kernel's strides for
    the real output's)."""
    return torch.empty(
        x.shape if shape is None else shape,
        dtype=x.dtype if dtype is None else dtype,
        device=x.device,
        memory_format=kernel_memory_format(x),
    )


def check_same_device(
    op: str, x: torch.Tensor, reference: str = "input", **tensors: torch.Tensor | None
) -> None:
    """Every given tensor on ``x``'s device (``x`` named ``reference``), with the C++ kernels'
    error and words. The fake kernels check it too: a call mixing a ``meta`` tensor with real ones
    is dispatched to them, not to the kernels."""
    for name, t in tensors.items():
        if t is not None and t.device != x.device:
            raise RuntimeError(
                f"{op}: {name} is on {t.device} but {reference} is on {x.device}; "
                "move them to the same device"
            )


def index_int(value, what: str) -> int:
    """An integer argument as native takes it (an int, a numpy integer, a 0-d integer tensor)."""
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an int, got {value!r}") from None


def int_pair(value, what: str) -> list[int]:
    """An int-or-pair argument as two ints, in every form torch.nn accepts: an integer (see
    :func:`index_int`) or a tuple/list of one or two; anything else is an error naming ``what``."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    try:
        ints = [operator.index(v) for v in items]
    except TypeError:
        ints = []
    if len(ints) not in (1, 2):
        raise ValueError(f"{what} must be an int or a tuple of one or two ints, got {value!r}")
    return ints * 2 if len(ints) == 1 else ints
