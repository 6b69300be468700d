"""The benchmark harness: time one implementation of a case, and pair the results up.

Each benchmark times one implementation ("custom", "native", or a reference such as "clone")
of one case; cases are pytest-benchmark groups, so its own table shows them side by side.
"""

import torch

ROUNDS = 10


def synchronizer(device: str):
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def time_pair_member(benchmark, fn, *, group: str, impl: str, device: str):
    """Time ``fn`` (implementation ``impl`` of the case ``group``) and tag it for the speedup table."""
    sync = synchronizer(device)

    def timed():
        fn()
        sync()

    benchmark.group = group
    benchmark.extra_info.update(impl=impl, device=device)
    benchmark.pedantic(timed, rounds=ROUNDS, warmup_rounds=2, iterations=1)


def speedup_rows(benchmarks):
    """Per group timed both ways: (group, native median, custom median, speedup, others), where
    others maps every other implementation timed in the group (a clone, torch.compile...) to its
    time relative to custom."""
    medians = {}
    for bench in benchmarks:
        impl = bench.extra_info.get("impl")
        if impl and bench.stats:
            medians.setdefault(bench.group, {})[impl] = bench.stats.median
    rows = []
    for group, pair in sorted(medians.items()):
        if {"native", "custom"} <= pair.keys():
            others = {
                impl: t / pair["custom"] for impl, t in pair.items() if impl not in ("native", "custom")
            }
            rows.append((group, pair["native"], pair["custom"], pair["native"] / pair["custom"], others))
    return rows
