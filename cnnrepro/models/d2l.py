"""d2l's own networks (Dive into Deep Learning, chapter 7, PyTorch edition): what its Fashion-MNIST
accuracies were measured on, for the d2l profile. Each differs from its paper's network as the
book's code does, and is initialized as the book's training function does (Xavier-uniform weights
of every conv and linear layer). LeNet-5, NiN and DenseNet need no twin: ``lenet5`` under the d2l
recipe's config, ``nin`` and ``densenet-d2l`` are the book's layer for layer."""

import torch

from cnnrepro.models import alexnet as alexnet_module
from cnnrepro.models import googlenet as googlenet_module
from cnnrepro.models import vgg as vgg_module
from cnnrepro.models.blocks import (
    GlobalAvgPool,
    classifier,
    conv_bn_relu,
    conv_relu,
    features_classifier,
    flat_features,
    init_glorot,
    max_pool,
    scaled,
)
from cnnrepro.models.registry import register_model

BOOK = "Zhang, Lipton, Li, Smola. Dive into Deep Learning, chapter 7 (PyTorch)"
D2L = dict(num_classes=10, in_channels=1)  # Fashion-MNIST


def init_xavier(model: torch.nn.Module) -> torch.nn.Module:
    """The book's ``init_weights``: Glorot-uniform weights for every conv and linear layer, biases
    left at PyTorch's default."""
    return init_glorot(model, (torch.nn.Conv2d, torch.nn.Linear), zero_biases=False)


@register_model(
    "alexnet-d2l", family="AlexNet", paper=BOOK, year=2012, input_size=224, min_input_size=65, **D2L
)
def alexnet_d2l(num_classes, in_channels, backend, width, input_size=224, dropout=0.5):
    """d2l's AlexNet: conv 96-11x11/4 with padding 1 (the paper's has none, ours 2), no LRN, max-pool
    3x3/2, conv 256-5x5, max-pool, conv 384, 384, 256 (3x3), max-pool, FC 4096-4096-classes with
    dropout 0.5 (6400 inputs at 224). Otherwise as ``alexnet``: one tower."""
    features = alexnet_module.features_of(in_channels, width, backend, conv1_padding=1, with_lrn=False)
    head = classifier(
        flat_features(features, in_channels, input_size), scaled(4096, width), num_classes, dropout
    )
    return init_xavier(features_classifier(features, head))


@register_model("vgg11-d2l", family="VGG", paper=BOOK, year=2015, input_size=224, min_input_size=32, **D2L)
def vgg11_d2l(num_classes, in_channels, backend, width, input_size=224, dropout=0.5):
    """d2l's small VGG-11: configuration A with a quarter of the conv channels (16, 32, 64 x2, 128 x2,
    128 x2) but the full 4096-wide FC layers, with dropout 0.5; conv biases, no BatchNorm. The paper
    (and ``vgg11``) keep 64 ... 512 channels; ours at width 0.25 also shrinks the FC layers."""
    quarter = [c if c == "M" else c // 4 for c in vgg_module.CONFIGS["vgg11"]]
    features = vgg_module.features(quarter, in_channels, width, batch_norm=False, backend=backend)
    head = classifier(
        flat_features(features, in_channels, input_size), scaled(4096, width), num_classes, dropout
    )
    return init_xavier(features_classifier(features, head))


class InceptionD2L(torch.nn.Module):
    """d2l's Inception block: the paper's four branches, each conv with a bias and a ReLU, no
    BatchNorm; the pool branch a 3x3/1 max-pool with padding 1."""

    def __init__(self, cin, c1, c3r, c3, c5r, c5, pool_proj, backend):
        super().__init__()
        self.branch1 = conv_relu(cin, c1, 1)
        self.branch2 = torch.nn.Sequential(conv_relu(cin, c3r, 1), conv_relu(c3r, c3, 3, 1, 1))
        self.branch3 = torch.nn.Sequential(conv_relu(cin, c5r, 1), conv_relu(c5r, c5, 5, 1, 2))
        self.branch4 = torch.nn.Sequential(max_pool(3, 1, 1, backend=backend), conv_relu(cin, pool_proj, 1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


@register_model(
    "googlenet-d2l", family="GoogLeNet", paper=BOOK, year=2015, input_size=96, min_input_size=1, **D2L
)
def googlenet_d2l(num_classes, in_channels, backend, width):
    """d2l's GoogLeNet: the paper's stem (conv 64-7x7/2, max-pool, conv 64-1x1, conv 192-3x3,
    max-pool) and nine Inception blocks of Table 1, with conv biases and no BatchNorm (torchvision's
    and ``googlenet`` add it), every max-pool 3x3/2 with padding 1 (not ceil mode), no auxiliary
    classifiers, global average pooling and one FC layer, without dropout."""

    def inception(name):
        channels = [scaled(c, width) for c in googlenet_module.INCEPTION[name]]
        return InceptionD2L(*channels, backend=backend)

    def pool():
        return max_pool(3, 2, 1, backend=backend)

    c64, c192 = scaled(64, width), scaled(192, width)
    return init_xavier(
        torch.nn.Sequential(
            conv_relu(in_channels, c64, 7, 2, 3),
            pool(),
            conv_relu(c64, c64, 1),
            conv_relu(c64, c192, 3, 1, 1),
            pool(),
            *(inception(name) for name in ("3a", "3b")),
            pool(),
            *(inception(name) for name in ("4a", "4b", "4c", "4d", "4e")),
            pool(),
            *(inception(name) for name in ("5a", "5b")),
            GlobalAvgPool(),
            torch.nn.Linear(scaled(1024, width), num_classes),
        )
    )


class ResidualD2L(torch.nn.Module):
    """d2l's Residual: conv3x3-BN-ReLU, conv3x3-BN, plus the input (through a 1x1 conv with a bias
    and no BatchNorm where the shape changes), then ReLU; every conv has a bias."""

    def __init__(self, cin, cout, stride, backend):
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cout, 3, stride, 1, backend, bias=True)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.shortcut = torch.nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        out = self.bn2(self.conv2(self.conv1(x)))
        return torch.relu(out + (x if self.shortcut is None else self.shortcut(x)))


@register_model(
    "resnet18-d2l", family="ResNet", paper=BOOK, year=2016, input_size=96, min_input_size=1, **D2L
)
def resnet18_d2l(num_classes, in_channels, backend, width):
    """d2l's ResNet-18: the paper's stem (conv 64-7x7/2, BN, ReLU, max-pool 3x3/2) and four stages of
    two residual blocks (64, 128, 256, 512 channels), global average pooling, FC. Unlike the paper's
    and torchvision's: conv biases, and a 1x1 conv shortcut without BatchNorm."""
    widths = [scaled(c, width) for c in (64, 128, 256, 512)]
    blocks, cin = [], widths[0]
    for stage, cout in enumerate(widths):
        for i in range(2):
            blocks.append(ResidualD2L(cin, cout, 2 if stage > 0 and i == 0 else 1, backend))
            cin = cout
    return init_xavier(
        torch.nn.Sequential(
            conv_bn_relu(in_channels, widths[0], 7, 2, 3, backend, bias=True),
            max_pool(3, 2, 1, backend=backend),
            *blocks,
            GlobalAvgPool(),
            torch.nn.Linear(widths[-1], num_classes),
        )
    )
