"""ResNet (He, Zhang, Ren, Sun 2016): ImageNet ResNet-18/34, the CIFAR 6n+2 ResNets with their
plain twins (the degradation experiment, Figure 6), and the residual units of He et al.'s Identity
Mappings paper (ECCV 2016): Table 2's five units (``unit=``), the pre-activation ResNets (basic
6n+2, bottleneck 9n+2: ResNet-164 and ResNet-1001)."""

from collections import OrderedDict

import torch
import torch.nn.functional as F

from cnnrepro.models.blocks import GlobalAvgPool, conv_bn_relu, max_pool, scaled
from cnnrepro.models.registry import register_model

PAPER = "He, Zhang, Ren, Sun. Deep residual learning for image recognition. CVPR 2016"
IDENTITY_PAPER = "He, Zhang, Ren, Sun. Identity mappings in deep residual networks. ECCV 2016"


class BasicBlock(torch.nn.Module):
    """conv3x3-BN-ReLU, conv3x3-BN, plus the shortcut, then ReLU; torchvision's names (conv1 holds
    conv1, bn1 and the ReLU fused). The shortcut is the input itself, or ``downsample(input)`` where
    the shape changes; a plain block (``residual=False``) adds nothing at all."""

    def __init__(self, cin, cout, stride, backend, residual: bool, downsample: torch.nn.Module | None):
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cout, 3, stride, 1, backend)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x):
        out = self.bn2(self.conv2(self.conv1(x)))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return torch.relu(out)


