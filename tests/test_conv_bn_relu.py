"""Fused conv + BatchNorm + ReLU: equal to nn.Sequential(Conv2d, BatchNorm2d, ReLU) in training and
eval, gradients and running statistics included; state_dicts interchangeable."""

import copy
import itertools
import subprocess
import sys

import pytest
import torch
from conformance_cases import backward_args, block_args

from cnnrepro import nn, ops
from cnnrepro.ops import reference

# float32: our batch statistics are sums in double and a fused normalize, native's a different order.
TOL = dict(rtol=1e-4, atol=1e-5)


def assert_close_at_scale(actual, expected, name):
    """Close relative to the tensor's largest entry: BatchNorm makes some gradients cancel to ~0,
    and there both sides are rounding noise at the scale of the others."""
    atol = TOL["atol"] * max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=TOL["rtol"], atol=atol, msg=lambda m: f"{name}: {m}")


def pair_of_blocks(device, dtype=torch.float32, **kwargs):
    """A fused block and the unfused Sequential with the same weights."""
    torch.manual_seed(0)
    fused = nn.ConvBNReLU2d(**kwargs).to(device, dtype)
    if fused.bn.affine:
        with torch.no_grad():  # non-trivial BatchNorm parameters
            fused.bn.weight.uniform_(0.5, 1.5)
            fused.bn.bias.uniform_(-0.5, 0.5)
    unfused = copy.deepcopy(fused)
    unfused.backend = "native"
    return fused, unfused


def check_train_step(fused, unfused, x):
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = fused(x1), unfused(x2)
    torch.testing.assert_close(y1, y2, **TOL)
    grad = torch.randn_like(y1)
    y1.backward(grad)
    y2.backward(grad)
    assert_close_at_scale(x1.grad, x2.grad, "grad of the input")
    for (name, p1), (_, p2) in zip(fused.named_parameters(), unfused.named_parameters(), strict=True):
        if name == "0.bias" and fused.training:
            # BatchNorm subtracts the batch mean: the conv bias's true gradient is 0, both are rounding noise.
            assert p1.grad.abs().max() < 1e-3 and p2.grad.abs().max() < 1e-3
            continue
        assert_close_at_scale(p1.grad, p2.grad, f"grad of {name}")
    for (name, b1), (_, b2) in zip(fused.named_buffers(), unfused.named_buffers(), strict=True):
        assert_close_at_scale(b1.float(), b2.float(), f"buffer {name}")


SWEEP = list(
    itertools.product(
        [1, 3, 5, 7],  # kernel
        [1, 2],  # stride
        [1, 4],  # groups
        [False, True],  # bias
    )
)


