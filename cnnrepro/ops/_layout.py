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


# torch.compile's inductor decides what strides a custom op's inputs must have from its layout tag.
# Untagged ops get torch's default, needs_exact_strides: every input copied back to the strides eager
# saw, so where inductor's layout optimization moves the convolutions around our ops to channels-last
# (it does on the CPU whenever a graph has one), each of our ops would sit between two copies.
# Ours take any strides and return the layout kernel_memory_format picks (the fake kernels mirror
# it, stride for stride: tests/test_compile.py), so they are flexible_layout.
LAYOUT_TAG = torch.Tag.flexible_layout
_LAYOUT_TAGS = (torch.Tag.flexible_layout, torch.Tag.needs_fixed_stride_order, torch.Tag.needs_exact_strides)


def declare_flexible_layout(*names: str) -> None:
    """Tags ``torch.ops.cnnrepro.<name>`` flexible_layout. The tag belongs in the schema
    (csrc/registration.cpp, ``m.def(schema, {at::Tag::flexible_layout})``); where _C was built without
    it, it is set on the Python overload, which is where inductor reads it."""
    for name in names:
        overload = getattr(torch.ops.cnnrepro, name).default
        if LAYOUT_TAG not in overload.tags:
            overload._tags = tuple(t for t in overload.tags if t not in _LAYOUT_TAGS) + (LAYOUT_TAG,)


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
