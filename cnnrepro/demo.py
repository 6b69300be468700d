"""A short tour of the custom ops, until the training runner lands: ``python -m cnnrepro.demo``.

For each op: how far it is from PyTorch's native op at a real network shape, and the median
time of both, on this machine's CPU.
"""

import statistics
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


def compare(name: str, custom, native, x: torch.Tensor) -> None:
    with torch.no_grad():
        diff = (custom(x) - native(x)).abs().max().item()
        t_custom, t_native = median_ms(lambda: custom(x)), median_ms(lambda: native(x))
    print(
        f"{name:<34} max |custom - native| = {diff:.2e}   native {t_native:7.2f} ms"
        f"   custom {t_custom:7.2f} ms   speedup {t_native / t_custom:4.2f}x"
    )


def main() -> None:
    info = cnnrepro.build_info()
    print(
        f"cnnrepro._C: torch {info['torch_version']}, CUDA {'yes' if info['with_cuda'] else 'no'}, "
        f"{info['build_type']}, cpu flags '{info['cpu_flags']}', {torch.get_num_threads()} threads"
    )
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 96, 55, 55, generator=generator)
    compare(
        "LRN forward, AlexNet conv1 output", lambda t: ops.lrn(t, 5), lambda t: F.local_response_norm(t, 5), x
    )
    compare(
        "max-pool 3x3/2 + argmax, AlexNet",
        lambda t: ops.max_pool2d_with_argmax(t, 3, 2)[0],
        lambda t: F.max_pool2d(t, 3, 2, return_indices=True)[0],
        x,
    )
    torch.manual_seed(0)
    fused = nn.ConvBNReLU2d(64, 64, 3, padding=1).eval()
    unfused = torch.nn.Sequential(*fused).eval()
    compare(
        "conv-BN-ReLU eval, ResNet-18 layer1",
        fused,
        unfused,
        torch.randn(32, 64, 56, 56, generator=generator),
    )


if __name__ == "__main__":
    main()
