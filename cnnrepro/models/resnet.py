"""ResNet (He, Zhang, Ren, Sun 2016): ImageNet ResNet-18/34, and the CIFAR 6n+2 ResNets with
their plain twins (the degradation experiment, Figure 6)."""

import torch
import torch.nn.functional as F

from cnnrepro.models.blocks import GlobalAvgPool, conv_bn_relu, max_pool, scaled
from cnnrepro.models.registry import register_model

PAPER = "He, Zhang, Ren, Sun. Deep residual learning for image recognition. CVPR 2016"


class BasicBlock(torch.nn.Module):
    """conv3x3-BN-ReLU, conv3x3-BN, plus the shortcut, then ReLU. ``shortcut`` maps the input to the
    output's shape; None makes it a plain block (no addition at all)."""

    def __init__(self, cin, cout, stride, shortcut: torch.nn.Module | None, backend):
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cout, 3, stride, 1, backend)
        self.conv2 = torch.nn.Sequential(
            torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(cout)
        )
        self.shortcut = shortcut

    def forward(self, x):
        out = self.conv2(self.conv1(x))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return torch.relu(out)


class Identity(torch.nn.Module):
    def forward(self, x):
        return x


class ZeroPadShortcut(torch.nn.Module):
    """Option A: subsample by the stride and pad the new channels with zeros. No parameters."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride, self.extra = stride, extra_channels

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


def projection(cin, cout, stride) -> torch.nn.Sequential:
    """Option B: 1x1 conv + BatchNorm where the shape changes (torchvision's ImageNet ResNets)."""
    return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False), torch.nn.BatchNorm2d(cout))


def stages(cin, widths, blocks_per_stage, make_shortcut, backend) -> tuple[list[torch.nn.Module], int]:
    """Basic blocks stage by stage; every stage after the first starts with stride 2.
    make_shortcut(cin, cout, stride) gives each block its shortcut (None: a plain block)."""
    blocks = []
    for stage, (cout, count) in enumerate(zip(widths, blocks_per_stage, strict=True)):
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            blocks.append(BasicBlock(cin, cout, stride, make_shortcut(cin, cout, stride), backend))
            cin = cout
    return blocks, cin


def projection_or_identity(cin, cout, stride):
    return projection(cin, cout, stride) if stride != 1 or cin != cout else Identity()


def zero_pad_or_identity(cin, cout, stride):
    return ZeroPadShortcut(stride, cout - cin) if stride != 1 or cin != cout else Identity()


def no_shortcut(cin, cout, stride):
    return None


def imagenet_resnet(num_classes, in_channels, backend, width, blocks_per_stage) -> torch.nn.Sequential:
    widths = [scaled(c, width) for c in (64, 128, 256, 512)]
    stem = [conv_bn_relu(in_channels, widths[0], 7, 2, 3, backend), max_pool(3, 2, 1, backend=backend)]
    blocks, channels = stages(widths[0], widths, blocks_per_stage, projection_or_identity, backend)
    return torch.nn.Sequential(*stem, *blocks, GlobalAvgPool(), torch.nn.Linear(channels, num_classes))


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


def cifar_resnet(depth, residual, num_classes, in_channels, backend, width) -> torch.nn.Sequential:
    """6n+2 layers: a 3x3 conv, three stages of n basic blocks at 16, 32, 64 maps (32, 16, 8 px),
    global average pooling and a 10-way FC. Residual: option A shortcuts; plain: none."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    widths = [scaled(c, width) for c in (16, 32, 64)]
    stem = conv_bn_relu(in_channels, widths[0], 3, 1, 1, backend)
    shortcut = zero_pad_or_identity if residual else no_shortcut
    blocks, channels = stages(widths[0], widths, (n, n, n), shortcut, backend)
    return torch.nn.Sequential(stem, *blocks, GlobalAvgPool(), torch.nn.Linear(channels, num_classes))


CIFAR_PUBLISHED = {20: 270_000, 32: 460_000, 44: 660_000, 56: 850_000, 110: 1_700_000}  # Table 6, rounded


def _register_cifar(depth: int, residual: bool):
    name = f"{'resnet' if residual else 'plain'}{depth}"

    def build(num_classes, in_channels, backend, width):
        return cifar_resnet(depth, residual, num_classes, in_channels, backend, width)

    build.__doc__ = (
        f"{'ResNet' if residual else 'Plain net'}-{depth} for CIFAR-10 (section 4.2): 6n+2 = {depth} layers, "
        + (
            "identity shortcuts with zero-padding where the width doubles (option A, no parameters)."
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
    )(build)


for _depth in CIFAR_PUBLISHED:
    _register_cifar(_depth, residual=True)
    _register_cifar(_depth, residual=False)
