"""The runner: ``python -m cnnrepro.run --all`` trains every suite under fixed seeds.

It only wires the pieces: experiments plan the runs, data loads the dataset, train runs them
(resuming what an interruption left), and the results store records them in the output dir.
"""

import argparse
import dataclasses
import importlib.util
import math
import os
import platform
import sys
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

import cnnrepro
from cnnrepro import models, tensorboard
from cnnrepro.data import (
    DatasetError,
    DownloadError,
    check_dataset_name,
    dataset_label,
    default_data_dir,
    list_datasets,
    load_dataset,
)
from cnnrepro.executors import (
    EXECUTORS,
    ExecutorError,
    Job,
    LocalExecutor,
    RayExecutor,
    RunInterrupted,
    ray_missing_message,
    run_environment,
)
from cnnrepro.experiments import (
    NAMED_SUITES,
    PROFILES,
    SELECTED,
    PlanError,
    Request,
    Shard,
    shipped_reference,
)
from cnnrepro.experiments.planning import (
    check_batches_split,
    check_input_sizes,
    decode_size,
    plan_suite,
    selected_models,
    speed_settings,
    suite_seeds,
)
from cnnrepro.files import remove_stale_temp_files
from cnnrepro.report import write_report
from cnnrepro.report.verdicts import compare, load_store, verdict_counts
from cnnrepro.store import ResultsStore, StoreError
from cnnrepro.train import (
    AMP_DTYPES,
    COMPILE_MODES,
    Replicas,
    TorchrunWorld,
    numerics_settings,
    set_deterministic,
    torchrun_world,
    train_examples,
)

FP16_ON_CPU = "float16 autocast runs on CUDA only; on the CPU use --amp bf16"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cnnrepro.run",
        description="Train the classic CNNs under fixed seeds and record the results.",
    )
    what = parser.add_argument_group("what to run")
    what.add_argument("--all", action="store_true", help="every suite (classic and degradation)")
    what.add_argument(
        "--suite",
        choices=sorted(NAMED_SUITES),
        action="append",
        help="a suite (repeatable; identity only so)",
    )
    what.add_argument(
        "--models", nargs="+", action="extend", metavar="PATTERN", help="only models matching these patterns"
    )
    what.add_argument("--list", action="store_true", help="list models, suites, profiles, datasets and exit")
    how = parser.add_argument_group("how")
    how.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    how.add_argument(
        "--dataset",
        type=_dataset,
        metavar="{" + ",".join(list_datasets()) + ",folder:PATH}",
        help="default: the profile's; folder:PATH, a folder of your own images (train/ and validation/, "
        "or one folder per class)",
    )
    how.add_argument(
        "--data-dir", type=Path, help="where downloads go (default: $CNNREPRO_DATA or ~/.cache/cnnrepro)"
    )
    how.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    how.add_argument("--backend", choices=["custom", "native"], default="custom")
    how.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="N",
        help="every suite's seeds (default: the profile's, else 0)",
    )
    how.add_argument("--epochs", type=_positive, help="every run's epochs (default: the profile's recipes')")
    how.add_argument(
        "--threads", type=_positive, help="CPU threads per run (torch.set_num_threads; ray's default: 1)"
    )
    fast = parser.add_argument_group(
        "how fast (each changes the bits, so each is part of every run's config and key; "
        "default: the profile's, which is off)"
    )
    fast.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the model's weights and every batch in torch.channels_last",
    )
    fast.add_argument(
        "--compile",
        nargs="?",
        const="default",
        choices=[*COMPILE_MODES[1:], "off"],
        metavar="MODE",
        help="torch.compile the model (inductor, static shapes, deterministic) in this mode "
        f"({', '.join(COMPILE_MODES[1:])}; without MODE: default), or off",
    )
    fast.add_argument(
        "--amp",
        choices=[*[name for name in AMP_DTYPES if name], "off"],
        help="autocast the forward to bfloat16 (CPU and CUDA) or float16 (CUDA only, loss-scaled), or off",
    )
    scale = parser.add_argument_group("scale out")
    scale.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: runs one after another here; ray: each run a Ray task (embedded cluster, or joins one)",
    )
    scale.add_argument(
        "--ray-address",
        metavar="HOST:PORT",
        help="join this Ray cluster (default: $RAY_ADDRESS, else embedded)",
    )
    scale.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="where runs checkpoint (default: OUT/checkpoints; on a cluster: a filesystem all workers share)",
    )
    scale.add_argument(
        "--shard",
        type=Shard.parse,
        metavar="I/N",
        help="only shard I of N of the planned runs (Slurm arrays)",
    )
    scale.add_argument(
        "--sync-bn", action="store_true", help="under torchrun: BatchNorm pools statistics over the ranks"
    )
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, help="default: reports/<profile>-<dataset>/")
    out.add_argument("--force", action="store_true", help="retrain runs that already finished")
    out.add_argument("--no-report", action="store_true", help="skip writing the report at the end")
    out.add_argument(
        "--no-inspect",
        action="store_true",
        help="leave the report's Inside the networks section out (it costs about 4 s per model)",
    )
    out.add_argument(
        "--against",
        type=Path,
        metavar="REF",
        help="judge the runs against this store's (default: the shipped reference for the profile and "
        "dataset, reports/reference/<profile>-<dataset>/, when there is one)",
    )
    out.add_argument("--no-compare", action="store_true", help="judge the runs against no reference")
    out.add_argument(
        "--tensorboard",
        type=Path,
        metavar="DIR",
        help="also write each run's per-epoch scalars as TensorBoard event files, a subdirectory per run",
    )
    out.add_argument(
        "--verify-determinism", action="store_true", help="train every run twice, compare weights"
    )
    out.add_argument(
        "--repair",
        action="store_true",
        help="drop damaged rows of the store (a copy is kept) and record those runs again from checkpoints",
    )
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The command's arguments, and the checks that need more than one of them or the machine
    (a GPU, torchrun, TensorBoard): argparse's usage errors, exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.all or args.suite or args.models or args.list):
        parser.error("say what to run: --all, --suite NAME, --models PATTERN... (or --list)")
    if args.device == "cuda" and args.executor == "local" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
        parser.error(
            f"--tensorboard needs TensorBoard: {sys.executable} -m pip install 'cnnrepro[tensorboard]'"
        )
    if args.ray_address and args.executor != "ray":
        parser.error("--ray-address needs --executor ray")
    world = torchrun_world()
    if world:
        if args.executor == "ray":
            parser.error("--executor ray under torchrun: run the runner once, without torchrun")
        if args.device == "cuda" and world.local_size > torch.cuda.device_count():
            parser.error(
                f"--device cuda: torchrun starts {world.local_size} processes on this node, "
                f"but it has {torch.cuda.device_count()} CUDA devices (one each is needed)"
            )
    if args.amp == "fp16" and args.device == "cpu":  # --device auto on a CPU: main's UsageError
        parser.error(f"--amp fp16: {FP16_ON_CPU}")
    if args.sync_bn and not world:
        parser.error("--sync-bn needs torchrun with more than one process")
    if args.sync_bn and (args.device == "cpu" or not torch.cuda.is_available()):
        parser.error("--sync-bn needs CUDA: torch's SyncBatchNorm runs on GPUs only")
    if args.seeds and len(set(args.seeds)) < len(args.seeds):
        print(
            f"note: --seeds {' '.join(map(str, args.seeds))} repeats a seed; each trains once",
            file=sys.stderr,
        )
        args.seeds = list(dict.fromkeys(args.seeds))
    return args


