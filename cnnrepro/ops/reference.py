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


def _pooled_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1  # the last window may not start in the right padding
    return out


def max_pool2d_with_argmax(x, kernel_size, stride, padding, dilation, ceil_mode=False):
    """(values, flat H*W indices) by scanning each window in row-major order.

    A tap replaces the running maximum when it is greater or NaN; padding taps are skipped
    (they act as -inf); an all-(-inf) window reports its first in-bounds tap.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    *lead, height, width = x.shape
    out_h = _pooled_size(height, kh, sh, ph, dh, ceil_mode)
    out_w = _pooled_size(width, kw, sw, pw, dw, ceil_mode)
    planes = x.reshape(-1, height, width)
    values = torch.empty(planes.shape[0], out_h, out_w, dtype=x.dtype)
    indices = torch.empty(planes.shape[0], out_h, out_w, dtype=torch.int64)
    for p, plane in enumerate(planes.tolist()):
        for oh in range(out_h):
            for ow in range(out_w):
                rows = [h for h in range(oh * sh - ph, oh * sh - ph + kh * dh, dh) if 0 <= h < height]
                cols = [w for w in range(ow * sw - pw, ow * sw - pw + kw * dw, dw) if 0 <= w < width]
                best, best_value = rows[0] * width + cols[0], float("-inf")
                for h in rows:
                    for w in cols:
                        value = plane[h][w]
                        if value > best_value or value != value:
                            best, best_value = h * width + w, value
                values[p, oh, ow], indices[p, oh, ow] = best_value, best
    shape = (*lead, out_h, out_w)
    return values.reshape(shape).to(x.device), indices.reshape(shape).to(x.device)


def max_pool2d_with_argmax_backward(grad_output, indices, input_size):
    """Sum each output gradient into the input position its index names."""
    *lead, height, width = input_size
    flat = torch.zeros(*lead, height * width, dtype=grad_output.dtype, device=grad_output.device)
    flat.scatter_add_(-1, indices.flatten(-2), grad_output.flatten(-2))
    return flat.view(*lead, height, width)


def conv_bn_relu_train(x, weight, bias, bn_weight, bn_bias, stride, padding, dilation, groups, eps):
    """(output, batch mean, biased batch var): convolution, then BatchNorm with the batch's own
    statistics written out as sums over (N, H, W), then max(0, .)."""
    z = torch.nn.functional.conv2d(x, weight, bias, stride, padding, dilation, groups)
    count = z.numel() // z.shape[1]
    mean = z.sum(dim=(0, 2, 3)) / count
    var = ((z - mean.view(1, -1, 1, 1)) ** 2).sum(dim=(0, 2, 3)) / count
    x_hat = (z - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + eps)
    if bn_weight is not None:
        x_hat = x_hat * bn_weight.view(1, -1, 1, 1)
    if bn_bias is not None:
        x_hat = x_hat + bn_bias.view(1, -1, 1, 1)
    return torch.where(x_hat < 0, torch.zeros_like(x_hat), x_hat), mean, var
