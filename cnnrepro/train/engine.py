"""The training loop: one explicit, readable loop per run, resumable after any interruption.

A run is identified by the hash of its full config. After every epoch its whole state (weights,
optimizer, LR schedule, every random generator, the history so far) is checkpointed atomically;
a rerun of the same config resumes from there and ends with the same weights, bit for bit, as a
run that was never interrupted.
"""

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnrepro import models
from cnnrepro.data import Dataset, Split, batches
from cnnrepro.train.checkpoint import load_checkpoint, save_atomic
from cnnrepro.train.seeding import derive_seed, generator

SCHEDULES = ("constant", "cosine", "multistep")


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's result. Its hash names the run."""

    model: str
    dataset: str
    seed: int = 0
    epochs: int = 1
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # per iteration: constant, cosine to 0, or multistep (x gamma at milestones)
    milestones: tuple[int, ...] = ()  # iterations, for multistep
    gamma: float = 0.1
    backend: str = "custom"
    width: float = 1.0
    input_size: int | None = None  # None: the dataset's own resolution
    aux_weight: float = 0.3  # GoogLeNet's auxiliary losses, in training
    train_subset: int | None = None  # the first N training examples only (profiles)
    test_subset: int | None = None
    model_config: tuple[tuple[str, object], ...] = ()  # extra builder arguments, as sorted pairs

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {self}")

    def key(self) -> str:
        """The run's identity: a hash of every field."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    epoch_time_s: float
    train_examples_per_s: float  # step time only: forward, backward, optimizer
    test_examples_per_s: float = float("nan")  # inference over the test split (nan: older checkpoints)


@dataclass
class RunResult:
    config: RunConfig
    status: str  # "finished" or "diverged"
    history: list[EpochResult] = field(default_factory=list)
    weights_sha256: str = ""
    params: int = 0


def weights_sha256(model: torch.nn.Module) -> str:
    """A hash of every parameter and buffer, in state_dict order: equal hashes, equal weights."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def build_model(config: RunConfig, dataset: Dataset, device) -> torch.nn.Module:
    torch.manual_seed(derive_seed(config.seed, "init"))
    size = config.input_size or dataset.image_size
    extra = dict(config.model_config)
    if models.builder_accepts(config.model, "input_size"):
        extra.setdefault("input_size", size)
    model = models.get_model(
        config.model,
        num_classes=dataset.num_classes,
        in_channels=dataset.in_channels,
        backend=config.backend,
        width=config.width,
        **extra,
    )
    return model.to(device)


def lr_factor(config: RunConfig, total_steps: int):
    """The LR multiplier at each iteration."""
    if config.schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    if config.schedule == "multistep":
        return lambda step: config.gamma ** sum(step >= m for m in config.milestones)
    return lambda step: 1.0


def subset(split: Split, n: int | None) -> Split:
    return split if n is None or n >= len(split) else Split(split.images[:n], split.labels[:n])


def loss_of(output, labels, aux_weight: float) -> torch.Tensor:
    """Cross-entropy; GoogLeNet's (logits, aux1, aux2) adds its auxiliary losses times aux_weight."""
    if isinstance(output, tuple):
        logits, *aux = output
        return F.cross_entropy(logits, labels) + aux_weight * sum(F.cross_entropy(a, labels) for a in aux)
    return F.cross_entropy(output, labels)


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: Split, batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy) over a split, in eval mode, in order."""
    model.eval()
    total_loss, correct = 0.0, 0
    for images, labels in batches(split, batch_size, shuffle=False):
        logits = model(images)
        total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
    return total_loss / len(split), correct / len(split)


def train_run(
    config: RunConfig, dataset: Dataset, checkpoint_dir: Path, device="cpu", on_epoch=None
) -> RunResult:
    """Trains (or resumes) one run; ``on_epoch(result, epoch_result)`` is called after each epoch's
    checkpoint is on disk. A non-finite loss ends the run as "diverged"."""
    checkpoint = Path(checkpoint_dir) / f"{config.key()}.pt"
    if config.input_size:
        dataset = dataset.resized(config.input_size)
    train, test = subset(dataset.train, config.train_subset), subset(dataset.test, config.test_subset)
    train, test = train.to(device), test.to(device)
    model = build_model(config, dataset, device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(config, steps_per_epoch * config.epochs)
    )
    data_gen, augment_gen = generator(config.seed, "data"), generator(config.seed, "augment")
    torch.manual_seed(derive_seed(config.seed, "dropout"))
    result = RunResult(config, "running", params=sum(p.numel() for p in model.parameters()))

    state = load_checkpoint(checkpoint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        data_gen.set_state(state["data_rng"])
        augment_gen.set_state(state["augment_rng"])
        torch.set_rng_state(state["torch_rng"])
        result.history = [EpochResult(**e) for e in state["history"]]
        result.status = state["status"]

    while result.status == "running" and len(result.history) < config.epochs:
        epoch = len(result.history) + 1
        epoch_result = _train_epoch(
            model, optimizer, scheduler, train, test, config, data_gen, augment_gen, dataset.augment, epoch
        )
        if epoch_result is None:
            result.status = "diverged"
        else:
            result.history.append(epoch_result)
            if len(result.history) == config.epochs:
                result.status = "finished"
        save_atomic(
            {
                "config": dataclasses.asdict(config),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "data_rng": data_gen.get_state(),
                "augment_rng": augment_gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": [dataclasses.asdict(e) for e in result.history],
                "status": result.status,
            },
            checkpoint,
        )
        if on_epoch is not None:
            on_epoch(result, epoch_result)
    result.weights_sha256 = weights_sha256(model)
    return result


@dataclass
class PassStats:
    examples: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    step_time_s: float = 0.0  # forward, backward and optimizer step, not the batching


def train_pass(model, optimizer, scheduler, batch_source, aux_weight: float) -> PassStats | None:
    """One pass of SGD steps over ``batch_source`` (any iterable of (images, labels)); None as soon
    as the loss stops being finite."""
    model.train()
    stats = PassStats()
    for images, labels in batch_source:
        step_start = time.perf_counter()
        output = model(images)
        loss = loss_of(output, labels, aux_weight)
        if not torch.isfinite(loss):
            return None
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_value = loss.item()  # waits for the step's kernels, so the time is theirs on CUDA too
        stats.step_time_s += time.perf_counter() - step_start
        logits = output[0] if isinstance(output, tuple) else output
        stats.examples += len(labels)
        stats.loss_sum += loss_value * len(labels)
        stats.correct += (logits.argmax(1) == labels).sum().item()
    return stats


def _train_epoch(model, optimizer, scheduler, train, test, config, data_gen, augment_gen, augment, epoch):
    """One pass over the training split, then the test split; None if the loss stopped being finite."""
    start = time.perf_counter()
    source = batches(train, config.batch_size, data_gen, augment=augment, augment_generator=augment_gen)
    stats = train_pass(model, optimizer, scheduler, source, config.aux_weight)
    if stats is None:
        return None
    test_start = time.perf_counter()
    test_loss, test_acc = evaluate(model, test, config.batch_size)
    test_time = time.perf_counter() - test_start
    return EpochResult(
        epoch,
        stats.loss_sum / stats.examples,
        stats.correct / stats.examples,
        test_loss,
        test_acc,
        time.perf_counter() - start,
        stats.examples / stats.step_time_s,
        len(test) / test_time,
    )
