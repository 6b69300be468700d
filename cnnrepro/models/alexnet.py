"""AlexNet (Krizhevsky, Sutskever, Hinton 2012)."""

import torch

from cnnrepro import nn as cnn
from cnnrepro.models.blocks import (
    classifier,
    conv_relu,
    features_classifier,
    flat_features,
    init_relu_network,
    max_pool,
    scaled,
)
from cnnrepro.models.registry import register_model


@register_model(
    "alexnet",
    family="AlexNet",
    year=2012,
    input_size=224,
    min_input_size=63,
    paper="Krizhevsky, Sutskever, Hinton. ImageNet classification with deep convolutional neural networks. "
    "NeurIPS 2012",
)
def alexnet(num_classes, in_channels, backend, width, input_size=224, dropout=0.5):
    """AlexNet as one tower: conv 96-11x11/4, LRN, overlapping max-pool 3x3/2, conv 256-5x5, LRN,
    max-pool, conv 384, 384, 256 (3x3), max-pool, FC 4096-4096-classes with dropout 0.5. LRN with the
    paper's constants (k=2, n=5, alpha=1e-4, beta=0.75; alpha not divided by n). Differs from the
    paper: one tower instead of two GPU halves (same layer sizes, no grouped connections); padding 2
    on conv1, so a 224 input gives the paper's 55x55 maps; He-normal convs instead of the paper's
    N(0, 0.01) with unit biases, which trains far slower at small widths. The first FC's width
    follows input_size."""
    features = features_of(in_channels, width, backend, conv1_padding=2, with_lrn=True)
    head = classifier(
        flat_features(features, in_channels, input_size), scaled(4096, width), num_classes, dropout
    )
    return init_relu_network(features_classifier(features, head), linear_std=None)


def features_of(in_channels, width, backend, conv1_padding: int, with_lrn: bool) -> torch.nn.Sequential:
    """AlexNet's five convs and three overlapping 3x3/2 max-pools, with the paper's LRN after the
    first two convs (``with_lrn``; d2l's AlexNet has none)."""
    c1, c2, c3, c4, c5 = (scaled(c, width) for c in (96, 256, 384, 384, 256))

    def lrn():
        return [cnn.LocalResponseNorm.paper(5, 1e-4, 0.75, 2.0, backend=backend)] if with_lrn else []

    return torch.nn.Sequential(
        conv_relu(in_channels, c1, 11, 4, conv1_padding),
        *lrn(),
        max_pool(3, 2, backend=backend),
        conv_relu(c1, c2, 5, 1, 2),
        *lrn(),
        max_pool(3, 2, backend=backend),
        conv_relu(c2, c3, 3, 1, 1),
        conv_relu(c3, c4, 3, 1, 1),
        conv_relu(c4, c5, 3, 1, 1),
        max_pool(3, 2, backend=backend),
    )
