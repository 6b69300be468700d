"""Writes a report into an output directory from its results store alone: index.html (self-contained),
every figure as a PNG beside it, summary.csv and claims.csv. Every file is replaced atomically."""

import json
from pathlib import Path

import pandas as pd

from cnnrepro.files import write_atomic
from cnnrepro.report import figures, html, images, inside, tables
from cnnrepro.report.claims import check_claims
from cnnrepro.report.results import Results, load_results
from cnnrepro.report.verdicts import DEFAULT_TOLERANCE, compare, load_store, verdict_counts
from cnnrepro.revision import code_revision

SUMMARY_FORMATS = {
    "train acc": "{:.3f}",
    "train acc sd": "{:.3f}",
    "test acc": "{:.3f}",
    "test acc sd": "{:.3f}",
    "params": "{:,}",
    "macs": "{:,}",
    "train examples/s": "{:,.0f}",
    "inference examples/s": "{:,.0f}",
    "s/epoch": "{:.2f}",
}


def write_report(
    directory: Path,
    bench_dir: Path | None = None,
    against: Path | None = None,
    reproduction: pd.DataFrame | None = None,
    out: Path | None = None,
    inspect: bool = True,
    training_images: bool = True,
) -> Path:
    """Regenerates every report file of ``directory``'s store in ``out`` (default: ``directory``
    itself, the store left untouched either way but for the report's files); returns the path of
    index.html. With ``against`` (another store: a reference), adds a Reproduction section judging
    this store's runs against it (and writes compare.csv); ``reproduction`` is that judgement where
    the caller already made it (compare() of the two stores). ``inspect``: add the section drawn
    from the runs' checkpoints (report.inside). ``training_images``: add each dataset's grid of
    training images and their augmented batch (report.images; found on this machine, never
    downloaded)."""
    directory = Path(directory)
    out = Path(out) if out is not None else directory
    results = load_results(directory, bench_dir)
    if against is not None:
        if reproduction is None:
            reproduction = compare(
                load_store(against, "--against"), load_store(directory, "the report's store")
            )
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "compare.csv", reproduction.to_csv(index=False))
    summary = tables.summary_table(results.runs)
    curves = tables.degradation_curves(results.runs, results.epochs)
    degradation = tables.degradation_table(curves)
    identity_curves = tables.identity_curves(results.runs, results.epochs)
    identity = tables.identity_table(identity_curves)
    claims = check_claims(results.runs, degradation, identity)

    pngs = {}
    if not results.epochs.empty:
        pngs["learning_curves"] = figures.learning_curves(results.runs, results.epochs)
        pngs["accuracy_vs_cost"] = figures.accuracy_vs_cost(summary)
    if not curves.empty:
        pngs["degradation"] = figures.degradation(curves, degradation_caption(results.runs))
    if not identity_curves.empty:
        pngs["identity"] = figures.identity(identity_curves, identity_caption(results.runs))
    if "speedups" in results.bench:
        pngs["kernel_speedups"] = figures.speedups(
            results.bench["speedups"],
            ["op", "direction", "shape", "layout", "device"],
            "custom kernels vs PyTorch's native ops",
        )
    if "models" in results.bench:
        pngs["model_speedups"] = figures.speedups(
            results.bench["models"], ["op", "direction", "device"], "whole models: custom vs native backend"
        )
    pngs = {name: figures.png_bytes(fig) for name, fig in pngs.items()}

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "summary.csv", summary.to_csv(index=False))
    write_atomic(out / "claims.csv", claims.to_csv(index=False))
    for name, png in pngs.items():
        write_atomic(out / f"{name}.png", png)
    sections = [
        ("summary", "Summary", summary_section(summary, results.env)),
        *([("images", "Training images", images.images_section(results))] if training_images else []),
        ("curves", "Learning curves", _figure_or_note(pngs, "learning_curves")),
        ("accuracy", "Accuracy against size and time", accuracy_section(pngs, summary)),
        ("degradation", "Depth: plain vs residual", degradation_section(pngs, degradation)),
        *(
            [("identity", "Identity mappings: residual units", identity_section(pngs, identity))]
            if "identity" in pngs
            else []
        ),
        ("kernels", "Kernels and whole-model speed", kernels_section(results, pngs)),
        ("reproducibility", "Reproducibility", reproducibility_section(results.runs)),
        *([("inside", "Inside the networks", inside.inside_section(results, out))] if inspect else []),
        *([("reproduction", "Reproduction", reproduction_section(reproduction, against))] if against else []),
        ("claims", "Claims checked", claims_section(claims, results.env)),
        ("environment", "Environment, build and settings", environment_section(results)),
    ]
    title = f"cnnrepro report: {_describe_runs(results.runs)}"
    index = out / "index.html"
    write_atomic(index, html.page(title, sections))
    return index


