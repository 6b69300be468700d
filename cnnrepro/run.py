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
from cnnrepro.files import remove_stale_temp_files
from cnnrepro.report import write_report
from cnnrepro.store import ResultsStore, StoreError
from cnnrepro.train import RunConfig, numerics_settings, set_deterministic, train_run


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cnnrepro.run",
        description="Train the classic CNNs under fixed seeds and record the results.",
    )
    what = parser.add_argument_group("what to run")
    what.add_argument("--all", action="store_true", help="every suite (classic and degradation)")
    what.add_argument("--suite", choices=sorted(SUITES), action="append", help="a suite (repeatable)")
    what.add_argument(
        "--models", nargs="+", action="extend", metavar="PATTERN", help="only models matching these patterns"
    )
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
    out.add_argument(
        "--repair",
        action="store_true",
        help="drop damaged rows of the store (a copy is kept) and record those runs again from checkpoints",
    )
    args = parser.parse_args(argv)
    if not (args.all or args.suite or args.models or args.list):
        parser.error("say what to run: --all, --suite NAME, --models PATTERN... (or --list)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    if len(set(args.seeds)) < len(args.seeds):
        print(
            f"note: --seeds {' '.join(map(str, args.seeds))} repeats a seed; each trains once",
            file=sys.stderr,
        )
        args.seeds = list(dict.fromkeys(args.seeds))
    return args


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
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
        extra = [  # models no selected suite holds
            ("selected", m)
            for m in known
            if m not in named and any(fnmatch.fnmatch(m, p) for p in args.models)
        ]
        pairs = in_suites + extra
    return pairs


def print_listing() -> None:
    print("models:  ", " ".join(models.list_models()))
    print("suites:  ", "; ".join(f"{name}: {' '.join(ms)}" for name, ms in SUITES.items()))
    print("profiles:", "; ".join(f"{name}: {p.description}" for name, p in PROFILES.items()))
    print("datasets:", " ".join(list_datasets()))


def environment(args, where: dict) -> dict:
    """env.json: the command, the machine, the build and settings; ``where`` is run_environment's."""
    return where | {
        "command": " ".join([Path(sys.executable).name, "-m", "cnnrepro.run", *sys.argv[1:]]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "cuda_device": torch.cuda.get_device_name() if where["device"] == "cuda" else None,
        "build_info": cnnrepro.build_info(),
        "numerics": numerics_settings(),
        "profile": dataclasses.asdict(PROFILES[args.profile]),
        "seeds": args.seeds,
        "backend": args.backend,
    }


def run_one(config: RunConfig, dataset, store: ResultsStore, verify: bool, where: dict):
    """Trains (or resumes) one run, twice with verify; returns its runs.csv row and epoch rows.
    ``where`` is the row's environment columns (device, threads, torch, code revision); the run
    trains on its device."""
    device = where["device"]
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
    run_row = (
        common
        | {
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
        | where
    )
    return run_row, epoch_rows


class UsageError(Exception):
    """A problem with what the command asked for (a path, a dataset): one line, exit 2."""


def check_writable_directory(path: Path, what: str) -> None:
    """UsageError unless ``path`` is, or can be created as, a directory this process can write to.
    Creates nothing: a command that fails leaves no trace."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        below = "" if existing == path else f" (it would be below {existing}, a file)"
        raise UsageError(f"{what} {path} is not a directory{below}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path} is not writable ({existing} is read-only to this user)")


def plan_suite(args, profile, dataset_name: str) -> list[tuple[str, RunConfig]]:
    return [
        (suite, config)
        for suite, model in selected_models(args)
        for config in plan_runs([model], profile, args.seeds, dataset_name, args.backend, args.epochs)
    ]


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
    # Everything the command asks for is checked before anything is written.
    plan = plan_suite(args, profile, dataset_name)
    try:
        check_writable_directory(out, "--out")
        dataset = load_dataset(dataset_name, args.data_dir)
        store = ResultsStore(out)
        for line in store.repair() if args.repair else []:
            print(line, file=sys.stderr)
        for temp in remove_stale_temp_files(out):
            print(f"removed {temp}, left by an interrupted write", file=sys.stderr)
        where = run_environment(device)
        store.write_env(environment(args, where))
        return run_plan(args, plan, dataset, store, where)
    except (UsageError, DownloadError, StoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a read-only mount: files are replaced whole, never torn
        where = error.filename or out
        print(
            f"error: writing to {where} failed: {error.strerror}; nothing was half-written", file=sys.stderr
        )
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to go on", file=sys.stderr)
        return 130


def run_environment(device: str) -> dict:
    """The columns of every runs.csv row that say where it ran (they change the bits too)."""
    return {
        "device": device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "code_revision": cnnrepro.code_revision(),
    }


def needs_training(args, key: str, recorded: dict | None, epochs_recorded: int) -> bool:
    """Whether to train (or resume, or record again from its checkpoint) run ``key``."""
    if args.force or recorded is None:
        return True
    if epochs_recorded != int(recorded["epochs"]):
        tqdm.write(f"{recorded['model']} seed {recorded['seed']}: results.csv lacks epochs; recording again")
        return True
    return False


def run_plan(args, plan, dataset, store: ResultsStore, where: dict) -> int:
    """Trains every planned run not already recorded, recording each as it ends; returns the exit
    code. Ctrl-C stops it with one line: the run's finished epochs are checkpointed."""
    profile = PROFILES[args.profile]
    done, epochs_recorded = store.finished(), store.epoch_counts()
    failures, rows = [], []
    for suite, config in tqdm(plan, desc=f"{profile.name} on {dataset.name}", unit="run"):
        key = config.key()
        if not needs_training(args, key, done.get(key), epochs_recorded.get(key, 0)):
            rows.append(done[key])
            continue
        if args.force:  # everything that belongs to the run, its verification included
            for checkpoint in (store.checkpoints / f"{key}.pt", store.checkpoints / "verify" / f"{key}.pt"):
                checkpoint.unlink(missing_ok=True)
        tqdm.write(f"{suite}: {config.model} seed {config.seed}")
        started = time.perf_counter()
        try:
            run_row, epoch_rows = run_one(config, dataset, store, args.verify_determinism, where)
        except KeyboardInterrupt:
            print(
                f"\ninterrupted: {config.model} seed {config.seed} stopped after its last checkpointed "
                "epoch; rerun the same command to resume",
                file=sys.stderr,
            )
            return 130
        except OSError:
            raise  # the store's disk, not the run: main reports it
        except Exception as error:  # one broken run must not stop the suite: record it, go on
            failures.append((config.model, error))
            tqdm.write(f"  FAILED: {type(error).__name__}: {error}")
            continue
        tag = {"suite": suite, "profile": profile.name}
        store.record_run(key, [tag | r for r in epoch_rows], tag | run_row)
        rows.append(tag | run_row)
        elapsed = time.perf_counter() - started
        tqdm.write(f"  {run_row['status']}: test acc {run_row['test_acc']}, {elapsed:.1f} s")
    print_summary(rows, store.directory)
    if rows and not args.no_report:
        print(f"report: {write_report(store.directory)}")
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
