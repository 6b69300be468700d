"""Network in Network (Lin, Chen, Yan 2014), in d2l's ImageNet-sized form."""

import torch

from cnnrepro.models.blocks import GlobalAvgPool, conv_relu, init_relu_network, max_pool, scaled
from cnnrepro.models.registry import register_model


def nin_block(cin, cout, kernel, stride, padding) -> torch.nn.Sequential:
    """A conv followed by two 1x1 convs (the "mlpconv" layer), each with ReLU."""
    return torch.nn.Sequential(
        conv_relu(cin, cout, kernel, stride, padding), conv_relu(cout, cout, 1), conv_relu(cout, cout, 1)
    )


@register_model(
    "nin",
    family="NiN",
    year=2014,
    input_size=224,
    min_input_size=67,
    paper="Lin, Chen, Yan. Network in network. ICLR 2014",
)
def nin(num_classes, in_channels, backend, width, dropout=0.5):
    """NiN blocks of 11x11/4 (96), 5x5 (256) and 3x3 (384) convs, each followed by two 1x1 convs and
    a 3x3/2 max-pool, dropout, a last NiN block with one map per class, and global average pooling:
    no fully connected layer. The channel plan is d2l's ImageNet version of the paper's network."""
    c1, c2, c3 = (scaled(c, width) for c in (96, 256, 384))
    return init_relu_network(
        torch.nn.Sequential(
            nin_block(in_channels, c1, 11, 4, 0),
            max_pool(3, 2, backend=backend),
            nin_block(c1, c2, 5, 1, 2),
            max_pool(3, 2, backend=backend),
            nin_block(c2, c3, 3, 1, 1),
            max_pool(3, 2, backend=backend),
            torch.nn.Dropout(dropout),
            nin_block(c3, num_classes, 3, 1, 1),
            GlobalAvgPool(),
        )
    )
