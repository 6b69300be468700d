"""The recorded search behind the quick profile's recipes (cnnrepro/experiments/profiles.py).

Each model's candidates change only what a recipe may change (learning rate, epochs, width, and the
init the paper allows), never the layer sequence; everything else is the quick profile's. Every
candidate trains on the search seeds (100 and 101, never a reported one), and its final accuracies
are written to scripts/recipe_search.csv; each recipe's comment cites what it took from there.

    python scripts/search_recipes.py                 # the whole grid (about 10 minutes on 2 cores)
    python scripts/search_recipes.py --models nin    # one model's, replacing its rows
"""

import argparse
import csv
import dataclasses
import io
import itertools
import json
import tempfile
import time
from pathlib import Path

from cnnrepro.data import load_dataset
from cnnrepro.experiments import PROFILES, plan_runs
from cnnrepro.files import write_atomic
from cnnrepro.train import RunConfig, set_deterministic, train_run

SEARCH_SEEDS = (100, 101)
OUT = Path(__file__).with_name("recipe_search.csv")
FIELDS = ["model", "candidate", "seed", "train_acc", "test_acc", "status", "train_time_s"]
CONFIG_FIELDS = {f.name for f in dataclasses.fields(RunConfig)}


def grid(**axes) -> list[dict]:
    """Every combination of the axes' values, as override dicts."""
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


GRID = {
    # The quick profile's LeNet had a quarter of the channels (2 and 4 maps): the question is width.
    "lenet5": grid(lr=(0.05, 0.1), width=(0.25, 1.0)),
    # VGG-11 without BatchNorm: the paper's N(0, 0.01) FC init against Glorot's, which it names.
    "vgg11": grid(lr=(0.02, 0.05), linear_init=("normal", "glorot")),
    # NiN: its class maps pass a ReLU before the global average, so a class whose map stays
    # negative gets no gradient again; the question is how many steps, at what lr, it needs.
    "nin": grid(lr=(0.005, 0.01), epochs=(6, 10))
    + [dict(lr=0.01, width=0.5), dict(lr=0.01, epochs=20), dict(lr=0.01, epochs=12, batch_size=32)]
    + [dict(lr=0.005, epochs=20, batch_size=32)],
}


def candidate_config(model: str, seed: int, overrides: dict) -> RunConfig:
    """The quick profile's config of ``model`` with ``overrides`` (RunConfig fields, or builder
    arguments that go into model_config)."""
    (config,) = plan_runs([model], PROFILES["quick"], [seed])
    fields = {k: v for k, v in overrides.items() if k in CONFIG_FIELDS}
    builder = {k: v for k, v in overrides.items() if k not in CONFIG_FIELDS}
    model_config = tuple(sorted({**dict(config.model_config), **builder}.items()))
    return dataclasses.replace(config, **fields, model_config=model_config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(GRID), choices=list(GRID))
    args = parser.parse_args()
    set_deterministic()
    dataset = load_dataset(PROFILES["quick"].dataset)
    kept = []
    if OUT.exists():
        with open(OUT, newline="") as f:
            kept = [row for row in csv.DictReader(f) if row["model"] not in args.models]
    rows = []
    with tempfile.TemporaryDirectory() as checkpoints:
        for model in args.models:
            for overrides, seed in itertools.product(GRID[model], SEARCH_SEEDS):
                start = time.perf_counter()
                result = train_run(candidate_config(model, seed, overrides), dataset, Path(checkpoints))
                last = result.history[-1]
                rows.append(
                    {
                        "model": model,
                        "candidate": json.dumps(overrides, sort_keys=True),
                        "seed": seed,
                        "train_acc": f"{last.train_acc:.4f}",
                        "test_acc": f"{last.test_acc:.4f}",
                        "status": result.status,
                        "train_time_s": f"{time.perf_counter() - start:.1f}",
                    }
                )
                print(rows[-1], flush=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(kept + rows)
    write_atomic(OUT, text.getvalue())


if __name__ == "__main__":
    main()
