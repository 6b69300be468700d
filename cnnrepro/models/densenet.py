"""DenseNet (Huang, Liu, van der Maaten, Weinberger 2017): DenseNet-121 and d2l's small DenseNet."""

import torch

from cnnrepro.models.blocks import GlobalAvgPool, conv_bn_relu, max_pool, scaled
from cnnrepro.models.registry import register_model

PAPER = "Huang, Liu, van der Maaten, Weinberger. Densely connected convolutional networks. CVPR 2017"


def bn_relu_conv(cin, cout, kernel, padding=0) -> torch.nn.Sequential:
    """The pre-activation unit of DenseNet: BatchNorm, ReLU, then the conv (no bias)."""
    return torch.nn.Sequential(
        torch.nn.BatchNorm2d(cin),
        torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(cin, cout, kernel, padding=padding, bias=False),
    )


class DenseBlock(torch.nn.Module):
    """Each layer sees the concatenation of the block's input and every earlier layer's output."""

    def __init__(self, cin, layers, growth, bottleneck):
        super().__init__()

        def layer(i):
            channels = cin + i * growth
            if bottleneck:  # DenseNet-B: 1x1 to bottleneck*growth maps, then 3x3
                return torch.nn.Sequential(
                    bn_relu_conv(channels, bottleneck * growth, 1),
                    bn_relu_conv(bottleneck * growth, growth, 3, 1),
                )
            return bn_relu_conv(channels, growth, 3, 1)

        self.layers = torch.nn.ModuleList(layer(i) for i in range(layers))
        self.out_channels = cin + layers * growth

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


def transition(cin, cout) -> torch.nn.Sequential:
    """BN-ReLU-1x1 conv then 2x2/2 average pooling between dense blocks."""
    return torch.nn.Sequential(bn_relu_conv(cin, cout, 1), torch.nn.AvgPool2d(2, 2))


def densenet(
    num_classes, in_channels, backend, width, growth, blocks, init, bottleneck
) -> torch.nn.Sequential:
    growth, init = scaled(growth, width), scaled(init, width)
    layers = [conv_bn_relu(in_channels, init, 7, 2, 3, backend), max_pool(3, 2, 1, backend=backend)]
    channels = init
    for i, count in enumerate(blocks):
        block = DenseBlock(channels, count, growth, bottleneck)
        layers.append(block)
        channels = block.out_channels
        if i != len(blocks) - 1:
            layers.append(transition(channels, channels // 2))
            channels //= 2
    layers += [
        torch.nn.BatchNorm2d(channels),
        torch.nn.ReLU(inplace=True),
        GlobalAvgPool(),
        torch.nn.Linear(channels, num_classes),
    ]
    return torch.nn.Sequential(*layers)


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
    BN-ReLU-3x3 layers with growth rate 32 (no bottleneck), transitions halving the channels."""
    return densenet(
        num_classes, in_channels, backend, width, growth=32, blocks=(4, 4, 4, 4), init=64, bottleneck=0
    )