def _describe_runs(runs: pd.DataFrame) -> str:
    return ", ".join(
        sorted({f"{p} profile on {d}" for p, d in zip(runs["profile"], runs["dataset"], strict=True)})
    )


def _figure_or_note(pngs: dict, name: str) -> str:
    if name not in pngs:
        return html.paragraph("No per-epoch results in this store yet.")
    return html.figure(pngs[name], name.replace("_", " "), f"figure-{name}")


def accuracy_section(pngs: dict, summary: pd.DataFrame) -> str:
    """The two scatters, each point numbered, and the table that names every number."""
    if "accuracy_vs_cost" not in pngs:
        return _figure_or_note(pngs, "accuracy_vs_cost")
    shown = summary[["suite", "model", "backend", "dataset", "profile", "seeds"]].copy()
    shown.insert(0, "#", range(1, len(shown) + 1))
    shown["params"] = summary["params"]
    shown["training time s"] = summary["train_time_s"]
    shown["test acc"] = summary["test_acc_mean"]
    shown["test acc sd"] = summary["test_acc_sd"]
    return "\n".join(
        [
            html.figure(
                pngs["accuracy_vs_cost"], "accuracy against size and time", "figure-accuracy_vs_cost"
            ),
            html.paragraph(
                "Each point is one model (per suite, backend, dataset and profile), numbered as in the table "
                "below and coloured by suite; its bar spans one standard deviation over seeds (none with one "
                "seed). Both x axes are logarithmic."
            ),
            html.table(
                shown,
                "accuracy-table",
                {
                    "params": "{:,}",
                    "training time s": "{:.1f}",
                    "test acc": "{:.3f}",
                    "test acc sd": "{:.3f}",
                },
            ),
        ]
    )


def datasets_paragraph(summary: pd.DataFrame, env: dict) -> str:
    """One sentence naming each dataset of the store, with what env.json says of it (its classes,
    where it came from, its split) for the one the last runner command read."""
    recorded = env.get("dataset") or {}
    described = []
    for name in dict.fromkeys(summary["dataset"]):
        if recorded.get("name") != name:
            described.append(str(name))
            continue
        classes = recorded.get("classes") or []
        names = ", ".join(map(str, classes[:12])) + (", ..." if len(classes) > 12 else "")
        facts = [f"{len(classes)} classes ({names})"] if classes else []
        facts += [
            f"{what} {recorded[key]}"
            for key, what in (("source", "from"), ("split", "split:"))
            if recorded.get(key)
        ]
        if recorded.get("skipped"):
            facts.append(f"{recorded['skipped']} undecodable file(s) skipped")
        described.append(f"{name}: {'; '.join(facts)}")
    return html.paragraph(
        "Dataset" + ("s" if len(described) > 1 else "") + ": " + " | ".join(described) + "."
    )


def summary_section(summary: pd.DataFrame, env: dict | None = None) -> str:
    shown = summary[
        ["suite", "model", "backend", "dataset", "profile", "seeds", "status", "params", "macs"]
    ].copy()
    for split in ("train", "test"):
        shown[f"{split} acc"] = summary[f"{split}_acc_mean"]
        shown[f"{split} acc sd"] = summary[f"{split}_acc_sd"]
    shown["train examples/s"] = summary["train_examples_per_s"]
    shown["inference examples/s"] = summary["test_examples_per_s"]
    shown["s/epoch"] = summary["epoch_time_s"]
    shown["weights sha256 (per seed)"] = summary["weights_sha256"]
    return "\n".join(
        [
            datasets_paragraph(summary, env or {}),
            html.paragraph(
                "Final-epoch accuracies as the mean and sample standard deviation (sd) over seeds (a dash "
                "where one seed has none); train "
                "accuracy is the running accuracy over the last epoch's batches (in train mode). "
                "Speeds are medians over epochs (training: forward, backward and optimizer step only; "
                "inference: the whole test split in eval mode), averaged over seeds. The same numbers, "
                "unrounded, are in summary.csv beside this page."
            ),
            html.table(shown, "summary-table", SUMMARY_FORMATS),
        ]
    )


def recipe_caption(title: str, runs: pd.DataFrame) -> str:
    """``title``, then the dataset, profile, epochs, width, batch, lr and seeds of ``runs``."""
    config = json.loads(runs["config"].iloc[0])
    seeds = " ".join(str(s) for s in sorted(runs["seed"].unique()))
    return (
        f"{title}, on {config['dataset']}: profile {runs['profile'].iloc[0]}, "
        f"{config['epochs']} epochs, width x{config['width']}, batch {config['batch_size']}, "
        f"lr {config['lr']}, seeds {seeds}"
    )


