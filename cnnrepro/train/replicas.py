"""Data parallelism: one run trained by N processes (torchrun), with results that do not depend on N
beyond the order of floating-point sums.

Every rank draws the same global batch (the same seeded permutation, the same augmentation draws)
and trains on its fixed share of it. The loss of a share is scaled so that DistributedDataParallel's
gradient average equals the gradient of the global batch's mean loss, and dropout draws its mask for
the whole global batch and keeps the share's rows, so a model without BatchNorm takes the same steps
as on one process. BatchNorm normalizes each share by its own statistics (per rank) unless the run
converts it to SyncBatchNorm.
"""

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class BatchShare:
    """The current step's global batch size and the rows of it this rank holds."""

    total: int = 0
    start: int = 0
    stop: int = 0


@dataclass
class Replicas:
    """This process's place among the processes training one run: rank ``rank`` of ``world_size``.
    The default, one process, changes nothing in the training loop."""

    rank: int = 0
    world_size: int = 1
    sync_bn: bool = False
    current: BatchShare = field(default_factory=BatchShare)

    def __post_init__(self):
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def writes(self) -> bool:
        """Whether this process writes checkpoints and results (rank 0 alone)."""
        return self.rank == 0

    def share(self, total: int) -> slice:
        """This rank's rows of a global batch of ``total`` (balanced, contiguous, in rank order);
        remembered as the current step's, for the loss scale and dropout."""
        start, stop = total * self.rank // self.world_size, total * (self.rank + 1) // self.world_size
        self.current = BatchShare(total, start, stop)
        return slice(start, stop)

    def loss_scale(self) -> float:
        """What this rank's mean loss is multiplied by so that DDP's average of the ranks' gradients
        is the gradient of the global batch's mean loss: world_size * share / total."""
        share = self.current
        return self.world_size * (share.stop - share.start) / share.total

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over every rank, in place (one collective; nothing with one process)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def from_rank0(self, value):
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if self.distributed:
            box = [value]
            dist.broadcast_object_list(box, src=0)
            value = box[0]
        return value

    def align_buffers(self, model: torch.nn.Module) -> None:
        """Gives every rank rank 0's buffers (BatchNorm's running statistics, which each rank last
        updated from its own share)."""
        if self.distributed:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def check_batches(self, examples: int, batch_size: int) -> None:
        """ValueError unless every batch of a pass over ``examples`` gives each rank at least one row."""
        if batch_size % self.world_size:
            raise ValueError(
                f"batch size {batch_size} is not divisible by the world size {self.world_size}: "
                "each rank takes an equal share of every batch"
            )
        last = examples % batch_size
        if 0 < last < self.world_size:
            raise ValueError(
                f"the last batch of an epoch holds {last} examples, fewer than the {self.world_size} "
                "ranks: choose a world size of at most that, or another batch size"
            )

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """Makes ``model`` (on its device) train on this rank: SyncBatchNorm if asked, dropout over
        the global batch, and the DistributedDataParallel wrapper that averages gradients. Returns
        the module to call in training; ``model`` itself stays what checkpoints save."""
        if not self.distributed:
            return model
        if self.sync_bn:  # replaces children in place: fused conv-BN-ReLU units then run unfused
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        _replace_children(model, torch.nn.Dropout, lambda d: GlobalBatchDropout(d.p, self))
        device = next(model.parameters()).device
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )


class GlobalBatchDropout(torch.nn.Module):
    """``nn.Dropout`` whose mask is drawn for the whole global batch, of which this rank keeps its
    rows: every rank draws the same mask from the same generator state, so the masks do not depend on
    the world size. With one process it computes exactly what ``nn.Dropout`` does on the CPU."""

    def __init__(self, p: float, replicas: Replicas):
        super().__init__()
        self.p = p
        self.replicas = replicas

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.numel() == 0:
            return x
        if self.p == 1:
            return x * torch.zeros((), dtype=x.dtype, device=x.device)
        share = self.replicas.current
        noise = torch.empty((share.total, *x.shape[1:]), dtype=x.dtype, device=x.device)
        noise.bernoulli_(1 - self.p)
        noise = noise[share.start : share.stop]
        return x * noise.div_(1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, over the global batch"


def _replace_children(module: torch.nn.Module, kind: type, make) -> None:
    """Replaces every descendant of type ``kind`` with ``make(it)``, keeping its name."""
    for name, child in module.named_children():
        if isinstance(child, kind):
            setattr(module, name, make(child))
        else:
            _replace_children(child, kind, make)


@dataclass(frozen=True)
class TorchrunWorld:
    """Where torchrun placed this process: its rank among ``size``, and on its node."""

    rank: int
    size: int
    local_rank: int
    local_size: int

    def join(self, device: str, sync_bn: bool) -> tuple[Replicas, str]:
        """Joins the process group (NCCL on CUDA, one GPU per local rank; gloo on the CPU); returns
        this rank's Replicas and its device."""
        if device == "cuda":
            torch.cuda.set_device(self.local_rank)
            device = f"cuda:{self.local_rank}"
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return Replicas(self.rank, self.size, sync_bn), device

    @staticmethod
    def leave() -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def torchrun_world() -> TorchrunWorld | None:
    """This process's place if torchrun started it with more than one process, else None."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return None
    env = os.environ
    return TorchrunWorld(int(env["RANK"]), size, int(env["LOCAL_RANK"]), int(env["LOCAL_WORLD_SIZE"]))
