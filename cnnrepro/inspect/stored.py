"""A run of a results store, loaded back to be looked at: its runs.csv row, its RunConfig, its
dataset as the run saw it, and its final weights, checked against the hash runs.csv recorded.

Nothing here writes to the store: a damaged checkpoint is reported, never moved aside (the
trainer's ``load_checkpoint`` would), and the global random state is left as it was."""

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnrepro.data import Dataset, DatasetError, DownloadError, Split, load_dataset, open_cache
from cnnrepro.store import ENV_JSON, RUNS_CSV, StoreError, read_valid_rows
from cnnrepro.train import RunConfig, build_model, weights_sha256
from cnnrepro.train.engine import subset


class InspectError(Exception):
    """Why a run cannot be inspected, in one line."""


@dataclass
class StoredRun:
    row: dict  # its runs.csv row
    config: RunConfig
    dataset: Dataset  # at the run's input size, normalized as the run's was
    model: torch.nn.Module  # the final weights, in eval mode

    @property
    def name(self) -> str:
        """The run's folder name: model, seed and key."""
        return f"{self.config.model}-seed{self.config.seed}-{self.row['key']}"

    @property
    def test(self) -> Split:
        """The test split the run was evaluated on (its profile's subset, if it had one)."""
        return subset(self.dataset.test, self.config.test_subset)


def find_run(directory: Path, model: str, seed: int, key: str | None = None) -> dict:
    """The runs.csv row of ``model`` with ``seed`` (and ``key``, where several runs match)."""
    try:
        rows = read_valid_rows(Path(directory) / RUNS_CSV)
    except StoreError as error:
        raise InspectError(str(error)) from None
    if not rows:
        raise InspectError(f"no runs in {Path(directory) / RUNS_CSV} (train first: python -m cnnrepro.run)")
    of_model = [r for r in rows if r["model"] == model]
    if not of_model:
        known = ", ".join(sorted({r["model"] for r in rows}))
        raise InspectError(f"no run of {model} in {Path(directory) / RUNS_CSV}; its models: {known}")
    matching = [r for r in of_model if int(r["seed"]) == seed and key in (None, r["key"])]
    if not matching:
        seeds = ", ".join(sorted({r["seed"] for r in of_model}, key=int))
        keyed = f" and key {key}" if key else ""
        raise InspectError(f"no run of {model} with seed {seed}{keyed}; its seeds: {seeds}")
    if len(matching) > 1:
        keys = ", ".join(r["key"] for r in matching)
        raise InspectError(
            f"{len(matching)} runs of {model} seed {seed} (keys {keys}): choose one with --key"
        )
    return matching[0]


def run_config(text: str) -> RunConfig:
    """The RunConfig of a runs.csv config column (JSON turned its tuples into lists)."""
    fields = json.loads(text)
    fields["milestones"] = tuple(fields.get("milestones", ()))
    fields["model_config"] = tuple(tuple(pair) for pair in fields.get("model_config", ()))
    try:
        return RunConfig(**fields)
    except (TypeError, ValueError) as error:
        raise InspectError(f"runs.csv's config is not one this cnnrepro can build: {error}") from None


def store_env(directory: Path) -> dict:
    """The store's env.json ({} where it has none or it cannot be read: nothing here needs it)."""
    try:
        return json.loads((Path(directory) / ENV_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def recorded_data_dir(env: dict) -> Path | None:
    """The data directory the store's runs read, as env.json records it (its ``data_dir``, else
    the one holding its image cache: DATA/folders/<path hash>/<size>-<key>); None if it names none."""
    if env.get("data_dir"):
        return Path(env["data_dir"])
    cache = (env.get("dataset") or {}).get("cache")
    return Path(cache).parents[2] if cache and len(Path(cache).parts) > 3 else None


def recorded_cache(env: dict, name: str) -> Path | None:
    """The decoded image cache env.json names for dataset ``name`` (an image folder's, 17 Flowers',
    cats vs dogs'), if it is still there; None otherwise."""
    dataset = env.get("dataset") or {}
    cache = dataset.get("cache") if dataset.get("name") == name else None
    return Path(cache) if cache and (Path(cache) / "meta.json").is_file() else None


@functools.cache
def run_dataset(
    name: str, input_size: int | None, data_dir: Path | None = None, cache: Path | None = None
) -> Dataset:
    """The dataset's test split as a run with this input size saw it (made once per process). Of
    the training split one image is kept, for its shape: its statistics are the dataset's mean and
    std, and resizing all of it (CIFAR-10 at 224) would cost gigabytes for nothing. An image
    dataset is read from ``cache``, the decoded images the runner trained on, resized as the runner
    resizes them; without one it is decoded at the run's input size (where the runner's decoding
    size differed, the last bits of the pixels may too)."""
    try:
        dataset = open_cache(cache, name) if cache else load_dataset(name, data_dir, input_size)
    except (DownloadError, DatasetError, OSError) as error:
        raise InspectError(f"the run's dataset {name} cannot be loaded: {error}") from None
    dataset = dataclasses.replace(dataset, train=subset(dataset.train, 1))
    return dataset.resized(input_size) if input_size else dataset


def checkpoint_path(directory: Path, row: dict) -> Path:
    return Path(directory) / "checkpoints" / f"{row['key']}.pt"


def load_run(directory: Path, row: dict, device="cpu", data_dir: Path | None = None) -> StoredRun:
    """Run ``row``'s final weights from ``directory``/checkpoints, verified against runs.csv's
    weights hash: other weights are an InspectError, never a picture. Its dataset comes from
    ``data_dir``, else the store's own (env.json's), else the default; an image dataset from the
    cache env.json names, where it is still there."""
    path = checkpoint_path(directory, row)
    what = f"{row['model']} seed {row['seed']}"
    if not path.exists():
        raise InspectError(
            f"no checkpoint for {what}: {path} is missing (a store shipped without checkpoints, or "
            "trained with --checkpoint-dir elsewhere)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling raises many kinds; each means the same here
        raise InspectError(
            f"{path} cannot be read ({type(error).__name__}): the checkpoint is damaged"
        ) from None
    config = run_config(row["config"])
    env = store_env(directory)
    data_dir = data_dir or recorded_data_dir(env)
    dataset = run_dataset(config.dataset, config.input_size, data_dir, recorded_cache(env, config.dataset))
    with torch.random.fork_rng(devices=[]):  # build_model seeds the global generator
        model = build_model(config, dataset)
    model.load_state_dict(state["model"])
    found = weights_sha256(model)
    if found != row["weights_sha256"]:
        raise InspectError(
            f"{path} holds other weights than runs.csv records for {what} (sha256 {found[:12]}, "
            f"recorded {row['weights_sha256'][:12]}): not inspecting them"
        )
    return StoredRun(row, config, dataset, model.eval().to(device))
