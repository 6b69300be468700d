"""The runner: ``python -m cnnrepro.run --all`` trains every suite under fixed seeds.

It only wires the pieces: experiments plan the runs, data loads the dataset, train runs them
(resuming what an interruption left), and the results store records them in the output dir.
"""

import argparse
import dataclasses
import fnmatch
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

import cnnrepro
from cnnrepro import models
from cnnrepro.data import DownloadError, list_datasets, load_dataset
from cnnrepro.experiments import PROFILES, SUITES, plan_runs
from cnnrepro.report import write_report
from cnnrepro.store import ResultsStore
from cnnrepro.train import RunConfig, numerics_settings, set_deterministic, train_run


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cnnrepro.run",
        description="Train the classic CNNs under fixed seeds and record the results.",
    )
    what = parser.add_argument_group("what to run")
    what.add_argument("--all", action="store_true", help="every suite (classic and degradation)")
    what.add_argument("--suite", choices=sorted(SUITES), action="append", help="a suite (repeatable)")
    what.add_argument("--models", nargs="+", metavar="PATTERN", help="only models matching these patterns")
    what.add_argument("--list", action="store_true", help="list models, suites, profiles, datasets and exit")
    how = parser.add_argument_group("how")
    how.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    how.add_argument("--dataset", choices=list_datasets(), help="default: the profile's")
    how.add_argument(
        "--data-dir", type=Path, help="where downloads go (default: $CNNREPRO_DATA or ~/.cache/cnnrepro)"
    )
    how.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    how.add_argument("--backend", choices=["custom", "native"], default="custom")
    how.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="N")
    how.add_argument("--epochs", type=_positive, help="override the profile's epochs")
    how.add_argument("--threads", type=_positive, help="CPU threads (torch.set_num_threads)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, help="default: reports/<profile>-<dataset>/")
    out.add_argument("--force", action="store_true", help="retrain runs that already finished")
    out.add_argument("--no-report", action="store_true", help="skip writing the report at the end")
    out.add_argument(
        "--verify-determinism", action="store_true", help="train every run twice, compare weights"
    )
    args = parser.parse_args(argv)
    if not (args.all or args.suite or args.models or args.list):
        parser.error("say what to run: --all, --suite NAME, --models PATTERN... (or --list)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    return args


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def selected_models(args) -> list[tuple[str, str]]:
    """(suite, model) pairs to run, in suite order."""
    suites = sorted(SUITES) if args.all or (args.models and not args.suite) else args.suite
    pairs = [(suite, model) for suite in suites for model in SUITES[suite]]
    if args.models:
        known = models.list_models()
        unknown = [p for p in args.models if not fnmatch.filter(known, p)]
        if unknown:
            raise SystemExit(f"error: --models {' '.join(unknown)} matches no model; see --list")
        in_suites = [(s, m) for s, m in pairs if any(fnmatch.fnmatch(m, p) for p in args.models)]
        named = {m for _, m in in_suites}
        extra = [
            ("custom", m) for m in known if m not in named and any(fnmatch.fnmatch(m, p) for p in args.models)
        ]
        pairs = in_suites + extra
    return pairs


def print_listing() -> None:
    print("models:  ", " ".join(models.list_models()))
    print("suites:  ", "; ".join(f"{name}: {' '.join(ms)}" for name, ms in SUITES.items()))
    print("profiles:", "; ".join(f"{name}: {p.description}" for name, p in PROFILES.items()))
    print("datasets:", " ".join(list_datasets()))


def environment(args, device: str) -> dict:
    return {
        "command": " ".join([Path(sys.executable).name, "-m", "cnnrepro.run", *sys.argv[1:]]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "cuda_device": torch.cuda.get_device_name() if device == "cuda" else None,
        "code_revision": cnnrepro.code_revision(),
        "build_info": cnnrepro.build_info(),
        "numerics": numerics_settings(),
        "profile": dataclasses.asdict(PROFILES[args.profile]),
        "seeds": args.seeds,
        "backend": args.backend,
    }


def run_one(config: RunConfig, dataset, store: ResultsStore, device: str, verify: bool):
    """Trains (or resumes) one run, twice with verify; returns its runs.csv row and epoch rows."""
    with tqdm(total=config.epochs, desc=f"  {config.model}", unit="epoch", leave=False) as bar:

        def show(result, epoch):
            bar.n = len(result.history)
            if epoch is not None:
                bar.set_postfix(loss=f"{epoch.train_loss:.3f}", test_acc=f"{epoch.test_acc:.3f}")
            bar.refresh()

        result = train_run(config, dataset, store.checkpoints, device, on_epoch=show)
    determinism = "not checked"
    if verify and result.status == "finished":
        again = train_run(config, dataset, store.checkpoints / "verify", device)
        determinism = "matched" if again.weights_sha256 == result.weights_sha256 else "MISMATCH"
    last = result.history[-1] if result.history else None

    def median_of(field: str):
        return statistics.median(getattr(e, field) for e in result.history) if last else ""

    common = {"key": config.key(), "model": config.model, "seed": config.seed, "backend": config.backend}
    epoch_rows = [common | dataclasses.asdict(e) for e in result.history]
    run_row = common | {
        "dataset": config.dataset,
        "status": result.status,
        "epochs": len(result.history),
        "train_acc": last.train_acc if last else "",
        "test_acc": last.test_acc if last else "",
        "params": result.params,
        "macs": result.macs,
        "train_time_s": sum(e.epoch_time_s for e in result.history),
        "train_examples_per_s": median_of("train_examples_per_s"),
        "test_examples_per_s": median_of("test_examples_per_s"),
        "weights_sha256": result.weights_sha256,
        "determinism": determinism,
        "config": json.dumps(dataclasses.asdict(config), sort_keys=True),
    }
    return run_row, epoch_rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        print_listing()
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = (
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    set_deterministic()
    profile = PROFILES[args.profile]
    dataset_name = args.dataset or profile.dataset
    out = args.out or Path("reports") / f"{profile.name}-{dataset_name}"
    store = ResultsStore(out)
    store.write_env(environment(args, device))
    try:
        dataset = load_dataset(dataset_name, args.data_dir)
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    plan = [
        (suite, config)
        for suite, model in selected_models(args)
        for config in plan_runs([model], profile, args.seeds, dataset_name, args.backend, args.epochs)
    ]
    done = store.finished()
    failures, rows = [], []
    for suite, config in tqdm(plan, desc=f"{profile.name} on {dataset_name}", unit="run"):
        if config.key() in done and not args.force:
            rows.append(done[config.key()])
            continue
        if args.force:
            (store.checkpoints / f"{config.key()}.pt").unlink(missing_ok=True)
        tqdm.write(f"{suite}: {config.model} seed {config.seed}")
        started = time.perf_counter()
        try:
            run_row, epoch_rows = run_one(config, dataset, store, device, args.verify_determinism)
        except Exception as error:  # one broken run must not stop the suite: record it, go on
            failures.append((config.model, error))
            tqdm.write(f"  FAILED: {type(error).__name__}: {error}")
            continue
        tag = {"suite": suite, "profile": profile.name}
        store.record_run(config.key(), [tag | r for r in epoch_rows], tag | run_row)
        rows.append(tag | run_row)
        tqdm.write(
            f"  {run_row['status']}: test acc {run_row['test_acc']}, {time.perf_counter() - started:.1f} s"
        )
    print_summary(rows, out)
    if rows and not args.no_report:
        print(f"report: {write_report(out)}")
    for model, error in failures:
        print(f"FAILED {model}: {error}", file=sys.stderr)
    return 1 if failures else 0


def print_summary(rows: list[dict], out: Path) -> None:
    columns = ("suite", "model", "seed", "status", "train acc", "test acc", "params")
    print("\n{:<12} {:<14} {:>4} {:<9} {:>9} {:>9} {:>11}".format(*columns))
    for row in rows:
        train = f"{float(row['train_acc']):.3f}" if row["train_acc"] != "" else "-"
        test = f"{float(row['test_acc']):.3f}" if row["test_acc"] != "" else "-"
        print(
            f"{row['suite']:<12} {row['model']:<14} {row['seed']:>4} {row['status']:<9} {train:>9} {test:>9} "
            f"{int(row['params']):>11,}"
        )
    print(f"\nresults in {out}/ (results.csv, runs.csv, env.json; the report: summary.csv, index.html)")


if __name__ == "__main__":
    sys.exit(main())
