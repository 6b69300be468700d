"""Executors: where the planned runs of a suite train.

``local`` trains them one after another in this process (and, under torchrun, each run on all of
torchrun's processes together). ``ray`` makes each run a Ray task on an embedded local cluster or an
existing one. Either way a run trains through :func:`train_job`, checkpoints itself after every
epoch, and hands back its rows: the runner, the only writer of the results store, records each
run as its outcome arrives.
"""

import dataclasses
import functools
import json
import os
import statistics
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import cnnrepro
from cnnrepro.train import Replicas, RunConfig, set_deterministic, train_run

EXECUTORS = ("local", "ray")
RAY_RETRIES = 3  # a run whose worker dies is started again this many times, resuming each time


@dataclass(frozen=True)
class Job:
    """One planned run and how to train it (the same wherever it trains)."""

    suite: str
    config: RunConfig
    checkpoint_dir: Path
    device: str  # "cpu" or "cuda" (an executor may pick the device's index)
    threads: int  # torch's CPU threads: the bits depend on them
    verify: bool  # train twice and compare the weights


@dataclass
class Outcome:
    """A job's end: its runs.csv row and results.csv rows, or the error that stopped it."""

    job: Job
    run_row: dict | None = None
    epoch_rows: list[dict] = dataclasses.field(default_factory=list)
    error: BaseException | None = None


def run_environment(device: str) -> dict:
    """The columns of every runs.csv row that say where it ran (they change the bits too)."""
    return {
        "device": device.split(":")[0],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "code_revision": loaded_code_revision(),
    }


@functools.cache
def loaded_code_revision() -> str:
    """The revision of the code this process imported, read once (a git call) per process: a Ray
    worker reads its own, which on another node may be other code."""
    return cnnrepro.code_revision()


def train_job(job: Job, dataset, device: str | None = None, replicas=None, on_epoch=None):
    """Trains (or resumes) a job's run here, twice with ``verify``; returns its runs.csv row and its
    results.csv rows. ``device`` overrides the job's (e.g. ``cuda:1`` for a local rank)."""
    config, device = job.config, device or job.device
    torch.set_num_threads(job.threads)
    result = train_run(config, dataset, job.checkpoint_dir, device, on_epoch, replicas)
    determinism = "not checked"
    if job.verify and result.status == "finished":
        again = train_run(config, dataset, job.checkpoint_dir / "verify", device, replicas=replicas)
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
        | run_environment(device)
    )
    return run_row, epoch_rows


class LocalExecutor:
    """Runs one after another in this process, with a per-epoch progress bar. Under torchrun every
    rank runs the same jobs in the same order, training each together (``replicas``)."""

    def __init__(self, replicas: Replicas | None = None, device: str | None = None):
        self.replicas = replicas or Replicas()
        self.device = device

    def run(self, jobs: list[Job], dataset) -> Iterator[Outcome]:
        for job in jobs:
            bar = tqdm(
                total=job.config.epochs,
                desc=f"  {job.config.model}",
                unit="epoch",
                leave=False,
                disable=not self.replicas.writes,
            )

            def show(result, epoch, bar=bar):
                bar.n = len(result.history)
                if epoch is not None:
                    bar.set_postfix(loss=f"{epoch.train_loss:.3f}", test_acc=f"{epoch.test_acc:.3f}")
                bar.refresh()

            try:
                with bar:
                    run_row, epoch_rows = train_job(job, dataset, self.device, self.replicas, show)
            except KeyboardInterrupt:
                raise RunInterrupted(job) from None
            except OSError:
                raise  # the disk, not the run: the runner reports it
            except Exception as error:  # one broken run must not stop the suite
                yield Outcome(job, error=error)
                continue
            yield Outcome(job, run_row, epoch_rows)

    def close(self) -> None:
        pass


class ExecutorError(Exception):
    """An executor that cannot start (a Ray cluster that cannot be joined): one line, exit 2."""


class RunInterrupted(Exception):
    """Ctrl-C during a job: its finished epochs are checkpointed."""

    def __init__(self, job: Job):
        super().__init__(f"{job.config.model} seed {job.config.seed}")
        self.job = job


def _ray_task(job: Job, dataset):
    """What a Ray worker runs: the job, with the runner's determinism settings."""
    set_deterministic()
    return train_job(job, dataset)


class RayExecutor:
    """Each run a Ray task: ``num_gpus=1`` on CUDA, else ``num_cpus=threads``. A worker that dies is
    retried by Ray and resumes from the run's last checkpoint; a run that raises is an outcome with
    its error. ``address`` joins an existing cluster (None: $RAY_ADDRESS, else an embedded cluster on
    this machine, shut down by :meth:`close`). Ray advertises the machine's outward address, even
    when asked for 127.0.0.1, and binds its ports to every interface; token authentication (Ray's
    default) guards them, and a loopback-only network namespace keeps them local (README)."""

    def __init__(self, address: str | None = None):
        import ray

        self.ray = ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network calls from a test machine
        address = address or os.environ.get("RAY_ADDRESS")
        options = dict(logging_level="ERROR", log_to_driver=True)
        try:
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(include_dashboard=False, **options)
        except (ConnectionError, RuntimeError) as error:
            raise ExecutorError(
                f"could not join the Ray cluster at {address}: {error} (a cluster started by `ray start` "
                "checks a token: set RAY_AUTH_MODE=token where its ~/.ray/auth_token is)"
            ) from None
        self.pending = []

    def has_gpus(self) -> bool:
        return self.ray.cluster_resources().get("GPU", 0) > 0

    def run(self, jobs: list[Job], dataset) -> Iterator[Outcome]:
        ray = self.ray
        dataset_ref = ray.put(dataset)  # once, shared by every task
        task = ray.remote(_ray_task)
        job_of = {}
        for job in jobs:
            resources = {"num_gpus": 1, "num_cpus": 1} if job.device == "cuda" else {"num_cpus": job.threads}
            ref = task.options(max_retries=RAY_RETRIES, retry_exceptions=False, **resources).remote(
                job, dataset_ref
            )
            job_of[ref] = job
        self.pending = list(job_of)
        while self.pending:
            [ref], self.pending = ray.wait(self.pending, num_returns=1)
            job = job_of[ref]
            try:
                run_row, epoch_rows = ray.get(ref)
            except ray.exceptions.RayTaskError as error:  # the run raised: its own exception
                yield Outcome(job, error=error.cause or error)
                continue
            except ray.exceptions.RayError as error:  # its worker died more often than retried
                yield Outcome(job, error=error)
                continue
            yield Outcome(job, run_row, epoch_rows)

    def close(self) -> None:
        """Cancels what is still running (an interrupted driver) and leaves the cluster."""
        for ref in self.pending:
            self.ray.cancel(ref, force=True)
        self.pending = []
        self.ray.shutdown()


def ray_missing_message() -> str | None:
    """Why ``--executor ray`` cannot work here, or None."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return f"--executor ray needs Ray: {sys.executable} -m pip install 'cnnrepro[ray]'"
    return None
