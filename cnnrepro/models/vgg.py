"""VGG (Simonyan and Zisserman 2015): configurations A, B, D, E, plain and with BatchNorm."""

import torch

from cnnrepro.models.blocks import (
    classifier,
    conv_bn_relu,
    features_classifier,
    flat_features,
    init_glorot,
    init_relu_network,
    max_pool,
    scaled,
)
from cnnrepro.models.registry import register_model

PAPER = "Simonyan, Zisserman. Very deep convolutional networks for large-scale image recognition. ICLR 2015"

# Table 1 of the paper: output channels of each 3x3 conv, "M" a 2x2/2 max-pool.
CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # A
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # B
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],  # D
    "vgg19": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}
LINEAR_INITS = ("glorot", "normal")  # the FC layers' init: Glorot and Bengio's, or the paper's N(0, 0.01)
PUBLISHED = {"vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240}


def features(config, in_channels, width, batch_norm, backend) -> torch.nn.Sequential:
    """The conv layers, flat as torchvision's: Conv2d, ReLU (or one ConvBNReLU2d for Conv2d,
    BatchNorm2d, ReLU), and the max-pools."""
    layers, channels = [], in_channels
    for item in config:
        if item == "M":
            layers.append(max_pool(2, 2, backend=backend))
            continue
        out = scaled(item, width)
        if batch_norm:  # keeps the conv's bias, as torchvision's _bn models do
            layers.append(conv_bn_relu(channels, out, 3, 1, 1, backend, bias=True))
        else:
            layers += [torch.nn.Conv2d(channels, out, 3, 1, 1), torch.nn.ReLU(inplace=True)]
        channels = out
    return torch.nn.Sequential(*layers)


def _register(name: str, batch_norm: bool):
    config = CONFIGS[name]
    key = f"{name}_bn" if batch_norm else name

    def build(num_classes, in_channels, backend, width, input_size=224, dropout=0.5, linear_init="glorot"):
        feats = features(config, in_channels, width, batch_norm, backend)
        head = classifier(
            flat_features(feats, in_channels, input_size), scaled(4096, width), num_classes, dropout
        )
        if linear_init not in LINEAR_INITS:
            raise ValueError(f"linear_init must be one of {LINEAR_INITS}, got {linear_init!r}")
        if linear_init == "normal":
            return init_relu_network(features_classifier(feats, head))
        return init_glorot(init_relu_network(features_classifier(feats, head), linear_std=None))

    build.__doc__ = (
        f"VGG configuration {'ABDE'[list(CONFIGS).index(name)]} ({name}): 3x3 convs with padding 1, 2x2/2 "
        "max-pools, FC 4096-4096-classes with dropout 0.5"
        + (
            ", with BatchNorm after every conv (not in the paper; torchvision's _bn variants)"
            if batch_norm
            else ""
        )
        + ". The first FC's width follows input_size (512x7x7 at 224, as in the paper). He-normal convs "
        "(torchvision's); FC layers Glorot-initialized, which the paper names as training without its "
        "pre-training of net A (linear_init='normal': its N(0, 0.01), which leaves a narrow net at "
        "chance for epochs: scripts/recipe_search.csv)."
    )
    return register_model(
        key,
        family="VGG",
        paper=PAPER,
        year=2015,
        input_size=224,
        min_input_size=32,
        published_params=None if batch_norm else PUBLISHED[name],
    )(build)


for _name in CONFIGS:
    _register(_name, batch_norm=False)
    _register(_name, batch_norm=True)
