"""The custom ops under autocast (the runner's --amp): the fused conv-BN-ReLU runs in autocast's
dtype as native's convolution does, its running statistics stay float32, and a whole model trains
as native does under the same autocast, within bfloat16's rounding."""

import pytest
import torch

from cnnrepro import models
from cnnrepro.nn import ConvBNReLU2d


def blocks():
    torch.manual_seed(0)
    custom = ConvBNReLU2d(3, 8, 3, padding=1, backend="custom")
    native = ConvBNReLU2d(3, 8, 3, padding=1, backend="native")
    native.load_state_dict(custom.state_dict())
    return custom, native


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_fused_block_runs_in_autocasts_dtype_and_keeps_float32_statistics(layout):
    custom, native = blocks()
    x = torch.randn(4, 3, 10, 10).contiguous(memory_format=layout)
    outputs = []
    for block in (custom, native):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = block(x)
        y.float().square().mean().backward()
        outputs.append(y)
    assert outputs[0].dtype == outputs[1].dtype == torch.bfloat16
    assert outputs[0].is_contiguous(memory_format=layout)
    # bfloat16 keeps 8 bits: outputs within a few of its ulps of native's
    torch.testing.assert_close(outputs[0].float(), outputs[1].float(), rtol=2e-2, atol=2e-2)
    for name in ("running_mean", "running_var"):
        mine, theirs = getattr(custom.bn, name), getattr(native.bn, name)
        assert mine.dtype == torch.float32
        torch.testing.assert_close(mine, theirs, rtol=1e-2, atol=1e-3)
    assert custom.bn.num_batches_tracked == native.bn.num_batches_tracked == 1
    for mine, theirs in zip(custom.parameters(), native.parameters(), strict=True):
        assert mine.grad.dtype == torch.float32
        assert ((mine.grad - theirs.grad).norm() / theirs.grad.norm()) < 5e-2
    custom.eval(), native.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        inference = custom(x), native(x)
    assert inference[0].dtype == torch.bfloat16
    torch.testing.assert_close(inference[0].float(), inference[1].float(), rtol=2e-2, atol=2e-2)


def test_float64_and_autocast_off_are_left_alone():
    custom, native = blocks()
    x = torch.randn(4, 3, 10, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert custom(x).dtype == torch.float32
    custom, native = custom.double(), native.double()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast does not cast float64
        y = custom(x.double())
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, native(x.double()))


@pytest.mark.parametrize("name", ["resnet20", "alexnet"])
def test_a_model_trains_under_bfloat16_as_native_does(name):
    """bfloat16 gradients of a fresh net are far from float32's (about 20-30% of their norm, native
    and custom alike): the custom backend is within native's own bfloat16 error of float32's."""
    extra = {"input_size": 63} if name == "alexnet" else {}
    size = 63 if name == "alexnet" else 32
    torch.manual_seed(0)
    custom = models.get_model(name, num_classes=10, in_channels=1, backend="custom", width=0.25, **extra)
    native = models.get_model(name, num_classes=10, in_channels=1, backend="native", width=0.25, **extra)
    native.load_state_dict(custom.state_dict())
    x, labels = torch.randn(16, 1, size, size), torch.randint(0, 10, (16,))

    def gradients(model, amp):
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    reference = gradients(native, amp=False)
    error = {
        m: (gradients(model, amp=True) - reference).norm() / reference.norm()
        for m, model in (("custom", custom), ("native", native))
    }
    assert error["custom"] < 1.5 * error["native"] + 1e-3, error
