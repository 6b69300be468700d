"""Whole models, custom vs native backend, at the quick profile's shapes (its widths, input sizes and
batch size; mnist5k's one channel and ten classes): a training step (forward, backward, SGD step)
and inference (eval forward). Then the runner's training pass against a plain DataLoader loop.

Examples/s = examples per call / median time; models.csv and loops.csv get them (conftest)."""

import pytest
import torch
from harness import Case, dims, time_member

from cnnrepro.data import Split, load_dataset
from cnnrepro.data.batches import batches
from cnnrepro.experiments import PROFILES, SUITES, plan_runs
from cnnrepro.train import TrainState, build_model, train_pass

PROFILE = PROFILES["quick"]
# preresnet20: full pre-activation units, where our fused conv-BN-ReLU runs only the convs inside a
# unit (its leading BN-ReLU and last conv are native), against resnet20's, which it runs throughout.
MODELS = SUITES["classic"] + ["resnet20", "plain20", "preresnet20"]
LOOP_MODELS = ["lenet5", "resnet20"]  # a tiny net, where batching matters most, and a CIFAR ResNet


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(PROFILE.dataset)


def setup(model_name, dataset, backend, device):
    """The quick profile's model (same seed, so the same weights either backend), SGD and schedule,
    as the runner builds them."""
    (config,) = plan_runs([model_name], PROFILE, [0], backend=backend)
    state = TrainState.create(config, build_model(config, dataset, device), steps_per_epoch=10**6)
    return config, state


def random_batch(config, dataset, device):
    size = config.input_size or dataset.image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(config.batch_size, dataset.in_channels, size, size, generator=generator)
    labels = torch.randint(0, dataset.num_classes, (config.batch_size,), generator=generator)
    return images.to(device), labels.to(device)


@pytest.mark.parametrize("backend", ["custom", "native"])
@pytest.mark.parametrize("mode", ["train", "inference"])
@pytest.mark.parametrize("model_name", MODELS)
def test_model(benchmark, device, dataset, model_name, mode, backend):
    config, state = setup(model_name, dataset, backend, device)
    images, labels = random_batch(config, dataset, device)
    if mode == "train":

        def fn():
            train_pass(state, [(images, labels)], config.aux_weight)

    else:
        state.model.eval()

        @torch.no_grad()
        def fn():
            state.model(images)

    case = Case(
        model_name, mode, dims(images.shape), "contiguous", device, kind="model", examples=len(images)
    )
    time_member(benchmark, fn, case, backend, rounds=20, warmup_rounds=3)  # whole models: noisier


def dataloader_batches(split: Split, batch_size: int, generator: torch.Generator):
    """The d2l way: a DataLoader over a TensorDataset, shuffled, in the main process."""
    data = torch.utils.data.TensorDataset(split.images, split.labels)
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator)


@pytest.mark.parametrize("loop", ["runner", "dataloader"])
@pytest.mark.parametrize("model_name", LOOP_MODELS)
def test_training_loop(benchmark, device, dataset, model_name, loop):
    config, state = setup(model_name, dataset, "custom", device)
    train = (
        dataset.resized(config.input_size).train.to(device) if config.input_size else dataset.train.to(device)
    )
    generator = torch.Generator().manual_seed(0)
    source = {"runner": batches, "dataloader": dataloader_batches}[loop]

    def one_pass():
        train_pass(state, source(train, config.batch_size, generator), config.aux_weight)

    shape = f"{dims(train.images.shape)} batch{config.batch_size}"
    case = Case(model_name, "train pass", shape, "contiguous", device, kind="loop", examples=len(train))
    time_member(benchmark, one_pass, case, loop, rounds=3, warmup_rounds=1)