@pytest.mark.parametrize("kernel, stride, groups, bias", SWEEP)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_training_step_matches_unfused(device, kernel, stride, groups, bias, layout):
    fused, unfused = pair_of_blocks(
        device,
        in_channels=8,
        out_channels=8,
        kernel_size=kernel,
        stride=stride,
        padding=kernel // 2,
        groups=groups,
        bias=bias,
    )
    # Two or more input channels per group: with one, a 1x1 weight is pure scale, which BatchNorm
    # removes, so its true gradient is 0 and both sides would only be comparing rounding noise.
    x = torch.randn(8, 8, 11, 10, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    check_train_step(fused, unfused, x)


@pytest.mark.parametrize("out_channels", [3, 8, 20])
@pytest.mark.parametrize("size", [(2, 3), (5, 7), (8, 8)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_vector_lanes_and_their_tails(device, out_channels, size, layout):
    """float32 runs eight lanes at a time along planes (contiguous) or across channels (channels-last),
    and the rest element by element: planes narrower than, equal to and wider than eight, channel
    counts below, at and above a multiple of eight."""
    fused, unfused = pair_of_blocks(
        device, in_channels=4, out_channels=out_channels, kernel_size=3, padding=1
    )
    x = torch.randn(6, 4, *size, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    check_train_step(fused, unfused, x)


@pytest.mark.parametrize("training", [True, False])
def test_nan_propagates_as_in_the_sequential(device, training):
    """ReLU keeps NaN (torch.relu does; oneDNN's fused ReLU post-op would turn it into 0). In training
    a NaN reaches its channels' batch statistics and so every output of those channels."""
    fused, unfused = pair_of_blocks(device, in_channels=3, out_channels=4, kernel_size=3, padding=1)
    fused.train(training), unfused.train(training)
    x = torch.randn(2, 3, 6, 6, device=device)
    x[1, 0, 2, 3] = float("nan")
    with torch.no_grad():
        expected = unfused(x)
        assert expected.isnan().any()
        torch.testing.assert_close(fused(x), expected, equal_nan=True, **TOL)


@pytest.mark.parametrize("batch", [1, 8])
def test_batch_sizes_and_dilation(device, batch):
    fused, unfused = pair_of_blocks(
        device, in_channels=3, out_channels=5, kernel_size=3, padding=2, dilation=2
    )
    check_train_step(fused, unfused, torch.randn(batch, 3, 7, 9, device=device))


def test_several_optimizer_steps_then_eval(device):
    fused, unfused = pair_of_blocks(
        device, in_channels=3, out_channels=6, kernel_size=3, padding=1, bias=True
    )
    opt1 = torch.optim.SGD(fused.parameters(), lr=0.1, momentum=0.9)
    opt2 = torch.optim.SGD(unfused.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        x = torch.randn(6, 3, 8, 8, generator=g).to(device)
        for block, opt in ((fused, opt1), (unfused, opt2)):
            opt.zero_grad()
            block(x).square().mean().backward()
            opt.step()
    for (name, t1), (_, t2) in zip(fused.state_dict().items(), unfused.state_dict().items(), strict=True):
        torch.testing.assert_close(t1, t2, rtol=1e-4, atol=1e-5, msg=name)
    assert int(fused.bn.num_batches_tracked) == 5
    fused.eval(), unfused.eval()
    x = torch.randn(4, 3, 8, 8, device=device)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), unfused(x), rtol=1e-4, atol=1e-5)


def test_eval_sees_every_change_even_through_data(device):
    """Nothing is cached: edits through .data (which bump no version counter) count at once."""
    fused, unfused = pair_of_blocks(device, in_channels=3, out_channels=4, kernel_size=3, padding=1)
    fused.eval(), unfused.eval()
    x = torch.randn(2, 3, 6, 6, device=device)
    edits = [
        lambda m: m[0].weight.data.mul_(2),
        lambda m: m[1].running_mean.data.add_(1),
        lambda m: m[1].running_var.data.mul_(3),
        lambda m: m[1].weight.data.neg_(),
        lambda m: m[1].bias.data.add_(0.5),
    ]
    with torch.no_grad():
        fused(x)
        for edit in edits:
            edit(fused), edit(unfused)
            torch.testing.assert_close(fused(x), unfused(x), **TOL)


def test_eval_with_grad_enabled_is_differentiable(device):
    fused, unfused = pair_of_blocks(device, in_channels=3, out_channels=4, kernel_size=3, padding=1)
    fused.eval(), unfused.eval()
    check_train_step(fused, unfused, torch.randn(2, 3, 6, 6, device=device))


@pytest.mark.parametrize("momentum", [None, 0.3])
@pytest.mark.parametrize("affine", [True, False])
def test_momentum_none_and_affine_false(device, momentum, affine):
    fused, unfused = pair_of_blocks(
        device, in_channels=2, out_channels=3, kernel_size=3, momentum=momentum, affine=affine
    )
    for step in range(3):
        check_train_step(fused, unfused, torch.randn(4, 2, 7, 7, device=device) + step)


def test_without_running_stats_uses_batch_stats_in_eval(device):
    fused, unfused = pair_of_blocks(
        device, in_channels=2, out_channels=3, kernel_size=3, track_running_stats=False
    )
    fused.eval(), unfused.eval()
    check_train_step(fused, unfused, torch.randn(4, 2, 7, 7, device=device))


def test_state_dict_is_the_unfused_sequentials():
    fused = nn.ConvBNReLU2d(3, 4, 3, bias=True)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=True), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    assert list(fused.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(fused.state_dict())
    fused.load_state_dict(plain.state_dict())


def test_matches_reference_in_float64(device):
    torch.manual_seed(1)
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64, device=device)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, device=device)
    b, gamma, beta = (torch.randn(6, dtype=torch.float64, device=device) for _ in range(3))
    args = (x, w, b, gamma, beta, [1, 1], [1, 1], [1, 1], 2, 1e-5)
    y, _, mean, var = torch.ops.cnnrepro.conv_bn_relu_train(*args)
    ref_y, ref_mean, ref_var = reference.conv_bn_relu_train(*args)
    torch.testing.assert_close(y, ref_y)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(var, ref_var)


def test_gradcheck_in_float64(device):
    torch.manual_seed(2)
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    b, gamma, beta = (
        torch.randn(4, dtype=torch.float64, device=device, requires_grad=True) for _ in range(3)
    )

    def fused(x, w, b, gamma, beta):
        return ops.conv_bn_relu(x, w, b, gamma, beta, None, None, True, 0.1, 1e-5, 1, 1)

    assert torch.autograd.gradcheck(fused, (x, w, b, gamma, beta))


@pytest.mark.parametrize("bias, affine", [(True, False), (False, True), (True, True)])
def test_gradients_only_for_what_requires_them(device, bias, affine):
    """The C++ autograd maps each gradient to its argument also when optional ones are absent,
    and skips the convolution's input gradient for a first layer (input without requires_grad)."""
    fused, unfused = pair_of_blocks(
        device, in_channels=3, out_channels=4, kernel_size=3, padding=1, bias=bias, affine=affine
    )
    fused.conv.weight.requires_grad_(False)
    unfused.conv.weight.requires_grad_(False)
    x = torch.randn(2, 3, 7, 7, device=device)
    grad = torch.randn(2, 4, 7, 7, device=device)
    fused(x).backward(grad)
    unfused(x).backward(grad)
    assert fused.conv.weight.grad is None and x.grad is None
    for (name, p1), (_, p2) in zip(fused.named_parameters(), unfused.named_parameters(), strict=True):
        if p2.requires_grad and name != "0.bias":  # the conv bias's true gradient is 0 (see above)
            assert_close_at_scale(p1.grad, p2.grad, f"grad of {name}")


def test_torch_compile_traces_forward_and_backward(device):
    fused, unfused = pair_of_blocks(device, in_channels=3, out_channels=4, kernel_size=3, padding=1)
    compiled = torch.compile(fused, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 6, 6, device=device)
    compiled(x).square().sum().backward()
    unfused(x).square().sum().backward()
    for (name, p1), (_, p2) in zip(fused.named_parameters(), unfused.named_parameters(), strict=True):
        assert_close_at_scale(p1.grad, p2.grad, f"grad of {name}")
    for (name, b1), (_, b2) in zip(fused.named_buffers(), unfused.named_buffers(), strict=True):
        assert_close_at_scale(b1.float(), b2.float(), f"buffer {name}")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(device, layout):
    torch.manual_seed(3)
    x = torch.randn(4, 2, 6, 6, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w, gamma = torch.randn(3, 2, 3, 3, device=device), torch.rand(3, device=device) + 0.5
    beta = torch.randn(3, device=device)
    args = (x.requires_grad_(), w.requires_grad_(), None, gamma.requires_grad_(), beta.requires_grad_())
    conv = ([1, 1], [1, 1], [1, 1], 1, 1e-5)
    torch.library.opcheck(torch.ops.cnnrepro.conv_bn_relu_train.default, (*args, *conv))
    _, z, mean, var = torch.ops.cnnrepro.conv_bn_relu_train(
        *(a.detach() if a is not None else a for a in args), *conv
    )
    backward_args = (torch.randn_like(z), x.detach(), w.detach(), z, mean, var, gamma.detach(), beta.detach())
    for mask in ([True, True, False], [False, True, True]):
        torch.library.opcheck(
            torch.ops.cnnrepro.conv_bn_relu_train_backward.default, (*backward_args, *conv, mask)
        )


def test_deterministic_bits(device):
    fused, _ = pair_of_blocks(device, in_channels=8, out_channels=16, kernel_size=3, padding=1)
    x = torch.randn(8, 8, 12, 12, device=device).contiguous(memory_format=torch.channels_last)
    results = []
    for _ in range(2):
        fused.zero_grad()
        y = fused(x)
        y.square().sum().backward()
        results.append((y.detach(), fused.conv.weight.grad.clone(), fused.bn.weight.grad.clone()))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def eval_call(**overrides):
    """ops.conv_bn_relu on valid arguments (eval mode), with some replaced."""
    return ops.conv_bn_relu(**block_args(**overrides))


def backward_call(**overrides):
    """The training op's backward on valid arguments, with some replaced."""
    return torch.ops.cnnrepro.conv_bn_relu_train_backward(**backward_args(**overrides))


def functional(x, weight, bn_weight=None, training=True, **conv):
    """ops.conv_bn_relu with no bias, no BatchNorm bias, no running stats."""
    return ops.conv_bn_relu(x, weight, None, bn_weight, None, None, None, training, 0.1, 1e-5, **conv)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: nn.ConvBNReLU2d(3, 4, 3)(torch.randn(3, 5, 5)), "4-D input"),
        (lambda: nn.ConvBNReLU2d(3, 4, 3)(torch.randn(2, 5, 5, 5)), "input channels"),
        (lambda: nn.ConvBNReLU2d(3, 4, 3)(torch.randn(1, 3, 3, 3)), "more than 1 value per channel"),
        (
            lambda: functional(torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3), torch.ones(5)),
            r"bn_weight has 5 elements, expected 4 \(out_channels\)",
        ),
        (lambda: functional(torch.randn(2, 4, 5, 5), torch.randn(6, 2, 3, 3), groups=3), "groups"),
        (lambda: functional(torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3).double()), "dtype"),
        (
            lambda: functional(torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3), training=False),
            "running_mean",
        ),
        (lambda: nn.ConvBNReLU2d(3, 4, 3, backend="fast"), "backend"),
        (lambda: nn.ConvBNReLU2d(3, 4, 3).eval()(torch.randn(3, 5, 5)), "4-D input"),
        (
            lambda: eval_call(running_mean=torch.zeros(1)),
            r"running_mean has 1 elements, expected 4 \(out_channels\)",
        ),
        (lambda: eval_call(running_var=torch.ones(4, 1)), "running_var must be 1-D with 4 elements"),
        (lambda: eval_call(bn_weight=torch.ones(1)), r"bn_weight has 1 elements, expected 4"),
        (lambda: eval_call(bn_bias=torch.ones(1)), r"bn_bias has 1 elements, expected 4"),
        (lambda: eval_call(weight=torch.randn(4, 3, 3)), "4-D weight"),
        (lambda: eval_call(running_mean=torch.zeros(4).double()), "running_mean has dtype torch.float64"),
        (lambda: eval_call(training=True, running_var=None), "running_mean is given but running_var is None"),
        (lambda: eval_call(stride=object()), "stride must be an int or a tuple of one or two ints"),
        (lambda: eval_call(groups=1.5), "groups must be an int"),
        (lambda: backward_call(mean=torch.zeros(3)), r"mean has 3 elements, expected 4 \(out_channels\)"),
        (
            lambda: backward_call(var=torch.zeros(4).double()),
            "var has dtype Double but input has dtype Float",
        ),
        (
            lambda: backward_call(conv_out=torch.zeros(2, 3, 3, 3)),
            "conv_out must be the convolution's output",
        ),
    ],
)
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises((RuntimeError, ValueError), match=message):
        call()


