"""d2l's own networks: their parameter counts at the book's input sizes (1 channel, 10 classes)
equal those of the book's code, counted here layer by layer from its architecture; they train on
both backends alike; the d2l profile trains them and its claims read them."""

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from cnnrepro import models
from cnnrepro.experiments import PROFILES, SUITES, plan_runs
from cnnrepro.models.googlenet import INCEPTION
from cnnrepro.report.claims import D2L_TEST_ACC
from cnnrepro.train.run_config import RunConfig, build_model


def conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def linear(i, o):
    return i * o + o


def bn(c):
    return 2 * c


def inception(cin, c1, c3r, c3, c5r, c5, pool_proj):
    return (
        conv(cin, c1, 1)
        + conv(cin, c3r, 1)
        + conv(c3r, c3, 3)
        + conv(cin, c5r, 1)
        + conv(c5r, c5, 5)
        + conv(cin, pool_proj, 1)
    )


def residual(cin, cout, projection):
    return (
        conv(cin, cout, 3)
        + bn(cout)
        + conv(cout, cout, 3)
        + bn(cout)
        + (conv(cin, cout, 1) if projection else 0)
    )


def densenet_d2l(init=64, growth=32, blocks=(4, 4, 4, 4)):
    """The book's DenseNet: b1 (7x7 conv, BN), dense blocks of BN-ReLU-3x3 conv, transitions
    BN-ReLU-1x1 conv halving the channels, a last BN and the linear layer; every conv with its bias."""
    total, channels = conv(1, init, 7) + bn(init), init
    for i, layers in enumerate(blocks):
        for _ in range(layers):
            total += bn(channels) + conv(channels, growth, 3)
            channels += growth
        if i != len(blocks) - 1:
            total += bn(channels) + conv(channels, channels // 2, 1)
            channels //= 2
    return total + bn(channels) + linear(channels, 10)


BOOK_COUNTS = {  # name -> (input size, parameters of the book's code)
    "lenet5": (28, conv(1, 6, 5) + conv(6, 16, 5) + linear(400, 120) + linear(120, 84) + linear(84, 10)),
    "alexnet-d2l": (
        224,
        conv(1, 96, 11) + conv(96, 256, 5) + conv(256, 384, 3) + conv(384, 384, 3) + conv(384, 256, 3)
        + linear(6400, 4096) + linear(4096, 4096) + linear(4096, 10),
    ),
    "vgg11-d2l": (
        224,
        conv(1, 16, 3) + conv(16, 32, 3) + conv(32, 64, 3) + conv(64, 64, 3) + conv(64, 128, 3)
        + 3 * conv(128, 128, 3) + linear(128 * 7 * 7, 4096) + linear(4096, 4096) + linear(4096, 10),
    ),
    "nin": (
        224,
        sum(
            conv(i, o, k) + 2 * conv(o, o, 1)
            for i, o, k in ((1, 96, 11), (96, 256, 5), (256, 384, 3), (384, 10, 3))
        ),
    ),
    "googlenet-d2l": (
        96,
        conv(1, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3) + sum(inception(*c) for c in INCEPTION.values())
        + linear(1024, 10),
    ),
    "densenet-d2l": (96, densenet_d2l()),
    "resnet18-d2l": (
        96,
        conv(1, 64, 7) + bn(64) + 2 * residual(64, 64, False)
        + sum(residual(c // 2, c, True) + residual(c, c, False) for c in (128, 256, 512)) + linear(512, 10),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BOOK_COUNTS))
def test_parameter_counts_equal_the_books_code(name):
    size, expected = BOOK_COUNTS[name]
    extra = {"input_size": size} if models.builder_accepts(name, "input_size") else {}
    net = models.get_model(name, num_classes=10, in_channels=1, **extra)
    assert models.count_parameters(net) == expected
    assert net.eval()(torch.zeros(2, 1, size, size)).shape == (2, 10)


def test_the_counts_are_the_ones_the_book_prints():
    """Spot checks against the totals the book's code gives (so the arithmetic above is right)."""
    assert BOOK_COUNTS["alexnet-d2l"][1] == 46_764_746
    assert BOOK_COUNTS["resnet18-d2l"][1] == 11_178_378
    assert BOOK_COUNTS["densenet-d2l"][1] == 758_226


@pytest.mark.parametrize("name", ["alexnet-d2l", "vgg11-d2l", "googlenet-d2l", "resnet18-d2l"])
def test_custom_and_native_backends_compute_the_same(name):
    extra = {"input_size": 96} if models.builder_accepts(name, "input_size") else {}
    nets = []
    for backend in ("custom", "native"):
        torch.manual_seed(0)
        nets.append(
            models.get_model(name, num_classes=10, in_channels=1, backend=backend, width=0.25, **extra)
        )
    assert nets[0].state_dict().keys() == nets[1].state_dict().keys()
    x = torch.randn(4, 1, 96, 96)
    outputs = []
    for net in nets:
        torch.manual_seed(1)  # the same dropout masks
        outputs.append(net.train()(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)


def test_the_d2l_profile_trains_the_books_networks_and_its_claims_read_them():
    profile = PROFILES["d2l"]
    planned = {c.model for c in plan_runs(SUITES["classic"], profile, [0])}
    assert planned == set(D2L_TEST_ACC)
    assert all(profile.recipes.get(m) for m in planned), "every network has the book's recipe"
    assert {c.model for c in plan_runs(SUITES["classic"], PROFILES["quick"], [0])} == set(SUITES["classic"])


def test_the_d2l_profile_trains_as_the_books_train_ch6():
    """Plain SGD (no momentum) and every network re-initialized with Xavier-uniform conv and linear
    weights, LeNet-5, NiN and DenseNet included; the quick profile keeps the builders' own init."""
    d2l = plan_runs(SUITES["classic"], PROFILES["d2l"], [0])
    assert {(c.momentum, c.init) for c in d2l} == {(0.0, "xavier")}
    assert {(c.momentum, c.init) for c in plan_runs(SUITES["classic"], PROFILES["quick"], [0])} == {
        (0.9, "model")
    }


@pytest.mark.parametrize("name", ["lenet5", "nin", "densenet-d2l"])
def test_xavier_init_draws_every_conv_and_linear_weight_within_glorots_bound(name):
    dataset = SimpleNamespace(num_classes=10, in_channels=1, image_size=BOOK_COUNTS[name][0])
    config = RunConfig(name, "fashion-mnist", width=0.25, init="xavier")
    layers = [
        m for m in build_model(config, dataset).modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    for layer in layers:
        receptive = layer.weight[0, 0].numel()
        bound = (6 / ((layer.weight.shape[0] + layer.weight.shape[1]) * receptive)) ** 0.5
        assert 0.5 * bound < layer.weight.abs().max() <= bound, layer  # the whole range, nothing beyond
    built = build_model(replace(config, init="model"), dataset)
    assert not torch.equal(next(built.parameters()), layers[0].weight)
