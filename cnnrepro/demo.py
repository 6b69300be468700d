"""A short tour of the custom ops: ``python -m cnnrepro.demo`` (``make demo``).

For each op: how far it is from PyTorch's native op at a real network shape, and the median
time of both, on this machine's CPU. Exit status (docs/running.md#exit-codes): 0 done, 2 usage
(it takes no arguments), 130 interrupted.
"""

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import cnnrepro
from cnnrepro import nn, ops


def median_ms(fn, rounds: int = 7) -> float:
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def side_by_side(name: str, custom, native, x: torch.Tensor) -> None:
    """One line: custom against native on ``x``, their largest difference and median times."""
    with torch.no_grad():
        diff = (custom(x) - native(x)).abs().max().item()
        t_custom, t_native = median_ms(lambda: custom(x)), median_ms(lambda: native(x))
    print(
        f"{name:<34} max |custom - native| = {diff:.2e}   native {t_native:7.2f} ms"
        f"   custom {t_custom:7.2f} ms   speedup {t_native / t_custom:4.2f}x"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command's parser: no arguments (the docs' examples are checked against it)."""
    return argparse.ArgumentParser(prog="python -m cnnrepro.demo", description=__doc__.splitlines()[0])


def main(argv=None) -> int:
    build_parser().parse_args(argv)
    try:
        tour()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


def tour() -> None:
    """Each op against its native twin, one line each."""
    info = cnnrepro.build_info()
    print(
        f"cnnrepro._C: torch {info['torch_version']}, CUDA {'yes' if info['with_cuda'] else 'no'}, "
        f"{info['build_type']}, cpu flags '{info['cpu_flags']}', {torch.get_num_threads()} threads"
    )
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 96, 55, 55, generator=generator)
    side_by_side(
        "LRN forward, AlexNet conv1 output", lambda t: ops.lrn(t, 5), lambda t: F.local_response_norm(t, 5), x
    )
    side_by_side(
        "max-pool 3x3/2 + argmax, AlexNet",
        lambda t: ops.max_pool2d_with_argmax(t, 3, 2)[0],
        lambda t: F.max_pool2d(t, 3, 2, return_indices=True)[0],
        x,
    )
    torch.manual_seed(0)
    fused = nn.ConvBNReLU2d(64, 64, 3, padding=1).eval()
    unfused = torch.nn.Sequential(*fused).eval()
    side_by_side(
        "conv-BN-ReLU eval, ResNet-18 layer1",
        fused,
        unfused,
        torch.randn(32, 64, 56, 56, generator=generator),
    )


if __name__ == "__main__":
    sys.exit(main())