def check_same_as_unfused(fused, unfused, x, rtol=TOL["rtol"], atol=TOL["atol"]):
    """Output, every gradient and every buffer equal to the Sequential's (NaN where it has NaN)."""
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = fused(x1), unfused(x2)
    torch.testing.assert_close(y1, y2, rtol=rtol, atol=atol, equal_nan=True)
    if y2.requires_grad:
        grad = torch.ones_like(y2)
        y1.backward(grad), y2.backward(grad)
        torch.testing.assert_close(x1.grad, x2.grad, rtol=rtol, atol=atol, equal_nan=True)
        for (name, p1), (_, p2) in zip(fused.named_parameters(), unfused.named_parameters(), strict=True):
            assert (p1.grad is None) == (p2.grad is None), name
            if p2.grad is not None:
                torch.testing.assert_close(p1.grad, p2.grad, rtol=rtol, atol=atol, equal_nan=True, msg=name)
    for (name, b1), (_, b2) in zip(fused.named_buffers(), unfused.named_buffers(), strict=True):
        torch.testing.assert_close(b1, b2, rtol=rtol, atol=atol, equal_nan=True, msg=name)


@pytest.mark.parametrize("block_mode, bn_mode", [(True, False), (False, True)])
def test_batchnorms_own_mode_decides(device, block_mode, bn_mode):
    """m.train(); m[1].eval() is the fine-tuning idiom (frozen statistics, gradients still flow);
    m.eval(); m[1].train() the reverse. BatchNorm's own flag picks the statistics, as in the Sequential."""
    fused, unfused = pair_of_blocks(device, in_channels=3, out_channels=4, kernel_size=3, padding=1)
    with torch.no_grad():
        fused[1].running_mean.uniform_(-0.5, 0.5)
        fused[1].running_var.uniform_(0.5, 2.0)
    unfused.load_state_dict(fused.state_dict())
    for block in (fused, unfused):
        block.train(block_mode)
        block[1].train(bn_mode)
    for _ in range(2):
        check_same_as_unfused(fused, unfused, torch.randn(4, 3, 6, 6, device=device))


