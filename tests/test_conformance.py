"""Conformance with PyTorch's native ops: PyTorch's own test cases for pooling, LRN and BatchNorm,
translated to our ops (the upstream test's name beside each), and a seeded fuzz of valid inputs
(compared with native) and invalid ones (refused with a message naming the argument, checked in a
subprocess so that a crash fails the test rather than the test run). Where we deliberately refuse
what native accepts, cnnrepro.ops.differences says so and why."""

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conformance_cases import (
    INVALID,
    INVALID_PER_OP,
    VALID_PER_OP,
    block_args,
    conv_bn_relu_case,
    lrn_case,
    max_pool_case,
)

import cnnrepro
from cnnrepro import ops
from cnnrepro.ops.differences import DIFFERENCES

TOL32 = dict(rtol=1e-4, atol=1e-5)


def identity_blocks(channels, dtype=torch.float32, **bn_kwargs):
    """A ConvBNReLU2d whose convolution is the identity, so it computes relu(batch_norm(x)), and
    the native Sequential with the same state: BatchNorm's own test cases apply to it."""
    fused = cnnrepro.nn.ConvBNReLU2d(channels, channels, 1, dtype=dtype, **bn_kwargs)
    with torch.no_grad():
        fused[0].weight.copy_(torch.eye(channels, dtype=dtype).view(channels, channels, 1, 1))
    unfused = copy.deepcopy(fused)
    unfused.backend = "native"
    return fused, unfused


def run_both(fused, unfused, x, grad=None):
    """Outputs, input gradients and parameter gradients of both blocks on copies of x."""
    results = []
    for block in (fused, unfused):
        block.zero_grad()
        xi = x.detach().clone().requires_grad_()
        y = block(xi)
        y.backward(torch.ones_like(y) if grad is None else grad)
        results.append((y.detach(), xi.grad, [p.grad for p in block.parameters()]))
    return results


def assert_blocks_agree(fused, unfused, x, **tol):
    tol = tol or TOL32
    (y1, g1, p1), (y2, g2, p2) = run_both(fused, unfused, x)
    torch.testing.assert_close(y1, y2, equal_nan=True, **tol)
    torch.testing.assert_close(g1, g2, equal_nan=True, **tol)
    for a, b in zip(p1, p2, strict=True):
        assert (a is None) == (b is None)
        if a is not None:  # BatchNorm cancels some gradients to ~0: compare at the tensor's scale
            scale = max(1.0, b.nan_to_num(0, 0, 0).abs().max().item()) if b.numel() else 1.0
            torch.testing.assert_close(a, b, equal_nan=True, rtol=tol["rtol"], atol=tol["atol"] * scale)
    for (name, a), (_, b) in zip(fused.named_buffers(), unfused.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, equal_nan=True, msg=name, **tol)
    return y1


# ---- test/nn/test_pooling.py -------------------------------------------------------------------


def test_MaxPool2d_indices():  # upstream: TestPoolingNN.test_MaxPool2d_indices (_test_maxpool_indices)
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4).requires_grad_()
    values, indices = cnnrepro.nn.MaxPool2d(2, 2, return_indices=True)(x)
    assert torch.equal(values, torch.tensor([[[[6.0, 8.0], [14.0, 16.0]]]]))
    assert torch.equal(indices, torch.tensor([[[[5, 7], [13, 15]]]]))
    values.backward(torch.ones_like(values))
    expected = torch.zeros(16)
    expected[[5, 7, 13, 15]] = 1
    assert torch.equal(x.grad.view(-1), expected)


