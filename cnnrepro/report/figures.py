"""The report's figures, drawn with matplotlib's object API (Figure, never pyplot's global state)
and returned as PNG bytes."""

import io
import itertools
import math

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from matplotlib.transforms import Bbox

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


LABEL_RADII = (9, 13, 18, 24, 31, 40, 52, 66, 84, 106, 134)  # pixels from the point, tried in turn
LABEL_ANGLES = (45, 135, 315, 225, 90, 270, 0, 180, 22, 158, 338, 202, 68, 112, 292, 248)  # degrees
MARKER_SIZE = 5  # points
SUITE_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink")


def accuracy_vs_cost(summary: pd.DataFrame) -> Figure:
    """Final test accuracy against parameters and against training time (log x): each row of
    ``summary`` one point, numbered as its row (from 1: the section's table names each number),
    coloured by suite, with its seeds' standard deviation as an error bar where it has two or more.
    Each number is placed where it overlaps no other number and no point (:func:`place_labels`)."""
    # Fixed positions, no layout engine: the labels are placed in display units before the one draw
    fig = Figure(figsize=(11, 4.8))
    FigureCanvasAgg(fig)  # a renderer, to measure the labels
    rows = summary.reset_index(drop=True)
    colors = {suite: SUITE_COLORS[i % len(SUITE_COLORS)] for i, suite in enumerate(rows["suite"].unique())}
    axes = [fig.add_axes(rect) for rect in ((0.065, 0.2, 0.42, 0.76), (0.565, 0.2, 0.42, 0.76))]
    panels = list(zip(axes, ("params", "train_time_s"), strict=True))
    for ax, column in panels:
        shown = rows[rows[column].gt(0) & rows["test_acc_mean"].notna()]
        for suite, group in shown.groupby("suite", sort=False):
            ax.errorbar(
                group[column],
                group["test_acc_mean"],
                yerr=group["test_acc_sd"].fillna(0),
                fmt="o",
                markersize=MARKER_SIZE,
                capsize=2,
                color=colors[suite],
                label=suite,
            )
        ax.set_xscale("log")
        readable_log_axis(ax, shown[column])
        ax.set_ylabel("final test accuracy (mean over seeds)")
        ax.grid(alpha=0.3, which="major")
    panels[0][0].set_xlabel("parameters")
    panels[1][0].set_xlabel("training time (s, all epochs; mean over seeds)")
    handles = [Line2D([], [], marker="o", linestyle="", color=c, label=suite) for suite, c in colors.items()]
    fig.legend(handles=handles, loc="lower center", ncols=len(handles), fontsize=8, title="suite")
    for ax, column in panels:
        ax.autoscale_view()  # the limits as the PNG will have them
        shown = rows[rows[column].gt(0) & rows["test_acc_mean"].notna()]
        place_labels(
            ax,
            shown[column],
            shown["test_acc_mean"],
            [str(i + 1) for i in shown.index],
            shown["test_acc_sd"].fillna(0),
            [colors[suite] for suite in shown["suite"]],
        )
    return fig


def readable_log_axis(ax, values: pd.Series) -> None:
    """A log x axis labelled in plain numbers (60k, 1.5M, 20) at 1, 2 and 5 times each power of
    ten (1 alone past three decades), spanning at least a factor 6.25 so two labels show."""
    values = values[values > 0]
    if values.empty:
        return
    low, high = float(values.min()) / 1.5, float(values.max()) * 1.5
    if high / low < 6.25:
        middle = math.sqrt(low * high)
        low, high = middle / 2.5, middle * 2.5
    ax.set_xlim(low, high)
    subs = (1.0, 2.0, 5.0) if math.log10(high / low) <= 3 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: plain_number(value)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plain_number(value: float) -> str:
    """100 -> "100", 2500 -> "2.5k", 3e6 -> "3M", 0.5 -> "0.5"."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def place_labels(ax, xs, ys, texts: list[str], yerr=None, colors=None, fontsize: float = 8) -> list:
    """Annotates each point (xs[i], ys[i]) with texts[i] at the first of LABEL_RADII x LABEL_ANGLES
    where the text overlaps no label placed before it, no point and no error bar (ys[i] +- yerr[i]),
    inside the axes where it can (outside where it cannot), with a thin leader line when it sits
    away from its point; each in its point's colour (``colors``). Call it once the axes' positions
    and limits are final (a figure without a layout engine, its limits set or autoscaled)."""
    renderer = ax.figure.canvas.get_renderer()
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    yerr = np.zeros_like(ys) if yerr is None else np.asarray(yerr, float)
    points = ax.transData.transform(np.column_stack([xs, ys]))
    marker = MARKER_SIZE / 2 * ax.figure.dpi / 72 + 1.5
    taken = [Bbox.from_extents(x - marker, y - marker, x + marker, y + marker) for x, y in points]
    low, high = (
        ax.transData.transform(np.column_stack([xs, ys - yerr])),
        ax.transData.transform(np.column_stack([xs, ys + yerr])),
    )
    taken += [Bbox.from_extents(a[0] - 3, a[1], a[0] + 3, b[1]) for a, b in zip(low, high, strict=True)]
    inside = ax.bbox
    labels = []
    colors = colors or ["black"] * len(texts)
    for (x, y), data_xy, text, color in zip(points, zip(xs, ys, strict=True), texts, colors, strict=True):
        probe = ax.text(0, 0, text, fontsize=fontsize, ha="center", va="center", transform=None)
        extent = probe.get_window_extent(renderer)  # the line's whole height, as it is drawn
        probe.remove()
        half_w, half_h = extent.width / 2 + 1.5, extent.height / 2 + 0.5
        free = None  # the nearest place clear of every label and point (outside the axes, maybe)
        for radius, angle in itertools.product(LABEL_RADII, LABEL_ANGLES):
            dx, dy = radius * math.cos(math.radians(angle)), radius * math.sin(math.radians(angle))
            box = Bbox.from_extents(x + dx - half_w, y + dy - half_h, x + dx + half_w, y + dy + half_h)
            if any(box.overlaps(other) for other in taken):
                continue
            free = free or (dx, dy, box)
            if inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1):
                free = (dx, dy, box)
                break
        dx, dy, box = free or (0.0, float(LABEL_RADII[-1]), None)
        if box is not None:
            taken.append(box)
        scale = 72 / ax.figure.dpi  # pixels to points
        leader = {"arrowstyle": "-", "linewidth": 0.5, "color": "0.45", "shrinkA": 0, "shrinkB": 3}
        label = ax.annotate(
            text,
            data_xy,
            xytext=(dx * scale, dy * scale),
            textcoords="offset points",
            ha="center",
            va="center",
            fontsize=fontsize,
            color=color,
            annotation_clip=False,
            arrowprops=leader if math.hypot(dx, dy) > LABEL_RADII[1] else None,
        )
        label.set_in_layout(False)
        labels.append(label)
    return labels


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
