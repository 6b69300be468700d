"""Facts about the architectures, checked on our own built layers: the published parameter counts
(from each model's :class:`ModelInfo`), LeNet-5's layer sizes and connections, Inception's 1x1
bottleneck, VGG's stacked 3x3 fields, the size comparisons between the nets.

Each is a :class:`Claim`: the published side written here once with its source, the measured side
always computed (parameters and multiply-accumulates counted on built modules, receptive fields
traced by autograd). The report lists them; the tests require that they hold.
"""

from dataclasses import dataclass

import torch

from cnnrepro.models.googlenet import BN_EPS, INCEPTION, Inception
from cnnrepro.models.lenet import C3_TABLE, PartialConv2d
from cnnrepro.models.registry import get_model, list_models, model_info
from cnnrepro.models.summary import count_parameters, summary
from cnnrepro.nn import ConvBNReLU2d

HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"
ABOUT = 0.10  # "about N": within 10%
CLOSE = 0.05  # a computed figure the source gives to two or three digits: within 5%
SEED_NOTES = "course notes (docs/references.md)"


@dataclass(frozen=True)
class Claim:
    claim: str
    source: str
    expected: str
    measured: str
    verdict: str  # HOLDS, FAILS or NOT_MEASURED
    why: str = ""


def verdict(ok: bool) -> str:
    return HOLDS if ok else FAILS


def _about(value: float, target: float, tolerance: float) -> bool:
    return abs(value - target) <= tolerance * target


def _build(name: str, **config) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_model(name, **config)


def _shapes_only(name: str, **config) -> torch.nn.Module:
    """A model built on the meta device: its parameters' shapes, with no memory and no init cost."""
    with torch.device("meta"):
        return get_model(name, **config)


def _count(name: str, **config) -> int:
    return count_parameters(_shapes_only(name, **config))


def count_weights(model: torch.nn.Module) -> int:
    """The conv and FC weights alone: no BatchNorm scales and shifts, no biases."""
    layers = (torch.nn.Conv2d, torch.nn.Linear)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, layers))


# --- claims about the networks' sizes, computed from the built layers ---------------------------


def published_count(name: str) -> tuple[int, bool, str]:
    """Model ``name``'s parameter count at its published config, whether it matches the published
    figure (to the digits the source gives), and that figure as the source writes it."""
    info = model_info(name)
    model = _shapes_only(name, **dict(info.published_config))
    count = count_weights(model) if info.published_weights_only else count_parameters(model)
    if info.published_digits is None:
        return count, count == info.published_params, f"{info.published_params:,}"
    rounded = float(f"{count:.{info.published_digits}g}")
    return (
        count,
        rounded == info.published_params,
        f"{info.published_params / 1e6:.{info.published_digits}g}M",
    )


def published_parameter_claims() -> list[Claim]:
    """Every registered model with a published parameter count, at its published config."""
    claims = []
    for name in list_models():
        info = model_info(name)
        if not info.published_params:
            continue
        count, ok, expected = published_count(name)
        digits = info.published_digits
        measured = f"{count:,}" if digits is None else f"{count:,} ({count / 1e6:.{digits}g}M)"
        note = f" ({info.published_note})" if info.published_note else ""
        claims.append(
            Claim(f"{name} has {expected} parameters{note}", info.paper, expected, measured, verdict(ok))
        )
    return claims


def _conv_output_positions(model: torch.nn.Module, layer: torch.nn.Module, input_size) -> int:
    shapes = []
    handle = layer.register_forward_hook(lambda module, args, out: shapes.append(out.shape))
    with torch.no_grad():
        model(torch.zeros(input_size))
    handle.remove()
    return shapes[0][-2] * shapes[0][-1]


def lenet_claims() -> list[Claim]:
    lenet = _build("lenet5")
    table = summary(lenet, (1, 1, 32, 32))
    total = int(table.iloc[-1]["params"])
    layers = [int(p) for p in table["params"].iloc[:-1]]
    c1 = lenet[0]
    connections = sum(p.numel() for p in c1.parameters()) * _conv_output_positions(lenet, c1, (1, 1, 32, 32))
    partial = next(m for m in _build("lenet5-1998").modules() if isinstance(m, PartialConv2d))
    full_c3 = torch.nn.Conv2d(6, len(C3_TABLE), 5)
    c3 = (sum(p.numel() for p in partial.parameters()), sum(p.numel() for p in full_c3.parameters()))
    expected_layers = "156 / 2,416 / 48,120 / 10,164 / 850"
    return [
        Claim(
            "LeNet-5 has about 60k parameters",
            SEED_NOTES,
            "about 60,000",
            f"{total:,}",
            verdict(_about(total, 60_000, ABOUT)),
        ),
        Claim(
            "LeNet-5's layers C1 / C3 / F5 / F6 / output",
            SEED_NOTES,
            expected_layers,
            " / ".join(f"{p:,}" for p in layers),
            verdict(" / ".join(f"{p:,}" for p in layers) == expected_layers),
        ),
        Claim(
            "LeNet-5's C3 with the 1998 partial table, and fully connected",
            "LeCun et al. 1998, Table I",
            "1,516 / 2,416",
            f"{c3[0]:,} / {c3[1]:,}",
            verdict(c3 == (1_516, 2_416)),
        ),
        Claim(
            "LeNet-5's C1 has 122,304 connections",
            "LeCun et al. 1998",
            "122,304",
            f"{connections:,}",
            verdict(connections == 122_304),
            "parameters x output positions of the built layer",
        ),
    ]


