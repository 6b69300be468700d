"""ConvBNReLU2d: ``nn.Sequential(Conv2d, BatchNorm2d, ReLU)`` with a fused forward and backward."""

import torch

from cnnrepro import ops
from cnnrepro.nn._backend import check_backend
from cnnrepro.ops.conv_bn_relu import conv_relu


class ConvBNReLU2d(torch.nn.Sequential):
    """Behaves exactly like ``nn.Sequential(nn.Conv2d(...), nn.BatchNorm2d(out_channels), nn.ReLU())``.

    It *is* that Sequential (children ``0``, ``1``, ``2``), so its state_dict keys are the unfused
    one's (``0.weight``, ``0.bias``, ``1.weight``, ``1.bias``, ``1.running_mean``, ``1.running_var``,
    ``1.num_batches_tracked``): weights load from and into the unfused block unchanged, and
    ``backend="native"`` simply runs the Sequential. The custom backend trains through one fused
    op (batch statistics, normalize, affine, ReLU) around the convolution, and in eval mode folds
    BatchNorm into the convolution, caching the folded weight until a parameter or buffer changes.
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
        self._folded = None  # (key, weight, bias) of the last eval-mode fold

    @property
    def conv(self) -> torch.nn.Conv2d:
        return self[0]

    @property
    def bn(self) -> torch.nn.BatchNorm2d:
        return self[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "native":
            return super().forward(x)
        conv, bn = self.conv, self.bn
        if isinstance(conv.padding, str):
            raise ValueError(
                "ConvBNReLU2d: string padding ('same', 'valid') is not supported by the custom backend"
            )
        use_batch_stats = self.training or bn.running_mean is None
        if not use_batch_stats:
            weight, bias = self._eval_weights()
            return conv_relu(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        factor = self._momentum_for_this_batch()
        update_stats = self.training and bn.track_running_stats
        return ops.conv_bn_relu(
            x,
            conv.weight,
            conv.bias,
            bn.weight,
            bn.bias,
            bn.running_mean if update_stats else None,
            bn.running_var if update_stats else None,
            True,
            factor,
            bn.eps,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
        )

    def _momentum_for_this_batch(self) -> float:
        """As nn.BatchNorm2d: count the batch; momentum=None means a cumulative average."""
        bn = self.bn
        if self.training and bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:
                return 1.0 / float(bn.num_batches_tracked)
        return 0.0 if bn.momentum is None else bn.momentum

    def _eval_weights(self):
        """The BatchNorm-folded conv weight and bias; cached while nothing they depend on changed
        (and recomputed, uncached, when autograd needs to see the fold)."""
        conv, bn = self.conv, self.bn
        sources = [conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var]

        def fold():
            return ops.fold_bn(
                conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps
            )

        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in sources):
            return fold()
        key = tuple((t.data_ptr(), t._version) if t is not None else None for t in sources) + (bn.eps,)
        if self._folded is None or self._folded[0] != key:
            with torch.no_grad():
                self._folded = (key, *fold())
        return self._folded[1:]

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"