def _dataset(text: str) -> str:
    try:
        check_dataset_name(text)
    except ValueError:
        choices = ", ".join(f"'{name}'" for name in list_datasets())
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {choices}, folder:PATH)"
        ) from None
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def plan_request(args) -> Request:
    """What the command's arguments ask the planner for."""
    return Request(
        all_suites=args.all,
        suites=tuple(args.suite or ()),
        models=tuple(args.models or ()),
        seeds=tuple(args.seeds or ()),
        epochs=args.epochs,
        backend=args.backend,
        channels_last=args.channels_last,
        compile=args.compile,
        amp=args.amp,
        sync_bn=args.sync_bn,
        shard=args.shard,
    )


def plan_command(request: Request, profile, dataset_name: str, world_size: int):
    """The command's plan (experiments.planning), noting models that run outside the suites asked for."""
    outside = [model for suite, model in selected_models(request, profile) if suite == SELECTED]
    if outside and request.suites:
        print(
            f"note: {' '.join(outside)} in no suite asked for (--suite {' '.join(request.suites)}): "
            f"trained as suite '{SELECTED}'",
            file=sys.stderr,
        )
    return plan_suite(request, profile, dataset_name, world_size)


def print_listing() -> None:
    print("models:  ", " ".join(models.list_models()))
    print("suites:  ", "; ".join(f"{name}: {' '.join(ms)}" for name, ms in NAMED_SUITES.items()))
    print("profiles:", "; ".join(f"{name}: {p.description}" for name, p in PROFILES.items()))
    print("datasets:", " ".join(list_datasets()), "folder:PATH (your own images)")


