"""LeNet-5 (LeCun et al. 1998), in its modern form and with the 1998 details."""

import torch
import torch.nn.functional as F

from cnnrepro.models.blocks import max_pool, scaled
from cnnrepro.models.registry import register_model

PAPER = "LeCun, Bottou, Bengio, Haffner. Gradient-based learning applied to document recognition. 1998"

ACTIVATIONS = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}


def _pool(kind: str, backend: str) -> torch.nn.Module:
    if kind == "avg":
        return torch.nn.AvgPool2d(2, 2)
    if kind == "max":
        return max_pool(2, 2, backend=backend)
    raise ValueError(f"pooling must be 'avg' or 'max', got {kind!r}")


@register_model(
    "lenet5",
    family="LeNet",
    paper=PAPER,
    year=1998,
    input_size=32,
    min_input_size=28,
    num_classes=10,
    in_channels=1,
    published_params=61_706,
)
def lenet5(num_classes, in_channels, backend, width, activation="sigmoid", pooling="avg", input_size=32):
    """LeNet-5 as d2l and most courses build it: C1 6@5x5, S2 2x2 pool, C3 16@5x5 fully connected to
    S2, S4 pool, F5 120, F6 84, output 10; activation ('sigmoid', 'relu', 'tanh') and pooling ('avg',
    'max') selectable. Differs from 1998: full C3, parameter-free pooling, a linear output instead
    of RBF units. input_size 28 pads C1 by 2 (the d2l way) so every layer keeps its 32x32 sizes."""
    if input_size not in (28, 32):
        raise ValueError(f"lenet5 takes 28x28 (padded) or 32x32 input, got {input_size}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    act = ACTIVATIONS[activation]
    c1, c3, f5, f6 = (scaled(c, width) for c in (6, 16, 120, 84))
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, c1, 5, padding=2 if input_size == 28 else 0),
        act(),
        _pool(pooling, backend),
        torch.nn.Conv2d(c1, c3, 5),
        act(),
        _pool(pooling, backend),
        torch.nn.Flatten(),
        torch.nn.Linear(c3 * 5 * 5, f5),
        act(),
        torch.nn.Linear(f5, f6),
        act(),
        torch.nn.Linear(f6, num_classes),
    )


# LeCun 1998, Table I: which S2 maps each C3 map sees.
C3_TABLE = [[i % 6, (i + 1) % 6, (i + 2) % 6] for i in range(6)]
C3_TABLE += [[(i + k) % 6 for k in range(4)] for i in range(6)]
C3_TABLE += [[0, 1, 3, 4], [1, 2, 4, 5], [0, 2, 3, 5], [0, 1, 2, 3, 4, 5]]


class PartialConv2d(torch.nn.Module):
    """A convolution whose output map o sees only the input maps table[o]: one 5x5 kernel per
    connection (the only trainable weights), scattered into a dense kernel for F.conv2d."""

    def __init__(self, in_channels: int, table: list[list[int]], kernel_size: int):
        super().__init__()
        pairs = [(o, i) for o, inputs in enumerate(table) for i in inputs]
        self.out_channels, self.in_channels, self.kernel_size = len(table), in_channels, kernel_size
        self.register_buffer("out_index", torch.tensor([o for o, _ in pairs]), persistent=False)
        self.register_buffer("in_index", torch.tensor([i for _, i in pairs]), persistent=False)
        fan_in = [len(table[o]) * kernel_size**2 for o, _ in pairs]
        bound = torch.tensor([2.4 / f for f in fan_in]).view(-1, 1, 1)  # LeCun's init: U(-2.4/F, 2.4/F)
        self.weight = torch.nn.Parameter((torch.rand(len(pairs), kernel_size, kernel_size) * 2 - 1) * bound)
        self.bias = torch.nn.Parameter(torch.zeros(self.out_channels))

    def forward(self, x):
        k = self.kernel_size
        dense = self.weight.new_zeros(self.out_channels, self.in_channels, k, k)
        dense = dense.index_put((self.out_index, self.in_index), self.weight)
        return F.conv2d(x, dense, self.bias)


class Subsampling(torch.nn.Module):
    """LeNet's S layers: the sum of each 2x2 block times a trainable coefficient, plus a trainable
    bias, per feature map (2 parameters a map)."""

    def __init__(self, channels: int):
        super().__init__()
        self.coefficient = torch.nn.Parameter(torch.ones(channels))
        self.bias = torch.nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        summed = F.avg_pool2d(x, 2) * 4
        return summed * self.coefficient.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class ScaledTanh(torch.nn.Module):
    """LeCun's squashing function f(a) = 1.7159 tanh(2a/3)."""

    def forward(self, x):
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


@register_model(
    "lenet5-1998",
    family="LeNet",
    paper=PAPER,
    year=1998,
    input_size=32,
    min_input_size=32,
    num_classes=10,
    in_channels=1,
)
def lenet5_1998(num_classes, in_channels, backend, width):
    """LeNet-5 with the 1998 paper's details: C3's partial connection table (Table I, 1,516
    parameters instead of 2,416), trainable subsampling layers S2 and S4, scaled tanh. The output
    layer is linear (850 parameters) where the paper has Euclidean RBF units of the same size;
    width is ignored (the connection table fixes C3's shape). 32x32 input, as in the paper."""
    del backend, width  # no pooling op to swap; the table fixes the widths
    if in_channels != 1:
        raise ValueError("lenet5-1998 reads one input channel, as the paper's")
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5),
        ScaledTanh(),
        Subsampling(6),
        ScaledTanh(),
        PartialConv2d(6, C3_TABLE, 5),
        ScaledTanh(),
        Subsampling(16),
        ScaledTanh(),
        torch.nn.Conv2d(16, 120, 5),
        ScaledTanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(120, 84),
        ScaledTanh(),
        torch.nn.Linear(84, num_classes),
    )
