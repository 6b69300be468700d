"""2-D max pooling with argmax: ``torch.ops.cnnrepro.max_pool2d_with_argmax`` and its backward."""

import torch

import cnnrepro._build  # noqa: F401  (loads _C, which defines the ops)
from cnnrepro.ops._layout import check_same_device, declare_flexible_layout, empty_in_kernel_layout, int_pair


def _pair(value, name: str) -> list[int]:
    return int_pair(value, f"max_pool2d_with_argmax: {name}")


def pool_args(kernel_size, stride=None, padding=0, dilation=1) -> tuple[list[int], ...]:
    """Normalise torch.nn-style pooling arguments to the op's four int pairs (stride None = kernel_size)."""
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else stride
    return kernel, _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")


def max_pool2d_with_argmax(
    x: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, indices)``, equal to ``F.max_pool2d(x, ..., return_indices=True)``.

    Values are bitwise native's and indices exactly: int64, flat within the H*W plane, the first
    maximum wins ties, NaN propagates, padding acts as -inf. 3-D (C, H, W) or 4-D input;
    channels-last stays channels-last. Its gradient routes each output gradient to its argmax
    (deterministically, also on CUDA).
    """
    return torch.ops.cnnrepro.max_pool2d_with_argmax(
        x, *pool_args(kernel_size, stride, padding, dilation), ceil_mode
    )


def max_pool2d_with_argmax_backward(
    grad_output: torch.Tensor,
    indices: torch.Tensor,
    input_size,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
) -> torch.Tensor:
    """The gradient with respect to the input: grad_output summed into the positions ``indices`` name."""
    args = pool_args(kernel_size, stride, padding, dilation)
    return torch.ops.cnnrepro.max_pool2d_with_argmax_backward(
        grad_output, indices, list(input_size), *args, ceil_mode
    )


@torch.library.register_fake("cnnrepro::max_pool2d_with_argmax")
def _forward_fake(x, kernel_size, stride, padding, dilation, ceil_mode):
    # Native's shape rules (and checks) are ours: ask aten's meta kernel for the output shape.
    values, _ = torch.ops.aten.max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode)
    x4 = x if x.dim() == 4 else x.unsqueeze(0)
    out = empty_in_kernel_layout(x4, shape=(*x4.shape[:2], *values.shape[-2:]))
    out = out if x.dim() == 4 else out.squeeze(0)
    return out, torch.empty_like(out, dtype=torch.int64)


@torch.library.register_fake("cnnrepro::max_pool2d_with_argmax_backward")
def _backward_fake(grad_output, indices, input_size, kernel_size, stride, padding, dilation, ceil_mode):
    check_same_device(
        "cnnrepro::max_pool2d_with_argmax_backward", grad_output, "grad_output", indices=indices
    )
    dy4 = grad_output if grad_output.dim() == 4 else grad_output.unsqueeze(0)
    out = empty_in_kernel_layout(dy4, shape=(*dy4.shape[:2], *input_size[-2:]))
    return out if grad_output.dim() == 4 else out.squeeze(0)


def _setup_context(ctx, inputs, output):
    x, *window = inputs
    _, indices = output
    ctx.mark_non_differentiable(indices)
    ctx.save_for_backward(indices)  # only the argmax: the input itself is not kept alive
    ctx.input_size = x.shape
    ctx.window = window
    ctx.set_materialize_grads(False)  # no zero-filled gradient for the indices (a pass over the output)


def _backward(ctx, grad_values, _grad_indices):
    if grad_values is None:  # the values took no part in the loss
        return (None,) * 6
    (indices,) = ctx.saved_tensors
    grad_input = torch.ops.cnnrepro.max_pool2d_with_argmax_backward(
        grad_values, indices, list(ctx.input_size), *ctx.window
    )
    return grad_input, None, None, None, None, None


torch.library.register_autograd("cnnrepro::max_pool2d_with_argmax", _backward, setup_context=_setup_context)


def _backward_setup_context(ctx, inputs, output):
    _, indices, *_ = inputs
    ctx.save_for_backward(indices)


def _double_backward(ctx, grad_grad_input):
    """The backward is linear in grad_output: its own gradient gathers at the argmax. A window
    wholly in the padding has an index outside the plane (native's) and routed nothing: 0 there."""
    (indices,) = ctx.saved_tensors
    flat = grad_grad_input.flatten(-2)
    inside = (indices >= 0) & (indices < flat.shape[-1])
    gathered = flat.gather(-1, torch.where(inside, indices, 0).flatten(-2)).view(indices.shape)
    grad_grad_output = torch.where(inside, gathered, 0)
    return grad_grad_output, None, None, None, None, None, None, None


torch.library.register_autograd(
    "cnnrepro::max_pool2d_with_argmax_backward", _double_backward, setup_context=_backward_setup_context
)

declare_flexible_layout("max_pool2d_with_argmax", "max_pool2d_with_argmax_backward")
