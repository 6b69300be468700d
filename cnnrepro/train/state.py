"""A run's whole training state: everything its next step depends on, saved and restored as one.

Model, optimizer and LR schedule, and every random generator the run draws from: the data order,
the augmentation, and the global generators dropout uses (the CPU's, and on CUDA the device's own,
which a CPU-only checkpoint would miss), and float16's loss scale. A run resumed from
``state_dict()`` takes the same next step as one that never stopped.

The config's speed settings live here too, so every loop over a state trains as the run does: the
batches' layout (channels-last), the autocast dtype, and what training and evaluation call (the
model, or its compiled self).
"""

from dataclasses import dataclass, field

import torch

from cnnrepro.train.replicas import Replicas
from cnnrepro.train.run_config import (
    RunConfig,
    amp_dtype,
    compile_model,
    make_optimizer,
    make_scheduler,
    memory_format,
)
from cnnrepro.train.seeding import derive_seed, generator


@dataclass
class TrainState:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    data_rng: torch.Generator  # the order of the training batches
    augment_rng: torch.Generator  # crops and flips
    device: torch.device
    replicas: Replicas = field(default_factory=Replicas)  # the processes training this run together
    network: torch.nn.Module | None = None  # what training calls: the model (its DDP wrapper, compiled)
    evaluator: torch.nn.Module | None = None  # what evaluation calls: the model (compiled)
    memory_format: torch.memory_format = torch.contiguous_format  # every batch's layout
    amp_dtype: torch.dtype | None = None  # autocast's dtype in the forward; None: float32
    scaler: torch.amp.GradScaler | None = None  # float16's loss scaling (amp_dtype float16 only)

    def __post_init__(self):
        if self.network is None:
            self.network = self.model
        if self.evaluator is None:
            self.evaluator = self.model

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` in the run's layout (a no-op for the default, contiguous)."""
        return images.contiguous(memory_format=self.memory_format)

    def autocast(self) -> torch.autocast:
        """The forward's autocast context: the run's dtype on its device, or disabled."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    @classmethod
    def create(
        cls, config: RunConfig, model: torch.nn.Module, steps_per_epoch: int, replicas: Replicas | None = None
    ) -> "TrainState":
        """A fresh state for ``model`` (already on its device, built by ``build_model``: in the
        config's layout), wrapped for ``replicas`` when they are many and compiled if the config
        says so; seeds the dropout generators (every rank alike)."""
        replicas = replicas or Replicas()
        device = next(model.parameters()).device
        dtype = amp_dtype(config, device)  # a ValueError for fp16 on the CPU, before any compiling
        wrapped = replicas.wrap(model)
        network = compile_model(config, wrapped)
        evaluator = network if wrapped is model else compile_model(config, model)
        optimizer = make_optimizer(config, model)
        scheduler = make_scheduler(config, optimizer, steps_per_epoch * config.epochs)
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        torch.manual_seed(derive_seed(config.seed, "dropout"))  # the CPU's and every CUDA device's
        data_rng, augment_rng = generator(config.seed, "data"), generator(config.seed, "augment")
        return cls(
            model,
            optimizer,
            scheduler,
            data_rng,
            augment_rng,
            device,
            replicas,
            network,
            evaluator,
            memory_format(config),
            dtype,
            scaler,
        )

    def state_dict(self) -> dict:
        state = {
            "device_type": self.device.type,
            "threads": torch.get_num_threads(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "data_rng": self.data_rng.get_state(),
            "augment_rng": self.augment_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restores a state saved by :meth:`state_dict` on the same kind of device with the same CPU
        threads. Another device draws other dropout masks and runs other kernels, and another thread
        count splits reductions differently: refused, never silently mixed."""
        saved = state.get("device_type", "cpu")  # checkpoints before this field: CPU runs only
        if saved != self.device.type:
            raise ValueError(
                f"this run's checkpoint was written on {saved}, but it would resume on "
                f"{self.device.type}: rerun with --device {saved}, or --force to start over"
            )
        threads = state.get("threads", torch.get_num_threads())  # older checkpoints: not recorded
        if threads != torch.get_num_threads():
            raise ValueError(
                f"this run's checkpoint was written with {threads} CPU threads, but it would resume with "
                f"{torch.get_num_threads()} (the bits depend on it): rerun with --threads {threads}, "
                "or --force to start over"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.data_rng.set_state(state["data_rng"])
        self.augment_rng.set_state(state["augment_rng"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if self.scaler is not None:
            self.scaler.load_state_dict(state["grad_scaler"])