class ZeroPadShortcut(torch.nn.Module):
    """Option A: subsample by the stride and pad the new channels with zeros. No parameters."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride, self.extra = stride, extra_channels

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


def downsample(shortcut: str, cin, cout, stride) -> torch.nn.Module | None:
    """Where the shape changes: option B, a 1x1 conv + BatchNorm (torchvision's ImageNet ResNets),
    or option A, zero-padding (the CIFAR ResNets). None where it does not, or for plain nets."""
    if shortcut == "none" or (stride == 1 and cin == cout):
        return None
    if shortcut == "projection":
        return torch.nn.Sequential(
            torch.nn.Conv2d(cin, cout, 1, stride, bias=False), torch.nn.BatchNorm2d(cout)
        )
    return ZeroPadShortcut(stride, cout - cin)


def layers(cin, widths, blocks_per_stage, shortcut: str, backend) -> list[tuple[str, torch.nn.Module]]:
    """("layer1", blocks), ("layer2", blocks), ...: every stage after the first starts with stride 2."""
    stages = []
    for stage, (cout, count) in enumerate(zip(widths, blocks_per_stage, strict=True)):
        blocks = []
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            blocks.append(
                BasicBlock(
                    cin, cout, stride, backend, shortcut != "none", downsample(shortcut, cin, cout, stride)
                )
            )
            cin = cout
        stages.append((f"layer{stage + 1}", torch.nn.Sequential(*blocks)))
    return stages


def resnet(
    stem, in_channels, widths, blocks_per_stage, shortcut, num_classes, backend
) -> torch.nn.Sequential:
    """A Sequential named as torchvision's ResNet: conv1 (with bn1 and the ReLU fused), maxpool
    (ImageNet only), layer1..., avgpool, fc; so torchvision's weights load by name."""
    parts = [("conv1", conv_bn_relu(in_channels, widths[0], *stem, backend=backend))]
    if stem[0] == 7:  # the ImageNet stem: 7x7/2 conv, then 3x3/2 max-pool
        parts.append(("maxpool", max_pool(3, 2, 1, backend=backend)))
    parts += layers(widths[0], widths, blocks_per_stage, shortcut, backend)
    parts += [("avgpool", GlobalAvgPool()), ("fc", torch.nn.Linear(widths[-1], num_classes))]
    return torch.nn.Sequential(OrderedDict(parts))


IMAGENET_STEM = (7, 2, 3)  # kernel, stride, padding
CIFAR_STEM = (3, 1, 1)


def imagenet_resnet(num_classes, in_channels, backend, width, blocks_per_stage) -> torch.nn.Sequential:
    widths = [scaled(c, width) for c in (64, 128, 256, 512)]
    return resnet(IMAGENET_STEM, in_channels, widths, blocks_per_stage, "projection", num_classes, backend)


@register_model(
    "resnet18",
    family="ResNet",
    paper=PAPER,
    year=2016,
    input_size=224,
    min_input_size=1,
    published_params=11_689_512,
)
def resnet18(num_classes, in_channels, backend, width):
    """ResNet-18: 7x7/2 stem and 3x3/2 max-pool, four stages of two basic blocks (64, 128, 256, 512),
    projection shortcuts (option B) where the shape changes, global average pooling. As torchvision."""
    return imagenet_resnet(num_classes, in_channels, backend, width, (2, 2, 2, 2))


@register_model(
    "resnet34",
    family="ResNet",
    paper=PAPER,
    year=2016,
    input_size=224,
    min_input_size=1,
    published_params=21_797_672,
)
def resnet34(num_classes, in_channels, backend, width):
    """ResNet-34: as ResNet-18 with 3, 4, 6, 3 basic blocks per stage. As torchvision."""
    return imagenet_resnet(num_classes, in_channels, backend, width, (3, 4, 6, 3))


# --- He et al. 2016's residual units (Identity Mappings, Figure 4 and Table 2) ---------------------

UNITS = ("original", "bn_after_add", "relu_before_add", "relu_preact", "full_preact")
PREACTIVATED = ("relu_preact", "full_preact")  # units whose activation comes before their convs
ENDS_WITH_BN = ("original", "relu_before_add", "relu_preact")  # the residual path's last conv has BN


def bn_relu(channels: int) -> torch.nn.Sequential:
    """BatchNorm then ReLU: full pre-activation's, and what follows the add in BN after addition."""
    return torch.nn.Sequential(torch.nn.BatchNorm2d(channels), torch.nn.ReLU())


def pre_activation(unit: str, channels: int) -> torch.nn.Module:
    """What a pre-activation unit applies before its first conv: ReLU alone, or BN then ReLU."""
    return torch.nn.ReLU() if unit == "relu_preact" else bn_relu(channels)


class ResidualUnit(torch.nn.Module):
    """One residual unit: ``after(branch(p) + shortcut(p))`` with ``p = preact(x)``. ``preact`` is
    the pre-activation the first unit of a pre-activation stage applies before the split, so its
    shortcut sees it too; ``shortcut`` None is the identity; ``after`` None: nothing after the add."""

    def __init__(self, branch, shortcut=None, preact=None, after=None):
        super().__init__()
        self.preact, self.branch, self.shortcut, self.after = preact, branch, shortcut, after

    def forward(self, x):
        if self.preact is not None:
            x = self.preact(x)
        out = self.branch(x) + (x if self.shortcut is None else self.shortcut(x))
        return out if self.after is None else self.after(out)


def residual_branch(unit, cin, convs, stride, backend, preactivated) -> torch.nn.Sequential:
    """The residual function F of a ``unit`` (Figure 4): ``convs`` as (kernel, channels) pairs, the
    stride on the first. Every conv followed by BN and ReLU is the fused conv-BN-ReLU, inside the
    pre-activation units too (BN-ReLU-conv-BN-ReLU-conv = BN-ReLU, conv-BN-ReLU, conv)."""
    layers = [] if preactivated or unit not in PREACTIVATED else [pre_activation(unit, cin)]
    for i, (kernel, cout) in enumerate(convs):
        step = stride if i == 0 else 1
        if i < len(convs) - 1 or unit == "relu_before_add":
            layers.append(conv_bn_relu(cin, cout, kernel, step, kernel // 2, backend))
        else:
            layers.append(torch.nn.Conv2d(cin, cout, kernel, step, kernel // 2, bias=False))
            if unit in ENDS_WITH_BN:
                layers.append(torch.nn.BatchNorm2d(cout))
        cin = cout
    return torch.nn.Sequential(*layers)


def unit_shortcut(unit, bottleneck, cin, cout, stride) -> torch.nn.Module | None:
    """Basic units: option A (zero-padding), as the 2015 CIFAR nets. Bottleneck units: a 1x1
    projection where the shape changes (the 2016 appendix), with BN where the residual path ends
    with one, so both summands are alike."""
    if not bottleneck:
        return downsample("zero-pad", cin, cout, stride)
    if stride == 1 and cin == cout:
        return None
    if unit in ENDS_WITH_BN:
        return downsample("projection", cin, cout, stride)
    return torch.nn.Conv2d(cin, cout, 1, stride, bias=False)


def after_addition(unit: str, channels: int) -> torch.nn.Module | None:
    """What follows the addition: ReLU (original), BN-ReLU (BN after addition), else nothing."""
    if unit == "original":
        return torch.nn.ReLU()
    return bn_relu(channels) if unit == "bn_after_add" else None


def residual_unit(unit, cin, cout, mid, stride, bottleneck, first_of_stage, backend) -> ResidualUnit:
    """A basic (3x3, 3x3) or bottleneck (1x1 to ``mid``, 3x3, 1x1 to ``cout``) unit. The first unit
    of each pre-activation stage applies its pre-activation before the split (the 2016 appendix)."""
    convs = [(1, mid), (3, mid), (1, cout)] if bottleneck else [(3, cout), (3, cout)]
    shared = first_of_stage and unit in PREACTIVATED
    return ResidualUnit(
        residual_branch(unit, cin, convs, stride, backend, preactivated=shared),
        unit_shortcut(unit, bottleneck, cin, cout, stride),
        pre_activation(unit, cin) if shared else None,
        after_addition(unit, cout),
    )


def stem(unit, in_channels, cout, backend) -> torch.nn.Module:
    """The first 3x3 conv, ending as the units end: conv-BN-ReLU before units with a ReLU or
    nothing after the add; conv-BN before ReLU-only pre-activation units (theirs end with BN); the
    bare conv before full pre-activation units (theirs end with the add)."""
    if unit == "full_preact":
        return torch.nn.Conv2d(in_channels, cout, 3, 1, 1, bias=False)
    if unit == "relu_preact":
        return torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, cout, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(cout)
        )
    return conv_bn_relu(in_channels, cout, *CIFAR_STEM, backend=backend)


def unit_resnet(unit, in_channels, stem_width, widths, mids, n, bottleneck, num_classes, backend):
    """conv1, layer1-3 of n units each (stride 2 where a stage starts, but the first), then for
    pre-activation units the pre-activation the next unit would apply (``final``), avgpool, fc."""
    parts, cin = [("conv1", stem(unit, in_channels, stem_width, backend))], stem_width
    for stage, (cout, mid) in enumerate(zip(widths, mids, strict=True)):
        units = []
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            units.append(residual_unit(unit, cin, cout, mid, stride, bottleneck, i == 0, backend))
            cin = cout
        parts.append((f"layer{stage + 1}", torch.nn.Sequential(*units)))
    if unit in PREACTIVATED:
        parts.append(("final", pre_activation(unit, cin)))
    parts += [("avgpool", GlobalAvgPool()), ("fc", torch.nn.Linear(cin, num_classes))]
    return torch.nn.Sequential(OrderedDict(parts))


def check_unit(unit: str) -> str:
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    return unit


def cifar_resnet(
    depth, residual, num_classes, in_channels, backend, width, unit="original"
) -> torch.nn.Sequential:
    """6n+2 layers: a 3x3 conv, three stages of n basic blocks at 16, 32, 64 maps (32, 16, 8 px),
    global average pooling and a 10-way FC. Residual: option A shortcuts; plain: none. ``unit``:
    one of Table 2's units (2016); the original is the 2015 net, under torchvision's names."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    widths = [scaled(c, width) for c in (16, 32, 64)]
    if check_unit(unit) != "original":
        if not residual:
            raise ValueError(f"a plain net has no residual units, got unit={unit!r}")
        return unit_resnet(unit, in_channels, widths[0], widths, widths, n, False, num_classes, backend)
    shortcut = "zero-pad" if residual else "none"
    return resnet(CIFAR_STEM, in_channels, widths, (n, n, n), shortcut, num_classes, backend)


def cifar_bottleneck_resnet(depth, num_classes, in_channels, backend, width, unit) -> torch.nn.Sequential:
    """9n+2 layers (ResNet-164, ResNet-1001): a 3x3 conv to 16 maps, three stages of n bottleneck
    units at 64, 128, 256 maps (their 1x1 and 3x3 convs at a quarter of that), global average
    pooling and the FC; 1x1 projection shortcuts where the shape changes, as the 2016 appendix."""
    if (depth - 2) % 9:
        raise ValueError(f"CIFAR bottleneck ResNet depth must be 9n+2, got {depth}")
    widths = [scaled(c, width) for c in (64, 128, 256)]
    mids = [scaled(c // 4, width) for c in (64, 128, 256)]
    stem_width = scaled(16, width)
    return unit_resnet(
        check_unit(unit), in_channels, stem_width, widths, mids, (depth - 2) // 9, True, num_classes, backend
    )


CIFAR_PUBLISHED = {20: 270_000, 32: 460_000, 44: 660_000, 56: 850_000, 110: 1_700_000}  # Table 6, rounded


def _register_cifar(depth: int, residual: bool):
    name = f"{'resnet' if residual else 'plain'}{depth}"

    def build(num_classes, in_channels, backend, width, unit="original"):
        return cifar_resnet(depth, residual, num_classes, in_channels, backend, width, unit)

    build.__doc__ = (
        f"{'ResNet' if residual else 'Plain net'}-{depth} for CIFAR-10 (section 4.2): 6n+2 = {depth} layers, "
        + (
            "identity shortcuts with zero-padding where the width doubles (option A, no parameters). "
            "``unit=`` builds it with another of the 2016 paper's Table 2 units."
            if residual
            else f"identical to resnet{depth} but with no shortcuts at all: its plain twin."
        )
        + " The paper's Table 6 gives the parameter count to two digits."
    )
    return register_model(
        name,
        family="ResNet-CIFAR" if residual else "Plain-CIFAR",
        paper=PAPER,
        year=2016,
        input_size=32,
        min_input_size=1,
        num_classes=10,
        published_params=CIFAR_PUBLISHED[depth],
        published_digits=2,
    )(build)


for _depth in CIFAR_PUBLISHED:
    _register_cifar(_depth, residual=True)
    _register_cifar(_depth, residual=False)


def unit_model(depth: int, unit: str) -> str:
    """The registered name of the CIFAR ResNet of ``depth`` with ``unit``s: resnet110 (original),
    resnet110-bn_after_add, ..., preresnet110 (full pre-activation)."""
    if unit == "full_preact":
        return f"preresnet{depth}"
    return f"resnet{depth}" if check_unit(unit) == "original" else f"resnet{depth}-{unit}"


# Where ours differs from the 2016 paper, for every net below.
DIFFERENCES_2016 = (
    " Differs from the paper: PyTorch's default init (as our other CIFAR nets; the paper's is He's),"
    " no conv biases (BN follows). Our fused conv-BN-ReLU runs every conv its BN and ReLU follow"
    " directly; a unit's leading BN-ReLU, its last conv, the shortcuts and the final BN-ReLU are native."
)


def _register_identity(name: str, build, published: tuple[int, int] | None = None, family="PreResNet-CIFAR"):
    """Registers a net of the 2016 paper's: CIFAR-sized, published counts (Table 4) where given.
    Table 4's counts are of conv and FC weights: ResNet-1001's 10.2M is 10.18M of weights, while
    with BN's scales and shifts it has 10.33M (ResNet-164: 1.68M and 1.70M, 1.7M either way)."""
    count, digits = published or (None, None)
    return register_model(
        name,
        family=family,
        paper=IDENTITY_PAPER,
        year=2016,
        input_size=32,
        min_input_size=1,
        num_classes=10,
        published_params=count,
        published_digits=digits,
        published_note="conv and FC weights: Table 4's figures fit those, not counts with BN's"
        if count
        else "",
        published_weights_only=bool(count),
    )(build)


def _register_preact(depth: int):
    """preresnet{depth}: the basic 6n+2 net with full pre-activation units."""

    def build(num_classes, in_channels, backend, width):
        return cifar_resnet(depth, True, num_classes, in_channels, backend, width, "full_preact")

    build.__doc__ = (
        f"Pre-activation ResNet-{depth} (He et al. 2016, Figure 4e): resnet{depth}'s layers with full "
        "pre-activation units (BN-ReLU-conv, BN-ReLU-conv, identity added, nothing after); option A "
        "shortcuts as the 2015 CIFAR nets; each stage's first unit applies its BN-ReLU before the split; "
        "a final BN-ReLU before the pool." + DIFFERENCES_2016
    )
    return _register_identity(unit_model(depth, "full_preact"), build)


# Table 4's counts, for the pre-activation nets, with the significant digits it gives.
BOTTLENECK_PUBLISHED = {164: (1_700_000, 2), 1001: (10_200_000, 3)}


def _register_bottleneck(depth: int, preact: bool):
    """resnet{depth} (original units, ``unit=`` for the others) or preresnet{depth}: 9n+2."""
    default = "full_preact" if preact else "original"

    def build(num_classes, in_channels, backend, width, unit=default):
        return cifar_bottleneck_resnet(depth, num_classes, in_channels, backend, width, unit)

    kind = "Pre-activation ResNet" if preact else "ResNet"
    units = (
        "full pre-activation bottleneck units: BN-ReLU-1x1(c/4), BN-ReLU-3x3(c/4), BN-ReLU-1x1(c), the "
        "identity added, nothing after; each stage's first unit applies its BN-ReLU before the split, as "
        "the appendix says (the authors' resnet-pre-act.lua leaves the first stage's out: the stem's "
        "conv output enters unnormalized there); a final BN-ReLU before the pool"
        if preact
        else "the original bottleneck units (1x1-BN-ReLU, 3x3-BN-ReLU, 1x1-BN, added, then ReLU), "
        "projections with BN; ``unit=`` builds Table 2's other units"
    )
    build.__doc__ = (
        f"{kind}-{depth} for CIFAR-10 (He et al. 2016, Table 3): 9n+2 = {depth} layers, stage widths 64, "
        f"128, 256 after a 16-map stem, {units}. As resnet-pre-act.lua, the stride sits on a stage's "
        "first 1x1 conv." + DIFFERENCES_2016
    )
    published = BOTTLENECK_PUBLISHED[depth] if preact else None
    family = "PreResNet-CIFAR" if preact else "ResNet-CIFAR"
    return _register_identity(f"{'pre' if preact else ''}resnet{depth}", build, published, family)


def _register_unit(depth: int, unit: str):
    """resnet{depth}-{unit}: one of Table 2's units between the original and full pre-activation."""

    def build(num_classes, in_channels, backend, width):
        return cifar_resnet(depth, True, num_classes, in_channels, backend, width, unit)

    build.__doc__ = (
        f"resnet{depth} with Table 2's {unit.replace('_', ' ')} units (He et al. 2016, Figure 4): the "
        "same convs and option A shortcuts, BN and ReLU placed as that unit places them." + DIFFERENCES_2016
    )
    return _register_identity(unit_model(depth, unit), build, family="ResNet-CIFAR")


TABLE2_DEPTHS = (20, 110)  # the identity suite's Table 2: quick's depth and the paper's


for _depth in CIFAR_PUBLISHED:
    _register_preact(_depth)
for _depth in BOTTLENECK_PUBLISHED:
    _register_bottleneck(_depth, preact=False)
    _register_bottleneck(_depth, preact=True)
for _depth in TABLE2_DEPTHS:
    for _unit in ("bn_after_add", "relu_before_add", "relu_preact"):
        _register_unit(_depth, _unit)