def degradation_caption(runs: pd.DataFrame) -> str:
    return recipe_caption("He et al. 2015, Figure 6", runs[runs["suite"] == "degradation"])


def identity_caption(runs: pd.DataFrame) -> str:
    return recipe_caption("He et al. 2016, Figure 6", tables.identity_runs(runs))


def degradation_section(pngs: dict, degradation: pd.DataFrame) -> str:
    if "degradation" not in pngs:
        return html.paragraph(
            "The degradation suite has not run in this directory (python -m cnnrepro.run --all)."
        )
    percent = degradation.rename(columns=lambda column: column.replace("_", " "))
    numbers = [c for c in percent.columns if c != "depth"]
    percent[numbers] = 100 * percent[numbers]
    return "\n".join(
        [
            html.figure(
                pngs["degradation"], "training error against depth, plain vs residual", "figure-degradation"
            ),
            html.paragraph(
                "Training error is the running error over each epoch's batches, in train mode, as in the "
                "paper's figure. Final training error (%) by depth, the mean over seeds and its spread "
                "(greatest - least seed; a dash with one seed):"
            ),
            html.table(percent, "degradation-table", dict.fromkeys(numbers, "{:.2f}")),
        ]
    )


def identity_section(pngs: dict, identity: pd.DataFrame) -> str:
    errors = [c for c in identity.columns if "error" in c]
    losses = [c for c in identity.columns if "loss" in c]
    shown = identity.assign(**{c: 100 * identity[c] for c in errors})
    shown = shown.rename(columns=lambda column: column.replace("_", " "))
    formats = {c.replace("_", " "): "{:.2f}" for c in errors} | {
        c.replace("_", " "): "{:.4f}" for c in losses
    }
    return "\n".join(
        [
            html.figure(
                pngs["identity"],
                "training loss and test error per epoch, original units vs full pre-activation",
                "figure-identity",
            ),
            html.paragraph(
                "He et al. 2016's Table 2 units at each depth where full pre-activation ran: final training "
                "loss, training error (%, the running error over the last epoch's batches) and test error "
                "(%), each the mean over seeds and its spread (greatest - least seed; a dash with one seed):"
            ),
            html.table(shown, "identity-table", formats),
        ]
    )


def kernels_section(results: Results, pngs: dict) -> str:
    if not results.bench:
        return html.paragraph(
            f"No benchmark results in {results.bench_dir}: run `make bench` to time every kernel and "
            "whole model, custom against native."
        )
    parts = []
    if results.bench_env:
        parts.append(html.key_values(results.bench_env, "bench-env-table"))
    if "speedups" in results.bench:
        speedups = results.bench["speedups"]
        shown = speedups[["op", "direction", "shape", "layout", "device"]].copy()
        shown["native ms"] = 1e3 * speedups["native_median_s"]
        shown["custom ms"] = 1e3 * speedups["custom_median_s"]
        shown["speedup"] = speedups["speedup"]
        if "percent_of_copy" in speedups:
            shown["custom GB/s"] = speedups["custom_gb_per_s"]
            shown["copy GB/s"] = speedups["copy_gb_per_s"]
            shown["% of copy"] = speedups["percent_of_copy"]
        if "others" in speedups:
            shown["references (time / custom)"] = speedups["others"].fillna("")
        parts += [
            html.paragraph(
                "pytest-benchmark medians, custom and native timed in one process; "
                "speedup = native / custom. References are other implementations of the case, "
                "as their time over custom's: "
                "conv_alone, the convolution by itself, is the floor for conv-BN-ReLU. "
                "For the memory-bound ops (LRN, max-pool), custom GB/s is the bytes the pass must move "
                "(inputs read once, outputs written once) over its time, against a copy of the input "
                "into a preallocated tensor timed in the same process: the machine's yardstick."
            ),
            html.table(
                shown,
                "kernel-table",
                {
                    "native ms": "{:.3f}",
                    "custom ms": "{:.3f}",
                    "speedup": "{:.2f}x",
                    "custom GB/s": "{:.1f}",
                    "copy GB/s": "{:.1f}",
                    "% of copy": "{:.0f}%",
                },
            ),
            html.figure(pngs["kernel_speedups"], "kernel speedups", "figure-kernel_speedups"),
        ]
    if "models" in results.bench:
        parts += [
            html.paragraph(
                "Whole models at the quick profile's shapes: examples/s from the median of timed steps "
                "after warm-up (train: forward, backward, SGD step; inference: eval forward)."
            ),
            html.table(
                _throughput(results.bench["models"], "native", "custom"), "model-speed-table", THROUGHPUT
            ),
            html.figure(pngs["model_speedups"], "model speedups", "figure-model_speedups"),
        ]
    if "loops" in results.bench:
        parts += [
            html.paragraph(
                "One training pass over the split: the runner's in-memory batches against a DataLoader over "
                "a TensorDataset (the way d2l trains), with the same model, batch, optimizer and step."
            ),
            html.table(_throughput(results.bench["loops"], "dataloader", "runner"), "loop-table", THROUGHPUT),
        ]
    if "suite" in results.bench:
        suite = results.bench["suite"]
        shown = suite[["op", "direction", "shape", "layout"]].set_axis(
            ["what", "size", "machine", "how"], axis=1
        )
        shown["local s"], shown["ray s"] = suite["local_median_s"], suite["ray_median_s"]
        shown["ray - local s"] = suite["ray_median_s"] - suite["local_median_s"]
        shown["speedup"] = suite["speedup"]
        parts += [
            html.paragraph(
                "Executors: a whole suite's wall time under --executor local and --executor ray, and one "
                "small run's (ray - local: Ray's overhead per run, on a warm cluster); speedup = local / ray."
            ),
            html.table(
                shown,
                "suite-table",
                {"local s": "{:.2f}", "ray s": "{:.2f}", "ray - local s": "{:+.2f}", "speedup": "{:.2f}x"},
            ),
        ]
    return "\n".join(parts)


