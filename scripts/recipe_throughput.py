"""The training throughput of one paper-profile recipe on this machine, and the wall time the whole
recipe would take at that rate (make check-gpu's last step: He et al.'s ResNet-56 on CIFAR-10).

    python scripts/recipe_throughput.py --model resnet56 --device cuda --out reports/gpu

Times training steps (forward, cross-entropy, backward, SGD step) of the recipe's model, batch and
input size on random data (CIFAR-10 itself cannot be downloaded on a machine without a network: the
step's time does not depend on the pixels), for a fixed number of seconds after a warm-up; writes
throughput.csv and prints one line. The projection counts the recipe's steps only (no evaluation,
no data loading)."""

import argparse
import csv
import io
import math
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from cnnrepro.experiments import PROFILES, plan_runs
from cnnrepro.files import write_atomic
from cnnrepro.train import build_model, set_deterministic
from cnnrepro.train.run_config import make_optimizer

CIFAR10 = SimpleNamespace(num_classes=10, in_channels=3, image_size=32, train_examples=50_000)


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--backend", default="custom", choices=["custom", "native"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=positive, default=20.0, help="how long to time steps for")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    (config,) = plan_runs([args.model], PROFILES[args.profile], [0], backend=args.backend)
    if config.dataset != "cifar10":
        raise SystemExit(
            f"error: the {args.profile} profile trains on {config.dataset}; this projects CIFAR-10 recipes"
        )
    set_deterministic()  # as the runner trains
    on_cuda = torch.device(args.device).type == "cuda"
    model = build_model(config, CIFAR10, args.device).train()
    optimizer = make_optimizer(config, model)
    size = config.input_size or CIFAR10.image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(config.batch_size, 3, size, size, generator=generator).to(args.device)
    labels = torch.randint(0, CIFAR10.num_classes, (config.batch_size,), generator=generator).to(args.device)
    sync = torch.cuda.synchronize if on_cuda else (lambda: None)

    def step():
        optimizer.zero_grad(set_to_none=True)
        output = model(images)
        logits = output[0] if isinstance(output, tuple) else output  # GoogLeNet's aux heads in training
        F.cross_entropy(logits, labels).backward()
        optimizer.step()

    for _ in range(3):  # warm-up: cuDNN's and the allocator's first calls
        step()
    sync()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        step()
        steps += 1
    sync()
    seconds_per_step = (time.perf_counter() - start) / steps
    recipe_steps = config.epochs * math.ceil(CIFAR10.train_examples / config.batch_size)
    row = {
        "model": args.model,
        "profile": args.profile,
        "backend": args.backend,
        "device": torch.cuda.get_device_name(args.device) if on_cuda else "cpu",
        "batch_size": config.batch_size,
        "input_size": size,
        "steps_timed": steps,
        "ms_per_step": round(1000 * seconds_per_step, 3),
        "images_per_s": round(config.batch_size / seconds_per_step, 1),
        "recipe_steps": recipe_steps,
        "projected_hours": round(recipe_steps * seconds_per_step / 3600, 3),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(row))
    writer.writeheader()
    writer.writerow(row)
    write_atomic(args.out / "throughput.csv", table.getvalue())
    print(
        f"{args.model} ({args.profile} recipe, {args.backend}) on {row['device']}: "
        f"{row['images_per_s']} images/s at batch {config.batch_size}; "
        f"{recipe_steps} steps would take {row['projected_hours']} h"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