def environment(args, device: str, threads: int, world, plan, dataset) -> dict:
    """env.json: the command, the machine, the build and settings, each planned suite's seeds, how
    the runs were spread, the data directory (where inspect and the report find the dataset again)
    and the dataset's notes (an image folder's content hash and skipped files)."""
    profile, request = PROFILES[args.profile], plan_request(args)
    suites = dict.fromkeys(suite for suite, _ in plan)
    return run_environment(device) | {
        "threads": threads,
        "executor": args.executor,
        "world_size": world.size if world else 1,
        "shard": str(args.shard) if args.shard else None,
        "command": " ".join([Path(sys.executable).name, "-m", "cnnrepro.run", *sys.argv[1:]]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "cuda_device": torch.cuda.get_device_name()
        if device == "cuda" and torch.cuda.is_available()
        else None,
        "build_info": cnnrepro.build_info(),
        "numerics": numerics_settings(),
        "profile": dataclasses.asdict(profile),
        "seeds": {suite: list(suite_seeds(request, profile, suite)) for suite in suites},
        "backend": args.backend,
        "speed": speed_settings(request, profile),  # every run's (in runs.csv's config too)
        "data_dir": str(Path(args.data_dir or default_data_dir()).resolve()),
        "dataset": {"name": dataset.name, **dataset.notes},
    }


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


def pick_device(args, ray_executor) -> str:
    """cuda where asked, or (auto) where this process, or Ray's cluster, has a GPU; else cpu."""
    has_gpu = ray_executor.has_gpus() if ray_executor else torch.cuda.is_available()
    if args.device == "cuda" and not has_gpu:  # a Ray cluster without GPUs would queue tasks forever
        raise UsageError("--device cuda: the Ray cluster has no GPU")
    if args.device != "auto":
        return args.device
    return "cuda" if has_gpu else "cpu"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        print_listing()
        return 0
    missing = ray_missing_message() if args.executor == "ray" else None
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    set_deterministic()
    profile = PROFILES[args.profile]
    dataset_name = args.dataset or profile.dataset
    out = args.out or Path("reports") / f"{profile.name}-{dataset_label(dataset_name)}"
    world = torchrun_world()
    executor = None
    try:  # everything the command asks for is checked before anything is written
        plan = plan_command(plan_request(args), profile, dataset_name, world.size if world else 1)
        check_input_sizes(plan, profile, dataset_name)
        check_writable_directory(out, "--out")
        if args.checkpoint_dir:
            check_writable_directory(args.checkpoint_dir, "--checkpoint-dir")
        dataset = load_dataset(dataset_name, args.data_dir, decode_size(plan))
        if world:
            check_batches_split(plan, dataset, world.size)
        ray_executor = RayExecutor(args.ray_address) if args.executor == "ray" else None
        executor = ray_executor  # closed by `finally` even if what follows fails
        device = pick_device(args, ray_executor)
        if device == "cpu" and any(config.amp == "fp16" for _, config in plan):
            raise UsageError(f"--amp fp16: this command trains on the CPU, and {FP16_ON_CPU}")
        replicas, rank_device = world.join(device, args.sync_bn) if world else (Replicas(), device)
        executor = ray_executor or LocalExecutor(replicas, rank_device)
        threads = args.threads or (1 if args.executor == "ray" else torch.get_num_threads())
        store = ResultsStore(out) if replicas.writes else None
        if store:
            for line in store.repair() if args.repair else []:
                print(line, file=sys.stderr)
            for temp in remove_stale_temp_files(out):
                print(f"removed {temp}, left by an interrupted write", file=sys.stderr)
            store.write_env(environment(args, device, threads, world, plan, dataset))
        jobs = replicas.from_rank0(planned_jobs(args, plan, store, device, threads) if store else None)
        return run_plan(args, plan, jobs, dataset, store, executor)
    except (UsageError, PlanError, DownloadError, DatasetError, StoreError, ExecutorError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a read-only mount: files are replaced whole, never torn
        where = error.filename or out
        print(
            f"error: writing to {where} failed: {error.strerror}; nothing was half-written", file=sys.stderr
        )
        return 2
    except RunInterrupted as stopped:
        print(
            f"\ninterrupted: {stopped} stopped after its last checkpointed epoch; rerun the same command "
            "to resume",
            file=sys.stderr,
        )
        return 130
    except KeyboardInterrupt:
        print(
            "\ninterrupted; rerun the same command to go on (finished epochs are checkpointed)",
            file=sys.stderr,
        )
        return 130
    finally:
        if executor is not None:
            executor.close()
        TorchrunWorld.leave()


def needs_training(args, key: str, recorded: dict | None, epochs_recorded: int) -> bool:
    """Whether to train (or resume, or record again from its checkpoint) run ``key``."""
    if args.force or recorded is None:
        return True
    if epochs_recorded != int(recorded["epochs"]):
        tqdm.write(f"{recorded['model']} seed {recorded['seed']}: results.csv lacks epochs; recording again")
        return True
    return False


def planned_jobs(args, plan, store: ResultsStore, device: str, threads: int) -> list[Job]:
    """The planned runs not already recorded, as jobs (with --force: every run, its checkpoints
    removed, its verification's included)."""
    done, epochs_recorded = store.finished(), store.epoch_counts()
    checkpoints = args.checkpoint_dir or store.checkpoints
    jobs = []
    for suite, config in plan:
        key = config.key()
        if not needs_training(args, key, done.get(key), epochs_recorded.get(key, 0)):
            continue
        if args.force:
            for checkpoint in (checkpoints / f"{key}.pt", checkpoints / "verify" / f"{key}.pt"):
                checkpoint.unlink(missing_ok=True)
        jobs.append(Job(suite, config, checkpoints, device, threads, args.verify_determinism))
    return jobs


def run_plan(args, plan, jobs: list[Job], dataset, store: ResultsStore | None, executor) -> int:
    """Trains the jobs on the executor, recording each run as its outcome arrives (``store`` None:
    a torchrun rank other than 0, which trains and records nothing); returns the exit code."""
    profile = PROFILES[args.profile]
    failures = []
    with tqdm(
        total=len(plan),
        initial=len(plan) - len(jobs),
        desc=f"{profile.name} on {dataset.name}",
        unit="run",
        disable=store is None,
    ) as bar:
        for outcome in executor.run(jobs, dataset):
            bar.update()
            config = outcome.job.config
            if store is None:
                continue
            if outcome.error is not None:
                failures.append((config.model, outcome.error))
                error = f"{type(outcome.error).__name__}: {outcome.error}"
                tqdm.write(f"{config.model} seed {config.seed}: FAILED: {error}")
                continue
            tag = {"suite": outcome.job.suite, "profile": profile.name}
            store.record_run(config.key(), [tag | r for r in outcome.epoch_rows], tag | outcome.run_row)
            if args.tensorboard:
                steps = math.ceil(train_examples(config, dataset) / config.batch_size)
                tensorboard.write_run(args.tensorboard, config, outcome.epoch_rows, steps)
            row = outcome.run_row
            tqdm.write(
                f"{outcome.job.suite}: {config.model} seed {config.seed}: {row['status']}, "
                f"test acc {row['test_acc']}, {float(row['train_time_s']):.1f} s"
            )
    if store is None:
        return 0
    recorded = store.finished()
    rows = [recorded[config.key()] for _, config in plan if config.key() in recorded]
    print_summary(rows, store.directory, with_report=bool(rows) and not args.no_report)
    reference = reference_store(args)
    judged = print_verdicts(store.directory, reference) if rows and reference else None
    if rows and not args.no_report:
        against = reference if judged is not None else None
        index = write_report(
            store.directory, against=against, reproduction=judged, inspect=not args.no_inspect
        )
        print(f"report: {index}")
    for model, error in failures:
        print(f"FAILED {model}: {error}", file=sys.stderr)
    mismatched = [row for row in rows if row["determinism"] == "MISMATCH"]
    for row in mismatched:
        print(
            f"MISMATCH {row['model']} seed {row['seed']}: trained twice (--verify-determinism), "
            "the weights differ",
            file=sys.stderr,
        )
    return 1 if failures or mismatched else 0


def reference_store(args) -> Path | None:
    """The store to judge this command's runs against: --against, else the shipped reference of
    the profile and dataset if there is one; None with --no-compare."""
    if args.no_compare:
        return None
    return args.against or shipped_reference(args.profile, args.dataset or PROFILES[args.profile].dataset)


def print_verdicts(directory: Path, reference: Path) -> pd.DataFrame | None:
    """Did these runs reproduce the reference's? Prints one line of counts and returns the table
    (the report shows it); None, saying why, if the reference cannot be compared with."""
    try:
        table = compare(load_store(reference, "--against"), load_store(directory, "--out"))
    except StoreError as error:
        print(f"not compared with a reference: {error}", file=sys.stderr)
        return None
    print(
        f"against {reference}: {verdict_counts(table)} "
        f"(per run: python -m cnnrepro.compare {reference} {directory})"
    )
    return table


def print_summary(rows: list[dict], out: Path, with_report: bool) -> None:
    columns = ("suite", "model", "seed", "status", "train acc", "test acc", "params")
    print("\n{:<12} {:<14} {:>4} {:<9} {:>9} {:>9} {:>11}".format(*columns))
    for row in rows:
        train = f"{float(row['train_acc']):.3f}" if row["train_acc"] != "" else "-"
        test = f"{float(row['test_acc']):.3f}" if row["test_acc"] != "" else "-"
        print(
            f"{row['suite']:<12} {row['model']:<14} {row['seed']:>4} {row['status']:<9} {train:>9} {test:>9} "
            f"{int(row['params']):>11,}"
        )
    report = "; the report: summary.csv, index.html" if with_report else ""
    print(f"\nresults in {out}/ (results.csv, runs.csv, env.json{report})")


if __name__ == "__main__":
    sys.exit(main())
