"""Did run B reproduce run A? Two results stores matched run by run (by config key), each pair given
a verdict, and, where the bits differ, what differs between the environments that trained them.

Verdicts: ``identical`` (the same weights hash), ``within noise`` (final test accuracy and final
training error each differ by less than the seed-to-seed spread of that model's config measured in
either store, or by DEFAULT_TOLERANCE where neither store has two seeds of it), ``differs``, and
``only in A`` / ``only in B``.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cnnrepro.report.results import NoResultsError, read_store
from cnnrepro.store import StoreError
from cnnrepro.train import naming_fields

DEFAULT_TOLERANCE = 0.01  # 1 percentage point, where no store measured a spread over seeds
VERDICTS = ("identical", "within noise", "differs", "only in A", "only in B")
METRICS = {"test acc": "test_acc", "train error": "train_error"}
RUN_ENVIRONMENT = ("device", "threads", "torch", "code_revision")
ENV_FIELDS = {  # env.json fields that change the bits, by what a reader calls them
    "device name": ("cuda_device",),
    "processor": ("machine", "processor"),
    "build flags": ("build_info", "cpu_flags"),
    "compiler": ("build_info", "compiler"),
    "cuda build": ("build_info", "cuda_version"),
    "deterministic settings": ("numerics",),
}


@dataclass
class Store:
    directory: Path
    runs: pd.DataFrame
    env: dict


def load_store(directory: Path, label: str) -> Store:
    """The store's runs and env.json; StoreError (one line, naming the path) if it is not a results
    store, is empty or damaged."""
    try:
        runs, _, env = read_store(directory)
    except NoResultsError as error:
        raise StoreError(f"{label}: {error}") from None
    runs["train_error"] = 1 - runs["train_acc"]
    runs["config_without_seed"] = [_without_seed(c) for c in runs["config"]]
    return Store(Path(directory), runs, env)


def _without_seed(config: str) -> str:
    """The config's naming fields but the seed: a store from before a field was added and one
    from after group their runs alike."""
    fields = naming_fields(json.loads(config))
    fields.pop("seed", None)
    return json.dumps(fields, sort_keys=True)


def schema_of(store: Store) -> int:
    return int(store.env.get("store_schema", 1))


def spreads(store: Store) -> dict[str, dict[str, float]]:
    """Per config (without its seed) with two or more finished seeds: each metric's max - min."""
    finished = store.runs[store.runs["status"] == "finished"]
    out = {}
    for config, group in finished.groupby("config_without_seed"):
        if group["seed"].nunique() >= 2:
            out[config] = {m: float(group[c].max() - group[c].min()) for m, c in METRICS.items()}
    return out


def _env_value(env: dict, path: tuple[str, ...]):
    for name in path:
        env = env.get(name) if isinstance(env, dict) else None
    return env


def environment_differences(row_a, row_b, env_a: dict, env_b: dict) -> str:
    """What differs between the environments of two runs: their rows' columns, then env.json's."""
    diffs = []
    for column in RUN_ENVIRONMENT:
        a, b = row_a.get(column), row_b.get(column)
        if pd.notna(a) and pd.notna(b) and str(a) != str(b):
            diffs.append(f"{column} {a} -> {b}")
    for name, path in ENV_FIELDS.items():
        a, b = _env_value(env_a, path), _env_value(env_b, path)
        if a != b and a is not None and b is not None:
            diffs.append(f"{name} {_short(a)} -> {_short(b)}")
    return "; ".join(diffs)


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def compare(a: Store, b: Store) -> pd.DataFrame:
    """One row per run key in either store: the verdict, both final metrics, their differences, the
    tolerance used and where it came from, and the environment differences of non-identical pairs."""
    if schema_of(a) != schema_of(b):
        raise StoreError(
            f"{a.directory} has store schema {schema_of(a)} but {b.directory} has {schema_of(b)}: "
            "rerun the older one with this cnnrepro to compare them"
        )
    spread_a, spread_b = spreads(a), spreads(b)
    runs_a, runs_b = a.runs.set_index("key"), b.runs.set_index("key")
    rows = []
    for key in list(runs_a.index) + [k for k in runs_b.index if k not in runs_a.index]:
        in_a, in_b = key in runs_a.index, key in runs_b.index
        row_a = runs_a.loc[key] if in_a else None
        row_b = runs_b.loc[key] if in_b else None
        known = row_a if in_a else row_b
        row = {"model": known["model"], "seed": int(known["seed"]), "key": key}
        for metric, column in METRICS.items():
            row[f"{metric} A"] = float(row_a[column]) if in_a else float("nan")
            row[f"{metric} B"] = float(row_b[column]) if in_b else float("nan")
        row["tolerance"], row["tolerance from"] = _tolerance(known["config_without_seed"], spread_a, spread_b)
        if not (in_a and in_b):
            row["verdict"], row["environment differences"] = ("only in A" if in_a else "only in B"), ""
        else:
            row["verdict"] = _verdict(row_a, row_b, row)
            identical = row["verdict"] == "identical"
            row["environment differences"] = (
                "" if identical else environment_differences(row_a, row_b, a.env, b.env)
            )
        rows.append(row)
    columns = ["model", "seed", "verdict", *(f"{m} {s}" for m in METRICS for s in "AB")]
    columns += ["tolerance", "tolerance from", "environment differences", "key"]
    return pd.DataFrame(rows, columns=columns)


def _tolerance(config: str, spread_a: dict, spread_b: dict) -> tuple[float, str]:
    measured = [(s[config], name) for s, name in ((spread_a, "A"), (spread_b, "B")) if config in s]
    if not measured:
        return DEFAULT_TOLERANCE, "default (one seed)"
    widest = max(max(spread.values()) for spread, _ in measured)
    return widest, "seed spread in " + " and ".join(name for _, name in measured)


def _verdict(row_a, row_b, row: dict) -> str:
    if row_a["status"] != row_b["status"]:
        return "differs"
    if row_a["weights_sha256"] == row_b["weights_sha256"]:
        return "identical"
    gaps = [abs(row[f"{m} A"] - row[f"{m} B"]) for m in METRICS]
    return "within noise" if all(gap < row["tolerance"] for gap in gaps) else "differs"


def verdict_counts(table: pd.DataFrame) -> str:
    """E.g. "13 identical, 2 within noise, 0 differ" (and the only-in counts when there are any)."""
    counts = table["verdict"].value_counts()
    parts = [f"{counts.get('identical', 0)} identical", f"{counts.get('within noise', 0)} within noise"]
    parts.append(f"{counts.get('differs', 0)} differ")
    parts += [f"{counts[v]} {v}" for v in ("only in A", "only in B") if counts.get(v, 0)]
    return ", ".join(parts)


def reproduced(table: pd.DataFrame) -> bool:
    """Nothing differs beyond noise (runs in one store only are listed, not failed)."""
    return not (table["verdict"] == "differs").any()
