"""Every model trains under deterministic algorithms on a GPU: none uses a module kind or runs an
aten op that has no deterministic CUDA backward. Checked on the CPU, so a GPU run cannot be the
first to find one (GoogLeNet's adaptive aux pool once was)."""

import pytest
import torch

from cnnrepro import models

WIDTH = 0.0625


def training_step(model: torch.nn.Module, size: int, in_channels: int):
    def step():
        model.train()
        out = model(torch.randn(2, in_channels, size, size))
        logits = out[0] + sum(out[1:]) if isinstance(out, tuple) else out
        logits.square().mean().backward()

    return step


def build_with_every_option(name: str, size: int) -> torch.nn.Module:
    """The model with its optional parts on (ModelInfo.optional_parts: GoogLeNet's aux heads), at ``size``."""
    config = dict(models.model_info(name).optional_parts)
    if models.builder_accepts(name, "input_size"):
        config["input_size"] = size
    return models.get_model(name, num_classes=5, width=WIDTH, **config)


@pytest.mark.parametrize("name", models.list_models())
def test_no_model_uses_an_op_without_a_deterministic_cuda_backward(name):
    info = models.model_info(name)
    size = max(info.min_input_size, min(info.input_size, 64))
    model = build_with_every_option(name, size)
    assert models.nondeterministic_modules(model) == []
    assert models.nondeterministic_ops(training_step(model, size, info.in_channels)) == []


def test_the_check_finds_an_adaptive_pool_by_module_and_by_op():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())
    assert models.nondeterministic_modules(model) == ["1 (AdaptiveAvgPool2d)"]
    functional = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.Upsample(scale_factor=2.0, mode="bilinear")
    )
    assert models.nondeterministic_ops(training_step(functional, 9, 1)) == [
        "aten::upsample_bilinear2d_backward"
    ]
    assert models.nondeterministic_ops(training_step(model, 9, 1)) == ["aten::_adaptive_avg_pool2d_backward"]
