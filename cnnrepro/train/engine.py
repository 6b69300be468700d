"""The training loop: one explicit, readable loop per run, resumable after any interruption.

A run is identified by the hash of its full config. After every epoch its whole state
(:class:`TrainState`: weights, optimizer, LR schedule, every random generator) and the history so
far are checkpointed atomically; a rerun of the same config resumes from there and ends with the
same weights, bit for bit, as a run that was never interrupted.

On CUDA the loop never waits for the device inside a pass: losses and accuracies accumulate on the
device and are read once per pass, so the host queues steps ahead of the kernels.
"""

import dataclasses
import hashlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnrepro import models
from cnnrepro.data import Dataset, Split, batches
from cnnrepro.train.checkpoint import load_checkpoint, save_atomic
from cnnrepro.train.replicas import Replicas
from cnnrepro.train.run_config import RunConfig, build_model, training_augmentation
from cnnrepro.train.state import TrainState


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    epoch_time_s: float
    train_examples_per_s: float  # step time only: forward, backward, optimizer (not the batching)
    test_examples_per_s: float = float("nan")  # inference over the test split (nan: older checkpoints)


@dataclass
class RunResult:
    config: RunConfig
    status: str  # "finished" or "diverged"
    history: list[EpochResult] = field(default_factory=list)
    weights_sha256: str = ""
    params: int = 0
    macs: int = 0  # multiply-accumulates of one forward pass of one image


def weights_sha256(model: torch.nn.Module) -> str:
    """A hash of every parameter and buffer, in state_dict order: equal hashes, equal weights."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def subset(split: Split, n: int | None) -> Split:
    return split if n is None or n >= len(split) else split.head(n)


def loss_of(output, labels, aux_weight: float) -> torch.Tensor:
    """Cross-entropy; GoogLeNet's (logits, aux1, aux2) adds its auxiliary losses times aux_weight."""
    if isinstance(output, tuple):
        logits, *aux = output
        return F.cross_entropy(logits, labels) + aux_weight * sum(F.cross_entropy(a, labels) for a in aux)
    return F.cross_entropy(output, labels)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    split: Split,
    batch_size: int,
    replicas: Replicas | None = None,
    state: TrainState | None = None,
) -> tuple[float, float]:
    """(mean loss, accuracy) over a split, in eval mode, in order. Many ``replicas`` each evaluate
    their share of every batch with rank 0's buffers (BatchNorm's running statistics, which rank 0
    checkpoints) and sum the results. A run's ``state`` sets the batches' layout and autocast."""
    replicas = replicas or Replicas()
    model.eval()
    replicas.align_buffers(model)
    totals = torch.zeros(2, dtype=torch.float64, device=split.images.device)  # loss sum, correct
    for images, labels in batches(split, batch_size, shuffle=False, share=replicas.share):
        if len(labels):
            if state is None:
                logits = model(images)
            else:
                with state.autocast():
                    logits = model(state.batch(images))
            totals[0] += F.cross_entropy(logits.float(), labels, reduction="sum")
            totals[1] += (logits.argmax(1) == labels).sum()
    loss_sum, correct = replicas.all_sum(totals).tolist()
    return loss_sum / len(split), correct / len(split)


