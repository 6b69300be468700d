"""Seeded fuzz cases for the conformance tests: valid inputs to compare with native, and invalid
ones that must be refused with a message naming the argument.

Run as a script it tries every invalid case of one op and prints one JSON line per case, so the
test can run it in a subprocess: a crash (a segfault in a kernel) then fails the test instead of
killing the test run, and the last line printed names the case that crashed.
"""

import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnrepro import ops

VALID_PER_OP = 1000
INVALID_PER_OP = 300


# ---- valid cases -------------------------------------------------------------------------------


def randn(rng: random.Random, shape, dtype) -> torch.Tensor:
    """Normal values drawn from rng alone, so a case depends on nothing but its seed."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(rng.randrange(2**31)), dtype=dtype)


def random_layout(rng: random.Random, x: torch.Tensor) -> torch.Tensor:
    """x as it is, channels-last, or a non-contiguous view of the same values."""
    choice = rng.choice(["contiguous", "channels_last", "strided"])
    if choice == "channels_last" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if choice == "strided":
        return torch.cat([x, x], dim=-1)[..., ::2]
    return x


def with_specials(rng: random.Random, x: torch.Tensor, ties: bool = True) -> torch.Tensor:
    """Sometimes a few NaN, +-inf or (with ties) many tied values, where the ops' semantics are sharpest."""
    if x.numel() and rng.random() < 0.2:
        flat = x.view(-1)
        for _ in range(rng.randint(1, 3)):
            flat[rng.randrange(flat.numel())] = rng.choice([float("nan"), float("inf"), float("-inf")])
    if ties and x.numel() and rng.random() < 0.2:
        x.copy_(x.round())  # many ties
    return x


