"""ConvBNReLU2d: ``nn.Sequential(Conv2d, BatchNorm2d, ReLU)`` with a fused forward and backward."""

import torch

from cnnrepro import ops
from cnnrepro.nn.backend import check_backend


class ConvBNReLU2d(torch.nn.Sequential):
    """Behaves exactly like ``nn.Sequential(nn.Conv2d(...), nn.BatchNorm2d(out_channels), nn.ReLU())``.

    It *is* that Sequential (children ``0``, ``1``, ``2``), so its state_dict keys are the unfused
    one's (``0.weight``, ``0.bias``, ``1.weight``, ``1.bias``, ``1.running_mean``, ``1.running_var``,
    ``1.num_batches_tracked``): weights load from and into the unfused block unchanged, and
    ``backend="native"`` simply runs the Sequential.

    The custom backend reads everything at call time, as the children would: the convolution's
    arguments, and the BatchNorm's own mode (``m.train(); m[1].eval()`` freezes the statistics as
    it does in the Sequential). With batch statistics it trains through one fused op (statistics,
    normalize, affine, ReLU) around the convolution; with running statistics it normalizes the
    convolution's output in place, with nothing cached. Where fusing would change what the
    children do it runs the Sequential itself: a child with hooks, a child replaced by another
    module, a convolution with string padding or a ``padding_mode`` other than zeros.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=False,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
        backend="custom",
        device=None,
        dtype=None,
    ):
        factory = dict(device=device, dtype=dtype)
        super().__init__(
            torch.nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, **factory
            ),
            torch.nn.BatchNorm2d(out_channels, eps, momentum, affine, track_running_stats, **factory),
            torch.nn.ReLU(),
        )
        self.backend = check_backend(backend)

    @property
    def conv(self) -> torch.nn.Conv2d:
        return self[0]

    @property
    def bn(self) -> torch.nn.BatchNorm2d:
        return self[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        children = list(self)
        if self.backend == "native" or len(children) != 3 or not fusable(*children):
            return super().forward(x)
        return fused_forward(x, self.conv, self.bn)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"


def fusable(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d, relu: torch.nn.Module | None = None) -> bool:
    """Whether the fused op computes what ``relu(bn(conv(x)))`` would, checked at call time: the
    exact modules it stands for (a subclass, a module replaced by another, a SyncBatchNorm runs
    itself), none with hooks (the fused op calls none of them, so their hooks would not run), and a
    convolution whose padding the op takes (numbers, zeros)."""
    return (
        type(conv) is torch.nn.Conv2d
        and type(bn) is torch.nn.BatchNorm2d
        and (relu is None or type(relu) is torch.nn.ReLU)
        and not any(has_hooks(m) for m in (conv, bn, relu) if m is not None)
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def fused_forward(x: torch.Tensor, conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    """``relu(bn(conv(x)))`` through the fused op, reading everything at call time as the modules
    would: the convolution's arguments and BatchNorm's own mode and rules (its training flag picks
    the statistics; running statistics update only when it trains and tracks them)."""
    factor = momentum_for_this_batch(bn)
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    keep_running = not bn.training or bn.track_running_stats
    return ops.conv_bn_relu(
        x,
        conv.weight,
        conv.bias,
        bn.weight,
        bn.bias,
        bn.running_mean if keep_running else None,
        bn.running_var if keep_running else None,
        batch_stats,
        factor,
        bn.eps,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
    )


def momentum_for_this_batch(bn: torch.nn.BatchNorm2d) -> float:
    """As nn.BatchNorm2d: count the batch; momentum=None means a cumulative average."""
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            return 1.0 / float(bn.num_batches_tracked)
    return 0.0 if bn.momentum is None else bn.momentum


def has_hooks(module: torch.nn.Module) -> bool:
    """Whether any forward or backward hook is registered on ``module``. torch has no public
    accessor for a module's hooks, so this reads the dicts that ``register_*_hook`` fills."""
    return any(
        getattr(module, name, None)
        for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    )
