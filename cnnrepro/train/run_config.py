"""A run's config (``RunConfig``: its hash is the run's key), and what the config builds (the model,
SGD with momentum or Adam, the per-iteration LR schedule). Reused by the runner, the benchmarks and
users' scripts. (A profile's per-model settings are ``experiments.profiles.Recipe``.)"""

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass

import torch

from cnnrepro import models
from cnnrepro.data import Dataset
from cnnrepro.data.augment import KerasAugment, normalized_fill
from cnnrepro.models.blocks import init_glorot
from cnnrepro.train.seeding import derive_seed

SCHEDULES = ("constant", "cosine", "multistep")
WARMUP_FACTOR = 0.1  # He et al.'s warm-up: lr 0.01 where the schedule starts at 0.1
# "model": the builder's own initialization; "xavier": d2l's init_cnn, which the book's training
# function applies to every network: Glorot-uniform Conv2d and Linear weights, biases left as built.
INITS = ("model", "xavier")
OPTIMIZERS = ("sgd", "adam")
# torch.compile's modes (inductor; "": eager) and autocast's dtypes ("": float32 throughout).
COMPILE_MODES = ("", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
AMP_DTYPES = {"": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    warmup_steps: int = 0  # the first iterations at lr x WARMUP_FACTOR, then the schedule's lr
    backend: str = "custom"
    width: float = 1.0
    input_size: int | None = None  # None: the dataset's own resolution
    aux_weight: float = 0.3  # GoogLeNet's auxiliary losses, in training
    train_subset: int | None = None  # the first N training examples only (profiles)
    test_subset: int | None = None
    model_config: tuple[tuple[str, object], ...] = ()  # extra builder arguments, as sorted pairs
    # Data parallelism (torchrun): the processes sharing each batch, and whether BatchNorm pools
    # their statistics (per rank otherwise). Both change the bits, so both name the run.
    world_size: int = 1
    sync_bn: bool = False
    init: str = "model"  # see INITS
    # "sgd" (with momentum) or "adam" (torch.optim.Adam: lr, betas, eps; its weight_decay is an L2
    # term added to the gradient, which Keras' Adam lacks: the keras profile sets 0)
    optimizer: str = "sgd"
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's only
    eps: float = 1e-8  # Adam's only (Keras' default is 1e-7)
    # Keras ImageDataGenerator arguments as sorted (name, value) pairs (KerasAugment.pairs()); set,
    # they replace the dataset's own augmentation (CIFAR's crop + flip) on the training batches
    augment: tuple[tuple[str, object], ...] = ()
    # How fast, as timm's train script: each changes the bits, so each names the run.
    channels_last: bool = False  # the model's conv weights and every batch in torch.channels_last
    compile: str = ""  # torch.compile (inductor) of the model in this mode (COMPILE_MODES); "": eager
    amp: str = ""  # autocast's dtype, "bf16" or "fp16" (CUDA only: see amp_dtype); "": float32

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(self.betas))  # from JSON a list: the same key
        object.__setattr__(self, "augment", tuple(sorted(tuple(pair) for pair in self.augment)))
        KerasAugment.from_pairs(self.augment)  # a ValueError names a bad argument
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas) or not self.eps > 0:
            raise ValueError(f"Adam's betas must be two numbers in [0, 1) and eps > 0, got {self}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {self}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, got {self.compile!r}")
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {tuple(AMP_DTYPES)}, got {self.amp!r}")
        if self.world_size < 1 or (self.sync_bn and self.world_size == 1):
            raise ValueError(f"world_size must be >= 1, and sync_bn needs more than one, got {self}")

    def key(self) -> str:
        """The run's identity: a hash of every field. Fields added since the first results
        (``ADDED_FIELDS``) count only when they differ from their default, so every earlier key,
        checkpoint and store row still names its run."""
        text = json.dumps(naming_fields(dataclasses.asdict(self)), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


ADDED_FIELDS = {
    "world_size": 1,
    "sync_bn": False,
    "init": "model",
    "warmup_steps": 0,
    "optimizer": "sgd",
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "augment": (),
    "channels_last": False,
    "compile": "",
    "amp": "",
}


def naming_fields(fields: dict) -> dict:
    """A config's fields (``asdict``'s, or runs.csv's read back from JSON) less the added ones at
    their defaults: the fields that name a run, the same for a config from before they existed."""

    def at_default(name: str) -> bool:
        default = ADDED_FIELDS[name]
        return json.dumps(fields[name], default=str) == json.dumps(default, default=str)

    return {name: value for name, value in fields.items() if not (name in ADDED_FIELDS and at_default(name))}


def amp_dtype(config: RunConfig, device) -> torch.dtype | None:
    """The dtype the run's forward autocasts to on ``device`` (None: float32). bfloat16 runs on the
    CPU and CUDA; float16 on CUDA only: CPUs without AVX512-FP16 or AMX-FP16 emulate its
    convolutions (slower than float32), and bfloat16 has float32's range, so it needs no loss
    scaling. A ValueError that says so for fp16 on the CPU."""
    dtype = AMP_DTYPES[config.amp]
    if dtype == torch.float16 and torch.device(device).type == "cpu":
        raise ValueError(
            "amp fp16 runs on CUDA only: on the CPU use bf16 (float32's range, no loss scaling; "
            "float16 convolutions are emulated on CPUs without AVX512-FP16/AMX-FP16)"
        )
    return dtype


def memory_format(config: RunConfig) -> torch.memory_format:
    """The layout the run's model weights and batches are in."""
    return torch.channels_last if config.channels_last else torch.contiguous_format


def compile_model(config: RunConfig, module: torch.nn.Module) -> torch.nn.Module:
    """``module`` as the run calls it: itself, or torch.compile's inductor in the config's mode,
    made reproducible: static shapes (``dynamic=False``: each batch shape gets its own graph, so a
    step's code never depends on which shapes came before it, and a resumed run compiles what an
    uninterrupted one did) and inductor's deterministic mode (no choice by timing: max-autotune
    picks its kernels by rule)."""
    if not config.compile:
        return module
    import torch._inductor  # 1-2 s to import: only for runs that compile

    options = torch._inductor.list_mode_options(config.compile) | {"deterministic": True}
    return torch.compile(module, dynamic=False, options=options)


def build_model(config: RunConfig, dataset: Dataset, device="cpu") -> torch.nn.Module:
    """The run's model, initialized from the run's "init" stream: the same weights on every device
    (and in either layout: channels_last only lays the 4-D weights out differently)."""
    torch.manual_seed(derive_seed(config.seed, "init"))
    extra = dict(config.model_config)
    if models.builder_accepts(config.model, "input_size"):
        extra.setdefault("input_size", config.input_size or dataset.image_size)
    model = models.get_model(
        config.model,
        num_classes=dataset.num_classes,
        in_channels=dataset.in_channels,
        backend=config.backend,
        width=config.width,
        **extra,
    )
    if config.init == "xavier":
        init_glorot(model, (torch.nn.Conv2d, torch.nn.Linear), zero_biases=False)
    return model.to(device, memory_format=memory_format(config))


def training_augmentation(config: RunConfig, dataset: Dataset):
    """What augments the run's training batches (``batches``' augment): the config's Keras
    augmentation (its constant fill in the dataset's normalized units), else the dataset's own."""
    if not config.augment:
        return dataset.augment
    keras = KerasAugment.from_pairs(config.augment)
    return functools.partial(keras, fill=normalized_fill(keras.cval, dataset.mean, dataset.std))


def train_examples(config: RunConfig, dataset: Dataset) -> int:
    """How many training examples one epoch of the run sees (the profile's subset, if it has one)."""
    return len(dataset.train) if config.train_subset is None else min(len(dataset.train), config.train_subset)


def make_optimizer(config: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with the config's momentum, or Adam with its betas and eps; the weight decay on every
    parameter, as the papers do."""
    if config.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(),
            lr=config.lr,
            betas=config.betas,
            eps=config.eps,
            weight_decay=config.weight_decay,
        )
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def schedule_factor(config: RunConfig, total_steps: int):
    """The schedule's LR multiplier at each iteration."""
    if config.schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    if config.schedule == "multistep":
        return lambda step: config.gamma ** sum(step >= m for m in config.milestones)
    return lambda step: 1.0


def lr_factor(config: RunConfig, total_steps: int):
    """The LR multiplier at each iteration: WARMUP_FACTOR through the warm-up, then the schedule's
    (He et al. 2016 warm up every CIFAR run with lr 0.01 for 400 iterations, then go back to 0.1)."""
    factor = schedule_factor(config, total_steps)
    if not config.warmup_steps:
        return factor
    return lambda step: WARMUP_FACTOR if step < config.warmup_steps else factor(step)


def make_scheduler(config: RunConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """The config's schedule, stepped once per iteration over ``total_steps``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, total_steps))