def train_run(
    config: RunConfig,
    dataset: Dataset,
    checkpoint_dir: Path,
    device="cpu",
    on_epoch=None,
    replicas: Replicas | None = None,
) -> RunResult:
    """Trains (or resumes) one run; ``on_epoch(result, epoch_result)`` is called after each epoch's
    checkpoint is on disk. A non-finite loss ends the run as "diverged". With many ``replicas``
    (torchrun), every rank calls it alike and rank 0 alone writes the checkpoint."""
    replicas = replicas or Replicas()
    checkpoint = Path(checkpoint_dir) / f"{config.key()}.pt"
    if config.input_size:
        dataset = dataset.resized(config.input_size)
    train, test = subset(dataset.train, config.train_subset), subset(dataset.test, config.test_subset)
    train, test = train.to(device), test.to(device)
    if replicas.distributed:
        replicas.check_batches(len(train), config.batch_size)
    if config.compile:  # every run compiles afresh: its code never depends on the runs before it
        torch._dynamo.reset()
    model = build_model(config, dataset)
    size = (1, dataset.in_channels, dataset.image_size, dataset.image_size)
    macs = int(models.summary(model, size).iloc[-1]["macs"])  # on the CPU, before any training step
    model.to(device)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    state = TrainState.create(config, model, steps_per_epoch, replicas)
    result = RunResult(config, "running", params=models.count_parameters(model), macs=macs)

    saved = load_checkpoint(checkpoint)
    if saved is not None:
        state.load_state_dict(saved)
        result.history = [EpochResult(**e) for e in saved["history"]]
        result.status = saved["status"]

    augment = training_augmentation(config, dataset)
    while result.status == "running" and len(result.history) < config.epochs:
        epoch = train_epoch(state, train, test, config, augment, number=len(result.history) + 1)
        if epoch is None:
            result.status = "diverged"
        else:
            result.history.append(epoch)
            if len(result.history) == config.epochs:
                result.status = "finished"
        if replicas.writes:
            history = [dataclasses.asdict(e) for e in result.history]
            save_atomic(
                state.state_dict()
                | {"config": dataclasses.asdict(config), "history": history, "status": result.status},
                checkpoint,
            )
        if on_epoch is not None:
            on_epoch(result, epoch)
    result.weights_sha256 = weights_sha256(model)
    return result


@dataclass
class PassStats:
    examples: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    step_time_s: float = 0.0  # forward, backward and optimizer step, not the batching


def train_pass(
    state: TrainState, batch_source: Iterable[tuple[torch.Tensor, torch.Tensor]], aux_weight: float
) -> PassStats | None:
    """One pass of SGD steps over ``batch_source`` (any iterable of (images, labels)); None if the
    loss stopped being finite. The pass reads the device once, at its end: a non-finite step is
    found then (its NaN has reached the weights, which a diverged run no longer uses). Many replicas
    each step on their share of every batch; the pass's statistics are summed over them."""
    replicas = state.replicas
    state.model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=state.device)
    correct = torch.zeros((), dtype=torch.int64, device=state.device)
    examples, batching_s = 0, 0.0
    start = time.perf_counter()
    source = iter(batch_source)
    while True:
        batch_start = time.perf_counter()
        batch = next(source, None)
        batching_s += time.perf_counter() - batch_start
        if batch is None:
            break
        images, labels = batch
        with state.autocast():
            output = state.network(state.batch(images))
            loss = loss_of(output, labels, aux_weight)
        state.optimizer.zero_grad(set_to_none=True)
        scaled = loss * replicas.loss_scale() if replicas.distributed else loss
        if state.scaler is None:
            scaled.backward()
            state.optimizer.step()
        else:  # float16: the loss scaled up, the step skipped where a gradient overflowed
            state.scaler.scale(scaled).backward()
            state.scaler.step(state.optimizer)
            state.scaler.update()
        state.scheduler.step()
        logits = output[0] if isinstance(output, tuple) else output
        examples += len(labels)
        loss_sum += loss.detach().double() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
    totals = torch.stack([loss_sum, correct.double(), loss_sum.new_tensor(examples)])
    # One read of the device: it waits for the pass's last kernel, so the time is theirs on CUDA too.
    total_loss, total_correct, total_examples = replicas.all_sum(totals).tolist()
    step_time = time.perf_counter() - start - batching_s
    stats = PassStats(int(total_examples), total_loss, int(total_correct), step_time)
    return stats if math.isfinite(total_loss) else None


def train_epoch(
    state: TrainState, train: Split, test: Split, config: RunConfig, augment, number: int
) -> EpochResult | None:
    """Epoch ``number``: one pass over the training split (``augment``: as ``batches`` takes it),
    then the test split; None if the loss stopped being finite."""
    start = time.perf_counter()
    source = batches(
        train,
        config.batch_size,
        state.data_rng,
        augment=augment,
        augment_generator=state.augment_rng,
        share=state.replicas.share,
    )
    stats = train_pass(state, source, config.aux_weight)
    if stats is None:
        return None
    test_start = time.perf_counter()
    test_loss, test_acc = evaluate(state.evaluator, test, config.batch_size, state.replicas, state)
    test_time = time.perf_counter() - test_start
    return EpochResult(
        number,
        stats.loss_sum / stats.examples,
        stats.correct / stats.examples,
        test_loss,
        test_acc,
        time.perf_counter() - start,
        stats.examples / stats.step_time_s,
        len(test) / test_time,
    )
