"""Building blocks the model families share; each takes ``backend`` so custom and native swap."""

from collections import OrderedDict

import torch

from cnnrepro import nn as cnn


def scaled(channels: int, width: float) -> int:
    """A channel count times the width multiplier, at least 1."""
    return max(1, int(round(channels * width)))


def conv_bn_relu(
    cin, cout, kernel, stride=1, padding=0, backend="custom", eps=1e-5, bias=False
) -> torch.nn.Module:
    """Conv (no bias: BatchNorm's shift replaces it) + BatchNorm + ReLU: the fused block, which is
    the unfused Sequential either way."""
    return cnn.ConvBNReLU2d(cin, cout, kernel, stride, padding, bias=bias, eps=eps, backend=backend)


def conv_relu(cin, cout, kernel, stride=1, padding=0) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Conv2d(cin, cout, kernel, stride, padding), torch.nn.ReLU(inplace=True)
    )


def max_pool(kernel, stride=None, padding=0, ceil_mode=False, backend="custom") -> torch.nn.Module:
    return cnn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode, backend=backend)


class GlobalAvgPool(torch.nn.Module):
    """Mean over H and W, flattened: deterministic on CUDA, unlike AdaptiveAvgPool2d's backward."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


def flat_features(features: torch.nn.Module, in_channels: int, input_size: int) -> int:
    """How many numbers ``features`` produces per image at ``input_size`` (a dry run on zeros)."""
    with torch.no_grad():
        out = features.eval()(torch.zeros(1, in_channels, input_size, input_size))
    features.train()
    if out.shape[-1] < 1 or out.shape[-2] < 1:
        raise ValueError(f"input size {input_size} is too small for this network")
    return out[0].numel()


def classifier(in_features, hidden, num_classes, dropout) -> torch.nn.Sequential:
    """AlexNet's and VGG's head: two hidden FC layers with ReLU and dropout, then the output layer
    (torchvision's VGG classifier, index for index)."""
    return torch.nn.Sequential(
        torch.nn.Linear(in_features, hidden),
        torch.nn.ReLU(inplace=True),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(inplace=True),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(hidden, num_classes),
    )


def features_classifier(features: torch.nn.Module, head: torch.nn.Module) -> torch.nn.Sequential:
    """``features``, flattened, then ``head``, under torchvision's names (features.*, classifier.*)."""
    return torch.nn.Sequential(OrderedDict(features=features, flatten=torch.nn.Flatten(), classifier=head))


def init_glorot(model: torch.nn.Module, kinds=(torch.nn.Linear,), zero_biases=True) -> torch.nn.Module:
    """Glorot-uniform weights (Glorot and Bengio 2010) for every layer of ``kinds``; their biases
    zeroed, or left at PyTorch's default."""
    for module in model.modules():
        if isinstance(module, kinds):
            torch.nn.init.xavier_uniform_(module.weight)
            if zero_biases and module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    return model


def init_relu_network(model: torch.nn.Module, linear_std: float | None = 0.01) -> torch.nn.Module:
    """He-normal convs (fan_out) with zero biases, as torchvision's VGG; linear layers N(0,
    linear_std) with zero biases, or PyTorch's default where linear_std is None. PyTorch's default
    conv init shrinks the signal layer after layer, and AlexNet, VGG and NiN then sit at chance
    through a short run."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, torch.nn.Linear) and linear_std is not None:
            torch.nn.init.normal_(module.weight, 0, linear_std)
        else:
            continue
        if module.bias is not None:
            torch.nn.init.zeros_(module.bias)
    return model