def size_comparison_claims() -> list[Claim]:
    alexnet = _shapes_only("alexnet")
    alexnet_params = count_parameters(alexnet)
    fc4096 = [m for m in alexnet.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 4096]
    fc_share = sum(p.numel() for m in fc4096 for p in m.parameters()) / alexnet_params
    vgg16, googlenet = _count("vgg16"), _count("googlenet")
    krizhevsky = "Krizhevsky et al. 2012"
    return [
        Claim(
            "AlexNet has about 60M parameters",
            krizhevsky,
            "about 60M",
            f"{alexnet_params:,}",
            verdict(_about(alexnet_params, 60e6, ABOUT)),
        ),
        Claim(
            "VGG-16 has about 138M parameters",
            "Simonyan, Zisserman 2014",
            "about 138M",
            f"{vgg16:,}",
            verdict(_about(vgg16, 138e6, ABOUT)),
        ),
        Claim(
            "GoogLeNet has far fewer parameters than AlexNet",
            "Szegedy et al. 2015 (12x fewer)",
            "at least 5x fewer",
            f"{googlenet:,} vs {alexnet_params:,} ({alexnet_params / googlenet:.1f}x fewer)",
            verdict(alexnet_params >= 5 * googlenet),
        ),
        Claim(
            "AlexNet's two FC-4096 layers hold most of its parameters",
            krizhevsky,
            "more than half",
            f"{fc_share:.1%} ({len(fc4096)} layers)",
            verdict(len(fc4096) == 2 and fc_share > 0.5),
        ),
    ]


def _macs(module: torch.nn.Module, input_size) -> int:
    return int(summary(module, input_size).iloc[-1]["macs"])


def _weights(*convs: torch.nn.Conv2d) -> int:
    return sum(conv.weight.numel() for conv in convs)


def inception_claims() -> list[Claim]:
    """Inception (3a)'s 5x5 branch as our GoogLeNet builds it (1x1 bottleneck, then 5x5), against the
    same 5x5 unit applied to the block's input directly."""
    bottleneck = Inception(*INCEPTION["3a"], backend="native").branch3  # the "5x5" branch
    reduce_conv, conv5 = bottleneck[0][0], bottleneck[1][0]
    cin, reduce, filters = reduce_conv.in_channels, reduce_conv.out_channels, conv5.out_channels
    shape = (1, cin, 28, 28)
    direct = ConvBNReLU2d(
        cin, filters, conv5.kernel_size, padding=conv5.padding, eps=BN_EPS, backend="native"
    )
    macs_direct, macs_bottleneck = _macs(direct, shape), _macs(bottleneck, shape)
    plain = torch.nn.Conv2d(56, 125, 5, bias=False)
    reduced = (torch.nn.Conv2d(56, 28, 1, bias=False), torch.nn.Conv2d(28, 125, 5, bias=False))
    weights_plain, weights_reduced = _weights(plain), _weights(*reduced)
    return [
        Claim(
            f"Inception's 5x5 branch on 28x28x{cin}, {filters} filters, costs about 120M multiplies",
            "Szegedy et al. 2015; Ng's course",
            "about 120M",
            f"{macs_direct / 1e6:.1f}M",
            verdict(_about(macs_direct, 120e6, CLOSE)),
        ),
        Claim(
            f"a 1x1 bottleneck to {reduce} channels first cuts it to about 12.4M",
            "Szegedy et al. 2015; Ng's course",
            "about 12.4M",
            f"{macs_bottleneck / 1e6:.2f}M",
            verdict(_about(macs_bottleneck, 12.4e6, CLOSE)),
        ),
        Claim(
            "a 1x1 reduction 56 -> 28 before a 125-filter 5x5 conv cuts its weights from 175,000 to 89,068",
            SEED_NOTES,
            "175,000 -> 89,068",
            f"{weights_plain:,} -> {weights_reduced:,}",
            verdict((weights_plain, weights_reduced) == (175_000, 89_068)),
            "weights only, no biases",
        ),
    ]


def receptive_field(stack: torch.nn.Module, channels: int, size: int = 15) -> int:
    """Side of the input square that one central output of ``stack`` depends on, traced by autograd
    through all-positive weights (so no contribution cancels)."""
    x = torch.zeros(1, channels, size, size, requires_grad=True)
    with torch.no_grad():
        for p in stack.parameters():
            p.fill_(1.0)
    stack(x)[0, 0, size // 2, size // 2].backward()
    rows = x.grad[0].abs().sum(0).sum(1).nonzero()
    return int(rows.max() - rows.min() + 1)


def stacked_conv_claims(channels: int = 64) -> list[Claim]:
    """VGG's argument: n stacked 3x3 convs see the field of one (2n+1)x(2n+1) conv with fewer weights."""
    claims = []
    for n in (2, 3):
        stack = torch.nn.Sequential(
            *(torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in range(n))
        )
        field = receptive_field(stack, channels)
        single = torch.nn.Conv2d(channels, channels, field, bias=False)
        stacked_weights, single_weights = _weights(*stack), _weights(single)
        claims.append(
            Claim(
                f"{n} stacked 3x3 convs see a {2 * n + 1}x{2 * n + 1} field with fewer weights",
                "Simonyan, Zisserman 2014",
                f"{2 * n + 1}x{2 * n + 1}, fewer weights",
                f"{field}x{field}; {stacked_weights:,} vs {single_weights:,} weights at {channels} channels",
                verdict(field == 2 * n + 1 and stacked_weights < single_weights),
            )
        )
    return claims


def architecture_claims() -> list[Claim]:
    """Every claim about the architectures' sizes, in the order the report shows them."""
    return (
        lenet_claims()
        + size_comparison_claims()
        + inception_claims()
        + stacked_conv_claims()
        + published_parameter_claims()
    )
