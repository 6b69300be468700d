"""Sizes and costs: parameters and multiply-accumulates per layer, as a pandas DataFrame."""

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def summary(model: torch.nn.Module, input_size: tuple[int, ...]) -> pd.DataFrame:
    """One row per leaf module that has parameters or does arithmetic: its parameters and MACs for
    one forward pass of a zero input of ``input_size`` (N, C, H, W), plus a "total" row.

    MACs are torch.utils.flop_counter's FLOPs / 2 (it counts convolutions, matmuls and the like;
    elementwise ops such as ReLU or BatchNorm's normalization are not counted, as is usual).
    """
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(input_size))
    finally:
        model.train(was_training)
    flops = {key: sum(per_op.values()) for key, per_op in counter.get_flop_counts().items()}
    rows = []
    for name, module in model.named_modules():
        if not name:
            continue
        params = sum(p.numel() for p in module.parameters(recurse=False))
        # A module's own work: what ran inside it minus what its children account for (a fused
        # block such as ConvBNReLU2d runs its convolution itself, not through its Conv2d child).
        children = sum(
            flops.get(_counter_key(model, f"{name}.{child}"), 0) for child, _ in module.named_children()
        )
        macs = (flops.get(_counter_key(model, name), 0) - children) // 2
        if params or macs:
            rows.append({"layer": name, "type": type(module).__name__, "params": params, "macs": macs})
    table = pd.DataFrame(rows, columns=["layer", "type", "params", "macs"])
    total = {
        "layer": "total",
        "type": "",
        "params": count_parameters(model, False),
        "macs": flops.get("Global", 0) // 2,
    }
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def _counter_key(model: torch.nn.Module, name: str) -> str:
    """FlopCounterMode names modules by their path under the root's class name."""
    return f"{type(model).__name__}.{name}" if name else "Global"
