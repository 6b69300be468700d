"""Which layers to look at, and what they returned for an input.

By default, a rule per model family (``FAMILY_RULES``, read through the registry's
``ModelInfo.family``): the children of the family's trunk, in order, but for the kinds the rule
leaves out. That is each convolution block's output (after its activation, where a flat trunk lists
the convolution and its activation apart: LeNet, VGG), each pooling layer's, each Inception
module's, each residual stage's, each dense block's and transition's. Of those, the layers whose
output is feature maps (N, C, H, W) are shown: the head's flattened outputs drop out. Users name
layers by module path or by a pattern whose ``*`` and ``?`` stay within one dot-separated segment
(``layer*``: layer1 to layer4, not layer1.0)."""

import difflib
import fnmatch
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LayerRule:
    """A family's default layers: the children of ``trunk`` (a module path; "" is the model
    itself) whose class name matches none of ``skip`` (shell patterns), in the model's order."""

    trunk: str
    skip: tuple[str, ...] = ()


HEAD = ("GlobalAvgPool", "Flatten", "Dropout", "Linear")  # the classifier, whose outputs are not maps
RESIDUAL = LayerRule("", HEAD)  # the stem, its pool and each stage (d2l's nets: each residual block)
FAMILY_RULES = {
    "LeNet": LayerRule("", ("*Conv2d", *HEAD)),  # each convolution's activation, each subsampling
    "AlexNet": LayerRule("features", ("LocalResponseNorm",)),  # conv + ReLU blocks, pools
    "VGG": LayerRule("features", ("Conv2d", "BatchNorm2d")),  # each convolution's ReLU, pools
    "NiN": LayerRule("", HEAD),  # NiN blocks, pools
    "GoogLeNet": LayerRule("", HEAD),  # stem convolutions, pools, Inception modules
    "ResNet": RESIDUAL,
    "ResNet-CIFAR": RESIDUAL,
    "Plain-CIFAR": RESIDUAL,
    "PreResNet-CIFAR": RESIDUAL,
    "DenseNet": LayerRule("features", ("BatchNorm2d",)),  # stem, pool, dense blocks, transitions
}
DEFAULT_RULE = LayerRule("")  # a family without a rule: every child of the model


def default_layers(model: torch.nn.Module) -> list[str]:
    """The module paths the model's family rule picks (DEFAULT_RULE for a family without one)."""
    rule = FAMILY_RULES.get(model.info.family, DEFAULT_RULE)
    trunk = model.get_submodule(rule.trunk)
    prefix = f"{rule.trunk}." if rule.trunk else ""
    return [
        prefix + name
        for name, child in trunk.named_children()
        if not any(fnmatch.fnmatchcase(type(child).__name__, kind) for kind in rule.skip)
    ]


def path_matches(path: str, pattern: str) -> bool:
    """Whether module ``path`` matches ``pattern`` segment by segment (``*`` stays within one)."""
    parts, wanted = path.split("."), pattern.split(".")
    return len(parts) == len(wanted) and all(map(fnmatch.fnmatchcase, parts, wanted))


def select_layers(model: torch.nn.Module, patterns: list[str] | None) -> list[str]:
    """The module paths ``patterns`` name, in the model's order (the family rule's if None); a
    pattern that names none is a LookupError naming the nearest paths."""
    if not patterns:
        return default_layers(model)
    paths = [name for name, _ in model.named_modules() if name]
    for pattern in patterns:
        if not any(path_matches(path, pattern) for path in paths):
            nearest = difflib.get_close_matches(pattern, paths, n=5, cutoff=0)
            raise LookupError(f"no layer {pattern!r} in {model.info.name}; nearest: {', '.join(nearest)}")
    return [path for path in paths if any(path_matches(path, p) for p in patterns)]


@torch.no_grad()
def capture(
    model: torch.nn.Module, images: torch.Tensor, paths: list[str]
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(what each layer of ``paths`` returned, the model's output) for one forward pass of
    ``images``. Each output is copied as the layer returns it, before a later in-place op (an
    in-place ReLU) can change it; the hooks are removed afterwards, even after an error. (A hook on
    a child of a fused conv-BN-ReLU makes that block run unfused, so the hook sees its child run.)"""
    outputs: dict[str, torch.Tensor] = {}

    def recorder(path):
        def record(module, inputs, output):
            outputs[path] = output.clone() if isinstance(output, torch.Tensor) else output

        return record

    handles = [model.get_submodule(path).register_forward_hook(recorder(path)) for path in paths]
    try:
        logits = model(images)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, logits


def feature_maps(outputs: dict) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the outputs that are feature maps (N, C, H, W), the paths of those that are not)."""
    maps = {p: o for p, o in outputs.items() if isinstance(o, torch.Tensor) and o.dim() == 4}
    return maps, [p for p in outputs if p not in maps]


def first_convolution(model: torch.nn.Module) -> tuple[str, torch.nn.Conv2d] | None:
    """The first Conv2d in the model's module order (path, module), or None if it has none."""
    return next(((p, m) for p, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)), None)
