"""GoogLeNet / Inception v1 (Szegedy et al. 2015)."""

import torch

from cnnrepro.models.blocks import GlobalAvgPool, conv_bn_relu, max_pool, scaled
from cnnrepro.models.registry import register_model

# The paper's Table 1: in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION = {
    "3a": (192, 64, 96, 128, 16, 32, 32),
    "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64),
    "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64),
    "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}
BN_EPS = 1e-3  # torchvision's BasicConv2d


class Inception(torch.nn.Module):
    """Four parallel branches concatenated, named as torchvision's: branch1 1x1; branch2 1x1 -> 3x3;
    branch3 1x1 -> 5x5; branch4 3x3/1 max-pool -> 1x1."""

    def __init__(self, cin, c1, c3r, c3, c5r, c5, pool_proj, backend, branch5_kernel=5):
        super().__init__()

        def unit(i, o, k):
            return conv_bn_relu(i, o, k, 1, k // 2, backend, eps=BN_EPS)

        self.branch1 = unit(cin, c1, 1)
        self.branch2 = torch.nn.Sequential(unit(cin, c3r, 1), unit(c3r, c3, 3))
        self.branch3 = torch.nn.Sequential(unit(cin, c5r, 1), unit(c5r, c5, branch5_kernel))
        self.branch4 = torch.nn.Sequential(
            max_pool(3, 1, 1, ceil_mode=True, backend=backend), unit(cin, pool_proj, 1)
        )

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


AUX_POOL = (5, 3)  # the paper's 5x5/3 average pool: 4x4 out of 4a's and 4d's 14x14 maps


class AuxClassifier(torch.nn.Module):
    """The auxiliary head after 4a and 4d: 5x5/3 average pool, 1x1 conv 128, FC 1024, dropout 0.7, FC.

    ``map_size`` is the side of the maps it reads. On maps smaller than 5x5 (inputs under about
    80 px) the pool covers the whole map. A fixed pool, unlike torchvision's adaptive one, which
    is not the paper's at 14x14 and has no deterministic CUDA backward."""

    def __init__(self, cin, num_classes, width, backend, map_size):
        super().__init__()
        kernel, stride = min(AUX_POOL[0], map_size), AUX_POOL[1]
        self.pool = torch.nn.AvgPool2d(kernel, stride)
        self.conv = conv_bn_relu(cin, scaled(128, width), 1, backend=backend, eps=BN_EPS)
        side = (map_size - kernel) // stride + 1
        self.fc1 = torch.nn.Linear(scaled(128, width) * side * side, scaled(1024, width))
        self.dropout = torch.nn.Dropout(0.7)
        self.fc2 = torch.nn.Linear(scaled(1024, width), num_classes)

    def forward(self, x):
        x = self.conv(self.pool(x)).flatten(1)
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))


def ceil_pool_size(size: int, kernel: int, stride: int) -> int:
    """The output side of a ceil-mode max-pool without padding."""
    return -(-(size - kernel) // stride) + 1


def map_size_at_4a(input_size: int) -> int:
    """The side of the maps after the stem and stage 3 (14 at 224)."""
    size = (input_size + 2 * 3 - 7) // 2 + 1  # conv1 7x7/2, padding 3
    for _ in range(3):  # maxpool1, maxpool2, maxpool3: 3x3/2, ceil mode
        size = ceil_pool_size(size, 3, 2)
    return size


class GoogLeNet(torch.nn.Module):
    """Named as torchvision's GoogLeNet (conv1 ... inception5b, aux1, aux2, avgpool, dropout, fc),
    with each conv's BatchNorm and ReLU fused into one unit."""

    def __init__(
        self, num_classes, in_channels, backend, width, aux_logits, dropout, branch5_kernel, input_size
    ):
        super().__init__()

        def inception(key):
            cin, *rest = (scaled(c, width) for c in INCEPTION[key])
            return Inception(cin, *rest, backend=backend, branch5_kernel=branch5_kernel)

        def pool(kernel):
            return max_pool(kernel, 2, ceil_mode=True, backend=backend)

        c64, c192 = scaled(64, width), scaled(192, width)
        self.conv1 = conv_bn_relu(in_channels, c64, 7, 2, 3, backend, eps=BN_EPS)
        self.maxpool1 = pool(3)
        self.conv2 = conv_bn_relu(c64, c64, 1, backend=backend, eps=BN_EPS)
        self.conv3 = conv_bn_relu(c64, c192, 3, 1, 1, backend, eps=BN_EPS)
        self.maxpool2 = pool(3)
        self.inception3a, self.inception3b = inception("3a"), inception("3b")
        self.maxpool3 = pool(3)
        self.inception4a, self.inception4b, self.inception4c = (inception(k) for k in ("4a", "4b", "4c"))
        self.inception4d, self.inception4e = inception("4d"), inception("4e")
        self.maxpool4 = pool(2)
        self.inception5a, self.inception5b = inception("5a"), inception("5b")
        map_size = map_size_at_4a(input_size)
        if aux_logits:
            self.aux1 = AuxClassifier(scaled(512, width), num_classes, width, backend, map_size)
            self.aux2 = AuxClassifier(scaled(528, width), num_classes, width, backend, map_size)
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = GlobalAvgPool()
        self.dropout = torch.nn.Dropout(dropout)
        self.fc = torch.nn.Linear(scaled(1024, width), num_classes)

    def forward(self, x):
        """Logits; in training with aux_logits, (logits, aux1 logits, aux2 logits) for the trainer
        to weight the auxiliary losses by 0.3."""
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.inception4a(self.maxpool3(self.inception3b(self.inception3a(x))))
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        logits = self.fc(self.dropout(self.avgpool(x)))
        return (logits, aux1, aux2) if aux1 is not None else logits


@register_model(
    "googlenet",
    family="GoogLeNet",
    year=2015,
    input_size=224,
    min_input_size=15,
    published_params=6_624_904,
    published_config=(("branch5_kernel", 3),),
    published_note="torchvision's 3x3 in the '5x5' branch",
    optional_parts=(("aux_logits", True),),
    paper="Szegedy et al. Going deeper with convolutions. CVPR 2015",
)
def googlenet(
    num_classes, in_channels, backend, width, aux_logits=False, dropout=0.4, branch5_kernel=5, input_size=224
):
    """GoogLeNet with the paper's Inception (3a)-(5b) table, 3x3/2 max-pools between stages and
    global average pooling, dropout 0.4. Every conv is followed by BatchNorm (eps 1e-3), as in
    torchvision's BasicConv2d (the paper predates BatchNorm). Optional auxiliary classifiers after
    4a and 4d, whose 5x5/3 average pool reads 4a's map size from input_size. branch5_kernel=3
    reproduces torchvision's layout, whose "5x5" branch uses a 3x3 conv; its parameter count
    (6,624,904 without aux heads) is the published one."""
    if branch5_kernel not in (3, 5):
        raise ValueError(f"branch5_kernel must be 5 (the paper) or 3 (torchvision), got {branch5_kernel}")
    return GoogLeNet(
        num_classes, in_channels, backend, width, aux_logits, dropout, branch5_kernel, input_size
    )
