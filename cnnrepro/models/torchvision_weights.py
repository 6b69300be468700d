"""Torchvision's weights in our models, for the models both have: the strongest oracle there is
(torchvision's own modules) and its trained checkpoints.

Our ResNets, VGGs, DenseNet-121 and GoogLeNet name their modules as torchvision does, so most keys
are the same. The one difference is the fused conv-BN-ReLU unit (:class:`ConvBNReLU2d`), which is
``Sequential(Conv2d, BatchNorm2d, ReLU)``: where torchvision has a conv at ``C`` and its BatchNorm
at ``B``, ours has ``U.0`` and ``U.1``. :func:`torchvision_key_map` lists that mapping, unit by unit.
"""

import torch

from cnnrepro.nn import ConvBNReLU2d

# Our name -> what ours must be built with to have torchvision's layout.
TORCHVISION_MODELS = {
    **{f"vgg{d}{bn}": {} for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    "resnet18": {},
    "resnet34": {},
    "densenet121": {},
    "googlenet": {"branch5_kernel": 3},
}
BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
CONV_PARAMS = ("weight", "bias")


def _torchvision_units(net: torch.nn.Module) -> dict[str, tuple[str, str]]:
    """Our path of each fused unit -> torchvision's paths of its conv and of its BatchNorm."""
    family = net.info.family
    if family == "VGG":  # torchvision's features are flat: conv, bn, relu take three indexes
        units, index = {}, 0
        for name, layer in net.features.named_children():
            if isinstance(layer, ConvBNReLU2d):
                units[f"features.{name}"] = (f"features.{index}", f"features.{index + 1}")
            index += 3 if isinstance(layer, ConvBNReLU2d) else 1
        return units
    paths = [path for path, module in net.named_modules() if isinstance(module, ConvBNReLU2d)]
    if family == "GoogLeNet":  # BasicConv2d: .conv and .bn
        return {path: (f"{path}.conv", f"{path}.bn") for path in paths}
    bn = {"ResNet": "bn", "DenseNet": "norm"}[family]  # conv1 -> bn1; features.conv0 -> features.norm0
    units = {}
    for path in paths:
        parent, _, last = path.rpartition(".")
        units[path] = (path, (f"{parent}." if parent else "") + last.replace("conv", bn, 1))
    return units


def torchvision_key_map(net: torch.nn.Module) -> dict[str, str]:
    """torchvision's state_dict key -> ours, for every key that differs (the others are equal)."""
    name = getattr(getattr(net, "info", None), "name", None)
    if name not in TORCHVISION_MODELS:
        raise ValueError(
            f"torchvision weights load into {', '.join(TORCHVISION_MODELS)} built by models.get_model; "
            f"got {name or type(net).__name__}"
        )
    key_map = {}
    for ours, (conv, bn) in _torchvision_units(net).items():
        key_map |= {f"{conv}.{p}": f"{ours}.0.{p}" for p in CONV_PARAMS}
        key_map |= {f"{bn}.{p}": f"{ours}.1.{p}" for p in BN_PARAMS}
    return key_map


def load_torchvision_state_dict(net: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Loads a torchvision model's ``state_dict()`` into ``net`` (one of TORCHVISION_MODELS, built
    with the config listed there), strictly: every key of each side must find its counterpart with
    the same shape, or nothing is loaded and the error lists what does not fit."""
    key_map = torchvision_key_map(net)
    mapped = {key_map.get(key, key): value for key, value in state_dict.items()}
    own = net.state_dict()
    problems = [f"missing {k}" for k in own if k not in mapped]
    problems += [f"unexpected {k}" for k in mapped if k not in own]
    problems += [
        f"{k}: torchvision's {tuple(v.shape)} vs ours {tuple(own[k].shape)}"
        for k, v in mapped.items()
        if k in own and v.shape != own[k].shape
    ]
    if problems:
        config = TORCHVISION_MODELS[net.info.name]
        hint = f" (build ours with {config})" if config else ""
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ValueError(f"torchvision's {net.info.name} state_dict does not fit ours{hint}: {shown}")
    net.load_state_dict(mapped)
