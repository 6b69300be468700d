"""ResNet (He, Zhang, Ren, Sun 2016): ImageNet ResNet-18/34, and the CIFAR 6n+2 ResNets with
their plain twins (the degradation experiment, Figure 6)."""

from collections import OrderedDict

import torch
import torch.nn.functional as F

from cnnrepro.models.blocks import GlobalAvgPool, conv_bn_relu, max_pool, scaled
from cnnrepro.models.registry import register_model

PAPER = "He, Zhang, Ren, Sun. Deep residual learning for image recognition. CVPR 2016"


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


def cifar_resnet(depth, residual, num_classes, in_channels, backend, width) -> torch.nn.Sequential:
    """6n+2 layers: a 3x3 conv, three stages of n basic blocks at 16, 32, 64 maps (32, 16, 8 px),
    global average pooling and a 10-way FC. Residual: option A shortcuts; plain: none."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    widths = [scaled(c, width) for c in (16, 32, 64)]
    shortcut = "zero-pad" if residual else "none"
    return resnet(CIFAR_STEM, in_channels, widths, (n, n, n), shortcut, num_classes, backend)


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
        published_digits=2,
    )(build)


for _depth in CIFAR_PUBLISHED:
    _register_cifar(_depth, residual=True)
    _register_cifar(_depth, residual=False)
