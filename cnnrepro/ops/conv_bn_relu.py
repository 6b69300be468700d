"""Fused conv + BatchNorm + ReLU: training through ``torch.ops.cnnrepro.conv_bn_relu_train``,
inference by folding BatchNorm into the convolution. The training op's autograd is registered
in C++ (csrc/conv_bn_relu_autograd.cpp); its fake kernels are here."""

import torch
import torch.nn.functional as F

import cnnrepro._build  # noqa: F401  (loads _C, which defines the ops)
from cnnrepro.ops._layout import empty_in_kernel_layout, int_pair


def conv_bn_relu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    bn_weight: torch.Tensor | None,
    bn_bias: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
) -> torch.Tensor:
    """``relu(batch_norm(conv2d(x, weight, bias), ...))``, as ``nn.Sequential(Conv2d, BatchNorm2d, ReLU)``.

    training=True normalizes with the batch statistics and, when running stats are given, updates
    them in place with ``momentum`` (the unbiased variance, as nn.BatchNorm2d). training=False
    folds the running statistics into the convolution's weight and bias (see :func:`fold_bn`).
    ``bn_weight``/``bn_bias`` None means a BatchNorm without affine parameters.
    """
    stride, padding, dilation = (
        int_pair(v, f"conv_bn_relu: {n}")
        for v, n in ((stride, "stride"), (padding, "padding"), (dilation, "dilation"))
    )
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("conv_bn_relu: training=False needs running_mean and running_var")
        folded_weight, folded_bias = fold_bn(weight, bias, bn_weight, bn_bias, running_mean, running_var, eps)
        return conv_relu(x, folded_weight, folded_bias, stride, padding, dilation, groups)
    y, _, mean, var = torch.ops.cnnrepro.conv_bn_relu_train(
        x, weight, bias, bn_weight, bn_bias, stride, padding, dilation, groups, eps
    )
    if running_mean is not None and running_var is not None:
        count = y.numel() // y.shape[1]
        update_running_stats(running_mean, running_var, mean.detach(), var.detach(), count, momentum)
    return y


@torch.no_grad()
def update_running_stats(running_mean, running_var, mean, var, count: int, momentum: float) -> None:
    """running = (1 - momentum) * running + momentum * batch, with the unbiased batch variance; as
    lerps, three small kernels instead of eight (this runs once per block and training step)."""
    running_mean.lerp_(mean, momentum)
    running_var.lerp_(var * (count / (count - 1)), momentum)


def fold_bn(weight, bias, bn_weight, bn_bias, running_mean, running_var, eps: float):
    """BatchNorm (eval) folded into the convolution before it. Per output channel c, with
    ``s_c = gamma_c / sqrt(var_c + eps)``: ``W'_c = W_c * s_c`` and ``b'_c = (b_c - mean_c) * s_c + beta_c``.
    """
    scale = torch.rsqrt(running_var + eps)
    if bn_weight is not None:
        scale = scale * bn_weight
    shift = -running_mean * scale if bias is None else (bias - running_mean) * scale
    if bn_bias is not None:
        shift = shift + bn_bias
    return weight * scale.view(-1, 1, 1, 1), shift


def conv_relu(x, weight, bias, stride, padding, dilation, groups) -> torch.Tensor:
    """conv2d then ReLU in place on its output (one less tensor than conv2d + relu)."""
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups).relu_()


@torch.library.register_fake("cnnrepro::conv_bn_relu_train")
def _train_fake(x, weight, bias, bn_weight, bn_bias, stride, padding, dilation, groups, eps):
    z = torch.ops.aten.convolution(x, weight, bias, stride, padding, dilation, False, [0, 0], groups)
    z = empty_in_kernel_layout(x, shape=z.shape)
    channels = weight.shape[0]
    return torch.empty_like(z), z, z.new_empty(channels), z.new_empty(channels)


@torch.library.register_fake("cnnrepro::conv_bn_relu_train_backward")
def _train_backward_fake(grad_output, x, weight, conv_out, mean, var, bn_weight, bn_bias, *conv_and_mask):
    stride, padding, dilation, groups, _eps, mask = conv_and_mask
    # The kernel hands a dz laid out like conv_out to aten's convolution_backward: ask its meta kernel.
    dz = empty_in_kernel_layout(conv_out)
    channels = weight.shape[0]
    grad_input, grad_weight, _ = torch.ops.aten.convolution_backward(
        dz, x, weight, None, stride, padding, dilation, False, [0, 0], groups, [mask[0], mask[1], False]
    )
    grad_input = grad_input if mask[0] else x.new_empty(0)
    grad_weight = grad_weight if mask[1] else weight.new_empty(0)
    grad_bias = x.new_empty(channels) if mask[2] else x.new_empty(0)
    return grad_input, grad_weight, grad_bias, x.new_empty(channels), x.new_empty(channels)
