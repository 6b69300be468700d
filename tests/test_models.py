"""The model zoo: every model builds, runs forward and backward at its canonical and smallest
inputs, agrees across backends, and has the published parameter count."""

import pytest
import torch

from cnnrepro import models
from cnnrepro.models.resnet import ZeroPadShortcut, unit_model

ALL = models.list_models()
SMALL_WIDTH = 0.0625  # canonical resolutions at 1/16 of the channels keep CPU tests fast
# Nets whose input gradient at init is rounding-sensitive noise, on either backend alone: 110 layers
# without shortcuts; 1001 layers of original units (gradients near 4e5, and a 1e-14 change of the
# input moves them by 0.02 on the native backend).
ROUNDING_NOISE_GRADIENTS = ("plain110", "resnet1001")


def build(name, **kwargs):
    return models.get_model(name, **kwargs)


def input_size_config(name, size):
    """Builders whose first FC depends on the resolution take it as input_size."""
    return {"input_size": size} if models.builder_accepts(name, "input_size") else {}


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_at_canonical_and_smallest_input(name):
    info = models.model_info(name)
    for size in (info.input_size, info.min_input_size):
        torch.manual_seed(0)
        model = build(name, num_classes=7, width=SMALL_WIDTH, **input_size_config(name, size))
        x = torch.randn(2, info.in_channels, size, size, requires_grad=True)
        out = model(x)
        assert out.shape == (2, 7), f"{name} at {size}px"
        out.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ALL)
def test_custom_and_native_backends_agree(name):
    info = models.model_info(name)
    size = max(info.min_input_size, min(info.input_size, 64))
    # Not too narrow: a 1-channel, 110-layer plain net is chaotic enough to turn rounding into noise.
    width = 0.25 if info.input_size <= 64 else SMALL_WIDTH
    config = dict(num_classes=5, width=width, **input_size_config(name, size))
    torch.manual_seed(0)
    custom = build(name, backend="custom", **config)
    torch.manual_seed(0)
    native = build(name, backend="native", **config)
    for (key, a), (_, b) in zip(custom.state_dict().items(), native.state_dict().items(), strict=True):
        assert torch.equal(a, b), f"same seed, same initial {key} on both backends"
    # float64: a deep plain net amplifies rounding differences (plain110: about 1e8-fold); in double
    # they stay far below this tolerance, which a wrong op would still exceed by orders of magnitude.
    custom, native = custom.double(), native.double()
    x = torch.randn(4, info.in_channels, size, size, dtype=torch.float64)
    outputs, grads = [], []
    for model in (custom, native):
        torch.manual_seed(1)  # the same dropout masks
        xi = x.clone().requires_grad_()
        out = model(xi)
        out.square().mean().backward()
        outputs.append(out)
        grads.append(xi.grad)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-6)
    if name not in ROUNDING_NOISE_GRADIENTS:
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)
    native.load_state_dict(custom.state_dict())  # weights move across backends unchanged


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_resnets_and_their_plain_twins(depth):
    residual, plain = build(f"resnet{depth}"), build(f"plain{depth}")
    count = models.count_parameters(residual)
    assert models.count_parameters(plain) == count, (
        "plain and residual twins differ only in parameter-free shortcuts"
    )
    shortcuts = [m for m in residual.modules() if isinstance(m, ZeroPadShortcut)]
    assert len(shortcuts) == 2 and all(sum(p.numel() for p in s.parameters()) == 0 for s in shortcuts)
    convs = [m for m in residual.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) + 1 == depth, "6n+2 layers: the convs and the FC"


LEAF_NAMES = {torch.nn.Conv2d: "conv", torch.nn.BatchNorm2d: "bn", torch.nn.ReLU: "relu"}


def layout(unit: torch.nn.Module) -> str:
    """A residual unit's layers in the order they run: pre-activation, residual path, the addition
    (+), what follows it."""

    def leaves(module):
        if module is None:
            return []
        return [LEAF_NAMES[type(m)] for m in module.modules() if type(m) in LEAF_NAMES]

    return " ".join(leaves(unit.preact) + leaves(unit.branch) + ["+"] + leaves(unit.after))


# He et al. 2016, Figure 4: (b) to (e), as the basic unit of a CIFAR ResNet places them.
FIGURE_4 = {
    "bn_after_add": "conv bn relu conv + bn relu",
    "relu_before_add": "conv bn relu conv bn relu +",
    "relu_preact": "relu conv bn relu conv bn +",
    "full_preact": "bn relu conv bn relu conv +",
}


