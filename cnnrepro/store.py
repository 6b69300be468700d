"""The results store of an output directory: results.csv (a row per run and epoch), runs.csv (a
row per run) and env.json. Every write takes the directory's lock and replaces the file
atomically, so two runners writing to one directory cannot lose or tear each other's rows.

The runner and the training engine write it; the report only reads it (report/results.py)."""

import contextlib
import csv
import fcntl
import io
import json
from pathlib import Path

from cnnrepro.files import write_atomic

RESULTS_CSV, RUNS_CSV, ENV_JSON = "results.csv", "runs.csv", "env.json"

RESULT_FIELDS = [
    "suite",
    "profile",
    "key",
    "model",
    "seed",
    "backend",
    "epoch",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "epoch_time_s",
    "train_examples_per_s",
    "test_examples_per_s",
]
RUN_FIELDS = [
    "suite",
    "profile",
    "key",
    "model",
    "dataset",
    "seed",
    "backend",
    "status",
    "epochs",
    "train_acc",
    "test_acc",
    "params",
    "macs",
    "train_time_s",
    "train_examples_per_s",
    "test_examples_per_s",
    "weights_sha256",
    "determinism",
    "config",
]


class ResultsStore:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.directory / "checkpoints"

    @contextlib.contextmanager
    def _locked(self):
        with open(self.directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, name: str) -> list[dict]:
        path = self.directory / name
        if not path.exists():
            return []
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    def _replace_rows(self, name: str, fields: list[str], key: str, rows: list[dict]) -> None:
        """Drop the rows of run ``key`` and append ``rows`` (a rerun replaces, never duplicates)."""
        with self._locked():
            kept = [row for row in self._read(name) if row["key"] != key]
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept + rows)
            write_atomic(self.directory / name, out.getvalue())

    def record_run(self, key: str, epoch_rows: list[dict], run_row: dict) -> None:
        self._replace_rows(RESULTS_CSV, RESULT_FIELDS, key, epoch_rows)
        self._replace_rows(RUNS_CSV, RUN_FIELDS, key, [run_row])

    def finished(self) -> dict[str, dict]:
        """The runs already recorded, by key."""
        return {row["key"]: row for row in self._read(RUNS_CSV)}

    def write_env(self, env: dict) -> None:
        with self._locked():
            write_atomic(
                self.directory / ENV_JSON, json.dumps(env, indent=2, sort_keys=True, default=str) + "\n"
            )