THROUGHPUT = {"speedup": "{:.2f}x"} | {
    f"{i} examples/s": "{:,.0f}" for i in ("native", "custom", "dataloader", "runner")
}


def _throughput(bench: pd.DataFrame, baseline: str, candidate: str) -> pd.DataFrame:
    shown = bench[["op", "direction", "shape", "device"]].rename(columns={"op": "model", "direction": "mode"})
    for impl in (baseline, candidate):
        shown[f"{impl} examples/s"] = bench[f"{impl}_examples_per_s"]
    shown["speedup"] = bench["speedup"]
    return shown


def reproducibility_section(runs: pd.DataFrame) -> str:
    return "\n".join(
        [
            html.paragraph(
                "Each run's weights hash (sha256 of every parameter and buffer). 'matched': the run was "
                "trained twice (--verify-determinism) and both gave these bits; 'not checked': trained once."
            ),
            html.table(tables.reproducibility_table(runs), "reproducibility-table"),
        ]
    )


def reproduction_section(table: pd.DataFrame, against: Path) -> str:
    differences = sorted({d for d in table["environment differences"] if d})
    parts = [
        html.paragraph(
            f"These runs against {against}: {verdict_counts(table)}. Identical: the same weights hash. "
            "Within noise: final test accuracy and training error each closer than the seed-to-seed "
            f"spread of that config in either store, or {DEFAULT_TOLERANCE:.2f} where neither has two seeds "
            "(the tolerance column says which)."
        ),
        html.table(
            table.drop(columns=["key"]),
            "reproduction-table",
            {f"{m} {s}": "{:.4f}" for m in ("test acc", "train error") for s in "AB"}
            | {"tolerance": "{:.4f}"},
        ),
    ]
    if differences:
        parts.append(
            html.paragraph("Where the bits differ, the environments differ in: " + " | ".join(differences))
        )
    return "\n".join(parts)


def claims_section(claims: pd.DataFrame, env: dict) -> str:
    counts = claims["verdict"].value_counts()
    tally = ", ".join(f"{counts[v]} {v}" for v in ("holds", "does not hold", "not measured") if v in counts)
    trained_by = env.get("code_revision", "an older cnnrepro that did not record it")
    return "\n".join(
        [
            html.paragraph(
                f"Every claim of the references, measured from our own models and runs ({tally}). "
                "Parameter and multiply-accumulate figures are counted on the built layers of the code "
                f"that wrote this report ({code_revision()}); the runs were trained by {trained_by}."
            ),
            html.table(claims, "claims-table"),
        ]
    )


def environment_section(results: Results) -> str:
    env = dict(results.env)
    if not env:
        return html.paragraph("No env.json in this directory.")
    profile = env.pop("profile", {})
    settings = {k: v for k, v in profile.items() if k not in ("recipes", "default_recipe")}
    return "\n".join(
        [
            html.paragraph(
                "The last runner command that wrote to this directory, and its machine and build:"
            ),
            html.key_values(env, "environment-table"),
            html.paragraph(f"Profile {profile.get('name', '?')}:"),
            html.key_values(settings, "profile-table"),
            html.paragraph("Per-model recipes of the profile:"),
            html.table(tables.profile_table(profile), "recipe-table"),
        ]
    )
