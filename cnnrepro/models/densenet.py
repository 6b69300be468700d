"""DenseNet (Huang, Liu, van der Maaten, Weinberger 2017): DenseNet-121 and d2l's small DenseNet."""

from collections import OrderedDict

import torch

from cnnrepro.models.blocks import GlobalAvgPool, conv_bn_relu, max_pool, scaled
from cnnrepro.models.registry import register_model

PAPER = "Huang, Liu, van der Maaten, Weinberger. Densely connected convolutional networks. CVPR 2017"


class DenseLayer(torch.nn.Module):
    """One layer of a dense block, pre-activation, named as torchvision's: norm1, relu1, conv1 (a
    1x1 to ``bottleneck * growth`` maps), norm2, relu2, conv2 (3x3 to ``growth``); without a
    bottleneck (d2l's DenseNet) only norm1, relu1 and a 3x3 conv1. ``bias``: whether the convs have
    biases (the paper's and torchvision's do not; d2l's, with nn.Conv2d's default, do)."""

    def __init__(self, cin, growth, bottleneck, bias=False):
        super().__init__()
        self.norm1 = torch.nn.BatchNorm2d(cin)
        self.relu1 = torch.nn.ReLU(inplace=True)
        if bottleneck:  # DenseNet-B
            middle = bottleneck * growth
            self.conv1 = torch.nn.Conv2d(cin, middle, 1, bias=bias)
            self.norm2 = torch.nn.BatchNorm2d(middle)
            self.relu2 = torch.nn.ReLU(inplace=True)
            self.conv2 = torch.nn.Conv2d(middle, growth, 3, padding=1, bias=bias)
        else:
            self.conv1 = torch.nn.Conv2d(cin, growth, 3, padding=1, bias=bias)
        self.bottleneck = bottleneck

    def forward(self, x):
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x))) if self.bottleneck else x


class DenseBlock(torch.nn.Module):
    """Each layer (denselayer1, ...) sees the concatenation of the block's input and every earlier
    layer's output."""

    def __init__(self, cin, layers, growth, bottleneck, bias=False):
        super().__init__()
        for i in range(layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth, bottleneck, bias))
        self.out_channels = cin + layers * growth

    def forward(self, x):
        features = [x]
        for layer in self.children():
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


def transition(cin, cout, bias=False) -> torch.nn.Sequential:
    """BN-ReLU-1x1 conv then 2x2/2 average pooling between dense blocks (norm, relu, conv, pool)."""
    return torch.nn.Sequential(
        OrderedDict(
            norm=torch.nn.BatchNorm2d(cin),
            relu=torch.nn.ReLU(inplace=True),
            conv=torch.nn.Conv2d(cin, cout, 1, bias=bias),
            pool=torch.nn.AvgPool2d(2, 2),
        )
    )


def densenet(
    num_classes, in_channels, backend, width, growth, blocks, init, bottleneck, conv_bias=False
) -> torch.nn.Sequential:
    """Named as torchvision's DenseNet: features (conv0 with norm0 and relu0 fused, pool0,
    denseblock1, transition1, ..., norm5), then ReLU, global average pooling and the classifier.
    ``conv_bias`` gives every convolution a bias (d2l's DenseNet)."""
    growth, init = scaled(growth, width), scaled(init, width)
    features = [
        ("conv0", conv_bn_relu(in_channels, init, 7, 2, 3, backend, bias=conv_bias)),
        ("pool0", max_pool(3, 2, 1, backend=backend)),
    ]
    channels = init
    for i, count in enumerate(blocks, 1):
        block = DenseBlock(channels, count, growth, bottleneck, conv_bias)
        features.append((f"denseblock{i}", block))
        channels = block.out_channels
        if i != len(blocks):
            features.append((f"transition{i}", transition(channels, channels // 2, conv_bias)))
            channels //= 2
    features.append(("norm5", torch.nn.BatchNorm2d(channels)))
    return torch.nn.Sequential(
        OrderedDict(
            features=torch.nn.Sequential(OrderedDict(features)),
            relu=torch.nn.ReLU(inplace=True),
            avgpool=GlobalAvgPool(),
            classifier=torch.nn.Linear(channels, num_classes),
        )
    )


@register_model(
    "densenet121",
    family="DenseNet",
    paper=PAPER,
    year=2017,
    input_size=224,
    min_input_size=29,
    published_params=7_978_856,
)
def densenet121(num_classes, in_channels, backend, width):
    """DenseNet-BC-121: growth rate 32, blocks of 6, 12, 24, 16 bottleneck layers (BN-ReLU-1x1 to
    128 maps, BN-ReLU-3x3), transitions halving the channels with 2x2 average pooling, a 7x7/2 conv
    stem with 3x3/2 max-pool, global average pooling. As the paper and torchvision."""
    return densenet(
        num_classes, in_channels, backend, width, growth=32, blocks=(6, 12, 24, 16), init=64, bottleneck=4
    )


@register_model(
    "densenet-d2l",
    family="DenseNet",
    paper=PAPER,
    year=2017,
    input_size=96,
    min_input_size=29,
    num_classes=10,
    in_channels=1,
)
def densenet_d2l(num_classes, in_channels, backend, width):
    """d2l's small DenseNet (chapter 7.7): the DenseNet-121 stem, four dense blocks of four
    BN-ReLU-3x3 layers with growth rate 32 (no bottleneck), transitions halving the channels; every
    convolution has a bias, as the book's nn.Conv2d layers keep their default bias=True."""
    return densenet(
        num_classes,
        in_channels,
        backend,
        width,
        growth=32,
        blocks=(4, 4, 4, 4),
        init=64,
        bottleneck=0,
        conv_bias=True,
    )