@pytest.mark.parametrize("fill", [float("nan"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_max_pool_nan_inf(fill, dtype):  # upstream: TestPoolingNNDeviceType.test_max_pool_nan_inf
    x = torch.full((1, 2, 6, 6), fill, dtype=dtype, requires_grad=True)
    values, indices = ops.max_pool2d_with_argmax(x, 3)
    expected_values, expected_indices = F.max_pool2d(x, 3, return_indices=True)
    torch.testing.assert_close(values, expected_values, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(indices, expected_indices)
    values.sum().backward()  # the backward of an all-NaN / all -inf pooling runs


# upstream: TestPoolingNNDeviceType.test_maxpool_indices_no_batch_dim
def test_maxpool_indices_no_batch_dim():
    x = torch.randn(3, 7, 9)
    unbatched = ops.max_pool2d_with_argmax(x, 3, 2, 1)
    batched = ops.max_pool2d_with_argmax(x.unsqueeze(0), 3, 2, 1)
    assert all(torch.equal(a, b.squeeze(0)) for a, b in zip(unbatched, batched, strict=True))


def test_MaxPool_zero_batch_dim():  # upstream: TestPoolingNNDeviceType.test_MaxPool_zero_batch_dim
    x = torch.randn(0, 16, 50, 32, requires_grad=True)
    values = cnnrepro.nn.MaxPool2d(3, stride=2)(x)
    assert values.shape == F.max_pool2d(x, 3, stride=2).shape
    values.sum().backward()
    assert x.grad.shape == x.shape
    with pytest.raises(RuntimeError, match="non-empty"):
        cnnrepro.nn.MaxPool2d(3, stride=2)(torch.randn(1, 0, 50, 32))


@pytest.mark.parametrize(
    "size, kernel, stride, padding, ceil_mode",
    [
        (5, 3, 2, 1, False),
        (5, 3, 2, 1, True),
        (6, 3, 2, 0, True),
        (7, 2, 3, 1, True),
        (16, 3, 2, 1, True),
    ],
)
def test_pooling_shape(
    size, kernel, stride, padding, ceil_mode
):  # upstream: TestPoolingNN.test_pooling_shape
    x = torch.randn(1, 1, size, size)
    values, _ = ops.max_pool2d_with_argmax(x, kernel, stride, padding, ceil_mode=ceil_mode)
    assert values.shape == F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode).shape


def test_pooling_zero_stride():  # upstream: TestPoolingNNDeviceType.test_pooling_zero_stride
    with pytest.raises(RuntimeError, match="stride must be >= 1"):
        ops.max_pool2d_with_argmax(torch.randn(1, 1, 4, 4), 1, 0)


@pytest.mark.parametrize(
    "n, c, h, w, kernel, stride", [(4, 8, 8, 8, 3, 2), (4, 8, 7, 7, 3, 1), (1, 19, 20, 10, 8, 2)]
)
def test_max_pool2d_nhwc(
    n, c, h, w, kernel, stride
):  # upstream: TestPoolingNNDeviceType.test_max_pool2d_nhwc
    x = torch.randint(1, 10, (n, c, h, w), dtype=torch.float32).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    reference = x.detach().contiguous().requires_grad_()
    values, indices = cnnrepro.nn.MaxPool2d(kernel, stride, return_indices=True)(x)
    ref_values, ref_indices = torch.nn.MaxPool2d(kernel, stride, return_indices=True)(reference)
    assert values.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(values, ref_values) and torch.equal(indices, ref_indices)
    grad = torch.randint(1, 10, values.shape, dtype=torch.float32)
    values.backward(grad), ref_values.backward(grad)
    assert torch.equal(x.grad, reference.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_max_pool_bfloat16_half(dtype):  # upstream: TestPoolingNNDeviceType.test_max_pool_bfloat16_half
    x = torch.randn(3, 5, 9, 9)
    values, indices = ops.max_pool2d_with_argmax(x.to(dtype), 3, 2, 1)
    expected_values, expected_indices = F.max_pool2d(x.to(dtype), 3, 2, 1, return_indices=True)
    assert torch.equal(values, expected_values) and torch.equal(indices, expected_indices)


# ---- common_nn's LocalResponseNorm module tests --------------------------------------------------


@pytest.mark.parametrize(
    "args, shape",
    [
        ((3,), (1, 5, 7)),  # upstream: common_nn LocalResponseNorm_1d
        ((2,), (1, 5, 7, 7)),  # upstream: common_nn LocalResponseNorm_2d_uneven_pad
        ((5, 1e-3, 0.5, 2), (1, 5, 7, 7, 7)),  # upstream: common_nn LocalResponseNorm_3d_custom_params
        ((2,), (0, 5, 24, 24)),  # upstream: TestNNDeviceType.test_LocalResponseNorm_empty
    ],
)
def test_LocalResponseNorm_module_cases(args, shape):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    ours, theirs = cnnrepro.nn.LocalResponseNorm(*args), torch.nn.LocalResponseNorm(*args)
    y = ours(x)
    torch.testing.assert_close(y, theirs(x))
    (grad,) = torch.autograd.grad(y.sum(), x)
    (expected,) = torch.autograd.grad(theirs(x).sum(), x)
    torch.testing.assert_close(grad, expected)
    if x.numel():
        assert torch.autograd.gradcheck(ours, (x,))


# ---- test/test_nn.py's BatchNorm cases, through an identity convolution --------------------------


@pytest.mark.parametrize("training", [True, False])
def test_BatchNorm_empty(training):  # upstream: TestNNDeviceType.test_BatchNorm_empty
    fused, unfused = identity_blocks(3)
    fused.train(training), unfused.train(training)
    y = assert_blocks_agree(fused, unfused, torch.randn(0, 3, 2, 2))
    assert y.shape == (0, 3, 2, 2)
    assert torch.equal(fused.bn.running_mean, torch.zeros(3)) and torch.equal(
        fused.bn.running_var, torch.ones(3)
    )


def test_batchnorm_raises_error_if_less_than_one_value_per_channel():  # upstream: TestNN, same name
    fused, _ = identity_blocks(10)
    with pytest.raises(RuntimeError, match="more than 1 value per channel"):
        fused(torch.randn(1, 10, 1, 1))


@pytest.mark.parametrize("name", ["running_mean", "running_var", "bn_weight", "bn_bias"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("size_change", [-1, 1])
def test_batchnorm_raises_error_if_parameter_is_not_same_size_as_input(name, training, size_change):
    # upstream: TestNN.test_batchnorm_raises_error_if_{running_mean,running_var,weight,bias}
    # _is_not_same_size_as_input
    c = 10
    args = block_args(c, c, x=torch.rand(2, c, 2, 2), weight=torch.eye(c).view(c, c, 1, 1), training=training)
    args[name] = torch.rand(c + size_change)
    with pytest.raises(
        (RuntimeError, ValueError), match=f"{name} has {c + size_change} elements, expected {c}"
    ):
        ops.conv_bn_relu(**args)


def test_batchnorm_buffer_update_when_stats_are_not_tracked():  # upstream: TestNN, same name
    fused, unfused = identity_blocks(10)
    for block in (fused, unfused):
        block[1].track_running_stats = False
    assert_blocks_agree(fused, unfused, torch.randn(4, 10, 3, 3))
    assert torch.equal(fused.bn.running_mean, torch.zeros(10)) and torch.equal(
        fused.bn.running_var, torch.ones(10)
    )
    assert int(fused.bn.num_batches_tracked) == 0


def test_batchnorm_simple_average():  # upstream: TestNNDeviceType.test_batchnorm_simple_average
    fused, unfused = identity_blocks(3, momentum=None)
    batches = [torch.rand(4, 3, 5, 5) for _ in range(2)]
    for _ in range(2):  # twice, with reset_running_stats between: the cumulative average restarts
        for x in batches:
            assert_blocks_agree(fused, unfused, x)
        means = torch.stack([x.mean(dim=(0, 2, 3)) for x in batches]).mean(0)
        torch.testing.assert_close(fused.bn.running_mean, means)
        fused.bn.reset_running_stats(), unfused.bn.reset_running_stats()


def test_batchnorm_update_stats():  # upstream: TestNNDeviceType.test_batchnorm_update_stats
    fused, unfused = identity_blocks(3)
    x = torch.rand(4, 3, 5, 5)
    assert_blocks_agree(fused, unfused, x)
    assert int(fused.bn.num_batches_tracked) == 1
    fused.eval(), unfused.eval()
    before = fused.bn.running_mean.clone()
    assert_blocks_agree(fused, unfused, x)
    assert int(fused.bn.num_batches_tracked) == 1 and torch.equal(fused.bn.running_mean, before)


@pytest.mark.parametrize("track_running_stats", [True, False])
def test_batchnorm_eval(track_running_stats):  # upstream: TestNNDeviceType.test_batchnorm_eval
    fused, unfused = identity_blocks(3, track_running_stats=track_running_stats)
    fused.eval(), unfused.eval()
    x = torch.rand(4, 3, 5, 5)
    first = run_both(fused, unfused, x)
    second = run_both(fused, unfused, x)
    for a, b in zip(first[0][:2], second[0][:2], strict=True):  # eval is a pure function of x
        assert torch.equal(a, b)
    assert_blocks_agree(fused, unfused, x)


def test_batchnorm_nhwc_cpu():  # upstream: TestNN.test_batchnorm_nhwc_cpu
    fused, unfused = identity_blocks(8)
    x = torch.randn(4, 8, 5, 6)
    y = assert_blocks_agree(fused, unfused, x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    fused_contiguous, unfused_contiguous = identity_blocks(8)
    torch.testing.assert_close(y, assert_blocks_agree(fused_contiguous, unfused_contiguous, x), **TOL32)


def test_batchnorm_non_contig_cpu():  # upstream: TestNN.test_batchnorm_non_contig_cpu
    fused, unfused = identity_blocks(4)
    x = torch.randn(2, 4, 10, 3)[:, :, ::2]  # (2, 4, 5, 3), neither layout
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    assert_blocks_agree(fused, unfused, x)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_grad(affine, training):  # upstream: TestNNDeviceType.test_batchnorm_grad
    fused, _ = identity_blocks(3, dtype=torch.float64, affine=affine)
    fused.train(training)
    with torch.no_grad():
        fused.bn.running_mean.uniform_(-1, 1)
        fused.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    # Training updates the running statistics on every call, but uses the batch's: a pure function of x.
    assert torch.autograd.gradcheck(fused, (x,))


# ---- gaps an independent conformance run found ---------------------------------------------------


@pytest.mark.parametrize("name", ["weight", "bias", "bn_weight", "bn_bias", "running_mean", "running_var"])
@pytest.mark.parametrize("training", [True, False])
def test_a_tensor_on_another_device_is_refused_naming_it_and_both_devices(name, training):
    """A ``meta`` tensor beside CPU ones sends the call to the fake kernels, which used to return an
    uninitialised result; native raises, and so do we."""
    args = block_args(training=training, bias=torch.zeros(4))
    args[name] = args[name].to("meta")
    with pytest.raises(RuntimeError, match=f"{name} is on meta but input is on cpu"):
        ops.conv_bn_relu(**args)
    if name in ("running_mean", "running_var") and training:
        return  # the training op takes no running statistics
    op = torch.ops.cnnrepro.conv_bn_relu_train if training else torch.ops.cnnrepro.conv_bn_relu_eval
    direct = [args[n] for n in ("x", "weight", "bias", "bn_weight", "bn_bias")]
    direct += [] if training else [args["running_mean"], args["running_var"]]
    with pytest.raises(
        RuntimeError, match=f"{name} is on meta but input is on cpu"
    ):  # the fake kernel's check
        op(*direct, [1, 1], [0, 0], [1, 1], 1, 1e-5)


def test_backward_ops_refuse_a_gradient_on_another_device():
    x = torch.randn(2, 3, 6, 6)
    dy = torch.randn(2, 3, 6, 6, device="meta")
    with pytest.raises(RuntimeError, match="grad_output is on meta but input is on cpu"):
        torch.ops.cnnrepro.lrn_backward(dy, x, 3, 1e-4, 0.75, 1.0)
    values, indices = ops.max_pool2d_with_argmax(x, 2)
    window = ([2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="indices is on cpu but grad_output is on meta"):
        torch.ops.cnnrepro.max_pool2d_with_argmax_backward(values.to("meta"), indices, list(x.shape), *window)


def block_results(block, x, grad, offset: float) -> dict[str, torch.Tensor]:
    """A training step's batch statistics (the running ones after one step from 0 and 1, with the
    offset's share taken out of the mean), output, and gradients of the input and of BatchNorm's
    weight and bias."""
    x = x.detach().clone().requires_grad_()
    y = block(x)
    y.backward(grad)
    bn = block.bn
    return {
        "running mean": bn.running_mean.double() - bn.momentum * offset,
        "running var": bn.running_var,
        "output": y,
        "input grad": x.grad,
        "bn weight grad": bn.weight.grad,
        "bn bias grad": bn.bias.grad,
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("offset", [1e3, 1e6, 1e8])
def test_statistics_far_from_zero_are_as_accurate_as_natives(dtype, offset):
    """Input = offset + N(0, 1) through an identity convolution. The exact answer is BatchNorm of the
    input less the offset (float64 subtracts it exactly), and our one-pass shifted sums come at
    least as close to it as native's two passes, within 1 % or 4 ulps: the batch statistics always,
    and the output and every gradient where the input's own rounding leaves them defined. Where the
    data sit on a grid coarser than 1e-3 of their spread (float32 at 1e6: 0.0625 apart), the ReLU
    mask flips by that rounding alone, differently for every summation order (native's own changes
    with the CPU's vector ISA), so only the statistics are compared there."""
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(8, 4, 9, 9, dtype=torch.float64, generator=generator) + offset).to(dtype)
    grad = torch.randn(x.shape, dtype=dtype, generator=generator)
    fused, unfused = identity_blocks(4, dtype=dtype)
    exact, _ = identity_blocks(4, dtype=torch.float64)
    exact.backend = "native"
    with torch.no_grad():
        fused.bn.weight.uniform_(0.5, 1.5, generator=generator)
        fused.bn.bias.uniform_(-0.5, 0.5, generator=generator)
    unfused.bn.load_state_dict(fused.bn.state_dict())
    exact.bn.load_state_dict({k: v.double() for k, v in fused.bn.state_dict().items()})
    ours, native = block_results(fused, x, grad, offset), block_results(unfused, x, grad, offset)
    truth = block_results(exact, x.double() - offset, grad.double(), 0.0)
    quantized = torch.finfo(dtype).eps * offset > 1e-3
    compared = ["running mean", "running var"] if quantized else list(truth)
    for what in compared:
        t = truth[what]
        ours_error = (ours[what].double() - t).abs().max().item()
        native_error = (native[what].double() - t).abs().max().item()
        scale = max(1.0, t.abs().max().item(), offset * fused.bn.momentum if what == "running mean" else 0.0)
        ulp = torch.finfo(dtype).eps * scale
        assert ours_error <= 1.01 * native_error + 4 * ulp, (
            f"{what}: ours {ours_error:.3g}, native {native_error:.3g}"
        )


# ---- fuzz: valid inputs against native -----------------------------------------------------------


def test_fuzz_max_pool_matches_native():
    rng, checked = random.Random(1), 0
    while checked < VALID_PER_OP:
        x, kwargs = max_pool_case(rng)
        try:
            expected_values, expected_indices = F.max_pool2d(x, **kwargs, return_indices=True)
        except RuntimeError:
            continue  # out of native's domain: the invalid fuzz covers those
        values, indices = ops.max_pool2d_with_argmax(x, **kwargs)
        context = f"case {checked}: shape {tuple(x.shape)} {kwargs}"
        torch.testing.assert_close(values, expected_values, rtol=0, atol=0, equal_nan=True, msg=context)
        assert torch.equal(indices, expected_indices), context
        assert values.is_contiguous(memory_format=ops._layout.kernel_memory_format(x)), context
        grad = torch.randn_like(values)
        plane = x.shape[-1] * x.shape[-2]
        if not (indices >= plane).any():  # native's backward writes out of bounds for such windows
            ours = ops.max_pool2d_with_argmax_backward(grad, indices, x.shape, **kwargs)
            xr = x.detach().requires_grad_()
            (theirs,) = torch.autograd.grad(F.max_pool2d(xr, **kwargs), xr, grad)
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=context)
        checked += 1


def test_fuzz_lrn_matches_native():
    rng = random.Random(2)
    for case in range(VALID_PER_OP):
        x, kwargs = lrn_case(rng)
        tol = TOL32 if x.dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
        xs = [x.detach().clone().requires_grad_() for _ in range(2)]
        y, expected = ops.lrn(xs[0], **kwargs), F.local_response_norm(xs[1], **kwargs)
        context = f"case {case}: shape {tuple(x.shape)} {kwargs}"
        torch.testing.assert_close(y, expected, equal_nan=True, msg=context, **tol)
        grad = torch.randn_like(y)
        y.backward(grad), expected.backward(grad)
        if not x.isinf().any():  # see DIFFERENCES["lrn"]["gradient_beside_an_inf"]
            torch.testing.assert_close(xs[0].grad, xs[1].grad, equal_nan=True, msg=context, **tol)


def test_fuzz_conv_bn_relu_matches_native():
    rng, refused = random.Random(3), 0
    for case in range(VALID_PER_OP):
        c = conv_bn_relu_case(rng)
        torch.manual_seed(case)
        fused = cnnrepro.nn.ConvBNReLU2d(**c.config, dtype=c.x.dtype)
        if fused.bn.affine:
            with torch.no_grad():
                fused.bn.weight.uniform_(0.5, 1.5), fused.bn.bias.uniform_(-0.5, 0.5)
        if fused.bn.track_running_stats:
            with torch.no_grad():
                fused.bn.running_mean.uniform_(-0.5, 0.5), fused.bn.running_var.uniform_(0.5, 2.0)
        unfused = copy.deepcopy(fused)
        unfused.backend = "native"
        for block in (fused, unfused):
            block.train(c.block_training)
            block[1].train(c.bn_training)
        tol = dict(rtol=1e-3, atol=1e-4) if c.x.dtype == torch.float32 else dict(rtol=1e-7, atol=1e-9)
        try:
            assert_blocks_agree(fused, unfused, c.x, **tol)
        except AssertionError as error:
            raise AssertionError(
                f"case {case}: {c.config}, x {tuple(c.x.shape)} {c.x.dtype}, "
                f"block training {c.block_training}, bn training {c.bn_training}: {error}"
            ) from None
        except (RuntimeError, ValueError):  # refused (one value per channel): native refuses it too
            refused += 1
            with pytest.raises((RuntimeError, ValueError)):
                unfused(c.x)
    assert refused < VALID_PER_OP // 10, f"{refused} of the valid draws were refused"


# ---- fuzz: invalid inputs, in a subprocess -------------------------------------------------------


@pytest.mark.parametrize("op", sorted(INVALID))
def test_fuzz_invalid_inputs_get_clear_errors(op):
    script = Path(__file__).with_name("conformance_cases.py")
    run = subprocess.run([sys.executable, str(script), op, "4"], capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert run.returncode == 0, (
        f"crashed (exit {run.returncode}) at {lines[-1] if lines else 'start'}: {run.stderr[-2000:]}"
    )
    cases = {}
    for line in lines:
        cases.setdefault(line["case"], {}).update(line)
    assert len(cases) == INVALID_PER_OP
    kinds = set()
    for case in cases.values():
        kinds.add(case["kind"])
        assert case["ours"] != "accepted", f"accepted an invalid input: {case}"
        assert case["argument"].lower() in case["ours"].lower(), (
            f"the message does not name the argument: {case}"
        )
        assert (
            "\n" not in case["ours"].split(": ", 1)[1].strip() or "Exception raised from" not in case["ours"]
        ), case
        if case["native"] == "accepted":
            assert case["kind"] in DIFFERENCES[op], (
                f"native accepts this; say why we do not in ops/differences.py: {case}"
            )
    assert len(kinds) >= 5, kinds
