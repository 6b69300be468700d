"""The report's figures, drawn with matplotlib's object API (Figure, never pyplot's global state)
and returned as PNG bytes."""

import io
import math

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cnnrepro.report import tables

KIND_STYLE = {"plain": {"color": "tab:red"}, "residual": {"color": "tab:blue"}}


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG, with no timestamp or software tag, so the same data gives the same bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def learning_curves(runs: pd.DataFrame, epochs: pd.DataFrame) -> Figure:
    """One small multiple per model: train loss (left axis) and test accuracy (right) per epoch,
    one line per seed."""
    groups = runs.groupby(["suite", "model", "backend"], sort=False)  # in the order they ran
    cols = min(4, max(1, groups.ngroups))
    rows = max(1, math.ceil(groups.ngroups / cols))
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, ((suite, model, backend), group) in zip(axes, groups, strict=False):
        accuracy_ax = ax.twinx()
        for key in group["key"]:
            run = epochs[epochs["key"] == key].sort_values("epoch")
            ax.plot(run["epoch"], run["train_loss"], color="tab:orange", marker=".")
            accuracy_ax.plot(run["epoch"], run["test_acc"], color="tab:green", marker=".")
        ax.set_title(f"{model} ({suite}, {backend})", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("train loss", color="tab:orange", fontsize=8)
        accuracy_ax.set_ylabel("test accuracy", color="tab:green", fontsize=8)
        accuracy_ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        accuracy_ax.tick_params(labelsize=7)
    for ax in axes[groups.ngroups :]:
        ax.set_visible(False)
    return fig


def accuracy_vs_cost(summary: pd.DataFrame) -> Figure:
    """Final test accuracy against parameters and against training time (both log scale)."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    by_params, by_time = fig.subplots(1, 2)
    for suite, group in summary.groupby("suite"):
        for ax, x in ((by_params, "params"), (by_time, "train_time_s")):
            ax.scatter(group[x], group["test_acc_mean"], label=suite)
            for _, row in group.iterrows():
                ax.annotate(row["model"], (row[x], row["test_acc_mean"]), fontsize=7)
    for ax, label in ((by_params, "parameters"), (by_time, "training time (s, all epochs)")):
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("final test accuracy (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def seed_band(ax, curve: pd.DataFrame, value: str, scale: float = 1, **style) -> None:
    """``value``'s mean over seeds per epoch as a line, its least to greatest seed as a band, both
    times ``scale``; ``curve`` has epoch, value, value_min and value_max columns."""
    ax.plot(curve["epoch"], scale * curve[value], **style)
    band = {k: v for k, v in style.items() if k in ("color",)}
    ax.fill_between(
        curve["epoch"],
        scale * curve[f"{value}_min"],
        scale * curve[f"{value}_max"],
        alpha=0.1,
        linewidth=0,
        **band,
    )


def degradation(curves: pd.DataFrame, caption: str) -> Figure:
    """He et al. Figure 6: final training error against depth, plain vs residual (left), and the
    per-epoch training error of every depth, plain (middle) and residual (right). Lines are the mean
    over seeds; bars and bands span the least to the greatest seed. ``curves`` is
    :func:`tables.degradation_curves`'."""
    fig = Figure(figsize=(13, 4), layout="constrained")
    final_ax, plain_ax, residual_ax = fig.subplots(1, 3)
    final = tables.final_errors(curves)
    for kind in final.index.unique("kind"):
        rows = final.loc[kind]
        mean, least, greatest = (
            100 * rows[c].to_numpy() for c in ("train_error", "train_error_min", "train_error_max")
        )
        final_ax.errorbar(
            rows.index,
            mean,
            yerr=[mean - least, greatest - mean],
            marker="o",
            capsize=3,
            label=kind,
            **KIND_STYLE[kind],
        )
    final_ax.set_xlabel("depth (layers)")
    final_ax.set_ylabel("final training error (%)")
    final_ax.set_xticks(sorted(final.index.unique("depth")))
    final_ax.legend()
    for ax, kind in ((plain_ax, "plain"), (residual_ax, "residual")):
        depths = sorted(curves.loc[curves["kind"] == kind, "depth"].unique())
        for shade, depth in enumerate(depths, start=1):
            curve = curves[(curves["kind"] == kind) & (curves["depth"] == depth)]
            alpha = 0.3 + 0.7 * shade / len(depths)
            style = {"color": KIND_STYLE[kind]["color"], "alpha": alpha, "label": f"{kind}-{depth}"}
            seed_band(ax, curve, "train_error", 100, **style)
        ax.set_title(f"{kind} nets", fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("training error (%)")
        if depths:
            ax.legend(fontsize=8)
    for ax in (final_ax, plain_ax, residual_ax):
        ax.grid(alpha=0.3)
    fig.suptitle(caption, fontsize=10)
    return fig


UNIT_STYLE = {"original": {"color": "tab:gray"}, "full_preact": {"color": "tab:red"}}


def identity(curves: pd.DataFrame, caption: str) -> Figure:
    """He et al. 2016, Figure 6, at every depth with both: training loss (dashed, left axis) and test
    error (solid, right axis) per epoch, original units against full pre-activation. Lines are the
    mean over seeds; bands span the least to the greatest seed. ``curves`` is
    :func:`tables.identity_curves`'."""
    pairs = curves[curves["unit"].isin(UNIT_STYLE)]
    depths = [d for d, units in pairs.groupby("depth")["unit"] if units.nunique() == len(UNIT_STYLE)]
    fig = Figure(figsize=(max(8, 5 * len(depths)), 4), layout="constrained")  # room for the caption
    for ax, depth in zip(fig.subplots(1, max(1, len(depths)), squeeze=False).ravel(), depths, strict=False):
        error_ax = ax.twinx()
        for unit, style in UNIT_STYLE.items():
            curve = pairs[(pairs["depth"] == depth) & (pairs["unit"] == unit)]
            seed_band(ax, curve, "train_loss", linestyle="--", label=f"{unit}, training loss", **style)
            seed_band(error_ax, curve, "test_error", 100, label=f"{unit}, test error", **style)
        ax.set_title(f"depth {depth}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("training loss (dashed)")
        error_ax.set_ylabel("test error (%, solid)")
        ax.grid(alpha=0.3)
        lines = ax.get_lines() + error_ax.get_lines()
        ax.legend(lines, [line.get_label() for line in lines], fontsize=8)
    fig.suptitle(caption, fontsize=10)
    return fig


def speedups(table: pd.DataFrame, label_columns: list[str], title: str) -> Figure:
    """Horizontal bars of custom-vs-native speedup per case, with the break-even line at 1x."""
    labels = table[label_columns].astype(str).agg(" ".join, axis=1)
    fig = Figure(figsize=(9, 0.8 + 0.22 * len(table)), layout="constrained")
    ax = fig.subplots()
    colors = ["tab:green" if s >= 1 else "tab:red" for s in table["speedup"]]
    ax.barh(range(len(table)), table["speedup"], color=colors)
    ax.set_yticks(range(len(table)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("speedup (native time / custom time, log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig
