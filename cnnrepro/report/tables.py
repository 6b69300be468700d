"""The report's tables, as pandas DataFrames computed from the results store alone."""

import re

import pandas as pd

GROUP = ["suite", "model", "backend", "dataset", "profile"]  # runs that differ only in their seed

SUMMARY_COLUMNS = [
    *GROUP,
    "seeds",
    "status",
    "params",
    "macs",
    "train_acc_mean",
    "train_acc_sd",
    "test_acc_mean",
    "test_acc_sd",
    "train_examples_per_s",
    "test_examples_per_s",
    "epoch_time_s",
    "train_time_s",
    "weights_sha256",
]


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per model (per suite, backend, dataset and profile): final accuracies as the mean
    and sample standard deviation over its seeds (sd 0 for one seed), mean speeds, and the weights
    hash of each seed (first 12 hex digits) in seed order."""
    rows = []
    for key, group in runs.sort_values("seed").groupby(GROUP, sort=False):
        rows.append(
            dict(zip(GROUP, key, strict=True))
            | {
                "seeds": " ".join(str(s) for s in group["seed"]),
                "status": " ".join(sorted(set(group["status"]))),
                "params": int(group["params"].iloc[0]),
                "macs": int(group["macs"].iloc[0]),
                "train_acc_mean": group["train_acc"].mean(),
                "train_acc_sd": _sd(group["train_acc"]),
                "test_acc_mean": group["test_acc"].mean(),
                "test_acc_sd": _sd(group["test_acc"]),
                "train_examples_per_s": group["train_examples_per_s"].mean(),
                "test_examples_per_s": group.get("test_examples_per_s", pd.Series(dtype=float)).mean(),
                "epoch_time_s": (group["train_time_s"] / group["epochs"].where(group["epochs"] > 0)).mean(),
                "train_time_s": group["train_time_s"].mean(),
                "weights_sha256": " ".join(str(h)[:12] for h in group["weights_sha256"].fillna("")),
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _sd(values: pd.Series) -> float:
    """Sample standard deviation; 0 for one value, NaN (shown empty) for none."""
    values = values.dropna()
    if values.empty:
        return float("nan")
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def reproducibility_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run's weights hash and whether training it twice gave the same weights."""
    columns = ["suite", "model", "backend", "seed", "status", "weights_sha256", "determinism"]
    return runs.sort_values(["suite", "model", "backend", "seed"])[columns].reset_index(drop=True)


DEPTH_NAME = re.compile(r"^(plain|resnet)(\d+)$")


def degradation_curves(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch training error of the degradation suite: kind (plain/residual), depth, epoch,
    train_error (the mean over seeds; the running error over each epoch's batches, in train mode),
    and its least and greatest over seeds (train_error_min, train_error_max)."""
    columns = ["kind", "depth", "epoch", "train_error", "train_error_min", "train_error_max"]
    suite = runs[runs["suite"] == "degradation"]
    if suite.empty or epochs.empty:
        return pd.DataFrame(columns=columns)
    rows = epochs[epochs["key"].isin(suite["key"])].copy()
    parsed = rows["model"].str.extract(DEPTH_NAME)
    rows["kind"] = parsed[0].map({"plain": "plain", "resnet": "residual"})
    rows["depth"] = pd.to_numeric(parsed[1])
    rows["train_error"] = 1 - rows["train_acc"]
    rows = rows.dropna(subset=["kind"])
    curves = rows.groupby(["kind", "depth", "epoch"], as_index=False).agg(
        train_error=("train_error", "mean"),
        train_error_min=("train_error", "min"),
        train_error_max=("train_error", "max"),
    )
    return curves.sort_values(["kind", "depth", "epoch"]).reset_index(drop=True)[columns]


def final_errors(curves: pd.DataFrame) -> pd.DataFrame:
    """The last epoch's row of each (kind, depth) of :func:`degradation_curves`, indexed by both."""
    return curves.sort_values("epoch").groupby(["kind", "depth"]).last()


DEGRADATION_COLUMNS = ["depth", "plain", "plain_spread", "residual", "residual_spread"]


def degradation_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Final training error against depth: one row per depth, plain and residual side by side, each
    the mean over seeds and its spread (greatest - least; 0 with one seed)."""
    if curves.empty:
        return pd.DataFrame(columns=DEGRADATION_COLUMNS)
    final = final_errors(curves)
    final["spread"] = final["train_error_max"] - final["train_error_min"]
    table = final[["train_error", "spread"]].unstack("kind")
    table.columns = [kind if what == "train_error" else f"{kind}_spread" for what, kind in table.columns]
    table = table.reindex(columns=DEGRADATION_COLUMNS[1:])
    return table.reset_index().rename_axis(columns=None)


def profile_table(profile: dict) -> pd.DataFrame:
    """The profile's per-model recipes (the settings every run of that model used)."""
    recipes = profile.get("recipes") or {}
    rows = [{"model": model} | recipe for model, recipe in sorted(recipes.items())]
    rows.append({"model": "(any other)"} | (profile.get("default_recipe") or {}))
    return pd.DataFrame(rows)
