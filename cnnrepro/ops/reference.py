"""Pure-PyTorch oracles of every cnnrepro op: slow, obvious, written from the formulas.

They share no code with the kernels or with torch.nn.functional's implementations, so a test
that compares all three can tell which one is wrong.
"""

import torch


def _window_sum_over_channels(t: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """out[:, c] = sum of t[:, c'] for c' in [c - before, c + after], missing channels as zero."""
    channels = t.shape[1]
    out = torch.zeros_like(t)
    for c in range(channels):
        lo, hi = max(0, c - before), min(channels - 1, c + after)
        if lo <= hi:
            out[:, c] = t[:, lo : hi + 1].sum(dim=1)
    return out


def lrn_scale(x: torch.Tensor, size: int, alpha: float, k: float) -> torch.Tensor:
    """k + alpha/size * (sum of squares over the window W(c) = [c - size//2, c + (size-1)//2])."""
    return k + alpha / size * _window_sum_over_channels(x * x, size // 2, (size - 1) // 2)


def lrn(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> torch.Tensor:
    """b_c = a_c / scale_c ** beta (see lrn_scale)."""
    return x / lrn_scale(x, size, alpha, k) ** beta


def lrn_backward(
    grad_output: torch.Tensor, x: torch.Tensor, size: int, alpha: float, beta: float, k: float
) -> torch.Tensor:
    """dx_c = dy_c / s_c^beta - 2 alpha beta / size * x_c * sum_{c': c in W(c')} dy_c' x_c' / s_c'^(beta+1).

    {c' : c in W(c')} is W mirrored: [c - (size-1)//2, c + size//2].
    """
    scale = lrn_scale(x, size, alpha, k)
    ratio = grad_output * x / scale ** (beta + 1)
    collected = _window_sum_over_channels(ratio, (size - 1) // 2, size // 2)
    return grad_output / scale**beta - 2 * alpha * beta / size * x * collected
