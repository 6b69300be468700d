"""Shards: a deterministic partition of the planned runs, for job arrays (Slurm's --array).

A run's shard depends on its key alone, so it lands in the same shard whatever else is planned, and
shards 0..N-1 of one plan together cover it exactly once."""

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"a shard I/N needs N >= 1 and 0 <= I < N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``I/N`` (e.g. ``$SLURM_ARRAY_TASK_ID/8``); an argparse type."""
        try:
            index, count = (int(part) for part in text.split("/"))
            return cls(index, count)
        except ValueError as error:
            detail = str(error) if "shard" in str(error) else f"expected I/N, e.g. 0/8, got {text!r}"
            raise argparse.ArgumentTypeError(detail) from None

    def holds(self, key: str) -> bool:
        """Whether the run with this key (a hex hash) belongs to this shard."""
        return int(key, 16) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