def max_pool_case(rng: random.Random):
    """(x, kwargs) that native's max_pool2d accepts, or None when the draw is out of its domain."""
    kernel = (rng.randint(1, 4), rng.randint(1, 4))
    kwargs = dict(
        kernel_size=kernel if rng.random() < 0.5 else kernel[0],
        stride=rng.choice([None, rng.randint(1, 3), (rng.randint(1, 3), rng.randint(1, 3))]),
        padding=(rng.randint(0, kernel[0] // 2), rng.randint(0, kernel[1] // 2)),
        dilation=(rng.randint(1, 3), rng.randint(1, 2)),
        ceil_mode=rng.random() < 0.5,
    )
    if not isinstance(kwargs["kernel_size"], tuple):
        kwargs["padding"] = (kwargs["padding"][0], min(kwargs["padding"][1], kernel[0] // 2))
    shape = (rng.randint(0, 3), rng.randint(1, 5), rng.randint(1, 9), rng.randint(1, 9))
    if rng.random() < 0.2:
        shape = shape[1:]  # unbatched
    dtype = rng.choice([torch.float32, torch.float64])
    x = with_specials(rng, randn(rng, shape, dtype))
    return random_layout(rng, x), kwargs


def lrn_case(rng: random.Random):
    dims = rng.choice([3, 4, 4, 5])
    shape = [rng.randint(0, 3), rng.randint(1, 9)] + [rng.randint(1, 5) for _ in range(dims - 2)]
    dtype = rng.choice([torch.float32, torch.float64])
    x = with_specials(rng, randn(rng, shape, dtype) * rng.choice([0.1, 1.0, 10.0]))
    kwargs = dict(
        size=rng.randint(1, 7),
        alpha=rng.choice([1e-4, 1e-2, 0.5]),
        beta=rng.choice([0.5, 0.75, 1.0, 2.0, 0.3]),
        k=rng.choice([0.5, 1.0, 2.0]),  # k > 0: a zero denominator is 0/0 on both sides, not a comparison
    )
    return random_layout(rng, x), kwargs


@dataclass
class BlockCase:
    config: dict
    x: torch.Tensor
    block_training: bool
    bn_training: bool


def conv_bn_relu_case(rng: random.Random) -> BlockCase:
    groups = rng.choice([1, 1, 2])
    in_channels, out_channels = groups * rng.randint(1, 3), groups * rng.randint(1, 3)
    kernel = rng.randint(1, 3)
    config = dict(
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel,
        stride=rng.randint(1, 2),
        padding=rng.randint(0, 1),
        dilation=rng.randint(1, 2),
        groups=groups,
        bias=rng.random() < 0.3,
        momentum=rng.choice([0.1, 0.5, None]),
        affine=rng.random() < 0.8,
        track_running_stats=rng.random() < 0.85,
    )
    reach = config["dilation"] * (kernel - 1) + 1 - 2 * config["padding"]
    batch = rng.choice([0, 1, 2, 4])
    size = (max(1, reach) + rng.randint(1, 5), max(1, reach) + rng.randint(1, 5))
    # No ties: integer inputs put values exactly at their channel's mean, where the ReLU's kink makes
    # either side's last rounding decide the gradient (the exact answer is the kink itself).
    x = randn(rng, (batch, in_channels, *size), rng.choice([torch.float32, torch.float64]))
    x = with_specials(rng, x, ties=False)
    block_training = rng.random() < 0.7
    bn_training = block_training if rng.random() < 0.8 else not block_training
    return BlockCase(config, random_layout(rng, x), block_training, bn_training)


# ---- invalid cases -----------------------------------------------------------------------------


@dataclass
class Invalid:
    kind: str  # what is wrong; a key of cnnrepro.ops.differences where native accepts it
    argument: str  # a word our message must contain
    ours: Callable[[], object]
    native: Callable[[], object] | None  # the same input to native, where native has such an op


def _pool_native(x, *args, **kwargs):
    return F.max_pool2d(x, *args, **kwargs, return_indices=True)


def invalid_max_pool(rng: random.Random) -> Invalid:
    x = torch.randn(2, 3, 6, 7)
    bad = rng.choice([0, -1, -3])
    options = [
        ("rank", "input", (torch.randn(*[4] * rng.choice([1, 2, 5])), 2), {}),
        (
            "integer_dtype",
            "dtype",
            (torch.ones(1, 2, 4, 4, dtype=rng.choice([torch.int64, torch.int32])), 2),
            {},
        ),
        ("kernel_size_not_positive", "kernel_size", (x, bad), {}),
        ("stride_not_positive", "stride", (x, 2, bad), {}),
        ("dilation_not_positive", "dilation", (x, 2), dict(dilation=bad)),
        ("padding_negative", "padding", (x, 3), dict(padding=-rng.randint(1, 3))),
        ("padding_over_half_kernel", "padding", (x, 2), dict(padding=rng.randint(2, 5))),
        ("output_empty", "output", (torch.randn(1, 1, 2, 2), rng.randint(3, 6)), {}),
        (
            "empty_channels_or_plane",
            "non-empty",
            (torch.randn(1, *rng.choice([(0, 4, 4), (2, 0, 4), (2, 4, 0)])), 1),
            {},
        ),
        ("kernel_size_not_an_int", "kernel_size", (x, rng.choice([2.5, "2", object(), (2, 2, 2), ()])), {}),
        ("padding_not_an_int", "padding", (x, 2), dict(padding=rng.choice([0.5, (1, 1, 1), None]))),
    ]
    kind, word, args, kwargs = rng.choice(options)
    return Invalid(
        kind, word, lambda: ops.max_pool2d_with_argmax(*args, **kwargs), lambda: _pool_native(*args, **kwargs)
    )


def invalid_max_pool_backward(rng: random.Random) -> Invalid:
    x = torch.randn(2, 3, 6, 6)
    values, indices = ops.max_pool2d_with_argmax(x, 2)
    options = [
        ("indices_dtype", "indices", dict(indices=indices.to(rng.choice([torch.int32, torch.float32])))),
        ("grad_output_shape", "grad_output", dict(grad_output=torch.randn(2, 3, 4, 3))),
        ("input_size_rank", "input_size", dict(input_size=(3, 6, 6))),
        ("input_size_not_pooled", "pooled size", dict(input_size=(2, 3, 9, 9))),
        ("indices_device", "indices", dict(indices=indices.to("meta"))),
    ]
    kind, word, change = rng.choice(options)
    args = (
        dict(grad_output=torch.randn_like(values), indices=indices, input_size=x.shape, kernel_size=2)
        | change
    )
    return Invalid(kind, word, lambda: ops.max_pool2d_with_argmax_backward(**args), None)


def invalid_lrn(rng: random.Random) -> Invalid:
    x = torch.randn(2, 5, 4, 4)
    nonfinite = rng.choice([float("nan"), float("inf"), -float("inf")])
    options = [
        ("rank", "input", dict(x=torch.randn(*[5] * rng.choice([1, 2])))),
        ("integer_dtype", "dtype", dict(x=torch.ones(2, 5, 4, dtype=rng.choice([torch.int64, torch.int32])))),
        ("size_not_positive", "size", dict(size=rng.choice([0, -1, -4]))),
        ("size_not_an_int", "size", dict(size=rng.choice([2.5, "3", None]))),
        ("alpha_negative_or_non_finite", "alpha", dict(alpha=rng.choice([-1e-4, -1.0, nonfinite]))),
        ("beta_non_finite", "beta", dict(beta=nonfinite)),
        ("k_negative_or_non_finite", "k", dict(k=rng.choice([-1.0, -0.5, nonfinite]))),
    ]
    kind, word, change = rng.choice(options)
    args = dict(x=x, size=3, alpha=1e-4, beta=0.75, k=1.0) | change
    return Invalid(kind, word, lambda: ops.lrn(**args), lambda: F.local_response_norm(*args.values()))


def invalid_lrn_backward(rng: random.Random) -> Invalid:
    x = torch.randn(2, 5, 4, 4)
    options = [
        ("grad_output_shape", "shape", dict(grad_output=torch.randn(2, 5, 4, 3))),
        ("grad_output_dtype", "dtype", dict(grad_output=torch.randn(2, 5, 4, 4).double())),
        ("size_not_positive", "size", dict(size=rng.choice([0, -2]))),
        ("grad_output_device", "grad_output", dict(grad_output=torch.randn(2, 5, 4, 4, device="meta"))),
    ]
    kind, word, change = rng.choice(options)
    args = dict(grad_output=torch.randn_like(x), x=x, size=3, alpha=1e-4, beta=0.75, k=1.0) | change
    return Invalid(kind, word, lambda: ops.lrn_backward(**args), None)


def block_args(channels=4, in_channels=3, **overrides) -> dict:
    """Valid ops.conv_bn_relu arguments (a 3x3 convolution of a 2x3x6x6 input, eval mode), some replaced."""
    args = dict(
        x=torch.randn(2, in_channels, 6, 6),
        weight=torch.randn(channels, in_channels, 3, 3),
        bias=None,
        bn_weight=torch.ones(channels),
        bn_bias=torch.zeros(channels),
        running_mean=torch.zeros(channels),
        running_var=torch.ones(channels),
        training=False,
        momentum=0.1,
        eps=1e-5,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
    )
    return args | overrides


def backward_args(**overrides) -> dict:
    """Valid arguments of the training op's backward (block_args' convolution), some replaced."""
    args = dict(
        grad_output=torch.randn(2, 4, 4, 4),
        input=torch.randn(2, 3, 6, 6),
        weight=torch.randn(4, 3, 3, 3),
        conv_out=torch.randn(2, 4, 4, 4),
        mean=torch.zeros(4),
        var=torch.ones(4),
        bn_weight=None,
        bn_bias=None,
        stride=[1, 1],
        padding=[0, 0],
        dilation=[1, 1],
        groups=1,
        eps=1e-5,
        output_mask=[True, True, True],
    )
    return args | overrides


def _block_call(args):
    return ops.conv_bn_relu(**args)


def _block_native(args):
    z = F.conv2d(
        args["x"],
        args["weight"],
        args["bias"],
        args["stride"],
        args["padding"],
        args["dilation"],
        args["groups"],
    )
    y = F.batch_norm(
        z,
        args["running_mean"],
        args["running_var"],
        args["bn_weight"],
        args["bn_bias"],
        args["training"],
        args["momentum"],
        args["eps"],
    )
    return y.relu()


def invalid_conv_bn_relu(rng: random.Random) -> Invalid:
    training = rng.random() < 0.5
    c = 4
    per_channel = rng.choice(["bn_weight", "bn_bias", "running_mean", "running_var"])
    options = [
        ("rank", "4-D input", dict(x=torch.randn(*[3] * rng.choice([2, 3, 5])))),
        ("weight_rank", "weight", dict(weight=torch.randn(c, 3, 3))),
        ("input_channels", "input channels", dict(x=torch.randn(2, 5, 6, 6))),
        ("groups_do_not_divide", "groups", dict(groups=rng.choice([3, 5]))),
        ("per_channel_size", per_channel, {per_channel: torch.ones(rng.choice([1, 3, 5]))}),
        ("per_channel_rank", per_channel, {per_channel: torch.ones(c, 1)}),
        ("per_channel_device", per_channel, {per_channel: torch.ones(c, device="meta")}),
        ("weight_device", "weight", dict(weight=torch.randn(c, 3, 3, 3, device="meta"))),
        (
            "groups_do_not_divide_out_channels",
            "groups",
            dict(x=torch.randn(2, 4, 6, 6), weight=torch.randn(c + 1, 2, 3, 3), groups=2)
            | {name: torch.ones(c + 1) for name in ("bn_weight", "bn_bias", "running_mean", "running_var")},
        ),
        ("running_stats_half_given", "running_", {rng.choice(["running_mean", "running_var"]): None}),
        ("weight_dtype", "dtype", dict(weight=torch.randn(c, 3, 3, 3).double())),
        ("running_stats_dtype", "running_mean", dict(running_mean=torch.zeros(c).double())),
        (
            "integer_dtype",
            "dtype",
            dict(
                x=torch.ones(2, 3, 6, 6, dtype=torch.int64), weight=torch.ones(c, 3, 3, 3, dtype=torch.int64)
            ),
        ),
        ("stride_not_positive", "stride", dict(stride=rng.choice([0, -1]))),
        ("padding_negative", "padding", dict(padding=-1)),
        ("stride_not_an_int", "stride", dict(stride=rng.choice([1.5, "1", (1, 1, 1)]))),
        ("groups_not_an_int", "groups", dict(groups=rng.choice([1.0, "1", None]))),
        ("eps_non_positive" + ("" if training else "_in_eval"), "eps", dict(eps=rng.choice([0.0, -1e-5]))),
    ]
    if training:
        options.append(("one_value_per_channel", "value per channel", dict(x=torch.randn(1, 3, 3, 3))))
    kind, word, change = rng.choice(options)
    args = block_args(training=training) | change
    return Invalid(kind, word, lambda: _block_call(args), lambda: _block_native(args))


def invalid_conv_bn_relu_backward(rng: random.Random) -> Invalid:
    options = [
        ("mean_size", "mean", dict(mean=torch.zeros(rng.choice([1, 3, 5])))),
        ("var_dtype", "var", dict(var=torch.ones(4).double())),
        ("conv_out_shape", "conv_out", dict(conv_out=torch.randn(2, 3, 4, 4))),
        ("grad_output_shape", "grad_output", dict(grad_output=torch.randn(2, 4, 3, 4))),
        ("bn_weight_size", "bn_weight", dict(bn_weight=torch.ones(2))),
        ("mean_device", "mean", dict(mean=torch.zeros(4, device="meta"))),
        ("grad_output_device", "grad_output", dict(grad_output=torch.randn(2, 4, 4, 4, device="meta"))),
    ]
    kind, word, change = rng.choice(options)
    args = backward_args(**change)
    return Invalid(kind, word, lambda: torch.ops.cnnrepro.conv_bn_relu_train_backward(**args), None)


INVALID = {
    "max_pool2d": [invalid_max_pool, invalid_max_pool_backward],
    "lrn": [invalid_lrn, invalid_lrn_backward],
    "conv_bn_relu": [invalid_conv_bn_relu, invalid_conv_bn_relu_backward],
}


def outcome(call) -> str:
    """'accepted', or the exception's type and message."""
    try:
        call()
    except Exception as error:  # any Python exception is a clean refusal; a crash never gets here
        return f"{type(error).__name__}: {error}"
    return "accepted"


def run_invalid(op: str, seed: int = 0, count: int = INVALID_PER_OP) -> None:
    rng = random.Random(seed)
    for i in range(count):
        case = rng.choice(INVALID[op])(rng)
        print(json.dumps({"case": i, "kind": case.kind, "argument": case.argument}), flush=True)
        ours = outcome(case.ours)
        native = outcome(case.native) if case.native is not None else None
        print(json.dumps({"case": i, "ours": ours, "native": native}), flush=True)


if __name__ == "__main__":
    run_invalid(sys.argv[1], int(sys.argv[2]))
