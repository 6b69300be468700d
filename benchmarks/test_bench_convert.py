"""A user's own network converted to our kernels (cnnrepro.nn.convert): torchvision's ResNet-18 and
ResNet-50, a training step (forward, cross-entropy, backward, SGD step), the original ("native")
against the converted ("custom") model, with the same weights; models.csv gets the pair.

Needs torchvision: in the venv make check-cuda builds (torch's CUDA build, which runs on the CPU
too); make bench's CPU venv has no torchvision, so these are skipped there."""

import copy

import pytest
import torch
from harness import Case, dims, time_member

from cnnrepro import nn

torchvision = pytest.importorskip("torchvision")

BATCH, SIZE = 16, 64  # CPU-sized; the GPU day (make check-gpu) runs the same at its own shapes


@pytest.fixture(scope="module")
def models():
    built = {}
    for name in ("resnet18", "resnet50"):
        torch.manual_seed(0)
        original = getattr(torchvision.models, name)(num_classes=10)
        built[name] = {"native": original, "custom": nn.convert(copy.deepcopy(original)).model}
    return built


@pytest.mark.parametrize("impl", ["custom", "native"])
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_converted_train_step(benchmark, device, models, name, impl):
    model = models[name][impl].to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, SIZE, SIZE, generator=generator).to(device)
    labels = torch.randint(0, 10, (BATCH,), generator=generator).to(device)

    def fn():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    case = Case(
        f"torchvision {name} (convert)", "train", dims(images.shape), "contiguous", device, "model", BATCH
    )
    time_member(benchmark, fn, case, impl, rounds=10, warmup_rounds=2)
