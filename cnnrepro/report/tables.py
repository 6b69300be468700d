"""The report's tables, as pandas DataFrames computed from the results store alone."""

import re

import pandas as pd

from cnnrepro.models.resnet import UNITS

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
    and sample standard deviation over its seeds (none, NaN, for one seed: it has no spread), mean
    speeds, and the weights hash of each seed (first 12 hex digits) in seed order."""
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
    """Sample standard deviation; NaN (the report shows a dash) for one value or none."""
    values = values.dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def reproducibility_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run's weights hash and whether training it twice gave the same weights."""
    columns = ["suite", "model", "backend", "seed", "status", "weights_sha256", "determinism"]
    return runs.sort_values(["suite", "model", "backend", "seed"])[columns].reset_index(drop=True)


DEPTH_NAME = re.compile(r"^(plain|resnet)(\d+)$")


def over_seeds(rows: pd.DataFrame, by: list[str], values: list[str]) -> pd.DataFrame:
    """Per ``by`` group, each of ``values``: the mean over seeds, then its least and greatest
    (``<value>_min``, ``<value>_max``), and how many seeds (``seeds``); sorted by ``by``."""
    stats = (("", "mean"), ("_min", "min"), ("_max", "max"))
    aggregates = {f"{value}{suffix}": (value, how) for value in values for suffix, how in stats}
    aggregates["seeds"] = (values[0], "count")
    return rows.groupby(by, as_index=False).agg(**aggregates).sort_values(by).reset_index(drop=True)


def spread(final: pd.DataFrame, value: str) -> pd.Series:
    """``value``'s greatest - least over seeds, NaN (no spread: shown as a dash) for one seed."""
    return (final[f"{value}_max"] - final[f"{value}_min"]).where(final["seeds"] > 1)


def degradation_curves(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch training error of the degradation suite: kind (plain/residual), depth, epoch,
    train_error (the mean over seeds; the running error over each epoch's batches, in train mode),
    and its least and greatest over seeds (train_error_min, train_error_max)."""
    columns = ["kind", "depth", "epoch", "train_error", "train_error_min", "train_error_max", "seeds"]
    suite = runs[runs["suite"] == "degradation"]
    if suite.empty or epochs.empty:
        return pd.DataFrame(columns=columns)
    rows = epochs[epochs["key"].isin(suite["key"])].copy()
    parsed = rows["model"].str.extract(DEPTH_NAME)
    rows["kind"] = parsed[0].map({"plain": "plain", "resnet": "residual"})
    rows["depth"] = pd.to_numeric(parsed[1])
    rows["train_error"] = 1 - rows["train_acc"]
    rows = rows.dropna(subset=["kind"])
    return over_seeds(rows, ["kind", "depth", "epoch"], ["train_error"])[columns]


def final_errors(curves: pd.DataFrame, by: tuple[str, ...] = ("kind", "depth")) -> pd.DataFrame:
    """The last epoch's row of each ``by`` group of per-epoch ``curves``, indexed by ``by``."""
    return curves.sort_values("epoch").groupby(list(by)).last()


DEGRADATION_COLUMNS = ["depth", "plain", "plain_spread", "residual", "residual_spread"]


def degradation_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Final training error against depth: one row per depth, plain and residual side by side, each
    the mean over seeds and its spread (greatest - least; NaN with one seed)."""
    if curves.empty:
        return pd.DataFrame(columns=DEGRADATION_COLUMNS)
    final = final_errors(curves)
    final["spread"] = spread(final, "train_error")
    table = final[["train_error", "spread"]].unstack("kind")
    table.columns = [kind if what == "train_error" else f"{kind}_spread" for what, kind in table.columns]
    table = table.reindex(columns=DEGRADATION_COLUMNS[1:])
    return table.reset_index().rename_axis(columns=None)


# He et al. 2016's CIFAR nets by unit: resnet110 (original), resnet110-bn_after_add, preresnet110.
UNIT_NAME = re.compile(r"^(pre)?resnet(\d+)(?:-([a-z_]+))?$")
IDENTITY_VALUES = ["train_loss", "train_error", "test_error"]


def units_of(models: pd.Series) -> pd.DataFrame:
    """The depth and the unit (one of UNITS, else NaN) of each model name."""
    parsed = models.str.extract(UNIT_NAME)
    unit = parsed[2].where(parsed[0].isna(), "full_preact").fillna("original")
    return pd.DataFrame(
        {"depth": pd.to_numeric(parsed[1]), "unit": unit.where(unit.isin(UNITS) & parsed[1].notna())},
        index=models.index,
    )


def identity_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The identity suite's runs, with their depth and unit: every unit net at each depth where the
    full pre-activation net ran. Taken by model, not by suite: the original units' runs are the
    degradation suite's too (same config, same key), and the store labels a run once."""
    units = units_of(runs["model"])
    found = runs.join(units).dropna(subset=["unit"])
    preact_depths = found.loc[found["unit"] == "full_preact", "depth"].unique()
    return found[found["depth"].isin(preact_depths)]


def identity_curves(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch training loss, training error and test error of the identity suite's runs by
    depth and unit: the mean over seeds and its least and greatest (``_min``, ``_max``)."""
    by = ["depth", "unit", "epoch"]
    suite = identity_runs(runs)
    if suite.empty or epochs.empty:
        columns = [f"{v}{s}" for v in IDENTITY_VALUES for s in ("", "_min", "_max")]
        return pd.DataFrame(columns=[*by, *columns, "seeds"])
    rows = epochs[epochs["key"].isin(suite["key"])]
    rows = rows.join(units_of(rows["model"]))
    rows = rows.assign(train_error=1 - rows["train_acc"], test_error=1 - rows["test_acc"])
    return over_seeds(rows, by, IDENTITY_VALUES)


IDENTITY_COLUMNS = ["depth", "unit"] + [f"{v}{s}" for v in IDENTITY_VALUES for s in ("", "_spread")]


def identity_table(curves: pd.DataFrame) -> pd.DataFrame:
    """The final epoch of each depth and unit (Table 2's order): training loss, training error and
    test error, each the mean over seeds and its spread (greatest - least; NaN with one seed)."""
    if curves.empty:
        return pd.DataFrame(columns=IDENTITY_COLUMNS)
    final = final_errors(curves, ("depth", "unit")).reset_index()
    for value in IDENTITY_VALUES:
        final[f"{value}_spread"] = spread(final, value)
    final["order"] = final["unit"].map(UNITS.index)
    return final.sort_values(["depth", "order"])[IDENTITY_COLUMNS].reset_index(drop=True)


def profile_table(profile: dict) -> pd.DataFrame:
    """The profile's per-model recipes (the settings every run of that model used)."""
    recipes = profile.get("recipes") or {}
    rows = [{"model": model} | recipe for model, recipe in sorted(recipes.items())]
    rows.append({"model": "(any other)"} | (profile.get("default_recipe") or {}))
    return pd.DataFrame(rows)
