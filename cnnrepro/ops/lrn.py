"""Local response normalization: ``torch.ops.cnnrepro.lrn`` with autograd and a fake kernel."""

import torch

import cnnrepro._build  # noqa: F401  (loads _C, which defines the ops)
from cnnrepro.ops import reference
from cnnrepro.ops._layout import check_same_device, declare_flexible_layout, empty_in_kernel_layout, index_int


def lrn(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> torch.Tensor:
    """Local response normalization across channels; equal to ``F.local_response_norm``.

    ``b_c = a_c / (k + alpha/size * sum_{c' in W(c)} a_{c'}^2) ** beta`` with the window
    ``W(c) = [c - size//2, c + (size-1)//2]``, zero-padded. Note the ``alpha/size`` divisor:
    the AlexNet paper's constants (k=2, n=5, alpha=1e-4, beta=0.75) have no division by n, so
    they are ``lrn(x, 5, alpha=5e-4, beta=0.75, k=2.0)`` here.

    Input: (N, C, *) of a floating dtype, any layout (channels-last stays channels-last).
    Differentiable twice (the second derivative goes through the pure-PyTorch reference).
    """
    return torch.ops.cnnrepro.lrn(x, index_int(size, "lrn: size"), alpha, beta, k)


def lrn_size(size, caller: str = "lrn") -> int:
    """A module's ``size`` checked at construction: a positive int (numpy integers and 0-d integer
    tensors count, as for native)."""
    size = index_int(size, f"{caller}: size")
    if size < 1:
        raise ValueError(f"{caller}: size must be a positive int, got {size}")
    return size


def lrn_backward(
    grad_output: torch.Tensor, x: torch.Tensor, size: int, alpha: float, beta: float, k: float
) -> torch.Tensor:
    """The gradient of :func:`lrn` with respect to ``x``, recomputing the scale from ``x``."""
    return torch.ops.cnnrepro.lrn_backward(grad_output, x, size, alpha, beta, k)


@torch.library.register_fake("cnnrepro::lrn")
def _lrn_fake(x, size, alpha, beta, k):
    return empty_in_kernel_layout(x)


@torch.library.register_fake("cnnrepro::lrn_backward")
def _lrn_backward_fake(grad_output, x, size, alpha, beta, k):
    check_same_device("cnnrepro::lrn_backward", x, grad_output=grad_output)
    return empty_in_kernel_layout(x)


def _lrn_setup_context(ctx, inputs, output):
    x, size, alpha, beta, k = inputs
    ctx.save_for_backward(x)  # only x: the backward recomputes the scale, so y need not be kept
    ctx.params = (size, alpha, beta, k)


def _lrn_backward(ctx, grad_output):
    (x,) = ctx.saved_tensors
    return torch.ops.cnnrepro.lrn_backward(grad_output, x, *ctx.params), None, None, None, None


torch.library.register_autograd("cnnrepro::lrn", _lrn_backward, setup_context=_lrn_setup_context)


def _lrn_backward_setup_context(ctx, inputs, output):
    grad_output, x, size, alpha, beta, k = inputs
    ctx.save_for_backward(grad_output, x)
    ctx.params = (size, alpha, beta, k)


def _lrn_double_backward(ctx, grad_grad_input):
    """Second derivative: differentiate the reference backward (slow, but exact and rarely used)."""
    grad_output, x = ctx.saved_tensors
    with torch.enable_grad():
        grad_output = grad_output.detach().requires_grad_()
        x = x.detach().requires_grad_()
        grad_input = reference.lrn_backward(grad_output, x, *ctx.params)
        d_grad_output, d_x = torch.autograd.grad(
            grad_input, (grad_output, x), grad_grad_input, create_graph=True
        )
    return d_grad_output, d_x, None, None, None, None


torch.library.register_autograd(
    "cnnrepro::lrn_backward", _lrn_double_backward, setup_context=_lrn_backward_setup_context
)

declare_flexible_layout("lrn", "lrn_backward")