@pytest.mark.parametrize("unit", FIGURE_4)
@pytest.mark.parametrize("depth", [20, 110])
def test_table_2_units_place_bn_and_relu_as_figure_4(depth, unit):
    model = build(unit_model(depth, unit))
    assert model.info.name == unit_model(depth, unit)
    for stage in (model.layer1, model.layer2, model.layer3):
        assert [layout(block) for block in stage] == [FIGURE_4[unit]] * ((depth - 2) // 6), "6n+2 layers"
    assert models.count_parameters(model) == models.count_parameters(build(f"resnet{depth}")), (
        "the units move BN and ReLU, and every conv is the same"
    )


def test_unit_argument_builds_the_registered_variants():
    torch.manual_seed(0)
    by_argument = build("resnet20", unit="full_preact").state_dict()
    torch.manual_seed(0)
    registered = build("preresnet20").state_dict()
    assert by_argument.keys() == registered.keys()
    assert all(torch.equal(by_argument[k], registered[k]) for k in registered)
    with pytest.raises(ValueError, match="unit must be one of"):
        build("resnet20", unit="preact")
    with pytest.raises(ValueError, match="plain net"):
        build("plain20", unit="full_preact")


def test_pre_activation_stages_share_their_first_activation_and_end_with_bn_relu():
    model = build("preresnet164")
    for stage in (model.layer1, model.layer2, model.layer3):
        first, rest = stage[0], stage[1:]
        assert layout(first) == "bn relu conv bn relu conv bn relu conv +", "BN-ReLU before the split"
        assert isinstance(first.shortcut, torch.nn.Conv2d), "a 1x1 projection where the width changes"
        assert {layout(unit) for unit in rest} == {"bn relu conv bn relu conv bn relu conv +"}
        assert all(unit.preact is None and unit.shortcut is None for unit in rest)
    assert type(model.conv1) is torch.nn.Conv2d, "the bare stem conv: the first unit's BN-ReLU follows"
    assert [type(m) for m in model.final] == [torch.nn.BatchNorm2d, torch.nn.ReLU]
    original = build("resnet164")
    assert layout(original.layer2[1]) == "conv bn relu conv bn relu conv bn + relu"


@pytest.mark.parametrize("depth", [164, 1001])
def test_bottleneck_resnets_have_9n_plus_2_layers(depth):
    with torch.device("meta"):
        model = build(f"preresnet{depth}")
    projections = {
        id(unit.shortcut) for stage in (model.layer1, model.layer2, model.layer3) for unit in stage
    }
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and id(m) not in projections]
    assert len(convs) + 1 == depth, "9n+2 layers: the convs on the residual paths, the stem and the FC"
    widths = [stage[-1].branch[-1].out_channels for stage in (model.layer1, model.layer2, model.layer3)]
    assert widths == [64, 128, 256]


def test_lenet_summary_names_its_layers():
    table = models.summary(build("lenet5"), (1, 1, 32, 32)).set_index("layer")
    assert table.loc["0", "type"] == "Conv2d" and table.loc["0", "macs"] == 117_600
    partial = build("lenet5-1998")
    assert sum(p.numel() for p in partial[2].parameters()) == 12, "S2: a coefficient and a bias per map"


def test_lenet_28px_with_padding_keeps_the_same_layers():
    padded = build("lenet5", input_size=28, activation="relu", pooling="max")
    assert models.count_parameters(padded) == 61_706
    assert padded(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_googlenet_aux_heads_in_training_only():
    model = build("googlenet", num_classes=10, width=SMALL_WIDTH, aux_logits=True, input_size=96)
    logits, aux1, aux2 = model(torch.randn(2, 3, 96, 96))
    assert logits.shape == aux1.shape == aux2.shape == (2, 10)
    assert model.eval()(torch.randn(2, 3, 96, 96)).shape == (2, 10)


def test_summary_totals():
    table = models.summary(build("resnet20"), (1, 3, 32, 32))
    assert table.iloc[-1]["params"] == models.count_parameters(build("resnet20"))
    assert table.iloc[-1]["macs"] == pytest.approx(40.6e6, rel=0.02), "ResNet-20: about 41M multiply-adds"
    assert table["macs"][:-1].sum() == table.iloc[-1]["macs"]


def test_registry_errors_and_metadata():
    assert "resnet20" in models.list_models("resnet*") and "plain20" not in models.list_models("resnet*")
    with pytest.raises(ValueError, match="unknown model 'resnet7'"):
        build("resnet7")
    with pytest.raises(ValueError, match="already registered"):
        models.register_model("lenet5", family="x", paper="x", year=1, input_size=1, min_input_size=1)(
            lambda: None
        )
    with pytest.raises(ValueError, match="backend"):
        build("lenet5", backend="fast")
    with pytest.raises(ValueError, match="width"):
        build("lenet5", width=0)
    for name in ALL:
        info = models.model_info(name)
        assert info.paper and info.year and info.builder.__doc__, name
    assert build("alexnet", width=SMALL_WIDTH).info.year == 2012
