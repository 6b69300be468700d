"""The benchmark harness: time one implementation of a case, pair the implementations up, and
write the results where the report reads them.

A case is one (op, direction, shape, layout, device); each benchmark times one implementation of
it ("custom", "native", or a reference such as "compiled"). Cases are pytest-benchmark groups, so its
own table shows the implementations of a case side by side.

Memory-bound ops are also measured against the machine: a case says how many bytes its pass must
move (inputs read once, outputs written once), and a "copy" member times a copy of the input into a
preallocated tensor, in the same process and group, as the yardstick of what the memory delivers.
"""

import csv
import io
import json
import os
import platform
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

import cnnrepro
from cnnrepro.files import write_atomic

ROUNDS = 10
COPY = "copy"  # the memory yardstick's implementation name
CASE_FIELDS = ["op", "direction", "shape", "layout", "device"]


@dataclass(frozen=True)
class Case:
    op: str  # an op, or a model's name for whole-model cases
    direction: str  # forward / backward / forward+backward; train / inference for models
    shape: str
    layout: str
    device: str
    kind: str = "op"  # "op", "model" or "loop": which results file the case goes to
    examples: int = 0  # examples one call processes (models, loops): their rows get examples/s
    moved_bytes: int = 0  # bytes the pass must move (memory-bound ops): their rows get GB/s

    @property
    def group(self) -> str:
        return " ".join([self.op, self.direction, self.shape, self.layout, self.device])


def dims(shape) -> str:
    return "x".join(str(d) for d in shape)


def synchronizer(device: str):
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def time_member(benchmark, fn, case: Case, impl: str, rounds: int = ROUNDS, warmup_rounds: int = 2):
    """Time ``fn``, implementation ``impl`` of ``case``, synchronizing the device after each call."""
    sync = synchronizer(case.device)

    def timed():
        fn()
        sync()

    benchmark.group = case.group
    benchmark.extra_info.update(asdict(case), impl=impl)
    benchmark.pedantic(timed, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)


def time_copy(benchmark, x: torch.Tensor, case: Case):
    """Time the memory yardstick of ``case``: ``x`` copied into a preallocated tensor of its layout
    (device to device on a GPU), which moves 2 * x.nbytes."""
    target = torch.empty_like(x)
    time_member(benchmark, lambda: target.copy_(x), replace(case, moved_bytes=2 * x.nbytes), COPY)


def paired_rows(benchmarks, kind: str, baseline: str = "native", candidate: str = "custom") -> list[dict]:
    """One row per case of ``kind`` timed both ways: the case, both medians, speedup = baseline /
    candidate, every other implementation's time relative to the candidate's, examples/s of both
    where the case says how many examples a call processes, and where it says how many bytes its
    pass moves: the candidate's GB/s, the copy's GB/s and the candidate's percentage of it."""
    medians, cases, moved = {}, {}, {}
    for bench in benchmarks:
        info = bench.extra_info
        if info.get("kind") == kind and bench.stats:
            medians.setdefault(bench.group, {})[info["impl"]] = bench.stats.median
            moved.setdefault(bench.group, {})[info["impl"]] = info.get("moved_bytes", 0)
            if info["impl"] != COPY:
                cases[bench.group] = info
    rows = []
    for group, times in sorted(medians.items()):
        if {baseline, candidate} <= times.keys():
            others = {i: t / times[candidate] for i, t in times.items() if i not in (baseline, candidate)}
            rows.append(
                {field: cases[group][field] for field in CASE_FIELDS}
                | {
                    f"{baseline}_median_s": times[baseline],
                    f"{candidate}_median_s": times[candidate],
                    "speedup": times[baseline] / times[candidate],
                    "others": " ".join(f"{impl}={ratio:.2f}" for impl, ratio in sorted(others.items())),
                }
            )
            if cases[group].get("examples"):
                rows[-1] |= {
                    f"{impl}_examples_per_s": cases[group]["examples"] / times[impl]
                    for impl in (baseline, candidate)
                }
            if cases[group].get("moved_bytes"):
                rows[-1] |= bandwidth(moved[group], times, candidate)
    return rows


def bandwidth(moved: dict, times: dict, candidate: str) -> dict:
    """The candidate's bytes, GB/s and, where the group has a copy, the copy's GB/s and the
    candidate's percentage of it."""
    achieved = moved[candidate] / times[candidate] / 1e9
    columns = {"moved_bytes": moved[candidate], f"{candidate}_gb_per_s": achieved}
    if times.get(COPY):
        copy = moved[COPY] / times[COPY] / 1e9
        columns |= {"copy_gb_per_s": copy, "percent_of_copy": 100 * achieved / copy}
    return columns


def merge_csv(path: Path, rows: list[dict], key_fields: list[str]) -> None:
    """Writes ``rows`` into the CSV at ``path``, replacing rows with the same key and keeping the
    others, so a partial run (``-k lrn``) updates its cases without dropping the rest."""
    kept = []
    if path.exists():
        new_keys = {tuple(str(row[f]) for f in key_fields) for row in rows}
        with open(path, newline="") as f:
            kept = [row for row in csv.DictReader(f) if tuple(row[k] for k in key_fields) not in new_keys]
    fields = list(dict.fromkeys(field for row in kept + rows for field in row))  # every row's columns
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(sorted(kept + rows, key=lambda row: tuple(str(row.get(f, "")) for f in key_fields)))
    write_atomic(path, out.getvalue())


def machine_name() -> str:
    """A file-name-safe name for this machine and torch: the GPU's name where CUDA is used, else the
    CPU's model and core count; e.g. ``amd-epyc-7b13-2cpu-torch2.13.0``."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        device = f"{cpu_model()} {os.cpu_count()}cpu"
    return re.sub(r"[^a-z0-9.]+", "-", f"{device} torch{torch.__version__.split('+')[0]}".lower()).strip("-")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    return {
        "machine": machine_name(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),  # the allocator setting (see make bench)
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "build_info": json.dumps(cnnrepro.build_info(), sort_keys=True),
    }
