"""The results store of an output directory: results.csv (a row per run and epoch), runs.csv (a
row per run) and env.json. Every write takes the directory's lock and replaces the file
atomically, so two runners writing to one directory cannot lose or tear each other's rows.

Only the runner writes it (cnnrepro/run.py: the driver, or torchrun's rank 0, as each run's outcome
arrives; executors, workers and the training engine never do); the report only reads it
(report/results.py)."""

import contextlib
import csv
import fcntl
import io
import json
import re
import shutil
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
    # where it ran: what changes the bits besides the config (a store is written by many commands)
    "device",
    "threads",
    "torch",
    "code_revision",
]
RUN_ENVIRONMENT = ("device", "threads", "torch", "code_revision")  # absent in older stores
# The version of this layout, in env.json ("store_schema"; absent: 1). Raise it when a column's
# meaning changes: stores of different versions are not compared.
STORE_SCHEMA = 1
STATUSES = ("finished", "diverged")


class StoreError(Exception):
    """A store file that cannot be trusted: the message names the file, the line and the way out."""


def _check(pattern: str):
    regex = re.compile(pattern)
    return lambda value: bool(regex.fullmatch(value))


def _number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _optional_number(value: str) -> bool:
    return value == "" or _number(value)


KEY_OK, INT_OK = _check(r"[0-9a-f]{16}"), _check(r"-?[0-9]+")
# What a valid row holds, column by column (columns not listed: any text).
RUN_CHECKS = {
    "key": KEY_OK,
    "seed": INT_OK,
    "status": STATUSES.__contains__,
    "epochs": INT_OK,
    "train_acc": _optional_number,
    "test_acc": _optional_number,
    "params": INT_OK,
    "macs": INT_OK,
    "weights_sha256": _check(r"[0-9a-f]{64}"),
}
RESULT_CHECKS = {
    "key": KEY_OK,
    "seed": INT_OK,
    "epoch": INT_OK,
    **dict.fromkeys(("train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s"), _number),
}


SCHEMAS = {RUNS_CSV: (RUN_FIELDS, RUN_CHECKS), RESULTS_CSV: (RESULT_FIELDS, RESULT_CHECKS)}


def read_rows(path: Path, fields: list[str], checks: dict) -> tuple[list[dict], list[str]]:
    """The valid rows of a store CSV, and a description of each damaged one ("line N: why"). A
    missing or empty file has no rows; a file that is not text, or whose header is not a store's,
    is damaged as a whole."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return [], []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            required = [name for name in fields if name not in RUN_ENVIRONMENT]
            if not set(required) <= set(header) or not set(header) <= set(fields):
                return [], [f"line 1: not a {path.name} header (columns {', '.join(header)[:120]})"]
            rows, damaged = [], []
            for row in reader:
                problem = _row_problem(row, checks)
                if problem:
                    damaged.append(f"line {reader.line_num}: {problem}")
                else:
                    rows.append(row)
    except UnicodeDecodeError as error:
        return [], [f"not text ({error.reason} at byte {error.start})"]
    except csv.Error as error:
        return [], [f"not CSV ({error})"]
    return rows, damaged


def read_valid_rows(path: Path) -> list[dict]:
    """The rows of a store CSV (runs.csv or results.csv, by its name), every one validated; a
    StoreError naming the file, the first damaged line and the way out if any is damaged."""
    path = Path(path)
    rows, damaged = read_rows(path, *SCHEMAS[path.name])
    if damaged:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise StoreError(
            f"{path} is damaged: {damaged[0]}{more}. Rerun the runner with --repair to drop what is "
            "damaged and record those runs again from their checkpoints"
        )
    return rows


def _row_problem(row: dict, checks: dict) -> str:
    if None in row:
        return "more columns than the header"
    missing = [name for name, value in row.items() if value is None]
    if missing:
        return f"cut short (no {', '.join(missing)})"
    bad = [name for name, ok in checks.items() if name in row and not ok(row[name])]
    return f"bad {', '.join(f'{name} {row[name][:70]!r}' for name in bad)}" if bad else ""


class ResultsStore:
    """An output directory's store. Every row read is validated: a damaged one is a StoreError
    naming its file and line; :meth:`repair` drops damaged rows (keeping a copy of the file), and
    the runner then records those runs again from their checkpoints."""

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
        return read_valid_rows(self.directory / name)

    def _write(self, name: str, rows: list[dict]) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=SCHEMAS[name][0])
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.directory / name, out.getvalue())

    def repair(self) -> list[str]:
        """Drops the damaged rows of runs.csv and results.csv, after copying each damaged file to
        ``<file>.damaged``; returns one line per dropped row or file, for the user to read."""
        dropped = []
        with self._locked():
            for name in (RUNS_CSV, RESULTS_CSV):
                path = self.directory / name
                rows, damaged = read_rows(path, *SCHEMAS[name])
                if damaged:
                    shutil.copyfile(path, path.with_name(f"{name}.damaged"))
                    self._write(name, rows)
                    dropped += [
                        f"{path}, {problem}: dropped (the file was copied to {name}.damaged)"
                        for problem in damaged
                    ]
        return dropped

    def _replace_rows(self, name: str, key: str, rows: list[dict]) -> None:
        """Drop the rows of run ``key`` and append ``rows`` (a rerun replaces, never duplicates)."""
        with self._locked():
            self._write(name, [row for row in self._read(name) if row["key"] != key] + rows)

    def record_run(self, key: str, epoch_rows: list[dict], run_row: dict) -> None:
        self._replace_rows(RESULTS_CSV, key, epoch_rows)
        self._replace_rows(RUNS_CSV, key, [run_row])

    def finished(self) -> dict[str, dict]:
        """The runs already recorded, by key."""
        return {row["key"]: row for row in self._read(RUNS_CSV)}

    def epoch_counts(self) -> dict[str, int]:
        """How many epoch rows results.csv holds for each run."""
        counts: dict[str, int] = {}
        for row in self._read(RESULTS_CSV):
            counts[row["key"]] = counts.get(row["key"], 0) + 1
        return counts

    def write_env(self, env: dict) -> None:
        env = env | {"store_schema": STORE_SCHEMA}
        with self._locked():
            write_atomic(
                self.directory / ENV_JSON, json.dumps(env, indent=2, sort_keys=True, default=str) + "\n"
            )