@pytest.mark.parametrize("training", [True, False])
def test_untracked_running_stats_follow_batchnorm(device, training):
    """track_running_stats switched off after construction: in training the buffers are left alone,
    in eval they are used (nn.BatchNorm2d's rules)."""
    fused, unfused = pair_of_blocks(device, in_channels=3, out_channels=4, kernel_size=3)
    for block in (fused, unfused):
        block.train(training)
        block[1].track_running_stats = False
    check_same_as_unfused(fused, unfused, torch.randn(4, 3, 6, 6, device=device))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_empty_batch(device, training, layout):
    """PyTorch's test_BatchNorm_empty: an empty batch gives an empty output and zero gradients, and
    leaves the running statistics alone (the batch is still counted)."""
    fused, unfused = pair_of_blocks(device, in_channels=3, out_channels=3, kernel_size=1)
    fused.train(training), unfused.train(training)
    x = torch.randn(0, 3, 2, 2, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    check_same_as_unfused(fused, unfused, x)
    assert int(fused.bn.num_batches_tracked) == int(unfused.bn.num_batches_tracked)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_non_finite_values_propagate_as_native(device, value, training, layout):
    """One NaN or inf in x: outputs, gradients (ReLU's gradient passes NaN, as threshold_backward)
    and running statistics as the Sequential's."""
    fused, unfused = pair_of_blocks(device, in_channels=3, out_channels=4, kernel_size=3, padding=1)
    fused.train(training), unfused.train(training)
    x = torch.randn(2, 3, 6, 6, device=device)
    x[1, 0, 2, 3] = value
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    check_same_as_unfused(fused, unfused, x)


@pytest.mark.parametrize("first", [float("inf"), float("nan")])
def test_non_finite_first_value_of_a_channel(device, first):
    """The statistics' shift is each channel's first value; a non-finite one must not leak NaN into
    channels where native keeps inf (and NaN stays NaN)."""
    fused, unfused = pair_of_blocks(device, in_channels=1, out_channels=2, kernel_size=1)
    x = torch.randn(3, 1, 4, 4, device=device)
    x[0, 0, 0, 0] = first
    check_same_as_unfused(fused, unfused, x)


@pytest.mark.parametrize(
    "dtype, offsets", [(torch.float64, [0.0, 1e3, 1e6, 1e9]), (torch.float32, [0.0, 1e3])]
)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_statistics_far_from_zero(device, dtype, offsets, layout):
    """An identity 1x1 convolution of offset + N(0, 1): the batch variance must not cancel away
    (E[z^2] - mean^2 erred by 3e-10 at 1e3 in float64). Against native, within what the dtype holds
    at that offset: z * scale + shift keeps z to one rounding at the offset's scale, and sums over
    the batch add one such rounding per element. The conv weight's gradient is left out: it is
    offset * sum(dz), rounding noise times the offset on both sides."""
    eps = torch.finfo(dtype).eps
    for offset in offsets:
        fused, unfused = pair_of_blocks(device, dtype, in_channels=3, out_channels=3, kernel_size=1)
        with torch.no_grad():
            for block in (fused, unfused):
                block[0].weight.copy_(torch.eye(3, dtype=dtype).view(3, 3, 1, 1))
        x = (offset + torch.randn(8, 3, 9, 7, generator=torch.Generator().manual_seed(5), dtype=dtype)).to(
            device
        )
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = fused(x1), unfused(x2)
        y1.sum().backward(), y2.sum().backward()
        scale = max(1.0, offset)
        elementwise = dict(rtol=64 * eps, atol=64 * eps * scale)
        summed = dict(rtol=64 * eps, atol=16 * x[:, 0].numel() * eps * scale)  # a rounding per element
        torch.testing.assert_close(y1, y2, **elementwise)
        torch.testing.assert_close(x1.grad, x2.grad, **elementwise)
        torch.testing.assert_close(fused.bn.weight.grad, unfused.bn.weight.grad, **summed)
        torch.testing.assert_close(fused.bn.bias.grad, unfused.bn.bias.grad, **summed)
        torch.testing.assert_close(fused.bn.running_mean, unfused.bn.running_mean, **elementwise)
        torch.testing.assert_close(fused.bn.running_var, unfused.bn.running_var, rtol=1e3 * eps, atol=0)


def test_hooks_on_the_children_run(device):
    """A child with a hook runs the Sequential itself, so every hook sees what it expects."""
    fused, unfused = pair_of_blocks(device, in_channels=3, out_channels=4, kernel_size=3, padding=1)
    seen = {"fused": [], "unfused": []}
    for key, block in (("fused", fused), ("unfused", unfused)):
        block[0].register_forward_hook(lambda m, i, o, key=key: seen[key].append(("conv", o.shape)))
        block[1].register_forward_pre_hook(lambda m, i, key=key: (i[0] * 2,))
        block[2].register_full_backward_hook(
            lambda m, gi, go, key=key: seen[key].append(("relu", go[0].shape))
        )
    check_same_as_unfused(fused, unfused, torch.randn(2, 3, 6, 6, device=device))
    assert seen["fused"] == seen["unfused"] and len(seen["fused"]) == 2


@pytest.mark.parametrize("change", ["padding_mode", "same", "valid", "replaced_relu"])
def test_changed_children_are_honoured(device, change):
    fused, unfused = pair_of_blocks(device, in_channels=3, out_channels=4, kernel_size=3, padding=1)
    for block in (fused, unfused):
        if change == "padding_mode":
            block[0].padding_mode = "reflect"
            block[0]._reversed_padding_repeated_twice = [1, 1, 1, 1]
        elif change == "replaced_relu":
            block[2] = torch.nn.LeakyReLU(0.1)
        else:
            block[0].padding = change
    check_same_as_unfused(fused, unfused, torch.randn(2, 3, 6, 6, device=device))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_argument_forms_native_accepts(device, layout):
    """numpy integers, 0-d tensors and 1-tuples as stride/padding/dilation, as torch.nn.Conv2d takes them."""
    import numpy as np

    forms = [
        dict(stride=np.int64(2), padding=(1,), dilation=1),
        dict(stride=(1,), padding=np.int32(2), dilation=(np.int64(2),)),
    ]
    for form in forms:
        fused, unfused = pair_of_blocks(device, in_channels=3, out_channels=4, kernel_size=3, **form)
        x = torch.randn(2, 3, 9, 8, device=device)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        check_same_as_unfused(fused, unfused, x)
        fused.eval(), unfused.eval()
        check_same_as_unfused(fused, unfused, x)


@pytest.mark.parametrize("training", [True, False])
def test_meta_tensors_give_native_shapes(training):
    """Meta tensors (shape inference, as model construction on the meta device uses) come out as native's."""
    fused = nn.ConvBNReLU2d(3, 4, 3, stride=2, padding=1, device="meta").train(training)
    unfused = copy.deepcopy(fused)
    unfused.backend = "native"
    plain = torch.empty(2, 3, 9, 9, device="meta")
    for x in (plain, plain.contiguous(memory_format=torch.channels_last)):
        y, expected = fused(x), unfused(x)
        assert y.device.type == "meta" and y.shape == expected.shape


def test_eval_runs_where_the_sequential_runs():
    """Channels-last 2x3x3x1, 1x1 kernel, stride 2, padding 1, dilation 2: oneDNN's convolution with a
    bias crashes the interpreter on this geometry, and the old eval path folded BatchNorm into such a
    bias. Run in a subprocess, so a crash fails this test instead of ending the test run."""
    script = """
import torch, copy
from cnnrepro import nn
fused = nn.ConvBNReLU2d(3, 2, 1, stride=2, padding=1, dilation=2).eval()
unfused = copy.deepcopy(fused)
unfused.backend = "native"
x = torch.randn(2, 3, 3, 1).contiguous(memory_format=torch.channels_last)
with torch.no_grad():
    torch.testing.assert_close(fused(x), unfused(x))
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", (run.returncode, run.stderr[-2000:])
