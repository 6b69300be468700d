"""Reading an output directory back: the runner's results store and, when they exist, the
benchmark results (``make bench`` writes them to reports/bench/)."""

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cnnrepro.store import ENV_JSON, RESULTS_CSV, RUNS_CSV, StoreError, read_valid_rows

BENCH_FILES = {
    "speedups": "speedups.csv",
    "models": "models.csv",
    "loops": "loops.csv",
    "suite": "suite.csv",
}


class NoResultsError(Exception):
    """The directory holds no results store to report on."""


@dataclass
class Results:
    directory: Path
    runs: pd.DataFrame  # runs.csv: one row per run
    epochs: pd.DataFrame  # results.csv: one row per run and epoch
    env: dict  # env.json: the last runner command's environment
    bench_dir: Path
    bench: dict[str, pd.DataFrame]  # speedups / models / loops, those that exist
    bench_env: dict  # bench/env.json: machine, torch and threads of the benchmark run


def default_bench_dir(directory: Path) -> Path:
    """reports/<profile>-<dataset>/ reads reports/bench/, where ``make bench`` writes."""
    return Path(directory).parent / "bench"


def _json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StoreError(f"{path} is damaged ({error}); rerun the runner to write it again") from error


def read_store(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """A results store's runs.csv, results.csv and env.json, every row validated; NoResultsError if
    it has no runs.csv or no rows in it, StoreError if a file is damaged."""
    directory = Path(directory)
    runs_csv = directory / RUNS_CSV
    if not runs_csv.exists():
        raise NoResultsError(
            f"no results store in {directory}: {RUNS_CSV} is missing "
            "(train first: python -m cnnrepro.run --all --out DIR)"
        )
    if not read_valid_rows(runs_csv):
        raise NoResultsError(f"no runs in {runs_csv}: it holds no rows (train first, or rerun with --repair)")
    runs = pd.read_csv(runs_csv, dtype={"key": str, "weights_sha256": str})
    epochs_csv = directory / RESULTS_CSV
    epochs = pd.read_csv(epochs_csv, dtype={"key": str}) if read_valid_rows(epochs_csv) else pd.DataFrame()
    return runs, epochs, _json(directory / ENV_JSON)


def load_results(directory: Path, bench_dir: Path | None = None) -> Results:
    runs, epochs, env = read_store(directory)
    bench_dir = Path(bench_dir) if bench_dir is not None else default_bench_dir(directory)
    bench = {name: pd.read_csv(bench_dir / f) for name, f in BENCH_FILES.items() if (bench_dir / f).exists()}
    bench_env = _json(bench_dir / "env.json")
    return Results(Path(directory), runs, epochs, env, bench_dir, bench, bench_env)
