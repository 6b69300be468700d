"""Fused conv + BatchNorm + ReLU: training through ``torch.ops.cnnrepro.conv_bn_relu_train``, inference
through ``torch.ops.cnnrepro.conv_bn_relu_eval``. The training op's autograd is registered in C++
(csrc/conv_bn_relu_autograd.cpp); the fake kernels are here."""

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import conv_flop_count, register_flop_formula

import cnnrepro._build  # noqa: F401  (loads _C, which defines the ops)
from cnnrepro.ops._layout import (
    check_same_device,
    declare_flexible_layout,
    index_int,
    int_pair,
    kernel_memory_format,
)


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
    normalizes with the running statistics, in place on the convolution's output.
    ``bn_weight``/``bn_bias`` None means a BatchNorm without affine parameters.

    Two cases run the unfused ops, so they behave exactly as native: an empty batch in training
    (nothing to take statistics of; native returns an empty output and leaves the running
    statistics alone), and inference while autograd records (frozen BatchNorm in a model being
    fine-tuned), which the inference kernel does not differentiate.

    Under autocast (``torch.autocast`` enabled for the input's device) the fused op runs in
    autocast's dtype, as native's convolution does: the input, weights and BatchNorm's affine
    parameters (and in inference its running statistics) cast to it, and the output in it. The
    running statistics stay in their own dtype (float32), updated from the batch's. Native's
    BatchNorm would normalize in float32 with float32 parameters; here gamma and beta are rounded
    to the autocast dtype first (the kernels take one dtype).
    """
    stride, padding, dilation = (
        int_pair(v, f"conv_bn_relu: {n}")
        for v, n in ((stride, "stride"), (padding, "padding"), (dilation, "dilation"))
    )
    groups = index_int(groups, "conv_bn_relu: groups")
    if x.dim() != 4:  # also before the unfused paths, where conv2d alone would take a 3-D input
        raise ValueError(f"conv_bn_relu: expected a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
    check_block_devices("conv_bn_relu", x, weight, bias, bn_weight, bn_bias, running_mean, running_var)
    amp = autocast_dtype(x)
    # Under autocast the statistics keep the parameters' dtype, as nn.BatchNorm2d's under autocast.
    check_running_stats(running_mean, running_var, x if amp is None else weight, weight)
    conv = (stride, padding, dilation, groups)
    if not training and running_mean is None:
        raise ValueError("conv_bn_relu: training=False needs running_mean and running_var")
    records_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias, bn_weight, bn_bias)
    )
    if (not training and records_grad) or (training and x.shape[0] == 0):
        z = F.conv2d(x, weight, bias, *conv)
        return F.batch_norm(z, running_mean, running_var, bn_weight, bn_bias, training, momentum, eps).relu()
    if amp is not None:
        return _autocast_call(
            amp, x, weight, bias, bn_weight, bn_bias, running_mean, running_var, training, momentum, eps, conv
        )
    if not training:
        return torch.ops.cnnrepro.conv_bn_relu_eval(
            x, weight, bias, bn_weight, bn_bias, running_mean, running_var, *conv, eps
        )
    y, _, mean, var = torch.ops.cnnrepro.conv_bn_relu_train(x, weight, bias, bn_weight, bn_bias, *conv, eps)
    if running_mean is not None:
        count = y.numel() // y.shape[1]
        update_running_stats(running_mean, running_var, mean.detach(), var.detach(), count, momentum)
    return y


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast casts ``x``'s convolution to, if it is enabled on ``x``'s device; else None
    (float64 too: autocast leaves it alone)."""
    device = x.device.type
    if x.dtype == torch.float64 or not torch.amp.is_autocast_available(device):
        return None
    if not torch.is_autocast_enabled(device):
        return None
    return torch.get_autocast_dtype(device)


def _autocast_call(
    amp, x, weight, bias, bn_weight, bn_bias, running_mean, running_var, training, momentum, eps, conv
):
    """The fused op with its floating arguments cast to autocast's dtype ``amp`` and autocast off
    inside (as autocast runs an op it casts); the running statistics updated in their own dtype."""

    def cast(t):
        return t if t is None or not t.is_floating_point() else t.to(amp)

    with torch.autocast(x.device.type, enabled=False):
        x, weight, bias, bn_weight, bn_bias = map(cast, (x, weight, bias, bn_weight, bn_bias))
        if not training:
            return torch.ops.cnnrepro.conv_bn_relu_eval(
                x, weight, bias, bn_weight, bn_bias, cast(running_mean), cast(running_var), *conv, eps
            )
        y, _, mean, var = torch.ops.cnnrepro.conv_bn_relu_train(
            x, weight, bias, bn_weight, bn_bias, *conv, eps
        )
        if running_mean is not None:
            count = y.numel() // y.shape[1]
            mean, var = mean.detach().to(running_mean.dtype), var.detach().to(running_var.dtype)
            update_running_stats(running_mean, running_var, mean, var, count, momentum)
        return y


def check_block_devices(op, x, weight, bias, bn_weight, bn_bias, running_mean=None, running_var=None) -> None:
    """Every tensor of a conv-BN-ReLU call on the input's device (see check_same_device)."""
    check_same_device(
        op,
        x,
        weight=weight,
        bias=bias,
        bn_weight=bn_weight,
        bn_bias=bn_bias,
        running_mean=running_mean,
        running_var=running_var,
    )


def check_running_stats(running_mean, running_var, x, weight) -> None:
    """Both running statistics or neither; each one value per output channel, in x's dtype."""
    if (running_mean is None) != (running_var is None):
        given, missing = (
            ("running_mean", "running_var") if running_var is None else ("running_var", "running_mean")
        )
        raise ValueError(f"conv_bn_relu: {given} is given but {missing} is None; pass both or neither")
    channels = weight.shape[0] if weight.dim() > 0 else None
    for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
        if stat is None:
            continue
        if stat.dim() != 1:
            raise ValueError(
                f"conv_bn_relu: {name} must be 1-D with {channels} elements (out_channels), "
                f"got shape {tuple(stat.shape)}"
            )
        if stat.shape[0] != channels:
            raise ValueError(
                f"conv_bn_relu: {name} has {stat.shape[0]} elements, expected {channels} (out_channels)"
            )
        if stat.dtype != x.dtype:  # the device: check_block_devices, before
            raise ValueError(
                f"conv_bn_relu: {name} has dtype {stat.dtype} but the input has dtype {x.dtype}; they must "
                "match (as in nn.BatchNorm2d)"
            )


@torch.no_grad()
def update_running_stats(running_mean, running_var, mean, var, count: int, momentum: float) -> None:
    """running = (1 - momentum) * running + momentum * batch, with the unbiased batch variance, as
    native computes it: four small kernels (this runs once per block and training step). Not lerp_,
    whose form for weights >= 0.5 turns an infinite batch mean into NaN where native keeps inf."""
    running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
    running_var.mul_(1 - momentum).add_(var, alpha=momentum * count / (count - 1))


def _conv_output(x, weight, bias, stride, padding, dilation, groups) -> torch.Tensor:
    """An uninitialised conv2d output as the kernels make it: aten's convolution (its meta kernel
    here), then made dense in the input's kernel layout (``.contiguous``, which keeps a tensor
    already dense in it as it is)."""
    z = torch.ops.aten.convolution(x, weight, bias, stride, padding, dilation, False, [0, 0], groups)
    return z.contiguous(memory_format=kernel_memory_format(x))


@register_flop_formula(torch.ops.cnnrepro.conv_bn_relu_eval)
def _eval_flops(x_shape, w_shape, *_args, out_shape, **_kwargs) -> int:
    """The convolution's FLOPs, so torch's flop counter (and models.summary's MACs) sees the fused ops."""
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


@register_flop_formula(torch.ops.cnnrepro.conv_bn_relu_train)
def _train_flops(x_shape, w_shape, *_args, out_shape, **_kwargs) -> int:
    return _eval_flops(x_shape, w_shape, out_shape=out_shape[0])  # outputs: (y, z, mean, var)


@torch.library.register_fake("cnnrepro::conv_bn_relu_train")
def _train_fake(x, weight, bias, bn_weight, bn_bias, stride, padding, dilation, groups, eps):
    check_block_devices("cnnrepro::conv_bn_relu_train", x, weight, bias, bn_weight, bn_bias)
    z = _conv_output(x, weight, bias, stride, padding, dilation, groups)
    channels = weight.shape[0]
    return torch.empty_like(z), z, z.new_empty(channels), z.new_empty(channels)


@torch.library.register_fake("cnnrepro::conv_bn_relu_eval")
def _eval_fake(
    x, weight, bias, bn_weight, bn_bias, running_mean, running_var, stride, padding, dilation, groups, eps
):
    check_block_devices(
        "cnnrepro::conv_bn_relu_eval", x, weight, bias, bn_weight, bn_bias, running_mean, running_var
    )
    return _conv_output(x, weight, bias, stride, padding, dilation, groups)


@torch.library.register_fake("cnnrepro::conv_bn_relu_train_backward")
def _train_backward_fake(grad_output, x, weight, conv_out, mean, var, bn_weight, bn_bias, *conv_and_mask):
    stride, padding, dilation, groups, _eps, mask = conv_and_mask
    check_same_device(
        "cnnrepro::conv_bn_relu_train_backward",
        x,
        grad_output=grad_output,
        weight=weight,
        conv_out=conv_out,
        mean=mean,
        var=var,
        bn_weight=bn_weight,
        bn_bias=bn_bias,
    )
    # The kernel hands a dz laid out like conv_out (made dense in its kernel layout) to aten's
    # convolution_backward: ask its meta kernel.
    dz = torch.empty_like(conv_out.contiguous(memory_format=kernel_memory_format(conv_out)))
    channels = weight.shape[0]
    grad_input, grad_weight, _ = torch.ops.aten.convolution_backward(
        dz, x, weight, None, stride, padding, dilation, False, [0, 0], groups, [mask[0], mask[1], False]
    )
    grad_input = grad_input if mask[0] else x.new_empty(0)
    grad_weight = grad_weight if mask[1] else weight.new_empty(0)
    grad_bias = x.new_empty(channels) if mask[2] else x.new_empty(0)
    return grad_input, grad_weight, grad_bias, x.new_empty(channels), x.new_empty(channels)


declare_flexible_layout("conv_bn_relu_train", "conv_bn_relu_eval", "conv_bn_relu_train_backward")
